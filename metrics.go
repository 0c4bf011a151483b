package pollsse

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The handler's Prometheus metrics, named as Caddy names its own
// (caddy_http_*). They are process-wide, like the hubs whose work they count:
// a reload keeps them, and they are registered into the metrics registry of
// every configuration that has a poll_sse handler, so that Caddy's `metrics`
// handler and the admin endpoint's /metrics show them. Labels take only the
// fixed values below, never a URL or anything a request chose.
//
// The write path of a subscriber touches only label children resolved here,
// once: a few atomic adds per event, no map lookup and no allocation.
var metrics = newMetrics()

// Results of a poll, the values of the polls_total label "result".
const (
	pollChanged     = "changed"
	pollUnchanged   = "unchanged"
	pollNotModified = "not_modified"
	pollFailed      = "failed"
)

type handlerMetrics struct {
	subscribers   prometheus.Gauge
	topics        prometheus.Gauge
	polls         *prometheus.CounterVec
	pollDuration  prometheus.Histogram
	eventsSent    *prometheus.CounterVec
	bytesSent     *prometheus.CounterVec
	resumes       *prometheus.CounterVec
	droppedAsSlow prometheus.Counter

	// Label children, resolved once.
	pollsChanged, pollsUnchanged, pollsNotModified, pollsFailed prometheus.Counter
	resumesReplayed, resumesSnapshot                            prometheus.Counter
	// sent are the counters of the frames of each kind.
	sent [numEventKinds]sentCounters
}

// sentCounters count the frames of one kind and their bytes.
type sentCounters struct {
	events, bytes prometheus.Counter
}

func (c sentCounters) add(n int) {
	c.events.Inc()
	c.bytes.Add(float64(n))
}

func newMetrics() *handlerMetrics {
	const ns, sub = "caddy", "http"
	m := &handlerMetrics{
		subscribers: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "poll_sse_subscribers",
			Help: "Open poll_sse event streams.",
		}),
		topics: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "poll_sse_topics",
			Help: "Topics (upstream URLs) that poll_sse is polling.",
		}),
		polls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "poll_sse_polls_total",
			Help: "Upstream polls of poll_sse by result: changed, unchanged, not_modified (a 304) or failed.",
		}, []string{"result"}),
		pollDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "poll_sse_poll_duration_seconds",
			Help:    "How long one upstream poll of poll_sse took, body, parsing and diff included.",
			Buckets: prometheus.DefBuckets,
		}),
		eventsSent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "poll_sse_events_sent_total",
			Help: "Events written to poll_sse subscribers by type: snapshot, patch, merge, status or heartbeat.",
		}, []string{"type"}),
		bytesSent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "poll_sse_sent_bytes_total",
			Help: "Bytes of events written to poll_sse subscribers by event type, before any encoding.",
		}, []string{"type"}),
		resumes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "poll_sse_resumes_total",
			Help: "Subscribers that came with a last event id, by outcome: replayed (from the history) or snapshot (the id was unknown or too old).",
		}, []string{"outcome"}),
		droppedAsSlow: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "poll_sse_slow_subscribers_dropped_total",
			Help: "Subscribers disconnected because a write to them blocked for write_timeout.",
		}),
	}
	m.pollsChanged = m.polls.WithLabelValues(pollChanged)
	m.pollsUnchanged = m.polls.WithLabelValues(pollUnchanged)
	m.pollsNotModified = m.polls.WithLabelValues(pollNotModified)
	m.pollsFailed = m.polls.WithLabelValues(pollFailed)
	for k := range numEventKinds {
		m.sent[k] = sentCounters{m.eventsSent.WithLabelValues(k.String()), m.bytesSent.WithLabelValues(k.String())}
	}
	m.resumesReplayed = m.resumes.WithLabelValues("replayed")
	m.resumesSnapshot = m.resumes.WithLabelValues("snapshot")
	return m
}

func (m *handlerMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{
		m.subscribers, m.topics, m.polls, m.pollDuration,
		m.eventsSent, m.bytesSent, m.resumes, m.droppedAsSlow,
	}
}

// register adds the metrics to reg, the registry of a configuration being
// provisioned. Every poll_sse handler of the configuration calls it; all but
// the first find the metrics there already. A nil reg registers nothing.
func (m *handlerMetrics) register(reg *prometheus.Registry) error {
	if reg == nil {
		return nil
	}
	for _, c := range m.collectors() {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) && are.ExistingCollector == c {
				continue
			}
			return err
		}
	}
	return nil
}

// countPoll counts one poll with its result and duration.
func (m *handlerMetrics) countPoll(result string, start time.Time) {
	switch result {
	case pollChanged:
		m.pollsChanged.Inc()
	case pollUnchanged:
		m.pollsUnchanged.Inc()
	case pollNotModified:
		m.pollsNotModified.Inc()
	case pollFailed:
		m.pollsFailed.Inc()
	}
	m.pollDuration.Observe(time.Since(start).Seconds())
}

// countSent counts one frame written to a subscriber's connection, by its
// kind.
func (m *handlerMetrics) countSent(f frame) {
	m.sent[f.kind].add(len(f.bytes))
}

// countWriteError counts a subscriber whose stream ended on err, a failed
// write: a write that timed out means the subscriber was too slow (a client
// that went away fails otherwise).
func (m *handlerMetrics) countWriteError(err error) {
	if isTimeout(err) {
		m.droppedAsSlow.Inc()
	}
}

// countResume counts a subscriber that came with lastEventID, and for which
// the log's resume returned cursor; one without an id is not a resume.
func (m *handlerMetrics) countResume(lastEventID string, at cursor) {
	switch {
	case lastEventID == "":
	case at != 0:
		m.resumesReplayed.Inc()
	default:
		m.resumesSnapshot.Inc()
	}
}
