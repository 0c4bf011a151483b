package pollsse

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"math"
	"net/http"
	"reflect"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// encodeJSON is what zap's JSON encoder writes of fields.
func encodeJSON(t *testing.T, fields ...zapcore.Field) string {
	t.Helper()
	enc := zapcore.NewJSONEncoder(zapcore.EncoderConfig{})
	buf, err := enc.EncodeEntry(zapcore.Entry{}, fields)
	if err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

// everyKind adds a field of each kind that a record keeps, and an array of
// each kind of element.
type everyKind struct{}

func (everyKind) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	enc.AddString("string", "a\"b\n")
	enc.AddString("empty", "")
	enc.AddByteString("bytes", []byte("c"))
	enc.AddBinary("binary", []byte{0, 1, 2, 255})
	enc.AddBool("true", true)
	enc.AddBool("false", false)
	enc.AddInt("int", -1)
	enc.AddInt64("int64", math.MinInt64)
	enc.AddInt32("int32", math.MaxInt32)
	enc.AddInt16("int16", -300)
	enc.AddInt8("int8", 100)
	enc.AddUint("uint", 7)
	enc.AddUint64("uint64", math.MaxUint64)
	enc.AddUint32("uint32", 1<<31)
	enc.AddUint16("uint16", 0x1301)
	enc.AddUint8("uint8", 255)
	enc.AddUintptr("uintptr", 0xdead)
	enc.AddFloat64("float64", -1.5e300)
	enc.AddFloat32("float32", 0.25)
	enc.AddDuration("duration", -90*time.Second)
	enc.AddObject("object", zapcore.ObjectMarshalerFunc(func(enc zapcore.ObjectEncoder) error {
		enc.AddString("inner", "x")
		return enc.AddObject("deeper", zapcore.ObjectMarshalerFunc(func(enc zapcore.ObjectEncoder) error {
			enc.AddInt("n", 3)
			return nil
		}))
	}))
	enc.AddObject("empty_object", zapcore.ObjectMarshalerFunc(func(zapcore.ObjectEncoder) error { return nil }))
	enc.AddArray("array", zapcore.ArrayMarshalerFunc(func(enc zapcore.ArrayEncoder) error {
		enc.AppendString("s")
		enc.AppendByteString([]byte("b"))
		enc.AppendBool(true)
		enc.AppendInt(-2)
		enc.AppendInt64(math.MaxInt64)
		enc.AppendInt32(-3)
		enc.AppendInt16(4)
		enc.AppendInt8(-5)
		enc.AppendUint(6)
		enc.AppendUint64(7)
		enc.AppendUint32(8)
		enc.AppendUint16(9)
		enc.AppendUint8(10)
		enc.AppendUintptr(11)
		enc.AppendFloat64(1.25)
		enc.AppendFloat32(-2.5)
		enc.AppendDuration(time.Millisecond)
		enc.AppendObject(zapcore.ObjectMarshalerFunc(func(enc zapcore.ObjectEncoder) error {
			enc.AddString("in", "array")
			return nil
		}))
		return enc.AppendArray(zapcore.ArrayMarshalerFunc(func(enc zapcore.ArrayEncoder) error {
			enc.AppendString("nested")
			return nil
		}))
	}))
	enc.OpenNamespace("ns")
	enc.AddString("after", "namespace")
	return nil
}

// recordObject records what m adds to an encoder, as a logged stream
// records its request (recordRequest).
func recordObject(m zapcore.ObjectMarshaler) (recordedObject, bool) {
	rec, ok := record(func(r *recorder) error { return m.MarshalLogObject(r) })
	return recordedObject(rec), ok
}

// TestRecordedObjectIsWhatItsMarshalerAdds: a record replayed into an
// encoder writes what the marshaler it recorded writes, field for field
// and in the same order, for every kind of field that a record keeps.
func TestRecordedObjectIsWhatItsMarshalerAdds(t *testing.T) {
	rec, ok := recordObject(everyKind{})
	if !ok {
		t.Fatal("a marshaler of the kinds that a record keeps was not recorded")
	}
	if got, want := encodeJSON(t, zap.Object("o", rec)), encodeJSON(t, zap.Object("o", everyKind{})); got != want {
		t.Errorf("the record writes\n%s\nits marshaler\n%s", got, want)
	}
	// Twice: replaying does not use the record up.
	if got, want := encodeJSON(t, zap.Object("o", rec)), encodeJSON(t, zap.Object("o", everyKind{})); got != want {
		t.Errorf("the record replayed again writes\n%s", got)
	}
}

// TestRecordedRequestIsCaddys: the record of a request that a logged
// stream keeps writes what Caddy's marshaler writes of the request: its
// headers, with credentials redacted unless they are to be logged, its
// transfer encoding, its TLS state and its client; and its method, URI and
// remote address as the request came, before a rewrite, as Caddy's line
// says them.
func TestRecordedRequestIsCaddys(t *testing.T) {
	r, _ := http.NewRequest(http.MethodGet, "https://example.com/events?topic=a", nil)
	r.RequestURI = "/events?topic=a"
	r.RemoteAddr = "192.0.2.7:50123"
	r.Proto = "HTTP/1.1"
	r.Header = http.Header{"Accept": {"text/event-stream"}, "Authorization": {"Bearer secret"}, "X-Two": {"1", "2"}, "X-Empty": {""}}
	r.TransferEncoding = []string{"chunked"}
	r.TLS = &tls.ConnectionState{Version: tls.VersionTLS13, CipherSuite: tls.TLS_AES_128_GCM_SHA256, NegotiatedProtocol: "http/1.1", ServerName: "example.com", DidResume: true}
	ctx := context.WithValue(r.Context(), caddyhttp.VarsCtxKey, map[string]any{caddyhttp.ClientIPVarKey: "198.51.100.9"})
	r = r.WithContext(ctx)
	came := *r
	came.Method, came.RequestURI, came.RemoteAddr = http.MethodGet, "/old/events?topic=a", "192.0.2.8:50124"
	rewritten := r.WithContext(context.WithValue(ctx, caddyhttp.OriginalRequestCtxKey, came))
	decode := func(s string) map[string]any {
		var m map[string]any
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			t.Fatalf("%v: %s", err, s)
		}
		return m
	}
	for _, credentials := range []bool{false, true} {
		for name, c := range map[string]struct{ stream, caddys *http.Request }{
			"as it came": {r, r},
			"rewritten":  {rewritten, &came},
		} {
			rec, ok := recordRequest(c.stream, credentials)
			if !ok {
				t.Fatal("Caddy's request was not recorded")
			}
			got := decode(encodeJSON(t, zap.Object("request", rec)))
			want := decode(encodeJSON(t, zap.Object("request", caddyhttp.LoggableHTTPRequest{Request: c.caddys, ShouldLogCredentials: credentials})))
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%s, with credentials logged %v, the record writes\n%v\nCaddy's marshaler\n%v", name, credentials, got, want)
			}
			req := got["request"].(map[string]any)
			if auth := req["headers"].(map[string]any)["Authorization"]; reflect.DeepEqual(auth, []any{"Bearer secret"}) != credentials {
				t.Errorf("%s, with credentials logged %v, the record has Authorization %v", name, credentials, auth)
			}
			if req["uri"] != c.caddys.RequestURI || req["client_ip"] != "198.51.100.9" {
				t.Errorf("%s: the record has uri %v and client_ip %v", name, req["uri"], req["client_ip"])
			}
		}
	}
}

// TestRecordRefusesWhatItDoesNotKeep: a marshaler that adds a time, a
// complex number or a reflected value, at any depth, is not recorded (its
// stream leaves its line to Caddy instead).
func TestRecordRefusesWhatItDoesNotKeep(t *testing.T) {
	for name, add := range map[string]func(zapcore.ObjectEncoder){
		"time":      func(enc zapcore.ObjectEncoder) { enc.AddTime("t", time.Now()) },
		"complex":   func(enc zapcore.ObjectEncoder) { enc.AddComplex128("c", 1i) },
		"reflected": func(enc zapcore.ObjectEncoder) { enc.AddReflected("r", struct{}{}) },
		"time in an array": func(enc zapcore.ObjectEncoder) {
			enc.AddArray("a", zapcore.ArrayMarshalerFunc(func(enc zapcore.ArrayEncoder) error {
				enc.AppendTime(time.Now())
				return nil
			}))
		},
		"reflected in an object": func(enc zapcore.ObjectEncoder) {
			enc.AddObject("o", zapcore.ObjectMarshalerFunc(func(enc zapcore.ObjectEncoder) error {
				return enc.AddReflected("r", 1)
			}))
		},
	} {
		m := zapcore.ObjectMarshalerFunc(func(enc zapcore.ObjectEncoder) error {
			enc.AddString("before", "x")
			add(enc)
			return nil
		})
		if _, ok := recordObject(m); ok {
			t.Errorf("a marshaler that adds a %s was recorded", name)
		}
	}
}

// BenchmarkRecordRequest: recording what a logged stream's line says of its
// request, as a stream is taken over. Of its allocations, one is the
// record's; Caddy's marshaler of the headers makes the others.
func BenchmarkRecordRequest(b *testing.B) {
	r, _ := http.NewRequest(http.MethodGet, "https://example.com/events?topic=a", nil)
	r.RequestURI, r.RemoteAddr, r.Proto = "/events?topic=a", "192.0.2.7:50123", "HTTP/1.1"
	r.Header = http.Header{
		"Accept":          {"text/event-stream"},
		"Accept-Language": {"en-US,en;q=0.9"},
		"Cache-Control":   {"no-cache"},
		"User-Agent":      {"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"},
	}
	r = r.WithContext(context.WithValue(r.Context(), caddyhttp.VarsCtxKey, map[string]any{caddyhttp.ClientIPVarKey: "192.0.2.7"}))
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := recordRequest(r, false); !ok {
			b.Fatal("not recorded")
		}
	}
}
