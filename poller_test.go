package pollsse

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
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
func testHub(t *testing.T, change func(*topicConfig)) (*hub, *countingDiffer) {
	t.Helper()
	d, err := newDiffer(modeJSONPatch, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	cd := &countingDiffer{differ: d}
	cfg := topicConfig{
		interval:       10 * time.Millisecond,
		idleTimeout:    time.Minute,
		timeout:        time.Second,
		history:        16,
		differ:         cd,
		maxBackoff:     10 * time.Millisecond,
		maxBody:        defaultMaxBody,
		maxTopics:      defaultMaxTopics,
		maxSubscribers: defaultMaxSubscribers,
	}
	if change != nil {
		change(&cfg)
	}
	h := newHub(cfg, zap.NewNop())
	t.Cleanup(func() {
		h.Destruct()
		assertNoStreamGoroutines(t)
	})
	return h, cd
}

// logFrames returns the frames a new subscriber of t would read now.
func logFrames(t *topic) []string {
	frames, _, _ := t.log.read(0, make([][]byte, 0, 16))
	var out []string
	for _, f := range frames {
		out = append(out, string(f))
	}
	return out
}

func TestConditionalRequests(t *testing.T) {
	var mu sync.Mutex
	doc, etag := `{"v":1}`, `"v1"`
	var full, notModified atomic.Int64
	var firstConditional atomic.Value
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		d, e := doc, etag
		mu.Unlock()
		firstConditional.CompareAndSwap(nil, r.Header.Get("If-None-Match")+"|"+r.Header.Get("If-Modified-Since"))
		w.Header().Set("ETag", e)
		w.Header().Set("Last-Modified", "Sun, 22 Nov 2026 06:00:00 GMT")
		if r.Header.Get("If-None-Match") == e {
			notModified.Add(1)
			w.WriteHeader(http.StatusNotModified)
			return
		}
		full.Add(1)
		io.WriteString(w, d)
	}))
	defer api.Close()
	h, parses := testHub(t, nil)
	tp, err := h.subscribe(api.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer h.unsubscribe(tp)

	waitFor(t, 5*time.Second, "10 answers of 304", func() bool { return notModified.Load() >= 10 })
	if got := firstConditional.Load(); got != "|" {
		t.Errorf("the first poll sent validators %q; it has none", got)
	}
	if n := full.Load(); n != 1 {
		t.Errorf("%d full answers for one version", n)
	}
	if n := parses.parses.Load(); n != 1 {
		t.Errorf("%d bodies parsed for one version and many 304s", n)
	}
	if frames := logFrames(tp); len(frames) != 1 || !strings.Contains(frames[0], "event: snapshot") {
		t.Errorf("the log holds %q, want one snapshot", frames)
	}

	mu.Lock()
	doc, etag = `{"v":2}`, `"v2"`
	mu.Unlock()
	waitFor(t, 5*time.Second, "the new version", func() bool { return full.Load() == 2 })
	waitFor(t, 5*time.Second, "304s for the new version", func() bool { return notModified.Load() >= 15 })
	if n := parses.parses.Load(); n != 2 {
		t.Errorf("%d bodies parsed for two versions", n)
	}
	if frames, _, _ := tp.log.read(1, make([][]byte, 0, 16)); len(frames) != 1 || !strings.Contains(string(frames[0]), `"/v"`) {
		t.Errorf("after the first snapshot the log holds %q, want one patch", frames)
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
			h, _ := testHub(t, func(cfg *topicConfig) { cfg.maxBody = limit })
			h.client.Transport = roundTripFunc(func(r *http.Request) (*http.Response, error) {
				polls.Add(1)
				var body io.ReadCloser = countingBody{&read}
				if tt.body != "" {
					read.Add(int64(len(tt.body)))
					body = io.NopCloser(strings.NewReader(tt.body))
				}
				return &http.Response{StatusCode: http.StatusOK, ContentLength: tt.contentLength, Body: body, Header: http.Header{}, Request: r}, nil
			})
			tp, err := h.subscribe("http://api.test/doc", nil)
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

// TestPollsOfManyTopicsAreSpread starts many topics at the same moment:
// their polls start one after another, a millisecond apart, not in the same
// millisecond; and each topic's later polls are jittered around the
// interval, so that topics do not stay in step.
func TestPollsOfManyTopicsAreSpread(t *testing.T) {
	const topics = 40
	var mu sync.Mutex
	starts := map[string][]time.Time{}
	h, _ := testHub(t, func(cfg *topicConfig) {
		// 40 topics at a 100ms interval leave 2.5ms between polls: the
		// spread is its most, 1ms.
		cfg.interval = 100 * time.Millisecond
		cfg.maxTopics = topics
	})
	h.client.Transport = roundTripFunc(func(r *http.Request) (*http.Response, error) {
		mu.Lock()
		starts[r.URL.Path] = append(starts[r.URL.Path], time.Now())
		mu.Unlock()
		return &http.Response{StatusCode: http.StatusOK, Body: io.NopCloser(strings.NewReader(`{"a":1}`)), Header: http.Header{}, Request: r}, nil
	})
	for i := range topics {
		tp, err := h.subscribe(fmt.Sprintf("http://api.test/items/%d", i), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer h.unsubscribe(tp)
	}
	enough := func() bool {
		mu.Lock()
		defer mu.Unlock()
		for i := range topics {
			if len(starts[fmt.Sprintf("/items/%d", i)]) < 4 {
				return false
			}
		}
		return true
	}
	waitFor(t, 10*time.Second, "4 polls of every topic", enough)
	mu.Lock()
	defer mu.Unlock()

	var first []time.Time
	var waits []time.Duration
	for _, s := range starts {
		first = append(first, s[0])
		for i := 1; i < len(s); i++ {
			waits = append(waits, s[i].Sub(s[i-1]))
		}
	}
	slices.SortFunc(first, func(a, b time.Time) int { return a.Compare(b) })
	most := 0
	for i := range first {
		n := 0
		for j := i; j < len(first) && first[j].Sub(first[i]) < time.Millisecond; j++ {
			n++
		}
		most = max(most, n)
	}
	span := first[len(first)-1].Sub(first[0])
	t.Logf("%d first polls over %s, at most %d within a millisecond", topics, span, most)
	if most > 2 || span < (topics-1)*time.Millisecond*9/10 {
		t.Errorf("%d first polls over %s, %d within one millisecond: not spread", topics, span, most)
	}
	slices.Sort(waits)
	lo, hi := waits[len(waits)/10], waits[len(waits)*9/10]
	t.Logf("waits between polls of a topic at a 100ms interval: 10th percentile %s, 90th %s", lo, hi)
	if lo < 89*time.Millisecond || hi-lo < 5*time.Millisecond {
		t.Errorf("waits between polls from %s to %s: want jitter within 90-110ms", lo, hi)
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

// A fileExchange is one request to a file server and its answer.
type fileExchange struct {
	path, ifModifiedSince string
	status                int
	date, lastModified    string
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
	var mu sync.Mutex
	var exchanges []fileExchange
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The Date that net/http would set, set here so that it can be
		// recorded.
		w.Header().Set("Date", time.Now().UTC().Format(http.TimeFormat))
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		files.ServeHTTP(rec, r)
		mu.Lock()
		defer mu.Unlock()
		exchanges = append(exchanges, fileExchange{
			path:            r.URL.Path,
			ifModifiedSince: r.Header.Get("If-Modified-Since"),
			status:          rec.status,
			date:            w.Header().Get("Date"),
			lastModified:    w.Header().Get("Last-Modified"),
		})
	}))
	t.Cleanup(upstream.Close)
	exchangesOf := func(path string) []fileExchange {
		mu.Lock()
		defer mu.Unlock()
		var out []fileExchange
		for _, e := range exchanges {
			if e.path == path {
				out = append(out, e)
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
		// Start just after a second begins.
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

// A statusRecorder records the status of a response.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(status int) {
	r.status = status
	r.ResponseWriter.WriteHeader(status)
}

// TestTopicIDsTellTopicsApart: the topics of two users of one upstream URL
// log lines that differ in their topic field, which never holds their
// credentials, and each user's status events carry the id of the log lines
// of that user's topic.
func TestTopicIDsTellTopicsApart(t *testing.T) {
	api := newUsersAPI(t)
	base, logFile := startCaddyLoggingAtDebug(t, pollSSERoute("/events", fmt.Sprintf(
		`"upstream":%q,"interval":"100ms","max_backoff":"100ms","forward_headers":["Authorization"]`, api.URL+"/account")), "")
	t.Cleanup(func() {
		stopCaddy(t)
		assertNoStreamGoroutines(t)
	})
	users := []string{"alice", "bob"}
	streams := map[string]*streamClient{}
	for _, user := range users {
		sc := openStreamWith(t, base+"/events", bearer(user+"-token"), "")
		if ev := sc.next(5 * time.Second); ev.name != "snapshot" {
			t.Fatalf("%s got %+v", user, ev)
		}
		streams[user] = sc
	}
	// Alice's credential is revoked, bob's document breaks: each topic
	// fails in its own way, then recovers.
	api.setDoc("alice-token", "")
	api.setDoc("bob-token", "not JSON")
	ids := map[string]string{}
	for _, user := range users {
		sd := decodeStatus(t, streams[user].next(5*time.Second))
		if sd.Upstream != "down" || len(sd.Topic) != 12 || strings.Trim(sd.Topic, "0123456789abcdef") != "" {
			t.Errorf("%s got %+v, want down with a topic of 12 hex digits", user, sd)
		}
		ids[user] = sd.Topic
	}
	if ids["alice"] == ids["bob"] {
		t.Errorf("both users' status events name the topic %q", ids["alice"])
	}
	api.setDoc("alice-token", `{"user":"alice","balance":1}`)
	api.setDoc("bob-token", `{"user":"bob","balance":1}`)
	for _, user := range users {
		if sd := decodeStatus(t, streams[user].next(5*time.Second)); sd.Upstream != "up" || sd.Topic != ids[user] {
			t.Errorf("%s got %+v, want up with topic %q", user, sd, ids[user])
		}
	}

	// The log lines of each topic, by message.
	lines := map[string][]string{} // topic id + " " + message -> errors
	for _, l := range readLogLines(t, logFile) {
		for _, secret := range []string{"alice-token", "bob-token"} {
			if strings.Contains(l.raw, secret) {
				t.Errorf("a log line holds %q: %s", secret, l.raw)
			}
		}
		if l.Logger != "http.handlers.poll_sse" || l.Upstream == "" {
			continue
		}
		var fields struct {
			Topic string `json:"topic"`
			Error string `json:"error"`
		}
		if err := json.Unmarshal([]byte(l.raw), &fields); err != nil {
			t.Fatal(err)
		}
		if fields.Topic != ids["alice"] && fields.Topic != ids["bob"] {
			t.Errorf("a line of a topic names the topic %q, not one that its subscribers were told: %s", fields.Topic, l.raw)
		}
		key := fields.Topic + " " + l.Msg
		lines[key] = append(lines[key], fields.Error)
	}
	for user, failure := range map[string]string{"alice": "401", "bob": "not valid JSON"} {
		id := ids[user]
		for _, msg := range []string{"topic started", "upstream recovered"} {
			if n := len(lines[id+" "+msg]); n != 1 {
				t.Errorf("%s's topic %s: %d lines %q, want 1", user, id, n, msg)
			}
		}
		if errs := lines[id+" upstream failing"]; len(errs) != 1 || !strings.Contains(errs[0], failure) {
			t.Errorf("%s's topic %s: lines \"upstream failing\" with errors %q, want one with %q", user, id, errs, failure)
		}
	}
}
