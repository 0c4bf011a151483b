package main

import (
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// An upstream is the legacy JSON API that Caddy polls: one document per
// topic, at /doc/<topic>. The load tool asks for a change by raising a
// topic's wanted sequence number; the next poll of that topic answers a new
// document stamped with the time of that answer, so that a client's latency
// is measured from the upstream's answer to its own receipt.
type upstream struct {
	srv *http.Server
	url string
	pad string
	// static is a member that never changes, so that a patch is shorter
	// than the snapshot and the handler sends changes as patches.
	static string

	topics []upstreamTopic

	// start is when counting began; times are kept as offsets from it in
	// microseconds, at most maxRequestTimes of them.
	start    time.Time
	requests atomic.Int64
	mu       sync.Mutex
	times    []int64
}

type upstreamTopic struct {
	want atomic.Int64
	mu   sync.Mutex
	seq  int64
	body []byte
}

// maxRequestTimes bounds the request times the upstream keeps.
const maxRequestTimes = 1 << 20

// newUpstream starts an upstream of topics documents listening on addr.
// eventBytes is the approximate size of a patch event's data.
func newUpstream(addr string, topics, eventBytes int) (*upstream, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	// The data of a patch event is the replace operation around the value:
	// about 75 bytes besides the pad.
	pad := max(eventBytes-75, 0)
	u := &upstream{
		url:    "http://" + ln.Addr().String(),
		pad:    strings.Repeat("x", pad),
		static: strings.Repeat("y", 2*eventBytes),
		topics: make([]upstreamTopic, topics),
		start:  time.Now(),
	}
	for i := range u.topics {
		u.topics[i].body = u.document(0, time.Now())
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /doc/{topic}", u.serve)
	u.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go u.srv.Serve(ln)
	return u, nil
}

// document is the body of one version: one string member that changes as a
// whole, so that its patch is one replace operation whose value the clients
// read seq and ts from, and one that never changes.
func (u *upstream) document(seq int64, at time.Time) []byte {
	b := make([]byte, 0, len(u.pad)+len(u.static)+80)
	b = append(b, `{"bench":"seq=`...)
	b = strconv.AppendInt(b, seq, 10)
	b = append(b, " ts="...)
	b = strconv.AppendInt(b, at.UnixNano(), 10)
	b = append(b, " pad="...)
	b = append(b, u.pad...)
	b = append(b, `","static":"`...)
	b = append(b, u.static...)
	return append(b, `"}`...)
}

// message is what a hub is sent for version seq, published at: the
// changing member alone, about the size of a patch event's data.
func (u *upstream) message(seq int64, at time.Time) []byte {
	b := make([]byte, 0, len(u.pad)+64)
	b = append(b, `{"bench":"seq=`...)
	b = strconv.AppendInt(b, seq, 10)
	b = append(b, " ts="...)
	b = strconv.AppendInt(b, at.UnixNano(), 10)
	b = append(b, " pad="...)
	b = append(b, u.pad...)
	return append(b, `"}`...)
}

func (u *upstream) serve(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	u.requests.Add(1)
	u.mu.Lock()
	if len(u.times) < maxRequestTimes {
		u.times = append(u.times, now.Sub(u.start).Microseconds())
	}
	u.mu.Unlock()
	i, err := strconv.Atoi(r.PathValue("topic"))
	if err != nil || i < 0 || i >= len(u.topics) {
		http.NotFound(w, r)
		return
	}
	t := &u.topics[i]
	t.mu.Lock()
	if want := t.want.Load(); want > t.seq {
		t.seq = want
		t.body = u.document(want, time.Now())
	}
	body := t.body
	t.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.Write(body)
}

// change asks every topic for version seq at its next poll.
func (u *upstream) change(seq int64) {
	for i := range u.topics {
		u.topics[i].want.Store(seq)
	}
}

// requestTimes returns the offsets of the requests received since from, in
// microseconds from u.start.
func (u *upstream) requestTimes(from, to time.Time) []int64 {
	lo, hi := from.Sub(u.start).Microseconds(), to.Sub(u.start).Microseconds()
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []int64
	for _, t := range u.times {
		if t >= lo && t < hi {
			out = append(out, t)
		}
	}
	return out
}

func (u *upstream) close() { u.srv.Close() }
