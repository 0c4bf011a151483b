package pollsse

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// A sink is where the frames of one subscriber go: the one frame writer of
// every path, of which each kind of connection has an implementation.
type sink interface {
	// frame returns f framed for the stream (an HTTP/1.1 chunk, or f as
	// it is), framed once per sweeper for all the streams it writes to.
	frame(w *sweeper, f []byte) []byte
	// offer writes b, a framed frame, without waiting, and returns how
	// much of it went: all of it, or less (a sink that writes a frame
	// whole or not at all: none) when the client's socket has no room for
	// it now. A sink that cannot write without waiting never takes part
	// in a group, and its offer is never called.
	offer(w *sweeper, b []byte) (int, error)
	// push writes with waits while the client takes bytes: rest, which is
	// framed already, or else the frame f. It fails when no byte of it
	// has moved for the write timeout.
	push(w *sweeper, rest, f []byte) error
	// settle is called when the subscriber has caught up.
	settle()
	// close ends the stream's connection.
	close()
}

// A socketSink is a plain HTTP/1.1 connection taken over from net/http,
// whose socket is written directly: each frame is one chunk, written
// without waiting, of which the socket may take part.
type socketSink struct {
	conn    net.Conn
	rc      syscall.RawConn
	timeout time.Duration
}

func (k *socketSink) frame(w *sweeper, f []byte) []byte { return w.chunk(f) }

func (k *socketSink) offer(w *sweeper, b []byte) (int, error) {
	n, err := w.write(k.rc, b)
	if errors.Is(err, syscall.EAGAIN) {
		err = nil
	}
	return n, err
}

// push writes one frame as a chunk: the chunk's size line, the frame shared
// with the other streams, and CRLF, in one writev.
func (k *socketSink) push(w *sweeper, rest, f []byte) error {
	if rest != nil {
		return writeMoving(k.conn, net.Buffers{rest}, k.timeout)
	}
	return writeMoving(k.conn, net.Buffers{appendChunkSize(w.size[:0], len(f)), f, crlf}, k.timeout)
}

func (k *socketSink) settle() { k.conn.SetWriteDeadline(time.Time{}) }
func (k *socketSink) close()  { k.conn.Close() }

// write writes b to the socket of rc without waiting for the socket to take
// it, and returns how much it took.
func (w *sweeper) write(rc syscall.RawConn, b []byte) (int, error) {
	w.b, w.n, w.err = b, 0, nil
	err := rc.Write(w.writeFn)
	w.b = nil
	if err != nil {
		return 0, err
	}
	return max(w.n, 0), w.err
}

// A recordSink is an HTTP/1.1 connection taken over from net/http whose
// writes must each go whole: a TLS connection, whose records a part of would
// break it, or a connection that Caddy counts the bytes of for its access
// log. It writes a frame only when the socket beneath has room for all of
// it (socketRoom), so that the write does not wait.
type recordSink struct {
	// conn is what frames are written to; raw is the socket beneath it,
	// which close closes (a TLS connection's Close would first write an
	// alert, which a client that reads nothing would make it wait for).
	conn    net.Conn
	raw     net.Conn
	rc      syscall.RawConn
	timeout time.Duration
	// deadline is raw's write deadline while frames are written: in case
	// the socket takes less than socketRoom said, a write fails rather
	// than hold up the group. It is kept at least half a timeout ahead.
	deadline time.Time
	// room and queued are the results of roomFn.
	room, queued int
	roomErr      error
	roomFn       func(fd uintptr)
}

func newRecordSink(conn, raw net.Conn, rc syscall.RawConn, timeout time.Duration) *recordSink {
	k := &recordSink{conn: conn, raw: raw, rc: rc, timeout: timeout}
	k.roomFn = func(fd uintptr) { k.room, k.queued, k.roomErr = socketRoom(fd) }
	return k
}

// maxRecord is the most of a frame that a recordSink writes at once: a
// TLS record's plaintext.
const maxRecord = 16 << 10

// roomFor is the room in a socket's send buffer that a write of n bytes
// needs: the kernel counts the buffers that hold them, not the bytes alone.
func roomFor(n int) int { return n + n/2 + 2048 }

func (k *recordSink) frame(w *sweeper, f []byte) []byte { return w.chunk(f) }

// measure reads the socket's room and the bytes it holds.
func (k *recordSink) measure() error {
	if err := k.rc.Control(k.roomFn); err != nil {
		return err
	}
	return k.roomErr
}

func (k *recordSink) offer(w *sweeper, b []byte) (int, error) {
	if err := k.measure(); err != nil {
		return 0, err
	}
	if k.room < roomFor(len(b)) || len(b) > maxRecord {
		return 0, nil
	}
	return k.writeNow(b)
}

// writeNow writes b, for which the socket has room.
func (k *recordSink) writeNow(b []byte) (int, error) {
	if k.timeout > 0 {
		if now := time.Now(); k.deadline.Sub(now) < k.timeout/2 {
			k.deadline = now.Add(k.timeout)
			k.raw.SetWriteDeadline(k.deadline)
		}
	}
	return k.conn.Write(b)
}

func (k *recordSink) push(w *sweeper, rest, f []byte) error {
	if rest != nil {
		return k.pushParts(w, rest)
	}
	return k.pushParts(w, appendChunkSize(w.size[:0], len(f)), f, crlf)
}

// pushParts writes parts, one after the other, in writes of at most
// maxRecord bytes: small parts are gathered into one write, large ones
// written in place.
func (k *recordSink) pushParts(w *sweeper, parts ...[]byte) error {
	for len(parts) > 0 {
		if p := parts[0]; len(p) >= maxRecord {
			if err := k.pushWhole(p[:maxRecord]); err != nil {
				return err
			}
			parts[0] = p[maxRecord:]
			continue
		}
		if w.piece == nil {
			w.piece = make([]byte, 0, maxRecord)
		}
		buf := w.piece[:0]
		for len(parts) > 0 && len(buf) < maxRecord {
			take := min(len(parts[0]), maxRecord-len(buf))
			buf = append(buf, parts[0][:take]...)
			if parts[0] = parts[0][take:]; len(parts[0]) == 0 {
				parts = parts[1:]
			}
		}
		if err := k.pushWhole(buf); err != nil {
			return err
		}
	}
	return nil
}

// errNoProgress ends a stream whose client took no byte for the write
// timeout.
var errNoProgress = fmt.Errorf("the client took nothing: %w", os.ErrDeadlineExceeded)

// pushWhole writes b once the socket has room for it, and fails when no
// byte has left the socket's buffer for the write timeout. It looks again
// after a wait that doubles from a millisecond to maxRoomWait.
func (k *recordSink) pushWhole(b []byte) error {
	moved, queued := time.Now(), -1
	wait := time.Millisecond
	for {
		if err := k.measure(); err != nil {
			return err
		}
		if k.room >= roomFor(len(b)) {
			_, err := k.writeNow(b)
			return err
		}
		now := time.Now()
		if k.queued < queued {
			moved, wait = now, time.Millisecond
		}
		queued = k.queued
		if k.timeout > 0 && now.Sub(moved) >= k.timeout {
			return errNoProgress
		}
		time.Sleep(wait)
		wait = min(2*wait, maxRoomWait)
	}
}

// maxRoomWait is the longest a recordSink waits before it looks again
// whether a socket has room.
const maxRoomWait = 50 * time.Millisecond

func (k *recordSink) settle() {}
func (k *recordSink) close()  { k.raw.Close() }

// A connSink is a connection taken over from net/http that offers no access
// to its socket (a listener wrapper's), written with writes that wait, on
// the goroutine of its stream.
type connSink struct {
	conn    net.Conn
	timeout time.Duration
	buf     []byte
}

// maxKeptChunkBuffer is the largest buffer a connSink keeps between writes:
// one that a snapshot grew is dropped, or each stream would hold a copy of
// the document for its life.
const maxKeptChunkBuffer = 16 << 10

func (k *connSink) frame(w *sweeper, f []byte) []byte { return w.chunk(f) }

func (k *connSink) offer(w *sweeper, b []byte) (int, error) { return 0, nil }

func (k *connSink) push(w *sweeper, rest, f []byte) error {
	if rest == nil {
		k.buf = appendChunk(k.buf[:0], f)
		rest = k.buf
	}
	err := writeMoving(k.conn, net.Buffers{rest}, k.timeout)
	if cap(k.buf) > maxKeptChunkBuffer {
		k.buf = nil
	}
	return err
}

func (k *connSink) settle() {}
func (k *connSink) close()  { k.conn.Close() }

// A responseSink writes frames to a response through net/http (HTTP/2,
// HTTP/3, a response that `encode` compresses, and every stream on the
// systems that cannot write a socket without waiting), on the goroutine of
// its handler, and flushes after each, so that no proxy or compressing
// writer between here and the browser holds an event back.
//
// A write through net/http waits while the client takes nothing (on
// HTTP/2, while the stream's flow-control window is shut). Rather than
// arm a deadline for every write (on HTTP/2 a timer and two messages to
// the connection's goroutine each), a sink says when its write began, and
// its handler's writeWatch ends a write that has taken longer than the
// write timeout with a deadline in the past.
type responseSink struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	// since is when the piece being written began, in Unix nanoseconds,
	// 0 between writes; expired is set when the writeWatch ended it.
	since   atomic.Int64
	expired atomic.Bool
}

func newResponseSink(w http.ResponseWriter, timeout time.Duration) *responseSink {
	return &responseSink{w: w, rc: http.NewResponseController(w), timeout: timeout}
}

// maxWritePiece is the most of a frame that a responseSink writes and
// flushes at once, each piece within the write timeout. Ending a write
// through net/http breaks the response (an HTTP/2 stream is reset), so a
// large frame is written in pieces, each of which the client has the write
// timeout to take: one that takes less than this in the write timeout is
// dropped, one that takes more gets a frame of any size.
const maxWritePiece = 32 << 10

func (k *responseSink) frame(w *sweeper, f []byte) []byte { return f }

func (k *responseSink) offer(w *sweeper, b []byte) (int, error) { return 0, nil }

// push writes one frame and flushes it, in pieces of at most
// maxWritePiece. A client that does not take a piece within the write
// timeout gets an error, and its stream ends.
func (k *responseSink) push(w *sweeper, rest, f []byte) error {
	if rest != nil {
		f = rest
	}
	defer k.since.Store(0)
	for len(f) > 0 {
		n := min(len(f), maxWritePiece)
		k.since.Store(time.Now().UnixNano())
		if err := k.writePiece(f[:n]); err != nil {
			if k.expired.Load() {
				return fmt.Errorf("%w: %w", errNoProgress, err)
			}
			return err
		}
		f = f[n:]
	}
	return nil
}

// writePiece writes and flushes piece.
func (k *responseSink) writePiece(piece []byte) error {
	if _, err := k.w.Write(piece); err != nil {
		return err
	}
	return k.rc.Flush()
}

func (k *responseSink) settle() {}
func (k *responseSink) close()  {}

// A writeWatch ends the writes of a handler's responseSinks that take
// longer than the write timeout. It looks a few times per timeout
// (writeChecks), on a goroutine that runs while any sink is watched.
type writeWatch struct {
	mu      sync.Mutex
	sinks   map[*responseSink]struct{}
	running bool
}

// add watches k's writes until remove.
func (ww *writeWatch) add(c *streamConfig, k *responseSink) {
	if k.timeout <= 0 {
		return
	}
	ww.mu.Lock()
	defer ww.mu.Unlock()
	if ww.sinks == nil {
		ww.sinks = make(map[*responseSink]struct{})
	}
	ww.sinks[k] = struct{}{}
	if !ww.running {
		ww.running = true
		go ww.run(c.done, k.timeout)
	}
}

func (ww *writeWatch) remove(k *responseSink) {
	ww.mu.Lock()
	delete(ww.sinks, k)
	ww.mu.Unlock()
}

func (ww *writeWatch) run(done <-chan struct{}, timeout time.Duration) {
	ticker := time.NewTicker(max(timeout/writeChecks, time.Millisecond))
	defer ticker.Stop()
	var late []*responseSink
	for {
		select {
		case <-done:
			ww.mu.Lock()
			ww.running = false
			ww.mu.Unlock()
			return
		case now := <-ticker.C:
			ww.mu.Lock()
			if len(ww.sinks) == 0 {
				ww.running = false
				ww.mu.Unlock()
				return
			}
			limit := now.Add(-timeout).UnixNano()
			for k := range ww.sinks {
				if since := k.since.Load(); since != 0 && since <= limit {
					late = append(late, k)
				}
			}
			ww.mu.Unlock()
			for _, k := range late {
				k.expired.Store(true)
				k.rc.SetWriteDeadline(time.Unix(1, 0))
			}
			clear(late)
			late = late[:0]
		}
	}
}
