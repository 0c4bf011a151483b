package pollsse

import (
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("poll_sse", parseCaddyfile)
	httpcaddyfile.RegisterDirectiveOrder("poll_sse", httpcaddyfile.After, "encode")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	handler := new(Handler)
	err := handler.UnmarshalCaddyfile(h.Dispenser)
	return handler, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	poll_sse [<matcher>] [<upstream>] {
//	    upstream      <url>            # required (here or inline); placeholders in path and query only
//	    interval      <duration>       # poll period, default 2s
//	    retry         <duration>       # SSE retry hint for browsers, default 3s
//	    heartbeat     <duration>       # comment line after this long without a write, default 15s
//	    history       <n>              # events kept per topic for Last-Event-ID replay, default 256
//	    idle_timeout  <duration>       # keep polling this long after the last subscriber leaves, default 30s
//	    timeout       <duration>       # upstream request timeout, default 10s
//	    write_timeout <duration>       # drop a client whose write blocks this long, default 10s
//	    header_up     <name> <value>   # static header on every upstream request (repeatable)
//	}
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume directive name
	if d.NextArg() {
		h.Upstream = d.Val()
		if d.NextArg() {
			return d.Errf("unexpected argument '%s' after the upstream URL", d.Val())
		}
	}
	for d.NextBlock(0) {
		name := d.Val()
		switch name {
		case "upstream":
			if !d.NextArg() {
				return d.Errf("upstream: want a URL")
			}
			if h.Upstream != "" {
				return d.Errf("upstream: given twice ('%s' and '%s')", h.Upstream, d.Val())
			}
			h.Upstream = d.Val()
			if _, err := parseUpstream(h.Upstream); err != nil {
				return d.Err(err.Error())
			}
		case "interval", "retry", "heartbeat", "idle_timeout", "timeout", "write_timeout":
			if !d.NextArg() {
				return d.Errf("%s: want a duration", name)
			}
			dur, err := caddy.ParseDuration(d.Val())
			if err != nil {
				return d.Errf("%s: invalid duration '%s': %v", name, d.Val(), err)
			}
			if dur <= 0 {
				return d.Errf("%s: must be positive, not '%s'", name, d.Val())
			}
			*h.durationField(name) = caddy.Duration(dur)
		case "history":
			if !d.NextArg() {
				return d.Errf("history: want a number of events")
			}
			n, err := strconv.Atoi(d.Val())
			if err != nil || n <= 0 {
				return d.Errf("history: want a positive number of events, not '%s'", d.Val())
			}
			h.History = n
		case "header_up":
			if !d.NextArg() {
				return d.Errf("header_up: want a header name and a value")
			}
			field := d.Val()
			if !d.NextArg() {
				return d.Errf("header_up: want a value for header '%s'", field)
			}
			if h.HeaderUp == nil {
				h.HeaderUp = make(map[string][]string)
			}
			h.HeaderUp.Add(field, d.Val())
		default:
			return d.Errf("unrecognized subdirective '%s'", name)
		}
		if d.NextArg() {
			return d.Errf("%s: unexpected argument '%s'", name, d.Val())
		}
	}
	if h.Upstream == "" {
		return d.Err("upstream: required")
	}
	if _, err := parseUpstream(h.Upstream); err != nil {
		return d.Err(err.Error())
	}
	return nil
}

// durationField returns the duration setting of a subdirective's name.
func (h *Handler) durationField(name string) *caddy.Duration {
	return map[string]*caddy.Duration{
		"interval":      &h.Interval,
		"retry":         &h.Retry,
		"heartbeat":     &h.Heartbeat,
		"idle_timeout":  &h.IdleTimeout,
		"timeout":       &h.Timeout,
		"write_timeout": &h.WriteTimeout,
	}[name]
}

var (
	_ caddyfile.Unmarshaler = (*Handler)(nil)
)
