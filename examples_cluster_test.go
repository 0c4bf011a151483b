//go:build unix

package pollsse

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"testing"
	"time"
)

// startClusterExample runs examples/cluster/Caddyfile, as it is, in a
// process of the caddy binary with the environment that the example's
// comment gives each instance.
func startClusterExample(t *testing.T, upstream, redisURL string) *instance {
	t.Helper()
	port, admin := freePort(t), fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := &caddyProcess{bin: caddyBinary(t), config: "examples/cluster/Caddyfile", admin: admin, output: new(lockedBuffer), exited: make(chan error, 1)}
	p.cmd = exec.Command(p.bin, "run", "--config", p.config)
	p.cmd.Stdout, p.cmd.Stderr = p.output, p.output
	p.cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "XDG_DATA_HOME="+t.TempDir(), "XDG_CONFIG_HOME="+t.TempDir(),
		fmt.Sprintf("PORT=%d", port), "ADMIN="+admin, "UPSTREAM="+upstream, "REDIS_URL="+redisURL)
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.exited <- p.cmd.Wait() }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			t.Logf("caddy output:\n%s", p.output)
		}
	})
	waitFor(t, 30*time.Second, "the example to load its config", func() bool {
		resp, err := http.Get("http://" + admin + "/config/")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == http.StatusOK && len(bytes.TrimSpace(body)) > 4
	})
	return &instance{caddyProcess: p, base: fmt.Sprintf("http://127.0.0.1:%d", port), path: "/orders/events"}
}

// TestExampleClusterTwoInstancesOneRedis runs examples/cluster on two
// instances and one Redis: they poll the upstream once between them,
// stream the same events with the same ids, and a browser that moves from
// one to the other resumes where it was.
func TestExampleClusterTwoInstancesOneRedis(t *testing.T) {
	r := startRedis(t)
	api := newMutatingAPI(t, 12)
	insts := []*instance{startClusterExample(t, api.URL, r.url()), startClusterExample(t, api.URL, r.url())}
	fs := startFollowers(t, api, insts, 1)
	converge(t, api, fs, 20*time.Second)
	start := api.count.Load()
	converge(t, api, fs, 20*time.Second)
	converge(t, api, fs, 20*time.Second)
	// interval 1s: two changes, each seen by both instances' browsers,
	// took a few polls of one poller.
	if n := api.count.Load() - start; n > 6 {
		t.Errorf("the upstream got %d requests for two changes at an interval of 1s", n)
	}
	checkSameEvents(t, fs)
	// The browser of the first instance moves to the second.
	fs[0].mu.Lock()
	lastID := fs[0].c.lastID
	fs[0].mu.Unlock()
	fs[0].stop()
	api.step()
	sc := openStream(t, http.DefaultClient, insts[1].events(), lastID)
	if ev := sc.next(10 * time.Second); ev.name != "patch" {
		t.Errorf("a browser of the first instance resumes on the second with %s %q, want the patch it missed", ev.name, ev.data)
	}
}
