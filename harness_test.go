package pollsse

import (
	"bufio"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine outlives them all,
// but for those that the in-process Caddy leaves to end on their own.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(caddyShutdowns{m},
		// Caddy's TLS app cleans its storage when it starts, under a lock
		// file that certmagic's FileStorage keeps fresh from a goroutine,
		// which sees the lock released only when it next wakes, up to 5s
		// later.
		goleak.IgnoreAnyFunction("github.com/caddyserver/certmagic.keepLockfileFresh"),
	)
}

// caddyShutdowns runs the tests of m, then waits until the servers of the
// last Caddy have shut down: caddy.Stop returns once they have begun to,
// and each shuts down on a goroutine of caddyhttp.(*App).stop until its
// last connection has closed (an HTTP/2 one a second after its GOAWAY).
type caddyShutdowns struct{ m *testing.M }

func (c caddyShutdowns) Run() int {
	code := c.m.Run()
	eventually(10*time.Second, func() bool {
		return !slices.ContainsFunc(goroutineStacks(), func(g string) bool {
			return strings.Contains(g, "caddyhttp.(*App).stop")
		})
	})
	return code
}

// portsGiven holds the ports that freePort has returned.
var portsGiven sync.Map

// freePort returns a loopback TCP port that was free a moment ago.
//
// It is chosen below Linux's ephemeral range (32768 and up), from which
// the kernel takes the local ports of outgoing connections and of port 0:
// a port from there, free when asked, may be the source port of one of the
// thousands of connections that other tests open before a Caddy process
// binds it.
func freePort(t testing.TB) int {
	t.Helper()
	for range 1000 {
		port := 20000 + rand.IntN(12000)
		// A port is handed out once: one test often asks for several
		// before it listens on any of them.
		if _, taken := portsGiven.LoadOrStore(port, true); taken {
			continue
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		ln.Close()
		return port
	}
	t.Fatal("no free port in 20000-31999")
	return 0
}

// caddySettings are what the options of startCaddy change in the
// configuration that caddyConfig makes.
type caddySettings struct {
	// logFile, when set, is where Caddy writes its log, every line at
	// DEBUG, as JSON.
	logFile string
	// accessLogs, when set, is the server's access log configuration
	// (JSON).
	accessLogs string
	// serverFields are more fields of the server's JSON object, such as
	// its timeouts.
	serverFields string
}

// A caddyOption changes the configuration of startCaddy.
type caddyOption func(*caddySettings)

// withAccessLogs gives the server of startCaddy the access log
// configuration cfg (JSON, such as `{}` or `{"skip_hosts":[...]}`).
func withAccessLogs(cfg string) caddyOption {
	return func(s *caddySettings) { s.accessLogs = cfg }
}

// withServerFields gives the server of startCaddy more fields of its JSON
// object (such as `"read_header_timeout":"2s"`).
func withServerFields(fields string) caddyOption {
	return func(s *caddySettings) { s.serverFields = fields }
}

// caddyConfig returns a Caddy JSON config with one HTTP server on port whose
// routes are given as JSON.
func caddyConfig(t testing.TB, port int, routes string) []byte {
	t.Helper()
	return caddyConfigWith(t, port, routes, caddySettings{})
}

func caddyConfigWith(t testing.TB, port int, routes string, s caddySettings) []byte {
	t.Helper()
	logging := `{"logs": {"default": {"level": "ERROR"}}}`
	if os.Getenv("POLLSSE_TEST_LOG") != "" {
		logging = `{"logs": {"default": {"level": "DEBUG"}}}`
	}
	if s.logFile != "" {
		// Not rolled: Caddy does not close the log writers of a
		// configuration that it unloads (Logging.openLogs registers
		// closeLogs with OnCancel on a copy of its Context), and a rolling
		// writer's goroutine would outlive the test.
		logging = fmt.Sprintf(`{"logs": {"default": {"level": "DEBUG", "writer": {"output": "file", "filename": %q, "roll": false}, "encoder": {"format": "json"}}}}`, s.logFile)
	}
	// fields are the server's besides its listener and routes.
	fields := ""
	if s.accessLogs != "" {
		fields = `"logs": ` + s.accessLogs + `,`
	}
	if s.serverFields != "" {
		fields += s.serverFields + ","
	}
	cfg := fmt.Sprintf(`{
		"admin": {"disabled": true},
		"storage": {"module": "file_system", "root": %q},
		"logging": %s,
		"apps": {"http": {"servers": {"test": {
			"listen": ["127.0.0.1:%d"],
			"automatic_https": {"disable": true},
			%s
			"routes": %s
		}}}}
	}`, t.TempDir(), logging, port, fields, routes)
	if !json.Valid([]byte(cfg)) {
		t.Fatalf("invalid config: %s", cfg)
	}
	return []byte(cfg)
}

// startCaddy runs Caddy in this process with the given routes and returns
// its base URL. Caddy stops when the test ends, and no goroutine of this
// package may be left then.
func startCaddy(t testing.TB, routes string, opts ...caddyOption) string {
	t.Helper()
	var s caddySettings
	for _, opt := range opts {
		opt(&s)
	}
	port := freePort(t)
	loadCaddy(t, caddyConfigWith(t, port, routes, s))
	return fmt.Sprintf("http://127.0.0.1:%d", port)
}

// startCaddyAtDebug is startCaddy with Caddy's log, every line at DEBUG, in
// a file that the returned caddyLog reads.
func startCaddyAtDebug(t testing.TB, routes string, opts ...caddyOption) (string, *caddyLog) {
	t.Helper()
	log := &caddyLog{t: t, path: filepath.Join(t.TempDir(), "caddy.log")}
	opts = append(opts, func(s *caddySettings) { s.logFile = log.path })
	return startCaddy(t, routes, opts...), log
}

// loadCaddy runs Caddy in this process with the configuration cfg (JSON).
// Caddy stops when the test ends, and no goroutine of this package may be
// left then.
func loadCaddy(t testing.TB, cfg []byte) {
	t.Helper()
	if err := caddy.Load(cfg, true); err != nil {
		t.Fatalf("loading config: %v", err)
	}
	t.Cleanup(func() {
		stopCaddy(t)
		assertNoStreamGoroutines(t)
	})
}

// stopCaddy stops the Caddy of this process, failing the test if that hangs.
// Stopping a Caddy that has stopped does nothing.
func stopCaddy(t testing.TB) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- caddy.Stop() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("stopping caddy: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("caddy.Stop hung with streams open")
	}
}

// pollSSERoute is a route with one poll_sse handler; fields is the rest of
// the handler's JSON object.
func pollSSERoute(path, fields string) string {
	return fmt.Sprintf(`{"match":[{"path":[%q]}],"handle":[{"handler":"poll_sse",%s}]}`, path, fields)
}

// A caddyLog is the log of a Caddy of startCaddyAtDebug.
type caddyLog struct {
	t    testing.TB
	path string
}

// A logLine is one JSON line of Caddy's log.
type logLine struct {
	Level    string `json:"level"`
	Logger   string `json:"logger"`
	Msg      string `json:"msg"`
	Upstream string `json:"upstream"`
	// TS is when the line was logged, in seconds since the Unix epoch.
	TS  float64 `json:"ts"`
	raw string
}

// time returns when the line was logged.
func (l logLine) time() time.Time {
	sec, frac := math.Modf(l.TS)
	return time.Unix(int64(sec), int64(frac*1e9))
}

// text returns what Caddy has logged so far.
func (l *caddyLog) text() string {
	b, err := os.ReadFile(l.path)
	if err != nil && !os.IsNotExist(err) {
		l.t.Fatal(err)
	}
	return string(b)
}

// lines returns the lines Caddy has logged so far.
func (l *caddyLog) lines() []logLine {
	l.t.Helper()
	var lines []logLine
	sc := bufio.NewScanner(strings.NewReader(l.text()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var line logLine
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			l.t.Fatalf("a log line that is not JSON: %s", sc.Text())
		}
		line.raw = sc.Text()
		lines = append(lines, line)
	}
	if err := sc.Err(); err != nil {
		l.t.Fatal(err)
	}
	return lines
}

// count returns how many lines Caddy has logged with the message msg.
func (l *caddyLog) count(msg string) int {
	l.t.Helper()
	n := 0
	for _, line := range l.lines() {
		if line.Msg == msg {
			n++
		}
	}
	return n
}

// goroutineStacks returns the stack of every goroutine, each a block of
// lines of its own.
func goroutineStacks() []string {
	// A dump cut at the buffer's end would miss goroutines.
	buf := make([]byte, 1<<20)
	n := runtime.Stack(buf, true)
	for ; n == len(buf); n = runtime.Stack(buf, true) {
		buf = make([]byte, 2*len(buf))
	}
	return strings.Split(string(buf[:n]), "\n\n")
}

// expectServedByGroups fails the test unless the open streams come to be
// written by the goroutines of their topics' groups, with none on a
// goroutine of its own (subscriber.follow, which a stream runs on its
// request's goroutine before its first event). It waits for the groups: a
// group's goroutine that join started and the scheduler has not run yet
// shows in a dump as the go statement's wrapper, not as connGroup.run.
func expectServedByGroups(t testing.TB, groups int) {
	t.Helper()
	var follow, running int
	if !eventually(5*time.Second, func() bool {
		stacks := strings.Join(goroutineStacks(), "\n\n")
		follow = strings.Count(stacks, "caddy-pollsse.(*subscriber).follow(")
		running = strings.Count(stacks, "caddy-pollsse.(*connGroup).run(")
		return follow == 0 && running == groups
	}) {
		t.Errorf("%d streams on goroutines of their own and %d group goroutines, want 0 and %d", follow, running, groups)
	}
}

// watchedClients counts the streams whose clients are watched for leaving:
// by goroutines of their own (subscriber.watch), of which inRequests are
// still their requests' goroutines, and by the process's watcher.
func watchedClients() (goroutines, inRequests, byWatcher int) {
	for _, g := range goroutineStacks() {
		if strings.Contains(g, "caddy-pollsse.(*subscriber).watch(") {
			goroutines++
			if strings.Contains(g, "caddyhttp.(*Server).ServeHTTP(") {
				inRequests++
			}
		}
	}
	return goroutines, inRequests, watcherStreams()
}

// assertNoStreamGoroutines fails the test if a goroutine of this package's
// streams, pollers or tickers is still running shortly after Caddy stopped.
func assertNoStreamGoroutines(t testing.TB) {
	t.Helper()
	var leaked []string
	ok := eventually(5*time.Second, func() bool {
		leaked = nil
		for _, g := range goroutineStacks() {
			if strings.Contains(g, "caddy-pollsse.") && !strings.Contains(g, "assertNoStreamGoroutines") && !strings.Contains(g, "_test.go") {
				leaked = append(leaked, g)
			}
		}
		return len(leaked) == 0 && watcherStreams() == 0
	})
	if !ok {
		t.Errorf("goroutines of the handler outlived Caddy:\n%s", strings.Join(leaked, "\n\n"))
	}
	if n := watcherStreams(); n != 0 {
		t.Errorf("the watcher still watches %d streams after Caddy stopped", n)
	}
}

// A fakeAPI is the legacy JSON API in front of which the handler runs: an
// httptest server that answers every request with the document, status and
// headers that a test sets, or fails in the way it sets (faults_test.go).
// It can validate conditional requests with an ETag of its document, answer
// each credential its own document, hold requests until the test releases
// them, and let a test's hook answer them; it logs every exchange and
// counts the requests in flight.
type fakeAPI struct {
	*httptest.Server
	t testing.TB

	// redirectTo is where the "redirect to another host" fault sends
	// polls.
	redirectTo string

	mu         sync.Mutex
	body       []byte
	status     int
	header     http.Header
	delay      time.Duration
	etag       etagMode
	fault      string
	credential string            // the header that answers are chosen by
	answers    map[string]answer // by credential; nil to answer all alike
	hook       func(http.ResponseWriter, *http.Request) bool
	held       chan struct{} // requests wait while it is open
	exchanges  []*exchange

	inFlight    atomic.Int32
	maxInFlight atomic.Int32
	count       atomic.Int64
}

// An etagMode is how a fakeAPI validates.
type etagMode int

const (
	noETag       etagMode = iota
	etagHonoured          // a strong ETag of the document, and 304 to an If-None-Match that holds it
	etagIgnored           // the ETag, and the whole document whatever If-None-Match holds
)

// An answer is what a fakeAPI answers one credential.
type answer struct {
	status int
	body   string
}

// An exchange is one request that a fakeAPI received and its answer.
type exchange struct {
	at    time.Time
	req   *http.Request
	fault string // the fault it met
	// status and header are the answer's; status is 0 when the request
	// got none.
	status int
	header http.Header
}

func newFakeAPI(t testing.TB, body string) *fakeAPI {
	t.Helper()
	api := &fakeAPI{t: t, body: []byte(body), status: http.StatusOK, header: http.Header{}, credential: "Authorization"}
	api.Server = httptest.NewServer(http.HandlerFunc(api.serve))
	t.Cleanup(api.Close)
	return api
}

func (api *fakeAPI) serve(w http.ResponseWriter, r *http.Request) {
	n := api.inFlight.Add(1)
	defer api.inFlight.Add(-1)
	for {
		m := api.maxInFlight.Load()
		if n <= m || api.maxInFlight.CompareAndSwap(m, n) {
			break
		}
	}
	api.count.Add(1)
	api.mu.Lock()
	ex := &exchange{at: time.Now(), req: r.Clone(r.Context()), fault: api.fault}
	api.exchanges = append(api.exchanges, ex)
	hook, held := api.hook, api.held
	api.mu.Unlock()
	rec := &answerRecorder{ResponseWriter: w}
	defer func() {
		api.mu.Lock()
		defer api.mu.Unlock()
		ex.status, ex.header = rec.status, w.Header().Clone()
	}()

	if held != nil {
		select {
		case <-held:
		case <-r.Context().Done():
			return
		}
	}
	if hook != nil && hook(rec, r) {
		return
	}
	api.mu.Lock()
	body, status, header, delay, etag, fault := api.body, api.status, api.header.Clone(), api.delay, api.etag, api.fault
	ex.fault = fault
	if api.answers != nil {
		a, ok := api.answers[r.Header.Get(api.credential)]
		if !ok {
			a = answer{http.StatusUnauthorized, "who are you"}
		}
		body, status = []byte(a.body), a.status
	}
	api.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
	}
	if fault != "" {
		api.fail(rec, r, fault)
		return
	}
	for name, values := range header {
		rec.Header()[name] = values
	}
	if status == http.StatusUnauthorized {
		rec.Header().Set("WWW-Authenticate", "Bearer")
	}
	if etag != noETag && status == http.StatusOK {
		tag := fmt.Sprintf(`"%x"`, sha256.Sum256(body))
		rec.Header().Set("ETag", tag)
		if etag == etagHonoured && r.Header.Get("If-None-Match") == tag {
			rec.WriteHeader(http.StatusNotModified)
			return
		}
	}
	rec.Header().Set("Content-Type", "application/json")
	rec.WriteHeader(status)
	rec.Write(body)
}

// An answerRecorder records the status of the answer it writes.
type answerRecorder struct {
	http.ResponseWriter
	status int
}

func (r *answerRecorder) WriteHeader(status int) {
	if r.status == 0 {
		r.status = status
	}
	r.ResponseWriter.WriteHeader(status)
}

func (r *answerRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

func (r *answerRecorder) Flush() {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	http.NewResponseController(r.ResponseWriter).Flush()
}

// Unwrap lets http.ResponseController hijack the connection.
func (r *answerRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// set sets the document that the API answers.
func (api *fakeAPI) set(body string) {
	api.mu.Lock()
	defer api.mu.Unlock()
	api.body = []byte(body)
}

// setStatus sets the status that the API answers with its document.
func (api *fakeAPI) setStatus(status int) {
	api.mu.Lock()
	defer api.mu.Unlock()
	api.status = status
}

// setHeader sets a header of the API's answers, "" to remove it.
func (api *fakeAPI) setHeader(name, value string) {
	api.mu.Lock()
	defer api.mu.Unlock()
	if value == "" {
		api.header.Del(name)
	} else {
		api.header.Set(name, value)
	}
}

// setDelay sets how long the API takes before it answers.
func (api *fakeAPI) setDelay(d time.Duration) {
	api.mu.Lock()
	defer api.mu.Unlock()
	api.delay = d
}

// setETag sets how the API validates its answers of 200.
func (api *fakeAPI) setETag(m etagMode) {
	api.mu.Lock()
	defer api.mu.Unlock()
	api.etag = m
}

// setFault makes the API fail in the way named (faults_test.go), "" to
// answer again.
func (api *fakeAPI) setFault(fault string) {
	api.mu.Lock()
	defer api.mu.Unlock()
	api.fault = fault
}

// setFor makes the API answer the requests whose credential (the header
// of credentialIn, Authorization unless told) is credential with status
// and body. Once it has an answer for one credential, the API answers each
// request by its credential, and 401 to one it has no answer for.
func (api *fakeAPI) setFor(credential string, status int, body string) {
	api.mu.Lock()
	defer api.mu.Unlock()
	if api.answers == nil {
		api.answers = map[string]answer{}
	}
	api.answers[credential] = answer{status, body}
}

// credentialIn makes setFor's credentials the values of the request header
// name.
func (api *fakeAPI) credentialIn(name string) {
	api.mu.Lock()
	defer api.mu.Unlock()
	api.credential = name
}

// handle makes hook see every request first, after any hold; it answers
// the request itself when it returns true, and leaves it to the API
// otherwise.
func (api *fakeAPI) handle(hook func(w http.ResponseWriter, r *http.Request) bool) {
	api.mu.Lock()
	defer api.mu.Unlock()
	api.hook = hook
}

// hold makes the requests that come from now on wait until release is
// called; release is called when the test ends too.
func (api *fakeAPI) hold() (release func()) {
	held := make(chan struct{})
	var once sync.Once
	release = func() {
		once.Do(func() {
			close(held)
			api.mu.Lock()
			defer api.mu.Unlock()
			if api.held == held {
				api.held = nil
			}
		})
	}
	api.mu.Lock()
	api.held = held
	api.mu.Unlock()
	api.t.Cleanup(release)
	return release
}

// requestLog returns the requests the API has received, in order.
func (api *fakeAPI) requestLog() []*http.Request {
	var out []*http.Request
	for _, ex := range api.exchangeLog() {
		out = append(out, ex.req)
	}
	return out
}

// exchangeLog returns the API's exchanges so far, in the order of their
// requests.
func (api *fakeAPI) exchangeLog() []exchange {
	api.mu.Lock()
	defer api.mu.Unlock()
	out := make([]exchange, len(api.exchanges))
	for i, ex := range api.exchanges {
		out[i] = *ex
	}
	return out
}

// arrivals returns when the requests came that met fault ("" for none).
func (api *fakeAPI) arrivals(fault string) []time.Time {
	var out []time.Time
	for _, ex := range api.exchangeLog() {
		if ex.fault == fault {
			out = append(out, ex.at)
		}
	}
	return out
}

// eventually polls cond until it holds, and tells whether it did within
// timeout.
func eventually(timeout time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(timeout); ; time.Sleep(5 * time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !eventually(timeout, cond) {
		t.Fatalf("timed out after %s waiting for %s", timeout, what)
	}
}
