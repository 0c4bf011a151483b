package pollsse

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// reloadCaddy loads new routes into the running Caddy of startCaddy, as a
// config reload does.
func reloadCaddy(t *testing.T, base, routes string) {
	t.Helper()
	u, _ := url.Parse(base)
	port, _ := strconv.Atoi(u.Port())
	done := make(chan error, 1)
	go func() { done <- caddy.Load(caddyConfig(t, port, routes), false) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("reload: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("reload hung with streams open")
	}
}

// expectEnd waits for the stream to be closed by the server.
func expectEnd(t *testing.T, sc *streamClient) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case _, ok := <-sc.events:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatal("the stream of the old configuration did not end")
		}
	}
}

func TestReload(t *testing.T) {
	api := newFakeAPI(t, `{"v":0}`)
	route := func(fields string) string {
		return "[" + pollSSERoute("/events", fmt.Sprintf(`"upstream":%q,"interval":"100ms"%s`, api.URL, fields)) + "]"
	}
	base := startCaddy(t, route(""))
	sc := openStream(t, http.DefaultClient, base+"/events", "")
	sc.next(5 * time.Second)
	api.set(`{"v":1}`)
	last := sc.next(5 * time.Second)

	t.Run("a reload that keeps the topic's configuration keeps its ids", func(t *testing.T) {
		// retry and heartbeat shape streams, not topics.
		reloadCaddy(t, base, route(`,"retry":"4s","heartbeat":"20s"`))
		expectEnd(t, sc)
		resumed := openStream(t, http.DefaultClient, base+"/events", last.id)
		if ev, ok := resumed.nextOrTimeout(200 * time.Millisecond); ok {
			t.Fatalf("resuming with the latest id got %+v, want nothing until the next change", ev)
		}
		api.set(`{"v":2}`)
		ev := resumed.next(5 * time.Second)
		if ev.name != "patch" || !sameJSON(ev.data, `[{"op":"replace","path":"/v","value":2}]`) {
			t.Fatalf("after the reload got %+v, want the next patch", ev)
		}
		last = ev
		sc = resumed
	})
	t.Run("a reload that changes the topic's configuration starts afresh", func(t *testing.T) {
		reloadCaddy(t, base, route(`,"history":10`))
		expectEnd(t, sc)
		resumed := openStream(t, http.DefaultClient, base+"/events", last.id)
		if ev := resumed.next(5 * time.Second); ev.name != "snapshot" || ev.data != `{"v":2}` {
			t.Fatalf("after the reload got %+v, want a snapshot", ev)
		}
	})
}
