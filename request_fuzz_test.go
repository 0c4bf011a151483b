package pollsse

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"
)

// The request side, fuzzed: what a client puts in Last-Event-ID and
// last_event_id, in the values of the upstream URL's placeholders and in
// forwarded headers. Each target runs a real Caddy in this process; run one
// with, for example,
//
//	go test -run '^$' -fuzz '^FuzzLastEventID$' -fuzztime 1m .

// validHeaderValue tells whether Go's HTTP client sends v as a header value:
// no control character but the tab.
func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// FuzzLastEventID resumes a topic whose log holds a snapshot and two patches
// with any value, as Last-Event-ID or as ?last_event_id=: exactly the ids of
// the log replay what follows them, and any other value gets a fresh
// snapshot of the current document, never an error or another event.
func FuzzLastEventID(f *testing.F) {
	api := newFakeAPI(f, `{"v":0}`)
	base := startCaddy(f, "["+pollSSERoute("/events", fmt.Sprintf(`"upstream":%q,"interval":"100ms"`, api.URL))+"]")
	sc := openStream(f, http.DefaultClient, base+"/events", "")
	ids := []string{sc.next(5 * time.Second).id}
	for v := 1; v <= 2; v++ {
		api.set(fmt.Sprintf(`{"v":%d}`, v))
		ev := sc.next(5 * time.Second)
		if ev.name != "patch" {
			f.Fatalf("change %d came as %+v", v, ev)
		}
		ids = append(ids, ev.id)
	}
	sc.close()
	epoch, _, _ := strings.Cut(ids[0], "-")
	for _, id := range append(ids, "", "bogus", epoch, epoch+"-0", epoch+"-01", epoch+"-+1", epoch+"-4", epoch+"--1", " "+ids[0], ids[0]+" ",
		ids[0]+"\t", strings.ToUpper(ids[0]), epoch+"-18446744073709551616", epoch+"-1"+strings.Repeat("0", 80), ids[1]+"\x00", "\xff"+ids[1], ids[1]+";x") {
		f.Add(id, false)
		f.Add(id, true)
	}
	f.Fuzz(func(t *testing.T, id string, inQuery bool) {
		u, header, sent := base+"/events", "", id
		if inQuery {
			u += "?last_event_id=" + url.QueryEscape(id)
		} else {
			if !validHeaderValue(id) {
				return // no client sends it
			}
			// A header value's surrounding spaces are not part of it.
			header, sent = id, strings.Trim(id, " \t")
		}
		s := openStream(t, http.DefaultClient, u, header)
		defer s.close()
		if s.resp.StatusCode != http.StatusOK {
			t.Fatalf("resuming from %q got %s", id, s.resp.Status)
		}
		switch sent {
		case ids[2]:
			return // the latest: nothing until the next change
		case ids[0], ids[1]:
			want := ids[1]
			if sent == ids[1] {
				want = ids[2]
			}
			if ev := s.next(5 * time.Second); ev.name != "patch" || ev.id != want {
				t.Fatalf("resuming from %q got %+v, want the patch %s", id, ev, want)
			}
		default:
			if ev := s.next(5 * time.Second); ev.name != "snapshot" || ev.id != ids[2] || !sameJSON(ev.data, `{"v":2}`) {
				t.Fatalf("resuming from %q got %+v, want the snapshot %s", id, ev, ids[2])
			}
		}
	})
}

// FuzzResume holds the log's resume to the ids it issued: any other string
// is unknown, and an id is resumed from its own position.
func FuzzResume(f *testing.F) {
	l := newMemoryLog(4)
	ctx := context.Background()
	for i := range 7 {
		if i%3 == 2 {
			l.setStatus(ctx, []byte(`{"upstream":"down"}`), true)
		} else {
			l.appendEvent(ctx, []byte(`{}`), eventPatch, []byte(`[]`))
		}
	}
	for p := uint64(0); p <= 9; p++ {
		f.Add(l.id(p))
	}
	f.Add(l.epoch + "-05")
	f.Add(l.epoch + "-+5")
	f.Fuzz(func(t *testing.T, id string) {
		c := l.resume(id)
		if c == 0 {
			return
		}
		pos := uint64(c)
		if l.id(pos) != id || pos > l.head || pos+1 < l.oldest() {
			t.Fatalf("resume(%q) = %d (head %d, oldest %d)", id, pos, l.head, l.oldest())
		}
	})
}

// echoAPI is a fakeAPI that answers every request with what it received
// of it: the path, the query parameter q and the header X-Token (in hex).
type echoAPI struct {
	*fakeAPI
	mu sync.Mutex
	// odd holds the requests whose target breaks what the handler
	// promises of placeholder values.
	odd []string
}

func newEchoAPI(t testing.TB) *echoAPI {
	api := &echoAPI{fakeAPI: newFakeAPI(t, `{}`)}
	api.handle(func(w http.ResponseWriter, r *http.Request) bool {
		if reason := unsafeTarget(r.URL); reason != "" {
			api.mu.Lock()
			api.odd = append(api.odd, reason+": "+r.URL.String())
			api.mu.Unlock()
		}
		// Header values are bytes, which JSON strings are not: hex.
		var tokens []string
		for _, v := range r.Header.Values("X-Token") {
			tokens = append(tokens, hex.EncodeToString([]byte(v)))
		}
		body, _ := json.Marshal(map[string]any{"path": r.URL.Path, "q": r.URL.Query()["q"], "token": tokens})
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
		return true
	})
	return api
}

func (api *echoAPI) oddRequests() []string {
	api.mu.Lock()
	defer api.mu.Unlock()
	return append([]string(nil), api.odd...)
}

// unsafeTarget says how a request target breaks the promises of the
// handler about placeholder values, "" if it does not: in any number of
// percent-decodings, no control character, "#", "\", dot segment or
// segment that begins with "@", and nothing outside /items/.
func unsafeTarget(u *url.URL) string {
	if !strings.HasPrefix(u.EscapedPath(), "/items/") {
		return "outside /items"
	}
	forms := []string{u.EscapedPath()}
	for _, vs := range u.Query() {
		forms = append(forms, vs...)
	}
	for _, form := range forms {
		for range 4 {
			if !utf8.ValidString(form) {
				return "invalid UTF-8"
			}
			for _, r := range form {
				if r < 0x20 || r == 0x7f || r == '#' || r == '\\' {
					return fmt.Sprintf("character %q", r)
				}
			}
			for seg := range strings.SplitSeq(form, "/") {
				if name, _, _ := strings.Cut(seg, ";"); name == "." || name == ".." || strings.HasPrefix(seg, "@") {
					return "segment " + seg
				}
			}
			next, err := url.PathUnescape(form)
			if err != nil || next == form {
				break
			}
			form = next
		}
	}
	return ""
}

// plainValue tells whether a placeholder value holds nothing that the
// handler has a reason to refuse: such a value must be streamed.
func plainValue(v string) bool {
	if !utf8.ValidString(v) || len(v) > 1000 {
		return false
	}
	for _, r := range v {
		if r < 0x20 || r == 0x7f || strings.ContainsRune("/.%#\\@;", r) {
			return false
		}
	}
	return true
}

// FuzzPlaceholderValues streams a topic whose upstream URL takes a path
// segment and a query value from the request, with any values: each is
// refused with 400, or the upstream receives exactly those values, and
// never a target that climbs out of its path or carries a control
// character or a fragment, decoded once or more.
func FuzzPlaceholderValues(f *testing.F) {
	api := newEchoAPI(f)
	base := startCaddy(f, "["+pollSSERoute("/items", fmt.Sprintf(`"upstream":%q,"interval":"100ms","idle_timeout":"200ms"`,
		api.URL+"/items/{http.request.uri.query.seg}?q={http.request.uri.query.q}"))+"]")
	for _, seed := range [][2]string{
		{"42", "1"}, {"a/b", "x y"}, {"café", "ä&ö=1"}, {"..", ""}, {"a/../b", ""}, {"%2e%2e", ""}, {"%252e%252e", ""},
		{"a;x", ""}, {"..;x", ""}, {"@host", ""}, {"a/@b", ""}, {"", "#"}, {"a\\b", ""}, {"x\r\nHost: evil", ""}, {"\xff", ""},
		{"a//b", ""}, {"/", ""}, {"100%", "50%"}, {"%41", "%2F"}, {strings.Repeat("x", 9000), ""}, {"ok", "\u2028"}, {"ok", "a/../b"},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, seg, q string) {
		s := openStream(t, http.DefaultClient, base+"/items?seg="+url.QueryEscape(seg)+"&q="+url.QueryEscape(q), "")
		defer s.close()
		switch s.resp.StatusCode {
		case http.StatusBadRequest:
			if plainValue(seg) && plainValue(q) && seg != "" {
				t.Fatalf("the plain values %q and %q were refused", seg, q)
			}
		case http.StatusOK:
			ev := s.next(10 * time.Second)
			var got struct {
				Path string
				Q    []string
			}
			if ev.name != "snapshot" || json.Unmarshal([]byte(ev.data), &got) != nil {
				t.Fatalf("values %q and %q: got %+v", seg, q, ev)
			}
			if got.Path != "/items/"+seg || len(got.Q) != 1 || got.Q[0] != q {
				t.Fatalf("values %q and %q reached the upstream as path %q and q %q", seg, q, got.Path, got.Q)
			}
		default:
			t.Fatalf("values %q and %q got %s", seg, q, s.resp.Status)
		}
		if odd := api.oddRequests(); len(odd) > 0 {
			t.Fatalf("the upstream received %q", odd)
		}
	})
}

// FuzzForwardedHeaders streams a per-user topic (forward_headers X-Token)
// with two values of the header at once: each stream gets the document of
// its own value, and the two share a topic (and its ids) exactly when the
// values are equal.
func FuzzForwardedHeaders(f *testing.F) {
	api := newEchoAPI(f)
	base := startCaddy(f, "["+pollSSERoute("/items", fmt.Sprintf(`"upstream":%q,"interval":"100ms","idle_timeout":"200ms","forward_headers":["X-Token"]`,
		api.URL+"/items/x"))+"]")
	for _, seed := range [][2]string{{"alice", "bob"}, {"alice", "alice"}, {"alice", "alice "}, {"", "x"}, {"a,b", "a"}, {"ünï", "ünï"}, {"Bearer x", "bearer x"}} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		if !validHeaderValue(a) || !validHeaderValue(b) {
			return
		}
		// Both streams are open at once, so that equal values find the
		// same topic.
		sa := openStreamWith(t, base+"/items", http.Header{"X-Token": {a}}, "")
		defer sa.close()
		sb := openStreamWith(t, base+"/items", http.Header{"X-Token": {b}}, "")
		defer sb.close()
		evA, evB := sa.next(10*time.Second), sb.next(10*time.Second)
		// What the subscriber sends is what the upstream receives, less the
		// spaces around it.
		received := func(v string) string { return strings.Trim(v, " \t") }
		for _, c := range []struct {
			v  string
			ev sseEvent
		}{{a, evA}, {b, evB}} {
			var got struct{ Token []string }
			if c.ev.name != "snapshot" || json.Unmarshal([]byte(c.ev.data), &got) != nil {
				t.Fatalf("X-Token %q got %+v", c.v, c.ev)
			}
			if len(got.Token) != 1 || got.Token[0] != hex.EncodeToString([]byte(received(c.v))) {
				t.Fatalf("X-Token %q: the upstream received %q", c.v, got.Token)
			}
		}
		epochA, _, _ := strings.Cut(evA.id, "-")
		epochB, _, _ := strings.Cut(evB.id, "-")
		if (epochA == epochB) != (received(a) == received(b)) {
			t.Fatalf("X-Token %q and %q: topics %s and %s", a, b, evA.id, evB.id)
		}
	})
}

// FuzzTopicKey holds the topic key to the forwarded values: two sets of
// values share a key exactly when they are equal, however they are split.
func FuzzTopicKey(f *testing.F) {
	hs, _ := MemoryStore{}.attach(zap.NewNop())
	h := newHub(topicSettings{Interval: time.Second, ForwardHeaders: []string{"Authorization", "Cookie"}}, zap.NewNop(), hs)
	f.Cleanup(func() { h.Destruct() })
	f.Add("a", "b", "a", "b")
	f.Add("ab", "", "a", "b")
	f.Add("", "", "", "")
	f.Add("x\x00", "y", "x", "\x00y")
	f.Fuzz(func(t *testing.T, a1, a2, b1, b2 string) {
		a := http.Header{"Authorization": {a1}, "Cookie": {a2}}
		b := http.Header{"Authorization": {b1}, "Cookie": {b2}}
		ka, kb := h.topicKey("http://api.test/x", a), h.topicKey("http://api.test/x", b)
		if (ka == kb) != (a1 == b1 && a2 == b2) {
			t.Fatalf("values %q %q and %q %q: keys %q and %q", a1, a2, b1, b2, ka, kb)
		}
		for _, v := range []string{a1, a2} {
			if len(v) >= 8 && strings.Contains(strings.TrimPrefix(ka, "http://api.test/x "), v) {
				t.Fatalf("the key %q holds the value %q", ka, v)
			}
		}
		// The same values split otherwise are others.
		if c := (http.Header{"Authorization": {a1, a2}}); a2 != "" && h.topicKey("http://api.test/x", c) == ka {
			t.Fatalf("values %q %q in one header or two share a key", a1, a2)
		}
	})
}
