package pollsse

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"go.uber.org/zap"
)

// A poller fetches one topic's upstream and appends what changed to the
// topic's log. It runs on one goroutine, so at most one upstream request of a
// topic is in flight at any time. It is given what it polls with when it is
// made (hub.newPoller).
type poller struct {
	url string
	// headerUp and forwarded are the header_up headers and the
	// subscriber's forwarded ones, sent with every request.
	headerUp, forwarded http.Header
	timeout             time.Duration
	maxBody             int64
	client              *http.Client
	differ              differ
	// restore makes a document of the snapshot data of the log's current
	// one: the differ of the same mode without select and ignore, which
	// that data has been through already.
	restore differ
	log     eventLog
	// topicID names the topic in status events.
	topicID string
	// state tells the topic's streams of refusals and of the first
	// document.
	state *upstreamState
	// pace waits for the turn of a poll among the hub's (hub.pace).
	pace func(context.Context) bool
	// removeIfIdle removes the topic from its hub once it has been idle for
	// the idle timeout (hub.removeIfIdle).
	removeIfIdle func() (until time.Time, removed bool)
	logger       *zap.Logger
	sched        schedule

	// prev is the last document that parsed, nil until the first success.
	prev *document
	// etag and lastModified are the validators of the response that made
	// prev, sent as If-None-Match and If-Modified-Since; neither when the
	// response's Last-Modified is weak (validators).
	etag, lastModified string
	// failing is set while polls fail, so that the transitions, not the
	// polls, make log lines and status events.
	failing bool
	// downSent is set while subscribers have been told that the upstream
	// is down: a refusal before the first document tells them nothing.
	downSent bool
	// failures counts the failed polls since the last success.
	failures int
	// wait is how long after the start of the last poll the next one starts.
	wait time.Duration
	// term is the log's term (eventLog.lead) in which prev was written or
	// read, 0 while another instance polls the topic.
	term uint64
	// toldDenied is the refusal (401, 403, or 0 for none) that the log
	// last recorded for the other instances (eventLog.refused), -1 when
	// not known, as when this instance has just taken the topic over.
	toldDenied int
	// lastPoll is when the last poll started: however often the polling
	// of the topic moves between instances, this one polls it at most once
	// per interval.
	lastPoll time.Time
}

// run polls the topic's upstream, starting at once, then after each poll
// waits the interval, or a backoff while polls fail, until ctx ends or the
// topic has had no subscriber for the idle timeout.
func (p *poller) run(ctx context.Context) {
	p.wait = p.sched.next(0, 0)
	p.logger.Info("topic started", zap.Duration("interval", p.sched.interval))
	defer p.logger.Info("topic stopped")
	metrics.topics.Inc()
	defer metrics.topics.Dec()

	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		var next time.Time
		if term, recheck := p.log.lead(ctx); term == 0 {
			// Another instance polls the topic: ask again after
			// recheck, to take over within its lease if it goes.
			p.follow()
			next = time.Now().Add(recheck)
		} else {
			if term != p.term {
				p.takeOver(ctx, term)
			}
			if wait := time.Until(p.lastPoll.Add(p.sched.interval)); wait > 0 && !p.sleep(ctx, timer, wait) {
				return
			}
			if !p.pace(ctx) {
				return
			}
			start := time.Now()
			p.lastPoll = start
			p.poll(ctx)
			next = start.Add(p.wait)
		}
		// Subscribers neither hasten nor hold back the next poll: a topic
		// whose upstream refuses its credentials polls on the backoff of
		// its failures, whose every step costs one request, while the
		// browsers that come back are answered the refusal, until the idle
		// timeout after its last subscriber ends it.
		for {
			idleUntil, removed := p.removeIfIdle()
			if removed {
				return
			}
			if !time.Now().Before(next) {
				break
			}
			wake := next
			if !idleUntil.IsZero() && idleUntil.Before(wake) {
				wake = idleUntil
			}
			timer.Reset(time.Until(wake))
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
			}
		}
	}
}

// sleep waits for d, and tells whether ctx is still going then.
func (p *poller) sleep(ctx context.Context, timer *time.Timer, d time.Duration) bool {
	timer.Reset(d)
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}

// follow records that another instance polls the topic: what this poller
// knew of the upstream is forgotten, and its next term starts from the
// log's document.
func (p *poller) follow() {
	p.term = 0
}

// takeOver starts a term of polling: the document to diff against is the
// log's current one, which is what every subscriber holds or will read,
// and the state of the upstream is the one the log last recorded.
func (p *poller) takeOver(ctx context.Context, term uint64) {
	p.term = term
	p.toldDenied = -1
	p.etag, p.lastModified = "", ""
	p.failures, p.failing = 0, false
	p.prev, p.downSent = nil, false
	snapshot, down, err := p.log.current(ctx)
	if err == nil && snapshot != nil {
		if doc, err := p.restore.parse(snapshot); err == nil {
			p.prev = doc
			p.state.setDocumented()
		}
	}
	p.downSent = err == nil && down
	p.failing = p.downSent
}

// wrote handles the error of a write to the log: a poller that is no
// longer the topic's stops polling it until lead says otherwise, and
// another error is logged. It tells whether the write was recorded.
func (p *poller) wrote(err error) bool {
	switch {
	case err == nil:
		return true
	case errors.Is(err, errNotPolling):
		p.follow()
	default:
		p.logger.Warn("writing to the store failed", zap.Error(err))
	}
	return false
}

// poll makes one upstream request and appends its outcome to the log.
func (p *poller) poll(ctx context.Context) {
	start := time.Now()
	res, err := p.fetch(ctx)
	if err == nil && res.notModified {
		// 304: the document is unchanged, and nothing is read or parsed.
		p.recovered(ctx)
		metrics.countPoll(pollNotModified, start)
		p.debug("poll not modified", start)
		return
	}
	body := res.body
	var doc *document
	if err == nil {
		if p.prev != nil && bytes.Equal(body, p.prev.body) {
			p.recovered(ctx)
			p.keepValidators(res)
			metrics.countPoll(pollUnchanged, start)
			p.debug("poll unchanged", start)
			return
		}
		doc, err = p.differ.parse(body)
	}
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		metrics.countPoll(pollFailed, start)
		p.failed(ctx, err)
		return
	}
	p.recovered(ctx)
	if p.prev == nil {
		if !p.wrote(p.log.appendEvent(ctx, doc.data, "", nil)) {
			metrics.countPoll(pollChanged, start)
			return
		}
		p.state.setDocumented()
		p.prev = doc
		p.keepValidators(res)
		metrics.countPoll(pollChanged, start)
		p.debug("poll first document", start)
		return
	}
	event, data, err := p.differ.diff(p.prev, doc)
	if err != nil {
		metrics.countPoll(pollFailed, start)
		p.failed(ctx, err)
		return
	}
	p.keepValidators(res)
	if event == "" {
		// Same document in other bytes: keep the new bytes for the next
		// byte comparison.
		p.prev = doc
		metrics.countPoll(pollUnchanged, start)
		p.debug("poll unchanged", start)
		return
	}
	if !p.wrote(p.log.appendEvent(ctx, doc.data, event, data)) {
		metrics.countPoll(pollChanged, start)
		return
	}
	p.prev = doc
	metrics.countPoll(pollChanged, start)
	p.debug("poll changed", start, zap.String("event", event), zap.Int("bytes", len(data)))
}

// keepValidators keeps the validators of the response that made the
// current document, for the conditional requests of the next polls.
func (p *poller) keepValidators(res response) {
	p.etag, p.lastModified = res.etag, res.lastModified
}

func (p *poller) debug(msg string, start time.Time, fields ...zap.Field) {
	if ce := p.logger.Check(zap.DebugLevel, msg); ce != nil {
		ce.Write(append(fields, zap.Duration("duration", time.Since(start)))...)
	}
}

// statusData is the data of a status event.
type statusData struct {
	Upstream string `json:"upstream"`
	// Topic is the topic's id, as in the log lines of its poller.
	Topic  string `json:"topic"`
	Status int    `json:"status,omitempty"`
	Error  string `json:"error,omitempty"`
	// RetryInMS is how long until the next poll, in milliseconds.
	RetryInMS int64 `json:"retry_in_ms,omitempty"`
}

// failed records a failed poll and schedules the next one with a backoff.
// The first failure of an outage is logged at Warn, the others at Debug,
// and subscribers are told of the outage once, with a down status event,
// not of every failed poll. Those that wait for the topic's first document
// are told too, except of a refusal of the topic's credentials, which ends
// their streams instead, so that their browsers' reconnects get the 401 or
// 403.
//
// A poll that could not be sent for want of resources on this machine
// (outOfLocalResources) is not counted as a failure of the upstream, which
// heard nothing: the next poll is at the interval, so that the topic polls
// on as soon as they are back instead of backing off for up to max_backoff.
// It is logged at Error, once per outage, since only the operator can
// help.
func (p *poller) failed(ctx context.Context, err error) {
	local := outOfLocalResources(err)
	if !local {
		p.failures++
	}
	var status int
	var retryAfter time.Duration
	var ue *upstreamError
	if errors.As(err, &ue) {
		status, retryAfter = ue.status, ue.retryAfter
	}
	p.wait = p.sched.next(p.failures, retryAfter)
	p.state.setDenied(status)
	p.tellDenied(ctx, status)
	if p.failing {
		if ce := p.logger.Check(zap.DebugLevel, "poll failed"); ce != nil {
			ce.Write(zap.Error(describeRequestError(err)), zap.Int("failures", p.failures), zap.Duration("retry_in", p.wait))
		}
	} else {
		p.failing = true
		if local {
			p.logger.Error("polls cannot be sent: this process is out of resources (open files: ulimit -n, or local ports); polling on at the interval",
				zap.Error(describeRequestError(err)), zap.Duration("retry_in", p.wait))
		} else {
			p.logger.Warn("upstream failing", zap.Error(describeRequestError(err)), zap.Duration("retry_in", p.wait))
		}
	}
	if p.downSent || p.prev == nil && refusal(status) {
		return
	}
	p.downSent = true
	data := statusData{Upstream: "down", Topic: p.topicID, Status: status, Error: publicError(err), RetryInMS: max(p.wait.Milliseconds(), 1)}
	b, _ := json.Marshal(data)
	p.wrote(p.log.setStatus(ctx, b, true))
}

// tellDenied records in the log whether the upstream refuses the topic's
// credentials, for the instances that follow the topic, when that changed:
// status is the failed poll's HTTP status, 0 for a success.
func (p *poller) tellDenied(ctx context.Context, status int) {
	if !refusal(status) {
		status = 0
	}
	if status != p.toldDenied && p.wrote(p.log.refused(ctx, status)) {
		p.toldDenied = status
	}
}

// recovered records a successful poll, after failures or not.
func (p *poller) recovered(ctx context.Context) {
	p.failures = 0
	p.wait = p.sched.next(0, 0)
	p.state.setDenied(0)
	p.tellDenied(ctx, 0)
	if !p.failing {
		return
	}
	p.failing = false
	p.logger.Info("upstream recovered")
	if !p.downSent {
		return
	}
	p.downSent = false
	b, _ := json.Marshal(statusData{Upstream: "up", Topic: p.topicID})
	p.wrote(p.log.setStatus(ctx, b, false))
}

// A response is the part of a successful upstream answer that a poll uses.
type response struct {
	body []byte
	// notModified is set for a 304 answer to a conditional request.
	notModified bool
	// etag and lastModified are the response's validators.
	etag, lastModified string
}

// fetch makes one GET request to the upstream, conditional once there is a
// document, and returns the successful answer. Redirects are followed only
// to the same origin (checkRedirect); no more of the body than max_body
// is read.
func (p *poller) fetch(ctx context.Context) (response, error) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	req, err := newUpstreamRequest(ctx, p.url, p.headerUp, p.forwarded)
	if err != nil {
		return response{}, err
	}
	if p.prev != nil {
		if p.etag != "" {
			req.Header.Set("If-None-Match", p.etag)
		}
		if p.lastModified != "" {
			req.Header.Set("If-Modified-Since", p.lastModified)
		}
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return response{}, err
	}
	received := time.Now()
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotModified && p.prev != nil {
		return response{notModified: true}, nil
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		// Read a little of an error page, so that the connection can be
		// used again.
		io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		return response{}, &upstreamError{
			status:     resp.StatusCode,
			retryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()),
		}
	}
	if resp.ContentLength > p.maxBody {
		return response{}, &bodyTooLargeError{p.maxBody}
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, p.maxBody+1))
	if err != nil {
		return response{}, fmt.Errorf("reading response body: %w", err)
	}
	if int64(len(body)) > p.maxBody {
		return response{}, &bodyTooLargeError{p.maxBody}
	}
	etag, lastModified := validators(resp.Header, received)
	return response{body: body, etag: etag, lastModified: lastModified}, nil
}

// validators returns the ETag and the Last-Modified of a response received
// at received that the next poll may send back, "" for each that it may
// not. An ETag is sent back unless the response's Last-Modified is weak
// (strongLastModified): file servers derive their ETags from the file's
// modification time in whole seconds and its size (nginx's "<mtime>-<size>"),
// so that a file rewritten with the same size in the second of its
// Last-Modified keeps its ETag, and a poll conditional on it would be
// answered 304 for a document that it has never seen.
func validators(header http.Header, received time.Time) (etag, lastModified string) {
	lastModified = strongLastModified(header, received)
	if lastModified == "" && header.Get("Last-Modified") != "" {
		return "", ""
	}
	return header.Get("ETag"), lastModified
}

// strongLastModified returns the Last-Modified of a response received at
// received when it is a strong validator, and "" otherwise. A Last-Modified
// has a precision of one second: the document may change again within that
// second and keep it, so that a poll conditional on it would be answered 304
// for a document that it has never seen, until the next change. Such a date
// is strong only when it is at least one second before the response's Date,
// or before the time it was received when it has no Date (RFC 9110 section
// 8.8.2.2). A weak one is not sent back: the next poll is unconditional, and
// the byte comparison keeps an unchanged body cheap.
func strongLastModified(header http.Header, received time.Time) string {
	value := header.Get("Last-Modified")
	modified, err := http.ParseTime(value)
	if err != nil {
		return ""
	}
	at := received
	if date, err := http.ParseTime(header.Get("Date")); err == nil {
		at = date
	}
	if at.Sub(modified) < time.Second {
		return ""
	}
	return value
}
