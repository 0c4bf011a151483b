package pollsse

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"slices"
	"strconv"
	"unicode/utf8"
)

// maxDepth bounds the nesting of arrays and objects, as encoding/json does.
const maxDepth = 10000

// A scanner checks a JSON text and builds its nodes and compact text in one
// pass.
type scanner struct {
	src []byte
	// bom is the length of the byte order mark before src in the body, for
	// the offsets in errors.
	bom int
	pos int
	// out is the compact text, nil while src[:pos] has had nothing left
	// out; src[copied:pos] is yet to be appended to it.
	out    []byte
	copied int
	// shift is the number of bytes left out before pos: a value at pos in
	// src is at pos-shift in the compact text.
	shift int
	nodes []node
	open  []openValue
	// keys holds the keys of the members of the open objects.
	keys []openKey
	// dropped are the values of members whose key comes again later in
	// their object.
	dropped []uint32
}

// An openValue is an array or object whose end is not yet scanned.
type openValue struct {
	idx  uint32
	keys int // index in scanner.keys of its first member's key
	n    uint32
	h    uint64
	obj  bool
}

type openKey struct {
	hash       uint64
	start, end int // content in src
	val        uint32
}

// result returns the compact text.
func (s *scanner) result() []byte {
	if s.out == nil {
		return s.src
	}
	s.out = append(s.out, s.src[s.copied:]...)
	if cap(s.out)-len(s.out) > len(s.out)/8 {
		// It was sized for the body, which had whitespace.
		return bytes.Clone(s.out)
	}
	return s.out
}

// run scans the whole of src.
func (s *scanner) run() error {
	src := s.src
	// Every value has a node, and a value is followed by a comma or ends
	// its container: this many nodes is enough, and not far off.
	s.nodes = make([]node, 0, bytes.Count(src, []byte{','})+bytes.Count(src, []byte{'['})+bytes.Count(src, []byte{'{'})+1)
	s.space()
	for {
		// A value starts at s.pos.
		if s.pos >= len(src) {
			return s.errEnd("a value")
		}
		at := s.pos
		idx := uint32(len(s.nodes))
		var h uint64
		switch c := src[s.pos]; c {
		case '{', '[':
			var opened bool
			var err error
			if h, opened, err = s.openContainer(c); err != nil {
				return err
			} else if opened {
				continue
			}
		case '"':
			escaped, err := s.string()
			if err != nil {
				return err
			}
			content := src[at+1 : s.pos-1]
			if escaped {
				content = unescape(content)
			}
			h = mix(tagString, maphash.Bytes(hashSeed, content))
		case 't', 'f', 'n':
			var err error
			if h, err = s.literalValue(c); err != nil {
				return err
			}
		default:
			if err := s.number(); err != nil {
				return err
			}
			h = mix(tagNumber, maphash.Bytes(hashSeed, src[at:s.pos]))
		}
		if len(s.nodes) == int(idx) {
			// A scalar: an empty container has its node already.
			s.nodes = append(s.nodes, node{hash: h, start: uint32(at - s.shift), end: uint32(s.pos - s.shift), next: idx + 1})
		}
		// A value ended: end the containers that end with it.
		for {
			if len(s.open) == 0 {
				return s.end()
			}
			o := &s.open[len(s.open)-1]
			if o.obj {
				o.h = mix(o.h, s.keys[len(s.keys)-1].hash)
			}
			o.h = mix(o.h, h)
			o.n++
			s.space()
			if s.pos >= len(src) {
				return s.errEnd("a comma or the end of an array or object")
			}
			c := src[s.pos]
			if c == ',' {
				s.pos++
				s.space()
				if o.obj {
					if err := s.key(); err != nil {
						return err
					}
				}
				break
			}
			if c != o.closer() {
				return s.errAfter(o)
			}
			s.pos++
			h = s.close()
		}
	}
}

// openContainer scans the opening bracket c of an array or object at s.pos,
// and the key of an object's first member. An empty array or object is
// scanned whole, and its hash returned; otherwise it is opened.
func (s *scanner) openContainer(c byte) (h uint64, opened bool, err error) {
	if len(s.open) == maxDepth {
		return 0, false, fmt.Errorf("response body nests arrays and objects deeper than %d levels", maxDepth)
	}
	idx := uint32(len(s.nodes))
	s.open = append(s.open, openValue{idx: idx, keys: len(s.keys), h: containerSeed(c), obj: c == '{'})
	s.nodes = append(s.nodes, node{start: uint32(s.pos - s.shift)})
	s.pos++
	s.space()
	if s.pos < len(s.src) && s.src[s.pos] == c+2 { // '}' or ']'
		s.pos++
		return s.close(), false, nil
	}
	if c == '{' {
		if err := s.key(); err != nil {
			return 0, false, err
		}
	}
	return 0, true, nil
}

// closer returns the byte that ends the array or object.
func (o *openValue) closer() byte {
	if o.obj {
		return '}'
	}
	return ']'
}

// errAfter is the error of an unexpected byte after a member or element of
// the array or object o.
func (s *scanner) errAfter(o *openValue) error {
	if o.obj {
		return s.errChar("after an object member, where a comma or '}' goes")
	}
	return s.errChar("after an array element, where a comma or ']' goes")
}

// end checks that only whitespace follows the document.
func (s *scanner) end() error {
	s.space()
	if s.pos < len(s.src) {
		return s.errChar("after the end of the document")
	}
	return nil
}

// close ends the innermost open container at s.pos and returns its hash.
func (s *scanner) close() uint64 {
	o := s.open[len(s.open)-1]
	s.open = s.open[:len(s.open)-1]
	if o.obj {
		s.duplicates(s.keys[o.keys:])
		s.keys = s.keys[:o.keys]
	}
	h := mix(o.h, uint64(o.n))
	s.nodes[o.idx] = node{hash: h, start: s.nodes[o.idx].start, end: uint32(s.pos - s.shift), next: uint32(len(s.nodes)), n: o.n}
	return h
}

// duplicates marks the members of one object whose key comes again later.
func (s *scanner) duplicates(keys []openKey) {
	if len(keys) < 2 {
		return
	}
	same := func(a, b openKey) bool {
		return a.hash == b.hash && equalKeys(s.src[a.start:a.end], s.src[b.start:b.end])
	}
	if len(keys) <= 32 {
		for i := range keys {
			for j := i + 1; j < len(keys); j++ {
				if same(keys[i], keys[j]) {
					s.dropped = append(s.dropped, keys[i].val)
					break
				}
			}
		}
		return
	}
	order := make([]int, len(keys))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int {
		if keys[a].hash != keys[b].hash {
			if keys[a].hash < keys[b].hash {
				return -1
			}
			return 1
		}
		return a - b
	})
	for g := 0; g < len(order); {
		e := g + 1
		for e < len(order) && keys[order[e]].hash == keys[order[g]].hash {
			e++
		}
		for i := g; i < e; i++ {
			for j := i + 1; j < e; j++ {
				if same(keys[order[i]], keys[order[j]]) {
					s.dropped = append(s.dropped, keys[order[i]].val)
					break
				}
			}
		}
		g = e
	}
}

// key scans an object member's key and colon; s.pos is at the key.
func (s *scanner) key() error {
	if s.pos >= len(s.src) {
		return s.errEnd("an object member's key")
	}
	if s.src[s.pos] != '"' {
		return s.errChar("where an object member's key goes")
	}
	start := s.pos + 1
	escaped, err := s.string()
	if err != nil {
		return err
	}
	content := s.src[start : s.pos-1]
	if escaped {
		content = unescape(content)
	}
	s.keys = append(s.keys, openKey{hash: maphash.Bytes(hashSeed, content), start: start, end: s.pos - 1, val: uint32(len(s.nodes))})
	s.space()
	if s.pos >= len(s.src) {
		return s.errEnd("a colon")
	}
	if s.src[s.pos] != ':' {
		return s.errChar("after an object member's key, where a colon goes")
	}
	s.pos++
	s.space()
	return nil
}

// space skips whitespace, leaving it out of the compact text.
func (s *scanner) space() {
	i := s.pos
	if i >= len(s.src) || s.src[i] > ' ' {
		return
	}
	for i < len(s.src) {
		if c := s.src[i]; c != ' ' && c != '\n' && c != '\r' && c != '\t' {
			break
		}
		i++
	}
	if i == s.pos {
		return
	}
	if s.out == nil {
		s.out = make([]byte, 0, len(s.src)-(i-s.pos))
	}
	s.out = append(s.out, s.src[s.copied:s.pos]...)
	s.copied = i
	s.shift += i - s.pos
	s.pos = i
}

// strByte classes the bytes of a string: 0 for a byte that stands for itself.
var strByte = func() (t [256]uint8) {
	for c := 0; c < 0x20; c++ {
		t[c] = 3
	}
	t['"'] = 1
	t['\\'] = 2
	for c := 0x80; c < 0x100; c++ {
		t[c] = 4
	}
	return t
}()

// string scans a string; s.pos is at its opening quote. It reports whether
// the string has escapes.
func (s *scanner) string() (escaped bool, err error) {
	src := s.src
	i := s.pos + 1
	for {
		for i+8 <= len(src) && plain8(src[i:i+8]) {
			i += 8
		}
		for i < len(src) && strByte[src[i]] == 0 {
			i++
		}
		if i >= len(src) {
			s.pos = i
			return false, s.errEnd("the end of a string")
		}
		switch strByte[src[i]] {
		case 1:
			s.pos = i + 1
			return escaped, nil
		case 2:
			escaped = true
			if i+1 >= len(src) {
				s.pos = len(src)
				return false, s.errEnd("an escape sequence")
			}
			switch src[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				for k := i + 2; k < i+6; k++ {
					if k >= len(src) {
						s.pos = len(src)
						return false, s.errEnd("an escape sequence")
					}
					if !isHex(src[k]) {
						s.pos = k
						return false, s.errChar("in a \\u escape, where a hexadecimal digit goes")
					}
				}
				i += 6
			default:
				s.pos = i + 1
				return false, s.errChar("after a backslash in a string")
			}
		case 3:
			s.pos = i
			return false, s.errChar("in a string, where control characters must be escaped")
		case 4:
			r, size := utf8.DecodeRune(src[i:])
			if r == utf8.RuneError && size == 1 {
				line, col := s.position(i)
				return false, fmt.Errorf("response body is not valid UTF-8: byte 0x%02x at line %d, column %d (offset %d)", src[i], line, col, s.bom+i)
			}
			i += size
		}
	}
}

// plain8 reports whether 8 bytes are all ASCII that stands for itself in a
// string: no quote, backslash, control character or non-ASCII byte.
func plain8(b []byte) bool {
	x := binary.LittleEndian.Uint64(b)
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	quote := x ^ (ones * '"')
	slash := x ^ (ones * '\\')
	// A byte is below 0x20, zero after the xor, or 0x80 and over when
	// subtracting leaves its high bit set where it was clear.
	bad := (x - ones*0x20) | (quote - ones) | (slash - ones) | x
	return bad&highs == 0
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

// literalValue scans true, false or null, whose first byte is c, and
// returns its hash.
func (s *scanner) literalValue(c byte) (uint64, error) {
	switch c {
	case 't':
		return hashTrue, s.literal("true")
	case 'f':
		return hashFalse, s.literal("false")
	}
	return hashNull, s.literal("null")
}

// literal scans true, false or null.
func (s *scanner) literal(word string) error {
	for k := 0; k < len(word); k++ {
		if s.pos >= len(s.src) {
			return s.errEnd(strconv.Quote(word))
		}
		if s.src[s.pos] != word[k] {
			if k == 0 {
				return s.errChar("where a value goes")
			}
			return s.errChar("in " + word)
		}
		s.pos++
	}
	return nil
}

// number scans a number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?
func (s *scanner) number() error {
	src := s.src
	digits := func(what string) error {
		if s.pos >= len(src) {
			return s.errEnd(what)
		}
		if src[s.pos] < '0' || src[s.pos] > '9' {
			return s.errChar("where " + what + " goes")
		}
		for s.pos < len(src) && src[s.pos] >= '0' && src[s.pos] <= '9' {
			s.pos++
		}
		return nil
	}
	if src[s.pos] == '-' {
		s.pos++
		if s.pos < len(src) && src[s.pos] == '0' {
			s.pos++
		} else if err := digits("a digit"); err != nil {
			return err
		}
	} else if src[s.pos] == '0' {
		s.pos++
	} else if src[s.pos] >= '1' && src[s.pos] <= '9' {
		for s.pos < len(src) && src[s.pos] >= '0' && src[s.pos] <= '9' {
			s.pos++
		}
	} else {
		return s.errChar("where a value goes")
	}
	if s.pos < len(src) && src[s.pos] == '.' {
		s.pos++
		if err := digits("a digit of a fraction"); err != nil {
			return err
		}
	}
	if s.pos < len(src) && (src[s.pos] == 'e' || src[s.pos] == 'E') {
		s.pos++
		if s.pos < len(src) && (src[s.pos] == '+' || src[s.pos] == '-') {
			s.pos++
		}
		if err := digits("a digit of an exponent"); err != nil {
			return err
		}
	}
	return nil
}

// position returns the line and column (in bytes, from 1) of src[i] in the
// body.
func (s *scanner) position(i int) (line, col int) {
	line = 1 + bytes.Count(s.src[:i], []byte{'\n'})
	col = i - bytes.LastIndexByte(s.src[:i], '\n')
	if line == 1 {
		col += s.bom
	}
	return line, col
}

func (s *scanner) errChar(where string) error {
	line, col := s.position(s.pos)
	r, _ := utf8.DecodeRune(s.src[s.pos:])
	c := strconv.QuoteRune(r)
	if r == utf8.RuneError || r < 0x20 {
		c = fmt.Sprintf("byte 0x%02x", s.src[s.pos])
	}
	return fmt.Errorf("response body is not valid JSON: unexpected %s %s, at line %d, column %d (offset %d)", c, where, line, col, s.bom+s.pos)
}

func (s *scanner) errEnd(want string) error {
	if len(s.src) == 0 {
		return errors.New("response body is empty, not JSON")
	}
	return fmt.Errorf("response body is not valid JSON: it ends where %s should be (offset %d)", want, s.bom+len(s.src))
}
