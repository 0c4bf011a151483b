package pollsse

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// Defaults of the hub's caps.
const (
	defaultMaxTopics      = 1000
	defaultMaxSubscribers = 10000
	defaultMaxBody        = 10 << 20
)

// topicSettings is what a topic needs from the handler's configuration.
type topicSettings struct {
	Interval    time.Duration
	IdleTimeout time.Duration
	Timeout     time.Duration
	History     int
	HeaderUp    http.Header
	differ      differ

	// MaxBackoff is the longest wait between polls of a failing upstream.
	MaxBackoff time.Duration
	// MaxBody is the largest response body read, in bytes.
	MaxBody int64
	// ForwardHeaders are the canonical names of the subscriber's headers
	// that are sent to the upstream; they are part of the topic's key.
	ForwardHeaders []string
	MaxTopics      int
	MaxSubscribers int
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

// minInterval is the shortest interval, and minIntervalReason why.
const (
	minInterval       = 100 * time.Millisecond
	minIntervalReason = "so that no topic polls its upstream more than ten times a second"
)

func (h *Handler) validate() error {
	if h.Upstream == "" {
		return fmt.Errorf("upstream: required")
	}
	for name, d := range map[string]caddy.Duration{
		"interval": h.Interval, "retry": h.Retry, "heartbeat": h.Heartbeat,
		"idle_timeout": h.IdleTimeout, "timeout": h.Timeout, "write_timeout": h.WriteTimeout,
		"max_backoff": h.MaxBackoff,
	} {
		if d < 0 {
			return fmt.Errorf("%s: must be positive, not %s", name, time.Duration(d))
		}
	}
	if h.Interval != 0 && time.Duration(h.Interval) < minInterval {
		return fmt.Errorf("interval: must be at least %s, not %s, %s", minInterval, time.Duration(h.Interval), minIntervalReason)
	}
	if h.History < 0 {
		return fmt.Errorf("history: must be positive, not %d", h.History)
	}
	for name, n := range map[string]int64{
		"max_body": h.MaxBody, "max_topics": int64(h.MaxTopics), "max_subscribers": int64(h.MaxSubscribers),
	} {
		if n < 0 {
			return fmt.Errorf("%s: must be positive, not %d", name, n)
		}
	}
	for name, values := range h.HeaderUp {
		for _, v := range values {
			if err := checkHeaderUp(name, v); err != nil {
				return err
			}
		}
	}
	if err := checkForwardHeaders(h.ForwardHeaders, h.HeaderUp); err != nil {
		return err
	}
	if _, err := newDiffer(h.Mode, h.Select, h.Ignore); err != nil {
		return err
	}
	return nil
}

// checkHeaderUp refuses a header_up value with a placeholder that Caddy's
// global replacer does not know, such as one of the request: header_up
// values are replaced once, when the configuration loads, and such a
// placeholder would reach the upstream as its literal text. It reads no
// file and no variable.
func checkHeaderUp(name, value string) error {
	global := caddy.NewReplacer()
	var unknown string
	// An empty replacer knows nothing, so that f sees every placeholder
	// without one being read.
	_, _ = caddy.NewEmptyReplacer().ReplaceFunc(value, func(key string, _ any) (any, error) {
		if unknown == "" && !strings.HasPrefix(key, "file.") {
			if _, known := global.Get(key); !known {
				unknown = key
			}
		}
		return nil, nil
	})
	if unknown != "" {
		return fmt.Errorf("header_up %s: placeholder {%s} has no value when the configuration loads and "+
			"header_up values are read (Caddy's global placeholders, such as {env.*} and {file.*}, have one); "+
			"to send a header of the subscriber's request, use forward_headers", name, unknown)
	}
	return nil
}

// Defaults of the upstream protection.
const (
	defaultMaxBackoff = time.Minute
)
