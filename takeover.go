package pollsse

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"reflect"
	"strconv"
	"syscall"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// maxClientBytes is how much a client may send on a stream taken over from
// net/http after its request. A browser sends nothing until it closes the
// connection (a stream never answers another request on it), so the
// allowance is for the odd blank line; a client that sends more has its
// stream ended, which bounds what it costs to read.
const maxClientBytes = 256

// watchBufferSize is the size of the buffer that a stream's client is read
// into, of which each stream has one.
const watchBufferSize = 64

// errClientSent ends a stream whose client sent more than maxClientBytes.
var errClientSent = errors.New("the client sent data after its request")

// watchClient reads conn, the connection of a stream taken over from
// net/http whose client has sent sent bytes after its request, into buf
// until the client closes it, the connection ends or the client has sent
// more than maxClientBytes. It returns the error that ended the read, or
// errClientSent.
func watchClient(conn net.Conn, buf []byte, sent int) error {
	for sent <= maxClientBytes {
		n, err := conn.Read(buf)
		if err != nil {
			return err
		}
		sent += n
	}
	return errClientSent
}

// logClientSent logs at Debug that a stream ended on err when its client
// sent too much; any other end of the read is the client leaving.
func (c *streamConfig) logClientSent(err error) {
	if err != errClientSent {
		return
	}
	if ce := c.logger.Check(zap.DebugLevel, "stream ended"); ce != nil {
		ce.Write(zap.Error(err), zap.Int("max_bytes", maxClientBytes))
	}
}

// lastChunk ends a chunked response body.
var lastChunk = []byte("0\r\n\r\n")

// appendChunk appends frame to dst as one chunk of a chunked HTTP/1.1 body.
func appendChunk(dst, frame []byte) []byte {
	dst = appendChunkSize(dst, len(frame))
	dst = append(dst, frame...)
	return append(dst, crlf...)
}

// appendChunkSize appends the line that starts a chunk of n bytes.
func appendChunkSize(dst []byte, n int) []byte {
	dst = strconv.AppendUint(dst, uint64(n), 16)
	return append(dst, crlf...)
}

var crlf = []byte("\r\n")

// writeChecks is how many times per write timeout a blocked write to a
// connection taken over from net/http looks whether its bytes move.
const writeChecks = 4

// writeMoving writes b to conn, a connection taken over from net/http, and
// fails only when no byte has moved for timeout (none if 0). A write to a
// TCP connection that reaches its deadline returns what the socket took,
// and the connection stays usable: the deadline is set a quarter of the
// timeout ahead at a time and the write carries on while bytes move, so
// that a client that reads slowly but steadily gets a frame of any size,
// and one that takes nothing is dropped between one and one and a quarter
// timeouts after its last byte.
func writeMoving(conn net.Conn, b net.Buffers, timeout time.Duration) error {
	if timeout <= 0 {
		conn.SetWriteDeadline(time.Time{})
		_, err := b.WriteTo(conn)
		return err
	}
	step := max(timeout/writeChecks, time.Millisecond)
	moved := time.Now()
	for {
		deadline := time.Now().Add(step)
		if limit := moved.Add(timeout); limit.Before(deadline) {
			deadline = limit
		}
		conn.SetWriteDeadline(deadline)
		n, err := b.WriteTo(conn)
		now := time.Now()
		// A timeout before the deadline is that of a connection that
		// an earlier one broke (a wrapped TLS connection), not a wait.
		if err == nil || !isTimeout(err) || now.Before(deadline) {
			return err
		}
		if n > 0 {
			moved = now
		} else if !now.Before(moved.Add(timeout)) {
			return err
		}
	}
}

// detach takes the HTTP/1.1 stream of w over from net/http, if it is one
// that can be written without net/http (chunked, not compressed), and makes
// it a subscriber of t from cursor at on, on the systems that can
// (canDetach; TLS where sockets tell their room, canMeasureRoom). The
// headers and the retry field must have been written. It reports whether it
// did; if so the subscription to t is the stream's, and the handler must
// return without touching w again.
//
// The subscriber joins t's group when the socket beneath the connection can
// be reached: a plain one (socketSink) or a TLS one (recordSink). Its
// client is watched for leaving (watchConn: by the process's watcher on
// Linux, elsewhere by a small goroutine of the stream's own), and the
// handler returns. A stream on a host that Caddy logs writes its access log
// line itself when it ends (accesslog.go, loggedSink). Where it cannot, Caddy
// counts its bytes (recordSink, through Caddy's wrapper of the connection)
// and writes its line when the handler returns, so the handler waits for the
// client to leave in watch, until the stream has ended. A connection whose
// socket cannot be reached (a listener wrapper's) is written on this
// goroutine with writes that wait.
func (d *detachedStreams) detach(w http.ResponseWriter, r *http.Request, t *topic, at cursor) bool {
	if !canDetach || r.ProtoMajor != 1 || r.ProtoMinor != 1 || d.cfg.ended() {
		return false
	}
	if r.TLS != nil && !canMeasureRoom {
		return false
	}
	if hdr := w.Header(); hdr.Get("Content-Encoding") != "" || hdr.Get("Transfer-Encoding") != "" {
		return false
	}
	top, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return false
	}
	// What net/http read ahead is what the client sent after its
	// request; nothing of it is a request that the stream answers.
	sent := brw.Reader.Buffered()
	releaseConnBuffers(brw)
	conn, logged := top, false
	if inner := countedConn(conn); inner != nil {
		// A request that the access log skips has no line.
		conn, logged = inner, !logSkipped(r)
	}
	tlsConn, _ := conn.(*tls.Conn)
	if tlsConn != nil {
		conn = tlsConn.NetConn()
	}
	var rc syscall.RawConn
	if sc, ok := conn.(syscall.Conn); ok {
		switch conn.(type) {
		case *net.TCPConn, *net.UnixConn:
			rc, err = sc.SyscallConn()
		}
	}
	timeout := d.cfg.writeTimeout
	if tlsConn != nil && rc != nil && err == nil && canMeasureRoom {
		// Its socket is read directly from now on.
		sent += releaseReadBuffers(tlsConn)
	}
	// A logged stream whose socket the group writes writes its own line;
	// one that cannot (a Caddy that keeps the line's fields where it cannot
	// be read) is counted by Caddy, and waits for its line.
	var line *loggedSink
	if logged && rc != nil && err == nil && (tlsConn == nil || canMeasureRoom) {
		line = newLoggedSink(d.cfg.accessLog, recorderOf(w), r)
	}
	counted := logged && line == nil
	switch {
	case rc == nil || err != nil || ((counted || tlsConn != nil) && !canMeasureRoom):
		d.followHijacked(top, t, at, sent)
	case counted:
		s := newSubscriber(d.cfg, t, at, newRecordSink(top, conn, rc, timeout))
		d.join(s, nil)
		s.watch(conn, sent)
		s.lag.Wait()
	default:
		var k sink = &socketSink{conn: conn, rc: rc, timeout: timeout}
		if tlsConn != nil {
			k = newRecordSink(tlsConn, conn, rc, timeout)
		}
		if line != nil {
			line.sink = k
			k = line
		}
		s := newSubscriber(d.cfg, t, at, k)
		d.join(s, func() { s.watchConn(conn, rc, sent) })
	}
	return true
}

// countedConn returns the connection that conn wraps, when conn is the
// wrapper in which Caddy hands over the connection of a request that it
// logs, to count what is written to it: a struct that embeds the
// connection as its field Conn. It returns nil for any other connection.
func countedConn(conn net.Conn) net.Conn {
	switch conn.(type) {
	case *net.TCPConn, *net.UnixConn, *tls.Conn:
		return nil
	}
	v := reflect.ValueOf(conn)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return nil
	}
	f, ok := v.Elem().Type().FieldByName("Conn")
	if !ok || !f.Anonymous || f.Type != reflect.TypeFor[net.Conn]() || len(f.Index) != 1 {
		return nil
	}
	inner, _ := v.Elem().FieldByIndex(f.Index).Interface().(net.Conn)
	return inner
}

// logSkipped tells whether the access log skips r (`log_skip`).
func logSkipped(r *http.Request) bool {
	skip, _ := caddyhttp.GetVar(r.Context(), caddyhttp.LogSkipVar).(bool)
	return skip
}

// watch waits for the client to close the connection conn, the socket of
// the stream, or to send too much, and then ends the stream. The client had
// sent sent bytes after its request.
func (s *subscriber) watch(conn net.Conn, sent int) {
	var buf [watchBufferSize]byte
	s.cfg.logClientSent(watchClient(conn, buf[:], sent))
	s.close()
}

// followHijacked streams to a connection taken over from net/http whose
// socket cannot be reached, on the calling goroutine, with writes that
// wait. A goroutine reads from the connection to notice the client
// leaving, or sending more than maxClientBytes after its request, of which
// it had sent sent.
func (d *detachedStreams) followHijacked(conn net.Conn, t *topic, at cursor, sent int) {
	c := d.cfg
	s := newSubscriber(c, t, at, &connSink{conn: conn, timeout: c.writeTimeout})
	ctx, cancel := context.WithCancel(context.Background())
	read := make(chan struct{})
	go func() {
		defer close(read)
		var buf [watchBufferSize]byte
		c.logClientSent(watchClient(conn, buf[:], sent))
		cancel()
	}()
	d.follow(s, ctx)
	cancel()
	// The reads count bytes for Caddy's access log, which it writes once
	// the handler returns.
	<-read
}
