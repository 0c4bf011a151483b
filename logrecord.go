package pollsse

import (
	"encoding/binary"
	"math"
	"sync"
	"time"

	"go.uber.org/zap/zapcore"
)

// A logged stream keeps what its access log line will say of its request
// for the stream's whole life. Kept as the request's fields (a header map,
// a string per value, a TLS state), that is several objects a stream; kept
// as what Caddy's marshaler adds to an encoder, recorded once into one
// string and replayed into the real encoder when the line is written, it is
// one. The line then says exactly what Caddy's marshaler said when the
// stream was taken over, in the same order.

// A recordedObject is an object as a zapcore.ObjectMarshaler added it to
// an encoder, replayed by its MarshalLogObject. Each field is its key, then
// its value as a recordedArray's element is: an op byte and the value; an
// object's or an array's value is its own record, after its length, so
// that an encoder that leaves a field out (Caddy's filter encoder deleting
// one) need not read it.
type recordedObject string

// A recordedArray is an array recorded as a recordedObject's fields are,
// without keys.
type recordedArray string

const (
	recString byte = iota + 1
	recByteString
	recBinary
	recBool
	recInt
	recUint
	recFloat64
	recFloat32
	recDuration
	recObject
	recArray
	recNamespace
)

// record returns what marshal adds to a recorder, as one string: the one
// allocation a record takes, since recorders and their buffers are reused.
// ok is false when marshal adds what a record does not keep (times,
// complex numbers, reflected values).
func record(marshal func(*recorder) error) (string, bool) {
	r := recorders.Get().(*recorder)
	defer r.free()
	if err := marshal(r); err != nil || r.unsupported {
		return "", false
	}
	return string(r.b), true
}

// A recorder is the encoder that record gives the marshaler, for an
// object's fields (Add…) and, nested, for an array's elements (Append…).
type recorder struct {
	b           []byte
	unsupported bool
}

// recorders are the recorders not in use, with their buffers. A buffer that
// a large record grew is let go rather than kept.
var recorders = sync.Pool{New: func() any { return &recorder{b: make([]byte, 0, 512)} }}

const maxPooledRecord = 4 << 10

func (r *recorder) free() {
	if cap(r.b) > maxPooledRecord {
		return
	}
	*r = recorder{b: r.b[:0]}
	recorders.Put(r)
}

// name starts a field of an object with its key; the field's value
// follows as an array's element would (Append…).
func (r *recorder) name(key string) { r.b = appendLen(r.b, key) }

// appendLen appends v to b after its length.
func appendLen[T string | []byte](b []byte, v T) []byte {
	return append(binary.AppendUvarint(b, uint64(len(v))), v...)
}

func (r *recorder) nested(marshal func(*recorder) error) {
	sub := recorders.Get().(*recorder)
	defer sub.free()
	if err := marshal(sub); err != nil || sub.unsupported {
		r.unsupported = true
		return
	}
	r.b = appendLen(r.b, sub.b)
}

func (r *recorder) object(m zapcore.ObjectMarshaler) {
	r.nested(func(sub *recorder) error { return m.MarshalLogObject(sub) })
}

func (r *recorder) array(m zapcore.ArrayMarshaler) {
	r.nested(func(sub *recorder) error { return m.MarshalLogArray(sub) })
}

// The fields of an object: each a key and then its value as an element.

func (r *recorder) AddString(k, v string)            { r.name(k); r.AppendString(v) }
func (r *recorder) AddByteString(k string, v []byte) { r.name(k); r.AppendByteString(v) }
func (r *recorder) AddBinary(k string, v []byte) {
	r.name(k)
	r.b = appendLen(append(r.b, recBinary), v)
}
func (r *recorder) AddBool(k string, v bool)              { r.name(k); r.AppendBool(v) }
func (r *recorder) AddInt64(k string, v int64)            { r.name(k); r.AppendInt64(v) }
func (r *recorder) AddInt(k string, v int)                { r.AddInt64(k, int64(v)) }
func (r *recorder) AddInt32(k string, v int32)            { r.AddInt64(k, int64(v)) }
func (r *recorder) AddInt16(k string, v int16)            { r.AddInt64(k, int64(v)) }
func (r *recorder) AddInt8(k string, v int8)              { r.AddInt64(k, int64(v)) }
func (r *recorder) AddUint64(k string, v uint64)          { r.name(k); r.AppendUint64(v) }
func (r *recorder) AddUint(k string, v uint)              { r.AddUint64(k, uint64(v)) }
func (r *recorder) AddUint32(k string, v uint32)          { r.AddUint64(k, uint64(v)) }
func (r *recorder) AddUint16(k string, v uint16)          { r.AddUint64(k, uint64(v)) }
func (r *recorder) AddUint8(k string, v uint8)            { r.AddUint64(k, uint64(v)) }
func (r *recorder) AddUintptr(k string, v uintptr)        { r.AddUint64(k, uint64(v)) }
func (r *recorder) AddFloat64(k string, v float64)        { r.name(k); r.AppendFloat64(v) }
func (r *recorder) AddFloat32(k string, v float32)        { r.name(k); r.AppendFloat32(v) }
func (r *recorder) AddDuration(k string, v time.Duration) { r.name(k); r.AppendDuration(v) }
func (r *recorder) AddObject(k string, m zapcore.ObjectMarshaler) error {
	r.name(k)
	return r.AppendObject(m)
}
func (r *recorder) AddArray(k string, m zapcore.ArrayMarshaler) error {
	r.name(k)
	return r.AppendArray(m)
}
func (r *recorder) OpenNamespace(k string) { r.name(k); r.b = append(r.b, recNamespace) }

// What a record does not keep: a time is written in the encoder's time
// format and zone, which replaying it would have to keep too.
func (r *recorder) AddTime(string, time.Time)        { r.unsupported = true }
func (r *recorder) AddComplex128(string, complex128) { r.unsupported = true }
func (r *recorder) AddComplex64(string, complex64)   { r.unsupported = true }
func (r *recorder) AddReflected(string, any) error   { r.unsupported = true; return nil }
func (r *recorder) AppendTime(time.Time)             { r.unsupported = true }
func (r *recorder) AppendComplex128(complex128)      { r.unsupported = true }
func (r *recorder) AppendComplex64(complex64)        { r.unsupported = true }
func (r *recorder) AppendReflected(any) error        { r.unsupported = true; return nil }

// The elements of an array.

func (r *recorder) AppendString(v string)     { r.b = appendLen(append(r.b, recString), v) }
func (r *recorder) AppendByteString(v []byte) { r.b = appendLen(append(r.b, recByteString), v) }
func (r *recorder) AppendBool(v bool)         { r.b = append(r.b, recBool, boolByte(v)) }
func (r *recorder) AppendInt64(v int64)       { r.b = binary.AppendVarint(append(r.b, recInt), v) }
func (r *recorder) AppendInt(v int)           { r.AppendInt64(int64(v)) }
func (r *recorder) AppendInt32(v int32)       { r.AppendInt64(int64(v)) }
func (r *recorder) AppendInt16(v int16)       { r.AppendInt64(int64(v)) }
func (r *recorder) AppendInt8(v int8)         { r.AppendInt64(int64(v)) }
func (r *recorder) AppendUint64(v uint64)     { r.b = binary.AppendUvarint(append(r.b, recUint), v) }
func (r *recorder) AppendUint(v uint)         { r.AppendUint64(uint64(v)) }
func (r *recorder) AppendUint32(v uint32)     { r.AppendUint64(uint64(v)) }
func (r *recorder) AppendUint16(v uint16)     { r.AppendUint64(uint64(v)) }
func (r *recorder) AppendUint8(v uint8)       { r.AppendUint64(uint64(v)) }
func (r *recorder) AppendUintptr(v uintptr)   { r.AppendUint64(uint64(v)) }
func (r *recorder) AppendDuration(v time.Duration) {
	r.b = binary.AppendVarint(append(r.b, recDuration), int64(v))
}
func (r *recorder) AppendFloat64(v float64) {
	r.b = binary.LittleEndian.AppendUint64(append(r.b, recFloat64), math.Float64bits(v))
}
func (r *recorder) AppendFloat32(v float32) {
	r.b = binary.LittleEndian.AppendUint32(append(r.b, recFloat32), math.Float32bits(v))
}
func (r *recorder) AppendObject(m zapcore.ObjectMarshaler) error {
	r.b = append(r.b, recObject)
	r.object(m)
	return nil
}
func (r *recorder) AppendArray(m zapcore.ArrayMarshaler) error {
	r.b = append(r.b, recArray)
	r.array(m)
	return nil
}

func boolByte(v bool) byte {
	if v {
		return 1
	}
	return 0
}

// A replay reads a record back, field by field; a record that it cannot read
// (none that recorder wrote) ends it.
type replay struct {
	s  string
	ok bool
}

func (p *replay) uvarint() uint64 {
	var v uint64
	for i := 0; i < len(p.s) && i < binary.MaxVarintLen64; i++ {
		c := p.s[i]
		v |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			p.s = p.s[i+1:]
			return v
		}
	}
	p.ok = false
	return 0
}

// varint reads what binary.AppendVarint wrote.
func (p *replay) varint() int64 {
	u := p.uvarint()
	v := int64(u >> 1)
	if u&1 != 0 {
		v = ^v
	}
	return v
}

// fixed reads n little-endian bytes, as binary.LittleEndian wrote them.
func (p *replay) fixed(n uint64) uint64 {
	var v uint64
	for i, c := range []byte(p.take(n)) {
		v |= uint64(c) << (8 * i)
	}
	return v
}

func (p *replay) take(n uint64) string {
	if uint64(len(p.s)) < n {
		p.ok = false
		return ""
	}
	v := p.s[:n]
	p.s = p.s[n:]
	return v
}

func (p *replay) str() string { return p.take(p.uvarint()) }

func (p *replay) op() (byte, bool) {
	if !p.ok || p.s == "" {
		return 0, false
	}
	op := p.s[0]
	p.s = p.s[1:]
	return op, true
}

// MarshalLogObject adds the recorded fields to enc.
func (o recordedObject) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	p := replay{s: string(o), ok: true}
	for p.s != "" {
		k := p.str()
		op, more := p.op()
		if !more {
			return nil
		}
		switch op {
		case recString:
			enc.AddString(k, p.str())
		case recByteString:
			enc.AddByteString(k, []byte(p.str()))
		case recBinary:
			enc.AddBinary(k, []byte(p.str()))
		case recBool:
			enc.AddBool(k, p.take(1) == "\x01")
		case recInt:
			enc.AddInt64(k, p.varint())
		case recUint:
			enc.AddUint64(k, p.uvarint())
		case recFloat64:
			enc.AddFloat64(k, math.Float64frombits(p.fixed(8)))
		case recFloat32:
			enc.AddFloat32(k, math.Float32frombits(uint32(p.fixed(4))))
		case recDuration:
			enc.AddDuration(k, time.Duration(p.varint()))
		case recObject:
			enc.AddObject(k, recordedObject(p.str()))
		case recArray:
			enc.AddArray(k, recordedArray(p.str()))
		case recNamespace:
			enc.OpenNamespace(k)
		default:
			return nil
		}
	}
	return nil
}

// MarshalLogArray appends the recorded elements to enc.
func (a recordedArray) MarshalLogArray(enc zapcore.ArrayEncoder) error {
	p := replay{s: string(a), ok: true}
	for {
		op, more := p.op()
		if !more {
			return nil
		}
		switch op {
		case recString:
			enc.AppendString(p.str())
		case recByteString:
			enc.AppendByteString([]byte(p.str()))
		case recBool:
			enc.AppendBool(p.take(1) == "\x01")
		case recInt:
			enc.AppendInt64(p.varint())
		case recUint:
			enc.AppendUint64(p.uvarint())
		case recFloat64:
			enc.AppendFloat64(math.Float64frombits(p.fixed(8)))
		case recFloat32:
			enc.AppendFloat32(math.Float32frombits(uint32(p.fixed(4))))
		case recDuration:
			enc.AppendDuration(time.Duration(p.varint()))
		case recObject:
			enc.AppendObject(recordedObject(p.str()))
		case recArray:
			enc.AppendArray(recordedArray(p.str()))
		default:
			return nil
		}
	}
}

var (
	_ zapcore.ObjectEncoder   = (*recorder)(nil)
	_ zapcore.ArrayEncoder    = (*recorder)(nil)
	_ zapcore.ObjectMarshaler = recordedObject("")
	_ zapcore.ArrayMarshaler  = recordedArray("")
)
