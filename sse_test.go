package pollsse

import (
	"strings"
	"testing"
	"time"
)

func TestAppendEvent(t *testing.T) {
	tests := []struct {
		name        string
		event, id   string
		data        string
		wantFrame   string
		wantData    string
		wantDataSet bool
	}{
		{name: "a compact JSON document is one data line", event: "snapshot", id: "e-1", data: `{"a":1}`,
			wantFrame: "event: snapshot\nid: e-1\ndata: {\"a\":1}\n\n", wantData: `{"a":1}`},
		{name: "LF in data starts a new data line", event: "snapshot", id: "e-2", data: "a\nb",
			wantFrame: "event: snapshot\nid: e-2\ndata: a\ndata: b\n\n", wantData: "a\nb"},
		{name: "CR in data starts a new data line", data: "a\rb",
			wantFrame: "data: a\ndata: b\n\n", wantData: "a\nb"},
		{name: "CRLF in data is one line break", data: "a\r\nb",
			wantFrame: "data: a\ndata: b\n\n", wantData: "a\nb"},
		{name: "a trailing LF keeps an empty last line", data: "a\n",
			wantFrame: "data: a\ndata: \n\n", wantData: "a\n"},
		{name: "data that looks like fields stays data", data: "x\nevent: evil\nid: 99\n\ndata: y",
			wantFrame: "data: x\ndata: event: evil\ndata: id: 99\ndata: \ndata: data: y\n\n", wantData: "x\nevent: evil\nid: 99\n\ndata: y"},
		{name: "empty data is one empty data line", event: "status",
			wantFrame: "event: status\ndata: \n\n", wantData: ""},
		{name: "U+2028 and NUL are not line breaks", data: "a\u2028b\x00c",
			wantFrame: "data: a\u2028b\x00c\n\n", wantData: "a\u2028b\x00c"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			frame := string(encodeEvent(tt.event, tt.id, []byte(tt.data)))
			if frame != tt.wantFrame {
				t.Errorf("frame = %q, want %q", frame, tt.wantFrame)
			}
			evs := parseFrames(t, []byte(frame))
			if len(evs) != 1 {
				t.Fatalf("parsed %d events, want 1: %+v", len(evs), evs)
			}
			if evs[0].name != tt.event || evs[0].id != tt.id || evs[0].data != tt.wantData {
				t.Errorf("parsed %+v, want event %q id %q data %q", evs[0], tt.event, tt.id, tt.wantData)
			}
		})
	}
}

func TestAppendEventRefusesLineBreaksInFields(t *testing.T) {
	for _, bad := range []string{"a\nb", "a\rb", "a\x00b"} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("id %q: no panic", bad)
				}
			}()
			encodeEvent("patch", bad, nil)
		}()
	}
}

func TestRetryFrame(t *testing.T) {
	if got := string(retryFrame(3 * time.Second)); got != "retry: 3000\n\n" {
		t.Errorf("retryFrame = %q", got)
	}
}

// FuzzEventFraming checks that any data, framed as one event, is read back by
// an EventSource as exactly one event with the same data (line breaks
// normalised to LF, as EventSource joins data lines) and the same name and id.
func FuzzEventFraming(f *testing.F) {
	for _, seed := range []string{
		`{"a":1}`, "a\nb", "a\rb", "a\r\nb", "\r\n\r\n", "\n", "\r", "a\u2028b\u2029c",
		"a\x00b", "data: x", "\ndata: x\n\nevent: y\nid: 1\n", ": comment\n", "retry: 1\n",
		`{"s":"line\nbreak"}`, "\xff\xfe", "",
	} {
		f.Add("patch", "e-1", []byte(seed))
	}
	f.Fuzz(func(t *testing.T, event, id string, data []byte) {
		if strings.ContainsAny(event, "\r\n\x00") || strings.ContainsAny(id, "\r\n\x00") {
			t.Skip("event names and ids come from this package and never hold CR, LF or NUL")
		}
		frame := encodeEvent(event, id, data)
		evs := parseFrames(t, frame)
		if len(evs) != 1 {
			t.Fatalf("frame %q parsed as %d events", frame, len(evs))
		}
		want := strings.NewReplacer("\r\n", "\n", "\r", "\n").Replace(string(data))
		ev := evs[0]
		// EventSource strips one leading space of a field value; the frame
		// always writes "field: value", so values keep their own spaces.
		if ev.data != want || ev.name != event || ev.id != id {
			t.Fatalf("frame %q parsed as %+v, want name %q id %q data %q", frame, ev, event, id, want)
		}
	})
}

// TestEventKinds: every kind has a name of its own, the type label of the
// sent metrics; each event's kind is found by its name, and a frame of
// kind begins with the event field of that name.
func TestEventKinds(t *testing.T) {
	seen := map[string]bool{}
	for k := range numEventKinds {
		name := k.String()
		if name == "" || seen[name] {
			t.Errorf("kind %d is named %q", k, name)
		}
		seen[name] = true
		if k == kindHeartbeat {
			continue
		}
		if got := kindOf(name); got != k {
			t.Errorf("kindOf(%q) = %v, want %v", name, got, k)
		}
		if f := newFrame(k, "e-1", []byte("{}")); f.kind != k || !strings.HasPrefix(string(f.bytes), "event: "+name+"\n") {
			t.Errorf("a frame of kind %v: %v, %q", k, f.kind, f.bytes)
		}
	}
	defer func() {
		if recover() == nil {
			t.Error("kindOf of a name without a kind did not panic")
		}
	}()
	kindOf("heartbeat")
}
