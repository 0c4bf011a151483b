package pollsse

// Tests in a real browser: headless Chromium, driven from Go through the
// DevTools protocol (chromedp), against the cmd/caddy binary serving the
// demo page and the browser client. `make test` installs Debian's chromium
// when it is missing; these tests fail, never skip, without it.

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// chromiumPath returns the path of Debian's chromium.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat("/usr/bin/chromium"); err == nil {
		return "/usr/bin/chromium"
	}
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("chromium is not installed: `make test` installs it (apt-get install chromium)")
	}
	return path
}

// A browser is one headless Chromium with a fresh profile, and one tab.
type browser struct {
	t   *testing.T
	ctx context.Context

	mu         sync.Mutex
	exceptions []string
}

// newBrowser starts Chromium with the flags this machine needs (no sandbox
// as root, no GPU, no QUIC, no background traffic to the closed network),
// and the flags given, and a fresh user data directory. It accepts any
// certificate, so that Caddy's internal CA need not be trusted. It ends with
// the test.
func newBrowser(t *testing.T, flags ...chromedp.ExecAllocatorOption) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("ignore-certificate-errors", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 800),
	)
	opts = append(opts, flags...)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	// chromedp's messages go to the test's log while the test runs.
	var logging atomic.Bool
	logging.Store(true)
	logf := func(format string, args ...any) {
		if logging.Load() {
			t.Logf("chromedp: "+format, args...)
		}
	}
	ctx, cancel := chromedp.NewContext(allocCtx, chromedp.WithLogf(logf), chromedp.WithErrorf(logf))
	t.Cleanup(cancel)
	t.Cleanup(func() { logging.Store(false) })
	b := &browser{t: t, ctx: ctx}
	start := time.Now()
	err := chromedp.Listen(ctx, func(ev any) {
		if ev, ok := ev.(*runtime.EventExceptionThrown); ok {
			b.mu.Lock()
			defer b.mu.Unlock()
			d := ev.ExceptionDetails
			desc := d.Text
			if d.Exception != nil {
				desc += " " + d.Exception.Description
			}
			b.exceptions = append(b.exceptions, fmt.Sprintf("%s (%s:%d:%d)", desc, d.URL, d.LineNumber+1, d.ColumnNumber+1))
		}
	})
	if err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	t.Logf("chromium started in %s", time.Since(start).Round(time.Millisecond))
	t.Cleanup(b.checkExceptions)
	return b
}

func (b *browser) checkExceptions() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, e := range b.exceptions {
		b.t.Errorf("uncaught exception in the page: %s", e)
	}
}

// run runs steps in the browser's tab.
func (b *browser) run(steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	runIn(b, chromedp.Steps(steps...))
}

// runIn runs an action in the browser's tab and returns its value.
func runIn[T any](b *browser, a chromedp.Action[T]) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		b.t.Fatalf("chromium: %v", err)
	}
	return v
}

// eval evaluates a JavaScript expression in the page into out, or for
// nothing when out is nil.
func (b *browser) eval(expr string, out any) {
	b.t.Helper()
	raw := runIn(b, chromedp.Evaluate[[]byte](expr, chromedp.EvalAwaitPromise))
	if out == nil {
		return
	}
	if len(raw) == 0 {
		raw = []byte("null")
	}
	if err := json.Unmarshal(raw, out); err != nil {
		b.t.Fatalf("the value of %s: %v (%s)", expr, err, raw)
	}
}

// waitFor evaluates cond in the page until it is true, and fails the test
// after timeout, showing what the expression state shows.
func (b *browser) waitFor(timeout time.Duration, what, cond, state string) {
	b.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var ok bool
		b.eval("Boolean("+cond+")", &ok)
		if ok {
			return
		}
		if time.Now().After(deadline) {
			var s any
			b.eval(state, &s)
			b.t.Fatalf("timed out after %s waiting for %s; the page has %v", timeout, what, s)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// waitForListener waits until addr accepts connections.
func waitForListener(t *testing.T, addr string) {
	t.Helper()
	waitFor(t, 30*time.Second, addr+" to listen", func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// demoCaddyfile returns examples/Caddyfile without its global options, with
// each of the replacements made (every one must apply), so that a test runs
// the demo's own routes on its own ports and upstream.
func demoCaddyfile(t *testing.T, replacements ...string) string {
	t.Helper()
	b, err := os.ReadFile("examples/Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	global := "{\n\tauto_https off\n}\n"
	if !strings.Contains(s, global) {
		t.Fatalf("examples/Caddyfile has no global options block %q", global)
	}
	s = strings.Replace(s, global, "", 1)
	for i := 0; i < len(replacements); i += 2 {
		if !strings.Contains(s, replacements[i]) {
			t.Fatalf("examples/Caddyfile has no %q", replacements[i])
		}
		s = strings.ReplaceAll(s, replacements[i], replacements[i+1])
	}
	return s
}

// pageDocument is what the demo page holds: the document it keeps and the
// one it shows, both as JSON, its count of events, and the notice it shows
// above the document (empty when there is none).
const pageDocument = `({
	document: JSON.stringify(window.pollsse && window.pollsse.document),
	shown: document.getElementById("doc").textContent,
	events: window.pollsse && window.pollsse.events,
	state: document.body.dataset.state,
	connection: document.getElementById("connection").textContent,
	upstream: document.getElementById("upstream").textContent,
	notice: ((n) => n && !n.hidden ? n.textContent : "")(document.getElementById("notice")),
})`

// demoPage is the state of the demo page, as pageDocument reads it.
type demoPage struct {
	Document, Shown, State, Connection, Upstream, Notice string
	Events                                               int
}

// converged tells whether the page keeps and shows the upstream's latest
// document.
func (m *mutatingAPI) converged(b *browser) (bool, demoPage) {
	var p demoPage
	b.eval(pageDocument, &p)
	m.mu.Lock()
	want, _ := json.Marshal(m.doc)
	m.mu.Unlock()
	return p.State == "live" && sameJSON(p.Document, string(want)) && sameJSON(p.Shown, string(want)), p
}

func (m *mutatingAPI) waitConverged(t *testing.T, b *browser, what string) demoPage {
	t.Helper()
	var p demoPage
	var ok bool
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(25 * time.Millisecond) {
		if ok, p = m.converged(b); ok {
			return p
		}
		if time.Now().After(deadline) {
			m.mu.Lock()
			want, _ := json.Marshal(m.doc)
			m.mu.Unlock()
			t.Fatalf("%s: the page did not converge to the upstream's document\nupstream: %s\npage:     %+v", what, want, p)
		}
	}
}

// mutate makes n random changes to the upstream's document, 10ms apart,
// so that several land within one poll interval and many polls see a
// change.
func (m *mutatingAPI) mutate(n int) {
	for range n {
		m.step()
		time.Sleep(10 * time.Millisecond)
	}
}

// TestBrowserDemoConvergesAndSurvivesARestart opens the demo page in
// Chromium against a randomly changing upstream: after many changes the
// page keeps and shows the upstream's document. Then Caddy is stopped,
// the upstream changes meanwhile, and Caddy starts again on the same port:
// the page reconnects by itself after the retry hint and converges again,
// without being reloaded.
func TestBrowserDemoConvergesAndSurvivesARestart(t *testing.T) {
	api := newMutatingAPI(t, 6)
	port := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	caddyfile := demoCaddyfile(t,
		"http://localhost:8080", "http://"+addr,
		"http://127.0.0.1:8081/api/orders", api.URL,
		"interval 1s", "interval 100ms\n\t\tretry 300ms",
		"http://127.0.0.1:8081", fmt.Sprintf("http://127.0.0.1:%d", freePort(t)),
	)
	p := startCaddyProcess(t, caddyfile)
	waitForListener(t, addr)
	b := newBrowser(t)
	// Count the EventSource objects that the page makes: the one the
	// client opens first must be the one that reconnects after the restart.
	b.run(func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
		_, err := cdp.Call(ctx, tg, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{
			Source: `window.eventSources = 0;
window.EventSource = class extends window.EventSource {
  constructor(...args) { super(...args); window.eventSources++; }
};`,
		})
		return chromedp.Void{}, err
	}, chromedp.Navigate("http://"+addr+"/"))
	api.waitConverged(t, b, "the first snapshot")

	// Many changes, most of them patches.
	api.mutate(300)
	page := api.waitConverged(t, b, "after 300 changes")
	if page.Events < 20 {
		t.Errorf("the page applied %d events for 300 changes polled every 100ms", page.Events)
	}
	if page.Upstream != "upstream up" {
		t.Errorf("the upstream pill says %q", page.Upstream)
	}
	t.Logf("after 300 changes: %d events", page.Events)

	// Caddy stops under the page.
	b.eval(`window.notReloaded = true`, nil)
	p.command(t, "stop")
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		t.Fatal("caddy did not exit after caddy stop")
	}
	b.waitFor(10*time.Second, "the page to see the stream break",
		`!/connection open/.test(document.getElementById("connection").textContent)`, pageDocument)
	api.mutate(30)

	// Caddy starts again: the page reconnects by itself.
	restarted := time.Now()
	startCaddyProcess(t, caddyfile)
	waitForListener(t, addr)
	page = api.waitConverged(t, b, "after the restart")
	t.Logf("converged %s after the restart", time.Since(restarted).Round(time.Millisecond))
	var notReloaded bool
	b.eval(`window.notReloaded === true`, &notReloaded)
	if !notReloaded {
		t.Error("the page was reloaded")
	}
	var sources int
	b.eval(`window.eventSources`, &sources)
	if sources != 1 {
		t.Errorf("the page made %d EventSource objects, want 1: the browser's own reconnect after the retry hint", sources)
	}
	if page.Connection != "connection open" {
		t.Errorf("the connection pill says %q", page.Connection)
	}
	api.mutate(30)
	api.waitConverged(t, b, "after changes on the new stream")
}

// TestBrowserDemoShowsUpstreamDown opens the demo page against an upstream
// that fails after its first document: the page says "upstream down: " and
// the reason above the document it keeps showing, and clears that when the
// upstream is back. When the upstream fails again and Caddy restarts
// meanwhile, the page's reconnect gets a fresh snapshot (the new Caddy knows
// none of the old ids) and no status event: the snapshot clears it.
func TestBrowserDemoShowsUpstreamDown(t *testing.T) {
	api := newFakeAPI(t, `{"orders":[{"id":1,"status":"packing"}]}`)
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	caddyfile := demoCaddyfile(t,
		"http://localhost:8080", "http://"+addr,
		"http://127.0.0.1:8081/api/orders", api.URL,
		"interval 1s", "interval 100ms\n\t\tretry 300ms\n\t\tmax_backoff 500ms",
		"http://127.0.0.1:8081", fmt.Sprintf("http://127.0.0.1:%d", freePort(t)),
	)
	p := startCaddyProcess(t, caddyfile)
	waitForListener(t, addr)
	b := newBrowser(t)
	b.run(chromedp.Navigate("http://" + addr + "/"))
	const notice = `((n) => n && !n.hidden ? n.textContent : "")(document.getElementById("notice"))`
	const down = notice + `.startsWith("upstream down: ") && ` + notice + `.includes("503")`
	shows := func(doc string) string {
		return fmt.Sprintf(`(() => {
	try { return JSON.stringify(JSON.parse(document.getElementById("doc").textContent)) === JSON.stringify(%s); }
	catch { return false; }
})()`, doc)
	}
	b.waitFor(15*time.Second, "the first document", shows(`{"orders":[{"id":1,"status":"packing"}]}`), pageDocument)
	var page demoPage
	if b.eval(pageDocument, &page); page.Notice != "" {
		t.Errorf("the page shows %q while the upstream is up", page.Notice)
	}

	api.setStatus(http.StatusServiceUnavailable)
	b.waitFor(15*time.Second, `"upstream down: " and the reason`, down, pageDocument)
	if b.eval(pageDocument, &page); !sameJSON(page.Shown, `{"orders":[{"id":1,"status":"packing"}]}`) {
		t.Errorf("while the upstream is down the page shows %q, want the last document", page.Shown)
	}
	t.Logf("the page says %q", page.Notice)

	api.set(`{"orders":[{"id":1,"status":"shipped"}]}`)
	api.setStatus(http.StatusOK)
	b.waitFor(15*time.Second, "the notice to go with the upstream's recovery",
		notice+` === "" && `+shows(`{"orders":[{"id":1,"status":"shipped"}]}`), pageDocument)

	api.setStatus(http.StatusServiceUnavailable)
	b.waitFor(15*time.Second, "the upstream down again", down, pageDocument)
	p.command(t, "stop")
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		t.Fatal("caddy did not exit after caddy stop")
	}
	api.set(`{"orders":[{"id":1,"status":"delivered"}]}`)
	api.setStatus(http.StatusOK)
	startCaddyProcess(t, caddyfile)
	waitForListener(t, addr)
	b.waitFor(15*time.Second, "the fresh snapshot after the restart to clear the notice",
		notice+` === "" && `+shows(`{"orders":[{"id":1,"status":"delivered"}]}`), pageDocument)
}

// TestBrowserDemoShowsUpstreamDownBeforeItsFirstDocument: a page whose
// stream has had no document yet (the upstream has failed from its first
// poll on) says that the upstream is down and why, and shows the document
// with the notice gone once the upstream answers.
func TestBrowserDemoShowsUpstreamDownBeforeItsFirstDocument(t *testing.T) {
	api := newFakeAPI(t, `{"orders":[{"id":1,"status":"packing"}]}`)
	api.setStatus(http.StatusBadGateway)
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	startCaddyProcess(t, demoCaddyfile(t,
		"http://localhost:8080", "http://"+addr,
		"http://127.0.0.1:8081/api/orders", api.URL,
		"interval 1s", "interval 100ms\n\t\tmax_backoff 500ms",
		"http://127.0.0.1:8081", fmt.Sprintf("http://127.0.0.1:%d", freePort(t)),
	))
	waitForListener(t, addr)
	b := newBrowser(t)
	b.run(chromedp.Navigate("http://" + addr + "/"))
	const notice = `((n) => n && !n.hidden ? n.textContent : "")(document.getElementById("notice"))`
	b.waitFor(15*time.Second, `"upstream down: " and the reason before any document`,
		notice+`.startsWith("upstream down: ") && `+notice+`.includes("502")`, pageDocument)
	var page demoPage
	if b.eval(pageDocument, &page); page.Shown != "" && sameJSON(page.Shown, `{"orders":[{"id":1,"status":"packing"}]}`) {
		t.Errorf("the page shows the document %q before the upstream answered it", page.Shown)
	}
	t.Logf("before its first document the page says %q", page.Notice)

	api.setStatus(http.StatusOK)
	b.waitFor(15*time.Second, "the first document, and no notice", notice+` === "" && (() => {
	try { return JSON.stringify(JSON.parse(document.getElementById("doc").textContent)) === JSON.stringify({"orders":[{"id":1,"status":"packing"}]}); }
	catch { return false; }
})()`, pageDocument)
}

// streamsPage opens one stream per topic with the browser client and keeps,
// for each, its document, how many snapshots and changes it had, and the
// connection, which the test may close.
const streamsPage = `<!doctype html>
<meta charset="utf-8">
<title>many streams</title>
<script type="module">
import { connect } from "/client/pollsse.js";
window.streams = [];
for (let i = 0; i < %d; i++) {
  const s = { doc: null, snapshots: 0, changes: 0 };
  s.conn = connect("/events/" + i, {
    onChange(doc, change) {
      s.doc = doc;
      if (change.type === "snapshot") s.snapshots++; else s.changes++;
    },
  });
  window.streams.push(s);
}
</script>
`

// TestBrowserHoldsTenStreamsOverHTTP2 opens a page with 10 streams, each to
// a topic of its own, over HTTPS with HTTP/2 (Caddy's tls internal): all 10
// are live at once, as they can be only when one connection carries them
// all. Over HTTP/1.1, plain or HTTPS, the browser's 6 connections per host
// hold 6 of them, and the other 4 wait.
func TestBrowserHoldsTenStreamsOverHTTP2(t *testing.T) {
	const streams = 10
	var version atomic.Int64
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"topic":%q,"v":%d}`, strings.TrimPrefix(r.URL.Path, "/topic/"), version.Load())
	}))
	t.Cleanup(upstream.Close)
	pageDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(pageDir, "index.html"), fmt.Appendf(nil, streamsPage, streams), 0o644); err != nil {
		t.Fatal(err)
	}
	clientDir, err := filepath.Abs("client")
	if err != nil {
		t.Fatal(err)
	}
	httpsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	loggedAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	accessLog := filepath.Join(t.TempDir(), "access.log")
	caddyfile := fmt.Sprintf(`(page) {
	poll_sse /events/* %s/topic/{path.1} {
		interval 100ms
	}
	handle /proto {
		respond "{http.request.proto}"
	}
	handle_path /client/* {
		root * %s
		file_server
	}
	handle {
		root * %s
		file_server
	}
}

https://%s {
	tls internal
	import page
}

http://%s {
	import page
}

https://%s {
	tls internal
	log {
		output file %s {
			roll_disabled
		}
		format json
	}
	import page
}
`, upstream.URL, clientDir, pageDir, httpsAddr, httpAddr, loggedAddr, accessLog)
	// Nothing touches the system's trust store, and no listener is
	// added on port 80 for redirects.
	p := startCaddyProcess(t, caddyfile, "skip_install_trust", "auto_https disable_redirects")
	waitForListener(t, httpAddr)
	// Caddy issues the internal certificate in the background once the
	// config has loaded; handshakes fail until it has.
	for _, addr := range []string{httpsAddr, loggedAddr} {
		waitFor(t, 30*time.Second, "the internal certificate of "+addr, func() bool {
			c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
			if err == nil {
				c.Close()
			}
			return err == nil
		})
	}
	b := newBrowser(t)

	const state = `window.streams && window.streams.map((s) => s.doc && s.doc.v)`
	live := func(v int64) string {
		return fmt.Sprintf(`window.streams.filter((s, i) => s.doc && s.doc.v === %d && s.doc.topic === String(i)).length`, v)
	}

	t.Run("HTTPS with HTTP/2: all 10 live", func(t *testing.T) {
		b.t = t
		b.run(chromedp.Navigate("https://" + httpsAddr + "/"))
		var proto string
		b.eval(`fetch("/proto").then((r) => r.text())`, &proto)
		if proto != "HTTP/2.0" {
			t.Fatalf("the page's requests are %q, want HTTP/2.0", proto)
		}
		b.waitFor(15*time.Second, "10 snapshots", live(0)+" === 10", state)
		version.Store(1)
		b.waitFor(15*time.Second, "a change on each of the 10 streams", live(1)+" === 10", state)

		// Caddy holds 10 subscribers, on one connection.
		s := scrapeMetrics(t, "http://"+p.admin+"/metrics")
		if got := s["caddy_http_poll_sse_subscribers"]; got != streams {
			t.Errorf("caddy_http_poll_sse_subscribers = %v on the admin endpoint, want %d", got, streams)
		}
		if got := s["caddy_http_poll_sse_topics"]; got != streams {
			t.Errorf("caddy_http_poll_sse_topics = %v on the admin endpoint, want %d", got, streams)
		}
		b.run(chromedp.Navigate("about:blank"))
	})

	t.Run("HTTP/1.1: 6 live, 4 waiting", func(t *testing.T) {
		b.t = t
		version.Store(2)
		b.run(chromedp.Navigate("http://" + httpAddr + "/"))
		b.waitFor(15*time.Second, "6 snapshots", live(2)+" === 6", state)
		time.Sleep(time.Second)
		var n int
		b.eval(live(2), &n)
		if n != 6 {
			t.Errorf("over HTTP/1.1 %d of the 10 streams are live, want the browser's limit of 6", n)
		}
		b.run(chromedp.Navigate("about:blank"))
	})

	// Over HTTPS with HTTP/1.1 (a browser without HTTP/2), the streams that
	// the browser's connections hold are live, and get each change.
	t.Run("HTTPS with HTTP/1.1: 6 live, 4 waiting", func(t *testing.T) {
		b := newBrowser(t, chromedp.Flag("disable-http2", true))
		version.Store(3)
		b.run(chromedp.Navigate("https://" + httpsAddr + "/"))
		// A fetch would wait for a connection that a stream holds.
		var proto string
		b.eval(`performance.getEntriesByType("navigation")[0].nextHopProtocol`, &proto)
		if proto != "http/1.1" {
			t.Fatalf("the page came over %q, want http/1.1", proto)
		}
		b.waitFor(15*time.Second, "6 snapshots", live(3)+" === 6", state)
		version.Store(4)
		b.waitFor(15*time.Second, "a change on each of the 6 live streams", live(4)+" === 6", state)
		var n int
		b.eval(`window.streams.filter((s) => s.doc).length`, &n)
		if n != 6 {
			t.Errorf("over HTTPS with HTTP/1.1 %d of the 10 streams have a document, want the browser's limit of 6", n)
		}
		b.run(chromedp.Navigate("about:blank"))
	})

	// On a site with `log`, over HTTP/2 and over HTTP/1.1, the streams get
	// each change, and each has its line in the access log once the page
	// is left: status 200, the bytes it was sent, and the time it was open.
	for i, tt := range []struct {
		name  string
		flags []chromedp.ExecAllocatorOption
		live  int
	}{
		{"HTTPS with HTTP/2 on a logged site: all 10 live, each logged when it ends", nil, streams},
		{"HTTPS with HTTP/1.1 on a logged site: 6 live, each logged when it ends", []chromedp.ExecAllocatorOption{chromedp.Flag("disable-http2", true)}, 6},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := newBrowser(t, tt.flags...)
			// The lines of the streams of the subtest before come first.
			lines := func(k int) []accessLine { return accessLines(t, accessLog, fmt.Sprintf("/events/%d", k)) }
			before := make([]int, tt.live)
			for k := range before {
				before[k] = len(lines(k))
			}
			v := int64(5 + 2*i)
			version.Store(v)
			b.run(chromedp.Navigate("https://" + loggedAddr + "/"))
			b.waitFor(15*time.Second, "the snapshots", fmt.Sprintf("%s === %d", live(v), tt.live), state)
			opened := time.Now()
			version.Store(v + 1)
			b.waitFor(15*time.Second, "a change on each live stream", fmt.Sprintf("%s === %d", live(v+1), tt.live), state)
			held := time.Since(opened)
			for k := range before {
				if n := len(lines(k)) - before[k]; n != 0 {
					t.Fatalf("/events/%d has %d access log lines while its stream is open, want its line when it ends", k, n)
				}
			}
			b.eval(`window.streams.forEach((s) => s.conn.close()), true`, new(bool))
			var logged []accessLine
			waitFor(t, 10*time.Second, "an access log line for each stream", func() bool {
				logged = logged[:0]
				for k := range before {
					got := lines(k)
					if len(got) != before[k]+1 {
						return false
					}
					logged = append(logged, got[len(got)-1])
				}
				return true
			})
			for k, line := range logged {
				d := time.Duration(line.Duration * float64(time.Second))
				// Two events and the retry field at least.
				if line.Status != http.StatusOK || line.Size < 100 || d < held {
					t.Errorf("/events/%d logged status %d, %d bytes, %v; want 200, the stream's bytes, at least %v", k, line.Status, line.Size, d, held)
				}
			}
		})
	}
	b.t = t
}

// TestBrowserDemoScreenshot runs the demo as examples/Caddyfile has it (its
// own "legacy API" included), on free ports, and takes a screenshot of the
// page once it has shown an order's new status, an order added and one
// removed:
// testdata/artifacts/demo.png, and docs/demo.png, which the README shows,
// when POLLSSE_UPDATE_SCREENSHOT=1. The page's event log shows patches of
// one element each, never a replace of all the orders.
func TestBrowserDemoScreenshot(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	apiAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	caddyfile := demoCaddyfile(t,
		"http://localhost:8080", "http://"+addr,
		"127.0.0.1:8081", apiAddr,
	)
	startCaddyProcess(t, caddyfile)
	waitForListener(t, addr)
	b := newBrowser(t)
	b.run(chromedp.EmulateViewport(1280, 760), chromedp.Navigate("http://"+addr+"/"))
	// The legacy API changes every second: in five seconds, an order is
	// added, three change their status and one is removed.
	const logPaths = `[...document.querySelectorAll("#log .path")].map((p) => p.textContent)`
	const logOps = `[...document.querySelectorAll("#log .ops li")].map((li) => li.textContent)`
	b.waitFor(15*time.Second, "an order's new status, an order added and one removed",
		`["replace /orders/", "add /orders/", "remove /orders/"].every((op) => `+logOps+`.some((l) => l.startsWith(op)))`, logOps)
	var paths []string
	b.eval(logPaths, &paths)
	element := regexp.MustCompile(`^/(open_orders|orders/(0|[1-9][0-9]*)(/status)?)$`)
	for _, p := range paths {
		if !element.MatchString(p) {
			t.Errorf("the page's event log shows an operation on %s: want one order or open_orders (all paths: %q)", p, paths)
		}
	}
	var page demoPage
	b.eval(pageDocument, &page)
	if page.State != "live" || page.Upstream != "upstream up" || page.Connection != "connection open" {
		t.Errorf("the demo page is not live: %+v", page)
	}
	var doc struct {
		Service string `json:"service"`
	}
	if err := json.Unmarshal([]byte(page.Document), &doc); err != nil || doc.Service != "orders-legacy" {
		t.Errorf("the demo page's document is %s (%v)", page.Document, err)
	}
	// Let the highlight of the last change fade a little, as a person
	// would see the page.
	time.Sleep(300 * time.Millisecond)
	png := runIn(b, chromedp.CaptureScreenshot())
	if len(png) < 1000 || string(png[1:4]) != "PNG" {
		t.Fatalf("the screenshot is not a PNG (%d bytes)", len(png))
	}
	writeArtifact(t, "testdata/artifacts/demo.png", png)
	if os.Getenv("POLLSSE_UPDATE_SCREENSHOT") == "1" {
		writeArtifact(t, "docs/demo.png", png)
	}
}

func writeArtifact(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s", path)
}

// corsPage opens the stream of another origin twice: with credentials, the
// browser sends its cookie and the stream is the user's; without, it sends
// none and the upstream's 401 closes the stream.
const corsPage = `<!doctype html>
<meta charset="utf-8">
<title>cross-origin stream</title>
<script type="module">
import { connect } from "/client/pollsse.js";
document.cookie = "session=alice-session; path=/";
window.withCredentials = { doc: null, statuses: [] };
window.withoutCredentials = { doc: null, statuses: [] };
for (const [name, withCredentials] of [["withCredentials", true], ["withoutCredentials", false]]) {
  const s = window[name];
  connect(%q, {
    withCredentials,
    retryMs: 60000,
    onChange(doc) { s.doc = doc; },
    onStatus(status) { s.statuses.push(status); },
  });
}
</script>
`

// TestBrowserCORSWithCredentials runs examples/cors: a page of one origin
// opens the stream of another with withCredentials, and the browser sends
// the session cookie, which poll_sse forwards to the upstream; the header
// directive's CORS headers let the page read the stream. Without
// credentials, the browser sends no cookie, and the upstream's 401 ends the
// stream.
func TestBrowserCORSWithCredentials(t *testing.T) {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c, err := r.Cookie("session"); err != nil || c.Value != "alice-session" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		fmt.Fprint(w, `{"user":"alice","inbox":["hello"]}`)
	}))
	t.Cleanup(upstream.Close)
	live := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	app := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	pageDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(pageDir, "index.html"), fmt.Appendf(nil, corsPage, "http://"+live+"/events"), 0o644); err != nil {
		t.Fatal(err)
	}
	clientDir, err := filepath.Abs("client")
	if err != nil {
		t.Fatal(err)
	}
	example, err := os.ReadFile("examples/cors/Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	caddyfile := strings.NewReplacer(
		"live.example.com", "http://"+live,
		"https://app.example.com", "http://"+app,
		"http://legacy.internal:8080", upstream.URL,
	).Replace(string(example)) + fmt.Sprintf(`
http://%s {
	handle_path /client/* {
		root * %s
		file_server
	}
	handle {
		root * %s
		file_server
	}
}
`, app, clientDir, pageDir)
	startCaddyProcess(t, caddyfile)
	waitForListener(t, live)
	waitForListener(t, app)
	b := newBrowser(t)
	b.run(chromedp.Navigate("http://" + app + "/"))
	const state = `({with: window.withCredentials, without: window.withoutCredentials})`
	b.waitFor(15*time.Second, "the user's document on the stream opened with credentials",
		`window.withCredentials && window.withCredentials.doc && window.withCredentials.doc.user === "alice"`, state)
	b.waitFor(15*time.Second, "the stream opened without credentials to be refused",
		`window.withoutCredentials.statuses.some((s) => s.connection === "closed")`, state)
	var withoutDoc any
	b.eval(`window.withoutCredentials.doc`, &withoutDoc)
	if withoutDoc != nil {
		t.Errorf("the stream without credentials got a document: %v", withoutDoc)
	}
}
