// Package pollsse is a Caddy HTTP handler that turns a JSON API that clients
// would poll into a Server-Sent Events stream: it polls the upstream once per
// interval for all subscribers of a resource together, compares each response
// with the last, and sends a snapshot followed by JSON Patch events.
package pollsse

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Defaults of the configuration.
const (
	defaultInterval     = 2 * time.Second
	defaultRetry        = 3 * time.Second
	defaultHeartbeat    = 15 * time.Second
	defaultHistory      = 256
	defaultIdleTimeout  = 30 * time.Second
	defaultTimeout      = 10 * time.Second
	defaultWriteTimeout = 10 * time.Second
)

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

	// How often to poll each upstream. Default: 2s.
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

	// How long one write to a client may block. A client that takes no data
	// for this long (it stopped reading, or its network is gone) is
	// disconnected, and its browser reconnects and resumes by id. Default: 10s.
	WriteTimeout caddy.Duration `json:"write_timeout,omitempty"`

	// Headers set on every upstream request, such as an API key. `Accept:
	// application/json` is sent unless set here.
	HeaderUp http.Header `json:"header_up,omitempty"`

	logger   *zap.Logger
	upstream *upstreamTemplate
	hubKey   string
	hub      *hub
	ticker   *heartbeatTicker

	// streams ends when the configuration is unloaded or the server begins
	// to shut down: Caddy cancels the contexts of open requests on neither.
	streams     context.Context
	stopStreams context.CancelFunc
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
	if h.Interval == 0 {
		h.Interval = caddy.Duration(defaultInterval)
	}
	if h.Retry == 0 {
		h.Retry = caddy.Duration(defaultRetry)
	}
	if h.Heartbeat == 0 {
		h.Heartbeat = caddy.Duration(defaultHeartbeat)
	}
	if h.History == 0 {
		h.History = defaultHistory
	}
	if h.IdleTimeout == 0 {
		h.IdleTimeout = caddy.Duration(defaultIdleTimeout)
	}
	if h.Timeout == 0 {
		h.Timeout = caddy.Duration(defaultTimeout)
	}
	if h.WriteTimeout == 0 {
		h.WriteTimeout = caddy.Duration(defaultWriteTimeout)
	}
	if err := h.validate(); err != nil {
		return err
	}
	upstream, err := parseUpstream(h.Upstream)
	if err != nil {
		return err
	}
	h.upstream = upstream

	cfg := topicConfig{
		interval:    time.Duration(h.Interval),
		idleTimeout: time.Duration(h.IdleTimeout),
		timeout:     time.Duration(h.Timeout),
		history:     h.History,
		headerUp:    h.HeaderUp,
		differ:      jsonPatchDiffer{},
	}
	key, err := json.Marshal(struct {
		Upstream    string
		Interval    time.Duration
		IdleTimeout time.Duration
		Timeout     time.Duration
		History     int
		HeaderUp    http.Header
	}{h.Upstream, cfg.interval, cfg.idleTimeout, cfg.timeout, cfg.history, cfg.headerUp})
	if err != nil {
		return fmt.Errorf("encoding hub key: %w", err)
	}
	h.hubKey = string(key)
	val, _, err := hubs.LoadOrNew(h.hubKey, func() (caddy.Destructor, error) {
		return newHub(cfg, h.logger), nil
	})
	if err != nil {
		return err
	}
	h.hub = val.(*hub)

	h.streams, h.stopStreams = context.WithCancel(ctx)
	if srv, ok := ctx.Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server); ok {
		srv.RegisterOnShutdown(func() { h.stopStreams() })
	}
	h.ticker = newHeartbeatTicker(ctx, time.Duration(h.Heartbeat))
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

func (h *Handler) validate() error {
	if h.Upstream == "" {
		return fmt.Errorf("upstream: required")
	}
	for name, d := range map[string]caddy.Duration{
		"interval": h.Interval, "retry": h.Retry, "heartbeat": h.Heartbeat,
		"idle_timeout": h.IdleTimeout, "timeout": h.Timeout, "write_timeout": h.WriteTimeout,
	} {
		if d < 0 {
			return fmt.Errorf("%s: must be positive, not %s", name, time.Duration(d))
		}
	}
	if h.History < 0 {
		return fmt.Errorf("history: must be positive, not %d", h.History)
	}
	return nil
}

// Cleanup releases the handler's hub; its pollers stop when no loaded
// configuration uses it.
func (h *Handler) Cleanup() error {
	if h.stopStreams != nil {
		h.stopStreams()
	}
	if h.hubKey != "" {
		_, err := hubs.Delete(h.hubKey)
		return err
	}
	return nil
}

// ServeHTTP subscribes the request to its topic and streams events until the
// client leaves, the configuration is unloaded or the server stops.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		return caddyhttp.Error(http.StatusMethodNotAllowed, fmt.Errorf("method %s: a stream is read with GET", r.Method))
	}
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	topicURL, err := h.upstream.expand(repl)
	if err != nil {
		if isBadPlaceholder(err) {
			return caddyhttp.Error(http.StatusBadRequest, err)
		}
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	t := h.hub.subscribe(topicURL)
	defer h.hub.unsubscribe(t)

	lastEventID := r.Header.Get("Last-Event-ID")
	if lastEventID == "" {
		lastEventID = r.URL.Query().Get("last_event_id")
	}
	cursor := t.log.resume(lastEventID)

	hdr := w.Header()
	hdr.Set("Content-Type", "text/event-stream")
	hdr.Set("Cache-Control", "no-cache")
	hdr.Set("X-Accel-Buffering", "no")
	hdr.Del("Content-Length")
	w.WriteHeader(http.StatusOK)

	ew := newEventWriter(w, time.Duration(h.WriteTimeout))
	if err := ew.write(retryFrame(time.Duration(h.Retry))); err != nil {
		return nil
	}
	h.stream(r.Context(), ew, t.log, cursor)
	return nil
}

// maxFramesPerRead bounds the frames a subscriber takes from the log at once.
const maxFramesPerRead = 64

// stream writes the log's events to one subscriber from cursor on, and
// heartbeats in the silences, until the subscriber or the server goes. It is
// the only goroutine that writes to the response. A subscriber that falls
// behind only delays itself: when it has missed more than the history holds,
// its next read is a fresh snapshot; when a write blocks for the write
// timeout, the stream ends, and the browser reconnects and resumes by id.
func (h *Handler) stream(ctx context.Context, ew *eventWriter, log eventLog, cursor uint64) {
	buf := make([][]byte, 0, maxFramesPerRead)
	heartbeat := time.Duration(h.Heartbeat)
	for {
		frames, next, wake := log.read(cursor, buf[:0])
		for _, f := range frames {
			if err := ew.write(f); err != nil {
				return
			}
		}
		cursor = next
		if len(frames) > 0 {
			continue
		}
		select {
		case <-wake:
		case <-h.ticker.tick():
			if time.Since(ew.last) >= heartbeat {
				if err := ew.write(heartbeatFrame); err != nil {
					return
				}
			}
		case <-ctx.Done():
			return
		case <-h.streams.Done():
			return
		}
	}
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
