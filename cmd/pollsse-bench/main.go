// Command pollsse-bench measures the fan-out of the poll_sse handler: it
// starts a Caddy built from ./cmd/caddy (or targets a running one), an
// upstream that stamps each changed document with the time it answered, and
// N SSE clients over loopback, one TCP connection each. It reports the time
// to connect N (all snapshots received), the delivery latency of each change
// to all N (from the upstream's answer to the client's receipt), Caddy's
// RSS per idle subscriber, its CPU per subscriber per event, and the
// upstream's requests. Each trial runs on a freshly started Caddy; with
// several trials it prints the median of each figure.
//
// Typical runs, from the repository root:
//
//	go build -o /tmp/caddy ./cmd/caddy && go build -o /tmp/pollsse-bench ./cmd/pollsse-bench
//	/tmp/pollsse-bench -caddy /tmp/caddy -n 10000 -trials 3
//	/tmp/pollsse-bench -caddy /tmp/caddy -topics 100 -n 100 -trials 3
//	/tmp/pollsse-bench -caddy /tmp/caddy -n 1000 -slow 0.1 -events 100 -interval 100ms -gap 0 -write-timeout 2s
//
// With -target it measures a server that is already running instead, such
// as a hub that is published to with -publish (BENCHMARKS.md measures
// nginx + Nchan so). Every wait is bounded, and the whole run ends after
// -timeout.
//
// It runs on Linux only: it reads the CPU, memory and open files of the
// server and of itself from /proc. On other systems it builds, and says so
// when it is run.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	neturl "net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

type options struct {
	caddy         string
	target        string
	pid           string
	subPath       string
	publish       string
	upstreamAddr  string
	n             int
	topics        int
	events        int
	interval      time.Duration
	gap           time.Duration
	hold          time.Duration
	settle        time.Duration
	slow          float64
	slowRcvBuf    int
	writeTimeout  time.Duration
	heartbeat     time.Duration
	eventBytes    int
	trials        int
	inFlight      int
	env           string
	jsonOut       string
	timeout       time.Duration
	pprof         string
	pause         bool
	live          bool
	accessLog     bool
	tls           bool
	h2            bool
	h3            bool
	caFile        string
	publishTopic  string
	publishHeader string
	serverName    string
	instances     int
	redis         string
}

func main() {
	var o options
	flag.StringVar(&o.caddy, "caddy", "", "Caddy binary built from ./cmd/caddy; empty: build one with `go build` from the current directory")
	flag.StringVar(&o.target, "target", "", "base URL of a running server whose /sse/<topic> streams <upstream>/doc/<topic>; the tool then starts no Caddy")
	flag.StringVar(&o.pid, "pid", "", "with -target: the server's process ids, comma-separated, for RSS and CPU (summed)")
	flag.StringVar(&o.subPath, "sub-path", "/sse/", "with -target: the subscribers' path; the topic's number follows a path that ends in /")
	flag.StringVar(&o.publish, "publish", "", "with -target: publish each change by POSTing a ~event-bytes JSON message to this URL (a hub such as Nchan) instead of through the upstream; latency then starts just before the POST")
	flag.StringVar(&o.publishTopic, "publish-topic", "", "with -publish: POST a form of the fields topic (this) and data (the message), as Mercure is published to")
	flag.StringVar(&o.publishHeader, "publish-header", "", "with -publish: a header of the POST, \"Name: value\", such as Mercure's \"Authorization: Bearer <JWT>\"")
	flag.StringVar(&o.upstreamAddr, "upstream-addr", "", "with -target: the address the upstream listens on (default: any loopback port)")
	flag.IntVar(&o.n, "n", 1000, "subscribers per topic")
	flag.IntVar(&o.topics, "topics", 1, "topics")
	flag.IntVar(&o.events, "events", 5, "changes to deliver")
	flag.DurationVar(&o.interval, "interval", time.Second, "the handler's poll interval")
	flag.DurationVar(&o.gap, "gap", time.Second, "pause after an event reached every client before asking for the next change")
	flag.DurationVar(&o.hold, "hold", 10*time.Second, "how long N idle streams are held before the server's RSS is read (0: no RSS figure)")
	flag.DurationVar(&o.settle, "settle", 2*time.Second, "wait after the server starts before its idle RSS is read")
	flag.Float64Var(&o.slow, "slow", 0, "fraction of clients that stop reading after their snapshot")
	flag.IntVar(&o.slowRcvBuf, "slow-rcvbuf", 0, "SO_RCVBUF of the slow clients' sockets (0: the system's default)")
	flag.DurationVar(&o.writeTimeout, "write-timeout", 0, "the handler's write_timeout (0: its default)")
	flag.DurationVar(&o.heartbeat, "heartbeat", 0, "the handler's heartbeat (0: its default)")
	flag.IntVar(&o.eventBytes, "event-bytes", 200, "approximate size of a patch event's data")
	flag.IntVar(&o.trials, "trials", 1, "trials, each on a fresh server; figures are the median over trials")
	flag.IntVar(&o.inFlight, "inflight", 256, "connection attempts in flight at once")
	flag.StringVar(&o.env, "env", "", "comma-separated NAME=value pairs for the Caddy process, e.g. GOGC=400")
	flag.StringVar(&o.jsonOut, "json", "", "write every trial's figures, per event included, to this file")
	flag.DurationVar(&o.timeout, "timeout", 15*time.Minute, "end the whole run after this long")
	flag.StringVar(&o.pprof, "pprof", "", "enable Caddy's admin endpoint on this address, for /debug/pprof")
	flag.BoolVar(&o.live, "live", false, "also report the server's live heap and goroutine stacks per idle subscriber, read after two forced GCs before the clients connect and after the hold (turns the admin endpoint on: that of -pprof, or a free loopback port)")
	flag.BoolVar(&o.pause, "pause", false, "after holding the idle streams, wait for Enter before the events (to profile)")
	flag.BoolVar(&o.accessLog, "access-log", false, "turn the server's access logs on, written to a file (as a site with `log`)")
	flag.BoolVar(&o.tls, "tls", false, "HTTPS: the tool's Caddy serves localhost with a certificate of its internal CA (`tls internal`), which the clients trust; with -target, a https:// URL")
	flag.BoolVar(&o.h2, "h2", false, "HTTPS with HTTP/2, each client on a connection of its own (implies -tls)")
	flag.BoolVar(&o.h3, "h3", false, "HTTPS with HTTP/3 over QUIC, each client on a connection of its own (implies -tls)")
	flag.StringVar(&o.caFile, "ca", "", "with -target and TLS: the PEM root certificate the clients trust (default: they skip verification)")
	flag.StringVar(&o.serverName, "server-name", "localhost", "with TLS: the name the clients send in the handshake and verify")
	flag.IntVar(&o.instances, "instances", 1, "Caddy instances on one Redis (the redis store), -n subscribers of each topic on each; more than 1 reports what Redis adds per change")
	flag.StringVar(&o.redis, "redis", "", "with -instances: the Redis URL to use; empty: start a redis-server on a free loopback port")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "pollsse-bench:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	if err := checkSystem(); err != nil {
		return err
	}
	nofile := raiseOpenFiles()
	if total := o.n * o.topics * max(o.instances, 1); uint64(total)+64 > nofile {
		return fmt.Errorf("%d clients need more open files than this process's limit of %d", total, nofile)
	}
	if o.target == "" && o.caddy == "" {
		dir, err := os.MkdirTemp("", "pollsse-bench-build-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		o.caddy = filepath.Join(dir, "caddy")
		fmt.Fprintln(os.Stderr, "building ./cmd/caddy")
		cmd := exec.Command("go", "build", "-o", o.caddy, "./cmd/caddy")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("building caddy: %w", err)
		}
	}
	if o.live {
		if o.target != "" || o.hold <= 0 {
			return fmt.Errorf("-live reads the tool's own Caddy after the hold: not with -target or -hold 0")
		}
		if o.pprof == "" {
			addr, err := freeLoopbackAddr()
			if err != nil {
				return err
			}
			o.pprof = addr
		}
	}
	if o.instances > 1 {
		if o.tls || o.h2 || o.h3 || o.accessLog {
			return fmt.Errorf("-instances measures plain HTTP/1.1 only, without -tls, -h2, -h3 or -access-log")
		}
		return runInstances(ctx, o)
	}
	proto, err := parseProtocol(o.tls, o.h2, o.h3, o.caFile, o.serverName)
	if err != nil {
		return err
	}
	fmt.Printf("pollsse-bench: %s: %d topic(s) × %d subscribers, %d events, interval %s, slow %.0f%%, %d trial(s)\n",
		pathName(o, proto), o.topics, o.n, o.events, o.interval, o.slow*100, o.trials)
	var trials []*trial
	for i := 0; i < o.trials; i++ {
		tr, err := runTrial(ctx, o, proto)
		if err != nil {
			return fmt.Errorf("trial %d: %w", i+1, err)
		}
		tr.Path = pathName(o, proto)
		tr.print(fmt.Sprintf("trial %d", i+1))
		trials = append(trials, tr)
	}
	if len(trials) > 1 {
		m := medianTrial(trials)
		m.Path = pathName(o, proto)
		m.print(fmt.Sprintf("median of %d", len(trials)))
	}
	if o.jsonOut != "" {
		b, _ := json.MarshalIndent(map[string]any{"options": fmt.Sprintf("%+v", o), "trials": trials}, "", "  ")
		if err := os.WriteFile(o.jsonOut, b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// An eventStats is the delivery of one change to every client.
type eventStats struct {
	P50, P99, Max float64 // ms
	Missing       int64   // clients that did not receive it in time
}

// A trial is the figures of one run on a fresh server.
type trial struct {
	Path           string // which path the figures are for (pathName)
	Subscribers    int
	ConnectS       float64 // first dial to the last snapshot received
	RSSBeforeKB    int64
	RSSHeldKB      int64
	KBPerSub       float64
	Events         []eventStats
	P50, P99, Max  float64 // ms, median over events
	Missing        int64   // summed over events
	ServerCPU      float64 // s over the events
	ToolCPU        float64
	OtherCPU       float64 // busy time of the machine outside server and tool
	WindowS        float64
	USPerSubEvent  float64 // server µs CPU per subscriber per event
	Requests       int64   // upstream requests during the events
	RequestsPerS   float64
	MaxIn10ms      int // most upstream requests within any 10 ms
	MaxIn100ms     int
	RSSEventsMaxKB int64 // highest RSS while the events ran
	RSSEndKB       int64
	FilesBefore    int // server's open files before and after the events
	FilesAfter     int
	Resynced       int // clients that received more than one snapshot
	Retried        int // connection attempts made again

	// With -live: the server's live heap and goroutine stacks per idle
	// subscriber, after two forced GCs (liveMemory).
	LiveKBPerSub  float64 `json:",omitempty"`
	StackKBPerSub float64 `json:",omitempty"`
}

// pathName says which delivery path a run measures: the protocol, and
// whether the server logs the requests.
func pathName(o options, p *protocol) string {
	name := p.name()
	if o.target != "" {
		name += ", target " + o.target
	} else if o.accessLog {
		name += ", access log"
	} else {
		name += ", no access log"
	}
	return name
}

func runTrial(ctx context.Context, o options, proto *protocol) (*trial, error) {
	addr := o.upstreamAddr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	up, err := newUpstream(addr, o.topics, o.eventBytes)
	if err != nil {
		return nil, err
	}
	defer up.close()

	base, pid := o.target, o.pid
	if base == "" {
		var env []string
		if o.env != "" {
			env = strings.Split(o.env, ",")
		}
		p, err := startCaddy(o.caddy, env, serverConfig{
			upstream: up.url, interval: o.interval, writeTimeout: o.writeTimeout,
			heartbeat: o.heartbeat, pprof: o.pprof, accessLog: o.accessLog,
			tls: proto.tls, h3: proto.version == 3,
		})
		if err != nil {
			return nil, err
		}
		defer p.stop()
		base, pid = p.base, p.pid
		if proto.tls && o.caFile == "" {
			roots, err := loadRoots(filepath.Join(p.dir, rootCert))
			if err != nil {
				return nil, err
			}
			proto.roots = roots
		}
	}
	sleep(ctx, o.settle)
	rssKB := func(string) int64 { return sumProcs(pid, rssKB) }
	cpuSeconds := func(p string) float64 {
		if p == "self" {
			return cpuSeconds(p)
		}
		return sumProcs(pid, cpuSeconds)
	}
	openFiles := func(string) int { return sumProcs(pid, openFiles) }
	tr := &trial{Subscribers: o.n * o.topics, RSSBeforeKB: rssKB(pid)}
	var liveBefore memory
	if o.live {
		if liveBefore, err = liveMemory(ctx, o.pprof); err != nil {
			return nil, err
		}
	}

	slowEvery := 0
	if o.slow > 0 {
		slowEvery = int(math.Round(1 / o.slow))
	}
	s := newSwarm(base, o.subPath, o.topics, o.n, o.events, slowEvery)
	s.slowRcvBuf = o.slowRcvBuf
	s.hub = o.publish != ""
	s.proto = proto
	defer s.close()
	cctx, ccancel := context.WithTimeout(ctx, 2*time.Minute)
	start := time.Now()
	err = s.connect(cctx, o.inFlight)
	ccancel()
	if err != nil {
		return nil, fmt.Errorf("connecting: %w", err)
	}
	tr.ConnectS = time.Duration(s.lastSnap.Load() - start.UnixNano()).Seconds()
	tr.Retried = int(s.retried.Load())
	if o.hold > 0 {
		sleep(ctx, o.hold)
		tr.RSSHeldKB = rssKB(pid)
		tr.KBPerSub = float64(tr.RSSHeldKB-tr.RSSBeforeKB) / float64(tr.Subscribers)
		if o.live {
			held, err := liveMemory(ctx, o.pprof)
			if err != nil {
				return nil, err
			}
			tr.LiveKBPerSub = float64(held.HeapAlloc-liveBefore.HeapAlloc) / 1024 / float64(tr.Subscribers)
			tr.StackKBPerSub = float64(held.StackInuse-liveBefore.StackInuse) / 1024 / float64(tr.Subscribers)
		}
	}
	if o.pause {
		fmt.Fprintf(os.Stderr, "holding %d streams; Enter to go on\n", tr.Subscribers)
		fmt.Scanln()
	}

	// The events.
	fast := int64(0)
	for _, c := range s.clients {
		if !c.slow {
			fast++
		}
	}
	tr.FilesBefore = openFiles(pid)
	var rssMu sync.Mutex
	sampleDone := make(chan struct{})
	stopSampling := make(chan struct{})
	go func() {
		defer close(sampleDone)
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stopSampling:
				return
			case <-t.C:
				r := rssKB(pid)
				rssMu.Lock()
				tr.RSSEventsMaxKB = max(tr.RSSEventsMaxKB, r)
				rssMu.Unlock()
			}
		}
	}()
	cpu0, tool0, busy0, t0 := cpuSeconds(pid), cpuSeconds("self"), machineBusy(), time.Now()
	perEvent := max(10*time.Second, 3*o.interval)
	for k := 1; k <= o.events; k++ {
		if o.publish != "" {
			if err := publish(ctx, o.publish, o.publishTopic, o.publishHeader, up.message(int64(k), time.Now())); err != nil {
				return nil, err
			}
		} else {
			up.change(int64(k))
		}
		deadline := time.Now().Add(perEvent)
		for s.received[k-1].Load() < fast && time.Now().Before(deadline) && ctx.Err() == nil {
			time.Sleep(2 * time.Millisecond)
		}
		if k < o.events {
			sleep(ctx, o.gap)
		}
	}
	cpu1, tool1, busy1, t1 := cpuSeconds(pid), cpuSeconds("self"), machineBusy(), time.Now()
	close(stopSampling)
	<-sampleDone
	tr.RSSEndKB = rssKB(pid)
	tr.FilesAfter = openFiles(pid)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	tr.ServerCPU, tr.ToolCPU = cpu1-cpu0, tool1-tool0
	tr.OtherCPU = (busy1 - busy0) - tr.ServerCPU - tr.ToolCPU
	tr.WindowS = t1.Sub(t0).Seconds()
	tr.USPerSubEvent = tr.ServerCPU * 1e6 / float64(int64(o.events)*fast)

	times := up.requestTimes(t0, t1)
	tr.Requests = int64(len(times))
	tr.RequestsPerS = float64(len(times)) / tr.WindowS
	tr.MaxIn10ms = maxWithin(times, 10_000)
	tr.MaxIn100ms = maxWithin(times, 100_000)

	lat := make([]float64, 0, len(s.clients))
	for k := 0; k < o.events; k++ {
		lat = lat[:0]
		for _, c := range s.clients {
			if c.slow {
				continue
			}
			if v := c.lat[k].Load(); v >= 0 {
				lat = append(lat, float64(v)/1000)
			}
		}
		slices.Sort(lat)
		tr.Events = append(tr.Events, eventStats{
			P50: percentile(lat, 0.50), P99: percentile(lat, 0.99), Max: percentile(lat, 1),
			Missing: fast - int64(len(lat)),
		})
		tr.Missing += fast - int64(len(lat))
	}
	tr.P50 = median(tr.Events, func(e eventStats) float64 { return e.P50 })
	tr.P99 = median(tr.Events, func(e eventStats) float64 { return e.P99 })
	tr.Max = median(tr.Events, func(e eventStats) float64 { return e.Max })
	for _, c := range s.clients {
		if c.snapshots.Load() > 1 {
			tr.Resynced++
		}
	}
	return tr, nil
}

// publishClient publishes to a hub, over HTTPS too: a hub of the same run
// has a certificate of its own making.
var publishClient = &http.Client{Transport: &http.Transport{
	TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
}}

// publish POSTs one message to a hub: as the body, or with topic as a form
// of the fields topic and data (Mercure's way), with the header hdr
// ("Name: value") if not empty.
func publish(ctx context.Context, url, topic, hdr string, msg []byte) error {
	body, ctype := msg, "application/json"
	if topic != "" {
		body = []byte(neturl.Values{"topic": {topic}, "data": {string(msg)}}.Encode())
		ctype = "application/x-www-form-urlencoded"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", ctype)
	if name, value, ok := strings.Cut(hdr, ":"); ok {
		req.Header.Set(strings.TrimSpace(name), strings.TrimSpace(value))
	}
	resp, err := publishClient.Do(req)
	if err != nil {
		return fmt.Errorf("publishing: %w", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		return fmt.Errorf("publishing: %s", resp.Status)
	}
	return nil
}

// sumProcs sums f over the comma-separated process ids.
func sumProcs[T int | int64 | float64](pids string, f func(string) T) T {
	var sum T
	for _, p := range strings.Split(pids, ",") {
		sum += f(p)
	}
	return sum
}

// maxWithin returns the most of the sorted times that lie within any window
// of width w.
func maxWithin(times []int64, w int64) int {
	best, lo := 0, 0
	for hi := range times {
		for times[hi]-times[lo] >= w {
			lo++
		}
		best = max(best, hi-lo+1)
	}
	return best
}

// percentile returns the q-quantile of sorted values (nearest rank).
func percentile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func median[T any](xs []T, f func(T) float64) float64 {
	v := make([]float64, 0, len(xs))
	for _, x := range xs {
		v = append(v, f(x))
	}
	slices.Sort(v)
	if len(v) == 0 {
		return math.NaN()
	}
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// medianTrial returns the median of each figure over trials.
func medianTrial(ts []*trial) *trial {
	mf := func(f func(*trial) float64) float64 { return median(ts, f) }
	mi := func(f func(*trial) int64) int64 {
		return int64(median(ts, func(t *trial) float64 { return float64(f(t)) }))
	}
	return &trial{
		Subscribers:    ts[0].Subscribers,
		ConnectS:       mf(func(t *trial) float64 { return t.ConnectS }),
		RSSBeforeKB:    mi(func(t *trial) int64 { return t.RSSBeforeKB }),
		RSSHeldKB:      mi(func(t *trial) int64 { return t.RSSHeldKB }),
		KBPerSub:       mf(func(t *trial) float64 { return t.KBPerSub }),
		LiveKBPerSub:   mf(func(t *trial) float64 { return t.LiveKBPerSub }),
		StackKBPerSub:  mf(func(t *trial) float64 { return t.StackKBPerSub }),
		P50:            mf(func(t *trial) float64 { return t.P50 }),
		P99:            mf(func(t *trial) float64 { return t.P99 }),
		Max:            mf(func(t *trial) float64 { return t.Max }),
		Missing:        mi(func(t *trial) int64 { return t.Missing }),
		ServerCPU:      mf(func(t *trial) float64 { return t.ServerCPU }),
		ToolCPU:        mf(func(t *trial) float64 { return t.ToolCPU }),
		OtherCPU:       mf(func(t *trial) float64 { return t.OtherCPU }),
		WindowS:        mf(func(t *trial) float64 { return t.WindowS }),
		USPerSubEvent:  mf(func(t *trial) float64 { return t.USPerSubEvent }),
		Requests:       mi(func(t *trial) int64 { return t.Requests }),
		RequestsPerS:   mf(func(t *trial) float64 { return t.RequestsPerS }),
		MaxIn10ms:      int(mi(func(t *trial) int64 { return int64(t.MaxIn10ms) })),
		MaxIn100ms:     int(mi(func(t *trial) int64 { return int64(t.MaxIn100ms) })),
		RSSEventsMaxKB: mi(func(t *trial) int64 { return t.RSSEventsMaxKB }),
		RSSEndKB:       mi(func(t *trial) int64 { return t.RSSEndKB }),
		FilesBefore:    int(mi(func(t *trial) int64 { return int64(t.FilesBefore) })),
		FilesAfter:     int(mi(func(t *trial) int64 { return int64(t.FilesAfter) })),
		Resynced:       int(mi(func(t *trial) int64 { return int64(t.Resynced) })),
		Retried:        int(mi(func(t *trial) int64 { return int64(t.Retried) })),
	}
}

func (t *trial) print(label string) {
	fmt.Printf("%s [%s]: N=%d connect %.2fs | latency p50 %.1f p99 %.1f max %.1f ms (missing %d) | RSS %d -> %d KB = %.1f KB/sub | CPU server %.2fs tool %.2fs other %.2fs in %.1fs = %.1f µs/sub/event | upstream %d req (%.1f/s, max %d in 10ms, %d in 100ms) | RSS during events max %d KB, end %d KB | files %d -> %d | resynced %d | connections retried %d\n",
		label, t.Path, t.Subscribers, t.ConnectS, t.P50, t.P99, t.Max, t.Missing,
		t.RSSBeforeKB, t.RSSHeldKB, t.KBPerSub, t.ServerCPU, t.ToolCPU, t.OtherCPU, t.WindowS, t.USPerSubEvent,
		t.Requests, t.RequestsPerS, t.MaxIn10ms, t.MaxIn100ms, t.RSSEventsMaxKB, t.RSSEndKB, t.FilesBefore, t.FilesAfter, t.Resynced, t.Retried)
	if t.LiveKBPerSub != 0 || t.StackKBPerSub != 0 {
		fmt.Printf("    after two forced GCs: live heap %.2f KB/sub, goroutine stacks %.2f KB/sub\n", t.LiveKBPerSub, t.StackKBPerSub)
	}
	if len(t.Events) > 0 && len(t.Events) <= 10 {
		for i, e := range t.Events {
			fmt.Printf("    event %d: p50 %.1f p99 %.1f max %.1f ms, missing %d\n", i+1, e.P50, e.P99, e.Max, e.Missing)
		}
	}
}

// sleep waits for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
