package pollsse

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	jsonpatch "github.com/evanphx/json-patch/v5"
)

// fail answers r in the way that fault names, as an upstream fails: with
// an error status, a connection cut or a body that is no document.
func (api *fakeAPI) fail(w http.ResponseWriter, r *http.Request, fault string) {
	hijack := func() net.Conn {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			api.t.Errorf("hijack: %v", err)
			return nil
		}
		return conn
	}
	switch fault {
	case "500":
		http.Error(w, "boom", http.StatusInternalServerError)
	case "503":
		http.Error(w, "unavailable", http.StatusServiceUnavailable)
	case "503 with Retry-After":
		w.Header().Set("Retry-After", "1")
		http.Error(w, "maintenance", http.StatusServiceUnavailable)
	case "429":
		w.Header().Set("Retry-After", "1")
		http.Error(w, "slow down", http.StatusTooManyRequests)
	case "hang":
		<-r.Context().Done()
	case "connection reset":
		if conn := hijack(); conn != nil {
			conn.(*net.TCPConn).SetLinger(0)
			conn.Close()
		}
	case "truncated body":
		if conn := hijack(); conn != nil {
			fmt.Fprint(conn, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"a\":[1,2,")
			conn.Close()
		}
	case "invalid JSON":
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"a":1,`)
	case "HTML":
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, "<html><body>Service temporarily unavailable</body></html>")
	case "body over max_body":
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"pad":%q}`, strings.Repeat("x", 4<<10))
	case "body over max_body, chunked":
		w.Header().Set("Content-Type", "application/json")
		for range 64 {
			if _, err := fmt.Fprintf(w, `{"pad":%q}`, strings.Repeat("x", 1<<10)); err != nil {
				return
			}
			w.(http.Flusher).Flush()
		}
	case "slow trickle":
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		for {
			if _, err := w.Write([]byte(" ")); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	case "redirect to another host":
		http.Redirect(w, r, api.redirectTo, http.StatusFound)
	default:
		api.t.Errorf("unknown fault %q", fault)
	}
}

// A trackedClient is one browser: its own HTTP client, whose connections
// are counted, one stream, and the document it rebuilds from the events.
type trackedClient struct {
	t     testing.TB
	dials atomic.Int32
	sc    *streamClient
	doc   []byte
}

func newTrackedClient(t testing.TB, url string) *trackedClient {
	c := &trackedClient{t: t}
	dialer := &net.Dialer{}
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c.dials.Add(1)
			return dialer.DialContext(ctx, network, addr)
		},
	}}
	c.sc = openStream(t, client, url, "")
	return c
}

// next returns the next event, applying snapshots and patches to the
// client's document.
func (c *trackedClient) next(timeout time.Duration) sseEvent {
	c.t.Helper()
	ev := c.sc.next(timeout)
	switch ev.name {
	case "snapshot":
		c.doc = []byte(ev.data)
	case "patch":
		patch, err := jsonpatch.DecodePatch([]byte(ev.data))
		if err != nil {
			c.t.Fatalf("patch %s: %v", ev.data, err)
		}
		if c.doc, err = patch.Apply(c.doc); err != nil {
			c.t.Fatalf("patch %s does not apply to %s: %v", ev.data, c.doc, err)
		}
	case "merge":
		doc, err := jsonpatch.MergePatch(c.doc, []byte(ev.data))
		if err != nil {
			c.t.Fatalf("merge %s: %v", ev.data, err)
		}
		c.doc = doc
	}
	return ev
}

// decodeStatus returns a status event's data.
func decodeStatus(t testing.TB, ev sseEvent) statusData {
	t.Helper()
	if ev.name != "status" || ev.hasID {
		t.Fatalf("got %+v, want a status event without id", ev)
	}
	var sd statusData
	if err := json.Unmarshal([]byte(ev.data), &sd); err != nil {
		t.Fatalf("status data %q: %v", ev.data, err)
	}
	return sd
}

// checkBackoff checks the arrivals of the polls that failed in a row: the
// wait after the i-th failure is interval×2^i capped at maxBackoff, less up
// to a quarter, never less than the interval, nor than a poll that takes
// pollTime, nor than a Retry-After (itself capped at maxBackoff). Arrival
// times carry the upstream's scheduling noise, so the lower bound is
// checked on the time from the first failure, which one late arrival does
// not shorten much, and the upper bound on each wait. It returns the waits.
func checkBackoff(t *testing.T, arrivals []time.Time, interval, maxBackoff, pollTime, retryAfter time.Duration) []time.Duration {
	t.Helper()
	const slack = 30 * time.Millisecond
	var gaps []time.Duration
	var least time.Duration
	for i := 1; i < len(arrivals); i++ {
		gap := arrivals[i].Sub(arrivals[i-1])
		gaps = append(gaps, gap.Round(time.Millisecond))
		base := interval
		for range i {
			base = min(2*base, maxBackoff)
		}
		ra := min(retryAfter, maxBackoff)
		least += max(base-base/backoffJitter, interval, pollTime, ra)
		if elapsed := arrivals[i].Sub(arrivals[0]); elapsed < least-slack {
			t.Errorf("%d polls in %s after the first failure, want at least %s between them (waits %v)", i, elapsed, least, gaps)
		}
		if most := max(base, pollTime, ra) + 400*time.Millisecond; gap > most {
			t.Errorf("wait after failure %d: %s, want at most %s (waits %v)", i, gap, most, gaps)
		}
	}
	return gaps
}

// TestFaultsKeepStreamsOpen runs a real Caddy with subscribers connected
// against an upstream that fails in every way in turn, and recovers after
// each: streams stay open on their one connection, each failure and each
// recovery is one status event, polls back off while the upstream fails,
// and after each recovery every client's document is the upstream's.
func TestFaultsKeepStreamsOpen(t *testing.T) {
	const (
		interval   = 100 * time.Millisecond
		maxBackoff = 400 * time.Millisecond
		timeout    = 150 * time.Millisecond
		clients    = 3
	)
	canary := newCanary(t)
	api := newFakeAPI(t, `{"round":0}`)
	api.redirectTo = canary.URL + "/elsewhere"
	base := startCaddy(t, "["+pollSSERoute("/events", fmt.Sprintf(
		`"upstream":%q,"interval":%q,"max_backoff":%q,"timeout":%q,"max_body":1024,"heartbeat":"1s"`,
		api.URL, interval, maxBackoff, timeout))+"]")

	var cs []*trackedClient
	for range clients {
		c := newTrackedClient(t, base+"/events")
		if ev := c.next(5 * time.Second); ev.name != "snapshot" {
			t.Fatalf("first event %+v", ev)
		}
		cs = append(cs, c)
	}

	faults := []struct {
		fault     string
		status    int
		errorHas  string
		slow      bool // the failing poll takes the timeout
		wantPolls int
	}{
		{"500", 500, "upstream answered 500 Internal Server Error", false, 4},
		{"503 with Retry-After", 503, "upstream answered 503 Service Unavailable", false, 4},
		{"429", 429, "upstream answered 429 Too Many Requests", false, 4},
		{"hang", 0, "upstream request timed out", true, 3},
		{"connection reset", 0, "upstream closed the connection", false, 4},
		{"truncated body", 0, "upstream closed the connection", false, 4},
		{"invalid JSON", 0, "", false, 4},
		{"HTML", 0, "", false, 4},
		{"body over max_body", 0, "response body larger than max_body (1024 bytes)", false, 4},
		{"body over max_body, chunked", 0, "response body larger than max_body (1024 bytes)", false, 4},
		{"slow trickle", 0, "upstream request timed out", true, 3},
		{"redirect to another host", 0, "upstream redirect not followed", false, 4},
	}
	for round, f := range faults {
		t.Run(f.fault, func(t *testing.T) {
			api.setFault(f.fault)
			for _, c := range cs {
				sd := decodeStatus(t, c.next(5*time.Second))
				if sd.Upstream != "down" || sd.Status != f.status || sd.Error == "" || !strings.Contains(sd.Error, f.errorHas) || sd.RetryInMS <= 0 {
					t.Errorf("status %+v, want down with status %d and an error containing %q", sd, f.status, f.errorHas)
				}
				if strings.Contains(sd.Error, "127.0.0.1") || strings.Contains(sd.Error, "Service temporarily") {
					t.Errorf("status error %q tells subscribers about the upstream's address or body", sd.Error)
				}
			}
			waitFor(t, 10*time.Second, fmt.Sprintf("%d failed polls", f.wantPolls), func() bool {
				return len(api.arrivals(f.fault)) >= f.wantPolls
			})
			var pollTime time.Duration
			if f.slow {
				pollTime = timeout
			}
			// Retry-After asks for 1s, more than max_backoff: the wait is
			// max_backoff from the first failure on.
			var retryAfter time.Duration
			if f.status == 503 || f.status == 429 {
				retryAfter = time.Second
			}
			arrivals := api.arrivals(f.fault)
			if f.fault == "connection reset" {
				arrivals = dropTransportRetries(arrivals)
			}
			t.Logf("waits between failed polls: %v", checkBackoff(t, arrivals, interval, maxBackoff, pollTime, retryAfter))
			// Still one status event for the whole outage.
			for _, c := range cs {
				if ev, ok := c.sc.nextOrTimeout(20 * time.Millisecond); ok {
					t.Errorf("a second event during one outage: %+v", ev)
				}
			}
			doc := fmt.Sprintf(`{"round":%d,"fault":%q}`, round+1, f.fault)
			api.set(doc)
			api.setFault("")
			for _, c := range cs {
				if sd := decodeStatus(t, c.next(5*time.Second)); sd.Upstream != "up" || sd.Status != 0 || sd.Error != "" {
					t.Errorf("status %+v, want up", sd)
				}
				if ev := c.next(5 * time.Second); ev.name == "status" {
					t.Errorf("got %+v, want the change", ev)
				}
				if !sameJSON(string(c.doc), doc) {
					t.Errorf("client document %s, upstream %s", c.doc, doc)
				}
			}
		})
	}
	for i, c := range cs {
		if n := c.dials.Load(); n != 1 {
			t.Errorf("client %d opened %d connections, want its one stream from start to end", i, n)
		}
		select {
		case err := <-c.sc.done:
			t.Errorf("client %d's stream ended: %v", i, err)
		default:
		}
	}
	if n := canary.count.Load(); n != 0 {
		t.Errorf("the host the upstream redirected to received %d requests", n)
	}
}

// dropTransportRetries drops the arrivals that came within a few
// milliseconds of the one before: Go's HTTP transport sends a request again,
// once, when a connection it reused is reset before any answer, and that is
// one poll.
func dropTransportRetries(arrivals []time.Time) []time.Time {
	var out []time.Time
	for _, a := range arrivals {
		if len(out) > 0 && a.Sub(out[len(out)-1]) < 5*time.Millisecond {
			continue
		}
		out = append(out, a)
	}
	return out
}

// newCanary returns a server that no poll may ever reach: a request fails
// the test.
func newCanary(t testing.TB) *fakeAPI {
	c := newFakeAPI(t, `{"canary":true}`)
	c.handle(func(w http.ResponseWriter, r *http.Request) bool {
		t.Errorf("the canary received %s %s", r.Method, r.URL)
		return false
	})
	return c
}

func TestRetryAfterIsHonoured(t *testing.T) {
	api := newFakeAPI(t, `{"a":1}`)
	base := startCaddy(t, "["+pollSSERoute("/events", fmt.Sprintf(
		`"upstream":%q,"interval":"100ms","max_backoff":"5s"`, api.URL))+"]")
	sc := openStream(t, http.DefaultClient, base+"/events", "")
	sc.next(5 * time.Second)
	api.setFault("429")
	sd := decodeStatus(t, sc.next(5*time.Second))
	if sd.Status != 429 || sd.RetryInMS != 1000 {
		t.Errorf("status %+v, want 429 with retry_in_ms 1000 (Retry-After: 1)", sd)
	}
	waitFor(t, 5*time.Second, "the poll after Retry-After", func() bool { return len(api.arrivals("429")) >= 2 })
	arrivals := api.arrivals("429")
	if gap := arrivals[1].Sub(arrivals[0]); gap < time.Second-5*time.Millisecond {
		t.Errorf("polled again %s after Retry-After: 1", gap)
	}
	api.set(`{"a":2}`)
	api.setFault("")
	if sd := decodeStatus(t, sc.next(5*time.Second)); sd.Upstream != "up" {
		t.Errorf("status %+v, want up", sd)
	}
	// The first success returns to the interval.
	n := len(api.arrivals(""))
	waitFor(t, 5*time.Second, "polls at the interval", func() bool { return len(api.arrivals("")) >= n+5 })
}

// TestStreamRefusedBeforeItsSnapshotEnds: the headers of a new topic's
// first subscriber go out before the upstream has answered; when the answer
// is a 401, the open stream ends without an event, on both paths a stream
// takes (a plain HTTP/1.1 stream taken off its goroutine, and an encoded one
// that keeps it), and the reconnect of the browser gets the 401, so that its
// EventSource stops.
func TestStreamRefusedBeforeItsSnapshotEnds(t *testing.T) {
	for _, path := range []string{"/plain", "/encoded"} {
		t.Run(path, func(t *testing.T) {
			api := newFakeAPI(t, `{"a":1}`)
			api.setStatus(http.StatusUnauthorized)
			// The first poll answers only when the test says.
			release := api.hold()
			// The default timeout, 10s: headers that waited for the
			// first answer would miss the client's 5s.
			base := startCaddy(t, `[{"match":[{"path":["/encoded"]}],"handle":[{"handler":"encode","encodings":{"gzip":{}}}]},`+
				pollSSERoute(path, fmt.Sprintf(`"upstream":%q,"interval":"100ms"`, api.URL))+"]")
			client := &http.Client{Transport: &http.Transport{ResponseHeaderTimeout: 5 * time.Second}}
			resp, err := client.Get(base + path)
			if err != nil {
				t.Fatalf("headers before the upstream's first answer: %v", err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK || resp.Uncompressed != (path == "/encoded") {
				t.Fatalf("status %d, uncompressed %v", resp.StatusCode, resp.Uncompressed)
			}
			br := bufio.NewReader(resp.Body)
			if ev, err := readEvent(br); err != nil || ev.retry == "" {
				t.Fatalf("first block %+v, %v; want the retry field", ev, err)
			}
			release() // the first poll: 401
			ended := make(chan error, 1)
			go func() {
				ev, err := readEvent(br)
				if err == nil {
					err = fmt.Errorf("got %+v", ev)
				} else if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
					err = nil
				}
				ended <- err
			}()
			select {
			case err := <-ended:
				if err != nil {
					t.Fatalf("the refused stream did not end cleanly: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the refused stream did not end")
			}
			if status, _ := getStatus(t, base+path, nil); status != http.StatusUnauthorized {
				t.Errorf("the reconnect got %d, want 401", status)
			}
		})
	}
}

// TestStreamToldOfAnOutageThenRefusedEnds: a stream that waits for its
// topic's first document, and has been told that the upstream is down,
// ends without another event when the upstream then refuses the topic's
// credentials, on both paths a stream takes, and the reconnect of its
// browser gets the 401.
func TestStreamToldOfAnOutageThenRefusedEnds(t *testing.T) {
	for _, path := range []string{"/plain", "/encoded"} {
		t.Run(path[1:], func(t *testing.T) {
			api := newFakeAPI(t, `{"a":1}`)
			api.setStatus(http.StatusServiceUnavailable)
			base := startCaddy(t, `[{"match":[{"path":["/encoded"]}],"handle":[{"handler":"encode","encodings":{"gzip":{}}}]},`+
				pollSSERoute(path, fmt.Sprintf(`"upstream":%q,"interval":"100ms","max_backoff":"100ms"`, api.URL))+"]")
			sc := openStream(t, http.DefaultClient, base+path, "")
			if sd := decodeStatus(t, sc.next(5*time.Second)); sd.Upstream != "down" || sd.Status != http.StatusServiceUnavailable {
				t.Fatalf("got %+v, want down with 503", sd)
			}
			api.setStatus(http.StatusUnauthorized)
			if ev, ok := sc.nextOrTimeout(10 * time.Second); ok {
				t.Fatalf("got %+v, want the stream to end", ev)
			}
			select {
			case <-sc.done:
			case <-time.After(time.Second):
				t.Fatal("the refused stream did not end")
			}
			if status, _ := getStatus(t, base+path, nil); status != http.StatusUnauthorized {
				t.Errorf("the reconnect got %d, want 401", status)
			}
		})
	}
}
