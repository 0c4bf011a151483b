package pollsse

import (
	"context"
	"maps"
	"math/bits"
	"net"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Caddy writes a request's access log line when its handler returns. A
// stream taken over from net/http would hold its request's goroutine, with
// Caddy's state for the request, for its whole life to have the line say
// how long it was and how much it sent. On a logged host the stream writes
// the line itself when it ends instead, with what Caddy's line has
// (caddyhttp.Server.logRequest): the same loggers, level, message and
// fields, the extra fields of `log_append` and the request's uuid among
// them, and Caddy skips the request's line (log_skip). Its request's
// goroutine then returns as on a host without logs, and the stream keeps
// only what its line needs: its request as Caddy's marshaler wrote it, in
// one string (logrecord.go), and a few numbers.

// httpApp stands for Caddy's http app, under whose logger ("http") Caddy's
// access logger ("http.log.access") is named.
type httpApp struct{}

func (httpApp) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http", New: func() caddy.Module { return httpApp{} }}
}

// An accessLog is where the streams of a handler that write their own
// access log lines write them.
type accessLog struct {
	logger *zap.Logger
	// respHeader is the response header of the last stream that took a
	// line, which the next ones most often have too, and then share.
	respHeader atomic.Pointer[headerPairs]
}

// accessLogger returns the access log of the streams of a handler in the
// configuration of ctx: the logger that Caddy writes access log lines
// through.
func accessLogger(ctx caddy.Context) *accessLog {
	return &accessLog{logger: ctx.Logger(httpApp{}).Named("log.access")}
}

// sharedRespHeader returns h as pairs, the pairs of an earlier stream if
// they are the same.
func (a *accessLog) sharedRespHeader(h http.Header) *headerPairs {
	if last := a.respHeader.Load(); last != nil && last.is(h) {
		return last
	}
	p := pairsOf(h)
	a.respHeader.Store(&p)
	return &p
}

// extraFieldsAt is where caddyhttp.ExtraLogFields keeps its fields, which
// it has no method to read; ok is false if Caddy keeps them otherwise, and
// then a logged stream keeps its request until it ends and Caddy writes its
// line (TestStreamLogLineIsCaddys fails on such a Caddy).
var extraFieldsAt, extraFieldsOK = func() (uintptr, bool) {
	f, ok := reflect.TypeFor[caddyhttp.ExtraLogFields]().FieldByName("fields")
	return f.Offset, ok && f.Type == reflect.TypeFor[[]zapcore.Field]()
}()

// A loggedSink is the sink of a stream on a host that Caddy logs, which
// writes the stream's access log line when the stream has ended and its
// request's handler chain has returned, whichever is later. It counts what
// goes to the client, and keeps little else: one such sink for each stream.
type loggedSink struct {
	sink
	logger *zap.Logger
	names  []string // of the loggers below logger, "" for logger itself
	// request is what the line says of the request, as Caddy's marshaler
	// said it when the stream was taken over (logrecord.go).
	request    recordedObject
	userID     string
	respHeader *headerPairs
	start      time.Time
	// size is what the stream wrote before it was taken over; sent what it
	// wrote after.
	size int
	sent atomic.Int64
	// extra is Caddy's extra fields for the line, read once the handler
	// chain has returned, when `log_append` has added its.
	extraOf  *caddyhttp.ExtraLogFields
	extra    []zapcore.Field
	duration time.Duration
	status   int32
	// pending counts down the stream's end and the chain's return.
	pending     atomic.Int32
	level       zapcore.Level
	nop         bool // the line's message is "NOP", not "handled request"
	credentials bool
}

// newLoggedSink returns the sink of the stream that rec, Caddy's recorder
// of w, records for the access log of r, and makes Caddy skip the request;
// nil, leaving the line to Caddy, when what it needs is not there or
// Caddy's marshaler of the request adds what a record does not keep. Its
// sink is to be set before it is used.
func newLoggedSink(log *accessLog, rec caddyhttp.ResponseRecorder, r *http.Request) *loggedSink {
	ctx := r.Context()
	srv, _ := ctx.Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	start, _ := caddyhttp.GetVar(ctx, "start_time").(time.Time)
	extra, _ := ctx.Value(caddyhttp.ExtraLogFieldsCtxKey).(*caddyhttp.ExtraLogFields)
	repl, _ := ctx.Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if log == nil || !extraFieldsOK || srv == nil || srv.Logs == nil || start.IsZero() || extra == nil || repl == nil {
		return nil
	}
	l := &loggedSink{
		logger:      log.logger,
		names:       loggerNames(srv.Logs, r),
		level:       zapcore.InfoLevel,
		credentials: srv.Logs.ShouldLogCredentials,
		status:      int32(rec.Status()),
		respHeader:  log.sharedRespHeader(rec.Header()),
		start:       start,
		size:        rec.Size(),
		extraOf:     extra,
	}
	var ok bool
	if l.request, ok = recordRequest(r, l.credentials); !ok {
		return nil
	}
	l.userID, _ = repl.GetString("http.auth.user.id")
	l.nop, _ = caddyhttp.GetVar(ctx, "unhandled").(bool)
	if l.status >= 500 {
		l.level = zapcore.ErrorLevel
	}
	if name, ok := caddyhttp.GetVar(ctx, caddyhttp.LogLevelVar).(string); ok {
		if level, err := zapcore.ParseLevel(name); err == nil && level >= zapcore.DebugLevel && level <= zapcore.ErrorLevel {
			l.level = level
		}
	}
	l.pending.Store(2)
	caddyhttp.SetVar(ctx, caddyhttp.LogSkipVar, true)
	// net/http cancels the request's context when its handler returns.
	context.AfterFunc(ctx, l.returned)
	return l
}

// recordRequest records what Caddy's line says of r
// (caddyhttp.LoggableHTTPRequest): its method, URI and client as they came
// (Caddy's original request), its other fields and headers as the stream's
// handler has them. The request that Caddy's marshaler is given is a copy
// on the stack, which nothing keeps: the record is only what the marshaler
// added.
func recordRequest(r *http.Request, credentials bool) (recordedObject, bool) {
	logged := *r
	if orig, ok := r.Context().Value(caddyhttp.OriginalRequestCtxKey).(http.Request); ok {
		logged.Method, logged.RequestURI, logged.RemoteAddr = orig.Method, orig.RequestURI, orig.RemoteAddr
	}
	rec, ok := record(func(enc *recorder) error {
		return caddyhttp.LoggableHTTPRequest{Request: &logged, ShouldLogCredentials: credentials}.MarshalLogObject(enc)
	})
	return recordedObject(rec), ok
}

// headerPairs is a header as one slice of names and values, a name before
// each of its values, in the order of the names: a fifth of the objects and
// half the bytes of a header map of a few fields.
type headerPairs []string

func pairsOf(h http.Header) headerPairs {
	names := slices.Sorted(maps.Keys(h))
	n := 0
	for _, vs := range h {
		n += 2 * len(vs)
	}
	p := make(headerPairs, 0, n)
	for _, name := range names {
		for _, v := range h[name] {
			p = append(p, name, v)
		}
	}
	return p
}

// is tells whether p is the pairs of h, without making them; false, too,
// when h has a name without values, whose pairs are those of h without it.
func (p headerPairs) is(h http.Header) bool {
	names := 0
	for i := 0; i < len(p); names++ {
		name := p[i]
		vs := h[name]
		if len(vs) == 0 || i > 0 && p[i-2] == name {
			return false
		}
		for _, v := range vs {
			if i+1 >= len(p) || p[i] != name || p[i+1] != v {
				return false
			}
			i += 2
		}
	}
	return names == len(h)
}

func (p headerPairs) header() http.Header {
	h := make(http.Header, len(p)/2)
	for i := 0; i+1 < len(p); i += 2 {
		h[p[i]] = append(h[p[i]], p[i+1])
	}
	return h
}

// loggerNames returns the names of the loggers that Caddy writes r's access
// log line to, below its access logger ("" for that logger itself): those
// that `log_name` set for the request, or else those of its host in logs
// (caddyhttp.ServerLogConfig's wrapLogger).
func loggerNames(logs *caddyhttp.ServerLogConfig, r *http.Request) []string {
	if names, ok := caddyhttp.GetVar(r.Context(), caddyhttp.AccessLoggerNameVarKey).([]any); ok {
		out := make([]string, 0, len(names))
		for _, n := range names {
			s, _ := n.(string)
			out = append(out, s)
		}
		return out
	}
	host, _, err := net.SplitHostPort(r.Host)
	if err != nil {
		host = r.Host
	}
	host = strings.ToLower(host)
	if names, ok := logs.LoggerNames[host]; ok {
		return names
	}
	labels := strings.Split(host, ".")
	for i := range labels {
		if labels[i] == "" {
			continue
		}
		labels[i] = "*"
		if names, ok := logs.LoggerNames[strings.Join(labels, ".")]; ok {
			return names
		}
	}
	return []string{logs.DefaultLoggerName}
}

// returned is called once the request's handler chain has returned.
func (l *loggedSink) returned() {
	l.extra = append([]zapcore.Field(nil), *(*[]zapcore.Field)(unsafe.Add(unsafe.Pointer(l.extraOf), extraFieldsAt))...)
	l.extraOf = nil
	l.done()
}

// done writes the line on the second of returned and the stream's end.
func (l *loggedSink) done() {
	if l.pending.Add(-1) != 0 {
		return
	}
	message := "handled request"
	if l.nop {
		message = "NOP"
	}
	var fields []zapcore.Field
	for _, name := range l.names {
		logger := l.logger
		if name != "" {
			logger = logger.Named(name)
		}
		c := logger.Check(l.level, message)
		if c == nil {
			continue
		}
		if fields == nil {
			fields = append(make([]zapcore.Field, 0, 7+len(l.extra)),
				zap.Object("request", l.request),
				zap.Int("bytes_read", 0),
				zap.String("user_id", l.userID),
				zap.Duration("duration", l.duration),
				zap.Int("size", l.size+int(l.sent.Load())),
				zap.Int("status", int(l.status)),
				zap.Object("resp_headers", caddyhttp.LoggableHTTPHeader{Header: l.respHeader.header(), ShouldLogCredentials: l.credentials}),
			)
			fields = append(fields, l.extra...)
		}
		c.Write(fields...)
	}
}

func (l *loggedSink) offer(w *sweeper, b []byte) (int, error) {
	n, err := l.sink.offer(w, b)
	l.sent.Add(int64(n))
	return n, err
}

func (l *loggedSink) push(w *sweeper, rest, f []byte) error {
	err := l.sink.push(w, rest, f)
	if err == nil {
		n := len(rest)
		if rest == nil {
			n = chunkLen(len(f))
		}
		l.sent.Add(int64(n))
	}
	return err
}

// close closes the stream's connection, and the line is written once the
// chain has returned too.
func (l *loggedSink) close() {
	l.sink.close()
	l.duration = time.Since(l.start)
	l.done()
}

// chunkLen is the length of a chunk of n bytes (appendChunk): its size in
// hex digits, CRLF, the bytes and CRLF.
func chunkLen(n int) int {
	return max((bits.Len(uint(n))+3)/4, 1) + len(crlf) + n + len(crlf)
}
