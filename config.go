package pollsse

import (
	"net/http"
	"time"
)

// Defaults of the hub's caps.
const (
	defaultMaxTopics      = 1000
	defaultMaxSubscribers = 10000
	defaultMaxBody        = 10 << 20
)

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
