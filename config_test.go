package pollsse

import (
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
)

// TestHeaderUpPlaceholders: a header_up value's {env.*} placeholder is read
// when the configuration loads and reaches the upstream; one whose variable
// is empty or unset is logged as a warning that names the header and the
// variable; no log line holds a value.
func TestHeaderUpPlaceholders(t *testing.T) {
	const key = "env-k3y"
	t.Setenv("POLLSSE_TEST_API_KEY", key)
	t.Setenv("POLLSSE_TEST_EMPTY", "")
	api := newFakeAPI(t, `{"a":1}`)
	base, logs := startCaddyAtDebug(t, "["+pollSSERoute("/events", fmt.Sprintf(
		`"upstream":%q,"heartbeat":"1h","header_up":{"X-Api-Key":["{env.POLLSSE_TEST_API_KEY}"],"X-Tenant":["t-{env.POLLSSE_TEST_EMPTY}"],"X-Other":["{env.POLLSSE_TEST_UNSET}"]}`,
		api.URL))+"]")
	sc := openStream(t, http.DefaultClient, base+"/events", "")
	if ev := sc.next(10 * time.Second); ev.name != "snapshot" {
		t.Fatalf("got %+v", ev)
	}
	sc.close()
	got := api.requestLog()[0].Header
	if got.Get("X-Api-Key") != key || got.Get("X-Tenant") != "t-" {
		t.Errorf("the upstream got X-Api-Key %q and X-Tenant %q", got.Get("X-Api-Key"), got.Get("X-Tenant"))
	}

	warned := map[string]string{}
	for _, l := range logs.lines() {
		if strings.Contains(l.raw, key) {
			t.Errorf("a log line holds the value of a header_up placeholder: %s", l.raw)
		}
		if l.Level == "warn" && strings.HasPrefix(l.Msg, "header_up:") {
			var fields struct{ Header, Variable string }
			if err := json.Unmarshal([]byte(l.raw), &fields); err != nil {
				t.Fatal(err)
			}
			warned[fields.Header] = fields.Variable
		}
	}
	want := map[string]string{"X-Tenant": "POLLSSE_TEST_EMPTY", "X-Other": "POLLSSE_TEST_UNSET"}
	if fmt.Sprint(warned) != fmt.Sprint(want) {
		t.Errorf("warnings for the headers and variables %v, want %v", warned, want)
	}
}

// otherSettings are valid values of the settings whose type gives none,
// each different from the setting's default and from the values of
// TestTopicSettingsKey's handler.
var otherSettings = map[string]any{
	"upstream":        "http://api.test/other",
	"header_up":       http.Header{"X-Api-Key": {"k"}},
	"forward_headers": []string{"Authorization"},
	"mode":            modeSnapshot,
	"select":          "/data",
	"ignore":          []string{"/generated_at"},
	"store":           json.RawMessage(`{"module":"memory"}`),
}

// changeSetting sets v, the Handler's setting of that JSON name, to a valid
// value other than its default.
func changeSetting(t *testing.T, name string, v reflect.Value) {
	t.Helper()
	if other, ok := otherSettings[name]; ok {
		v.Set(reflect.ValueOf(other))
		return
	}
	switch v.Interface().(type) {
	case caddy.Duration:
		// Longer than any default, and valid for every duration.
		v.Set(reflect.ValueOf(caddy.Duration(time.Hour)))
	case int, int64:
		v.SetInt(12345)
	default:
		t.Fatalf("no other value of %s, a %s: add one to otherSettings", name, v.Type())
	}
}

// TestTopicSettingsKey: each setting of the Handler is either a topic
// setting, part of the key that decides which handlers share a hub (its
// topics, documents and ids), or one of perHandlerSettings; changing a
// topic setting changes the key, so that a reload that changes it makes
// new topics, and changing a per-handler one does not, so that a reload
// that changes only it keeps them.
func TestTopicSettingsKey(t *testing.T) {
	key := func(t *testing.T, h Handler) string {
		t.Helper()
		h.setDefaults()
		if err := h.validate(); err != nil {
			t.Fatalf("the handler is invalid: %v", err)
		}
		s, err := h.topicSettings(zap.NewNop())
		if err != nil {
			t.Fatal(err)
		}
		k, err := s.key()
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	base := Handler{Upstream: "http://api.test/doc"}
	baseKey := key(t, base)
	handler, settings := reflect.TypeFor[Handler](), reflect.TypeFor[topicSettings]()
	for i := range handler.NumField() {
		field := handler.Field(i)
		if !field.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(field.Tag.Get("json"), ",")
		_, isTopic := settings.FieldByName(field.Name)
		perHandler := slices.Contains(perHandlerSettings, name)
		t.Run(name, func(t *testing.T) {
			if isTopic == perHandler {
				t.Fatalf("%s is a field of topicSettings: %v, in perHandlerSettings: %v; want exactly one", name, isTopic, perHandler)
			}
			h := base
			changeSetting(t, name, reflect.ValueOf(&h).Elem().Field(i))
			if changed := key(t, h) != baseKey; changed != isTopic {
				t.Errorf("changing %s changes the key: %v, want %v", name, changed, isTopic)
			}
		})
	}
	for i := range settings.NumField() {
		if f := settings.Field(i); f.IsExported() {
			if _, ok := handler.FieldByName(f.Name); !ok {
				t.Errorf("topicSettings.%s is no setting of the Handler", f.Name)
			}
		}
	}
}
