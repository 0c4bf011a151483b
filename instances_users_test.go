//go:build unix

package pollsse

import (
	"context"
	"fmt"
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
