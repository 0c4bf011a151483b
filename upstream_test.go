package pollsse

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

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

// TestHostilePlaceholderValues sends values that try to take the upstream
// request elsewhere through every kind of placeholder: each gets 400, and
// neither the upstream nor a canary server named in the values receives a
// request.
func TestHostilePlaceholderValues(t *testing.T) {
	api := newFakeAPI(t, `{"a":1}`)
	canary := newCanary(t)
	canaryHost := strings.TrimPrefix(canary.URL, "http://")
	routes := strings.Join([]string{
		pollSSERoute("/segment", fmt.Sprintf(`"upstream":%q`, api.URL+"/items/{http.request.uri.query.id}")),
		pollSSERoute("/query", fmt.Sprintf(`"upstream":%q`, api.URL+"/items?id={http.request.uri.query.id}")),
		// Every other path, unmatched: Caddy's path matcher would clean
		// some of the paths below into ones that do not match.
		fmt.Sprintf(`{"handle":[{"handler":"poll_sse","upstream":%q}]}`, api.URL+"/v1{http.request.uri.path}"),
	}, ",")
	base := startCaddy(t, "["+routes+"]")

	// Values as they are written in the request's query string (and so
	// arrive decoded once), and paths as they are sent.
	values := []struct{ name, value string }{
		{"a dot dot segment", "../admin"},
		{"dot dot segments with escaped slashes", "..%2F..%2Fadmin"},
		{"an escaped dot dot", "%2e%2e"},
		{"a doubly escaped dot dot segment", "%252e%252e%252fadmin"},
		{"a backslash dot dot", `..%5Cadmin`},
		{"another host after @", "@other-host/x"},
		{"the canary after @", "@" + canaryHost + "/x"},
		{"the canary after an escaped @", "%2540" + canaryHost},
		{"a header after CR LF", "x%0d%0aHost:%20evil"},
		{"a header after a doubly escaped CR LF", "x%250d%250aHost:%2520" + canaryHost},
		{"a fragment", "x%23frag"},
		{"a 10 KB value", strings.Repeat("a", 10<<10)},
		{"invalid UTF-8", "%ff%fe"},
		{"a NUL", "a%00b"},
		{"a dot dot with a parameter", "..%3B/admin"},
		{"a dot dot with an escaped parameter", "..%253B/admin"},
	}
	for _, route := range []string{"/segment", "/query"} {
		values := values
		if route == "/segment" {
			// In a query value, a "/" is no separator.
			values = append(values, struct{ name, value string }{"an empty segment before a host", "%2F" + canaryHost + "/x"})
		}
		for _, v := range values {
			t.Run(route+" "+v.name, func(t *testing.T) {
				if status, _ := getStatus(t, base+route+"?id="+v.value, nil); status != http.StatusBadRequest {
					t.Errorf("status %d, want 400", status)
				}
			})
		}
	}
	for _, p := range []struct{ name, path string }{
		{"a dot dot segment with escaped slashes", "/path/..%2F..%2Fadmin"},
		{"an escaped dot dot", "/path/x/%2e%2e/%2e%2e/admin"},
		{"a dot dot segment", "/path/x/../../admin"},
		{"CR LF", "/path/x%0d%0aHost:%20evil"},
		{"the canary after @", "/path/%40" + canaryHost + "/x"},
		{"a fragment", "/path/x%23frag"},
		{"invalid UTF-8", "/path/%ff%fe"},
		{"a dot dot with a parameter", "/path/x/..;/admin"},
		{"an empty segment before a host", "//" + canaryHost + "/x"},
	} {
		t.Run("the whole path, "+p.name, func(t *testing.T) {
			if status, _ := getStatus(t, base+p.path, nil); status != http.StatusBadRequest {
				t.Errorf("status %d, want 400", status)
			}
		})
	}
	// A refused request leaves nothing to wait for: this is the time for
	// a poll that it would have started to reach the upstream.
	time.Sleep(50 * time.Millisecond)
	if n := api.count.Load(); n != 0 {
		for _, r := range api.requestLog() {
			t.Logf("upstream received %s", r.URL)
		}
		t.Errorf("the upstream received %d requests", n)
	}
	if n := canary.count.Load(); n != 0 {
		t.Errorf("the canary received %d requests", n)
	}

	// The same routes with ordinary values reach the upstream.
	for _, u := range []string{"/segment?id=bob@example.com", "/query?id=a%20b/c", "/path/a/b"} {
		sc := openStream(t, http.DefaultClient, base+u, "")
		if ev := sc.next(5 * time.Second); ev.name != "snapshot" {
			t.Errorf("%s: got %+v", u, ev)
		}
		sc.close()
	}
	var got []string
	for _, r := range api.requestLog() {
		got = append(got, r.URL.RequestURI())
	}
	for _, want := range []string{"/items/bob@example.com", "/items?id=a+b%2Fc", "/v1/path/a/b"} {
		found := false
		for _, g := range got {
			found = found || g == want
		}
		if !found {
			t.Errorf("the upstream did not receive %s; it received %v", want, got)
		}
	}
}

func TestRefusedPlaceholderValues(t *testing.T) {
	api := newFakeAPI(t, `{"a":1}`)
	base := startCaddy(t, "["+pollSSERoute("/events", fmt.Sprintf(`"upstream":%q`, api.URL+"/items/{http.request.uri.query.id}"))+"]")
	for _, id := range []string{"..", "%2e%2e", "../admin", "x%0d%0aHost:%20evil", "%ff%fe"} {
		resp, err := http.Get(base + "/events?id=" + id)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("id=%s: status %d %q, want 400", id, resp.StatusCode, body)
		}
	}
	// A refused request leaves nothing to wait for: this is the time for
	// a poll that it would have started to reach the upstream.
	time.Sleep(100 * time.Millisecond)
	if n := api.count.Load(); n != 0 {
		t.Errorf("the upstream received %d requests", n)
	}
}
