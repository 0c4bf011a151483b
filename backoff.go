package pollsse

import (
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// A schedule says how long a poller waits between polls: the interval after
// a success, and an exponential backoff with jitter after failures. Its
// methods are pure functions of their arguments and of rnd.
type schedule struct {
	interval time.Duration
	// maxBackoff is the longest wait after failures; at most interval
	// means that failures do not slow polling down.
	maxBackoff time.Duration
	// rnd returns a random number in [0, n); nil means math/rand/v2.
	rnd func(n int64) int64
}

// intervalJitter is the fraction of the interval by which each wait after a
// success is randomly lengthened or shortened, so that topics started
// together drift apart instead of polling the upstream in step.
const intervalJitter = 10

// backoffJitter is the fraction of a backoff by which each wait after a
// failure is randomly shortened, so that topics that failed together do not
// retry together.
const backoffJitter = 4

// next returns how long to wait before the next poll after failures
// consecutive failed polls (0 after a success). retryAfter is what the
// upstream's Retry-After header asked for in the last failure, 0 when none.
//
// After a success the wait is the interval, give or take a tenth. After n
// failures it is interval×2ⁿ (capped at maxBackoff), less up to a quarter
// at random, and never less than the interval; a longer Retry-After is
// honoured up to maxBackoff.
func (s schedule) next(failures int, retryAfter time.Duration) time.Duration {
	if failures == 0 {
		j := s.interval / intervalJitter
		if j <= 0 {
			return s.interval
		}
		return s.interval - j + time.Duration(s.random(int64(2*j)+1))
	}
	ceiling := max(s.maxBackoff, s.interval)
	d := s.interval
	for range failures {
		if d >= ceiling/2 {
			d = ceiling
			break
		}
		d *= 2
	}
	if j := d / backoffJitter; j > 0 {
		d -= time.Duration(s.random(int64(j) + 1))
	}
	d = max(d, s.interval)
	if retryAfter > d {
		d = min(retryAfter, ceiling)
	}
	return d
}

func (s schedule) random(n int64) int64 {
	if s.rnd != nil {
		return s.rnd(n)
	}
	return rand.Int64N(n)
}

// parseRetryAfter returns the wait that a Retry-After header value asks for
// at now, in seconds or as an HTTP date, and 0 for an absent, malformed or
// past value.
func parseRetryAfter(value string, now time.Time) time.Duration {
	value = strings.TrimSpace(value)
	if value == "" {
		return 0
	}
	if secs, err := strconv.ParseUint(value, 10, 32); err == nil {
		return time.Duration(secs) * time.Second
	}
	if at, err := http.ParseTime(value); err == nil && at.After(now) {
		return at.Sub(now)
	}
	return 0
}
