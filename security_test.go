package pollsse

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// startCaddyLogging is startCaddy with every log line, debug included,
// written to a file; logs returns what has been written so far.
func startCaddyLogging(t *testing.T, routes string) (base string, logs func() string) {
	t.Helper()
	port := freePort(t)
	var cfg map[string]any
	if err := json.Unmarshal(caddyConfig(t, port, routes), &cfg); err != nil {
		t.Fatal(err)
	}
	logFile := filepath.Join(t.TempDir(), "caddy.log")
	cfg["logging"] = map[string]any{"logs": map[string]any{"default": map[string]any{
		"level":  "DEBUG",
		"writer": map[string]any{"output": "file", "filename": logFile},
	}}}
	raw, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := caddy.Load(raw, true); err != nil {
		t.Fatalf("loading config: %v", err)
	}
	t.Cleanup(func() {
		stopCaddy(t)
		assertNoStreamGoroutines(t)
	})
	return fmt.Sprintf("http://127.0.0.1:%d", port), func() string {
		b, _ := os.ReadFile(logFile)
		return string(b)
	}
}

// getStatus makes a GET request with the given headers and returns the
// response's status and body; a stream is closed once its headers are in.
func getStatus(t *testing.T, url string, header http.Header) (int, http.Header) {
	t.Helper()
	resp := getWith(t, url, header)
	resp.Body.Close()
	return resp.StatusCode, resp.Header
}

// getWith sends a GET of url with header.
func getWith(t *testing.T, url string, header http.Header) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, values := range header {
		req.Header[name] = values
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp
}

// eventSourceStatus requests url as a browser's EventSource does and
// returns the status of the response that ends its retries. A stream that
// ends before any event (the upstream refused the credentials of a topic
// that had no answer yet when it opened) is requested again, as EventSource
// does after the retry hint; the test fails if a stream sends an event or
// does not end.
func eventSourceStatus(t *testing.T, url string, header http.Header) (int, http.Header) {
	t.Helper()
	for range 3 {
		resp := getWith(t, url, header)
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			return resp.StatusCode, resp.Header
		}
		ended := make(chan error, 1)
		go func() {
			br := bufio.NewReader(resp.Body)
			for {
				ev, err := readEvent(br)
				if err != nil {
					ended <- nil
					return
				}
				if !ev.comment && ev.retry == "" {
					ended <- fmt.Errorf("a refused stream sent %+v", ev)
					return
				}
			}
		}()
		select {
		case err := <-ended:
			if err != nil {
				t.Error(err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("GET %s: the stream did not end", url)
		}
		resp.Body.Close()
	}
	t.Fatalf("GET %s: no answer but 200 in 3 tries", url)
	return 0, nil
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

// A usersAPI answers with each user's own document, picked by the bearer
// token of the request: 401 without a known token, 403 for "mallory".
type usersAPI struct {
	*fakeAPI
	mu   sync.Mutex
	docs map[string]string // token -> document; "" refuses with 401
}

func newUsersAPI(t *testing.T) *usersAPI {
	u := &usersAPI{fakeAPI: newFakeAPI(t, ""), docs: map[string]string{
		"alice-token": `{"user":"alice","balance":100}`,
		"bob-token":   `{"user":"bob","balance":5}`,
	}}
	u.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.count.Add(1)
		u.fakeAPI.mu.Lock()
		u.requests = append(u.requests, r.Clone(r.Context()))
		u.fakeAPI.mu.Unlock()
		token := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		if token == "mallory-token" {
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		u.mu.Lock()
		doc := u.docs[token]
		u.mu.Unlock()
		if doc == "" {
			w.Header().Set("WWW-Authenticate", "Bearer")
			http.Error(w, "who are you", http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, doc)
	})
	return u
}

func (u *usersAPI) setDoc(token, doc string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.docs[token] = doc
}

func bearer(token string) http.Header {
	return http.Header{"Authorization": {"Bearer " + token}}
}

// openStreamWith is openStream with request headers.
func openStreamWith(t *testing.T, url string, header http.Header, lastEventID string) *streamClient {
	t.Helper()
	client := &http.Client{Transport: headerTransport{header}}
	return openStream(t, client, url, lastEventID)
}

// headerTransport adds headers to every request.
type headerTransport struct{ header http.Header }

func (ht headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	for name, values := range ht.header {
		r.Header[name] = values
	}
	return http.DefaultTransport.RoundTrip(r)
}

func TestForwardedCredentialsNeverCrossUsers(t *testing.T) {
	api := newUsersAPI(t)
	base, logs := startCaddyLogging(t, "["+pollSSERoute("/events", fmt.Sprintf(
		`"upstream":%q,"interval":"100ms","max_backoff":"100ms","forward_headers":["authorization"]`, api.URL+"/account"))+"]")

	alice := openStreamWith(t, base+"/events", bearer("alice-token"), "")
	bob := openStreamWith(t, base+"/events", http.Header{"Authorization": {"Bearer bob-token"}, "Cookie": {"session=bob-cookie"}}, "")
	aliceSnap, bobSnap := alice.next(5*time.Second), bob.next(5*time.Second)
	if aliceSnap.name != "snapshot" || !sameJSON(aliceSnap.data, `{"user":"alice","balance":100}`) {
		t.Fatalf("alice got %+v", aliceSnap)
	}
	if bobSnap.name != "snapshot" || !sameJSON(bobSnap.data, `{"user":"bob","balance":5}`) {
		t.Fatalf("bob got %+v", bobSnap)
	}

	t.Run("each user's changes reach only that user", func(t *testing.T) {
		api.setDoc("alice-token", `{"user":"alice","balance":90}`)
		if ev := alice.next(5 * time.Second); ev.name != "patch" || !strings.Contains(ev.data, "90") {
			t.Fatalf("alice got %+v", ev)
		}
		if ev, ok := bob.nextOrTimeout(100 * time.Millisecond); ok {
			t.Fatalf("bob got %+v from alice's change", ev)
		}
	})

	t.Run("an id from one user's stream never replays another's events", func(t *testing.T) {
		// Bob presents the id of alice's snapshot, after which alice's
		// history holds her patch: he gets his own snapshot.
		sc := openStreamWith(t, base+"/events", bearer("bob-token"), aliceSnap.id)
		if ev := sc.next(5 * time.Second); ev.name != "snapshot" || !sameJSON(ev.data, `{"user":"bob","balance":5}`) {
			t.Fatalf("bob resuming with alice's id got %+v", ev)
		}
		// Alice resuming with her own id gets her patch.
		sc = openStreamWith(t, base+"/events", bearer("alice-token"), aliceSnap.id)
		if ev := sc.next(5 * time.Second); ev.name != "patch" {
			t.Fatalf("alice resuming got %+v", ev)
		}
	})

	t.Run("the upstream receives each token alone, and nothing else of the subscriber's request", func(t *testing.T) {
		for _, r := range api.requestLog() {
			auth := r.Header.Values("Authorization")
			if len(auth) != 1 || (auth[0] != "Bearer alice-token" && auth[0] != "Bearer bob-token") {
				t.Errorf("upstream request with Authorization %q", auth)
			}
			if r.Header.Get("Cookie") != "" || r.Header.Get("Last-Event-Id") != "" {
				t.Errorf("upstream request with the subscriber's other headers: %v", r.Header)
			}
		}
	})

	t.Run("a refused credential gets the upstream's status before any snapshot", func(t *testing.T) {
		for _, tt := range []struct {
			name   string
			header http.Header
			want   int
		}{
			{"no token", nil, http.StatusUnauthorized},
			{"an unknown token", bearer("eve-token"), http.StatusUnauthorized},
			{"a forbidden token", bearer("mallory-token"), http.StatusForbidden},
		} {
			if status, hdr := eventSourceStatus(t, base+"/events", tt.header); status != tt.want || hdr.Get("Content-Type") == "text/event-stream" {
				t.Errorf("%s: status %d (%s), want %d", tt.name, status, hdr.Get("Content-Type"), tt.want)
			}
		}
	})

	t.Run("a credential revoked after the snapshot is a status event, and new streams with it get 401", func(t *testing.T) {
		api.setDoc("bob-token", "")
		sd := decodeStatus(t, bob.next(5*time.Second))
		if sd.Upstream != "down" || sd.Status != http.StatusUnauthorized {
			t.Errorf("bob got %+v, want down with 401", sd)
		}
		if status, _ := getStatus(t, base+"/events", bearer("bob-token")); status != http.StatusUnauthorized {
			t.Errorf("a new stream with the revoked token: status %d, want 401 and not the document it had", status)
		}
		select {
		case err := <-bob.done:
			t.Errorf("bob's stream ended: %v", err)
		default:
		}
	})

	for _, secret := range []string{"alice-token", "bob-token", "mallory-token", "eve-token", "bob-cookie"} {
		if strings.Contains(logs(), secret) {
			t.Errorf("the logs hold %q", secret)
		}
	}
	if !strings.Contains(logs(), "topic started") {
		t.Error("the log capture holds no line of the handler")
	}
}

// TestRefusedAPIKeyBeforeSnapshot: without forward_headers too, a 401 or 403
// before a subscriber's first snapshot is its response.
func TestRefusedAPIKeyBeforeSnapshot(t *testing.T) {
	api := newFakeAPI(t, `{"a":1}`)
	api.setStatus(http.StatusForbidden)
	base := startCaddy(t, "["+pollSSERoute("/events", fmt.Sprintf(`"upstream":%q,"header_up":{"X-Api-Key":["revoked"]}`, api.URL))+"]")
	// The first stream may open before the first answer, and then ends
	// without an event; the later ones get the status at once.
	for range 2 {
		if status, _ := eventSourceStatus(t, base+"/events", nil); status != http.StatusForbidden {
			t.Errorf("status %d, want 403", status)
		}
	}
}

func TestRedirectsStayOnTheOrigin(t *testing.T) {
	var mu sync.Mutex
	var hops []string
	api := newFakeAPI(t, `{"a":1}`)
	api.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hops = append(hops, r.URL.Path)
		mu.Unlock()
		var chain string
		var n int
		if _, err := fmt.Sscanf(strings.ReplaceAll(strings.TrimPrefix(r.URL.Path, "/"), "/", " "), "hop %s %d", &chain, &n); err == nil && n > 0 {
			http.Redirect(w, r, fmt.Sprintf("/hop/%s/%d", chain, n-1), http.StatusFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"arrived":true}`)
	})
	base := startCaddy(t, "["+pollSSERoute("/events", fmt.Sprintf(`"upstream":%q,"interval":"100ms"`,
		api.URL+"/hop/{http.request.uri.query.chain}/{http.request.uri.query.n}"))+"]")

	sc := openStream(t, http.DefaultClient, base+"/events?chain=three&n=3", "")
	if ev := sc.next(5 * time.Second); ev.name != "snapshot" || ev.data != `{"arrived":true}` {
		t.Errorf("3 redirects on the same origin: got %+v, want the document", ev)
	}
	sc = openStream(t, http.DefaultClient, base+"/events?chain=four&n=4", "")
	if sd := decodeStatus(t, sc.next(5*time.Second)); sd.Upstream != "down" || sd.Error != "upstream redirect not followed: more than 3 redirects" {
		t.Errorf("4 redirects: got %+v, want no document but the down status", sd)
	}
	mu.Lock()
	defer mu.Unlock()
	seen := strings.Join(hops, " ")
	if !strings.Contains(seen, "/hop/four/1") || strings.Contains(seen, "/hop/four/0") {
		t.Errorf("a chain of 4 redirects was not stopped after 3: %v", hops)
	}
}

// TestRefusedTopicPollsOnItsBackoff: a topic whose upstream refuses its
// forwarded credentials polls on the backoff of its failures (interval×2ⁿ
// up to max_backoff), whatever its visitors do, who get the 401 at once:
// visitors neither hasten its polls nor keep it from polling, so that it
// recovers when the upstream accepts the credential again while refused
// browsers keep coming, and a made-up credential costs the upstream the
// requests of that schedule until idle_timeout after its last visitor.
func TestRefusedTopicPollsOnItsBackoff(t *testing.T) {
	const (
		interval    = 100 * time.Millisecond
		maxBackoff  = 800 * time.Millisecond
		idleTimeout = 2 * time.Second
		// slack is what the upstream's clock may add to or take from a
		// wait between two polls.
		slack = 50 * time.Millisecond
	)
	var mu sync.Mutex
	accepted := map[string]bool{}
	arrivals := map[string][]time.Time{}
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth := r.Header.Get("Authorization")
		mu.Lock()
		arrivals[auth] = append(arrivals[auth], time.Now())
		ok := accepted[auth]
		mu.Unlock()
		if !ok {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		fmt.Fprint(w, `{"a":1}`)
	}))
	t.Cleanup(upstream.Close)
	requests := func(auth string) []time.Time {
		mu.Lock()
		defer mu.Unlock()
		return append([]time.Time(nil), arrivals[auth]...)
	}
	// The most polls that a topic can make in a time: those of the
	// schedule at its shortest waits.
	fastest := schedule{interval: interval, maxBackoff: maxBackoff, rnd: rndHigh}
	most := func(d time.Duration) int { return outagePolls(fastest, d+slack) }
	handler := func(idle time.Duration) string {
		return fmt.Sprintf(`"upstream":%q,"interval":%q,"max_backoff":%q,"idle_timeout":%q,"forward_headers":["Authorization"]`,
			upstream.URL, interval, maxBackoff, idle)
	}
	base, logs := startCaddyLogging(t, "["+
		pollSSERoute("/events", handler(time.Minute))+","+
		pollSSERoute("/made-up", handler(idleTimeout))+"]")

	t.Run("a refused topic recovers while refused visitors keep coming", func(t *testing.T) {
		const token = "rotated"
		// Visitors every interval, for long enough that the backoff
		// reaches max_backoff.
		for start := time.Now(); time.Since(start) < 3*maxBackoff; time.Sleep(interval) {
			if status, _ := eventSourceStatus(t, base+"/events", bearer(token)); status != http.StatusUnauthorized {
				t.Fatalf("a refused visitor got %d, want 401", status)
			}
		}
		polls := requests("Bearer " + token)
		span := time.Since(polls[0])
		t.Logf("%d upstream requests in %s of refused visitors every %s", len(polls), span.Round(time.Millisecond), interval)
		if len(polls) < 3 || len(polls) > most(span) {
			t.Errorf("%d upstream requests in %s, want 3 to %d: the backoff of the failures", len(polls), span, most(span))
		}

		mu.Lock()
		accepted["Bearer "+token] = true
		mu.Unlock()
		for start := time.Now(); ; time.Sleep(interval) {
			sc := openStreamWith(t, base+"/events", bearer(token), "")
			if sc.resp.StatusCode == http.StatusOK {
				if ev := sc.next(5 * time.Second); ev.name != "snapshot" || ev.data != `{"a":1}` {
					t.Fatalf("got %+v, want the snapshot", ev)
				}
				t.Logf("accepted %s after the upstream was", time.Since(start).Round(time.Millisecond))
				break
			}
			sc.close()
			if sc.resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("a visitor got %d, want 401 or a stream", sc.resp.StatusCode)
			}
			if wait := time.Since(start); wait > maxBackoff+2*time.Second {
				t.Fatalf("still 401 %s after the upstream accepts the credential, with a max_backoff of %s", wait, maxBackoff)
			}
		}
	})

	t.Run("a made-up credential costs the requests of the schedule until its topic idles out", func(t *testing.T) {
		const tokens = 5
		left := map[string]time.Time{}
		for i := range tokens {
			token := fmt.Sprintf("made-up-%d", i)
			if status, _ := eventSourceStatus(t, base+"/made-up", bearer(token)); status != http.StatusUnauthorized {
				t.Errorf("%s: status %d, want 401", token, status)
			}
			left[token] = time.Now()
		}
		waitFor(t, 10*time.Second, "the topics of the made-up credentials to stop", func() bool {
			return strings.Count(logs(), "topic stopped") == tokens
		})
		for token, at := range left {
			polls := requests("Bearer " + token)
			life := at.Add(idleTimeout).Sub(polls[0])
			t.Logf("%s: %d upstream requests in its topic's %s", token, len(polls), life.Round(time.Millisecond))
			if len(polls) < 3 || len(polls) > most(life) {
				t.Errorf("%s: %d upstream requests in its topic's %s, want 3 to %d: the backoff of the failures", token, len(polls), life, most(life))
			}
		}
	})
}
