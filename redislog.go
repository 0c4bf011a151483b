package pollsse

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// A topic's keys in Redis, all under one hash tag so that a Redis Cluster
// keeps them in one slot, where one script can write them together:
//
//	<prefix>{<topic id>}:m  hash: epoch, head (the last position), hc (the
//	                        check of the entry at head), doc and docid (the
//	                        current document's snapshot data and id), down
//	                        (the upstream's down status, "" while it is up)
//	<prefix>{<topic id>}:s  stream of the last `history` entries, entry id
//	                        "<position>-1", fields k (kind), i (event id),
//	                        c (check) and d (data)
//	<prefix>{<topic id>}:l  the lease: the token of the instance that polls
//	<prefix>{<topic id>}:n  the channel on which each new position is
//	                        published
//
// The topic id is the keyed hash of the topic's key (hub.topicID): neither
// the upstream URL nor a forwarded header's value is in Redis.
type redisKeys struct {
	meta, stream, lease, channel string
}

func newRedisKeys(prefix, id string) redisKeys {
	tag := prefix + "{" + id + "}:"
	return redisKeys{meta: tag + "m", stream: tag + "s", lease: tag + "l", channel: tag + "n"}
}

// redisTopicTTL is how long a topic's keys outlive the last write or lease
// renewal of any instance: a browser that comes back within it resumes by
// id, and an abandoned topic leaves nothing behind after it.
const redisTopicTTL = 10 * time.Minute

// Kinds of stream entries.
const (
	entryDocument = "d" // a document without a patch: read as a snapshot
	entrySnapshot = "s" // a change sent as a snapshot
	entryPatch    = "p"
	entryMerge    = "m"
	entryUp       = "t" // a status event, the upstream not failing
	entryDown     = "T" // a status event of a failing upstream
)

// appendScript appends one entry to a topic, fenced by the lease: an
// instance whose lease is no longer current (it was paused past it, and
// another took over) writes nothing. A topic whose keys are gone starts a
// new epoch. A document whose writer diffed it against another document
// than the current one is recorded without its patch, so that subscribers
// read its snapshot.
//
// KEYS: meta, stream, lease. ARGV: token, new epoch, kind, data, snapshot
// (documents) or down data (status), base document id, check, max length,
// TTL in ms, channel. It returns {0} when fenced off, else {1, epoch,
// position, event id, kind}.
var appendScript = redis.NewScript(`
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return {0} end
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[2]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'head', 0)
end
local pos = redis.call('HINCRBY', KEYS[1], 'head', 1)
local kind, data, id = ARGV[3], ARGV[4], ''
if kind == 't' or kind == 'T' then
  redis.call('HSET', KEYS[1], 'down', ARGV[5])
else
  id = epoch .. '-' .. pos .. '-' .. ARGV[7]
  if (redis.call('HGET', KEYS[1], 'docid') or '') ~= ARGV[6] then kind = 'd' end
  redis.call('HSET', KEYS[1], 'doc', ARGV[5], 'docid', id)
  if kind == 'd' or kind == 's' then data = '' end
end
redis.call('HSET', KEYS[1], 'hc', ARGV[7])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[8], pos .. '-1', 'k', kind, 'i', id, 'c', ARGV[7], 'd', data)
redis.call('PEXPIRE', KEYS[1], ARGV[9])
redis.call('PEXPIRE', KEYS[2], ARGV[9])
redis.call('PUBLISH', ARGV[10], pos)
return {1, epoch, pos, id, kind}
`)

// readScript reads a topic at once: its state, and its entries from the
// reader's position on, the entry at that position included without its
// data; all of them, and the document, when the reader has none (position
// 0) or another epoch. The document, which may be large, is read only when
// there is an entry after the position. KEYS: meta, stream. ARGV: the
// reader's position and epoch. It returns {false} for a topic without
// keys, else {epoch, head, hc, docid, doc, down, entries}.
var readScript = redis.NewScript(`
local m = redis.call('HMGET', KEYS[1], 'epoch', 'head', 'hc', 'docid', 'down')
if not m[1] then return {false} end
local head, from = m[2] or '0', '-'
if tonumber(ARGV[1]) > 0 and m[1] == ARGV[2] then from = ARGV[1] .. '-1' end
local entries = redis.call('XRANGE', KEYS[2], from, '+')
if from ~= '-' and #entries > 0 and entries[1][1] == from then
  -- The entry that the reader has: only its check is wanted.
  local f, keep = entries[1][2], {}
  for i = 1, #f, 2 do
    if f[i] ~= 'd' then keep[#keep + 1] = f[i]; keep[#keep + 1] = f[i + 1] end
  end
  entries[1][2] = keep
end
local doc = ''
if from == '-' or #entries ~= 1 or head ~= ARGV[1] then
  doc = redis.call('HGET', KEYS[1], 'doc') or ''
end
return {m[1], head, m[3] or '', m[4] or '', doc, m[5] or '', entries}
`)

// acquireScript takes a topic's lease that no instance holds (SET NX PX
// with the caller's token), or renews one that is still the caller's, as
// after a failed renewal. KEYS: lease. ARGV: token, lease in ms. It
// returns 1 when the caller holds the lease.
var acquireScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if v then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
return 1
`)

// renewScript renews a lease that is still the caller's, and the TTL of
// the topic's keys. KEYS: lease, meta, stream. ARGV: token, lease in ms,
// TTL in ms.
var renewScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('PEXPIRE', KEYS[3], ARGV[3])
return 1
`)

// releaseScript gives up a lease that is still the caller's. KEYS: lease.
// ARGV: token.
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// Status events of the store, sent once per outage to each open stream.
var (
	storeDownData = []byte(`{"store":"down"}`)
	storeUpData   = []byte(`{"store":"up"}`)
)

// resumeWait bounds how long a resume waits for an event that another
// instance has already sent and this one has not yet read.
const resumeWait = time.Second

// A redisLog is the log of one topic on one instance, in a store shared
// through Redis. Its read side is a localLog that mirrors the topic's
// stream in Redis: the events and their ids come from Redis, read once per
// instance whenever the topic's channel tells of a new one, so that each
// subscriber reads from memory. Its write side is the topic's lease and
// the fenced append script.
//
// While Redis cannot be reached, the instance polls the topic on its own
// and numbers its events in an epoch of its own, valid on this instance
// alone; once Redis answers again, the mirror goes back to Redis's log, and
// its subscribers read a snapshot of Redis's document.
type redisLog struct {
	*localLog
	conn    *redisConn
	keys    redisKeys
	lease   time.Duration
	history int
	topicID string
	logger  *zap.Logger
	// token identifies this log's lease.
	token string
	// localEpoch is the epoch of the ids issued while Redis is down.
	localEpoch string

	kicks     chan struct{}
	quit      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	// loaded is closed once the mirror has first asked Redis for the
	// topic, so that a resume on a topic new to this instance finds the
	// ids of the others.
	loaded chan struct{}

	// Guarded by localLog.mu: what the mirror holds of Redis's log.
	// epoch is the epoch read, pos the position of the last entry read
	// and check its check; diverged is set once the mirror holds an event
	// that is not Redis's (Redis was down).
	epoch    string
	pos      uint64
	check    string
	diverged bool
	// storeDown is set while the subscribers have been told that the
	// store is down; localN counts the ids issued meanwhile.
	storeDown bool
	localN    uint64

	// leaseMu guards the poller's side: whether this instance holds the
	// topic's lease, or polls it alone while Redis is down (local), the
	// term of its polling, and the id of the document that its next
	// write is diffed against.
	leaseMu sync.Mutex
	holding bool
	local   bool
	term    uint64
	baseID  string
}

func newRedisLog(conn *redisConn, t topicRef, lease time.Duration) *redisLog {
	l := &redisLog{
		localLog:   newLocalLog(t.history),
		conn:       conn,
		keys:       newRedisKeys(conn.prefix, t.id),
		lease:      lease,
		history:    max(t.history, 1),
		topicID:    t.id,
		logger:     t.logger,
		token:      randomHex(12),
		localEpoch: "L" + randomHex(5),
		kicks:      make(chan struct{}, 1),
		quit:       make(chan struct{}),
		done:       make(chan struct{}),
		loaded:     make(chan struct{}),
	}
	go l.run()
	return l
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// newEpoch returns the epoch of a topic whose keys are made anew: random,
// so that the ids of a topic whose keys were lost are never taken for
// those of its new events.
func newEpoch() string { return randomHex(4) }

// kick makes the mirror read the topic's log from Redis.
func (l *redisLog) kick() {
	select {
	case l.kicks <- struct{}{}:
	default:
	}
}

// run keeps the mirror and the lease: it reads the log when kicked (a
// notice, a resubscription, a resume ahead of the mirror) and at each
// renewal of the lease, a third of the lease apart, which also finds out a
// lost notice or a store that answers again.
func (l *redisLog) run() {
	defer close(l.done)
	l.conn.listen(l)
	tick := time.NewTicker(l.lease / 3)
	defer tick.Stop()
	l.sync()
	close(l.loaded)
	for {
		select {
		case <-l.quit:
			return
		case <-l.kicks:
			l.sync()
		case <-tick.C:
			l.renew()
			l.sync()
		}
	}
}

// call returns a context for one call to Redis, bounded by half a lease.
func (l *redisLog) call(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, l.lease/2)
}

// unreachable tells whether err is a failure of the store: anything but an
// answer. Redis that refuses the credentials, is out of memory or is
// loading its data is as good as down: the instances poll on by
// themselves until it answers.
func unreachable(err error) bool {
	return err != nil && !errors.Is(err, redis.Nil)
}

// storeFailed records that Redis failed to answer: the subscribers are told
// once, and the instance polls the topic on its own from its next lead.
func (l *redisLog) storeFailed(err error) {
	storeMetrics.errors.Inc()
	l.mu.Lock()
	if !l.storeDown {
		l.storeDown = true
		storeMetrics.down.Inc()
		l.pushNotice(storeDownData)
		l.logger.Warn("store unavailable; polling the topic on this instance alone", zap.Error(err))
	}
	l.mu.Unlock()
	l.leaseMu.Lock()
	if !l.local {
		if l.holding {
			storeMetrics.held.Dec()
		}
		l.local, l.holding = true, false
		l.term++
	}
	l.leaseMu.Unlock()
}

// storeAnswered records that Redis answered. l.mu must be held.
func (l *redisLog) storeAnswered() {
	if !l.storeDown {
		return
	}
	l.storeDown = false
	storeMetrics.down.Dec()
	l.pushNotice(storeUpData)
	l.logger.Info("store available again")
}

// pushNotice appends a status event of the store, which leaves the
// upstream's state as it is. l.mu must be held.
func (l *redisLog) pushNotice(data []byte) {
	f := newFrame(kindStatus, "", data)
	l.status, l.statusPos = f, l.push(entry{frame: f})
	l.notice, l.noticePos = frame{}, 0
	if l.storeDown {
		l.notice, l.noticePos = f, l.statusPos
	}
}

func (l *redisLog) lead(ctx context.Context) (uint64, time.Duration) {
	l.leaseMu.Lock()
	defer l.leaseMu.Unlock()
	if l.holding {
		return l.term, 0
	}
	ctx, cancel := l.call(ctx)
	defer cancel()
	n, err := acquireScript.Run(ctx, l.conn.client, []string{l.keys.lease}, l.token, l.lease.Milliseconds()).Int()
	if err != nil && ctx.Err() == context.Canceled {
		// The topic stops.
		return 0, l.lease / 5
	}
	if unreachable(err) {
		l.leaseMu.Unlock()
		l.storeFailed(err)
		l.leaseMu.Lock()
		return l.term, 0
	}
	wasLocal := l.local
	l.local = false
	if wasLocal {
		l.kick()
	}
	if n != 1 {
		return 0, l.lease / 5
	}
	l.holding = true
	l.term++
	storeMetrics.held.Inc()
	storeMetrics.taken.Inc()
	l.conn.keepSecret(ctx)
	l.logger.Info("lease taken: this instance polls the topic", zap.Duration("lease", l.lease))
	return l.term, 0
}

// lost gives up a lease that is no longer this instance's, and logs why.
// l.leaseMu must be held.
func (l *redisLog) lost(why string) {
	if l.holding {
		l.holding = false
		storeMetrics.held.Dec()
		storeMetrics.lost.Inc()
		l.logger.Info("lease lost: another instance polls the topic", zap.String("reason", why))
	}
}

// renew renews the lease while this instance holds it; one that is no
// longer its own is given up, and a Redis that does not answer makes the
// instance poll on alone.
func (l *redisLog) renew() {
	l.leaseMu.Lock()
	holding := l.holding
	l.leaseMu.Unlock()
	if !holding {
		return
	}
	ctx, cancel := l.call(context.Background())
	defer cancel()
	n, err := renewScript.Run(ctx, l.conn.client, []string{l.keys.lease, l.keys.meta, l.keys.stream},
		l.token, l.lease.Milliseconds(), redisTopicTTL.Milliseconds()).Int()
	if unreachable(err) {
		l.storeFailed(err)
		return
	}
	if n != 1 {
		l.leaseMu.Lock()
		l.lost("the lease was not renewed in time")
		l.leaseMu.Unlock()
	}
}

func (l *redisLog) current(ctx context.Context) ([]byte, bool, error) {
	l.leaseMu.Lock()
	local := l.local
	l.leaseMu.Unlock()
	if local {
		snap, down := l.currentSnapshot()
		l.leaseMu.Lock()
		l.baseID = ""
		l.leaseMu.Unlock()
		return snap, down, nil
	}
	ctx, cancel := l.call(ctx)
	defer cancel()
	v, err := l.conn.client.HMGet(ctx, l.keys.meta, "docid", "doc", "down").Result()
	if err != nil {
		if unreachable(err) && ctx.Err() != context.Canceled {
			l.storeFailed(err)
		}
		return nil, false, err
	}
	docID, _ := v[0].(string)
	doc, _ := v[1].(string)
	down, _ := v[2].(string)
	l.leaseMu.Lock()
	l.baseID = docID
	l.leaseMu.Unlock()
	if docID == "" {
		return nil, down != "", nil
	}
	return []byte(doc), down != "", nil
}

// entryKind returns the kind of the stream entry of an event.
func entryKind(event string) string {
	switch event {
	case "":
		return entryDocument
	case eventSnapshot:
		return entrySnapshot
	case eventMerge:
		return entryMerge
	}
	return entryPatch
}

// entryEvent returns the event of a stream entry's kind, "" for a document
// read as a snapshot.
func entryEvent(kind string) string {
	switch kind {
	case entryPatch:
		return eventPatch
	case entryMerge:
		return eventMerge
	}
	return ""
}

func (l *redisLog) appendEvent(ctx context.Context, snapshot []byte, event string, data []byte) error {
	return l.write(ctx, entryKind(event), data, snapshot)
}

func (l *redisLog) setStatus(ctx context.Context, data []byte, down bool) error {
	kind, downData := entryUp, []byte(nil)
	if down {
		kind, downData = entryDown, data
	}
	return l.write(ctx, kind, data, downData)
}

// write appends one entry through the fenced script, or to the mirror
// alone while Redis is down; extra is a document's snapshot, or the data
// of a down status.
func (l *redisLog) write(ctx context.Context, kind string, data, extra []byte) error {
	l.leaseMu.Lock()
	local, holding, base := l.local, l.holding, l.baseID
	l.leaseMu.Unlock()
	if local {
		l.writeLocal(kind, data, extra)
		return nil
	}
	if !holding {
		return errNotPolling
	}
	check := randomHex(3)
	ctx, cancel := l.call(ctx)
	defer cancel()
	res, err := appendScript.Run(ctx, l.conn.client, []string{l.keys.meta, l.keys.stream, l.keys.lease},
		l.token, newEpoch(), kind, data, extra, base, check, l.history, redisTopicTTL.Milliseconds(), l.keys.channel).Slice()
	if err != nil {
		if !unreachable(err) || ctx.Err() == context.Canceled {
			return err
		}
		// Whether or not Redis recorded it, this instance's subscribers
		// read it now; they read Redis's document once it answers again.
		l.storeFailed(err)
		l.writeLocal(kind, data, extra)
		return nil
	}
	if n, _ := res[0].(int64); n != 1 {
		l.leaseMu.Lock()
		l.lost("the store refused a write under a lease that had ended")
		l.leaseMu.Unlock()
		return errNotPolling
	}
	epoch, _ := res[1].(string)
	pos, _ := res[2].(int64)
	id, _ := res[3].(string)
	kind, _ = res[4].(string)
	if id != "" {
		l.leaseMu.Lock()
		l.baseID = id
		l.leaseMu.Unlock()
	}
	// This instance's subscribers read the entry now, unless the mirror is
	// not at the position before it: it then reads it from Redis.
	l.mu.Lock()
	defer l.mu.Unlock()
	l.storeAnswered()
	if l.diverged || l.epoch != epoch || l.pos+1 != uint64(pos) {
		l.kick()
		return nil
	}
	l.apply(kind, id, data, extra)
	l.pos, l.check = uint64(pos), check
	return nil
}

// apply appends an entry of Redis's log to the mirror; snapshot is its
// document's, if it is a document. l.mu must be held.
func (l *redisLog) apply(kind, id string, data, snapshot []byte) {
	switch kind {
	case entryUp:
		l.pushStatus(data, false)
	case entryDown:
		l.pushStatus(data, true)
	default:
		l.pushDocument(id, snapshot, entryEvent(kind), data)
	}
}

// writeLocal appends an entry to the mirror alone, with an id of the local
// epoch.
func (l *redisLog) writeLocal(kind string, data, extra []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.diverged = true
	switch kind {
	case entryUp, entryDown:
		l.pushStatus(data, kind == entryDown)
	default:
		l.localN++
		l.pushDocument(l.localEpoch+"-"+strconv.FormatUint(l.localN, 10), extra, entryEvent(kind), data)
	}
}

// A streamEntry is one entry of a topic's stream, as readScript returns it.
// An entry without data (hasData unset) is the one at the reader's
// position, which readScript strips.
type streamEntry struct {
	hasData         bool
	pos             uint64
	kind, id, check string
	data            []byte
}

func parseEntries(v any) []streamEntry {
	list, _ := v.([]any)
	entries := make([]streamEntry, 0, len(list))
	for _, item := range list {
		pair, _ := item.([]any)
		if len(pair) != 2 {
			continue
		}
		sid, _ := pair[0].(string)
		p, _, _ := strings.Cut(sid, "-")
		pos, _ := strconv.ParseUint(p, 10, 64)
		e := streamEntry{pos: pos}
		fields, _ := pair[1].([]any)
		for i := 0; i+1 < len(fields); i += 2 {
			name, _ := fields[i].(string)
			value, _ := fields[i+1].(string)
			switch name {
			case "k":
				e.kind = value
			case "i":
				e.id = value
			case "c":
				e.check = value
			case "d":
				e.data, e.hasData = []byte(value), true
			}
		}
		entries = append(entries, e)
	}
	return entries
}

// sync reads what Redis holds of the topic after the mirror's position and
// appends it to the mirror. A mirror that Redis's log no longer continues
// (its keys were lost, a failover lost entries, the history moved past it,
// or it holds events of its own from an outage) is loaded anew: its
// subscribers read a snapshot of Redis's document, and ids of Redis's
// history resume on it.
func (l *redisLog) sync() {
	l.mu.RLock()
	from, epoch := l.pos, l.epoch
	if l.diverged || l.epoch == "" {
		from = 0
	}
	l.mu.RUnlock()
	ctx, cancel := l.call(context.Background())
	defer cancel()
	res, err := readScript.Run(ctx, l.conn.client, []string{l.keys.meta, l.keys.stream}, from, epoch).Slice()
	if err != nil {
		if unreachable(err) {
			l.storeFailed(err)
		} else {
			l.logger.Warn("reading the topic from the store failed", zap.Error(err))
		}
		return
	}
	l.leaseMu.Lock()
	local := l.local
	l.leaseMu.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	if local {
		// The poller has not yet asked for the lease again: until it
		// has, it writes to the mirror alone.
		return
	}
	l.storeAnswered()
	if epoch, _ = res[0].(string); epoch == "" || len(res) < 7 {
		// The topic has no keys (yet, or any more): its first document
		// starts an epoch.
		return
	}
	if l.pos != from && !(from == 0 && (l.diverged || l.epoch == "")) {
		// The mirror moved on meanwhile (its poller's own write).
		l.kick()
		return
	}
	head, _ := strconv.ParseUint(res[1].(string), 10, 64)
	hc, _ := res[2].(string)
	docID, _ := res[3].(string)
	doc, _ := res[4].(string)
	down, _ := res[5].(string)
	entries := parseEntries(res[6])
	continues := from > 0 && epoch == l.epoch && !l.diverged &&
		len(entries) > 0 && entries[0].pos == from && entries[0].check == l.check
	if !continues {
		l.reload(epoch, head, hc, docID, []byte(doc), down, entries)
		return
	}
	before := l.snap
	for _, e := range entries[1:] {
		l.apply(e.kind, e.id, e.data, nil)
	}
	if l.snap != before {
		// The batch's documents: the last is Redis's current one, whose
		// snapshot the script read with them. No subscriber has seen
		// the new snapshot frames yet.
		if l.snap.id != docID {
			l.reload(epoch, head, hc, docID, []byte(doc), down, entries)
			return
		}
		l.snap.data = []byte(doc)
	}
	l.pos, l.check = head, hc
}

// reload loads the mirror anew from Redis's log: a document without a
// patch, which sends the subscribers that have read anything a snapshot,
// then the entries of Redis's history, for the ids of other instances to
// resume on, then the current document and the upstream's state. l.mu
// must be held.
func (l *redisLog) reload(epoch string, head uint64, hc, docID string, doc []byte, down string, entries []streamEntry) {
	if l.head > 0 {
		l.push(entry{})
	}
	before := l.snap
	for _, e := range entries {
		switch {
		case e.hasData:
			l.apply(e.kind, e.id, e.data, nil)
		case e.kind != entryUp && e.kind != entryDown:
			// Its patch was not read: the subscribers that reach
			// it read a snapshot.
			l.apply(entryDocument, e.id, nil, nil)
		}
	}
	switch {
	case docID == "":
		l.snap = nil
	case l.snap != before && l.snap.id == docID:
		// A new frame, which no subscriber has seen yet.
		l.snap.data = doc
	case l.snap == nil || l.snap.id != docID:
		l.pushDocument(docID, doc, "", nil)
	}
	if (down != "") != (l.down.bytes != nil) {
		if down != "" {
			l.pushStatus([]byte(down), true)
		} else {
			l.pushStatus(upstreamUpData(l.topicID), false)
		}
	}
	l.epoch, l.pos, l.check, l.diverged = epoch, head, hc, false
}

// upstreamUpData is the data of the status event of an upstream that
// recovered.
func upstreamUpData(topicID string) []byte {
	return []byte(`{"upstream":"up","topic":"` + topicID + `"}`)
}

func (l *redisLog) resume(lastEventID string) cursor {
	if lastEventID == "" || len(lastEventID) > maxIDLength {
		return 0
	}
	timeout := time.NewTimer(resumeWait)
	defer timeout.Stop()
	select {
	case <-l.loaded:
	case <-timeout.C:
		return 0
	}
	l.mu.RLock()
	c, epoch, pos := l.find(lastEventID), l.epoch, l.pos
	l.mu.RUnlock()
	if c != 0 {
		return c
	}
	// An id of Redis's epoch past the mirror's position is an event that
	// another instance has read and this one has not yet: wait for it.
	e, p, ok := parseRedisID(lastEventID)
	if !ok || e != epoch || p <= pos {
		return 0
	}
	l.kick()
	for {
		wake := l.changed()
		l.mu.RLock()
		c, pos = l.find(lastEventID), l.pos
		l.mu.RUnlock()
		if c != 0 || pos >= p {
			return c
		}
		select {
		case <-wake:
		case <-timeout.C:
			return 0
		}
	}
}

// parseRedisID returns the epoch and position of an id of Redis's log,
// "<epoch>-<position>-<check>".
func parseRedisID(id string) (epoch string, pos uint64, ok bool) {
	epoch, rest, ok := strings.Cut(id, "-")
	if !ok {
		return "", 0, false
	}
	p, _, ok := strings.Cut(rest, "-")
	if !ok {
		return "", 0, false
	}
	pos, err := strconv.ParseUint(p, 10, 64)
	return epoch, pos, err == nil
}

// Close stops the mirror, unsubscribes from the topic's channel, and gives
// up the lease if this instance holds it, so that another takes over at
// once.
func (l *redisLog) Close() error {
	l.closeOnce.Do(func() {
		close(l.quit)
		<-l.done
		l.conn.forget(l)
		l.leaseMu.Lock()
		holding := l.holding
		if holding {
			storeMetrics.held.Dec()
		}
		l.holding = false
		l.leaseMu.Unlock()
		l.mu.Lock()
		if l.storeDown {
			l.storeDown = false
			storeMetrics.down.Dec()
		}
		l.mu.Unlock()
		if holding {
			ctx, cancel := l.call(context.Background())
			defer cancel()
			releaseScript.Run(ctx, l.conn.client, []string{l.keys.lease}, l.token)
		}
	})
	return nil
}

var _ eventLog = (*redisLog)(nil)
