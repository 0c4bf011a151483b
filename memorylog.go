package pollsse

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// An entry is one event in a localLog.
type entry struct {
	// frame is the event as written to subscribers, shared by all of them;
	// without bytes for a document that has no patch from the one before,
	// or whose change is a whole snapshot: a subscriber that reaches it
	// reads the snapshot of the current document, which says at least as
	// much.
	frame frame
	// id is the id of a document's entry, "" for a status event.
	id string
}

// A snapshotFrame is the snapshot event of one version of the document,
// encoded the first time a subscriber needs it and then shared.
type snapshotFrame struct {
	once sync.Once
	data []byte
	id   string
	// pos is the position of the document's entry in its log.
	pos uint64
	// bytes is the frame's, whose kind is kindSnapshot: a frame's kind
	// would grow the allocation of every version.
	bytes []byte
}

func (s *snapshotFrame) get() frame {
	s.once.Do(func() { s.bytes = newFrame(kindSnapshot, s.id, s.data).bytes })
	return frame{s.bytes, kindSnapshot}
}

// A localLog is the read side of an eventLog, in this process's memory: a
// ring of the recent events as encoded frames, the snapshot of the current
// document, and the wake-up of the subscribers. Its positions count its
// entries from 1, and a cursor is the position of the last entry read; the
// ids of its documents are given by whoever appends them.
type localLog struct {
	mu sync.RWMutex
	// ring holds the last history entries; the entry at position p is
	// ring[(p-1)%history]. It grows as entries come, so that a large
	// history costs only the events it holds.
	ring    []entry
	history uint64
	// head is the position of the newest entry, 0 while there is none.
	head uint64
	// snap is the snapshot of the current document, nil while there is none.
	snap *snapshotFrame
	// down is the status event of a failing upstream, sent after a
	// snapshot; without bytes while the upstream is not failing.
	down frame
	// notice is the status event of a store that is down, sent after a
	// snapshot (and down); without bytes while the store answers.
	notice    frame
	noticePos uint64
	// status is the latest status event, at position statusPos (0 while
	// there is none).
	status    frame
	statusPos uint64
	wake      chan struct{}
	// before is the id of the entry just before the oldest held, when it
	// is a document: a subscriber that last saw it has every later entry
	// to read.
	before string
}

func newLocalLog(history int) *localLog {
	return &localLog{history: uint64(max(history, 1)), wake: make(chan struct{})}
}

// push appends one entry and wakes the subscribers. l.mu must be held.
func (l *localLog) push(e entry) uint64 {
	l.head++
	if uint64(len(l.ring)) < l.history {
		l.ring = append(l.ring, e)
	} else {
		i := (l.head - 1) % l.history
		l.before = l.ring[i].id
		l.ring[i] = e
	}
	close(l.wake)
	l.wake = make(chan struct{})
	return l.head
}

// pushDocument appends a document with the given id, as eventLog's
// appendEvent says. l.mu must be held.
func (l *localLog) pushDocument(id string, snapshot []byte, event string, data []byte) {
	l.snap = &snapshotFrame{data: snapshot, id: id, pos: l.head + 1}
	// A change sent as a whole snapshot is not kept in the history: the
	// subscribers that reach its entry read the current snapshot, which is
	// its frame while it is current, encoded once when first read.
	var f frame
	if event != "" && event != eventSnapshot {
		f = newFrame(kindOf(event), id, data)
	}
	l.push(entry{frame: f, id: id})
}

// pushStatus appends a status event, as eventLog's setStatus says. l.mu
// must be held.
func (l *localLog) pushStatus(data []byte, down bool) {
	f := newFrame(kindStatus, "", data)
	l.down = frame{}
	if down {
		l.down = f
	}
	l.status, l.statusPos = f, l.push(entry{frame: f})
}

func (l *localLog) changed() <-chan struct{} {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.wake
}

// entry returns the entry at position p, which must be held. l.mu must be
// held.
func (l *localLog) entry(p uint64) entry { return l.ring[(p-1)%l.history] }

// oldest is the position of the oldest entry still held. l.mu must be held.
func (l *localLog) oldest() uint64 {
	if l.head > l.history {
		return l.head - l.history + 1
	}
	return 1
}

// maxIDLength bounds the Last-Event-ID values worth parsing; longer ones are
// never ours.
const maxIDLength = 64

// find returns the cursor after the document whose id is id, when every
// entry after it is held and none of them is a document without a patch,
// and 0 otherwise. It looks from the newest entry back, so that the
// resume of a subscriber that is nearly up to date costs little. l.mu must
// be held.
func (l *localLog) find(id string) cursor {
	if id == "" {
		return 0
	}
	for p := l.head; p >= l.oldest() && p > 0; p-- {
		e := l.entry(p)
		if e.id == id {
			return cursor(p)
		}
		if e.frame.bytes == nil {
			return 0
		}
	}
	if l.before == id {
		return cursor(l.oldest() - 1)
	}
	return 0
}

// read reads the log as eventLog says; a cursor is the position of the last
// entry read, 0 before any.
func (l *localLog) read(at cursor, buf []frame) ([]frame, cursor, <-chan struct{}) {
	pos, buf, wake := l.readAt(uint64(at), buf)
	return buf, cursor(pos), wake
}

// readAt is read at the position cursor, which it returns moved.
func (l *localLog) readAt(cursor uint64, buf []frame) (uint64, []frame, <-chan struct{}) {
	l.mu.RLock()
	wake := l.wake
	if cursor == l.head {
		l.mu.RUnlock()
		return cursor, buf, wake
	}
	from, start := cursor, len(buf)
	// after is the status event that follows the snapshot of a subscriber
	// that starts from one.
	var after frame
	behind := false
	switch {
	case cursor == 0:
		// A new subscriber: the upstream's state if it is failing.
		after = l.down
	case cursor+1 < l.oldest():
		// A subscriber that fell behind the history: the latest status
		// event, unless it has read it, for those that it missed.
		behind = true
		if l.statusPos > cursor {
			after = l.status
		}
	default:
		restart := false
		for cursor < l.head && len(buf) < cap(buf) {
			e := l.entry(cursor + 1)
			if e.frame.bytes == nil && l.snap == nil {
				// A document that is gone (the redis store's
				// mirror, once Redis lost the topic): what came
				// before it is read, and the subscriber waits
				// there for the next document, which it reads
				// as a snapshot.
				break
			}
			if e.frame.bytes == nil {
				// A document without a patch: the snapshot of the
				// current document says it and everything after it,
				// followed by the upstream's state if it is failing.
				// Of the events before it, the status events are
				// kept, which the snapshot does not say.
				buf = buf[:start]
				for p := from + 1; p <= cursor; p++ {
					if e := l.entry(p); e.frame.kind == kindStatus {
						buf = append(buf, e.frame)
					}
				}
				after, restart = l.down, true
				break
			}
			buf = append(buf, e.frame)
			cursor++
		}
		if !restart {
			l.mu.RUnlock()
			return cursor, buf, wake
		}
	}
	snap, head := l.snap, l.head
	// A subscriber that starts from a snapshot is told that the store is
	// down, unless it has read that already.
	var notice frame
	if l.notice.bytes != nil && (from == 0 || l.noticePos > from) {
		notice = l.notice
	}
	l.mu.RUnlock()
	if snap == nil {
		// No document yet: the upstream's state alone, while it is
		// failing, and the subscriber reads the first document from
		// there.
		if after.bytes == nil {
			return from, buf, wake
		}
		return head, append(buf, after), wake
	}
	// A subscriber that fell behind while only status events came after
	// its document has that snapshot already: sending it again would
	// repeat its id in the stream, and the latest status says the rest.
	if !behind || snap.pos > from {
		buf = append(buf, snap.get())
	}
	if after.bytes != nil {
		buf = append(buf, after)
	}
	if notice.bytes != nil && !sameFrame(notice, after) {
		buf = append(buf, notice)
	}
	return head, buf, wake
}

// sameFrame tells whether a and b are the same shared frame.
func sameFrame(a, b frame) bool {
	return len(a.bytes) > 0 && len(b.bytes) > 0 && &a.bytes[0] == &b.bytes[0]
}

// currentSnapshot returns the snapshot data of the current document, nil
// when there is none, and whether the upstream is failing.
func (l *localLog) currentSnapshot() ([]byte, bool) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.snap == nil {
		return nil, l.down.bytes != nil
	}
	return l.snap.data, l.down.bytes != nil
}

// epochs makes every memoryLog's epoch distinct within the process even when
// two are created within one tick of the clock.
var epochs atomic.Uint64

// memoryLog is an eventLog held in this process's memory alone: the store
// `memory`. Its ids are "<epoch>-<position>": the epoch is taken from the
// clock when the log is created, so that an id issued before a restart of
// Caddy (or before the topic was stopped for being idle) is never taken for
// a newer event. Its instance always polls its topics.
type memoryLog struct {
	*localLog
	epoch string
}

func newMemoryLog(history int) *memoryLog {
	now := uint64(time.Now().UnixNano()) + epochs.Add(1)
	return &memoryLog{localLog: newLocalLog(history), epoch: strconv.FormatUint(now, 36)}
}

func (l *memoryLog) id(pos uint64) string {
	return l.epoch + "-" + strconv.FormatUint(pos, 10)
}

// lead always says that this instance polls: a memory log has no other.
func (l *memoryLog) lead(context.Context) (uint64, time.Duration) { return 1, 0 }

func (l *memoryLog) current(context.Context) ([]byte, bool, error) {
	snap, down := l.currentSnapshot()
	return snap, down, nil
}

func (l *memoryLog) appendEvent(_ context.Context, snapshot []byte, event string, data []byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.pushDocument(l.id(l.head+1), snapshot, event, data)
	return nil
}

func (l *memoryLog) setStatus(_ context.Context, data []byte, down bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.pushStatus(data, down)
	return nil
}

// refused has no other instance to tell.
func (l *memoryLog) refused(context.Context, int) error { return nil }

func (l *memoryLog) resume(lastEventID string) cursor {
	if len(lastEventID) > maxIDLength || !strings.HasPrefix(lastEventID, l.epoch+"-") {
		return 0
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.find(lastEventID)
}

func (l *memoryLog) Close() error { return nil }

var _ eventLog = (*memoryLog)(nil)
