package pollsse

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// newUpstreamClient returns the client of a hub's polls: it keeps a few
// idle connections per upstream host for the next polls, and follows
// redirects only on the origin of the request (checkRedirect).
func newUpstreamClient() *http.Client {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConnsPerHost = 16
	return &http.Client{
		Transport:     transport,
		CheckRedirect: checkRedirect,
	}
}

// newUpstreamRequest returns a poll of url: a GET that asks for JSON and
// names this module (userAgent), unless headerUp, the header_up headers,
// sets those; then the subscriber's forwarded headers, which
// checkForwardHeaders keeps apart from headerUp.
func newUpstreamRequest(ctx context.Context, url string, headerUp, forwarded http.Header) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", userAgent)
	for name, values := range headerUp {
		if http.CanonicalHeaderKey(name) == "Host" {
			req.Host = values[0]
			continue
		}
		req.Header[http.CanonicalHeaderKey(name)] = values
	}
	for name, values := range forwarded {
		req.Header[name] = values
	}
	return req, nil
}

// maxRedirects is how many redirects of the upstream a poll follows, each
// to the same scheme, host and port.
const maxRedirects = 3

// A redirectError is a redirect of the upstream that a poll does not follow.
type redirectError struct{ reason string }

func (e *redirectError) Error() string { return "upstream redirect not followed: " + e.reason }

// checkRedirect follows at most maxRedirects redirects, each to the scheme,
// host and port of the request before it, so that an upstream cannot send
// polls (and the forwarded credentials) to another server.
func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) > maxRedirects {
		return &redirectError{fmt.Sprintf("more than %d redirects", maxRedirects)}
	}
	if !sameOrigin(req.URL, via[len(via)-1].URL) {
		return &redirectError{"it leads to another scheme, host or port"}
	}
	return nil
}

func sameOrigin(a, b *url.URL) bool {
	return strings.EqualFold(a.Scheme, b.Scheme) &&
		strings.EqualFold(a.Hostname(), b.Hostname()) &&
		effectivePort(a) == effectivePort(b)
}

func effectivePort(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if strings.EqualFold(u.Scheme, "https") {
		return "443"
	}
	return "80"
}

// unforwardableHeaders are the headers that forward_headers refuses: those
// of one connection, and those by which the poller itself asks for a
// response (conditional requests, ranges, encodings).
var unforwardableHeaders = map[string]bool{
	"Host": true, "Connection": true, "Keep-Alive": true, "Proxy-Connection": true,
	"Proxy-Authorization": true, "Te": true, "Trailer": true, "Transfer-Encoding": true,
	"Upgrade": true, "Content-Length": true, "Accept-Encoding": true, "Range": true,
	"If-None-Match": true, "If-Modified-Since": true, "If-Match": true,
	"If-Unmodified-Since": true, "If-Range": true,
}

// checkForwardHeaders checks the names of forward_headers.
func checkForwardHeaders(names []string, headerUp http.Header) error {
	for _, name := range names {
		if !isToken(name) {
			return fmt.Errorf("forward_headers: %q is not a header name", name)
		}
		canonical := http.CanonicalHeaderKey(name)
		if unforwardableHeaders[canonical] {
			return fmt.Errorf("forward_headers: %s cannot be forwarded", name)
		}
		for up := range headerUp {
			if http.CanonicalHeaderKey(up) == canonical {
				return fmt.Errorf("forward_headers: %s is also set by header_up", name)
			}
		}
	}
	return nil
}

// isToken tells whether s is an HTTP token (RFC 9110 section 5.6.2), as
// header names are.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0 {
			continue
		}
		return false
	}
	return true
}

// canonicalHeaderNames returns names in canonical form, each once, in the
// order given.
func canonicalHeaderNames(names []string) []string {
	var out []string
	for _, name := range names {
		if c := http.CanonicalHeaderKey(name); !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	return out
}

// userAgent is the User-Agent of upstream requests, unless header_up sets
// one. It names the module and its version, so that the upstream's
// operators can tell its polls from other traffic; it leaves out Caddy's
// version, which says nothing about the polls and only tells the upstream
// more about the server that makes them.
const userAgent = "caddy-pollsse/" + Version
