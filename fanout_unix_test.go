//go:build unix

// The tests of the streams that the handler takes over from net/http,
// which it does on the systems that can write a socket without blocking
// (canDetach).

package pollsse

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"
)

// limitSocket sets the receive buffer of the socket of rc to rcvbuf bytes,
// and its largest segment to mss bytes unless mss is 0, for a net.Dialer's
// Control.
func limitSocket(rc syscall.RawConn, rcvbuf, mss int) error {
	return rc.Control(func(fd uintptr) {
		syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf)
		if mss > 0 {
			syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_MAXSEG, mss)
		}
	})
}

// TestHTTP1StreamsAreServedByTheirGroup: on every HTTP/1.1 path, plain,
// logged and HTTPS, the streams of a topic are written by its group, none on
// a goroutine of its own, and each client is watched for leaving: on Linux
// by the process's watcher, with no goroutine per stream, elsewhere by a
// small goroutine of its own, or, where Caddy counts the bytes, by its
// request's, which returns when the stream ends so that the access log has
// the stream's real duration.
func TestHTTP1StreamsAreServedByTheirGroup(t *testing.T) {
	api := newFakeAPI(t, `{"a":1}`)
	paths := startCaddyOnEveryPath(t, fmt.Sprintf(`"upstream":%q,"interval":"100ms","heartbeat":"1h"`, api.URL))
	v := 1
	for _, p := range paths {
		if !p.takenOver {
			continue
		}
		t.Run(p.name, func(t *testing.T) {
			var streams []*streamClient
			for range 10 {
				sc := openStream(t, p.client(), p.url, "")
				if ev := sc.next(5 * time.Second); ev.name != "snapshot" {
					t.Fatalf("a stream began with %+v", ev)
				}
				streams = append(streams, sc)
			}
			expectServedByGroups(t, 1)
			// A logged stream's request goroutine gets to its watch after
			// it has written the snapshot.
			waitFor(t, 5*time.Second, "each of the 10 clients watched", func() bool {
				goroutines, _, byWatcher := watchedClients()
				return goroutines+byWatcher == 10
			})
			if goroutines, _, _ := watchedClients(); watcherWatches && goroutines != 0 {
				t.Errorf("%d clients are watched by goroutines of their own, want none: the process's watcher watches them", goroutines)
			}
			v++
			api.set(fmt.Sprintf(`{"a":%d}`, v))
			for i, sc := range streams {
				if ev := sc.next(5 * time.Second); ev.name != "patch" || !sameJSON(ev.data, fmt.Sprintf(`[{"op":"replace","path":"/a","value":%d}]`, v)) {
					t.Fatalf("client %d got %+v, want the patch", i, ev)
				}
			}
			for _, sc := range streams {
				sc.close()
			}
			waitFor(t, 5*time.Second, "the streams to end with the heartbeat an hour away", func() bool { return streamGoroutines() == 0 })
		})
	}
}

func TestHTTP1StreamsAreServedWithoutAGoroutineEach(t *testing.T) {
	api := newFakeAPI(t, `{"a":1}`)
	base := startCaddy(t, "["+pollSSERoute("/events", fmt.Sprintf(`"upstream":%q,"interval":"100ms","heartbeat":"1h"`, api.URL))+"]")
	streams := openStreams(t, base+"/events", 20)
	expectServedByGroups(t, 1)
	api.set(`{"a":2}`)
	for i, sc := range streams {
		if ev := sc.next(5 * time.Second); ev.name != "patch" || !sameJSON(ev.data, `[{"op":"replace","path":"/a","value":2}]`) {
			t.Fatalf("client %d got %+v, want the patch", i, ev)
		}
	}
}

// TestClientThatSendsDataOnItsStreamIsEnded: a browser sends nothing after
// its request on a stream. A client that sends more than a few bytes,
// with its request or later, has its stream ended, on every path whose
// connections Caddy takes over (over TLS, what it sends is counted as the
// records on the socket), and the other subscribers carry on.
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
				other := openStream(t, p.client(), p.url, "")
				if ev := other.next(5 * time.Second); ev.name != "snapshot" {
					t.Fatalf("the other stream began with %+v", ev)
				}
				u, _ := url.Parse(p.url)
				conn, err := net.Dial("tcp", u.Host)
				if err != nil {
					t.Fatal(err)
				}
				if u.Scheme == "https" {
					conn = tls.Client(conn, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
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

// TestStreamsThatTheAccessLogSkipsReturnTheirRequests: on a logged host, a
// stream whose request the access log skips (`log_skip`) has no line to
// wait for, so its handler returns as on a host without logs: its client is
// watched as there, and its request's goroutine is gone. No access log line
// is written for it.
func TestStreamsThatTheAccessLogSkipsReturnTheirRequests(t *testing.T) {
	api := newFakeAPI(t, `{"a":1}`)
	route := fmt.Sprintf(`{"match":[{"path":["/events"]}],"handle":[{"handler":"vars","log_skip":true},{"handler":"poll_sse","upstream":%q,"interval":"100ms","heartbeat":"1h"}]}`, api.URL)
	base, log := startCaddyAtDebug(t, "["+route+"]", withAccessLogs(`{}`))
	streams := openStreams(t, base+"/events", 5)
	watching := func() (watches, inRequests int) {
		goroutines, inRequests, byWatcher := watchedClients()
		return goroutines + byWatcher, inRequests
	}
	waitFor(t, 5*time.Second, "each of the 5 clients watched", func() bool {
		n, _ := watching()
		return n == 5
	})
	if _, n := watching(); n != 0 {
		t.Errorf("%d of the 5 clients are watched from their requests' goroutines, want none", n)
	}
	api.set(`{"a":2}`)
	for i, sc := range streams {
		if ev := sc.next(5 * time.Second); ev.name != "patch" {
			t.Fatalf("client %d got %+v, want the patch", i, ev)
		}
	}
	for _, sc := range streams {
		sc.close()
	}
	waitFor(t, 5*time.Second, "the streams to end", func() bool { return streamGoroutines() == 0 })
	for _, l := range log.lines() {
		if strings.HasPrefix(l.Logger, "http.log.access") {
			t.Errorf("the access log has a line for a request it skips: %+v", l)
		}
	}
}
