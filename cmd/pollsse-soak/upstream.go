package main

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The upstream is the legacy JSON API that Caddy polls. It serves
//
//	/doc/<name>        the main topics, one mutating document each
//	/user/feed         one document per user, by the Authorization header
//	/tmpl/<name>?q=<q> a document made from name, q and the time, for the
//	                   path-templated topics that clients create by the hundred
//
// It keeps the hash of every version it served (and the time it first
// served it to each Caddy instance), so that a client's document can be
// checked against the version it claims after every event; it fails polls
// at random in every way it knows; and it checks, for each topic and each
// poller, that polls come at most once per interval, fewer under backoff,
// one at a time.
type upstream struct {
	url      string
	srv      *http.Server
	canary   *http.Server
	canaryAt string
	cfg      timings
	v        violations
	start    time.Time

	// faultPerMille is the share of polls that fail, set per phase.
	faultPerMille atomic.Int32
	// identify, when set, names the Caddy process that opened a
	// connection, for the polls that come without X-Soak-Instance.
	identify atomic.Pointer[func(net.Conn) string]
	// storeTrouble, when set, tells whether an instance found its shared
	// store out of reach between two times: each such instance polls its
	// topics alone meanwhile, as the redis store does, and the polls of
	// a topic over all instances are more than one per interval then.
	storeTrouble atomic.Pointer[func(from, to time.Time) bool]
	// excused counts the polls beyond the limits that a store's outage
	// explained.
	excused int
	// started, when set, tells whether a topic may have started anew
	// between two times, after it had no stream for its idle timeout; and
	// restarts counts the runs of failures that such a start explained.
	started  atomic.Pointer[func(run topicRun, from, to time.Time) bool]
	restarts int

	mu     sync.Mutex
	topics map[string]*upTopic
	series map[string]*pollSeries
	faults map[string]int
	polls  int64
}

// timings are the settings of the handlers that the upstream's checks
// depend on.
type timings struct {
	interval   time.Duration
	timeout    time.Duration
	maxBackoff time.Duration
	maxBody    int64
	// shared is set when the instances share a store (redis): every
	// instance streams the versions that one of them polled, and the
	// polls of a topic are counted over all of them.
	shared bool
}

// violations receives the broken invariants of every part of the soak.
type violations interface {
	fail(format string, args ...any)
}

// An upTopic is one document of the upstream and its versions.
type upTopic struct {
	key  string
	kind docKind
	// user is the user whose document this is, for /user/feed.
	user string
	// lastModified makes the answers carry Last-Modified and honour
	// If-Modified-Since; shuffle serves each answer with its members in
	// a random order; generated adds a generated_at member that the
	// handler is configured to ignore.
	lastModified, shuffle, generated bool
	// flap makes every other poll fail with 503, whatever the phase.
	flap  bool
	flaps int

	mu       sync.Mutex
	rng      *rand.Rand
	m        *mutator
	v        int
	body     []byte
	modified time.Time
	versions map[int]*version
	oldest   int
	// served is the latest version served to each Caddy instance, and when;
	// marks are the versions served to each, newest last, each when it was
	// first served.
	served map[string]servedMark
	marks  map[string][]servedMark
}

// sharedMarks is the key of the versions served to any instance, when the
// instances share a store.
const sharedMarks = "cluster"

// marksKey is the key of the versions served to the Caddy process of
// runID for a route of generation gen (X-Soak-Gen): its own, or, when the
// processes share a store, the one of all that run the route's topic in
// that generation, which share its topic in the store. Between a reload of
// one instance that changes a route's configuration and the reload of the
// others, the two generations are two topics, polled apart.
func (c timings) marksKey(runID, gen string) string {
	if c.shared {
		return sharedMarks + " " + gen
	}
	return runID
}

// A version is one state of a topic's document.
type version struct {
	hash    docHash
	created time.Time
	// body is kept for the last few versions, to show in a report.
	body []byte
}

type servedMark struct {
	v  int
	at time.Time
}

// versionsKept bounds the versions whose hash a topic keeps: the oldest
// are dropped once they are older than versionsAge.
const (
	versionsKept   = 20000
	versionsAge    = 10 * time.Minute
	versionBodies  = 8
	bigBodiesKept  = 2
	canaryResponse = `{"canary":true}`
)

func newUpstream(cfg timings, v violations) (*upstream, error) {
	u := &upstream{cfg: cfg, v: v, start: time.Now(), topics: map[string]*upTopic{}, series: map[string]*pollSeries{}, faults: map[string]int{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	u.url = "http://" + ln.Addr().String()
	// Idle connections close soon, so that those that Caddy opened in a
	// burst do not count against its baseline of open files.
	u.srv = &http.Server{Handler: http.HandlerFunc(u.serve), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Second,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			// Not here, on the goroutine that accepts every
			// connection: on the connection's first request.
			if id := u.identify.Load(); id != nil {
				ctx = context.WithValue(ctx, pollerKey{}, sync.OnceValue(func() string { return (*id)(c) }))
			}
			return ctx
		}}
	go u.srv.Serve(ln)
	cln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	u.canaryAt = "http://" + cln.Addr().String()
	u.canary = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v.fail("a poll followed a redirect to another host: the canary received %s %s", r.Method, r.URL)
		w.Write([]byte(canaryResponse))
	})}
	go u.canary.Serve(cln)
	return u, nil
}

func (u *upstream) close() {
	u.srv.Close()
	u.canary.Close()
}

// addTopic adds a mutating document at key ("/doc/<name>" or "user:<name>").
func (u *upstream) addTopic(key string, kind docKind, seed uint64, opts func(*upTopic)) *upTopic {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	t := &upTopic{key: key, kind: kind, rng: rng, versions: map[int]*version{}, served: map[string]servedMark{}, marks: map[string][]servedMark{}, oldest: 1}
	t.m = newMutator(kind, rand.New(rand.NewPCG(seed, 0xd0c)))
	if opts != nil {
		opts(t)
	}
	t.publish()
	u.mu.Lock()
	u.topics[key] = t
	u.mu.Unlock()
	return t
}

// publish makes the document's current state its next version. t.mu must
// be held, or t not yet shared.
func (t *upTopic) publish() {
	t.v++
	body := encode(t.m.value(t.v))
	now := time.Now()
	t.body, t.modified = body, now
	t.versions[t.v] = &version{hash: hashOf(body), created: now, body: body}
	if old := t.versions[t.v-versionBodies]; old != nil {
		old.body = nil
	}
	if t.kind == kindBig {
		if old := t.versions[t.v-bigBodiesKept]; old != nil {
			old.body = nil
		}
	}
	for t.oldest < t.v && (len(t.versions) > versionsKept || now.Sub(t.versions[t.oldest].created) > versionsAge) {
		delete(t.versions, t.oldest)
		t.oldest++
	}
}

// mutate changes the document once and publishes the new version.
func (t *upTopic) mutate() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.m.mutate()
	t.publish()
}

// run mutates the document until ctx ends, every pause() or so, with quiet
// stretches now and then, so that heartbeats and Last-Modified get their
// turn.
func (t *upTopic) run(ctx context.Context, pause func(*rand.Rand) time.Duration) {
	t.mu.Lock()
	rng := rand.New(rand.NewPCG(t.rng.Uint64(), 1))
	t.mu.Unlock()
	for {
		d := pause(rng)
		if rng.IntN(12) == 0 {
			d = 1500*time.Millisecond + time.Duration(rng.Int64N(int64(2*time.Second)))
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
		t.mutate()
	}
}

// check tells whether canon, the canonical document of a client, is the
// version v of the topic, and describes the difference if not.
func (t *upTopic) check(v int, canon []byte) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if v > t.v {
		return fmt.Errorf("it claims version %d, which the upstream has not made yet (latest %d)", v, t.v)
	}
	ver := t.versions[v]
	if ver == nil {
		return fmt.Errorf("it claims version %d, which the upstream no longer keeps (older than %s; it keeps %d to %d)", v, versionsAge, t.oldest, t.v)
	}
	if hashOf(canon) == ver.hash {
		return nil
	}
	if ver.body != nil {
		return fmt.Errorf("it differs from version %d:\n  client:   %s\n  upstream: %s", v, clip(canon), clip(ver.body))
	}
	return fmt.Errorf("it differs from version %d (whose body is no longer kept):\n  client: %s", v, clip(canon))
}

// maxMarks bounds the served versions a topic keeps per instance.
const maxMarks = 1024

// firstServedAfter returns the oldest version newer than v that was first
// served to a Caddy instance at notBefore or later, and when.
func (t *upTopic) firstServedAfter(instance string, v int, notBefore time.Time) (servedMark, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	marks := t.marks[instance]
	i, _ := slices.BinarySearchFunc(marks, v+1, func(m servedMark, v int) int { return m.v - v })
	for ; i < len(marks); i++ {
		if !marks[i].at.Before(notBefore) {
			return marks[i], true
		}
	}
	return servedMark{}, false
}

// current returns the topic's latest version.
func (t *upTopic) current() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.v
}

func clip(b []byte) string {
	if len(b) > 600 {
		return string(b[:300]) + " … " + string(b[len(b)-300:])
	}
	return string(b)
}

// tmplDoc is the document of a path-templated topic at version v: made of
// the placeholder values that the upstream received, so that a client can
// check that its topic is the one it asked for.
func tmplDoc(name, q string, v int) []byte {
	return encode(map[string]any{"topic": name, "q": q, "v": v, "data": []any{v % 7, v % 11, strings.Repeat("t", v%5)}})
}

// tmplPeriod is how often the document of a templated topic changes.
func tmplPeriod(name, q string) time.Duration {
	h := uint64(14695981039346656037)
	for _, c := range []byte(name + "?" + q) {
		h = (h ^ uint64(c)) * 1099511628211
	}
	return time.Duration(300+h%900) * time.Millisecond
}

// tmplVersion is the version of a templated topic's document at at.
func (u *upstream) tmplVersion(name, q string, at time.Time) int {
	return 1 + int(at.Sub(u.start)/tmplPeriod(name, q))
}

// Users of /user/feed, each with a token of its own; a token that the
// upstream does not know is answered 401.
func userToken(user string) string { return "tok-" + user + "-5f3a" }

func (u *upstream) serve(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	hop, _ := strconv.Atoi(q.Get("hop"))
	// A redirect that the upstream sent is part of the poll it answered:
	// not counted, never failed.
	redirected := hop > 0
	var t *upTopic
	var key string
	switch {
	case strings.HasPrefix(r.URL.Path, "/doc/"):
		key = r.URL.Path
	case r.URL.Path == "/user/feed":
		user, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer tok-")
		user, ok2 := strings.CutSuffix(user, "-5f3a")
		if !ok || !ok2 {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		key = "user:" + user
	case strings.HasPrefix(r.URL.Path, "/tmpl/"):
		u.serveTemplate(w, r)
		return
	default:
		http.NotFound(w, r)
		return
	}
	u.mu.Lock()
	t = u.topics[key]
	u.mu.Unlock()
	if t == nil {
		http.NotFound(w, r)
		return
	}
	instance := r.Header.Get("X-Soak-Instance")
	if poller, ok := r.Context().Value(pollerKey{}).(func() string); ok && instance == "" {
		instance = poller()
	}
	var p *poll
	if !redirected {
		// Polls are counted per topic and poller: per instance, or over
		// all instances when they share a store, which polls each topic
		// on one instance at a time. The backoff after failures is that
		// of one instance's poller, which starts anew when another one
		// takes the topic over.
		run := topicRun{key: key, gen: r.Header.Get("X-Soak-Gen"), instance: instance}
		seriesKey := run.String()
		if u.cfg.shared {
			seriesKey = key + " gen " + run.gen + " on every instance"
		}
		p = u.arrive(seriesKey, run, time.Now(), r.RemoteAddr+" "+r.URL.RequestURI())
		// A poll that Caddy gave up on is over, whatever the handler
		// still does.
		stop := context.AfterFunc(r.Context(), func() { u.release(p) })
		defer stop()
	}
	fault := ""
	if !redirected {
		fault = u.pickFault(t, r)
	} else if q.Get("loop") != "" {
		fault = "redirect loop"
	}
	if p != nil {
		u.mu.Lock()
		p.fault = fault
		u.mu.Unlock()
	}
	finished := func() {}
	if p != nil {
		finished = func() { u.release(p) }
	}
	outcome, retryAfter := u.answer(w, r, t, fault, hop, instance, finished)
	if p != nil {
		u.done(p, outcome, retryAfter, fault)
	}
}

// A topicRun is a topic on one Caddy process: the upstream's key of its
// document, the generation of its route (X-Soak-Gen) and the process's run
// id. Its polls make one schedule, unless the topic stopped for being idle
// and started anew in between.
type topicRun struct{ key, gen, instance string }

func (r topicRun) String() string { return r.key + " gen " + r.gen + " on " + r.instance }

// pollerKey is the key of the context value of a connection that names the
// Caddy process that opened it (upstream.identify).
type pollerKey struct{}

// Outcomes of a poll, as Caddy sees them.
type outcome int

const (
	outcomeOK outcome = iota
	outcomeNotModified
	outcomeFailed
)

// faultKinds are the ways the upstream fails a poll, each picked as often.
var faultKinds = []string{
	"500", "502", "503", "429 Retry-After", "503 Retry-After date",
	"hang past timeout", "reset mid-body", "truncated body", "invalid JSON",
	"HTML error page", "HTML 200", "body over max_body", "body over max_body, chunked",
	"trickle within timeout", "trickle past timeout",
	"304 without a changed ETag", "304 with a changed ETag",
	"redirect on the origin", "redirect elsewhere", "redirect loop",
}

func (u *upstream) pickFault(t *upTopic, r *http.Request) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.flap {
		if t.flaps++; t.flaps%2 == 0 {
			return "503"
		}
		return ""
	}
	if int32(t.rng.IntN(1000)) >= u.faultPerMille.Load() {
		return ""
	}
	f := faultKinds[t.rng.IntN(len(faultKinds))]
	if strings.HasPrefix(f, "304") && r.Header.Get("If-None-Match") == "" {
		return ""
	}
	return f
}

// answer writes the answer to a poll of t under fault ("" for none) and
// returns what Caddy makes of it.
// finished is called once the last byte that Caddy reads is written.
func (u *upstream) answer(w http.ResponseWriter, r *http.Request, t *upTopic, fault string, hop int, instance string, finished func()) (outcome, time.Duration) {
	t.mu.Lock()
	v, body, modified := t.v, t.body, t.modified
	rng := rand.New(rand.NewPCG(t.rng.Uint64(), uint64(v)))
	t.mu.Unlock()
	etag := fmt.Sprintf(`"%s-v%d"`, strings.NewReplacer("/", "", ":", "").Replace(t.key), v)
	h := w.Header()
	hijack := func() net.Conn {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return nil
		}
		return conn
	}
	redirect := func(loop bool) {
		q := url.Values{"hop": {strconv.Itoa(hop + 1)}}
		if loop {
			q.Set("loop", "1")
		}
		h.Set("Location", r.URL.Path+"?"+q.Encode())
		w.WriteHeader(http.StatusFound)
	}
	switch fault {
	case "500", "502", "503":
		code, _ := strconv.Atoi(fault)
		http.Error(w, "upstream trouble", code)
		return outcomeFailed, 0
	case "429 Retry-After":
		h.Set("Retry-After", "1")
		http.Error(w, "slow down", http.StatusTooManyRequests)
		return outcomeFailed, time.Second
	case "503 Retry-After date":
		at := time.Now().Add(2 * time.Second).UTC()
		h.Set("Retry-After", at.Format(http.TimeFormat))
		http.Error(w, "maintenance", http.StatusServiceUnavailable)
		// The date has a precision of a second.
		return outcomeFailed, time.Until(at.Truncate(time.Second))
	case "hang past timeout":
		select {
		case <-r.Context().Done():
		case <-time.After(u.cfg.timeout + 2*time.Second):
		}
		return outcomeFailed, 0
	case "reset mid-body", "truncated body":
		if conn := hijack(); conn != nil {
			fmt.Fprintf(conn, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", len(body))
			conn.Write(body[:len(body)/2])
			if fault == "reset mid-body" {
				conn.(*net.TCPConn).SetLinger(0)
			}
			conn.Close()
		}
		return outcomeFailed, 0
	case "invalid JSON":
		h.Set("Content-Type", "application/json")
		w.Write(append(bytes.Clone(body[:len(body)/2]), `,,}`...))
		return outcomeFailed, 0
	case "HTML error page":
		h.Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusBadGateway)
		w.Write([]byte("<html><body><h1>502 Bad Gateway</h1></body></html>"))
		return outcomeFailed, 0
	case "HTML 200":
		h.Set("Content-Type", "text/html")
		w.Write([]byte("<!doctype html><html><body>Service temporarily unavailable</body></html>"))
		return outcomeFailed, 0
	case "body over max_body":
		h.Set("Content-Type", "application/json")
		h.Set("Content-Length", strconv.FormatInt(u.cfg.maxBody+1024, 10))
		w.WriteHeader(http.StatusOK)
		w.Write(bytes.Repeat([]byte(" "), 64<<10))
		return outcomeFailed, 0
	case "body over max_body, chunked":
		h.Set("Content-Type", "application/json")
		pad := bytes.Repeat([]byte(" "), 64<<10)
		for n := int64(0); n <= u.cfg.maxBody; n += int64(len(pad)) {
			if _, err := w.Write(pad); err != nil {
				break
			}
		}
		return outcomeFailed, 0
	case "trickle past timeout":
		h.Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		for deadline := time.Now().Add(u.cfg.timeout + 2*time.Second); time.Now().Before(deadline); {
			if _, err := w.Write([]byte(" ")); err != nil {
				break
			}
			http.NewResponseController(w).Flush()
			select {
			case <-r.Context().Done():
				return outcomeFailed, 0
			case <-time.After(50 * time.Millisecond):
			}
		}
		return outcomeFailed, 0
	case "304 without a changed ETag":
		h.Set("ETag", r.Header.Get("If-None-Match"))
		w.WriteHeader(http.StatusNotModified)
		return outcomeNotModified, 0
	case "304 with a changed ETag":
		h.Set("ETag", etag)
		w.WriteHeader(http.StatusNotModified)
		return outcomeNotModified, 0
	case "redirect on the origin":
		redirect(false)
		return outcomeOK, 0
	case "redirect loop":
		redirect(true)
		return outcomeFailed, 0
	case "redirect elsewhere":
		h.Set("Location", u.canaryAt+"/doc")
		w.WriteHeader(http.StatusFound)
		return outcomeFailed, 0
	}
	// A good answer, conditional on the validators Caddy sent back.
	h.Set("ETag", etag)
	if t.lastModified {
		h.Set("Last-Modified", modified.UTC().Format(http.TimeFormat))
	}
	if inm := r.Header.Get("If-None-Match"); inm != "" {
		if inm == etag {
			w.WriteHeader(http.StatusNotModified)
			return outcomeNotModified, 0
		}
	} else if ims, err := http.ParseTime(r.Header.Get("If-Modified-Since")); err == nil && t.lastModified && !modified.Truncate(time.Second).After(ims) {
		w.WriteHeader(http.StatusNotModified)
		return outcomeNotModified, 0
	}
	out := body
	if t.shuffle || t.generated {
		doc, _ := decode(body)
		if t.generated {
			doc.(map[string]any)["generated_at"] = time.Now().Format(time.RFC3339Nano)
		}
		if t.shuffle {
			out = shuffled(doc, rng)
		} else {
			out = encode(doc)
		}
	}
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(out)))
	if fault == "trickle within timeout" {
		w.WriteHeader(http.StatusOK)
		piece := max(len(out)/4, 1)
		for i := 0; i < len(out); i += piece {
			if i > 0 {
				time.Sleep(u.cfg.timeout / 40)
			}
			if _, err := w.Write(out[i:min(i+piece, len(out))]); err != nil {
				return outcomeFailed, 0
			}
			http.NewResponseController(w).Flush()
		}
	} else if _, err := w.Write(out); err != nil {
		return outcomeFailed, 0
	}
	if err := http.NewResponseController(w).Flush(); err != nil {
		return outcomeFailed, 0
	}
	finished()
	t.mu.Lock()
	if key := u.cfg.marksKey(instance, r.Header.Get("X-Soak-Gen")); t.served[key].v < v {
		mark := servedMark{v, time.Now()}
		t.served[key] = mark
		marks := append(t.marks[key], mark)
		if len(marks) > maxMarks {
			marks = append(marks[:0], marks[len(marks)-maxMarks/2:]...)
		}
		t.marks[key] = marks
	}
	t.mu.Unlock()
	return outcomeOK, 0
}

// serveTemplate answers a path-templated topic.
func (u *upstream) serveTemplate(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.URL.Path, "/tmpl/")
	q := r.URL.Query().Get("q")
	u.mu.Lock()
	u.polls++
	u.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.Write(tmplDoc(name, q, u.tmplVersion(name, q, time.Now())))
}

// A pollSeries is the polls of one topic by one poller: one key per topic,
// X-Soak-Gen (which a reload that changes the topics' configuration
// changes) and X-Soak-Instance (which names the Caddy process).
type pollSeries struct {
	key string
	// recent are the arrivals of the last windowIntervals; run is the
	// run of failed polls that ends with the last one.
	recent []*poll
	run    []*poll
	last   *poll
}

// A poll is one request of a poller and what it met.
type poll struct {
	s          *pollSeries
	at         time.Time
	fault      string
	outcome    outcome
	retryAfter time.Duration
	// failures counts the failed polls in a row that end with this one.
	failures int
	done     bool
	released bool
	// from is the poller's address and the request's target.
	from string
}

// windowIntervals is the width of the window in which polls are counted,
// in intervals; maxPollsPerWindow is how many fit in it: the wait after a
// success is the interval less up to a tenth, and arrivals may bunch up by
// a moment on a loaded machine, which lets two more in.
const (
	windowIntervals   = 20
	maxPollsPerWindow = 25
	// failureRun is the length of a run of failed polls whose span is
	// checked against the backoff, and arrivalSlack what the arrival of
	// its first poll may lag behind the start of the poll on a loaded
	// machine.
	failureRun   = 4
	arrivalSlack = 150 * time.Millisecond
	// inFlightGrace is how long after the next poll arrives the upstream
	// may take to see that Caddy gave up on the one before.
	inFlightGrace = time.Second
)

// arrive records the arrival of a poll and checks it against the poller's
// earlier polls: one at a time; at most one per interval, counted over a
// window; and fewer under backoff, over the span of a run of failures,
// whose waits (from the start of each poll) add up to at least what the
// schedule allows.
func (u *upstream) arrive(key string, run topicRun, at time.Time, from string) *poll {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.polls++
	s := u.seriesOf(key)
	rs := u.seriesOf(run.String())
	p := &poll{s: s, at: at, from: from}
	if prev := s.last; prev != nil && !prev.released {
		// Caddy sends a poll only once it has the answer to the one before
		// or has given up on it (a timeout), which the upstream sees a
		// moment later, when the connection closes: the one before must
		// end so, soon.
		time.AfterFunc(inFlightGrace, func() {
			u.mu.Lock()
			defer u.mu.Unlock()
			if !prev.released && u.excuse(prev.at, at) {
				return
			}
			if !prev.released {
				u.v.fail("upstream: a poll of %s arrived %s after the one before, which was still in flight %s later (%s): more than one request per topic at a time; from %s, then %s",
					key, at.Sub(prev.at).Round(time.Millisecond), inFlightGrace, prev.fault, prev.from, from)
			}
		})
	}
	if prev := rs.last; prev != nil && prev.done && prev.outcome == outcomeFailed {
		rs.run = append(rs.run, prev)
		if len(rs.run) > failureRun {
			rs.run = append(rs.run[:0], rs.run[len(rs.run)-failureRun:]...)
		}
		if len(rs.run) == failureRun {
			first := rs.run[len(rs.run)-failureRun]
			var least time.Duration
			for _, f := range rs.run[len(rs.run)-failureRun:] {
				// The poller may count one failure fewer than the
				// upstream (a poll it timed out on that the upstream
				// answered in time is one more), never more.
				least += backoffBound(u.cfg, max(f.failures-1, 1), f.retryAfter)
			}
			if span := at.Sub(first.at); span < least-arrivalSlack {
				var faults []string
				for _, f := range rs.run[len(rs.run)-failureRun:] {
					faults = append(faults, fmt.Sprintf("%s +%s", f.fault, f.at.Sub(first.at).Round(time.Millisecond)))
				}
				// An instance that finds its store out of reach
				// polls anew on its own.
				begin := first.at
				time.AfterFunc(troubleLag, func() {
					u.mu.Lock()
					defer u.mu.Unlock()
					if !u.excuse(begin, at) && !u.startedAnew(run, begin, at) {
						u.v.fail("upstream: %d failed polls of %s and the next came within %s, sooner than the backoff allows (%s): %s, then %s",
							failureRun, run, span.Round(time.Millisecond), least, strings.Join(faults, ", "), from)
					}
				})
			}
		}
		p.failures = prev.failures
	} else {
		rs.run = rs.run[:0]
	}
	cut := at.Add(-windowIntervals * u.cfg.interval)
	i := 0
	for i < len(s.recent) && !s.recent[i].at.After(cut) {
		i++
	}
	s.recent = append(s.recent[i:], p)
	if n := len(s.recent); n > maxPollsPerWindow {
		from := s.recent[0].at
		// A store's outage is seen a moment later.
		time.AfterFunc(troubleLag, func() {
			u.mu.Lock()
			defer u.mu.Unlock()
			if !u.excuse(from, at) {
				u.v.fail("upstream: %d polls of %s within %s: more than one per interval (%s)", n, key, windowIntervals*u.cfg.interval, u.cfg.interval)
			}
		})
	}
	s.last, rs.last = p, p
	return p
}

// troubleLag is how long after a moment the soak may take to learn that an
// instance found its store out of reach then.
const troubleLag = 1500 * time.Millisecond

// excuse tells whether an instance found the shared store out of reach
// between from and to (give or take a second), which explains polls beyond
// the limits, and counts them. u.mu must be held.
func (u *upstream) excuse(from, to time.Time) bool {
	trouble := u.storeTrouble.Load()
	if trouble == nil || !(*trouble)(from.Add(-time.Second), to.Add(time.Second)) {
		return false
	}
	u.excused++
	return true
}

// startedAnew tells whether the topic of run may have stopped for being
// idle and started again between from and to: the new topic's schedule
// owes nothing to the failures of the one before. u.mu must be held.
func (u *upstream) startedAnew(run topicRun, from, to time.Time) bool {
	started := u.started.Load()
	if started == nil || !(*started)(run, from, to) {
		return false
	}
	u.restarts++
	return true
}

// excusedPolls returns how many polls beyond the limits a store's outage
// explained.
func (u *upstream) excusedPolls() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.excused
}

// restartedRuns returns how many runs of failures a topic's new start
// explained.
func (u *upstream) restartedRuns() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.restarts
}

// seriesOf returns the series of key, made on first use. u.mu must be held.
func (u *upstream) seriesOf(key string) *pollSeries {
	s := u.series[key]
	if s == nil {
		s = &pollSeries{key: key}
		u.series[key] = s
	}
	return s
}

// release counts a poll as no longer in flight, once.
func (u *upstream) release(p *poll) {
	u.mu.Lock()
	defer u.mu.Unlock()
	p.released = true
}

// done records what a poll met.
func (u *upstream) done(p *poll, o outcome, retryAfter time.Duration, fault string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	p.released = true
	p.outcome, p.retryAfter, p.fault, p.done = o, retryAfter, fault, true
	if o == outcomeFailed {
		p.failures++
	} else {
		p.failures = 0
	}
	if fault != "" {
		u.faults[fault]++
	}
}

// backoffBound is the shortest wait that the handler's schedule allows
// after failures failed polls in a row, the last with a Retry-After of
// retryAfter: interval×2ⁿ up to max_backoff, less a quarter, never less
// than the interval; a Retry-After is honoured up to max_backoff.
func backoffBound(c timings, failures int, retryAfter time.Duration) time.Duration {
	ceiling := max(c.maxBackoff, c.interval)
	d := c.interval
	for range failures {
		if d >= ceiling/2 {
			d = ceiling
			break
		}
		d *= 2
	}
	bound := max(d-d/4, c.interval)
	if retryAfter > 0 {
		bound = max(bound, min(retryAfter, ceiling))
	}
	return bound
}

// faultCounts returns how many polls met each fault so far, and all polls.
func (u *upstream) faultCounts() (map[string]int, int64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	out := make(map[string]int, len(u.faults))
	for k, v := range u.faults {
		out[k] = v
	}
	return out, u.polls
}

// topic returns the topic at key.
func (u *upstream) topic(key string) *upTopic {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.topics[key]
}
