package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"golang.org/x/net/http2"
)

// A protocol is how the clients reach the server: plain HTTP/1.1, or HTTPS
// with HTTP/1.1, HTTP/2 or HTTP/3. Every client has a connection of its
// own whatever the protocol, as every browser has.
type protocol struct {
	tls     bool
	version int // 1, 2 or 3
	// roots verifies the server's certificate; nil skips verification.
	roots *x509.CertPool
	// serverName is the name the clients ask for in the TLS handshake.
	serverName string

	// quic are the UDP sockets that the HTTP/3 clients share, each socket
	// carrying the QUIC connections of many clients.
	mu   sync.Mutex
	quic []*quic.Transport
	next atomic.Uint64
}

// name says which path a figure is for.
func (p *protocol) name() string {
	switch {
	case p.version == 3:
		return "HTTPS, HTTP/3"
	case p.version == 2:
		return "HTTPS, HTTP/2"
	case p.tls:
		return "HTTPS, HTTP/1.1"
	default:
		return "plain HTTP/1.1"
	}
}

func (p *protocol) tlsConfig(alpn string) *tls.Config {
	return &tls.Config{
		ServerName:         p.serverName,
		RootCAs:            p.roots,
		InsecureSkipVerify: p.roots == nil,
		NextProtos:         []string{alpn},
	}
}

// loadRoots reads the PEM certificates of file as the clients' roots.
func loadRoots(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s holds no PEM certificate", file)
	}
	return pool, nil
}

// openStream opens the stream of client c over HTTP/2 or HTTP/3, on a
// connection of its own (over TCP from nd), and returns the response's body.
func (p *protocol) openStream(c *client, host, path string, nd net.Dialer) (io.Reader, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, err := http.NewRequest(http.MethodGet, "https://"+host+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Cache-Control", "no-cache")
	var resp *http.Response
	if p.version == 2 {
		d := tls.Dialer{NetDialer: &nd, Config: p.tlsConfig("h2")}
		conn, err := d.DialContext(ctx, "tcp", host)
		if err != nil {
			return nil, err
		}
		c.setCloser(conn)
		if proto := conn.(*tls.Conn).ConnectionState().NegotiatedProtocol; proto != "h2" {
			return nil, fmt.Errorf("the server chose %q, not h2", proto)
		}
		cc, err := (&http2.Transport{}).NewClientConn(conn)
		if err != nil {
			return nil, err
		}
		resp, err = cc.RoundTrip(req)
		if err != nil {
			return nil, err
		}
	} else {
		qc, err := p.quicTransport().Dial(ctx, mustUDPAddr(host), p.tlsConfig(http3.NextProtoH3),
			&quic.Config{MaxIdleTimeout: 5 * time.Minute, KeepAlivePeriod: 0})
		if err != nil {
			return nil, err
		}
		c.setCloser(closerFunc(func() error { return qc.CloseWithError(0, "") }))
		cc := (&http3.Transport{}).NewClientConn(qc)
		resp, err = cc.RoundTrip(req)
		if err != nil {
			return nil, err
		}
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("response %s", resp.Status)
	}
	return resp.Body, nil
}

// quicSockets is how many UDP sockets the HTTP/3 clients share.
const quicSockets = 16

func (p *protocol) quicTransport() *quic.Transport {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.quic == nil {
		for range quicSockets {
			pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				panic(err)
			}
			p.quic = append(p.quic, &quic.Transport{Conn: pc})
		}
	}
	return p.quic[p.next.Add(1)%quicSockets]
}

func (p *protocol) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, t := range p.quic {
		t.Close()
	}
	p.quic = nil
}

func mustUDPAddr(host string) *net.UDPAddr {
	a, err := net.ResolveUDPAddr("udp", host)
	if err != nil {
		panic(err)
	}
	return a
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

// parseProtocol makes the protocol of the flags.
func parseProtocol(useTLS, h2, h3 bool, caFile, serverName string) (*protocol, error) {
	p := &protocol{tls: useTLS || h2 || h3, version: 1, serverName: serverName}
	switch {
	case h2 && h3:
		return nil, fmt.Errorf("-h2 and -h3 are two paths: choose one")
	case h2:
		p.version = 2
	case h3:
		p.version = 3
	}
	if caFile != "" {
		roots, err := loadRoots(caFile)
		if err != nil {
			return nil, err
		}
		p.roots = roots
	}
	if p.serverName == "" {
		p.serverName = "localhost"
	}
	return p, nil
}
