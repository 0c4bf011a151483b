package pollsse

import (
	"fmt"
	"net/http"
	"regexp"
	"strings"
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

func TestRedirectsStayOnTheOrigin(t *testing.T) {
	// /hop/<chain>/<n> redirects to /hop/<chain>/<n-1>, and /hop/<chain>/0
	// is the document.
	api := newFakeAPI(t, `{"arrived":true}`)
	api.handle(func(w http.ResponseWriter, r *http.Request) bool {
		var chain string
		var n int
		if _, err := fmt.Sscanf(strings.ReplaceAll(strings.TrimPrefix(r.URL.Path, "/"), "/", " "), "hop %s %d", &chain, &n); err == nil && n > 0 {
			http.Redirect(w, r, fmt.Sprintf("/hop/%s/%d", chain, n-1), http.StatusFound)
			return true
		}
		return false
	})
	base := startCaddy(t, "["+pollSSERoute("/events", fmt.Sprintf(`"upstream":%q,"interval":"100ms"`,
		api.URL+"/hop/{http.request.uri.query.chain}/{http.request.uri.query.n}"))+"]")

	sc := openStream(t, http.DefaultClient, base+"/events?chain=three&n=3", "")
	if ev := sc.next(5 * time.Second); ev.name != "snapshot" || ev.data != `{"arrived":true}` {
		t.Errorf("3 redirects on the same origin: got %+v, want the document", ev)
	}
	sc = openStream(t, http.DefaultClient, base+"/events?chain=four&n=4", "")
	if sd := decodeStatus(t, sc.next(5*time.Second)); sd.Upstream != "down" || sd.Error != "upstream redirect not followed: more than 3 redirects" {
		t.Errorf("4 redirects: got %+v, want no document but the down status", sd)
	}
	var hops []string
	for _, r := range api.requestLog() {
		hops = append(hops, r.URL.Path)
	}
	seen := strings.Join(hops, " ")
	if !strings.Contains(seen, "/hop/four/1") || strings.Contains(seen, "/hop/four/0") {
		t.Errorf("a chain of 4 redirects was not stopped after 3: %v", hops)
	}
}

func TestUpstreamRequest(t *testing.T) {
	api := newFakeAPI(t, `{"a":1}`)
	base := startCaddy(t, "["+pollSSERoute("/events", fmt.Sprintf(
		`"upstream":%q,"header_up":{"X-Api-Key":["k1"],"Accept-Language":["en","fr"]}`, api.URL+"/items/{http.request.uri.query.id}?page={http.request.uri.query.page}"))+"]")
	req, _ := http.NewRequest(http.MethodGet, base+"/events?id=a%20b/c&page=1%262&other=x", nil)
	req.Header.Set("Authorization", "Bearer user-secret")
	req.Header.Set("Cookie", "session=user-secret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	waitFor(t, 5*time.Second, "a poll", func() bool { return api.count.Load() > 0 })
	got := api.requestLog()[0]
	if got.Method != http.MethodGet || got.URL.RawPath+"?"+got.URL.RawQuery != "/items/a%20b/c?page=1%262" && got.URL.EscapedPath()+"?"+got.URL.RawQuery != "/items/a%20b/c?page=1%262" {
		t.Errorf("upstream got %s %s", got.Method, got.URL)
	}
	if got.Header.Get("Accept") != "application/json" || got.Header.Get("X-Api-Key") != "k1" || strings.Join(got.Header.Values("Accept-Language"), ",") != "en,fr" {
		t.Errorf("upstream got headers %v", got.Header)
	}
	for name, values := range got.Header {
		if strings.Contains(strings.Join(values, " "), "user-secret") {
			t.Errorf("the subscriber's %s reached the upstream", name)
		}
	}
}
