package pollsse

import (
	"context"
	"errors"
	"time"
)

// An eventLog is the shared state that the subscribers of one topic read: the
// current document, the recent events as encoded frames, the ids, and the
// wake-up of subscribers when something is appended. The poller appends; each
// subscriber keeps only a cursor into the log and reads what lies after it.
//
// This is the seam between producing events and delivering them. Its write
// side (lead, current, appendEvent, setStatus, Close) may reach a store that
// lives elsewhere and fails: those methods take a context and return errors.
// Its read side (resume, read, changed) is served from this process's
// memory, so that delivering an event costs each subscriber no more than a
// look into a ring: the memoryLog (memorylog.go) is that memory alone; a log
// shared by several Caddy instances through Redis (redislog.go) keeps one as
// the mirror of the store's.
type eventLog interface {
	// lead tells whether this instance polls the topic now: term is 0
	// while another instance does, and recheck is then how long until
	// lead is worth asking again. A term other than the last one that the
	// caller saw means that the instance has just become the topic's
	// poller, and that the document it should diff against is the log's
	// current one, not one it kept.
	lead(ctx context.Context) (term uint64, recheck time.Duration)
	// current returns the snapshot data of the topic's current document,
	// nil when there is none, and whether the upstream was last recorded
	// as failing.
	current(ctx context.Context) (snapshot []byte, upstreamDown bool, err error)
	// appendEvent records a new current document, whose snapshot data is
	// snapshot. event and data make the event that turns the previous
	// document into it; an empty event means there is none (the first
	// document). A subscriber that reaches such a document, or a snapshot
	// event (whose data is snapshot), reads the snapshot of the current
	// document. errNotPolling means that the caller is no longer the
	// topic's poller (lead), and nothing was recorded.
	appendEvent(ctx context.Context, snapshot []byte, event string, data []byte) error
	// setStatus records a change of the upstream's state, as appendEvent
	// records a document. data is the status event's data; down tells
	// whether the upstream is now failing, which subscribers that start
	// from a snapshot are told after it, and those that wait for the first
	// document are told at once.
	setStatus(ctx context.Context, data []byte, down bool) error
	// refused records for the instances that do not poll the topic
	// whether the upstream's latest answer refuses the topic's
	// credentials: status is that 401 or 403, else 0. It is no event: a
	// stream that waits for its first snapshot ends instead of reading one,
	// and a new subscriber gets the status as its response, on every
	// instance. errNotPolling means that the caller is no longer the
	// topic's poller.
	refused(ctx context.Context, status int) error
	// resume returns the cursor for a subscriber that last saw the event with
	// the given id, or the zero cursor when the id is unknown, malformed or too old, in
	// which case the subscriber starts with a snapshot.
	resume(lastEventID string) cursor
	// read appends to buf the frames that a subscriber at cursor has not yet
	// received, at most cap(buf), and returns them, the subscriber's new
	// cursor and a channel that is closed when the log next changes. Cursor
	// 0 reads a snapshot of the current document, then the status event of
	// a failing upstream, then that of a store that is down; while there is no document yet, it reads that
	// status event alone, and the cursor after it, from which the first
	// document is read as a snapshot after the status events before it. A
	// cursor that has fallen out of the history reads a snapshot, then the
	// latest status event if it comes after the cursor; the snapshot is
	// left out when the cursor is past the current document (only status
	// events came since), as it would repeat an id. A subscriber reads
	// every status event, or the latest, in their order among the events:
	// its idea of the upstream's state is always the current one.
	read(at cursor, buf []frame) (frames []frame, next cursor, wake <-chan struct{})
	// changed returns a channel that is closed when the log next changes.
	changed() <-chan struct{}
	// Close ends the topic's use of its store when the topic stops: its
	// poller gives up polling it, and nothing is appended any more. What
	// the log holds stays readable.
	Close() error
}

// A cursor is a subscriber's place in its topic's log: what it has read.
// Only the log that made it reads it; its zero value is the place of a new
// subscriber, which reads a snapshot first.
type cursor uint64

// errNotPolling refuses a write to a log by an instance that is not, or no
// longer, the topic's poller.
var errNotPolling = errors.New("this instance no longer polls the topic")
