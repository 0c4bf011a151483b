package pollsse

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
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
				if frames := logFrames(tp); len(frames) != 0 {
					t.Errorf("a body over max_body made %q", frames)
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
