package pollsse

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// A streamConfig is what the streams of one handler need of it: its
// settings for streams, and how they end. It is made when the handler is
// provisioned and given to the streams on goroutines of their own and to
// the detached ones (fanout.go), so that neither reaches into the Handler.
type streamConfig struct {
	heartbeat    time.Duration
	writeTimeout time.Duration
	// ticker wakes the streams to send their heartbeats.
	ticker *heartbeatTicker
	// done is closed when the configuration is unloaded or the server
	// begins to shut down: Caddy cancels the contexts of open requests on
	// neither.
	done <-chan struct{}
	// unsubscribe ends the subscription of a stream that ends
	// (hub.unsubscribe).
	unsubscribe func(*topic)
	logger      *zap.Logger
}

// ended tells whether done is closed.
func (c *streamConfig) ended() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// A frameWriter writes whole frames to one stream, each in one write that it
// flushes: an eventWriter, or a hijackedWriter (takeover.go).
type frameWriter interface {
	write(frame []byte) error
	// lastWrite is when the last frame was written.
	lastWrite() time.Time
}

// maxFramesPerRead bounds the frames a subscriber takes from the log at once.
const maxFramesPerRead = 64

// stream writes the events of t's log to one subscriber from cursor on, and
// heartbeats in the silences, until the subscriber or the server goes, or the
// upstream refuses t's credentials before the subscriber's first snapshot.
// It is the only goroutine that writes to the response. A subscriber that
// falls behind only delays itself: when it has missed more than the history
// holds, its next read is a fresh snapshot; when it takes nothing of a write
// for the write timeout, the stream ends, and the browser reconnects and
// resumes by id.
func (c *streamConfig) stream(ctx context.Context, ew frameWriter, t *topic, at cursor) {
	buf := make([]frame, 0, maxFramesPerRead)
	for {
		refused := t.refusedChan()
		frames, next, wake := t.log.read(at, buf[:0])
		for _, f := range frames {
			if err := ew.write(f.bytes); err != nil {
				metrics.countWriteError(err)
				return
			}
			metrics.countSent(f)
		}
		at = next
		if len(frames) > 0 {
			continue
		}
		if t.refusedBeforeSnapshot() {
			return
		}
		select {
		case <-wake:
		case <-refused:
		case <-c.ticker.tick():
			if time.Since(ew.lastWrite()) >= c.heartbeat {
				if err := ew.write(heartbeatFrame.bytes); err != nil {
					metrics.countWriteError(err)
					return
				}
				metrics.countSent(heartbeatFrame)
			}
		case <-ctx.Done():
			return
		case <-c.done:
			return
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
