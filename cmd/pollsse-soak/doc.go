package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
)

// Documents are values of encoding/json's generic types, with numbers as
// json.Number so that their text survives (12345678901234567890, 1e400 and
// -0 reach the browser as written): map[string]any, []any, string,
// json.Number, bool and nil.

// canonical returns the canonical encoding of the JSON text b: its members
// sorted, numbers as written, no insignificant whitespace. Two documents are
// equal when their canonical encodings are.
func canonical(b []byte) ([]byte, error) {
	v, err := decode(b)
	if err != nil {
		return nil, err
	}
	return encode(v), nil
}

// decode parses one JSON value, keeping the text of its numbers.
func decode(b []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	if d.More() {
		return nil, fmt.Errorf("data after the JSON value")
	}
	return v, nil
}

// encode returns the canonical encoding of v.
func encode(v any) []byte {
	var buf bytes.Buffer
	e := json.NewEncoder(&buf)
	e.SetEscapeHTML(false)
	if err := e.Encode(v); err != nil {
		panic(err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// A docHash identifies a document by its canonical encoding.
type docHash [sha256.Size]byte

func hashOf(canon []byte) docHash { return sha256.Sum256(canon) }

// versionOf returns the version that a document says it is: the member "v"
// of an object, or of the first element of an array.
func versionOf(v any) (int, bool) {
	switch d := v.(type) {
	case map[string]any:
		n, ok := d["v"].(json.Number)
		if !ok {
			return 0, false
		}
		i, err := strconv.Atoi(string(n))
		return i, err == nil
	case []any:
		if len(d) == 0 {
			return 0, false
		}
		return versionOf(d[0])
	}
	return 0, false
}

// A docKind is the shape of a topic's document and how it changes.
type docKind string

const (
	// kindObject is an object whose members are added, changed and
	// removed at any depth, with keys that need escaping in a JSON Pointer.
	kindObject docKind = "object"
	// kindList is an object with an array of items that are inserted,
	// removed, moved and changed, now and then reversed or replaced.
	kindList docKind = "list"
	// kindDeep is a tree ten levels deep, changed at its leaves.
	kindDeep docKind = "deep"
	// kindBig is an array of about 4,000 rows, about 1 MB, of which a
	// few change at a time.
	kindBig docKind = "big"
	// kindShape switches between an object and an array now and then,
	// a change that is sent as a snapshot.
	kindShape docKind = "shape"
	// kindMerge is an object for merge_patch: members set to null,
	// arrays replaced whole.
	kindMerge docKind = "merge"
	// kindStill is a document of 6 MB that never changes, larger than what
	// the kernel buffers of a loopback connection hold, on a topic whose
	// upstream flaps: a reader that stops falls behind status events alone.
	kindStill docKind = "still"
)

// A mutator holds one topic's document and changes it at random.
type mutator struct {
	kind docKind
	rng  *rand.Rand
	doc  map[string]any
	// list is the document of kindShape while it is an array (its first
	// element holds "v").
	asArray bool
	next    int // for unique ids
}

func newMutator(kind docKind, rng *rand.Rand) *mutator {
	m := &mutator{kind: kind, rng: rng, doc: map[string]any{}}
	switch kind {
	case kindObject, kindMerge:
		m.doc["meta"] = map[string]any{"name": "soak", "a/b": "slash", "m~n": "tilde", "": "empty key"}
		m.doc["numbers"] = map[string]any{"big": json.Number("12345678901234567890"), "huge": json.Number("1e400"), "negzero": json.Number("-0"), "tenth": json.Number("0.1")}
		for range 8 {
			m.setRandom(m.doc, 2)
		}
	case kindList, kindShape:
		items := []any{}
		for range 12 {
			items = append(items, m.item())
		}
		m.doc["items"] = items
	case kindDeep:
		m.doc["root"] = m.tree(10)
	case kindStill:
		m.doc["pad"] = strings.Repeat("s", 6<<20)
	case kindBig:
		rows := make([]any, 0, 4000)
		for range 4000 {
			rows = append(rows, m.row())
		}
		m.doc["rows"] = rows
	}
	return m
}

// value returns the document of version v.
func (m *mutator) value(v int) any {
	m.doc["v"] = json.Number(strconv.Itoa(v))
	if m.kind == kindShape && m.asArray {
		head := map[string]any{"v": m.doc["v"]}
		return append([]any{head}, m.doc["items"].([]any)...)
	}
	return m.doc
}

// mutate makes one random change.
func (m *mutator) mutate() {
	switch m.kind {
	case kindObject:
		for range 1 + m.rng.IntN(3) {
			m.setRandom(m.doc, 3)
		}
	case kindMerge:
		switch m.rng.IntN(6) {
		case 0: // a member set to null: no merge patch says it
			keys := m.keys(m.doc)
			m.doc[keys[m.rng.IntN(len(keys))]] = nil
		case 1: // an array replaced
			m.doc["list"] = []any{m.text(), json.Number(strconv.Itoa(m.rng.IntN(100)))}
		default:
			m.setRandom(m.doc, 2)
		}
	case kindList:
		m.doc["items"] = m.mutateItems(m.doc["items"].([]any))
	case kindShape:
		if m.rng.IntN(8) == 0 {
			m.asArray = !m.asArray
		} else {
			m.doc["items"] = m.mutateItems(m.doc["items"].([]any))
		}
	case kindDeep:
		node := m.doc["root"].(map[string]any)
		for depth := 0; depth < 9; depth++ {
			keys := m.keys(node)
			child, ok := node[keys[m.rng.IntN(len(keys))]].(map[string]any)
			if !ok {
				break
			}
			node = child
		}
		if m.rng.IntN(5) == 0 {
			node["sub"+strconv.Itoa(m.rng.IntN(4))] = m.tree(1 + m.rng.IntN(3))
		} else {
			m.setRandom(node, 1)
		}
	case kindBig:
		rows := m.doc["rows"].([]any)
		for range 1 + m.rng.IntN(3) {
			switch m.rng.IntN(6) {
			case 0:
				i := m.rng.IntN(len(rows) + 1)
				rows = slices.Insert(rows, i, any(m.row()))
			case 1:
				if len(rows) > 3000 {
					i := m.rng.IntN(len(rows))
					rows = slices.Delete(rows, i, i+1)
				}
			default:
				r := rows[m.rng.IntN(len(rows))].(map[string]any)
				r["stock"] = json.Number(strconv.Itoa(m.rng.IntN(1000)))
				if m.rng.IntN(2) == 0 {
					r["label"] = m.text()
				}
			}
		}
		m.doc["rows"] = rows
	}
}

func (m *mutator) mutateItems(items []any) []any {
	r := m.rng
	switch op := r.IntN(10); {
	case op < 3 || len(items) < 2:
		i := r.IntN(len(items) + 1)
		items = slices.Insert(items, i, any(m.item()))
	case op == 3 && len(items) > 4:
		i := r.IntN(len(items))
		items = slices.Delete(items, i, i+1)
	case op == 4:
		i, j := r.IntN(len(items)), r.IntN(len(items))
		it := items[i]
		items = slices.Delete(items, i, i+1)
		items = slices.Insert(items, min(j, len(items)), it)
	case op == 5:
		it := items[r.IntN(len(items))].(map[string]any)
		if _, ok := it["tags"]; ok {
			delete(it, "tags")
		} else {
			it["tags"] = []any{m.text(), nil, true, map[string]any{"deep": []any{json.Number("1"), json.Number("2.5")}}}
		}
	case op == 6 && r.IntN(8) == 0:
		slices.Reverse(items)
	case op == 7 && r.IntN(12) == 0:
		items = []any{m.item()}
	default:
		it := items[r.IntN(len(items))].(map[string]any)
		it["n"] = json.Number(strconv.Itoa(r.IntN(100)))
		if r.IntN(3) == 0 {
			it["text"] = m.text()
		}
	}
	if len(items) > 60 {
		items = items[:40]
	}
	return items
}

func (m *mutator) item() map[string]any {
	m.next++
	return map[string]any{"id": json.Number(strconv.Itoa(m.next)), "n": json.Number(strconv.Itoa(m.rng.IntN(100))), "text": m.text()}
}

func (m *mutator) row() map[string]any {
	m.next++
	return map[string]any{
		"id":    json.Number(strconv.Itoa(m.next)),
		"sku":   fmt.Sprintf("SKU-%08d", m.next),
		"stock": json.Number(strconv.Itoa(m.rng.IntN(1000))),
		"label": m.text(),
		"pad":   strings.Repeat("r", 150),
	}
}

func (m *mutator) tree(depth int) map[string]any {
	node := map[string]any{"leaf": m.text()}
	if depth > 0 {
		for i := range 2 {
			node["k"+strconv.Itoa(i)] = m.tree(depth - 1)
		}
	}
	return node
}

// setRandom sets, replaces or deletes a member of obj or of an object
// below it, up to depth levels down.
func (m *mutator) setRandom(obj map[string]any, depth int) {
	keys := []string{"name", "a/b", "m~n", "", "~1", "new key", "ünï", "x", "y", "z"}
	k := keys[m.rng.IntN(len(keys))]
	if depth > 1 && m.rng.IntN(2) == 0 {
		child, ok := obj[k].(map[string]any)
		if !ok {
			child = map[string]any{}
			obj[k] = child
		}
		m.setRandom(child, depth-1)
		return
	}
	switch m.rng.IntN(6) {
	case 0:
		delete(obj, k)
	case 1:
		obj[k] = json.Number(strconv.Itoa(m.rng.IntN(1000)))
	case 2:
		obj[k] = []any{m.text(), json.Number(strconv.Itoa(m.rng.IntN(10)))}
	case 3:
		obj[k] = m.rng.IntN(2) == 0
	default:
		obj[k] = m.text()
	}
}

func (m *mutator) keys(obj map[string]any) []string {
	keys := make([]string, 0, len(obj))
	for k := range obj {
		if k != "v" {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}

// text returns a random string with the characters that a framing or
// escaping bug would trip over.
func (m *mutator) text() string {
	parts := []string{"plain", "line\nbreak", "cr\rlf\r\n", "data: fake", "\u2028sep", "ünï©ødé", "tab\t", `quote"`, "nul\x00", "id: 1", "event: patch", "<html>", "🙂"}
	return parts[m.rng.IntN(len(parts))] + strconv.Itoa(m.rng.IntN(1000))
}

// shuffled returns v encoded with its members in a random order and random
// whitespace, which must make no event: documents are compared by value.
func shuffled(v any, rng *rand.Rand) []byte {
	var b bytes.Buffer
	var write func(v any)
	space := func() {
		if rng.IntN(4) == 0 {
			b.WriteString([]string{" ", "\n", "\t", "\r\n  "}[rng.IntN(4)])
		}
	}
	write = func(v any) {
		space()
		switch x := v.(type) {
		case map[string]any:
			keys := make([]string, 0, len(x))
			for k := range x {
				keys = append(keys, k)
			}
			rng.Shuffle(len(keys), func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
			b.WriteByte('{')
			for i, k := range keys {
				if i > 0 {
					b.WriteByte(',')
				}
				space()
				b.Write(encode(k))
				space()
				b.WriteByte(':')
				write(x[k])
			}
			space()
			b.WriteByte('}')
		case []any:
			b.WriteByte('[')
			for i, e := range x {
				if i > 0 {
					b.WriteByte(',')
				}
				write(e)
			}
			space()
			b.WriteByte(']')
		default:
			b.Write(encode(x))
		}
		space()
	}
	write(v)
	return b.Bytes()
}
