package pollsse

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// A pointer is a parsed JSON Pointer (RFC 6901).
type pointer struct {
	text   string
	tokens []string
}

// parsePointer parses a JSON Pointer; option names the option in errors.
func parsePointer(option, s string) (pointer, error) {
	p := pointer{text: s}
	if s == "" {
		return p, nil
	}
	if s[0] != '/' {
		return p, fmt.Errorf("%s: invalid JSON pointer %q: must be empty or start with \"/\"", option, s)
	}
	for _, tok := range strings.Split(s[1:], "/") {
		for i := 0; i < len(tok); i++ {
			if tok[i] == '~' && (i+1 == len(tok) || (tok[i+1] != '0' && tok[i+1] != '1')) {
				return p, fmt.Errorf("%s: invalid JSON pointer %q: \"~\" must be followed by \"0\" or \"1\"", option, s)
			}
		}
		p.tokens = append(p.tokens, strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~"))
	}
	return p, nil
}

// prefix returns the text of the pointer's first n tokens.
func (p pointer) prefix(n int) string {
	if n == 0 {
		return ""
	}
	i := 0
	for ; n > 0; n-- {
		j := strings.IndexByte(p.text[i+1:], '/')
		if j < 0 {
			return p.text
		}
		i += 1 + j
	}
	return p.text[:i]
}

// A filter holds the select and ignore options: what part of a response a
// document holds.
type filter struct {
	// sel is the pointer to the streamed part; nil for the whole response.
	sel *pointer
	// ignore are patterns of the parts removed, relative to the response;
	// a token "*" matches every member or element.
	ignore []pointer
}

func newFilter(sel string, ignore []string) (filter, error) {
	var f filter
	if sel != "" {
		p, err := parsePointer("select", sel)
		if err != nil {
			return f, err
		}
		f.sel = &p
	}
	for _, s := range ignore {
		p, err := parsePointer("ignore", s)
		if err != nil {
			return f, err
		}
		if s == "" {
			return f, errors.New(`ignore: "" would remove the whole response`)
		}
		if f.sel != nil && len(p.tokens) <= len(f.sel.tokens) {
			covers := true
			for i, tok := range p.tokens {
				covers = covers && (tok == "*" || tok == f.sel.tokens[i])
			}
			if covers {
				return f, fmt.Errorf("ignore: %q removes all of select %q", s, sel)
			}
		}
		f.ignore = append(f.ignore, p)
	}
	return f, nil
}

var utf8BOM = []byte("\xef\xbb\xbf")

// parseJSON parses a response body as JSON and applies the filter.
func (f filter) parseJSON(body []byte) (*document, error) {
	if cap(body)-len(body) > len(body)/4 {
		// The document keeps the body: do not keep much slack that reading
		// it left.
		body = bytes.Clone(body)
	}
	src, bom := body, 0
	if bytes.HasPrefix(src, utf8BOM) {
		src, bom = src[len(utf8BOM):], len(utf8BOM)
	}
	if len(src) > math.MaxUint32/2 {
		return nil, fmt.Errorf("response body of %d bytes is too large to compare", len(body))
	}
	s := scanner{src: src, bom: bom}
	if err := s.run(); err != nil {
		return nil, err
	}
	doc := &document{body: body, buf: s.result(), nodes: s.nodes}
	if cap(doc.nodes)-len(doc.nodes) > len(doc.nodes)/4 {
		// The estimate counted the commas in strings too: keep at most a
		// quarter more room than the nodes need.
		doc.nodes = slices.Clone(doc.nodes)
	}
	// Select and ignore both point into the response as it came.
	if f.sel != nil {
		root, err := doc.resolve(*f.sel)
		if err != nil {
			return nil, err
		}
		doc.root = root
	}
	drop := s.dropped
	for _, p := range f.ignore {
		drop = doc.match(0, p.tokens, drop)
	}
	if len(drop) > 0 {
		doc.buf, doc.nodes, doc.root = doc.without(drop, doc.root)
	}
	doc.data = doc.text(doc.root)
	return doc, nil
}

// match appends to out the nodes under i that the pattern toks matches.
func (d *document) match(i uint32, toks []string, out []uint32) []uint32 {
	tok := toks[0]
	found := func(child uint32) {
		if len(toks) == 1 {
			out = append(out, child)
		} else {
			out = d.match(child, toks[1:], out)
		}
	}
	switch d.kind(i) {
	case kindObject:
		for m := range d.members(i) {
			if tok == "*" || keyIs(m.key, tok) {
				found(m.val)
			}
		}
	case kindArray:
		idx, ok := arrayIndex(tok)
		k := 0
		for c := range d.children(i) {
			if tok == "*" || (ok && k == idx) {
				found(c)
			}
			k++
		}
	}
	return out
}

// resolve returns the node that p points at.
func (d *document) resolve(p pointer) (uint32, error) {
	i := uint32(0)
	for k, tok := range p.tokens {
		at := p.prefix(k)
		if at == "" {
			at = "the document"
		} else {
			at = strconv.Quote(at)
		}
		switch d.kind(i) {
		case kindObject:
			// Of duplicate keys, the last member is the one kept.
			next, ok := uint32(0), false
			for m := range d.members(i) {
				if keyIs(m.key, tok) {
					next, ok = m.val, true
				}
			}
			if !ok {
				return 0, fmt.Errorf("select %q: %s has no member %q", p.text, at, tok)
			}
			i = next
		case kindArray:
			idx, ok := arrayIndex(tok)
			if !ok {
				return 0, fmt.Errorf("select %q: %s is an array and %q is not an index", p.text, at, tok)
			}
			if idx >= int(d.nodes[i].n) {
				return 0, fmt.Errorf("select %q: %s has %d elements, no index %d", p.text, at, d.nodes[i].n, idx)
			}
			c := i + 1
			for ; idx > 0; idx-- {
				c = d.nodes[c].next
			}
			i = c
		default:
			return 0, fmt.Errorf("select %q: %s is %s, not an object or array", p.text, at, d.kindName(i))
		}
	}
	return i, nil
}

// arrayIndex parses a reference token as an array index.
func arrayIndex(tok string) (int, bool) {
	if tok == "" || len(tok) > 9 || (tok[0] == '0' && len(tok) > 1) {
		return 0, false
	}
	n := 0
	for i := 0; i < len(tok); i++ {
		if tok[i] < '0' || tok[i] > '9' {
			return 0, false
		}
		n = n*10 + int(tok[i]-'0')
	}
	return n, true
}

// without returns the document's buf and nodes without the values of drop,
// which are object members or array elements, and the new index of node
// keep, which must not be in a dropped value.
func (d *document) without(drop []uint32, keep uint32) ([]byte, []node, uint32) {
	r := rewriter{d: d, drop: make([]bool, len(d.nodes)), keep: keep}
	for _, i := range drop {
		r.drop[i] = true
	}
	r.buf = make([]byte, 0, len(d.buf))
	r.nodes = make([]node, 0, len(d.nodes))
	r.value(0)
	return r.buf, r.nodes, r.kept
}

type rewriter struct {
	d          *document
	drop       []bool
	keep, kept uint32
	buf        []byte
	nodes      []node
}

func (r *rewriter) value(i uint32) uint64 {
	n := r.d.nodes[i]
	start := uint32(len(r.buf))
	idx := len(r.nodes)
	r.nodes = append(r.nodes, node{})
	if i == r.keep {
		r.kept = uint32(idx)
	}
	k := r.d.kind(i)
	if k != kindObject && k != kindArray {
		r.buf = append(r.buf, r.d.buf[n.start:n.end]...)
		r.nodes[idx] = node{hash: n.hash, start: start, end: uint32(len(r.buf)), next: uint32(idx + 1)}
		return n.hash
	}
	open := r.d.buf[n.start]
	r.buf = append(r.buf, open)
	h := containerSeed(open)
	var count uint32
	keyStart := n.start + 1
	for c := i + 1; c < n.next; c = r.d.nodes[c].next {
		cn := r.d.nodes[c]
		ks := keyStart
		keyStart = cn.end + 1
		if r.drop[c] {
			continue
		}
		if count > 0 {
			r.buf = append(r.buf, ',')
		}
		if k == kindObject {
			key := r.d.buf[ks : cn.start-1] // with its quotes
			r.buf = append(r.buf, key...)
			r.buf = append(r.buf, ':')
			h = mix(h, hashKey(key[1:len(key)-1]))
		}
		h = mix(h, r.value(c))
		count++
	}
	r.buf = append(r.buf, open+2) // '}' or ']'
	h = mix(h, uint64(count))
	r.nodes[idx] = node{hash: h, start: start, end: uint32(len(r.buf)), next: uint32(len(r.nodes)), n: count}
	return h
}
