// Package pollsse is a Caddy HTTP handler that turns a JSON API that clients
// would poll into a Server-Sent Events stream: it polls the upstream once per
// interval for all subscribers of a resource together, compares each response
// with the last, and sends a snapshot followed by JSON Patch events.
package pollsse

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Handler streams a polled JSON upstream to browsers as Server-Sent Events.
//
// Each request subscribes to a topic: the upstream URL after placeholder
// replacement. The handler polls each topic's upstream once per interval,
// whatever the number of subscribers, and sends each subscriber a
// `snapshot` event with the whole document, then a `patch` event (RFC 6902
// JSON Patch) for every change. Every event has an id; a client that
// reconnects with `Last-Event-ID` receives the events it missed, or a fresh
// snapshot when the id is too old.
type Handler struct {
	// The upstream URL to poll, http or https. Placeholders are allowed in its
	// path and query, where their values are escaped as path segments and
	// query values; they are refused in the scheme, host and port. Required.
	Upstream string `json:"upstream,omitempty"`

	// How often to poll each upstream. At least 100ms, so that a topic
	// polls its upstream at most ten times a second. Default: 2s.
	Interval caddy.Duration `json:"interval,omitempty"`

	// How long a browser waits before reconnecting after the stream
	// breaks, sent to it as the SSE `retry` field. Default: 3s.
	Retry caddy.Duration `json:"retry,omitempty"`

	// After this long without a write, a stream sends a comment line, so
	// that proxies and browsers keep an idle stream open. Default: 15s.
	Heartbeat caddy.Duration `json:"heartbeat,omitempty"`

	// How many events each topic keeps for clients that reconnect with
	// `Last-Event-ID`. A client that missed more than this gets a fresh
	// snapshot. Default: 256.
	History int `json:"history,omitempty"`

	// How long a topic keeps polling after its last subscriber leaves, so
	// that a client reconnecting within that time resumes where it was.
	// Default: 30s.
	IdleTimeout caddy.Duration `json:"idle_timeout,omitempty"`

	// How long one upstream request may take, body included; a request that
	// takes longer is a failed poll. Default: 10s.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	// How long a client may take no data while an event is written to it.
	// A client that takes nothing for this long (it stopped reading, or its
	// network is gone) is disconnected, and its browser reconnects and
	// resumes by id; one that reads slowly but steadily gets events of any
	// size. An HTTP/1.1 stream without `encode`, plain (or HTTPS, on
	// Linux), is dropped when no byte has left its socket for this long;
	// any other (HTTP/2, HTTP/3, `encode`) writes an event in pieces of 32
	// KiB and is dropped when a piece is not taken within this long.
	// Default: 10s.
	WriteTimeout caddy.Duration `json:"write_timeout,omitempty"`

	// Headers set on every upstream request, such as an API key. `Accept:
	// application/json` and `User-Agent: caddy-pollsse/<version>` are sent
	// unless set here. Values may hold Caddy's global placeholders, such as
	// `{env.LEGACY_API_KEY}` or `{file./run/secrets/key}`, read once when the
	// configuration loads, so that a key can stay out of the configuration;
	// an empty environment variable is logged as a warning. Placeholders of
	// the request, such as `{http.request.header.X-User}`, are refused: they
	// have no value when the configuration loads, and `forward_headers`
	// sends a header of the subscriber's request.
	HeaderUp http.Header `json:"header_up,omitempty"`

	// The longest wait between polls of a failing upstream. After n
	// consecutive failed polls (connection errors, timeouts, 4xx and 5xx
	// answers, bodies that do not parse, refused redirects) the next poll
	// waits interval×2ⁿ less up to a quarter of random jitter, at most this
	// long; a `Retry-After` of the upstream is honoured up to this long. The
	// first success returns to the interval. A value no longer than the
	// interval turns the backoff off. Default: 1m.
	MaxBackoff caddy.Duration `json:"max_backoff,omitempty"`

	// The largest upstream response body, in bytes. A larger body is a
	// failed poll, and no more of it than this is read. Default: 10MiB.
	MaxBody int64 `json:"max_body,omitempty"`

	// Headers of the subscriber's request to copy to the upstream request,
	// typically `Authorization` or `Cookie`. Their values are part of the
	// topic's key (hashed, never logged): subscribers whose values differ
	// never share a poller, a document or a history. Without this, nothing
	// of the subscriber's request reaches the upstream except the values of
	// the URL's placeholders. Default: none.
	ForwardHeaders []string `json:"forward_headers,omitempty"`

	// The most topics (one per upstream URL and forwarded header values)
	// this handler polls at once. Beyond it, a subscriber of a new topic gets
	// 503 with `Retry-After` unless a topic without subscribers can be
	// stopped to make room; existing streams carry on. Default: 1000.
	MaxTopics int `json:"max_topics,omitempty"`

	// The most open streams this handler serves at once. Beyond it, a new
	// subscriber gets 503 with `Retry-After`; existing streams carry on.
	// Default: 10000.
	MaxSubscribers int `json:"max_subscribers,omitempty"`

	// The most new topics that one client address may make the handler
	// create per `max_new_topics_per`: a client that makes up credentials
	// (`forward_headers`) or placeholder values creates a topic for each,
	// and would stop the idle topics of other users at `max_topics`.
	// Beyond it, a subscriber of a new topic gets 429 with `Retry-After`,
	// the whole seconds until its address may create one again, and no
	// topic is created or stopped; subscribing to an existing topic is
	// never refused by it. An address may create this many at once, then
	// one more every `max_new_topics_per` ÷ this many. The address is
	// Caddy's client IP, the browser's behind a proxy of the server's
	// `trusted_proxies`: an IPv4 address, or an IPv6 /64. With a shared
	// store, each Caddy counts its own. A negative value turns the limit
	// off. Default: 30.
	MaxNewTopics int `json:"max_new_topics,omitempty"`

	// The period of `max_new_topics`, at least 1s. Default: 1m.
	MaxNewTopicsPer caddy.Duration `json:"max_new_topics_per,omitempty"`

	// What a change is sent as. `json_patch`: a `patch` event, an RFC 6902
	// JSON Patch. `merge_patch`: a `merge` event, an RFC 7396 JSON Merge
	// Patch, or a `snapshot` event where a merge patch cannot say the change
	// (a member set to null, or a document that is not an object).
	// `snapshot`: a whole `snapshot` event; this mode also streams responses
	// that are not JSON, compared byte for byte and sent as text. A change
	// whose patch would be more than 1 KiB longer than the document, or that
	// replaces the whole document, is sent as a snapshot in every mode.
	// Numbers keep their exact text, and of the members of an object that
	// have the same key, the last one is kept. Default: json_patch.
	Mode string `json:"mode,omitempty"`

	// A JSON Pointer (RFC 6901) to the part of each response to stream,
	// such as `/data/items`. A response in which it points at nothing is a
	// failed poll, which subscribers hear of as a `status` event. Default:
	// the whole response.
	Select string `json:"select,omitempty"`

	// JSON Pointers to parts of each response that are removed before it is
	// compared and sent, such as a `generated_at` time that changes on every
	// poll: they never cause an event and are absent from snapshots too.
	// They point into the whole response, not into the part that `select`
	// chose, and a token `*` matches every member or element:
	// `/items/*/updated_at`. A pointer that matches nothing removes nothing.
	// Default: none.
	Ignore []string `json:"ignore,omitempty"`

	// Where topics keep their documents and histories, and how the
	// instances that share it decide which one polls a topic: a store
	// module. `memory` keeps them in this Caddy alone; `redis` shares
	// them among every Caddy on one Redis, so that they poll each topic
	// once between them and an id from any of them resumes on every
	// other. Default: memory.
	Store json.RawMessage `json:"store,omitempty" caddy:"namespace=http.handlers.poll_sse.stores inline_key=module"`

	logger *zap.Logger
	// storeJSON is Store as configured, which loading the module empties,
	// and store is the module.
	storeJSON json.RawMessage
	store     store
	// storeModule is the store that UnmarshalCaddyfile read.
	storeModule caddyfile.Unmarshaler
	upstream    *upstreamTemplate
	hubKey      string
	hub         *hub

	// streaming is what the handler's streams need of it, and endStreams
	// ends them.
	streaming  *streamConfig
	endStreams context.CancelFunc
	// detached holds the streams taken off their goroutines (fanout.go).
	detached *detachedStreams
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.poll_sse",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision sets up the handler.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	h.setDefaults()
	if err := h.validate(); err != nil {
		return err
	}
	upstream, err := parseUpstream(h.Upstream)
	if err != nil {
		return err
	}
	h.upstream = upstream
	if err := metrics.register(ctx.GetMetricsRegistry()); err != nil {
		return fmt.Errorf("registering metrics: %w", err)
	}
	if err := h.loadStore(ctx); err != nil {
		return err
	}
	settings, err := h.topicSettings(h.logger)
	if err != nil {
		return err
	}
	if h.hubKey, err = settings.key(); err != nil {
		return err
	}
	val, _, err := hubs.LoadOrNew(h.hubKey, func() (caddy.Destructor, error) {
		hs, err := h.store.attach(h.logger)
		if err != nil {
			return nil, err
		}
		return newHub(settings, h.logger, hs), nil
	})
	if err != nil {
		return err
	}
	h.hub = val.(*hub)

	lifetime, endStreams := context.WithCancel(ctx)
	h.endStreams = endStreams
	if srv, ok := ctx.Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server); ok {
		srv.RegisterOnShutdown(endStreams)
	}
	h.streaming = &streamConfig{
		heartbeat:    time.Duration(h.Heartbeat),
		writeTimeout: time.Duration(h.WriteTimeout),
		ticker:       newHeartbeatTicker(ctx, time.Duration(h.Heartbeat)),
		done:         lifetime.Done(),
		unsubscribe:  h.hub.unsubscribe,
		logger:       h.logger,
		accessLog:    accessLogger(ctx),
	}
	h.detached = &detachedStreams{cfg: h.streaming, groups: make(map[*topic]*connGroup)}
	return nil
}

// loadStore loads the store module, memory when none is configured, and
// checks it against the interval.
func (h *Handler) loadStore(ctx caddy.Context) error {
	if h.Store == nil {
		h.store = MemoryStore{}
		return nil
	}
	h.storeJSON = append(json.RawMessage(nil), h.Store...)
	mod, err := ctx.LoadModule(h, "Store")
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	s, ok := mod.(store)
	if !ok {
		return fmt.Errorf("store: module %T is not a poll_sse store", mod)
	}
	if err := checkStoreInterval(s, time.Duration(h.Interval)); err != nil {
		return err
	}
	h.store = s
	return nil
}

// Validate checks the configuration.
func (h *Handler) Validate() error {
	if err := h.validate(); err != nil {
		return err
	}
	_, err := parseUpstream(h.Upstream)
	return err
}

// Cleanup releases the handler's hub; its pollers stop when no loaded
// configuration uses it.
func (h *Handler) Cleanup() error {
	if h.endStreams != nil {
		h.endStreams()
	}
	if h.hubKey != "" {
		_, err := hubs.Delete(h.hubKey)
		return err
	}
	return nil
}

// ServeHTTP subscribes the request to its topic and streams events until the
// client leaves, the configuration is unloaded or the server stops.
//
// The stream is served from a frame of its own, below this one's: the
// request's goroutine holds the stream's whole life, and each byte of the
// frames beneath Caddy's handler chain stays on its stack, which grows from
// 8 KB to 16 KB at a few hundred bytes more (on HTTP/2, whose writes go
// deepest).
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	topicURL, ok, err := h.target(w, r)
	if !ok {
		return err
	}
	t, at, err := h.open(w, r, topicURL)
	if t == nil {
		return err
	}
	flushHeaders(w, r)
	h.streaming.serve(h.detached, w, r, t, at, retryFrame(time.Duration(h.Retry)))
	return nil
}

// flushHeaders writes the stream's headers. Those of an HTTP/1.1 stream
// that Caddy records for its access log are written on a goroutine of their
// own: the request's goroutine then holds the stream's whole life, and
// net/http writes HTTP/1.1 headers in a 2.8 KB frame, which beneath Caddy's
// handler chain would move it to a 16 KB stack for good. Any other stream's
// request goroutine returns once its connection is taken over, or writes no
// headers itself (HTTP/2, HTTP/3), and is not worth another goroutine. An
// error shows at the first write of the stream.
func flushHeaders(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor != 1 || !recorded(w) {
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		http.NewResponseController(w).Flush()
	}()
	<-done
}

// recorded tells whether w is, or wraps, one of Caddy's response
// recorders, as the writer of a request that Caddy logs is.
func recorded(w http.ResponseWriter) bool { return recorderOf(w) != nil }

// recorderOf returns the response recorder of Caddy's that w is or wraps,
// nil if none.
func recorderOf(w http.ResponseWriter) caddyhttp.ResponseRecorder {
	for {
		if rec, ok := w.(caddyhttp.ResponseRecorder); ok {
			return rec
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return nil
		}
		w = u.Unwrap()
	}
}

// target returns the URL of the request's topic, with ok set, or answers a
// request that gets no stream. Its frame is a small one, since Caddy's
// replacer, which expands the URL's placeholders, goes deep.
func (h *Handler) target(w http.ResponseWriter, r *http.Request) (topicURL string, ok bool, err error) {
	if r.Method != http.MethodGet {
		return "", false, h.serveOtherMethod(w, r)
	}
	// An EventSource's request has no body. Over HTTP/1.1, a body would
	// come after the request on the connection that a detached stream
	// takes over, and Caddy arms a read deadline for draining it when the
	// handler returns, which would cut the stream. An HTTP/2 or HTTP/3
	// request without Content-Length has ContentLength -1 whether or not
	// data follows (every HTTP/3 GET has), and is no body.
	if r.ContentLength > 0 || (r.ProtoMajor == 1 && r.ContentLength < 0) {
		return "", false, h.writeRefusal(w, http.StatusBadRequest, errors.New("a stream is requested without a body, and this request has one"))
	}
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	topicURL, err = h.upstream.expand(repl)
	if err != nil {
		if isBadPlaceholder(err) {
			return "", false, h.writeRefusal(w, http.StatusBadRequest, err)
		}
		return "", false, caddyhttp.Error(http.StatusInternalServerError, err)
	}
	return topicURL, true, nil
}

// open subscribes a request to the topic of topicURL and returns the
// subscription and where in the log its stream starts, with the stream's
// headers written, or answers the request and returns nil.
func (h *Handler) open(w http.ResponseWriter, r *http.Request, topicURL string) (*topic, cursor, error) {
	t, err := h.hub.subscribe(topicURL, h.hub.forwardedHeader(r), clientAddress(r))
	if err != nil {
		status, retry := http.StatusServiceUnavailable, time.Duration(h.Retry)
		if tooMany, ok := errors.AsType[*newTopicsError](err); ok {
			status, retry = http.StatusTooManyRequests, tooMany.retryAfter
		}
		w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds(retry)))
		return nil, 0, h.writeRefusal(w, status, err)
	}
	// A stream, once it starts, unsubscribes when it ends.
	streaming := false
	defer func() {
		if !streaming {
			h.hub.unsubscribe(t)
		}
	}()
	// While the upstream's latest answer for the topic refuses its
	// credentials, a subscriber gets that 401 or 403, and EventSource
	// stops. A stream that is already open when the upstream refuses them
	// before its first snapshot ends (subscriber.follow and
	// subscriber.service), so that its browser's reconnect gets the status.
	if status := t.deniedStatus(); status != 0 {
		return nil, 0, h.writeRefusal(w, status, fmt.Errorf("the upstream answered %d to the request of this subscriber", status))
	}

	lastEventID := r.Header.Get("Last-Event-ID")
	if lastEventID == "" {
		lastEventID = r.URL.Query().Get("last_event_id")
	}
	at := t.log.resume(lastEventID)
	metrics.countResume(lastEventID, at)

	hdr := w.Header()
	hdr.Set("Content-Type", "text/event-stream")
	hdr.Set("Cache-Control", "no-cache")
	hdr.Set("X-Accel-Buffering", "no")
	hdr.Del("Content-Length")
	w.WriteHeader(http.StatusOK)

	streaming = true
	return t, at, nil
}

// serveOtherMethod answers a request of another method than GET, which
// gets no stream.
func (h *Handler) serveOtherMethod(w http.ResponseWriter, r *http.Request) error {
	switch r.Method {
	case http.MethodHead:
		// The headers a stream starts with, without a stream: a HEAD polls
		// nothing, so it cannot tell whether a GET would be refused.
		hdr := w.Header()
		hdr.Set("Content-Type", "text/event-stream")
		hdr.Set("Cache-Control", "no-cache")
		w.WriteHeader(http.StatusOK)
		return nil
	case http.MethodOptions:
		// Headers that the site sets, such as those of CORS, go with it.
		w.Header().Set("Allow", allowedMethods)
		w.WriteHeader(http.StatusNoContent)
		return nil
	default:
		w.Header().Set("Allow", allowedMethods)
		return h.writeRefusal(w, http.StatusMethodNotAllowed, fmt.Errorf("method %s: a stream is read with GET", r.Method))
	}
}

// allowedMethods is the Allow header of the handler's answers.
const allowedMethods = "GET, HEAD, OPTIONS"

// writeRefusal answers a subscriber that gets no stream with status and
// err's text, and logs it at Debug. It hands Caddy no error: Caddy's error
// log writes the request's headers, hiding Authorization and Cookie but not
// the other headers that forward_headers may name, and this is a response
// to which the subscriber's credentials lead. (The caps log their own Warn
// line.)
func (h *Handler) writeRefusal(w http.ResponseWriter, status int, err error) error {
	if ce := h.logger.Check(zap.DebugLevel, "subscriber refused"); ce != nil {
		ce.Write(zap.Int("status", status), zap.Error(err))
	}
	hdr := w.Header()
	hdr.Set("Content-Type", "text/plain; charset=utf-8")
	hdr.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	fmt.Fprintln(w, err)
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)

// retryAfterSeconds returns d in whole seconds, rounded up, at least 1, for
// a Retry-After header.
func retryAfterSeconds(d time.Duration) int {
	return max(1, int((d+time.Second-1)/time.Second))
}
