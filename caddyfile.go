package pollsse

import (
	"math"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"
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
//	    interval      <duration>       # poll period, at least 100ms, default 2s
//	    retry         <duration>       # SSE retry hint for browsers, default 3s
//	    heartbeat     <duration>       # comment line after this long without a write, default 15s
//	    history       <n>              # events kept per topic for Last-Event-ID replay, default 256
//	    idle_timeout  <duration>       # keep polling this long after the last subscriber leaves, default 30s
//	    timeout       <duration>       # upstream request timeout, default 10s
//	    write_timeout <duration>       # drop a client whose write blocks this long, default 10s
//	    header_up     <name> <value>   # header on every upstream request (repeatable); global placeholders only
//	    max_backoff   <duration>       # longest wait between polls of a failing upstream, default 1m
//	    max_body      <size>           # largest upstream body read, such as 512KiB, default 10MiB
//	    forward_headers <name>...      # subscriber headers sent upstream, part of the topic key (repeatable)
//	    max_topics    <n>              # most topics polled at once, default 1000
//	    max_subscribers <n>            # most open streams, default 10000
//	    max_new_topics <n> <duration>  # most new topics per client address per duration, default 30 1m; or off
//	    mode          <mode>           # json_patch (patch events, default), merge_patch (merge events) or snapshot
//	    select        <json-pointer>   # stream only this part of each response
//	    ignore        <json-pointer>...  # parts removed before comparing and sending; token * matches any key or index
//	    store         memory           # where topics are kept: memory (default) or redis, shared by several Caddy instances
//	    store         redis <url>      # or a block: store redis { url <url>; prefix <string>; lease <duration> }
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
		if err := h.unmarshalSubdirective(d, name); err != nil {
			return err
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
	if _, err := newDiffer(h.Mode, h.Select, h.Ignore); err != nil {
		return d.Err(err.Error())
	}
	interval := time.Duration(h.Interval)
	if interval == 0 {
		interval = defaultInterval
	}
	if err := checkStoreInterval(h.storeModule, interval); err != nil {
		return d.Err(err.Error())
	}
	return nil
}

// unmarshalSubdirective sets the setting of the subdirective name from its
// arguments.
func (h *Handler) unmarshalSubdirective(d *caddyfile.Dispenser, name string) error {
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
	case "interval", "retry", "heartbeat", "idle_timeout", "timeout", "write_timeout", "max_backoff":
		return h.unmarshalDuration(d, name)
	case "history", "max_topics", "max_subscribers":
		return h.unmarshalCount(d, name)
	case "max_new_topics":
		return h.unmarshalMaxNewTopics(d)
	case "header_up":
		return h.unmarshalHeaderUp(d)
	case "max_body":
		if !d.NextArg() {
			return d.Errf("max_body: want a size")
		}
		size, err := humanize.ParseBytes(d.Val())
		if err != nil || size == 0 || size > math.MaxInt64 {
			return d.Errf("max_body: want a positive size such as 512KiB or 10MB, not '%s'", d.Val())
		}
		h.MaxBody = int64(size)
	case "forward_headers":
		args := d.RemainingArgs()
		if len(args) == 0 {
			return d.Errf("forward_headers: want one or more header names")
		}
		h.ForwardHeaders = append(h.ForwardHeaders, args...)
		if err := checkForwardHeaders(h.ForwardHeaders, h.HeaderUp); err != nil {
			return d.Err(err.Error())
		}
	case "mode":
		if !d.NextArg() {
			return d.Errf("mode: want %s, %s or %s", modeJSONPatch, modeMergePatch, modeSnapshot)
		}
		if err := checkMode(d.Val()); err != nil {
			return d.Err(err.Error())
		}
		h.Mode = d.Val()
	case "select":
		if !d.NextArg() {
			return d.Errf("select: want a JSON pointer")
		}
		if _, err := parsePointer("select", d.Val()); err != nil {
			return d.Err(err.Error())
		}
		h.Select = d.Val()
	case "ignore":
		args := d.RemainingArgs()
		if len(args) == 0 {
			return d.Errf("ignore: want one or more JSON pointers")
		}
		for _, arg := range args {
			if _, err := parsePointer("ignore", arg); err != nil {
				return d.Err(err.Error())
			}
		}
		h.Ignore = append(h.Ignore, args...)
	case "store":
		return h.unmarshalStore(d)
	default:
		return d.Errf("unrecognized subdirective '%s'", name)
	}
	return nil
}

// unmarshalStore sets the store module of a store subdirective, whose
// first argument names it, `store redis <url>` or `store redis { ... }`.
func (h *Handler) unmarshalStore(d *caddyfile.Dispenser) error {
	if !d.NextArg() {
		return d.Errf("store: want a store module, such as memory or redis")
	}
	if h.Store != nil {
		return d.Errf("store: given twice")
	}
	name := d.Val()
	if _, err := caddy.GetModule(storeNamespace + "." + name); err != nil {
		return d.Errf("store: unknown store module '%s'", name)
	}
	unm, err := caddyfile.UnmarshalModule(d, storeNamespace+"."+name)
	if err != nil {
		return err
	}
	h.Store = caddyconfig.JSONModuleObject(unm, "module", name, nil)
	h.storeModule = unm
	return nil
}

// unmarshalDuration sets the duration setting of the subdirective name.
func (h *Handler) unmarshalDuration(d *caddyfile.Dispenser, name string) error {
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
	if name == "interval" && dur < minInterval {
		return d.Errf("interval: must be at least %s, not '%s', %s", minInterval, d.Val(), minIntervalReason)
	}
	*h.durationField(name) = caddy.Duration(dur)
	return nil
}

// unmarshalCount sets the setting of the subdirective name that counts
// events, topics or subscribers.
func (h *Handler) unmarshalCount(d *caddyfile.Dispenser, name string) error {
	what := "number"
	if name == "history" {
		what = "number of events"
	}
	if !d.NextArg() {
		return d.Errf("%s: want a %s", name, what)
	}
	n, err := strconv.Atoi(d.Val())
	if err != nil || n <= 0 {
		return d.Errf("%s: want a positive %s, not '%s'", name, what, d.Val())
	}
	*h.countField(name) = n
	return nil
}

// unmarshalMaxNewTopics sets max_new_topics and its period from
// `max_new_topics <n> <duration>`, or turns it off with `max_new_topics
// off`.
func (h *Handler) unmarshalMaxNewTopics(d *caddyfile.Dispenser) error {
	if !d.NextArg() {
		return d.Err("max_new_topics: want a number of topics and a duration, such as 30 1m, or off")
	}
	if d.Val() == "off" {
		h.MaxNewTopics, h.MaxNewTopicsPer = -1, 0
		return nil
	}
	n, err := strconv.Atoi(d.Val())
	if err != nil || n <= 0 {
		return d.Errf("max_new_topics: want a positive number of topics or off, not '%s'", d.Val())
	}
	if !d.NextArg() {
		return d.Errf("max_new_topics: want a duration after '%s', such as %s 1m", d.Val(), d.Val())
	}
	per, err := caddy.ParseDuration(d.Val())
	if err != nil {
		return d.Errf("max_new_topics: invalid duration '%s': %v", d.Val(), err)
	}
	if per < minNewTopicsPer {
		return d.Errf("max_new_topics: the duration must be at least %s, not '%s', %s", minNewTopicsPer, d.Val(), minNewTopicsPerReason)
	}
	h.MaxNewTopics, h.MaxNewTopicsPer = n, caddy.Duration(per)
	return nil
}

// unmarshalHeaderUp adds the header of a header_up subdirective.
func (h *Handler) unmarshalHeaderUp(d *caddyfile.Dispenser) error {
	if !d.NextArg() {
		return d.Errf("header_up: want a header name and a value")
	}
	field := d.Val()
	if !d.NextArg() {
		return d.Errf("header_up: want a value for header '%s'", field)
	}
	if err := checkHeaderUp(field, d.Val()); err != nil {
		return d.Err(err.Error())
	}
	if h.HeaderUp == nil {
		h.HeaderUp = make(map[string][]string)
	}
	h.HeaderUp.Add(field, d.Val())
	if err := checkForwardHeaders(h.ForwardHeaders, h.HeaderUp); err != nil {
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
		"max_backoff":   &h.MaxBackoff,
	}[name]
}

// countField returns the setting of a subdirective's name that counts.
func (h *Handler) countField(name string) *int {
	return map[string]*int{
		"history":         &h.History,
		"max_topics":      &h.MaxTopics,
		"max_subscribers": &h.MaxSubscribers,
	}[name]
}

var (
	_ caddyfile.Unmarshaler = (*Handler)(nil)
)
