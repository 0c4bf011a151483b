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
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"go.uber.org/zap"
)

func TestHeartbeat(t *testing.T) {
	api := newFakeAPI(t, `{"a":1}`)
	base := startCaddy(t, "["+pollSSERoute("/events", fmt.Sprintf(`"upstream":%q,"interval":"100ms","heartbeat":"80ms"`, api.URL))+"]")
	sc := openStream(t, http.DefaultClient, base+"/events", "")
	sc.next(5 * time.Second)
	beats := 0
	for beats < 3 {
		select {
		case ev := <-sc.events:
			if !ev.comment {
				t.Fatalf("got %+v, want heartbeats only", ev)
			}
			beats++
		case <-time.After(5 * time.Second):
			t.Fatalf("%d heartbeats in 5s", beats)
		}
	}
}

// streamGoroutines counts the streams being served: on a goroutine of
// their own, or taken off it (fanout.go), each with its client watched for
// leaving, by a goroutine of its own or by the process's watcher.
func streamGoroutines() int {
	// A dump cut at the buffer's end would miss goroutines.
	buf := make([]byte, 1<<20)
	for n := runtime.Stack(buf, true); n == len(buf); n = runtime.Stack(buf, true) {
		buf = make([]byte, 2*len(buf))
	}
	stacks := string(buf[:runtime.Stack(buf, true)])
	return strings.Count(stacks, "caddy-pollsse.(*subscriber).follow(") + strings.Count(stacks, "caddy-pollsse.(*subscriber).watch(") + watcherStreams()
}

func TestClientDisconnectEndsItsStream(t *testing.T) {
	api := newFakeAPI(t, `{"a":1}`)
	base := startCaddy(t, "["+pollSSERoute("/events", fmt.Sprintf(`"upstream":%q,"interval":"100ms","heartbeat":"1h"`, api.URL))+"]")
	streams := openStreams(t, base+"/events", 10)
	// A client may read its snapshot a moment before its stream is
	// handed to the goroutine that serves it from then on.
	waitFor(t, 5*time.Second, "a stream goroutine for each of the 10 clients", func() bool { return streamGoroutines() == 10 })
	for _, sc := range streams[:7] {
		sc.close()
	}
	// The server notices a disconnect on its next write or when the
	// connection's context ends; a change makes it write.
	api.set(`{"a":2}`)
	waitFor(t, 5*time.Second, "the streams of the disconnected clients to end", func() bool { return streamGoroutines() == 3 })
	for _, sc := range streams[7:] {
		if ev := sc.next(5 * time.Second); ev.name != "patch" {
			t.Fatalf("a remaining client got %+v", ev)
		}
	}
}

// A streamPath is one of the ways a stream reaches its client: taken over
// from net/http (plain HTTP/1.1, HTTP/1.1 on a host with access logs, and
// HTTPS with HTTP/1.1, on the systems that can), or written through
// net/http (HTTP/2 and HTTP/3).
type streamPath struct {
	name string
	url  string
	// takenOver is set on the paths of streams whose connections Caddy
	// takes over from net/http.
	takenOver bool
	// accessLog is the JSON file that the access log lines of the path's
	// requests go to, "" on a host whose requests Caddy does not log.
	accessLog string
	// client returns a client whose connections hold little that the
	// test has not read: small socket receive buffers and flow-control
	// windows.
	client func() *http.Client
}

// startCaddyOnEveryPath runs Caddy with a poll_sse handler of the given
// fields (as pollSSERoute takes them) at /events on four servers, a plain
// one and an HTTPS one, each without and with access logs, and returns the
// paths of its streams, each with its URL. Caddy's log, the access logs'
// lines with it, goes to a JSON file at INFO.
func startCaddyOnEveryPath(t *testing.T, fields string) []streamPath {
	paths, _ := startCaddyOnEveryPathReloadable(t, fields)
	return paths
}

// startCaddyOnEveryPathReloadable is startCaddyOnEveryPath, and returns as
// well a function that reloads the configuration with the handler's fields
// changed to those it is given.
func startCaddyOnEveryPathReloadable(t *testing.T, fields string) ([]streamPath, func(fields string)) {
	t.Helper()
	cert, key := selfSignedPEM(t)
	certJSON, _ := json.Marshal(cert)
	keyJSON, _ := json.Marshal(key)
	plain, logged, secure, secureLogged := freePort(t), freePort(t), freePort(t), freePort(t)
	storage := t.TempDir()
	logFile := filepath.Join(t.TempDir(), "caddy.log")
	config := func(fields string) []byte {
		// The log file is not rolled (see caddyConfigWith).
		return fmt.Appendf(nil, `{
		"admin": {"disabled": true},
		"storage": {"module": "file_system", "root": %q},
		"logging": {"logs": {"default": {"level": "INFO", "writer": {"output": "file", "filename": %q, "roll": false}, "encoder": {"format": "json"}}}},
		"apps": {
			"tls": {"certificates": {"load_pem": [{"certificate": %s, "key": %s, "tags": ["test"]}]}},
			"http": {"servers": {
				"plain": {"listen": ["127.0.0.1:%d"], "automatic_https": {"disable": true}, "routes": [%s]},
				"logged": {"listen": ["127.0.0.1:%d"], "automatic_https": {"disable": true}, "logs": {}, "routes": [%[6]s]},
				"secure": {
					"listen": ["127.0.0.1:%[8]d"],
					"protocols": ["h1", "h2", "h3"],
					"automatic_https": {"disable": true},
					"tls_connection_policies": [{"certificate_selection": {"any_tag": ["test"]}}],
					"routes": [%[6]s]
				},
				"secure_logged": {
					"listen": ["127.0.0.1:%[9]d"],
					"protocols": ["h1", "h2"],
					"automatic_https": {"disable": true},
					"tls_connection_policies": [{"certificate_selection": {"any_tag": ["test"]}}],
					"logs": {},
					"routes": [%[6]s]
				}
			}}
		}
	}`, storage, logFile, certJSON, keyJSON, plain, pollSSERoute("/events", fields), logged, secure, secureLogged)
	}
	if err := caddy.Load(config(fields), true); err != nil {
		t.Fatalf("loading config: %v", err)
	}
	t.Cleanup(func() {
		stopCaddy(t)
		assertNoStreamGoroutines(t)
	})
	reload := func(fields string) {
		t.Helper()
		done := make(chan error, 1)
		go func() { done <- caddy.Load(config(fields), false) }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("reload: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("reload hung with streams open")
		}
	}
	dialer := &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		// Segments as on a network: loopback's of 64 KiB, with a small
		// receive buffer, stall a connection read slowly until the
		// sender's window probe.
		return limitSocket(rc, smallReceiveBuffer, 1460)
	}}
	// A transport adds its protocols to its TLS config.
	tlsConfig := func() *tls.Config { return &tls.Config{InsecureSkipVerify: true} }
	over := func(set func(*http.Protocols)) func() *http.Client {
		return func() *http.Client {
			protocols := new(http.Protocols)
			set(protocols)
			tr := &http.Transport{
				DialContext:     dialer.DialContext,
				TLSClientConfig: tlsConfig(),
				Protocols:       protocols,
				HTTP2: &http.HTTP2Config{
					MaxReceiveBufferPerConnection: smallReceiveBuffer,
					MaxReceiveBufferPerStream:     smallReceiveBuffer,
				},
			}
			t.Cleanup(tr.CloseIdleConnections)
			return &http.Client{Transport: tr}
		}
	}
	const path = "/events"
	h1 := over(func(p *http.Protocols) { p.SetHTTP1(true) })
	h2 := over(func(p *http.Protocols) { p.SetHTTP2(true) })
	return []streamPath{
		{"detached HTTP/1.1", fmt.Sprintf("http://127.0.0.1:%d%s", plain, path), canDetach, "", h1},
		{"HTTP/1.1 on a logged host", fmt.Sprintf("http://127.0.0.1:%d%s", logged, path), canDetach, logFile, h1},
		{"HTTPS with HTTP/1.1", fmt.Sprintf("https://127.0.0.1:%d%s", secure, path), canDetach && canMeasureRoom, "", h1},
		{"HTTPS with HTTP/1.1 on a logged host", fmt.Sprintf("https://127.0.0.1:%d%s", secureLogged, path), canDetach && canMeasureRoom, logFile, h1},
		{"HTTP/2", fmt.Sprintf("https://127.0.0.1:%d%s", secure, path), false, "", h2},
		{"HTTP/2 on a logged host", fmt.Sprintf("https://127.0.0.1:%d%s", secureLogged, path), false, logFile, h2},
		{"HTTP/3", fmt.Sprintf("https://127.0.0.1:%d%s", secure, path), false, "", func() *http.Client {
			tr := &http3.Transport{TLSClientConfig: tlsConfig(), QUICConfig: &quic.Config{
				InitialStreamReceiveWindow:     smallReceiveBuffer,
				MaxStreamReceiveWindow:         smallReceiveBuffer,
				InitialConnectionReceiveWindow: smallReceiveBuffer,
				MaxConnectionReceiveWindow:     smallReceiveBuffer,
			}}
			t.Cleanup(func() { tr.Close() })
			return &http.Client{Transport: tr}
		}},
	}, reload
}

// smallReceiveBuffer is the socket receive buffer and flow-control window
// of the clients of startCaddyOnEveryPath.
const smallReceiveBuffer = 64 << 10

// A steadyReader is a client that reads slowly but steadily: at most 32 KiB
// at a time, and rate bytes per second.
type steadyReader struct {
	r    io.Reader
	rate int
	read int
}

func (s *steadyReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p[:min(len(p), 32<<10)])
	s.read += n
	time.Sleep(time.Duration(n) * time.Second / time.Duration(s.rate))
	return n, err
}

// readSnapshotOf reads a stream from r until it has its first event, which
// must be a snapshot of doc. The data of a document without line breaks is
// one line, compared as bytes: a stream of megabytes costs little to check.
func readSnapshotOf(r io.Reader, doc string) error {
	var got []byte
	buf := make([]byte, 64<<10)
	start := -1
	for {
		n, err := r.Read(buf)
		got = append(got, buf[:n]...)
		if start < 0 {
			if i := bytes.Index(got, []byte("\ndata: ")); i >= 0 {
				if head := string(got[:i+1]); !strings.HasPrefix(head, "retry: ") || !strings.Contains(head, "\n\nevent: snapshot\nid: ") {
					return fmt.Errorf("the stream began with %q, want its retry field and a snapshot", head)
				}
				start = i + len("\ndata: ")
			}
		}
		if start >= 0 && len(got) >= start+len(doc)+2 {
			if data := string(got[start : start+len(doc)+2]); data != doc+"\n\n" {
				return fmt.Errorf("got a snapshot of %d bytes that differs from the document", len(data)-2)
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("the stream ended with %v", err)
		}
	}
}

// TestWriteTimeoutDropsOnlyClientsThatTakeNothing streams a 6 MB snapshot
// on every path to two clients each: one that reads 1 MiB/s, far less than
// the snapshot per write_timeout (2s), gets all of it; one that reads
// nothing is dropped.
func TestWriteTimeoutDropsOnlyClientsThatTakeNothing(t *testing.T) {
	doc := fmt.Sprintf(`{"pad":%q}`, strings.Repeat("x", 6<<20))
	api := newFakeAPI(t, doc)
	paths := startCaddyOnEveryPath(t, fmt.Sprintf(
		`"upstream":%q,"interval":"1h","heartbeat":"1h","write_timeout":"2s","max_body":%d`, api.URL, 16<<20))
	dropped := counterValue(metrics.droppedAsSlow)

	stalled := make([]*bufio.Reader, len(paths))
	for i, p := range paths {
		stalled[i], _ = openPausable(t, p.client(), p.url)
	}
	got := make(chan string, len(paths))
	for _, p := range paths {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		t.Cleanup(cancel)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.url, nil)
		resp, err := p.client().Do(req)
		if err != nil {
			t.Fatalf("%s: %v", p.name, err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		go func() {
			steady := &steadyReader{r: resp.Body, rate: 1 << 20}
			if err := readSnapshotOf(steady, doc); err != nil {
				got <- fmt.Sprintf("%s: %v after %d bytes", p.name, err, steady.read)
				return
			}
			got <- ""
		}()
	}
	waitFor(t, 10*time.Second, "the clients that read nothing to be dropped", func() bool {
		return counterValue(metrics.droppedAsSlow)-dropped >= float64(len(paths))
	})
	for range paths {
		if msg := <-got; msg != "" {
			t.Error(msg)
		}
	}
	if n := counterValue(metrics.droppedAsSlow) - dropped; n != float64(len(paths)) {
		t.Errorf("%v clients dropped as slow, want the %d that read nothing", n, len(paths))
	}
	// What the clients that read nothing get ends within the snapshot
	// (an EventSource drops the event it has not received whole).
	for i, br := range stalled {
		if n, err := io.Copy(io.Discard, br); n >= int64(len(doc)) {
			t.Errorf("%s: the client that read nothing got %d bytes and then %v, want its stream cut off", paths[i].name, n, err)
		}
	}
}

// TestQuietStreamOutlivesItsWriteTimeout: write_timeout bounds a write, not
// the silence between two: on every path, a stream on which nothing is
// written for several write timeouts gets the next change.
func TestQuietStreamOutlivesItsWriteTimeout(t *testing.T) {
	api := newFakeAPI(t, `{"n":0}`)
	paths := startCaddyOnEveryPath(t, fmt.Sprintf(
		`"upstream":%q,"interval":"100ms","heartbeat":"1h","write_timeout":"200ms"`, api.URL))
	streams := make([]*streamClient, len(paths))
	for i, p := range paths {
		streams[i] = openStream(t, p.client(), p.url, "")
		if ev := streams[i].next(5 * time.Second); ev.name != "snapshot" {
			t.Fatalf("%s: the stream began with %+v", p.name, ev)
		}
	}
	// What is tested is time passing with nothing to write.
	time.Sleep(time.Second)
	api.set(`{"n":1}`)
	for i, sc := range streams {
		if ev, ok := sc.nextOrTimeout(5 * time.Second); !ok || ev.name != "patch" {
			t.Errorf("%s: after a quiet second got %+v (stream open: %v), want the patch", paths[i].name, ev, ok)
		}
	}
}

// deadlineWriter is a response writer that counts the write deadlines set
// on it, as net/http's HTTP/2 writer takes them (a message to the
// connection's goroutine and a timer each).
type deadlineWriter struct {
	*httptest.ResponseRecorder
	deadlines int
}

func (w *deadlineWriter) SetWriteDeadline(time.Time) error {
	w.deadlines++
	return nil
}

// TestStreamsWriteBeneathCaddysIdleTimeout: a stream's writes and flushes
// set no write deadline through Caddy's writer of write_idle_timeout (the
// stream's write_timeout bounds them), on a host that Caddy logs too,
// where Caddy's recorder of the response is over that writer and still
// counts every byte for the access log line.
func TestStreamsWriteBeneathCaddysIdleTimeout(t *testing.T) {
	chain := func() (*deadlineWriter, *caddyhttp.IdleTimeoutWriter) {
		inner := &deadlineWriter{ResponseRecorder: httptest.NewRecorder()}
		return inner, &caddyhttp.IdleTimeoutWriter{
			ResponseWriterWrapper: &caddyhttp.ResponseWriterWrapper{ResponseWriter: inner},
			Ctrl:                  http.NewResponseController(inner),
			Deadline:              caddyhttp.IdleDeadline{Start: time.Now(), Timeout: time.Minute},
			Logger:                zap.NewNop(),
			ClearBetweenWrites:    true,
		}
	}
	frames := [][]byte{[]byte("retry: 3000\n\n"), []byte("event: snapshot\ndata: {}\n\n")}
	write := func(w http.ResponseWriter) {
		for _, f := range frames {
			w.Write(f)
			http.NewResponseController(w).Flush()
		}
	}
	want := string(bytes.Join(frames, nil))

	// What the stream would cost through Caddy's writer: a deadline set
	// and one cleared per write and per flush.
	inner, idle := chain()
	write(caddyhttp.NewResponseRecorder(idle, nil, nil))
	if inner.deadlines == 0 {
		t.Fatal("writes through Caddy's writer of write_idle_timeout set no deadline: the test measures nothing")
	}

	inner, idle = chain()
	write(beneathIdleTimeout(idle))
	if inner.deadlines != 0 || inner.Body.String() != want {
		t.Errorf("on a host without logs, the stream set %d deadlines and wrote %q, want none and %q", inner.deadlines, inner.Body.String(), want)
	}

	inner, idle = chain()
	rec := caddyhttp.NewResponseRecorder(idle, nil, nil)
	w := beneathIdleTimeout(rec)
	write(w)
	if w != rec {
		t.Error("on a logged host, the stream does not write through Caddy's recorder")
	}
	if inner.deadlines != 0 || inner.Body.String() != want {
		t.Errorf("on a logged host, the stream set %d deadlines and wrote %q, want none and %q", inner.deadlines, inner.Body.String(), want)
	}
	if rec.Size() != len(want) || rec.Status() != http.StatusOK {
		t.Errorf("Caddy's recorder counted %d bytes, status %d; want %d, 200", rec.Size(), rec.Status(), len(want))
	}
}
