package pollsse

import (
	"bytes"
	"slices"
	"strconv"
)

// A patchWriter writes the JSON Patch operations that turn values of a into
// values of b.
type patchWriter struct {
	a, b *document
	out  []byte
	// path is the JSON Pointer of the values being compared, as JSON string
	// content.
	path []byte
	// limit is the length of out after which the operations being written
	// are too long to be worth it: a replacement of the value being
	// compared, or a snapshot, is shorter.
	limit int
	mem   []member
}

func (w *patchWriter) over() bool { return len(w.out) > w.limit }

// op starts an operation with its name and path.
func (w *patchWriter) op(name string) {
	if len(w.out) > 1 {
		w.out = append(w.out, ',')
	}
	w.out = append(w.out, `{"op":"`...)
	w.out = append(w.out, name...)
	w.out = append(w.out, `","path":"`...)
	w.out = append(w.out, w.path...)
	w.out = append(w.out, '"')
}

func (w *patchWriter) withValue(name string, bi uint32) {
	w.op(name)
	w.out = append(w.out, `,"value":`...)
	w.out = append(w.out, w.b.text(bi)...)
	w.out = append(w.out, '}')
}

func (w *patchWriter) remove() {
	w.op("remove")
	w.out = append(w.out, '}')
}

// move writes a move within the array at w.path.
func (w *patchWriter) move(from, to int) {
	if len(w.out) > 1 {
		w.out = append(w.out, ',')
	}
	w.out = append(w.out, `{"op":"move","from":"`...)
	w.out = append(w.out, w.path...)
	w.out = append(w.out, '/')
	w.out = strconv.AppendInt(w.out, int64(from), 10)
	w.out = append(w.out, `","path":"`...)
	w.out = append(w.out, w.path...)
	w.out = append(w.out, '/')
	w.out = strconv.AppendInt(w.out, int64(to), 10)
	w.out = append(w.out, `"}`...)
}

// moveKey writes a move between two members of the object at w.path.
func (w *patchWriter) moveKey(from, to []byte) {
	if len(w.out) > 1 {
		w.out = append(w.out, ',')
	}
	w.out = append(w.out, `{"op":"move","from":"`...)
	w.out = append(w.out, w.path...)
	w.out = append(w.out, '/')
	w.out = appendToken(w.out, from)
	w.out = append(w.out, `","path":"`...)
	w.out = append(w.out, w.path...)
	w.out = append(w.out, '/')
	w.out = appendToken(w.out, to)
	w.out = append(w.out, `"}`...)
}

func (w *patchWriter) pushKey(key []byte) int {
	n := len(w.path)
	w.path = append(w.path, '/')
	w.path = appendToken(w.path, key)
	return n
}

func (w *patchWriter) pushIndex(i int) int {
	n := len(w.path)
	w.path = append(w.path, '/')
	w.path = strconv.AppendInt(w.path, int64(i), 10)
	return n
}

// appendToken appends a member's key (a JSON string content) to a JSON
// string content as a JSON Pointer reference token: "~" as "~0", "/" as
// "~1".
func appendToken(dst, key []byte) []byte {
	if bytes.IndexAny(key, `~/\`) < 0 {
		return append(dst, key...)
	}
	s := unescape(key)
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '~':
			dst = append(dst, "~0"...)
		case c == '/':
			dst = append(dst, "~1"...)
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c < 0x20:
			dst = append(dst, `\u00`...)
			dst = append(dst, "0123456789abcdef"[c>>4], "0123456789abcdef"[c&0xf])
		case c == 0xed && i+2 < len(s) && s[i+1] >= 0xa0:
			// A lone surrogate, as unescape wrote it.
			r := rune(c&0x0f)<<12 | rune(s[i+1]&0x3f)<<6 | rune(s[i+2]&0x3f)
			dst = append(dst, `\u`...)
			dst = strconv.AppendUint(dst, uint64(r), 16)
			i += 2
		default:
			dst = append(dst, c)
		}
	}
	return dst
}

// value writes the operations that turn a's value ai into b's value bi, at
// w.path.
func (w *patchWriter) value(ai, bi uint32) {
	if w.over() || sameText(w.a, ai, w.b, bi) {
		return
	}
	k := w.a.kind(ai)
	if k != w.b.kind(bi) {
		w.withValue("replace", bi)
		return
	}
	switch k {
	case kindString:
		if !equalStrings(w.a.text(ai), w.b.text(bi)) {
			w.withValue("replace", bi)
		}
	case kindObject, kindArray:
		// Compare the members or elements, unless replacing the whole
		// value says it in fewer bytes.
		mark := len(w.out)
		cost := len(`,{"op":"replace","path":"","value":}`) + len(w.path) + len(w.b.text(bi))
		limit := w.limit
		w.limit = min(limit, mark+cost)
		if k == kindObject {
			w.object(ai, bi)
		} else {
			w.array(ai, bi)
		}
		w.limit = limit
		if len(w.out)-mark > cost {
			w.out = w.out[:mark]
			w.withValue("replace", bi)
		}
	default:
		// Numbers differ in their text, true, false and null in their kind.
		w.withValue("replace", bi)
	}
}

// object writes the operations between two objects.
func (w *patchWriter) object(ai, bi uint32) {
	base := len(w.mem)
	defer func() { w.mem = w.mem[:base] }()
	for m := range w.a.members(ai) {
		w.mem = append(w.mem, m)
	}
	na := len(w.mem) - base
	for m := range w.b.members(bi) {
		w.mem = append(w.mem, m)
	}
	am, bm := w.mem[base:base+na], w.mem[base+na:]

	// Most often the keys are the same and in the same order.
	inOrder := len(am) == len(bm)
	for j := 0; inOrder && j < len(am); j++ {
		inOrder = bytes.Equal(am[j].key, bm[j].key)
	}
	if inOrder {
		for j := range am {
			if w.over() {
				return
			}
			n := w.pushKey(bm[j].key)
			w.value(am[j].val, bm[j].val)
			w.path = w.path[:n]
		}
		return
	}

	from := matchMembers(am, bm)
	usedA := make([]bool, len(am))
	for _, i := range from {
		if i >= 0 {
			usedA[i] = true
		}
	}
	moved := w.renames(am, bm, from, usedA)
	for i := range am {
		if !usedA[i] {
			n := w.pushKey(am[i].key)
			w.remove()
			w.path = w.path[:n]
		}
	}
	for j := range bm {
		if w.over() {
			return
		}
		if moved[j] {
			continue
		}
		n := w.pushKey(bm[j].key)
		if from[j] < 0 {
			w.withValue("add", bm[j].val)
		} else {
			w.value(am[from[j]].val, bm[j].val)
		}
		w.path = w.path[:n]
	}
}

// renames writes a move for each member of bm whose key am does not have,
// and whose value a member of am that is not used has, written alike: a
// member renamed with its value unchanged is a move, which is shorter than
// removing it and adding the value again. It marks the members of am that
// it moves used, and returns which members of bm it moved.
func (w *patchWriter) renames(am, bm []member, from []int, usedA []bool) []bool {
	moved := make([]bool, len(bm))
	if len(am)*len(bm) > 1024 {
		return moved
	}
	for j := range bm {
		if from[j] >= 0 {
			continue
		}
		for i := range am {
			if !usedA[i] && sameText(w.a, am[i].val, w.b, bm[j].val) {
				w.moveKey(am[i].key, bm[j].key)
				usedA[i], moved[j] = true, true
				break
			}
		}
	}
	return moved
}

// array writes the operations between two arrays.
func (w *patchWriter) array(ai, bi uint32) {
	ae := slices.AppendSeq(make([]uint32, 0, w.a.nodes[ai].n), w.a.children(ai))
	be := slices.AppendSeq(make([]uint32, 0, w.b.nodes[bi].n), w.b.children(bi))
	// The elements before and after the change are most of the array.
	p := 0
	for p < len(ae) && p < len(be) && sameText(w.a, ae[p], w.b, be[p]) {
		p++
	}
	s := 0
	for s < len(ae)-p && s < len(be)-p && sameText(w.a, ae[len(ae)-1-s], w.b, be[len(be)-1-s]) {
		s++
	}
	A, B := ae[p:len(ae)-s], be[p:len(be)-s]
	switch {
	case len(A) == 0:
		for j := range B {
			if w.over() {
				return
			}
			n := w.pushIndex(p + j)
			w.withValue("add", B[j])
			w.path = w.path[:n]
		}
	case len(B) == 0:
		n := w.pushIndex(p)
		for range A {
			if w.over() {
				break
			}
			w.remove()
		}
		w.path = w.path[:n]
	case len(A) == 1 && len(B) == 1:
		n := w.pushIndex(p)
		w.value(A[0], B[0])
		w.path = w.path[:n]
	default:
		w.align(p, A, B)
	}
}
