package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// A handlerConfig is the part of the Caddyfile that the soak varies.
type handlerConfig struct {
	upstream string
	// gens are the values of X-Soak-Gen of each route: a reload that
	// changes one changes its topics' configuration (new hubs, new ids).
	gens map[string]int
	// heartbeat and retry change on reloads that keep the topics.
	heartbeat time.Duration
	retry     time.Duration
	// logLevel is Caddy's log level.
	logLevel string
	// redisURL, when set, puts every route's topics in the redis store
	// at that URL, shared by all the instances.
	redisURL string
}

// The handlers' settings, the same for every run: short enough that a
// minute sees every path taken.
const (
	pollInterval  = 100 * time.Millisecond
	history       = 32
	mainIdle      = 10 * time.Second
	userIdle      = 3 * time.Second
	tmplIdle      = 2 * time.Second
	upTimeout     = 3 * time.Second
	writeTimeout  = 2 * time.Second
	maxBackoff    = 2 * time.Second
	maxBody       = 2 << 20
	tmplMaxTopics = 12
	// tmplNewTopics per tmplNewTopicsPer seconds is the max_new_topics
	// of the templated route, which all the soak's clients (one address)
	// exceed now and then; the other routes allow many more, so that
	// their topics are recreated after every restart.
	tmplNewTopics    = 40
	tmplNewTopicsPer = 10
	otherNewTopics   = 10000
	// stillHistory is the history of the flapping topic, short so that a
	// stalled reader falls out of it.
	stillHistory = 4
	readHeader   = 5 * time.Second
	// redisLease is the lease of a topic on the redis store: how long the
	// topics of an instance killed at once go unpolled at most.
	redisLease = time.Second
)

// idleTimeout returns the idle_timeout of a route's topics.
func idleTimeout(route string) time.Duration {
	switch route {
	case "u":
		return userIdle
	case "t":
		return tmplIdle
	}
	return mainIdle
}

// caddyfile returns the configuration of one instance.
func caddyfile(in *instance, hc handlerConfig) string {
	route := func(route string, history int, maxBody int64) string {
		// Each instance names itself to the upstream in a header, unless
		// they share a store: the values of header_up make a topic's
		// identity, and the upstream asks the system instead.
		instanceHeader := "\t\t\theader_up X-Soak-Instance {env.SOAK_INSTANCE}\n"
		store := ""
		if hc.redisURL != "" {
			instanceHeader = ""
			store = fmt.Sprintf("\t\t\tstore redis {\n\t\t\t\turl %s\n\t\t\t\tlease %s\n\t\t\t}\n", hc.redisURL, redisLease)
		}
		newTopics := fmt.Sprintf("%d 1m", otherNewTopics)
		if route == "t" {
			newTopics = fmt.Sprintf("%d %ds", tmplNewTopics, tmplNewTopicsPer)
		}
		return fmt.Sprintf(`			interval %s
			history %d
			timeout %s
			write_timeout %s
			heartbeat %s
			retry %s
			max_backoff %s
			max_body %d
			header_up X-Soak-Gen %s%d
%s			max_new_topics %s
%s`, pollInterval, history, upTimeout, writeTimeout, hc.heartbeat, hc.retry, maxBackoff, maxBody, route, hc.gens[route], instanceHeader, newTopics, store)
	}
	common := func(r string) string { return route(r, history, maxBody) }
	return fmt.Sprintf(`{
	admin 127.0.0.1:%d
	storage file_system %s
	local_certs
	skip_install_trust
	auto_https disable_redirects
	grace_period 3s
	log {
		output file %s
		level %s
	}
	servers {
		timeouts {
			read_header %s
		}
	}
}

(streams) {
	handle_path /s/* {
		poll_sse %s/doc{http.request.uri.path} {
%s			idle_timeout %s
			ignore /generated_at
		}
	}
	handle_path /m/* {
		poll_sse %s/doc{http.request.uri.path} {
%s			idle_timeout %s
			mode merge_patch
		}
	}
	handle_path /f/* {
		poll_sse %s/doc{http.request.uri.path} {
%s			idle_timeout %s
		}
	}
	handle_path /u/* {
		poll_sse %s/user/feed {
%s			idle_timeout %s
			forward_headers Authorization
		}
	}
	handle_path /t/* {
		poll_sse %s/tmpl{http.request.uri.path}?q={query.q} {
%s			idle_timeout %s
			max_topics %d
		}
	}
	respond 404
}

http://127.0.0.1:%d {
	bind 127.0.0.1
	import streams
}

https://localhost:%d {
	bind 127.0.0.1
	tls internal
	import streams
}
`, in.adminPort, filepath.Join(in.dir, "storage"), filepath.Join(in.dir, "caddy.log"), hc.logLevel, readHeader,
		hc.upstream, common("s"), idleTimeout("s"),
		hc.upstream, common("m"), idleTimeout("m"),
		hc.upstream, route("f", stillHistory, 8<<20), idleTimeout("f"),
		hc.upstream, common("u"), idleTimeout("u"),
		hc.upstream, common("t"), idleTimeout("t"), tmplMaxTopics,
		in.h1Port, in.tlsPort)
}

// An instance is one Caddy process of the soak, with ports and a directory
// of its own; it keeps them across restarts.
type instance struct {
	index                      int
	bin                        string
	dir                        string
	adminPort, h1Port, tlsPort int

	mu  sync.Mutex
	cmd *exec.Cmd
	// run counts the processes started; SOAK_INSTANCE is "i<index>r<run>",
	// which every poll carries in X-Soak-Instance.
	run    int
	exited chan struct{}
	out    *os.File
	roots  *x509.CertPool
	// plain is set for an instance that serves plain HTTP alone.
	plain bool
	// redisPort is the port of the shared store's Redis, 0 for none.
	redisPort int
	// written are the route generations (X-Soak-Gen) of the configuration
	// file, running those of the configuration that the process runs:
	// instances that share a store share a topic only where their
	// generations agree.
	written, running map[string]int
}

func newInstance(index int, bin, dir string) (*instance, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	return &instance{index: index, bin: bin, dir: dir, adminPort: ports[0], h1Port: ports[1], tlsPort: ports[2]}, nil
}

func freePorts(n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func (in *instance) name() string   { return "i" + strconv.Itoa(in.index) }
func (in *instance) config() string { return filepath.Join(in.dir, "Caddyfile") }
func (in *instance) admin() string  { return "http://127.0.0.1:" + strconv.Itoa(in.adminPort) }

// runID is the value of X-Soak-Instance of the running process.
func (in *instance) runID() string {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.name() + "r" + strconv.Itoa(in.run)
}

// pid returns the process id of the running process, "" when stopped.
func (in *instance) pid() string {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.cmd == nil {
		return ""
	}
	return strconv.Itoa(in.cmd.Process.Pid)
}

// writeConfig writes the instance's Caddyfile.
func (in *instance) writeConfig(hc handlerConfig) error {
	if err := os.WriteFile(in.config(), []byte(caddyfile(in, hc)), 0o644); err != nil {
		return err
	}
	in.mu.Lock()
	in.written = maps.Clone(hc.gens)
	in.mu.Unlock()
	return nil
}

// loaded notes that the process runs the configuration file as written.
func (in *instance) loaded() {
	in.mu.Lock()
	in.running = in.written
	in.mu.Unlock()
}

// gen is the X-Soak-Gen of route in the configuration that the process
// runs.
func (in *instance) gen(route string) string {
	in.mu.Lock()
	defer in.mu.Unlock()
	return route + strconv.Itoa(in.running[route])
}

// start runs a new Caddy process and waits until both sites serve.
func (in *instance) start(ctx context.Context) error {
	in.mu.Lock()
	in.run++
	in.running = in.written
	out, err := os.OpenFile(filepath.Join(in.dir, "caddy.out"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		in.mu.Unlock()
		return err
	}
	fmt.Fprintf(out, "\n=== run %d at %s\n", in.run, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(in.bin, "run", "--config", in.config(), "--adapter", "caddyfile")
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = append(os.Environ(), "SOAK_INSTANCE="+in.name()+"r"+strconv.Itoa(in.run), "HOME="+in.dir, "XDG_DATA_HOME="+filepath.Join(in.dir, "data"), "XDG_CONFIG_HOME="+filepath.Join(in.dir, "config"))
	if err := cmd.Start(); err != nil {
		in.mu.Unlock()
		out.Close()
		return fmt.Errorf("starting %s: %w", in.bin, err)
	}
	exited := make(chan struct{})
	in.cmd, in.exited, in.out = cmd, exited, out
	in.mu.Unlock()
	go func() {
		cmd.Wait()
		out.Close()
		close(exited)
	}()
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-exited:
			return fmt.Errorf("caddy %s exited while starting; see %s", in.name(), filepath.Join(in.dir, "caddy.out"))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if err := in.ready(); err == nil {
			return nil
		} else if time.Now().After(deadline) {
			return fmt.Errorf("caddy %s did not serve within 60s: %v", in.name(), err)
		}
	}
}

// ready tells whether the admin endpoint has the config and both sites
// answer, the HTTPS one with a certificate of the instance's own CA.
func (in *instance) ready() error {
	resp, err := http.Get(in.admin() + "/config/")
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || len(bytes.TrimSpace(body)) == 0 || string(bytes.TrimSpace(body)) == "null" {
		return errors.New("no config yet")
	}
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(in.h1Port), time.Second)
	if err != nil {
		return err
	}
	c.Close()
	if in.plain {
		return nil
	}
	pem, err := os.ReadFile(filepath.Join(in.dir, "storage", "pki", "authorities", "local", "root.crt"))
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return errors.New("no root certificate yet")
	}
	tc, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", "127.0.0.1:"+strconv.Itoa(in.tlsPort), &tls.Config{ServerName: "localhost", RootCAs: roots})
	if err != nil {
		return err
	}
	tc.Close()
	in.mu.Lock()
	in.roots = roots
	in.mu.Unlock()
	return nil
}

// command runs a caddy subcommand against the instance's admin endpoint.
func (in *instance) command(args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, in.bin, append(args, "--address", "127.0.0.1:"+strconv.Itoa(in.adminPort))...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("caddy %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// reload makes the instance load its Caddyfile again, whether or not it
// changed.
func (in *instance) reload() error {
	if err := in.command("reload", "--config", in.config(), "--adapter", "caddyfile", "--force"); err != nil {
		return err
	}
	in.loaded()
	return nil
}

// stop ends the process with caddy stop, and kills it if that hangs.
func (in *instance) stop() error {
	in.mu.Lock()
	cmd, exited := in.cmd, in.exited
	in.mu.Unlock()
	if cmd == nil {
		return nil
	}
	err := in.command("stop")
	select {
	case <-exited:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		<-exited
		if err == nil {
			err = errors.New("caddy stop did not end the process within 20s")
		}
	}
	in.mu.Lock()
	in.cmd = nil
	in.mu.Unlock()
	return err
}

// kill9 kills the process with SIGKILL, as a crash or the OOM killer
// would: it closes nothing and gives up no lease.
func (in *instance) kill9() error {
	in.mu.Lock()
	cmd, exited := in.cmd, in.exited
	in.cmd = nil
	in.mu.Unlock()
	if cmd == nil {
		return nil
	}
	cmd.Process.Kill()
	select {
	case <-exited:
		return nil
	case <-time.After(20 * time.Second):
		return errors.New("the process did not end within 20s of SIGKILL")
	}
}

// kill ends the process at once, at the end of a failed run.
func (in *instance) kill() {
	in.mu.Lock()
	cmd, exited := in.cmd, in.exited
	in.cmd = nil
	in.mu.Unlock()
	if cmd != nil {
		cmd.Process.Signal(syscall.SIGQUIT) // a goroutine dump in caddy.out
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}
}

// exitedEarly tells whether the process ended without being stopped.
func (in *instance) exitedEarly() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.cmd == nil {
		return false
	}
	select {
	case <-in.exited:
		return true
	default:
		return false
	}
}

// troubleInOutput returns the first lines of the process's output that
// tell of a data race, a panic or a fatal error.
func (in *instance) troubleInOutput() string {
	f, err := os.Open(filepath.Join(in.dir, "caddy.out"))
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var out []string
	for sc.Scan() {
		line := sc.Text()
		if len(out) > 0 {
			out = append(out, line)
			if len(out) > 40 {
				break
			}
			continue
		}
		if strings.HasPrefix(line, "panic:") || strings.HasPrefix(line, "fatal error:") {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

// races returns the data races that the race detector reported in the
// process's output: those in which the handler's code takes part, and how
// many others there were (in Caddy's own code).
func (in *instance) races() (ours []string, others int) {
	b, err := os.ReadFile(filepath.Join(in.dir, "caddy.out"))
	if err != nil {
		return nil, 0
	}
	const sep = "WARNING: DATA RACE"
	for _, r := range strings.Split(string(b), sep)[1:] {
		r, _, _ = strings.Cut(r, "==================")
		if strings.Contains(r, "caddy-pollsse") {
			ours = append(ours, sep+r)
		} else {
			others++
		}
	}
	return ours, others
}

// A sample is what the instance's process holds at one moment.
type sample struct {
	goroutines int
	heapInuse  int64
	fds        int
	// subscribers and topics are the handler's gauges.
	subscribers, topics int
}

func (s sample) String() string {
	return fmt.Sprintf("goroutines %d, heap in use %.1f MB, open files %d, subscribers %d, topics %d",
		s.goroutines, float64(s.heapInuse)/(1<<20), s.fds, s.subscribers, s.topics)
}

var metricLine = regexp.MustCompile(`(?m)^([a-z_]+)(?:\{[^}]*\})? ([0-9.e+-]+)$`)

// sample reads the process's goroutines (pprof), heap in use after a
// collection and the handler's gauges (/metrics), and its open files
// (/proc).
func (in *instance) sample(gc bool) (sample, error) {
	var s sample
	get := func(path string) ([]byte, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, in.admin()+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		return io.ReadAll(resp.Body)
	}
	if gc {
		if _, err := get("/debug/pprof/heap?gc=1"); err != nil {
			return s, err
		}
	}
	b, err := get("/debug/pprof/goroutine?debug=1")
	if err != nil {
		return s, err
	}
	if _, err := fmt.Sscanf(string(b), "goroutine profile: total %d", &s.goroutines); err != nil {
		return s, fmt.Errorf("reading the goroutine profile: %v", err)
	}
	b, err = get("/metrics")
	if err != nil {
		return s, err
	}
	for _, m := range metricLine.FindAllStringSubmatch(string(b), -1) {
		v, _ := strconv.ParseFloat(m[2], 64)
		switch m[1] {
		case "go_memstats_heap_inuse_bytes":
			s.heapInuse = int64(v)
		case "caddy_http_poll_sse_subscribers":
			s.subscribers = int(v)
		case "caddy_http_poll_sse_topics":
			s.topics = int(v)
		}
	}
	if pid := in.pid(); pid != "" {
		ents, err := os.ReadDir("/proc/" + pid + "/fd")
		if err == nil {
			s.fds = len(ents)
		}
		// The redis store's pool of connections grows with the load,
		// up to its size, and keeps them: they are not counted.
		if in.redisPort != 0 {
			s.fds -= countSocketsTo(pid, in.redisPort)
		}
	}
	return s, nil
}

// storeMetrics reads the process's count of failed calls to the shared
// store and of leases it lost (it stalled past them, or a write was
// refused), and its number of topics whose store is down (/metrics).
func (in *instance) storeMetrics() (errs, down float64, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, in.admin()+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, 0, err
	}
	for _, m := range metricLine.FindAllStringSubmatch(string(b), -1) {
		v, _ := strconv.ParseFloat(m[2], 64)
		switch m[1] {
		case "caddy_http_poll_sse_store_errors_total":
			errs += v
		case "caddy_http_poll_sse_store_lease_changes_total":
			if strings.Contains(m[0], `change="lost"`) {
				errs += v
			}
		case "caddy_http_poll_sse_store_topics_down":
			down += v
		}
	}
	return errs, down, nil
}

// certPool returns the roots of the instance's CA.
func (in *instance) certPool() *x509.CertPool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.roots
}
