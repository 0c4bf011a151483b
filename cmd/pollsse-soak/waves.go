package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Waves (-waves N): a loop of runs of one shape, which a load test once saw
// stall. Each run starts a Caddy with one poll_sse topic (interval 100ms,
// history 100), opens N raw HTTP/1.1 streams and waits until each has its
// snapshot, holds them, closes them all at once, opens N new ones (which
// must have their snapshots too), and then changes the document -changes
// times a second apart: every change must reach every open stream within
// 20 s. A stream refused by max_subscribers (the first wave's streams may
// not all have left yet) tries again a moment later. On the first change
// that some stream misses, the run sends Caddy SIGQUIT, so that its output
// holds the stacks of all its goroutines, and the loop fails.

// waveOptions are the flags of the waves mode.
type waveOptions struct {
	n       int
	runs    int
	hold    time.Duration
	changes int
	// overlap closes the first wave while the second one opens.
	overlap bool
}

// runWaves runs the waves loop and returns the exit code.
func runWaves(o options, dir string) int {
	failed := 0
	for r := 1; r <= o.waves.runs; r++ {
		ok, err := runWave(o, filepath.Join(dir, fmt.Sprintf("run%d", r)), r)
		switch {
		case err != nil:
			fmt.Printf("waves: run %d: %v\n", r, err)
			return 2
		case !ok:
			failed++
		}
		fmt.Printf("waves: run %d of %d done, %d failed\n", r, o.waves.runs, failed)
	}
	if failed > 0 {
		return 1
	}
	return 0
}

// waveUpstream is the document of a waves run: {"v":<version>}.
type waveUpstream struct {
	v     atomic.Int64
	polls atomic.Int64
}

func (u *waveUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.polls.Add(1)
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"v":%d}`, u.v.Load())
}

// runWave runs one run in dir and tells whether every change reached every
// stream.
func runWave(o options, dir string, r int) (bool, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, err
	}
	up := new(waveUpstream)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return false, err
	}
	srv := &http.Server{Handler: up, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()
	in, err := newInstance(r, o.caddy, dir)
	if err != nil {
		return false, err
	}
	cfg := fmt.Sprintf(`{
	admin 127.0.0.1:%d
	storage file_system %s
	log {
		output file %s
		level WARN
	}
}

http://127.0.0.1:%d {
	poll_sse /events http://%s/doc {
		interval 100ms
		history 100
	}
}
`, in.adminPort, filepath.Join(dir, "storage"), filepath.Join(dir, "caddy.log"), in.h1Port, ln.Addr())
	if err := os.WriteFile(in.config(), []byte(cfg), 0o644); err != nil {
		return false, err
	}
	in.plain = true
	if err := in.start(context.Background()); err != nil {
		return false, err
	}
	defer in.kill()
	addr := "127.0.0.1:" + strconv.Itoa(in.h1Port)
	var refused atomic.Int64
	wave := func(name string) ([]*waveStream, error) {
		streams := make([]*waveStream, o.waves.n)
		var wg sync.WaitGroup
		sem := make(chan struct{}, 200)
		var firstErr atomic.Value
		for i := range streams {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				s, err := openWaveStream(addr, &refused)
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				streams[i] = s
			})
		}
		wg.Wait()
		if err, _ := firstErr.Load().(error); err != nil {
			return nil, fmt.Errorf("%s: %v", name, err)
		}
		deadline := time.Now().Add(30 * time.Second)
		missing := 0
		for _, s := range streams {
			if !s.waitFor(0, time.Until(deadline)) {
				missing++
			}
		}
		if missing > 0 {
			return nil, fmt.Errorf("%s: %d of %d streams had no snapshot within 30s", name, missing, len(streams))
		}
		return streams, nil
	}
	first, err := wave("the first wave")
	if err != nil {
		return false, err
	}
	time.Sleep(o.waves.hold)
	closeAll := func(ss []*waveStream) {
		for _, s := range ss {
			s.conn.Close()
		}
	}
	if o.waves.overlap {
		go closeAll(first)
	} else {
		closeAll(first)
	}
	second, err := wave("the second wave")
	if err != nil {
		closeAll(second)
		return false, err
	}
	defer closeAll(second)
	for v := 1; v <= o.waves.changes; v++ {
		start := time.Now()
		up.v.Store(int64(v))
		missing := 0
		for _, s := range second {
			if !s.waitFor(v, time.Until(start.Add(20*time.Second))) {
				missing++
			}
		}
		if missing > 0 {
			fmt.Printf("waves: run %d: change %d reached %d of %d streams within 20s (%d polls so far, %d refused at max_subscribers); Caddy's goroutines are in %s\n",
				r, v, len(second)-missing, len(second), up.polls.Load(), refused.Load(), filepath.Join(dir, "caddy.out"))
			in.mu.Lock()
			if in.cmd != nil {
				in.cmd.Process.Signal(syscall.SIGQUIT)
			}
			in.mu.Unlock()
			return false, nil
		}
		time.Sleep(time.Until(start.Add(time.Second)))
	}
	return true, nil
}

// A waveStream is one raw HTTP/1.1 stream of a waves run: it knows the
// highest version that it was sent, whether as a snapshot or a patch.
type waveStream struct {
	conn net.Conn

	mu      sync.Mutex
	changed *sync.Cond
	version int
	ended   bool
}

// openWaveStream opens a stream at addr, again a moment later while it is
// refused.
func openWaveStream(addr string, refused *atomic.Int64) (*waveStream, error) {
	for range 600 {
		c, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(c, "GET /events HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n\r\n", addr)
		br := bufio.NewReader(c)
		status, err := br.ReadString('\n')
		if err == nil && strings.HasPrefix(status, "HTTP/1.1 200 ") {
			s := &waveStream{conn: c, version: -1}
			s.changed = sync.NewCond(&s.mu)
			go s.read(br)
			return s, nil
		}
		c.Close()
		refused.Add(1)
		time.Sleep(100 * time.Millisecond)
	}
	return nil, fmt.Errorf("refused 600 times")
}

// read reads the stream's data fields: a snapshot {"v":N} and patches
// [{"op":"replace","path":"/v","value":N}] both end with the version.
func (s *waveStream) read(br *bufio.Reader) {
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			s.mu.Lock()
			s.ended = true
			s.changed.Broadcast()
			s.mu.Unlock()
			return
		}
		rest, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			continue
		}
		i := strings.LastIndexByte(rest, ':')
		if v, err := strconv.Atoi(strings.TrimRight(rest[i+1:], "}]\r\n")); err == nil {
			s.mu.Lock()
			s.version = max(s.version, v)
			s.changed.Broadcast()
			s.mu.Unlock()
		}
	}
}

// waitFor waits up to d for the stream to reach version v.
func (s *waveStream) waitFor(v int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	t := time.AfterFunc(d, func() {
		s.mu.Lock()
		s.changed.Broadcast()
		s.mu.Unlock()
	})
	defer t.Stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.version < v && !s.ended && time.Now().Before(deadline) {
		s.changed.Wait()
	}
	return s.version >= v
}
