package pollsse

import "testing"

func TestDiffMergePatchEvents(t *testing.T) {
	tests := []struct {
		name, a, b, event, data string
	}{
		{"changed and added members", `{"a":1,"b":2}`, `{"a":1,"b":3,"c":4}`, "merge", `{"b":3,"c":4}`},
		{"a removed member is null", `{"a":1,"b":2}`, `{"a":1}`, "merge", `{"b":null}`},
		{"nested objects merge", `{"x":{"y":1,"z":2},"w":0}`, `{"x":{"y":1,"z":3},"w":0}`, "merge", `{"x":{"z":3}}`},
		{"an array is sent whole", `{"l":[1,2,3]}`, `{"l":[1,2,4]}`, "merge", `{"l":[1,2,4]}`},
		{"nulls in arrays are fine", `{"l":[1]}`, `{"l":[null]}`, "merge", `{"l":[null]}`},
		{"numbers keep their text", `{"n":0}`, `{"n":1e400}`, "merge", `{"n":1e400}`},
		{"keys keep their escapes", `{"a\/b":0}`, `{"a\/b":1}`, "merge", `{"a\/b":1}`},
		{"an object replacing a scalar", `{"a":1}`, `{"a":{"b":2}}`, "merge", `{"a":{"b":2}}`},
		{"an object emptied", `{"a":{"b":2}}`, `{"a":{}}`, "merge", `{"a":{"b":null}}`},
		{"a member set to null is a snapshot", `{"a":1}`, `{"a":null}`, "snapshot", `{"a":null}`},
		{"a null member in a new object is a snapshot", `{"a":1}`, `{"a":{"b":null}}`, "snapshot", `{"a":{"b":null}}`},
		{"a null member in an object in an array is a snapshot", `{"a":[]}`, `{"a":[{"b":null}]}`, "snapshot", `{"a":[{"b":null}]}`},
		{"a top-level array is a snapshot", `[1]`, `[2]`, "snapshot", `[2]`},
		{"member order alone is no change", `{"a":{"x":1,"y":[{"p":1,"q":2}]}}`, `{"a":{"y":[{"q":2,"p":1}],"x":1}}`, "", ""},
	}
	d := mustDiffer(t, modeMergePatch, "")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			event, data := checkDiff(t, d, []byte(tt.a), []byte(tt.b))
			if event != tt.event || string(data) != tt.data {
				t.Errorf("got %s %s\nwant %s %s", event, data, tt.event, tt.data)
			}
		})
	}
}
