package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// A caddyProcess is a Caddy started by the tool for one trial.
type caddyProcess struct {
	cmd  *exec.Cmd
	pid  string
	base string
	dir  string
}

// serverConfig is what the tool puts in the Caddy config it writes.
type serverConfig struct {
	upstream     string
	interval     time.Duration
	writeTimeout time.Duration
	heartbeat    time.Duration
	pprof        string // admin listen address for /debug/pprof, "" for none
	// accessLog turns the server's access logs on, written to a file.
	accessLog bool
	// tls serves HTTPS with a certificate for localhost from Caddy's
	// internal CA (a site with `tls internal`), h3 HTTP/3 besides.
	tls, h3 bool
	// store is the handler's store module, nil for its default.
	store map[string]any
}

// rootCert is where the Caddy of a trial keeps the root certificate of its
// internal CA, under its directory.
const rootCert = "storage/pki/authorities/local/root.crt"

// caddyJSON returns the config: one server on port, /sse/<topic> streaming
// <upstream>/doc/<topic>.
func caddyJSON(port int, dir string, sc serverConfig) []byte {
	handler := map[string]any{
		"handler":  "poll_sse",
		"upstream": sc.upstream + "/doc/{http.request.uri.path.1}",
		"interval": sc.interval.String(),
	}
	if sc.writeTimeout > 0 {
		handler["write_timeout"] = sc.writeTimeout.String()
	}
	if sc.heartbeat > 0 {
		handler["heartbeat"] = sc.heartbeat.String()
	}
	if sc.store != nil {
		handler["store"] = sc.store
	}
	admin := map[string]any{"disabled": true}
	if sc.pprof != "" {
		admin = map[string]any{"listen": sc.pprof}
	}
	logs := map[string]any{"default": map[string]any{
		"level":   "WARN",
		"exclude": []string{"http.log.access"},
		"writer":  map[string]any{"output": "file", "filename": filepath.Join(dir, "caddy.log")},
	}}
	server := map[string]any{
		"listen":          []string{"127.0.0.1:" + strconv.Itoa(port)},
		"automatic_https": map[string]any{"disable": true},
		"routes": []any{map[string]any{
			"match":  []any{map[string]any{"path": []string{"/sse/*"}}},
			"handle": []any{handler},
		}},
	}
	apps := map[string]any{"http": map[string]any{"servers": map[string]any{"bench": server}}}
	if sc.tls {
		// As a Caddyfile site `https://localhost:PORT { tls internal }`
		// with the global options local_certs and skip_install_trust.
		server["tls_connection_policies"] = []any{map[string]any{}}
		server["automatic_https"] = map[string]any{"disable_redirects": true}
		server["protocols"] = []string{"h1", "h2"}
		if sc.h3 {
			server["protocols"] = []string{"h1", "h2", "h3"}
		}
		apps["tls"] = map[string]any{
			"certificates": map[string]any{"automate": []string{"localhost"}},
			"automation": map[string]any{"policies": []any{map[string]any{
				"subjects": []string{"localhost"},
				"issuers":  []any{map[string]any{"module": "internal"}},
			}}},
		}
		apps["pki"] = map[string]any{"certificate_authorities": map[string]any{
			"local": map[string]any{"install_trust": false},
		}}
	}
	if sc.accessLog {
		server["logs"] = map[string]any{}
		logs["access"] = map[string]any{
			"level":   "INFO",
			"include": []string{"http.log.access"},
			"writer":  map[string]any{"output": "file", "filename": filepath.Join(dir, "access.log")},
		}
	}
	cfg := map[string]any{
		"admin":   admin,
		"storage": map[string]any{"module": "file_system", "root": filepath.Join(dir, "storage")},
		"logging": map[string]any{"logs": logs},
		"apps":    apps,
	}
	b, _ := json.MarshalIndent(cfg, "", "  ")
	return b
}

// startCaddy runs the Caddy binary at path with the config and waits until
// it accepts connections.
func startCaddy(path string, env []string, sc serverConfig) (*caddyProcess, error) {
	dir, err := os.MkdirTemp("", "pollsse-bench-")
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cfgPath := filepath.Join(dir, "caddy.json")
	if err := os.WriteFile(cfgPath, caddyJSON(port, dir, sc), 0o600); err != nil {
		return nil, err
	}
	out, err := os.Create(filepath.Join(dir, "caddy.out"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(path, "run", "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", path, err)
	}
	scheme := "http"
	if sc.tls {
		scheme = "https"
	}
	p := &caddyProcess{cmd: cmd, pid: strconv.Itoa(cmd.Process.Pid), base: scheme + "://127.0.0.1:" + strconv.Itoa(port), dir: dir}
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		// Listening, and with TLS, holding its certificate.
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err == nil && sc.tls {
			tc := tls.Client(c, &tls.Config{ServerName: "localhost", InsecureSkipVerify: true})
			tc.SetDeadline(time.Now().Add(time.Second))
			err = tc.Handshake()
			c = tc
		}
		if c != nil {
			c.Close()
		}
		if err == nil {
			return p, nil
		}
		if time.Now().After(deadline) {
			p.stop()
			return nil, fmt.Errorf("caddy did not listen within 15s (output in %s)", dir)
		}
	}
}

// stop ends the Caddy and removes its directory.
func (p *caddyProcess) stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-done
	}
	os.RemoveAll(p.dir)
}

// freeLoopbackAddr returns a loopback address with a port that was free a
// moment ago, for the server's admin endpoint.
func freeLoopbackAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// memory is what liveMemory reads of the server's runtime.MemStats.
type memory struct {
	HeapAlloc  int64 // bytes of live heap objects, right after the GCs
	StackInuse int64 // bytes of goroutine stacks
}

// liveMemory forces two garbage collections in the server through its admin
// endpoint at addr (the first leaves what the second frees: objects whose
// finalizers ran), then reads its heap and stacks from /debug/vars.
func liveMemory(ctx context.Context, addr string) (memory, error) {
	get := func(path string) ([]byte, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
		if err != nil {
			return nil, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("%s: %s", path, resp.Status)
		}
		return b, err
	}
	for range 2 {
		if _, err := get("/debug/pprof/heap?gc=1"); err != nil {
			return memory{}, fmt.Errorf("forcing a GC in the server: %w", err)
		}
	}
	b, err := get("/debug/vars")
	if err != nil {
		return memory{}, fmt.Errorf("reading the server's memory: %w", err)
	}
	return parseMemStats(b)
}

// parseMemStats reads the heap and stacks of expvar's memstats.
func parseMemStats(b []byte) (memory, error) {
	var vars struct {
		MemStats *memory `json:"memstats"`
	}
	if err := json.Unmarshal(b, &vars); err != nil {
		return memory{}, fmt.Errorf("the server's /debug/vars: %w", err)
	}
	if vars.MemStats == nil {
		return memory{}, errors.New("the server's /debug/vars has no memstats")
	}
	return *vars.MemStats, nil
}
