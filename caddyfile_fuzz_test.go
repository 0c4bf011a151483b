package pollsse

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// FuzzCaddyfile parses any poll_sse block, seeded from the golden files of
// testdata/caddyfile: the parser never panics, and what it takes is a
// configuration that survives a trip through JSON and that Validate judges
// without panicking. The same block in a whole Caddyfile adapts or fails
// with an error, as `caddy adapt` does.
//
//	go test -run '^$' -fuzz '^FuzzCaddyfile$' -fuzztime 1m .
func FuzzCaddyfile(f *testing.F) {
	files, err := filepath.Glob("testdata/caddyfile/*.caddyfiletest")
	if err != nil || len(files) == 0 {
		f.Fatalf("no golden files: %v", err)
	}
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		in, _, _ := strings.Cut(string(b), "----------")
		// Each poll_sse block of the file, up to its closing brace or
		// line, is a seed of its own.
		for _, part := range strings.Split(in, "poll_sse")[1:] {
			end := strings.Index(part, "\n\t}")
			if end < 0 {
				end = strings.IndexByte(part, '\n')
			} else {
				end += 3
			}
			if end > 0 {
				f.Add("poll_sse" + part[:end])
			}
		}
	}
	for _, s := range []string{
		"poll_sse", "poll_sse {", "poll_sse }", "poll_sse http://a.test/x {\n\tinterval\n}", `poll_sse "http://a.test/{query.x}" { mode snapshot }`,
		"poll_sse http://a.test {\n\theader_up\n\theader_up X\n\theader_up X \"\"\n}", "poll_sse {\n\tupstream http://a.test\n\tignore\n\tselect\n}",
		"poll_sse {\n\tupstream http://a.test\n\tforward_headers\n\tmax_body 1.5GB\n}", "poll_sse /x/* http://a.test {\n\t{\n\t}\n}",
		"poll_sse {\n\tupstream http://a.test\n\tinterval 9223372036854775807ns\n\thistory 9223372036854775807\n}",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, block string) {
		var h Handler
		if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(block)); err == nil {
			b, err := json.Marshal(h)
			if err != nil {
				t.Fatalf("%q: the handler does not encode: %v", block, err)
			}
			var back Handler
			if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(h, back) {
				t.Fatalf("%q: %s does not decode to the same handler (%v)", block, b, err)
			}
			_ = h.Validate()
		}
		// A whole Caddyfile; the adapter may refuse it, but not crash,
		// and what it makes is JSON.
		out, err := adapt(t, ":8080 {\n"+block+"\n}\n")
		if err == nil && len(bytes.TrimSpace(out)) > 0 && !json.Valid(out) {
			t.Fatalf("%q adapted to invalid JSON: %s", block, out)
		}
	})
}
