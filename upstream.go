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
// URL. Values are escaped as path segments or query values: a "/" in a value
// separates path segments, but a value can neither hold a "." or ".."
// segment, nor control characters or invalid UTF-8, so it cannot leave the
// configured path or change the host. Such a value is refused with an error
// that wraps errBadPlaceholder.
func (t *upstreamTemplate) expand(repl *caddy.Replacer) (string, error) {
	path, err := repl.ReplaceFunc(t.path, func(_ string, val any) (any, error) {
		s, err := placeholderString(val)
		if err != nil {
			return nil, err
		}
		segs := strings.Split(s, "/")
		for i, seg := range segs {
			if seg == "." || seg == ".." {
				return nil, fmt.Errorf("%w: dot segment", errBadPlaceholder)
			}
			segs[i] = url.PathEscape(seg)
		}
		return strings.Join(segs, "/"), nil
	})
	if err != nil {
		return "", err
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
	if !utf8.ValidString(s) {
		return "", fmt.Errorf("%w: invalid UTF-8", errBadPlaceholder)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return "", fmt.Errorf("%w: control character", errBadPlaceholder)
		}
	}
	return s, nil
}

// isBadPlaceholder tells whether err comes from a refused placeholder value.
func isBadPlaceholder(err error) bool { return errors.Is(err, errBadPlaceholder) }
