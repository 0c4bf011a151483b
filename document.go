package pollsse

import (
	"bytes"
	"hash/maphash"
	"slices"
	"unicode/utf8"
)

// A document is one upstream response that parsed, kept between polls so that
// the next response is compared with it.
type document struct {
	// body is the response body as the upstream sent it: a body identical
	// to the previous one is unchanged without being parsed. When the body
	// is already compact JSON, buf and data share its bytes.
	body []byte
	// data is the data of the document's snapshot event: compact JSON, or
	// text in snapshot mode.
	data []byte
	// buf is the compact JSON of the whole response, which the nodes point
	// into; data is the part of it that select chose. buf and nodes are nil
	// for a text document.
	buf   []byte
	nodes []node
	// root is the index of the node of data.
	root uint32
}

// A node is one JSON value of a document. The nodes of a document are in
// document order: a container's first child, if any, follows it, and each
// child's next is the index of its next sibling.
type node struct {
	// hash is a hash of the value: equal values written alike have equal
	// hashes. Objects hash their members in order.
	hash uint64
	// start and end are the value's span in the document's buf.
	start, end uint32
	// next is the index of the node after this value and all of its
	// descendants.
	next uint32
	// n is the number of elements or members of an array or object.
	n uint32
}

// Kinds of values, named by the first byte of their text except numbers.
const (
	kindObject = '{'
	kindArray  = '['
	kindString = '"'
	kindTrue   = 't'
	kindFalse  = 'f'
	kindNull   = 'n'
	kindNumber = '0'
)

func (d *document) kind(i uint32) byte {
	c := d.buf[d.nodes[i].start]
	if c == '-' || (c >= '0' && c <= '9') {
		return kindNumber
	}
	return c
}

func (d *document) kindName(i uint32) string {
	switch d.kind(i) {
	case kindObject:
		return "an object"
	case kindArray:
		return "an array"
	case kindString:
		return "a string"
	case kindNumber:
		return "a number"
	case kindNull:
		return "null"
	}
	return "a boolean"
}

// text returns the JSON text of value i.
func (d *document) text(i uint32) []byte {
	n := &d.nodes[i]
	return d.buf[n.start:n.end]
}

// children yields the elements of an array or the member values of an
// object.
func (d *document) children(i uint32) func(yield func(uint32) bool) {
	return func(yield func(uint32) bool) {
		end := d.nodes[i].next
		for c := i + 1; c < end; c = d.nodes[c].next {
			if !yield(c) {
				return
			}
		}
	}
}

// A member is one member of an object: its key as written between the
// quotes, and its value.
type member struct {
	key []byte
	val uint32
}

// members yields the members of object i.
func (d *document) members(i uint32) func(yield func(member) bool) {
	return func(yield func(member) bool) {
		keyStart := d.nodes[i].start + 1
		end := d.nodes[i].next
		for c := i + 1; c < end; c = d.nodes[c].next {
			n := &d.nodes[c]
			// In compact JSON a member is "key":value, after '{' or ','.
			if !yield(member{key: d.buf[keyStart+1 : n.start-2], val: c}) {
				return
			}
			keyStart = n.end + 1
		}
	}
}

// sameText reports whether two values are written alike, which their
// hashes say at once when they are not.
func sameText(a *document, ai uint32, b *document, bi uint32) bool {
	na, nb := &a.nodes[ai], &b.nodes[bi]
	return na.hash == nb.hash && bytes.Equal(a.buf[na.start:na.end], b.buf[nb.start:nb.end])
}

// equalValue reports whether two values are equal JSON values: members in
// any order, strings however escaped, numbers by their text.
func equalValue(a *document, ai uint32, b *document, bi uint32) bool {
	if sameText(a, ai, b, bi) {
		return true
	}
	k := a.kind(ai)
	if k != b.kind(bi) || a.nodes[ai].n != b.nodes[bi].n {
		return false
	}
	switch k {
	case kindString:
		return equalStrings(a.text(ai), b.text(bi))
	case kindArray:
		be := slices.Collect(b.children(bi))
		k := 0
		for ac := range a.children(ai) {
			if !equalValue(a, ac, b, be[k]) {
				return false
			}
			k++
		}
		return true
	case kindObject:
		am := slices.Collect(a.members(ai))
		for bm := range b.members(bi) {
			j := findKey(am, bm.key)
			if j < 0 || !equalValue(a, am[j].val, b, bm.val) {
				return false
			}
		}
		return true
	}
	return false
}

// findKey returns the index of the member of ms whose key equals key, or -1.
func findKey(ms []member, key []byte) int {
	for j := range ms {
		if equalKeys(ms[j].key, key) {
			return j
		}
	}
	return -1
}

// matchMembers returns, for each member of bm, the index of the member of
// am with the same key, or -1.
func matchMembers(am, bm []member) []int {
	from := make([]int, len(bm))
	if len(am) <= 16 {
		for j := range bm {
			from[j] = findKey(am, bm[j].key)
		}
		return from
	}
	index := make(map[string]int, len(am))
	for i := range am {
		index[string(unescape(am[i].key))] = i
	}
	for j := range bm {
		i, ok := index[string(unescape(bm[j].key))]
		if !ok {
			i = -1
		}
		from[j] = i
	}
	return from
}

// equalStrings compares two JSON strings (with their quotes) by value.
func equalStrings(a, b []byte) bool {
	return equalKeys(a[1:len(a)-1], b[1:len(b)-1])
}

// equalKeys compares two JSON string contents (between the quotes) by value.
func equalKeys(a, b []byte) bool {
	if bytes.Equal(a, b) {
		return true
	}
	if bytes.IndexByte(a, '\\') < 0 && bytes.IndexByte(b, '\\') < 0 {
		return false
	}
	return bytes.Equal(unescape(a), unescape(b))
}

// keyIs reports whether a JSON string content is the string tok.
func keyIs(key []byte, tok string) bool {
	if bytes.IndexByte(key, '\\') < 0 {
		return string(key) == tok
	}
	return string(unescape(key)) == tok
}

// unescape decodes the content of a valid JSON string. An escaped lone
// surrogate becomes its WTF-8 bytes, so that distinct strings stay distinct.
func unescape(s []byte) []byte {
	if bytes.IndexByte(s, '\\') < 0 {
		return s
	}
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); {
		c := s[i]
		if c != '\\' {
			out = append(out, c)
			i++
			continue
		}
		switch s[i+1] {
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r := rune(hex4(s[i+2:]))
			i += 6
			if r >= 0xd800 && r < 0xdc00 && i+6 <= len(s) && s[i] == '\\' && s[i+1] == 'u' {
				if lo := rune(hex4(s[i+2:])); lo >= 0xdc00 && lo < 0xe000 {
					out = utf8.AppendRune(out, 0x10000+(r-0xd800)<<10+(lo-0xdc00))
					i += 6
					continue
				}
			}
			if r >= 0xd800 && r < 0xe000 {
				out = append(out, 0xe0|byte(r>>12), 0x80|byte(r>>6)&0x3f, 0x80|byte(r)&0x3f)
			} else {
				out = utf8.AppendRune(out, r)
			}
			continue
		default: // '"', '\\', '/'
			out = append(out, s[i+1])
		}
		i += 2
	}
	return out
}

func hex4(s []byte) uint32 {
	var r uint32
	for _, c := range s[:4] {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= uint32(c - '0')
		case c >= 'a' && c <= 'f':
			r |= uint32(c - 'a' + 10)
		default:
			r |= uint32(c - 'A' + 10)
		}
	}
	return r
}

var hashSeed = maphash.MakeSeed()

// mix folds x into the hash h.
func mix(h, x uint64) uint64 {
	h ^= x
	h *= 0xbf58476d1ce4e5b9
	return h ^ h>>31
}

const (
	tagString uint64 = 0x9e3779b97f4a7c15
	tagNumber uint64 = 0xc2b2ae3d27d4eb4f
	hashTrue  uint64 = 0x165667b19e3779f9
	hashFalse uint64 = 0x27d4eb2f165667c5
	hashNull  uint64 = 0x85ebca77c2b2ae63
)

func containerSeed(open byte) uint64 {
	if open == '{' {
		return 0x94d049bb133111eb
	}
	return 0x2545f4914f6cdd1d
}

// hashKey hashes a JSON string content by its value.
func hashKey(content []byte) uint64 {
	return maphash.Bytes(hashSeed, unescape(content))
}
