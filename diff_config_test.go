package pollsse

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestModeSelectIgnoreCaddyfile(t *testing.T) {
	tests := []struct {
		name, block string
		want        Handler
	}{
		{"mode merge_patch", "mode merge_patch", Handler{Mode: "merge_patch"}},
		{"select with escapes", "select /data/a~1b/0", Handler{Select: "/data/a~1b/0"}},
		{"an empty select", `select ""`, Handler{Select: ""}},
		{"ignore given twice with several pointers", "ignore /generated_at /request_id\nignore /items/*/updated_at",
			Handler{Ignore: []string{"/generated_at", "/request_id", "/items/*/updated_at"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h Handler
			d := caddyfile.NewTestDispenser("poll_sse http://a.test/x {\n" + tt.block + "\n}")
			if err := h.UnmarshalCaddyfile(d); err != nil {
				t.Fatal(err)
			}
			if h.Mode != tt.want.Mode || h.Select != tt.want.Select || strings.Join(h.Ignore, " ") != strings.Join(tt.want.Ignore, " ") {
				t.Errorf("got mode %q select %q ignore %q", h.Mode, h.Select, h.Ignore)
			}
			if err := h.Validate(); err != nil {
				t.Errorf("validate: %v", err)
			}
		})
	}
}

func TestModeSelectIgnoreCaddyfileErrors(t *testing.T) {
	tests := []struct {
		name, block, want string
	}{
		{"an unknown mode", "mode jsonpatch", `mode: unknown mode "jsonpatch", want json_patch, merge_patch or snapshot`},
		{"mode without a value", "mode", "mode: want json_patch, merge_patch or snapshot"},
		{"mode with two values", "mode snapshot json_patch", "mode: unexpected argument 'json_patch'"},
		{"select that is not a pointer", "select data/items", `select: invalid JSON pointer "data/items": must be empty or start with "/"`},
		{"select with a bad escape", "select /a~2", `select: invalid JSON pointer "/a~2": "~" must be followed by "0" or "1"`},
		{"select with a tilde at the end", "select /a~", `select: invalid JSON pointer "/a~": "~" must be followed by "0" or "1"`},
		{"select without a value", "select", "select: want a JSON pointer"},
		{"select with two values", "select /a /b", "select: unexpected argument '/b'"},
		{"ignore without a value", "ignore", "ignore: want one or more JSON pointers"},
		{"ignore that is not a pointer", "ignore /ok bad", `ignore: invalid JSON pointer "bad": must be empty or start with "/"`},
		{"ignore of the whole response", `ignore ""`, `ignore: "" would remove the whole response`},
		{"ignore of the selected part", "select /data/items\nignore /data", `ignore: "/data" removes all of select "/data/items"`},
		{"ignore of the selected part by a star", "select /data/items\nignore /*/items", `ignore: "/*/items" removes all of select "/data/items"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h Handler
			d := caddyfile.NewTestDispenser("poll_sse http://a.test/x {\n" + tt.block + "\n}")
			err := h.UnmarshalCaddyfile(d)
			if err == nil {
				t.Fatalf("no error; mode %q select %q ignore %q", h.Mode, h.Select, h.Ignore)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

func TestModeSelectIgnoreValidate(t *testing.T) {
	tests := []struct {
		name string
		h    Handler
		want string
	}{
		{"an unknown mode", Handler{Mode: "fast"}, `mode: unknown mode "fast"`},
		{"a select that is not a pointer", Handler{Select: "items"}, `select: invalid JSON pointer "items"`},
		{"an ignore with a bad escape", Handler{Ignore: []string{"/a", "/b~"}}, `ignore: invalid JSON pointer "/b~"`},
		{"an ignore of everything", Handler{Ignore: []string{""}}, `ignore: "" would remove the whole response`},
		{"an ignore of the selected part", Handler{Select: "/a/b", Ignore: []string{"/a/b"}}, `ignore: "/a/b" removes all of select "/a/b"`},
		{"a valid configuration", Handler{Mode: "snapshot", Select: "/a/b", Ignore: []string{"/a/b/c", "/a/*/d", "/x"}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.h.Upstream = "http://a.test/x"
			err := tt.h.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("validate = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// TestModeSelectIgnoreOnTheWire runs the modes in Caddy against an
// upstream and checks what a browser receives.
func TestModeSelectIgnoreOnTheWire(t *testing.T) {
	api := newFakeAPI(t, `{"generated_at":1,"data":{"about":"a text long enough that replacing data is longer than patching it","items":[{"id":1,"n":"a"}],"total":1}}`)
	route := func(path, fields string) string {
		return pollSSERoute(path, fmt.Sprintf(`"upstream":%q,"interval":"100ms"%s`, api.URL, fields))
	}
	// One upstream URL, in four configurations: four topics.
	base := startCaddy(t, "["+strings.Join([]string{
		route("/patch", ``),
		route("/merge", `,"mode":"merge_patch","ignore":["/generated_at"]`),
		route("/items", `,"select":"/data/items","ignore":["/data/items/*/id"]`),
		route("/missing", `,"select":"/data/missing"`),
	}, ",")+"]")
	open := func(path string) *streamClient { return openStream(t, http.DefaultClient, base+path, "") }
	patch, merge, items := open("/patch"), open("/merge"), open("/items")
	expect := func(sc *streamClient, name, data string) {
		t.Helper()
		ev := sc.next(5 * time.Second)
		if name == "status" {
			// Only the state and the error: other fields may come.
			var status struct{ Upstream, Error string }
			json.Unmarshal([]byte(ev.data), &status)
			ev.data = fmt.Sprintf("%s: %s", status.Upstream, status.Error)
		}
		if ev.name != name || ev.data != data {
			t.Fatalf("got %s %s, want %s %s", ev.name, ev.data, name, data)
		}
	}
	expect(patch, "snapshot", `{"generated_at":1,"data":{"about":"a text long enough that replacing data is longer than patching it","items":[{"id":1,"n":"a"}],"total":1}}`)
	expect(merge, "snapshot", `{"data":{"about":"a text long enough that replacing data is longer than patching it","items":[{"id":1,"n":"a"}],"total":1}}`)
	expect(items, "snapshot", `[{"n":"a"}]`)

	api.set(`{"generated_at":2,"data":{"about":"a text long enough that replacing data is longer than patching it","items":[{"id":1,"n":"a"}],"total":1}}`)
	expect(patch, "patch", `[{"op":"replace","path":"/generated_at","value":2}]`)
	api.set(`{"generated_at":3,"data":{"about":"a text long enough that replacing data is longer than patching it","items":[{"id":1,"n":"a"},{"id":2,"n":"b"}],"total":2}}`)
	expect(patch, "patch", `[{"op":"replace","path":"/generated_at","value":3},{"op":"add","path":"/data/items/1","value":{"id":2,"n":"b"}},{"op":"replace","path":"/data/total","value":2}]`)
	expect(merge, "merge", `{"data":{"items":[{"id":1,"n":"a"},{"id":2,"n":"b"}],"total":2}}`)
	expect(items, "patch", `[{"op":"add","path":"/1","value":{"n":"b"}}]`)

	// A select that points at nothing is a failed poll: a status event,
	// before any document too.
	missing := open("/missing")
	expect(missing, "status", `down: select "/data/missing": "/data" has no member "missing"`)
	api.set(`{"data":{"missing":[1]}}`)
	expect(missing, "status", "up: ")
	expect(missing, "snapshot", `[1]`)
	api.set(`{"data":{}}`)
	expect(missing, "status", `down: select "/data/missing": "/data" has no member "missing"`)
}
