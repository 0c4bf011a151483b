package pollsse

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"unicode/utf8"
)

// The diff engine turns each upstream response into a document and says how
// one document changed into the next, as the data of one event.
//
// A response is parsed once, by the scanner below, into a compact copy of the
// JSON (whitespace dropped, every other byte kept as sent: numbers keep their
// exact text, strings their escapes) and a tree of nodes that point into it.
// Each node has a hash of its value, so that comparing two documents skips
// every subtree whose hash and bytes are unchanged, and arrays are aligned on
// their elements' hashes: an element inserted, removed or moved is one
// operation, not a rewrite of the elements after it.
//
// Rules that apply to every mode:
//   - A leading UTF-8 byte order mark is dropped. A body that is not UTF-8 or
//     not JSON (a document of any type, top-level strings, numbers and null
//     included) is a failed poll; nothing is sent.
//   - An object with the same key more than once keeps the last member of
//     that key, as JavaScript's JSON.parse does: the others are dropped from
//     the snapshot, and patches are computed on what is left.
//   - Two documents that differ only in whitespace, in the order of an
//     object's members or in how a string is escaped are equal: no event.
//     Numbers are compared by their text, so 1.0 and 1 differ.

// Modes of the diff engine, the values of the mode option.
const (
	modeJSONPatch  = "json_patch"
	modeMergePatch = "merge_patch"
	modeSnapshot   = "snapshot"
)

// A differ parses upstream bodies into documents and says how one document
// changed into the next, for one configured mode. Its methods are pure
// functions: no I/O, no state kept between calls.
type differ interface {
	// parse checks a response body and returns it as a document. An error
	// says what was wrong with the body; the poll counts as failed.
	parse(body []byte) (*document, error)
	// diff returns the event that turns prev into next for a subscriber
	// that holds prev: its name and data. An empty event name means the
	// documents are equal and nothing is sent.
	diff(prev, next *document) (event string, data []byte, err error)
}

// newDiffer returns the differ of a mode ("" is json_patch) that streams the
// part of each response at the JSON pointer sel ("" for all of it) without
// the parts that the ignore patterns match. Its errors name the option and
// the bad value.
func newDiffer(mode, sel string, ignore []string) (differ, error) {
	if err := checkMode(mode); err != nil {
		return nil, err
	}
	f, err := newFilter(sel, ignore)
	if err != nil {
		return nil, err
	}
	switch mode {
	case modeMergePatch:
		return mergePatchDiffer{f}, nil
	case modeSnapshot:
		return snapshotDiffer{f}, nil
	}
	return jsonPatchDiffer{f}, nil
}

// checkMode checks the value of the mode option.
func checkMode(mode string) error {
	switch mode {
	case "", modeJSONPatch, modeMergePatch, modeSnapshot:
		return nil
	}
	return fmt.Errorf("mode: unknown mode %q, want %s, %s or %s", mode, modeJSONPatch, modeMergePatch, modeSnapshot)
}

// patchSlack is how much longer than the new document a patch may be before
// a snapshot is sent instead: a patch is what clients expect after the first
// snapshot, but not at any price.
const patchSlack = 1 << 10

// jsonPatchDiffer is the json_patch mode: changes are RFC 6902 JSON Patch
// arrays. A change that replaces the whole document (a new top-level scalar,
// an array that was an object), or whose patch would be more than
// patchSlack longer than the new document, is sent as a snapshot instead.
type jsonPatchDiffer struct{ f filter }

func (d jsonPatchDiffer) parse(body []byte) (*document, error) { return d.f.parseJSON(body) }

func (jsonPatchDiffer) diff(prev, next *document) (string, []byte, error) {
	if prev.nodes == nil || next.nodes == nil {
		return diffSnapshots(prev, next)
	}
	a, b := prev.root, next.root
	if sameValue(prev, a, next, b) {
		return "", nil, nil
	}
	ka, kb := prev.kind(a), next.kind(b)
	if ka != kb || (ka != kindObject && ka != kindArray) {
		// Only a replacement of the whole document would do: the snapshot
		// says the same in fewer bytes.
		return diffSnapshots(prev, next)
	}
	w := patchWriter{a: prev, b: next, limit: len(next.data) + patchSlack}
	w.out = make([]byte, 1, 256)
	w.out[0] = '['
	if ka == kindObject {
		w.object(a, b)
	} else {
		w.array(a, b)
	}
	if len(w.out) == 1 {
		// Equal but written differently: no operation.
		return "", nil, nil
	}
	w.out = append(w.out, ']')
	if len(w.out) > w.limit {
		return eventSnapshot, next.data, nil
	}
	return eventPatch, w.out, nil
}

// mergePatchDiffer is the merge_patch mode: changes are RFC 7386 merge
// patches. A change that a merge patch cannot say (a member set to null, a
// new value holding an object with a null member, a document that is not an
// object), or whose merge patch would be more than patchSlack longer than
// the new document, is sent as a snapshot instead.
type mergePatchDiffer struct{ f filter }

func (d mergePatchDiffer) parse(body []byte) (*document, error) { return d.f.parseJSON(body) }

func (mergePatchDiffer) diff(prev, next *document) (string, []byte, error) {
	if prev.nodes == nil || next.nodes == nil {
		return diffSnapshots(prev, next)
	}
	a, b := prev.root, next.root
	if sameValue(prev, a, next, b) {
		return "", nil, nil
	}
	if prev.kind(a) != kindObject || next.kind(b) != kindObject {
		return diffSnapshots(prev, next)
	}
	w := mergeWriter{a: prev, b: next, limit: len(next.data) + patchSlack}
	wrote, err := w.object(a, b)
	switch {
	case errors.Is(err, errNoMerge):
		return eventSnapshot, next.data, nil
	case err != nil:
		return "", nil, err
	case !wrote:
		return "", nil, nil
	case len(w.out) > w.limit:
		return eventSnapshot, next.data, nil
	}
	return eventMerge, w.out, nil
}

// snapshotDiffer is the snapshot mode: every change is a snapshot. A body
// that is not JSON is a text document, compared byte for byte and sent as it
// is, unless select or ignore is configured.
type snapshotDiffer struct{ f filter }

func (d snapshotDiffer) parse(body []byte) (*document, error) {
	doc, err := d.f.parseJSON(body)
	if err == nil || d.f.sel != nil || d.f.ignore != nil {
		return doc, err
	}
	text := bytes.TrimPrefix(body, utf8BOM)
	if !utf8.Valid(text) {
		return nil, errors.New("response body is neither JSON nor UTF-8 text")
	}
	return &document{body: body, data: text}, nil
}

func (snapshotDiffer) diff(prev, next *document) (string, []byte, error) {
	return diffSnapshots(prev, next)
}

// diffSnapshots says no event for equal documents and a snapshot otherwise.
func diffSnapshots(prev, next *document) (string, []byte, error) {
	if prev.nodes != nil && next.nodes != nil {
		if equalValue(prev, prev.root, next, next.root) {
			return "", nil, nil
		}
	} else if prev.nodes == nil && next.nodes == nil && bytes.Equal(prev.data, next.data) {
		return "", nil, nil
	}
	return eventSnapshot, next.data, nil
}

// Roles of an element of the old array in align.
const (
	roleRemoved = iota // not in the new array
	roleKept           // in place, maybe changed
	roleMoved          // equal to an element elsewhere in the new array
)

// align writes the operations that turn the elements A of an array into B,
// where A and B start at index p. Elements equal in A and B are matched in
// order; the longest run of matched elements that keep their order stays in
// place, the other matched elements move, and the elements left between
// two that stay are changed in place pairwise, then removed or added.
func (w *patchWriter) align(p int, A, B []uint32) {
	n, m := len(A), len(B)

	// Match each element of B with the first unmatched equal element of A.
	heads := make(map[uint64]int32, n)
	sameNext := make([]int32, n)
	for i := n - 1; i >= 0; i-- {
		h := w.a.nodes[A[i]].hash
		if j, ok := heads[h]; ok {
			sameNext[i] = j
		} else {
			sameNext[i] = -1
		}
		heads[h] = int32(i)
	}
	from := make([]int32, m)
	for j := range B {
		from[j] = -1
		h := w.b.nodes[B[j]].hash
		if i, ok := heads[h]; ok && i >= 0 && sameValue(w.a, A[i], w.b, B[j]) {
			from[j] = i
			heads[h] = sameNext[i]
		}
	}
	stay := increasingRun(from)

	role := make([]uint8, n)
	move := make([]bool, m)
	for j, i := range from {
		if i >= 0 {
			if stay[j] {
				role[i] = roleKept
			} else {
				role[i] = roleMoved
				move[j] = true
			}
		}
	}
	// Between two elements that stay, pair the unmatched elements of A
	// and B in order: each pair is one element changed in place.
	ia, jb := 0, 0
	for j := 0; j <= m; j++ {
		if j < m && !stay[j] {
			continue
		}
		end := n
		if j < m {
			end = int(from[j])
		}
		i := ia
		for k := jb; k < j; k++ {
			if from[k] >= 0 {
				continue
			}
			for i < end && role[i] != roleRemoved {
				i++
			}
			if i == end {
				break
			}
			from[k] = int32(i)
			role[i] = roleKept
			i++
		}
		ia, jb = end+1, j+1
	}

	// Write the operations for B from left to right. The array is then
	// the first p elements, the elements placed so far (the prefix),
	// the elements of A not yet placed (the rest), in A's order, and the
	// elements after the change. An element of A that moves further right
	// than an element that stays is parked: left in the prefix until its
	// place comes.
	const (
		inRest = iota
		gone
		parked
	)
	state := make([]uint8, n)
	parkedAt := make([]int32, n)
	rest := make(fenwick, n) // 1 for each element of A in the rest
	for k := range rest {
		rest[k] = int32((k + 1) & -(k + 1))
	}
	prefix := make(fenwick, n+m) // 1 for each element of the prefix, by time of placing
	total, clock := 0, 0
	place := func() {
		prefix.add(clock, 1)
		clock++
		total++
	}
	rc := 0 // the elements of A before rc have left the rest
	advance := func(to int) {
		for ; rc < to; rc++ {
			if state[rc] != inRest {
				continue
			}
			rest.add(rc, -1)
			if role[rc] == roleMoved {
				state[rc], parkedAt[rc] = parked, int32(clock)
				place()
				continue
			}
			state[rc] = gone
			if w.over() {
				continue
			}
			n := w.pushIndex(p + total)
			w.remove()
			w.path = w.path[:n]
		}
	}
	for j := range B {
		if w.over() {
			return
		}
		i := int(from[j])
		switch {
		case i < 0:
			n := w.pushIndex(p + total)
			w.withValue("add", B[j])
			w.path = w.path[:n]
		case move[j]:
			var at int
			if state[i] == parked {
				at = int(prefix.sum(int(parkedAt[i])))
				prefix.add(int(parkedAt[i]), -1)
				total--
			} else {
				at = total + int(rest.sum(i))
				rest.add(i, -1)
			}
			state[i] = gone
			if at != total {
				w.move(p+at, p+total)
			}
		default:
			advance(i)
			n := w.pushIndex(p + total)
			w.value(A[i], B[j])
			w.path = w.path[:n]
			rest.add(i, -1)
			state[i] = gone
			rc = i + 1
		}
		place()
	}
	advance(n)
}

// increasingRun marks a longest subsequence of from whose values increase,
// skipping the values below 0.
func increasingRun(from []int32) []bool {
	var tails []int // tails[k]: index in from of the end of the best run of length k+1
	prev := make([]int, len(from))
	for j, v := range from {
		if v < 0 {
			continue
		}
		k, _ := slices.BinarySearchFunc(tails, v, func(t int, v int32) int { return int(from[t] - v) })
		if k > 0 {
			prev[j] = tails[k-1]
		} else {
			prev[j] = -1
		}
		if k == len(tails) {
			tails = append(tails, j)
		} else {
			tails[k] = j
		}
	}
	run := make([]bool, len(from))
	if len(tails) > 0 {
		for j := tails[len(tails)-1]; j >= 0; j = prev[j] {
			run[j] = true
		}
	}
	return run
}

// A fenwick tree counts the elements of a set of small integers.
type fenwick []int32

func (f fenwick) add(i int, v int32) {
	for i++; i <= len(f); i += i & -i {
		f[i-1] += v
	}
}

// sum returns the count of the elements below i.
func (f fenwick) sum(i int) int32 {
	var s int32
	for ; i > 0; i -= i & -i {
		s += f[i-1]
	}
	return s
}

// ---- merge_patch ----

// errNoMerge says that a change cannot be a merge patch.
var errNoMerge = errors.New("change cannot be said as a merge patch")

// A mergeWriter writes the merge patch that turns an object of a into one
// of b.
type mergeWriter struct {
	a, b  *document
	out   []byte
	limit int
}

// object writes the merge patch between two objects and reports whether it
// wrote one: nothing is written for equal objects.
func (w *mergeWriter) object(ai, bi uint32) (bool, error) {
	mark := len(w.out)
	w.out = append(w.out, '{')
	am := slices.Collect(w.a.members(ai))
	bm := slices.Collect(w.b.members(bi))
	from := matchMembers(am, bm)
	usedA := make([]bool, len(am))
	for _, i := range from {
		if i >= 0 {
			usedA[i] = true
		}
	}
	wrote := false
	key := func(k []byte) {
		if wrote {
			w.out = append(w.out, ',')
		}
		w.out = append(w.out, '"')
		w.out = append(w.out, k...)
		w.out = append(w.out, '"', ':')
	}
	for i := range am {
		if !usedA[i] {
			key(am[i].key)
			w.out = append(w.out, "null"...)
			wrote = true
		}
	}
	for j := range bm {
		if len(w.out) > w.limit {
			return false, errNoMerge
		}
		bv := bm[j].val
		if from[j] >= 0 {
			av := am[from[j]].val
			if sameValue(w.a, av, w.b, bv) {
				continue
			}
			if w.a.kind(av) == kindObject && w.b.kind(bv) == kindObject {
				m := len(w.out)
				key(bm[j].key)
				ok, err := w.object(av, bv)
				if err != nil {
					return false, err
				}
				if ok {
					wrote = true
				} else {
					w.out = w.out[:m]
				}
				continue
			}
			if equalValue(w.a, av, w.b, bv) {
				continue
			}
		}
		// A merge patch removes the members it sets to null, and the
		// object members set to null in an object it sets, and some
		// implementations those in arrays too.
		if w.b.kind(bv) == kindNull || w.b.hasNullMember(bv) {
			return false, errNoMerge
		}
		key(bm[j].key)
		w.out = append(w.out, w.b.text(bv)...)
		wrote = true
	}
	if !wrote {
		w.out = w.out[:mark]
		return false, nil
	}
	w.out = append(w.out, '}')
	return true, nil
}

// hasNullMember reports whether a value holds an object member that is null,
// at any depth.
func (d *document) hasNullMember(i uint32) bool {
	k := d.kind(i)
	if (k != kindObject && k != kindArray) || !bytes.Contains(d.text(i), []byte("null")) {
		return false
	}
	for c := range d.children(i) {
		if (k == kindObject && d.kind(c) == kindNull) || d.hasNullMember(c) {
			return true
		}
	}
	return false
}
