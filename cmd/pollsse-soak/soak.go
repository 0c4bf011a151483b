package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// A soak is one run: the upstream, the Caddy instances, the clients and
// what they found.
type soak struct {
	o      options
	up     *upstream
	insts  []*instance
	ts     *transports
	ledger *ledger
	stats  *stats
	start  time.Time
	// redis is the redis-server of a run on the redis store, else nil,
	// and store what the instances told of it.
	redis *redisServer
	store *storeWatch

	ctx    context.Context
	cancel context.CancelFunc

	// hcMu guards hc, which reloads change.
	hcMu sync.Mutex
	hc   handlerConfig

	// main are the topics of the /s/ and /m/ routes, users those of /u/,
	// and still the one of /f/, whose 6 MB never change while its
	// upstream flaps.
	main  []*topicSpec
	users []*topicSpec
	still *topicSpec
	// mallory is a user whose credentials the upstream refuses.
	mallory *topicSpec

	keepers []*keeper
	// presence knows when the topics of each instance had no stream.
	presence *presence
	// readers are the streams that keep up, open now.
	readers sync.Map

	failMu  sync.Mutex
	failure string
	// stacks are the soak's goroutines when the invariant broke, for
	// soak-goroutines.txt in the working directory.
	stacks []byte
	// failHook, when set, receives the broken invariants instead, and
	// settle shortens settleTime (tests).
	failHook func(format string, args ...any)
	settle   time.Duration

	// ops counts the operations under way, and opsEnd is when the last
	// one ended: latency budgets do not run across them.
	opsMu     sync.Mutex
	opsActive int
	opsEnd    time.Time

	// oldIDs are ids of processes that have since been stopped, by topic.
	idsMu  sync.Mutex
	oldIDs map[string][]string

	// baselines are the samples of each instance's process right after it
	// started (and settled), and lastSample the latest.
	baseMu     sync.Mutex
	baselines  map[*instance]sample
	lastSample map[*instance]sample
	worstDelta map[*instance]sample
}

// fail records a broken invariant and ends the run.
func (s *soak) fail(format string, args ...any) {
	if s.failHook != nil {
		s.failHook(format, args...)
		return
	}
	msg := fmt.Sprintf(format, args...)
	s.failMu.Lock()
	first := s.failure == ""
	if first {
		s.failure = msg
		buf := make([]byte, 16<<20)
		s.stacks = buf[:runtime.Stack(buf, true)]
	}
	s.failMu.Unlock()
	if first {
		s.logf("INVARIANT BROKEN: %s", msg)
		s.cancel()
	}
}

func (s *soak) failed() string {
	s.failMu.Lock()
	defer s.failMu.Unlock()
	return s.failure
}

func (s *soak) logf(format string, args ...any) {
	fmt.Fprintf(os.Stdout, "[%7.1fs] %s\n", time.Since(s.start).Seconds(), fmt.Sprintf(format, args...))
}

func (s *soak) config() handlerConfig {
	s.hcMu.Lock()
	defer s.hcMu.Unlock()
	hc := s.hc
	hc.gens = map[string]int{}
	for k, v := range s.hc.gens {
		hc.gens[k] = v
	}
	return hc
}

// opBegin and opDone bracket an operation (reload, restart).
func (s *soak) opBegin() {
	s.opsMu.Lock()
	s.opsActive++
	s.opsMu.Unlock()
}

func (s *soak) opDone() {
	s.opsMu.Lock()
	s.opsActive--
	s.opsEnd = time.Now()
	s.opsMu.Unlock()
}

// calm returns since when no operation has run (the future while one
// does), and whether one is under way. On a shared store, an instance that
// found the store out of reach counts as one: the topics it polls reach the
// others only once it is back.
func (s *soak) calm() (time.Time, bool) {
	s.opsMu.Lock()
	defer s.opsMu.Unlock()
	if s.opsActive > 0 {
		return time.Now().Add(time.Hour), true
	}
	calm := s.opsEnd.Add(opGrace)
	if s.store != nil {
		calm = later(calm, s.store.last().Add(opGrace+troubleLag))
	}
	return calm, false
}

// opGrace is how long after an operation the latency budget starts again.
const opGrace = 2 * time.Second

// setUp makes the upstream's topics and the soak's topic specs.
func (s *soak) setUp() {
	type mainTopic struct {
		name  string
		route string
		kind  docKind
		opts  func(*upTopic)
		pause func(*rand.Rand) time.Duration
	}
	quick := func(r *rand.Rand) time.Duration { return time.Duration(30+r.IntN(370)) * time.Millisecond }
	slow := func(r *rand.Rand) time.Duration { return time.Duration(500+r.IntN(1500)) * time.Millisecond }
	topics := []mainTopic{
		{"obj", "s", kindObject, func(t *upTopic) { t.shuffle, t.generated, t.lastModified = true, true, true }, quick},
		{"list", "s", kindList, nil, quick},
		{"deep", "s", kindDeep, func(t *upTopic) { t.lastModified = true }, quick},
		{"shape", "s", kindShape, nil, quick},
		{"big", "s", kindBig, nil, slow},
		{"merge", "m", kindMerge, nil, quick},
		{"still", "f", kindStill, func(t *upTopic) { t.flap = true }, nil},
	}
	for i, mt := range topics {
		ut := s.up.addTopic("/doc/"+mt.name, mt.kind, s.o.seed+uint64(i)*7919, mt.opts)
		mode := "json_patch"
		if mt.route == "m" {
			mode = "merge_patch"
		}
		spec := &topicSpec{name: "/" + mt.route + "/" + mt.name, path: "/" + mt.route + "/" + mt.name, mode: mode, verify: ut.check, main: true, up: ut, cache: new(verifyCache)}
		if mt.kind == kindStill {
			s.still = spec
			continue
		}
		s.main = append(s.main, spec)
		go ut.run(s.ctx, mt.pause)
	}
	for i, user := range []string{"alice", "bob", "carol"} {
		ut := s.up.addTopic("user:"+user, kindList, s.o.seed+uint64(100+i)*104729, func(t *upTopic) {
			t.user = user
			t.m.doc["user"] = user
		})
		s.users = append(s.users, &topicSpec{name: "/u/feed of " + user, path: "/u/feed", mode: "json_patch", user: user,
			header: map[string]string{"Authorization": "Bearer " + userToken(user)}, verify: ut.check, main: true, up: ut, cache: new(verifyCache)})
		go ut.run(s.ctx, func(r *rand.Rand) time.Duration { return time.Duration(150+r.IntN(600)) * time.Millisecond })
	}
	s.mallory = &topicSpec{name: "/u/feed of mallory", path: "/u/feed", mode: "json_patch", user: "mallory",
		header: map[string]string{"Authorization": "Bearer not-a-token-of-mallory"},
		verify: func(int, []byte) error {
			return fmt.Errorf("mallory, whose credentials the upstream refuses, got a document")
		}}
}

// templateTopic returns the spec of the path-templated topic of name and q.
func (s *soak) templateTopic(name, q string) *topicSpec {
	path := "/t/" + escapeSegments(name) + "?q=" + url.QueryEscape(q)
	return &topicSpec{name: "/t/" + name + "?q=" + q, path: path, mode: "json_patch", verify: func(v int, canon []byte) error {
		if now := s.up.tmplVersion(name, q, time.Now()); v > now {
			return fmt.Errorf("it claims version %d, beyond the upstream's %d", v, now)
		}
		if want := tmplDoc(name, q, v); string(canon) != string(want) {
			return fmt.Errorf("it is not the document of the topic it asked for:\n  client:   %s\n  upstream: %s", canon, want)
		}
		return nil
	}}
}

func escapeSegments(name string) string {
	segs := strings.Split(name, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return strings.Join(segs, "/")
}

// A reader is a stream that keeps up: it reads events as fast as they come,
// so that every version the upstream serves must reach it within the
// latency budget, whatever the other streams do. Keepers, hoppers, storms
// and the clients with bad ids are readers; slow and stalled ones are not.
type reader struct {
	who   string
	topic *topicSpec
	inst  *instance
	// shared is set when the instances share a store: a version served
	// to any of them is due on every instance.
	shared bool

	mu sync.Mutex
	// since is when the current stream had its first event, zero while
	// it has none; version is the browser's version then.
	since   time.Time
	version int
	worst   time.Duration
	streams int
}

// opened notes the first event of a stream at at.
func (r *reader) opened(at time.Time, version int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.since, r.version = at, version
	r.streams++
}

// changed notes that the stream reached version v at at, and how long
// after the upstream first served the oldest version it had not reached.
func (r *reader) changed(s *soak, v int, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	calm, _ := s.calm()
	if m, ok := r.topic.up.firstServedAfter(r.marks(), r.version, later(r.since, calm)); ok && m.v <= v {
		d := at.Sub(m.at)
		r.worst = max(r.worst, d)
		if d > s.o.budget {
			s.fail("%s reached version %d %s after the upstream served version %d: over the latency budget of %s",
				r.who, v, d.Round(time.Millisecond), m.v, s.o.budget)
		}
	}
	r.version = v
}

// marks is the key of the versions served to the reader's instance.
func (r *reader) marks() string {
	return timings{shared: r.shared}.marksKey(r.inst.runID(), r.inst.gen(r.topic.route()))
}

func (r *reader) closed() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.since = time.Time{}
}

// late says how a reader is over the latency budget at now, "" if it is
// not: a version that the upstream first served to its instance more than
// budget ago, after its stream opened and after the last operation ended
// (calm), and that its browser has not reached.
func (r *reader) late(now, calm time.Time, budget time.Duration) string {
	r.mu.Lock()
	since, v := r.since, r.version
	r.mu.Unlock()
	if since.IsZero() {
		return ""
	}
	m, ok := r.topic.up.firstServedAfter(r.marks(), v, later(since, calm))
	if !ok {
		return ""
	}
	if d := now.Sub(m.at); d > budget {
		return fmt.Sprintf("%s is at version %d; the upstream served version %d %s ago: over the latency budget of %s",
			r.who, v, m.v, d.Round(time.Millisecond), budget)
	}
	return ""
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// newReader returns a reader for a passing client's stream; doneReader
// counts its worst latency once the stream ended.
func (s *soak) newReader(who string, t *topicSpec, in *instance) *reader {
	if t.up == nil {
		return nil
	}
	return &reader{who: who, topic: t, inst: in, shared: s.redis != nil}
}

func (s *soak) doneReader(r *reader) {
	if r == nil {
		return
	}
	r.mu.Lock()
	w := int64(r.worst)
	r.mu.Unlock()
	for {
		old := s.stats.worstReader.Load()
		if w <= old || s.stats.worstReader.CompareAndSwap(old, w) {
			return
		}
	}
}

// A keeper is a reader that stays for the whole run, over one protocol, to
// one instance, and reconnects at once with its last id whenever its
// stream ends (a reload, a restart).
type keeper struct {
	b     *browser
	proto proto
	inst  *instance
	r     *reader

	mu sync.Mutex
	// last is the browser's last id, for the other clients to read.
	last    string
	lastID  eventID
	hasLast bool
}

func (k *keeper) name() string { return k.r.who }

// runKeeper reads k's topic until ctx ends, reconnecting at once, with its
// last id, whenever the stream ends.
func (s *soak) runKeeper(ctx context.Context, k *keeper) {
	for ctx.Err() == nil {
		var r resume
		if k.b.hasLast {
			r = resume{sent: k.b.last, id: k.b.lastID, own: true}
		}
		r.instance = k.inst.runID()
		res := s.session(ctx, k.b, sessionOpts{
			proto:  k.proto,
			inst:   k.inst,
			resume: r,
			reader: k.r,
			onEvent: func(c *streamCheck, at time.Time) {
				k.mu.Lock()
				k.last, k.lastID, k.hasLast = c.b.last, c.b.lastID, c.b.hasLast
				k.mu.Unlock()
			},
		})
		if res.err != nil {
			s.fail("%s: %v", k.name(), res.err)
			return
		}
		if res.status != 0 && res.status != 200 && !s.refusalAllowed(res) {
			s.fail("%s: %v", k.name(), unexpected(k.b, res))
			return
		}
		// The stream ended: a reload or a restart, or the write timeout
		// of a moment when the soak's own process did not read. A
		// stopped Caddy is tried again a little later.
		if res.status == 200 {
			sleep(ctx, 20*time.Millisecond)
		} else {
			sleep(ctx, 100*time.Millisecond)
		}
	}
}

// watchReaders checks all the time that every reader whose stream is open
// reaches each version within the latency budget of its first serving, and
// checks the resumes that the ledger can tell about by now.
func (s *soak) watchReaders(ctx context.Context) {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			calm, _ := s.calm()
			s.readers.Range(func(key, _ any) bool {
				if late := key.(*reader).late(now, calm, s.o.budget); late != "" {
					s.fail("%s", late)
					return false
				}
				return true
			})
			s.ledger.checkResumes(now)
		}
	}
}

// startKeepers starts the keepers: one per main topic and protocol, one
// per user, spread over the instances.
func (s *soak) startKeepers(ctx context.Context, wg *sync.WaitGroup) {
	i := 0
	add := func(t *topicSpec, p proto) {
		in := s.insts[i%len(s.insts)]
		i++
		s.keepers = append(s.keepers, &keeper{b: &browser{topic: t}, proto: p, inst: in,
			r: &reader{who: fmt.Sprintf("the keeper of %s over %s on %s", t.name, p, in.name()), topic: t, inst: in, shared: s.redis != nil}})
	}
	for _, t := range append(append([]*topicSpec(nil), s.main...), s.still) {
		for _, p := range protos {
			add(t, p)
		}
	}
	for _, t := range s.users {
		add(t, protos[i%len(protos)])
	}
	for _, k := range s.keepers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.runKeeper(ctx, k)
		}()
	}
}

// keepersConnected tells whether every keeper has an open stream with a
// document.
func (s *soak) keepersConnected() bool {
	for _, k := range s.keepers {
		k.r.mu.Lock()
		ok := !k.r.since.IsZero()
		k.r.mu.Unlock()
		if !ok {
			return false
		}
	}
	return true
}

// A weather is what a phase throws at the handler.
type weather struct {
	name          string
	faultPerMille int32
	hoppers       int
	badIDs        int
	slow, stalled int
	churners      int
	users         int
	storm         int
	abuse         bool
	ops           int
}

func (s *soak) pickWeather(rng *rand.Rand, phase int) weather {
	scale := func(n int) int { return max(1, int(float64(n)*s.o.scale)) }
	w := weather{
		hoppers:  scale(8 + rng.IntN(16)),
		badIDs:   scale(2 + rng.IntN(4)),
		slow:     scale(1 + rng.IntN(4)),
		stalled:  scale(1 + rng.IntN(4)),
		churners: scale(2 + rng.IntN(4)),
		users:    scale(2 + rng.IntN(4)),
		ops:      1 + rng.IntN(3),
	}
	switch rng.IntN(4) {
	case 0:
		w.name, w.faultPerMille = "calm", 0
	case 1:
		w.name, w.faultPerMille = "drizzle", 50
	case 2:
		w.name, w.faultPerMille = "storm", 200
	default:
		w.name, w.faultPerMille = "flapping", 400
	}
	if rng.IntN(2) == 0 || phase == 1 {
		w.storm = s.o.storm
	}
	w.abuse = rng.IntN(3) == 0 || phase == 2
	return w
}

func (w weather) String() string {
	return fmt.Sprintf("%s (faults %.0f%%): %d hoppers, %d bad ids, %d slow, %d stalled, %d template churners, %d user hoppers, storm of %d, abuse %v, %d operations",
		w.name, float64(w.faultPerMille)/10, w.hoppers, w.badIDs, w.slow, w.stalled, w.churners, w.users, w.storm, w.abuse, w.ops)
}

// runPhase throws w at the handler for d, then lets everything settle.
func (s *soak) runPhase(phase int, w weather, d time.Duration, rng *rand.Rand) {
	s.logf("phase %d, %s: %s", phase, d.Round(time.Second), w)
	s.up.faultPerMille.Store(w.faultPerMille)
	ctx, cancel := context.WithTimeout(s.ctx, d)
	defer cancel()
	var wg sync.WaitGroup
	seed := rng.Uint64()
	spawn := func(n int, f func(ctx context.Context, rng *rand.Rand)) {
		for i := range n {
			wg.Add(1)
			r := rand.New(rand.NewPCG(seed, uint64(len(s.keepers)+i)*31+uint64(phase)))
			seed = r.Uint64()
			go func() {
				defer wg.Done()
				f(ctx, r)
			}()
		}
	}
	spawn(w.hoppers, s.hopper)
	spawn(w.badIDs, s.badID)
	spawn(w.slow, s.slowReader)
	spawn(w.stalled, s.staller)
	spawn(w.churners, s.churner)
	spawn(w.users, s.userHopper)
	spawn(1, s.malloryTries)
	if w.storm > 0 {
		spawn(1, func(ctx context.Context, rng *rand.Rand) {
			if sleep(ctx, time.Duration(rng.Int64N(int64(d/3)))) {
				s.storm(ctx, rng, w.storm)
			}
		})
	}
	if w.abuse {
		spawn(1, s.abuse)
	}
	// Operations at random moments of the phase, one at a time: every
	// kind in the first two phases, then any.
	wg.Add(1)
	go func() {
		defer wg.Done()
		r := rand.New(rand.NewPCG(seed, 0x0b5))
		kinds := make([]opKind, w.ops)
		last := opRestart
		if s.redis != nil {
			last = opKill
		}
		for i := range kinds {
			kinds[i] = opKind(r.IntN(int(last) + 1))
			if phase < 2 && kinds[i] >= opRestart {
				kinds[i] = opReloadSame
			}
		}
		switch phase {
		case 1:
			kinds = append([]opKind{opReloadSame, opReloadChanged}, kinds...)[:max(2, len(kinds))]
		case 2:
			kinds[0] = opRestart
			if s.redis != nil {
				kinds = append([]opKind{opKill}, kinds...)
			}
		}
		for _, k := range kinds {
			if !sleep(ctx, time.Duration(r.Int64N(int64(d/time.Duration(len(kinds)+1))))) {
				return
			}
			s.operate(ctx, r, k)
		}
	}()
	stuck := time.AfterFunc(d+30*time.Second, func() {
		buf := make([]byte, 8<<20)
		s.logf("phase %d is still running 30s after its end:\n%s", phase, buf[:runtime.Stack(buf, true)])
	})
	wg.Wait()
	stuck.Stop()
	if s.ctx.Err() != nil {
		return
	}
	s.up.faultPerMille.Store(0)
	s.quiesce(phase)
}

// quiesce waits until only the keepers remain and every topic that has no
// keeper has stopped, then checks that each process is back to its
// baseline.
func (s *soak) quiesce(phase int) {
	for _, in := range s.insts {
		want := 0
		topics := map[string]bool{}
		for _, k := range s.keepers {
			if k.inst == in {
				want++
				topics[k.b.topic.name] = true
			}
		}
		var last sample
		var err error
		settled := false
		for deadline := time.Now().Add(s.settleTime()); time.Now().Before(deadline) && s.ctx.Err() == nil; sleep(s.ctx, 250*time.Millisecond) {
			last, err = in.sample(false)
			if err == nil && last.subscribers == want && last.topics == len(topics) && s.keepersConnected() {
				settled = true
				break
			}
		}
		if s.ctx.Err() != nil {
			return
		}
		if !settled {
			var away []string
			for _, k := range s.keepers {
				k.r.mu.Lock()
				if k.r.since.IsZero() {
					away = append(away, k.name())
				}
				k.r.mu.Unlock()
			}
			s.fail("%s after phase %d: with only the keepers left, the handler counts %d subscribers and %d topics (want %d and %d; keepers without a stream: %v): %v",
				in.name(), phase, last.subscribers, last.topics, want, len(topics), away, err)
			return
		}
		s.checkResources(in, phase)
	}
}

// settleTime is how long a process may take to be quiet after a phase:
// the topics of templated and per-user routes stop after their idle
// timeout.
func (s *soak) settleTime() time.Duration {
	if s.settle > 0 {
		return s.settle
	}
	return userIdle + tmplIdle + 15*time.Second
}

// Resources that a process may hold beyond its baseline once it is quiet
// again: a few goroutines and files of connections being closed, and heap
// that grew with the histories.
const (
	goroutineSlack = 25
	fdSlack        = 12
	heapSlack      = 24 << 20
)

// exceeds tells whether s holds more than base allows.
func (s sample) exceeds(base sample) bool {
	return s.goroutines > base.goroutines+goroutineSlack || s.fds > base.fds+fdSlack ||
		s.heapInuse > base.heapInuse+max(heapSlack, base.heapInuse/2)
}

// checkResources compares an instance's process with its baseline, taken
// the first time it was quiet after it started.
func (s *soak) checkResources(in *instance, phase int) {
	s.baseMu.Lock()
	base, ok := s.baselines[in]
	s.baseMu.Unlock()
	var cur sample
	var err error
	for deadline := time.Now().Add(s.settleTime()); ; sleep(s.ctx, 500*time.Millisecond) {
		cur, err = in.sample(true)
		if err != nil {
			s.fail("%s: reading its resources: %v", in.name(), err)
			return
		}
		if !ok || !cur.exceeds(base) {
			break
		}
		if time.Now().After(deadline) || s.ctx.Err() != nil {
			s.fail("%s after phase %d did not return to its baseline:\n  baseline: %s\n  now:      %s", in.name(), phase, base, cur)
			return
		}
	}
	s.baseMu.Lock()
	defer s.baseMu.Unlock()
	if !ok {
		s.baselines[in] = cur
		s.logf("%s baseline (run %s): %s", in.name(), in.runID(), cur)
		return
	}
	s.lastSample[in] = cur
	d := s.worstDelta[in]
	d.goroutines = max(d.goroutines, cur.goroutines-base.goroutines)
	d.fds = max(d.fds, cur.fds-base.fds)
	d.heapInuse = max(d.heapInuse, cur.heapInuse-base.heapInuse)
	s.worstDelta[in] = d
	s.logf("%s after phase %d: %s (baseline %+d goroutines, %+d files, %+.1f MB heap)", in.name(), phase, cur,
		cur.goroutines-base.goroutines, cur.fds-base.fds, float64(cur.heapInuse-base.heapInuse)/(1<<20))
}

// Operations on Caddy.
type opKind int

const (
	// opReloadSame reloads a configuration whose topics are unchanged
	// (only the heartbeat changes): topics, ids and histories stay.
	opReloadSame opKind = iota
	// opReloadChanged changes the topic configuration of some routes:
	// their topics start anew, with new ids.
	opReloadChanged
	// opRestart stops Caddy and starts it again.
	opRestart
	// opKill kills Caddy with SIGKILL, in the middle of its streams and
	// polls, and starts it again: on a shared store the other instances
	// take its topics over within the lease. Only with -store redis.
	opKill
)

// operate runs one operation on an instance picked at random.
func (s *soak) operate(ctx context.Context, rng *rand.Rand, kind opKind) {
	in := s.insts[rng.IntN(len(s.insts))]
	s.opBegin()
	defer s.opDone()
	began := time.Now()
	defer func() {
		if d := time.Since(began); d > 5*time.Second {
			s.logf("the operation took %s", d.Round(time.Millisecond))
		}
	}()
	switch kind {
	case opReloadSame:
		s.hcMu.Lock()
		if s.hc.heartbeat == 2*time.Second {
			s.hc.heartbeat = 3 * time.Second
		} else {
			s.hc.heartbeat = 2 * time.Second
		}
		s.hcMu.Unlock()
		s.logf("reload of %s, topics unchanged (heartbeat %s)", in.name(), s.config().heartbeat)
		s.stats.reloadsSame.Add(1)
		s.reload(in)
	case opReloadChanged:
		routes := []string{"s", "m", "f", "u", "t"}
		rng.Shuffle(len(routes), func(i, j int) { routes[i], routes[j] = routes[j], routes[i] })
		changed := routes[:1+rng.IntN(len(routes))]
		slices.Sort(changed)
		s.hcMu.Lock()
		for _, r := range changed {
			s.hc.gens[r]++
		}
		s.hcMu.Unlock()
		s.logf("reload of %s, topic configuration of routes %v changed", in.name(), changed)
		s.stats.reloadsChanged.Add(1)
		s.reload(in)
	case opRestart, opKill:
		ids := s.lastIDs(in)
		if kind == opKill {
			s.logf("kill -9 and start of %s", in.name())
			s.stats.kills.Add(1)
			if err := in.kill9(); err != nil {
				s.fail("%s: %v", in.name(), err)
				return
			}
		} else {
			s.logf("stop and start of %s", in.name())
			s.stats.restarts.Add(1)
			if err := in.stop(); err != nil {
				s.fail("%s: %v", in.name(), err)
				return
			}
		}
		sleep(ctx, time.Duration(200+rng.IntN(1500))*time.Millisecond)
		if err := in.writeConfig(s.config()); err != nil {
			s.fail("%s: %v", in.name(), err)
			return
		}
		if err := in.start(s.ctx); err != nil {
			s.fail("%s: %v", in.name(), err)
			return
		}
		// Only now are they ids of a process that is gone; on a shared
		// store they are Redis's, which outlive every instance.
		if s.redis == nil {
			s.idsMu.Lock()
			for topic, id := range ids {
				s.oldIDs[topic] = append(s.oldIDs[topic], id)
			}
			s.idsMu.Unlock()
		}
		s.baseMu.Lock()
		delete(s.baselines, in)
		s.baseMu.Unlock()
	}
}

func (s *soak) reload(in *instance) {
	for _, i := range s.insts {
		if err := i.writeConfig(s.config()); err != nil {
			s.fail("%v", err)
			return
		}
	}
	if err := in.reload(); err != nil {
		s.fail("%s: %v", in.name(), err)
	}
}

// lastIDs returns the keepers' last ids on an instance about to stop, by
// topic, for clients that come back with an id from before a restart.
func (s *soak) lastIDs(in *instance) map[string]string {
	ids := map[string]string{}
	for _, k := range s.keepers {
		if k.inst != in {
			continue
		}
		k.mu.Lock()
		if k.hasLast {
			ids[k.b.topic.name] = k.last
		}
		k.mu.Unlock()
	}
	return ids
}

func (s *soak) oldID(topic string, rng *rand.Rand) (string, bool) {
	s.idsMu.Lock()
	defer s.idsMu.Unlock()
	ids := s.oldIDs[topic]
	if len(ids) == 0 {
		return "", false
	}
	return ids[rng.IntN(len(ids))], true
}

// A stats is what the soak counts.
type stats struct {
	events, sessions                 atomic.Int64
	byProto                          map[proto]*atomic.Int64
	hops, resets, queryResumes       atomic.Int64
	badIDs                           map[string]*atomic.Int64
	stormClients, storms             atomic.Int64
	slow, slowDropped                atomic.Int64
	stalled, stalledDropped          atomic.Int64
	tmplSessions, tmplRefused        atomic.Int64
	tmplLimited                      atomic.Int64
	tmplCapped                       atomic.Int64
	userHops                         atomic.Int64
	malloryRefused                   atomic.Int64
	slowloris, halfOpen, abuseClosed atomic.Int64
	reloadsSame, reloadsChanged      atomic.Int64
	restarts, kills                  atomic.Int64
	tmplNames                        sync.Map
	tmplCreated                      atomic.Int64
	replays, resumeSnapshots         atomic.Int64
	worstReader                      atomic.Int64
	// caddyRaces counts the data races reported in Caddy's own code, in
	// which the handler takes no part.
	caddyRaces atomic.Int64
}

func newStats() *stats {
	st := &stats{byProto: map[proto]*atomic.Int64{}, badIDs: map[string]*atomic.Int64{}}
	for _, p := range protos {
		st.byProto[p] = new(atomic.Int64)
	}
	for _, k := range []string{"expired", "malformed", "another topic's", "from before a restart", "another user's"} {
		st.badIDs[k] = new(atomic.Int64)
	}
	return st
}
