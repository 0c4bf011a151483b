package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Protocols that clients speak: HTTP/1.1 in clear (whose streams the
// handler takes off their goroutines), HTTP/1.1 over TLS and HTTP/2.
type proto string

const (
	protoH1  proto = "HTTP/1.1"
	protoH1S proto = "HTTP/1.1+TLS"
	protoH2  proto = "HTTP/2"
)

var protos = []proto{protoH1, protoH1S, protoH2}

// transports holds the HTTP clients of each protocol, shared by the soak's
// clients.
type transports struct {
	h1, h1Slow, h1s, h2, h2Slow *http.Client
}

// connSlot receives the TCP connection of a request, through its context,
// so that a client can reset it.
type connSlot struct {
	mu   sync.Mutex
	conn *net.TCPConn
}

type connSlotKey struct{}

func newTransports(roots *x509.CertPool) *transports {
	dialer := func(rcvbuf int) func(ctx context.Context, network, addr string) (net.Conn, error) {
		d := &net.Dialer{Timeout: 5 * time.Second}
		if rcvbuf > 0 {
			d.Control = func(_, _ string, rc syscall.RawConn) error {
				return rc.Control(func(fd uintptr) { setReceiveBuffer(fd, rcvbuf) })
			}
		}
		return func(ctx context.Context, network, addr string) (net.Conn, error) {
			// localhost is the name of the HTTPS site's certificate;
			// the sites listen on 127.0.0.1 alone.
			if host, port, err := net.SplitHostPort(addr); err == nil && host == "localhost" {
				addr = net.JoinHostPort("127.0.0.1", port)
			}
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			if slot, ok := ctx.Value(connSlotKey{}).(*connSlot); ok {
				slot.mu.Lock()
				slot.conn, _ = c.(*net.TCPConn)
				slot.mu.Unlock()
			}
			return c, nil
		}
	}
	tlsConfig := &tls.Config{RootCAs: roots, ServerName: "localhost"}
	h1 := func(rcvbuf int, secure bool) *http.Client {
		t := &http.Transport{
			DialContext:        dialer(rcvbuf),
			DisableKeepAlives:  true,
			DisableCompression: true,
			MaxConnsPerHost:    0,
		}
		if secure {
			t.TLSClientConfig = tlsConfig.Clone()
			t.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		}
		return &http.Client{Transport: t}
	}
	h2 := func(rcvbuf int) *http.Client {
		t := &http.Transport{
			DialContext:        dialer(rcvbuf),
			TLSClientConfig:    tlsConfig.Clone(),
			DisableCompression: true,
			ForceAttemptHTTP2:  true,
		}
		t.Protocols = new(http.Protocols)
		t.Protocols.SetHTTP2(true)
		return &http.Client{Transport: t}
	}
	return &transports{h1: h1(0, false), h1Slow: h1(4096, false), h1s: h1(0, true), h2: h2(0), h2Slow: h2(4096)}
}

func (ts *transports) client(p proto, slow bool) *http.Client {
	switch {
	case p == protoH1 && slow:
		return ts.h1Slow
	case p == protoH1:
		return ts.h1
	case p == protoH1S:
		return ts.h1s
	case slow:
		return ts.h2Slow
	}
	return ts.h2
}

// base returns the URL of an instance's site for a protocol.
func base(in *instance, p proto) string {
	if p == protoH1 {
		return "http://127.0.0.1:" + strconv.Itoa(in.h1Port)
	}
	return "https://localhost:" + strconv.Itoa(in.tlsPort)
}

// sessionOpts say how one stream is opened, read and left.
type sessionOpts struct {
	proto proto
	inst  *instance
	// resume is the id sent, and inQuery sends it as ?last_event_id=
	// rather than as Last-Event-ID.
	resume  resume
	inQuery bool
	// header replaces the topic's headers when set (a user who resumes
	// with another user's id keeps its own credentials).
	header map[string]string
	// until ends the stream after an event when it returns true.
	until func(c *streamCheck) bool
	// maxTime ends the stream after this long.
	maxTime time.Duration
	// rate reads the stream at about this many bytes a second (0: as
	// fast as it comes), through a socket with a small receive buffer.
	rate int
	// stall stops reading this long once the first snapshot is read, or
	// before anything is read with stallFirst.
	stall      time.Duration
	stallFirst bool
	// reset ends the stream with a TCP reset instead of a close.
	reset bool
	// onEvent is called after each event that checked out.
	onEvent func(c *streamCheck, at time.Time)
	// reader, when set, makes the stream one that keeps up, checked
	// against the latency budget.
	reader *reader
}

// A sessionResult is how a stream went.
type sessionResult struct {
	// started is when the session began.
	started time.Time
	// status is the response's status, 0 when there was none.
	status int
	body   string
	// retryAfter is the Retry-After of a refusal.
	retryAfter string
	check      *streamCheck
	// serverEnded tells whether the server ended the stream (or the
	// connection failed), rather than the client.
	serverEnded bool
	err         error
}

// session opens one stream of b's topic and checks its events until it
// ends. The result's err is a broken invariant.
func (s *soak) session(ctx context.Context, b *browser, o sessionOpts) (res sessionResult) {
	started := time.Now()
	defer func() { res.started = started }()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	slot := new(connSlot)
	ctx = context.WithValue(ctx, connSlotKey{}, slot)
	u := base(o.inst, o.proto) + b.topic.path
	if o.inQuery && o.resume.sent != "" {
		sep := "?"
		if strings.Contains(u, "?") {
			sep = "&"
		}
		u += sep + "last_event_id=" + url.QueryEscape(o.resume.sent)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return sessionResult{err: broken("request of %s: %v", u, err)}
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Cache-Control", "no-cache")
	header := b.topic.header
	if o.header != nil {
		header = o.header
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	if !o.inQuery && o.resume.sent != "" {
		req.Header.Set("Last-Event-ID", o.resume.sent)
	}
	if o.maxTime > 0 {
		t := time.AfterFunc(o.maxTime, cancel)
		defer t.Stop()
	}
	s.stats.sessions.Add(1)
	s.stats.byProto[o.proto].Add(1)
	if t := b.topic; t.up != nil && s.presence != nil {
		k := presenceKey{instance: o.inst.name(), route: t.route(), key: t.up.key}
		s.presence.opened(k, time.Now())
		defer func() { s.presence.closed(k, time.Now()) }()
	}
	resp, err := s.ts.client(o.proto, o.rate > 0).Do(req)
	if err != nil {
		return sessionResult{serverEnded: ctx.Err() == nil, body: err.Error()}
	}
	defer func() {
		if o.reset {
			slot.mu.Lock()
			if slot.conn != nil {
				slot.conn.SetLinger(0)
				slot.conn.Close()
			}
			slot.mu.Unlock()
		}
		cancel()
		resp.Body.Close()
	}()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		return sessionResult{status: resp.StatusCode, body: string(body), retryAfter: resp.Header.Get("Retry-After")}
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" || resp.Header.Get("Cache-Control") != "no-cache" {
		return sessionResult{status: resp.StatusCode, err: broken("stream of %s answered with Content-Type %q and Cache-Control %q", b.topic.name, ct, resp.Header.Get("Cache-Control"))}
	}
	if want := o.proto == protoH2; (resp.ProtoMajor == 2) != want {
		return sessionResult{status: resp.StatusCode, err: broken("stream of %s over %s answered in %s", b.topic.name, o.proto, resp.Proto)}
	}
	// A stream that ends may still have data buffered (an HTTP/2 stream's
	// window of megabytes): it is not read.
	var r io.Reader = plainReader{ctxReader{ctx, resp.Body}}
	if o.rate > 0 {
		r = &rateReader{r: r, rate: o.rate}
	}
	br := bufio.NewReaderSize(r, 32<<10)
	c := newStreamCheck(b, o.resume, s.ledger, strconv.FormatInt(s.hc.retry.Milliseconds(), 10))
	res = sessionResult{status: resp.StatusCode, check: c}
	stalled, registered := false, false
	if o.stall > 0 && o.stallFirst {
		stalled = true
		if !sleep(ctx, o.stall) {
			return res
		}
		r.(interface{ unlimit() }).unlimit()
	}
	for {
		ev, err := readEvent(br)
		if err != nil {
			res.serverEnded = ctx.Err() == nil
			return res
		}
		at := time.Now()
		if err := c.event(ev, at); err != nil {
			res.err = err
			return res
		}
		s.stats.events.Add(1)
		// A stream counts as open once it has given the browser a
		// document, or, for one that resumed with a document, at its first
		// event (a status event may be all that the log held after its
		// id).
		if r := o.reader; r != nil && (c.sawID || b.doc != nil && ev.name == "status") {
			if !registered {
				registered = true
				r.opened(at, c.b.version)
				s.readers.Store(r, nil)
				defer func() {
					s.readers.Delete(r)
					r.closed()
				}()
			} else if c.changed {
				r.changed(s, c.b.version, at)
			}
		}
		if o.onEvent != nil {
			o.onEvent(c, at)
		}
		if o.until != nil && o.until(c) {
			return res
		}
		if o.stall > 0 && !stalled && c.snapshots > 0 {
			stalled = true
			select {
			case <-ctx.Done():
				return res
			case <-time.After(o.stall):
			}
			// What was sent meanwhile is read as fast as it comes, to the
			// end that the server may have made of the stream.
			r.(interface{ unlimit() }).unlimit()
		}
	}
}

// A rateReader reads about rate bytes a second.
type rateReader struct {
	r    io.Reader
	rate int
	free bool
}

func (rr *rateReader) Read(p []byte) (int, error) {
	if rr.free {
		return rr.r.Read(p)
	}
	chunk := max(rr.rate/20, 256)
	if len(p) > chunk {
		p = p[:chunk]
	}
	n, err := rr.r.Read(p)
	time.Sleep(time.Duration(n) * time.Second / time.Duration(rr.rate))
	return n, err
}

func (rr *rateReader) unlimit() { rr.free = true }

// A ctxReader reads until its context ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (cr ctxReader) Read(p []byte) (int, error) {
	if err := cr.ctx.Err(); err != nil {
		return 0, err
	}
	return cr.r.Read(p)
}

// A plainReader reads as fast as data comes, and has nothing to unlimit.
type plainReader struct{ io.Reader }

func (plainReader) unlimit() {}

// errUnexpectedStatus describes a refusal that a client did not expect.
func unexpected(b *browser, res sessionResult) error {
	return broken("stream of %s answered %d: %s", b.topic.name, res.status, strings.TrimSpace(res.body))
}

// sleep waits d or until ctx ends, and tells whether ctx is still going.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
