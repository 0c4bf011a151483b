package pollsse

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// acquireScript takes a topic's lease that no instance holds (SET NX PX
// with the caller's token), or renews one that is still the caller's, as
// after a failed renewal. KEYS: lease. ARGV: token, lease in ms. It
// returns {1} when the caller holds the lease, else {0, the milliseconds
// until the holder's lease runs out}.
var acquireScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1}
end
if v then return {0, redis.call('PTTL', KEYS[1])} end
redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
return {1}
`)

// leaseAsk is how long after the holder's lease runs out a follower asks
// for it: a moment, for the timer's lateness to be on the right side.
const leaseAsk = 2 * time.Millisecond

// recheck returns how long a follower waits before it asks for the lease
// again, when the holder's lease runs out in ttl: no later than that, so
// that the topic goes unpolled for no longer than a lease after its poller
// died, and at least five times a lease, for one that is given up before.
// A ttl below 0 is a lease key without an expiry (or none), which only
// another program can have written: asked for again as often as ever.
func (l *redisLog) recheck(ttl time.Duration) time.Duration {
	if ttl < 0 {
		return l.lease / 5
	}
	return max(min(ttl+leaseAsk, l.lease/5), leaseAsk)
}

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

func (l *redisLog) lead(ctx context.Context) (uint64, time.Duration) {
	l.leaseMu.Lock()
	defer l.leaseMu.Unlock()
	if l.holding {
		return l.term, 0
	}
	ctx, cancel := l.call(ctx)
	defer cancel()
	res, err := acquireScript.Run(ctx, l.conn.client, []string{l.keys.lease}, l.token, l.lease.Milliseconds()).Int64Slice()
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
	if len(res) == 0 || res[0] != 1 {
		ttl := time.Duration(-1)
		if len(res) == 2 {
			ttl = time.Duration(res[1]) * time.Millisecond
		}
		return 0, l.recheck(ttl)
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
