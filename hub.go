package pollsse

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
)

// hubs holds the hubs of all loaded configurations, keyed by the part of the
// handler's configuration that shapes topics. A reload that leaves it
// unchanged hands the same hub to the new handler, with its pollers,
// documents and histories, so that ids stay valid across the reload.
var hubs = caddy.NewUsagePool()

// A hub holds the topics of one handler configuration: one topic per
// upstream URL, each with one poller however many subscribers it has.
type hub struct {
	cfg    topicConfig
	logger *zap.Logger
	client *http.Client

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	topics map[string]*topic
}

// topicConfig is what a topic needs from the handler's configuration.
type topicConfig struct {
	interval    time.Duration
	idleTimeout time.Duration
	timeout     time.Duration
	history     int
	headerUp    http.Header
	differ      differ
}

// A topic is one upstream URL, polled for all of its subscribers together.
type topic struct {
	url string
	log eventLog
	hub *hub

	// subscribers and lastLeave are guarded by hub.mu.
	subscribers int
	lastLeave   time.Time
}

func newHub(cfg topicConfig, logger *zap.Logger) *hub {
	ctx, cancel := context.WithCancel(context.Background())
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConnsPerHost = 16
	return &hub{
		cfg:    cfg,
		logger: logger,
		client: &http.Client{Transport: transport},
		ctx:    ctx,
		cancel: cancel,
		topics: make(map[string]*topic),
	}
}

// subscribe returns the topic for url, starting its poller if it has none,
// and counts one more subscriber of it. Every subscribe is paired with an
// unsubscribe.
func (h *hub) subscribe(url string) *topic {
	h.mu.Lock()
	defer h.mu.Unlock()
	t, ok := h.topics[url]
	if !ok {
		t = &topic{url: url, log: newMemoryLog(h.cfg.history), hub: h}
		h.topics[url] = t
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			t.run(h.ctx)
		}()
	}
	t.subscribers++
	return t
}

func (h *hub) unsubscribe(t *topic) {
	h.mu.Lock()
	defer h.mu.Unlock()
	t.subscribers--
	if t.subscribers == 0 {
		t.lastLeave = time.Now()
	}
}

// idleUntil returns when t may stop for having had no subscribers for the
// idle timeout, or the zero time while it has subscribers. When that time
// has passed, it removes t from the hub, and a later subscriber of the same
// URL starts a new topic.
func (h *hub) idleUntil(t *topic) (time.Time, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if t.subscribers > 0 {
		return time.Time{}, false
	}
	until := t.lastLeave.Add(h.cfg.idleTimeout)
	if !time.Now().Before(until) {
		delete(h.topics, t.url)
		return until, true
	}
	return until, false
}

// Destruct stops every poller of the hub; the usage pool calls it when no
// loaded configuration uses the hub any more.
func (h *hub) Destruct() error {
	h.cancel()
	h.wg.Wait()
	h.client.CloseIdleConnections()
	return nil
}
