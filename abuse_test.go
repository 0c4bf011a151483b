package pollsse

import (
	"fmt"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestSlowlorisAndSilentConnectionsAreBoundedByCaddysTimeouts opens, beside
// a subscriber, 200 connections that send their request a byte a second
// (slowloris) and 1,000 that send nothing: none of them reaches the handler,
// each costs Caddy one goroutine until its read_header timeout closes it,
// and the subscriber receives every change meanwhile.
func TestSlowlorisAndSilentConnectionsAreBoundedByCaddysTimeouts(t *testing.T) {
	const (
		slowloris  = 200
		silent     = 1000
		readHeader = 2 * time.Second
	)
	api := newFakeAPI(t, `{"v":0}`)
	base := startCaddy(t, "["+pollSSERoute("/events", fmt.Sprintf(`"upstream":%q,"interval":"100ms"`, api.URL))+"]",
		withServerFields(fmt.Sprintf(`"read_header_timeout":%q`, readHeader.String())))
	addr := strings.TrimPrefix(base, "http://")
	sub := openStream(t, http.DefaultClient, base+"/events", "")
	if ev := sub.next(5 * time.Second); ev.name != "snapshot" {
		t.Fatalf("the subscriber began with %+v", ev)
	}
	polls := api.count.Load()
	goroutines := runtime.NumGoroutine()

	var wg sync.WaitGroup
	var closed, answered atomic.Int32
	var slowest atomic.Int64
	// watch reads c until Caddy closes it, and notes what it was sent.
	watch := func(c net.Conn, opened time.Time) {
		defer wg.Done()
		defer c.Close()
		c.SetReadDeadline(opened.Add(readHeader + 10*time.Second))
		var buf [512]byte
		n, err := c.Read(buf[:])
		if n > 0 && strings.HasPrefix(string(buf[:n]), "HTTP/1.1 200") {
			answered.Add(1)
		}
		for err == nil {
			_, err = c.Read(buf[:])
		}
		if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
			closed.Add(1)
			if d := int64(time.Since(opened)); d > slowest.Load() {
				slowest.Store(d)
			}
		}
	}
	request := "GET /events HTTP/1.1\r\nHost: " + addr + "\r\nAccept: text/event-stream\r\n\r\n"
	stop := make(chan struct{})
	for range slowloris {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(2)
		go watch(c, time.Now())
		go func() {
			defer wg.Done()
			for i := 0; i < len(request); i++ {
				if _, err := c.Write([]byte{request[i]}); err != nil {
					return
				}
				select {
				case <-stop:
					return
				case <-time.After(time.Second):
				}
			}
		}()
	}
	for range silent {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go watch(c, time.Now())
	}
	// While they hang on, the subscriber gets every change.
	during := runtime.NumGoroutine()
	for v := 1; v <= 5; v++ {
		api.set(fmt.Sprintf(`{"v":%d}`, v))
		if ev := sub.next(10 * time.Second); ev.name != "patch" || !strings.Contains(ev.data, fmt.Sprintf(`"value":%d`, v)) {
			t.Fatalf("during the attack the subscriber got %+v for change %d", ev, v)
		}
	}
	wg.Wait()
	close(stop)
	if n := closed.Load(); n != slowloris+silent {
		t.Errorf("Caddy closed %d of the %d connections within %s of their read_header timeout", n, slowloris+silent, 10*time.Second)
	}
	if n := answered.Load(); n != 0 {
		t.Errorf("%d slowloris connections got a stream", n)
	}
	t.Logf("the test process had %d goroutines before, %d during the attack (one per connection of Caddy and of the test); the slowest connection was closed after %s",
		goroutines, during, time.Duration(slowest.Load()).Round(time.Millisecond))
	// Each connection costs Caddy's server one goroutine, and the test two
	// at most (the reader and the slow writer): nothing of the handler.
	if bound := goroutines + 3*(slowloris+silent) + 50; during > bound {
		t.Errorf("%d goroutines during the attack, more than %d", during, bound)
	}
	waitFor(t, 10*time.Second, "the goroutines of the connections to end", func() bool { return runtime.NumGoroutine() <= goroutines+10 })
	// The handler saw no request of theirs: the topic's polls went on at
	// the interval, for the subscriber alone.
	if ev, ok := sub.nextOrTimeout(200 * time.Millisecond); ok {
		t.Errorf("the subscriber got %+v after the changes", ev)
	}
	if got := api.count.Load() - polls; got == 0 {
		t.Error("the topic was not polled during the attack")
	}
}

// TestClientsThatHalfCloseTheirStreamEndIt sends 500 stream requests, each
// followed at once by the end of the client's side of the connection (a
// shutdown for writing, as a client that vanishes half-way may leave it):
// each stream ends, and the handler holds nothing of them afterwards.
func TestClientsThatHalfCloseTheirStreamEndIt(t *testing.T) {
	const clients = 500
	api := newFakeAPI(t, `{"v":0}`)
	base := startCaddy(t, "["+pollSSERoute("/events", fmt.Sprintf(`"upstream":%q,"interval":"100ms"`, api.URL))+"]")
	addr := strings.TrimPrefix(base, "http://")
	sub := openStream(t, http.DefaultClient, base+"/events", "")
	sub.next(5 * time.Second)
	goroutines := runtime.NumGoroutine()
	var wg sync.WaitGroup
	var ended atomic.Int32
	for range clients {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			fmt.Fprintf(c, "GET /events HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n\r\n", addr)
			c.(*net.TCPConn).CloseWrite()
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			var buf [4096]byte
			for {
				_, err := c.Read(buf[:])
				if err != nil {
					if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
						ended.Add(1)
					}
					return
				}
			}
		}()
	}
	wg.Wait()
	if n := ended.Load(); n != clients {
		t.Errorf("%d of %d half-closed streams ended within 10s", n, clients)
	}
	waitFor(t, 10*time.Second, "the goroutines of the streams to end", func() bool { return runtime.NumGoroutine() <= goroutines+10 })
	// The subscriber that stays still gets the next change.
	api.set(`{"v":1}`)
	if ev := sub.next(5 * time.Second); ev.name != "patch" {
		t.Fatalf("the subscriber got %+v", ev)
	}
}
