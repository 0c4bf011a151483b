// Command pollsse-soak drives a real Caddy with the poll_sse handler through
// everything at once, for as long as it is asked to, and checks all the
// time what a browser and an operator rely on.
//
// It starts the cmd/caddy binary (built from the current directory unless
// -caddy names one) with a Caddyfile of five poll_sse routes over plain
// HTTP/1.1 and HTTPS (HTTP/1.1 and HTTP/2, `tls internal`), and its own
// upstream; -instances starts more processes, each with ports of its own,
// between which the clients hop:
//
//   - Upstream documents that mutate at random, seeded: objects with keys
//     that need escaping, arrays with inserts, moves and removes, a tree ten
//     levels deep, one that switches between an object and an array, a
//     ~1 MB array, one for merge_patch, one of 6 MB that never changes
//     while its upstream flaps, one per user (forward_headers
//     Authorization), and templated topics made from placeholder values.
//     Polls fail at random: 500, 502, 503, 429 and 503 with Retry-After,
//     hangs past the timeout, resets mid-body, truncated and invalid JSON,
//     HTML error pages, bodies over max_body, trickling bodies, 304 with
//     and without a changed ETag, redirects on the origin, elsewhere and in
//     a loop.
//   - Clients of every kind at once: keepers that stay, over each protocol;
//     hoppers that drop and resume by Last-Event-ID or last_event_id;
//     clients with expired, malformed, foreign and pre-restart ids;
//     reconnect storms of a thousand; slow readers; readers that stop
//     reading; templated topics created and abandoned by the hundred,
//     hostile placeholder values; per-user streams, with other users' ids;
//     refused credentials; slowloris and silent connections.
//   - Operations at random: caddy reload with unchanged and with changed
//     topic configurations, and a stop and start of Caddy.
//
// Invariants, checked all the time: after every event each client's
// document equals the version of the upstream's document it claims; ids
// have no duplicate and no gap within a stream, and a resume continues
// right after the id sent (or is a snapshot where the log no longer holds
// it); no client sees another user's document; a reader that keeps up
// reaches every version within the latency budget while others stall; the
// upstream gets
// at most one request per topic per interval, one at a time, fewer under
// backoff, and none on another host; after each phase the handler counts
// exactly the keepers' streams and topics, and Caddy's goroutines, heap and
// open files are back to their baseline. It prints a summary line every
// minute and a report at the end, and exits 1 at the first broken
// invariant, saying what broke and the seed that reproduces the run.
//
// With -store redis, the instances share their topics through a redis-server
// that the soak starts: one instance polls each topic, every instance
// streams the same ids, and the checks span the instances: an id carries
// the same data on every instance, a browser that hops resumes on another
// without a gap or a duplicate, the upstream gets at most one request per
// topic per interval from all of them together, and an instance killed with
// SIGKILL mid-run (then started again) breaks none of it.
//
//	go run ./cmd/pollsse-soak -duration 60s -seed 1        # what make test runs
//	go run ./cmd/pollsse-soak -duration 1h -race=false     # a long run
//	go run ./cmd/pollsse-soak -duration 1h -race=false -instances 3 -store redis
//
// -waves runs, instead, a loop of one shape of load (waves.go):
//
//	go run ./cmd/pollsse-soak -race=false -waves 10000 -runs 23
//
// The files:
//
//	main.go        flags, the run and its phases' schedule
//	soak.go        phases, readers that keep up, keepers, operations, resources
//	activities.go  the clients that come and go during a phase
//	client.go      one stream: protocols, resumes, slow and stalled reading
//	check.go       the checks of each event, and the ledger of topic logs
//	verify.go      the documents shared among a topic's clients
//	patch.go       JSON Patch and Merge Patch on shared documents
//	upstream.go    the legacy API: versions, faults, checks of the polls
//	doc.go         documents, their canonical form and random changes
//	caddy.go       the Caddyfile and the Caddy processes
//	report.go      the summary lines and the final report
package main

import (
	"context"
	"crypto/x509"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

type options struct {
	duration  time.Duration
	seed      uint64
	caddy     string
	race      bool
	instances int
	store     string
	phase     time.Duration
	scale     float64
	storm     int
	budget    time.Duration
	every     time.Duration
	dir       string
	report    string
	keep      bool
	logLevel  string
	// waves, when its n is set, runs the waves loop instead (waves.go).
	waves waveOptions
}

// command is the command line that runs o again.
func (o options) command() string {
	args := []string{"pollsse-soak", "-duration", o.duration.String(), "-seed", strconv.FormatUint(o.seed, 10), "-race=" + strconv.FormatBool(o.race)}
	if o.instances != 1 {
		args = append(args, "-instances", strconv.Itoa(o.instances))
	}
	if o.store != "memory" {
		args = append(args, "-store", o.store)
	}
	if o.scale != 1 {
		args = append(args, "-scale", strconv.FormatFloat(o.scale, 'g', -1, 64))
	}
	if o.storm != 1000 {
		args = append(args, "-storm", strconv.Itoa(o.storm))
	}
	if o.phase != 0 {
		args = append(args, "-phase", o.phase.String())
	}
	args = append(args, "-budget", o.budget.String())
	return strings.Join(args, " ")
}

func main() {
	var o options
	flag.DurationVar(&o.duration, "duration", time.Minute, "how long to run")
	flag.Uint64Var(&o.seed, "seed", 0, "seed of every random choice (0: from the clock, printed)")
	flag.StringVar(&o.caddy, "caddy", "", "Caddy binary built from ./cmd/caddy; empty: build one from the current directory")
	flag.BoolVar(&o.race, "race", true, "build Caddy with the race detector (when -caddy is empty)")
	flag.IntVar(&o.instances, "instances", 1, "Caddy instances, each with ports of its own; clients hop between them")
	flag.StringVar(&o.store, "store", "memory", "the handlers' store: memory (each instance its own) or redis (all instances on one redis-server that the soak starts; kills one with SIGKILL now and then)")
	flag.DurationVar(&o.phase, "phase", 0, "length of a phase, after which the clients leave and resources are checked (0: from -duration)")
	flag.Float64Var(&o.scale, "scale", 1, "factor on the number of clients")
	flag.IntVar(&o.storm, "storm", 1000, "clients of a reconnect storm")
	flag.DurationVar(&o.budget, "budget", 0, "latency budget of a reader that keeps up, from the upstream's answer (0: 5s with the race detector, else 2s)")
	flag.DurationVar(&o.every, "every", time.Minute, "period of the summary line")
	flag.StringVar(&o.dir, "dir", "", "working directory for Caddy's files (default: a temporary one, removed unless the run fails or -keep)")
	flag.StringVar(&o.report, "report", "", "also write the final report to this file")
	flag.BoolVar(&o.keep, "keep", false, "keep the working directory")
	flag.StringVar(&o.logLevel, "log", "INFO", "Caddy's log level (its log is caddy.log in the working directory)")
	flag.IntVar(&o.waves.n, "waves", 0, "instead of the soak, loop over runs of two waves of this many raw HTTP/1.1 streams on one topic, then changes that must reach them all (see waves.go)")
	flag.IntVar(&o.waves.runs, "runs", 23, "with -waves: runs")
	flag.DurationVar(&o.waves.hold, "hold", 10*time.Second, "with -waves: how long the first wave is held")
	flag.IntVar(&o.waves.changes, "changes", 5, "with -waves: changes, a second apart")
	flag.BoolVar(&o.waves.overlap, "overlap", false, "with -waves: close the first wave while the second one opens")
	flag.Parse()
	if o.seed == 0 {
		o.seed = uint64(time.Now().UnixNano()) % 1_000_000_000
	}
	if o.store != "memory" && o.store != "redis" {
		fmt.Fprintf(os.Stderr, "pollsse-soak: -store %s: want memory or redis\n", o.store)
		os.Exit(2)
	}
	os.Exit(run(o))
}

func run(o options) int {
	if err := checkSystem(); err != nil {
		fmt.Fprintln(os.Stderr, "pollsse-soak:", err)
		return 2
	}
	raiseOpenFiles()
	start := time.Now()
	dir := o.dir
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "pollsse-soak-"); err != nil {
			fmt.Fprintln(os.Stderr, "pollsse-soak:", err)
			return 2
		}
	}
	if o.caddy == "" {
		o.caddy = filepath.Join(dir, "caddy")
		args := []string{"build", "-o", o.caddy}
		if o.race {
			args = append(args, "-race")
		}
		fmt.Printf("pollsse-soak: building ./cmd/caddy (race detector %v)\n", o.race)
		cmd := exec.Command("go", append(args, "./cmd/caddy")...)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "pollsse-soak: building caddy:", err)
			return 2
		}
	} else {
		o.race = strings.Contains(buildInfo(o.caddy), "-race=true")
	}
	if o.waves.n > 0 {
		code := runWaves(o, dir)
		if code != 0 || o.keep {
			fmt.Printf("pollsse-soak: Caddy's files, logs and output are in %s\n", dir)
		} else if o.dir == "" {
			os.RemoveAll(dir)
		}
		return code
	}
	if o.budget == 0 {
		o.budget = 2 * time.Second
		if o.race {
			o.budget = 5 * time.Second
		}
	}
	if o.phase == 0 {
		o.phase = min(max(o.duration/4, 12*time.Second), time.Minute)
	}
	s := &soak{
		o: o, start: time.Now(), stats: newStats(), oldIDs: map[string][]string{},
		baselines: map[*instance]sample{}, lastSample: map[*instance]sample{}, worstDelta: map[*instance]sample{},
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	defer s.cancel()
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM)
	go func() {
		if _, ok := <-signals; ok {
			s.logf("interrupted")
			s.cancel()
		}
	}()
	s.ledger = newLedger(history, s)
	go func() {
		// A run that does not end soon after it was told to is stuck:
		// say where.
		<-s.ctx.Done()
		time.Sleep(30 * time.Second)
		buf := make([]byte, 8<<20)
		fmt.Fprintf(os.Stderr, "pollsse-soak: still running 30s after the end:\n%s\n", buf[:runtime.Stack(buf, true)])
	}()
	s.logf("pollsse-soak: seed %d, %s, %d instance(s) on the %s store, phases of %s, Caddy %s", o.seed, o.duration, o.instances, o.store, o.phase, o.caddy)
	code := s.run(dir)
	elapsed := time.Since(start)
	report := s.report(elapsed, o.race)
	fmt.Print(report)
	if o.report != "" {
		os.WriteFile(o.report, []byte(report), 0o644)
	}
	if s.stacks != nil {
		os.WriteFile(filepath.Join(dir, "soak-goroutines.txt"), s.stacks, 0o644)
	}
	if code != 0 || o.keep {
		fmt.Printf("pollsse-soak: Caddy's files, logs and output are in %s\n", dir)
	} else if o.dir == "" {
		os.RemoveAll(dir)
	}
	return code
}

// run runs the soak in dir and returns the exit code.
func (s *soak) run(dir string) int {
	shared := s.o.store == "redis"
	up, err := newUpstream(timings{interval: pollInterval, timeout: upTimeout, maxBackoff: maxBackoff, maxBody: maxBody, shared: shared}, s)
	if err != nil {
		s.logf("starting the upstream: %v", err)
		return 2
	}
	defer up.close()
	s.up = up
	s.presence = newPresence(idleTimeout)
	started := s.presence.startedAnew
	up.started.Store(&started)
	identify := s.pollerOf
	up.identify.Store(&identify)
	s.ledger.shared = shared
	s.hc = handlerConfig{upstream: up.url, gens: map[string]int{"s": 1, "m": 1, "f": 1, "u": 1, "t": 1}, heartbeat: 2 * time.Second, retry: 250 * time.Millisecond, logLevel: s.o.logLevel}
	if shared {
		r, err := startRedis(filepath.Join(dir, "redis"))
		if err != nil {
			s.logf("starting Redis: %v", err)
			return 2
		}
		defer r.stop()
		s.redis = r
		s.store = &storeWatch{errors: map[*instance]float64{}}
		trouble := s.store.trouble
		up.storeTrouble.Store(&trouble)
		s.ledger.trouble = trouble
		s.hc.redisURL = r.url()
		s.logf("redis-server on %s; every instance's topics in it", r.url())
	}
	for i := range s.o.instances {
		in, err := newInstance(i+1, s.o.caddy, filepath.Join(dir, fmt.Sprintf("i%d", i+1)))
		if err == nil && s.redis != nil {
			in.redisPort = s.redis.port
		}
		if err == nil {
			err = in.writeConfig(s.config())
		}
		if err == nil {
			err = in.start(s.ctx)
		}
		if err != nil {
			s.logf("starting Caddy: %v", err)
			return 2
		}
		s.insts = append(s.insts, in)
	}
	defer func() {
		for _, in := range s.insts {
			in.kill()
		}
	}()
	roots := x509.NewCertPool()
	for _, in := range s.insts {
		pem, _ := os.ReadFile(filepath.Join(in.dir, "storage", "pki", "authorities", "local", "root.crt"))
		roots.AppendCertsFromPEM(pem)
	}
	s.ts = newTransports(roots)
	s.setUp()

	var bg sync.WaitGroup
	bgCtx, bgCancel := context.WithCancel(s.ctx)
	bg.Add(3)
	go func() { defer bg.Done(); s.watchReaders(bgCtx) }()
	go func() { defer bg.Done(); s.summaries(bgCtx, s.o.every) }()
	go func() { defer bg.Done(); s.watchProcesses(bgCtx) }()
	if s.redis != nil {
		bg.Add(1)
		go func() { defer bg.Done(); s.watchStore(bgCtx, s.store) }()
	}
	var keepers sync.WaitGroup
	keeperCtx, stopKeepers := context.WithCancel(s.ctx)
	s.startKeepers(keeperCtx, &keepers)
	deadline := s.start.Add(s.o.duration)
	for end := time.Now().Add(30 * time.Second); !s.keepersConnected(); sleep(s.ctx, 50*time.Millisecond) {
		if time.Now().After(end) || s.ctx.Err() != nil {
			s.fail("the keepers did not all have a document within 30s")
			break
		}
	}
	if s.ctx.Err() == nil {
		s.quiesce(0)
	}
	rng := rand.New(rand.NewPCG(s.o.seed, 0x50a4))
	for phase := 1; s.ctx.Err() == nil; phase++ {
		left := time.Until(deadline) - quiesceTime
		if left < minPhase {
			break
		}
		s.runPhase(phase, s.pickWeather(rng, phase), min(s.o.phase, left), rng)
	}
	stopKeepers()
	keepers.Wait()
	bgCancel()
	bg.Wait()
	if s.failed() == "" {
		for _, in := range s.insts {
			if err := in.stop(); err != nil {
				s.fail("%s: %v", in.name(), err)
			}
		}
	}
	for _, in := range s.insts {
		if t := in.troubleInOutput(); t != "" {
			s.fail("%s's output tells of trouble:\n%s", in.name(), t)
		}
		ours, others := in.races()
		if len(ours) > 0 {
			s.fail("%s: the race detector found a data race in the handler:\n%s", in.name(), ours[0])
		}
		s.stats.caddyRaces.Add(int64(others))
	}
	s.logf("%s", s.summaryLine())
	if s.failed() != "" {
		return 1
	}
	return 0
}

// Phases are at least minPhase long; quiesceTime is what one takes to
// settle after its clients left.
const (
	minPhase    = 8 * time.Second
	quiesceTime = 8 * time.Second
)

// watchProcesses fails the run when a Caddy process ends by itself, or
// tells of a data race or a panic.
func (s *soak) watchProcesses(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if s.redis != nil && s.redis.exitedEarly() {
				s.fail("redis-server exited by itself; see %s", filepath.Join(s.redis.dir, "redis.log"))
				return
			}
			for _, in := range s.insts {
				if in.exitedEarly() {
					s.fail("%s exited by itself:\n%s", in.name(), in.troubleInOutput())
					return
				}
				if t := in.troubleInOutput(); t != "" {
					s.fail("%s's output tells of trouble:\n%s", in.name(), t)
					return
				}
				if ours, _ := in.races(); len(ours) > 0 {
					s.fail("%s: the race detector found a data race in the handler:\n%s", in.name(), ours[0])
					return
				}
			}
		}
	}
}

// buildInfo returns `go version -m` of a binary.
func buildInfo(bin string) string {
	out, _ := exec.Command("go", "version", "-m", bin).Output()
	return string(out)
}
