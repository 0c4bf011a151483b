package pollsse

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestLogsAtDebugHoldNoCredentials runs Caddy with its log at DEBUG into a
// file, access logs included, through a topic's whole life: start, changes,
// an outage and its recovery, subscribers whose forwarded credentials the
// upstream accepts and refuses, a refused placeholder value, and the idle
// stop. The upstream URL has a password, header_up sets Authorization, and
// subscribers' Authorization and Cookie are forwarded. None of them appears
// in any log line, and each lifecycle line is there at its level.
func TestLogsAtDebugHoldNoCredentials(t *testing.T) {
	const (
		userinfoSecret  = "userinfo-s3cret"
		headerUpSecret  = "header-up-s3cret"
		forwardedSecret = "forwarded-s3cret"
		refusedSecret   = "refused-s3cret"
		cookieSecret    = "cookie-s3cret"
		querySecret     = "query-s3cret"
	)
	secrets := []string{
		userinfoSecret, headerUpSecret, forwardedSecret, refusedSecret, cookieSecret, querySecret,
		base64.StdEncoding.EncodeToString([]byte("alice:" + userinfoSecret)),
	}

	// The topics of /doc/* poll docs, through header_up's Authorization;
	// those of /user poll user, which answers the forwarded credential
	// alone.
	docs := newFakeAPI(t, `{"v":0}`)
	user := newFakeAPI(t, "")
	user.setFor("Bearer "+forwardedSecret, http.StatusOK, `{"user":"alice"}`)

	withPassword := strings.Replace(docs.URL, "http://", "http://alice:"+userinfoSecret+"@", 1)
	base, logs := startCaddyAtDebug(t, "["+
		pollSSERoute("/doc/*", fmt.Sprintf(`"upstream":%q,"interval":"100ms","idle_timeout":"50ms","heartbeat":"1h","header_up":{"Authorization":["Bearer %s"]}`,
			withPassword+"/doc/{http.request.uri.path.1}?api_key="+querySecret+"&page=1", headerUpSecret))+","+
		pollSSERoute("/user", fmt.Sprintf(`"upstream":%q,"interval":"100ms","idle_timeout":"50ms","heartbeat":"1h","forward_headers":["Authorization","Cookie"]`,
			user.URL+"/user"))+"]", withAccessLogs(`{}`))

	// A topic starts, polls the same document, changes, fails and
	// recovers.
	a := openStream(t, http.DefaultClient, base+"/doc/orders", "")
	if ev := a.next(10 * time.Second); ev.name != "snapshot" {
		t.Fatalf("got %+v", ev)
	}
	waitFor(t, 10*time.Second, "an unchanged poll", func() bool { return logs.count("poll unchanged") > 0 })
	docs.set(`{"v":1}`)
	if ev := a.next(10 * time.Second); ev.name != "patch" {
		t.Fatalf("got %+v", ev)
	}
	docs.setStatus(http.StatusServiceUnavailable)
	if ev := a.next(10 * time.Second); ev.name != "status" {
		t.Fatalf("got %+v", ev)
	}
	// More failed polls, for which the outage keeps its one line.
	waitFor(t, 10*time.Second, "a second failed poll", func() bool { return logs.count("poll failed") > 0 })
	docs.set(`{"v":2}`)
	docs.setStatus(http.StatusOK)
	for ev := a.next(10 * time.Second); ev.name != "patch"; ev = a.next(10 * time.Second) {
	}

	// Forwarded credentials that the upstream accepts, and others that it
	// refuses.
	get := func(auth string) *http.Response {
		req, _ := http.NewRequest(http.MethodGet, base+"/user", nil)
		req.Header.Set("Authorization", auth)
		req.Header.Set("Cookie", "session="+cookieSecret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	accepted := get("Bearer " + forwardedSecret)
	br := bufio.NewReader(accepted.Body)
	for {
		ev, err := readEvent(br)
		if err != nil {
			t.Fatal(err)
		}
		if ev.name == "snapshot" {
			break
		}
	}
	if status, _ := eventSourceStatus(t, base+"/user", http.Header{"Authorization": {"Bearer " + refusedSecret}, "Cookie": {"session=" + cookieSecret}}); status != http.StatusUnauthorized {
		t.Errorf("refused credentials got %d, want 401", status)
	}

	// A placeholder value that is refused.
	if resp, err := http.Get(base + "/doc/x%0d%0aHost:%20evil"); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("a control character got %s, want 400", resp.Status)
		}
	}

	// Everyone leaves; the topics stop when idle. (With access logs on,
	// a stream's connection is wrapped by Caddy and stays on its goroutine,
	// whose reader notices the client leaving: no heartbeat is needed.)
	a.close()
	accepted.Body.Close()
	if !eventually(10*time.Second, func() bool { return logs.count("topic stopped") == 3 }) {
		for _, l := range logs.lines() {
			if l.Logger == "http.handlers.poll_sse" && l.Level != "debug" {
				t.Log(l.raw)
			}
		}
		t.Fatalf("%d topics stopped, want 3", logs.count("topic stopped"))
	}
	stopCaddy(t)
	assertNoStreamGoroutines(t)

	lines := logs.lines()
	count := map[string]int{}
	for _, l := range lines {
		for _, s := range secrets {
			if strings.Contains(l.raw, s) {
				t.Errorf("a log line holds the credential %q: %s", s, l.raw)
			}
		}
		if l.Logger == "http.handlers.poll_sse" {
			count[l.Level+" "+l.Msg]++
			if l.Upstream != "" && !strings.Contains(l.Upstream, "/user") && !strings.HasPrefix(l.Upstream, "http://xxxxx@") {
				t.Errorf("the upstream of a topic with a password is logged as %q", l.Upstream)
			}
		}
		if strings.HasPrefix(l.Logger, "http.log.access") {
			count["access log"]++
			if strings.Contains(l.raw, `"Authorization":["REDACTED"]`) {
				count["access log with a forwarded Authorization"]++
			}
		}
	}
	for _, want := range []struct {
		line    string
		atLeast int
		atMost  int
	}{
		{"info topic started", 3, 3},
		{"info topic stopped", 3, 3},
		{"debug poll changed", 2, 1000},
		{"debug poll unchanged", 1, 1000},
		{"debug poll failed", 1, 1000},
		// The outage after a success, and the topic of the refused
		// credentials, which fails from its first poll: once each.
		{"warn upstream failing", 2, 2},
		{"info upstream recovered", 1, 1},
		{"access log", 3, 1000},
		{"access log with a forwarded Authorization", 2, 1000},
	} {
		if n := count[want.line]; n < want.atLeast || n > want.atMost {
			t.Errorf("%q: %d lines, want %d to %d", want.line, n, want.atLeast, want.atMost)
		}
	}
	if t.Failed() {
		for _, l := range lines {
			t.Log(l.raw)
		}
	}
}

// TestRefusalsLogNoForwardedHeader: the responses of the handler that end in
// no stream (the upstream's 401, a cap's 503, a refused placeholder's 400, a
// POST's 405) put no request header in any log line at DEBUG, not even one
// that Caddy does not hide itself, such as a token in X-Api-Token.
func TestRefusalsLogNoForwardedHeader(t *testing.T) {
	const good, bad = "good-t0ken", "bad-t0ken"
	upstream := newFakeAPI(t, "")
	upstream.credentialIn("X-Api-Token")
	upstream.setFor(good, http.StatusOK, `{"a":1}`)
	base, logs := startCaddyAtDebug(t, "["+
		pollSSERoute("/doc/*", fmt.Sprintf(`"upstream":%q,"interval":"100ms","forward_headers":["X-Api-Token"],"max_subscribers":1`,
			upstream.URL+"/doc/{http.request.uri.path.1}"))+"]")
	header := func(token string) http.Header { return http.Header{"X-Api-Token": {token}} }

	if status, _ := eventSourceStatus(t, base+"/doc/a", header(bad)); status != http.StatusUnauthorized {
		t.Errorf("a refused token got %d, want 401", status)
	}
	sc := openStreamWith(t, base+"/doc/a", header(good), "")
	if ev := sc.next(10 * time.Second); ev.name != "snapshot" {
		t.Fatalf("got %+v", ev)
	}
	if status, _ := getStatus(t, base+"/doc/a", header(good)); status != http.StatusServiceUnavailable {
		t.Errorf("over max_subscribers: %d, want 503", status)
	}
	if status, _ := getStatus(t, base+"/doc/x%0d%0a", header(good)); status != http.StatusBadRequest {
		t.Errorf("a control character: %d, want 400", status)
	}
	post, _ := http.NewRequest(http.MethodPost, base+"/doc/a", strings.NewReader("x"))
	post.Header = header(good)
	if resp, err := http.DefaultClient.Do(post); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("a POST: %d, want 405", resp.StatusCode)
		}
	}
	sc.close()

	refusals := 0
	for _, l := range logs.lines() {
		if strings.Contains(l.raw, good) || strings.Contains(l.raw, bad) {
			t.Errorf("a log line holds a forwarded token: %s", l.raw)
		}
		if l.Msg == "subscriber refused" {
			refusals++
		}
	}
	if refusals < 4 {
		t.Errorf("%d debug lines of refused subscribers, want the 401, the 503, the 400 and the 405", refusals)
	}
}
