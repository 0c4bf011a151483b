package pollsse

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestMaxTopics(t *testing.T) {
	api := newFakeAPI(t, `{"v":0}`)
	base, logs := startCaddyLogging(t, "["+pollSSERoute("/events", fmt.Sprintf(
		`"upstream":%q,"interval":"100ms","max_topics":2,"retry":"2500ms"`, api.URL+"/items/{http.request.uri.query.id}"))+"]")
	a := openStream(t, http.DefaultClient, base+"/events?id=a", "")
	b := openStream(t, http.DefaultClient, base+"/events?id=b", "")
	a.next(5 * time.Second)
	b.next(5 * time.Second)

	status, hdr := getStatus(t, base+"/events?id=c", nil)
	if status != http.StatusServiceUnavailable || hdr.Get("Retry-After") != "3" {
		t.Errorf("a third topic: status %d, Retry-After %q; want 503 and 3", status, hdr.Get("Retry-After"))
	}
	// A subscriber of an existing topic is no new topic.
	a2 := openStream(t, http.DefaultClient, base+"/events?id=a", "")
	if a2.next(5*time.Second).name != "snapshot" {
		t.Error("a second subscriber of an existing topic was refused")
	}
	if !strings.Contains(logs(), `"limit":"max_topics"`) {
		t.Errorf("no log line names max_topics:\n%s", logs())
	}
	// The existing streams carry on.
	api.set(`{"v":1}`)
	for _, sc := range []*streamClient{a, b} {
		if ev := sc.next(5 * time.Second); ev.name != "patch" {
			t.Errorf("an existing stream got %+v, want the patch", ev)
		}
	}
	// A topic without subscribers makes room for a new one.
	a2.next(5 * time.Second)
	a.close()
	a2.close()
	waitFor(t, 5*time.Second, "room for a new topic", func() bool {
		status, _ := getStatus(t, base+"/events?id=c", nil)
		return status == http.StatusOK
	})
	// Making room did not touch the topic that has a subscriber.
	api.set(`{"v":2}`)
	if ev := b.next(5 * time.Second); ev.name != "patch" {
		t.Errorf("b got %+v, want the patch", ev)
	}
}

func TestMaxSubscribers(t *testing.T) {
	api := newFakeAPI(t, `{"v":0}`)
	base, logs := startCaddyLogging(t, "["+pollSSERoute("/events", fmt.Sprintf(
		`"upstream":%q,"interval":"100ms","max_subscribers":3`, api.URL+"/items/{http.request.uri.query.id}"))+"]")
	var open []*streamClient
	for _, id := range []string{"a", "a", "b"} {
		sc := openStream(t, http.DefaultClient, base+"/events?id="+id, "")
		sc.next(5 * time.Second)
		open = append(open, sc)
	}
	for _, id := range []string{"a", "c"} {
		status, hdr := getStatus(t, base+"/events?id="+id, nil)
		if status != http.StatusServiceUnavailable || hdr.Get("Retry-After") == "" {
			t.Errorf("a fourth subscriber of %s: status %d, Retry-After %q; want 503 with Retry-After", id, status, hdr.Get("Retry-After"))
		}
	}
	if !strings.Contains(logs(), `"limit":"max_subscribers"`) || !strings.Contains(logs(), "subscribers refused") {
		t.Errorf("no log line names max_subscribers:\n%s", logs())
	}
	api.set(`{"v":1}`)
	for _, sc := range open {
		if ev := sc.next(5 * time.Second); ev.name != "patch" {
			t.Errorf("an existing stream got %+v, want the patch", ev)
		}
	}
	open[0].close()
	waitFor(t, 5*time.Second, "room for a subscriber", func() bool {
		status, _ := getStatus(t, base+"/events?id=c", nil)
		return status == http.StatusOK
	})
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
