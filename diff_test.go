package pollsse

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
)

// applyDiffEvent applies an event to the document a subscriber holds, as a
// client does, with an implementation of RFC 6902 and RFC 7396 that is not
// ours.
func applyDiffEvent(held []byte, event string, data []byte) ([]byte, error) {
	switch event {
	case "":
		return held, nil
	case eventSnapshot:
		return data, nil
	case eventPatch:
		held, data, err := withoutEmptyKeys(held, data)
		if err != nil {
			return nil, err
		}
		patch, err := jsonpatch.DecodePatch(data)
		if err != nil {
			return nil, fmt.Errorf("decoding patch: %w", err)
		}
		return patch.Apply(held)
	case eventMerge:
		return jsonpatch.MergePatch(held, data)
	}
	return nil, fmt.Errorf("unknown event %q", event)
}

// emptyKey stands for the empty key in documents and patches given to
// evanphx/json-patch, which takes a path token "" for the object itself
// (partialDoc.get), so that "//" means "/" there.
const emptyKey = "\x00empty key"

// withoutEmptyKeys renames the empty keys of a document and a JSON Patch to
// emptyKey, in the keys of values and the tokens of paths alike.
func withoutEmptyKeys(doc, patch []byte) ([]byte, []byte, error) {
	if !bytes.Contains(doc, []byte(`"":`)) && !bytes.Contains(patch, []byte(`"":`)) &&
		!bytes.Contains(patch, []byte(`/"`)) && !bytes.Contains(patch, []byte(`//`)) {
		return doc, patch, nil // compact JSON without an empty key
	}
	var rename func(v any) any
	rename = func(v any) any {
		switch v := v.(type) {
		case map[string]any:
			m := make(map[string]any, len(v))
			for k, e := range v {
				if k == "" {
					k = emptyKey
				}
				m[k] = rename(e)
			}
			return m
		case []any:
			for i := range v {
				v[i] = rename(v[i])
			}
		}
		return v
	}
	dv, err := exactJSONValue(doc)
	if err != nil {
		return nil, nil, err
	}
	var ops []map[string]any
	dec := json.NewDecoder(bytes.NewReader(patch))
	dec.UseNumber()
	if err := dec.Decode(&ops); err != nil {
		return nil, nil, fmt.Errorf("decoding patch: %w", err)
	}
	for _, op := range ops {
		for _, field := range []string{"path", "from"} {
			if p, ok := op[field].(string); ok {
				tokens := strings.Split(p, "/")
				for i := 1; i < len(tokens); i++ {
					if tokens[i] == "" {
						tokens[i] = emptyKey
					}
				}
				op[field] = strings.Join(tokens, "/")
			}
		}
		if v, ok := op["value"]; ok {
			op["value"] = rename(v)
		}
	}
	doc, err = json.Marshal(rename(dv))
	if err != nil {
		return nil, nil, err
	}
	patch, err = json.Marshal(ops)
	return doc, patch, err
}

// exactJSONValue decodes JSON with encoding/json, numbers as their text: the
// equality that the engine is held to. Of duplicate keys the last wins.
func exactJSONValue(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(bytes.TrimPrefix(data, utf8BOM)))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}

func sameJSONValue(a, b []byte) bool {
	va, err := exactJSONValue(a)
	if err != nil {
		return false
	}
	vb, err := exactJSONValue(b)
	return err == nil && reflect.DeepEqual(va, vb)
}

// checkDiff diffs body a into body b with d and checks that the event turns
// a's snapshot into b's. It returns the event.
func checkDiff(t testing.TB, d differ, a, b []byte) (string, []byte) {
	t.Helper()
	da, err := d.parse(a)
	if err != nil {
		t.Fatalf("parse a %q: %v", a, err)
	}
	db, err := d.parse(b)
	if err != nil {
		t.Fatalf("parse b %q: %v", b, err)
	}
	event, data, err := d.diff(da, db)
	if err != nil {
		t.Fatalf("diff %q → %q: %v", a, b, err)
	}
	if da.nodes == nil || db.nodes == nil {
		// Text documents of the snapshot mode.
		if event == "" && !bytes.Equal(da.data, db.data) {
			t.Fatalf("diff %q → %q: no event", a, b)
		}
		if event != "" && (event != eventSnapshot || !bytes.Equal(data, db.data)) {
			t.Fatalf("diff %q → %q: %s %q, want the snapshot", a, b, event, data)
		}
		return event, data
	}
	got, err := applyDiffEvent(da.data, event, data)
	if err != nil {
		t.Fatalf("diff %q → %q: applying %s %s to %s: %v", a, b, event, data, da.data, err)
	}
	want := db.data
	if event == eventPatch {
		got, _, _ = withoutEmptyKeys(got, []byte("[]"))
		want, _, _ = withoutEmptyKeys(want, []byte("[]"))
	}
	if !bytes.Equal(got, want) && !sameJSONValue(got, want) {
		t.Fatalf("diff %q → %q: %s %s turns %s into %s, want %s", a, b, event, data, da.data, got, db.data)
	}
	return event, data
}

// diffDocuments returns the documents of testdata/diff by file name.
func diffDocuments(t testing.TB) map[string][]byte {
	t.Helper()
	files, err := filepath.Glob("testdata/diff/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no documents in testdata/diff: %v", err)
	}
	docs := make(map[string][]byte)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		docs[filepath.Base(f)] = b
	}
	return docs
}

// diffPairs returns pairs of documents to diff: every pair of the documents
// in testdata/diff, and the documents before and after the patches of the
// JSON Patch test suite.
func diffPairs(t testing.TB) [][2][]byte {
	t.Helper()
	docs := diffDocuments(t)
	names := slices.Sorted(func(yield func(string) bool) {
		for n := range docs {
			if !yield(n) {
				return
			}
		}
	})
	var pairs [][2][]byte
	for _, a := range names {
		for _, b := range names {
			pairs = append(pairs, [2][]byte{docs[a], docs[b]})
		}
	}
	for _, f := range []string{"tests.json", "spec_tests.json"} {
		raw, err := os.ReadFile(filepath.Join("testdata/json-patch-tests", f))
		if err != nil {
			t.Fatal(err)
		}
		var cases []struct {
			Doc      json.RawMessage `json:"doc"`
			Expected json.RawMessage `json:"expected"`
		}
		if err := json.Unmarshal(raw, &cases); err != nil {
			t.Fatal(err)
		}
		for _, c := range cases {
			if c.Expected != nil {
				pairs = append(pairs, [2][]byte{c.Doc, c.Expected})
			}
		}
	}
	return pairs
}

func mustDiffer(t testing.TB, mode, sel string, ignore ...string) differ {
	t.Helper()
	d, err := newDiffer(mode, sel, ignore)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

var diffModes = []string{modeJSONPatch, modeMergePatch, modeSnapshot}

func TestDiffTestdataPairsInEveryMode(t *testing.T) {
	pairs := diffPairs(t)
	for _, mode := range diffModes {
		t.Run(mode, func(t *testing.T) {
			d := mustDiffer(t, mode, "")
			for _, p := range pairs {
				checkDiff(t, d, p[0], p[1])
			}
		})
	}
}

func TestDiffSnapshotModeEvents(t *testing.T) {
	tests := []struct {
		name, a, b, event, data string
	}{
		{"a change of JSON is a snapshot", `{"a":1}`, `{"a":2}`, "snapshot", `{"a":2}`},
		{"JSON equal but written otherwise is no change", `{"a":1,"b":2}`, `{ "b":2, "a":1 }`, "", ""},
		{"text is compared byte for byte", "id,name\n1,a\n", "id,name\n1,a\n2,b\n", "snapshot", "id,name\n1,a\n2,b\n"},
		{"text that did not change", "<p>hi</p>", "<p>hi</p>", "", ""},
		{"text keeps its whitespace", "a b", "a  b", "snapshot", "a  b"},
		{"text loses its byte order mark", "\xef\xbb\xbfplain", "\xef\xbb\xbfplain!", "snapshot", "plain!"},
		{"JSON that becomes text", `{"a":1}`, "{a:1}", "snapshot", "{a:1}"},
	}
	d := mustDiffer(t, modeSnapshot, "")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			event, data := checkDiff(t, d, []byte(tt.a), []byte(tt.b))
			if event != tt.event || string(data) != tt.data {
				t.Errorf("got %s %q\nwant %s %q", event, data, tt.event, tt.data)
			}
		})
	}
	t.Run("a body that is neither JSON nor UTF-8 fails", func(t *testing.T) {
		if _, err := d.parse([]byte("caf\xe9")); err == nil || err.Error() != "response body is neither JSON nor UTF-8 text" {
			t.Errorf("error %v", err)
		}
	})
	t.Run("text fails when select is configured", func(t *testing.T) {
		d := mustDiffer(t, modeSnapshot, "/a")
		if _, err := d.parse([]byte("plain text")); err == nil || !strings.Contains(err.Error(), "not valid JSON") {
			t.Errorf("error %v", err)
		}
	})
}

// TestDiffRandomDocuments diffs random documents and random changes of them
// in every mode.
func TestDiffRandomDocuments(t *testing.T) {
	// The race detector finds nothing in this code, which runs on one
	// goroutine, and makes it slow: fewer rounds then.
	n := 400
	if testing.Short() || raceEnabled {
		n = 100
	}
	for _, mode := range diffModes {
		t.Run(mode, func(t *testing.T) {
			r := rand.New(rand.NewPCG(1, uint64(len(mode))))
			d := mustDiffer(t, mode, "")
			for range n {
				a := randomJSON(r, 4)
				b := a.clone()
				if r.IntN(8) == 0 {
					b = randomJSON(r, 4)
				} else {
					for range 1 + r.IntN(3) {
						b = mutateJSON(r, b)
					}
				}
				checkDiff(t, d, a.encode(r), b.encode(r))
			}
		})
	}
}

// A jv is a JSON value for the random tests, kept as text where it is a
// scalar so that numbers and strings can be written any valid way.
type jv struct {
	scalar string
	arr    []*jv
	keys   []string // raw string contents
	vals   []*jv
	isArr  bool
	isObj  bool
}

var (
	randomScalars = []string{`0`, `-0`, `1`, `1.0`, `0.1`, `1e400`, `12345678901234567890`, `-12.5e-3`, `1E+2`,
		`""`, `"a"`, `"\u0061"`, `"é"`, `"\u00e9"`, `"😀"`, `"\ud83d\ude00"`, `"\ud800"`, `"a\/b"`, `"q\"\\"`, `"line\nbreak"`,
		`true`, `false`, `null`}
	randomKeys = []string{``, `a`, `\u0061`, `b`, `id`, `a/b`, `a\/b`, `m~n`, `~1`, `/`, `é`, `\u00e9`, `😀`, `q\"`, `\\`, `x y`}
)

func randomJSON(r *rand.Rand, depth int) *jv {
	switch k := r.IntN(4); {
	case depth == 0 || k == 0:
		return &jv{scalar: randomScalars[r.IntN(len(randomScalars))]}
	case k == 1:
		v := &jv{isArr: true}
		for range r.IntN(6) {
			v.arr = append(v.arr, randomJSON(r, depth-1))
		}
		return v
	default:
		v := &jv{isObj: true}
		for range r.IntN(5) {
			v.keys = append(v.keys, randomKeys[r.IntN(len(randomKeys))])
			v.vals = append(v.vals, randomJSON(r, depth-1))
		}
		return v
	}
}

func (v *jv) clone() *jv {
	c := *v
	c.arr = nil
	for _, e := range v.arr {
		c.arr = append(c.arr, e.clone())
	}
	c.keys = slices.Clone(v.keys)
	c.vals = nil
	for _, e := range v.vals {
		c.vals = append(c.vals, e.clone())
	}
	return &c
}

// containers returns v and the arrays and objects in it.
func (v *jv) containers(out []*jv) []*jv {
	if v.isArr || v.isObj {
		out = append(out, v)
	}
	for _, e := range v.arr {
		out = e.containers(out)
	}
	for _, e := range v.vals {
		out = e.containers(out)
	}
	return out
}

// mutateJSON makes one random change in v and returns the changed value.
func mutateJSON(r *rand.Rand, v *jv) *jv {
	cs := v.containers(nil)
	if len(cs) == 0 {
		return randomJSON(r, 2)
	}
	c := cs[r.IntN(len(cs))]
	if c.isArr {
		n := len(c.arr)
		switch k := r.IntN(5); {
		case k == 0 || n == 0:
			c.arr = slices.Insert(c.arr, r.IntN(n+1), randomJSON(r, 2))
		case k == 1:
			i := r.IntN(n)
			c.arr = slices.Delete(c.arr, i, i+1)
		case k == 2:
			i := r.IntN(n)
			x := c.arr[i]
			c.arr = slices.Delete(c.arr, i, i+1)
			c.arr = slices.Insert(c.arr, r.IntN(n), x)
		case k == 3:
			c.arr[r.IntN(n)] = randomJSON(r, 2)
		default:
			c.arr = slices.Insert(c.arr, r.IntN(n+1), c.arr[r.IntN(n)].clone())
		}
		return v
	}
	n := len(c.keys)
	switch k := r.IntN(5); {
	case k == 0 || n == 0:
		c.keys = append(c.keys, randomKeys[r.IntN(len(randomKeys))])
		c.vals = append(c.vals, randomJSON(r, 2))
	case k == 1:
		i := r.IntN(n)
		c.keys = slices.Delete(c.keys, i, i+1)
		c.vals = slices.Delete(c.vals, i, i+1)
	case k == 2:
		c.keys[r.IntN(n)] = randomKeys[r.IntN(len(randomKeys))]
	case k == 3:
		c.vals[r.IntN(n)] = &jv{scalar: "null"}
	default:
		c.vals[r.IntN(n)] = randomJSON(r, 2)
	}
	return v
}

// encode writes v as JSON, with random whitespace.
func (v *jv) encode(r *rand.Rand) []byte {
	var b bytes.Buffer
	pretty := r.IntN(3) == 0
	sp := func() {
		if pretty {
			b.WriteString([]string{" ", "\n  ", "\t", "\r\n"}[r.IntN(4)])
		}
	}
	var enc func(v *jv)
	enc = func(v *jv) {
		sp()
		switch {
		case v.isArr:
			b.WriteByte('[')
			for i, e := range v.arr {
				if i > 0 {
					b.WriteByte(',')
				}
				enc(e)
			}
			sp()
			b.WriteByte(']')
		case v.isObj:
			b.WriteByte('{')
			for i, k := range v.keys {
				if i > 0 {
					b.WriteByte(',')
				}
				sp()
				b.WriteString(`"` + k + `"`)
				sp()
				b.WriteByte(':')
				enc(v.vals[i])
			}
			sp()
			b.WriteByte('}')
		default:
			b.WriteString(v.scalar)
		}
		sp()
	}
	enc(v)
	return b.Bytes()
}
