package pollsse

import (
	"bytes"
	"strconv"
	"time"
)

// Event names of the wire protocol.
const (
	eventSnapshot = "snapshot"
	eventPatch    = "patch"
	eventMerge    = "merge"
	eventStatus   = "status"
)

// An eventKind is the type of an event, or a heartbeat, as subscribers
// receive it. Each frame carries its kind from where it is encoded, and the
// sent metrics count frames by kind, with counters for every kind.
type eventKind uint8

const (
	kindSnapshot eventKind = iota
	kindPatch
	kindMerge
	kindStatus
	kindHeartbeat
	// numEventKinds is the number of kinds.
	numEventKinds
)

// eventKindNames are the event names of the kinds (and of a heartbeat,
// which has none), as the sent metrics' type label says them.
var eventKindNames = [numEventKinds]string{
	kindSnapshot:  eventSnapshot,
	kindPatch:     eventPatch,
	kindMerge:     eventMerge,
	kindStatus:    eventStatus,
	kindHeartbeat: "heartbeat",
}

func (k eventKind) String() string { return eventKindNames[k] }

// kindOf returns the kind of the events named event. The name must be one
// of the event names of this package, and kindOf panics if it is not: only
// a name added without its kind can be another.
func kindOf(event string) eventKind {
	for k := range kindHeartbeat {
		if eventKindNames[k] == event {
			return k
		}
	}
	panic("pollsse: an event name without a kind: " + strconv.Quote(event))
}

// A frame is one event, or a heartbeat, as written to subscribers: encoded
// once and shared by all of them, and never changed.
type frame struct {
	bytes []byte
	kind  eventKind
}

// newFrame returns one event of kind as a new frame.
func newFrame(kind eventKind, id string, data []byte) frame {
	return frame{encodeEvent(kind.String(), id, data), kind}
}

// heartbeatFrame is the comment a stream sends after a quiet period.
var heartbeatFrame = frame{[]byte(":\n\n"), kindHeartbeat}

// appendEvent appends one Server-Sent Event to dst: the event and id fields
// (either may be empty) and data split into one data field per line, so that
// no CR, LF or CRLF in data can end a field early or start another. The event
// and id must not contain CR, LF or NUL; appendEvent panics if they do, as
// they come from this package and never from upstream content.
func appendEvent(dst []byte, event, id string, data []byte) []byte {
	if event != "" {
		mustBeFieldValue(event)
		dst = append(dst, "event: "...)
		dst = append(dst, event...)
		dst = append(dst, '\n')
	}
	if id != "" {
		mustBeFieldValue(id)
		dst = append(dst, "id: "...)
		dst = append(dst, id...)
		dst = append(dst, '\n')
	}
	for {
		i := bytes.IndexAny(data, "\r\n")
		if i < 0 {
			break
		}
		dst = append(dst, "data: "...)
		dst = append(dst, data[:i]...)
		dst = append(dst, '\n')
		if data[i] == '\r' && i+1 < len(data) && data[i+1] == '\n' {
			i++
		}
		data = data[i+1:]
	}
	dst = append(dst, "data: "...)
	dst = append(dst, data...)
	return append(dst, '\n', '\n')
}

// encodeEvent returns one event as a new frame.
func encodeEvent(event, id string, data []byte) []byte {
	return appendEvent(make([]byte, 0, len(data)+len(event)+len(id)+32), event, id, data)
}

// retryFrame is the first thing a stream sends: how long a browser waits
// before it reconnects.
func retryFrame(d time.Duration) []byte {
	return []byte("retry: " + strconv.FormatInt(d.Milliseconds(), 10) + "\n\n")
}

func mustBeFieldValue(s string) {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '\r' || c == '\n' || c == 0 {
			panic("pollsse: CR, LF or NUL in an SSE field value: " + strconv.Quote(s))
		}
	}
}
