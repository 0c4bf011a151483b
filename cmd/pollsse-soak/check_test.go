package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Every check of the soak must be able to fail: these tests feed each one
// what a broken handler would send, and a run that is right, to see both
// verdicts.

// A recorder collects the broken invariants.
type recorder struct {
	mu   sync.Mutex
	msgs []string
}

func (r *recorder) fail(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, fmt.Sprintf(format, args...))
}

func (r *recorder) all() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.msgs, "\n")
}

// fakeTopic is a topic whose version v is docs[v].
func fakeTopic(mode, user string, docs map[int]string) *topicSpec {
	return &topicSpec{name: "/s/fake", path: "/s/fake", mode: mode, user: user, main: true, verify: func(v int, canon []byte) error {
		want, ok := docs[v]
		if !ok {
			return fmt.Errorf("no version %d", v)
		}
		c, err := canonical([]byte(want))
		if err != nil {
			panic(err)
		}
		if string(c) != string(canon) {
			return fmt.Errorf("it differs from version %d: %s, want %s", v, canon, c)
		}
		return nil
	}}
}

var fakeDocs = map[int]string{
	1: `{"v":1,"a":1,"":{"k":0}}`,
	2: `{"v":2,"a":1,"":{"k":0}}`,
	3: `{"v":3,"a":1,"":{"k":0,"x":[1,2]}}`,
	4: `{"v":4,"a":2,"":{"k":0,"x":[1,2]}}`,
	5: `{"v":5,"a":2,"":{"k":9,"x":[1,2]}}`,
	6: `{"v":6,"user":"alice"}`,
	7: `{"v":7,"user":"bob"}`,
}

func snap(id, data string) sseEvent {
	return sseEvent{name: "snapshot", id: id, hasID: true, data: data}
}
func patchEv(id, data string) sseEvent {
	return sseEvent{name: "patch", id: id, hasID: true, data: data}
}
func status(data string) sseEvent { return sseEvent{name: "status", data: data} }

const (
	down = `{"upstream":"down","topic":"0123456789ab","status":503,"error":"upstream answered 503","retry_in_ms":200}`
	up   = `{"upstream":"up","topic":"0123456789ab"}`
	toV2 = `[{"op":"replace","path":"/v","value":2}]`
	toV3 = `[{"op":"replace","path":"/v","value":3},{"op":"add","path":"//x","value":[1,2]}]`
	toV4 = `[{"op":"replace","path":"/v","value":4},{"op":"replace","path":"/a","value":2}]`
	toV5 = `[{"op":"replace","path":"/v","value":5},{"op":"replace","path":"//k","value":9}]`
)

func TestStreamChecksPassWhatTheHandlerSends(t *testing.T) {
	for _, tc := range []struct {
		name   string
		resume resume
		events []sseEvent
	}{
		{"a snapshot, patches and status events in between", resume{}, []sseEvent{
			{retry: "250"}, snap("e-1", fakeDocs[1]), patchEv("e-2", toV2), status(down), {comment: true}, status(up), patchEv("e-5", toV3)}},
		{"a change sent as a snapshot in the stream", resume{}, []sseEvent{
			snap("e-1", fakeDocs[1]), patchEv("e-2", toV2), status(down), snap("e-4", fakeDocs[3]), patchEv("e-5", toV4)}},
		{"a snapshot, then the down status of an outage that began before it", resume{}, []sseEvent{
			snap("e-3", fakeDocs[3]), status(down), patchEv("e-4", toV4)}},
		{"a snapshot whose status events the stream skipped", resume{}, []sseEvent{
			snap("e-3", fakeDocs[3]), patchEv("e-9", toV4)}},
		{"a resume replayed from right after its id", resume{sent: "e-2", id: eventID{epoch: "e", pos: 2}, own: true}, []sseEvent{
			status(down), patchEv("e-4", toV3), patchEv("e-5", toV4)}},
		{"a resume answered by a snapshot", resume{sent: "e-2", id: eventID{epoch: "e", pos: 2}, own: true}, []sseEvent{
			snap("e-9", fakeDocs[3]), patchEv("e-10", toV4)}},
		{"an expired id answered by a snapshot", resume{sent: "e-1", mustSnapshot: true, why: "expired"}, []sseEvent{
			snap("f-7", fakeDocs[4]), patchEv("f-8", toV5)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := &browser{topic: fakeTopic("json_patch", "", fakeDocs)}
			if tc.resume.own {
				// The browser's earlier stream.
				stream(t, b, newLedger(32, &recorder{}), resume{}, time.Now(), snap("e-1", fakeDocs[1]), patchEv("e-2", toV2))
			}
			c := newStreamCheck(b, tc.resume, newLedger(32, &recorder{}), "250")
			for i, ev := range tc.events {
				if err := c.event(ev, time.Now()); err != nil {
					t.Fatalf("event %d (%+v): %v", i, ev, err)
				}
			}
		})
	}
}

func TestStreamChecksCatchWhatABrokenHandlerWouldSend(t *testing.T) {
	v1, v2 := snap("e-1", fakeDocs[1]), patchEv("e-2", toV2)
	for _, tc := range []struct {
		name   string
		mode   string
		user   string
		resume resume
		events []sseEvent
		want   string
	}{
		{"a document that is not the version it claims", "", "", resume{}, []sseEvent{snap("e-1", `{"v":1,"a":2,"":{"k":0}}`)}, "differs from version 1"},
		{"a patch that loses a change", "", "", resume{}, []sseEvent{v1, patchEv("e-2", `[{"op":"replace","path":"/v","value":3}]`)}, "differs from version 3"},
		{"a patch that does not move the version", "", "", resume{}, []sseEvent{v1, patchEv("e-2", `[{"op":"replace","path":"/a","value":1}]`)}, "must move it forward"},
		{"a snapshot that goes back", "", "", resume{}, []sseEvent{v1, v2, snap("e-3", fakeDocs[1])}, "back from version 2 to 1"},
		{"a snapshot that goes back on the same instance", "", "", resume{instance: "i1r1"}, []sseEvent{v1, v2, snap("e-3", fakeDocs[1])}, "back from version 2 to 1"},
		{"a patch that does not apply", "", "", resume{}, []sseEvent{v1, patchEv("e-2", `[{"op":"remove","path":"/nope"}]`)}, "does not apply"},
		{"a patch before any snapshot", "", "", resume{sent: "e-1", id: eventID{epoch: "e", pos: 1}, own: true}, []sseEvent{patchEv("x-2", toV2)}, "continues nothing"},
		{"a gap", "", "", resume{}, []sseEvent{v1, v2, patchEv("e-4", toV3)}, "a gap"},
		{"a duplicate", "", "", resume{}, []sseEvent{v1, v2, v2}, "a duplicate"},
		{"an id with other data", "", "", resume{}, []sseEvent{v1, v2, patchEv("e-2", toV3)}, "carries other data"},
		{"a snapshot before the position it must be at", "", "", resume{}, []sseEvent{v1, v2, status(down), snap("e-3", fakeDocs[3])}, "before position 4"},
		{"another epoch within a stream", "", "", resume{}, []sseEvent{v1, patchEv("f-2", toV2)}, "the epoch changed"},
		{"a resume that skips an event", "", "", resume{sent: "e-1", id: eventID{epoch: "e", pos: 1}, own: true}, []sseEvent{patchEv("e-3", toV3)}, "want position 2"},
		{"a resume that repeats its last event", "", "", resume{sent: "e-2", id: eventID{epoch: "e", pos: 2}, own: true}, []sseEvent{patchEv("e-2", toV3)}, "want position 3"},
		{"a replay for an id that cannot be resumed from", "", "", resume{sent: "e-1x", mustSnapshot: true, why: "malformed"}, []sseEvent{patchEv("e-2", toV2)}, "not a snapshot"},
		{"another user's document", "", "alice", resume{}, []sseEvent{snap("e-1", fakeDocs[7])}, `sees the document of user "bob"`},
		{"a status event with an id", "", "", resume{}, []sseEvent{v1, {name: "status", id: "e-2", hasID: true, data: up}}, "status event with an id"},
		{"a status event that says nothing", "", "", resume{}, []sseEvent{v1, status(`{"upstream":"down","topic":"0123456789ab"}`)}, "status event"},
		{"an event without an id", "", "", resume{}, []sseEvent{{name: "snapshot", data: fakeDocs[1]}}, "without an id"},
		{"an id that is not the handler's", "", "", resume{}, []sseEvent{snap("e-01", fakeDocs[1])}, "not <epoch>-<position>"},
		{"a retry field of another value", "", "", resume{}, []sseEvent{{retry: "3000"}}, "retry field"},
		{"a merge event on a json_patch topic", "", "", resume{}, []sseEvent{v1, {name: "merge", id: "e-2", hasID: true, data: `{"v":2}`}}, "merge event on a json_patch topic"},
		{"a merge that loses a change", "merge_patch", "", resume{}, []sseEvent{v1, {name: "merge", id: "e-2", hasID: true, data: `{"v":2,"a":null}`}}, "differs from version 2"},
		{"an unknown event", "", "", resume{}, []sseEvent{{name: "ping", data: "x"}}, "unexpected event"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mode := tc.mode
			if mode == "" {
				mode = "json_patch"
			}
			docs := fakeDocs
			if tc.user != "" {
				docs = map[int]string{1: `{"v":1,"user":"alice"}`, 7: fakeDocs[7]}
			}
			b := &browser{topic: fakeTopic(mode, tc.user, docs)}
			c := newStreamCheck(b, tc.resume, newLedger(32, &recorder{}), "250")
			var err error
			for _, ev := range tc.events {
				if err = c.event(ev, time.Now()); err != nil {
					break
				}
			}
			if err == nil || !isBroken(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want a broken invariant with %q", err, tc.want)
			}
		})
	}
}

// stream runs events through a new stream of a browser, which must pass.
func stream(t *testing.T, b *browser, l *ledger, r resume, at time.Time, events ...sseEvent) {
	t.Helper()
	c := newStreamCheck(b, r, l, "")
	for i, ev := range events {
		if err := c.event(ev, at); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
	}
}

// TestResumeOnAnInstanceThatPollsAlone: a browser resumes with an id of
// Redis's log on an instance that has just found Redis out of reach and
// polls alone, numbering in an epoch of its own; the first event of the
// stream is the patch of that epoch that follows the id, as a seed-5 soak
// on three instances saw. It continues the browser's document on a shared
// store, and nothing on instances of their own; a patch that skips a
// version is still caught.
func TestResumeOnAnInstanceThatPollsAlone(t *testing.T) {
	for _, tc := range []struct {
		name   string
		shared bool
		sent   string
		first  sseEvent
		want   string // "" when the stream is right
	}{
		{"on a shared store", true, "e-1", patchEv("Lab-1", toV2), ""},
		{"on instances of their own", false, "e-1", patchEv("Lab-1", toV2), "continues nothing"},
		{"from another instance's own epoch", true, "Lcd-1", patchEv("Lab-1", toV2), "continues nothing"},
		{"a patch that skips versions", true, "e-1", patchEv("Lab-1", toV4), "differs from version 4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := &browser{topic: fakeTopic("json_patch", "", fakeDocs)}
			l := newLedger(32, &recorder{})
			l.shared = tc.shared
			stream(t, b, l, resume{instance: "i1r1"}, time.Now(), snap(tc.sent, fakeDocs[1]))
			id, _ := parseID(tc.sent)
			c := newStreamCheck(b, resume{sent: tc.sent, id: id, own: true, instance: "i2r1"}, l, "")
			err := c.event(tc.first, time.Now())
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
			if tc.want == "" && b.version != 2 {
				t.Fatalf("the browser's document is at version %d, want 2", b.version)
			}
		})
	}
}

func TestBrowserThatHopsToAnotherInstanceMayFindAnOlderVersion(t *testing.T) {
	b := &browser{topic: fakeTopic("json_patch", "", fakeDocs)}
	l := newLedger(32, &recorder{})
	stream(t, b, l, resume{instance: "i1r1"}, time.Now(), snap("e-1", fakeDocs[1]), patchEv("e-2", toV2))
	// Instance i2 polls the upstream on its own, and is behind.
	stream(t, b, l, resume{instance: "i2r1"}, time.Now(), snap("f-1", fakeDocs[1]))
	if b.version != 1 {
		t.Fatalf("version %d", b.version)
	}
}

func TestLedgerCatchesAResumeAnsweredByASnapshotThatThePositionsRuledOut(t *testing.T) {
	for _, tc := range []struct {
		name string
		// witness is what a stream that read the log in order saw.
		witness []sseEvent
		want    string // "" when the snapshot was due
	}{
		{"every position after the id is a patch", []sseEvent{snap("e-1", fakeDocs[1]), patchEv("e-2", toV2), patchEv("e-3", toV3), patchEv("e-4", toV4)},
			"every position from 2 to 3 holds a patch or a status event"},
		{"a status event lies in between", []sseEvent{snap("e-1", fakeDocs[1]), status(down), patchEv("e-3", toV3), patchEv("e-4", toV4)},
			"every position from 2 to 3 holds a patch or a status event"},
		{"a change sent as a snapshot lies in between", []sseEvent{snap("e-1", fakeDocs[1]), patchEv("e-2", toV2), snap("e-3", fakeDocs[3]), patchEv("e-4", toV4)}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			l := newLedger(32, rec)
			now := time.Now()
			stream(t, &browser{topic: fakeTopic("json_patch", "", fakeDocs)}, l, resume{}, now, tc.witness...)
			// A browser at e-1 resumes and is sent a snapshot of position 3.
			b := &browser{topic: fakeTopic("json_patch", "", fakeDocs)}
			stream(t, b, l, resume{}, now, snap("e-1", fakeDocs[1]))
			stream(t, b, l, resume{sent: "e-1", id: eventID{epoch: "e", pos: 1}, own: true}, now, snap("e-3", fakeDocs[3]), patchEv("e-4", toV4))
			l.checkResumes(now.Add(time.Second))
			if got := rec.all(); got != "" {
				t.Fatalf("checked too early: %s", got)
			}
			l.checkResumes(now.Add(5 * time.Second))
			got := rec.all()
			if tc.want == "" && got != "" || tc.want != "" && !strings.Contains(got, tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
			if v, _ := l.counts(); v != 1 {
				t.Errorf("%d resumes checked, want 1", v)
			}
		})
	}
	t.Run("positions that no stream read are no evidence", func(t *testing.T) {
		rec := &recorder{}
		l := newLedger(32, rec)
		now := time.Now()
		b := &browser{topic: fakeTopic("json_patch", "", fakeDocs)}
		stream(t, b, l, resume{}, now, snap("e-1", fakeDocs[1]))
		stream(t, b, l, resume{sent: "e-1", id: eventID{epoch: "e", pos: 1}, own: true}, now, snap("e-3", fakeDocs[3]), patchEv("e-4", toV4))
		l.checkResumes(now.Add(5 * time.Second))
		if v, n := l.counts(); rec.all() != "" || v != 0 || n != 1 {
			t.Fatalf("%q, %d verified, %d not decidable; want nothing, 0 and 1", rec.all(), v, n)
		}
	})
	t.Run("two streams that disagree about a position", func(t *testing.T) {
		rec := &recorder{}
		l := newLedger(32, rec)
		now := time.Now()
		stream(t, &browser{topic: fakeTopic("json_patch", "", fakeDocs)}, l, resume{}, now, snap("e-1", fakeDocs[1]), patchEv("e-2", toV2), patchEv("e-3", toV3))
		stream(t, &browser{topic: fakeTopic("json_patch", "", fakeDocs)}, l, resume{}, now, snap("e-1", fakeDocs[1]), status(down), patchEv("e-3", toV3))
		if got := rec.all(); !strings.Contains(got, "position 2 of a log of /s/fake was read as a patch by one stream and as a status event by another") {
			t.Fatalf("got %q", got)
		}
	})
}

func TestExpiredIDIsBeyondTheHistory(t *testing.T) {
	l := newLedger(4, &recorder{})
	b := &browser{topic: fakeTopic("json_patch", "", fakeDocs)}
	evs := []sseEvent{snap("e-1", fakeDocs[1]), patchEv("e-2", toV2)}
	for p := 3; p <= 30; p++ {
		evs = append(evs, status(map[bool]string{true: down, false: up}[p%2 == 0]))
	}
	stream(t, b, l, resume{}, time.Now(), append(evs, patchEv("e-31", toV3))...)
	id, ok := l.expiredID("", "/s/fake")
	e, _ := parseID(id)
	if !ok || e.pos+4+12 > 31 {
		t.Fatalf("expired id %q, %v: not beyond the history of 4 before position 31", id, ok)
	}
}

// docX is the topic /doc/x of route s, generation 1, on the first process
// of instance 1.
var docX = topicRun{key: "/doc/x", gen: "s1", instance: "i1r1"}

func TestUpstreamChecksPolls(t *testing.T) {
	cfg := timings{interval: 100 * time.Millisecond, timeout: time.Second, maxBackoff: 2 * time.Second, maxBody: 1 << 20}
	t0 := time.Now()
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	for _, tc := range []struct {
		name string
		// polls are (arrival in ms, outcome, Retry-After in ms)
		polls [][3]int
		want  string
	}{
		{"polls an interval apart", [][3]int{{0, 0, 0}, {95, 0, 0}, {190, 1, 0}, {290, 0, 0}}, ""},
		{"a backoff that doubles", [][3]int{{0, 2, 0}, {160, 2, 0}, {480, 2, 0}, {1100, 2, 0}, {2300, 0, 0}}, ""},
		{"Retry-After honoured", [][3]int{{0, 2, 1000}, {1000, 2, 1000}, {2000, 2, 1000}, {3000, 2, 1000}, {4000, 0, 0}}, ""},
		{"two polls in flight", [][3]int{{0, -1, 0}, {100, 0, 0}}, "which was still in flight 1s later"},
		{"twice the rate", [][3]int{{0, 0, 0}, {50, 0, 0}, {100, 0, 0}, {150, 0, 0}, {200, 0, 0}, {250, 0, 0}, {300, 0, 0}, {350, 0, 0}, {400, 0, 0}, {450, 0, 0},
			{500, 0, 0}, {550, 0, 0}, {600, 0, 0}, {650, 0, 0}, {700, 0, 0}, {750, 0, 0}, {800, 0, 0}, {850, 0, 0}, {900, 0, 0}, {950, 0, 0},
			{1000, 0, 0}, {1050, 0, 0}, {1100, 0, 0}, {1150, 0, 0}, {1200, 0, 0}, {1250, 0, 0}}, "more than one per interval"},
		{"failures retried at the interval", [][3]int{{0, 2, 0}, {100, 2, 0}, {200, 2, 0}, {300, 2, 0}, {400, 0, 0}}, "sooner than the backoff allows"},
		{"a Retry-After ignored", [][3]int{{0, 2, 1000}, {200, 2, 1000}, {600, 2, 1000}, {1400, 2, 1000}, {1500, 0, 0}}, "sooner than the backoff allows"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			u := &upstream{cfg: cfg, v: rec, series: map[string]*pollSeries{}, faults: map[string]int{}}
			for _, p := range tc.polls {
				poll := u.arrive("/doc/x gen s1 on i1r1", docX, ms(p[0]), "")
				if p[1] >= 0 {
					u.done(poll, outcome(p[1]), time.Duration(p[2])*time.Millisecond, "")
				}
			}
			time.Sleep(max(inFlightGrace, troubleLag) + 50*time.Millisecond)
			got := rec.all()
			if tc.want == "" && got != "" || tc.want != "" && !strings.Contains(got, tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
			// While an instance finds the shared store out of reach,
			// it polls on its own: the same polls are excused.
			if tc.want == "" {
				return
			}
			rec = &recorder{}
			u = &upstream{cfg: cfg, v: rec, series: map[string]*pollSeries{}, faults: map[string]int{}}
			trouble := func(from, to time.Time) bool { return !ms(300).Before(from) && !ms(300).After(to) }
			u.storeTrouble.Store(&trouble)
			for _, p := range tc.polls {
				poll := u.arrive("/doc/x gen s1 on every instance", docX, ms(p[0]), "")
				if p[1] >= 0 {
					u.done(poll, outcome(p[1]), time.Duration(p[2])*time.Millisecond, "")
				}
			}
			time.Sleep(max(inFlightGrace, troubleLag) + 50*time.Millisecond)
			if got := rec.all(); got != "" || u.excusedPolls() == 0 {
				t.Fatalf("with the store out of reach: got %q and %d excused polls", got, u.excusedPolls())
			}
		})
	}
}

func TestUpstreamLetsCaddyGiveUpOnAPoll(t *testing.T) {
	rec := &recorder{}
	u := &upstream{cfg: timings{interval: 100 * time.Millisecond, timeout: time.Second, maxBackoff: 2 * time.Second}, v: rec, series: map[string]*pollSeries{}, faults: map[string]int{}}
	hung := u.arrive("/doc/x gen s1 on i1r1", docX, time.Now(), "")
	next := u.arrive("/doc/x gen s1 on i1r1", docX, time.Now(), "")
	// The connection of the hung poll closes a moment after the next
	// arrived.
	time.Sleep(50 * time.Millisecond)
	u.release(hung)
	u.done(hung, outcomeFailed, 0, "hang past timeout")
	u.done(next, outcomeOK, 0, "")
	time.Sleep(inFlightGrace)
	if got := rec.all(); got != "" {
		t.Fatal(got)
	}
}

// TestUpstreamKnowsATopicStartedAnew: the polls of a per-user topic that a
// soak on three instances once took for a broken backoff. The topic got a
// 429 with Retry-After: 1, stopped for being idle during that second, and
// the next stream started it anew, whose first poll came at once and whose
// waits were those of its own first failures. The soak's streams tell
// when the topic can have started anew; without such a start the same
// polls are a broken backoff.
func TestUpstreamKnowsATopicStartedAnew(t *testing.T) {
	cfg := timings{interval: 100 * time.Millisecond, timeout: 3 * time.Second, maxBackoff: 2 * time.Second, maxBody: 1 << 20}
	carol := topicRun{key: "user:carol", gen: "u10", instance: "i2r9"}
	onI2 := presenceKey{instance: "i2", route: "u", key: "user:carol"}
	onI3 := presenceKey{instance: "i3", route: "u", key: "user:carol"}
	// (arrival in ms, outcome, Retry-After in ms)
	polls := [][3]int{{0, 2, 0}, {214, 2, 1000}, {923, 2, 0}, {1109, 2, 0}, {1447, 0, 0}}
	for _, tc := range []struct {
		name string
		// The last stream of the topic before the polls left at left,
		// and the next came at back, on the instance of k.
		k          presenceKey
		left, back int
		want       string
	}{
		{"a stream all along", onI2, 0, 0, "sooner than the backoff allows"},
		{"streams back within the idle timeout", onI2, -1500, 920, "sooner than the backoff allows"},
		{"streams back after the idle timeout", onI2, -2200, 920, ""},
		{"streams back on another instance", onI3, -2200, 920, "sooner than the backoff allows"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t0 := time.Now().Add(-3 * time.Second)
			at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
			pr := newPresence(func(route string) time.Duration {
				if route != "u" {
					t.Errorf("idle timeout of route %q asked for", route)
				}
				return 3 * time.Second
			})
			pr.opened(tc.k, at(-60000))
			if tc.back != 0 {
				pr.closed(tc.k, at(tc.left))
				pr.opened(tc.k, at(tc.back))
			}
			rec := &recorder{}
			u := &upstream{cfg: cfg, v: rec, series: map[string]*pollSeries{}, faults: map[string]int{}}
			started := pr.startedAnew
			u.started.Store(&started)
			for _, p := range polls {
				poll := u.arrive(carol.String(), carol, at(p[0]), "")
				u.done(poll, outcome(p[1]), time.Duration(p[2])*time.Millisecond, "")
			}
			time.Sleep(troubleLag + 50*time.Millisecond)
			got := rec.all()
			if tc.want == "" && got != "" || tc.want != "" && !strings.Contains(got, tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
			if restarts := u.restartedRuns(); (tc.want == "") != (restarts > 0) {
				t.Fatalf("%d runs explained by a new start", restarts)
			}
		})
	}
}

func TestCanaryCatchesAPollThatFollowedARedirectElsewhere(t *testing.T) {
	rec := &recorder{}
	u, err := newUpstream(timings{interval: 100 * time.Millisecond, timeout: time.Second}, rec)
	if err != nil {
		t.Fatal(err)
	}
	defer u.close()
	resp, err := http.Get(u.canaryAt + "/doc")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := rec.all(); !strings.Contains(got, "followed a redirect to another host") {
		t.Fatalf("got %q", got)
	}
}

func TestReaderOverItsBudget(t *testing.T) {
	in := &instance{index: 1, run: 1}
	t0 := time.Now()
	up := &upTopic{marks: map[string][]servedMark{"i1r1": {{4, t0.Add(-time.Minute)}, {5, t0}, {6, t0.Add(time.Second)}}}}
	r := &reader{who: "a reader", topic: &topicSpec{up: up}, inst: in}
	r.opened(t0.Add(-time.Second), 4)
	if got := r.late(t0.Add(2*time.Second), time.Time{}, 3*time.Second); got != "" {
		t.Errorf("within the budget: %s", got)
	}
	if got := r.late(t0.Add(4*time.Second), time.Time{}, 3*time.Second); !strings.Contains(got, "is at version 4; the upstream served version 5 4s ago") {
		t.Errorf("over the budget: %q", got)
	}
	if got := r.late(t0.Add(4500*time.Millisecond), t0.Add(time.Millisecond), 3*time.Second); !strings.Contains(got, "served version 6") {
		t.Errorf("over the budget after an operation: %q", got)
	}
	rec := &recorder{}
	s := &soak{o: options{budget: 3 * time.Second}, cancel: func() {}}
	s.failHook = rec.fail
	r.changed(s, 6, t0.Add(4*time.Second))
	if got := r.late(t0.Add(10*time.Second), time.Time{}, 3*time.Second); got != "" || r.worst != 4*time.Second {
		t.Errorf("caught up, worst %s: %s", r.worst, got)
	}
	if got := rec.all(); !strings.Contains(got, "reached version 6 4s after the upstream served version 5: over the latency budget of 3s") {
		t.Errorf("reaching a version late: %q", got)
	}
}

func TestResourcesOverTheirBaseline(t *testing.T) {
	base := sample{goroutines: 90, heapInuse: 20 << 20, fds: 40}
	for _, tc := range []struct {
		cur  sample
		over bool
	}{
		{sample{goroutines: 90 + goroutineSlack, heapInuse: 20<<20 + heapSlack, fds: 40 + fdSlack}, false},
		{sample{goroutines: 91 + goroutineSlack, heapInuse: 20 << 20, fds: 40}, true},
		{sample{goroutines: 90, heapInuse: 21<<20 + heapSlack, fds: 40}, true},
		{sample{goroutines: 90, heapInuse: 20 << 20, fds: 41 + fdSlack}, true},
	} {
		if got := tc.cur.exceeds(base); got != tc.over {
			t.Errorf("%v over %v: %v, want %v", tc.cur, base, got, tc.over)
		}
	}
}

// The browser's patches are held to the JSON Patch test suite.
func TestApplyPatchPassesTheJSONPatchTestSuite(t *testing.T) {
	n := 0
	for _, file := range []string{"tests.json", "spec_tests.json"} {
		b, err := os.ReadFile("../../testdata/json-patch-tests/" + file)
		if err != nil {
			t.Fatal(err)
		}
		var cases []struct {
			Doc, Patch, Expected json.RawMessage
			Error, Comment       string
			Disabled             bool
		}
		if err := json.Unmarshal(b, &cases); err != nil {
			t.Fatal(err)
		}
		for i, c := range cases {
			if c.Disabled || c.Expected == nil && c.Error == "" {
				continue
			}
			n++
			doc, err1 := decode(c.Doc)
			patch, err2 := decode(c.Patch)
			if err1 != nil || err2 != nil {
				t.Fatalf("%s %d: %v %v", file, i, err1, err2)
			}
			got, err := applyPatch(doc, patch)
			switch {
			case c.Error != "" && err == nil:
				t.Errorf("%s %d (%s): applied, want the error %q", file, i, c.Comment, c.Error)
			case c.Error == "" && err != nil:
				t.Errorf("%s %d (%s): %v", file, i, c.Comment, err)
			case c.Error == "":
				want, _ := decode(c.Expected)
				if !jsonEqual(got, want) {
					t.Errorf("%s %d (%s): got %s, want %s", file, i, c.Comment, encode(got), c.Expected)
				}
			}
		}
	}
	if n < 100 {
		t.Fatalf("only %d cases", n)
	}
}

func TestApplyPatchUnderTheEmptyKey(t *testing.T) {
	for _, tc := range []struct{ doc, patch, want string }{
		{`{"":{}}`, `[{"op":"add","path":"//x","value":1}]`, `{"":{"x":1}}`},
		{`{"":{"a":1}}`, `[{"op":"replace","path":"//a","value":2}]`, `{"":{"a":2}}`},
		{`{"a":{"":{}}}`, `[{"op":"add","path":"/a//x","value":1}]`, `{"a":{"":{"x":1}}}`},
		{`{"":{"":[1]}}`, `[{"op":"add","path":"///0","value":0},{"op":"move","from":"///1","path":"/b"}]`, `{"":{"":[0]},"b":1}`},
	} {
		doc, _ := decode([]byte(tc.doc))
		patch, _ := decode([]byte(tc.patch))
		got, err := applyPatch(doc, patch)
		if want, _ := canonical([]byte(tc.want)); err != nil || string(encode(got)) != string(want) {
			t.Errorf("%s + %s = %s, %v; want %s", tc.doc, tc.patch, encode(got), err, tc.want)
		}
	}
}

// fakeAdmin is an admin endpoint of Caddy that reports goroutines and the
// handler's gauges as the test sets them.
type fakeAdmin struct {
	mu                              sync.Mutex
	goroutines, subscribers, topics int
}

func (a *fakeAdmin) set(goroutines, subscribers, topics int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.goroutines, a.subscribers, a.topics = goroutines, subscribers, topics
}

func (a *fakeAdmin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch r.URL.Path {
	case "/debug/pprof/goroutine":
		fmt.Fprintf(w, "goroutine profile: total %d\n", a.goroutines)
	case "/metrics":
		fmt.Fprintf(w, "go_memstats_heap_inuse_bytes 1.048576e+07\ncaddy_http_poll_sse_subscribers %d\ncaddy_http_poll_sse_topics %d\n", a.subscribers, a.topics)
	}
}

// fakeInstance is an instance whose admin endpoint is a fakeAdmin.
func fakeInstance(t *testing.T, a *fakeAdmin) *instance {
	srv := httptest.NewServer(a)
	t.Cleanup(srv.Close)
	port, _ := strconv.Atoi(srv.URL[strings.LastIndexByte(srv.URL, ':')+1:])
	return &instance{index: 1, run: 1, adminPort: port, dir: t.TempDir()}
}

func TestQuiesceCatchesSubscribersAndTopicsLeftBehind(t *testing.T) {
	for _, tc := range []struct {
		subscribers, topics int
		want                string
	}{
		{0, 0, ""},
		{1, 0, "counts 1 subscribers and 0 topics (want 0 and 0"},
		{0, 1, "counts 0 subscribers and 1 topics (want 0 and 0"},
	} {
		a := &fakeAdmin{}
		a.set(10, tc.subscribers, tc.topics)
		rec := &recorder{}
		s := &soak{ctx: context.Background(), failHook: rec.fail, settle: 600 * time.Millisecond, stats: newStats(),
			baselines: map[*instance]sample{}, lastSample: map[*instance]sample{}, worstDelta: map[*instance]sample{}}
		s.insts = []*instance{fakeInstance(t, a)}
		s.quiesce(1)
		if got := rec.all(); tc.want == "" && got != "" || !strings.Contains(got, tc.want) {
			t.Errorf("%d subscribers and %d topics left: got %q, want %q", tc.subscribers, tc.topics, got, tc.want)
		}
	}
}

func TestCheckResourcesCatchesAProcessAboveItsBaseline(t *testing.T) {
	a := &fakeAdmin{}
	a.set(50, 0, 0)
	rec := &recorder{}
	s := &soak{ctx: context.Background(), failHook: rec.fail, settle: 1200 * time.Millisecond,
		baselines: map[*instance]sample{}, lastSample: map[*instance]sample{}, worstDelta: map[*instance]sample{}}
	in := fakeInstance(t, a)
	s.checkResources(in, 0) // the baseline
	a.set(50+goroutineSlack, 0, 0)
	s.checkResources(in, 1)
	if got := rec.all(); got != "" {
		t.Fatalf("within the slack: %s", got)
	}
	a.set(51+goroutineSlack, 0, 0)
	s.checkResources(in, 2)
	if got := rec.all(); !strings.Contains(got, "after phase 2 did not return to its baseline") {
		t.Fatalf("got %q", got)
	}
}

func TestRacesAndPanicsInCaddysOutputAreTold(t *testing.T) {
	in := &instance{dir: t.TempDir()}
	race := func(frame string) string {
		return "==================\nWARNING: DATA RACE\nRead at 0x00c by goroutine 7:\n  " + frame + "\n      /x.go:1\n==================\n"
	}
	out := "=== run 1\n" + race("github.com/caddyserver/caddy/v2/modules/caddytls.(*TLS).Start()") +
		race("github.com/pollsse/caddy-pollsse.(*memoryLog).read()") + "panic: boom\n\ngoroutine 1 [running]:\n"
	if err := os.WriteFile(filepath.Join(in.dir, "caddy.out"), []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
	ours, others := in.races()
	if len(ours) != 1 || !strings.Contains(ours[0], "memoryLog") || others != 1 {
		t.Errorf("races: %d of the handler (%q), %d others; want 1 and 1", len(ours), ours, others)
	}
	if got := in.troubleInOutput(); !strings.HasPrefix(got, "panic: boom") {
		t.Errorf("trouble: %q", got)
	}
}

func TestSessionChecksTheStreamsHeaders(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprint(w, "event: snapshot\nid: e-1\ndata: {}\n\n")
	}))
	defer srv.Close()
	port, _ := strconv.Atoi(srv.URL[strings.LastIndexByte(srv.URL, ':')+1:])
	s := &soak{ts: newTransports(nil), stats: newStats(), ledger: newLedger(32, &recorder{})}
	b := &browser{topic: fakeTopic("json_patch", "", fakeDocs)}
	res := s.session(context.Background(), b, sessionOpts{proto: protoH1, inst: &instance{h1Port: port}})
	if res.err == nil || !strings.Contains(res.err.Error(), `answered with Content-Type "text/plain"`) {
		t.Fatalf("got %v", res.err)
	}
}

func TestVerifyCacheSharesOnlyWhatIsTheSame(t *testing.T) {
	topic := fakeTopic("json_patch", "", fakeDocs)
	verifies := 0
	inner := topic.verify
	topic.verify = func(v int, canon []byte) error { verifies++; return inner(v, canon) }
	topic.cache = new(verifyCache)
	l := newLedger(32, &recorder{})
	a, b := &browser{topic: topic}, &browser{topic: topic}
	stream(t, a, l, resume{}, time.Now(), snap("e-1", fakeDocs[1]), patchEv("e-2", toV2))
	stream(t, b, l, resume{}, time.Now(), snap("e-1", fakeDocs[1]), patchEv("e-2", toV2))
	if verifies != 2 {
		t.Errorf("two browsers, the same two events: %d verifications, want 2", verifies)
	}
	// The same id with other data is checked on its own, and caught.
	c := &browser{topic: topic}
	ch := newStreamCheck(c, resume{}, newLedger(32, &recorder{}), "")
	ch.event(snap("e-1", fakeDocs[1]), time.Now())
	if err := ch.event(patchEv("e-2", `[{"op":"replace","path":"/v","value":2},{"op":"replace","path":"/a","value":7}]`), time.Now()); err == nil || !strings.Contains(err.Error(), "differs from version 2") {
		t.Fatalf("a patch with the id of another: %v", err)
	}
	// So is the same event on another document.
	d := &browser{topic: topic}
	stream(t, d, l, resume{}, time.Now(), snap("e-3", fakeDocs[3]))
	ch = newStreamCheck(d, resume{}, l, "")
	ch.event(snap("e-1", `{"v":1,"a":1,"":{"k":1}}`), time.Now())
	if err := ch.event(patchEv("e-2", toV2), time.Now()); err == nil {
		t.Fatal("a document that is not version 1 passed")
	}
	if a.tree == nil || fmt.Sprint(a.tree) != fmt.Sprint(b.tree) {
		t.Errorf("the browsers hold %v and %v", a.tree, b.tree)
	}
}

// TestSameIDSameDataOnEveryInstance: on a shared store, an id read on two
// instances must carry the same data; on the memory store, each instance's
// epochs are its own.
func TestSameIDSameDataOnEveryInstance(t *testing.T) {
	const v3 = `[{"op":"replace","path":"/v","value":3}]`
	for _, shared := range []bool{false, true} {
		l := newLedger(32, &recorder{})
		l.shared = shared
		a := &browser{topic: fakeTopic("json_patch", "", fakeDocs)}
		stream(t, a, l, resume{instance: "i1r1"}, time.Now(), snap("e-1-ab", fakeDocs[1]), patchEv("e-2-cd", toV2))
		b := &browser{topic: a.topic}
		c := newStreamCheck(b, resume{instance: "i2r1"}, l, "")
		c.event(snap("e-1-ab", fakeDocs[1]), time.Now())
		err := c.event(patchEv("e-2-cd", v3), time.Now())
		if shared && (err == nil || !strings.Contains(err.Error(), "e-2-cd of /s/fake read on i2r1 carries other data than it did on i1r1")) {
			t.Errorf("shared store: %v", err)
		}
		if !shared && err != nil && strings.Contains(err.Error(), "carries other data") {
			t.Errorf("memory store, two instances: %v", err)
		}
	}
}

func TestApplyPatchLeavesTheDocumentAsItWas(t *testing.T) {
	before := `{"a":{"b":[1,2,{"c":3}]},"d":"x"}`
	doc, _ := decode([]byte(before))
	patch, _ := decode([]byte(`[{"op":"add","path":"/a/b/1","value":9},{"op":"remove","path":"/a/b/3/c"},{"op":"move","from":"/d","path":"/a/e"},{"op":"replace","path":"/a/b/0","value":0}]`))
	got, err := applyPatch(doc, patch)
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := canonical([]byte(`{"a":{"b":[0,9,2,{}],"e":"x"}}`)); string(encode(got)) != string(want) {
		t.Errorf("got %s", encode(got))
	}
	if want, _ := canonical([]byte(before)); string(encode(doc)) != string(want) {
		t.Errorf("the document became %s", encode(doc))
	}
	merged := mergePatch(doc, map[string]any{"a": map[string]any{"b": nil}, "f": true})
	if want, _ := canonical([]byte(before)); string(encode(doc)) != string(want) || string(encode(merged)) != `{"a":{},"d":"x","f":true}` {
		t.Errorf("merge: %s, the document %s", encode(merged), encode(doc))
	}
}
