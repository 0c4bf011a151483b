package pollsse

import (
	"context"
	"fmt"
	"strings"
	"testing"
)

func doc(data string) *document { return &document{body: []byte(data), data: []byte(data)} }

// readAll reads a log from cursor as a subscriber does, until nothing is
// left, and returns the parsed events and the final cursor.
func readAll(t *testing.T, l eventLog, at cursor) ([]sseEvent, cursor) {
	t.Helper()
	var out []sseEvent
	for range 100 {
		frames, next, _ := l.read(at, make([]frame, 0, 4))
		at = next
		if len(frames) == 0 {
			return out, at
		}
		for _, f := range frames {
			out = append(out, parseFrames(t, f.bytes)...)
		}
	}
	t.Fatal("read did not settle")
	return nil, 0
}

func names(evs []sseEvent) string {
	var s []string
	for _, ev := range evs {
		s = append(s, ev.name+":"+ev.data)
	}
	return strings.Join(s, " ")
}

func TestMemoryLogSnapshotThenPatches(t *testing.T) {
	l := newMemoryLog(8)
	evs, cursor := readAll(t, l, 0)
	if len(evs) != 0 || cursor != 0 {
		t.Fatalf("before any document: %v at %d, want nothing", names(evs), cursor)
	}
	l.appendDocument(doc(`{"v":1}`), "", nil)
	evs, cursor = readAll(t, l, 0)
	if got := names(evs); got != `snapshot:{"v":1}` {
		t.Fatalf("first read = %s", got)
	}
	if evs[0].id != l.id(1) {
		t.Errorf("snapshot id = %q, want %q", evs[0].id, l.id(1))
	}
	l.appendDocument(doc(`{"v":2}`), "patch", []byte(`[2]`))
	l.appendDocument(doc(`{"v":3}`), "patch", []byte(`[3]`))
	evs, _ = readAll(t, l, cursor)
	if got := names(evs); got != "patch:[2] patch:[3]" {
		t.Fatalf("live read = %s", got)
	}
	if evs[0].id != l.id(2) || evs[1].id != l.id(3) {
		t.Errorf("ids = %q %q", evs[0].id, evs[1].id)
	}
}

func TestMemoryLogResume(t *testing.T) {
	l := newMemoryLog(4)
	l.appendDocument(doc(`1`), "", nil) // 1
	for v := 2; v <= 7; v++ {
		l.appendDocument(doc(fmt.Sprint(v)), "patch", []byte(fmt.Sprintf("[%d]", v)))
	}
	// The ring holds 4..7.
	other := newMemoryLog(4)
	tests := []struct {
		name string
		id   string
		want string
	}{
		{"an id in history replays the events after it", l.id(5), "patch:[6] patch:[7]"},
		{"the id just before the oldest held event replays all held", l.id(3), "patch:[4] patch:[5] patch:[6] patch:[7]"},
		{"the latest id gets nothing until the next change", l.id(7), ""},
		{"an expired id gets a snapshot", l.id(2), "snapshot:7"},
		{"an id before the first document gets a snapshot", l.id(0), "snapshot:7"},
		{"a future id gets a snapshot", l.id(8), "snapshot:7"},
		{"an id of another epoch gets a snapshot", other.id(5), "snapshot:7"},
		{"an empty id gets a snapshot", "", "snapshot:7"},
		{"a malformed id gets a snapshot", "garbage", "snapshot:7"},
		{"a number with a leading zero gets a snapshot", l.epoch + "-05", "snapshot:7"},
		{"a signed number gets a snapshot", l.epoch + "-+5", "snapshot:7"},
		{"an oversized id gets a snapshot", l.id(5) + strings.Repeat("0", 100), "snapshot:7"},
		{"an overflowing number gets a snapshot", l.epoch + "-99999999999999999999999", "snapshot:7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			evs, _ := readAll(t, l, l.resume(tt.id))
			if got := names(evs); got != tt.want {
				t.Errorf("resume(%q) reads %q, want %q", tt.id, got, tt.want)
			}
		})
	}
}

func TestMemoryLogResumeAcrossADocumentWithoutPatch(t *testing.T) {
	l := newMemoryLog(8)
	l.appendDocument(doc(`1`), "", nil)
	l.appendDocument(doc(`2`), "patch", []byte(`[2]`))
	l.appendDocument(doc(`3`), "", nil) // no patch from 2 to 3
	l.appendDocument(doc(`4`), "patch", []byte(`[4]`))
	if evs, _ := readAll(t, l, l.resume(l.id(2))); names(evs) != "snapshot:4" {
		t.Errorf("resume across a document without patch reads %q, want a snapshot", names(evs))
	}
	if evs, _ := readAll(t, l, l.resume(l.id(3))); names(evs) != "patch:[4]" {
		t.Errorf("resume after it reads %q", names(evs))
	}
}

func TestMemoryLogSubscriberBehindHistoryGetsSnapshot(t *testing.T) {
	l := newMemoryLog(2)
	l.appendDocument(doc(`1`), "", nil)
	_, cursor := readAll(t, l, 0)
	for v := 2; v <= 5; v++ {
		l.appendDocument(doc(fmt.Sprint(v)), "patch", []byte(fmt.Sprintf("[%d]", v)))
	}
	evs, cursor := readAll(t, l, cursor)
	if got := names(evs); got != "snapshot:5" {
		t.Fatalf("a subscriber that missed more than the history reads %q, want a snapshot", got)
	}
	l.appendDocument(doc(`6`), "patch", []byte(`[6]`))
	if evs, _ := readAll(t, l, cursor); names(evs) != "patch:[6]" {
		t.Errorf("after the resync it reads %q", names(evs))
	}
}

func TestMemoryLogStatus(t *testing.T) {
	l := newMemoryLog(8)
	l.appendDocument(doc(`1`), "", nil)
	_, live := readAll(t, l, 0)
	l.appendStatus([]byte(`{"upstream":"down"}`), true)

	evs, _ := readAll(t, l, live)
	if got := names(evs); got != `status:{"upstream":"down"}` {
		t.Errorf("live subscriber reads %q", got)
	}
	if evs[0].hasID {
		t.Errorf("status event has an id: %q", evs[0].id)
	}
	evs, cursor := readAll(t, l, 0)
	if got := names(evs); got != `snapshot:1 status:{"upstream":"down"}` {
		t.Errorf("new subscriber during an outage reads %q", got)
	}
	l.appendStatus([]byte(`{"upstream":"up"}`), false)
	l.appendDocument(doc(`2`), "patch", []byte(`[2]`))
	if evs, _ := readAll(t, l, cursor); names(evs) != `status:{"upstream":"up"} patch:[2]` {
		t.Errorf("recovery reads %q", names(evs))
	}
	if evs, _ := readAll(t, l, 0); names(evs) != `snapshot:2` {
		t.Errorf("new subscriber after recovery reads %q", names(evs))
	}
}

func TestMemoryLogWakesReaders(t *testing.T) {
	l := newMemoryLog(8)
	_, _, wake := l.read(0, nil)
	select {
	case <-wake:
		t.Fatal("woken before anything was appended")
	default:
	}
	l.appendDocument(doc(`1`), "", nil)
	select {
	case <-wake:
	default:
		t.Fatal("not woken by an append")
	}
}

func TestSnapshotFrameIsEncodedOncePerVersion(t *testing.T) {
	l := newMemoryLog(8)
	l.appendDocument(doc(`{"big":true}`), "", nil)
	a, _, _ := l.read(0, nil)
	b, _, _ := l.read(0, nil)
	if &a[0].bytes[0] != &b[0].bytes[0] {
		t.Error("two subscribers at one version got separately encoded snapshots")
	}
}

func TestEpochsDiffer(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		e := newMemoryLog(1).epoch
		if seen[e] {
			t.Fatalf("epoch %q issued twice", e)
		}
		seen[e] = true
	}
}

// TestMemoryLogKeepsNoSnapshotsInItsHistory: a change sent as a whole
// snapshot is read as the snapshot of the current document, so the history
// holds no copy of a document: a subscriber that is behind gets one
// snapshot of the latest, and one that resumes from an id before it too.
func TestMemoryLogKeepsNoSnapshotsInItsHistory(t *testing.T) {
	l := newMemoryLog(8)
	l.appendDocument(doc(`1`), "", nil)
	_, cursor := readAll(t, l, 0)
	l.appendDocument(doc(`2`), "patch", []byte(`[2]`))
	l.appendDocument(doc(`"three"`), eventSnapshot, []byte(`"three"`))
	// The snapshot says all that the patch before it would.
	evs, live := readAll(t, l, cursor)
	if got := names(evs); got != `snapshot:"three"` {
		t.Fatalf("a live subscriber reads %s", got)
	}
	if evs[0].id != l.id(3) {
		t.Errorf("the snapshot's id is %q, want %q", evs[0].id, l.id(3))
	}
	l.appendDocument(doc(`"four"`), eventSnapshot, []byte(`"four"`))
	l.appendDocument(doc(`"five"`), eventSnapshot, []byte(`"five"`))
	if evs, _ := readAll(t, l, live); names(evs) != `snapshot:"five"` || evs[0].id != l.id(5) {
		t.Errorf("a subscriber two snapshots behind reads %s, want the latest only", names(evs))
	}
	if got := l.resume(l.id(1)); got != 0 {
		t.Errorf("resume across a snapshot = %d, want a fresh snapshot", got)
	}
	for i := uint64(1); i <= l.head; i++ {
		if f := l.entry(i).frame.bytes; strings.Contains(string(f), "snapshot") {
			t.Errorf("the history holds %q", f)
		}
	}
}

// TestMemoryLogHistoryCostsWhatItHolds: the history grows with its events,
// so a large one costs nothing up front.
func TestMemoryLogHistoryCostsWhatItHolds(t *testing.T) {
	l := newMemoryLog(1 << 40)
	l.appendDocument(doc(`1`), "", nil)
	_, cursor := readAll(t, l, 0)
	for v := 2; v <= 4; v++ {
		l.appendDocument(doc(fmt.Sprint(v)), "patch", []byte(fmt.Sprintf("[%d]", v)))
	}
	if evs, _ := readAll(t, l, cursor); names(evs) != "patch:[2] patch:[3] patch:[4]" {
		t.Errorf("read %s", names(evs))
	}
	if len(l.ring) != 4 || l.resume(l.id(2)) != 2 {
		t.Errorf("%d entries held, resume from 2 = %d", len(l.ring), l.resume(l.id(2)))
	}
}

// TestMemoryLogStatusBeforeTheFirstDocument: subscribers that wait for the
// first document read the down status, and then, whenever they read, the up
// status before the first snapshot, never one without the other.
func TestMemoryLogStatusBeforeTheFirstDocument(t *testing.T) {
	l := newMemoryLog(8)
	if evs, cursor := readAll(t, l, 0); len(evs) != 0 || cursor != 0 {
		t.Fatalf("before any status: %s at %d, want nothing", names(evs), cursor)
	}
	l.appendStatus([]byte(`{"upstream":"down"}`), true)
	evs, waiting := readAll(t, l, 0)
	if got := names(evs); got != `status:{"upstream":"down"}` || evs[0].hasID {
		t.Fatalf("a new subscriber while the upstream is down reads %q", got)
	}
	if evs, _ := readAll(t, l, waiting); len(evs) != 0 {
		t.Errorf("it reads %s again", names(evs))
	}

	l.appendStatus([]byte(`{"upstream":"up"}`), false)
	evs, between := readAll(t, l, waiting)
	if got := names(evs); got != `status:{"upstream":"up"}` {
		t.Errorf("between the up status and the first document, a waiting subscriber reads %q", got)
	}
	if evs, cursor := readAll(t, l, 0); len(evs) != 0 || cursor != 0 {
		t.Errorf("between them, a new subscriber reads %s at %d, want nothing", names(evs), cursor)
	}

	l.appendDocument(doc(`1`), "", nil)
	if evs, _ := readAll(t, l, between); names(evs) != "snapshot:1" {
		t.Errorf("after the up status, it reads %q, want the snapshot", names(evs))
	}
	// In one read: the up status, then the snapshot.
	frames, _, _ := l.read(waiting, make([]frame, 0, maxFramesPerWrite))
	var got []sseEvent
	for _, f := range frames {
		got = append(got, parseFrames(t, f.bytes)...)
	}
	if names(got) != `status:{"upstream":"up"} snapshot:1` || got[1].id != l.id(3) {
		t.Errorf("a subscriber that read the down status reads %s (ids %v), want the up status and the snapshot %s", names(got), got, l.id(3))
	}
	if evs, _ := readAll(t, l, 0); names(evs) != "snapshot:1" {
		t.Errorf("a new subscriber reads %q, want the snapshot alone", names(evs))
	}
	l.appendDocument(doc(`2`), "patch", []byte(`[2]`))
	if evs, _ := readAll(t, l, l.resume(l.id(3))); names(evs) != "patch:[2]" {
		t.Errorf("resuming from the first snapshot reads %q", names(evs))
	}
}

// TestMemoryLogSubscriberBehindHistoryReadsTheLatestStatus: a subscriber
// that fell out of the history reads the snapshot, then the latest status
// when it has not read it: its idea of the upstream's state is the current
// one whatever it missed.
func TestMemoryLogSubscriberBehindHistoryReadsTheLatestStatus(t *testing.T) {
	l := newMemoryLog(2)
	l.appendDocument(doc(`1`), "", nil)
	_, live := readAll(t, l, 0)
	l.appendStatus([]byte(`{"upstream":"down"}`), true)
	_, toldDown := readAll(t, l, live)
	l.appendStatus([]byte(`{"upstream":"up"}`), false)
	_, toldUp := readAll(t, l, toldDown)
	for v := 2; v <= 4; v++ {
		l.appendDocument(doc(fmt.Sprint(v)), "patch", []byte(fmt.Sprintf("[%d]", v)))
	}
	if evs, _ := readAll(t, l, toldDown); names(evs) != `snapshot:4 status:{"upstream":"up"}` {
		t.Errorf("a subscriber told of the outage but not of its end reads %q", names(evs))
	}
	if evs, _ := readAll(t, l, toldUp); names(evs) != "snapshot:4" {
		t.Errorf("a subscriber told of both reads %q", names(evs))
	}
}

// appendDocument appends doc as the topic's poller does, for the tests that
// build a log by hand.
func (l *memoryLog) appendDocument(doc *document, event string, data []byte) {
	l.appendEvent(context.Background(), doc.data, event, data)
}

// appendStatus records a status event as the topic's poller does.
func (l *memoryLog) appendStatus(data []byte, down bool) {
	l.setStatus(context.Background(), data, down)
}
