package pollsse

import (
	"fmt"
	"net/http"
	"regexp"
	"testing"
	"time"
)

// TestUpstreamUserAgent: polls name the module and its version, unless
// header_up sets a User-Agent.
func TestUpstreamUserAgent(t *testing.T) {
	if !regexp.MustCompile(`^[0-9]+\.[0-9]+\.[0-9]+$`).MatchString(Version) {
		t.Errorf("Version %q is not a semantic version", Version)
	}
	plain := newFakeAPI(t, `{"a":1}`)
	set := newFakeAPI(t, `{"a":1}`)
	base := startCaddy(t, "["+
		pollSSERoute("/plain", fmt.Sprintf(`"upstream":%q,"heartbeat":"1h"`, plain.URL))+","+
		pollSSERoute("/set", fmt.Sprintf(`"upstream":%q,"heartbeat":"1h","header_up":{"user-agent":["legacy-dashboard/2"]}`, set.URL))+"]")
	for path, tt := range map[string]struct {
		api  *fakeAPI
		want string
	}{
		"/plain": {plain, "caddy-pollsse/" + Version},
		"/set":   {set, "legacy-dashboard/2"},
	} {
		sc := openStream(t, http.DefaultClient, base+path, "")
		if ev := sc.next(10 * time.Second); ev.name != "snapshot" {
			t.Fatalf("%s: got %+v", path, ev)
		}
		sc.close()
		if got := tt.api.requestLog()[0].Header.Values("User-Agent"); len(got) != 1 || got[0] != tt.want {
			t.Errorf("%s: the upstream got User-Agent %q, want %q", path, got, tt.want)
		}
	}
}
