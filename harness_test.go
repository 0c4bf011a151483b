package pollsse

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// caddyConfig returns a Caddy JSON config with one HTTP server on port whose
// routes are given as JSON.
func caddyConfig(t testing.TB, port int, routes string) []byte {
	t.Helper()
	level := "ERROR"
	if os.Getenv("POLLSSE_TEST_LOG") != "" {
		level = "DEBUG"
	}
	cfg := fmt.Sprintf(`{
		"admin": {"disabled": true},
		"storage": {"module": "file_system", "root": %q},
		"logging": {"logs": {"default": {"level": %q}}},
		"apps": {"http": {"servers": {"test": {
			"listen": ["127.0.0.1:%d"],
			"automatic_https": {"disable": true},
			"routes": %s
		}}}}
	}`, t.TempDir(), level, port, routes)
	if !json.Valid([]byte(cfg)) {
		t.Fatalf("invalid config: %s", cfg)
	}
	return []byte(cfg)
}

// startCaddy runs Caddy in this process with the given routes and returns
// its base URL. Caddy stops when the test ends, and no goroutine of this
// package may be left then.
func startCaddy(t testing.TB, routes string) string {
	t.Helper()
	port := freePort(t)
	if err := caddy.Load(caddyConfig(t, port, routes), true); err != nil {
		t.Fatalf("loading config: %v", err)
	}
	t.Cleanup(func() {
		stopCaddy(t)
		assertNoStreamGoroutines(t)
	})
	return fmt.Sprintf("http://127.0.0.1:%d", port)
}

// stopCaddy stops the Caddy of this process, failing the test if that hangs.
func stopCaddy(t testing.TB) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- caddy.Stop() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("stopping caddy: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("caddy.Stop hung with streams open")
	}
}

// pollSSERoute is a route with one poll_sse handler; fields is the rest of
// the handler's JSON object.
func pollSSERoute(path, fields string) string {
	return fmt.Sprintf(`{"match":[{"path":[%q]}],"handle":[{"handler":"poll_sse",%s}]}`, path, fields)
}

// assertNoStreamGoroutines fails the test if a goroutine of this package's
// streams, pollers or tickers is still running shortly after Caddy stopped.
func assertNoStreamGoroutines(t testing.TB) {
	t.Helper()
	var stacks string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		buf := make([]byte, 1<<20)
		stacks = string(buf[:runtime.Stack(buf, true)])
		leaked := false
		for _, g := range strings.Split(stacks, "\n\n") {
			if strings.Contains(g, "caddy-pollsse.") && !strings.Contains(g, "assertNoStreamGoroutines") && !strings.Contains(g, "_test.go") {
				leaked = true
			}
		}
		if !leaked {
			return
		}
	}
	t.Errorf("goroutines of the handler outlived Caddy:\n%s", stacks)
}

// A fakeAPI is the legacy JSON API in front of which the handler runs: an
// httptest server whose document, status and latency a test sets, and which
// counts the requests it receives.
type fakeAPI struct {
	*httptest.Server

	mu       sync.Mutex
	body     []byte
	status   int
	delay    time.Duration
	requests []*http.Request

	inFlight    atomic.Int32
	maxInFlight atomic.Int32
	count       atomic.Int64
}

func newFakeAPI(t testing.TB, body string) *fakeAPI {
	t.Helper()
	api := &fakeAPI{body: []byte(body), status: http.StatusOK}
	api.Server = httptest.NewServer(http.HandlerFunc(api.serve))
	t.Cleanup(api.Close)
	return api
}

func (api *fakeAPI) serve(w http.ResponseWriter, r *http.Request) {
	n := api.inFlight.Add(1)
	defer api.inFlight.Add(-1)
	for {
		m := api.maxInFlight.Load()
		if n <= m || api.maxInFlight.CompareAndSwap(m, n) {
			break
		}
	}
	api.count.Add(1)
	api.mu.Lock()
	api.requests = append(api.requests, r.Clone(r.Context()))
	body, status, delay := api.body, api.status, api.delay
	api.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(body)
}

func (api *fakeAPI) set(body string) {
	api.mu.Lock()
	defer api.mu.Unlock()
	api.body = []byte(body)
}

func (api *fakeAPI) setStatus(status int) {
	api.mu.Lock()
	defer api.mu.Unlock()
	api.status = status
}

func (api *fakeAPI) setDelay(d time.Duration) {
	api.mu.Lock()
	defer api.mu.Unlock()
	api.delay = d
}

func (api *fakeAPI) requestLog() []*http.Request {
	api.mu.Lock()
	defer api.mu.Unlock()
	return append([]*http.Request(nil), api.requests...)
}

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(timeout); ; time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
	}
}
