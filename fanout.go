package pollsse

import (
	"runtime"
	"sync"
	"time"
)

// Fan-out: one subscriber type, one loop and one frame writer for every path.
//
// A subscriber is a cursor into its topic's log and a sink that takes its
// frames (sink.go): the socket of a plain HTTP/1.1 connection taken over
// from net/http, a TLS connection or one that Caddy's access log counts the
// bytes of (also taken over), or a response written through net/http
// (HTTP/2, HTTP/3, `encode`, and the systems that cannot write a socket
// without blocking). Every subscriber moves forward the same way (advance
// and catchUp below): it reads what lies after its cursor and writes it
// frame by frame, and it is sent a snapshot when it has fallen out of the
// history.
//
// The subscribers whose sink can write without waiting form a group per
// topic and handler, whose goroutine waits for the log to change and then
// writes to each of them what lies after its cursor, each frame in one write
// that goes whole or not at all (a plain socket may take part of it). Such a
// stream holds no goroutine of net/http, none of its buffers, and no
// goroutine of its own: on Linux one goroutine of the process waits on an
// epoll set of their sockets for clients leaving (watch_linux.go), on other
// systems a small goroutine per stream reads its socket. Publishing stays
// O(1) on the poller's goroutine: it only wakes the groups. A subscriber
// whose sink does not take a whole frame at once (its client reads slowly
// or not at all) is handed to a goroutine of its own that finishes with
// writes that wait (catchUp), then catches up from its cursor and returns
// to the group once it has; the group meanwhile skips it, so it costs the
// others nothing.
//
// A subscriber whose sink cannot write without waiting (a follower) runs
// catchUp on a goroutine of its own, always (follow, stream.go). It is a
// member of its topic's group all the same, which nudges it when there is
// something to write, through a channel of its own: its goroutine waits on
// nothing that thousands of others wait on too.
//
// On every path, a subscriber that takes no byte of a write for
// write_timeout is disconnected, and resumes by id when its browser
// reconnects; a client sends nothing on its stream after the request, and
// one that sends more than maxClientBytes is disconnected.

// detachedStreams is the groups of one handler, by topic.
type detachedStreams struct {
	cfg *streamConfig

	mu     sync.Mutex
	groups map[*topic]*connGroup
}

// A connGroup is the subscribers of one topic served by one handler whose
// sinks can write without waiting.
type connGroup struct {
	cfg      *streamConfig
	detached *detachedStreams
	t        *topic
	quit     chan struct{} // closed when the last stream has left

	mu   sync.Mutex
	subs []*subscriber

	// sweepers belong to the group's goroutine.
	sweepers []*sweeper
}

// A subscriber is one stream.
type subscriber struct {
	cfg  *streamConfig
	t    *topic
	sink sink
	// g is the subscriber's group, nil for one that runs on a goroutine
	// of its own; idx is its position in g.subs, guarded by g.mu.
	g   *connGroup
	idx int
	// lag is the goroutine that writes to a lagging subscriber of a group.
	lag sync.WaitGroup
	// poke is a follower's: the group nudges it through poke when there is
	// something to write to it, a heartbeat due, or the streams end.
	poke chan struct{}

	mu     sync.Mutex
	cursor cursor
	last   time.Time // of the last write
	// lagging is set while a goroutine of the subscriber's own is writing
	// to it; the group leaves it alone.
	lagging bool
	closed  bool
	// watched is the socket of a group's stream whose client the
	// process's watcher watches (watch_linux.go), set as it joins; nil
	// when a goroutine of the stream's own does.
	watched *watchedConn
}

func newSubscriber(cfg *streamConfig, t *topic, at cursor, s sink) *subscriber {
	return &subscriber{cfg: cfg, t: t, sink: s, cursor: at, last: time.Now()}
}

// joinSweepers write to subscribers as they join. They are shared so that
// the snapshot that a burst of new subscribers is sent (a reconnect storm
// after a deploy) is framed as a chunk a few times, not once per subscriber.
var joinSweepers = sync.Pool{New: func() any { return newSweeper() }}

// join adds s to the group of its topic, starting the group if it has none,
// calls start (if not nil), and sends s what the log holds for it. The
// group's sweeps, and the end of s, wait until it has been.
func (d *detachedStreams) join(s *subscriber, start func()) {
	s.mu.Lock()
	d.mu.Lock()
	g := d.groups[s.t]
	if g == nil {
		g = &connGroup{cfg: d.cfg, detached: d, t: s.t, quit: make(chan struct{})}
		d.groups[s.t] = g
		go g.run()
	}
	s.g = g
	g.mu.Lock()
	s.idx = len(g.subs)
	g.subs = append(g.subs, s)
	g.mu.Unlock()
	d.mu.Unlock()
	if start != nil {
		start()
	}
	sw := joinSweepers.Get().(*sweeper)
	s.service(sw)
	joinSweepers.Put(sw)
	s.mu.Unlock()
}

// leave removes s from its group, ending the group when s was its last
// stream.
func (d *detachedStreams) leave(s *subscriber) {
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

// close ends the stream, once: it closes the connection, leaves the group
// and unsubscribes from the topic.
func (s *subscriber) close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.mu.Unlock()
	s.closeConn(nil, nil)
}

// closeConn ends a stream that close, or a writer holding s.mu, marked
// closed, writing last (with w) before the connection closes when it is
// not nil. The subscription is given back first: a client that reconnects
// as soon as it sees the end (EventSource does) must find its place free
// under max_subscribers.
func (s *subscriber) closeConn(w *sweeper, last []byte) {
	if s.g != nil {
		s.g.detached.leave(s)
	}
	s.cfg.unsubscribe(s.t)
	if last != nil {
		s.sink.offer(w, last)
	}
	s.unwatch()
	s.sink.close()
}

// sweepShard is the fewest streams one goroutine of a sweep writes to: from
// twice as many on, a sweep uses the other CPUs too.
const sweepShard = 256

// run writes each change of the log to the group's streams, and heartbeats
// to those that have been silent, until the last stream leaves or the
// handler's streams end.
func (g *connGroup) run() {
	var subs []*subscriber
	for {
		wake, refused := g.t.log.changed(), g.t.refusedChan()
		g.mu.Lock()
		subs = append(subs[:0], g.subs...)
		g.mu.Unlock()
		g.sweep(subs, (*subscriber).service)
		select {
		case <-wake:
		case <-refused:
		case <-g.cfg.ticker.tick():
			now := time.Now()
			g.sweep(subs, func(s *subscriber, w *sweeper) {
				switch {
				case s.lagging || s.closed || now.Sub(s.last) < g.cfg.heartbeat:
				case s.poke != nil:
					s.nudge()
				default:
					s.send(w, []frame{heartbeatFrame}, s.cursor)
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
func (g *connGroup) sweep(subs []*subscriber, f func(*subscriber, *sweeper)) {
	workers := min(runtime.GOMAXPROCS(0), (len(subs)+sweepShard-1)/sweepShard)
	for len(g.sweepers) < max(workers, 1) {
		g.sweepers = append(g.sweepers, newSweeper())
	}
	each := func(part []*subscriber, w *sweeper) {
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

// maxFramesPerWrite bounds the frames a subscriber takes from the log at
// once.
const maxFramesPerWrite = 64

// service writes to s, a subscriber of a group, what the log holds after
// its cursor, until it has caught up or its sink takes no more at once (a
// goroutine of its own then finishes), or ends it when the upstream refuses
// the topic's credentials before its first snapshot. s.mu is held.
func (s *subscriber) service(w *sweeper) {
	if s.poke != nil {
		s.nudge()
		return
	}
	if s.lagging || s.closed {
		return
	}
	for {
		frames, next, _ := s.t.log.read(s.cursor, w.frames[:0])
		if len(frames) == 0 {
			break
		}
		s.send(w, frames, next)
		if s.lagging || s.closed {
			return
		}
	}
	if s.t.refusedBeforeSnapshot() {
		s.closed = true
		s.closeConn(w, lastChunk)
	}
}

// send writes frames to s, a subscriber of a group, each in one write that
// does not wait, and moves its cursor to next. When the sink does not take
// a whole frame, the rest is left to a goroutine of the subscriber's own.
// s.mu is held.
func (s *subscriber) send(w *sweeper, frames []frame, next cursor) {
	s.cursor = next
	for i, f := range frames {
		b := s.sink.frame(w, f.bytes)
		n, err := s.sink.offer(w, b)
		if n == len(b) {
			metrics.countSent(f)
			continue
		}
		if err != nil {
			metrics.countWriteError(err)
			s.closed = true
			s.closeConn(nil, nil)
			return
		}
		s.lagging = true
		// frames belong to the sweeper: the goroutine gets a copy.
		rest := append([]frame(nil), frames[i+1:]...)
		s.lag.Go(func() {
			if s.catchUp(newSweeper(), b[n:], f, rest) {
				return
			}
			s.close()
		})
		return
	}
	s.last = time.Now()
}

// catchUp writes to s with writes that wait while the client takes bytes:
// the rest of the frame last, of which the sink took part, then frames, then
// what the log holds after the subscriber's cursor, until it has caught up.
// A subscriber of a group then returns to it. catchUp reports false when a
// write failed, no byte of it having moved for the write timeout, or the
// stream ended meanwhile: the caller ends it.
func (s *subscriber) catchUp(w *sweeper, rest []byte, last frame, frames []frame) bool {
	if len(rest) > 0 {
		if err := s.sink.push(w, rest, nil); err != nil {
			metrics.countWriteError(err)
			return false
		}
		metrics.countSent(last)
	}
	for {
		for _, f := range frames {
			if err := s.sink.push(w, nil, f.bytes); err != nil {
				metrics.countWriteError(err)
				return false
			}
			metrics.countSent(f)
		}
		s.mu.Lock()
		if len(frames) > 0 || len(rest) > 0 {
			s.last = time.Now()
		}
		if s.closed {
			s.mu.Unlock()
			return false
		}
		var next cursor
		frames, next, _ = s.t.log.read(s.cursor, w.frames[:0])
		if len(frames) == 0 {
			// Caught up: the group writes the next change. One that
			// came after this read woke the group, which takes s.mu
			// before it looks at s.
			s.sink.settle()
			s.lagging = false
			s.mu.Unlock()
			return true
		}
		s.cursor = next
		s.mu.Unlock()
		rest = nil
	}
}

// end ends the stream when the server stops or the configuration is
// unloaded: the last chunk, if the stream is between two frames, and then
// the connection closes.
func (s *subscriber) end() {
	if s.poke != nil {
		// It sees that the streams end, and ends.
		s.nudge()
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	if s.lagging {
		// Its own goroutine is writing a frame: the body is cut, not ended.
		s.closeConn(nil, nil)
		return
	}
	w := joinSweepers.Get().(*sweeper)
	s.closeConn(w, lastChunk)
	joinSweepers.Put(w)
}

// nudge tells a follower that it has something to do, unless it has been
// told already.
func (s *subscriber) nudge() {
	select {
	case s.poke <- struct{}{}:
	default:
	}
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
	// size and piece are the scratch buffers of writes that wait.
	size  [16]byte
	piece []byte
}

func newSweeper() *sweeper {
	w := &sweeper{frames: make([]frame, 0, maxFramesPerWrite)}
	w.writeFn = func(fd uintptr) bool {
		w.n, w.err = writeSocket(fd, w.b)
		return true
	}
	return w
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
