package pollsse

import (
	"bytes"
	"testing"
)

func TestDiffSelectAndIgnore(t *testing.T) {
	docs := diffDocuments(t)
	api, apiChanged := docs["api.json"], docs["api_changed.json"]
	t.Run("select streams a part of the response", func(t *testing.T) {
		d := mustDiffer(t, modeJSONPatch, "/data/items/1")
		doc, err := d.parse(api)
		if err != nil {
			t.Fatal(err)
		}
		if want := `{"id":2,"name":"b","updated_at":"t1"}`; string(doc.data) != want {
			t.Errorf("snapshot %s, want %s", doc.data, want)
		}
	})
	t.Run("ignored parts are absent from snapshots and cause no events", func(t *testing.T) {
		d := mustDiffer(t, modeJSONPatch, "", "/generated_at", "/request_id", "/data/items/*/updated_at")
		doc, err := d.parse(api)
		if err != nil {
			t.Fatal(err)
		}
		if want := `{"data":{"items":[{"id":1,"name":"a"},{"id":2,"name":"b"}],"total":2}}`; string(doc.data) != want {
			t.Errorf("snapshot %s, want %s", doc.data, want)
		}
		event, data := checkDiff(t, d, api, apiChanged)
		// Three operations would be longer.
		want := `[{"op":"replace","path":"/data","value":{"items":[{"id":1,"name":"a"},{"id":2,"name":"B"},{"id":3,"name":"c"}],"total":3}}]`
		if event != eventPatch || string(data) != want {
			t.Errorf("got %s %s, want patch %s", event, data, want)
		}
		event, data = checkDiff(t, d, api, bytes.ReplaceAll(api, []byte("t1"), []byte("t9")))
		if event != "" {
			t.Errorf("a change of ignored parts only made %s %s", event, data)
		}
	})
	t.Run("ignore and select together", func(t *testing.T) {
		d := mustDiffer(t, modeMergePatch, "/data", "/data/items/*/updated_at", "/data/items/0", "/nothing/here")
		doc, err := d.parse(api)
		if err != nil {
			t.Fatal(err)
		}
		if want := `{"items":[{"id":2,"name":"b"}],"total":2}`; string(doc.data) != want {
			t.Errorf("snapshot %s, want %s", doc.data, want)
		}
		checkDiff(t, d, api, apiChanged)
	})
	t.Run("select and ignore point into the response as it came", func(t *testing.T) {
		d := mustDiffer(t, modeJSONPatch, "/data/items/1", "/data/items/0", "/data/items/1/updated_at")
		doc, err := d.parse(api)
		if err != nil {
			t.Fatal(err)
		}
		if want := `{"id":2,"name":"b"}`; string(doc.data) != want {
			t.Errorf("snapshot %s, want %s", doc.data, want)
		}
	})
	t.Run("select finds keys by value", func(t *testing.T) {
		d := mustDiffer(t, modeJSONPatch, "/a~1b/m~0n/é/")
		doc, err := d.parse([]byte(`{"a\/b":{"m~n":{"\u00e9":{"":[true]}}}}`))
		if err != nil {
			t.Fatal(err)
		}
		if string(doc.data) != `[true]` {
			t.Errorf("snapshot %s", doc.data)
		}
	})
}

// TestDiffIgnorePatterns checks what the patterns of ignore match and
// what a document that they cut compares with.
func TestDiffIgnorePatterns(t *testing.T) {
	t.Run("a star matches every key", func(t *testing.T) {
		d := mustDiffer(t, modeJSONPatch, "", "/*/v")
		doc, err := d.parse([]byte(`{"a":{"v":1,"w":2},"b":{"v":3},"c":[{"v":4}]}`))
		if err != nil {
			t.Fatal(err)
		}
		if want := `{"a":{"w":2},"b":{},"c":[{"v":4}]}`; string(doc.data) != want {
			t.Errorf("snapshot %s, want %s", doc.data, want)
		}
	})
	t.Run("ignore applies to duplicate keys before the last wins", func(t *testing.T) {
		d := mustDiffer(t, modeJSONPatch, "", "/a/x")
		doc, err := d.parse([]byte(`{"a":{"x":1,"y":1},"a":{"x":2,"y":2},"x":0}`))
		if err != nil {
			t.Fatal(err)
		}
		if want := `{"a":{"y":2},"x":0}`; string(doc.data) != want {
			t.Errorf("snapshot %s, want %s", doc.data, want)
		}
	})
	t.Run("a document that ignore cut aligns with one that it did not", func(t *testing.T) {
		d := mustDiffer(t, modeJSONPatch, "", "/0/t")
		for _, tt := range []struct{ a, b, want string }{
			{`[{"k":1,"t":0},{"k":2},{"k":3}]`, `[{"k":3},{"k":1},{"k":2}]`, `[{"op":"move","from":"/2","path":"/0"}]`},
			{`[{"k":3},{"k":1},{"k":2}]`, `[{"k":1,"t":0},{"k":2},{"k":3}]`, `[{"op":"move","from":"/0","path":"/2"}]`},
		} {
			if event, data := checkDiff(t, d, []byte(tt.a), []byte(tt.b)); event != eventPatch || string(data) != tt.want {
				t.Errorf("%s → %s: %s %s, want patch %s", tt.a, tt.b, event, data, tt.want)
			}
		}
	})
}

// TestDiffSelectErrors checks that a select that points at nothing in a
// response fails the poll with an error that says where it stops.
func TestDiffSelectErrors(t *testing.T) {
	errs := []struct {
		sel, body, want string
	}{
		{"/data/missing", `{"data":{}}`, `select "/data/missing": "/data" has no member "missing"`},
		{"/data/items/5", `{"data":{"items":[1,2]}}`, `select "/data/items/5": "/data/items" has 2 elements, no index 5`},
		{"/data/items/x", `{"data":{"items":[1,2]}}`, `select "/data/items/x": "/data/items" is an array and "x" is not an index`},
		{"/data/items/01", `{"data":{"items":[1,2]}}`, `select "/data/items/01": "/data/items" is an array and "01" is not an index`},
		{"/data/total/x", `{"data":{"total":3}}`, `select "/data/total/x": "/data/total" is a number, not an object or array`},
		{"/a", `[]`, `select "/a": the document is an array and "a" is not an index`},
		{"/a~1b/c", `{"a/b":null}`, `select "/a~1b/c": "/a~1b" is null, not an object or array`},
	}
	for _, tt := range errs {
		t.Run("select "+tt.sel+" that points at nothing fails the poll", func(t *testing.T) {
			d := mustDiffer(t, modeJSONPatch, tt.sel)
			doc, err := d.parse([]byte(tt.body))
			if err == nil {
				t.Fatalf("parsed into %s", doc.data)
			}
			if err.Error() != tt.want {
				t.Errorf("error %q, want %q", err, tt.want)
			}
		})
	}
}
