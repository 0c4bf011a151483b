package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// A client is one EventSource subscriber: one connection of its own (TCP,
// TLS over TCP, or QUIC), a small buffer and a minimal parser, so that
// 10,000 of them cost the shared cores as little as possible. It runs on one
// goroutine that blocks in Read.
type client struct {
	topic int
	// slow clients stop reading once they have their snapshot.
	slow bool
	// conn closes the client's connection.
	conn atomic.Pointer[io.Closer]
	// lat[k-1] is the latency of the event of sequence k in microseconds,
	// -1 until received.
	lat []atomic.Int32
	// snapshots counts the snapshot events received: more than one means
	// the client was resynced.
	snapshots atomic.Int32
	// head is the start of the frame being received; prevLF tells whether
	// the last byte received was a line feed.
	head   []byte
	prevLF bool
}

// A swarm is the clients of one trial and their shared counters.
type swarm struct {
	base    string // http://host:port of the server
	path    string // path prefix; the topic's number follows it
	clients []*client
	// received[k-1] counts the clients that received event k.
	received  []atomic.Int64
	connected atomic.Int64 // clients that received a snapshot
	failed    atomic.Int64 // clients whose connection failed or ended
	retried   atomic.Int64 // connection attempts made again
	lastSnap  atomic.Int64 // unix ns of the last first snapshot
	// slowRcvBuf is the receive buffer slow clients ask for (0: the
	// system's), so that the server's writes to them block after less
	// data than megabytes of kernel buffers.
	slowRcvBuf int
	// hub is set when the server is a hub that sends no snapshot: a
	// client counts as connected once it has the response headers, and
	// every event with a seq is a change.
	hub bool
	// proto is how each client reaches the server (proto.go).
	proto *protocol
	// spread is set when the clients of each topic dial from a loopback
	// address of their own (dialer).
	spread bool
}

// readBuffer is each client's read buffer: enough for the response headers.
const readBuffer = 2048

// newSwarm makes topics×perTopic clients; every slowEvery-th of them (none
// when 0) is slow.
func newSwarm(base, path string, topics, perTopic, events, slowEvery int) *swarm {
	s := &swarm{base: base, path: path, received: make([]atomic.Int64, events), proto: &protocol{version: 1}, spread: topics > 1 && loopback(base)}
	for i := 0; i < topics*perTopic; i++ {
		c := &client{topic: i % topics, lat: make([]atomic.Int32, events)}
		c.slow = slowEvery > 0 && i%slowEvery == slowEvery-1
		for k := range c.lat {
			c.lat[k].Store(-1)
		}
		s.clients = append(s.clients, c)
	}
	return s
}

// connect opens every client's stream, at most inFlight attempts at a time,
// and waits until each has its snapshot or failed, or ctx ends.
func (s *swarm) connect(ctx context.Context, inFlight int) error {
	host := s.base[strings.Index(s.base, "://")+3:]
	sem := make(chan struct{}, inFlight)
	for _, c := range s.clients {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		go c.run(s, host, sem)
	}
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		if s.connected.Load()+s.failed.Load() >= int64(len(s.clients)) {
			if f := s.failed.Load(); f > 0 {
				return fmt.Errorf("%d of %d connections failed", f, len(s.clients))
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d of %d clients connected: %w", s.connected.Load(), len(s.clients), ctx.Err())
		case <-tick.C:
		}
	}
}

func (c *client) run(s *swarm, host string, sem chan struct{}) {
	release := func() {
		if sem != nil {
			<-sem
			sem = nil
		}
	}
	defer release()
	path := s.path
	if strings.HasSuffix(path, "/") {
		path += strconv.Itoa(c.topic)
	}
	var body io.Reader
	var err error
	// A connection that fails before its response (a handshake lost on a
	// machine this loaded) is tried again, twice, and counted.
	for try := 0; try < 3; try++ {
		if try > 0 {
			s.retried.Add(1)
			if conn := c.conn.Load(); conn != nil {
				(*conn).Close()
			}
		}
		switch s.proto.version {
		case 2, 3:
			body, err = s.proto.openStream(c, host, path, s.dialer(c))
		default:
			body, err = c.openHTTP1(s, host, path)
		}
		if err == nil {
			break
		}
	}
	if err != nil {
		s.failed.Add(1)
		return
	}
	release()
	now := time.Now().UnixNano()
	if s.hub {
		c.snapshots.Add(1)
		s.connected.Add(1)
		s.lastSnap.Store(now)
	}
	if b, ok := body.(*headBody); ok {
		c.parse(s, b.rest, now)
		body = b.r
	}
	buf := make([]byte, readBuffer)
	for {
		if c.slow && c.snapshots.Load() > 0 {
			return // stop reading; the connection stays open
		}
		n, err := body.Read(buf)
		if n > 0 {
			c.parse(s, buf[:n], time.Now().UnixNano())
		}
		if err != nil {
			break
		}
	}
	if c.snapshots.Load() == 0 {
		s.failed.Add(1)
	}
}

// dialer returns the dialer of client c. With several topics on a loopback
// server, the clients of topic k dial from 127.0.0.(2 + k mod 250), as
// the browsers of different users would come from addresses of their own:
// the server's max_new_topics, which counts the new topics of each client
// address, then sees at most a few new topics per address.
func (s *swarm) dialer(c *client) net.Dialer {
	d := net.Dialer{Timeout: 10 * time.Second}
	if s.spread {
		d.LocalAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+c.topic%250))}
	}
	return d
}

// loopback tells whether base, http(s)://host:port, names a loopback
// address.
func loopback(base string) bool {
	u, err := url.Parse(base)
	if err != nil {
		return false
	}
	ip := net.ParseIP(u.Hostname())
	return ip != nil && ip.IsLoopback()
}

// A headBody is the body of an HTTP/1.1 response: what was read with the
// headers, then the connection.
type headBody struct {
	rest []byte
	r    io.Reader
}

func (b *headBody) Read(p []byte) (int, error) { return b.r.Read(p) }

// openHTTP1 opens the client's stream over a connection of its own, TCP or
// TLS, with a request written by hand, and returns its body once the
// response headers are read.
func (c *client) openHTTP1(s *swarm, host, path string) (io.Reader, error) {
	d := s.dialer(c)
	if c.slow && s.slowRcvBuf > 0 {
		d.Control = rcvBufControl(s.slowRcvBuf)
	}
	nc, err := d.Dial("tcp", host)
	if err != nil {
		return nil, err
	}
	conn := nc
	if s.proto.tls {
		tc := tls.Client(nc, s.proto.tlsConfig("http/1.1"))
		conn = tc
		c.setCloser(conn)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			return nil, err
		}
	}
	c.setCloser(conn)
	req := "GET " + path + " HTTP/1.1\r\nHost: " + host +
		"\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
	if _, err := conn.Write([]byte(req)); err != nil {
		return nil, err
	}
	buf := make([]byte, readBuffer)
	fill := 0
	for {
		// The response headers, kept whole.
		n, err := conn.Read(buf[fill:])
		fill += n
		if err != nil {
			return nil, err
		}
		i := bytes.Index(buf[:fill], []byte("\r\n\r\n"))
		if i < 0 {
			if fill == len(buf) {
				return nil, fmt.Errorf("response headers of more than %d bytes", len(buf))
			}
			continue
		}
		if !bytes.HasPrefix(buf, []byte("HTTP/1.1 200")) {
			return nil, fmt.Errorf("response %q", buf[:min(fill, 40)])
		}
		return &headBody{rest: buf[i+4 : fill], r: conn}, nil
	}
}

func (c *client) setCloser(x io.Closer) { c.conn.Store(&x) }

// frameHead is how much of each frame a client keeps: enough for the chunk
// size line, the event and id fields and the start of the data, where seq
// and ts are. The rest of a large frame is skipped unread.
const frameHead = 256

// parse splits data, the next bytes of the body received at now, into
// frames at each blank line, keeping only the head of each frame.
func (c *client) parse(s *swarm, data []byte, now int64) {
	for len(data) > 0 {
		if c.prevLF && data[0] == '\n' {
			c.frame(s, c.head, now)
			c.head, c.prevLF, data = c.head[:0], false, data[1:]
			continue
		}
		i := bytes.Index(data, []byte("\n\n"))
		if i < 0 {
			c.keep(data)
			c.prevLF = data[len(data)-1] == '\n'
			return
		}
		c.keep(data[:i])
		c.frame(s, c.head, now)
		c.head, c.prevLF, data = c.head[:0], false, data[i+2:]
	}
}

func (c *client) keep(b []byte) {
	if c.head == nil {
		c.head = make([]byte, 0, frameHead)
	}
	c.head = append(c.head, b[:min(len(b), cap(c.head)-len(c.head))]...)
}

// frame handles one event (or comment) as received at now, in unix ns: a
// snapshot or patch carrying a change records its latency. The
// response is chunked: a frame may start with the chunk framing, which the
// search for the event name skips.
func (c *client) frame(s *swarm, f []byte, now int64) {
	switch {
	case bytes.Contains(f, []byte("event: patch\n")):
	case bytes.Contains(f, []byte("event: snapshot\n")):
		if c.snapshots.Add(1) == 1 {
			s.connected.Add(1)
			s.lastSnap.Store(now)
		}
	case s.hub && bytes.Contains(f, []byte("data: ")):
	default:
		return
	}
	seq, ok := field(f, "seq=")
	ts, ok2 := field(f, " ts=")
	if !ok || !ok2 || seq < 1 || int(seq) > len(c.lat) {
		return
	}
	lat := (now - ts) / 1000
	if c.lat[seq-1].Load() < 0 {
		c.lat[seq-1].Store(int32(min(lat, 1<<31-1)))
		s.received[seq-1].Add(1)
	}
}

// field parses the decimal number after the first occurrence of name in f.
func field(f []byte, name string) (int64, bool) {
	i := bytes.Index(f, []byte(name))
	if i < 0 {
		return 0, false
	}
	var v int64
	j := i + len(name)
	for ; j < len(f) && f[j] >= '0' && f[j] <= '9'; j++ {
		v = v*10 + int64(f[j]-'0')
	}
	return v, j > i+len(name)
}

// close ends every client's connection.
func (s *swarm) close() {
	for _, c := range s.clients {
		if conn := c.conn.Load(); conn != nil {
			(*conn).Close()
		}
	}
	s.proto.close()
}
