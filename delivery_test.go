package pollsse

import (
	"crypto/tls"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestStreamsEndOnReloadAndStopOnEveryPath: a reload ends the streams of
// the old configuration on every path, and their clients resume on the new
// one; stopping Caddy ends those.
func TestStreamsEndOnReloadAndStopOnEveryPath(t *testing.T) {
	api := newFakeAPI(t, `{"v":0}`)
	fields := fmt.Sprintf(`"upstream":%q,"interval":"100ms","heartbeat":"1h"`, api.URL)
	paths, reload := startCaddyOnEveryPathReloadable(t, fields)
	open := func() []*streamClient {
		var streams []*streamClient
		for _, p := range paths {
			sc := openStream(t, p.client(), p.url, "")
			if ev := sc.next(5 * time.Second); ev.name != "snapshot" {
				t.Fatalf("%s: the stream began with %+v", p.name, ev)
			}
			streams = append(streams, sc)
		}
		return streams
	}
	ended := func(what string, streams []*streamClient) {
		t.Helper()
		for i, sc := range streams {
			deadline := time.After(5 * time.Second)
		read:
			for {
				select {
				case _, ok := <-sc.events:
					if !ok {
						break read
					}
				case <-deadline:
					t.Fatalf("%s: the stream did not end on %s", paths[i].name, what)
				}
			}
		}
	}
	streams := open()
	// retry shapes streams, not topics: the topic and its ids carry on.
	reload(fields + `,"retry":"4s"`)
	ended("a reload", streams)
	streams = open()
	stopCaddy(t)
	ended("stop", streams)
}

// TestHTTP2StreamThatIsNotReadStallsOnlyItself: of two streams on one
// HTTP/2 connection, the one the client stops reading fills its
// flow-control window and is dropped after write_timeout; the other one
// carries on getting every change meanwhile.
func TestHTTP2StreamThatIsNotReadStallsOnlyItself(t *testing.T) {
	api := newFakeAPI(t, bigDocument(0))
	paths := startCaddyOnEveryPath(t, fmt.Sprintf(
		`"upstream":%q,"interval":"100ms","heartbeat":"1h","write_timeout":"1s","max_body":%d`, api.URL, 4<<20))
	var h2 streamPath
	for _, p := range paths {
		if p.name == "HTTP/2" {
			h2 = p
		}
	}
	// One transport: both streams share its connection, whose window is
	// larger than a stream's, so that the unread stream's data does not
	// shut the connection's.
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true},
		ForceAttemptHTTP2: true,
		HTTP2: &http.HTTP2Config{
			MaxReceiveBufferPerConnection: 16 << 20,
			MaxReceiveBufferPerStream:     smallReceiveBuffer,
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr}
	stalled, _ := openPausable(t, client, h2.url)
	if ev := nextNamed(t, stalled); ev.name != "snapshot" {
		t.Fatalf("the stream began with %+v", ev)
	}
	reader := openStream(t, client, h2.url, "")
	if ev := reader.next(5 * time.Second); ev.name != "snapshot" {
		t.Fatalf("the stream began with %+v", ev)
	}
	if reader.resp.ProtoMajor != 2 {
		t.Fatalf("the stream is %s, want HTTP/2", reader.resp.Proto)
	}
	dropped := counterValue(metrics.droppedAsSlow)
	// Each change is a patch of about 256 KB, four times the stream's
	// window: the first one fills the window of the stream not read.
	for n := 1; n <= 6; n++ {
		api.set(bigDocument(n))
		ev, ok := reader.nextOrTimeout(5 * time.Second)
		if !ok || ev.name != "patch" || !strings.Contains(ev.data, fmt.Sprintf("%08d", n)) {
			t.Fatalf("change %d: the stream that is read got %+v (open: %v), want its patch", n, ev.name, ok)
		}
	}
	waitFor(t, 5*time.Second, "the stream not read to be dropped", func() bool {
		return counterValue(metrics.droppedAsSlow)-dropped >= 1
	})
	api.set(bigDocument(7))
	if ev, ok := reader.nextOrTimeout(5 * time.Second); !ok || ev.name != "patch" {
		t.Fatalf("after the other was dropped, the stream that is read got %+v (open: %v)", ev.name, ok)
	}
}

// TestSlowSubscriberDelaysNoOtherOnEveryPath: on every path, a client that
// stops reading while changes of about 256 KB each keep coming (its socket
// or its flow-control window fills) delays no other client of its topic,
// and is dropped after write_timeout.
func TestSlowSubscriberDelaysNoOtherOnEveryPath(t *testing.T) {
	api := newFakeAPI(t, bigDocument(0))
	paths := startCaddyOnEveryPath(t, fmt.Sprintf(
		`"upstream":%q,"interval":"100ms","heartbeat":"1h","write_timeout":"1s","max_body":%d`, api.URL, 4<<20))
	n := 0
	for _, p := range paths {
		t.Run(p.name, func(t *testing.T) {
			dropped := counterValue(metrics.droppedAsSlow)
			slow, _ := openPausable(t, p.client(), p.url)
			if ev := nextNamed(t, slow); ev.name != "snapshot" {
				t.Fatalf("the slow client's first event is %+v", ev)
			}
			fast := openStream(t, p.client(), p.url, "")
			if ev := fast.next(5 * time.Second); ev.name != "snapshot" {
				t.Fatalf("the reading client's first event is %+v", ev)
			}
			// The slow client reads no more.
			for range 15 {
				n++
				api.set(bigDocument(n))
				start := time.Now()
				for {
					ev := fast.next(5 * time.Second)
					if strings.Contains(ev.data, fmt.Sprintf("%08d", n)) {
						break
					}
				}
				if d := time.Since(start); d > time.Second {
					t.Fatalf("change %d reached the reading client after %s", n, d)
				}
			}
			waitFor(t, 5*time.Second, "the slow client to be dropped", func() bool {
				return counterValue(metrics.droppedAsSlow)-dropped >= 1
			})
			fast.close()
		})
	}
}

// TestHeartbeatsOnEveryPath: on every path, a stream on which nothing else
// is written gets a heartbeat each heartbeat period, and the change after
// them.
func TestHeartbeatsOnEveryPath(t *testing.T) {
	api := newFakeAPI(t, `{"n":0}`)
	paths := startCaddyOnEveryPath(t, fmt.Sprintf(`"upstream":%q,"interval":"100ms","heartbeat":"80ms"`, api.URL))
	streams := make([]*streamClient, len(paths))
	for i, p := range paths {
		streams[i] = openStream(t, p.client(), p.url, "")
		if ev := streams[i].next(5 * time.Second); ev.name != "snapshot" {
			t.Fatalf("%s: the stream began with %+v", p.name, ev)
		}
	}
	next := func(i int) sseEvent {
		t.Helper()
		select {
		case ev, ok := <-streams[i].events:
			if !ok {
				t.Fatalf("%s: the stream ended", paths[i].name)
			}
			return ev
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: nothing within 5s", paths[i].name)
		}
		panic("unreachable")
	}
	for i := range streams {
		for beats := 0; beats < 3; beats++ {
			if ev := next(i); !ev.comment {
				t.Fatalf("%s: after %d heartbeats got %+v, want another", paths[i].name, beats, ev)
			}
		}
	}
	api.set(`{"n":1}`)
	for i := range streams {
		ev := next(i)
		for ev.comment {
			ev = next(i)
		}
		if ev.name != "patch" {
			t.Fatalf("%s: got %+v, want the patch", paths[i].name, ev)
		}
	}
}
