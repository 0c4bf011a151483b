package pollsse

import (
	"context"
	"crypto/rand"
	"fmt"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"
)

// Stores keep the logs of a handler's topics: where events are numbered and
// held for resumes, and where the instances that share the store decide
// which of them polls a topic. A store is a guest module of the namespace
// http.handlers.poll_sse.stores, set with the handler's `store` option:
// `memory` (this file), the default, keeps everything in this process;
// `redis` (redis.go) shares it among every Caddy instance on one Redis.

func init() {
	caddy.RegisterModule(MemoryStore{})
}

// storeNamespace is the namespace of the store modules.
const storeNamespace = "http.handlers.poll_sse.stores"

// A store is the module of a handler's `store` option.
type store interface {
	// attach returns what a hub keeps its topics' logs in; the hub
	// closes it when it is destructed.
	attach(logger *zap.Logger) (hubStore, error)
}

// A hubStore holds the logs of one hub's topics.
type hubStore interface {
	// secret returns the secret that keys the hashes of the hub's topic
	// keys (hub.topicKey, hub.topicID), the same on every instance that
	// shares the store, so that a topic has the same key and id on each.
	secret(ctx context.Context) ([]byte, error)
	// open returns the log of a topic that starts.
	open(t topicRef) eventLog
	// Close releases what the hub held of the store; the logs it opened
	// are closed before.
	Close() error
}

// A topicRef is what a store is told of a topic whose log it opens.
type topicRef struct {
	// id is the topic's id (hub.topicID), which names it in the store.
	id      string
	history int
	// interval is the topic's poll interval.
	interval time.Duration
	logger   *zap.Logger
	// state is the topic's upstreamState, which a store shared by several
	// instances keeps as the instance that polls the topic tells it.
	state *upstreamState
}

// MemoryStore keeps each topic's log in this Caddy's memory: ids are valid
// on this instance alone, and the instance polls every topic it has
// subscribers for. It has no options.
type MemoryStore struct{}

// CaddyModule returns the Caddy module information.
func (MemoryStore) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.poll_sse.stores.memory",
		New: func() caddy.Module { return new(MemoryStore) },
	}
}

// UnmarshalCaddyfile sets up the store from Caddyfile tokens: `memory`,
// without arguments or a block.
func (*MemoryStore) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume the module name
	if d.NextArg() {
		return d.Errf("store memory: unexpected argument '%s'", d.Val())
	}
	if d.NextBlock(d.Nesting()) {
		return d.Errf("store memory: takes no options, not '%s'", d.Val())
	}
	return nil
}

func (MemoryStore) attach(*zap.Logger) (hubStore, error) {
	secret := make([]byte, 32)
	rand.Read(secret)
	return memoryHubStore{key: secret}, nil
}

// memoryHubStore is the MemoryStore of one hub. Its secret is random per
// hub: no other instance needs its topic keys.
type memoryHubStore struct{ key []byte }

func (s memoryHubStore) secret(context.Context) ([]byte, error) { return s.key, nil }

func (memoryHubStore) open(t topicRef) eventLog { return newMemoryLog(t.history) }

func (memoryHubStore) Close() error { return nil }

var (
	_ store                 = MemoryStore{}
	_ caddyfile.Unmarshaler = (*MemoryStore)(nil)
)

// A leasedStore is a store whose instances take turns at polling a topic
// with leases.
type leasedStore interface {
	// leaseDuration is how long a lease lasts without renewal.
	leaseDuration() time.Duration
}

// checkStoreInterval refuses a store whose lease would end before the
// poller that holds it has had a chance to renew it: the lease must be
// longer than the interval.
func checkStoreInterval(s any, interval time.Duration) error {
	ls, ok := s.(leasedStore)
	if !ok || interval == 0 {
		return nil
	}
	if lease := ls.leaseDuration(); lease <= interval {
		return fmt.Errorf("store: lease %s must be longer than the interval, %s", lease, interval)
	}
	return nil
}
