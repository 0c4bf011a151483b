package pollsse

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestHeaderUpPlaceholders: a header_up value's {env.*} placeholder is read
// when the configuration loads and reaches the upstream; one whose variable
// is empty or unset is logged as a warning that names the header and the
// variable; no log line holds a value.
func TestHeaderUpPlaceholders(t *testing.T) {
	const key = "env-k3y"
	t.Setenv("POLLSSE_TEST_API_KEY", key)
	t.Setenv("POLLSSE_TEST_EMPTY", "")
	api := newFakeAPI(t, `{"a":1}`)
	base, logFile := startCaddyLoggingAtDebug(t, pollSSERoute("/events", fmt.Sprintf(
		`"upstream":%q,"heartbeat":"1h","header_up":{"X-Api-Key":["{env.POLLSSE_TEST_API_KEY}"],"X-Tenant":["t-{env.POLLSSE_TEST_EMPTY}"],"X-Other":["{env.POLLSSE_TEST_UNSET}"]}`,
		api.URL)), "")
	t.Cleanup(func() { stopCaddy(t) })
	sc := openStream(t, http.DefaultClient, base+"/events", "")
	if ev := sc.next(10 * time.Second); ev.name != "snapshot" {
		t.Fatalf("got %+v", ev)
	}
	sc.close()
	got := api.requestLog()[0].Header
	if got.Get("X-Api-Key") != key || got.Get("X-Tenant") != "t-" {
		t.Errorf("the upstream got X-Api-Key %q and X-Tenant %q", got.Get("X-Api-Key"), got.Get("X-Tenant"))
	}

	warned := map[string]string{}
	for _, l := range readLogLines(t, logFile) {
		if strings.Contains(l.raw, key) {
			t.Errorf("a log line holds the value of a header_up placeholder: %s", l.raw)
		}
		if l.Level == "warn" && strings.HasPrefix(l.Msg, "header_up:") {
			var fields struct{ Header, Variable string }
			if err := json.Unmarshal([]byte(l.raw), &fields); err != nil {
				t.Fatal(err)
			}
			warned[fields.Header] = fields.Variable
		}
	}
	want := map[string]string{"X-Tenant": "POLLSSE_TEST_EMPTY", "X-Other": "POLLSSE_TEST_UNSET"}
	if fmt.Sprint(warned) != fmt.Sprint(want) {
		t.Errorf("warnings for the headers and variables %v, want %v", warned, want)
	}
}
