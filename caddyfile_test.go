package pollsse

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

var update = flag.Bool("update", false, "rewrite golden files with the current output")

// adapt adapts a Caddyfile as `caddy adapt` does.
func adapt(t *testing.T, caddyfile string) ([]byte, error) {
	t.Helper()
	adapter := caddyconfig.GetAdapter("caddyfile")
	out, _, err := adapter.Adapt([]byte(caddyfile), nil)
	return out, err
}

func TestCaddyfileErrors(t *testing.T) {
	tests := []struct {
		name, block string
		wantErr     []string
	}{
		{"no upstream", `poll_sse { interval 1s }`, []string{"upstream: required"}},
		{"an upstream that does not parse", `poll_sse { upstream "http://api.test:port/x" }`, []string{"upstream", "http://api.test:port/x", "invalid port"}},
		{"a relative upstream", `poll_sse { upstream /api }`, []string{"upstream", "/api", "absolute"}},
		{"a placeholder in the host", `poll_sse { upstream http://{query.host}/x }`, []string{"upstream", "http://{http.request.uri.query.host}/x", "only in the path and query"}},
		{"a placeholder in the scheme", `poll_sse { upstream {env.S}://api.test/x }`, []string{"{env.S}://api.test/x", "only in the path and query"}},
		{"upstream given twice", `poll_sse http://a.test/x { upstream http://b.test/y }`, []string{"upstream: given twice", "http://a.test/x", "http://b.test/y"}},
		{"an unknown subdirective", `poll_sse { upstream http://a.test/x; intervall 1s }`, []string{"unrecognized subdirective 'intervall'"}},
		{"a missing argument", `poll_sse { upstream http://a.test/x; interval }`, []string{"interval: want a duration"}},
		{"an extra argument", `poll_sse { upstream http://a.test/x; interval 1s 2s }`, []string{"interval: unexpected argument '2s'"}},
		{"a bad duration", `poll_sse { upstream http://a.test/x; interval soon }`, []string{"interval: invalid duration 'soon'"}},
		{"a zero interval", `poll_sse { upstream http://a.test/x; interval 0s }`, []string{"interval: must be positive, not '0s'"}},
		{"a negative retry", `poll_sse { upstream http://a.test/x; retry -1s }`, []string{"retry: must be positive, not '-1s'"}},
		{"a zero heartbeat", `poll_sse { upstream http://a.test/x; heartbeat 0 }`, []string{"heartbeat: must be positive, not '0'"}},
		{"a negative idle_timeout", `poll_sse { upstream http://a.test/x; idle_timeout -5m }`, []string{"idle_timeout: must be positive, not '-5m'"}},
		{"a bad timeout", `poll_sse { upstream http://a.test/x; timeout 10 }`, []string{"timeout: invalid duration '10'"}},
		{"a zero write_timeout", `poll_sse { upstream http://a.test/x; write_timeout 0s }`, []string{"write_timeout: must be positive, not '0s'"}},
		{"a zero history", `poll_sse { upstream http://a.test/x; history 0 }`, []string{"history: want a positive number of events, not '0'"}},
		{"a history that is not a number", `poll_sse { upstream http://a.test/x; history lots }`, []string{"history: want a positive number of events, not 'lots'"}},
		{"header_up without a value", `poll_sse { upstream http://a.test/x; header_up X-Key }`, []string{"header_up: want a value for header 'X-Key'"}},
		{"upstream without a URL", `poll_sse { upstream }`, []string{"upstream: want a URL"}},
		{"an argument after the inline upstream", `poll_sse http://a.test/x extra`, []string{"unexpected argument 'extra' after the upstream URL"}},
		{"a bad max_backoff", `poll_sse { upstream http://a.test/x; max_backoff later }`, []string{"max_backoff: invalid duration 'later'"}},
		{"a zero max_backoff", `poll_sse { upstream http://a.test/x; max_backoff 0s }`, []string{"max_backoff: must be positive, not '0s'"}},
		{"a max_body that is not a size", `poll_sse { upstream http://a.test/x; max_body lots }`, []string{"max_body: want a positive size", "not 'lots'"}},
		{"a zero max_body", `poll_sse { upstream http://a.test/x; max_body 0 }`, []string{"max_body: want a positive size", "not '0'"}},
		{"an extra argument to max_body", `poll_sse { upstream http://a.test/x; max_body 1MB 2MB }`, []string{"max_body: unexpected argument '2MB'"}},
		{"forward_headers with a name that is no header", `poll_sse { upstream http://a.test/x; forward_headers "X Bad" }`, []string{`forward_headers: "X Bad" is not a header name`}},
		{"forward_headers Host", `poll_sse { upstream http://a.test/x; forward_headers Authorization host }`, []string{"forward_headers: host cannot be forwarded"}},
		{"forward_headers If-None-Match", `poll_sse { upstream http://a.test/x; forward_headers If-None-Match }`, []string{"forward_headers: If-None-Match cannot be forwarded"}},
		{"a zero max_topics", `poll_sse { upstream http://a.test/x; max_topics 0 }`, []string{"max_topics: want a positive number, not '0'"}},
		{"a max_topics that is not a number", `poll_sse { upstream http://a.test/x; max_topics many }`, []string{"max_topics: want a positive number, not 'many'"}},
		{"a negative max_subscribers", `poll_sse { upstream http://a.test/x; max_subscribers -1 }`, []string{"max_subscribers: want a positive number, not '-1'"}},
		{"a zero max_new_topics", `poll_sse { upstream http://a.test/x; max_new_topics 0 1m }`, []string{"max_new_topics: want a positive number of topics or off, not '0'"}},
		{"a max_new_topics that is not a number", `poll_sse { upstream http://a.test/x; max_new_topics many 1m }`, []string{"max_new_topics: want a positive number of topics or off, not 'many'"}},
		{"max_new_topics without a duration", `poll_sse { upstream http://a.test/x; max_new_topics 30 }`, []string{"max_new_topics: want a duration after '30', such as 30 1m"}},
		{"max_new_topics with a bad duration", `poll_sse { upstream http://a.test/x; max_new_topics 30 soon }`, []string{"max_new_topics: invalid duration 'soon'"}},
		{"max_new_topics per less than a second", `poll_sse { upstream http://a.test/x; max_new_topics 30 500ms }`,
			[]string{"max_new_topics: the duration must be at least 1s, not '500ms', as Retry-After counts whole seconds", "at Caddyfile:4"}},
		{"max_new_topics with an extra argument", `poll_sse { upstream http://a.test/x; max_new_topics 30 1m 2m }`, []string{"max_new_topics: unexpected argument '2m'"}},
		{"max_new_topics off with a duration", `poll_sse { upstream http://a.test/x; max_new_topics off 1m }`, []string{"max_new_topics: unexpected argument '1m'"}},
		{"an interval under 100ms", `poll_sse { upstream http://a.test/x; interval 99ms }`, []string{"interval: must be at least 100ms, not '99ms', so that no topic polls its upstream more than ten times a second, at Caddyfile:4"}},
		{"an interval of a millisecond", `poll_sse http://a.test/x { interval 1ms }`, []string{"interval: must be at least 100ms, not '1ms'", "at Caddyfile:3"}},
		{"a request placeholder in header_up", `poll_sse { upstream http://a.test/x; header_up X-User {header.X-User} }`,
			[]string{"header_up X-User: placeholder {http.request.header.X-User} has no value when the configuration loads", "use forward_headers", "at Caddyfile:4"}},
		{"a request placeholder within a header_up value", `poll_sse { upstream http://a.test/x; header_up X-Key "{env.KEY}-{query.id}" }`,
			[]string{"header_up X-Key: placeholder {http.request.uri.query.id}", "at Caddyfile:4"}},
		{"forward_headers after header_up of the same header", `poll_sse { upstream http://a.test/x; header_up Authorization "Bearer static"; forward_headers Cookie authorization }`,
			[]string{"forward_headers: authorization is also set by header_up", "at Caddyfile:5"}},
		{"header_up after forward_headers of the same header", `poll_sse { upstream http://a.test/x; forward_headers Authorization; header_up authorization "Bearer static" }`,
			[]string{"forward_headers: Authorization is also set by header_up", "at Caddyfile:5"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Blocks are written on one line in the table, with ";" for
			// line breaks.
			block := strings.NewReplacer("{ ", "{\n", ";", "\n", " }", "\n}").Replace(tt.block)
			out, err := adapt(t, ":8080 {\n"+block+"\n}\n")
			if err == nil {
				t.Fatalf("adapted without error: %s", out)
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
		})
	}
}

// TestCaddyfileMissingArguments gives every subdirective without its
// argument: each error names the subdirective and what it wants.
func TestCaddyfileMissingArguments(t *testing.T) {
	for name, want := range subdirectiveArgErrors {
		t.Run(name, func(t *testing.T) {
			upstream := "http://a.test/x"
			if name == "upstream" {
				upstream = ""
			}
			_, err := adapt(t, ":8080 {\n\tpoll_sse "+upstream+" {\n\t\t"+name+"\n\t}\n}\n")
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("error %v, want one containing %q", err, want)
			}
		})
	}
}

// subdirectiveArgErrors is every subdirective of poll_sse, with the error
// it gives without its argument.
var subdirectiveArgErrors = map[string]string{
	"upstream":        "upstream: want a URL",
	"interval":        "interval: want a duration",
	"retry":           "retry: want a duration",
	"heartbeat":       "heartbeat: want a duration",
	"idle_timeout":    "idle_timeout: want a duration",
	"timeout":         "timeout: want a duration",
	"write_timeout":   "write_timeout: want a duration",
	"max_backoff":     "max_backoff: want a duration",
	"history":         "history: want a number of events",
	"header_up":       "header_up: want a header name and a value",
	"max_body":        "max_body: want a size",
	"forward_headers": "forward_headers: want one or more header names",
	"max_topics":      "max_topics: want a number",
	"max_subscribers": "max_subscribers: want a number",
	"max_new_topics":  "max_new_topics: want a number of topics and a duration, such as 30 1m, or off",
	"mode":            "mode: want json_patch, merge_patch or snapshot",
	"select":          "select: want a JSON pointer",
	"ignore":          "ignore: want one or more JSON pointers",
	"store":           "store: want a store module, such as memory or redis",
}

// TestReadmeCaddyfile checks the README's Caddyfile section: its syntax
// block names every subdirective and no other, and its example adapts.
func TestReadmeCaddyfile(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n## Caddyfile\n")
	section, _, _ = strings.Cut(section, "\n## ")
	if !ok {
		t.Fatal("README.md has no Caddyfile section")
	}
	blocks := strings.Split(section, "```")
	if len(blocks) < 4 {
		t.Fatal("the Caddyfile section has fewer than two code blocks")
	}
	syntax, example := blocks[1], blocks[3]
	listed := map[string]bool{}
	for line := range strings.SplitSeq(syntax, "\n") {
		if fields := strings.Fields(line); len(fields) > 1 && strings.HasPrefix(line, "    ") {
			listed[fields[0]] = true
		}
	}
	for name := range subdirectiveArgErrors {
		if !listed[name] {
			t.Errorf("the README's syntax block does not list %s", name)
		}
		delete(listed, name)
	}
	for name := range listed {
		t.Errorf("the README's syntax block lists %s, which poll_sse does not take", name)
	}
	if _, err := adapt(t, example); err != nil {
		t.Errorf("the README's example does not adapt: %v\n%s", err, example)
	}
}

func TestJSONConfigErrors(t *testing.T) {
	tests := []struct {
		name, handler, wantErr string
	}{
		{"no upstream", `{"handler":"poll_sse"}`, "upstream: required"},
		{"a negative interval", `{"handler":"poll_sse","upstream":"http://a.test/x","interval":-1}`, "interval: must be positive"},
		{"a negative history", `{"handler":"poll_sse","upstream":"http://a.test/x","history":-3}`, "history: must be positive, not -3"},
		{"a placeholder in the host", `{"handler":"poll_sse","upstream":"http://{http.request.host}/x"}`, "placeholders are allowed only in the path and query"},
		{"an upstream that does not parse", `{"handler":"poll_sse","upstream":"http://a.test:port/x"}`, "invalid port"},
		{"a negative retry", `{"handler":"poll_sse","upstream":"http://a.test/x","retry":"-1s"}`, "retry: must be positive, not -1s"},
		{"a negative heartbeat", `{"handler":"poll_sse","upstream":"http://a.test/x","heartbeat":"-1s"}`, "heartbeat: must be positive, not -1s"},
		{"a negative idle_timeout", `{"handler":"poll_sse","upstream":"http://a.test/x","idle_timeout":"-1s"}`, "idle_timeout: must be positive, not -1s"},
		{"a negative timeout", `{"handler":"poll_sse","upstream":"http://a.test/x","timeout":"-1s"}`, "timeout: must be positive, not -1s"},
		{"a negative write_timeout", `{"handler":"poll_sse","upstream":"http://a.test/x","write_timeout":"-1s"}`, "write_timeout: must be positive, not -1s"},
		{"an unknown mode", `{"handler":"poll_sse","upstream":"http://a.test/x","mode":"diff"}`, `mode: unknown mode "diff"`},
		{"a select that is not a pointer", `{"handler":"poll_sse","upstream":"http://a.test/x","select":"data"}`, `select: invalid JSON pointer "data"`},
		{"an unknown field", `{"handler":"poll_sse","upstream":"http://a.test/x","intervall":"1s"}`, `unknown field "intervall"`},
		{"a negative max_backoff", `{"handler":"poll_sse","upstream":"http://a.test/x","max_backoff":-1}`, "max_backoff: must be positive"},
		{"a negative max_body", `{"handler":"poll_sse","upstream":"http://a.test/x","max_body":-1}`, "max_body: must be positive, not -1"},
		{"a negative max_topics", `{"handler":"poll_sse","upstream":"http://a.test/x","max_topics":-5}`, "max_topics: must be positive, not -5"},
		{"a negative max_subscribers", `{"handler":"poll_sse","upstream":"http://a.test/x","max_subscribers":-5}`, "max_subscribers: must be positive, not -5"},
		{"a negative max_new_topics_per", `{"handler":"poll_sse","upstream":"http://a.test/x","max_new_topics_per":"-1m"}`, "max_new_topics_per: must be positive, not -1m0s"},
		{"a max_new_topics_per under a second", `{"handler":"poll_sse","upstream":"http://a.test/x","max_new_topics":30,"max_new_topics_per":"500ms"}`,
			"max_new_topics_per: must be at least 1s, not 500ms, as Retry-After counts whole seconds"},
		{"a forwarded header that header_up sets", `{"handler":"poll_sse","upstream":"http://a.test/x","forward_headers":["Authorization"],"header_up":{"authorization":["Bearer static"]}}`, "forward_headers: Authorization is also set by header_up"},
		{"a forwarded header of the connection", `{"handler":"poll_sse","upstream":"http://a.test/x","forward_headers":["Connection"]}`, "forward_headers: Connection cannot be forwarded"},
		{"an empty forwarded header name", `{"handler":"poll_sse","upstream":"http://a.test/x","forward_headers":[""]}`, `forward_headers: "" is not a header name`},
		{"an interval under 100ms", `{"handler":"poll_sse","upstream":"http://a.test/x","interval":"99ms"}`, "interval: must be at least 100ms, not 99ms, so that no topic polls its upstream more than ten times a second"},
		{"an interval of a nanosecond", `{"handler":"poll_sse","upstream":"http://a.test/x","interval":1}`, "interval: must be at least 100ms, not 1ns"},
		{"a request placeholder in header_up", `{"handler":"poll_sse","upstream":"http://a.test/x","header_up":{"X-User":["{http.request.header.X-User}"]}}`,
			"header_up X-User: placeholder {http.request.header.X-User} has no value when the configuration loads"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := `{"admin":{"disabled":true},"apps":{"http":{"servers":{"s":{"listen":["127.0.0.1:0"],"routes":[{"handle":[` + tt.handler + `]}]}}}}}`
			var c caddy.Config
			if err := json.Unmarshal([]byte(cfg), &c); err != nil {
				t.Fatal(err)
			}
			err := caddy.Validate(&c)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("caddy validate = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

// TestCaddyfileAdapt checks each testdata/caddyfile/*.caddyfiletest: a
// Caddyfile, a line "----------", and the JSON that `caddy adapt` makes of
// it. Run with -update to rewrite the JSON.
func TestCaddyfileAdapt(t *testing.T) {
	files, err := filepath.Glob("testdata/caddyfile/*.caddyfiletest")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files: %v", err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			raw, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			input, want, ok := strings.Cut(string(raw), "\n----------\n")
			if !ok {
				t.Fatal("no ---------- line")
			}
			out, err := adapt(t, input)
			if err != nil {
				t.Fatalf("adapt: %v", err)
			}
			var got bytes.Buffer
			if err := json.Indent(&got, out, "", "\t"); err != nil {
				t.Fatal(err)
			}
			got.WriteByte('\n')
			if *update {
				if err := os.WriteFile(file, []byte(input+"\n----------\n"+got.String()), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if got.String() != want {
				t.Errorf("adapted JSON differs from %s (run go test -run TestCaddyfileAdapt -update to accept):\n%s", file, got.String())
			}
		})
	}
}
