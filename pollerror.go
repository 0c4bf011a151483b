package pollsse

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"syscall"
	"time"
)

// An upstreamError is an answer of the upstream that is not a success.
type upstreamError struct {
	status int
	// retryAfter is what the answer's Retry-After header asked for.
	retryAfter time.Duration
}

func (e *upstreamError) Error() string {
	return fmt.Sprintf("upstream answered %d %s", e.status, http.StatusText(e.status))
}

// A bodyTooLargeError is a response body over max_body.
type bodyTooLargeError struct{ limit int64 }

func (e *bodyTooLargeError) Error() string {
	return fmt.Sprintf("response body larger than max_body (%d bytes)", e.limit)
}

// describeRequestError drops the request URL from err, for logs, so that a
// log line does not repeat what the upstream URL holds (such as a key in its
// query), and names a timeout as such.
func describeRequestError(err error) error {
	if isTimeout(err) {
		return errors.New("upstream request timed out")
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout()
}

// publicError says what went wrong with a poll in the words of a status
// event, which every subscriber of the topic reads: what kind of failure it
// was, without addresses, URLs or what the upstream's body held.
func publicError(err error) string {
	var ue *upstreamError
	var re *redirectError
	var be *bodyTooLargeError
	var dnsErr *net.DNSError
	switch {
	case errors.As(err, &ue):
		return ue.Error()
	case errors.As(err, &re):
		return re.Error()
	case errors.As(err, &be):
		return be.Error()
	case isTimeout(err):
		return "upstream request timed out"
	case errors.As(err, &dnsErr):
		return "upstream host not found"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "upstream refused the connection"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "upstream closed the connection before the end of its answer"
	case outOfLocalResources(err):
		return "the poll could not be sent: this server is out of resources"
	}
	var urlErr *url.Error
	var opErr *net.OpError
	if errors.As(err, &urlErr) || errors.As(err, &opErr) {
		return "upstream request failed"
	}
	// An error of the differ: it describes the body, not where it came from.
	return err.Error()
}

// outOfLocalResources tells whether a poll failed before it reached the
// upstream for want of something on this machine: open files (the process's
// limit, EMFILE, or the system's, ENFILE), socket buffers, or local ports.
// Such a failure says nothing of the upstream, which heard nothing.
func outOfLocalResources(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.EADDRNOTAVAIL)
}
