package pollsse

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// slowClient returns an HTTP client whose connections have a small receive
// buffer, so that a server writing to a client that stopped reading blocks
// after little data.
func slowClient() *http.Client {
	d := &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) {
			syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
	}}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
}

// openPausable opens a stream that the test reads itself, event by event,
// and so can stop reading. The stream is cut after 30s.
func openPausable(t *testing.T, client *http.Client, url string) (*bufio.Reader, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := client.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	stop := func() { cancel(); resp.Body.Close() }
	t.Cleanup(stop)
	// No read of the test blocks for ever.
	watchdog := time.AfterFunc(30*time.Second, stop)
	t.Cleanup(func() { watchdog.Stop() })
	return bufio.NewReader(resp.Body), stop
}

// nextNamed reads events from br until one has a name.
func nextNamed(t *testing.T, br *bufio.Reader) sseEvent {
	t.Helper()
	for {
		ev, err := readEvent(br)
		if err != nil {
			t.Fatalf("reading the stream: %v", err)
		}
		if ev.name != "" {
			return ev
		}
	}
}

// bigDocument is a document of about 512 KB, half of which differs from
// that of another n, so that each change is a patch of about 256 KB (on
// loopback the kernel takes megabytes for a client that does not read
// before a write to it blocks), and only a resync sends a snapshot.
func bigDocument(n int) string {
	return fmt.Sprintf(`{"n":%d,"pad":%q,"static":%q}`, n, strings.Repeat(fmt.Sprintf("%08d", n), 32<<10), strings.Repeat("s", 256<<10))
}

func TestHTTP1StreamsAreServedWithoutAGoroutineEach(t *testing.T) {
	api := newFakeAPI(t, `{"a":1}`)
	base := startCaddy(t, "["+pollSSERoute("/events", fmt.Sprintf(`"upstream":%q,"interval":"100ms","heartbeat":"1h"`, api.URL))+"]")
	streams := openStreams(t, base+"/events", 20)
	buf := make([]byte, 1<<20)
	stacks := string(buf[:runtime.Stack(buf, true)])
	if n := strings.Count(stacks, "caddy-pollsse.(*Handler).stream("); n != 0 {
		t.Errorf("%d goroutines run a stream loop for 20 HTTP/1.1 clients, want 0", n)
	}
	if n := strings.Count(stacks, "caddy-pollsse.(*connGroup).run("); n != 1 {
		t.Errorf("%d group goroutines for one topic, want 1", n)
	}
	api.set(`{"a":2}`)
	for i, sc := range streams {
		if ev := sc.next(5 * time.Second); ev.name != "patch" || !sameJSON(ev.data, `[{"op":"replace","path":"/a","value":2}]`) {
			t.Fatalf("client %d got %+v, want the patch", i, ev)
		}
	}
}

func TestSlowSubscriberDoesNotDelayOthersAndIsDropped(t *testing.T) {
	api := newFakeAPI(t, bigDocument(0))
	base := startCaddy(t, "["+pollSSERoute("/events", fmt.Sprintf(`"upstream":%q,"interval":"100ms","heartbeat":"1h","write_timeout":"1s"`, api.URL))+"]")

	slow, _ := openPausable(t, slowClient(), base+"/events")
	if ev := nextNamed(t, slow); ev.name != "snapshot" {
		t.Fatalf("the slow client's first event is %+v", ev)
	}
	fast := openStream(t, http.DefaultClient, base+"/events", "")
	fast.next(5 * time.Second)

	// The slow client reads no more. Every change is about 256 KB, so its
	// socket is full after some; the other client gets each change as soon
	// as it is polled.
	for n := 1; n <= 40; n++ {
		api.set(bigDocument(n))
		start := time.Now()
		want := fmt.Sprintf(`"n":%d,`, n)
		for {
			ev := fast.next(5 * time.Second)
			if strings.Contains(ev.data, want) || strings.Contains(ev.data, fmt.Sprintf(`"value":%d}`, n)) {
				break
			}
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("change %d reached the reading client after %s", n, d)
		}
	}
	// The write to the slow client has blocked for the write timeout by
	// now: its connection is closed, and what it reads ends.
	waitFor(t, 5*time.Second, "the slow client's stream to end", func() bool { return streamGoroutines() == 1 })
	done := make(chan error, 1)
	go func() { _, err := io.Copy(io.Discard, slow); done <- err }()
	select {
	case err := <-done:
		if err == nil {
			t.Error("the slow client's stream ended with its last chunk; want it cut off")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the slow client's stream did not end")
	}
}

func TestLaggingSubscriberIsResyncedWithASnapshot(t *testing.T) {
	api := newFakeAPI(t, bigDocument(0))
	base := startCaddy(t, "["+pollSSERoute("/events", fmt.Sprintf(`"upstream":%q,"interval":"100ms","heartbeat":"1h","history":4,"write_timeout":"30s"`, api.URL))+"]")
	lagging, _ := openPausable(t, slowClient(), base+"/events")
	if ev := nextNamed(t, lagging); ev.name != "snapshot" {
		t.Fatalf("first event %+v", ev)
	}
	fast := openStream(t, http.DefaultClient, base+"/events", "")
	fast.next(5 * time.Second)
	// Far more changes than the history holds, while the client reads
	// nothing.
	const last = 20
	for n := 1; n <= last; n++ {
		api.set(bigDocument(n))
		fast.next(5 * time.Second)
	}
	// It reads again: what its socket held, then a snapshot of the latest
	// document rather than the changes it missed.
	deadline := time.Now().Add(10 * time.Second)
	for {
		ev := nextNamed(t, lagging)
		if ev.name == "snapshot" {
			if !strings.Contains(ev.data, fmt.Sprintf(`"n":%d,`, last)) {
				t.Fatalf("resynced with a snapshot of %.20s, want n=%d", ev.data, last)
			}
			break
		}
		if ev.name != "patch" {
			t.Fatalf("got a %s event", ev.name)
		}
		if time.Now().After(deadline) {
			t.Fatal("no snapshot of the latest document")
		}
	}
	// And then it is live again.
	api.set(bigDocument(last + 1))
	if ev := nextNamed(t, lagging); ev.name != "patch" || !strings.Contains(ev.data, fmt.Sprintf(`"value":%d}`, last+1)) {
		t.Fatalf("after the resync got %.100s", fmt.Sprint(ev))
	}
}

func TestDetachedStreamEndsCleanlyOnReload(t *testing.T) {
	api := newFakeAPI(t, `{"v":0}`)
	routes := func(retry string) string {
		return "[" + pollSSERoute("/events", fmt.Sprintf(`"upstream":%q,"interval":"100ms","retry":%q`, api.URL, retry)) + "]"
	}
	base := startCaddy(t, routes("3s"))
	sc := openStream(t, http.DefaultClient, base+"/events", "")
	sc.next(5 * time.Second)
	reloadCaddy(t, base, routes("4s"))
	expectEnd(t, sc)
	if err := <-sc.done; !errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("the stream ended with %v, want the end of a complete chunked body", err)
	}
}

// TestAccessLogsKeepStreamsOnTheirGoroutines: Caddy wraps the connections
// of a host whose requests it logs, so its streams keep their goroutines
// (and still notice a client leaving at once); the streams of a host that
// the access logs skip are detached as usual.
func TestAccessLogsKeepStreamsOnTheirGoroutines(t *testing.T) {
	for _, tt := range []struct {
		name, logs string
		want       int
	}{
		{"a logged host", `{}`, 5},
		{"a host the logs skip", `{"skip_hosts":["127.0.0.1"]}`, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			api := newFakeAPI(t, `{"a":1}`)
			base, _ := startCaddyLoggingAtDebug(t, pollSSERoute("/events", fmt.Sprintf(`"upstream":%q,"interval":"100ms","heartbeat":"1h"`, api.URL)), tt.logs)
			t.Cleanup(func() { stopCaddy(t) })
			streams := openStreams(t, base+"/events", 5)
			buf := make([]byte, 1<<20)
			stacks := string(buf[:runtime.Stack(buf, true)])
			if n := strings.Count(stacks, "caddy-pollsse.(*Handler).stream("); n != tt.want {
				t.Errorf("%d goroutines run a stream loop for 5 clients, want %d", n, tt.want)
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
			waitFor(t, 5*time.Second, "the streams to end with the heartbeat an hour away", func() bool { return streamGoroutines() == 0 })
		})
	}
}

// A streamPath is one of the ways a stream reaches its client: detached
// (plain HTTP/1.1), written on its request's goroutine to a connection that
// Caddy wraps (HTTP/1.1 on a host with access logs), or through net/http
// (HTTPS with HTTP/1.1, HTTP/2 and HTTP/3).
type streamPath struct {
	name string
	url  string
	// takenOver is set on the paths of streams whose connections Caddy
	// takes over from net/http.
	takenOver bool
	// client returns a client whose connections hold little that the
	// test has not read: small socket receive buffers and flow-control
	// windows.
	client func() *http.Client
}

// startCaddyOnEveryPath runs Caddy with a poll_sse handler of the given
// fields (as pollSSERoute takes them) at /events on three servers, a plain
// one, one with access logs and an HTTPS one, and returns the paths of its
// streams, each with its URL.
func startCaddyOnEveryPath(t *testing.T, fields string) []streamPath {
	t.Helper()
	route := pollSSERoute("/events", fields)
	cert, key := selfSignedPEM(t)
	certJSON, _ := json.Marshal(cert)
	keyJSON, _ := json.Marshal(key)
	plain, logged, secure := freePort(t), freePort(t), freePort(t)
	cfg := fmt.Sprintf(`{
		"admin": {"disabled": true},
		"storage": {"module": "file_system", "root": %q},
		"logging": {"logs": {"default": {"level": "ERROR"}}},
		"apps": {
			"tls": {"certificates": {"load_pem": [{"certificate": %s, "key": %s, "tags": ["test"]}]}},
			"http": {"servers": {
				"plain": {"listen": ["127.0.0.1:%d"], "automatic_https": {"disable": true}, "routes": [%s]},
				"logged": {"listen": ["127.0.0.1:%d"], "automatic_https": {"disable": true}, "logs": {}, "routes": [%[5]s]},
				"secure": {
					"listen": ["127.0.0.1:%[7]d"],
					"protocols": ["h1", "h2", "h3"],
					"automatic_https": {"disable": true},
					"tls_connection_policies": [{"certificate_selection": {"any_tag": ["test"]}}],
					"routes": [%[5]s]
				}
			}}
		}
	}`, t.TempDir(), certJSON, keyJSON, plain, route, logged, secure)
	if err := caddy.Load([]byte(cfg), true); err != nil {
		t.Fatalf("loading config: %v", err)
	}
	t.Cleanup(func() {
		stopCaddy(t)
		assertNoStreamGoroutines(t)
	})
	dialer := &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) {
			syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, smallReceiveBuffer)
			// Segments as on a network: loopback's of 64 KiB, with a
			// small receive buffer, stall a connection read slowly
			// until the sender's window probe.
			syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_MAXSEG, 1460)
		})
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
	return []streamPath{
		{"detached HTTP/1.1", fmt.Sprintf("http://127.0.0.1:%d%s", plain, path), true, over(func(p *http.Protocols) { p.SetHTTP1(true) })},
		{"HTTP/1.1 on a logged host", fmt.Sprintf("http://127.0.0.1:%d%s", logged, path), true, over(func(p *http.Protocols) { p.SetHTTP1(true) })},
		{"HTTPS with HTTP/1.1", fmt.Sprintf("https://127.0.0.1:%d%s", secure, path), false, over(func(p *http.Protocols) { p.SetHTTP1(true) })},
		{"HTTP/2", fmt.Sprintf("https://127.0.0.1:%d%s", secure, path), false, over(func(p *http.Protocols) { p.SetHTTP2(true) })},
		{"HTTP/3", fmt.Sprintf("https://127.0.0.1:%d%s", secure, path), false, func() *http.Client {
			tr := &http3.Transport{TLSClientConfig: tlsConfig(), QUICConfig: &quic.Config{
				InitialStreamReceiveWindow:     smallReceiveBuffer,
				MaxStreamReceiveWindow:         smallReceiveBuffer,
				InitialConnectionReceiveWindow: smallReceiveBuffer,
				MaxConnectionReceiveWindow:     smallReceiveBuffer,
			}}
			t.Cleanup(func() { tr.Close() })
			return &http.Client{Transport: tr}
		}},
	}
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

// TestDetachedResumeFromFarBackIsSentWhole resumes a detached stream from
// more events back than one read of the log takes (maxFramesPerWrite), with
// the upstream unchanged from then on and the heartbeat an hour away:
// nothing but the resume itself can make the stream write, and it must
// send every event up to the latest.
func TestDetachedResumeFromFarBackIsSentWhole(t *testing.T) {
	const events = maxFramesPerWrite + 16
	var mu sync.Mutex
	version, growing := 0, true
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		if growing {
			version++
		}
		v := version
		mu.Unlock()
		fmt.Fprintf(w, `{"v":%d}`, v)
	}))
	t.Cleanup(upstream.Close)
	base := startCaddy(t, "["+pollSSERoute("/events", fmt.Sprintf(
		`"upstream":%q,"interval":"100ms","history":1000,"heartbeat":"1h"`, upstream.URL))+"]")

	follower := openStream(t, http.DefaultClient, base+"/events", "")
	snapshot := follower.next(10 * time.Second)
	if snapshot.name != "snapshot" {
		t.Fatalf("the stream began with %+v", snapshot)
	}
	var last sseEvent
	for n := 0; n < events; n++ {
		last = follower.next(10 * time.Second)
	}
	mu.Lock()
	growing = false
	final := fmt.Sprintf(`[{"op":"replace","path":"/v","value":%d}]`, version)
	mu.Unlock()
	patches := events
	for last.data != final {
		last = follower.next(10 * time.Second)
		patches++
	}

	resumed := openStream(t, http.DefaultClient, base+"/events", snapshot.id)
	for n := 1; n <= patches; n++ {
		ev, ok := resumed.nextOrTimeout(10 * time.Second)
		if !ok {
			t.Fatalf("the resumed stream got %d of the %d events after its id, and then nothing", n-1, patches)
		}
		if ev.name != "patch" {
			t.Fatalf("event %d of the resumed stream is %+v, want a patch", n, ev)
		}
		if n == patches && (ev.id != last.id || ev.data != last.data) {
			t.Fatalf("the resumed stream's last event is %+v, want %+v", ev, last)
		}
	}
}

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
