package pollsse

import (
	"context"
	"runtime"

	"fmt"
	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"
	"net/http"
	"strings"
	"testing"
	"time"
)

// redisRoute is a route of a poll_sse handler of api on the redis store of
// r; fields are more of the handler's JSON.
func redisRoute(api, redisURL, fields string) string {
	if fields != "" {
		fields = "," + fields
	}
	return pollSSERoute("/events", fmt.Sprintf(`"upstream":%q,"interval":"100ms","store":{"module":"redis","url":%q,"lease":"1s"}%s`, api, redisURL, fields))
}

// TestRedisStoreStreams: a handler on the redis store streams a snapshot
// and patches with ids of Redis's log, which resume; Redis holds the
// topic's keys under the prefix, named by the topic's id and not its URL.
func TestRedisStoreStreams(t *testing.T) {
	r := startRedis(t)
	api := newFakeAPI(t, `{"v":1}`)
	base := startCaddy(t, "["+redisRoute(api.URL, r.url(), "")+"]")
	sc := openStream(t, http.DefaultClient, base+"/events", "")
	snap := sc.next(10 * time.Second)
	if snap.name != "snapshot" || snap.data != `{"v":1}` || strings.Count(snap.id, "-") != 2 {
		t.Fatalf("first event %+v, want a snapshot with an id of Redis's log", snap)
	}
	api.set(`{"v":2}`)
	patch := sc.next(10 * time.Second)
	if patch.name != "patch" || patch.data != `[{"op":"replace","path":"/v","value":2}]` {
		t.Fatalf("then %+v", patch)
	}
	sc.close()
	api.set(`{"v":3}`)
	resumed := openStream(t, http.DefaultClient, base+"/events", patch.id)
	if ev := resumed.next(10 * time.Second); ev.name != "patch" || ev.data != `[{"op":"replace","path":"/v","value":3}]` {
		t.Errorf("a resume from %s begins with %+v, want the patch to 3", patch.id, ev)
	}
	keys := r.keys()
	for k, ttl := range keys {
		if strings.Contains(k, "127.0.0.1") || strings.Contains(k, "http") {
			t.Errorf("the key %q names the upstream", k)
		}
		if k != "poll_sse:secret" && (ttl <= 0 || ttl > redisTopicTTL.Milliseconds()) {
			t.Errorf("the key %q has the TTL %dms", k, ttl)
		}
	}
	if _, ok := keys["poll_sse:secret"]; !ok || len(keys) != 4 {
		t.Errorf("Redis holds the keys %v, want the secret and a topic's meta, stream and lease", keys)
	}
}

// redisLogs opens the log of one topic in n hubStores of the same redis
// store, as n instances would, with a lease of lease.
func redisLogs(t *testing.T, r *redisServer, n int, lease time.Duration) []*redisLog {
	t.Helper()
	prefix := fmt.Sprintf("t%d:", time.Now().UnixNano())
	name := newTopicName(t)
	var logs []*redisLog
	for range n {
		s := testRedisStore(r, prefix)
		s.Lease = caddy.Duration(lease)
		hs, err := s.attach(zap.NewNop())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { hs.Close() })
		logs = append(logs, openLog(t, hs, name, 8).(*redisLog))
	}
	return logs
}

// TestRedisFencedWrite: an instance that still believes it holds the lease
// after another has taken it over (it was paused past its lease) has its
// write refused by the store, which keeps the successor's log alone; a
// released lease is taken over at once.
func TestRedisFencedWrite(t *testing.T) {
	r := startRedis(t)
	ctx := context.Background()
	// A long lease: no renewal runs during the test, so that the old
	// poller's belief lasts until its write.
	logs := redisLogs(t, r, 2, time.Minute)
	a, b := logs[0], logs[1]
	mustLead(t, a)
	if term, _ := b.lead(ctx); term != 0 {
		t.Fatal("two instances poll the topic")
	}
	a.appendEvent(ctx, []byte(`{"v":1}`), "", nil)
	first := readFrom(t, b, 0, `snapshot:{"v":1}`)[0].id

	// a's lease ends without a renewal; b takes the topic over.
	if _, err := r.do("DEL", a.keys.lease); err != nil {
		t.Fatal(err)
	}
	mustLead(t, b)
	a.leaseMu.Lock()
	stillHolding := a.holding
	a.leaseMu.Unlock()
	if !stillHolding {
		t.Fatal("the old poller noticed the lease's end before writing: the test proves nothing")
	}
	if err := a.appendEvent(ctx, []byte(`{"v":"stale"}`), eventPatch, []byte(`["stale"]`)); err != errNotPolling {
		t.Errorf("the old poller's write: %v, want errNotPolling", err)
	}
	if n, _ := r.do("XLEN", a.keys.stream); n != int64(1) {
		t.Errorf("the stream holds %v entries after the refused write, want 1", n)
	}
	if term, _ := a.lead(ctx); term != 0 {
		t.Error("the old poller polls on after its write was refused")
	}
	b.current(ctx)
	if err := b.appendEvent(ctx, []byte(`{"v":2}`), eventPatch, []byte(`[2]`)); err != nil {
		t.Fatal(err)
	}
	for i, l := range logs {
		readFrom(t, l, l.resume(first), "patch:[2]")
		if i == 0 {
			continue
		}
	}
	// b gives the topic up: a takes it at once.
	b.Close()
	if term, _ := a.lead(ctx); term == 0 {
		t.Error("a released lease is not taken over at once")
	}
}

// TestRedisFollowerAsksWhenTheLeaseRunsOut: a follower asks for the lease
// again when the holder's runs out, not up to a fifth of a lease later,
// so that the topic of a poller that died goes unpolled for no longer than
// a lease; a lease given up before it runs out is asked for at least five
// times a lease. A lease key without an expiry (none of ours) is asked
// for as often.
func TestRedisFollowerAsksWhenTheLeaseRunsOut(t *testing.T) {
	r := startRedis(t)
	ctx := context.Background()
	const lease = time.Second
	logs := redisLogs(t, r, 3, lease)
	holder, follower, other := logs[0], logs[1], logs[2]
	mustLead(t, holder)
	if term, recheck := follower.lead(ctx); term != 0 || recheck != lease/5 {
		t.Errorf("with the holder's lease just renewed: term %d, recheck %s, want 0 and %s", term, recheck, lease/5)
	}
	// An instance that died 950ms ago holds the lease, which runs out in
	// 50ms.
	if _, err := r.do("SET", holder.keys.lease, "a dead instance", "PX", 50); err != nil {
		t.Fatal(err)
	}
	term, recheck := follower.lead(ctx)
	if term != 0 || recheck <= 0 || recheck > 50*time.Millisecond+leaseAsk {
		t.Fatalf("with the holder's lease running out in 50ms: term %d, recheck %s", term, recheck)
	}
	time.Sleep(recheck)
	if term, _ := follower.lead(ctx); term == 0 {
		t.Errorf("the follower's ask %s later found the lease still held", recheck)
	}
	if _, err := r.do("SET", holder.keys.lease, "another program"); err != nil {
		t.Fatal(err)
	}
	if term, recheck := other.lead(ctx); term != 0 || recheck != lease/5 {
		t.Errorf("with a lease key without an expiry: term %d, recheck %s, want 0 and %s", term, recheck, lease/5)
	}
}

// TestRedisResumeOnNewInstance: an instance on which a topic starts loads
// the topic's history from Redis, so that an id of another instance
// resumes on it with exactly the events after it.
func TestRedisResumeOnNewInstance(t *testing.T) {
	r := startRedis(t)
	ctx := context.Background()
	logs := redisLogs(t, r, 1, time.Second)
	a := logs[0]
	mustLead(t, a)
	a.appendEvent(ctx, []byte(`1`), "", nil)
	var ids []string
	_, at := readUntil(t, a, 0, "snapshot:1")
	for v := 2; v <= 4; v++ {
		a.appendEvent(ctx, fmt.Appendf(nil, "%d", v), eventPatch, fmt.Appendf(nil, "[%d]", v))
		evs, next := readUntil(t, a, at, fmt.Sprintf("patch:[%d]", v))
		at = next
		ids = append(ids, evs[0].id)
	}
	hs, err := (&RedisStore{URL: r.url(), Prefix: strings.Split(a.keys.meta, "{")[0], Lease: caddy.Duration(time.Second)}).attach(zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer hs.Close()
	b := hs.open(topicRef{id: a.topicID, history: 8, logger: zap.NewNop()})
	defer b.Close()
	if got, _ := readAll(t, b, b.resume(ids[0])); names(got) != "patch:[3] patch:[4]" {
		t.Errorf("a new instance resumes %s with %q, want the two patches after it", ids[0], names(got))
	}
}

// TestRedisNewEpoch: when Redis loses a topic's keys (FLUSHALL, a restart
// without persistence), the poller's next document starts a new epoch, and
// the ids of the old one get a snapshot on every instance.
func TestRedisNewEpoch(t *testing.T) {
	r := startRedis(t)
	ctx := context.Background()
	logs := redisLogs(t, r, 2, time.Second)
	a, b := logs[0], logs[1]
	mustLead(t, a)
	a.appendEvent(ctx, []byte(`1`), "", nil)
	a.appendEvent(ctx, []byte(`2`), eventPatch, []byte(`[2]`))
	old := readFrom(t, b, 0, "snapshot:2")[0].id
	r.do("FLUSHALL")
	// The poller finds its lease gone, takes it again and finds no
	// document to diff against.
	var term uint64
	waitFor(t, 10*time.Second, "an instance to poll the topic again", func() bool {
		a.renew()
		for _, l := range logs {
			if term, _ = l.lead(ctx); term != 0 {
				if snap, _, err := l.current(ctx); snap != nil || err != nil {
					t.Fatalf("after FLUSHALL the current document is %q, %v", snap, err)
				}
				l.appendEvent(ctx, []byte(`3`), "", nil)
				return true
			}
		}
		return false
	})
	for i, l := range logs {
		evs := readFrom(t, l, 0, "snapshot:3")
		if e, _, _ := parseRedisID(evs[0].id); strings.HasPrefix(old, e+"-") {
			t.Errorf("instance %d: the new document's id %s is of the old epoch", i, evs[0].id)
		}
		if got, _ := readAll(t, l, l.resume(old)); names(got) != "snapshot:3" {
			t.Errorf("instance %d resumes an id of the old epoch with %q", i, names(got))
		}
	}
}

// redisGoroutines counts the goroutines of the redis store's topics and
// Pub/Sub readers.
func redisGoroutines() int {
	buf := make([]byte, 1<<20)
	stacks := string(buf[:runtime.Stack(buf, true)])
	return strings.Count(stacks, "(*redisLog).run(") + strings.Count(stacks, "(*redisConn).read(")
}

// subscribers counts the Pub/Sub connections to r.
func (r *redisServer) subscribers() int {
	v, err := r.do("CLIENT", "LIST")
	if err != nil {
		r.t.Fatal(err)
	}
	n := 0
	for line := range strings.SplitSeq(v.(string), "\n") {
		if strings.Contains(line, " sub=") && !strings.Contains(line, " sub=0 ") {
			n++
		}
	}
	return n
}

// TestRedisStoreLeavesNothing: a topic that goes idle stops its goroutines,
// releases its lease and closes the Pub/Sub connection when it was the
// last; what it leaves in Redis expires. A reload keeps the client, and
// stopping Caddy closes every connection to Redis.
func TestRedisStoreLeavesNothing(t *testing.T) {
	r := startRedis(t)
	api := newFakeAPI(t, `{"v":1}`)
	routes := func(interval string) string {
		return "[" + pollSSERoute("/events", fmt.Sprintf(`"upstream":%q,"interval":%q,"idle_timeout":"200ms","store":{"module":"redis","url":%q,"lease":"1s"}`,
			api.URL, interval, r.url())) + "]"
	}
	base := startCaddy(t, routes("100ms"))
	port := base[strings.LastIndexByte(base, ':')+1:]
	stream := func() {
		sc := openStream(t, http.DefaultClient, base+"/events", "")
		if ev := sc.next(10 * time.Second); ev.name != "snapshot" {
			t.Fatalf("got %+v", ev)
		}
		if redisGoroutines() != 2 || r.subscribers() != 1 {
			t.Errorf("a topic runs %d goroutines of the store and %d Pub/Sub connections, want 2 and 1", redisGoroutines(), r.subscribers())
		}
		waitFor(t, 5*time.Second, "the metrics to count the lease held", func() bool {
			return gaugeValue(storeMetrics.held) == 1
		})
		sc.close()
	}
	idle := func(when string) {
		waitFor(t, 10*time.Second, "the topic to stop "+when, func() bool {
			return redisGoroutines() == 0 && r.subscribers() == 0
		})
		if held, down := gaugeValue(storeMetrics.held), gaugeValue(storeMetrics.down); held != 0 || down != 0 {
			t.Errorf("%s: the metrics count %v leases held and %v topics down, want none", when, held, down)
		}
		keys := r.keys()
		for k, ttl := range keys {
			if strings.HasSuffix(k, ":l") {
				t.Errorf("%s: the lease %s is left", when, k)
			}
			if k != "poll_sse:secret" && (ttl <= 0 || ttl > redisTopicTTL.Milliseconds()) {
				t.Errorf("%s: the key %s has the TTL %dms", when, k, ttl)
			}
		}
	}
	stream()
	idle("after its last subscriber")

	var p int
	fmt.Sscan(port, &p)
	if err := caddy.Load(caddyConfig(t, p, routes("200ms")), true); err != nil {
		t.Fatal(err)
	}
	stream()
	idle("after a reload")
	if n := r.clients(); n == 0 {
		t.Error("the reload closed the client")
	}
	stopCaddy(t)
	waitFor(t, 10*time.Second, "the connections to Redis to close", func() bool { return r.clients() == 0 })
}

// TestRedisResumeAhead: an id that another instance has sent and this one
// has not yet read (its notice is late) resumes with exactly the events
// after it, not with a snapshot.
func TestRedisResumeAhead(t *testing.T) {
	ctx := context.Background()
	a, b := deafFollower(t, startRedis(t), `1`)
	_, at := readUntil(t, a, 0, "snapshot:1")
	a.appendEvent(ctx, []byte(`2`), eventPatch, []byte(`[2]`))
	evs, _ := readUntil(t, a, at, "patch:[2]")
	a.appendEvent(ctx, []byte(`3`), eventPatch, []byte(`[3]`))
	if got, _ := readAll(t, b, 0); names(got) != "snapshot:1" {
		t.Fatalf("the instance without notices reads %q: the test proves nothing", names(got))
	}
	if got, _ := readAll(t, b, b.resume(evs[0].id)); names(got) != "patch:[3]" {
		t.Errorf("resuming %s, which the instance has not read yet, reads %q, want the patch after it", evs[0].id, names(got))
	}
}

// gaugeValue returns the value of g.
func gaugeValue(g prometheus.Gauge) float64 {
	var m dto.Metric
	g.Write(&m)
	return m.GetGauge().GetValue()
}

// TestRedisNewEpochAtSamePosition: an instance that missed that Redis lost
// a topic's keys, and reads the topic again once the new epoch has reached
// the position it had read in the old one, loads the new epoch's document
// whole.
func TestRedisNewEpochAtSamePosition(t *testing.T) {
	r := startRedis(t)
	ctx := context.Background()
	a, b := deafFollower(t, r, `"one"`)
	r.do("FLUSHALL")
	a.renew()
	mustLead(t, a)
	if snap, _, _ := a.current(ctx); snap != nil {
		t.Fatalf("after FLUSHALL the document is %q", snap)
	}
	a.appendEvent(ctx, []byte(`"two"`), "", nil)
	b.kick()
	readFrom(t, b, 0, `snapshot:"two"`)
}

// TestRedisFailoverThatRewroteThePosition: after an asynchronous failover
// lost the last write (the replica that took over never had it), the next
// poller writes that position again in the same epoch, with another
// document. An instance that had read the lost entry finds Redis at its
// own position with another check, and loads the new document whole: its
// subscribers read it, never an empty snapshot.
func TestRedisFailoverThatRewroteThePosition(t *testing.T) {
	r := startRedis(t)
	ctx := context.Background()
	a, b := deafFollower(t, r, `"one"`)
	// What the replica that took over holds: the topic's epoch, without
	// the write of "one" (its stream, which held that write alone, is not
	// there either).
	for _, cmd := range [][]any{
		{"HSET", a.keys.meta, "head", 0},
		{"HDEL", a.keys.meta, "doc", "docid", "hc"},
		{"DEL", a.keys.stream},
	} {
		if _, err := r.do(cmd...); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.appendEvent(ctx, []byte(`"uno"`), "", nil); err != nil {
		t.Fatal(err)
	}
	b.kick()
	readFrom(t, b, 0, `snapshot:"uno"`)
}

// deafFollower opens one topic's log on two instances of one Redis (their
// own connections), with a lease long enough that b reads Redis only when
// told to: a polls and has written its first document, first, which b has
// read; b then hears no more notices, and reads the topic again only when
// kicked.
func deafFollower(t *testing.T, r *redisServer, first string) (a, b *redisLog) {
	t.Helper()
	ctx := context.Background()
	prefix := fmt.Sprintf("t%d:", time.Now().UnixNano())
	name := newTopicName(t)
	var logs []*redisLog
	for _, url := range []string{r.url(), r.url() + "/0"} {
		hs, err := (&RedisStore{URL: url, Prefix: prefix, Lease: caddy.Duration(time.Minute)}).attach(zap.NewNop())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { hs.Close() })
		logs = append(logs, openLog(t, hs, name, 8).(*redisLog))
	}
	a, b = logs[0], logs[1]
	if a.conn == b.conn {
		t.Fatal("the two instances share a connection")
	}
	mustLead(t, a)
	a.appendEvent(ctx, []byte(first), "", nil)
	readFrom(t, b, 0, "snapshot:"+first)
	b.conn.mu.Lock()
	ps := b.conn.pubsub
	b.conn.mu.Unlock()
	if err := ps.Unsubscribe(ctx, b.keys.channel); err != nil {
		t.Fatal(err)
	}
	return a, b
}
