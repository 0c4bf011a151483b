package pollsse

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// startCaddyWithAccessLogs runs Caddy with the routes on two servers whose
// requests it logs, a plain one and an HTTPS one, its log at INFO in a
// JSON file, and returns their base URLs and the file.
func startCaddyWithAccessLogs(t *testing.T, routes string) (plain, secure, logFile string) {
	t.Helper()
	cert, key := selfSignedPEM(t)
	certJSON, _ := json.Marshal(cert)
	keyJSON, _ := json.Marshal(key)
	logFile = filepath.Join(t.TempDir(), "caddy.log")
	p, s := freePort(t), freePort(t)
	cfg := fmt.Sprintf(`{
		"admin": {"disabled": true},
		"storage": {"module": "file_system", "root": %q},
		"logging": {"logs": {"default": {"level": "INFO", "writer": {"output": "file", "filename": %q, "roll": false}, "encoder": {"format": "json"}}}},
		"apps": {
			"tls": {"certificates": {"load_pem": [{"certificate": %s, "key": %s, "tags": ["test"]}]}},
			"http": {"servers": {
				"plain": {"listen": ["127.0.0.1:%d"], "automatic_https": {"disable": true}, "logs": {}, "routes": [%s]},
				"secure": {
					"listen": ["127.0.0.1:%d"],
					"protocols": ["h1", "h2"],
					"automatic_https": {"disable": true},
					"tls_connection_policies": [{"certificate_selection": {"any_tag": ["test"]}}],
					"logs": {},
					"routes": [%[6]s]
				}
			}}
		}
	}`, t.TempDir(), logFile, certJSON, keyJSON, p, routes, s)
	if err := caddy.Load([]byte(cfg), true); err != nil {
		t.Fatalf("loading config: %v", err)
	}
	t.Cleanup(func() {
		stopCaddy(t)
		assertNoStreamGoroutines(t)
	})
	return fmt.Sprintf("http://127.0.0.1:%d", p), fmt.Sprintf("https://127.0.0.1:%d", s), logFile
}

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
// plain HTTP/1.1 and HTTPS, a stream is served by its topic's group like one
// without (where streams are taken over), and its access log line is
// written when the stream ends, with status 200, the stream's real duration
// and the bytes written to it.
func TestAccessLogLineOfAStreamIsWrittenWhenItEnds(t *testing.T) {
	api := newFakeAPI(t, `{"n":0}`)
	plain, secure, logFile := startCaddyWithAccessLogs(t, pollSSERoute("/events", fmt.Sprintf(
		`"upstream":%q,"interval":"100ms","heartbeat":"1h"`, api.URL)))
	grouped := canDetach && canMeasureRoom
	n := 0
	for _, base := range []string{plain, secure} {
		t.Run(base[:strings.Index(base, ":")], func(t *testing.T) {
			uri := fmt.Sprintf("/events?client=%d", n)
			host := base[strings.Index(base, "//")+2:]
			conn, err := net.Dial("tcp", host)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if strings.HasPrefix(base, "https") {
				conn = tls.Client(conn, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
			}
			fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n\r\n", uri, host)
			conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			wire := &countingReader{r: conn}
			br := bufio.NewReader(wire)
			resp, err := http.ReadResponse(br, nil)
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("got %v, %v; want a stream", resp, err)
			}
			headers := wire.n - br.Buffered()
			body := bufio.NewReader(resp.Body)
			var payload int
			ev := nextNamed(t, body)
			if ev.name != "snapshot" {
				t.Fatalf("the stream began with %+v", ev)
			}
			payload += len(encodeEvent(ev.name, ev.id, []byte(ev.data)))
			// The handler had the request before the client had this.
			snapshotAt := time.Now()

			buf := make([]byte, 1<<20)
			stacks := string(buf[:runtime.Stack(buf, true)])
			follow := strings.Count(stacks, "caddy-pollsse.(*subscriber).follow(")
			groups := strings.Count(stacks, "caddy-pollsse.(*connGroup).run(")
			if grouped && (follow != 0 || groups != 1) {
				t.Errorf("%d streams on goroutines of their own and %d groups, want the stream in its topic's group", follow, groups)
			}
			if got := accessLines(t, logFile, uri); len(got) != 0 {
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
			conn.Close()

			var line accessLine
			waitFor(t, 5*time.Second, "the stream's access log line", func() bool {
				got := accessLines(t, logFile, uri)
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
