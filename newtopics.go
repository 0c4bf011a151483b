package pollsse

import (
	"container/list"
	"fmt"
	"net/http"
	"net/netip"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// clientAddress returns the client address of r, which max_new_topics
// counts new topics by: Caddy's client IP, which is the browser's address
// behind a proxy of the server's trusted_proxies, an IPv4 address as a /32
// and an IPv6 one as its /64, which a single host usually holds whole. A
// client IP that is no address (over a Unix socket) is the zero Prefix,
// which all such requests share.
func clientAddress(r *http.Request) netip.Prefix {
	ip, _ := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string)
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return netip.Prefix{}
	}
	addr = addr.Unmap().WithZone("")
	bits := 32
	if addr.Is6() {
		bits = 64
	}
	p, _ := addr.Prefix(bits)
	return p
}

// formatClient returns a client address for a log line: an IPv4 address
// alone, an IPv6 /64 as a prefix.
func formatClient(p netip.Prefix) string {
	switch {
	case !p.IsValid():
		return "unknown"
	case p.Addr().Is4():
		return p.Addr().String()
	default:
		return p.String()
	}
}

// maxClientBuckets is how many client addresses a newTopicLimit keeps
// count of at most: past it, a new address makes it forget the one that
// created a topic least recently, which may then create its whole count
// again. About 200 bytes each, 2 MB in all.
const maxClientBuckets = 10000

// A newTopicLimit is max_new_topics: how many new topics each client
// address may make a hub create, n per per. Each address has a token
// bucket of n, which refills at one every per/n: it may create n topics at
// once, then one per per/n, and after per without a creation it has all n
// again. The bucket is kept as the time it is full again (the generic cell
// rate algorithm), and only while it is not full: a flood of addresses
// costs at most maxClientBuckets of them. Its methods are called with the
// hub's mu held; those of a nil limit (off) allow every creation.
type newTopicLimit struct {
	n     int
	per   time.Duration
	every time.Duration // per/n
	// buckets holds the elements of order by their address; order holds
	// the buckets, the one that created a topic least recently first.
	buckets map[netip.Prefix]*list.Element
	order   list.List

	// The refusals since the last log line: their number, the number of
	// addresses refused, and the number of that line (clientBucket.line).
	refused, addresses int
	lastLog            time.Time
	line               uint64
}

// A clientBucket is the new topics that one client address has created.
type clientBucket struct {
	client netip.Prefix
	// full is when the address may create n topics again: each creation
	// moves it on by per/n from now at the earliest, and one that would
	// move it more than per ahead of now is refused.
	full time.Time
	// line is the number of the log line in whose count of addresses the
	// address is.
	line uint64
}

// newNewTopicLimit returns the limit of n new topics per per, nil when n is
// not positive (off).
func newNewTopicLimit(n int, per time.Duration) *newTopicLimit {
	if n <= 0 {
		return nil
	}
	return &newTopicLimit{
		n:       n,
		per:     per,
		every:   max(per/time.Duration(n), 1),
		buckets: make(map[netip.Prefix]*list.Element),
		line:    1,
	}
}

// wait returns how long from now client must wait before it may create a
// topic, 0 when it may now.
func (l *newTopicLimit) wait(now time.Time, client netip.Prefix) time.Duration {
	if l == nil {
		return 0
	}
	e := l.buckets[client]
	if e == nil {
		return 0
	}
	full := e.Value.(*clientBucket).full
	if full.Before(now) {
		full = now
	}
	return max(0, full.Add(l.every).Sub(now)-l.per)
}

// spend counts a topic that client creates now, which wait allowed.
func (l *newTopicLimit) spend(now time.Time, client netip.Prefix) {
	if l == nil {
		return
	}
	e := l.buckets[client]
	if e != nil {
		l.order.MoveToBack(e)
	} else {
		l.forgetFull(now)
		if l.order.Len() >= maxClientBuckets {
			l.forget(l.order.Front())
		}
		e = l.order.PushBack(&clientBucket{client: client})
		l.buckets[client] = e
	}
	b := e.Value.(*clientBucket)
	if b.full.Before(now) {
		b.full = now
	}
	b.full = b.full.Add(l.every)
}

// forgetFull forgets the addresses that have created no topic for longest
// while their buckets are full again.
func (l *newTopicLimit) forgetFull(now time.Time) {
	for e := l.order.Front(); e != nil && !e.Value.(*clientBucket).full.After(now); e = l.order.Front() {
		l.forget(e)
	}
}

func (l *newTopicLimit) forget(e *list.Element) {
	delete(l.buckets, e.Value.(*clientBucket).client)
	l.order.Remove(e)
}

// refuse counts a refusal of client, which has a bucket, and tells whether
// to log it: at most once per capLogEvery, with the number of refusals and
// of addresses refused since the last line, this one included.
func (l *newTopicLimit) refuse(now time.Time, client netip.Prefix) (refused, addresses int, log bool) {
	l.refused++
	if b := l.buckets[client].Value.(*clientBucket); b.line != l.line {
		b.line = l.line
		l.addresses++
	}
	if now.Sub(l.lastLog) < capLogEvery {
		return 0, 0, false
	}
	refused, addresses = l.refused, l.addresses
	l.refused, l.addresses, l.lastLog = 0, 0, now
	l.line++
	return refused, addresses, true
}

// A newTopicsError refuses a subscriber whose client address has created
// new topics faster than max_new_topics allows; it may create one after
// retryAfter.
type newTopicsError struct {
	limit      int
	per        time.Duration
	retryAfter time.Duration
}

func (e *newTopicsError) Error() string {
	return fmt.Sprintf("max_new_topics: this client address creates new topics faster than %d per %s; it may create another in %ds",
		e.limit, e.per, retryAfterSeconds(e.retryAfter))
}
