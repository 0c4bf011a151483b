package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// A redisServer is the Redis of a run on the redis store (-store redis):
// a redis-server of the run's own on a free loopback port, which keeps
// nothing on disk.
type redisServer struct {
	port   int
	dir    string
	cmd    *exec.Cmd
	exited chan struct{}
}

// startRedis starts a redis-server with its files in dir and waits until
// it answers.
func startRedis(dir string) (*redisServer, error) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		return nil, fmt.Errorf("-store redis needs redis-server (apt-get install redis-server; make test installs it): %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	ports, err := freePorts(1)
	if err != nil {
		return nil, err
	}
	r := &redisServer{port: ports[0], dir: dir, exited: make(chan struct{})}
	r.cmd = exec.Command("redis-server", "--port", strconv.Itoa(r.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", dir, "--logfile", filepath.Join(dir, "redis.log"))
	if err := r.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting redis-server: %w", err)
	}
	go func() {
		r.cmd.Wait()
		close(r.exited)
	}()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		err := r.ping()
		if err == nil {
			return r, nil
		}
		select {
		case <-r.exited:
			return nil, fmt.Errorf("redis-server exited while starting; see %s", filepath.Join(dir, "redis.log"))
		default:
		}
		if time.Now().After(deadline) {
			r.stop()
			return nil, fmt.Errorf("redis-server did not answer within 10s: %v", err)
		}
	}
}

// url is the URL that the instances' store redis is given.
func (r *redisServer) url() string { return "redis://127.0.0.1:" + strconv.Itoa(r.port) }

// ping asks Redis for PONG.
func (r *redisServer) ping() error {
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(r.port), time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(line) != "+PONG" {
		return errors.New("redis-server answered " + strconv.Quote(line))
	}
	return nil
}

// exitedEarly tells whether redis-server ended by itself.
func (r *redisServer) exitedEarly() bool {
	select {
	case <-r.exited:
		return true
	default:
		return false
	}
}

// stop ends redis-server.
func (r *redisServer) stop() {
	r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.exited:
	case <-time.After(5 * time.Second):
		r.cmd.Process.Kill()
		<-r.exited
	}
}

// A storeWatch records when the instances found the shared store out of
// reach, or lost a lease, from their metrics: an instance that finds the
// store out of reach polls its topics on its own and numbers its events in
// an epoch of its own, as the redis store does; one that stalls past its
// lease (a loaded machine, the race detector) finds, once it runs again,
// that another polls its topic, whose poll may have started while its own
// was in flight. The checks over all instances excuse those moments.
type storeWatch struct {
	mu sync.Mutex
	// troubled are the moments at which an instance's count of store
	// errors or lost leases had grown, or some of its topics were down,
	// oldest first.
	troubled []time.Time
	errors   map[*instance]float64
}

// storeTroubleKept is how long a storeWatch keeps a moment of trouble.
const storeTroubleKept = 10 * time.Minute

// trouble tells whether an instance found the store out of reach between
// from and to.
func (w *storeWatch) trouble(from, to time.Time) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	i, _ := slices.BinarySearchFunc(w.troubled, from, func(t, from time.Time) int { return t.Compare(from) })
	return i < len(w.troubled) && !w.troubled[i].After(to)
}

// last returns the latest moment of trouble, the zero time if none.
func (w *storeWatch) last() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.troubled) == 0 {
		return time.Time{}
	}
	return w.troubled[len(w.troubled)-1]
}

// moments returns how many moments of trouble were seen.
func (w *storeWatch) moments() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.troubled)
}

// watchStore samples the store metrics of every instance four times a
// second until ctx ends.
func (s *soak) watchStore(ctx context.Context, w *storeWatch) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, in := range s.insts {
			errs, down, err := in.storeMetrics()
			if err != nil {
				continue
			}
			now := time.Now()
			w.mu.Lock()
			if prev, ok := w.errors[in]; ok && errs > prev || down > 0 {
				w.troubled = append(w.troubled, now)
				for len(w.troubled) > 0 && now.Sub(w.troubled[0]) > storeTroubleKept {
					w.troubled = w.troubled[1:]
				}
			}
			w.errors[in] = errs
			w.mu.Unlock()
		}
	}
}
