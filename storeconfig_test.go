package pollsse

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// TestStoreCaddyfileErrors: a bad store fails `caddy adapt` with a message
// that names the option and the value, never the URL's password.
func TestStoreCaddyfileErrors(t *testing.T) {
	tests := []struct {
		name, block string
		wantErr     []string
	}{
		{"an unknown store", `store disk`, []string{"store: unknown store module 'disk'"}},
		{"store given twice", `store memory; store redis redis://r.test`, []string{"store: given twice"}},
		{"memory with an argument", `store memory redis://r.test`, []string{"store memory: unexpected argument 'redis://r.test'"}},
		{"redis without a URL", `store redis`, []string{"store redis: url: required"}},
		{"a URL of another scheme", `store redis http://r.test:6379`, []string{`store redis: url "http://r.test:6379"`, "redis:// or rediss://"}},
		{"a bad database", `store redis redis://user:hunter2@r.test:6379/x`, []string{`url "redis://xxxxx@r.test:6379/x"`, "invalid database"}},
		{"a bad port", `store redis redis://:hunter2@r.test:port`, []string{"store redis: url", "invalid port"}},
		{"an unknown URL option", `store redis redis://:hunter2@r.test:6379?speed=fast`, []string{"store redis: url", "speed"}},
		{"an unknown option", `store redis { url redis://r.test; leese 10s }`, []string{"store redis: unrecognized option 'leese'"}},
		{"a bad lease", `store redis { url redis://r.test; lease soon }`, []string{"store redis: lease: want a positive duration, not 'soon'"}},
		{"a prefix with a hash tag", `store redis { url redis://r.test; prefix a{b} }`, []string{`store redis: prefix "a{b}"`}},
		{"a lease not above the default interval", `store redis { url redis://r.test; lease 2s }`, []string{"store: lease 2s must be longer than the interval, 2s"}},
		{"a lease not above the interval", `interval 5s; store redis { url redis://r.test; lease 3s }`, []string{"store: lease 3s must be longer than the interval, 5s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			block := strings.NewReplacer("{ ", "{\n", ";", "\n", " }", "\n}").Replace(tt.block)
			out, err := adapt(t, ":8080 {\npoll_sse http://a.test/x {\n"+block+"\n}\n}\n")
			if err == nil {
				t.Fatalf("adapted without error: %s", out)
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error %q holds the password", err)
			}
		})
	}
}

// TestStoreJSONErrors: the same checks fail `caddy validate` and `caddy
// run` of a JSON config.
func TestStoreJSONErrors(t *testing.T) {
	tests := []struct {
		name, store, more, wantErr string
	}{
		{"an unknown store", `{"module":"disk"}`, "", "http.handlers.poll_sse.stores.disk"},
		{"redis without a URL", `{"module":"redis"}`, "", "store redis: url: required"},
		{"a bad URL", `{"module":"redis","url":"redis://:hunter2@r.test:6379/x"}`, "", "invalid database"},
		{"an unknown option", `{"module":"redis","url":"redis://r.test","leese":"1s"}`, "", `unknown field "leese"`},
		{"a lease not above the interval", `{"module":"redis","url":"redis://r.test","lease":"1s"}`, `,"interval":"1s"`, "store: lease 1s must be longer than the interval, 1s"},
		{"a negative lease", `{"module":"redis","url":"redis://r.test","lease":"-1s"}`, "", "store redis: lease: must be positive, not -1s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			handler := fmt.Sprintf(`{"handler":"poll_sse","upstream":"http://a.test/x","store":%s%s}`, tt.store, tt.more)
			cfg := `{"admin":{"disabled":true},"apps":{"http":{"servers":{"s":{"listen":["127.0.0.1:0"],"routes":[{"handle":[` + handler + `]}]}}}}}`
			var c caddy.Config
			if err := json.Unmarshal([]byte(cfg), &c); err != nil {
				t.Fatal(err)
			}
			err := caddy.Validate(&c)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("caddy validate = %v, want an error containing %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error %q holds the password", err)
			}
		})
	}
}

// TestRedisPasswordNotLogged: a Redis that refuses the store's password
// is a store that is unavailable: subscribers are refused with 503 and told
// so, and neither the answer nor any log line holds the password.
func TestRedisPasswordNotLogged(t *testing.T) {
	r := startRedis(t, "--requirepass", "right-pass")
	api := newFakeAPI(t, `{"v":1}`)
	url := fmt.Sprintf("redis://:wr0ng-pass@%s", r.addr())
	base, logs := startCaddyAtDebug(t, "["+redisRoute(api.URL, url, "")+"]")
	resp, err := http.Get(base + "/events")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "the store is unavailable") {
		t.Errorf("a subscriber got %d %q, want 503 saying that the store is unavailable", resp.StatusCode, body)
	}
	stopCaddy(t)
	raw := logs.text()
	for _, leak := range []string{"wr0ng-pass", "right-pass"} {
		if strings.Contains(string(raw)+string(body), leak) {
			t.Errorf("the log or the answer holds the password %s:\n%s", leak, raw)
		}
	}
	if !strings.Contains(string(raw), "WRONGPASS") {
		t.Errorf("the log does not say why the store is unavailable:\n%s", raw)
	}
}

// TestRedisURLPlaceholder: the URL's password can come from the
// environment, read when the configuration loads.
func TestRedisURLPlaceholder(t *testing.T) {
	t.Setenv("POLLSSE_TEST_REDIS_PASSWORD", "pw-from-env")
	r := startRedis(t, "--requirepass", "pw-from-env")
	api := newFakeAPI(t, `{"v":1}`)
	base := startCaddy(t, "["+redisRoute(api.URL, "redis://:{env.POLLSSE_TEST_REDIS_PASSWORD}@"+r.addr(), "")+"]")
	sc := openStream(t, http.DefaultClient, base+"/events", "")
	if ev := sc.next(10 * time.Second); ev.name != "snapshot" || strings.Count(ev.id, "-") != 2 {
		t.Errorf("got %+v, want a snapshot with an id of Redis's log", ev)
	}
}
