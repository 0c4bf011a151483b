package pollsse

import (
	"context"
	"errors"
	"net"
	"strconv"
	"time"

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

// streamHijacked streams to a connection taken over from net/http that
// offers no raw access, on the calling goroutine, with blocking writes.
// (Caddy wraps the connections of a server with access logs so.) A
// goroutine reads from the connection to notice the client leaving, or
// sending more than maxClientBytes after its request, of which it had sent
// sent.
func (c *streamConfig) streamHijacked(conn net.Conn, t *topic, at cursor, sent int) {
	defer c.unsubscribe(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	read := make(chan struct{})
	go func() {
		defer close(read)
		var buf [watchBufferSize]byte
		c.logClientSent(watchClient(conn, buf[:], sent))
		cancel()
	}()
	hw := &hijackedWriter{conn: conn, timeout: c.writeTimeout, last: time.Now()}
	c.stream(ctx, hw, t, at)
	conn.Close()
	// The reads count bytes for Caddy's access log, which it writes once
	// the handler returns.
	<-read
}

// A hijackedWriter writes frames as chunks to a connection taken over from
// net/http, one write each, which fails when no byte of it has moved for
// the timeout.
type hijackedWriter struct {
	conn    net.Conn
	timeout time.Duration
	buf     []byte
	last    time.Time
}

// maxKeptChunkBuffer is the largest buffer a hijackedWriter keeps between
// writes: one that a snapshot grew is dropped, or each stream would hold a
// copy of the document for its life.
const maxKeptChunkBuffer = 16 << 10

func (hw *hijackedWriter) write(frame []byte) error {
	hw.buf = appendChunk(hw.buf[:0], frame)
	err := writeMoving(hw.conn, net.Buffers{hw.buf}, hw.timeout)
	if cap(hw.buf) > maxKeptChunkBuffer {
		hw.buf = nil
	}
	if err != nil {
		return err
	}
	hw.last = time.Now()
	return nil
}

func (hw *hijackedWriter) lastWrite() time.Time { return hw.last }
