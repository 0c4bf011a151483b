package pollsse

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestStreamProtocol(t *testing.T) {
	api := newFakeAPI(t, `{"a":1,"s":"x"}`)
	release := make(chan struct{})
	var once sync.Once
	api.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release // the first poll answers only when the test says
		api.serve(w, r)
	})
	// The default timeout, 10s: headers that waited for the first answer
	// would miss the client's 5s.
	base := startCaddy(t, "["+pollSSERoute("/events", fmt.Sprintf(`"upstream":%q,"interval":"100ms","retry":"2500ms"`, api.URL))+"]")
	t.Cleanup(func() { once.Do(func() { close(release) }) })

	client := &http.Client{Transport: &http.Transport{ResponseHeaderTimeout: 5 * time.Second}}
	resp, err := client.Get(base + "/events")
	if err != nil {
		t.Fatalf("headers before the upstream's first answer: %v", err)
	}
	defer resp.Body.Close()
	// Headers and the retry field arrive before the upstream has answered.
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	for name, want := range map[string]string{
		"Content-Type":      "text/event-stream",
		"Cache-Control":     "no-cache",
		"X-Accel-Buffering": "no",
	} {
		if got := resp.Header.Get(name); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	br := bufio.NewReader(resp.Body)
	first, err := readEvent(br)
	if err != nil || first.retry != "2500" || first.name != "" || first.data != "" {
		t.Fatalf("first block = %+v, %v; want only retry: 2500", first, err)
	}
	once.Do(func() { close(release) })

	snap, err := readEvent(br)
	if err != nil || snap.name != "snapshot" || snap.data != `{"a":1,"s":"x"}` || snap.id == "" {
		t.Fatalf("second block = %+v, %v; want the snapshot", snap, err)
	}
	api.set(`{"a":2,"s":"x"}`)
	patch, err := readEvent(br)
	if err != nil || patch.name != "patch" || !sameJSON(patch.data, `[{"op":"replace","path":"/a","value":2}]`) {
		t.Fatalf("third block = %+v, %v; want a patch", patch, err)
	}
	if patch.id <= snap.id && len(patch.id) <= len(snap.id) {
		t.Errorf("patch id %q does not come after snapshot id %q", patch.id, snap.id)
	}
	for _, id := range []string{snap.id, patch.id} {
		if strings.ContainsAny(id, " \r\n\x00") || strings.ContainsFunc(id, func(r rune) bool { return r > 127 }) {
			t.Errorf("id %q is not ASCII without spaces", id)
		}
	}
}

func TestUnchangedPollsSendNothing(t *testing.T) {
	api := newFakeAPI(t, `{"a":1}`)
	base := startCaddy(t, "["+pollSSERoute("/events", fmt.Sprintf(`"upstream":%q,"interval":"100ms"`, api.URL))+"]")
	sc := openStream(t, http.DefaultClient, base+"/events", "")
	sc.next(5 * time.Second)
	// The same document in other bytes is no change either.
	api.set("{ \"a\" : 1 }\n")
	start := api.count.Load()
	waitFor(t, 5*time.Second, "5 more polls", func() bool { return api.count.Load() > start+5 })
	if ev, ok := sc.nextOrTimeout(100 * time.Millisecond); ok {
		t.Fatalf("unchanged polls sent %+v", ev)
	}
}

func TestResume(t *testing.T) {
	api := newFakeAPI(t, `{"v":0}`)
	base := startCaddy(t, "["+pollSSERoute("/events", fmt.Sprintf(`"upstream":%q,"interval":"100ms","history":4`, api.URL))+"]")
	sc := openStream(t, http.DefaultClient, base+"/events", "")
	snap := sc.next(5 * time.Second)
	var ids []string
	for v := 1; v <= 3; v++ {
		api.set(fmt.Sprintf(`{"v":%d}`, v))
		ev := sc.next(5 * time.Second)
		if ev.name != "patch" {
			t.Fatalf("got %+v", ev)
		}
		ids = append(ids, ev.id)
	}
	sc.close()

	tests := []struct {
		name     string
		header   string
		query    string
		wantName string
		wantData string
	}{
		{"a known id replays the events after it", ids[0], "", "patch", `[{"op":"replace","path":"/v","value":2}]`},
		{"the query parameter works like the header", "", ids[1], "patch", `[{"op":"replace","path":"/v","value":3}]`},
		{"the header wins over the query parameter", ids[0], ids[1], "patch", `[{"op":"replace","path":"/v","value":2}]`},
		{"an unknown id gets a snapshot", "nope-1", "", "snapshot", `{"v":3}`},
		{"an oversized id gets a snapshot", strings.Repeat("9", 5000), "", "snapshot", `{"v":3}`},
		{"an id with odd bytes gets a snapshot", "\xff\xfe-1", "", "snapshot", `{"v":3}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url := base + "/events"
			if tt.query != "" {
				url += "?last_event_id=" + tt.query
			}
			sc := openStream(t, http.DefaultClient, url, tt.header)
			ev := sc.next(5 * time.Second)
			if ev.name != tt.wantName || !sameJSON(ev.data, tt.wantData) {
				t.Errorf("first event %+v, want %s %s", ev, tt.wantName, tt.wantData)
			}
		})
	}

	t.Run("the latest id gets nothing until the next change", func(t *testing.T) {
		sc := openStream(t, http.DefaultClient, base+"/events", ids[2])
		if ev, ok := sc.nextOrTimeout(200 * time.Millisecond); ok {
			t.Fatalf("got %+v before any change", ev)
		}
		api.set(`{"v":4}`)
		if ev := sc.next(5 * time.Second); ev.name != "patch" || !sameJSON(ev.data, `[{"op":"replace","path":"/v","value":4}]`) {
			t.Fatalf("got %+v", ev)
		}
	})
	t.Run("an id older than the history gets a snapshot", func(t *testing.T) {
		for v := 5; v <= 10; v++ {
			api.set(fmt.Sprintf(`{"v":%d}`, v))
			waitFor(t, 5*time.Second, "the change", func() bool {
				sc := openStream(t, http.DefaultClient, base+"/events", "")
				defer sc.close()
				return sc.next(5*time.Second).data == fmt.Sprintf(`{"v":%d}`, v)
			})
		}
		sc := openStream(t, http.DefaultClient, base+"/events", snap.id)
		if ev := sc.next(5 * time.Second); ev.name != "snapshot" || ev.data != `{"v":10}` {
			t.Fatalf("got %+v", ev)
		}
	})
}

func TestStatusEventsOncePerTransition(t *testing.T) {
	api := newFakeAPI(t, `{"a":1}`)
	// max_backoff as short as the interval: failed polls go on at the interval.
	base := startCaddy(t, "["+pollSSERoute("/events", fmt.Sprintf(`"upstream":%q,"interval":"100ms","max_backoff":"100ms"`, api.URL))+"]")
	sc := openStream(t, http.DefaultClient, base+"/events", "")
	if ev := sc.next(5 * time.Second); ev.name != "snapshot" {
		t.Fatalf("got %+v", ev)
	}
	api.setStatus(http.StatusServiceUnavailable)
	down := sc.next(5 * time.Second)
	topic := decodeStatus(t, down).Topic
	if len(topic) != 12 || down.data != `{"upstream":"down","topic":"`+topic+`","status":503,"error":"upstream answered 503 Service Unavailable","retry_in_ms":100}` {
		t.Fatalf("got %+v, want a down status without id", down)
	}
	start := api.count.Load()
	waitFor(t, 5*time.Second, "more failed polls", func() bool { return api.count.Load() > start+3 })
	// A body that is not JSON is a failure too, and the same outage.
	api.setStatus(http.StatusOK)
	api.set(`<html>maintenance</html>`)
	start = api.count.Load()
	waitFor(t, 5*time.Second, "more failed polls", func() bool { return api.count.Load() > start+3 })
	// A subscriber that arrives during the outage is told after its snapshot.
	late := openStream(t, http.DefaultClient, base+"/events", "")
	if ev := late.next(5 * time.Second); ev.name != "snapshot" || ev.data != `{"a":1}` {
		t.Fatalf("late subscriber got %+v", ev)
	}
	if ev := late.next(5 * time.Second); ev.name != "status" || !strings.Contains(ev.data, `"down"`) {
		t.Fatalf("late subscriber got %+v, want the down status", ev)
	}
	api.set(`{"a":2}`)
	for _, c := range []*streamClient{sc, late} {
		if ev := c.next(5 * time.Second); ev.name != "status" || ev.data != `{"upstream":"up","topic":"`+topic+`"}` {
			t.Fatalf("got %+v, want up", ev)
		}
		if ev := c.next(5 * time.Second); ev.name != "patch" {
			t.Fatalf("got %+v, want the patch", ev)
		}
	}
	if ev, ok := sc.nextOrTimeout(100 * time.Millisecond); ok {
		t.Fatalf("extra event %+v", ev)
	}
}

// TestSubscribersWaitingForTheFirstDocumentAreToldWhy: while no poll of a
// topic has succeeded (here a select that points at nothing), its
// subscribers are told so with the down status and its reason, once: those
// already waiting when the polls fail get it then, those that come later at
// once. When the first document comes, each gets the up status and then the
// snapshot, and goes on as any subscriber, on both paths a stream takes (a
// plain HTTP/1.1 stream taken off its goroutine, an encoded one that keeps
// it).
func TestSubscribersWaitingForTheFirstDocumentAreToldWhy(t *testing.T) {
	for _, path := range []string{"/plain", "/encoded"} {
		t.Run(path[1:], func(t *testing.T) {
			api := newFakeAPI(t, `{"items":[1]}`)
			// The first poll answers only when the test says.
			release := make(chan struct{})
			var first atomic.Bool
			var once sync.Once
			api.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if first.CompareAndSwap(false, true) {
					<-release
				}
				api.serve(w, r)
			})
			t.Cleanup(func() { once.Do(func() { close(release) }) })
			base := startCaddy(t, `[{"match":[{"path":["/encoded"]}],"handle":[{"handler":"encode","encodings":{"gzip":{}}}]},`+
				pollSSERoute(path, fmt.Sprintf(`"upstream":%q,"interval":"100ms","max_backoff":"100ms","heartbeat":"500ms","select":"/data"`, api.URL))+"]")

			early := openStream(t, http.DefaultClient, base+path, "")
			once.Do(func() { close(release) })
			down := early.next(5 * time.Second)
			sd := decodeStatus(t, down)
			if sd.Upstream != "down" || !strings.Contains(sd.Error, `select "/data"`) || len(sd.Topic) != 12 {
				t.Fatalf("a waiting subscriber got %+v, want down with the select's error", sd)
			}
			start := api.count.Load()
			waitFor(t, 5*time.Second, "more failed polls", func() bool { return api.count.Load() > start+5 })
			late := openStream(t, http.DefaultClient, base+path, "")
			if ev := late.next(5 * time.Second); ev != down {
				t.Fatalf("a subscriber that came during the failures got %+v, want %+v", ev, down)
			}
			for _, sc := range []*streamClient{early, late} {
				if ev, ok := sc.nextOrTimeout(150 * time.Millisecond); ok {
					t.Fatalf("got %+v, want heartbeats only while the polls fail", ev)
				}
			}

			api.set(`{"data":{"a":1}}`)
			var snap sseEvent
			for _, sc := range []*streamClient{early, late} {
				if sd := decodeStatus(t, sc.next(5*time.Second)); sd.Upstream != "up" || sd.Topic != decodeStatus(t, down).Topic {
					t.Fatalf("got %+v, want up", sd)
				}
				if snap = sc.next(5 * time.Second); snap.name != "snapshot" || snap.data != `{"a":1}` {
					t.Fatalf("got %+v, want the first snapshot after the up status", snap)
				}
			}
			api.set(`{"data":{"a":2}}`)
			for _, sc := range []*streamClient{early, late} {
				if ev := sc.next(5 * time.Second); ev.name != "patch" || !sameJSON(ev.data, `[{"op":"replace","path":"/a","value":2}]`) {
					t.Fatalf("got %+v, want the patch", ev)
				}
			}
			// After the first document, a new subscriber starts with the
			// snapshot, and the snapshot's id resumes exactly.
			if ev := openStream(t, http.DefaultClient, base+path, "").next(5 * time.Second); ev.name != "snapshot" || ev.data != `{"a":2}` {
				t.Errorf("a new subscriber got %+v, want the snapshot", ev)
			}
			if ev := openStream(t, http.DefaultClient, base+path, snap.id).next(5 * time.Second); ev.name != "patch" || !sameJSON(ev.data, `[{"op":"replace","path":"/a","value":2}]`) {
				t.Errorf("resuming from the first snapshot got %+v, want the patch", ev)
			}
		})
	}
}

func TestHeartbeat(t *testing.T) {
	api := newFakeAPI(t, `{"a":1}`)
	base := startCaddy(t, "["+pollSSERoute("/events", fmt.Sprintf(`"upstream":%q,"interval":"100ms","heartbeat":"80ms"`, api.URL))+"]")
	sc := openStream(t, http.DefaultClient, base+"/events", "")
	sc.next(5 * time.Second)
	beats := 0
	for beats < 3 {
		select {
		case ev := <-sc.events:
			if !ev.comment {
				t.Fatalf("got %+v, want heartbeats only", ev)
			}
			beats++
		case <-time.After(5 * time.Second):
			t.Fatalf("%d heartbeats in 5s", beats)
		}
	}
}

func TestManySubscribersOnePoller(t *testing.T) {
	// Two topics in one Caddy, measured over the same window, so that the
	// machine's load and the interval's jitter weigh on both alike.
	const window = 2 * time.Second
	one, hundred := newFakeAPI(t, `{"a":1}`), newFakeAPI(t, `{"a":1}`)
	base := startCaddy(t, "["+
		pollSSERoute("/one", fmt.Sprintf(`"upstream":%q,"interval":"100ms"`, one.URL))+","+
		pollSSERoute("/hundred", fmt.Sprintf(`"upstream":%q,"interval":"100ms"`, hundred.URL))+"]")
	sc := openStream(t, http.DefaultClient, base+"/one", "")
	sc.next(5 * time.Second)
	defer sc.close()
	for range 100 {
		sc := openStream(t, http.DefaultClient, base+"/hundred", "")
		sc.next(5 * time.Second)
		defer sc.close()
	}
	startOne, startHundred := one.count.Load(), hundred.count.Load()
	time.Sleep(window)
	n1, n100 := one.count.Load()-startOne, hundred.count.Load()-startHundred
	t.Logf("upstream requests in %s at a 100ms interval: %d for 1 subscriber, %d for 100", window, n1, n100)
	for _, n := range []int64{n1, n100} {
		if n < 15 || n > 22 {
			t.Errorf("%d requests in %s, want about 20", n, window)
		}
	}
	if d := n100 - n1; d < -2 || d > 2 {
		t.Errorf("100 subscribers caused %d requests, 1 caused %d", n100, n1)
	}
}

func TestAtMostOneRequestInFlight(t *testing.T) {
	api := newFakeAPI(t, `{"a":1}`)
	// Each answer takes longer than the interval.
	api.setDelay(250 * time.Millisecond)
	base := startCaddy(t, "["+pollSSERoute("/events", fmt.Sprintf(`"upstream":%q,"interval":"100ms"`, api.URL))+"]")
	for range 20 {
		sc := openStream(t, http.DefaultClient, base+"/events", "")
		defer sc.close()
	}
	waitFor(t, 5*time.Second, "5 polls", func() bool { return api.count.Load() >= 5 })
	if m := api.maxInFlight.Load(); m != 1 {
		t.Errorf("%d upstream requests in flight at once, want 1", m)
	}
}

func TestIdleTopicStops(t *testing.T) {
	api := newFakeAPI(t, `{"a":1}`)
	base := startCaddy(t, "["+pollSSERoute("/events", fmt.Sprintf(`"upstream":%q,"interval":"100ms","idle_timeout":"300ms"`, api.URL))+"]")
	sc := openStream(t, http.DefaultClient, base+"/events", "")
	first := sc.next(5 * time.Second)
	sc.close()
	left := time.Now()
	// Polling goes on for the idle timeout, then stops.
	var stopped int64
	waitFor(t, 5*time.Second, "polling to stop", func() bool {
		n := api.count.Load()
		time.Sleep(300 * time.Millisecond) // longer than an interval
		stopped = api.count.Load()
		return n == stopped
	})
	if since := time.Since(left); since < 300*time.Millisecond {
		t.Errorf("polling stopped %s after the last subscriber left, before the idle timeout", since)
	}
	// A new subscriber starts the topic again, with ids of a new epoch, so
	// the old id is unknown.
	sc = openStream(t, http.DefaultClient, base+"/events", first.id)
	ev := sc.next(5 * time.Second)
	if ev.name != "snapshot" || ev.id == first.id {
		t.Errorf("after the idle stop got %+v, want a snapshot with a new id", ev)
	}
	if api.count.Load() <= stopped {
		t.Error("the new subscriber did not start polling again")
	}
}

func TestUpstreamRequest(t *testing.T) {
	api := newFakeAPI(t, `{"a":1}`)
	base := startCaddy(t, "["+pollSSERoute("/events", fmt.Sprintf(
		`"upstream":%q,"header_up":{"X-Api-Key":["k1"],"Accept-Language":["en","fr"]}`, api.URL+"/items/{http.request.uri.query.id}?page={http.request.uri.query.page}"))+"]")
	req, _ := http.NewRequest(http.MethodGet, base+"/events?id=a%20b/c&page=1%262&other=x", nil)
	req.Header.Set("Authorization", "Bearer user-secret")
	req.Header.Set("Cookie", "session=user-secret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	waitFor(t, 5*time.Second, "a poll", func() bool { return api.count.Load() > 0 })
	got := api.requestLog()[0]
	if got.Method != http.MethodGet || got.URL.RawPath+"?"+got.URL.RawQuery != "/items/a%20b/c?page=1%262" && got.URL.EscapedPath()+"?"+got.URL.RawQuery != "/items/a%20b/c?page=1%262" {
		t.Errorf("upstream got %s %s", got.Method, got.URL)
	}
	if got.Header.Get("Accept") != "application/json" || got.Header.Get("X-Api-Key") != "k1" || strings.Join(got.Header.Values("Accept-Language"), ",") != "en,fr" {
		t.Errorf("upstream got headers %v", got.Header)
	}
	for name, values := range got.Header {
		if strings.Contains(strings.Join(values, " "), "user-secret") {
			t.Errorf("the subscriber's %s reached the upstream", name)
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
	time.Sleep(100 * time.Millisecond)
	if n := api.count.Load(); n != 0 {
		t.Errorf("the upstream received %d requests", n)
	}
}

// TestMethodNotAllowed: a stream is read with GET. HEAD gets the headers a
// stream starts with and OPTIONS the methods, neither opening a stream nor
// polling; other methods get 405 with the reason.
func TestMethodNotAllowed(t *testing.T) {
	api := newFakeAPI(t, `{"a":1}`)
	base := startCaddy(t, "["+pollSSERoute("/events", fmt.Sprintf(`"upstream":%q`, api.URL))+"]")
	do := func(method string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(method, base+"/events", strings.NewReader("x"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("%s: reading the body: %v", method, err)
		}
		return resp, string(body)
	}
	for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodDelete, "PATCH"} {
		resp, body := do(method)
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD, OPTIONS" ||
			body != "method "+method+": a stream is read with GET\n" {
			t.Errorf("%s: %d, Allow %q, body %q", method, resp.StatusCode, resp.Header.Get("Allow"), body)
		}
	}
	if resp, body := do(http.MethodHead); resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" || body != "" {
		t.Errorf("HEAD: %d, Content-Type %q, body %q", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	if resp, body := do(http.MethodOptions); resp.StatusCode != http.StatusNoContent || resp.Header.Get("Allow") != "GET, HEAD, OPTIONS" || body != "" {
		t.Errorf("OPTIONS: %d, Allow %q, body %q", resp.StatusCode, resp.Header.Get("Allow"), body)
	}
	if n := streamGoroutines(); n != 0 {
		t.Errorf("%d streams open", n)
	}
	if n := api.count.Load(); n != 0 {
		t.Errorf("the upstream received %d requests", n)
	}
}

// streamGoroutines counts the streams being served: on a goroutine of
// their own, or taken off it (fanout.go), each with the goroutine that
// watches for its client leaving.
func streamGoroutines() int {
	// A dump cut at the buffer's end would miss goroutines.
	buf := make([]byte, 1<<20)
	for n := runtime.Stack(buf, true); n == len(buf); n = runtime.Stack(buf, true) {
		buf = make([]byte, 2*len(buf))
	}
	stacks := string(buf[:runtime.Stack(buf, true)])
	return strings.Count(stacks, "caddy-pollsse.(*Handler).stream(") + strings.Count(stacks, "caddy-pollsse.(*connStream).watch(")
}

func TestClientDisconnectEndsItsStream(t *testing.T) {
	api := newFakeAPI(t, `{"a":1}`)
	base := startCaddy(t, "["+pollSSERoute("/events", fmt.Sprintf(`"upstream":%q,"interval":"100ms","heartbeat":"1h"`, api.URL))+"]")
	streams := openStreams(t, base+"/events", 10)
	if n := streamGoroutines(); n != 10 {
		t.Fatalf("%d stream goroutines for 10 clients", n)
	}
	for _, sc := range streams[:7] {
		sc.close()
	}
	// The server notices a disconnect on its next write or when the
	// connection's context ends; a change makes it write.
	api.set(`{"a":2}`)
	waitFor(t, 5*time.Second, "the streams of the disconnected clients to end", func() bool { return streamGoroutines() == 3 })
	for _, sc := range streams[7:] {
		if ev := sc.next(5 * time.Second); ev.name != "patch" {
			t.Fatalf("a remaining client got %+v", ev)
		}
	}
}

// TestStreamRequestWithABodyIsRefused: an EventSource's GET has no body,
// on any protocol, and a GET that has one is refused. (On HTTP/1.1 Caddy
// would arm a deadline for reading it on the connection that the stream
// takes over, and cut the stream a minute later.) An HTTP/2 or HTTP/3
// request whose headers do not end the request, of unknown length, is
// not taken for one with a body.
func TestStreamRequestWithABodyIsRefused(t *testing.T) {
	api := newFakeAPI(t, `{"a":1}`)
	paths := startCaddyOnEveryPath(t, fmt.Sprintf(`"upstream":%q,"heartbeat":"1h"`, api.URL))
	get := func(t *testing.T, p streamPath, body io.Reader, length int64) *http.Response {
		t.Helper()
		// Reading what a stream sends ends.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		t.Cleanup(cancel)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.url, body)
		req.ContentLength = length
		req.Header.Set("Accept", "text/event-stream")
		resp, err := p.client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	for _, p := range paths {
		t.Run(p.name, func(t *testing.T) {
			t.Run("a body is refused", func(t *testing.T) {
				resp := get(t, p, strings.NewReader(`{"a":1}`), 7)
				body, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Content-Type") != "text/plain; charset=utf-8" ||
					!strings.Contains(string(body), "body") {
					t.Errorf("got %d %q %q, want 400 saying why", resp.StatusCode, resp.Header.Get("Content-Type"), body)
				}
			})
			if strings.Contains(p.name, "HTTP/1.1") {
				t.Run("a chunked body is refused", func(t *testing.T) {
					if resp := get(t, p, strings.NewReader(`{"a":1}`), -1); resp.StatusCode != http.StatusBadRequest {
						t.Errorf("got %d, want 400", resp.StatusCode)
					}
				})
			}
			isStream := func(t *testing.T, resp *http.Response) {
				t.Helper()
				if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
					t.Errorf("got %d %q, want a stream", resp.StatusCode, resp.Header.Get("Content-Type"))
				}
			}
			t.Run("no body streams", func(t *testing.T) { isStream(t, get(t, p, nil, 0)) })
			if p.name == "HTTP/2" || p.name == "HTTP/3" {
				// The request's headers go out at once, and its end
				// once the answer has come.
				t.Run("headers that do not end the request stream", func(t *testing.T) {
					body, end := io.Pipe()
					defer end.Close()
					isStream(t, get(t, p, body, -1))
				})
			}
		})
	}
}
