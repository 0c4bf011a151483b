package main

import (
	"strings"
	"sync"
	"time"
)

// presence keeps when each topic of each instance had none of the soak's
// streams. A topic stops once it has had no subscriber for its
// idle_timeout, and the next stream starts it anew, with a schedule of its
// own: its first poll is at once, whatever the backoff of the topic before
// it, so the upstream's check of a run of failures must know of the new
// start.
type presence struct {
	mu     sync.Mutex
	topics map[presenceKey]*presenceOf
	// idle returns the idle_timeout of a route.
	idle func(route string) time.Duration
}

// A presenceKey is a topic on one instance, across its processes and its
// route's generations: the instance's name, the route's letter and the
// upstream's key of the document.
type presenceKey struct{ instance, route, key string }

type presenceOf struct {
	open int
	// emptySince is when open last fell to 0.
	emptySince time.Time
	// starts are the moments at which a stream opened after the topic had
	// had none for long enough to have stopped, oldest first.
	starts []time.Time
}

const (
	// presenceSlack is how much sooner than the soak a topic may count
	// its last subscriber gone, and how far apart the soak and Caddy may
	// see one moment.
	presenceSlack = 500 * time.Millisecond
	// presenceKept is how long a start is kept.
	presenceKept = 10 * time.Minute
)

func newPresence(idle func(route string) time.Duration) *presence {
	return &presence{topics: map[presenceKey]*presenceOf{}, idle: idle}
}

// opened counts a stream of a topic open from at on.
func (pr *presence) opened(k presenceKey, at time.Time) {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	t := pr.topics[k]
	if t == nil {
		t = &presenceOf{}
		pr.topics[k] = t
	}
	if t.open == 0 && (t.emptySince.IsZero() || at.Sub(t.emptySince) >= pr.idle(k.route)-presenceSlack) {
		for len(t.starts) > 0 && at.Sub(t.starts[0]) > presenceKept {
			t.starts = t.starts[1:]
		}
		t.starts = append(t.starts, at)
	}
	t.open++
}

// closed counts a stream of a topic closed at at.
func (pr *presence) closed(k presenceKey, at time.Time) {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	if t := pr.topics[k]; t != nil {
		if t.open--; t.open == 0 {
			t.emptySince = at
		}
	}
}

// startedAnew tells whether the topic of run may have started anew between
// from and to.
func (pr *presence) startedAnew(run topicRun, from, to time.Time) bool {
	instance, _, _ := strings.Cut(run.instance, "r")
	k := presenceKey{instance: instance, route: strings.TrimRight(run.gen, "0123456789"), key: run.key}
	pr.mu.Lock()
	defer pr.mu.Unlock()
	t := pr.topics[k]
	if t == nil {
		return false
	}
	for _, at := range t.starts {
		if !at.Before(from.Add(-presenceSlack)) && !at.After(to.Add(presenceSlack)) {
			return true
		}
	}
	return false
}
