package pollsse

import (
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestSubscriberBehindOnlyStatusEventsGetsNoSecondSnapshot has a subscriber
// on every path fall behind the history while the upstream flaps and its
// document stays the same, so that every entry it missed is a status event:
// it gets the latest status, and not again the snapshot it has, with the
// same id. Ids within a stream never repeat. It holds for the memory store
// and for the mirror of the redis store alike.
func TestSubscriberBehindOnlyStatusEventsGetsNoSecondSnapshot(t *testing.T) {
	// Larger than the kernel buffers of a loopback connection hold, so
	// that the write of the snapshot waits while the client reads nothing.
	api := newFakeAPI(t, fmt.Sprintf(`{"pad":%q}`, strings.Repeat("x", 6<<20)))
	var polls atomic.Int64
	api.handle(func(w http.ResponseWriter, r *http.Request) bool {
		// The first poll succeeds, then they fail and succeed in turn:
		// a status event each, and never another document.
		if polls.Add(1)%2 == 0 {
			http.Error(w, "flap", http.StatusServiceUnavailable)
			return true
		}
		return false
	})
	fields := fmt.Sprintf(`"upstream":%q,"interval":"100ms","max_backoff":"100ms","history":4,"heartbeat":"1h","write_timeout":"30s"`, api.URL)
	for _, store := range []string{"memory", "redis"} {
		t.Run(store, func(t *testing.T) {
			fields := fields
			// Each store's topic begins with a document.
			polls.Store(0)
			if store == "redis" {
				r := startRedis(t)
				fields += fmt.Sprintf(`,"store":{"module":"redis","url":%q,"lease":"1s"}`, r.url())
			}
			for _, path := range startCaddyOnEveryPath(t, fields) {
				t.Run(path.name, func(t *testing.T) {
					br, _ := openPausable(t, path.client(), path.url)
					// Meanwhile the upstream flaps more than the
					// history holds.
					start := polls.Load()
					waitFor(t, 10*time.Second, "polls beyond the history", func() bool { return polls.Load() > start+12 })
					first := nextNamed(t, br)
					if first.name != "snapshot" {
						t.Fatalf("the stream began with %+v", first)
					}
					for range 6 {
						ev := nextNamed(t, br)
						if ev.hasID && ev.id == first.id {
							t.Fatalf("the stream sent %s %s again after falling behind", ev.name, ev.id)
						}
						if ev.name != "status" {
							t.Fatalf("after falling behind, the stream sent %+v; the document never changed", ev)
						}
					}
				})
			}
		})
	}
}

// TestLogThatLostItsDocumentSendsUnreadEventsOnce: when a log's document is
// gone behind a subscriber that has events left to read (the redis store's
// mirror, once Redis has lost the topic's keys), the subscriber reads them
// once and then waits for the next document; it never reads them again.
func TestLogThatLostItsDocumentSendsUnreadEventsOnce(t *testing.T) {
	l := newLocalLog(8)
	l.mu.Lock()
	l.pushDocument("e-1", []byte(`{"v":1}`), "", nil)
	l.mu.Unlock()
	_, at, _ := l.read(0, make([]frame, 0, 64))
	l.mu.Lock()
	l.pushDocument("e-2", []byte(`{"v":2}`), eventPatch, []byte(`[{"op":"replace","path":"/v","value":2}]`))
	l.pushStatus([]byte(`{"upstream":"down"}`), true)
	l.pushStatus([]byte(`{"upstream":"up"}`), false)
	// What the mirror does when Redis holds no document of the topic.
	l.push(entry{})
	l.snap = nil
	l.mu.Unlock()
	var got []string
	for range 10 {
		frames, next, _ := l.read(at, make([]frame, 0, 64))
		if len(frames) == 0 {
			break
		}
		for _, f := range frames {
			for _, ev := range parseFrames(t, f.bytes) {
				got = append(got, ev.name+" "+ev.data)
			}
		}
		at = next
	}
	want := []string{`patch [{"op":"replace","path":"/v","value":2}]`, `status {"upstream":"down"}`, `status {"upstream":"up"}`}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("the subscriber read\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// Then the next document, as a snapshot.
	l.mu.Lock()
	l.pushDocument("f-1", []byte(`{"v":3}`), "", nil)
	l.mu.Unlock()
	frames, _, _ := l.read(at, make([]frame, 0, 64))
	if len(frames) != 1 || frames[0].kind != kindSnapshot {
		t.Fatalf("after the next document the subscriber read %d frames, want its snapshot", len(frames))
	}
}
