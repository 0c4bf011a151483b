package pollsse

import (
	"net/url"
	"strings"
)

// redactURL returns u for logs: with its userinfo, user name included,
// replaced by "xxxxx", and with the values of query parameters whose names
// say they hold a secret (api_key, token, access_token, signature, …; see
// secretParam) replaced by "xxxxx". Parameters are separated by "&" or ";",
// as upstreams may read either.
func redactURL(u string) string {
	parsed, err := url.Parse(u)
	if err != nil {
		return "(unparsable URL)"
	}
	if parsed.User != nil {
		parsed.User = url.User("xxxxx")
	}
	if parsed.RawQuery != "" {
		var b strings.Builder
		for rest := parsed.RawQuery; ; {
			end := strings.IndexAny(rest, "&;")
			if end < 0 {
				end = len(rest)
			}
			part := rest[:end]
			name, _, hasValue := strings.Cut(part, "=")
			if decoded, err := url.QueryUnescape(name); err == nil {
				name = decoded
			}
			if hasValue && secretParam(name) {
				part = part[:strings.IndexByte(part, '=')+1] + "xxxxx"
			}
			b.WriteString(part)
			if end == len(rest) {
				break
			}
			b.WriteByte(rest[end])
			rest = rest[end+1:]
		}
		parsed.RawQuery = b.String()
	}
	return parsed.String()
}

// secretWords are the parts of query parameter names that redactURL takes
// for secrets.
var secretWords = []string{"key", "token", "secret", "password", "passwd", "pwd", "auth", "sig", "credential", "session"}

// secretParam tells whether a query parameter of this name likely holds a
// secret.
func secretParam(name string) bool {
	name = strings.ToLower(name)
	for _, w := range secretWords {
		if strings.Contains(name, w) {
			return true
		}
	}
	return false
}
