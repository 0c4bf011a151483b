package pollsse

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestPollsOutOfFilesPollOnAtTheInterval: a Caddy that runs out of open
// files (its limit, here 64 by prlimit, met by clients that keep
// connections open) cannot open the socket of a poll. The upstream heard
// nothing, so the poller does not back off as from an upstream's failure
// (up to max_backoff, a minute by default, during which a change would
// reach no subscriber): it tries again at the interval, says why at Error,
// and delivers the change as soon as files are free again.
//
// Linux only: the limit is set with prlimit(1) and Caddy's open files are
// counted in /proc.
func TestPollsOutOfFilesPollOnAtTheInterval(t *testing.T) {
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		t.Fatal("prlimit is missing: it is util-linux's, part of every Debian")
	}
	const limit = 64
	var version, requests atomic.Int64
	version.Store(1)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		// A connection per poll, so that every poll needs a new socket.
		w.Header().Set("Connection", "close")
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"v":%d}`, version.Load())
	}))
	defer upstream.Close()
	site := freePort(t)
	p := startCaddyProcessUnder(t, []string{prlimit, fmt.Sprintf("--nofile=%d:%d", limit, limit)},
		fmt.Sprintf(`http://127.0.0.1:%d {
	poll_sse /events %s {
		interval 100ms
	}
}
`, site, upstream.URL), "metrics")
	base := fmt.Sprintf("http://127.0.0.1:%d", site)
	sc := openStream(t, http.DefaultClient, base+"/events", "")
	if ev := sc.next(5 * time.Second); ev.name != "snapshot" || ev.data != `{"v":1}` {
		t.Fatalf("got %+v, want the snapshot of v1", ev)
	}
	failedBefore := processMetric(t, p, `caddy_http_poll_sse_polls_total{result="failed"}`)

	// Take every file Caddy may open: it accepts connections until it
	// cannot, and the rest wait in the listen queue.
	openFiles := func() int {
		entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p.cmd.Process.Pid))
		if err != nil {
			t.Fatal(err)
		}
		return len(entries)
	}
	var hogs []net.Conn
	defer func() {
		for _, c := range hogs {
			c.Close()
		}
	}()
	for range limit + 16 {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", site))
		if err != nil {
			t.Fatal(err)
		}
		hogs = append(hogs, c)
	}
	waitFor(t, 10*time.Second, fmt.Sprintf("Caddy to hold %d open files", limit), func() bool { return openFiles() >= limit })

	// The document changes while no poll can be sent.
	version.Store(2)
	before := requests.Load()
	const outage = 3 * time.Second
	time.Sleep(outage)
	if n := requests.Load() - before; n != 0 {
		t.Fatalf("the upstream got %d requests while Caddy had no file to spare", n)
	}
	for _, c := range hogs {
		c.Close()
	}
	hogs = nil
	released := time.Now()
	// The subscriber is told why its document stands still, then that
	// polls go on, and gets the change.
	var statuses []string
	for {
		ev, ok := sc.nextOrTimeout(10 * time.Second)
		if ok && ev.name == "status" {
			statuses = append(statuses, ev.data)
			continue
		}
		if !ok || ev.name != "patch" || !sameJSON(ev.data, `[{"op":"replace","path":"/v","value":2}]`) {
			t.Fatalf("got %+v, %v; want the patch to v2", ev, ok)
		}
		break
	}
	if len(statuses) != 2 || !strings.Contains(statuses[0], `"upstream":"down"`) || !strings.Contains(statuses[0], "out of resources") || !strings.Contains(statuses[1], `"upstream":"up"`) {
		t.Errorf("status events %q, want one that tells of the lack of resources, then one that polls are back", statuses)
	}
	t.Logf("the change arrived %s after files were free", time.Since(released).Round(time.Millisecond))

	// Polls went on at the interval, one every 100ms, give or take a
	// tenth: 30 in 3 s. Backing off, they would have been at most 6 (at
	// 0.1, 0.2, 0.4, 0.8 and 1.6 s less up to a quarter).
	failed := processMetric(t, p, `caddy_http_poll_sse_polls_total{result="failed"}`) - failedBefore
	if failed < 15 {
		t.Errorf("%v polls failed in the %s without files, want one per interval (about 30)", failed, outage)
	}
	if out := p.output.String(); !strings.Contains(out, "this process is out of resources") {
		t.Errorf("Caddy's log does not say that it is out of files:\n%s", out)
	}
}

// processMetric returns the value of one series of the /metrics of the admin
// endpoint of p, 0 when it is not there.
func processMetric(t *testing.T, p *caddyProcess, series string) float64 {
	t.Helper()
	url := "http://" + p.admin + "/metrics"
	waitFor(t, 10*time.Second, "the admin endpoint's /metrics", func() bool {
		resp, err := http.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	})
	return scrapeMetrics(t, url)[series]
}
