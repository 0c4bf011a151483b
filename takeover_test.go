package pollsse

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"
)

// TestClientThatSendsDataOnItsStreamIsEnded: a browser sends nothing after
// its request on a stream. A client that sends more than a few bytes,
// with its request or later, has its stream ended, on both paths whose
// connections Caddy takes over, and the other subscribers carry on.
func TestClientThatSendsDataOnItsStreamIsEnded(t *testing.T) {
	api := newFakeAPI(t, `{"n":0}`)
	paths := startCaddyOnEveryPath(t, fmt.Sprintf(
		`"upstream":%q,"interval":"100ms","heartbeat":"1h"`, api.URL))
	junk := bytes.Repeat([]byte("junk\r\n"), 1<<20)
	n := 0
	for _, p := range paths {
		if !p.takenOver {
			continue
		}
		for _, when := range []string{"after its snapshot", "with its request"} {
			t.Run(p.name+", "+when, func(t *testing.T) {
				other := openStream(t, http.DefaultClient, p.url, "")
				if ev := other.next(5 * time.Second); ev.name != "snapshot" {
					t.Fatalf("the other stream began with %+v", ev)
				}
				u, _ := url.Parse(p.url)
				conn, err := net.Dial("tcp", u.Host)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { conn.Close() })
				request := fmt.Appendf(nil, "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n\r\n", u.Path, u.Host)
				if when == "with its request" {
					request = append(request, junk[:4<<10]...)
				}
				conn.Write(request)
				conn.SetReadDeadline(time.Now().Add(10 * time.Second))
				resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
				if err != nil || resp.StatusCode != http.StatusOK {
					t.Fatalf("got %v, %v; want a stream", resp, err)
				}
				if when == "after its snapshot" {
					br := bufio.NewReader(resp.Body)
					if ev := nextNamed(t, br); ev.name != "snapshot" {
						t.Fatalf("the stream began with %+v", ev)
					}
					// The write fails once the server has closed the
					// connection.
					go conn.Write(junk)
					resp.Body = io.NopCloser(br)
				}
				if _, err := io.Copy(io.Discard, resp.Body); isTimeout(err) {
					t.Fatal("the stream of the client that sent data did not end")
				}
				n++
				api.set(fmt.Sprintf(`{"n":%d}`, n))
				if ev := other.next(5 * time.Second); ev.name != "patch" {
					t.Fatalf("the other stream got %+v, want the patch", ev)
				}
			})
		}
	}
}

func TestWatchClientReadsLittleOfAClientThatSendsData(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	go client.Write(make([]byte, 1<<20))
	counted := &countingConn{Conn: server}
	var buf [watchBufferSize]byte
	if err := watchClient(counted, buf[:], 0); err != errClientSent {
		t.Fatalf("watchClient returned %v, want errClientSent", err)
	}
	if counted.read > maxClientBytes+watchBufferSize {
		t.Errorf("read %d bytes of a client that sent 1 MiB; it may send %d", counted.read, maxClientBytes)
	}
	if most := (maxClientBytes + watchBufferSize) / watchBufferSize; counted.reads > most {
		t.Errorf("%d reads for %d bytes, want at most %d", counted.reads, counted.read, most)
	}
}

// A countingConn counts what is read from its connection.
type countingConn struct {
	net.Conn
	reads, read int
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.reads++
	c.read += n
	return n, err
}
