package pollsse

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// The fuzz targets are seeded with the documents of testdata/diff and the
// JSON Patch test suite; run one with, for example,
//
//	go test -run '^$' -fuzz '^FuzzDiffJSONPatch$' -fuzztime 30s .

// FuzzDiffParse checks the scanner against encoding/json: it accepts what
// encoding/json accepts, except invalid UTF-8 and nesting beyond maxDepth,
// and its snapshot is the same JSON value, compact.
func FuzzDiffParse(f *testing.F) {
	for _, doc := range diffDocuments(f) {
		f.Add(doc)
	}
	for _, s := range []string{"", " ", "\xef\xbb\xbf", "[1,]", `{"a":1,"a":2}`, "\"\xff\"", `"\ud800"`, "01", "-", "1e", `[[[]]]`, "{\"a\" :\t[ ]\n}"} {
		f.Add([]byte(s))
	}
	d := jsonPatchDiffer{}
	f.Fuzz(func(t *testing.T, body []byte) {
		doc, err := d.parse(body)
		valid := json.Valid(bytes.TrimPrefix(body, utf8BOM))
		if err != nil {
			if valid && utf8.Valid(body) && !strings.Contains(err.Error(), "deeper than") {
				t.Fatalf("parse %q: %v, but encoding/json takes it", body, err)
			}
			return
		}
		if !valid {
			t.Fatalf("parse %q took what encoding/json refuses: %s", body, doc.data)
		}
		if !sameJSONValue(doc.data, body) {
			t.Fatalf("parse %q: snapshot %s is another value", body, doc.data)
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, doc.data); err != nil || !bytes.Equal(compact.Bytes(), doc.data) {
			t.Fatalf("parse %q: snapshot %s is not compact", body, doc.data)
		}
		if !bytes.Equal(doc.body, body) {
			t.Fatalf("parse %q: body %q", body, doc.body)
		}
		// Every node's span is a value, and its hash does not depend on
		// where it is.
		hashes := make(map[string]uint64)
		for i := range doc.nodes {
			text := doc.text(uint32(i))
			if !json.Valid(text) {
				t.Fatalf("parse %q: node %d is %q", body, i, text)
			}
			if h, ok := hashes[string(text)]; ok && h != doc.nodes[i].hash {
				t.Fatalf("parse %q: two values %s have different hashes", body, text)
			}
			hashes[string(text)] = doc.nodes[i].hash
		}
	})
}

func fuzzDiff(f *testing.F, mode string) {
	for _, p := range diffPairs(f) {
		f.Add(p[0], p[1])
	}
	d := mustDiffer(f, mode, "")
	f.Fuzz(func(t *testing.T, a, b []byte) {
		if _, err := d.parse(a); err != nil {
			return
		}
		if _, err := d.parse(b); err != nil {
			return
		}
		if hasLoneSurrogate(a) || hasLoneSurrogate(b) {
			// encoding/json and json-patch decode every lone surrogate
			// as U+FFFD, so distinct keys would look the same to them.
			return
		}
		checkDiff(t, d, a, b)
	})
}

// FuzzDiffJSONPatch checks that the json_patch event for any two documents
// turns the first into the second.
func FuzzDiffJSONPatch(f *testing.F) { fuzzDiff(f, modeJSONPatch) }

// FuzzDiffMergePatch checks that the merge_patch event for any two
// documents turns the first into the second.
func FuzzDiffMergePatch(f *testing.F) { fuzzDiff(f, modeMergePatch) }

// FuzzDiffSnapshot checks the snapshot mode for any two bodies, JSON or not.
func FuzzDiffSnapshot(f *testing.F) { fuzzDiff(f, modeSnapshot) }

// FuzzDiffSelectIgnore checks select and ignore against the same done on
// the document as encoding/json decodes it.
func FuzzDiffSelectIgnore(f *testing.F) {
	docs := diffDocuments(f)
	for _, p := range [][3]string{
		{"api.json", "/data", "/data/items/*/updated_at"},
		{"api.json", "", "/generated_at"},
		{"api.json", "/data/items/1", "/data/items/0"},
		{"object.json", "/items", "/items/*/qty"},
		{"object.json", "/address/geo", "/*/zip"},
		{"keys.json", "/a~1b", "/m~0n"},
		{"nested.json", "/0/0/0", "/*/*"},
		{"duplicates.json", "/c", "/a"},
		{"array.json", "/3/v", "/*/id"},
	} {
		f.Add(docs[p[0]], p[1], p[2])
	}
	f.Fuzz(func(t *testing.T, body []byte, sel, ignore string) {
		d, err := newDiffer(modeJSONPatch, sel, []string{ignore})
		if err != nil || hasLoneSurrogate(body) {
			return
		}
		v, err := exactJSONValue(body)
		if err != nil || !utf8.Valid(body) || !json.Valid(bytes.TrimPrefix(body, utf8BOM)) {
			return
		}
		// Both point into the response as it came: mark the selected
		// value, remove the ignored ones, and find the mark.
		marked, ok := markSelected(v, pointerTokens(sel))
		var want any
		if ok {
			if want, ok = findSelected(removeMatches(marked, pointerTokens(ignore))); !ok {
				t.Fatalf("ignore %q removed select %q in %s", ignore, sel, body)
			}
		}
		doc, err := d.parse(body)
		if !ok {
			if err == nil {
				t.Fatalf("select %q ignore %q in %s: got %s, want an error", sel, ignore, body, doc.data)
			}
			return
		}
		if err != nil {
			t.Fatalf("select %q ignore %q in %s: %v", sel, ignore, body, err)
		}
		got, err := exactJSONValue(doc.data)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("select %q ignore %q in %s: got %s, want %v", sel, ignore, body, doc.data, want)
		}
	})
}

func pointerTokens(s string) []string {
	if s == "" {
		return nil
	}
	tokens := strings.Split(s[1:], "/")
	for i, tok := range tokens {
		tokens[i] = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
	}
	return tokens
}

// removeMatches removes from v the values that the pattern matches.
func removeMatches(v any, pattern []string) any {
	if sv, ok := v.(*selectedValue); ok {
		sv.v = removeMatches(sv.v, pattern)
		return sv
	}
	if len(pattern) == 0 {
		return v
	}
	tok, last := pattern[0], len(pattern) == 1
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			if tok == "*" || tok == k {
				if last {
					delete(v, k)
				} else {
					v[k] = removeMatches(e, pattern[1:])
				}
			}
		}
	case []any:
		idx, isIndex := arrayIndex(tok)
		var kept []any
		for i, e := range v {
			if tok == "*" || (isIndex && i == idx) {
				if last {
					continue
				}
				e = removeMatches(e, pattern[1:])
			}
			kept = append(kept, e)
		}
		if kept == nil {
			kept = []any{}
		}
		return kept
	}
	return v
}

// A selectedValue marks the value that select points at.
type selectedValue struct{ v any }

// markSelected wraps the value at a pointer's tokens in a selectedValue.
func markSelected(v any, tokens []string) (any, bool) {
	if len(tokens) == 0 {
		return &selectedValue{v}, true
	}
	tok := tokens[0]
	switch c := v.(type) {
	case map[string]any:
		e, ok := c[tok]
		if !ok {
			return nil, false
		}
		c[tok], ok = markSelected(e, tokens[1:])
		return c, ok
	case []any:
		i, ok := arrayIndex(tok)
		if !ok || i >= len(c) {
			return nil, false
		}
		c[i], ok = markSelected(c[i], tokens[1:])
		return c, ok
	}
	return nil, false
}

// findSelected returns the value that markSelected marked.
func findSelected(v any) (any, bool) {
	switch c := v.(type) {
	case *selectedValue:
		return c.v, true
	case map[string]any:
		for _, e := range c {
			if s, ok := findSelected(e); ok {
				return s, true
			}
		}
	case []any:
		for _, e := range c {
			if s, ok := findSelected(e); ok {
				return s, true
			}
		}
	}
	return nil, false
}

// hasLoneSurrogate reports whether a JSON text has a \u escape of a
// surrogate that is not half of a pair.
func hasLoneSurrogate(b []byte) bool {
	surrogate := func(i int) (rune, bool) {
		if i+6 > len(b) || b[i] != '\\' || b[i+1] != 'u' {
			return 0, false
		}
		r, err := strconv.ParseUint(string(b[i+2:i+6]), 16, 32)
		return rune(r), err == nil && r >= 0xd800 && r < 0xe000
	}
	for i := 0; i < len(b); i++ {
		if b[i] != '\\' {
			continue
		}
		r, ok := surrogate(i)
		if !ok {
			i++ // skip the escaped character
			continue
		}
		if lo, ok := surrogate(i + 6); ok && r < 0xdc00 && lo >= 0xdc00 {
			i += 11
			continue
		}
		return true
	}
	return false
}
