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
