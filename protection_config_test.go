package pollsse

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

func TestProtectionCaddyfileErrors(t *testing.T) {
	tests := []struct {
		name, block string
		wantErr     []string
	}{
		{"max_backoff without a value", `max_backoff`, []string{"max_backoff: want a duration"}},
		{"a bad max_backoff", `max_backoff later`, []string{"max_backoff: invalid duration 'later'"}},
		{"a zero max_backoff", `max_backoff 0s`, []string{"max_backoff: must be positive, not '0s'"}},
		{"max_body without a value", `max_body`, []string{"max_body: want a size"}},
		{"a max_body that is not a size", `max_body lots`, []string{"max_body: want a positive size", "not 'lots'"}},
		{"a zero max_body", `max_body 0`, []string{"max_body: want a positive size", "not '0'"}},
		{"an extra argument to max_body", `max_body 1MB 2MB`, []string{"max_body: unexpected argument '2MB'"}},
		{"forward_headers without a name", `forward_headers`, []string{"forward_headers: want one or more header names"}},
		{"forward_headers with a name that is no header", `forward_headers "X Bad"`, []string{`forward_headers: "X Bad" is not a header name`}},
		{"forward_headers Host", `forward_headers Authorization host`, []string{"forward_headers: host cannot be forwarded"}},
		{"forward_headers If-None-Match", `forward_headers If-None-Match`, []string{"forward_headers: If-None-Match cannot be forwarded"}},
		{"a zero max_topics", `max_topics 0`, []string{"max_topics: want a positive number, not '0'"}},
		{"a max_topics that is not a number", `max_topics many`, []string{"max_topics: want a positive number, not 'many'"}},
		{"a negative max_subscribers", `max_subscribers -1`, []string{"max_subscribers: want a positive number, not '-1'"}},
		{"max_subscribers without a value", `max_subscribers`, []string{"max_subscribers: want a number"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := adapt(t, ":8080 {\n\tpoll_sse {\n\t\tupstream http://a.test/x\n\t\t"+tt.block+"\n\t}\n}\n")
			if err == nil {
				t.Fatalf("adapted without error: %s", out)
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
		})
	}
}

func TestProtectionJSONConfigErrors(t *testing.T) {
	tests := []struct {
		name, fields, wantErr string
	}{
		{"a negative max_backoff", `"max_backoff":-1`, "max_backoff: must be positive"},
		{"a negative max_body", `"max_body":-1`, "max_body: must be positive, not -1"},
		{"a negative max_topics", `"max_topics":-5`, "max_topics: must be positive, not -5"},
		{"a negative max_subscribers", `"max_subscribers":-5`, "max_subscribers: must be positive, not -5"},
		{"a forwarded header that header_up sets", `"forward_headers":["Authorization"],"header_up":{"authorization":["Bearer static"]}`, "forward_headers: Authorization is also set by header_up"},
		{"a forwarded header of the connection", `"forward_headers":["Connection"]`, "forward_headers: Connection cannot be forwarded"},
		{"an empty forwarded header name", `"forward_headers":[""]`, `forward_headers: "" is not a header name`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := `{"admin":{"disabled":true},"apps":{"http":{"servers":{"s":{"listen":["127.0.0.1:0"],"routes":[{"handle":[{"handler":"poll_sse","upstream":"http://a.test/x",` + tt.fields + `}]}]}}}}}`
			var c caddy.Config
			if err := json.Unmarshal([]byte(cfg), &c); err != nil {
				t.Fatal(err)
			}
			err := caddy.Validate(&c)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("caddy validate = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}
