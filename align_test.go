package pollsse

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// TestDiffSmallOnTheWire checks the sizes of patches for common changes of
// a long array; the benchmarks report them for the 1.3 MB document.
func TestDiffSmallOnTheWire(t *testing.T) {
	doc := diffArray(5000, 0)
	snapshot := len(doc)
	tests := []struct {
		name   string
		change func([]string) []string
		ops    int
	}{
		{"one changed field", func(e []string) []string {
			e[2500] = strings.Replace(e[2500], `"qty":2500`, `"qty":-1`, 1)
			return e
		}, 1},
		{"an element inserted in the middle", func(e []string) []string { return slices.Insert(e, 2500, `{"id":-1}`) }, 1},
		{"an element removed from the middle", func(e []string) []string { return slices.Delete(e, 2500, 2501) }, 1},
		{"an element moved", func(e []string) []string {
			x := e[100]
			return slices.Insert(slices.Delete(e, 100, 101), 4000, x)
		}, 1},
		{"two elements swapped", func(e []string) []string {
			e[10], e[4000] = e[4000], e[10]
			return e
		}, 2},
		{"the first element moved to the end", func(e []string) []string { return append(e[1:], e[0]) }, 1},
	}
	d := mustDiffer(t, modeJSONPatch, "")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := diffArrayFrom(tt.change(diffElements(5000, 0)))
			event, data := checkDiff(t, d, doc, b)
			var ops []map[string]any
			if err := json.Unmarshal(data, &ops); err != nil || event != eventPatch {
				t.Fatalf("got %s %s", event, data)
			}
			if len(ops) != tt.ops || len(data)*100 >= snapshot {
				t.Errorf("patch of %d operations and %d bytes (snapshot %d), want %d operations, under 1%%: %s", len(ops), len(data), snapshot, tt.ops, data)
			}
		})
	}
}

// diffElements returns n small distinct objects as JSON texts.
func diffElements(n, seed int) []string {
	e := make([]string, n)
	for i := range e {
		e[i] = fmt.Sprintf(`{"id":%d,"qty":%d}`, i+seed, i)
	}
	return e
}

func diffArrayFrom(e []string) []byte { return []byte("[" + strings.Join(e, ",") + "]") }

func diffArray(n, seed int) []byte { return diffArrayFrom(diffElements(n, seed)) }

// TestDiffRandomArrays diffs arrays of few distinct values, so that many
// are equal, with random edits: alignment with duplicates, moves, and
// changes around them.
func TestDiffRandomArrays(t *testing.T) {
	n := 2000
	if testing.Short() || raceEnabled {
		n = 500
	}
	r := rand.New(rand.NewPCG(2, 3))
	d := mustDiffer(t, modeJSONPatch, "")
	for range n {
		a := make([]any, r.IntN(12))
		for i := range a {
			a[i] = r.IntN(5)
			if r.IntN(4) == 0 {
				a[i] = map[string]any{"k": r.IntN(3), "v": r.IntN(2)}
			}
		}
		b := slices.Clone(a)
		for range r.IntN(5) {
			switch k := r.IntN(5); {
			case k == 0 || len(b) == 0:
				b = slices.Insert(b, r.IntN(len(b)+1), any(r.IntN(6)))
			case k == 1:
				i := r.IntN(len(b))
				b = slices.Delete(b, i, i+1)
			case k == 2:
				i, j := r.IntN(len(b)), r.IntN(len(b))
				b[i], b[j] = b[j], b[i]
			case k == 3:
				i := r.IntN(len(b))
				x := b[i]
				b = slices.Delete(b, i, i+1)
				b = slices.Insert(b, r.IntN(len(b)+1), x)
			default:
				b[r.IntN(len(b))] = map[string]any{"k": r.IntN(3), "v": 9}
			}
		}
		ja, _ := json.Marshal(a)
		jb, _ := json.Marshal(b)
		checkDiff(t, d, ja, jb)
	}
}
