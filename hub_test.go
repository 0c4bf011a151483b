package pollsse

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
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
