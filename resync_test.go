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
