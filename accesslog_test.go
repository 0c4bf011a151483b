package pollsse

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
)

// An accessLine is what a test reads of an access log line.
type accessLine struct {
	Logger   string  `json:"logger"`
	Msg      string  `json:"msg"`
	Status   int     `json:"status"`
	Size     int     `json:"size"`
	Duration float64 `json:"duration"`
	Request  struct {
		URI string `json:"uri"`
	} `json:"request"`
}

// accessLines returns the access log lines of uri in the JSON log file.
func accessLines(t *testing.T, logFile, uri string) []accessLine {
	t.Helper()
	b, err := os.ReadFile(logFile)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var lines []accessLine
	for _, raw := range bytes.Split(b, []byte("\n")) {
		var l accessLine
		if json.Unmarshal(raw, &l) == nil && strings.HasPrefix(l.Logger, "http.log.access") && l.Request.URI == uri {
			lines = append(lines, l)
		}
	}
	return lines
}

// TestAccessLogLineOfAStreamIsWrittenWhenItEnds: on a site with `log`, over
// plain HTTP/1.1, HTTPS with HTTP/1.1 and HTTP/2, a stream is served as on
// one without (by its topic's group where streams are taken over), and its
// access log line is written when the stream ends, with status 200, the
// stream's real duration and the bytes written to it.
func TestAccessLogLineOfAStreamIsWrittenWhenItEnds(t *testing.T) {
	api := newFakeAPI(t, `{"n":0}`)
	paths := startCaddyOnEveryPath(t, fmt.Sprintf(`"upstream":%q,"interval":"100ms","heartbeat":"1h"`, api.URL))
	n := 0
	for _, p := range paths {
		if p.accessLog == "" {
			continue
		}
		t.Run(p.name, func(t *testing.T) {
			uri := fmt.Sprintf("/events?client=%d", n)
			// body is the stream's body; wire counts what reached the
			// client, with the chunks' framing over HTTP/1.1, of which
			// headers bytes were the response's head.
			var body *bufio.Reader
			var wire *countingReader
			var headers int
			var end func()
			if strings.HasPrefix(p.name, "HTTP/2") {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(p.url, "/events")+uri, nil)
				resp, err := p.client().Do(req)
				if err != nil || resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 {
					t.Fatalf("got %v, %v; want an HTTP/2 stream", resp, err)
				}
				wire = &countingReader{r: resp.Body}
				body = bufio.NewReader(wire)
				end = func() { resp.Body.Close() }
			} else {
				u, _ := url.Parse(p.url)
				conn, err := net.Dial("tcp", u.Host)
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				if u.Scheme == "https" {
					conn = tls.Client(conn, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
				}
				fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n\r\n", uri, u.Host)
				conn.SetReadDeadline(time.Now().Add(10 * time.Second))
				wire = &countingReader{r: conn}
				br := bufio.NewReader(wire)
				resp, err := http.ReadResponse(br, nil)
				if err != nil || resp.StatusCode != http.StatusOK {
					t.Fatalf("got %v, %v; want a stream", resp, err)
				}
				headers = wire.n - br.Buffered()
				body = bufio.NewReader(resp.Body)
				end = func() { conn.Close() }
			}
			var payload int
			ev := nextNamed(t, body)
			if ev.name != "snapshot" {
				t.Fatalf("the stream began with %+v", ev)
			}
			payload += len(encodeEvent(ev.name, ev.id, []byte(ev.data)))
			// The handler had the request before the client had this.
			snapshotAt := time.Now()

			if p.takenOver {
				expectServedByGroups(t, 1)
			}
			if got := accessLines(t, p.accessLog, uri); len(got) != 0 {
				t.Fatalf("the access log has %+v while the stream is open, want its line when it ends", got)
			}

			n++
			api.set(fmt.Sprintf(`{"n":%d}`, n))
			if ev = nextNamed(t, body); ev.name != "patch" {
				t.Fatalf("got %+v, want the patch", ev)
			}
			payload += len(encodeEvent(ev.name, ev.id, []byte(ev.data)))
			// The handler returns after this.
			held := time.Since(snapshotAt)
			end()

			var line accessLine
			waitFor(t, 5*time.Second, "the stream's access log line", func() bool {
				got := accessLines(t, p.accessLog, uri)
				if len(got) == 1 {
					line = got[0]
				}
				return len(got) == 1
			})
			received := wire.n - headers
			if line.Status != http.StatusOK || line.Msg != "handled request" {
				t.Errorf("logged status %d, %q; want 200, handled request", line.Status, line.Msg)
			}
			// What the handler wrote: the events and the retry field, and
			// no more than reached the client with the chunks' framing.
			if written := len(retryFrame(3*time.Second)) + payload; line.Size < written || line.Size > received {
				t.Errorf("logged %d bytes; the stream wrote %d bytes of fields, %d on the wire", line.Size, written, received)
			}
			if d := time.Duration(line.Duration * float64(time.Second)); d < held {
				t.Errorf("logged a duration of %v for a stream that went on for %v after its snapshot", d, held)
			}
		})
	}
}

// A countingReader counts what is read through it.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// TestStreamLogLineIsCaddys: a stream taken over from net/http on a logged
// host writes its access log line itself, and its request's goroutine
// returns while the stream goes on. The line is Caddy's: the logger that
// `log_name` (the access_logger_names variable) picks, the level and
// message, the same fields as the line Caddy writes for another request of
// the same route, and the extra fields of `log_append`, written when the
// request's handler chain returned (the request's uuid here). Caddy writes
// no line of its own for the stream. A Caddy that keeps its extra log
// fields where the stream cannot read them fails here.
func TestStreamLogLineIsCaddys(t *testing.T) {
	if !canDetach {
		t.Skip("streams are taken over from net/http on unix systems only (canDetach)")
	}
	if !extraFieldsOK {
		t.Fatal("caddyhttp.ExtraLogFields keeps its fields otherwise: logged streams keep their requests until they end")
	}
	api := newFakeAPI(t, `{"a":1}`)
	before := `{"handler":"vars","access_logger_names":["streams"]},{"handler":"log_append","key":"req_id","value":"{http.request.uuid}"}`
	routes := fmt.Sprintf(`[
		{"match":[{"path":["/events"]}],"handle":[%s,{"handler":"poll_sse","upstream":%q,"interval":"100ms","heartbeat":"1h"}]},
		{"match":[{"path":["/other"]}],"handle":[%s,{"handler":"static_response","status_code":200,"body":"ok"}]}
	]`, before, api.URL, before)
	base, log := startCaddyAtDebug(t, routes, withAccessLogs(`{}`))
	u, _ := url.Parse(base)

	const streams = 3
	var conns []net.Conn
	for i := range streams {
		conn, err := net.Dial("tcp", u.Host)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "GET /events?c=%d HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\nX-Probe: yes\r\n\r\n", i, u.Host)
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("got %v, %v; want a stream", resp, err)
		}
		if ev := nextNamed(t, bufio.NewReader(resp.Body)); ev.name != "snapshot" {
			t.Fatalf("the stream began with %+v", ev)
		}
		conns = append(conns, conn)
	}
	waitFor(t, 5*time.Second, "the streams' requests to return", func() bool {
		goroutines, inRequests, byWatcher := watchedClients()
		return goroutines+byWatcher == streams && inRequests == 0
	})
	req, _ := http.NewRequest(http.MethodGet, base+"/other", nil)
	req.Header.Set("X-Probe", "yes")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	opened := time.Now()
	time.Sleep(50 * time.Millisecond)
	for _, c := range conns {
		c.Close()
	}

	lines := func(path string) []map[string]any {
		var out []map[string]any
		for _, l := range log.lines() {
			var m map[string]any
			json.Unmarshal([]byte(l.raw), &m)
			r, _ := m["request"].(map[string]any)
			if uri, _ := r["uri"].(string); strings.HasPrefix(uri, path) {
				out = append(out, m)
			}
		}
		return out
	}
	waitFor(t, 5*time.Second, "a line for each stream", func() bool { return len(lines("/events")) >= streams })
	time.Sleep(100 * time.Millisecond)
	other, events := lines("/other"), lines("/events")
	if len(other) != 1 || len(events) != streams {
		t.Fatalf("%d lines of /other and %d of the %d streams, want one each:\n%v\n%v", len(other), len(events), streams, other, events)
	}
	keys := func(m map[string]any) string {
		var ks []string
		for k := range m {
			ks = append(ks, k)
		}
		sort.Strings(ks)
		return strings.Join(ks, ",")
	}
	want := other[0]
	wantReq := want["request"].(map[string]any)
	ids := map[any]bool{want["req_id"]: true}
	for _, got := range events {
		for _, k := range []string{"logger", "level", "msg", "status", "bytes_read", "user_id"} {
			if got[k] != want[k] {
				t.Errorf("the stream's line has %s %v, Caddy's line %v", k, got[k], want[k])
			}
		}
		if keys(got) != keys(want) {
			t.Errorf("the stream's line has the fields %s, Caddy's %s", keys(got), keys(want))
		}
		gotReq := got["request"].(map[string]any)
		if keys(gotReq) != keys(wantReq) {
			t.Errorf("the stream's request has the fields %s, Caddy's %s", keys(gotReq), keys(wantReq))
		}
		for _, k := range []string{"remote_ip", "client_ip", "proto", "method", "host"} {
			if gotReq[k] != wantReq[k] {
				t.Errorf("the stream's request has %s %v, Caddy's %v", k, gotReq[k], wantReq[k])
			}
		}
		if h, _ := gotReq["headers"].(map[string]any); fmt.Sprint(h["X-Probe"]) != "[yes]" {
			t.Errorf("the stream's request headers are %v, want X-Probe", gotReq["headers"])
		}
		if id, _ := got["req_id"].(string); len(id) != 36 || ids[id] {
			t.Errorf("the stream's line has req_id %q, want a uuid of its own", id)
		}
		ids[got["req_id"]] = true
		if h, _ := got["resp_headers"].(map[string]any); fmt.Sprint(h["Content-Type"]) != "[text/event-stream]" {
			t.Errorf("the stream's response headers are %v", got["resp_headers"])
		}
		if d, _ := got["duration"].(float64); time.Duration(d*float64(time.Second)) < time.Since(opened)-time.Second || d <= 0.05 {
			t.Errorf("the stream's line has a duration of %v s", got["duration"])
		}
	}
	if want["logger"] != "http.log.access.streams" {
		t.Errorf("Caddy's line went to %v, want http.log.access.streams (access_logger_names)", want["logger"])
	}
}

// TestChunkLen: what a logged stream counts of a chunk is the chunk's length
// on the wire.
func TestChunkLen(t *testing.T) {
	for _, n := range []int{0, 1, 15, 16, 255, 256, 4095, 4096, 1 << 20} {
		if got, want := chunkLen(n), len(appendChunk(nil, make([]byte, n))); got != want {
			t.Errorf("chunkLen(%d) = %d, want %d", n, got, want)
		}
	}
}

// TestHeaderPairs: the headers that a logged stream keeps for its line are
// the headers it was given, repeated fields and empty values included.
func TestHeaderPairs(t *testing.T) {
	for _, h := range []http.Header{
		{},
		{"Accept": {"text/event-stream"}},
		{"Cookie": {"a=1", "b=2"}, "X-Empty": {""}, "Last-Event-Id": {"7"}},
	} {
		if got := pairsOf(h).header(); !reflect.DeepEqual(got, h) {
			t.Errorf("pairsOf(%v).header() = %v", h, got)
		}
	}
}

// TestServerWriteTimeoutLeavesLoggedStreamsTakenOver: Caddy's server
// `write` timeout is a deadline from the start of each response, which
// would cut a stream that keeps its request at that age. A logged HTTP/1.1
// stream that is taken over from net/http sets its own deadlines, so it
// outlives the server's timeout and gets the changes after it.
func TestServerWriteTimeoutLeavesLoggedStreamsTakenOver(t *testing.T) {
	if !canDetach {
		t.Skip("streams are taken over from net/http on unix systems only (canDetach)")
	}
	api := newFakeAPI(t, `{"n":0}`)
	base := startCaddy(t, "["+pollSSERoute("/events", fmt.Sprintf(`"upstream":%q,"interval":"100ms","heartbeat":"1h"`, api.URL))+"]",
		withAccessLogs(`{}`), withServerFields(`"write_timeout":"500ms"`))
	u, _ := url.Parse(base)
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /events HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n\r\n", u.Host)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("got %v, %v; want a stream", resp, err)
	}
	body := bufio.NewReader(resp.Body)
	if ev := nextNamed(t, body); ev.name != "snapshot" {
		t.Fatalf("the stream began with %+v", ev)
	}
	time.Sleep(1500 * time.Millisecond)
	api.set(`{"n":1}`)
	if ev := nextNamed(t, body); ev.name != "patch" || !strings.Contains(ev.data, `"value":1`) {
		t.Fatalf("after three of the server's write timeouts the stream had %+v, want the change", ev)
	}
}

// TestStreamsShareTheirResponseHeader: logged streams whose response
// headers are the same keep one copy of them, however their maps iterate,
// and a stream whose headers differ keeps its own.
func TestStreamsShareTheirResponseHeader(t *testing.T) {
	var a accessLog
	h := http.Header{"Content-Type": {"text/event-stream"}, "Cache-Control": {"no-store"}, "X-Accel-Buffering": {"no"}, "Server": {"Caddy"}}
	first := a.sharedRespHeader(h)
	second := a.sharedRespHeader(h.Clone())
	if first != second {
		t.Error("two streams with the same response header keep a copy each")
	}
	other := h.Clone()
	other.Set("X-Request-Id", "2")
	if got := a.sharedRespHeader(other); !reflect.DeepEqual(got.header(), other) {
		t.Errorf("a stream with another response header keeps %v, want %v", got.header(), other)
	}
}

// TestHeaderPairsAreTheirHeaderAlone: pairs are found to be a header's
// only when they are the pairs that header makes, and always then unless
// the header has a name without values.
func TestHeaderPairsAreTheirHeaderAlone(t *testing.T) {
	headers := []http.Header{
		{},
		{"A": {"1"}},
		{"A": {"2"}},
		{"B": {"1"}},
		{"A": {"1", "1"}},
		{"A": {"1", "2"}},
		{"A": {"2", "1"}},
		{"A": {"1"}, "B": {"2"}},
		{"A": {"1"}, "B": {"2"}, "C": {}},
		{"A": {"1"}, "B": {"2", "3"}},
		{"A": {}},
	}
	for _, h := range headers {
		for _, other := range headers {
			p := pairsOf(other)
			same := slices.Equal(p, pairsOf(h))
			empty := slices.ContainsFunc(slices.Collect(maps.Values(h)), func(vs []string) bool { return len(vs) == 0 })
			if got := p.is(h); got && !same || !got && same && !empty {
				t.Errorf("the pairs of %v are found to be those of %v: %v", other, h, got)
			}
		}
	}
}
