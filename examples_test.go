package pollsse

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"golang.org/x/crypto/bcrypt"
)

// exampleCaddyfiles returns the Caddyfiles of examples/: the demo's and one
// per folder.
func exampleCaddyfiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("examples/*/Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	files = append([]string{"examples/Caddyfile"}, files...)
	if len(files) < 6 {
		t.Fatalf("found only %v", files)
	}
	return files
}

// TestExamplesAdaptToTheirJSON adapts each example Caddyfile as
// `caddy adapt --pretty` does and compares the result with the JSON twin
// beside it (the Caddyfile's name and .json). -update rewrites the twins.
// The Caddyfiles must adapt without warnings, which includes being
// formatted as `caddy fmt` formats them.
func TestExamplesAdaptToTheirJSON(t *testing.T) {
	for _, path := range exampleCaddyfiles(t) {
		t.Run(path, func(t *testing.T) {
			body, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			adapted, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt(body, map[string]any{"filename": path})
			if err != nil {
				t.Fatalf("caddy adapt: %v", err)
			}
			for _, w := range warnings {
				t.Errorf("caddy adapt warns: %s", w)
			}
			var pretty bytes.Buffer
			if err := json.Indent(&pretty, adapted, "", "\t"); err != nil {
				t.Fatal(err)
			}
			pretty.WriteByte('\n')
			twin := path + ".json"
			if *update {
				if err := os.WriteFile(twin, pretty.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(twin)
			if err != nil {
				t.Fatalf("%v (go test -run TestExamplesAdaptToTheirJSON -update writes it)", err)
			}
			if !bytes.Equal(pretty.Bytes(), want) {
				t.Errorf("caddy adapt --config %s differs from %s (-update rewrites it):\n%s", path, twin, pretty.Bytes())
			}
		})
	}
}

// runExample runs an example Caddyfile in this process, with each of the
// replacements made (each must apply: a test follows the example as it is
// written), the admin endpoint off and storage in a temporary directory.
// Caddy stops when the test ends.
func runExample(t *testing.T, path string, replacements ...string) {
	t.Helper()
	body, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := string(body)
	for i := 0; i < len(replacements); i += 2 {
		if !strings.Contains(s, replacements[i]) {
			t.Fatalf("%s has no %q", path, replacements[i])
		}
		s = strings.ReplaceAll(s, replacements[i], replacements[i+1])
	}
	globals := fmt.Sprintf("\tadmin off\n\tstorage file_system %s\n", t.TempDir())
	if i := strings.Index(s, "\n{\n"); i >= 0 && !strings.Contains(s[:i], "{") {
		s = s[:i+3] + globals + s[i+3:]
	} else {
		s = "{\n" + globals + "}\n" + s
	}
	cfg, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(s), map[string]any{"filename": path})
	if err != nil {
		t.Fatalf("adapting %s: %v\n%s", path, err, s)
	}
	if len(warnings) > 0 {
		t.Logf("adapting %s: %v", path, warnings)
	}
	if err := caddy.Load(cfg, true); err != nil {
		t.Fatalf("loading %s: %v", path, err)
	}
	t.Cleanup(func() {
		stopCaddy(t)
		assertNoStreamGoroutines(t)
	})
}

// TestExampleListIgnoresVolatileFieldsBehindEncode runs examples/list: the
// legacy API's answers differ on every poll only in the ignored fields,
// which cause no event and are absent from the snapshot, and a real change
// arrives as one patch through gzip.
func TestExampleListIgnoresVolatileFieldsBehindEncode(t *testing.T) {
	var status atomic.Value
	status.Store("packing")
	var polls atomic.Int64
	var query atomic.Value
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := polls.Add(1)
		query.Store(r.URL.RequestURI())
		fmt.Fprintf(w, `{"generated_at":"t%d","orders":[{"id":1,"status":%q,"checked_at":"t%d"},{"id":2,"status":"open","checked_at":"t%d"}]}`,
			n, status.Load(), n, n)
	}))
	t.Cleanup(upstream.Close)
	port := freePort(t)
	runExample(t, "examples/list/Caddyfile",
		"live.example.com", fmt.Sprintf("http://127.0.0.1:%d", port),
		"http://legacy.internal:8080", upstream.URL,
		"interval 2s", "interval 100ms")

	req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/orders/events", port), nil)
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if got := resp.Header.Get("Content-Encoding"); got != "gzip" {
		t.Fatalf("Content-Encoding %q, want gzip", got)
	}
	zr, err := gzip.NewReader(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	events := eventReader(zr, nil)
	next := func(timeout time.Duration) (sseEvent, bool) {
		select {
		case ev, ok := <-events:
			return ev, ok
		case <-time.After(timeout):
			return sseEvent{}, false
		}
	}
	ev, ok := next(10 * time.Second)
	if !ok || ev.name != "snapshot" || !sameJSON(ev.data, `{"orders":[{"id":1,"status":"packing"},{"id":2,"status":"open"}]}`) {
		t.Fatalf("got %+v, want a snapshot without the volatile fields", ev)
	}
	if got := query.Load(); got != "/api/orders?status=open" {
		t.Errorf("the upstream was asked for %v", got)
	}
	before := polls.Load()
	if ev, ok := next(300 * time.Millisecond); ok {
		t.Fatalf("an event for answers that differ only in ignored fields: %+v", ev)
	}
	if n := polls.Load() - before; n < 3 {
		t.Fatalf("only %d polls in 300ms", n)
	}
	status.Store("shipped")
	ev, ok = next(10 * time.Second)
	if !ok || ev.name != "patch" || !sameJSON(ev.data, `[{"op":"replace","path":"/orders/0/status","value":"shipped"}]`) {
		t.Fatalf("got %+v, want the change of status as a patch", ev)
	}
}

// TestExampleLiveAPIBehindBasicAuth runs examples/live-api: without the
// credentials a request gets 401 and nothing reaches the upstream; with
// them, /live/orders/42?page=2 streams /v1/orders/42?page=2 with the API key
// from the environment.
func TestExampleLiveAPIBehindBasicAuth(t *testing.T) {
	t.Setenv("LEGACY_API_KEY", "key-from-env")
	api := newFakeAPI(t, `{"order":42}`)
	port := freePort(t)
	// The same password, hashed with bcrypt's least cost: the example's
	// cost 14 takes seconds under the race detector.
	hash, err := bcrypt.GenerateFromPassword([]byte("live demo"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	runExample(t, "examples/live-api/Caddyfile",
		"api.example.com", fmt.Sprintf("http://127.0.0.1:%d", port),
		"http://legacy.internal:8080", api.URL,
		"$2a$14$nhzVlWgfm3bc7kd9U88/Uul6mSczQeLARQk5pS.NgC1E.flmZpLL2", string(hash))
	url := fmt.Sprintf("http://127.0.0.1:%d/live/orders/42?page=2", port)

	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("without credentials: %s, want 401", resp.Status)
	}
	time.Sleep(50 * time.Millisecond)
	if n := api.count.Load(); n != 0 {
		t.Fatalf("a request without credentials caused %d upstream requests", n)
	}

	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.SetBasicAuth("ops", "live demo")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("with credentials: %s", resp.Status)
	}
	ev, ok := <-eventReader(resp.Body, nil)
	if !ok || ev.name != "snapshot" || !sameJSON(ev.data, `{"order":42}`) {
		t.Fatalf("got %+v", ev)
	}
	got := api.requestLog()[0]
	if got.URL.RequestURI() != "/v1/orders/42?page=2" || got.Header.Get("X-Api-Key") != "key-from-env" {
		t.Errorf("the upstream got %s with X-Api-Key %q", got.URL.RequestURI(), got.Header.Get("X-Api-Key"))
	}
	if got.Header.Get("Authorization") != "" {
		t.Errorf("the subscriber's credentials reached the upstream: %q", got.Header.Get("Authorization"))
	}
}

// TestExamplePerUserStreamsThroughForwardAuth runs examples/per-user: a
// login service maps session cookies to Authorization headers, which
// poll_sse forwards; each user streams their own document, a request
// without a session gets the login service's 401, and a client cannot slip
// in an Authorization of its own.
func TestExamplePerUserStreamsThroughForwardAuth(t *testing.T) {
	auth := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/session" {
			http.NotFound(w, r)
			return
		}
		c, err := r.Cookie("session")
		if err != nil || (c.Value != "alice-session" && c.Value != "bob-session") {
			http.Error(w, "sign in", http.StatusUnauthorized)
			return
		}
		w.Header().Set("Authorization", "Bearer token-of-"+strings.TrimSuffix(c.Value, "-session"))
	}))
	t.Cleanup(auth.Close)
	var mu sync.Mutex
	var seen []string
	legacy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a := r.Header.Get("Authorization")
		mu.Lock()
		seen = append(seen, r.URL.Path+" "+a)
		mu.Unlock()
		user, ok := strings.CutPrefix(a, "Bearer token-of-")
		if !ok {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		fmt.Fprintf(w, `{"user":%q,"unread":3}`, user)
	}))
	t.Cleanup(legacy.Close)
	port := freePort(t)
	runExample(t, "examples/per-user/Caddyfile",
		"app.example.com", fmt.Sprintf("http://127.0.0.1:%d", port),
		"auth.internal:9091", strings.TrimPrefix(auth.URL, "http://"),
		"http://legacy.internal:8080", legacy.URL,
		"interval 5s", "interval 100ms")
	url := fmt.Sprintf("http://127.0.0.1:%d/me/events", port)
	get := func(cookie, authorization string) *http.Response {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		if cookie != "" {
			req.Header.Set("Cookie", "session="+cookie)
		}
		if authorization != "" {
			req.Header.Set("Authorization", authorization)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	for _, user := range []string{"alice", "bob"} {
		resp := get(user+"-session", "")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %s", user, resp.Status)
		}
		ev, ok := <-eventReader(resp.Body, nil)
		if !ok || ev.name != "snapshot" || !sameJSON(ev.data, fmt.Sprintf(`{"user":%q,"unread":3}`, user)) {
			t.Fatalf("%s got %+v", user, ev)
		}
	}
	for _, tt := range []struct{ cookie, authorization string }{
		{"", ""},
		{"stolen-session", ""},
		{"", "Bearer token-of-alice"},
	} {
		if resp := get(tt.cookie, tt.authorization); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("cookie %q, Authorization %q: %s, want 401", tt.cookie, tt.authorization, resp.Status)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, s := range seen {
		if s != "/api/me/notifications Bearer token-of-alice" && s != "/api/me/notifications Bearer token-of-bob" {
			t.Errorf("the legacy API got %q", s)
		}
	}
}

// TestExampleNginxHasNoBuffering checks what examples/nginx relies on:
// the stream's answer tells nginx not to buffer it.
func TestExampleNginxHasNoBuffering(t *testing.T) {
	api := newFakeAPI(t, `{"n":1}`)
	port := freePort(t)
	runExample(t, "examples/nginx/Caddyfile",
		"http://127.0.0.1:8080", fmt.Sprintf("http://127.0.0.1:%d", port),
		"http://legacy.internal:8080", api.URL)
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/events", port))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if got := resp.Header.Get("X-Accel-Buffering"); got != "no" {
		t.Errorf("X-Accel-Buffering: %q, want no", got)
	}
	line, _ := bufio.NewReader(resp.Body).ReadString('\n')
	if !strings.HasPrefix(line, "retry: ") {
		t.Errorf("first line %q", line)
	}
	conf, err := os.ReadFile("examples/nginx/nginx.conf")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"proxy_pass http://127.0.0.1:8080;", "proxy_buffering off;", "proxy_http_version 1.1;", "proxy_read_timeout"} {
		if !bytes.Contains(conf, []byte(want)) {
			t.Errorf("nginx.conf lacks %q", want)
		}
	}
}

// TestReadmeJSONConfig loads the JSON config of the README into the handler,
// strictly, validates it, and checks that it shows every field.
func TestReadmeJSONConfig(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n## JSON config\n")
	if !ok {
		t.Fatal("README.md has no JSON config section")
	}
	_, block, ok := strings.Cut(section, "```json\n")
	block, _, ok2 := strings.Cut(block, "```")
	if !ok || !ok2 {
		t.Fatal("the JSON config section has no json block")
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal([]byte(block), &fields); err != nil {
		t.Fatalf("the README's JSON config: %v", err)
	}
	if string(fields["handler"]) != `"poll_sse"` {
		t.Errorf("handler %s, want \"poll_sse\"", fields["handler"])
	}
	delete(fields, "handler")
	rest, _ := json.Marshal(fields)
	dec := json.NewDecoder(bytes.NewReader(rest))
	dec.DisallowUnknownFields()
	var h Handler
	if err := dec.Decode(&h); err != nil {
		t.Fatalf("the README's JSON config: %v", err)
	}
	if err := h.Validate(); err != nil {
		t.Errorf("the README's JSON config does not validate: %v", err)
	}
	ht := reflect.TypeOf(Handler{})
	for i := range ht.NumField() {
		name, _, _ := strings.Cut(ht.Field(i).Tag.Get("json"), ",")
		if name == "" || name == "-" {
			continue
		}
		if _, ok := fields[name]; !ok {
			t.Errorf("the README's JSON config does not show %q", name)
		}
	}
}
