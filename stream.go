package pollsse

import (
	"context"
	"net/http"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
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
	// accessLog is where the streams that write their own access log
	// lines write them: Caddy's access logger (accesslog.go).
	accessLog *accessLog
	// writes ends the writes through net/http that take too long.
	writes writeWatch
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

// serve writes retry, the stream's first frame, to the request r, whose
// headers w has written, and then streams t's log from cursor at on to it:
// as a subscriber of t's group, taken over from net/http, where detach can
// (fanout.go), and else on this goroutine, through w. The subscription to t
// is the stream's, which gives it back when it ends.
func (c *streamConfig) serve(d *detachedStreams, w http.ResponseWriter, r *http.Request, t *topic, at cursor, retry []byte) {
	k := c.begin(w, t, retry)
	if k == nil {
		return
	}
	defer c.writes.remove(k)
	if d.detach(w, r, t, at) {
		return
	}
	d.follow(newSubscriber(c, t, at, k), r.Context())
}

// begin writes retry through a new sink of w, whose writes the write
// timeout watches, and returns it; nil, with the subscription to t given
// back, when the write failed. It is a function of its own, not inlined,
// so that what it needs is off the stack of the stream's life (ServeHTTP).
//
//go:noinline
func (c *streamConfig) begin(w http.ResponseWriter, t *topic, retry []byte) *responseSink {
	k := newResponseSink(beneathIdleTimeout(w), c.writeTimeout)
	c.writes.add(c, k)
	if err := k.push(nil, nil, retry); err != nil {
		c.writes.remove(k)
		c.unsubscribe(t)
		return nil
	}
	return k
}

// follow makes s a follower of its topic's group, streams to it on this
// goroutine until ctx ends or the stream does, and ends it.
func (d *detachedStreams) follow(s *subscriber, ctx context.Context) {
	s.poke = make(chan struct{}, 1)
	if !s.cfg.ended() {
		d.join(s, nil)
		s.follow(ctx)
	}
	s.close()
}

// beneathIdleTimeout returns the writer beneath w when w is the one with
// which Caddy bounds each write by the server's write_idle_timeout: on
// HTTP/2 each of its writes and flushes sets a deadline, a timer and a
// message to the connection's goroutine each. A stream's writes are
// bounded by its write_timeout instead (writeWatch). On a host that Caddy
// logs, its recorder of the response, which counts the bytes for the
// line, is over that writer: the recorder is kept, and made to write
// beneath it. Any other writer is kept as it is: those that count,
// compress or rewrite what is written see every frame.
func beneathIdleTimeout(w http.ResponseWriter) http.ResponseWriter {
	if beneath := idleTimeoutBeneath(w); beneath != nil {
		return beneath
	}
	if rec, ok := w.(caddyhttp.ResponseRecorder); ok {
		if wrapper := recorderWrapper(rec); wrapper != nil {
			if beneath := idleTimeoutBeneath(wrapper.ResponseWriter); beneath != nil {
				wrapper.ResponseWriter = beneath
			}
		}
	}
	return w
}

// idleTimeoutBeneath returns the writer beneath w if w is Caddy's writer
// of write_idle_timeout, nil otherwise.
func idleTimeoutBeneath(w http.ResponseWriter) http.ResponseWriter {
	if iw, ok := w.(*caddyhttp.IdleTimeoutWriter); ok && iw.ResponseWriterWrapper != nil && iw.ResponseWriterWrapper.ResponseWriter != nil {
		return iw.ResponseWriterWrapper
	}
	return nil
}

// recorderWrapper returns the wrapper through which rec, Caddy's response
// recorder, writes: the *caddyhttp.ResponseWriterWrapper that it embeds,
// of its own (NewResponseRecorder makes it), found by reflection since the
// recorder's type is unexported; nil if rec has none.
func recorderWrapper(rec caddyhttp.ResponseRecorder) *caddyhttp.ResponseWriterWrapper {
	v := reflect.ValueOf(rec)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return nil
	}
	f := v.Elem().FieldByName("ResponseWriterWrapper")
	if !f.IsValid() || f.Type() != reflect.TypeFor[*caddyhttp.ResponseWriterWrapper]() || !f.CanInterface() {
		return nil
	}
	wrapper, _ := f.Interface().(*caddyhttp.ResponseWriterWrapper)
	return wrapper
}

// followSweepers are the scratch state of the subscribers that run on
// goroutines of their own, taken only while one writes, so that an idle one
// holds none.
var followSweepers = sync.Pool{New: func() any { return newSweeper() }}

// follow writes the events of s's log to s, a follower of its group, with
// writes that wait (catchUp), and heartbeats in the silences, each time the
// group nudges it, until ctx ends or the server's streams do, a write fails,
// or the upstream refuses t's credentials before the subscriber's first
// snapshot. The caller ends the stream then. A subscriber that falls
// behind only delays itself: when it has missed more than the history
// holds, its next read is a fresh snapshot; when it takes nothing of a
// write for the write timeout, the stream ends, and the browser reconnects
// and resumes by id.
func (s *subscriber) follow(ctx context.Context) {
	c := s.cfg
	for {
		w := followSweepers.Get().(*sweeper)
		ok := s.catchUp(w, nil, frame{}, nil)
		followSweepers.Put(w)
		if !ok || s.t.refusedBeforeSnapshot() {
			return
		}
		select {
		case <-s.poke:
		case <-ctx.Done():
			return
		}
		if c.ended() {
			return
		}
		s.mu.Lock()
		quiet := time.Since(s.last) >= c.heartbeat
		s.mu.Unlock()
		if quiet && !s.heartbeat() {
			return
		}
	}
}

// heartbeat writes a heartbeat to s, a follower, and tells whether it went
// out. Like streamConfig.begin, it keeps what it needs off the stack that
// follow holds for the stream's life.
//
//go:noinline
func (s *subscriber) heartbeat() bool {
	w := followSweepers.Get().(*sweeper)
	err := s.sink.push(w, nil, heartbeatFrame.bytes)
	followSweepers.Put(w)
	if err != nil {
		metrics.countWriteError(err)
		return false
	}
	metrics.countSent(heartbeatFrame)
	s.mu.Lock()
	s.last = time.Now()
	s.mu.Unlock()
	return true
}

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
