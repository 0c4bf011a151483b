package pollsse

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// metricNames are the full names of the handler's metrics, as a scrape
// shows them.
var metricNames = []string{
	"caddy_http_poll_sse_subscribers",
	"caddy_http_poll_sse_topics",
	"caddy_http_poll_sse_polls_total",
	"caddy_http_poll_sse_poll_duration_seconds",
	"caddy_http_poll_sse_events_sent_total",
	"caddy_http_poll_sse_sent_bytes_total",
	"caddy_http_poll_sse_resumes_total",
	"caddy_http_poll_sse_slow_subscribers_dropped_total",
}

// A scrape is one read of a /metrics endpoint: each sample of the handler's
// metrics by its name and labels as the text format writes them, such as
// `caddy_http_poll_sse_polls_total{result="changed"}`.
type scrape map[string]float64

func scrapeMetrics(t testing.TB, url string) scrape {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scraping %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scraping %s: %s", url, resp.Status)
	}
	s := scrape{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "caddy_http_poll_sse_") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("scraping %s: bad sample %q", url, line)
		}
		s[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return s
}

// delta returns how much each sample grew since before.
func (s scrape) delta(before scrape) scrape {
	d := scrape{}
	for k, v := range s {
		d[k] = v - before[k]
	}
	return d
}

// has tells whether s holds a sample of the metric name.
func (s scrape) has(name string) bool {
	for k := range s {
		if k == name || strings.HasPrefix(k, name+"{") || strings.HasPrefix(k, name+"_") {
			return true
		}
	}
	return false
}

func (s scrape) sum(prefix string) float64 {
	var total float64
	for k, v := range s {
		if strings.HasPrefix(k, prefix) {
			total += v
		}
	}
	return total
}

// A tally is what the clients of a test received: events and bytes by type,
// as the handler framed them.
type tally struct {
	mu            sync.Mutex
	events, bytes map[string]float64
}

func (ta *tally) add(ev sseEvent) {
	ta.mu.Lock()
	defer ta.mu.Unlock()
	if ta.events == nil {
		ta.events, ta.bytes = map[string]float64{}, map[string]float64{}
	}
	ta.events[ev.name]++
	ta.bytes[ev.name] += float64(len(encodeEvent(ev.name, ev.id, []byte(ev.data))))
}

// expectEvent reads sc's next event, which must be named name, and tallies
// it.
func expectEvent(t testing.TB, sc *streamClient, ta *tally, name string) sseEvent {
	t.Helper()
	ev := sc.next(10 * time.Second)
	if ev.name != name {
		t.Fatalf("got %+v, want a %s event", ev, name)
	}
	ta.add(ev)
	return ev
}

// sentDiffers says how what the handler counted as sent differs from what
// the clients received, or nothing when they agree.
func sentDiffers(got scrape, ta *tally) string {
	ta.mu.Lock()
	defer ta.mu.Unlock()
	var diffs []string
	for _, typ := range []string{"snapshot", "patch", "merge", "status", "heartbeat"} {
		events := fmt.Sprintf(`caddy_http_poll_sse_events_sent_total{type=%q}`, typ)
		bytes := fmt.Sprintf(`caddy_http_poll_sse_sent_bytes_total{type=%q}`, typ)
		if got[events] != ta.events[typ] || got[bytes] != ta.bytes[typ] {
			diffs = append(diffs, fmt.Sprintf("%s: the handler counted %v events of %v bytes, the clients received %v of %v bytes",
				typ, got[events], got[bytes], ta.events[typ], ta.bytes[typ]))
		}
	}
	return strings.Join(diffs, "\n")
}

// expectSent checks that what the handler counts as sent since the scrape
// start is what the clients received, and returns the scrape. A frame is
// counted once written, which may be just after the client read it.
func expectSent(t testing.TB, since func() scrape, ta *tally) scrape {
	t.Helper()
	var s scrape
	var diff string
	if !eventually(5*time.Second, func() bool {
		s = since()
		diff = sentDiffers(s, ta)
		return diff == ""
	}) {
		t.Error(diff)
	}
	return s
}

func expectValue(t testing.TB, s scrape, sample string, want float64) {
	t.Helper()
	if got := s[sample]; got != want {
		t.Errorf("%s = %v, want %v", sample, got, want)
	}
}

// TestMetricsOnCaddysMetricsEndpoint scrapes Caddy's metrics handler while
// subscribers come and go, the upstream changes, answers 304, fails and
// recovers, and checks each number against what happened. It runs once with
// plain HTTP/1.1 streams and once behind encode, where each stream keeps
// its goroutine.
func TestMetricsOnCaddysMetricsEndpoint(t *testing.T) {
	for _, tt := range []struct{ name, before string }{
		{"plain HTTP/1.1 streams", ""},
		{"streams behind encode", `{"handle":[{"handler":"encode","encodings":{"gzip":{}}}]},`},
	} {
		t.Run(tt.name, func(t *testing.T) { testMetrics(t, tt.before) })
	}
}

func testMetrics(t *testing.T, before string) {
	api := newFakeAPI(t, `{"orders":[1,2]}`)
	api.setETag(etagHonoured)
	base := startCaddy(t, fmt.Sprintf(`[{"match":[{"path":["/metrics"]}],"handle":[{"handler":"metrics"}]},%s%s]`, before,
		pollSSERoute("/events", fmt.Sprintf(`"upstream":%q,"interval":"100ms","heartbeat":"1h","idle_timeout":"50ms"`, api.URL))))
	metricsURL := base + "/metrics"
	start := scrapeMetrics(t, metricsURL)
	for _, name := range metricNames {
		if start.sum(name) == 0 && !start.has(name) {
			t.Errorf("%s is not on /metrics", name)
		}
	}
	var ta tally
	since := func() scrape { return scrapeMetrics(t, metricsURL).delta(start) }
	waitForMetric := func(sample string, atLeast float64) scrape {
		t.Helper()
		var s scrape
		waitFor(t, 10*time.Second, sample, func() bool {
			s = since()
			return s[sample] >= atLeast
		})
		return s
	}

	// Two subscribers of one topic: one poll each interval, a snapshot each.
	a := openStream(t, http.DefaultClient, base+"/events", "")
	b := openStream(t, http.DefaultClient, base+"/events", "")
	expectEvent(t, a, &ta, "snapshot")
	expectEvent(t, b, &ta, "snapshot")
	s := waitForMetric(`caddy_http_poll_sse_polls_total{result="not_modified"}`, 2)
	expectValue(t, s, "caddy_http_poll_sse_subscribers", 2)
	expectValue(t, s, "caddy_http_poll_sse_topics", 1)
	expectValue(t, s, `caddy_http_poll_sse_polls_total{result="changed"}`, 1)
	expectValue(t, s, `caddy_http_poll_sse_polls_total{result="unchanged"}`, 0)
	expectValue(t, s, `caddy_http_poll_sse_polls_total{result="failed"}`, 0)
	expectSent(t, since, &ta)

	// Answers without 304: unchanged polls.
	api.setETag(etagIgnored)
	waitForMetric(`caddy_http_poll_sse_polls_total{result="unchanged"}`, 2)

	// A change: one patch to each subscriber.
	api.set(`{"orders":[1,2,3]}`)
	patch := expectEvent(t, a, &ta, "patch")
	expectEvent(t, b, &ta, "patch")
	expectSent(t, since, &ta)
	// The poll is counted once it has appended its event, which may be
	// just after the clients read it.
	s = waitForMetric(`caddy_http_poll_sse_polls_total{result="changed"}`, 2)
	expectValue(t, s, `caddy_http_poll_sse_polls_total{result="changed"}`, 2)

	// An outage and a recovery: one status event each per transition.
	api.setStatus(http.StatusServiceUnavailable)
	expectEvent(t, a, &ta, "status")
	expectEvent(t, b, &ta, "status")
	api.setStatus(http.StatusOK)
	expectEvent(t, a, &ta, "status")
	expectEvent(t, b, &ta, "status")
	s = expectSent(t, since, &ta)
	if s[`caddy_http_poll_sse_polls_total{result="failed"}`] < 1 {
		t.Errorf("no failed poll counted: %v", s)
	}

	// Resumes: from the patch's id, the two status events since; from an
	// unknown id, a snapshot.
	c := openStream(t, http.DefaultClient, base+"/events", patch.id)
	expectEvent(t, c, &ta, "status")
	expectEvent(t, c, &ta, "status")
	d := openStream(t, http.DefaultClient, base+"/events", "no-such-id")
	expectEvent(t, d, &ta, "snapshot")
	s = expectSent(t, since, &ta)
	expectValue(t, s, `caddy_http_poll_sse_resumes_total{outcome="replayed"}`, 1)
	expectValue(t, s, `caddy_http_poll_sse_resumes_total{outcome="snapshot"}`, 1)
	expectValue(t, s, "caddy_http_poll_sse_subscribers", 4)

	// Every poll has a result and a duration.
	if polls, observed := s.sum("caddy_http_poll_sse_polls_total"), s["caddy_http_poll_sse_poll_duration_seconds_count"]; polls != observed || polls == 0 {
		t.Errorf("%v polls counted by result, %v durations observed", polls, observed)
	}

	// All leave: the gauges return, the topic stops after idle_timeout.
	for _, sc := range []*streamClient{a, b, c, d} {
		sc.close()
	}
	waitFor(t, 10*time.Second, "the gauges to return to where they were", func() bool {
		s = since()
		return s["caddy_http_poll_sse_subscribers"] == 0 && s["caddy_http_poll_sse_topics"] == 0
	})
	expectValue(t, s, "caddy_http_poll_sse_slow_subscribers_dropped_total", 0)
}

func TestMetricsCountHeartbeats(t *testing.T) {
	api := newFakeAPI(t, `{"n":0}`)
	base := startCaddy(t, fmt.Sprintf(`[{"match":[{"path":["/metrics"]}],"handle":[{"handler":"metrics"}]},%s]`,
		pollSSERoute("/events", fmt.Sprintf(`"upstream":%q,"interval":"1h","heartbeat":"40ms"`, api.URL))))
	start := scrapeMetrics(t, base+"/metrics")
	sc := openStream(t, http.DefaultClient, base+"/events", "")
	heartbeats := 0
	for heartbeats < 3 {
		select {
		case ev := <-sc.events:
			if ev.comment {
				heartbeats++
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no heartbeat")
		}
	}
	// A heartbeat is counted once written, which may be just after the
	// client read it.
	var events, bytes float64
	eventually(5*time.Second, func() bool {
		s := scrapeMetrics(t, base+"/metrics").delta(start)
		events, bytes = s[`caddy_http_poll_sse_events_sent_total{type="heartbeat"}`], s[`caddy_http_poll_sse_sent_bytes_total{type="heartbeat"}`]
		return events >= 3
	})
	if events < 3 || bytes != events*float64(len(heartbeatFrame.bytes)) {
		t.Errorf("received 3 heartbeats; counted %v heartbeats of %v bytes", events, bytes)
	}
}

// TestMetricsCountSlowSubscribersDropped connects a client that never reads
// while large changes follow each other: its writes block, and after
// write_timeout it is dropped and counted.
func TestMetricsCountSlowSubscribersDropped(t *testing.T) {
	// Every poll gets a new version.
	blob := strings.Repeat("x", 256<<10)
	upstream := newFakeAPI(t, "")
	upstream.handle(func(w http.ResponseWriter, r *http.Request) bool {
		v := int(upstream.count.Load())
		upstream.set(fmt.Sprintf(`{"v":%d,"blob":"%s"}`, v, blob[:len(blob)-v%1000]))
		return false
	})
	base := startCaddy(t, fmt.Sprintf(`[{"match":[{"path":["/metrics"]}],"handle":[{"handler":"metrics"}]},%s]`,
		pollSSERoute("/events", fmt.Sprintf(`"upstream":%q,"interval":"100ms","history":4,"write_timeout":"300ms","heartbeat":"1h"`, upstream.URL))))
	start := scrapeMetrics(t, base+"/metrics")

	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.(*net.TCPConn).SetReadBuffer(4 << 10)
	fmt.Fprintf(conn, "GET /events HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n\r\n", strings.TrimPrefix(base, "http://"))

	var s scrape
	waitFor(t, 20*time.Second, "the client that does not read to be dropped", func() bool {
		s = scrapeMetrics(t, base+"/metrics").delta(start)
		return s["caddy_http_poll_sse_slow_subscribers_dropped_total"] == 1 && s["caddy_http_poll_sse_subscribers"] == 0
	})
	if sent := s[`caddy_http_poll_sse_sent_bytes_total{type="patch"}`] + s[`caddy_http_poll_sse_sent_bytes_total{type="snapshot"}`]; sent < 1<<20 {
		t.Errorf("dropped after %v bytes; the socket buffers hold more", sent)
	}
}

// TestMetricsRegisteredOncePerConfiguration loads a configuration with two
// poll_sse handlers, then reloads it: neither registration fails, and the
// reloaded configuration's registry shows the metrics.
func TestMetricsRegisteredOncePerConfiguration(t *testing.T) {
	api := newFakeAPI(t, `{"n":0}`)
	routes := func(retry string) string {
		return fmt.Sprintf(`[{"match":[{"path":["/metrics"]}],"handle":[{"handler":"metrics"}]},%s,%s]`,
			pollSSERoute("/a", fmt.Sprintf(`"upstream":%q,"interval":"1h","retry":%q`, api.URL, retry)),
			pollSSERoute("/b", fmt.Sprintf(`"upstream":%q,"interval":"1h"`, api.URL+"/b")))
	}
	base := startCaddy(t, routes("1s"))
	sc := openStream(t, http.DefaultClient, base+"/a", "")
	sc.next(10 * time.Second)
	before := scrapeMetrics(t, base+"/metrics")

	port, _ := strconv.Atoi(strings.TrimPrefix(base, "http://127.0.0.1:"))
	if err := caddy.Load(caddyConfig(t, port, routes("2s")), false); err != nil {
		t.Fatalf("reloading: %v", err)
	}
	expectEnd(t, sc)
	sc = openStream(t, http.DefaultClient, base+"/a", "")
	sc.next(10 * time.Second)
	after := scrapeMetrics(t, base+"/metrics")
	if got := after.delta(before)["caddy_http_poll_sse_subscribers"]; got != 0 {
		t.Errorf("after the reload and a reconnect the subscribers gauge moved by %v", got)
	}
	if after["caddy_http_poll_sse_topics"] < 1 {
		t.Errorf("the reloaded configuration's registry shows %v topics", after["caddy_http_poll_sse_topics"])
	}
}

func TestMetricsRegisterIntoManyRegistries(t *testing.T) {
	m := newMetrics()
	for range 2 {
		reg := prometheus.NewPedanticRegistry()
		for range 2 {
			if err := m.register(reg); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := reg.Gather(); err != nil {
			t.Fatal(err)
		}
	}
	// Another collector of the same name is an error, not ignored.
	reg := prometheus.NewPedanticRegistry()
	if err := newMetrics().register(reg); err != nil {
		t.Fatal(err)
	}
	if err := m.register(reg); err == nil {
		t.Error("registering other metrics of the same names did not fail")
	}
}

func TestMetricsCountSentByEventType(t *testing.T) {
	m := newMetrics()
	frames := map[string]frame{
		"snapshot":  newFrame(kindSnapshot, "e-1", []byte(`{"a":1}`)),
		"patch":     newFrame(kindOf(eventPatch), "e-2", []byte(`[{"op":"remove","path":"/a"}]`)),
		"merge":     newFrame(kindOf(eventMerge), "e-3", []byte(`{"a":null}`)),
		"status":    newFrame(kindStatus, "", []byte(`{"upstream":"up"}`)),
		"heartbeat": heartbeatFrame,
	}
	for typ, f := range frames {
		if typ != "heartbeat" && !strings.HasPrefix(string(f.bytes), "event: "+typ+"\n") {
			t.Errorf("a %s frame begins %q", typ, f.bytes)
		}
		m.countSent(f)
		m.countSent(f)
		if got := counterValue(m.eventsSent.WithLabelValues(typ)); got != 2 {
			t.Errorf("%s: %v events counted, want 2", typ, got)
		}
		if got := counterValue(m.bytesSent.WithLabelValues(typ)); got != float64(2*len(f.bytes)) {
			t.Errorf("%s: %v bytes counted, want %d", typ, got, 2*len(f.bytes))
		}
	}
	ch := make(chan prometheus.Metric, 16)
	m.eventsSent.Collect(ch)
	if n := len(ch); n != len(frames) || n != int(numEventKinds) {
		t.Errorf("%d event types, want the %d kinds", n, len(frames))
	}
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

func BenchmarkMetricsCountSent(b *testing.B) {
	m := newMetrics()
	f := newFrame(kindPatch, "e-2", []byte(`[{"op":"remove","path":"/a"}]`))
	b.ReportAllocs()
	for b.Loop() {
		m.countSent(f)
	}
}
