package pollsse

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

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
	// state is the topic's upstreamState, which the mirror keeps as Redis
	// tells it while another instance polls the topic; nil in tests of the
	// log alone.
	state *upstreamState
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
		state:      t.state,
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
		return l.fencedOff()
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

// sync reads what Redis holds of the topic after the mirror's position and
// appends it to the mirror. A mirror that Redis's log no longer continues
// (its keys were lost, a failover lost entries, the history moved past it,
// or it holds events of its own from an outage) is loaded anew: its
// subscribers read a snapshot of Redis's document, and ids of Redis's
// history resume on it.
func (l *redisLog) sync() {
	l.mu.RLock()
	from, epoch, check := l.pos, l.epoch, l.check
	if l.diverged || l.epoch == "" {
		from = 0
	}
	l.mu.RUnlock()
	ctx, cancel := l.call(context.Background())
	defer cancel()
	res, err := readScript.Run(ctx, l.conn.client, []string{l.keys.meta, l.keys.stream, l.keys.lease}, from, epoch, check).Slice()
	if err != nil {
		if unreachable(err) {
			l.storeFailed(err)
		} else {
			l.logger.Warn("reading the topic from the store failed", zap.Error(err))
		}
		return
	}
	l.leaseMu.Lock()
	local, holding := l.local, l.holding
	l.leaseMu.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	if local {
		// The poller has not yet asked for the lease again: until it
		// has, it writes to the mirror alone.
		return
	}
	l.storeAnswered()
	if !holding && len(res) > 0 {
		defer l.keepState(res[len(res)-1])
	}
	if epoch, _ = res[0].(string); epoch == "" || len(res) < 8 {
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

// keepState keeps the topic's upstreamState as the instance that polls the
// topic tells it: denied is the refusal that Redis holds ("" for none), and
// the topic has its first document once the mirror has one. l.mu must be
// held.
func (l *redisLog) keepState(denied any) {
	if l.state == nil {
		return
	}
	if l.snap != nil {
		l.state.setDocumented()
	}
	status, _ := denied.(string)
	n, _ := strconv.Atoi(status)
	l.state.setDenied(n)
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

func (l *redisLog) refused(ctx context.Context, status int) error {
	l.leaseMu.Lock()
	local, holding := l.local, l.holding
	l.leaseMu.Unlock()
	if local {
		// Redis is out of reach: the others poll the topic by themselves.
		return nil
	}
	if !holding {
		return errNotPolling
	}
	value := ""
	if status != 0 {
		value = strconv.Itoa(status)
	}
	ctx, cancel := l.call(ctx)
	defer cancel()
	n, err := refuseScript.Run(ctx, l.conn.client, []string{l.keys.meta, l.keys.lease},
		l.token, value, redisTopicTTL.Milliseconds(), l.keys.channel).Int()
	switch {
	case err != nil && unreachable(err) && ctx.Err() != context.Canceled:
		l.storeFailed(err)
		return nil
	case err != nil:
		return err
	case n != 1:
		return l.fencedOff()
	}
	return nil
}

// fencedOff gives up the lease after the store refused a write under it,
// another instance having taken the topic over, and returns errNotPolling.
func (l *redisLog) fencedOff() error {
	l.leaseMu.Lock()
	defer l.leaseMu.Unlock()
	l.lost("the store refused a write under a lease that had ended")
	return errNotPolling
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
