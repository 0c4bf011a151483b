package pollsse

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestUpstreamURLSecretsNotLogged: an upstream URL with a user name and no
// password, which is how some APIs take their key, and a secret-named query
// parameter after a ";" are logged as xxxxx.
func TestUpstreamURLSecretsNotLogged(t *testing.T) {
	const userSecret, querySecret = "sk_live_us3r", "q-s3cret"
	api := newFakeAPI(t, `{"a":1}`)
	withUser := strings.Replace(api.URL, "http://", "http://"+userSecret+"@", 1)
	base, logs := startCaddyAtDebug(t, "["+pollSSERoute("/events",
		fmt.Sprintf(`"upstream":%q,"heartbeat":"1h"`, withUser+"/doc?page=1;api_key="+querySecret))+"]")
	sc := openStream(t, http.DefaultClient, base+"/events", "")
	if ev := sc.next(10 * time.Second); ev.name != "snapshot" {
		t.Fatalf("got %+v", ev)
	}
	sc.close()
	if got := api.requestLog()[0]; got.URL.RawQuery != "page=1;api_key="+querySecret {
		t.Errorf("the upstream got the query %q", got.URL.RawQuery)
	}

	var started []string
	for _, l := range logs.lines() {
		if strings.Contains(l.raw, userSecret) || strings.Contains(l.raw, querySecret) {
			t.Errorf("a log line holds a credential of the upstream URL: %s", l.raw)
		}
		if l.Msg == "topic started" {
			started = append(started, l.Upstream)
		}
	}
	want := "http://xxxxx@" + strings.TrimPrefix(api.URL, "http://") + "/doc?page=1;api_key=xxxxx"
	if len(started) != 1 || started[0] != want {
		t.Errorf("topic started with upstream %q, want once %q", started, want)
	}
}

func TestRedactURL(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"http://api.test/doc?page=2", "http://api.test/doc?page=2"},
		{"http://alice:pw@api.test/doc", "http://xxxxx@api.test/doc"},
		{"http://sk_live_SECRET@api.test/doc", "http://xxxxx@api.test/doc"},
		{"http://:pw@api.test/doc", "http://xxxxx@api.test/doc"},
		{"http://api.test/doc?page=1;api_key=k;sort=a", "http://api.test/doc?page=1;api_key=xxxxx;sort=a"},
		{"http://api.test/doc?token=t;page=2&sig=s", "http://api.test/doc?token=xxxxx;page=2&sig=xxxxx"},
		{"http://api.test/doc?page=1&;key=k&", "http://api.test/doc?page=1&;key=xxxxx&"},
		{"http://api.test/doc?api_key=k&page=2", "http://api.test/doc?api_key=xxxxx&page=2"},
		{"http://api.test/doc?access_token=t&Signature=s&X-Amz-Credential=c", "http://api.test/doc?access_token=xxxxx&Signature=xxxxx&X-Amz-Credential=xxxxx"},
		{"http://api.test/doc?api%5Fkey=k", "http://api.test/doc?api%5Fkey=xxxxx"},
		{"http://api.test/doc?token", "http://api.test/doc?token"},
	} {
		if got := redactURL(tt.in); got != tt.want {
			t.Errorf("redactURL(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
