package pollsse

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/wI2L/jsondiff"
)

// The benchmarks of the diff engine run on the document of the issue: an
// array of 5,000 objects of 10 fields, 1.3 MB. BENCHMARKS.md has the figures
// and the command.

const benchElements = 5000

// benchElement returns element i of the benchmark document; v changes its
// stock.
func benchElement(i, v int) string {
	return fmt.Sprintf(`{"id":%d,"sku":"SKU-%06d","name":"Product %d","category":"category-%02d","price":%d.%02d,"stock":%d,"active":%t,"rating":4.%d,"updated_at":"2025-01-%02dT12:%02d:00Z","description":"A product of the catalogue, number %06d, sold by the unit or in boxes of twelve."}`,
		i, i, i, i%40, 10+i%990, i%100, (i*7+v)%1000, i%3 != 0, i%10, 1+i%28, i%60, i)
}

func benchElementsOf() []string {
	e := make([]string, benchElements)
	for i := range e {
		e[i] = benchElement(i, 0)
	}
	return e
}

// A benchCase is a change of the benchmark document.
type benchCase struct {
	name   string
	change func([]string) []string
}

var benchCases = []benchCase{
	{"one_field", func(e []string) []string { e[2500] = benchElement(2500, 1); return e }},
	{"insert_middle", func(e []string) []string { return slices.Insert(e, 2500, benchElement(benchElements, 0)) }},
	{"remove_middle", func(e []string) []string { return slices.Delete(e, 2500, 2501) }},
	{"move_element", func(e []string) []string {
		x := e[1000]
		return slices.Insert(slices.Delete(e, 1000, 1001), 4000, x)
	}},
	{"swap_two", func(e []string) []string { e[10], e[4990] = e[4990], e[10]; return e }},
	{"reverse_all", func(e []string) []string { slices.Reverse(e); return e }},
}

// benchBodies returns the benchmark document and its change, pretty or
// compact.
func benchBodies(c benchCase, pretty bool) (a, b []byte) {
	a = diffArrayFrom(benchElementsOf())
	b = diffArrayFrom(c.change(benchElementsOf()))
	if pretty {
		var pa, pb bytes.Buffer
		json.Indent(&pa, a, "", "  ")
		json.Indent(&pb, b, "", "  ")
		a, b = pa.Bytes(), pb.Bytes()
	}
	return a, b
}

// BenchmarkDiffIdenticalBody is what a poll whose body is byte for byte the
// last one costs: the poller compares the bodies and stops.
func BenchmarkDiffIdenticalBody(b *testing.B) {
	body, _ := benchBodies(benchCases[0], false)
	prev, err := jsonPatchDiffer{}.parse(bytes.Clone(body))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if !bytes.Equal(body, prev.body) {
			b.Fatal("bodies differ")
		}
	}
}

// BenchmarkDiffParse is the parse of a changed body alone.
func BenchmarkDiffParse(b *testing.B) {
	for _, pretty := range []bool{false, true} {
		b.Run(map[bool]string{false: "compact", true: "pretty"}[pretty], func(b *testing.B) {
			body, _ := benchBodies(benchCases[0], pretty)
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := (jsonPatchDiffer{}).parse(body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDiffChange is what a poll with a changed body costs from the body
// to the encoded event: parse, compare, encode. It reports the event's size
// and, for patches, the number of operations.
func BenchmarkDiffChange(b *testing.B) {
	for _, c := range benchCases {
		b.Run(c.name, func(b *testing.B) {
			benchChange(b, modeJSONPatch, c, false)
		})
	}
	b.Run("one_field_pretty", func(b *testing.B) { benchChange(b, modeJSONPatch, benchCases[0], true) })
}

func benchChange(b *testing.B, mode string, c benchCase, pretty bool) {
	d := mustDiffer(b, mode, "")
	bodyA, bodyB := benchBodies(c, pretty)
	prev, err := d.parse(bodyA)
	if err != nil {
		b.Fatal(err)
	}
	var event string
	var data, frame []byte
	b.SetBytes(int64(len(bodyB)))
	b.ReportAllocs()
	for b.Loop() {
		next, err := d.parse(bodyB)
		if err != nil {
			b.Fatal(err)
		}
		event, data, err = d.diff(prev, next)
		if err != nil {
			b.Fatal(err)
		}
		frame = encodeEvent(event, "1a2b3c-42", data)
	}
	b.ReportMetric(float64(len(frame)), "event-bytes")
	b.ReportMetric(float64(len(prev.data)), "snapshot-bytes")
	if event == eventPatch {
		var ops []json.RawMessage
		if err := json.Unmarshal(data, &ops); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(len(ops)), "ops")
		b.ReportMetric(float64(len(data)), "patch-bytes")
	}
	b.Logf("%s: %s event of %d bytes: %.200s", c.name, event, len(data), data)
}

// BenchmarkDiffJSONDiffCompareJSON is the comparison alone with
// github.com/wI2L/jsondiff, which the engine replaced, for reference.
func BenchmarkDiffJSONDiffCompareJSON(b *testing.B) {
	bodyA, bodyB := benchBodies(benchCases[0], false)
	b.SetBytes(int64(len(bodyB)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := jsondiff.CompareJSON(bodyA, bodyB); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDiffKeptMemory measures the memory that a topic keeps between
// polls for one document: the heap in use after parsing a body as the
// poller reads it, once everything but the document is garbage. It reports
// it as a multiple of the body's size (kept-x).
func BenchmarkDiffKeptMemory(b *testing.B) {
	for _, pretty := range []bool{false, true} {
		b.Run(map[bool]string{false: "compact", true: "pretty"}[pretty], func(b *testing.B) {
			raw, _ := benchBodies(benchCases[0], pretty)
			var kept uint64
			for b.Loop() {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				body, err := io.ReadAll(io.LimitReader(strings.NewReader(string(raw)), 10<<20))
				if err != nil {
					b.Fatal(err)
				}
				doc, err := jsonPatchDiffer{}.parse(body)
				if err != nil {
					b.Fatal(err)
				}
				body = nil
				runtime.GC()
				runtime.ReadMemStats(&after)
				kept = after.HeapAlloc - before.HeapAlloc
				runtime.KeepAlive(doc)
			}
			b.ReportMetric(float64(kept), "kept-bytes")
			b.ReportMetric(float64(kept)/float64(len(raw)), "kept-x")
			b.ReportMetric(float64(len(raw)), "body-bytes")
		})
	}
}

// BenchmarkTopicKeptMemory is the heap that a topic holds between polls in
// json_patch mode once it has had a change: the current document, its
// snapshot frame (encoded when a subscriber connected after the change),
// and the history of patch frames, with a full history of 256 one-field
// patches. The previous document is garbage by then.
func BenchmarkTopicKeptMemory(b *testing.B) {
	raw, changed := benchBodies(benchCases[0], false)
	var kept uint64
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		d := jsonPatchDiffer{}
		log := newMemoryLog(defaultHistory)
		prev, err := d.parse(bytes.Clone(raw))
		if err != nil {
			b.Fatal(err)
		}
		log.appendDocument(prev, "", nil)
		for i := range defaultHistory {
			body := changed
			if i%2 == 1 {
				body = raw
			}
			next, err := d.parse(bytes.Clone(body))
			if err != nil {
				b.Fatal(err)
			}
			event, data, err := d.diff(prev, next)
			if err != nil || event != eventPatch {
				b.Fatalf("diff: %q, %v", event, err)
			}
			log.appendDocument(next, event, data)
			prev = next
		}
		if frames, _, _ := log.read(0, nil); len(frames) != 1 {
			b.Fatal("no snapshot")
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		kept = after.HeapAlloc - before.HeapAlloc
		runtime.KeepAlive(log)
		runtime.KeepAlive(prev)
	}
	b.ReportMetric(float64(kept), "kept-bytes")
	b.ReportMetric(float64(kept)/float64(len(raw)), "kept-x")
}
