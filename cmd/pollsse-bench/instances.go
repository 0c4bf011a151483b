package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Several instances on one Redis: with -instances N (N > 1) the tool starts
// N Caddy processes whose handlers share the redis store, connects -n
// subscribers of each topic to each instance, and reports, besides the
// latency from the upstream's answer to the last subscriber of all
// instances, the upstream's requests per interval and what Redis did for
// each change: its CPU, the commands it ran and the bytes it took in and
// sent out.

// redisProcess is a redis-server that the tool started on a free loopback
// port, without persistence.
type redisProcess struct {
	cmd *exec.Cmd
	dir string
	url string
	pid string
}

// startRedis runs redis-server, which must be on the PATH.
func startRedis() (*redisProcess, error) {
	dir, err := os.MkdirTemp("", "pollsse-bench-redis-")
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := exec.Command("redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", dir, "--logfile", filepath.Join(dir, "redis.log"))
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting redis-server (apt-get install redis-server): %w", err)
	}
	r := &redisProcess{cmd: cmd, dir: dir, url: fmt.Sprintf("redis://127.0.0.1:%d", port), pid: strconv.Itoa(cmd.Process.Pid)}
	c := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", port)})
	defer c.Close()
	for deadline := time.Now().Add(10 * time.Second); c.Ping(context.Background()).Err() != nil; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			r.stop()
			return nil, fmt.Errorf("redis-server did not answer within 10s")
		}
	}
	return r, nil
}

func (r *redisProcess) stop() {
	r.cmd.Process.Kill()
	r.cmd.Wait()
	os.RemoveAll(r.dir)
}

// redisStats are the counters of INFO stats that a run reads before and
// after its events.
type redisStats struct {
	commands, in, out int64
}

func readRedisStats(ctx context.Context, c *redis.Client) (redisStats, error) {
	info, err := c.Info(ctx, "stats").Result()
	if err != nil {
		return redisStats{}, err
	}
	var s redisStats
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		name, value, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(value, 10, 64)
		switch name {
		case "total_commands_processed":
			s.commands = n
		case "total_net_input_bytes":
			s.in = n
		case "total_net_output_bytes":
			s.out = n
		}
	}
	return s, nil
}

// An instancesTrial is the figures of one run of several instances.
type instancesTrial struct {
	Instances, Subscribers int
	P50, P99, Max          float64 // ms, median over events
	Missing                int64
	Requests               int64 // upstream requests during the events
	RequestsPerInterval    float64
	ServerCPU              float64 // s, all instances, over the events
	RedisCPUMSPerEvent     float64
	CommandsPerEvent       float64
	RedisInPerEvent        float64 // bytes
	RedisOutPerEvent       float64
	Resynced               int
}

// runInstances runs -trials trials of -instances instances on one Redis,
// -redis or one that it starts, and prints each.
func runInstances(ctx context.Context, o options) error {
	fmt.Printf("pollsse-bench: %d instances on one Redis, %d topic(s) × %d subscribers per instance, %d events, interval %s, %d trial(s)\n",
		o.instances, o.topics, o.n, o.events, o.interval, o.trials)
	for i := 0; i < o.trials; i++ {
		tr, err := runInstancesTrial(ctx, o)
		if err != nil {
			return fmt.Errorf("trial %d: %w", i+1, err)
		}
		tr.print(fmt.Sprintf("trial %d", i+1))
	}
	return nil
}

func runInstancesTrial(ctx context.Context, o options) (*instancesTrial, error) {
	redisURL, redisPID := o.redis, ""
	if redisURL == "" {
		r, err := startRedis()
		if err != nil {
			return nil, err
		}
		defer r.stop()
		redisURL, redisPID = r.url, r.pid
	}
	ropts, err := redis.ParseURL(redisURL)
	if err != nil {
		return nil, err
	}
	rc := redis.NewClient(ropts)
	defer rc.Close()

	up, err := newUpstream("127.0.0.1:0", o.topics, o.eventBytes)
	if err != nil {
		return nil, err
	}
	defer up.close()
	var env []string
	if o.env != "" {
		env = strings.Split(o.env, ",")
	}
	var pids []string
	var swarms []*swarm
	// A prefix of its own, so that a Redis given with -redis holds no
	// topic of an earlier trial.
	prefix := fmt.Sprintf("bench%d:", time.Now().UnixNano())
	for range o.instances {
		p, err := startCaddy(o.caddy, env, serverConfig{
			upstream: up.url, interval: o.interval, writeTimeout: o.writeTimeout, heartbeat: o.heartbeat,
			store: map[string]any{"module": "redis", "url": redisURL, "prefix": prefix},
		})
		if err != nil {
			return nil, err
		}
		defer p.stop()
		pids = append(pids, p.pid)
		swarms = append(swarms, newSwarm(p.base, "/sse/", o.topics, o.n, o.events, 0))
	}
	pid := strings.Join(pids, ",")
	sleep(ctx, o.settle)
	for _, s := range swarms {
		defer s.close()
		cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		err := s.connect(cctx, o.inFlight)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("connecting: %w", err)
		}
	}
	tr := &instancesTrial{Instances: o.instances, Subscribers: o.instances * o.topics * o.n}
	r0, err := readRedisStats(ctx, rc)
	if err != nil {
		return nil, err
	}
	cpu0, rcpu0, t0 := sumProcs(pid, cpuSeconds), cpuSeconds(redisPID), time.Now()
	perEvent := max(10*time.Second, 3*o.interval)
	for k := 1; k <= o.events; k++ {
		up.change(int64(k))
		deadline := time.Now().Add(perEvent)
		for time.Now().Before(deadline) && ctx.Err() == nil {
			all := true
			for _, s := range swarms {
				all = all && s.received[k-1].Load() == int64(len(s.clients))
			}
			if all {
				break
			}
			time.Sleep(2 * time.Millisecond)
		}
		if k < o.events {
			sleep(ctx, o.gap)
		}
	}
	cpu1, rcpu1, t1 := sumProcs(pid, cpuSeconds), cpuSeconds(redisPID), time.Now()
	r1, err := readRedisStats(ctx, rc)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	events := float64(o.events)
	tr.ServerCPU = cpu1 - cpu0
	if redisPID != "" {
		tr.RedisCPUMSPerEvent = (rcpu1 - rcpu0) * 1000 / events
	}
	// The stats' own INFO call is one command of the difference.
	tr.CommandsPerEvent = float64(r1.commands-r0.commands-1) / events
	tr.RedisInPerEvent = float64(r1.in-r0.in) / events
	tr.RedisOutPerEvent = float64(r1.out-r0.out) / events
	times := up.requestTimes(t0, t1)
	tr.Requests = int64(len(times))
	tr.RequestsPerInterval = float64(len(times)) / (t1.Sub(t0).Seconds() / o.interval.Seconds())

	var ev []eventStats
	lat := make([]float64, 0, tr.Subscribers)
	for k := 0; k < o.events; k++ {
		lat = lat[:0]
		for _, s := range swarms {
			for _, c := range s.clients {
				if v := c.lat[k].Load(); v >= 0 {
					lat = append(lat, float64(v)/1000)
				}
			}
		}
		slices.Sort(lat)
		ev = append(ev, eventStats{P50: percentile(lat, 0.5), P99: percentile(lat, 0.99), Max: percentile(lat, 1)})
		tr.Missing += int64(tr.Subscribers - len(lat))
	}
	tr.P50 = median(ev, func(e eventStats) float64 { return e.P50 })
	tr.P99 = median(ev, func(e eventStats) float64 { return e.P99 })
	tr.Max = median(ev, func(e eventStats) float64 { return e.Max })
	for _, s := range swarms {
		for _, c := range s.clients {
			if c.snapshots.Load() > 1 {
				tr.Resynced++
			}
		}
	}
	return tr, nil
}

func (t *instancesTrial) print(label string) {
	fmt.Printf("%s: %d instances, %d subscribers: latency p50 %.1fms p99 %.1fms max %.1fms, %d missing, %d resynced\n",
		label, t.Instances, t.Subscribers, t.P50, t.P99, t.Max, t.Missing, t.Resynced)
	fmt.Printf("  upstream: %d requests, %.2f per interval; Caddy CPU %.2fs for all instances\n", t.Requests, t.RequestsPerInterval, t.ServerCPU)
	fmt.Printf("  Redis per change: %.2fms CPU, %.1f commands, %.0f bytes in, %.0f bytes out\n",
		t.RedisCPUMSPerEvent, t.CommandsPerEvent, t.RedisInPerEvent, t.RedisOutPerEvent)
}
