package pollsse

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
)

// hubs holds the hubs of all loaded configurations, keyed by the part of the
// handler's configuration that shapes topics. A reload that leaves it
// unchanged hands the same hub to the new handler, with its pollers,
// documents and histories, so that ids stay valid across the reload.
var hubs = caddy.NewUsagePool()

// Defaults of the hub's caps.
const (
	defaultMaxTopics      = 1000
	defaultMaxSubscribers = 10000
	defaultMaxBody        = 10 << 20
)

// maxRedirects is how many redirects of the upstream a poll follows, each
// to the same scheme, host and port.
const maxRedirects = 3

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
	cfg    topicConfig
	logger *zap.Logger
	client *http.Client
	// keySecret keys the hash of forwarded header values in topic keys.
	keySecret []byte

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
}

// topicConfig is what a topic needs from the handler's configuration.
type topicConfig struct {
	interval    time.Duration
	idleTimeout time.Duration
	timeout     time.Duration
	history     int
	headerUp    http.Header
	differ      differ

	// maxBackoff is the longest wait between polls of a failing upstream.
	maxBackoff time.Duration
	// maxBody is the largest response body read, in bytes.
	maxBody int64
	// forwardHeaders are the canonical names of the subscriber's headers
	// that are sent to the upstream; they are part of the topic's key.
	forwardHeaders []string
	maxTopics      int
	maxSubscribers int
}

// A topic is one upstream URL with one set of forwarded header values,
// polled for all of its subscribers together.
type topic struct {
	// key is url, followed by a keyed hash of header when headers are
	// forwarded; it is never logged.
	key string
	// id names the topic in log lines and status events: a keyed hash of
	// key (topicID), which tells topics of one URL apart without saying
	// anything of their credentials.
	id     string
	url    string
	header http.Header
	log    eventLog
	hub    *hub
	cancel context.CancelFunc

	// denied is 401 or 403 while the upstream's latest answer is that
	// status, else 0.
	denied atomic.Int32
	// refused is closed and replaced whenever denied becomes non-zero, so
	// that the streams still waiting for their first snapshot end.
	refused atomic.Pointer[chan struct{}]
	// documented is set once the poller has put the topic's first document
	// in its log.
	documented atomic.Bool

	// subscribers and lastLeave are guarded by hub.mu.
	subscribers int
	lastLeave   time.Time
}

// capLog counts the subscribers refused for one cap since it was last
// logged.
type capLog struct {
	last    time.Time
	refused int
}

func newHub(cfg topicConfig, logger *zap.Logger) *hub {
	ctx, cancel := context.WithCancel(context.Background())
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConnsPerHost = 16
	secret := make([]byte, 32)
	rand.Read(secret)
	spread := maxPollSpread
	if cfg.maxTopics > 0 {
		spread = min(spread, cfg.interval/time.Duration(cfg.maxTopics))
	}
	return &hub{
		cfg:    cfg,
		logger: logger,
		client: &http.Client{
			Transport:     transport,
			CheckRedirect: checkRedirect,
		},
		keySecret: secret,
		ctx:       ctx,
		cancel:    cancel,
		pacer:     make(chan struct{}, 1),
		spread:    spread,
		topics:    make(map[string]*topic),
		capLogs:   make(map[string]*capLog),
	}
}

// A redirectError is a redirect of the upstream that a poll does not follow.
type redirectError struct{ reason string }

func (e *redirectError) Error() string { return "upstream redirect not followed: " + e.reason }

// checkRedirect follows at most maxRedirects redirects, each to the scheme,
// host and port of the request before it, so that an upstream cannot send
// polls (and the forwarded credentials) to another server.
func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) > maxRedirects {
		return &redirectError{fmt.Sprintf("more than %d redirects", maxRedirects)}
	}
	if !sameOrigin(req.URL, via[len(via)-1].URL) {
		return &redirectError{"it leads to another scheme, host or port"}
	}
	return nil
}

func sameOrigin(a, b *url.URL) bool {
	return strings.EqualFold(a.Scheme, b.Scheme) &&
		strings.EqualFold(a.Hostname(), b.Hostname()) &&
		effectivePort(a) == effectivePort(b)
}

func effectivePort(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if strings.EqualFold(u.Scheme, "https") {
		return "443"
	}
	return "80"
}

// forwardedHeader returns the values of the configured forward_headers in
// r, nil when none are configured.
func (h *hub) forwardedHeader(r *http.Request) http.Header {
	if len(h.cfg.forwardHeaders) == 0 {
		return nil
	}
	fwd := make(http.Header, len(h.cfg.forwardHeaders))
	for _, name := range h.cfg.forwardHeaders {
		if values := r.Header.Values(name); len(values) > 0 {
			fwd[name] = append([]string(nil), values...)
		}
	}
	return fwd
}

// unforwardableHeaders are the headers that forward_headers refuses: those
// of one connection, and those by which the poller itself asks for a
// response (conditional requests, ranges, encodings).
var unforwardableHeaders = map[string]bool{
	"Host": true, "Connection": true, "Keep-Alive": true, "Proxy-Connection": true,
	"Proxy-Authorization": true, "Te": true, "Trailer": true, "Transfer-Encoding": true,
	"Upgrade": true, "Content-Length": true, "Accept-Encoding": true, "Range": true,
	"If-None-Match": true, "If-Modified-Since": true, "If-Match": true,
	"If-Unmodified-Since": true, "If-Range": true,
}

// checkForwardHeaders checks the names of forward_headers.
func checkForwardHeaders(names []string, headerUp http.Header) error {
	for _, name := range names {
		if !isToken(name) {
			return fmt.Errorf("forward_headers: %q is not a header name", name)
		}
		canonical := http.CanonicalHeaderKey(name)
		if unforwardableHeaders[canonical] {
			return fmt.Errorf("forward_headers: %s cannot be forwarded", name)
		}
		for up := range headerUp {
			if http.CanonicalHeaderKey(up) == canonical {
				return fmt.Errorf("forward_headers: %s is also set by header_up", name)
			}
		}
	}
	return nil
}

// isToken tells whether s is an HTTP token (RFC 9110 section 5.6.2), as
// header names are.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0 {
			continue
		}
		return false
	}
	return true
}

// canonicalHeaderNames returns names in canonical form, each once, in the
// order given.
func canonicalHeaderNames(names []string) []string {
	var out []string
	for _, name := range names {
		if c := http.CanonicalHeaderKey(name); !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	return out
}

// retryAfterSeconds returns d in whole seconds, rounded up, at least 1, for
// a Retry-After header.
func retryAfterSeconds(d time.Duration) int {
	return max(1, int((d+time.Second-1)/time.Second))
}

// topicKey returns the key of the topic of url and the forwarded header
// values: url alone when no headers are forwarded, else url and a keyed
// hash of every forwarded header's values, so that subscribers whose
// values differ in any way never share a topic, and the values themselves
// are not kept in the key.
func (h *hub) topicKey(url string, fwd http.Header) string {
	if len(h.cfg.forwardHeaders) == 0 {
		return url
	}
	mac := hmac.New(sha256.New, h.keySecret)
	var n [binary.MaxVarintLen64]byte
	write := func(s string) {
		mac.Write(n[:binary.PutUvarint(n[:], uint64(len(s)))])
		mac.Write([]byte(s))
	}
	for _, name := range h.cfg.forwardHeaders {
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
	mac := hmac.New(sha256.New, h.keySecret)
	mac.Write([]byte("topic id\x00"))
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
// without subscribers can make room, it returns a capError.
func (h *hub) subscribe(url string, fwd http.Header) (*topic, error) {
	key := h.topicKey(url, fwd)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cfg.maxSubscribers > 0 && h.subscribers >= h.cfg.maxSubscribers {
		return nil, h.refuse(&capError{"max_subscribers", h.cfg.maxSubscribers})
	}
	t, ok := h.topics[key]
	if !ok {
		if h.cfg.maxTopics > 0 && len(h.topics) >= h.cfg.maxTopics && !h.evictIdle() {
			return nil, h.refuse(&capError{"max_topics", h.cfg.maxTopics})
		}
		ctx, cancel := context.WithCancel(h.ctx)
		t = &topic{
			key:    key,
			id:     h.topicID(key),
			url:    url,
			header: fwd,
			log:    newMemoryLog(h.cfg.history),
			hub:    h,
			cancel: cancel,
		}
		refused := make(chan struct{})
		t.refused.Store(&refused)
		h.topics[key] = t
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			defer cancel()
			t.run(ctx)
		}()
	}
	t.subscribers++
	h.subscribers++
	metrics.subscribers.Inc()
	return t, nil
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
			zap.String("limit", err.cap),
			zap.Int("value", err.limit),
			zap.Int("topics", len(h.topics)),
			zap.Int("subscribers", h.subscribers),
			zap.Int("refused", cl.refused))
		cl.last, cl.refused = now, 0
	}
	return err
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

// idleUntil returns when t may stop for having had no subscribers for the
// idle timeout, or the zero time while it has subscribers. When that time
// has passed, or t was evicted, it removes t from the hub, and a later
// subscriber of the same key starts a new topic.
func (h *hub) idleUntil(t *topic) (time.Time, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.topics[t.key] != t {
		return time.Time{}, true
	}
	if t.subscribers > 0 {
		return time.Time{}, false
	}
	until := t.lastLeave.Add(h.cfg.idleTimeout)
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

// answer records the outcome of a poll of t: status is the upstream's
// HTTP status when the poll failed for one, else 0.
func (t *topic) answer(status int) {
	if !refusal(status) {
		t.denied.Store(0)
		return
	}
	if t.denied.Swap(int32(status)) == 0 {
		ch := make(chan struct{})
		close(*t.refused.Swap(&ch))
	}
}

// refusal tells whether an upstream's HTTP status refuses the credentials
// of the request.
func refusal(status int) bool {
	return status == http.StatusUnauthorized || status == http.StatusForbidden
}

// deniedStatus returns 401 or 403 while the upstream's latest answer for t
// refused its credentials, and 0 otherwise.
func (t *topic) deniedStatus() int { return int(t.denied.Load()) }

// refusedChan returns a channel that is closed when the upstream next
// refuses t's credentials.
func (t *topic) refusedChan() <-chan struct{} { return *t.refused.Load() }

// refusedBeforeSnapshot tells whether a stream whose last read of the log
// came back empty should end: the upstream refuses the topic's credentials,
// and the topic has no document, so that the stream has had no snapshot
// (it may have had the status event of an earlier failure). Its browser
// reconnects, and the new request gets the 401 or 403 as its response, so
// that EventSource stops.
func (t *topic) refusedBeforeSnapshot() bool {
	// denied first: a topic refused after its first document was
	// documented before.
	return t.denied.Load() != 0 && !t.documented.Load()
}

// Destruct stops every poller of the hub; the usage pool calls it when no
// loaded configuration uses the hub any more.
func (h *hub) Destruct() error {
	h.cancel()
	h.wg.Wait()
	h.client.CloseIdleConnections()
	return nil
}
