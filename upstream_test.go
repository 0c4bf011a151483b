package pollsse

import (
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

func TestParseUpstreamRefuses(t *testing.T) {
	tests := []struct {
		name, upstream, wantErr string
	}{
		{"an empty URL", "", "no upstream URL"},
		{"a relative URL", "/api/items", "absolute http:// or https:// URL"},
		{"another scheme", "ftp://example.com/x", `scheme must be http or https, not "ftp"`},
		{"a placeholder in the scheme", "{env.SCHEME}://example.com/x", "placeholders are allowed only in the path and query"},
		{"a placeholder in the host", "http://{http.request.host}/x", "placeholders are allowed only in the path and query"},
		{"a placeholder in the port", "http://example.com:{env.PORT}/x", "placeholders are allowed only in the path and query"},
		{"a placeholder right after the host", "http://example.com{http.request.uri.path}", "placeholders are allowed only in the path and query"},
		{"no host", "http:///x", "no host"},
		{"a bad port", "http://example.com:port/x", "invalid port"},
		{"a fragment", "http://example.com/x#top", "fragment"},
		{"a bad escape in the path", "http://example.com/%zz", "invalid URL escape"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseUpstream(tt.upstream)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("parseUpstream(%q) = %v, want an error containing %q", tt.upstream, err, tt.wantErr)
			}
			if tt.upstream != "" && !strings.Contains(err.Error(), tt.upstream) {
				t.Errorf("error %q does not name the value %q", err, tt.upstream)
			}
		})
	}
}

func TestUpstreamExpand(t *testing.T) {
	tests := []struct {
		name     string
		template string
		value    string
		want     string
		refused  bool
	}{
		{"no placeholder", "http://api.test/items", "", "http://api.test/items", false},
		{"a path segment", "http://api.test/items/{v}", "42", "http://api.test/items/42", false},
		{"a value with slashes adds segments", "http://api.test/v1{v}", "/items/3", "http://api.test/v1/items/3", false},
		{"reserved characters are escaped in the path", "http://api.test/items/{v}", "a b?c%e", "http://api.test/items/a%20b%3Fc%25e", false},
		{"a literal percent sign is escaped", "http://api.test/items/{v}", "100%", "http://api.test/items/100%25", false},
		{"an @ inside a segment is kept", "http://api.test/users/{v}", "bob@example.com", "http://api.test/users/bob@example.com", false},
		{"a query value is escaped", "http://api.test/items?q={v}&n=1", "a&b=c d/e", "http://api.test/items?q=a%26b%3Dc+d%2Fe&n=1", false},
		{"an escaped value is escaped again", "http://api.test/items/{v}", "a%2Fb", "http://api.test/items/a%252Fb", false},
		{"an escaped dot segment is refused", "http://api.test/items/{v}", "..%2Fadmin", "", true},
		{"an escaped dot dot is refused", "http://api.test/items/{v}", "%2e%2e", "", true},
		{"a doubly escaped dot dot is refused", "http://api.test/items/{v}", "%252e%252e/admin", "", true},
		{"a dot dot in a query value is refused", "http://api.test/items?file={v}", "../etc/passwd", "", true},
		{"a backslash is refused", "http://api.test/items/{v}", `..\admin`, "", true},
		{"a fragment is refused", "http://api.test/items/{v}", "x#frag", "", true},
		{"an escaped fragment is refused", "http://api.test/items?q={v}", "x%23frag", "", true},
		{"an @ that begins a value is refused", "http://api.test/{v}", "@other.test/x", "", true},
		{"an @ that begins a segment is refused", "http://api.test/{v}", "a/@other.test", "", true},
		{"an escaped @ that begins a value is refused", "http://api.test/{v}", "%40other.test", "", true},
		{"escaped CR LF is refused", "http://api.test/items/{v}", "x%0d%0aHost:%20evil", "", true},
		{"a dot dot segment is refused", "http://api.test/items/{v}", "../admin", "", true},
		{"a dot dot value is refused", "http://api.test/items/{v}", "..", "", true},
		{"a dot segment is refused", "http://api.test/items/{v}/x", "./", "", true},
		{"CR LF in the path is refused", "http://api.test/items/{v}", "x\r\nHost: evil", "", true},
		{"CR LF in the query is refused", "http://api.test/items?q={v}", "x\r\nHost: evil", "", true},
		{"NUL is refused", "http://api.test/items/{v}", "a\x00b", "", true},
		{"invalid UTF-8 is refused", "http://api.test/items/{v}", "\xff\xfe", "", true},
		{"a value too long is refused", "http://api.test/items/{v}", strings.Repeat("a", 10<<10), "", true},
		{"an unknown placeholder is empty", "http://api.test/items/{unknown}", "", "http://api.test/items/", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tmpl, err := parseUpstream(tt.template)
			if err != nil {
				t.Fatal(err)
			}
			repl := caddy.NewReplacer()
			repl.Set("v", tt.value)
			got, err := tmpl.expand(repl)
			if tt.refused {
				if err == nil || !isBadPlaceholder(err) {
					t.Fatalf("expand = %q, %v; want a refusal", got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("expand = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}
