package pollsse

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	jsonpatch "github.com/evanphx/json-patch/v5"
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
	loadCaddy(t, cfg)
}

// TestExampleDemoPatchesOneOrderAtATime runs the demo as examples/Caddyfile
// has it, its "legacy API" included, and reads its stream: after the
// snapshot, each change is a patch of one order (its status replaced, or the
// order added or removed) and of the open_orders count, never a new
// snapshot or a replace of the whole list. The demo shows all three kinds
// within a few seconds.
func TestExampleDemoPatchesOneOrderAtATime(t *testing.T) {
	port := freePort(t)
	// Polls every 200ms see each second's change on its own.
	runExample(t, "examples/Caddyfile",
		"http://localhost:8080", fmt.Sprintf("http://127.0.0.1:%d", port),
		"127.0.0.1:8081", fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		"interval 1s", "interval 200ms")
	sc := openStream(t, http.DefaultClient, fmt.Sprintf("http://127.0.0.1:%d/events", port), "")
	ev := sc.next(10 * time.Second)
	if ev.name != "snapshot" {
		t.Fatalf("the stream began with %+v, want a snapshot", ev)
	}
	doc := []byte(ev.data)
	var first struct {
		Orders []struct {
			ID     int    `json:"id"`
			Status string `json:"status"`
		} `json:"orders"`
	}
	if err := json.Unmarshal(doc, &first); err != nil || len(first.Orders) == 0 {
		t.Fatalf("the demo's document %s (%v), want a list of orders", doc, err)
	}
	element := regexp.MustCompile(`^/orders/(0|[1-9][0-9]*)(/status)?$`)
	seen := map[string]bool{}
	for deadline := time.Now().Add(20 * time.Second); !(seen["replace status"] && seen["add"] && seen["remove"]); {
		ev, ok := sc.nextOrTimeout(time.Until(deadline))
		if !ok {
			t.Fatalf("in 20s the demo sent no patch of each kind (an order's status replaced, an order added, one removed): %v", seen)
		}
		if ev.name != "patch" {
			t.Fatalf("got %+v, want a patch", ev)
		}
		var ops []struct{ Op, Path string }
		if err := json.Unmarshal([]byte(ev.data), &ops); err != nil {
			t.Fatal(err)
		}
		orders := map[string]bool{}
		for _, op := range ops {
			if op.Path == "/open_orders" && op.Op == "replace" {
				continue
			}
			m := element.FindStringSubmatch(op.Path)
			switch {
			case m != nil && m[2] == "/status" && op.Op == "replace":
				seen["replace status"] = true
			case m != nil && m[2] == "" && (op.Op == "add" || op.Op == "remove"):
				seen[op.Op] = true
			default:
				t.Fatalf("the patch %s has %s %s: want only one order's status replaced, or one order added or removed", ev.data, op.Op, op.Path)
			}
			orders[m[1]] = true
		}
		if len(orders) != 1 {
			t.Errorf("the patch %s changes %d orders, want one", ev.data, len(orders))
		}
		patch, err := jsonpatch.DecodePatch([]byte(ev.data))
		if err != nil {
			t.Fatal(err)
		}
		if doc, err = patch.Apply(doc); err != nil {
			t.Fatalf("the patch %s does not apply to %s: %v", ev.data, doc, err)
		}
	}
}

// TestExampleListIgnoresVolatileFieldsBehindEncode runs examples/list: the
// legacy API's answers differ on every poll only in the ignored fields,
// which cause no event and are absent from the snapshot, and a real change
// arrives as one patch through gzip.
func TestExampleListIgnoresVolatileFieldsBehindEncode(t *testing.T) {
	// Every answer has new volatile fields.
	var status atomic.Value
	status.Store("packing")
	upstream := newFakeAPI(t, "")
	upstream.handle(func(w http.ResponseWriter, r *http.Request) bool {
		n := upstream.count.Load()
		upstream.set(fmt.Sprintf(`{"generated_at":"t%d","orders":[{"id":1,"status":%q,"checked_at":"t%d"},{"id":2,"status":"open","checked_at":"t%d"}]}`,
			n, status.Load(), n, n))
		return false
	})
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
	for _, r := range upstream.requestLog() {
		if got := r.URL.RequestURI(); got != "/api/orders?status=open" {
			t.Errorf("the upstream was asked for %v", got)
		}
	}
	// Three more answers that differ only in the ignored fields, and no
	// event for them.
	before := upstream.count.Load()
	waitFor(t, 10*time.Second, "three more polls", func() bool { return upstream.count.Load()-before >= 3 })
	if ev, ok := next(150 * time.Millisecond); ok {
		t.Fatalf("an event for answers that differ only in ignored fields: %+v", ev)
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
	url := runLiveAPIExample(t, api) + "/live/orders/42?page=2"

	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("without credentials: %s, want 401", resp.Status)
	}
	// A refused request leaves nothing to wait for: this is the time for
	// a poll that it would have started to reach the upstream.
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

// runLiveAPIExample runs examples/live-api in front of api and returns its
// base URL.
func runLiveAPIExample(t *testing.T, api *fakeAPI) string {
	t.Helper()
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
	return fmt.Sprintf("http://127.0.0.1:%d", port)
}

// TestExampleLiveAPIPathsAsHandlePathCleansThem checks what the README says
// of {http.request.uri.path} under handle_path: Caddy resolves the path's
// dot segments (also percent-encoded ones) and merges its slashes before
// poll_sse reads it, so those reach the upstream resolved, and what is
// still a dot segment after that, %252e%252e, gets 400.
func TestExampleLiveAPIPathsAsHandlePathCleansThem(t *testing.T) {
	api := newFakeAPI(t, `{"order":1}`)
	base := runLiveAPIExample(t, api)
	for _, tt := range []struct{ path, upstream string }{
		{"/live/orders/a/../41", "/v1/orders/41?page=1"},
		{"/live/a/%2e%2e/orders/42", "/v1/orders/42?page=1"},
		{"/live/orders//43", "/v1/orders/43?page=1"},
		{"/live/orders/./44", "/v1/orders/44?page=1"},
		{"/live/orders/%252e%252e/45", ""},
	} {
		t.Run(tt.path, func(t *testing.T) {
			before := len(api.requestLog())
			req, err := http.NewRequest(http.MethodGet, base+tt.path+"?page=1", nil)
			if err != nil {
				t.Fatal(err)
			}
			req.SetBasicAuth("ops", "live demo")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if tt.upstream == "" {
				body, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != http.StatusBadRequest {
					t.Errorf("%s: %s %q, want 400", tt.path, resp.Status, body)
				}
				if n := len(api.requestLog()) - before; n != 0 {
					t.Errorf("%s caused %d upstream requests", tt.path, n)
				}
				return
			}
			if ev, ok := <-eventReader(resp.Body, nil); !ok || ev.name != "snapshot" {
				t.Fatalf("%s: %s, then %+v, want a snapshot", tt.path, resp.Status, ev)
			}
			log := api.requestLog()
			if len(log) == before || log[before].URL.RequestURI() != tt.upstream {
				t.Errorf("%s: the upstream got %v, want %s", tt.path, log[before:], tt.upstream)
			}
		})
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
	legacy := newFakeAPI(t, "")
	for _, user := range []string{"alice", "bob"} {
		legacy.setFor("Bearer token-of-"+user, http.StatusOK, fmt.Sprintf(`{"user":%q,"unread":3}`, user))
	}
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
	for _, r := range legacy.requestLog() {
		if s := r.URL.Path + " " + r.Header.Get("Authorization"); s != "/api/me/notifications Bearer token-of-alice" && s != "/api/me/notifications Bearer token-of-bob" {
			t.Errorf("the legacy API got %q", s)
		}
	}
}

// nginxPath returns the path of Debian's nginx.
func nginxPath(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat("/usr/sbin/nginx"); err == nil {
		return "/usr/sbin/nginx"
	}
	path, err := exec.LookPath("nginx")
	if err != nil {
		t.Fatal("nginx is not installed: `make test` installs it (apt-get install nginx-light)")
	}
	return path
}

// startNginx runs nginx in the foreground, in a directory of its own, with
// server (a server block) in its http block, and stops it when the test
// ends. The configuration must pass `nginx -t`, whose message fails the
// test otherwise.
func startNginx(t *testing.T, server string) {
	t.Helper()
	nginx := nginxPath(t)
	dir := t.TempDir()
	conf := fmt.Sprintf(`daemon off;
master_process off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log info;
events {
    worker_connections 64;
}
http {
    access_log off;
    client_body_temp_path %[1]s/client_body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;

%[2]s
}
`, dir, server)
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"-p", dir, "-c", confPath, "-e", filepath.Join(dir, "error.log")}
	if out, err := exec.Command(nginx, append([]string{"-t"}, args...)...).CombinedOutput(); err != nil {
		t.Fatalf("nginx -t refuses the configuration: %v\n%s\n%s", err, out, conf)
	}
	cmd := exec.Command(nginx, args...)
	var output lockedBuffer
	cmd.Stdout, cmd.Stderr = &output, &output
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		// SIGTERM: nginx stops at once, without waiting for open streams.
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
			t.Error("nginx did not stop on SIGTERM")
		}
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Logf("nginx output:\n%s\nerror.log:\n%s", output.String(), log)
		}
	})
}

// TestExampleNginxStreamsThroughNginx runs examples/nginx as it is written:
// a real nginx with the example's server block (only its port, certificate
// and Caddy's address changed), in front of a real Caddy with the example's
// Caddyfile. Over HTTPS, with HTTP/1.1 and with HTTP/2, a request for
// example.com's /events gets the stream, and its events arrive one by one,
// not held in nginx's buffers.
func TestExampleNginxStreamsThroughNginx(t *testing.T) {
	api := newFakeAPI(t, `{"n":0}`)
	caddyPort := freePort(t)
	// Heartbeats would push a buffered event out; an hour has none.
	runExample(t, "examples/nginx/Caddyfile",
		"http://legacy.internal:8080", api.URL,
		":8080", fmt.Sprintf(":%d", caddyPort),
		"interval 2s", "interval 100ms",
		"heartbeat 15s", "heartbeat 1h")

	dir := t.TempDir()
	cert, key := selfSignedPEM(t)
	certPath, keyPath := filepath.Join(dir, "example.com.crt"), filepath.Join(dir, "example.com.key")
	if err := os.WriteFile(certPath, []byte(cert), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, []byte(key), 0o600); err != nil {
		t.Fatal(err)
	}
	example, err := os.ReadFile("examples/nginx/nginx.conf")
	if err != nil {
		t.Fatal(err)
	}
	nginxAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	server := string(example)
	for _, r := range [][2]string{
		{"listen 443 ", "listen " + nginxAddr + " "},
		{"/etc/ssl/example.com.crt", certPath},
		{"/etc/ssl/example.com.key", keyPath},
		{"proxy_pass http://127.0.0.1:8080;", fmt.Sprintf("proxy_pass http://127.0.0.1:%d;", caddyPort)},
	} {
		if !strings.Contains(server, r[0]) {
			t.Fatalf("examples/nginx/nginx.conf has no %q", r[0])
		}
		server = strings.ReplaceAll(server, r[0], r[1])
	}
	startNginx(t, server)
	waitForListener(t, nginxAddr)

	// Every connection goes to nginx, which sees the host of the URL:
	// example.com, as a browser would send it.
	dial := func(ctx context.Context, network, _ string) (net.Conn, error) {
		return new(net.Dialer).DialContext(ctx, network, nginxAddr)
	}
	tlsConfig := &tls.Config{InsecureSkipVerify: true, ServerName: "example.com"}
	for _, tt := range []struct {
		proto     string
		transport *http.Transport
	}{
		{"HTTP/1.1", &http.Transport{DialContext: dial, TLSClientConfig: tlsConfig,
			TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}},
		{"HTTP/2.0", &http.Transport{DialContext: dial, TLSClientConfig: tlsConfig, ForceAttemptHTTP2: true}},
	} {
		t.Run(tt.proto, func(t *testing.T) {
			t.Cleanup(tt.transport.CloseIdleConnections)
			api.set(`{"n":0}`)
			req, _ := http.NewRequest(http.MethodGet, "https://example.com/events", nil)
			req.Header.Set("Accept", "text/event-stream")
			resp, err := tt.transport.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.Proto != tt.proto {
				t.Errorf("nginx answered over %s, want %s", resp.Proto, tt.proto)
			}
			if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || ct != "text/event-stream" {
				body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
				t.Fatalf("through nginx: %s with Content-Type %q and %d bytes %q, want 200 and the stream", resp.Status, ct, len(body), body)
			}
			br := bufio.NewReader(resp.Body)
			if line, err := br.ReadString('\n'); !strings.HasPrefix(line, "retry: ") {
				t.Fatalf("the body begins with %q (%v), want the stream's retry field", line, err)
			}
			expectOneByOne(t, api, eventReader(br, nil))
		})
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
