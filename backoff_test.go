package pollsse

import (
	"fmt"
	"net/http"
	"os"
	"testing"
	"time"
)

// Random sources for the schedule: no jitter, and the most jitter.
var (
	rndLow  = func(int64) int64 { return 0 }
	rndHigh = func(n int64) int64 { return n - 1 }
)

func TestScheduleNext(t *testing.T) {
	const s, m = time.Second, time.Minute
	tests := []struct {
		name       string
		sched      schedule
		failures   int
		retryAfter time.Duration
		want       time.Duration
	}{
		{"after a success, the interval less a tenth at least", schedule{s, m, rndLow}, 0, 0, 900 * time.Millisecond},
		{"after a success, the interval and a tenth at most", schedule{s, m, rndHigh}, 0, 0, 1100 * time.Millisecond},
		{"after one failure, twice the interval", schedule{s, m, rndLow}, 1, 0, 2 * s},
		{"after one failure, less a quarter at most", schedule{s, m, rndHigh}, 1, 0, 1500 * time.Millisecond},
		{"after three failures, eight intervals", schedule{s, m, rndLow}, 3, 0, 8 * s},
		{"after five failures, thirty-two intervals", schedule{s, m, rndLow}, 5, 0, 32 * s},
		{"after six failures, max_backoff", schedule{s, m, rndLow}, 6, 0, m},
		{"after a thousand failures, max_backoff", schedule{s, m, rndLow}, 1000, 0, m},
		{"at max_backoff, less a quarter at most", schedule{s, m, rndHigh}, 1000, 0, 45 * s},
		{"a huge max_backoff does not overflow", schedule{s, 1 << 62, rndLow}, 1000, 0, 1 << 62},
		{"a Retry-After longer than the backoff is honoured", schedule{s, m, rndLow}, 1, 30 * s, 30 * s},
		{"a Retry-After shorter than the backoff changes nothing", schedule{s, m, rndLow}, 3, 2 * s, 8 * s},
		{"a Retry-After longer than max_backoff is cut to it", schedule{s, m, rndLow}, 1, time.Hour, m},
		{"max_backoff equal to the interval turns backoff off", schedule{s, s, rndHigh}, 7, 0, s},
		{"max_backoff shorter than the interval turns backoff off", schedule{s, 10 * time.Millisecond, rndLow}, 3, 0, s},
		{"a backoff never goes below the interval", schedule{s, 1100 * time.Millisecond, rndHigh}, 4, 0, s},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.sched.next(tt.failures, tt.retryAfter); got != tt.want {
				t.Errorf("next(%d, %s) = %s, want %s", tt.failures, tt.retryAfter, got, tt.want)
			}
		})
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		value string
		want  time.Duration
	}{
		{"", 0},
		{"0", 0},
		{"120", 2 * time.Minute},
		{" 5 ", 5 * time.Second},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0},
		{"-5", 0},
		{"1.5", 0},
		{"soon", 0},
		{"99999999999999999999", 0},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%q", tt.value), func(t *testing.T) {
			if got := parseRetryAfter(tt.value, now); got != tt.want {
				t.Errorf("parseRetryAfter(%q) = %s, want %s", tt.value, got, tt.want)
			}
		})
	}
}

// outagePolls returns how many polls a poller makes during an outage of
// the given length that begins just before a poll: it runs the poller's
// schedule on a fake clock, each poll failing at once.
func outagePolls(sched schedule, outage time.Duration) int {
	polls, failures := 0, 0
	for at := time.Duration(0); at < outage; {
		polls++
		failures++
		at += sched.next(failures, 0)
	}
	return polls
}

// TestOutageRequestCounts measures the upstream requests of one topic
// during a 30s outage at interval 1s, with max_backoff 1m and with the
// backoff off (max_backoff 1s), twice: on a fake clock over the poller's
// schedule, and with a real Caddy against a real upstream, time-scaled
// 1:10 (interval 100ms, the shortest, outage 3s). Set POLLSSE_OUTAGE_REAL_TIME=1 to
// run the second one at full scale (about a minute).
func TestOutageRequestCounts(t *testing.T) {
	const interval, outage = time.Second, 30 * time.Second
	withBackoff := outagePolls(schedule{interval: interval, maxBackoff: time.Minute, rnd: rndLow}, outage)
	withBackoffJitter := outagePolls(schedule{interval: interval, maxBackoff: time.Minute, rnd: rndHigh}, outage)
	without := outagePolls(schedule{interval: interval, maxBackoff: interval, rnd: rndLow}, outage)
	t.Logf("fake clock, %s outage at interval %s: %d requests without backoff; %d to %d with max_backoff 1m (jitter)",
		outage, interval, without, withBackoff, withBackoffJitter)
	if without != 30 || withBackoff != 4 || withBackoffJitter != 5 {
		t.Errorf("got %d without backoff and %d-%d with, want 30 and 4-5", without, withBackoff, withBackoffJitter)
	}

	scale := time.Duration(10)
	if os.Getenv("POLLSSE_OUTAGE_REAL_TIME") != "" {
		scale = 1
	}
	if testing.Short() && scale == 1 {
		t.Skip("full-scale outage in -short mode")
	}
	// The two topics, with the backoff and without, in one Caddy through
	// the same outage.
	backoff, noBackoff := newFakeAPI(t, `{"a":1}`), newFakeAPI(t, `{"a":1}`)
	handler := func(api *fakeAPI, maxBackoff time.Duration) string {
		return fmt.Sprintf(`"upstream":%q,"interval":%q,"max_backoff":%q`, api.URL, interval/scale, maxBackoff/scale)
	}
	base := startCaddy(t, "["+pollSSERoute("/with", handler(backoff, time.Minute))+","+pollSSERoute("/without", handler(noBackoff, interval))+"]")
	for _, path := range []string{"/with", "/without"} {
		sc := openStream(t, http.DefaultClient, base+path, "")
		sc.next(5 * time.Second)
	}
	backoff.setFault("503")
	noBackoff.setFault("503")
	// The length of the outage is what is measured: a real Caddy polls a
	// real upstream on the clock, which no bubble of testing/synctest
	// holds (the fake clock above is its exact counterpart).
	time.Sleep(outage / scale)
	scaledWith, scaledWithout := len(backoff.arrivals("503")), len(noBackoff.arrivals("503"))
	t.Logf("real Caddy, time-scaled 1:%d: %d requests without backoff, %d with max_backoff 1m", scale, scaledWithout, scaledWith)
	if scaledWith > 6 || scaledWithout < 20 {
		t.Errorf("scaled run: %d requests with backoff, %d without; want about 4-5 and 30", scaledWith, scaledWithout)
	}
}

// TestRefusedTopicRequestCounts measures, on a fake clock over the poller's
// schedule at the default settings, the upstream requests of a topic whose
// upstream refuses its credentials. The topic of a made-up credential lives
// until idle_timeout after its browser's last visit: the reconnect, after
// the retry hint, that gets the 401. A credential whose browsers keep
// coming back keeps its topic polling on the backoff of its failures.
func TestRefusedTopicRequestCounts(t *testing.T) {
	life := defaultRetry + defaultIdleTimeout
	for _, tt := range []struct {
		jitter string
		rnd    func(int64) int64
	}{{"no jitter", rndLow}, {"the most jitter", rndHigh}} {
		sched := schedule{interval: defaultInterval, maxBackoff: defaultMaxBackoff, rnd: tt.rnd}
		made, hour := outagePolls(sched, life), outagePolls(sched, time.Hour)
		t.Logf("%s: %d requests in the %s of a made-up credential's topic, %d in an hour of refused visitors", tt.jitter, made, life, hour)
		// As the README says.
		if made != 4 || hour < 60 || hour > 85 {
			t.Errorf("%s: %d requests for a made-up credential, %d in an hour; want 4, and 60 to 85", tt.jitter, made, hour)
		}
	}
}
