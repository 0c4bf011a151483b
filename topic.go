package pollsse

import (
	"context"
	"net/http"
	"sync/atomic"
	"time"
)

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
	cancel context.CancelFunc
	// upstreamState is what the topic's poller tells its streams besides
	// the log.
	upstreamState

	// subscribers and lastLeave are guarded by hub.mu.
	subscribers int
	lastLeave   time.Time
}

// An upstreamState is what the poller of a topic tells the topic's streams
// besides the log: whether the upstream refuses the topic's credentials,
// and whether the topic's first document is in the log.
type upstreamState struct {
	// denied is 401 or 403 while the upstream's latest answer is that
	// status, else 0.
	denied atomic.Int32
	// refused is closed and replaced whenever denied becomes non-zero, so
	// that the streams still waiting for their first snapshot end.
	refused atomic.Pointer[chan struct{}]
	// documented is set once the poller has put the topic's first document
	// in its log.
	documented atomic.Bool
}

// newTopic returns the topic of key, which polls url with the forwarded
// header values header into log until cancel is called.
func newTopic(key, id, url string, header http.Header, log eventLog, cancel context.CancelFunc) *topic {
	t := &topic{key: key, id: id, url: url, header: header, log: log, cancel: cancel}
	refused := make(chan struct{})
	t.refused.Store(&refused)
	return t
}

// setDenied records whether the upstream's answer to the latest poll
// refuses the topic's credentials: status is the upstream's HTTP status when the
// poll failed for one, else 0. A refusal closes the channel of
// refusedChan, which ends the streams still waiting for their first
// snapshot.
func (s *upstreamState) setDenied(status int) {
	if !refusal(status) {
		s.denied.Store(0)
		return
	}
	if s.denied.Swap(int32(status)) == 0 {
		ch := make(chan struct{})
		close(*s.refused.Swap(&ch))
	}
}

// refusal tells whether an upstream's HTTP status refuses the credentials
// of the request.
func refusal(status int) bool {
	return status == http.StatusUnauthorized || status == http.StatusForbidden
}

// deniedStatus returns 401 or 403 while the upstream's latest answer
// refused the topic's credentials, and 0 otherwise.
func (s *upstreamState) deniedStatus() int { return int(s.denied.Load()) }

// refusedChan returns a channel that is closed when the upstream next
// refuses the topic's credentials.
func (s *upstreamState) refusedChan() <-chan struct{} { return *s.refused.Load() }

// setDocumented records that the topic's first document is in its log.
func (s *upstreamState) setDocumented() { s.documented.Store(true) }

// refusedBeforeSnapshot tells whether a stream whose last read of the log
// came back empty should end: the upstream refuses the topic's credentials,
// and the topic has no document, so that the stream has had no snapshot
// (it may have had the status event of an earlier failure). Its browser
// reconnects, and the new request gets the 401 or 403 as its response, so
// that EventSource stops.
func (s *upstreamState) refusedBeforeSnapshot() bool {
	// denied first: a topic refused after its first document was
	// documented before.
	return s.denied.Load() != 0 && !s.documented.Load()
}
