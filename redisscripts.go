package pollsse

import (
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// A topic's keys in Redis, all under one hash tag so that a Redis Cluster
// keeps them in one slot, where one script can write them together:
//
//	<prefix>{<topic id>}:m  hash: epoch, head (the last position), hc (the
//	                        check of the entry at head), doc and docid (the
//	                        current document's snapshot data and id), down
//	                        (the upstream's down status, "" while it is up),
//	                        denied (the 401 or 403 of an upstream that
//	                        refuses the topic's credentials, absent else)
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

// refuseScript records in a topic's meta whether the upstream refuses the
// topic's credentials, fenced by the lease as appendScript is, and tells
// the other instances on the topic's channel. KEYS: meta, lease. ARGV:
// token, the refusal's status ("" for none), TTL in ms, channel. It returns
// 0 when fenced off, else 1.
var refuseScript = redis.NewScript(`
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], 'denied')
else
  redis.call('HSET', KEYS[1], 'denied', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
redis.call('PUBLISH', ARGV[4], 'denied')
return 1
`)

// readScript reads a topic at once: its state, and its entries from the
// reader's position on, the entry at that position included without its
// data; all of them, and the document, when the reader has none (position
// 0) or another epoch. The document, which may be large, is read only when
// there is an entry after the position or the entry there is not the
// reader's (another check: a failover lost it and the position was written
// again). denied is the refusal that the topic's poller recorded
// (refuseScript), while an instance holds the lease to vouch for it, else
// "". KEYS: meta, stream, lease. ARGV: the reader's position, epoch and the
// check of its entry at that position. It returns {false, denied} for a
// topic without a document or event yet, else {epoch, head, hc, docid, doc,
// down, entries, denied}.
var readScript = redis.NewScript(`
local m = redis.call('HMGET', KEYS[1], 'epoch', 'head', 'hc', 'docid', 'down', 'denied')
local denied = ''
if m[6] and redis.call('EXISTS', KEYS[3]) == 1 then denied = m[6] end
if not m[1] then return {false, denied} end
local head, from = m[2] or '0', '-'
if tonumber(ARGV[1]) > 0 and m[1] == ARGV[2] then from = ARGV[1] .. '-1' end
local entries = redis.call('XRANGE', KEYS[2], from, '+')
local check
if from ~= '-' and #entries > 0 and entries[1][1] == from then
  -- The entry that the reader has: only its check is wanted.
  local f, keep = entries[1][2], {}
  for i = 1, #f, 2 do
    if f[i] == 'c' then check = f[i + 1] end
    if f[i] ~= 'd' then keep[#keep + 1] = f[i]; keep[#keep + 1] = f[i + 1] end
  end
  entries[1][2] = keep
end
local doc = ''
if from == '-' or #entries ~= 1 or head ~= ARGV[1] or check ~= ARGV[3] then
  doc = redis.call('HGET', KEYS[1], 'doc') or ''
end
return {m[1], head, m[3] or '', m[4] or '', doc, m[5] or '', entries, denied}
`)

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
