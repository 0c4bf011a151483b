package pollsse

import (
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// An entry is one event in a memoryLog.
type entry struct {
	// frame is the event as written to subscribers, shared by all of them;
	// without bytes for a document that has no patch from the one before,
	// or whose change is a whole snapshot: a subscriber that reaches it
	// reads the snapshot of the current document, which says at least as
	// much.
	frame frame
}

// A snapshotFrame is the snapshot event of one version of the document,
// encoded the first time a subscriber needs it and then shared.
type snapshotFrame struct {
	once sync.Once
	doc  *document
	id   string
	// bytes is the frame's, whose kind is kindSnapshot: a frame's kind
	// would grow the allocation of every version.
	bytes []byte
}

func (s *snapshotFrame) get() frame {
	s.once.Do(func() { s.bytes = newFrame(kindSnapshot, s.id, s.doc.data).bytes })
	return frame{s.bytes, kindSnapshot}
}

// epochs makes every memoryLog's epoch distinct within the process even when
// two are created within one tick of the clock.
var epochs atomic.Uint64

// memoryLog is an eventLog held in this process's memory. Its ids are
// "<epoch>-<position>": the epoch is taken from the clock when the log is
// created, so that an id issued before a restart of Caddy (or before the
// topic was stopped for being idle) is never taken for a newer event.
type memoryLog struct {
	epoch string

	mu sync.RWMutex
	// ring holds the last history entries; the entry at position p is
	// ring[(p-1)%history]. Positions start at 1. It grows as entries come,
	// so that a large history costs only the events it holds.
	ring    []entry
	history uint64
	// head is the position of the newest entry, 0 while there is none.
	head uint64
	// snap is the snapshot of the current document, nil while there is none.
	snap *snapshotFrame
	// down is the status event of a failing upstream, sent after a
	// snapshot; without bytes while the upstream is not failing.
	down frame
	// status is the latest status event, at position statusPos (0 while
	// there is none).
	status    frame
	statusPos uint64
	wake      chan struct{}
}

func newMemoryLog(history int) *memoryLog {
	now := uint64(time.Now().UnixNano()) + epochs.Add(1)
	return &memoryLog{
		epoch:   strconv.FormatUint(now, 36),
		history: uint64(max(history, 1)),
		wake:    make(chan struct{}),
	}
}

func (l *memoryLog) id(pos uint64) string {
	return l.epoch + "-" + strconv.FormatUint(pos, 10)
}

// push appends one entry and wakes the subscribers. l.mu must be held.
func (l *memoryLog) push(e entry) uint64 {
	l.head++
	if uint64(len(l.ring)) < l.history {
		l.ring = append(l.ring, e)
	} else {
		l.ring[(l.head-1)%l.history] = e
	}
	close(l.wake)
	l.wake = make(chan struct{})
	return l.head
}

func (l *memoryLog) appendDocument(doc *document, event string, data []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	pos := l.head + 1
	l.snap = &snapshotFrame{doc: doc, id: l.id(pos)}
	// A change sent as a whole snapshot is not kept in the history: the
	// subscribers that reach its entry read the current snapshot, which is
	// its frame while it is current, encoded once when first read.
	var f frame
	if event != "" && event != eventSnapshot {
		f = newFrame(kindOf(event), l.id(pos), data)
	}
	l.push(entry{frame: f})
}

func (l *memoryLog) appendStatus(data []byte, down bool) {
	f := newFrame(kindStatus, "", data)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.down = frame{}
	if down {
		l.down = f
	}
	l.status, l.statusPos = f, l.push(entry{frame: f})
}

func (l *memoryLog) changed() <-chan struct{} {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.wake
}

// entry returns the entry at position p, which must be held. l.mu must be
// held.
func (l *memoryLog) entry(p uint64) entry { return l.ring[(p-1)%l.history] }

// oldest is the position of the oldest entry still held. l.mu must be held.
func (l *memoryLog) oldest() uint64 {
	if l.head > l.history {
		return l.head - l.history + 1
	}
	return 1
}

// maxIDLength bounds the Last-Event-ID values worth parsing; longer ones are
// never ours.
const maxIDLength = 64

func (l *memoryLog) resume(lastEventID string) cursor {
	if len(lastEventID) > maxIDLength {
		return 0
	}
	epoch, p, ok := strings.Cut(lastEventID, "-")
	if !ok || epoch != l.epoch {
		return 0
	}
	pos, err := strconv.ParseUint(p, 10, 64)
	if err != nil || pos == 0 || strconv.FormatUint(pos, 10) != p {
		return 0
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	// Every entry after pos must still be held, and none of them may be a
	// document without a patch, or the subscriber needs a snapshot.
	if pos > l.head || pos+1 < l.oldest() {
		return 0
	}
	for q := pos + 1; q <= l.head; q++ {
		if l.entry(q).frame.bytes == nil {
			return 0
		}
	}
	return cursor(pos)
}

// read reads the log as eventLog says; a cursor is the position of the last
// entry read, 0 before any.
func (l *memoryLog) read(at cursor, buf []frame) ([]frame, cursor, <-chan struct{}) {
	pos, buf, wake := l.readAt(uint64(at), buf)
	return buf, cursor(pos), wake
}

// readAt is read at the position cursor, which it returns moved.
func (l *memoryLog) readAt(cursor uint64, buf []frame) (uint64, []frame, <-chan struct{}) {
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
	switch {
	case cursor == 0:
		// A new subscriber: the upstream's state if it is failing.
		after = l.down
	case cursor+1 < l.oldest():
		// A subscriber that fell behind the history: the latest status
		// event, unless it has read it, for those that it missed.
		if l.statusPos > cursor {
			after = l.status
		}
	default:
		restart := false
		for cursor < l.head && len(buf) < cap(buf) {
			e := l.entry(cursor + 1)
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
	buf = append(buf, snap.get())
	if after.bytes != nil {
		buf = append(buf, after)
	}
	return head, buf, wake
}

var _ eventLog = (*memoryLog)(nil)
