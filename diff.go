package pollsse

import (
	"bytes"
	"errors"
	"fmt"
	"unicode/utf8"
)

// The diff engine turns each upstream response into a document and says how
// one document changed into the next, as the data of one event. This file
// holds its modes; its other files are named after its parts.
//
// A response is parsed once, by the scanner (scanner.go), into a compact copy
// of the JSON (whitespace dropped, every other byte kept as sent: numbers
// keep their exact text, strings their escapes) and a tree of nodes that
// point into it (document.go), which select and ignore cut down to the part
// that is streamed (filter.go). Each node has a hash of its value, so that
// comparing two documents skips every subtree whose hash and bytes are
// unchanged, and arrays are aligned on their elements' hashes (align.go): an
// element inserted, removed or moved is one operation, not a rewrite of the
// elements after it. A change is written as a JSON Patch (jsonpatch.go) or a
// merge patch (mergepatch.go).
//
// Rules that apply to every mode:
//   - A leading UTF-8 byte order mark is dropped. A body that is not UTF-8 or
//     not JSON (a document of any type, top-level strings, numbers and null
//     included) is a failed poll; nothing is sent. The one exception is the
//     snapshot mode without select and ignore, which sends UTF-8 text too.
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
	if sameText(prev, a, next, b) {
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

// mergePatchDiffer is the merge_patch mode: changes are RFC 7396 merge
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
	if sameText(prev, a, next, b) {
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
