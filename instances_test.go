//go:build unix

package pollsse

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Tests of several Caddy instances on one Redis: each instance is the
// cmd/caddy binary in a process of its own (cli_test.go), so that one can be
// killed or frozen, and Redis is a real redis-server (redis_test.go).

// An instance is one Caddy process serving poll_sse at base+path.
type instance struct {
	*caddyProcess
	base, path string
}

// events returns the URL of the instance's stream.
func (in *instance) events() string { return in.base + in.path }

// instanceCaddyfile is the Caddyfile of an instance on port that streams
// upstream with the given store lines (none for memory) and more options.
func instanceCaddyfile(port int, upstream, store, more string) string {
	return fmt.Sprintf(`http://127.0.0.1:%d {
	poll_sse /events %s {
		interval 100ms
		history 8
		timeout 30s
		%s
		%s
	}
}
`, port, upstream, store, more)
}

// redisStoreLines are the store lines of an instance on redisURL, with a
// lease of one second.
func redisStoreLines(redisURL string) string {
	return fmt.Sprintf("store redis {\n\t\t\turl %s\n\t\t\tlease 1s\n\t\t}", redisURL)
}

// startInstances starts n instances that stream upstream from the store
// of the given lines.
func startInstances(t *testing.T, n int, upstream, store, more string) []*instance {
	t.Helper()
	var out []*instance
	for range n {
		port := freePort(t)
		p := startCaddyProcess(t, instanceCaddyfile(port, upstream, store, more))
		out = append(out, &instance{caddyProcess: p, base: fmt.Sprintf("http://127.0.0.1:%d", port), path: "/events"})
	}
	return out
}

// leader returns the instance whose log says last that it took the lease
// of the topic, waiting for one.
func leader(t *testing.T, insts []*instance) *instance {
	t.Helper()
	var found *instance
	waitFor(t, 10*time.Second, "an instance to take the topic's lease", func() bool {
		for _, in := range insts {
			out := in.output.String()
			if taken := strings.LastIndex(out, "lease taken"); taken >= 0 && taken > strings.LastIndex(out, "lease lost") {
				found = in
				return true
			}
		}
		return false
	})
	return found
}

// A follower is a browser's EventSource: it applies every event of its
// stream to its document, and when the stream ends it reconnects with its
// last id, to the next of the instances (urls are their streams) that
// answers.
type follower struct {
	c    *rebuildingClient
	urls []string
	rng  *rand.Rand
	// hop, when set, ends each stream after a random number of events,
	// and the next one goes to a random instance.
	hop bool

	mu sync.Mutex
	at int
	// events are all the events read, status events included.
	events []sseEvent
	// resumedBySnapshot counts the streams that resumed with an id and
	// began with a snapshot.
	resumedBySnapshot, streams int
	err                        error

	cancel context.CancelFunc
	done   chan struct{}
}

func startFollower(t *testing.T, api *mutatingAPI, urls []string, at int, seed uint64) *follower {
	ctx, cancel := context.WithCancel(context.Background())
	f := &follower{
		c:    &rebuildingClient{t: t, api: api},
		urls: urls, at: at, rng: rand.New(rand.NewPCG(seed, seed)),
		cancel: cancel, done: make(chan struct{}),
	}
	go f.run(ctx)
	t.Cleanup(f.stop)
	return f
}

func (f *follower) stop() {
	f.cancel()
	<-f.done
}

func (f *follower) run(ctx context.Context) {
	defer close(f.done)
	for ctx.Err() == nil {
		f.mu.Lock()
		base, lastID := f.urls[f.at], f.c.lastID
		f.mu.Unlock()
		err := f.session(ctx, base, lastID)
		f.mu.Lock()
		if err != nil && f.err == nil {
			f.err = err
		}
		if f.hop {
			f.at = f.rng.IntN(len(f.urls))
		} else {
			f.at = (f.at + 1) % len(f.urls)
		}
		f.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// session reads one stream; it returns an error only when an event does
// not apply.
func (f *follower) session(ctx context.Context, base, lastID string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base, nil)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil
	}
	f.mu.Lock()
	f.streams++
	f.mu.Unlock()
	br := bufio.NewReader(resp.Body)
	limit := -1
	if f.hop {
		limit = 1 + f.rng.IntN(20)
	}
	for first := true; limit != 0; limit-- {
		ev, err := readEvent(br)
		if err != nil {
			return nil
		}
		if ev.comment || (ev.retry != "" && ev.name == "") {
			limit++
			continue
		}
		f.mu.Lock()
		if first && lastID != "" && ev.name == "snapshot" {
			f.resumedBySnapshot++
		}
		first = false
		f.events = append(f.events, ev)
		err = f.c.apply(ev)
		f.mu.Unlock()
		if err != nil {
			return fmt.Errorf("%s: %w", base, err)
		}
	}
	return nil
}

// state returns the follower's version, its first error and how many of
// its resumes began with a snapshot.
func (f *follower) state() (version int, err error, bySnapshot int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.c.version, f.err, f.resumedBySnapshot
}

// eventsSince returns the events read since the first n.
func (f *follower) eventsSince(n int) []sseEvent {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]sseEvent(nil), f.events[min(n, len(f.events)):]...)
}

func (f *follower) eventCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.events)
}

// startFollowers starts n followers on each instance.
func startFollowers(t *testing.T, api *mutatingAPI, insts []*instance, n int) []*follower {
	urls := make([]string, len(insts))
	for i, in := range insts {
		urls[i] = in.events()
	}
	var fs []*follower
	for i := range insts {
		for j := range n {
			fs = append(fs, startFollower(t, api, urls, i, uint64(i*100+j)))
		}
	}
	return fs
}

// converge makes a change upstream and waits until every follower holds
// the upstream's document, failing on the first event that did not apply.
func converge(t *testing.T, api *mutatingAPI, fs []*follower, timeout time.Duration) {
	t.Helper()
	api.step()
	_, final := api.versionDoc(0)
	waitFor(t, timeout, fmt.Sprintf("every browser to hold version %d", final), func() bool {
		for i, f := range fs {
			v, err, _ := f.state()
			if err != nil {
				t.Fatalf("browser %d: %v", i, err)
			}
			if v != final {
				return false
			}
		}
		return true
	})
}

// checkSameEvents fails the test unless every event id that the followers
// read names the same event with the same data everywhere.
func checkSameEvents(t *testing.T, fs []*follower) {
	t.Helper()
	seen := map[string]sseEvent{}
	for i, f := range fs {
		for _, ev := range f.eventsSince(0) {
			if !ev.hasID {
				continue
			}
			if other, ok := seen[ev.id]; ok && (other.name != ev.name || other.data != ev.data) {
				t.Errorf("browser %d read %s %s as %s %q, another as %s %q", i, ev.name, ev.id, ev.name, ev.data, other.name, other.data)
			}
			seen[ev.id] = ev
		}
	}
}

// TestInstancesPollOnce: three instances on one Redis with subscribers on
// each make the upstream requests of one instance, and every instance
// sends the same ids with the same bytes. The group and a lone instance
// (memory store) are measured over the same window, under the same load.
func TestInstancesPollOnce(t *testing.T) {
	const window = 5 * time.Second
	r := startRedis(t)
	api1, api3 := newMutatingAPI(t, 1), newMutatingAPI(t, 1)
	one := startInstances(t, 1, api1.URL, "", "")
	three := startInstances(t, 3, api3.URL, redisStoreLines(r.url()), "")
	fs1, fs3 := startFollowers(t, api1, one, 3), startFollowers(t, api3, three, 3)
	converge(t, api1, fs1, 15*time.Second)
	converge(t, api3, fs3, 15*time.Second)
	takes := func() int {
		n := 0
		for _, in := range three {
			n += strings.Count(in.output.String(), "lease taken")
		}
		return n
	}
	takesBefore := takes()
	start1, start3 := api1.count.Load(), api3.count.Load()
	for deadline := time.Now().Add(window); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		api1.step()
		api3.step()
	}
	n1, n3 := api1.count.Load()-start1, api3.count.Load()-start3
	changes := takes() - takesBefore
	converge(t, api1, fs1, 15*time.Second)
	converge(t, api3, fs3, 15*time.Second)
	checkSameEvents(t, fs3)
	t.Logf("upstream requests in %s: %d by one instance, %d by three on one Redis, %d lease changes", window, n1, n3, changes)
	if d := n3 - n1; d < -int64(1+changes) || d > int64(1+changes) {
		t.Errorf("three instances made %d upstream requests in %s, one instance %d: want the same, ± 1 and 1 per lease change (%d)", n3, window, n1, changes)
	}
}

// TestInstancesHoppingBrowsers: browsers that reconnect at random points to
// a random instance with their Last-Event-ID, while the upstream changes at
// random, each rebuild exactly the upstream's document at every step.
func TestInstancesHoppingBrowsers(t *testing.T) {
	r := startRedis(t)
	api := newMutatingAPI(t, 20261202)
	insts := startInstances(t, 3, api.URL, redisStoreLines(r.url()), "")
	fs := startFollowers(t, api, insts, 2)
	for _, f := range fs {
		f.mu.Lock()
		f.hop = true
		f.mu.Unlock()
	}
	for range 300 {
		api.step()
		time.Sleep(15 * time.Millisecond)
	}
	converge(t, api, fs, 20*time.Second)
	checkSameEvents(t, fs)
	var streams, bySnapshot int
	for _, f := range fs {
		_, _, s := f.state()
		bySnapshot += s
		f.mu.Lock()
		streams += f.streams
		f.mu.Unlock()
	}
	t.Logf("%d browsers, %d streams across 3 instances, %d resumes began with a snapshot", len(fs), streams, bySnapshot)
	if streams < 3*len(fs) {
		t.Errorf("the browsers opened %d streams, too few to have hopped", streams)
	}
}

// TestInstancesKillPoller: when the instance that polls is killed, another
// instance with subscribers takes the lease within the lease's TTL and
// polls on; its subscribers see nothing but the next change, and those of
// the dead instance resume on the others by id.
func TestInstancesKillPoller(t *testing.T) {
	r := startRedis(t)
	api := newMutatingAPI(t, 7)
	insts := startInstances(t, 3, api.URL, redisStoreLines(r.url()), "")
	fs := startFollowers(t, api, insts, 2)
	converge(t, api, fs, 15*time.Second)
	dead := leader(t, insts)
	marks := make([]int, len(fs))
	for i, f := range fs {
		marks[i] = f.eventCount()
	}
	killed := time.Now()
	dead.cmd.Process.Signal(syscall.SIGKILL)
	<-dead.exited
	exited := time.Now()
	var failover time.Duration
	waitFor(t, 10*time.Second, "another instance to poll", func() bool {
		for _, at := range api.arrivals("") {
			// A request that arrives once the dead process has exited
			// is another instance's.
			if at.After(exited) {
				failover = at.Sub(killed)
				return true
			}
		}
		return false
	})
	t.Logf("failover: the upstream's next request came %s after the poller was killed (lease 1s)", failover.Round(time.Millisecond))
	if failover > 3*time.Second {
		t.Errorf("the topic went unpolled for %s after its poller died, with a lease of 1s", failover)
	}
	converge(t, api, fs, 15*time.Second)
	converge(t, api, fs, 15*time.Second)
	for i, f := range fs {
		for _, ev := range f.eventsSince(marks[i]) {
			if ev.name != "patch" {
				t.Errorf("browser %d read %s %q after the failover, want only the changes", i, ev.name, ev.data)
			}
		}
		if _, _, n := f.state(); n != 0 {
			t.Errorf("browser %d resumed with a snapshot %d times", i, n)
		}
	}
	checkSameEvents(t, fs)
}

// TestInstancesFrozenPoller: an instance that polls and is frozen (SIGSTOP)
// past its lease loses the topic to another; thawed, it writes nothing
// more, and every browser converges with the same ids.
func TestInstancesFrozenPoller(t *testing.T) {
	r := startRedis(t)
	api := newMutatingAPI(t, 8)
	insts := startInstances(t, 3, api.URL, redisStoreLines(r.url()), "")
	fs := startFollowers(t, api, insts, 2)
	converge(t, api, fs, 15*time.Second)
	frozen := leader(t, insts)
	// The poll in flight when it freezes is answered while it is frozen.
	api.setDelay(300 * time.Millisecond)
	waitFor(t, 5*time.Second, "a poll in flight", func() bool { return api.inFlight.Load() > 0 })
	frozen.cmd.Process.Signal(syscall.SIGSTOP)
	api.step()
	api.setDelay(0)
	var next *instance
	waitFor(t, 10*time.Second, "another instance to take the lease", func() bool {
		for _, in := range insts {
			if in != frozen && strings.Contains(in.output.String(), "lease taken") {
				next = in
				return true
			}
		}
		return false
	})
	// The browsers of the frozen instance wait with it.
	var others []*follower
	for _, f := range fs {
		f.mu.Lock()
		if f.urls[f.at] != frozen.events() {
			others = append(others, f)
		}
		f.mu.Unlock()
	}
	converge(t, api, others, 15*time.Second)
	frozen.cmd.Process.Signal(syscall.SIGCONT)
	waitFor(t, 10*time.Second, "the thawed instance to give the topic up", func() bool {
		return strings.Contains(frozen.output.String(), "lease lost")
	})
	out := frozen.output.String()
	line := out[strings.LastIndex(out[:strings.Index(out, "lease lost")], "\n")+1:]
	t.Logf("the thawed instance: %s", line[:strings.IndexByte(line, '\n')])
	for range 3 {
		converge(t, api, fs, 15*time.Second)
	}
	checkSameEvents(t, fs)
	if l := leader(t, insts); l != next {
		t.Errorf("the thawed instance polls again")
	}
}

// TestInstancesRedisRestartedEmpty: while Redis is down, open streams stay
// open, are told {"store":"down"} once, and each instance polls on alone;
// when Redis comes back empty, the instances take the topic up again in a
// new epoch, every stream is told {"store":"up"} and converges, and the
// ids of before get a snapshot.
func TestInstancesRedisRestartedEmpty(t *testing.T) {
	r := startRedis(t)
	api := newMutatingAPI(t, 9)
	insts := startInstances(t, 3, api.URL, redisStoreLines(r.url()), "")
	fs := startFollowers(t, api, insts, 2)
	converge(t, api, fs, 15*time.Second)
	_, _, _ = fs[0].state()
	fs[0].mu.Lock()
	oldID := fs[0].c.lastID
	fs[0].mu.Unlock()
	marks := make([]int, len(fs))
	for i, f := range fs {
		marks[i] = f.eventCount()
	}
	r.kill()
	// The instances poll on by themselves: the browsers still get the
	// changes, from their own instance.
	converge(t, api, fs, 15*time.Second)
	// A browser that comes meanwhile is told too.
	sc := openStream(t, http.DefaultClient, insts[0].events(), "")
	if snap, status := sc.next(10*time.Second), sc.next(10*time.Second); snap.name != "snapshot" || status.data != `{"store":"down"}` {
		t.Errorf("a new stream during the outage begins with %s %q, then %s %q; want the snapshot and the store's status", snap.name, snap.data, status.name, status.data)
	}
	sc.close()
	before := api.count.Load()
	time.Sleep(time.Second)
	if n := api.count.Load() - before; n > int64(len(insts))*11 {
		t.Errorf("%d upstream requests in a second of 100ms intervals by %d instances during the outage", n, len(insts))
	}
	r.start()
	converge(t, api, fs, 20*time.Second)
	converge(t, api, fs, 20*time.Second)
	for i, f := range fs {
		var statuses []string
		for _, ev := range f.eventsSince(marks[i]) {
			if ev.name == "status" && strings.Contains(ev.data, `"store"`) {
				statuses = append(statuses, ev.data)
			}
		}
		if strings.Join(statuses, " ") != `{"store":"down"} {"store":"up"}` {
			t.Errorf("browser %d was told of the store: %v, want down once and then up", i, statuses)
		}
	}
	checkResumeBySnapshot(t, insts, oldID)
}

// checkResumeBySnapshot fails the test unless a stream that resumes from
// id on each instance begins with a snapshot.
func checkResumeBySnapshot(t *testing.T, insts []*instance, id string) {
	t.Helper()
	for i, in := range insts {
		sc := openStream(t, http.DefaultClient, in.events(), id)
		if ev := sc.next(10 * time.Second); ev.name != "snapshot" {
			t.Errorf("instance %d resumes the old id %s with %s, want a snapshot", i, id, ev.name)
		}
		sc.close()
	}
}

// TestInstancesFlushAll: a FLUSHALL loses every topic's keys; the
// instances start a new epoch by themselves, the browsers converge, and
// the ids of before get a snapshot.
func TestInstancesFlushAll(t *testing.T) {
	r := startRedis(t)
	api := newMutatingAPI(t, 10)
	insts := startInstances(t, 3, api.URL, redisStoreLines(r.url()), "")
	fs := startFollowers(t, api, insts, 2)
	converge(t, api, fs, 15*time.Second)
	fs[0].mu.Lock()
	oldID := fs[0].c.lastID
	fs[0].mu.Unlock()
	if _, err := r.do("FLUSHALL"); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		converge(t, api, fs, 20*time.Second)
	}
	checkSameEvents(t, fs)
	checkResumeBySnapshot(t, insts, oldID)
	if _, err := r.do("GET", "poll_sse:secret"); err != nil {
		t.Errorf("the shared secret was not written back after FLUSHALL: %v", err)
	}
}
