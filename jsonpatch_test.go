package pollsse

import (
	"strings"
	"testing"
)

func TestDiffJSONPatchEvents(t *testing.T) {
	tests := []struct {
		name, a, b, event, data string
	}{
		{"one changed field is one replace", `[{"id":1,"v":"a"},{"id":2,"v":"b"},{"id":3,"v":"c"}]`, `[{"id":1,"v":"a"},{"id":2,"v":"B"},{"id":3,"v":"c"}]`,
			"patch", `[{"op":"replace","path":"/1/v","value":"B"}]`},
		{"an element inserted in the middle is one add", `[1,2,3,4]`, `[1,2,9,3,4]`, "patch", `[{"op":"add","path":"/2","value":9}]`},
		{"an element removed from the middle is one remove", `[1,2,3,4]`, `[1,3,4]`, "patch", `[{"op":"remove","path":"/1"}]`},
		{"an element moved right is one move", `["A","B","C","D","E"]`, `["A","C","D","B","E"]`, "patch", `[{"op":"move","from":"/1","path":"/3"}]`},
		{"an element moved left is one move", `["A","B","C","D","E"]`, `["A","D","B","C","E"]`, "patch", `[{"op":"move","from":"/3","path":"/1"}]`},
		{"a swap is one move", `[{"a":1},{"b":2}]`, `[{"b":2},{"a":1}]`, "patch", `[{"op":"move","from":"/1","path":"/0"}]`},
		{"an element changed and one inserted", `[{"id":1},{"id":2},{"id":3}]`, `[{"id":1},{"id":0},{"id":2},{"id":33}]`, "patch",
			`[{"op":"add","path":"/1","value":{"id":0}},{"op":"replace","path":"/3/id","value":33}]`},
		{"a renamed member is a move", `{"old":{"big":"value"},"k":1}`, `{"k":1,"new":{"big":"value"}}`, "patch", `[{"op":"move","from":"/old","path":"/new"}]`},
		{"a removed and an added member", `{"a":1,"b":2}`, `{"a":1,"c":3}`, "patch", `[{"op":"remove","path":"/b"},{"op":"add","path":"/c","value":3}]`},
		{"slash and tilde in keys are escaped", `{"a/b":1,"m~n":2}`, `{"a/b":2,"m~n":3}`, "patch",
			`[{"op":"replace","path":"/a~1b","value":2},{"op":"replace","path":"/m~0n","value":3}]`},
		{"escaped slash in a key is escaped", `{"a\/b":1}`, `{"a\/b":2}`, "patch", `[{"op":"replace","path":"/a~1b","value":2}]`},
		{"an empty key", `{"":{"":1}}`, `{"":{"":2}}`, "patch", `[{"op":"replace","path":"//","value":2}]`},
		{"unicode keys", `{"é😀":1}`, `{"é😀":2}`, "patch", `[{"op":"replace","path":"/é😀","value":2}]`},
		{"a quote in a key", `{"q\"":1}`, `{"q\"":2}`, "patch", `[{"op":"replace","path":"/q\"","value":2}]`},
		{"numbers keep their text in patches", `{"n":1,"m":0.1}`, `{"n":12345678901234567890,"m":1e400}`, "patch",
			`[{"op":"replace","path":"/n","value":12345678901234567890},{"op":"replace","path":"/m","value":1e400}]`},
		{"numbers are compared by their text", `{"n":1.0,"z":0}`, `{"n":1,"z":-0}`, "patch",
			`[{"op":"replace","path":"/n","value":1},{"op":"replace","path":"/z","value":-0}]`},
		{"whitespace alone is no change", `{"a":[1,2]}`, "{ \"a\" : [ 1 ,\n 2 ] }", "", ""},
		{"member order alone is no change", `{"a":1,"b":{"c":2,"d":3}}`, `{"b":{"d":3,"c":2},"a":1}`, "", ""},
		{"escapes alone are no change", `{"a":"é/"}`, `{"\u0061":"\u00e9\/"}`, "", ""},
		{"a top-level scalar that changes is a snapshot", `"a"`, `"b"`, "snapshot", `"b"`},
		{"an object that becomes an array is a snapshot", `{}`, `[]`, "snapshot", `[]`},
		{"a patch much longer than the document is a snapshot", `[` + strings.Repeat(`1,`, 999) + `1]`, `[` + strings.Repeat(`2,`, 999) + `2]`,
			"snapshot", `[` + strings.Repeat(`2,`, 999) + `2]`},
		{"a changed array of scalars replaces what changed", `{"l":[1,2,3,4,5,6,7,8]}`, `{"l":[1,2,3,0,5,6,7,8]}`, "patch", `[{"op":"replace","path":"/l/3","value":0}]`},
		{"a container that changed entirely is replaced", `{"o":{"a":1,"b":2,"c":3}}`, `{"o":{"x":1,"y":2,"z":3}}`, "patch",
			`[{"op":"replace","path":"/o","value":{"x":1,"y":2,"z":3}}]`},
	}
	d := mustDiffer(t, modeJSONPatch, "")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			event, data := checkDiff(t, d, []byte(tt.a), []byte(tt.b))
			if event != tt.event || string(data) != tt.data {
				t.Errorf("got %s %s\nwant %s %s", event, data, tt.event, tt.data)
			}
		})
	}
}
