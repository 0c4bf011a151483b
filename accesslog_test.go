package pollsse

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// An accessLine is what a test reads of an access log line.
type accessLine struct {
	Logger   string  `json:"logger"`
	Msg      string  `json:"msg"`
	Status   int     `json:"status"`
	Size     int     `json:"size"`
	Duration float64 `json:"duration"`
	Request  struct {
		URI string `json:"uri"`
	} `json:"request"`
}

// accessLines returns the access log lines of uri in the JSON log file.
func accessLines(t *testing.T, logFile, uri string) []accessLine {
	t.Helper()
	b, err := os.ReadFile(logFile)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var lines []accessLine
	for _, raw := range bytes.Split(b, []byte("\n")) {
		var l accessLine
		if json.Unmarshal(raw, &l) == nil && strings.HasPrefix(l.Logger, "http.log.access") && l.Request.URI == uri {
			lines = append(lines, l)
		}
	}
	return lines
}

// TestAccessLogLineOfAStreamIsWrittenWhenItEnds: on a site with `log`, over
// plain HTTP/1.1, HTTPS with HTTP/1.1 and HTTP/2, a stream is served as on
// one without (by its topic's group where streams are taken over), and its
// access log line is written when the stream ends, with status 200, the
// stream's real duration and the bytes written to it.
func TestAccessLogLineOfAStreamIsWrittenWhenItEnds(t *testing.T) {
	api := newFakeAPI(t, `{"n":0}`)
	paths := startCaddyOnEveryPath(t, fmt.Sprintf(`"upstream":%q,"interval":"100ms","heartbeat":"1h"`, api.URL))
	n := 0
	for _, p := range paths {
		if p.accessLog == "" {
			continue
		}
		t.Run(p.name, func(t *testing.T) {
			uri := fmt.Sprintf("/events?client=%d", n)
			// body is the stream's body; wire counts what reached the
			// client, with the chunks' framing over HTTP/1.1, of which
			// headers bytes were the response's head.
			var body *bufio.Reader
			var wire *countingReader
			var headers int
			var end func()
			if strings.HasPrefix(p.name, "HTTP/2") {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(p.url, "/events")+uri, nil)
				resp, err := p.client().Do(req)
				if err != nil || resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 {
					t.Fatalf("got %v, %v; want an HTTP/2 stream", resp, err)
				}
				wire = &countingReader{r: resp.Body}
				body = bufio.NewReader(wire)
				end = func() { resp.Body.Close() }
			} else {
				u, _ := url.Parse(p.url)
				conn, err := net.Dial("tcp", u.Host)
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				if u.Scheme == "https" {
					conn = tls.Client(conn, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
				}
				fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n\r\n", uri, u.Host)
				conn.SetReadDeadline(time.Now().Add(10 * time.Second))
				wire = &countingReader{r: conn}
				br := bufio.NewReader(wire)
				resp, err := http.ReadResponse(br, nil)
				if err != nil || resp.StatusCode != http.StatusOK {
					t.Fatalf("got %v, %v; want a stream", resp, err)
				}
				headers = wire.n - br.Buffered()
				body = bufio.NewReader(resp.Body)
				end = func() { conn.Close() }
			}
			var payload int
			ev := nextNamed(t, body)
			if ev.name != "snapshot" {
				t.Fatalf("the stream began with %+v", ev)
			}
			payload += len(encodeEvent(ev.name, ev.id, []byte(ev.data)))
			// The handler had the request before the client had this.
			snapshotAt := time.Now()

			if p.takenOver {
				buf := make([]byte, 1<<20)
				stacks := string(buf[:runtime.Stack(buf, true)])
				follow := strings.Count(stacks, "caddy-pollsse.(*subscriber).follow(")
				groups := strings.Count(stacks, "caddy-pollsse.(*connGroup).run(")
				if follow != 0 || groups != 1 {
					t.Errorf("%d streams on goroutines of their own and %d groups, want the stream in its topic's group", follow, groups)
				}
			}
			if got := accessLines(t, p.accessLog, uri); len(got) != 0 {
				t.Fatalf("the access log has %+v while the stream is open, want its line when it ends", got)
			}

			n++
			api.set(fmt.Sprintf(`{"n":%d}`, n))
			if ev = nextNamed(t, body); ev.name != "patch" {
				t.Fatalf("got %+v, want the patch", ev)
			}
			payload += len(encodeEvent(ev.name, ev.id, []byte(ev.data)))
			// The handler returns after this.
			held := time.Since(snapshotAt)
			end()

			var line accessLine
			waitFor(t, 5*time.Second, "the stream's access log line", func() bool {
				got := accessLines(t, p.accessLog, uri)
				if len(got) == 1 {
					line = got[0]
				}
				return len(got) == 1
			})
			received := wire.n - headers
			if line.Status != http.StatusOK || line.Msg != "handled request" {
				t.Errorf("logged status %d, %q; want 200, handled request", line.Status, line.Msg)
			}
			// What the handler wrote: the events and the retry field, and
			// no more than reached the client with the chunks' framing.
			if written := len(retryFrame(3*time.Second)) + payload; line.Size < written || line.Size > received {
				t.Errorf("logged %d bytes; the stream wrote %d bytes of fields, %d on the wire", line.Size, written, received)
			}
			if d := time.Duration(line.Duration * float64(time.Second)); d < held {
				t.Errorf("logged a duration of %v for a stream that went on for %v after its snapshot", d, held)
			}
		})
	}
}

// A countingReader counts what is read through it.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}
