package main

import (
	"crypto/sha256"
	"sync"
)

// A verified document is one that an event made of a browser's document
// and that checked out against the upstream's version it claims.
type verified struct {
	tree    any
	canon   []byte
	hash    docHash
	version int
}

// A verifyCache shares the documents that the events of a topic make among
// its clients: a thousand clients of a storm hold the same document and
// get the same events, and the result of an event is the same for each of
// them, so that it is computed and checked once. The key is the document
// the event applies to (its hash), the event's id and its data (their
// hash), so that a client whose document or event differs in any way
// computes and checks its own. Documents are never changed in place
// (patch.go), so that they can be shared.
type verifyCache struct {
	mu sync.Mutex
	m  map[verifyKey]verified
}

type verifyKey struct {
	prior docHash
	name  string
	id    string
	data  docHash
}

// maxVerified bounds the documents a cache keeps.
const maxVerified = 2048

// do returns what ev makes of b's document, from the cache or by compute.
func (vc *verifyCache) do(b *browser, ev sseEvent, compute func() (verified, error)) (verified, error) {
	if vc == nil {
		return compute()
	}
	key := verifyKey{name: ev.name, id: ev.id, data: sha256.Sum256([]byte(ev.data))}
	if ev.name != "snapshot" {
		key.prior = b.hash
	}
	vc.mu.Lock()
	r, ok := vc.m[key]
	vc.mu.Unlock()
	if ok {
		return r, nil
	}
	r, err := compute()
	if err != nil {
		return r, err
	}
	vc.mu.Lock()
	if vc.m == nil || len(vc.m) >= maxVerified {
		vc.m = make(map[verifyKey]verified)
	}
	vc.m[key] = r
	vc.mu.Unlock()
	return r, nil
}
