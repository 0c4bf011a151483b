package pollsse

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestStreamProtocol(t *testing.T) {
	api := newFakeAPI(t, `{"a":1,"s":"x"}`)
	release := api.hold() // the first poll answers only when the test says
	// The default timeout, 10s: headers that waited for the first answer
	// would miss the client's 5s.
	base := startCaddy(t, "["+pollSSERoute("/events", fmt.Sprintf(`"upstream":%q,"interval":"100ms","retry":"2500ms"`, api.URL))+"]")

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
	release()

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
			release := api.hold()
			base := startCaddy(t, `[{"match":[{"path":["/encoded"]}],"handle":[{"handler":"encode","encodings":{"gzip":{}}}]},`+
				pollSSERoute(path, fmt.Sprintf(`"upstream":%q,"interval":"100ms","max_backoff":"100ms","heartbeat":"500ms","select":"/data"`, api.URL))+"]")

			early := openStream(t, http.DefaultClient, base+path, "")
			release()
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
			if strings.HasPrefix(p.name, "HTTP/2") || p.name == "HTTP/3" {
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

// TestAnyLastEventIDOrQuery: whatever a client sends as Last-Event-ID or in
// a query that no placeholder takes, it gets a stream that starts with a
// snapshot.
func TestAnyLastEventIDOrQuery(t *testing.T) {
	api := newFakeAPI(t, `{"a":1}`)
	base := startCaddy(t, "["+pollSSERoute("/events", fmt.Sprintf(`"upstream":%q,"interval":"100ms"`, api.URL))+"]")
	tests := []struct{ name, query, lastEventID string }{
		// Caddy itself answers 431 to request headers over 16 KB.
		{"a 12 KB id", "", strings.Repeat("7", 12<<10)},
		{"an id of many dashes", "", strings.Repeat("-", 300)},
		{"an id with an epoch and a huge position", "", "x-99999999999999999999999"},
		{"an id with position 0", "", "x-0"},
		{"an id with spaces and symbols", "", "  '\"<script>%00%ff\t-1 "},
		{"an id of non-ASCII text", "", "ünï©ødé-😀"},
		{"an id in the query", "?last_event_id=%ff%fe%00-1", ""},
		{"a 12 KB id in the query", "?last_event_id=" + strings.Repeat("9", 12<<10), ""},
		{"a malformed query", "?%zz=%&&=;;a=1&a=2&last_event_id", ""},
		{"an id in both", "?last_event_id=1-1", "2-2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sc := openStream(t, http.DefaultClient, base+"/events"+tt.query, tt.lastEventID)
			if sc.resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", sc.resp.StatusCode)
			}
			if ev := sc.next(5 * time.Second); ev.name != "snapshot" || ev.data != `{"a":1}` {
				t.Errorf("got %+v, want the snapshot", ev)
			}
		})
	}
}
