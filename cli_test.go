package pollsse

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	caddyBinaryOnce sync.Once
	caddyBinaryPath string
	caddyBinaryErr  error
)

// caddyBinary builds ./cmd/caddy once per test run (with the race detector
// when the tests have it, which also reuses their build cache) and returns
// its path.
func caddyBinary(t testing.TB) string {
	t.Helper()
	caddyBinaryOnce.Do(func() {
		dir, err := os.MkdirTemp("", "pollsse-caddy-")
		if err != nil {
			caddyBinaryErr = err
			return
		}
		caddyBinaryPath = filepath.Join(dir, "caddy")
		args := []string{"build", "-o", caddyBinaryPath}
		if raceEnabled {
			args = append(args, "-race")
		}
		out, err := exec.Command("go", append(args, "./cmd/caddy")...).CombinedOutput()
		if err != nil {
			caddyBinaryErr = fmt.Errorf("go build ./cmd/caddy: %v\n%s", err, out)
		}
	})
	if caddyBinaryErr != nil {
		t.Fatal(caddyBinaryErr)
	}
	return caddyBinaryPath
}

// A caddyProcess is the caddy binary running a Caddyfile.
type caddyProcess struct {
	bin, config, admin string
	cmd                *exec.Cmd
	output             *lockedBuffer
	exited             chan error
}

// A lockedBuffer is the output of a process, which its copying goroutines
// write while a test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (lb *lockedBuffer) Write(p []byte) (int, error) {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	return lb.b.Write(p)
}

func (lb *lockedBuffer) String() string {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	return lb.b.String()
}

// startCaddyProcess runs the caddy binary with caddyfile, which has no
// global options block: the admin endpoint (on a free port) and the storage
// (in a temporary directory) are set, and each of globalOptions is added as
// one more line of the block.
func startCaddyProcess(t *testing.T, caddyfile string, globalOptions ...string) *caddyProcess {
	t.Helper()
	return startCaddyProcessUnder(t, nil, caddyfile, globalOptions...)
}

// startCaddyProcessUnder is startCaddyProcess with the caddy binary run by
// the command prefix (such as prlimit and its options), which must exec
// it, so that the process is Caddy's.
func startCaddyProcessUnder(t *testing.T, prefix []string, caddyfile string, globalOptions ...string) *caddyProcess {
	t.Helper()
	p := &caddyProcess{bin: caddyBinary(t), config: filepath.Join(t.TempDir(), "Caddyfile"), output: new(lockedBuffer), exited: make(chan error, 1)}
	p.admin = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	var extra string
	for _, o := range globalOptions {
		extra += "\t" + o + "\n"
	}
	caddyfile = fmt.Sprintf("{\n\tadmin %s\n\tstorage file_system %s\n%s}\n", p.admin, t.TempDir(), extra) + caddyfile
	if err := os.WriteFile(p.config, []byte(caddyfile), 0o644); err != nil {
		t.Fatal(err)
	}
	args := append(slices.Clone(prefix), p.bin, "run", "--config", p.config)
	p.cmd = exec.Command(args[0], args[1:]...)
	p.cmd.Stdout, p.cmd.Stderr = p.output, p.output
	p.cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.exited <- p.cmd.Wait() }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		if t.Failed() {
			t.Logf("caddy output:\n%s", p.output)
		}
	})
	// The admin endpoint listens before the config's servers do; its
	// /config/ answers once the config has loaded (Caddy holds the config
	// lock while it starts the servers), so the sites listen from then on.
	waitFor(t, 30*time.Second, "caddy to load its config", func() bool {
		resp, err := http.Get("http://" + p.admin + "/config/")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == http.StatusOK && len(bytes.TrimSpace(body)) > 0 && string(bytes.TrimSpace(body)) != "null"
	})
	return p
}

// command runs a caddy subcommand against the running process and fails the
// test if it does not return within 10 seconds.
func (p *caddyProcess) command(t *testing.T, args ...string) {
	t.Helper()
	cmd := exec.Command(p.bin, append(args, "--address", p.admin)...)
	done := make(chan error, 1)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("caddy %s: %v\n%s", strings.Join(args, " "), err, out.String())
		}
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("caddy %s hung with streams open", strings.Join(args, " "))
	}
}

func TestCaddyCommandReloadAndStopWithOpenStreams(t *testing.T) {
	api := newFakeAPI(t, `{"v":0}`)
	port := freePort(t)
	site := fmt.Sprintf("http://127.0.0.1:%d {\n\tpoll_sse /events %s {\n\t\tinterval 100ms\n\t}\n}\n", port, api.URL)
	p := startCaddyProcess(t, site)
	url := fmt.Sprintf("http://127.0.0.1:%d/events", port)

	streams := openStreams(t, url, 5)

	p.command(t, "reload", "--config", p.config, "--force")
	for _, sc := range streams {
		expectEnd(t, sc)
	}
	api.set(`{"v":1}`)
	sc := openStream(t, http.DefaultClient, url, "")
	if ev := sc.next(10 * time.Second); ev.name != "snapshot" {
		t.Fatalf("after the reload got %+v", ev)
	}

	p.command(t, "stop")
	expectEnd(t, sc)
	select {
	case err := <-p.exited:
		if err != nil {
			t.Errorf("caddy exited with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("caddy did not exit after caddy stop")
	}
	if strings.Contains(p.output.String(), "DATA RACE") {
		t.Errorf("the race detector found a race in caddy:\n%s", p.output)
	}
}

// TestIdsFromBeforeARestartGetASnapshot: an id from before Caddy stopped is
// never taken for a newer event of the Caddy started after it: a browser
// that resumes with it gets a fresh snapshot, whose id is none of the old.
func TestIdsFromBeforeARestartGetASnapshot(t *testing.T) {
	api := newFakeAPI(t, `{"v":0}`)
	port := freePort(t)
	site := fmt.Sprintf("http://127.0.0.1:%d {\n\tpoll_sse /events %s {\n\t\tinterval 100ms\n\t}\n}\n", port, api.URL)
	url := fmt.Sprintf("http://127.0.0.1:%d/events", port)

	p := startCaddyProcess(t, site)
	sc := openStream(t, http.DefaultClient, url, "")
	snap := sc.next(10 * time.Second)
	api.set(`{"v":1}`)
	patch := sc.next(10 * time.Second)
	if snap.name != "snapshot" || patch.name != "patch" {
		t.Fatalf("got %+v and %+v", snap, patch)
	}
	old := []string{snap.id, patch.id}
	p.command(t, "stop")
	expectEnd(t, sc)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		t.Fatal("caddy did not exit after caddy stop")
	}

	api.set(`{"v":2}`)
	startCaddyProcess(t, site)
	for _, id := range old {
		sc := openStream(t, http.DefaultClient, url, id)
		ev := sc.next(10 * time.Second)
		if ev.name != "snapshot" || ev.data != `{"v":2}` || slices.Contains(old, ev.id) {
			t.Errorf("resuming with %q after the restart got %+v, want a snapshot of the new document with a new id", id, ev)
		}
		sc.close()
	}
}
