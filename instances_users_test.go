//go:build unix

package pollsse

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestInstancesShareEachUsersTopic: with forward_headers, the same user is
// the same topic on every instance of one Redis (the topic key's secret is
// shared), so that a browser that resumes on another instance gets exactly
// the event after its id there, and another user presenting that id gets
// a snapshot of their own; Redis holds no credential, in a key or a value.
func TestInstancesShareEachUsersTopic(t *testing.T) {
	r := startRedis(t)
	api := newUsersAPI(t)
	insts := startInstances(t, 2, api.URL+"/account", redisStoreLines(r.url()), "forward_headers Authorization")

	alice := openStreamWith(t, insts[0].events(), bearer("alice-token"), "")
	aliceSnap := alice.next(10 * time.Second)
	if aliceSnap.name != "snapshot" || !sameJSON(aliceSnap.data, `{"user":"alice","balance":100}`) {
		t.Fatalf("alice got %+v on the first instance", aliceSnap)
	}
	bob := openStreamWith(t, insts[1].events(), bearer("bob-token"), "")
	if ev := bob.next(10 * time.Second); ev.name != "snapshot" || !sameJSON(ev.data, `{"user":"bob","balance":5}`) {
		t.Fatalf("bob got %+v on the second instance", ev)
	}

	api.setFor("Bearer alice-token", 200, `{"user":"alice","balance":90}`)
	patch := alice.next(10 * time.Second)
	if patch.name != "patch" || !strings.Contains(patch.data, "90") {
		t.Fatalf("alice got %+v after her change", patch)
	}

	// Alice hops to the second instance with the id of her snapshot: the
	// same topic there, so the same patch with the same id and bytes.
	hopped := openStreamWith(t, insts[1].events(), bearer("alice-token"), aliceSnap.id)
	if ev := hopped.next(10 * time.Second); ev.name != patch.name || ev.id != patch.id || ev.data != patch.data {
		t.Errorf("alice resuming %s on the second instance got %s %s %q, want %s %s %q",
			aliceSnap.id, ev.name, ev.id, ev.data, patch.name, patch.id, patch.data)
	}
	// Bob presenting alice's id on the first instance gets his own document.
	if ev := openStreamWith(t, insts[0].events(), bearer("bob-token"), aliceSnap.id).next(10 * time.Second); ev.name != "snapshot" || !sameJSON(ev.data, `{"user":"bob","balance":5}`) {
		t.Errorf("bob resuming with alice's id got %+v, want his own snapshot", ev)
	}
	if ev, ok := bob.nextOrTimeout(300 * time.Millisecond); ok {
		t.Errorf("bob's stream got %+v from alice's change", ev)
	}

	for key, value := range redisContents(t, r) {
		for _, secret := range []string{"alice-token", "bob-token", "Bearer"} {
			if strings.Contains(key, secret) || strings.Contains(value, secret) {
				t.Errorf("Redis key %q holds %q in clear", key, secret)
			}
		}
	}
}

// redisContents returns every key of r with its whole value as text: a
// string's, a hash's fields and values, a stream's entries.
func redisContents(t *testing.T, r *redisServer) map[string]string {
	t.Helper()
	c := r.client()
	defer c.Close()
	ctx := context.Background()
	out := map[string]string{}
	for key := range r.keys() {
		kind, err := c.Type(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		var value any
		switch kind {
		case "string":
			value, err = c.Get(ctx, key).Result()
		case "hash":
			value, err = c.HGetAll(ctx, key).Result()
		case "stream":
			value, err = c.XRange(ctx, key, "-", "+").Result()
		default:
			t.Fatalf("Redis key %q is a %s, which the test cannot read", key, kind)
		}
		if err != nil {
			t.Fatal(err)
		}
		out[key] = fmt.Sprint(value)
	}
	if len(out) == 0 {
		t.Fatal("Redis holds no keys")
	}
	return out
}

// TestInstancesShareARefusal: the instances of one Redis answer a user
// whose credentials the upstream refuses as one instance does, whichever
// of them polls the user's topic; the others learn the refusal from Redis,
// not from a poll of their own. Before the topic's first document, the
// browser gets the 403 on every instance (a first stream that opened before
// its instance heard ends without an event). After a first document, a
// refusal leaves the open streams open, told that the upstream is down,
// and new requests get the 403 on every instance, until the upstream takes
// the credentials again.
func TestInstancesShareARefusal(t *testing.T) {
	r := startRedis(t)
	api := newUsersAPI(t)
	insts := startInstances(t, 2, api.URL+"/account", redisStoreLines(r.url()), "forward_headers Authorization")
	for i, in := range insts {
		if status, _ := eventSourceStatus(t, in.events(), bearer("mallory-token")); status != http.StatusForbidden {
			t.Errorf("mallory got %d from instance %d, want 403", status, i+1)
		}
	}

	// Alice's topic is polled by the first instance, which she opens first.
	var streams []*streamClient
	for i, in := range insts {
		s := openStreamWith(t, in.events(), bearer("alice-token"), "")
		if ev := s.next(10 * time.Second); ev.name != "snapshot" {
			t.Fatalf("alice got %+v first on instance %d", ev, i+1)
		}
		streams = append(streams, s)
	}
	statusOn := func(in *instance) int {
		status, _ := getStatus(t, in.events(), bearer("alice-token"))
		return status
	}
	api.setFor("Bearer alice-token", http.StatusForbidden, "forbidden")
	for i, s := range streams {
		if sd := decodeStatus(t, s.next(10*time.Second)); sd.Upstream != "down" || sd.Status != http.StatusForbidden {
			t.Errorf("alice's stream on instance %d got %+v, want down with 403", i+1, sd)
		}
	}
	for i, in := range insts {
		waitFor(t, 5*time.Second, fmt.Sprintf("instance %d to refuse alice's new stream", i+1), func() bool { return statusOn(in) == http.StatusForbidden })
	}

	api.setFor("Bearer alice-token", http.StatusOK, `{"user":"alice","balance":80}`)
	for i, s := range streams {
		for {
			ev := s.next(10 * time.Second)
			if ev.name == "patch" && strings.Contains(ev.data, "80") {
				break
			}
			if ev.name != "status" {
				t.Fatalf("alice's stream on instance %d got %+v, want the up status and the patch", i+1, ev)
			}
		}
	}
	for i, in := range insts {
		waitFor(t, 5*time.Second, fmt.Sprintf("instance %d to stream to alice again", i+1), func() bool { return statusOn(in) == http.StatusOK })
	}
}
