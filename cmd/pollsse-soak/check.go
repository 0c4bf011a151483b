package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// What a browser must see on every stream, checked after every event:
//
//   - its document equals the version of the upstream's document that it
//     claims (the member "v"), rebuilt from the snapshot and the patches
//     (patch.go);
//   - a patch takes it to a newer version, a snapshot never to an older
//     one, and its document is never another user's;
//   - within a stream, ids are "<epoch>-<position>" of one epoch (with a
//     "-<check>" after them on the redis store) and each
//     patch is at the position right after the last id plus the status
//     events between (which take a position each and have no id): no
//     duplicate, no gap; a snapshot restarts the stream at a later
//     position;
//   - a stream that resumes from an id of its topic continues right after
//     it, or starts with a snapshot when the id is too old (checked once
//     the positions in between are known, see ledger); one that resumes
//     from an expired, malformed or foreign id starts with a snapshot;
//   - an id carries the same event, byte for byte, on every stream and
//     every instance.

// An eventID is an id of the handler: "<epoch>-<position>" on the memory
// store; "<epoch>-<position>-<check>" of Redis's log on the redis store,
// whose instances issue "L<epoch>-<position>" of their own while Redis is
// out of reach.
type eventID struct {
	epoch string
	pos   uint64
	check string
}

func (id eventID) String() string {
	s := id.epoch + "-" + strconv.FormatUint(id.pos, 10)
	if id.check != "" {
		s += "-" + id.check
	}
	return s
}

var idPattern = regexp.MustCompile(`^([0-9a-z]+|L[0-9a-f]+)-([1-9][0-9]*)(?:-([0-9a-f]+))?$`)

// parseID parses an id of the handler.
func parseID(s string) (eventID, bool) {
	m := idPattern.FindStringSubmatch(s)
	if m == nil {
		return eventID{}, false
	}
	pos, err := strconv.ParseUint(m[2], 10, 64)
	if err != nil {
		return eventID{}, false
	}
	return eventID{m[1], pos, m[3]}, true
}

// An sseEvent is what an EventSource makes of one block of the stream.
type sseEvent struct {
	name, id, data string
	hasID          bool
	retry          string
	comment        bool
}

// A topicSpec says what a topic's documents must be.
type topicSpec struct {
	// name names the topic in reports: its path, and the user.
	name string
	// path is the stream's path on the site, query included.
	path string
	// mode is json_patch or merge_patch.
	mode string
	// header is sent with every request of the topic's streams.
	header map[string]string
	// user is the user whose document this is ("" for a shared one).
	user string
	// verify checks a client's canonical document, which claims version v.
	verify func(v int, canon []byte) error
	// main is set for the topics that keepers hold, which never stop for
	// being idle, so that the ledger can check their resumes; up is their
	// document at the upstream.
	main bool
	up   *upTopic
	// cache shares the verified documents among the topic's clients; nil
	// for a topic of one client.
	cache *verifyCache
}

// route is the letter of the route that serves the topic, the first
// segment of its path ("m" of /m/merge).
func (t *topicSpec) route() string {
	r, _, _ := strings.Cut(strings.TrimPrefix(t.path, "/"), "/")
	return r
}

// A browser is a page's state across its streams: the document, its
// version and the last id, which it resumes from.
type browser struct {
	topic *topicSpec
	// tree is the document, doc its canonical encoding and hash its hash.
	tree    any
	doc     []byte
	hash    docHash
	version int
	// instance is the Caddy instance of the stream that gave the
	// version.
	instance string
	last     string
	// lastID is last parsed, valid when hasLast.
	lastID  eventID
	hasLast bool
}

// A resume says how a stream was asked to resume.
type resume struct {
	// sent is the id sent, "" for none.
	sent string
	// id is sent parsed, when ours is the browser's own last id.
	id  eventID
	own bool
	// mustSnapshot is set for an id that cannot be resumed from: expired,
	// malformed, of another topic or from before a restart. why says which.
	mustSnapshot bool
	why          string
	// instance is where the stream goes, and run its process.
	instance string
}

// A streamCheck checks the events of one stream, in order.
type streamCheck struct {
	b      *browser
	r      resume
	l      *ledger
	retry  string
	events int
	// epoch and lastPos are those of the stream's last id; sawID tells
	// whether it had one; statuses counts the status events since then.
	epoch    string
	lastPos  uint64
	sawID    bool
	statuses int
	// snapshots counts this stream's snapshots; replayed tells whether its
	// first id-bearing event continued the id it resumed from.
	snapshots int
	replayed  bool
	// resumedAt is the position of the snapshot that answered a resume
	// from the browser's own id, until the stream's next id.
	resumedAt uint64
	// lastSnapshot tells whether the last id-bearing event was a
	// snapshot, statusFirst whether a status event came right after it,
	// and lastIDEvent counts the events up to it.
	lastSnapshot, statusFirst bool
	lastIDEvent               int
	// changed is set when the event made the document move to a new
	// version, and switched when it moved the stream to another epoch of
	// a shared store (whose document may be older).
	changed, switched bool
}

func newStreamCheck(b *browser, r resume, l *ledger, retryMS string) *streamCheck {
	return &streamCheck{b: b, r: r, l: l, retry: retryMS}
}

// errCheck marks a broken invariant, as opposed to a stream that ended.
type errCheck struct{ msg string }

func (e *errCheck) Error() string { return e.msg }

func broken(format string, args ...any) error { return &errCheck{fmt.Sprintf(format, args...)} }

func isBroken(err error) bool {
	var e *errCheck
	return errors.As(err, &e)
}

// event checks one event received at at.
func (c *streamCheck) event(ev sseEvent, at time.Time) error {
	c.changed, c.switched = false, false
	if ev.retry != "" && ev.name == "" && ev.data == "" && !ev.hasID {
		if c.retry != "" && ev.retry != c.retry {
			return broken("retry field %q, want %q", ev.retry, c.retry)
		}
		return nil
	}
	if ev.comment {
		return nil
	}
	c.events++
	switch ev.name {
	case "status":
		if ev.hasID {
			return broken("status event with an id %q", ev.id)
		}
		var st struct {
			Store    string `json:"store"`
			Upstream string `json:"upstream"`
			Topic    string `json:"topic"`
			Status   int    `json:"status"`
			Error    string `json:"error"`
			Retry    int64  `json:"retry_in_ms"`
		}
		if err := json.Unmarshal([]byte(ev.data), &st); err != nil {
			return broken("status event whose data is not JSON: %q", ev.data)
		}
		if st.Store == "down" || st.Store == "up" {
			// The redis store's own state, told by the instance
			// alone: it takes no position in Redis's log.
			if !c.l.shared || ev.data != `{"store":"`+st.Store+`"}` {
				return broken("status event %s", ev.data)
			}
			return nil
		}
		if st.Upstream != "up" && st.Upstream != "down" || len(st.Topic) != 12 || st.Upstream == "down" && (st.Error == "" || st.Retry <= 0) {
			return broken("status event %s", ev.data)
		}
		if c.statuses == 0 && c.events == c.lastIDEvent+1 {
			c.statusFirst = true
		}
		c.statuses++
		return nil
	case "snapshot", "patch", "merge":
	default:
		return broken("unexpected event %q: %q", ev.name, ev.data)
	}
	if !ev.hasID {
		return broken("%s event without an id", ev.name)
	}
	id, ok := parseID(ev.id)
	if !ok {
		return broken("%s event with id %q, not <epoch>-<position>", ev.name, ev.id)
	}
	if ev.name != "snapshot" && ev.name != map[string]string{"json_patch": "patch", "merge_patch": "merge"}[c.b.topic.mode] {
		return broken("%s event on a %s topic", ev.name, c.b.topic.mode)
	}
	if err := c.l.sameData(c.r.instance, c.b.topic.name, ev.name, id, ev.data, at); err != nil {
		return err
	}
	if err := c.position(ev.name, id, at); err != nil {
		return err
	}
	before := c.b.version
	if err := c.apply(ev, id); err != nil {
		return err
	}
	c.b.last, c.b.lastID, c.b.hasLast = ev.id, id, true
	c.changed = c.b.version != before
	c.lastIDEvent = c.events
	return nil
}

// position checks the id of an id-bearing event against the stream's
// last one, and records what it tells of the topic's log.
//
// After a patch at position p and k status events, a patch is at p+1+k
// exactly and a snapshot at p+1+k or later: the log is read in order. A
// snapshot is of the current document, and the stream goes on from the
// log's head, past status events that the snapshot makes moot, after the
// latest status event if the stream missed it (which may be an old one).
// So after a snapshot at s and k status events, the first of which may be
// that old one, the next event is at s+1+k' or later (k' = k, less that
// one), and every position in between holds a status event.
func (c *streamCheck) position(name string, id eventID, at time.Time) error {
	k, oldFirst := c.statuses, c.statusFirst && c.lastSnapshot
	defer func() {
		c.epoch, c.lastPos, c.sawID, c.statuses = id.epoch, id.pos, true, 0
		c.lastSnapshot, c.statusFirst = name == "snapshot", false
	}()
	if !c.sawID {
		// The first id of the stream.
		switch {
		case name != "snapshot":
			if c.r.mustSnapshot {
				return broken("resumed from %s (%s) and got %s %s first, not a snapshot", strconv.Quote(c.r.sent), c.r.why, name, id)
			}
			if c.r.own && c.l.shared && localEpoch(id.epoch) && !localEpoch(c.r.id.epoch) {
				// An instance that found the shared store out of reach
				// goes on from its mirror of Redis's log in an epoch
				// of its own, as its open streams do: the id sent is
				// continued by a patch of that epoch, which must take
				// the browser's document to a later version.
				c.switched = true
				return nil
			}
			if !c.r.own || c.r.id.epoch != id.epoch {
				return broken("the stream began with %s %s, which continues nothing it sent (resumed from %q)", name, id, c.r.sent)
			}
			if want := c.r.id.pos + 1 + c.statusPositions(id.epoch, k); id.pos != want {
				return broken("resumed from %s and got %s %s after %d status events: want position %d (a gap or a duplicate)", c.r.id, name, id, k, want)
			}
			c.replayed = true
			c.l.record(c.r.instance, id.epoch, c.b.topic.name, c.r.id.pos, c.r.id.pos+uint64(k), id.pos, entryPatch, at)
		case c.r.own && c.r.id.epoch == id.epoch && c.b.topic.main:
			// Whether the id was resumable is known once the stream's
			// next id tells how far the log went at most.
			c.resumedAt = id.pos
		}
		return nil
	}
	if id.epoch != c.epoch {
		// On a shared store, an instance that finds the store out of
		// reach numbers the events it polls alone in an epoch of its
		// own, which its streams go on with, and goes back to Redis's
		// log with a snapshot; Redis's log starts a new epoch, with a
		// snapshot, when its keys were lost.
		if !c.l.shared || name != "snapshot" && !localEpoch(id.epoch) {
			return broken("%s %s after %s-%d in the same stream: the epoch changed", name, id, c.epoch, c.lastPos)
		}
		c.resumedAt, c.switched = 0, true
		return nil
	}
	if c.resumedAt != 0 {
		// The log's head when the stream resumed was at most where this
		// event is, less the status events before it (one of which may
		// be an old one, sent after the snapshot).
		c.l.deferResume(c.r.instance, id.epoch, c.b.topic.name, c.r.id.pos, c.resumedAt, id.pos-uint64(k), at)
		c.resumedAt = 0
	}
	fresh := c.statusPositions(id.epoch, k)
	if oldFirst && fresh > 0 {
		fresh--
	}
	want := c.lastPos + 1 + fresh
	switch {
	case id.pos <= c.lastPos:
		return broken("%s %s after %s-%d in the same stream: a duplicate or a step back", name, id, c.epoch, c.lastPos)
	case id.pos < want:
		return broken("%s %s after %s-%d and %d status events: before position %d", name, id, c.epoch, c.lastPos, k, want)
	case !c.lastSnapshot && name != "snapshot" && id.pos != want:
		return broken("%s %s after %s-%d and %d status events: want position %d (a gap)", name, id, c.epoch, c.lastPos, k, want)
	}
	switch {
	case c.lastSnapshot && name != "snapshot":
		c.l.record(c.r.instance, id.epoch, c.b.topic.name, c.lastPos, id.pos-1, id.pos, entryPatch, at)
	case c.lastSnapshot:
		// Patches may lie between two snapshots: nothing known.
	case name == "snapshot" && id.pos == want:
		c.l.record(c.r.instance, id.epoch, c.b.topic.name, c.lastPos, c.lastPos+fresh, id.pos, entryDocument, at)
	case name != "snapshot":
		c.l.record(c.r.instance, id.epoch, c.b.topic.name, c.lastPos, c.lastPos+fresh, id.pos, entryPatch, at)
	}
	return nil
}

// otherLog tells whether id is of another log than the browser's last id on
// a shared store: one of a topic of another configuration, which another
// instance polls, and whose document may be older.
func (c *streamCheck) otherLog(id eventID) bool {
	return c.l.shared && c.b.hasLast && c.b.lastID.epoch != id.epoch
}

// localEpoch tells whether epoch is one that an instance of a shared store
// numbers its events in while the store is out of reach.
func localEpoch(epoch string) bool { return strings.HasPrefix(epoch, "L") }

// statusPositions is how many positions k status events take in a log of
// epoch: one each, but none in an instance's own epoch of a shared store,
// whose positions count its documents.
func (c *streamCheck) statusPositions(epoch string, k int) uint64 {
	if c.l.shared && localEpoch(epoch) {
		return 0
	}
	return uint64(k)
}

// apply applies an event to the browser's document and checks the result
// against the upstream's version.
func (c *streamCheck) apply(ev sseEvent, id eventID) error {
	b := c.b
	if ev.name == "snapshot" {
		c.snapshots++
	} else if b.doc == nil {
		return broken("%s %s before any snapshot", ev.name, ev.id)
	}
	res, err := b.topic.cache.do(b, ev, func() (verified, error) { return c.compute(ev) })
	if err != nil {
		return err
	}
	switch {
	case ev.name != "snapshot" && res.version <= b.version:
		return broken("%s %s took the document of %s from version %d to %d: a change must move it forward", ev.name, ev.id, b.topic.name, b.version, res.version)
	case res.version < b.version && c.instance() == b.instance && !c.switched && !c.otherLog(id):
		return broken("snapshot %s took the document of %s back from version %d to %d", ev.id, b.topic.name, b.version, res.version)
	}
	b.tree, b.doc, b.hash, b.version, b.instance = res.tree, res.canon, res.hash, res.version, c.instance()
	return nil
}

// compute applies an event to the browser's document and verifies what it
// makes.
func (c *streamCheck) compute(ev sseEvent) (verified, error) {
	b := c.b
	data, err := decode([]byte(ev.data))
	if err != nil {
		return verified{}, broken("%s %s whose data is not JSON: %v: %s", ev.name, ev.id, err, clip([]byte(ev.data)))
	}
	var tree any
	switch ev.name {
	case "snapshot":
		tree = data
	case "patch":
		if tree, err = applyPatch(b.tree, data); err != nil {
			return verified{}, broken("patch %s does not apply to the browser's document: %v\n  patch: %s\n  doc:   %s", ev.id, err, clip([]byte(ev.data)), clip(b.doc))
		}
	case "merge":
		tree = mergePatch(b.tree, data)
	}
	v, canon, err := c.verify(tree)
	if err != nil {
		if ev.name == "snapshot" {
			return verified{}, broken("after snapshot %s the browser's document of %s: %v", ev.id, b.topic.name, err)
		}
		return verified{}, broken("after %s %s the browser's document of %s: %v\n  the %s: %s\n  the document before it (version %d): %s",
			ev.name, ev.id, b.topic.name, err, ev.name, clip([]byte(ev.data)), b.version, clip(b.doc))
	}
	return verified{tree: tree, canon: canon, hash: hashOf(canon), version: v}, nil
}

// instance returns the name of the Caddy instance that the stream reads:
// instances that share no store poll the upstream each on its own, and a
// browser that hops from one to another may find an older version there.
func (c *streamCheck) instance() string {
	name, _, _ := strings.Cut(c.r.instance, "r")
	return name
}

// verify checks a document against its topic and returns its version and
// canonical form.
func (c *streamCheck) verify(tree any) (int, []byte, error) {
	canon := encode(tree)
	v, ok := versionOf(tree)
	if !ok {
		return 0, nil, fmt.Errorf("it has no version: %s", clip(canon))
	}
	if u := c.b.topic.user; u != "" {
		obj, _ := tree.(map[string]any)
		if got, _ := obj["user"].(string); got != u {
			return 0, nil, fmt.Errorf("%s sees the document of user %q: %s", u, got, clip(canon))
		}
	}
	if err := c.b.topic.verify(v, canon); err != nil {
		return 0, nil, err
	}
	return v, canon, nil
}

// Kinds of the entries of a topic's log, as clients learn them.
type entryKind uint8

const (
	entryUnknown entryKind = iota
	entryPatch
	entryStatus
	// entryDocument is a document without a patch (a change sent as a
	// snapshot), which no resume can replay past.
	entryDocument
)

// The ledger is what the clients together know of each topic log: which
// position holds a patch, a status event or a document without a patch,
// learnt from streams that read those positions in order. A resume from a
// position p that was answered by a snapshot at position s is wrong when
// every position from p+1 to s is known to be a patch or a status event
// and s-p is well within the history: the handler had every event the
// client missed. Resumes are checked a little later, once the other
// clients have told the ledger what lies in between.
type ledger struct {
	history int
	v       violations
	// shared is set when the instances share a store: the positions of
	// Redis's epochs are the same on every instance, and so is their
	// ledger. trouble, then, tells whether an instance found the store
	// out of reach between two times: the instance goes back to Redis's
	// log with a snapshot afterwards, which a resume may meet.
	shared  bool
	trouble func(from, to time.Time) bool

	mu      sync.Mutex
	logs    map[string]*logLedger
	pending []pendingResume
	// verified and inconclusive count the checked resumes.
	verified, inconclusive int
}

// A logLedger is what is known of one topic log, of one epoch on one
// instance (or on all, for an epoch of a shared store).
type logLedger struct {
	topic    string
	instance string
	kinds    map[uint64]entryKind
	// ids are the ids read at the positions that have one, and sent the
	// hash of the data that each event with an id carried.
	ids   map[uint64]string
	sent  map[sentKey]sentEvent
	max   uint64
	first time.Time
}

// A sentKey is an event with an id: its name, since a position is sent as a
// patch to some and as a snapshot to others, and its id.
type sentKey struct {
	name, id string
}

// A sentEvent is the data that an event carried the first time a stream
// read it.
type sentEvent struct {
	pos      uint64
	hash     uint64
	instance string
	// head is the start of the data, to show.
	head string
}

// maxSent bounds the events a logLedger keeps the data of: beyond it, it
// forgets those well before the newest.
const maxSent = 4096

// dataSeed hashes events' data.
var dataSeed = maphash.MakeSeed()

type pendingResume struct {
	key   string
	topic string
	// from is the position resumed from, to that of the snapshot that
	// answered, and head the most the log's head can have been then.
	from, to, head uint64
	checkAt        time.Time
}

func newLedger(history int, v violations) *ledger {
	return &ledger{history: history, v: v, logs: map[string]*logLedger{}}
}

// key returns the key of the ledger of a log of epoch read on instance: on
// a shared store, an epoch of Redis's log is the same log on every
// instance.
func (l *ledger) key(instance, epoch string) string {
	if l.shared && !localEpoch(epoch) {
		return epoch
	}
	return instance + " " + epoch
}

func (l *ledger) log(instance, epoch, topic string, at time.Time) *logLedger {
	key := l.key(instance, epoch)
	ll := l.logs[key]
	if ll == nil {
		ll = &logLedger{topic: topic, instance: instance, kinds: map[uint64]entryKind{}, ids: map[uint64]string{}, sent: map[sentKey]sentEvent{}, first: at}
		l.logs[key] = ll
	}
	return ll
}

// sameData checks that the event name with id, read on instance, carries
// the data that every other stream read with that id: on every instance,
// when the store is shared.
func (l *ledger) sameData(instance, topic, name string, id eventID, data string, at time.Time) error {
	h := maphash.String(dataSeed, data)
	l.mu.Lock()
	defer l.mu.Unlock()
	ll := l.log(instance, id.epoch, topic, at)
	k := sentKey{name, id.String()}
	if old, ok := ll.sent[k]; ok {
		if old.hash != h {
			return broken("%s %s of %s read on %s carries other data than it did on %s:\n  %s: %s\n  %s: %s",
				name, id, topic, instance, old.instance, instance, clip([]byte(data)), old.instance, old.head)
		}
		return nil
	}
	if len(ll.sent) >= maxSent {
		newest := uint64(0)
		for _, e := range ll.sent {
			newest = max(newest, e.pos)
		}
		for k, e := range ll.sent {
			if e.pos+maxSent/2 < newest {
				delete(ll.sent, k)
			}
		}
		for p := range ll.ids {
			if p+maxSent/2 < newest {
				delete(ll.ids, p)
			}
		}
	}
	ll.sent[k] = sentEvent{id.pos, h, instance, clip([]byte(data[:min(len(data), 2000)]))}
	ll.ids[id.pos] = id.String()
	return nil
}

// record notes that the positions after from up to upto hold status events
// and position to an event of kind.
func (l *ledger) record(instance, epoch, topic string, from, upto, to uint64, kind entryKind, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ll := l.log(instance, epoch, topic, at)
	for p := from + 1; p <= upto && p < to; p++ {
		ll.set(p, entryStatus, l.v)
	}
	ll.set(to, kind, l.v)
	ll.max = max(ll.max, to)
}

// set records that position p holds an entry of kind k. A snapshot at the
// position right after a stream's last id and its status events is taken
// for a document without a patch, which it is unless the stream had fallen
// behind the history at that very position: a patch read there by another
// stream wins. Any other disagreement is a broken log.
func (ll *logLedger) set(p uint64, k entryKind, v violations) {
	old := ll.kinds[p]
	switch {
	case old == entryUnknown || old == k:
		ll.kinds[p] = k
	case old == entryDocument && k == entryPatch:
		ll.kinds[p] = k
	case old == entryPatch && k == entryDocument:
	default:
		v.fail("position %d of a log of %s was read as %s by one stream and as %s by another", p, ll.topic, kindName(old), kindName(k))
	}
}

func kindName(k entryKind) string {
	return [...]string{"unknown", "a patch", "a status event", "a document without a patch"}[k]
}

// resumeCheckDelay is how long after a resume the ledger judges it, once
// the other streams have told what lies in between.
const resumeCheckDelay = 3 * time.Second

// deferResume notes that a resume from position from got a snapshot at
// position to while the log's head was at most head, to be checked once
// other streams have told what lies in between.
func (l *ledger) deferResume(instance, epoch, topic string, from, to, head uint64, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.log(instance, epoch, topic, at)
	l.pending = append(l.pending, pendingResume{key: l.key(instance, epoch), topic: topic, from: from, to: to, head: head, checkAt: at.Add(resumeCheckDelay)})
}

// checkResumes checks the resumes noted before now.
func (l *ledger) checkResumes(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	rest := l.pending[:0]
	for _, p := range l.pending {
		if now.Before(p.checkAt) {
			rest = append(rest, p)
			continue
		}
		switch verdict := l.logs[p.key].resumable(p.from, p.to, p.head, l.history); {
		case verdict == "":
			l.verified++
		case verdict == "unknown":
			l.inconclusive++
		case l.trouble != nil && l.trouble(p.checkAt.Add(-resumeCheckDelay-troubleLag), now):
			l.inconclusive++
		default:
			l.verified++
			l.v.fail("a stream of %s resumed from position %d and got a snapshot at position %d, though %s", p.topic, p.from, p.to, verdict)
		}
	}
	l.pending = rest
}

// resumable tells whether a resume from position from, answered by a
// snapshot of the document at position to while the log's head was at most
// head, should have been replayed: "" when a snapshot was due (or may have
// been), "unknown" when the positions in between are not all known, and
// why it should have been replayed otherwise. A resume is replayed when
// every entry after it has a frame (a patch or a status event, not a
// document without a patch) and the history still holds them.
func (ll *logLedger) resumable(from, to, head uint64, history int) string {
	if head < from || head-from+2 > uint64(history) {
		return ""
	}
	for p := from + 1; p <= to; p++ {
		switch ll.kinds[p] {
		case entryUnknown:
			return "unknown"
		case entryDocument:
			return ""
		}
	}
	// After to, the document the snapshot held, came status events only.
	return fmt.Sprintf("every position from %d to %d holds a patch or a status event, and the log's head was at most %d, within the history of %d", from+1, to, head, history)
}

// expiredID returns an id of topic on instance that lies beyond the
// history of its log, if the ledger knows one.
func (l *ledger) expiredID(instance, topic string) (string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var best *logLedger
	for _, ll := range l.logs {
		if ll.topic == topic && (ll.instance == instance || l.shared) && (best == nil || ll.first.After(best.first)) {
			best = ll
		}
	}
	if best == nil || best.max < uint64(l.history)+16 {
		return "", false
	}
	for p := uint64(1); p+uint64(l.history)+12 <= best.max; p++ {
		if id, ok := best.ids[p]; ok {
			return id, true
		}
	}
	return "", false
}

// foreignID returns an id of a log of another topic than topic, or of
// another instance or process.
func (l *ledger) foreignID(instance, topic string, pick func(n int) int) (string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var ids []string
	for _, ll := range l.logs {
		// On a shared store, the topic's log is the same on every
		// instance.
		if ll.topic == topic && (ll.instance == instance || l.shared) || ll.max == 0 {
			continue
		}
		for _, id := range ll.ids {
			ids = append(ids, id)
			break
		}
		if len(ids) > 64 {
			break
		}
	}
	if len(ids) == 0 {
		return "", false
	}
	return ids[pick(len(ids))], true
}

// counts returns how many resumes were checked and how many could not be.
func (l *ledger) counts() (verified, inconclusive int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.verified, l.inconclusive
}

// malformedIDs are ids that no handler issues, made from a real one.
func malformedIDs(real eventID) []string {
	e, p := real.epoch, strconv.FormatUint(real.pos, 10)
	return []string{
		"", "-", "abc", e, e + "-", "-" + p, e + "-0", e + "-0" + p, e + "-+" + p, e + "--" + p,
		e + "-" + p + " ", " " + e + "-" + p, e + "-" + p + "x", strings.ToUpper(e) + "-" + p,
		e + "-18446744073709551616", e + "-99999999999999999999999", e + "-" + p + "-" + p,
		e + "-" + p + strings.Repeat("0", 70), strings.Repeat("z", 80), e + "-" + p + "\u00e9", "\u00e9" + e + "-" + p,
		e + "-" + p + ";" + p, e + ":" + p, e + "_" + p, "0x" + e + "-" + p,
	}
}
