package pollsse

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
)

// hubs holds the hubs of all loaded configurations, keyed by their topic
// settings (topicSettings.key). A reload that leaves them unchanged hands
// the same hub to the new handler, with its pollers, documents and
// histories, so that ids stay valid across the reload.
var hubs = caddy.NewUsagePool()

// maxPollSpread is the most time a hub leaves between the starts of two
// polls of its topics, so that topics started together (a restart, a
// burst of new subscribers) do not reach the upstream in the same
// millisecond.
const maxPollSpread = time.Millisecond

// capLogEvery is how often at most a hub logs that it refuses subscribers
// for a cap.
const capLogEvery = 10 * time.Second

// A hub holds the topics of one handler configuration: one topic per
// upstream URL and forwarded credentials, each with one poller however many
// subscribers it has.
type hub struct {
	cfg    topicSettings
	logger *zap.Logger
	client *http.Client
	// store holds the logs of the hub's topics.
	store hubStore
	// scope is what, besides a topic's key, makes its documents: topics
	// of the same key in stores shared with handlers that make other
	// documents of it (another mode, select or header_up) get other ids.
	scope string
	// keySecret keys the hash of forwarded header values in topic keys,
	// and topic ids. It is the store's (hubStore.secret), asked for when
	// the first topic needs it: secretMu is held while it is.
	keySecret atomic.Pointer[[]byte]
	secretMu  sync.Mutex
	// secretErr is the store's last failure to give the secret, at
	// secretFailed, guarded by secretMu: subscribers are refused with it
	// at once for secretRetry after it.
	secretErr    error
	secretFailed time.Time

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// pacer is held by the poll that starts next; lastStart is when the
	// last poll started, guarded by pacer.
	pacer     chan struct{}
	lastStart time.Time
	spread    time.Duration

	mu          sync.Mutex
	topics      map[string]*topic
	subscribers int
	capLogs     map[string]*capLog
	// newTopics is max_new_topics, nil when it is off.
	newTopics *newTopicLimit
}

// capLog counts the subscribers refused for one cap since it was last
// logged.
type capLog struct {
	last    time.Time
	refused int
}

func newHub(cfg topicSettings, logger *zap.Logger, store hubStore) *hub {
	ctx, cancel := context.WithCancel(context.Background())
	spread := maxPollSpread
	if cfg.MaxTopics > 0 {
		spread = min(spread, cfg.Interval/time.Duration(cfg.MaxTopics))
	}
	return &hub{
		cfg:       cfg,
		logger:    logger,
		client:    newUpstreamClient(),
		store:     store,
		scope:     cfg.scope(),
		ctx:       ctx,
		cancel:    cancel,
		pacer:     make(chan struct{}, 1),
		spread:    spread,
		topics:    make(map[string]*topic),
		capLogs:   make(map[string]*capLog),
		newTopics: newNewTopicLimit(cfg.MaxNewTopics, cfg.MaxNewTopicsPer),
	}
}

// forwardedHeader returns the values of the configured forward_headers in
// r, nil when none are configured.
func (h *hub) forwardedHeader(r *http.Request) http.Header {
	if len(h.cfg.ForwardHeaders) == 0 {
		return nil
	}
	fwd := make(http.Header, len(h.cfg.ForwardHeaders))
	for _, name := range h.cfg.ForwardHeaders {
		if values := r.Header.Values(name); len(values) > 0 {
			fwd[name] = append([]string(nil), values...)
		}
	}
	return fwd
}

// topicKey returns the key of the topic of url and the forwarded header
// values: url alone when no headers are forwarded, else url and a keyed
// hash of every forwarded header's values, so that subscribers whose
// values differ in any way never share a topic, and the values themselves
// are not kept in the key.
func (h *hub) topicKey(url string, fwd http.Header) string {
	if len(h.cfg.ForwardHeaders) == 0 {
		return url
	}
	secret, _ := h.secret()
	mac := hmac.New(sha256.New, secret)
	var n [binary.MaxVarintLen64]byte
	write := func(s string) {
		mac.Write(n[:binary.PutUvarint(n[:], uint64(len(s)))])
		mac.Write([]byte(s))
	}
	for _, name := range h.cfg.ForwardHeaders {
		values := fwd[name]
		write(name)
		mac.Write(n[:binary.PutUvarint(n[:], uint64(len(values)))])
		for _, v := range values {
			write(v)
		}
	}
	return url + " " + hex.EncodeToString(mac.Sum(nil))
}

// topicIDLength is the length of a topic's id, in hex digits: 48 bits, so
// that the ids of a hub's topics do not collide in practice.
const topicIDLength = 12

// topicID returns the short id of the topic of key: the first hex digits of
// an HMAC-SHA-256 of key under the hub's secret. Keyed, so that an id, which
// every subscriber of the topic sees in status events, gives no way to test
// guesses of a secret in the upstream URL (its password, an API key in its
// query) offline.
func (h *hub) topicID(key string) string {
	secret, _ := h.secret()
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte("topic id\x00"))
	mac.Write([]byte(h.scope))
	mac.Write([]byte(key))
	return hex.EncodeToString(mac.Sum(nil))[:topicIDLength]
}

// A capError refuses a subscriber because the hub is at one of its caps.
type capError struct {
	cap   string
	limit int
}

func (e *capError) Error() string {
	what := "topics"
	if e.cap == "max_subscribers" {
		what = "subscribers"
	}
	return fmt.Sprintf("%s: the handler already has %d %s", e.cap, e.limit, what)
}

// subscribe returns the topic for url and the forwarded header values fwd,
// starting its poller if it has none, and counts one more subscriber of it.
// Every subscribe that returns no error is paired with an unsubscribe. At
// max_subscribers, or at max_topics when a new topic is needed and no topic
// without subscribers can make room, it returns a capError. When a new
// topic is needed and client (clientAddress) has created new topics faster
// than max_new_topics allows, it returns a newTopicsError, before any topic
// is stopped to make room: one client cannot push the idle topics of other
// users out.
func (h *hub) subscribe(url string, fwd http.Header, client netip.Prefix) (*topic, error) {
	// Topic keys and ids are made with the store's secret, which the
	// first subscriber asks the store for.
	if _, err := h.secret(); err != nil {
		return nil, err
	}
	key := h.topicKey(url, fwd)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cfg.MaxSubscribers > 0 && h.subscribers >= h.cfg.MaxSubscribers {
		return nil, h.refuse(&capError{"max_subscribers", h.cfg.MaxSubscribers})
	}
	t, ok := h.topics[key]
	if !ok {
		now := time.Now()
		if wait := h.newTopics.wait(now, client); wait > 0 {
			return nil, h.refuseNewTopic(now, client, wait)
		}
		if h.cfg.MaxTopics > 0 && len(h.topics) >= h.cfg.MaxTopics && !h.evictIdle() {
			return nil, h.refuse(&capError{"max_topics", h.cfg.MaxTopics})
		}
		h.newTopics.spend(now, client)
		ctx, cancel := context.WithCancel(h.ctx)
		id := h.topicID(key)
		logger := h.logger.With(zap.String("upstream", redactURL(url)), zap.String("topic", id))
		t = newTopic(key, id, url, fwd, nil, cancel)
		log := h.store.open(topicRef{id: id, history: h.cfg.History, interval: h.cfg.Interval, logger: logger, state: &t.upstreamState})
		t.log = log
		h.topics[key] = t
		p := h.newPoller(t, logger)
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			defer log.Close()
			defer cancel()
			p.run(ctx)
		}()
	}
	t.subscribers++
	h.subscribers++
	metrics.subscribers.Inc()
	return t, nil
}

// newPoller returns the poller of t, made with the hub's client, settings
// and pacing.
func (h *hub) newPoller(t *topic, logger *zap.Logger) *poller {
	return &poller{
		url:       t.url,
		headerUp:  h.cfg.HeaderUp,
		forwarded: t.header,
		timeout:   h.cfg.Timeout,
		maxBody:   h.cfg.MaxBody,
		client:    h.client,
		differ:    h.cfg.differ,
		restore:   h.cfg.restore,
		log:       t.log,
		topicID:   t.id,
		state:     &t.upstreamState,
		pace:      h.pace,
		removeIfIdle: func() (time.Time, bool) {
			return h.removeIfIdle(t)
		},
		logger: logger,
		sched:  schedule{interval: h.cfg.Interval, maxBackoff: h.cfg.MaxBackoff},
	}
}

// refuse logs that a subscriber is refused for a cap, at most once per
// capLogEvery for each cap, with the number refused since the last line.
// h.mu must be held.
func (h *hub) refuse(err *capError) error {
	cl := h.capLogs[err.cap]
	if cl == nil {
		cl = new(capLog)
		h.capLogs[err.cap] = cl
	}
	cl.refused++
	if now := time.Now(); now.Sub(cl.last) >= capLogEvery {
		h.logger.Warn("subscribers refused: at the handler's limit; raise it or add capacity",
			zap.String("setting", err.cap),
			zap.Int("limit", err.limit),
			zap.Int("topics", len(h.topics)),
			zap.Int("subscribers", h.subscribers),
			zap.Int("refused", cl.refused))
		cl.last, cl.refused = now, 0
	}
	return err
}

// refuseNewTopic logs that a subscriber from client is refused a new topic
// by max_new_topics, at most once per capLogEvery, with the number refused
// and the number of client addresses refused since the last line, and
// returns the newTopicsError, whose client may create a topic after wait.
// h.mu must be held.
func (h *hub) refuseNewTopic(now time.Time, client netip.Prefix, wait time.Duration) error {
	l := h.newTopics
	if refused, addresses, ok := l.refuse(now, client); ok {
		h.logger.Warn("subscribers refused: a client address creates new topics faster than max_new_topics allows",
			zap.String("setting", "max_new_topics"),
			zap.Int("limit", l.n),
			zap.Duration("per", l.per),
			zap.Int("topics", len(h.topics)),
			zap.Int("refused", refused),
			zap.Int("addresses", addresses),
			zap.String("client", formatClient(client)))
	}
	return &newTopicsError{limit: l.n, per: l.per, retryAfter: wait}
}

// evictIdle stops the topic that has had no subscriber for the longest
// time, to make room for a new one, and tells whether there was one. h.mu
// must be held.
func (h *hub) evictIdle() bool {
	var oldest *topic
	for _, t := range h.topics {
		if t.subscribers == 0 && (oldest == nil || t.lastLeave.Before(oldest.lastLeave)) {
			oldest = t
		}
	}
	if oldest == nil {
		return false
	}
	delete(h.topics, oldest.key)
	oldest.cancel()
	return true
}

func (h *hub) unsubscribe(t *topic) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.subscribers--
	metrics.subscribers.Dec()
	t.subscribers--
	if t.subscribers == 0 {
		t.lastLeave = time.Now()
	}
}

// removeIfIdle removes t from the hub when it has had no subscribers for
// the idle timeout, and tells whether t is removed, by this call or by an
// eviction: its poller then stops, and a later subscriber of the same key
// starts a new topic. Until then, until is when t may be removed, the zero
// time while it has subscribers.
func (h *hub) removeIfIdle(t *topic) (until time.Time, removed bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.topics[t.key] != t {
		return time.Time{}, true
	}
	if t.subscribers > 0 {
		return time.Time{}, false
	}
	until = t.lastLeave.Add(h.cfg.IdleTimeout)
	if !time.Now().Before(until) {
		delete(h.topics, t.key)
		return until, true
	}
	return until, false
}

// pace waits until the hub's last poll started at least the spread ago,
// then counts the caller's poll as started. Polls of many topics due at the
// same moment start one after another, at most 1ms apart (less when
// max_topics polls would not fit in an interval so). It returns false when
// ctx ends first.
func (h *hub) pace(ctx context.Context) bool {
	select {
	case h.pacer <- struct{}{}:
	case <-ctx.Done():
		return false
	}
	defer func() { <-h.pacer }()
	if wait := time.Until(h.lastStart.Add(h.spread)); wait > 0 {
		timer := time.NewTimer(wait)
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-ctx.Done():
			return false
		}
	}
	h.lastStart = time.Now()
	return true
}

// Destruct stops every poller of the hub; the usage pool calls it when no
// loaded configuration uses the hub any more.
func (h *hub) Destruct() error {
	h.cancel()
	h.wg.Wait()
	h.client.CloseIdleConnections()
	return h.store.Close()
}

// secretWait is how long a subscribe waits for the store's secret, and
// secretRetry how long after a failure to get it the store is asked again.
const (
	secretWait  = 2 * time.Second
	secretRetry = time.Second
)

// secret returns the hub's key secret, asking the store for it the first
// time. While the store cannot give it, subscribers are refused with the
// error, and the next one asks again.
func (h *hub) secret() ([]byte, error) {
	if s := h.keySecret.Load(); s != nil {
		return *s, nil
	}
	h.secretMu.Lock()
	defer h.secretMu.Unlock()
	if s := h.keySecret.Load(); s != nil {
		return *s, nil
	}
	if h.secretErr != nil && time.Since(h.secretFailed) < secretRetry {
		return nil, h.secretErr
	}
	ctx, cancel := context.WithTimeout(h.ctx, secretWait)
	defer cancel()
	s, err := h.store.secret(ctx)
	if err != nil {
		h.secretErr, h.secretFailed = fmt.Errorf("the store is unavailable: %w", err), time.Now()
		return nil, h.secretErr
	}
	h.keySecret.Store(&s)
	return s, nil
}
