package pollsse

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// slowClient returns an HTTP client whose connections have a small receive
// buffer, so that a server writing to a client that stopped reading blocks
// after little data.
func slowClient() *http.Client {
	d := &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return limitSocket(rc, 4096, 0)
	}}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
}

// openPausable opens a stream that the test reads itself, event by event,
// and so can stop reading. The stream is cut after 30s.
func openPausable(t *testing.T, client *http.Client, url string) (*bufio.Reader, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := client.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	stop := func() { cancel(); resp.Body.Close() }
	t.Cleanup(stop)
	// No read of the test blocks for ever.
	watchdog := time.AfterFunc(30*time.Second, stop)
	t.Cleanup(func() { watchdog.Stop() })
	return bufio.NewReader(resp.Body), stop
}

// nextNamed reads events from br until one has a name.
func nextNamed(t *testing.T, br *bufio.Reader) sseEvent {
	t.Helper()
	for {
		ev, err := readEvent(br)
		if err != nil {
			t.Fatalf("reading the stream: %v", err)
		}
		if ev.name != "" {
			return ev
		}
	}
}

// bigDocument is a document of about 512 KB, half of which differs from
// that of another n, so that each change is a patch of about 256 KB (on
// loopback the kernel takes megabytes for a client that does not read
// before a write to it blocks), and only a resync sends a snapshot.
func bigDocument(n int) string {
	return fmt.Sprintf(`{"n":%d,"pad":%q,"static":%q}`, n, strings.Repeat(fmt.Sprintf("%08d", n), 32<<10), strings.Repeat("s", 256<<10))
}

func TestSlowSubscriberDoesNotDelayOthersAndIsDropped(t *testing.T) {
	api := newFakeAPI(t, bigDocument(0))
	base := startCaddy(t, "["+pollSSERoute("/events", fmt.Sprintf(`"upstream":%q,"interval":"100ms","heartbeat":"1h","write_timeout":"1s"`, api.URL))+"]")

	slow, _ := openPausable(t, slowClient(), base+"/events")
	if ev := nextNamed(t, slow); ev.name != "snapshot" {
		t.Fatalf("the slow client's first event is %+v", ev)
	}
	fast := openStream(t, http.DefaultClient, base+"/events", "")
	fast.next(5 * time.Second)

	// The slow client reads no more. Every change is about 256 KB, so its
	// socket is full after some; the other client gets each change as soon
	// as it is polled.
	for n := 1; n <= 40; n++ {
		api.set(bigDocument(n))
		start := time.Now()
		want := fmt.Sprintf(`"n":%d,`, n)
		for {
			ev := fast.next(5 * time.Second)
			if strings.Contains(ev.data, want) || strings.Contains(ev.data, fmt.Sprintf(`"value":%d}`, n)) {
				break
			}
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("change %d reached the reading client after %s", n, d)
		}
	}
	// The write to the slow client has blocked for the write timeout by
	// now: its connection is closed, and what it reads ends.
	waitFor(t, 5*time.Second, "the slow client's stream to end", func() bool { return streamGoroutines() == 1 })
	done := make(chan error, 1)
	go func() { _, err := io.Copy(io.Discard, slow); done <- err }()
	select {
	case err := <-done:
		if err == nil {
			t.Error("the slow client's stream ended with its last chunk; want it cut off")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the slow client's stream did not end")
	}
}

func TestLaggingSubscriberIsResyncedWithASnapshot(t *testing.T) {
	api := newFakeAPI(t, bigDocument(0))
	base := startCaddy(t, "["+pollSSERoute("/events", fmt.Sprintf(`"upstream":%q,"interval":"100ms","heartbeat":"1h","history":4,"write_timeout":"30s"`, api.URL))+"]")
	lagging, _ := openPausable(t, slowClient(), base+"/events")
	if ev := nextNamed(t, lagging); ev.name != "snapshot" {
		t.Fatalf("first event %+v", ev)
	}
	fast := openStream(t, http.DefaultClient, base+"/events", "")
	fast.next(5 * time.Second)
	// Far more changes than the history holds, while the client reads
	// nothing.
	const last = 20
	for n := 1; n <= last; n++ {
		api.set(bigDocument(n))
		fast.next(5 * time.Second)
	}
	// It reads again: what its socket held, then a snapshot of the latest
	// document rather than the changes it missed.
	deadline := time.Now().Add(10 * time.Second)
	for {
		ev := nextNamed(t, lagging)
		if ev.name == "snapshot" {
			if !strings.Contains(ev.data, fmt.Sprintf(`"n":%d,`, last)) {
				t.Fatalf("resynced with a snapshot of %.20s, want n=%d", ev.data, last)
			}
			break
		}
		if ev.name != "patch" {
			t.Fatalf("got a %s event", ev.name)
		}
		if time.Now().After(deadline) {
			t.Fatal("no snapshot of the latest document")
		}
	}
	// And then it is live again.
	api.set(bigDocument(last + 1))
	if ev := nextNamed(t, lagging); ev.name != "patch" || !strings.Contains(ev.data, fmt.Sprintf(`"value":%d}`, last+1)) {
		t.Fatalf("after the resync got %.100s", fmt.Sprint(ev))
	}
}

func TestDetachedStreamEndsCleanlyOnReload(t *testing.T) {
	api := newFakeAPI(t, `{"v":0}`)
	routes := func(retry string) string {
		return "[" + pollSSERoute("/events", fmt.Sprintf(`"upstream":%q,"interval":"100ms","retry":%q`, api.URL, retry)) + "]"
	}
	base := startCaddy(t, routes("3s"))
	sc := openStream(t, http.DefaultClient, base+"/events", "")
	sc.next(5 * time.Second)
	reloadCaddy(t, base, routes("4s"))
	expectEnd(t, sc)
	if err := <-sc.done; !errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("the stream ended with %v, want the end of a complete chunked body", err)
	}
}

// TestStreamEndsOnceItsPlaceIsFree: a stream that the server ends (here by
// a reload) gives its subscription back before its client sees the end, so
// that a client that reconnects at once, as EventSource does, is not
// refused by max_subscribers for the place that it held itself. The window
// between the two is too short to hit from outside, so the test holds the
// hub's lock, which giving the subscription back takes, across the reload:
// the stream must not end until the lock is released.
func TestStreamEndsOnceItsPlaceIsFree(t *testing.T) {
	api := newFakeAPI(t, `{"v":0}`)
	routes := func(retry string) string {
		return "[" + pollSSERoute("/events", fmt.Sprintf(`"upstream":%q,"interval":"100ms","retry":%q,"max_subscribers":1`, api.URL, retry)) + "]"
	}
	base := startCaddy(t, routes("3s"))
	sc := openStream(t, http.DefaultClient, base+"/events", "")
	if ev := sc.next(5 * time.Second); ev.name != "snapshot" {
		t.Fatalf("got %+v", ev)
	}
	var h *hub
	hubs.Range(func(_, v any) bool {
		if hv := v.(*hub); hv.cfg.Upstream == api.URL {
			h = hv
		}
		return true
	})
	if h == nil {
		t.Fatal("no hub polls the upstream")
	}

	h.mu.Lock()
	// A reload that fails the test must not leave the lock held for the
	// cleanup, which stops Caddy.
	unlock := sync.OnceFunc(h.mu.Unlock)
	defer unlock()
	// The new configuration differs only in retry: it keeps the hub, and
	// the old one's streams end.
	reloadCaddy(t, base, routes("4s"))
	select {
	case _, open := <-sc.events:
		if !open {
			t.Error("the stream ended while its subscription was still held")
		} else {
			t.Error("the stream sent an event after the reload")
		}
	case <-time.After(time.Second):
	}
	unlock()
	expectEnd(t, sc)

	again := openStream(t, http.DefaultClient, base+"/events", "")
	if again.resp.StatusCode != http.StatusOK {
		t.Fatalf("a reconnect at once got %s, want a stream", again.resp.Status)
	}
	if ev := again.next(5 * time.Second); ev.name != "snapshot" {
		t.Fatalf("the reconnect got %+v, want a snapshot", ev)
	}
}

// TestClientsLeaveAfterTheirDescriptorsWereReused: the streams that a
// reload ended free their sockets' descriptors, which the connections of
// the next streams get again (the lowest free number); the clients of those
// must still be seen leaving, and their streams end, whether the streams
// before them were ended by the server or by their clients.
func TestClientsLeaveAfterTheirDescriptorsWereReused(t *testing.T) {
	api := newFakeAPI(t, `{"v":0}`)
	routes := func(retry string) string {
		return "[" + pollSSERoute("/events", fmt.Sprintf(`"upstream":%q,"interval":"100ms","retry":%q,"heartbeat":"1h"`, api.URL, retry)) + "]"
	}
	base := startCaddy(t, routes("3s"))
	for round, retry := range []string{"4s", "5s", "6s"} {
		streams := openStreams(t, base+"/events", 5)
		waitFor(t, 5*time.Second, "the 5 streams watched", func() bool { return streamGoroutines() == 5 })
		if round%2 == 0 {
			// The server ends them.
			reloadCaddy(t, base, routes(retry))
			for _, sc := range streams {
				expectEnd(t, sc)
			}
		} else {
			for _, sc := range streams {
				sc.close()
			}
		}
		waitFor(t, 5*time.Second, "every stream of the round to end", func() bool { return streamGoroutines() == 0 })
	}
	// And the clients of streams that the next connections open leave.
	streams := openStreams(t, base+"/events", 5)
	waitFor(t, 5*time.Second, "the 5 streams watched", func() bool { return streamGoroutines() == 5 })
	for _, sc := range streams[:3] {
		sc.close()
	}
	waitFor(t, 5*time.Second, "the streams of the clients that left to end", func() bool { return streamGoroutines() == 2 })
	api.set(`{"v":1}`)
	for _, sc := range streams[3:] {
		if ev := sc.next(5 * time.Second); ev.name != "patch" {
			t.Fatalf("a client that stayed got %+v", ev)
		}
	}
}

// TestDetachedResumeFromFarBackIsSentWhole resumes a detached stream from
// more events back than one read of the log takes (maxFramesPerWrite), with
// the upstream unchanged from then on and the heartbeat an hour away:
// nothing but the resume itself can make the stream write, and it must
// send every event up to the latest.
func TestDetachedResumeFromFarBackIsSentWhole(t *testing.T) {
	const events = maxFramesPerWrite + 16
	var mu sync.Mutex
	version, growing := 0, true
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		if growing {
			version++
		}
		v := version
		mu.Unlock()
		fmt.Fprintf(w, `{"v":%d}`, v)
	}))
	t.Cleanup(upstream.Close)
	base := startCaddy(t, "["+pollSSERoute("/events", fmt.Sprintf(
		`"upstream":%q,"interval":"100ms","history":1000,"heartbeat":"1h"`, upstream.URL))+"]")

	follower := openStream(t, http.DefaultClient, base+"/events", "")
	snapshot := follower.next(10 * time.Second)
	if snapshot.name != "snapshot" {
		t.Fatalf("the stream began with %+v", snapshot)
	}
	var last sseEvent
	for n := 0; n < events; n++ {
		last = follower.next(10 * time.Second)
	}
	mu.Lock()
	growing = false
	final := fmt.Sprintf(`[{"op":"replace","path":"/v","value":%d}]`, version)
	mu.Unlock()
	patches := events
	for last.data != final {
		last = follower.next(10 * time.Second)
		patches++
	}

	resumed := openStream(t, http.DefaultClient, base+"/events", snapshot.id)
	for n := 1; n <= patches; n++ {
		ev, ok := resumed.nextOrTimeout(10 * time.Second)
		if !ok {
			t.Fatalf("the resumed stream got %d of the %d events after its id, and then nothing", n-1, patches)
		}
		if ev.name != "patch" {
			t.Fatalf("event %d of the resumed stream is %+v, want a patch", n, ev)
		}
		if n == patches && (ev.id != last.id || ev.data != last.data) {
			t.Fatalf("the resumed stream's last event is %+v, want %+v", ev, last)
		}
	}
}
