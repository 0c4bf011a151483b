package pollsse

// An eventLog is the shared state that the subscribers of one topic read: the
// current document, the recent events as encoded frames, the ids, and the
// wake-up of subscribers when something is appended. The poller appends; each
// subscriber keeps only a cursor into the log and reads what lies after it.
//
// This is the seam between producing events and delivering them: the
// memoryLog (memorylog.go) lives in one process's memory; a log shared
// through a store by several Caddy instances implements the same methods.
// A cursor is a subscriber's place in its topic's log: what it has read.
// Only the log that made it reads it; its zero value is the place of a new
// subscriber, which reads a snapshot first.
type cursor uint64

type eventLog interface {
	// appendDocument records a new current document. event and data make the
	// event that turns the previous document into doc; an empty event means
	// there is none (the first document). A subscriber that reaches such a
	// document, or a snapshot event (whose data is doc's), reads the
	// snapshot of the current document.
	appendDocument(doc *document, event string, data []byte)
	// appendStatus records a change of the upstream's state. data is the
	// status event's data; down tells whether the upstream is now failing,
	// which subscribers that start from a snapshot are told after it, and
	// those that wait for the first document are told at once.
	appendStatus(data []byte, down bool)
	// resume returns the cursor for a subscriber that last saw the event with
	// the given id, or the zero cursor when the id is unknown, malformed or too old, in
	// which case the subscriber starts with a snapshot.
	resume(lastEventID string) cursor
	// read appends to buf the frames that a subscriber at cursor has not yet
	// received, at most cap(buf), and returns them, the subscriber's new
	// cursor and a channel that is closed when the log next changes. Cursor
	// 0 reads a snapshot of the current document, then the status event of
	// a failing upstream; while there is no document yet, it reads that
	// status event alone, and the cursor after it, from which the first
	// document is read as a snapshot after the status events before it. A
	// cursor that has fallen out of the history reads a snapshot, then the
	// latest status event if it comes after the cursor. A subscriber reads
	// every status event, or the latest, in their order among the events:
	// its idea of the upstream's state is always the current one.
	read(at cursor, buf []frame) (frames []frame, next cursor, wake <-chan struct{})
	// changed returns a channel that is closed when the log next changes.
	changed() <-chan struct{}
}
