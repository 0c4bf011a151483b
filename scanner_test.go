package pollsse

import (
	"strings"
	"testing"
)

func TestDiffParse(t *testing.T) {
	d := mustDiffer(t, modeJSONPatch, "")
	tests := []struct {
		name, body, want string
	}{
		{"whitespace is dropped", " {\n\t\"a\" : [ 1 , 2 ] ,\r\n \"b\":{ } }\n", `{"a":[1,2],"b":{}}`},
		{"a leading byte order mark is dropped", "\xef\xbb\xbf{\"a\":1}", `{"a":1}`},
		{"numbers keep their text", `[12345678901234567890, 1e400, 0.1, -0, 1.0, 1E+2, -0.0e-0]`, `[12345678901234567890,1e400,0.1,-0,1.0,1E+2,-0.0e-0]`},
		{"strings keep their escapes", `["caf\u00e9", "\ud83d\ude00", "\/", "a\"b", "\ud800"]`, `["caf\u00e9","\ud83d\ude00","\/","a\"b","\ud800"]`},
		{"unicode is kept as sent", `{"é": "😀 ü"}`, `{"é":"😀 ü"}`},
		{"the last member of a key wins", `{"a":1,"b":2,"a":3}`, `{"b":2,"a":3}`},
		{"keys are compared by value for duplicates", `{"a":1,"\u0061":2}`, `{"\u0061":2}`},
		{"duplicates go at every depth", `[{"x":{"y":1,"y":2},"x":{"y":3,"y":4}}]`, `[{"x":{"y":4}}]`},
		{"a top-level string", ` "s" `, `"s"`},
		{"a top-level number", `-12.5e-3`, `-12.5e-3`},
		{"a top-level null", `null`, `null`},
		{"a top-level array", `[ ]`, `[]`},
		{"an empty key", `{"":1}`, `{"":1}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc, err := d.parse([]byte(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if string(doc.data) != tt.want {
				t.Errorf("snapshot %s, want %s", doc.data, tt.want)
			}
			if !sameJSONValue(doc.data, []byte(tt.body)) {
				t.Errorf("snapshot %s is not the same JSON value as %s", doc.data, tt.body)
			}
		})
	}
}

func TestDiffParseErrors(t *testing.T) {
	d := mustDiffer(t, modeJSONPatch, "")
	tests := []struct {
		name, body, want string
	}{
		{"an empty body", "", "response body is empty, not JSON"},
		{"only a byte order mark", "\xef\xbb\xbf", "response body is empty, not JSON"},
		{"an unterminated object", `{"a":1`, "ends where a comma or the end of an array or object should be (offset 6)"},
		{"a trailing comma in an object", `{"a":1,}`, `unexpected '}' where an object member's key goes, at line 1, column 8`},
		{"a trailing comma in an array", `[1,]`, `unexpected ']' where a value goes, at line 1, column 4`},
		{"a leading zero", `01`, `unexpected '1' after the end of the document`},
		{"two documents", "[1]\n[2]", `unexpected '[' after the end of the document, at line 2, column 1`},
		{"a control character in a string", "\"a\x01\"", `unexpected byte 0x01 in a string, where control characters must be escaped`},
		{"invalid UTF-8", "{\"a\":\"\xff\"}", `response body is not valid UTF-8: byte 0xff at line 1, column 7 (offset 6)`},
		{"a UTF-8 surrogate", "\"\xed\xa0\x80\"", `response body is not valid UTF-8: byte 0xed`},
		{"a missing colon", `{"a" 1}`, `unexpected '1' after an object member's key, where a colon goes`},
		{"a truncated literal", `tru`, `ends where "true" should be`},
		{"a misspelt literal", `nul1`, `unexpected '1' in null`},
		{"a fraction without digits", `1.`, `ends where a digit of a fraction should be`},
		{"a lone minus", `-`, `ends where a digit should be`},
		{"an exponent without digits", `1e+x`, `unexpected 'x' where a digit of an exponent goes`},
		{"a bad escape", `"\x"`, `unexpected 'x' after a backslash in a string`},
		{"a bad unicode escape", `"\u12g4"`, `unexpected 'g' in a \u escape, where a hexadecimal digit goes`},
		{"NaN", `NaN`, `unexpected 'N' where a value goes`},
		{"a single-quoted string", `{'a':1}`, `unexpected '\'' where an object member's key goes`},
		{"two byte order marks", "\xef\xbb\xbf\xef\xbb\xbf1", `unexpected '\ufeff' where a value goes, at line 1, column 4 (offset 3)`},
		{"nesting too deep", strings.Repeat("[", maxDepth+1) + strings.Repeat("]", maxDepth+1), "nests arrays and objects deeper than 10000 levels"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc, err := d.parse([]byte(tt.body))
			if err == nil {
				t.Fatalf("parsed into %s", doc.data)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
	t.Run("nesting as deep as allowed parses", func(t *testing.T) {
		body := strings.Repeat("[", maxDepth) + strings.Repeat("]", maxDepth)
		if _, err := d.parse([]byte(body)); err != nil {
			t.Fatal(err)
		}
	})
}
