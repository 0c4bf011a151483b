package pollsse

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"
)

// An sseEvent is what a browser's EventSource makes of one event, or a
// comment (heartbeat) when comment is set and no field was.
type sseEvent struct {
	name    string
	id      string
	data    string
	hasID   bool
	retry   string
	comment bool
}

// readLine reads one line ending in CR, LF or CRLF, as the SSE spec splits
// a stream.
func readLine(br *bufio.Reader) (string, error) {
	var sb strings.Builder
	for {
		c, err := br.ReadByte()
		if err != nil {
			return sb.String(), err
		}
		switch c {
		case '\n':
			return sb.String(), nil
		case '\r':
			if next, err := br.Peek(1); err == nil && next[0] == '\n' {
				br.ReadByte()
			}
			return sb.String(), nil
		}
		sb.WriteByte(c)
	}
}

// readEvent parses the next event the way the HTML standard's event stream
// interpretation does: fields until a blank line, data lines joined by LF.
// A block of only comments is returned as a comment; a block with only a
// retry field is returned with retry set.
func readEvent(br *bufio.Reader) (sseEvent, error) {
	var ev sseEvent
	var data []string
	seen := false
	for {
		line, err := readLine(br)
		if err != nil {
			return ev, err
		}
		if line == "" {
			if !seen {
				continue
			}
			ev.data = strings.Join(data, "\n")
			return ev, nil
		}
		seen = true
		if strings.HasPrefix(line, ":") {
			ev.comment = true
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "event":
			ev.name = value
		case "data":
			data = append(data, value)
		case "id":
			if !strings.ContainsRune(value, 0) {
				ev.id, ev.hasID = value, true
			}
		case "retry":
			ev.retry = value
		}
		ev.comment = ev.comment && ev.name == "" && data == nil && !ev.hasID && ev.retry == ""
	}
}

// parseFrames parses every event of b.
func parseFrames(t testing.TB, b []byte) []sseEvent {
	t.Helper()
	br := bufio.NewReader(bytes.NewReader(b))
	var out []sseEvent
	for {
		ev, err := readEvent(br)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, ev)
	}
}

// sameJSON tells whether a and b are the same JSON value, whatever the order
// of object keys.
func sameJSON(a, b string) bool {
	var va, vb any
	if json.Unmarshal([]byte(a), &va) != nil || json.Unmarshal([]byte(b), &vb) != nil {
		return false
	}
	return reflect.DeepEqual(va, vb)
}

// A streamClient is one SSE connection of a test, read on its own goroutine.
type streamClient struct {
	t      testing.TB
	resp   *http.Response
	cancel context.CancelFunc
	events chan sseEvent
	done   chan error
}

// openStream connects to url with the given Last-Event-ID (none when empty)
// and starts reading events.
func openStream(t testing.TB, client *http.Client, url, lastEventID string) *streamClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	if lastEventID != "" {
		req.Header.Set("Last-Event-ID", lastEventID)
	}
	resp, err := client.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("GET %s: %v", url, err)
	}
	sc := &streamClient{t: t, resp: resp, cancel: cancel, events: make(chan sseEvent, 1024), done: make(chan error, 1)}
	go func() {
		br := bufio.NewReader(resp.Body)
		for {
			ev, err := readEvent(br)
			if err != nil {
				close(sc.events)
				sc.done <- err
				return
			}
			sc.events <- ev
		}
	}()
	t.Cleanup(sc.close)
	return sc
}

// openStreams opens n streams of url, each of which must begin with a
// snapshot.
func openStreams(t testing.TB, url string, n int) []*streamClient {
	t.Helper()
	var streams []*streamClient
	for range n {
		sc := openStream(t, http.DefaultClient, url, "")
		if ev := sc.next(10 * time.Second); ev.name != "snapshot" {
			t.Fatalf("stream %d began with %+v, want a snapshot", len(streams), ev)
		}
		streams = append(streams, sc)
	}
	return streams
}

// next returns the next event that is not a heartbeat, failing the test
// after timeout.
func (sc *streamClient) next(timeout time.Duration) sseEvent {
	sc.t.Helper()
	ev, ok := sc.nextOrTimeout(timeout)
	if !ok {
		sc.t.Fatalf("no event within %s", timeout)
	}
	return ev
}

// nextOrTimeout returns the next event that is not a heartbeat or a retry
// field, and false when none comes within timeout or the stream ends.
func (sc *streamClient) nextOrTimeout(timeout time.Duration) (sseEvent, bool) {
	deadline := time.After(timeout)
	for {
		select {
		case ev, ok := <-sc.events:
			if !ok {
				return sseEvent{}, false
			}
			if ev.comment || (ev.retry != "" && ev.name == "" && ev.data == "") {
				continue
			}
			return ev, true
		case <-deadline:
			return sseEvent{}, false
		}
	}
}

func (sc *streamClient) close() {
	sc.cancel()
	sc.resp.Body.Close()
}
