package pollsse

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
)

// A countingDiffer counts the bodies its differ parses.
type countingDiffer struct {
	differ
	parses atomic.Int64
}

func (c *countingDiffer) parse(body []byte) (*document, error) {
	c.parses.Add(1)
	return c.differ.parse(body)
}

// testHub returns a hub of pollers with short durations, whose differ
// counts what it parses; change tunes its configuration.
func testHub(t *testing.T, change func(*topicSettings)) (*hub, *countingDiffer) {
	t.Helper()
	d, err := newDiffer(modeJSONPatch, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	cd := &countingDiffer{differ: d}
	cfg := topicSettings{
		Interval:       10 * time.Millisecond,
		IdleTimeout:    time.Minute,
		Timeout:        time.Second,
		History:        16,
		differ:         cd,
		restore:        d,
		MaxBackoff:     10 * time.Millisecond,
		MaxBody:        defaultMaxBody,
		MaxTopics:      defaultMaxTopics,
		MaxSubscribers: defaultMaxSubscribers,
	}
	if change != nil {
		change(&cfg)
	}
	hs, _ := MemoryStore{}.attach(zap.NewNop())
	h := newHub(cfg, zap.NewNop(), hs)
	t.Cleanup(func() {
		h.Destruct()
		assertNoStreamGoroutines(t)
	})
	return h, cd
}

// logFrames returns the frames a new subscriber of t would read now.
func logFrames(t *topic) []string {
	frames, _, _ := t.log.read(0, make([]frame, 0, 16))
	return frameTexts(frames)
}

// frameTexts returns the text of each frame.
func frameTexts(frames []frame) []string {
	var out []string
	for _, f := range frames {
		out = append(out, string(f.bytes))
	}
	return out
}

// TestPollerTellsItsLogAndTopic runs a poller made without a hub, as
// hub.newPoller makes one, poll by poll: a refusal before the first
// document reaches the topic's state and not its log; the first document
// is its snapshot; an outage and a recovery are one status event each,
// with the topic's id, around the patch.
func TestPollerTellsItsLogAndTopic(t *testing.T) {
	api := newFakeAPI(t, "")
	api.setStatus(http.StatusUnauthorized)
	answer := func(status int, body string) {
		api.setStatus(status)
		api.set(body)
	}
	tp := newTopic("key", "0123456789ab", api.URL, nil, newMemoryLog(16), func() {})
	p := &poller{
		url: api.URL, timeout: time.Second, maxBody: defaultMaxBody, client: api.Client(),
		differ: mustDiffer(t, modeJSONPatch, ""), log: tp.log, topicID: tp.id, state: &tp.upstreamState,
		logger: zap.NewNop(), sched: schedule{interval: time.Second, maxBackoff: time.Minute},
	}
	read := func() string {
		frames, _, _ := tp.log.read(0, make([]frame, 0, 16))
		var evs []sseEvent
		for _, f := range frames {
			evs = append(evs, parseFrames(t, f.bytes)...)
		}
		return names(evs)
	}
	ctx := context.Background()

	p.poll(ctx)
	if tp.deniedStatus() != http.StatusUnauthorized || !tp.refusedBeforeSnapshot() || read() != "" {
		t.Errorf("after a 401: denied %d, refused before a snapshot %v, log %q; want 401, true and nothing", tp.deniedStatus(), tp.refusedBeforeSnapshot(), read())
	}
	answer(http.StatusOK, `{"v":1}`)
	p.poll(ctx)
	if tp.deniedStatus() != 0 || tp.refusedBeforeSnapshot() || read() != `snapshot:{"v":1}` {
		t.Errorf("after the first document: denied %d, log %q; want 0 and its snapshot", tp.deniedStatus(), read())
	}
	_, cursor := readAll(t, tp.log, 0)
	answer(http.StatusServiceUnavailable, "")
	p.poll(ctx)
	p.poll(ctx)
	answer(http.StatusOK, `{"v":2}`)
	p.poll(ctx)
	evs, _ := readAll(t, tp.log, cursor)
	want := `status:{"upstream":"down","topic":"0123456789ab","status":503,"error":"upstream answered 503 Service Unavailable","retry_in_ms":%d} ` +
		`status:{"upstream":"up","topic":"0123456789ab"} patch:[{"op":"replace","path":"/v","value":2}]`
	if len(evs) != 3 || names(evs) != fmt.Sprintf(want, decodeStatus(t, evs[0]).RetryInMS) {
		t.Errorf("after an outage of two polls and a change, the log holds %s", names(evs))
	}
}

func TestConditionalRequests(t *testing.T) {
	api := newFakeAPI(t, `{"v":1}`)
	api.setETag(etagHonoured)
	api.setHeader("Last-Modified", "Sun, 22 Nov 2026 06:00:00 GMT")
	answered := func(status int) int {
		n := 0
		for _, ex := range api.exchangeLog() {
			if ex.status == status {
				n++
			}
		}
		return n
	}
	h, parses := testHub(t, nil)
	tp, err := h.subscribe(api.URL, nil, netip.Prefix{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.unsubscribe(tp)

	waitFor(t, 5*time.Second, "10 answers of 304", func() bool { return answered(http.StatusNotModified) >= 10 })
	if first := api.requestLog()[0].Header; first.Get("If-None-Match") != "" || first.Get("If-Modified-Since") != "" {
		t.Errorf("the first poll sent the validators %q and %q; it has none", first.Get("If-None-Match"), first.Get("If-Modified-Since"))
	}
	if n := answered(http.StatusOK); n != 1 {
		t.Errorf("%d full answers for one version", n)
	}
	if n := parses.parses.Load(); n != 1 {
		t.Errorf("%d bodies parsed for one version and many 304s", n)
	}
	if frames := logFrames(tp); len(frames) != 1 || !strings.Contains(frames[0], "event: snapshot") {
		t.Errorf("the log holds %q, want one snapshot", frames)
	}

	api.set(`{"v":2}`)
	waitFor(t, 5*time.Second, "the new version", func() bool { return answered(http.StatusOK) == 2 })
	waitFor(t, 5*time.Second, "304s for the new version", func() bool { return answered(http.StatusNotModified) >= 15 })
	if n := parses.parses.Load(); n != 2 {
		t.Errorf("%d bodies parsed for two versions", n)
	}
	if frames, _, _ := tp.log.read(1, make([]frame, 0, 16)); len(frames) != 1 || !strings.Contains(string(frames[0].bytes), `"/v"`) {
		t.Errorf("after the first snapshot the log holds %q, want one patch", frameTexts(frames))
	}
}

// A countingBody is an endless response body that counts the bytes read
// from it.
type countingBody struct{ read *atomic.Int64 }

func (b countingBody) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = ' '
	}
	b.read.Add(int64(len(p)))
	return len(p), nil
}

func (countingBody) Close() error { return nil }

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestMaxBodyIsAllThatIsRead(t *testing.T) {
	const limit = 1000
	tests := []struct {
		name          string
		contentLength int64
		body          string // "" for an endless body
		wantRead      int64  // the most bytes read
		wantDoc       bool
	}{
		{"an endless body is read up to the limit", -1, "", limit + 1, false},
		{"a declared length over the limit is not read at all", limit + 1, "", 0, false},
		{"a body of exactly the limit is a document", limit, `{"pad":"` + strings.Repeat("x", limit-10) + `"}`, limit, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var read atomic.Int64
			var polls atomic.Int64
			h, _ := testHub(t, func(cfg *topicSettings) { cfg.MaxBody = limit })
			h.client.Transport = roundTripFunc(func(r *http.Request) (*http.Response, error) {
				polls.Add(1)
				var body io.ReadCloser = countingBody{&read}
				if tt.body != "" {
					read.Add(int64(len(tt.body)))
					body = io.NopCloser(strings.NewReader(tt.body))
				}
				return &http.Response{StatusCode: http.StatusOK, ContentLength: tt.contentLength, Body: body, Header: http.Header{}, Request: r}, nil
			})
			tp, err := h.subscribe("http://api.test/doc", nil, netip.Prefix{})
			if err != nil {
				t.Fatal(err)
			}
			defer h.unsubscribe(tp)
			waitFor(t, 5*time.Second, "a poll", func() bool { return polls.Load() >= 1 })
			if tt.wantDoc {
				waitFor(t, 5*time.Second, "the document", func() bool { return len(logFrames(tp)) == 1 })
			} else {
				// The poller starts the second poll once the first has failed.
				waitFor(t, 5*time.Second, "the poll to fail", func() bool { return polls.Load() >= 2 })
				// No document: a new subscriber reads only why.
				if frames := logFrames(tp); len(frames) != 1 || !strings.HasPrefix(frames[0], "event: status\n") || !strings.Contains(frames[0], "larger than max_body (1000 bytes)") {
					t.Errorf("a body over max_body made %q, want only a status event", frames)
				}
			}
			if n := read.Load(); n > tt.wantRead*polls.Load() {
				t.Errorf("%d bytes read in %d polls, want at most %d per poll", n, polls.Load(), tt.wantRead)
			}
		})
	}
}

func TestStrongLastModified(t *testing.T) {
	at := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	date := func(d time.Time) string { return d.Format(http.TimeFormat) }
	tests := []struct {
		name               string
		lastModified, date string
		received           time.Time
		want               string
	}{
		{"a date a second before the response's Date is strong", date(at.Add(-time.Second)), date(at), at, date(at.Add(-time.Second))},
		{"a date long before the response's Date is strong", date(at.Add(-time.Hour)), date(at), at, date(at.Add(-time.Hour))},
		{"a date in the second of the response's Date is weak", date(at), date(at), at.Add(900 * time.Millisecond), ""},
		{"a date after the response's Date is weak", date(at.Add(time.Minute)), date(at), at, ""},
		{"the response's Date counts, not when it was received", date(at), date(at), at.Add(time.Hour), ""},
		{"without a Date, a date a second before it was received is strong", date(at), "", at.Add(time.Second), date(at)},
		{"without a Date, a date less than a second before it was received is weak", date(at), "", at.Add(999 * time.Millisecond), ""},
		{"an unparsable Date counts as none", date(at), "yesterday", at.Add(2 * time.Second), date(at)},
		{"an unparsable date is none", "yesterday", date(at), at, ""},
		{"no Last-Modified is none", "", date(at), at, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			if tt.lastModified != "" {
				h.Set("Last-Modified", tt.lastModified)
			}
			if tt.date != "" {
				h.Set("Date", tt.date)
			}
			if got := strongLastModified(h, tt.received); got != tt.want {
				t.Errorf("strongLastModified(Last-Modified %q, Date %q) = %q, want %q", tt.lastModified, tt.date, got, tt.want)
			}
		})
	}
}

// TestValidators: an ETag is sent back with a strong Last-Modified or
// without any, never with a weak one.
func TestValidators(t *testing.T) {
	at := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	date := func(d time.Time) string { return d.Format(http.TimeFormat) }
	tests := []struct {
		name                       string
		etag, lastModified         string
		wantETag, wantLastModified string
	}{
		{"an ETag alone is sent", `"abc"`, "", `"abc"`, ""},
		{"an ETag with a strong Last-Modified is sent with it", `"abc"`, date(at.Add(-time.Second)), `"abc"`, date(at.Add(-time.Second))},
		{"an ETag with a weak Last-Modified is not", `"6b0faa27-7"`, date(at), "", ""},
		{"an ETag with an unparsable Last-Modified is not", `"abc"`, "yesterday", "", ""},
		{"a strong Last-Modified alone is sent", "", date(at.Add(-time.Hour)), "", date(at.Add(-time.Hour))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{"Date": {date(at)}}
			if tt.etag != "" {
				h.Set("ETag", tt.etag)
			}
			if tt.lastModified != "" {
				h.Set("Last-Modified", tt.lastModified)
			}
			etag, lastModified := validators(h, at)
			if etag != tt.wantETag || lastModified != tt.wantLastModified {
				t.Errorf("validators(ETag %q, Last-Modified %q) = %q, %q, want %q, %q", tt.etag, tt.lastModified, etag, lastModified, tt.wantETag, tt.wantLastModified)
			}
		})
	}
}

// A fileExchange is one request to a file server and its answer.
type fileExchange struct {
	ifModifiedSince    string
	status             int
	date, lastModified string
}

// TestChangeInTheSecondOfLastModifiedIsDelivered: Go's http.FileServer
// validates with Last-Modified alone, whose precision is one second. When a
// file is written twice within one second, the stream delivers the second
// version too: a Last-Modified in the second of the response's Date is not
// sent back as If-Modified-Since, and polls are conditional again once the
// Last-Modified of a response is a second older than its Date.
func TestChangeInTheSecondOfLastModifiedIsDelivered(t *testing.T) {
	dir := t.TempDir()
	files := http.FileServer(http.Dir(dir))
	upstream := newFakeAPI(t, "")
	upstream.handle(func(w http.ResponseWriter, r *http.Request) bool {
		// The Date that net/http would set, set here so that it is in
		// the exchange log.
		w.Header().Set("Date", time.Now().UTC().Format(http.TimeFormat))
		files.ServeHTTP(w, r)
		return true
	})
	exchangesOf := func(path string) []fileExchange {
		var out []fileExchange
		for _, e := range upstream.exchangeLog() {
			if e.req.URL.Path == path {
				out = append(out, fileExchange{
					ifModifiedSince: e.req.Header.Get("If-Modified-Since"),
					status:          e.status,
					date:            e.header.Get("Date"),
					lastModified:    e.header.Get("Last-Modified"),
				})
			}
		}
		return out
	}
	base := startCaddy(t, "["+pollSSERoute("/events", fmt.Sprintf(`"upstream":%q,"interval":"100ms"`,
		upstream.URL+"/{http.request.uri.query.file}"))+"]")

	// The first version must be written and polled within one second of
	// the clock, as a file that is written and read soon after; a slow
	// machine that crosses a second between them tries again with another
	// file, another topic.
	var sc *streamClient
	var path string
	for attempt := 0; ; attempt++ {
		if attempt == 3 {
			t.Fatal("the first poll never came in the second that the file was written")
		}
		// Start just after a second begins: the file's modification time
		// and the answers' Date are the real clock's, in whole seconds.
		now := time.Now()
		time.Sleep(now.Truncate(time.Second).Add(time.Second + 10*time.Millisecond).Sub(now))
		name := fmt.Sprintf("doc%d.json", attempt)
		path = "/" + name
		if err := os.WriteFile(filepath.Join(dir, name), []byte(`{"v":1}`), 0o644); err != nil {
			t.Fatal(err)
		}
		sc = openStream(t, http.DefaultClient, base+"/events?file="+name, "")
		if ev := sc.next(5 * time.Second); ev.name != "snapshot" || ev.data != `{"v":1}` {
			t.Fatalf("got %+v, want the snapshot of v1", ev)
		}
		first := exchangesOf(path)[0]
		if first.date == first.lastModified {
			break
		}
		t.Logf("the first poll was answered at %s, for a file written at %s: again", first.date, first.lastModified)
		sc.close()
	}

	// The second version, in the same second as the first: the file's
	// modification time says the same second.
	file := filepath.Join(dir, path[1:])
	info, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte(`{"v":2}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(file, info.ModTime(), info.ModTime()); err != nil {
		t.Fatal(err)
	}
	if ev, ok := sc.nextOrTimeout(3 * time.Second); !ok || ev.name != "patch" || !sameJSON(ev.data, `[{"op":"replace","path":"/v","value":2}]`) {
		ex := exchangesOf(path)
		t.Logf("%d requests, the first ones: %+v", len(ex), ex[:min(len(ex), 5)])
		t.Fatalf("got %+v, %v; want the patch to v2", ev, ok)
	}

	// Once a second has passed, polls are conditional again and cost 304s.
	lastModified := exchangesOf(path)[0].lastModified
	waitFor(t, 5*time.Second, "a 304 to If-Modified-Since", func() bool {
		for _, e := range exchangesOf(path) {
			if e.status == http.StatusNotModified && e.ifModifiedSince == lastModified {
				return true
			}
		}
		return false
	})
	// Each poll was conditional exactly when the last full answer before
	// it had a Last-Modified at least a second before its Date.
	var latest fileExchange
	for i, e := range exchangesOf(path) {
		want := ""
		if latest.status == http.StatusOK {
			modified, _ := http.ParseTime(latest.lastModified)
			date, _ := http.ParseTime(latest.date)
			if date.Sub(modified) >= time.Second {
				want = latest.lastModified
			}
		}
		if e.ifModifiedSince != want {
			t.Errorf("request %d: If-Modified-Since %q after a full answer of %+v, want %q", i, e.ifModifiedSince, latest, want)
		}
		if e.status == http.StatusOK {
			latest = e
		}
	}
	if ev, ok := sc.nextOrTimeout(100 * time.Millisecond); ok {
		t.Errorf("an event %+v for an unchanged file", ev)
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
	const interval, idle = 100 * time.Millisecond, 300 * time.Millisecond
	api := newFakeAPI(t, `{"a":1}`)
	base, logs := startCaddyAtDebug(t, "["+pollSSERoute("/events", fmt.Sprintf(`"upstream":%q,"interval":%q,"idle_timeout":%q`, api.URL, interval, idle))+"]")
	sc := openStream(t, http.DefaultClient, base+"/events", "")
	first := sc.next(5 * time.Second)
	left := time.Now() // before the server can see the subscriber leave
	sc.close()
	// Polling goes on for the idle timeout, then stops: the topic's
	// poller returns, and no poll comes after.
	waitFor(t, 5*time.Second, "the topic to stop", func() bool {
		return logs.count("topic stopped") == 1 && !slices.ContainsFunc(goroutineStacks(), func(g string) bool {
			return strings.Contains(g, "caddy-pollsse.(*poller).run(")
		})
	})
	stopped := api.count.Load()
	for _, l := range logs.lines() {
		// (A log line's time is rounded to a microsecond or so.)
		if at := l.time(); l.Msg == "topic stopped" && at.Before(left.Add(idle-time.Millisecond)) {
			t.Errorf("the topic stopped %s after the last subscriber left, before the idle timeout", at.Sub(left))
		}
	}
	// The last poll started at most an interval and its jitter before the
	// idle timeout ended.
	polls := api.arrivals("")
	if last := polls[len(polls)-1].Sub(left); last < idle-interval*11/10 {
		t.Errorf("the last poll came %s after the last subscriber left, want polls until the idle timeout, %s", last, idle)
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

// TestRefusedTopicPollsOnItsBackoff: a topic whose upstream refuses its
// forwarded credentials polls on the backoff of its failures (interval×2ⁿ
// up to max_backoff), whatever its visitors do, who get the 401 at once:
// visitors neither hasten its polls nor keep it from polling, so that it
// recovers when the upstream accepts the credential again while refused
// browsers keep coming, and a made-up credential costs the upstream the
// requests of that schedule until idle_timeout after its last visitor.
func TestRefusedTopicPollsOnItsBackoff(t *testing.T) {
	const (
		interval    = 100 * time.Millisecond
		maxBackoff  = 800 * time.Millisecond
		idleTimeout = 2 * time.Second
		// slack is what the upstream's clock may add to or take from a
		// wait between two polls.
		slack = 50 * time.Millisecond
	)
	// The upstream refuses every credential until it is given an answer
	// for it.
	upstream := newFakeAPI(t, "")
	upstream.setFor("", http.StatusUnauthorized, "")
	requests := func(auth string) []time.Time {
		var out []time.Time
		for _, ex := range upstream.exchangeLog() {
			if ex.req.Header.Get("Authorization") == auth {
				out = append(out, ex.at)
			}
		}
		return out
	}
	// The most polls that a topic can make in a time: those of the
	// schedule at its shortest waits.
	fastest := schedule{interval: interval, maxBackoff: maxBackoff, rnd: rndHigh}
	most := func(d time.Duration) int { return outagePolls(fastest, d+slack) }
	handler := func(idle time.Duration) string {
		return fmt.Sprintf(`"upstream":%q,"interval":%q,"max_backoff":%q,"idle_timeout":%q,"forward_headers":["Authorization"]`,
			upstream.URL, interval, maxBackoff, idle)
	}
	base, logs := startCaddyAtDebug(t, "["+
		pollSSERoute("/events", handler(time.Minute))+","+
		pollSSERoute("/made-up", handler(idleTimeout))+"]")

	t.Run("a refused topic recovers while refused visitors keep coming", func(t *testing.T) {
		const token = "rotated"
		// Visitors every interval, as browsers come on the clock, for
		// long enough that the backoff reaches max_backoff.
		for start := time.Now(); time.Since(start) < 3*maxBackoff; time.Sleep(interval) {
			if status, _ := eventSourceStatus(t, base+"/events", bearer(token)); status != http.StatusUnauthorized {
				t.Fatalf("a refused visitor got %d, want 401", status)
			}
		}
		polls := requests("Bearer " + token)
		span := time.Since(polls[0])
		t.Logf("%d upstream requests in %s of refused visitors every %s", len(polls), span.Round(time.Millisecond), interval)
		if len(polls) < 3 || len(polls) > most(span) {
			t.Errorf("%d upstream requests in %s, want 3 to %d: the backoff of the failures", len(polls), span, most(span))
		}

		upstream.setFor("Bearer "+token, http.StatusOK, `{"a":1}`)
		for start := time.Now(); ; time.Sleep(interval) {
			sc := openStreamWith(t, base+"/events", bearer(token), "")
			if sc.resp.StatusCode == http.StatusOK {
				if ev := sc.next(5 * time.Second); ev.name != "snapshot" || ev.data != `{"a":1}` {
					t.Fatalf("got %+v, want the snapshot", ev)
				}
				t.Logf("accepted %s after the upstream was", time.Since(start).Round(time.Millisecond))
				break
			}
			sc.close()
			if sc.resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("a visitor got %d, want 401 or a stream", sc.resp.StatusCode)
			}
			if wait := time.Since(start); wait > maxBackoff+2*time.Second {
				t.Fatalf("still 401 %s after the upstream accepts the credential, with a max_backoff of %s", wait, maxBackoff)
			}
		}
	})

	t.Run("a made-up credential costs the requests of the schedule until its topic idles out", func(t *testing.T) {
		const tokens = 5
		left := map[string]time.Time{}
		for i := range tokens {
			token := fmt.Sprintf("made-up-%d", i)
			if status, _ := eventSourceStatus(t, base+"/made-up", bearer(token)); status != http.StatusUnauthorized {
				t.Errorf("%s: status %d, want 401", token, status)
			}
			left[token] = time.Now()
		}
		waitFor(t, 10*time.Second, "the topics of the made-up credentials to stop", func() bool {
			return logs.count("topic stopped") == tokens
		})
		for token, at := range left {
			polls := requests("Bearer " + token)
			life := at.Add(idleTimeout).Sub(polls[0])
			t.Logf("%s: %d upstream requests in its topic's %s", token, len(polls), life.Round(time.Millisecond))
			if len(polls) < 3 || len(polls) > most(life) {
				t.Errorf("%s: %d upstream requests in its topic's %s, want 3 to %d: the backoff of the failures", token, len(polls), life, most(life))
			}
		}
	})
}

// TestChangeInTheSecondOfAnNginxETagIsDelivered: nginx's ETag for a file is
// its modification time in whole seconds and its size, so that a file
// rewritten with the same size in the same second keeps its ETag, and nginx
// answers 304 to a poll that sends it back. A real nginx serves the
// document: when it changes within the second of the Last-Modified of the
// answer that the stream last had, the change is delivered all the same.
func TestChangeInTheSecondOfAnNginxETagIsDelivered(t *testing.T) {
	dir := t.TempDir()
	port := freePort(t)
	startNginx(t, fmt.Sprintf(`    server {
        listen 127.0.0.1:%d;
        root %s;
    }`, port, dir))
	origin := fmt.Sprintf("http://127.0.0.1:%d", port)
	waitFor(t, 5*time.Second, "nginx to listen", func() bool {
		resp, err := http.Get(origin + "/")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	})
	base := startCaddy(t, "["+pollSSERoute("/events", fmt.Sprintf(`"upstream":%q,"interval":"100ms"`,
		origin+"/{http.request.uri.query.file}"))+"]")

	// Both versions must be written in one second of the clock, with the
	// stream's snapshot of the first in between; a slow machine that
	// crosses a second tries again with another file, another topic.
	for attempt := 0; ; attempt++ {
		if attempt == 3 {
			t.Fatal("the snapshot never came in the second that the file was written")
		}
		now := time.Now()
		time.Sleep(now.Truncate(time.Second).Add(time.Second + 10*time.Millisecond).Sub(now))
		second := time.Now().Truncate(time.Second)
		name := fmt.Sprintf("doc%d.json", attempt)
		file := filepath.Join(dir, name)
		if err := os.WriteFile(file, []byte(`{"v":1}`), 0o644); err != nil {
			t.Fatal(err)
		}
		resp, err := http.Get(origin + "/" + name)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		etag := resp.Header.Get("ETag")
		sc := openStream(t, http.DefaultClient, base+"/events?file="+name, "")
		if ev := sc.next(5 * time.Second); ev.name != "snapshot" || ev.data != `{"v":1}` {
			t.Fatalf("got %+v, want the snapshot of v1", ev)
		}
		if err := os.WriteFile(file, []byte(`{"v":2}`), 0o644); err != nil {
			t.Fatal(err)
		}
		if !time.Now().Truncate(time.Second).Equal(second) {
			t.Logf("v2 was written after the second of v1 (%s): again", second.Format(time.TimeOnly))
			sc.close()
			continue
		}
		// nginx would hide the change from a poll that sent v1's ETag.
		req, _ := http.NewRequest(http.MethodGet, origin+"/"+name, nil)
		req.Header.Set("If-None-Match", etag)
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotModified {
			t.Logf("nginx answers v1's ETag %s for v2 with %s, not 304", etag, resp.Status)
		}
		if ev, ok := sc.nextOrTimeout(3 * time.Second); !ok || ev.name != "patch" || !sameJSON(ev.data, `[{"op":"replace","path":"/v","value":2}]`) {
			t.Fatalf("got %+v, %v; want the patch to v2", ev, ok)
		}
		return
	}
}
