//go:build unix

package pollsse

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// clusterPort returns a free loopback port whose cluster bus port (10000
// more) is free too.
func clusterPort(t *testing.T) int {
	t.Helper()
	for range 100 {
		p := freePort(t)
		if p+10000 > 65535 {
			continue
		}
		if ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p+10000)); err == nil {
			ln.Close()
			return p
		}
	}
	t.Fatal("no free pair of ports for a cluster node")
	return 0
}

// startRedisCluster starts a Redis Cluster of three masters on loopback
// and returns the store URL that names them.
func startRedisCluster(t *testing.T) string {
	t.Helper()
	requireRedis(t)
	var nodes []*redisServer
	var addrs []string
	for range 3 {
		r := &redisServer{t: t, port: clusterPort(t), dir: t.TempDir()}
		r.args = []string{"--cluster-enabled", "yes", "--cluster-config-file", r.dir + "/nodes.conf", "--cluster-node-timeout", "2000"}
		r.start()
		t.Cleanup(r.kill)
		nodes = append(nodes, r)
		addrs = append(addrs, r.addr())
	}
	out, err := exec.Command("redis-cli", append(append([]string{"--cluster", "create"}, addrs...), "--cluster-replicas", "0", "--cluster-yes")...).CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	waitFor(t, 30*time.Second, "the cluster to be ok on every node", func() bool {
		for _, r := range nodes {
			c := r.client()
			info, err := c.ClusterInfo(context.Background()).Result()
			c.Close()
			if err != nil || !strings.Contains(info, "cluster_state:ok") {
				return false
			}
		}
		return true
	})
	return fmt.Sprintf("redis://%s?addr=%s&addr=%s", addrs[0], addrs[1], addrs[2])
}

// TestInstancesRedisCluster: on a Redis Cluster of three masters, three
// instances poll once between them, and browsers that hop between them
// rebuild the upstream's document with the same ids everywhere, before and
// after the instance that polls is killed.
func TestInstancesRedisCluster(t *testing.T) {
	url := startRedisCluster(t)
	api := newMutatingAPI(t, 11)
	insts := startInstances(t, 3, api.URL, redisStoreLines(url), "")
	fs := startFollowers(t, api, insts, 2)
	for _, f := range fs {
		f.mu.Lock()
		f.hop = true
		f.mu.Unlock()
	}
	converge(t, api, fs, 20*time.Second)
	start := api.count.Load()
	for range 200 {
		api.step()
		time.Sleep(15 * time.Millisecond)
	}
	converge(t, api, fs, 20*time.Second)
	checkSameEvents(t, fs)
	leases := 0
	for _, in := range insts {
		leases += strings.Count(in.output.String(), "lease taken")
	}
	if leases != 1 {
		t.Errorf("the lease was taken %d times, want once", leases)
	}
	t.Logf("%d upstream requests while the upstream changed 200 times over about %s", api.count.Load()-start, 200*15*time.Millisecond)

	// The instance that polls dies: another takes over, and the browsers
	// converge.
	dead := leader(t, insts)
	dead.cmd.Process.Kill()
	<-dead.exited
	for range 3 {
		converge(t, api, fs, 20*time.Second)
	}
	checkSameEvents(t, fs)
}
