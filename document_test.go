package pollsse

import "testing"

// TestDiffEqualValues checks when two documents are equal: no event in any
// mode. Equal documents written alike have equal hashes.
func TestDiffEqualValues(t *testing.T) {
	tests := []struct {
		name, a, b string
		equal      bool
	}{
		{"whitespace is no difference", `{"a":[1,2]}`, " {\"a\" :\n[ 1 , 2 ] }", true},
		{"member order is no difference, at any depth", `{"a":1,"b":[1,{"c":2,"d":3}]}`, `{"b":[1,{"d":3,"c":2}],"a":1}`, true},
		{"escapes in strings are no difference", `["é/","a\"b"]`, `["\u00e9\/","a\u0022b"]`, true},
		{"escapes in keys are no difference", `{"a":{"é":1}}`, `{"\u0061":{"\u00E9":1}}`, true},
		{"a surrogate pair is its character", `"😀"`, `"\ud83d\ude00"`, true},
		{"literals", `[null,true,false]`, `[null,true,false]`, true},
		{"element order is a difference", `[1,2]`, `[2,1]`, false},
		{"numbers are compared by their text", `[1.0,0]`, `[1,-0]`, false},
		{"a string is not a number", `["1"]`, `[1]`, false},
		{"an object is not an array", `{"a":{}}`, `{"a":[]}`, false},
		{"a member more is a difference", `{"a":1}`, `{"a":1,"b":1}`, false},
		{"a member of another key is a difference", `{"a":1,"b":2}`, `{"a":1,"c":2}`, false},
		{"true is not false", `{"a":true}`, `{"a":false}`, false},
		{"a lone surrogate is not the replacement character", `{"\ud800":1}`, `{"\ufffd":1}`, false},
		{"two lone surrogates differ", `["\ud800"]`, `["\udc00"]`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, mode := range diffModes {
				d := mustDiffer(t, mode, "")
				da, err := d.parse([]byte(tt.a))
				if err != nil {
					t.Fatal(err)
				}
				db, err := d.parse([]byte(tt.b))
				if err != nil {
					t.Fatal(err)
				}
				for _, p := range [][2]*document{{da, db}, {db, da}} {
					if got := equalValue(p[0], p[0].root, p[1], p[1].root); got != tt.equal {
						t.Errorf("equalValue(%s, %s) = %t", p[0].data, p[1].data, got)
					}
					event, data, err := d.diff(p[0], p[1])
					if err != nil {
						t.Fatal(err)
					}
					if (event == "") != tt.equal {
						t.Errorf("%s: diff %s → %s: event %q %s", mode, p[0].data, p[1].data, event, data)
					}
				}
			}
		})
	}
}

// TestDiffHashesOfValuesWrittenAlike checks that a value's hash depends on
// its text alone, not on where it is nor on whether the document was
// rewritten (for duplicate keys or ignore): the comparison of documents and
// the alignment of arrays rely on it.
func TestDiffHashesOfValuesWrittenAlike(t *testing.T) {
	docs := []struct {
		body, ignore string
	}{
		{`{"x":[{"a":"\u0061","b":[1,{}]},{"a":"\u0061","b":[1,{}]}],"y":{"a":"\u0061","b":[1,{}]},"z":[[1,{}],"\u0061",1]}`, ""},
		{`[{"k":{"k":[]}},{"k":[]},[],[[]],{"k":{"k":[]}}]`, ""},
		// Of duplicate keys the last member stays, and ignore removes
		// parts: the document is rewritten, its hashes computed again.
		{`[{"a":1,"a":{"b":2}},{"a":{"b":2}},{"b":2},{"b":0,"b":[1,{}]},{"k":[]}]`, ""},
		{`{"x":[{"a":"\u0061","b":[1,{}],"c":0}],"y":{"k":{"k":[]},"c":0}}`, "/*/c"},
		{`[{"b":2,"c":0},{"a":{"b":2},"c":[]},[[1,{}],"\u0061",1]]`, "/*/c"},
	}
	hashes := make(map[string]uint64)
	for _, doc := range docs {
		var ignore []string
		if doc.ignore != "" {
			ignore = append(ignore, doc.ignore)
		}
		d, err := mustDiffer(t, modeJSONPatch, "", ignore...).parse([]byte(doc.body))
		if err != nil {
			t.Fatal(err)
		}
		for i := range d.nodes {
			text := string(d.text(uint32(i)))
			if h, ok := hashes[text]; ok && h != d.nodes[i].hash {
				t.Errorf("%s in %s has another hash than before", text, doc.body)
			}
			hashes[text] = d.nodes[i].hash
		}
	}
}
