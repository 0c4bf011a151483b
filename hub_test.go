package pollsse

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

func TestMaxTopics(t *testing.T) {
	api := newFakeAPI(t, `{"v":0}`)
	base, logs := startCaddyAtDebug(t, "["+pollSSERoute("/events", fmt.Sprintf(
		`"upstream":%q,"interval":"100ms","max_topics":2,"retry":"2500ms"`, api.URL+"/items/{http.request.uri.query.id}"))+"]")
	a := openStream(t, http.DefaultClient, base+"/events?id=a", "")
	b := openStream(t, http.DefaultClient, base+"/events?id=b", "")
	a.next(5 * time.Second)
	b.next(5 * time.Second)

	status, hdr := getStatus(t, base+"/events?id=c", nil)
	if status != http.StatusServiceUnavailable || hdr.Get("Retry-After") != "3" {
		t.Errorf("a third topic: status %d, Retry-After %q; want 503 and 3", status, hdr.Get("Retry-After"))
	}
	// A subscriber of an existing topic is no new topic.
	a2 := openStream(t, http.DefaultClient, base+"/events?id=a", "")
	if a2.next(5*time.Second).name != "snapshot" {
		t.Error("a second subscriber of an existing topic was refused")
	}
	if !strings.Contains(logs.text(), `"setting":"max_topics","limit":2,`) {
		t.Errorf("no log line names max_topics and its limit:\n%s", logs.text())
	}
	// The existing streams carry on.
	api.set(`{"v":1}`)
	for _, sc := range []*streamClient{a, b} {
		if ev := sc.next(5 * time.Second); ev.name != "patch" {
			t.Errorf("an existing stream got %+v, want the patch", ev)
		}
	}
	// A topic without subscribers makes room for a new one.
	a2.next(5 * time.Second)
	a.close()
	a2.close()
	waitFor(t, 5*time.Second, "room for a new topic", func() bool {
		status, _ := getStatus(t, base+"/events?id=c", nil)
		return status == http.StatusOK
	})
	// Making room did not touch the topic that has a subscriber.
	api.set(`{"v":2}`)
	if ev := b.next(5 * time.Second); ev.name != "patch" {
		t.Errorf("b got %+v, want the patch", ev)
	}
}

func TestMaxSubscribers(t *testing.T) {
	api := newFakeAPI(t, `{"v":0}`)
	base, logs := startCaddyAtDebug(t, "["+pollSSERoute("/events", fmt.Sprintf(
		`"upstream":%q,"interval":"100ms","max_subscribers":3`, api.URL+"/items/{http.request.uri.query.id}"))+"]")
	var open []*streamClient
	for _, id := range []string{"a", "a", "b"} {
		sc := openStream(t, http.DefaultClient, base+"/events?id="+id, "")
		sc.next(5 * time.Second)
		open = append(open, sc)
	}
	for _, id := range []string{"a", "c"} {
		status, hdr := getStatus(t, base+"/events?id="+id, nil)
		if status != http.StatusServiceUnavailable || hdr.Get("Retry-After") == "" {
			t.Errorf("a fourth subscriber of %s: status %d, Retry-After %q; want 503 with Retry-After", id, status, hdr.Get("Retry-After"))
		}
	}
	if !strings.Contains(logs.text(), `"setting":"max_subscribers","limit":3,`) || !strings.Contains(logs.text(), "subscribers refused") {
		t.Errorf("no log line names max_subscribers and its limit:\n%s", logs.text())
	}
	api.set(`{"v":1}`)
	for _, sc := range open {
		if ev := sc.next(5 * time.Second); ev.name != "patch" {
			t.Errorf("an existing stream got %+v, want the patch", ev)
		}
	}
	open[0].close()
	waitFor(t, 5*time.Second, "room for a subscriber", func() bool {
		status, _ := getStatus(t, base+"/events?id=c", nil)
		return status == http.StatusOK
	})
}

// TestPollsOfManyTopicsAreSpread starts many topics at the same moment:
// their polls start one after another, a millisecond apart, not in the same
// millisecond; and each topic's later polls are jittered around the
// interval, so that topics do not stay in step. The hub runs on the fake
// clock of a synctest bubble, against an upstream that answers at once, so
// that the times are the schedule's own.
func TestPollsOfManyTopicsAreSpread(t *testing.T) {
	synctest.Test(t, testPollsOfManyTopicsAreSpread)
}

func testPollsOfManyTopicsAreSpread(t *testing.T) {
	const topics = 40
	var mu sync.Mutex
	starts := map[string][]time.Time{}
	h, _ := testHub(t, func(cfg *topicSettings) {
		// 40 topics at a 100ms interval leave 2.5ms between polls: the
		// spread is its most, 1ms.
		cfg.Interval = 100 * time.Millisecond
		cfg.MaxTopics = topics
	})
	h.client.Transport = roundTripFunc(func(r *http.Request) (*http.Response, error) {
		mu.Lock()
		starts[r.URL.Path] = append(starts[r.URL.Path], time.Now())
		mu.Unlock()
		return &http.Response{StatusCode: http.StatusOK, Body: io.NopCloser(strings.NewReader(`{"a":1}`)), Header: http.Header{}, Request: r}, nil
	})
	for i := range topics {
		tp, err := h.subscribe(fmt.Sprintf("http://api.test/items/%d", i), nil, netip.Prefix{})
		if err != nil {
			t.Fatal(err)
		}
		defer h.unsubscribe(tp)
	}
	enough := func() bool {
		mu.Lock()
		defer mu.Unlock()
		for i := range topics {
			if len(starts[fmt.Sprintf("/items/%d", i)]) < 4 {
				return false
			}
		}
		return true
	}
	waitFor(t, 10*time.Second, "4 polls of every topic", enough)
	mu.Lock()
	defer mu.Unlock()

	var first []time.Time
	var waits []time.Duration
	for _, s := range starts {
		first = append(first, s[0])
		for i := 1; i < len(s); i++ {
			waits = append(waits, s[i].Sub(s[i-1]))
		}
	}
	slices.SortFunc(first, func(a, b time.Time) int { return a.Compare(b) })
	for i := 1; i < len(first); i++ {
		if gap := first[i].Sub(first[i-1]); gap < time.Millisecond {
			t.Errorf("first polls %d and %d started %s apart, want a millisecond at least", i-1, i, gap)
		}
	}
	span := first[len(first)-1].Sub(first[0])
	t.Logf("%d first polls over %s", topics, span)
	slices.Sort(waits)
	lo, hi := waits[len(waits)/10], waits[len(waits)*9/10]
	t.Logf("waits between polls of a topic at a 100ms interval: 10th percentile %s, 90th %s", lo, hi)
	if lo < 90*time.Millisecond || hi-lo < 5*time.Millisecond {
		t.Errorf("waits between polls from %s to %s: want jitter within 90-110ms", lo, hi)
	}
}

// TestTopicIDsTellTopicsApart: the topics of two users of one upstream URL
// log lines that differ in their topic field, which never holds their
// credentials, and each user's status events carry the id of the log lines
// of that user's topic.
func TestTopicIDsTellTopicsApart(t *testing.T) {
	api := newUsersAPI(t)
	base, logs := startCaddyAtDebug(t, "["+pollSSERoute("/events", fmt.Sprintf(
		`"upstream":%q,"interval":"100ms","max_backoff":"100ms","forward_headers":["Authorization"]`, api.URL+"/account"))+"]")
	users := []string{"alice", "bob"}
	streams := map[string]*streamClient{}
	for _, user := range users {
		sc := openStreamWith(t, base+"/events", bearer(user+"-token"), "")
		if ev := sc.next(5 * time.Second); ev.name != "snapshot" {
			t.Fatalf("%s got %+v", user, ev)
		}
		streams[user] = sc
	}
	// Alice's credential is revoked, bob's document breaks: each topic
	// fails in its own way, then recovers.
	api.setFor("Bearer alice-token", http.StatusUnauthorized, "")
	api.setFor("Bearer bob-token", http.StatusOK, "not JSON")
	ids := map[string]string{}
	for _, user := range users {
		sd := decodeStatus(t, streams[user].next(5*time.Second))
		if sd.Upstream != "down" || len(sd.Topic) != 12 || strings.Trim(sd.Topic, "0123456789abcdef") != "" {
			t.Errorf("%s got %+v, want down with a topic of 12 hex digits", user, sd)
		}
		ids[user] = sd.Topic
	}
	if ids["alice"] == ids["bob"] {
		t.Errorf("both users' status events name the topic %q", ids["alice"])
	}
	api.setFor("Bearer alice-token", http.StatusOK, `{"user":"alice","balance":1}`)
	api.setFor("Bearer bob-token", http.StatusOK, `{"user":"bob","balance":1}`)
	for _, user := range users {
		if sd := decodeStatus(t, streams[user].next(5*time.Second)); sd.Upstream != "up" || sd.Topic != ids[user] {
			t.Errorf("%s got %+v, want up with topic %q", user, sd, ids[user])
		}
	}

	// The log lines of each topic, by message.
	lines := map[string][]string{} // topic id + " " + message -> errors
	for _, l := range logs.lines() {
		for _, secret := range []string{"alice-token", "bob-token"} {
			if strings.Contains(l.raw, secret) {
				t.Errorf("a log line holds %q: %s", secret, l.raw)
			}
		}
		if l.Logger != "http.handlers.poll_sse" || l.Upstream == "" {
			continue
		}
		var fields struct {
			Topic string `json:"topic"`
			Error string `json:"error"`
		}
		if err := json.Unmarshal([]byte(l.raw), &fields); err != nil {
			t.Fatal(err)
		}
		if fields.Topic != ids["alice"] && fields.Topic != ids["bob"] {
			t.Errorf("a line of a topic names the topic %q, not one that its subscribers were told: %s", fields.Topic, l.raw)
		}
		key := fields.Topic + " " + l.Msg
		lines[key] = append(lines[key], fields.Error)
	}
	for user, failure := range map[string]string{"alice": "401", "bob": "not valid JSON"} {
		id := ids[user]
		for _, msg := range []string{"topic started", "upstream recovered"} {
			if n := len(lines[id+" "+msg]); n != 1 {
				t.Errorf("%s's topic %s: %d lines %q, want 1", user, id, n, msg)
			}
		}
		if errs := lines[id+" upstream failing"]; len(errs) != 1 || !strings.Contains(errs[0], failure) {
			t.Errorf("%s's topic %s: lines \"upstream failing\" with errors %q, want one with %q", user, id, errs, failure)
		}
	}
}

func TestForwardedCredentialsNeverCrossUsers(t *testing.T) {
	api := newUsersAPI(t)
	base, logs := startCaddyAtDebug(t, "["+pollSSERoute("/events", fmt.Sprintf(
		`"upstream":%q,"interval":"100ms","max_backoff":"100ms","forward_headers":["authorization"]`, api.URL+"/account"))+"]")

	alice := openStreamWith(t, base+"/events", bearer("alice-token"), "")
	bob := openStreamWith(t, base+"/events", http.Header{"Authorization": {"Bearer bob-token"}, "Cookie": {"session=bob-cookie"}}, "")
	aliceSnap, bobSnap := alice.next(5*time.Second), bob.next(5*time.Second)
	if aliceSnap.name != "snapshot" || !sameJSON(aliceSnap.data, `{"user":"alice","balance":100}`) {
		t.Fatalf("alice got %+v", aliceSnap)
	}
	if bobSnap.name != "snapshot" || !sameJSON(bobSnap.data, `{"user":"bob","balance":5}`) {
		t.Fatalf("bob got %+v", bobSnap)
	}

	t.Run("each user's changes reach only that user", func(t *testing.T) {
		api.setFor("Bearer alice-token", http.StatusOK, `{"user":"alice","balance":90}`)
		if ev := alice.next(5 * time.Second); ev.name != "patch" || !strings.Contains(ev.data, "90") {
			t.Fatalf("alice got %+v", ev)
		}
		if ev, ok := bob.nextOrTimeout(100 * time.Millisecond); ok {
			t.Fatalf("bob got %+v from alice's change", ev)
		}
	})

	t.Run("an id from one user's stream never replays another's events", func(t *testing.T) {
		// Bob presents the id of alice's snapshot, after which alice's
		// history holds her patch: he gets his own snapshot.
		sc := openStreamWith(t, base+"/events", bearer("bob-token"), aliceSnap.id)
		if ev := sc.next(5 * time.Second); ev.name != "snapshot" || !sameJSON(ev.data, `{"user":"bob","balance":5}`) {
			t.Fatalf("bob resuming with alice's id got %+v", ev)
		}
		// Alice resuming with her own id gets her patch.
		sc = openStreamWith(t, base+"/events", bearer("alice-token"), aliceSnap.id)
		if ev := sc.next(5 * time.Second); ev.name != "patch" {
			t.Fatalf("alice resuming got %+v", ev)
		}
	})

	t.Run("the upstream receives each token alone, and nothing else of the subscriber's request", func(t *testing.T) {
		for _, r := range api.requestLog() {
			auth := r.Header.Values("Authorization")
			if len(auth) != 1 || (auth[0] != "Bearer alice-token" && auth[0] != "Bearer bob-token") {
				t.Errorf("upstream request with Authorization %q", auth)
			}
			if r.Header.Get("Cookie") != "" || r.Header.Get("Last-Event-Id") != "" {
				t.Errorf("upstream request with the subscriber's other headers: %v", r.Header)
			}
		}
	})

	t.Run("a refused credential gets the upstream's status before any snapshot", func(t *testing.T) {
		for _, tt := range []struct {
			name   string
			header http.Header
			want   int
		}{
			{"no token", nil, http.StatusUnauthorized},
			{"an unknown token", bearer("eve-token"), http.StatusUnauthorized},
			{"a forbidden token", bearer("mallory-token"), http.StatusForbidden},
		} {
			if status, hdr := eventSourceStatus(t, base+"/events", tt.header); status != tt.want || hdr.Get("Content-Type") == "text/event-stream" {
				t.Errorf("%s: status %d (%s), want %d", tt.name, status, hdr.Get("Content-Type"), tt.want)
			}
		}
	})

	t.Run("a credential revoked after the snapshot is a status event, and new streams with it get 401", func(t *testing.T) {
		api.setFor("Bearer bob-token", http.StatusUnauthorized, "")
		sd := decodeStatus(t, bob.next(5*time.Second))
		if sd.Upstream != "down" || sd.Status != http.StatusUnauthorized {
			t.Errorf("bob got %+v, want down with 401", sd)
		}
		if status, _ := getStatus(t, base+"/events", bearer("bob-token")); status != http.StatusUnauthorized {
			t.Errorf("a new stream with the revoked token: status %d, want 401 and not the document it had", status)
		}
		select {
		case err := <-bob.done:
			t.Errorf("bob's stream ended: %v", err)
		default:
		}
	})

	for _, secret := range []string{"alice-token", "bob-token", "mallory-token", "eve-token", "bob-cookie"} {
		if strings.Contains(logs.text(), secret) {
			t.Errorf("the logs hold %q", secret)
		}
	}
	if !strings.Contains(logs.text(), "topic started") {
		t.Error("the log capture holds no line of the handler")
	}
}

func TestManySubscribersOnePoller(t *testing.T) {
	// Two topics in one Caddy, measured over the same window, so that the
	// machine's load and the interval's jitter weigh on both alike.
	const window = 2 * time.Second
	one, hundred := newFakeAPI(t, `{"a":1}`), newFakeAPI(t, `{"a":1}`)
	base := startCaddy(t, "["+
		pollSSERoute("/one", fmt.Sprintf(`"upstream":%q,"interval":"100ms"`, one.URL))+","+
		pollSSERoute("/hundred", fmt.Sprintf(`"upstream":%q,"interval":"100ms"`, hundred.URL))+"]")
	sc := openStream(t, http.DefaultClient, base+"/one", "")
	sc.next(5 * time.Second)
	defer sc.close()
	for range 100 {
		sc := openStream(t, http.DefaultClient, base+"/hundred", "")
		sc.next(5 * time.Second)
		defer sc.close()
	}
	startOne, startHundred := one.count.Load(), hundred.count.Load()
	// What is counted is the polls of a real Caddy on the clock, which no
	// bubble of testing/synctest holds: the window is real time.
	time.Sleep(window)
	n1, n100 := one.count.Load()-startOne, hundred.count.Load()-startHundred
	t.Logf("upstream requests in %s at a 100ms interval: %d for 1 subscriber, %d for 100", window, n1, n100)
	for _, n := range []int64{n1, n100} {
		if n < 15 || n > 22 {
			t.Errorf("%d requests in %s, want about 20", n, window)
		}
	}
	if d := n100 - n1; d < -2 || d > 2 {
		t.Errorf("100 subscribers caused %d requests, 1 caused %d", n100, n1)
	}
}

// TestTopicKeys: without forward_headers a topic's key is its URL; with
// them, two subscribers share a topic exactly when every forwarded header
// has the same values, however the values would be joined, and neither the
// key nor the id holds a value.
func TestTopicKeys(t *testing.T) {
	const url = "http://api.test/doc"
	plain, _ := testHub(t, nil)
	if k := plain.topicKey(url, nil); k != url {
		t.Errorf("without forward_headers the key is %q, want the URL", k)
	}
	h, _ := testHub(t, func(s *topicSettings) { s.ForwardHeaders = []string{"Authorization", "Cookie"} })
	key := func(auth, cookie []string) string {
		fwd := http.Header{}
		if auth != nil {
			fwd["Authorization"] = auth
		}
		if cookie != nil {
			fwd["Cookie"] = cookie
		}
		return h.topicKey(url, fwd)
	}
	if a, b := key([]string{"secret-a"}, []string{"c"}), key([]string{"secret-a"}, []string{"c"}); a != b {
		t.Errorf("the same values make the keys %q and %q", a, b)
	}
	for _, tt := range []struct {
		name           string
		authA, cookieA []string
		authB, cookieB []string
	}{
		{"other values", []string{"secret-a"}, nil, []string{"secret-b"}, nil},
		{"one value or two", []string{"secret-a,b"}, nil, []string{"secret-a", "b"}, nil},
		{"a value split across headers", []string{"secret-ab"}, []string{"c"}, []string{"secret-a"}, []string{"bc"}},
		{"a value moved to another header", []string{"secret-a"}, nil, nil, []string{"secret-a"}},
		{"no header or an empty one", nil, nil, []string{""}, nil},
	} {
		a, b := key(tt.authA, tt.cookieA), key(tt.authB, tt.cookieB)
		if a == b {
			t.Errorf("%s: one key %q", tt.name, a)
		}
		for _, k := range []string{a, b, h.topicID(a), h.topicID(b)} {
			if strings.Contains(k, "secret") {
				t.Errorf("%s: the key or id %q holds a value", tt.name, k)
			}
		}
		if h.topicID(a) == h.topicID(b) || len(h.topicID(a)) != topicIDLength {
			t.Errorf("%s: the ids %q and %q", tt.name, h.topicID(a), h.topicID(b))
		}
	}
}

// clientFrom returns a client whose connections come from the loopback
// address ip, such as 127.0.0.2, and whose requests carry header.
func clientFrom(t testing.TB, ip string, header http.Header) *http.Client {
	t.Helper()
	local := net.ParseIP(ip)
	if local == nil {
		t.Fatalf("%q is no IP address", ip)
	}
	tr := &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: local}}).DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: headerTransport{header: header, base: tr}}
}

// statusFrom requests url with client and returns the response's status,
// headers and, unless it is a stream, body; a stream is closed once its
// headers are in.
func statusFrom(t testing.TB, client *http.Client, url string) (int, http.Header, string) {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		return resp.StatusCode, resp.Header, ""
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, resp.Header, string(body)
}

// A newTopicsCase is a way for a client to create a topic per value it
// makes up.
type newTopicsCase struct {
	name string
	// fields returns the handler's upstream and forward_headers (JSON).
	fields func(api *fakeAPI) string
	// subscriber returns the URL and headers of a subscriber of the value v.
	subscriber func(base, v string) (string, http.Header)
	// value returns the value of an upstream request.
	value func(r *http.Request) string
}

var newTopicsCases = []newTopicsCase{
	{
		name: "made-up credentials",
		fields: func(api *fakeAPI) string {
			return fmt.Sprintf(`"upstream":%q,"forward_headers":["Authorization"]`, api.URL+"/account")
		},
		subscriber: func(base, v string) (string, http.Header) { return base + "/events/me", bearer(v) },
		value:      func(r *http.Request) string { return strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ") },
	},
	{
		name: "made-up path values",
		fields: func(api *fakeAPI) string {
			return fmt.Sprintf(`"upstream":%q`, api.URL+"/items/{http.request.uri.path.1}")
		},
		subscriber: func(base, v string) (string, http.Header) { return base + "/events/" + v, nil },
		value:      func(r *http.Request) string { return strings.TrimPrefix(r.URL.Path, "/items/") },
	},
}

// TestMaxNewTopics: a client address that makes up a value per request,
// each a new topic, gets 429 with Retry-After past max_new_topics; the
// upstream hears nothing of the refused values; the idle topics of other
// users are not stopped to make room at max_topics, and resume where they
// were; other addresses still create topics, and the address subscribes
// to the topics it has; the refusals are logged in one Warn line that
// holds no value.
func TestMaxNewTopics(t *testing.T) {
	for _, tc := range newTopicsCases {
		t.Run(tc.name, func(t *testing.T) {
			api := newFakeAPI(t, `{"v":0}`)
			base, logs := startCaddyAtDebug(t, "["+pollSSERoute("/events/*", tc.fields(api)+
				`,"interval":"100ms","idle_timeout":"1h","max_topics":6,"max_new_topics":3,"max_new_topics_per":"1h"`)+
				`,{"match":[{"path":["/metrics"]}],"handle":[{"handler":"metrics"}]}]`)
			open := func(ip, v, lastEventID string) *streamClient {
				url, header := tc.subscriber(base, v)
				return openStream(t, clientFrom(t, ip, header), url, lastEventID)
			}

			// Two users, each at an address of their own, whose topics are
			// idle when the script comes.
			users := map[string]string{"alice": "127.0.0.3", "bob": "127.0.0.4"}
			ids := map[string]string{}
			for user, ip := range users {
				sc := open(ip, user, "")
				ev := sc.next(5 * time.Second)
				if ev.name != "snapshot" {
					t.Fatalf("%s got %+v", user, ev)
				}
				ids[user] = ev.id
				sc.close()
			}
			waitFor(t, 5*time.Second, "the users' topics to have no subscriber", func() bool {
				return scrapeMetrics(t, base+"/metrics")["caddy_http_poll_sse_subscribers"] == 0
			})

			// A script at 127.0.0.2 makes up a value per request.
			var created, refused []string
			for i := range 10 {
				v := fmt.Sprintf("made-up-%d", i)
				url, header := tc.subscriber(base, v)
				status, hdr, body := statusFrom(t, clientFrom(t, "127.0.0.2", header), url)
				switch status {
				case http.StatusOK:
					created = append(created, v)
				case http.StatusTooManyRequests:
					refused = append(refused, v)
					// 3 per hour: one more every 20 minutes.
					if s, err := strconv.Atoi(hdr.Get("Retry-After")); err != nil || s < 1100 || s > 1200 {
						t.Errorf("value %d: Retry-After %q, want the seconds until the next of 3 per hour", i, hdr.Get("Retry-After"))
					}
					if !strings.HasPrefix(body, "max_new_topics: ") || hdr.Get("Content-Type") != "text/plain; charset=utf-8" {
						t.Errorf("value %d: a refusal of %s %q", i, hdr.Get("Content-Type"), body)
					}
				default:
					t.Errorf("value %d: status %d: %s", i, status, body)
				}
			}
			if len(created) != 3 || len(refused) != 7 {
				t.Fatalf("of 10 made-up values from one address, %d created a topic and %d got 429; want 3 and 7", len(created), len(refused))
			}

			// A topic that exists costs nothing; other addresses still
			// create topics.
			if ev := open("127.0.0.2", created[0], "").next(5 * time.Second); ev.name != "snapshot" {
				t.Errorf("the script subscribing to a topic it created got %+v", ev)
			}
			if ev := open("127.0.0.5", "carol", "").next(5 * time.Second); ev.name != "snapshot" {
				t.Errorf("carol, at another address, got %+v", ev)
			}

			// The upstream heard of every topic created, and of no refused
			// value.
			waitFor(t, 5*time.Second, "a poll of every topic", func() bool {
				asked := map[string]bool{}
				for _, r := range api.requestLog() {
					asked[tc.value(r)] = true
				}
				return asked["alice"] && asked["bob"] && asked["carol"] && asked[created[0]] && asked[created[1]] && asked[created[2]]
			})
			for _, r := range api.requestLog() {
				if slices.Contains(refused, tc.value(r)) {
					t.Errorf("the upstream was asked for the refused value %q", tc.value(r))
				}
			}

			// The users' idle topics were not stopped to make room: each
			// resumes by its id with the change, not a fresh snapshot.
			api.set(`{"v":1}`)
			for user, ip := range users {
				if ev := open(ip, user, ids[user]).next(5 * time.Second); ev.name != "patch" {
					t.Errorf("%s resuming by id got %+v, want the patch of a topic that was kept", user, ev)
				}
			}

			var warned []string
			for _, l := range logs.lines() {
				for _, v := range refused {
					if strings.Contains(l.raw, v) {
						t.Errorf("a log line holds the refused value %q: %s", v, l.raw)
					}
				}
				if l.Level == "warn" && strings.Contains(l.Msg, "max_new_topics") {
					warned = append(warned, l.raw)
				}
			}
			// The first refusal writes a line; the next ones, within 10s,
			// are counted in the next.
			want := `"setting":"max_new_topics","limit":3,"per":3600,"topics":5,"refused":1,"addresses":1,"client":"127.0.0.2"`
			if len(warned) != 1 || !strings.Contains(warned[0], want) {
				t.Errorf("Warn lines of max_new_topics:\n%s\nwant one with %s", strings.Join(warned, "\n"), want)
			}
		})
	}
}

// TestMaxNewTopicsRetryAfter: an address refused a new topic may create one
// once its Retry-After has passed.
func TestMaxNewTopicsRetryAfter(t *testing.T) {
	api := newFakeAPI(t, `{"v":0}`)
	base := startCaddy(t, "["+pollSSERoute("/events/*", fmt.Sprintf(
		`"upstream":%q,"interval":"100ms","max_new_topics":1,"max_new_topics_per":"2s"`, api.URL+"/items/{http.request.uri.path.1}"))+"]")
	client := clientFrom(t, "127.0.0.2", nil)
	// One per 2s: the second topic is refused, unless 2s have passed since
	// the first.
	retryAfter := 0
	for i := 0; retryAfter == 0; i++ {
		if i == 5 {
			t.Fatal("5 new topics in a row from one address at one per 2s, none refused")
		}
		status, hdr, body := statusFrom(t, client, fmt.Sprintf("%s/events/v%d", base, i))
		switch status {
		case http.StatusOK:
		case http.StatusTooManyRequests:
			var err error
			if retryAfter, err = strconv.Atoi(hdr.Get("Retry-After")); err != nil || retryAfter < 1 || retryAfter > 2 {
				t.Fatalf("Retry-After %q, want 1 or 2 seconds", hdr.Get("Retry-After"))
			}
		default:
			t.Fatalf("status %d: %s", status, body)
		}
	}
	// As a client that honours Retry-After does.
	time.Sleep(time.Duration(retryAfter) * time.Second)
	if status, _, body := statusFrom(t, client, base+"/events/after"); status != http.StatusOK {
		t.Errorf("a new topic after Retry-After: status %d: %s", status, body)
	}
}

// TestMaxNewTopicsCountsTheClientIP: max_new_topics counts Caddy's client
// IP: behind a trusted proxy each browser's address, an IPv6 one by its
// /64; from a client that is no trusted proxy its own address, whatever
// X-Forwarded-For it makes up.
func TestMaxNewTopicsCountsTheClientIP(t *testing.T) {
	api := newFakeAPI(t, `{"v":0}`)
	port := freePort(t)
	var cfg map[string]any
	if err := json.Unmarshal(caddyConfig(t, port, "["+pollSSERoute("/events/*", fmt.Sprintf(
		`"upstream":%q,"interval":"1s","max_new_topics":1,"max_new_topics_per":"1h"`, api.URL+"/items/{http.request.uri.path.1}"))+"]"), &cfg); err != nil {
		t.Fatal(err)
	}
	server := cfg["apps"].(map[string]any)["http"].(map[string]any)["servers"].(map[string]any)["test"].(map[string]any)
	server["trusted_proxies"] = map[string]any{"source": "static", "ranges": []string{"127.0.0.2/32"}}
	raw, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	loadCaddy(t, raw)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)

	for i, tt := range []struct {
		what, from, forwardedFor string
		want                     int
	}{
		{"a browser behind the proxy", "127.0.0.2", "203.0.113.7", http.StatusOK},
		{"the same browser", "127.0.0.2", "203.0.113.7", http.StatusTooManyRequests},
		{"the same browser, its address IPv4-mapped", "127.0.0.2", "::ffff:203.0.113.7", http.StatusTooManyRequests},
		{"another browser behind the proxy", "127.0.0.2", "203.0.113.8", http.StatusOK},
		{"an IPv6 browser behind the proxy", "127.0.0.2", "2001:db8:1:2::1", http.StatusOK},
		{"another host of its /64", "127.0.0.2", "2001:db8:1:2:ffff::9", http.StatusTooManyRequests},
		{"a host of another /64", "127.0.0.2", "2001:db8:1:3::1", http.StatusOK},
		{"a client that is no trusted proxy", "127.0.0.3", "203.0.113.9", http.StatusOK},
		{"the same client with another X-Forwarded-For", "127.0.0.3", "203.0.113.10", http.StatusTooManyRequests},
	} {
		client := clientFrom(t, tt.from, http.Header{"X-Forwarded-For": {tt.forwardedFor}})
		if status, _, body := statusFrom(t, client, fmt.Sprintf("%s/events/v%d", base, i)); status != tt.want {
			t.Errorf("%s (from %s, X-Forwarded-For %s): status %d, want %d: %s", tt.what, tt.from, tt.forwardedFor, status, tt.want, body)
		}
	}
}

// TestMaxNewTopicsDefaultAndOff: by default an address may create 30 new
// topics at once, and not many more within a minute; a negative
// max_new_topics turns the limit off.
func TestMaxNewTopicsDefaultAndOff(t *testing.T) {
	api := newFakeAPI(t, `{"v":0}`)
	base := startCaddy(t, "["+
		pollSSERoute("/default/*", fmt.Sprintf(`"upstream":%q,"interval":"1s"`, api.URL+"/default/{http.request.uri.path.1}"))+","+
		pollSSERoute("/off/*", fmt.Sprintf(`"upstream":%q,"interval":"1s","max_new_topics":-1`, api.URL+"/off/{http.request.uri.path.1}"))+"]")
	client := clientFrom(t, "127.0.0.2", nil)
	statuses := func(route string) []int {
		var out []int
		for i := range 40 {
			status, _, _ := statusFrom(t, client, fmt.Sprintf("%s/%s/v%d", base, route, i))
			out = append(out, status)
		}
		return out
	}
	// 30 at once, then one every 2s: the 40 requests would have to take
	// 20s for none to be refused.
	got := statuses("default")
	first := slices.Index(got, http.StatusTooManyRequests)
	if first < 30 {
		t.Errorf("by default, the new topics of one address got %v; want 30 of 200, then 429", got)
	}
	if got := statuses("off"); slices.ContainsFunc(got, func(s int) bool { return s != http.StatusOK }) {
		t.Errorf("with max_new_topics -1, the new topics of one address got %v; want 200 for all", got)
	}
}

// TestMaxNewTopicsLogLines: max_new_topics refusals are logged at most
// once per 10s, each line with the refusals and the addresses refused
// since the last; subscribers of existing topics are not refused; each
// refused address waits until its bucket has room again, and may then
// create a topic. The hub runs on the fake clock of a synctest bubble.
func TestMaxNewTopicsLogLines(t *testing.T) {
	synctest.Test(t, testMaxNewTopicsLogLines)
}

func testMaxNewTopicsLogLines(t *testing.T) {
	h, _ := testHub(t, func(cfg *topicSettings) {
		cfg.Interval = time.Minute
		cfg.MaxNewTopics, cfg.MaxNewTopicsPer = 1, time.Minute
	})
	core, logs := observer.New(zap.WarnLevel)
	h.logger = zap.New(core)
	h.client.Transport = roundTripFunc(func(r *http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: http.StatusOK, Body: io.NopCloser(strings.NewReader(`{"a":1}`)), Header: http.Header{}, Request: r}, nil
	})
	a, b := netip.MustParsePrefix("192.0.2.1/32"), netip.MustParsePrefix("2001:db8::/64")
	n := 0
	subscribe := func(client netip.Prefix, url string) error {
		if url == "" {
			n++
			url = fmt.Sprintf("http://api.test/items/%d", n)
		}
		tp, err := h.subscribe(url, nil, client)
		if err == nil {
			t.Cleanup(func() { h.unsubscribe(tp) })
		}
		return err
	}
	refused := func(client netip.Prefix, wantWait time.Duration) {
		t.Helper()
		err := subscribe(client, "")
		if e, ok := errors.AsType[*newTopicsError](err); !ok || e.retryAfter != wantWait {
			t.Fatalf("a new topic of %s: %v, want a refusal for %s", client, err, wantWait)
		}
	}
	lines := func() []map[string]any {
		var out []map[string]any
		for _, e := range logs.TakeAll() {
			out = append(out, e.ContextMap())
		}
		return out
	}
	for _, client := range []netip.Prefix{a, b} {
		if err := subscribe(client, ""); err != nil {
			t.Fatal(err)
		}
	}
	for range 4 {
		refused(a, time.Minute)
	}
	for range 2 {
		refused(b, time.Minute)
	}
	if err := subscribe(a, "http://api.test/items/1"); err != nil {
		t.Errorf("a subscriber of an existing topic: %v", err)
	}
	got := lines()
	if len(got) != 1 || got[0]["refused"] != int64(1) || got[0]["addresses"] != int64(1) || got[0]["client"] != "192.0.2.1" {
		t.Fatalf("after the first refusals, log lines %v; want one, of the first refusal", got)
	}
	time.Sleep(10 * time.Second)
	refused(b, 50*time.Second)
	got = lines()
	if len(got) != 1 || got[0]["refused"] != int64(6) || got[0]["addresses"] != int64(2) || got[0]["client"] != "2001:db8::/64" {
		t.Fatalf("10s later, log lines %v; want one of 6 refusals of 2 addresses", got)
	}
	time.Sleep(50 * time.Second)
	if err := subscribe(a, ""); err != nil {
		t.Errorf("a minute after its first topic, a new topic of %s: %v", a, err)
	}
	// 50s after the last line, a refusal is logged at once; the next,
	// within 10s of it, is counted and not logged.
	refused(a, time.Minute)
	if got := lines(); len(got) != 1 || got[0]["refused"] != int64(1) || got[0]["addresses"] != int64(1) {
		t.Errorf("50s after the last line, a refusal logged %v; want one line of it", got)
	}
	refused(a, time.Minute)
	if got := lines(); len(got) != 0 {
		t.Errorf("log lines %v within 10s of the last", got)
	}
}

// TestNewTopicLimitForgetsAddresses: a newTopicLimit keeps count of at most
// maxClientBuckets addresses, forgetting first those whose buckets are
// full again, then those that created a topic least recently.
func TestNewTopicLimitForgetsAddresses(t *testing.T) {
	l := newNewTopicLimit(2, time.Hour)
	addr := func(i int) netip.Prefix {
		return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32)
	}
	now := time.Now()
	for i := range maxClientBuckets + 100 {
		l.spend(now, addr(i))
		l.spend(now, addr(i))
	}
	if len(l.buckets) != maxClientBuckets || l.order.Len() != maxClientBuckets {
		t.Errorf("%d buckets, %d in order, want %d", len(l.buckets), l.order.Len(), maxClientBuckets)
	}
	for _, i := range []int{0, 99} {
		if w := l.wait(now, addr(i)); w != 0 {
			t.Errorf("address %d, forgotten, waits %s", i, w)
		}
	}
	for _, i := range []int{100, maxClientBuckets + 99} {
		if w := l.wait(now, addr(i)); w != 30*time.Minute {
			t.Errorf("address %d waits %s, want 30m", i, w)
		}
	}
	later := now.Add(time.Hour)
	l.spend(later, addr(-1))
	if len(l.buckets) != 1 {
		t.Errorf("an hour later, %d buckets, want the one of the new address", len(l.buckets))
	}
}

// TestClientAddress: the client address of a request is Caddy's client IP,
// an IPv4 address as a /32, an IPv6 one as its /64.
func TestClientAddress(t *testing.T) {
	for ip, want := range map[string]string{
		"203.0.113.7":          "203.0.113.7/32",
		"::ffff:203.0.113.7":   "203.0.113.7/32",
		"2001:db8:1:2::1":      "2001:db8:1:2::/64",
		"2001:db8:1:2:ffff::9": "2001:db8:1:2::/64",
		"fe80::1%eth0":         "fe80::/64",
		"@":                    "invalid Prefix",
		"":                     "invalid Prefix",
	} {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r = r.WithContext(context.WithValue(r.Context(), caddyhttp.VarsCtxKey, map[string]any{caddyhttp.ClientIPVarKey: ip}))
		if got := clientAddress(r).String(); got != want {
			t.Errorf("client IP %q: %s, want %s", ip, got, want)
		}
	}
}
