package pollsse

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
)

// Defaults of the configuration, each documented on its Handler field.
const (
	defaultInterval        = 2 * time.Second
	defaultRetry           = 3 * time.Second
	defaultHeartbeat       = 15 * time.Second
	defaultHistory         = 256
	defaultIdleTimeout     = 30 * time.Second
	defaultTimeout         = 10 * time.Second
	defaultWriteTimeout    = 10 * time.Second
	defaultMaxBackoff      = time.Minute
	defaultMaxBody         = 10 << 20
	defaultMaxTopics       = 1000
	defaultMaxSubscribers  = 10000
	defaultMaxNewTopics    = 30
	defaultMaxNewTopicsPer = time.Minute
	defaultMode            = modeJSONPatch
)

// minNewTopicsPer is the shortest period of max_new_topics, and
// minNewTopicsPerReason why.
const (
	minNewTopicsPer       = time.Second
	minNewTopicsPerReason = "as Retry-After counts whole seconds"
)

// minInterval is the shortest interval, and minIntervalReason why.
const (
	minInterval       = 100 * time.Millisecond
	minIntervalReason = "so that no topic polls its upstream more than ten times a second"
)

// setDefaults gives every setting left at zero its default.
func (h *Handler) setDefaults() {
	setDefault(&h.Interval, caddy.Duration(defaultInterval))
	setDefault(&h.Retry, caddy.Duration(defaultRetry))
	setDefault(&h.Heartbeat, caddy.Duration(defaultHeartbeat))
	setDefault(&h.History, defaultHistory)
	setDefault(&h.IdleTimeout, caddy.Duration(defaultIdleTimeout))
	setDefault(&h.Timeout, caddy.Duration(defaultTimeout))
	setDefault(&h.WriteTimeout, caddy.Duration(defaultWriteTimeout))
	setDefault(&h.MaxBackoff, caddy.Duration(defaultMaxBackoff))
	setDefault(&h.MaxBody, defaultMaxBody)
	setDefault(&h.MaxTopics, defaultMaxTopics)
	setDefault(&h.MaxSubscribers, defaultMaxSubscribers)
	setDefault(&h.MaxNewTopics, defaultMaxNewTopics)
	setDefault(&h.MaxNewTopicsPer, caddy.Duration(defaultMaxNewTopicsPer))
	setDefault(&h.Mode, defaultMode)
}

func setDefault[T comparable](setting *T, value T) {
	var zero T
	if *setting == zero {
		*setting = value
	}
}

// validate checks the settings, each error naming the setting and the bad
// value. Settings at zero, before setDefaults, pass.
func (h *Handler) validate() error {
	if h.Upstream == "" {
		return fmt.Errorf("upstream: required")
	}
	for name, d := range map[string]caddy.Duration{
		"interval": h.Interval, "retry": h.Retry, "heartbeat": h.Heartbeat,
		"idle_timeout": h.IdleTimeout, "timeout": h.Timeout, "write_timeout": h.WriteTimeout,
		"max_backoff": h.MaxBackoff, "max_new_topics_per": h.MaxNewTopicsPer,
	} {
		if d < 0 {
			return fmt.Errorf("%s: must be positive, not %s", name, time.Duration(d))
		}
	}
	if h.Interval != 0 && time.Duration(h.Interval) < minInterval {
		return fmt.Errorf("interval: must be at least %s, not %s, %s", minInterval, time.Duration(h.Interval), minIntervalReason)
	}
	if h.MaxNewTopicsPer != 0 && time.Duration(h.MaxNewTopicsPer) < minNewTopicsPer {
		return fmt.Errorf("max_new_topics_per: must be at least %s, not %s, %s", minNewTopicsPer, time.Duration(h.MaxNewTopicsPer), minNewTopicsPerReason)
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

// topicSettings are the settings that shape a hub's topics, with the values
// that the Handler's settings of the same names take once their defaults
// are set and header_up is read. Handlers whose topic settings are equal
// share one hub (key), and with it the pollers, documents, histories and
// ids of its topics, across reloads. Every other setting of the Handler is
// one of perHandlerSettings, which each handler applies to its own streams.
type topicSettings struct {
	Upstream    string
	Interval    time.Duration
	History     int
	IdleTimeout time.Duration
	Timeout     time.Duration
	// HeaderUp holds the values of the placeholders, read when the
	// configuration loads: a changed value (an API key rotated in a
	// file) makes other topics.
	HeaderUp   http.Header
	MaxBackoff time.Duration
	MaxBody    int64
	// ForwardHeaders are the canonical names of the subscriber's headers
	// that are sent to the upstream, each once; the values are part of
	// the key of each topic.
	ForwardHeaders []string
	MaxTopics      int
	MaxSubscribers int
	// MaxNewTopics is -1 when the limit is off, and MaxNewTopicsPer
	// then 0.
	MaxNewTopics    int
	MaxNewTopicsPer time.Duration
	Mode            string
	Select          string
	Ignore          []string
	// Store is the JSON of the store module, null for the default
	// (memory): topics of one store share its ids and pollers.
	Store json.RawMessage

	// differ is made of Mode, Select and Ignore; restore is the differ
	// of Mode alone, which makes a document of a snapshot's data.
	differ, restore differ
}

// perHandlerSettings are the settings of the Handler, by JSON name, that
// are not topic settings: handlers that differ only in them share a hub.
var perHandlerSettings = []string{"retry", "heartbeat", "write_timeout"}

// topicSettings returns the topic settings of h, whose defaults are set and
// which is valid. It reads the values of header_up's placeholders, and logs
// to logger those of empty environment variables.
func (h *Handler) topicSettings(logger *zap.Logger) (topicSettings, error) {
	d, err := newDiffer(h.Mode, h.Select, h.Ignore)
	if err != nil {
		return topicSettings{}, err
	}
	restore, err := newDiffer(h.Mode, "", nil)
	if err != nil {
		return topicSettings{}, err
	}
	headerUp, err := readHeaderUp(h.HeaderUp, logger)
	if err != nil {
		return topicSettings{}, err
	}
	maxNewTopics, maxNewTopicsPer := h.MaxNewTopics, time.Duration(h.MaxNewTopicsPer)
	if maxNewTopics < 0 {
		maxNewTopics, maxNewTopicsPer = -1, 0
	}
	return topicSettings{
		Upstream:        h.Upstream,
		Interval:        time.Duration(h.Interval),
		History:         h.History,
		IdleTimeout:     time.Duration(h.IdleTimeout),
		Timeout:         time.Duration(h.Timeout),
		HeaderUp:        headerUp,
		MaxBackoff:      time.Duration(h.MaxBackoff),
		MaxBody:         h.MaxBody,
		ForwardHeaders:  canonicalHeaderNames(h.ForwardHeaders),
		MaxTopics:       h.MaxTopics,
		MaxSubscribers:  h.MaxSubscribers,
		MaxNewTopics:    maxNewTopics,
		MaxNewTopicsPer: maxNewTopicsPer,
		Mode:            h.Mode,
		Select:          h.Select,
		Ignore:          h.Ignore,
		Store:           h.storeConfig(),
		differ:          d,
		restore:         restore,
	}, nil
}

// storeConfig returns the JSON of the handler's store module, nil for the
// default: Provision keeps it before it loads the module, which empties
// the field.
func (h *Handler) storeConfig() json.RawMessage {
	if h.storeJSON != nil {
		return h.storeJSON
	}
	return h.Store
}

// scope returns the settings that make a topic's documents out of its
// upstream's answers, which name its topics in a shared store along with
// their keys (hub.topicID).
func (s topicSettings) scope() string {
	b, _ := json.Marshal(struct {
		Mode, Select   string
		Ignore         []string
		HeaderUp       http.Header
		ForwardHeaders []string
		MaxBody        int64
	}{s.Mode, s.Select, s.Ignore, s.HeaderUp, s.ForwardHeaders, s.MaxBody})
	return string(b)
}

// key returns the key of s in the pool of hubs: all of its exported
// fields.
func (s topicSettings) key() (string, error) {
	key, err := json.Marshal(s)
	if err != nil {
		return "", fmt.Errorf("encoding hub key: %w", err)
	}
	return string(key), nil
}

// readHeaderUp returns the header_up headers with their placeholders
// replaced, once, now: validate has refused those that Caddy's global
// replacer does not know. An environment variable that is empty or unset
// is logged at Warn, without a value.
func readHeaderUp(headerUp http.Header, logger *zap.Logger) (http.Header, error) {
	if headerUp == nil {
		return nil, nil
	}
	read := make(http.Header, len(headerUp))
	repl := caddy.NewReplacer()
	for name, values := range headerUp {
		for _, v := range values {
			value, err := repl.ReplaceFunc(v, func(key string, val any) (any, error) {
				if variable, ok := strings.CutPrefix(key, "env."); ok && caddy.ToString(val) == "" {
					logger.Warn("header_up: environment variable is empty or unset",
						zap.String("header", name), zap.String("variable", variable))
				}
				return val, nil
			})
			if err != nil {
				return nil, fmt.Errorf("header_up %s: %w", name, err)
			}
			read[name] = append(read[name], value)
		}
	}
	return read, nil
}
