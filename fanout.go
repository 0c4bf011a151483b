package pollsse

import (
	"errors"
	"net"
	"net/http"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// Fan-out of HTTP/1.1 streams without a goroutine each.
//
// A stream served the usual way holds its connection's goroutine (whose
// stack has grown through Caddy's handler chain), net/http's background
// reader goroutine and about 10 KB of net/http buffers for as long as it is
// open: about 40 KB per idle subscriber. For a plain HTTP/1.1 stream (no
// TLS, no Content-Encoding), once the headers and the retry field are sent
// through net/http, the handler takes the connection over (Hijack) and
// returns, and from then on the stream is a connStream: a cursor, the
// connection, and one small goroutine blocked in Read that notices the
// client leaving. About 5 KB per idle subscriber.
//
// The streams of one topic and handler form a connGroup, whose goroutine
// waits for the log to change and then writes to each stream what lies after
// its cursor, each event in one non-blocking write of one HTTP chunk (the
// response is chunked, as net/http started it). Publishing stays O(1) on the
// poller's goroutine: it only wakes the groups. A stream whose socket does
// not take a whole event at once (its client reads slowly or not at all) is
// handed to a goroutine of its own that finishes the write with blocking
// writes (writeMoving), then catches up from its cursor like any stream
// and returns to the group once it has caught up; the group meanwhile
// skips it, so it costs the others nothing. As on the goroutine path, a
// subscriber that has fallen out of the history is sent a snapshot, and one
// that takes no byte for write_timeout is disconnected and resumes by id
// when its browser reconnects. A client sends nothing on its stream after
// the request; one that sends more than maxClientBytes is disconnected.
//
// Detaching needs a socket that can be written without blocking through
// syscall.RawConn (fanout_unix.go). On other systems, Windows among them
// (fanout_other.go), detach declines every stream, and each keeps its
// goroutine.

// detachedStreams is the groups of one handler, by topic.
type detachedStreams struct {
	cfg *streamConfig

	mu     sync.Mutex
	groups map[*topic]*connGroup
}

// A connGroup is the detached streams of one topic served by one handler.
type connGroup struct {
	cfg      *streamConfig
	detached *detachedStreams
	t        *topic
	quit     chan struct{} // closed when the last stream has left

	mu   sync.Mutex
	subs []*connStream

	// sweepers belong to the group's goroutine.
	sweepers []*sweeper
}

// A connStream is one detached subscriber.
type connStream struct {
	g    *connGroup
	conn net.Conn
	rc   syscall.RawConn
	// idx is the stream's position in g.subs, guarded by g.mu.
	idx int
	// sent is what the client sent after its request that net/http had
	// read ahead; buf is the buffer of the goroutine that watches for
	// the client leaving. Both belong to that goroutine.
	sent int
	buf  [watchBufferSize]byte

	mu     sync.Mutex
	cursor cursor
	last   time.Time // of the last write
	// lagging is set while a goroutine of the stream's own is writing to
	// it; the group leaves it alone.
	lagging bool
	closed  bool
}

// detach takes the HTTP/1.1 stream of w over from net/http, if it is one
// that can be written without net/http (plain, chunked), and makes it a
// connStream of t from cursor on, on the systems that can (canDetach). The
// headers and the retry field must have been written. It reports whether it
// did; if so the subscription to t is
// the stream's, and the handler must return without touching w again.
func (d *detachedStreams) detach(w http.ResponseWriter, r *http.Request, t *topic, at cursor) bool {
	if !canDetach || r.ProtoMajor != 1 || r.ProtoMinor != 1 || r.TLS != nil || d.cfg.ended() {
		return false
	}
	if hdr := w.Header(); hdr.Get("Content-Encoding") != "" || hdr.Get("Transfer-Encoding") != "" {
		return false
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return false
	}
	// What net/http read ahead is what the client sent after its
	// request; nothing of it is a request that the stream answers.
	sent := brw.Reader.Buffered()
	s := &connStream{conn: conn, cursor: at, last: time.Now(), sent: sent}
	switch c := conn.(type) {
	case *net.TCPConn:
		s.rc, err = c.SyscallConn()
	case *net.UnixConn:
		s.rc, err = c.SyscallConn()
	}
	if s.rc == nil || err != nil {
		// A connection that a listener wrapper made, whose bytes may not
		// be the socket's: write to it with blocking writes on this
		// goroutine.
		d.cfg.streamHijacked(conn, t, at, sent)
		return true
	}
	// The group's sweeps wait until the stream is set up and has been
	// sent what the log holds for it.
	s.mu.Lock()
	g := d.join(t, s)
	go s.watch()
	sw := joinSweepers.Get().(*sweeper)
	g.service(s, sw)
	joinSweepers.Put(sw)
	s.mu.Unlock()
	return true
}

// joinSweepers write to streams as they join. They are shared so that the
// snapshot that a burst of new subscribers is sent (a reconnect storm after
// a deploy) is framed as a chunk a few times, not once per subscriber.
var joinSweepers = sync.Pool{New: func() any { return newSweeper() }}

// join adds s to the group of t, starting the group if it has none.
func (d *detachedStreams) join(t *topic, s *connStream) *connGroup {
	d.mu.Lock()
	defer d.mu.Unlock()
	g := d.groups[t]
	if g == nil {
		g = &connGroup{cfg: d.cfg, detached: d, t: t, quit: make(chan struct{})}
		d.groups[t] = g
		go g.run()
	}
	s.g = g
	g.mu.Lock()
	s.idx = len(g.subs)
	g.subs = append(g.subs, s)
	g.mu.Unlock()
	return g
}

// leave removes s from its group, ending the group when s was its last
// stream.
func (d *detachedStreams) leave(s *connStream) {
	d.mu.Lock()
	defer d.mu.Unlock()
	g := s.g
	g.mu.Lock()
	last := len(g.subs) - 1
	g.subs[s.idx] = g.subs[last]
	g.subs[s.idx].idx = s.idx
	g.subs[last] = nil
	g.subs = g.subs[:last]
	empty := len(g.subs) == 0
	g.mu.Unlock()
	if empty {
		if d.groups[g.t] == g {
			delete(d.groups, g.t)
		}
		close(g.quit)
	}
}

// watch waits for the client to close the connection or to send too
// much, and then ends the stream.
func (s *connStream) watch() {
	s.g.cfg.logClientSent(watchClient(s.conn, s.buf[:], s.sent))
	s.close()
}

// close ends the stream, once: it closes the connection, leaves the group
// and unsubscribes from the topic.
func (s *connStream) close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.mu.Unlock()
	s.conn.Close()
	s.g.detached.leave(s)
	s.g.cfg.unsubscribe(s.g.t)
}

// sweepShard is the fewest streams one goroutine of a sweep writes to: from
// twice as many on, a sweep uses the other CPUs too.
const sweepShard = 256

// run writes each change of the log to the group's streams, and heartbeats
// to those that have been silent, until the last stream leaves or the
// handler's streams end.
func (g *connGroup) run() {
	var subs []*connStream
	for {
		wake, refused := g.t.log.changed(), g.t.refusedChan()
		g.mu.Lock()
		subs = append(subs[:0], g.subs...)
		g.mu.Unlock()
		g.sweep(subs, g.service)
		select {
		case <-wake:
		case <-refused:
		case <-g.cfg.ticker.tick():
			now := time.Now()
			g.sweep(subs, func(s *connStream, w *sweeper) {
				if !s.lagging && !s.closed && now.Sub(s.last) >= g.cfg.heartbeat {
					s.writeFrames([]frame{heartbeatFrame}, s.cursor, w)
				}
			})
		case <-g.quit:
			return
		case <-g.cfg.done:
			// No stream joins the group after this; those that did end.
			d := g.detached
			d.mu.Lock()
			if d.groups[g.t] == g {
				delete(d.groups, g.t)
			}
			g.mu.Lock()
			subs = append(subs[:0], g.subs...)
			g.mu.Unlock()
			d.mu.Unlock()
			for _, s := range subs {
				s.end()
			}
			return
		}
		clear(subs)
	}
}

// sweep calls f for each stream, holding the stream's lock, on one
// goroutine per sweepShard streams and at most one per CPU.
func (g *connGroup) sweep(subs []*connStream, f func(*connStream, *sweeper)) {
	workers := min(runtime.GOMAXPROCS(0), (len(subs)+sweepShard-1)/sweepShard)
	for len(g.sweepers) < max(workers, 1) {
		g.sweepers = append(g.sweepers, newSweeper())
	}
	each := func(part []*connStream, w *sweeper) {
		for _, s := range part {
			s.mu.Lock()
			f(s, w)
			s.mu.Unlock()
		}
	}
	if workers <= 1 {
		each(subs, g.sweepers[0])
		return
	}
	var wg sync.WaitGroup
	per := (len(subs) + workers - 1) / workers
	for i, w := 0, 0; i < len(subs); i, w = i+per, w+1 {
		part, sw := subs[i:min(i+per, len(subs))], g.sweepers[w]
		wg.Go(func() { each(part, sw) })
	}
	wg.Wait()
}

// maxFramesPerWrite bounds the frames a detached stream takes from the log at
// once.
const maxFramesPerWrite = 64

// service writes to s what the log holds after its cursor, until it has
// caught up or its socket takes no more at once (a goroutine of its own
// then finishes), or ends it when the upstream refuses the topic's
// credentials before its first snapshot. s.mu is held.
func (g *connGroup) service(s *connStream, w *sweeper) {
	if s.lagging || s.closed {
		return
	}
	for {
		frames, next, _ := g.t.log.read(s.cursor, w.frames[:0])
		if len(frames) == 0 {
			break
		}
		s.writeFrames(frames, next, w)
		if s.lagging || s.closed {
			return
		}
	}
	if g.t.refusedBeforeSnapshot() {
		w.write(s.rc, lastChunk)
		s.closed = true
		s.closeConn()
	}
}

// writeFrames writes frames to s, each as one chunk in one non-blocking
// write, and moves its cursor to next. When the socket does not take a whole
// chunk, the rest is left to a goroutine of the stream's own. s.mu is held.
func (s *connStream) writeFrames(frames []frame, next cursor, w *sweeper) {
	s.cursor = next
	for i, f := range frames {
		c := w.chunk(f.bytes)
		n, err := w.write(s.rc, c)
		if n == len(c) {
			metrics.countSent(f)
			continue
		}
		if err != nil && !errors.Is(err, syscall.EAGAIN) {
			metrics.countWriteError(err)
			s.closed = true
			s.closeConn()
			return
		}
		s.lagging = true
		// frames belong to the sweeper: the goroutine gets a copy.
		go s.catchUp(c[n:], f, append([]frame(nil), frames[i+1:]...))
		return
	}
	s.last = time.Now()
}

// closeConn ends a stream that close marked closed with s.mu held.
func (s *connStream) closeConn() {
	s.conn.Close()
	s.g.detached.leave(s)
	s.g.cfg.unsubscribe(s.g.t)
}

// catchUp writes the rest of the chunk of frame, then frames, then what
// the log holds after the stream's cursor, until the stream has caught up
// and returns to its group; it ends the stream when no byte of a write has
// moved for the write timeout.
func (s *connStream) catchUp(rest []byte, last frame, frames []frame) {
	timeout := s.g.cfg.writeTimeout
	w := newSweeper()
	var size [16]byte
	var bufs [3][]byte
	// write writes one frame as a chunk: the chunk's size line, the frame
	// shared with the other streams, and CRLF, in one writev.
	write := func(b ...[]byte) error {
		return writeMoving(s.conn, append(net.Buffers(bufs[:0]), b...), timeout)
	}
	if err := write(rest); err != nil {
		metrics.countWriteError(err)
		s.close()
		return
	}
	metrics.countSent(last)
	for {
		for _, f := range frames {
			if err := write(appendChunkSize(size[:0], len(f.bytes)), f.bytes, crlf); err != nil {
				metrics.countWriteError(err)
				s.close()
				return
			}
			metrics.countSent(f)
		}
		s.mu.Lock()
		s.last = time.Now()
		if s.closed {
			s.mu.Unlock()
			return
		}
		var next cursor
		frames, next, _ = s.g.t.log.read(s.cursor, w.frames[:0])
		if len(frames) == 0 {
			// Caught up: the group writes the next change. One that
			// came after this read woke the group, which takes s.mu
			// before it looks at s.
			s.conn.SetWriteDeadline(time.Time{})
			s.lagging = false
			s.mu.Unlock()
			return
		}
		s.cursor = next
		s.mu.Unlock()
	}
}

// end ends the stream when the server stops or the configuration is
// unloaded: the last chunk, if the stream is between two events, and then
// the connection closes.
func (s *connStream) end() {
	s.mu.Lock()
	if !s.lagging && !s.closed {
		newSweeper().write(s.rc, lastChunk)
	}
	s.mu.Unlock()
	s.close()
}

// A sweeper is the scratch state of one goroutine that writes to streams,
// kept so that writing an event to a stream allocates nothing.
type sweeper struct {
	// frames receives what a stream reads from the log.
	frames []frame
	// cached and chunks are the last few frames written and their chunks,
	// so that a frame written to many streams is framed once. Frames are
	// shared and never change, so a frame's first byte identifies it.
	// Chunks are never reused for another frame, so they can be handed to
	// another goroutine.
	cached [4][]byte
	chunks [4][]byte
	next   int
	// b, n and err are the argument and results of writeFn.
	b       []byte
	n       int
	err     error
	writeFn func(fd uintptr) bool
}

func newSweeper() *sweeper {
	w := &sweeper{frames: make([]frame, 0, maxFramesPerWrite)}
	w.writeFn = func(fd uintptr) bool {
		w.n, w.err = writeSocket(fd, w.b)
		return true
	}
	return w
}

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

// chunk returns frame as one chunk.
func (w *sweeper) chunk(frame []byte) []byte {
	for i, f := range w.cached {
		if len(f) == len(frame) && len(f) > 0 && &f[0] == &frame[0] {
			return w.chunks[i]
		}
	}
	ch := appendChunk(make([]byte, 0, len(frame)+12), frame)
	w.cached[w.next], w.chunks[w.next] = frame, ch
	w.next = (w.next + 1) % len(w.cached)
	return ch
}
