package pollsse

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"
)

// Event names of the wire protocol.
const (
	eventSnapshot = "snapshot"
	eventPatch    = "patch"
	eventMerge    = "merge"
	eventStatus   = "status"
)

// heartbeatFrame is the comment a stream sends after a quiet period.
var heartbeatFrame = []byte(":\n\n")

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

// An eventWriter writes frames to one response and flushes after each, so
// that no proxy or compressing writer between here and the browser holds an
// event back.
type eventWriter struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	// last is when the last frame was written: heartbeats fill silences.
	last time.Time
}

func newEventWriter(w http.ResponseWriter, timeout time.Duration) *eventWriter {
	return &eventWriter{w: w, rc: http.NewResponseController(w), timeout: timeout}
}

// maxWritePiece is the most of a frame that an eventWriter writes and
// flushes with one deadline. A write through net/http that reaches its
// deadline breaks the response (an HTTP/2 stream is reset), so a large
// frame is written in pieces, each of which the client has the write
// timeout to take: one that takes less than this in the write timeout is
// dropped, one that takes more gets a frame of any size.
const maxWritePiece = 32 << 10

// write writes one frame and flushes it, in pieces of at most
// maxWritePiece. A client that does not take a piece within the write
// timeout gets an error, and its stream ends.
func (ew *eventWriter) write(frame []byte) error {
	for len(frame) > 0 {
		n := min(len(frame), maxWritePiece)
		if err := ew.writePiece(frame[:n]); err != nil {
			return err
		}
		frame = frame[n:]
	}
	// On HTTP/2 a deadline is a timer that resets the stream when it
	// fires, with or without a write: it must not outlive the write.
	if ew.timeout > 0 {
		if err := ew.rc.SetWriteDeadline(time.Time{}); err != nil && !errors.Is(err, http.ErrNotSupported) {
			return err
		}
	}
	ew.last = time.Now()
	return nil
}

// writePiece writes and flushes piece within the write timeout.
func (ew *eventWriter) writePiece(piece []byte) error {
	if ew.timeout > 0 {
		err := ew.rc.SetWriteDeadline(time.Now().Add(ew.timeout))
		if err != nil && !errors.Is(err, http.ErrNotSupported) {
			return err
		}
	}
	if _, err := ew.w.Write(piece); err != nil {
		return err
	}
	return ew.rc.Flush()
}

func (ew *eventWriter) lastWrite() time.Time { return ew.last }

// A heartbeatTicker wakes every stream of a handler a few times per
// heartbeat period, so that each can send a heartbeat when it has been
// silent long enough, without a timer per stream. One channel is closed and
// replaced per tick.
type heartbeatTicker struct {
	// ch is read by every stream at every wake-up: an atomic load, not a
	// lock that thousands of streams woken together would queue on.
	ch atomic.Pointer[chan struct{}]
}

// heartbeatTicks is how many ticks a heartbeat period has: a heartbeat goes
// out between one and 1+1/heartbeatTicks periods after the last write.
const heartbeatTicks = 4

func newHeartbeatTicker(ctx context.Context, heartbeat time.Duration) *heartbeatTicker {
	t := new(heartbeatTicker)
	ch := make(chan struct{})
	t.ch.Store(&ch)
	go func() {
		ticker := time.NewTicker(max(heartbeat/heartbeatTicks, time.Millisecond))
		defer ticker.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-ticker.C:
				ch := make(chan struct{})
				close(*t.ch.Swap(&ch))
			}
		}
	}()
	return t
}

// tick returns a channel that is closed at the next tick.
func (t *heartbeatTicker) tick() <-chan struct{} {
	return *t.ch.Load()
}
