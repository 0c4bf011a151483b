package pollsse

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"go.uber.org/zap"
)

// maxBodySize bounds how much of a response body is read.
const maxBodySize = 10 << 20

// A poller fetches one topic's upstream and appends what changed to the
// topic's log. It runs on one goroutine, so at most one upstream request of a
// topic is in flight at any time.
type poller struct {
	t      *topic
	logger *zap.Logger
	// prev is the last document that parsed, nil until the first success.
	prev *document
	// failing is set while polls fail after a success, so that the
	// transitions, not the polls, make status events.
	failing bool
}

// run polls the topic's upstream every interval, starting at once, until ctx
// ends or the topic has had no subscriber for the idle timeout.
func (t *topic) run(ctx context.Context) {
	cfg := t.hub.cfg
	p := &poller{t: t, logger: t.hub.logger.With(zap.String("upstream", redactURL(t.url)))}
	p.logger.Info("topic started", zap.Duration("interval", cfg.interval))
	defer p.logger.Info("topic stopped")

	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		start := time.Now()
		p.poll(ctx)
		next := start.Add(cfg.interval)
		for {
			idleUntil, stop := t.hub.idleUntil(t)
			if stop {
				return
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
			if !time.Now().Before(next) {
				break
			}
		}
	}
}

// poll makes one upstream request and appends its outcome to the log.
func (p *poller) poll(ctx context.Context) {
	start := time.Now()
	body, err := p.fetch(ctx)
	var doc *document
	if err == nil {
		if p.prev != nil && bytes.Equal(body, p.prev.body) {
			p.recovered()
			p.debug("poll unchanged", start)
			return
		}
		doc, err = p.t.hub.cfg.differ.parse(body)
	}
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		p.failed(err)
		return
	}
	p.recovered()
	if p.prev == nil {
		p.t.log.appendDocument(doc, "", nil)
		p.prev = doc
		p.debug("poll first document", start)
		return
	}
	event, data, err := p.t.hub.cfg.differ.diff(p.prev, doc)
	if err != nil {
		p.failed(err)
		return
	}
	if event == "" {
		// Same document in other bytes: keep the new bytes for the next
		// byte comparison.
		p.prev = doc
		p.debug("poll unchanged", start)
		return
	}
	p.t.log.appendDocument(doc, event, data)
	p.prev = doc
	p.debug("poll changed", start, zap.String("event", event), zap.Int("bytes", len(data)))
}

func (p *poller) debug(msg string, start time.Time, fields ...zap.Field) {
	if ce := p.logger.Check(zap.DebugLevel, msg); ce != nil {
		ce.Write(append(fields, zap.Duration("duration", time.Since(start)))...)
	}
}

// An upstreamError is an answer of the upstream that is not a success.
type upstreamError struct {
	status int
}

func (e *upstreamError) Error() string {
	return fmt.Sprintf("upstream answered %d %s", e.status, http.StatusText(e.status))
}

// statusData is the data of a status event.
type statusData struct {
	Upstream string `json:"upstream"`
	Status   int    `json:"status,omitempty"`
	Error    string `json:"error,omitempty"`
}

// failed records a failed poll. Subscribers hear of the first failure after
// a success, not of every failed poll; before the first success they wait.
func (p *poller) failed(err error) {
	if p.prev == nil || p.failing {
		if ce := p.logger.Check(zap.DebugLevel, "poll failed"); ce != nil {
			ce.Write(zap.Error(err))
		}
		return
	}
	p.failing = true
	p.logger.Warn("upstream failing", zap.Error(err))
	data := statusData{Upstream: "down", Error: err.Error()}
	var ue *upstreamError
	if errors.As(err, &ue) {
		data.Status = ue.status
	}
	b, _ := json.Marshal(data)
	p.t.log.appendStatus(b, true)
}

// recovered records a successful poll after failures.
func (p *poller) recovered() {
	if !p.failing {
		return
	}
	p.failing = false
	p.logger.Info("upstream recovered")
	b, _ := json.Marshal(statusData{Upstream: "up"})
	p.t.log.appendStatus(b, false)
}

// fetch makes one GET request to the upstream and returns the body of a
// successful answer.
func (p *poller) fetch(ctx context.Context) ([]byte, error) {
	cfg := p.t.hub.cfg
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.t.url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	for name, values := range cfg.headerUp {
		if http.CanonicalHeaderKey(name) == "Host" {
			req.Host = values[0]
			continue
		}
		req.Header[http.CanonicalHeaderKey(name)] = values
	}
	resp, err := p.t.hub.client.Do(req)
	if err != nil {
		return nil, describeRequestError(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, &upstreamError{status: resp.StatusCode}
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBodySize+1))
	if err != nil {
		return nil, fmt.Errorf("reading response body: %w", describeRequestError(err))
	}
	if len(body) > maxBodySize {
		return nil, fmt.Errorf("response body larger than %d bytes", maxBodySize)
	}
	return body, nil
}

// describeRequestError drops the request URL from err, so that a status
// event or log line does not repeat what the upstream URL holds (such as a
// key in its query), and names a timeout as such.
func describeRequestError(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return errors.New("upstream request timed out")
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		if ue.Timeout() {
			return errors.New("upstream request timed out")
		}
		return ue.Err
	}
	return err
}

// redactURL returns u without its password, for logs.
func redactURL(u string) string {
	parsed, err := url.Parse(u)
	if err != nil {
		return "(unparsable URL)"
	}
	return parsed.Redacted()
}
