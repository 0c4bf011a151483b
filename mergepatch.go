package pollsse

import (
	"bytes"
	"errors"
	"slices"
)

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
			if sameText(w.a, av, w.b, bv) {
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
