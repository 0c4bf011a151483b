package pollsse

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/caddyserver/caddy/v2"
)

// maxTopicURLLength bounds the upstream URL that a request's placeholders
// can make; a longer one is refused with 400.
const maxTopicURLLength = 8 << 10

// An upstreamTemplate is the configured upstream URL, split so that
// placeholders can only fill its path and query: the scheme, host and port
// are fixed when the configuration loads.
type upstreamTemplate struct {
	// origin is "scheme://host[:port]", without placeholders.
	origin string
	// path starts with "/"; query is what follows "?", without it.
	path, query string
	hasQuery    bool
}

// parseUpstream checks the configured upstream URL and splits it.
func parseUpstream(raw string) (*upstreamTemplate, error) {
	if raw == "" {
		return nil, errors.New("no upstream URL")
	}
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return nil, fmt.Errorf("upstream %q: want an absolute http:// or https:// URL", raw)
	}
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	origin := scheme + "://" + rest[:end]
	if strings.ContainsAny(origin, "{}") {
		return nil, fmt.Errorf("upstream %q: placeholders are allowed only in the path and query, not in the scheme, host or port", raw)
	}
	u, err := url.Parse(origin)
	if err != nil {
		return nil, fmt.Errorf("upstream %q: %w", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("upstream %q: scheme must be http or https, not %q", raw, u.Scheme)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("upstream %q: no host", raw)
	}
	t := &upstreamTemplate{origin: u.Scheme + "://" + u.Host, path: "/"}
	if u.User != nil {
		t.origin = u.Scheme + "://" + u.User.String() + "@" + u.Host
	}
	rest = rest[end:]
	if strings.Contains(rest, "#") {
		return nil, fmt.Errorf("upstream %q: a fragment is never sent to a server; remove it", raw)
	}
	path, query, hasQuery := strings.Cut(rest, "?")
	if path != "" {
		t.path = path
	}
	t.query, t.hasQuery = query, hasQuery
	// The template must itself be a URL once its placeholders are filled.
	if _, err := url.Parse(t.origin + placeholderPattern.Replace(t.path) + "?" + placeholderPattern.Replace(t.query)); err != nil {
		return nil, fmt.Errorf("upstream %q: %w", raw, err)
	}
	return t, nil
}

// placeholderPattern stands in for placeholders when a template is checked.
var placeholderPattern = strings.NewReplacer("{", "x", "}", "x")

// errBadPlaceholder is the error of a placeholder value that would take the
// upstream request somewhere the configuration did not name.
var errBadPlaceholder = errors.New("a placeholder's value is not allowed in the upstream URL")

// expand fills the template's placeholders from repl and returns the upstream
// URL. Values are escaped as path segments or query values, and a "/" in a
// path value separates path segments, so no value can change the scheme,
// host or port, start a query or a fragment, or inject a header. A value is
// refused with an error that wraps errBadPlaceholder when it, or what
// percent-decoding it once or more makes of it (an upstream, or a server
// behind it, may decode again):
//   - is not UTF-8 or holds a control character (CR and LF included);
//   - holds a "#" or a "\" (a path separator to some servers);
//   - has a "." or ".." segment (also before a ";" parameter), which would
//     climb out of the configured path;
//   - makes an empty path segment ("//") where the template has none;
//   - has a segment that begins with "@", which a server that appends the
//     path to a host of its own reads as credentials followed by another host;
//
// and when the URL would be longer than maxTopicURLLength.
func (t *upstreamTemplate) expand(repl *caddy.Replacer) (string, error) {
	path, err := repl.ReplaceFunc(t.path, func(_ string, val any) (any, error) {
		s, err := placeholderString(val)
		if err != nil {
			return nil, err
		}
		segs := strings.Split(s, "/")
		for i, seg := range segs {
			segs[i] = url.PathEscape(seg)
		}
		return strings.Join(segs, "/"), nil
	})
	if err != nil {
		return "", err
	}
	if strings.Contains(path, "//") && !strings.Contains(t.path, "//") {
		// An empty segment that a value made: "//host/x" is a URL of
		// another host to a server that resolves the path against a base.
		return "", fmt.Errorf("%w: an empty path segment", errBadPlaceholder)
	}
	u := t.origin + path
	if t.hasQuery {
		query, err := repl.ReplaceFunc(t.query, func(_ string, val any) (any, error) {
			s, err := placeholderString(val)
			if err != nil {
				return nil, err
			}
			return url.QueryEscape(s), nil
		})
		if err != nil {
			return "", err
		}
		u += "?" + query
	}
	if len(u) > maxTopicURLLength {
		return "", fmt.Errorf("%w: the upstream URL would be longer than %d bytes", errBadPlaceholder, maxTopicURLLength)
	}
	return u, nil
}

// maxDecodings is how many times a placeholder value is percent-decoded to
// check what a server that decodes it again would see.
const maxDecodings = 3

// placeholderString returns a placeholder's value as a string, or an error
// that wraps errBadPlaceholder when the value is refused (see expand).
func placeholderString(val any) (string, error) {
	var s string
	switch v := val.(type) {
	case string:
		s = v
	case nil:
		return "", nil
	default:
		s = fmt.Sprint(v)
	}
	if len(s) > maxTopicURLLength {
		return "", fmt.Errorf("%w: the upstream URL would be longer than %d bytes", errBadPlaceholder, maxTopicURLLength)
	}
	form := s
	for i := 0; ; i++ {
		if err := checkPlaceholderForm(form); err != nil {
			return "", err
		}
		if i == maxDecodings || !strings.Contains(form, "%") {
			return s, nil
		}
		decoded, err := url.PathUnescape(form)
		if err != nil || decoded == form {
			// A "%" that starts no escape is a literal "%", escaped as such.
			return s, nil
		}
		form = decoded
	}
}

// checkPlaceholderForm checks one form of a placeholder value.
func checkPlaceholderForm(s string) error {
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: invalid UTF-8", errBadPlaceholder)
	}
	for _, r := range s {
		switch {
		case r < 0x20 || r == 0x7f:
			return fmt.Errorf("%w: control character", errBadPlaceholder)
		case r == '#':
			return fmt.Errorf("%w: %q", errBadPlaceholder, "#")
		case r == '\\':
			return fmt.Errorf("%w: %q", errBadPlaceholder, "\\")
		}
	}
	for seg := range strings.SplitSeq(s, "/") {
		// Some servers drop a segment's ";" parameters before they
		// resolve dot segments.
		if name, _, _ := strings.Cut(seg, ";"); name == "." || name == ".." {
			return fmt.Errorf("%w: dot segment", errBadPlaceholder)
		}
		if strings.HasPrefix(seg, "@") {
			return fmt.Errorf("%w: a segment that begins with %q", errBadPlaceholder, "@")
		}
	}
	return nil
}

// isBadPlaceholder tells whether err comes from a refused placeholder value.
func isBadPlaceholder(err error) bool { return errors.Is(err, errBadPlaceholder) }
