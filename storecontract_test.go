package pollsse

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.uber.org/zap"
)

// A contractStore is a store under the contract tests: attach returns a
// fresh hubStore of it, as one instance's hub holds it; the hubStores of
// one call of newGroup share what the store shares (nothing for memory, a
// Redis for redis).
type contractStore struct {
	name string
	// shared is set for a store whose instances share their topics.
	shared   bool
	newGroup func(t *testing.T) func() hubStore
}

// contractStores are the stores that the contract tests run against;
// redis_test.go adds the Redis store.
var contractStores = []contractStore{{
	name: "memory",
	newGroup: func(t *testing.T) func() hubStore {
		return func() hubStore {
			hs, err := MemoryStore{}.attach(zap.NewNop())
			if err != nil {
				t.Fatal(err)
			}
			return hs
		}
	},
}}

// forEachStore runs test as a subtest for each store of contractStores.
func forEachStore(t *testing.T, test func(t *testing.T, cs contractStore, attach func() hubStore)) {
	for _, cs := range contractStores {
		t.Run(cs.name, func(t *testing.T) {
			attach := cs.newGroup(t)
			test(t, cs, func() hubStore {
				hs := attach()
				t.Cleanup(func() { hs.Close() })
				return hs
			})
		})
	}
}

// contractTopics counts topics, so that each test's topic is new to the
// store.
var contractTopics int

// openLog opens the log of a new topic, named name, in hs, closed when the
// test ends.
func openLog(t *testing.T, hs hubStore, name string, history int) eventLog {
	t.Helper()
	l := hs.open(topicRef{id: name, history: history, interval: 100 * time.Millisecond, logger: zap.NewNop()})
	t.Cleanup(func() { l.Close() })
	return l
}

func newTopicName(t *testing.T) string {
	contractTopics++
	return fmt.Sprintf("contract%d%x", contractTopics, time.Now().UnixNano()&0xffffff)
}

// mustLead waits until l's instance polls its topic and returns its term.
func mustLead(t *testing.T, l eventLog) uint64 {
	t.Helper()
	var term uint64
	waitFor(t, 10*time.Second, "the instance to poll the topic", func() bool {
		term, _ = l.lead(context.Background())
		return term != 0
	})
	return term
}

// readUntil reads l from at until the events read, as names() says them,
// are want, and returns them and the cursor after them.
func readUntil(t *testing.T, l eventLog, at cursor, want string) ([]sseEvent, cursor) {
	t.Helper()
	var evs []sseEvent
	next := at
	waitFor(t, 10*time.Second, "the log to read "+want, func() bool {
		var more []sseEvent
		more, next = readAll(t, l, next)
		evs = append(evs, more...)
		return names(evs) == want
	})
	return evs, next
}

// readFrom waits until a subscriber at cursor reads the events that want
// names, and returns them.
func readFrom(t *testing.T, l eventLog, at cursor, want string) []sseEvent {
	t.Helper()
	var evs []sseEvent
	waitFor(t, 10*time.Second, "the log to read "+want, func() bool {
		evs, _ = readAll(t, l, at)
		return names(evs) == want
	})
	return evs
}

// TestStoreContractEvents: a log reads a snapshot of its first document,
// then each event with an id; an id resumes with exactly the events after
// it, an unknown or foreign one with a snapshot; current is the last
// document.
func TestStoreContractEvents(t *testing.T) {
	forEachStore(t, func(t *testing.T, cs contractStore, attach func() hubStore) {
		ctx := context.Background()
		l := openLog(t, attach(), newTopicName(t), 8)
		mustLead(t, l)
		if snap, down, err := l.current(ctx); snap != nil || down || err != nil {
			t.Fatalf("a new topic's current document: %q, down %v, %v", snap, down, err)
		}
		if err := l.appendEvent(ctx, []byte(`{"v":1}`), "", nil); err != nil {
			t.Fatal(err)
		}
		evs, at := readUntil(t, l, 0, `snapshot:{"v":1}`)
		first := evs[0].id
		for v := 2; v <= 4; v++ {
			if err := l.appendEvent(ctx, fmt.Appendf(nil, `{"v":%d}`, v), eventPatch, fmt.Appendf(nil, `[%d]`, v)); err != nil {
				t.Fatal(err)
			}
		}
		evs, _ = readUntil(t, l, at, "patch:[2] patch:[3] patch:[4]")
		ids := map[string]bool{first: true}
		for _, ev := range evs {
			if !ev.hasID || ids[ev.id] {
				t.Errorf("event %+v has no id or one seen before", ev)
			}
			ids[ev.id] = true
		}
		for i, id := range []string{first, evs[0].id, evs[1].id, evs[2].id} {
			want := names(evs[i:])
			if got, _ := readAll(t, l, l.resume(id)); names(got) != want {
				t.Errorf("resume(%s) reads %q, want %q", id, names(got), want)
			}
		}
		for _, id := range []string{"", "bogus", first + "0", "1-1", evs[2].id + "-x"} {
			if got, _ := readAll(t, l, l.resume(id)); names(got) != `snapshot:{"v":4}` {
				t.Errorf("resume(%q) reads %q, want the snapshot", id, names(got))
			}
		}
		if snap, _, err := l.current(ctx); string(snap) != `{"v":4}` || err != nil {
			t.Errorf("current = %q, %v", snap, err)
		}
		// Another topic of the store does not know these ids.
		other := openLog(t, attach(), newTopicName(t), 8)
		mustLead(t, other)
		other.appendEvent(ctx, []byte(`1`), "", nil)
		readUntil(t, other, 0, "snapshot:1")
		if got, _ := readAll(t, other, other.resume(first)); names(got) != "snapshot:1" {
			t.Errorf("another topic resumes %s with %q", first, names(got))
		}
	})
}

// TestStoreContractStatus: a status event reaches subscribers in its place
// among the events, without an id; a new subscriber of a failing upstream
// reads the snapshot and then the down status; current tells it.
func TestStoreContractStatus(t *testing.T) {
	forEachStore(t, func(t *testing.T, cs contractStore, attach func() hubStore) {
		ctx := context.Background()
		l := openLog(t, attach(), newTopicName(t), 8)
		mustLead(t, l)
		l.appendEvent(ctx, []byte(`1`), "", nil)
		_, at := readUntil(t, l, 0, "snapshot:1")
		if err := l.setStatus(ctx, []byte(`{"upstream":"down"}`), true); err != nil {
			t.Fatal(err)
		}
		evs, _ := readUntil(t, l, at, `status:{"upstream":"down"}`)
		if evs[0].hasID {
			t.Errorf("the status event has the id %q", evs[0].id)
		}
		readUntil(t, l, 0, `snapshot:1 status:{"upstream":"down"}`)
		if _, down, _ := l.current(ctx); !down {
			t.Error("current does not say that the upstream is down")
		}
		l.setStatus(ctx, []byte(`{"upstream":"up"}`), false)
		l.appendEvent(ctx, []byte(`2`), eventPatch, []byte(`[2]`))
		readUntil(t, l, at, `status:{"upstream":"down"} status:{"upstream":"up"} patch:[2]`)
		readUntil(t, l, 0, `snapshot:2`)
	})
}

// TestStoreContractHistory: an id older than the history gets a snapshot,
// and one that the history still follows resumes.
func TestStoreContractHistory(t *testing.T) {
	forEachStore(t, func(t *testing.T, cs contractStore, attach func() hubStore) {
		ctx := context.Background()
		l := openLog(t, attach(), newTopicName(t), 3)
		mustLead(t, l)
		l.appendEvent(ctx, []byte(`1`), "", nil)
		evs, at := readUntil(t, l, 0, "snapshot:1")
		ids := []string{evs[0].id}
		for v := 2; v <= 6; v++ {
			l.appendEvent(ctx, fmt.Appendf(nil, "%d", v), eventPatch, fmt.Appendf(nil, "[%d]", v))
			evs, at = readUntil(t, l, at, fmt.Sprintf("patch:[%d]", v))
			ids = append(ids, evs[0].id)
		}
		if got, _ := readAll(t, l, l.resume(ids[0])); names(got) != "snapshot:6" {
			t.Errorf("an id older than the history reads %q", names(got))
		}
		if got, _ := readAll(t, l, l.resume(ids[2])); names(got) != "patch:[4] patch:[5] patch:[6]" {
			t.Errorf("an id the history follows reads %q", names(got))
		}
	})
}

// TestStoreContractInstances: of the instances that share a store, one
// polls a topic and the others' writes are refused with errNotPolling;
// every instance reads the same events with the same ids and bytes, and an
// id of one resumes on the others. Instances of a store that shares
// nothing each poll their own topic.
func TestStoreContractInstances(t *testing.T) {
	forEachStore(t, func(t *testing.T, cs contractStore, attach func() hubStore) {
		ctx := context.Background()
		name := newTopicName(t)
		logs := []eventLog{openLog(t, attach(), name, 8), openLog(t, attach(), name, 8), openLog(t, attach(), name, 8)}
		leader := -1
		for i, l := range logs {
			if term, _ := l.lead(ctx); term != 0 {
				if leader >= 0 && cs.shared {
					t.Fatalf("instances %d and %d both poll the topic", leader, i)
				}
				leader = i
			}
		}
		if leader < 0 {
			t.Fatal("no instance polls the topic")
		}
		if !cs.shared {
			for i, l := range logs {
				if term, _ := l.lead(ctx); term == 0 {
					t.Errorf("instance %d of an unshared store does not poll its topic", i)
				}
			}
			return
		}
		for i, l := range logs {
			if i != leader {
				if err := l.appendEvent(ctx, []byte(`0`), "", nil); err != errNotPolling {
					t.Errorf("a write of instance %d, which does not poll: %v, want errNotPolling", i, err)
				}
			}
		}
		w := logs[leader]
		w.appendEvent(ctx, []byte(`{"v":1}`), "", nil)
		w.appendEvent(ctx, []byte(`{"v":2}`), eventPatch, []byte(`[2]`))
		// Each instance in turn: the same snapshot and id on all, and an
		// event appended then reaches every instance, whichever id of
		// which instance it resumes from, with the same id and bytes.
		last := readFrom(t, logs[0], 0, `snapshot:{"v":2}`)[0].id
		for i := range logs {
			if got := readFrom(t, logs[i], 0, `snapshot:{"v":2}`); got[0].id != last {
				t.Errorf("instance %d's snapshot has the id %q, instance 0's %q", i, got[0].id, last)
			}
		}
		for v := 3; v <= 5; v++ {
			w.appendEvent(ctx, fmt.Appendf(nil, `{"v":%d}`, v), eventPatch, fmt.Appendf(nil, `[%d]`, v))
			var want []byte
			for i, l := range logs {
				readFrom(t, l, l.resume(last), fmt.Sprintf("patch:[%d]", v))
				f, _, _ := l.read(l.resume(last), make([]frame, 0, 8))
				if len(f) != 1 {
					t.Fatalf("instance %d reads %d frames after %s", i, len(f), last)
				}
				if want == nil {
					want = f[0].bytes
				}
				if string(f[0].bytes) != string(want) {
					t.Errorf("instance %d reads %q, instance 0 %q", i, f[0].bytes, want)
				}
			}
			last = parseFrames(t, want)[0].id
		}
	})
}
