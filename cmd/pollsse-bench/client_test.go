package main

import (
	"fmt"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine outlives them all.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// chunk frames an SSE frame as one chunk of a chunked body, as Caddy sends
// it.
func chunk(frame string) string { return fmt.Sprintf("%x\r\n%s\r\n", len(frame), frame) }

func TestParseFindsEventsWhereverReadsSplitThem(t *testing.T) {
	pad := strings.Repeat("x", 400) // longer than the head a client keeps
	body := chunk("retry: 3000\n\n") +
		chunk(`event: snapshot`+"\nid: e-1\ndata: "+`{"bench":"seq=0 ts=100 pad=`+pad+`"}`+"\n\n") +
		chunk(":\n\n") +
		chunk("event: patch\nid: e-2\ndata: "+`[{"value":"seq=1 ts=1000 pad=`+pad+`","op":"replace","path":"/bench"}]`+"\n\n") +
		chunk("event: patch\nid: e-3\ndata: "+`[{"value":"seq=2 ts=2000 pad=`+pad+`","op":"replace","path":"/bench"}]`+"\n\n")
	for _, size := range []int{1, 2, 3, 7, 64, 1000, len(body)} {
		t.Run(fmt.Sprintf("reads of %d bytes", size), func(t *testing.T) {
			s := newSwarm("", "/", 1, 1, 2, 0)
			c := s.clients[0]
			for i := 0; i < len(body); i += size {
				c.parse(s, []byte(body[i:min(i+size, len(body))]), 5_000_000)
			}
			if got := c.snapshots.Load(); got != 1 {
				t.Errorf("%d snapshots, want 1", got)
			}
			// Latency in µs from ts (ns) to the receipt at 5 ms.
			for k, want := range []int32{4999, 4998} {
				if got := c.lat[k].Load(); got != want {
					t.Errorf("event %d: latency %d µs, want %d", k+1, got, want)
				}
			}
			if s.connected.Load() != 1 || s.received[0].Load() != 1 || s.received[1].Load() != 1 {
				t.Errorf("connected %d, received %d and %d", s.connected.Load(), s.received[0].Load(), s.received[1].Load())
			}
		})
	}
}

func TestMaxWithin(t *testing.T) {
	times := []int64{0, 5, 9, 10, 30, 31, 32, 33, 100}
	if got := maxWithin(times, 10); got != 4 {
		t.Errorf("maxWithin = %d, want 4 (30..33)", got)
	}
	if got := maxWithin(nil, 10); got != 0 {
		t.Errorf("maxWithin(nil) = %d", got)
	}
}

func TestPercentile(t *testing.T) {
	v := make([]float64, 100)
	for i := range v {
		v[i] = float64(i + 1)
	}
	for q, want := range map[float64]float64{0.5: 50, 0.99: 99, 1: 100} {
		if got := percentile(v, q); got != want {
			t.Errorf("percentile(%v) = %v, want %v", q, got, want)
		}
	}
}

// TestParseMemStatsReadsExpvars: the heap and stacks come from the memstats
// of expvar's /debug/vars, as Caddy's admin endpoint serves it; a page
// without them is an error, not zeros.
func TestParseMemStatsReadsExpvars(t *testing.T) {
	m, err := parseMemStats([]byte(`{"cmdline":["caddy"],"memstats":{"Alloc":9,"HeapAlloc":11252736,"StackInuse":1310720,"BySize":[{"Size":8}]}}`))
	if err != nil || m != (memory{HeapAlloc: 11252736, StackInuse: 1310720}) {
		t.Errorf("parseMemStats = %+v, %v", m, err)
	}
	for _, page := range []string{`{"cmdline":["caddy"]}`, `not json`} {
		if m, err := parseMemStats([]byte(page)); err == nil {
			t.Errorf("parseMemStats(%s) = %+v, want an error", page, m)
		}
	}
}
