package pollsse

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// A redisServer is a redis-server process that a test started on a free
// loopback port, without persistence: a restart starts it empty.
type redisServer struct {
	t    testing.TB
	port int
	dir  string
	args []string
	cmd  *exec.Cmd
	// exited is closed when the process has exited.
	exited chan struct{}
}

var redisVersion = sync.OnceValues(func() (string, error) {
	out, err := exec.Command("redis-server", "--version").CombinedOutput()
	return string(out), err
})

// requireRedis fails the test, saying how to install it, when there is no
// redis-server.
func requireRedis(t testing.TB) {
	t.Helper()
	if _, err := redisVersion(); err != nil {
		t.Fatalf("redis-server --version: %v: the tests of the redis store need redis-server and redis-cli "+
			"(apt-get install redis-server redis-tools; make test installs them)", err)
	}
}

// startRedis starts a redis-server with the given extra arguments, stopped
// when the test ends.
func startRedis(t testing.TB, args ...string) *redisServer {
	t.Helper()
	requireRedis(t)
	r := &redisServer{t: t, port: freePort(t), dir: t.TempDir(), args: args}
	r.start()
	t.Cleanup(r.kill)
	return r
}

func (r *redisServer) start() {
	r.t.Helper()
	args := append([]string{"--port", fmt.Sprint(r.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", r.dir, "--logfile", filepath.Join(r.dir, "redis.log")}, r.args...)
	r.cmd = exec.Command("redis-server", args...)
	if err := r.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	r.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}) {
		cmd.Wait()
		close(exited)
	}(r.cmd, r.exited)
	c := r.client()
	defer c.Close()
	waitFor(r.t, 10*time.Second, "redis-server to answer", func() bool {
		// NOAUTH is an answer too.
		err := c.Ping(context.Background()).Err()
		var re redis.Error
		return err == nil || errors.As(err, &re)
	})
}

func (r *redisServer) addr() string { return fmt.Sprintf("127.0.0.1:%d", r.port) }

func (r *redisServer) url() string { return "redis://" + r.addr() }

// client returns a client of the server, closed by the caller.
func (r *redisServer) client() *redis.Client {
	return redis.NewClient(&redis.Options{Addr: r.addr(), MaxRetries: -1, DialTimeout: time.Second})
}

// kill stops the server at once.
func (r *redisServer) kill() {
	if r.cmd == nil {
		return
	}
	r.cmd.Process.Kill()
	<-r.exited
	r.cmd = nil
}

// restart kills the server and starts it again, empty, on the same port.
func (r *redisServer) restart() {
	r.t.Helper()
	r.kill()
	r.start()
}

// do runs one command on the server and returns its answer.
func (r *redisServer) do(args ...any) (any, error) {
	c := r.client()
	defer c.Close()
	return c.Do(context.Background(), args...).Result()
}

// keys returns the server's keys with their TTLs in ms (-1 for none).
func (r *redisServer) keys() map[string]int64 {
	r.t.Helper()
	c := r.client()
	defer c.Close()
	ctx := context.Background()
	names, err := c.Keys(ctx, "*").Result()
	if err != nil {
		r.t.Fatal(err)
	}
	out := map[string]int64{}
	for _, k := range names {
		out[k] = c.PTTL(ctx, k).Val().Milliseconds()
		if c.PTTL(ctx, k).Val() < 0 {
			out[k] = -1
		}
	}
	return out
}

// clients returns how many clients are connected to the server, itself
// not counted.
func (r *redisServer) clients() int {
	r.t.Helper()
	v, err := r.do("CLIENT", "LIST")
	if err != nil {
		r.t.Fatal(err)
	}
	return strings.Count(strings.TrimSpace(v.(string)), "\n")
}

// testRedisStore returns a redis store of r, with prefix and a short lease.
func testRedisStore(r *redisServer, prefix string) *RedisStore {
	return &RedisStore{URL: r.url(), Prefix: prefix, Lease: caddy.Duration(time.Second)}
}

func init() {
	contractStores = append(contractStores, contractStore{
		name:   "redis",
		shared: true,
		newGroup: func(t *testing.T) func() hubStore {
			r := startRedis(t)
			prefix := fmt.Sprintf("contract%d:", time.Now().UnixNano())
			return func() hubStore {
				hs, err := testRedisStore(r, prefix).attach(zap.NewNop())
				if err != nil {
					t.Fatal(err)
				}
				return hs
			}
		},
	})
}
