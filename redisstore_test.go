package pollsse

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// redisRoute is a route of a poll_sse handler of api on the redis store of
// r; fields are more of the handler's JSON.
func redisRoute(api, redisURL, fields string) string {
	if fields != "" {
		fields = "," + fields
	}
	return pollSSERoute("/events", fmt.Sprintf(`"upstream":%q,"interval":"100ms","store":{"module":"redis","url":%q,"lease":"1s"}%s`, api, redisURL, fields))
}

// TestRedisStoreStreams: a handler on the redis store streams a snapshot
// and patches with ids of Redis's log, which resume; Redis holds the
// topic's keys under the prefix, named by the topic's id and not its URL.
func TestRedisStoreStreams(t *testing.T) {
	r := startRedis(t)
	api := newFakeAPI(t, `{"v":1}`)
	base := startCaddy(t, "["+redisRoute(api.URL, r.url(), "")+"]")
	sc := openStream(t, http.DefaultClient, base+"/events", "")
	snap := sc.next(10 * time.Second)
	if snap.name != "snapshot" || snap.data != `{"v":1}` || strings.Count(snap.id, "-") != 2 {
		t.Fatalf("first event %+v, want a snapshot with an id of Redis's log", snap)
	}
	api.set(`{"v":2}`)
	patch := sc.next(10 * time.Second)
	if patch.name != "patch" || patch.data != `[{"op":"replace","path":"/v","value":2}]` {
		t.Fatalf("then %+v", patch)
	}
	sc.close()
	api.set(`{"v":3}`)
	resumed := openStream(t, http.DefaultClient, base+"/events", patch.id)
	if ev := resumed.next(10 * time.Second); ev.name != "patch" || ev.data != `[{"op":"replace","path":"/v","value":3}]` {
		t.Errorf("a resume from %s begins with %+v, want the patch to 3", patch.id, ev)
	}
	keys := r.keys()
	for k, ttl := range keys {
		if strings.Contains(k, "127.0.0.1") || strings.Contains(k, "http") {
			t.Errorf("the key %q names the upstream", k)
		}
		if k != "poll_sse:secret" && (ttl <= 0 || ttl > redisTopicTTL.Milliseconds()) {
			t.Errorf("the key %q has the TTL %dms", k, ttl)
		}
	}
	if _, ok := keys["poll_sse:secret"]; !ok || len(keys) != 4 {
		t.Errorf("Redis holds the keys %v, want the secret and a topic's meta, stream and lease", keys)
	}
}
