package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The clients that come and go during a phase. Each checks every event it
// reads (streamCheck); what each is allowed to be answered besides a
// stream is said where it connects.

// pick returns a random element.
func pick[T any](rng *rand.Rand, xs []T) T { return xs[rng.IntN(len(xs))] }

// refusalAllowed tells whether a session may have been refused, or its
// request have failed: only when an operation overlapped it (a stopped
// Caddy refuses connections; a reload ends streams, and a request that
// comes in the middle of one may wait until it fails).
func (s *soak) refusalAllowed(res sessionResult) bool {
	s.opsMu.Lock()
	defer s.opsMu.Unlock()
	return s.opsActive > 0 || s.opsEnd.After(res.started.Add(-opGrace))
}

// hopper reads a main topic, drops and comes back, resuming by
// Last-Event-ID or last_event_id at random points, over any protocol and to
// any instance, now and then staying away long enough to fall out of the
// history, or leaving with a reset.
func (s *soak) hopper(ctx context.Context, rng *rand.Rand) {
	t := pick(rng, append(append([]*topicSpec(nil), s.main...), s.users...))
	b := &browser{topic: t}
	for ctx.Err() == nil {
		in := pick(rng, s.insts)
		o := sessionOpts{proto: pick(rng, protos), inst: in, reset: rng.IntN(5) == 0}
		if b.hasLast && rng.IntN(5) > 0 {
			o.resume = resume{sent: b.last, id: b.lastID, own: true, instance: in.runID()}
			o.inQuery = rng.IntN(3) == 0
			if o.inQuery {
				s.stats.queryResumes.Add(1)
			}
		} else {
			o.resume.instance = in.runID()
		}
		n := 1 + rng.IntN(30)
		o.until = func(c *streamCheck) bool { return c.events >= n }
		o.maxTime = time.Duration(200+rng.IntN(4000)) * time.Millisecond
		s.stats.hops.Add(1)
		if o.reset {
			s.stats.resets.Add(1)
		}
		o.reader = s.newReader(fmt.Sprintf("a hopper of %s over %s on %s", t.name, o.proto, in.name()), t, in)
		res := s.session(ctx, b, o)
		s.doneReader(o.reader)
		if !s.sessionOK(b, res, "a hopper") {
			return
		}
		s.countResume(res)
		var away time.Duration
		switch r := rng.IntN(10); {
		case r < 7:
			away = time.Duration(rng.IntN(800)) * time.Millisecond
		case r < 9:
			away = time.Duration(1000+rng.IntN(2000)) * time.Millisecond
		default:
			away = time.Duration(4000+rng.IntN(5000)) * time.Millisecond
		}
		sleep(ctx, away)
	}
}

// pause waits a moment after a session that got no stream: a stopped
// Caddy refuses connections, and its clients come back after a while.
func (s *soak) pause(ctx context.Context, res sessionResult) {
	if res.status != http.StatusOK {
		sleep(ctx, 200*time.Millisecond)
	}
}

// sessionOK fails the soak when a session broke an invariant, or was
// refused when it may not be, and tells whether to go on.
func (s *soak) sessionOK(b *browser, res sessionResult, who string) bool {
	if res.err != nil {
		s.fail("%s of %s: %v", who, b.topic.name, res.err)
		return false
	}
	if res.status != 0 && res.status != 200 && !s.refusalAllowed(res) {
		s.fail("%s: %v", who, unexpected(b, res))
		return false
	}
	return true
}

func (s *soak) countResume(res sessionResult) {
	if res.check == nil || !res.check.r.own {
		return
	}
	if res.check.replayed {
		s.stats.replays.Add(1)
	} else if res.check.snapshots > 0 {
		s.stats.resumeSnapshots.Add(1)
	}
}

// badID comes back with an id that cannot be resumed from: expired,
// malformed, of another topic or from before a restart. The stream must
// start with a snapshot.
func (s *soak) badID(ctx context.Context, rng *rand.Rand) {
	for ctx.Err() == nil {
		t := pick(rng, s.main)
		in := pick(rng, s.insts)
		var real eventID
		var known bool
		for _, k := range s.keepers {
			if k.b.topic == t && k.inst == in {
				k.mu.Lock()
				real, known = k.lastID, k.hasLast
				k.mu.Unlock()
			}
		}
		if !known {
			sleep(ctx, 200*time.Millisecond)
			continue
		}
		o := sessionOpts{proto: pick(rng, protos), inst: in, inQuery: rng.IntN(2) == 0}
		o.resume = resume{mustSnapshot: true, instance: in.runID()}
		var id string
		var ok bool
		switch kind := rng.IntN(4); kind {
		case 0:
			o.resume.why = "expired"
			id, ok = s.ledger.expiredID(in.runID(), t.name)
		case 1:
			o.resume.why = "malformed"
			ids := malformedIDs(real)
			id, ok = pick(rng, ids), true
			if !o.inQuery && strings.TrimSpace(id) != id {
				// A header value's surrounding spaces are not part
				// of it.
				o.inQuery = true
			}
			if id == "" {
				// No id at all: a fresh stream.
				o.resume.why = "empty"
			}
		case 2:
			o.resume.why = "another topic's"
			id, ok = s.ledger.foreignID(in.runID(), t.name, rng.IntN)
		case 3:
			o.resume.why = "from before a restart"
			id, ok = s.oldID(t.name, rng)
		}
		if !ok {
			sleep(ctx, 100*time.Millisecond)
			continue
		}
		if c := s.stats.badIDs[o.resume.why]; c != nil {
			c.Add(1)
		}
		o.resume.sent = id
		o.until = func(c *streamCheck) bool { return c.snapshots > 0 && c.events >= 3 }
		o.maxTime = 3 * time.Second
		b := &browser{topic: t}
		who := "a client with an id " + o.resume.why + " (" + strconv.Quote(id) + ")"
		o.reader = s.newReader(fmt.Sprintf("%s of %s over %s on %s", who, t.name, o.proto, in.name()), t, in)
		res := s.session(ctx, b, o)
		s.doneReader(o.reader)
		if !s.sessionOK(b, res, who) {
			return
		}
		s.pause(ctx, res)
		sleep(ctx, time.Duration(rng.IntN(300))*time.Millisecond)
	}
}

// slowReader reads a main topic slowly but steadily through a small
// receive buffer; the handler may resync it with a snapshot when it falls
// out of the history.
func (s *soak) slowReader(ctx context.Context, rng *rand.Rand) {
	for ctx.Err() == nil {
		t := pick(rng, s.main)
		b := &browser{topic: t}
		in := pick(rng, s.insts)
		o := sessionOpts{proto: pick(rng, protos), inst: in, rate: 8<<10 + rng.IntN(56<<10), maxTime: time.Duration(4+rng.IntN(10)) * time.Second}
		o.resume.instance = in.runID()
		s.stats.slow.Add(1)
		res := s.session(ctx, b, o)
		if !s.sessionOK(b, res, fmt.Sprintf("a slow reader (%d B/s over %s)", o.rate, o.proto)) {
			return
		}
		if res.status == http.StatusOK && res.serverEnded && ctx.Err() == nil {
			s.stats.slowDropped.Add(1)
		}
		s.pause(ctx, res)
	}
}

// staller reads a main topic's snapshot and then stops reading, for
// longer than the write timeout: the handler drops it once its buffers are
// full, and nobody else waits for it. On the topic whose 6 MB never change
// while its upstream flaps, it stops before the snapshot, for less than the
// write timeout, and falls behind status events alone.
func (s *soak) staller(ctx context.Context, rng *rand.Rand) {
	for ctx.Err() == nil {
		// The big documents fill the kernel's buffers at once; behind the
		// 6 MB that never change, the reader falls behind status events.
		t := pick(rng, []*topicSpec{pick(rng, s.main), s.main[4], s.still})
		b := &browser{topic: t}
		in := pick(rng, s.insts)
		stall := time.Duration(3+rng.IntN(8)) * time.Second
		if t == s.still {
			// Shorter than the write timeout, longer than the history
			// of its flapping upstream takes to turn over.
			stall = time.Duration(1000+rng.IntN(800)) * time.Millisecond
		}
		o := sessionOpts{proto: pick(rng, protos), inst: in, rate: 1 << 30, stall: stall, maxTime: stall + 2*time.Second, stallFirst: t == s.still}
		o.resume.instance = in.runID()
		s.stats.stalled.Add(1)
		res := s.session(ctx, b, o)
		if !s.sessionOK(b, res, "a stalled reader") {
			return
		}
		if res.status == http.StatusOK && res.serverEnded && ctx.Err() == nil {
			s.stats.stalledDropped.Add(1)
		}
		s.pause(ctx, res)
	}
}

// Placeholder values of the templated topics: names of many kinds, which
// reach the upstream as they were asked for, and values that the handler
// refuses with 400.
var (
	tmplWords  = []string{"orders", "café", "日本", "with space", "a+b", "x&y=z", "semi;colon", "comma,s", "paren(s)", "star*", "bang!", "tilde~", "dollar$", "colon:x", "quote'", "%41", "50%off", "ü/ñ", "deep/er/path", "emoji🙂", "UPPER", "-dash_", "x.y"}
	tmplQuery  = []string{"", "1", "a b", "ä&ö", "x=y", "50%", "l/m", "+plus", "?q", "🙂"}
	hostileTmp = []struct{ name, q string }{
		{"@evil.example", "1"}, {"a/@b", ""}, {"a%23b", ""}, {"x/%2e%2e/y", ""}, {"back\\slash", ""},
		{"ok", "line\nbreak"}, {"ok", "cr\rlf"}, {"ok", "hash#"}, {"nul\x00", ""}, {"a/%252e%252e/b", ""},
		{strings.Repeat("long", 2100), ""}, {"caf\xe9", ""}, {"ok", "@at"},
	}
)

// churner creates templated topics by the hundred, reads each briefly and
// abandons it; the handler stops them after their idle timeout, and at
// max_topics (12 on that route) evicts idle ones or refuses new ones with
// 503; beyond max_new_topics, the new ones are refused with 429 and a
// Retry-After. Now and then it asks for a value that must be refused with
// 400.
func (s *soak) churner(ctx context.Context, rng *rand.Rand) {
	for ctx.Err() == nil {
		in := pick(rng, s.insts)
		o := sessionOpts{proto: pick(rng, protos), inst: in}
		o.resume.instance = in.runID()
		if rng.IntN(12) == 0 {
			h := pick(rng, hostileTmp)
			t := s.templateTopic(h.name, h.q)
			b := &browser{topic: t}
			o.maxTime = 3 * time.Second
			res := s.session(ctx, b, o)
			switch {
			case res.err != nil:
				s.fail("a client of %q: %v", t.name, res.err)
				return
			case res.status == 400:
				s.stats.tmplRefused.Add(1)
			case res.status == 0 && (s.refusalAllowed(res) || ctx.Err() != nil):
			default:
				s.fail("the placeholder values %q and %q got %d (%s), not 400", h.name, h.q, res.status, strings.TrimSpace(res.body))
				return
			}
			continue
		}
		// Now and then a burst of topics held at once, more than
		// max_topics: the handler evicts idle topics for them, and refuses
		// the rest.
		burst := 1
		if rng.IntN(10) == 0 {
			burst = tmplMaxTopics
		}
		var wg sync.WaitGroup
		ok := true
		var okMu sync.Mutex
		for range burst {
			name := pick(rng, tmplWords)
			if rng.IntN(3) > 0 {
				name += "-" + strconv.Itoa(rng.IntN(100000))
			}
			q := pick(rng, tmplQuery)
			t := s.templateTopic(name, q)
			if _, seen := s.stats.tmplNames.LoadOrStore(t.name, true); !seen {
				s.stats.tmplCreated.Add(1)
			}
			n := 1 + rng.IntN(3)
			o := o
			o.until = func(c *streamCheck) bool { return c.events >= n }
			o.maxTime = time.Duration(300+rng.IntN(2000)) * time.Millisecond
			if burst > 1 {
				o.until = nil
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				b := &browser{topic: t}
				s.stats.tmplSessions.Add(1)
				res := s.session(ctx, b, o)
				switch {
				case res.err != nil:
					s.fail("a client of %s: %v", t.name, res.err)
				case res.status == 503:
					s.stats.tmplCapped.Add(1)
				case res.status == 429:
					// max_new_topics: the client address creates
					// topics faster than the route allows, and is
					// told when it may create another.
					if n, err := strconv.Atoi(res.retryAfter); err != nil || n < 1 || n > tmplNewTopicsPer {
						s.fail("a client of %s refused by max_new_topics got Retry-After %q, want 1 to %d seconds", t.name, res.retryAfter, tmplNewTopicsPer)
					}
					s.stats.tmplLimited.Add(1)
				case res.status == 0 || res.status == 200 || s.refusalAllowed(res):
				default:
					s.fail("a client of %s: %v", t.name, unexpected(b, res))
				}
				okMu.Lock()
				ok = ok && res.err == nil
				okMu.Unlock()
				s.pause(ctx, res)
			}()
		}
		wg.Wait()
		if !ok {
			return
		}
		sleep(ctx, time.Duration(rng.IntN(100))*time.Millisecond)
	}
}

// userHopper reads the per-user topic of one user (forward_headers
// Authorization), drops and resumes, and now and then comes back with
// another user's last id: it must get a snapshot of its own document.
func (s *soak) userHopper(ctx context.Context, rng *rand.Rand) {
	t := pick(rng, s.users)
	b := &browser{topic: t}
	for ctx.Err() == nil {
		in := pick(rng, s.insts)
		o := sessionOpts{proto: pick(rng, protos), inst: in, inQuery: rng.IntN(3) == 0}
		o.resume.instance = in.runID()
		if b.hasLast {
			o.resume = resume{sent: b.last, id: b.lastID, own: true, instance: in.runID()}
		}
		if rng.IntN(3) == 0 {
			for _, k := range s.keepers {
				if k.b.topic.user != "" && k.b.topic.user != t.user {
					k.mu.Lock()
					if k.hasLast {
						o.resume = resume{sent: k.last, mustSnapshot: true, why: "another user's", instance: in.runID()}
					}
					k.mu.Unlock()
					break
				}
			}
			if o.resume.mustSnapshot {
				s.stats.badIDs["another user's"].Add(1)
			}
		}
		n := 1 + rng.IntN(10)
		o.until = func(c *streamCheck) bool { return c.events >= n }
		o.maxTime = time.Duration(300+rng.IntN(2000)) * time.Millisecond
		s.stats.userHops.Add(1)
		o.reader = s.newReader(fmt.Sprintf("a user hopper of %s over %s on %s", t.name, o.proto, in.name()), t, in)
		res := s.session(ctx, b, o)
		s.doneReader(o.reader)
		if !s.sessionOK(b, res, "a user hopper") {
			return
		}
		sleep(ctx, time.Duration(rng.IntN(500))*time.Millisecond)
	}
}

// malloryTries streams with credentials that the upstream refuses: she
// gets 401, or a stream that ends without any document, never a document.
func (s *soak) malloryTries(ctx context.Context, rng *rand.Rand) {
	for ctx.Err() == nil {
		in := pick(rng, s.insts)
		b := &browser{topic: s.mallory}
		o := sessionOpts{proto: pick(rng, protos), inst: in, maxTime: 3 * time.Second}
		o.resume.instance = in.runID()
		res := s.session(ctx, b, o)
		switch {
		case res.err != nil:
			s.fail("mallory: %v", res.err)
			return
		case res.status == 401:
			s.stats.malloryRefused.Add(1)
		case res.status == 0, res.status == 200:
		default:
			if !s.refusalAllowed(res) {
				s.fail("mallory: %v", unexpected(b, res))
				return
			}
		}
		sleep(ctx, time.Duration(300+rng.IntN(1000))*time.Millisecond)
	}
}

// storm connects n clients to one topic at once, holds them a few seconds
// and drops them all at once; then they all come back at once, with their
// last ids (a reconnect storm after a deploy) or as new clients (a page
// reloaded everywhere). Every client is a reader that keeps up while it is
// held: each change must reach all of them within the budget.
func (s *soak) storm(ctx context.Context, rng *rand.Rand, n int) {
	t := pick(rng, s.main[:4])
	in := pick(rng, s.insts)
	p := protoH1
	if r := rng.IntN(10); r >= 7 {
		p = pick(rng, protos[1:])
	}
	fresh := rng.IntN(2) == 0
	s.logf("storm of %d clients on %s over %s, back %s", n, t.name, p, map[bool]string{true: "as new clients", false: "with their ids"}[fresh])
	s.stats.storms.Add(1)
	browsers := make([]*browser, n)
	for i := range browsers {
		browsers[i] = &browser{topic: t}
	}
	round := func(hold time.Duration, again bool) bool {
		var wg sync.WaitGroup
		gate := make(chan struct{})
		var bad sync.Once
		ok := true
		for i, b := range browsers {
			if again && fresh {
				b = &browser{topic: t}
				browsers[i] = b
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-gate
				o := sessionOpts{proto: p, inst: in, maxTime: hold}
				o.resume.instance = in.runID()
				if again && b.hasLast {
					o.resume = resume{sent: b.last, id: b.lastID, own: true, instance: in.runID()}
				}
				o.reader = s.newReader(fmt.Sprintf("a client of a storm on %s over %s on %s", t.name, p, in.name()), t, in)
				res := s.session(ctx, b, o)
				s.doneReader(o.reader)
				s.countResume(res)
				if !s.sessionOK(b, res, "a client of a storm") {
					bad.Do(func() { ok = false })
				}
			}()
		}
		s.stats.stormClients.Add(int64(n))
		close(gate)
		wg.Wait()
		return ok
	}
	if !round(time.Duration(2000+rng.IntN(4000))*time.Millisecond, false) || ctx.Err() != nil {
		return
	}
	sleep(ctx, time.Duration(rng.IntN(600))*time.Millisecond)
	round(time.Duration(2000+rng.IntN(4000))*time.Millisecond, true)
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// abuse opens connections that send their request a byte a second
// (slowloris) and connections that send nothing: Caddy's read_header
// timeout closes both, and the keepers' latency budget runs meanwhile.
func (s *soak) abuse(ctx context.Context, rng *rand.Rand) {
	in := pick(rng, s.insts)
	n := max(10, int(200*s.o.scale))
	half := max(10, int(1000*s.o.scale))
	var wg sync.WaitGroup
	addr := "127.0.0.1:" + strconv.Itoa(in.h1Port)
	bound := readHeader + 3*time.Second
	watch := func(c net.Conn, what string, opened time.Time) {
		// Read until Caddy closes the connection.
		c.SetReadDeadline(opened.Add(bound))
		var buf [512]byte
		for {
			if _, err := c.Read(buf[:]); err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() && ctx.Err() == nil {
					s.fail("a %s connection was still open %s after it was opened: Caddy's read_header timeout is %s", what, bound, readHeader)
				}
				return
			}
		}
	}
	s.stats.halfOpen.Add(int64(half))
	s.stats.slowloris.Add(int64(n))
	for range half {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			watch(c, "silent", time.Now())
			s.stats.abuseClosed.Add(1)
		}()
	}
	req := "GET /s/obj HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\nX-Pad: " + strings.Repeat("p", 64) + "\r\n\r\n"
	for range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			continue
		}
		wg.Add(2)
		opened := time.Now()
		done := make(chan struct{})
		go func() {
			defer wg.Done()
			defer close(done)
			watch(c, "slowloris", opened)
			s.stats.abuseClosed.Add(1)
		}()
		go func() {
			defer wg.Done()
			defer c.Close()
			for i := 0; i < len(req); i++ {
				if _, err := c.Write([]byte{req[i]}); err != nil {
					return
				}
				select {
				case <-done:
					return
				case <-ctx.Done():
					return
				case <-time.After(time.Second):
				}
			}
		}()
	}
	wg.Wait()
}
