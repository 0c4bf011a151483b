package pollsse

import (
	"fmt"
	"strings"
	"sync"
	"testing"
)

// benchPatch is a patch event's data of about 200 bytes, the size the load
// tool (cmd/pollsse-bench) and the peers' measurements use.
var benchPatch = []byte(`[{"op":"replace","path":"/bench","value":"` + strings.Repeat("x", 160) + `"}]`)

// BenchmarkPublish measures an append to a topic's log, which runs on the
// poller's goroutine, with waiters woken by it: the groups of detached
// streams (one per topic and handler), or as many goroutines as streams
// served on goroutines of their own (HTTP/2, HTTP/3, TLS, encoded).
func BenchmarkPublish(b *testing.B) {
	for _, waiters := range []int{0, 1, 100, 10000} {
		b.Run(fmt.Sprintf("waiters=%d", waiters), func(b *testing.B) {
			l := newMemoryLog(defaultHistory)
			d := doc(`{"a":1}`)
			l.appendDocument(d, "", nil)
			stop := make(chan struct{})
			var wg sync.WaitGroup
			for range waiters {
				wg.Go(func() {
					for {
						select {
						case <-l.changed():
						case <-stop:
							return
						}
					}
				})
			}
			b.ReportAllocs()
			for b.Loop() {
				l.appendDocument(d, eventPatch, benchPatch)
			}
			b.StopTimer()
			close(stop)
			wg.Wait()
		})
	}
}

// BenchmarkRead measures what a stream does per event besides writing it:
// read the frames after its cursor.
func BenchmarkRead(b *testing.B) {
	l := newMemoryLog(defaultHistory)
	l.appendDocument(doc(`{"a":1}`), "", nil)
	l.appendDocument(doc(`{"a":2}`), eventPatch, benchPatch)
	buf := make([]frame, 0, maxFramesPerWrite)
	b.ReportAllocs()
	for b.Loop() {
		frames, _, _ := l.read(1, buf[:0])
		if len(frames) != 1 {
			b.Fatal(len(frames))
		}
	}
}

// BenchmarkChunk measures framing an event as an HTTP/1.1 chunk for the
// detached streams: once per event and sweeping goroutine, found again in
// the cache for every other stream.
func BenchmarkChunk(b *testing.B) {
	frame := encodeEvent(eventPatch, "x-1", benchPatch)
	b.Run("cached", func(b *testing.B) {
		w := newSweeper()
		w.chunk(frame)
		b.ReportAllocs()
		for b.Loop() {
			w.chunk(frame)
		}
	})
	b.Run("encode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			appendChunk(make([]byte, 0, len(frame)+12), frame)
		}
	})
}

// BenchmarkJoinSnapshotChunk measures what framing a 1 MB snapshot as a chunk
// costs each new detached stream (detach): the sweepers that joining
// streams share find it framed already, where a sweeper per stream would
// copy the megabyte every time.
func BenchmarkJoinSnapshotChunk(b *testing.B) {
	frame := encodeEvent(eventSnapshot, "x-1", []byte(`"`+strings.Repeat("x", 1<<20)+`"`))
	b.Run("shared", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			sw := joinSweepers.Get().(*sweeper)
			sw.chunk(frame)
			joinSweepers.Put(sw)
		}
	})
	b.Run("per_stream", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			newSweeper().chunk(frame)
		}
	})
}
