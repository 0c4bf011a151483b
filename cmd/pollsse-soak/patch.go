package main

import (
	"fmt"
	"math/big"
	"strconv"
	"strings"
)

// The browser's side of the events: RFC 6902 JSON Patch and RFC 7396 JSON
// Merge Patch, applied to a decoded document. (evanphx/json-patch v5.9.11
// drops an "add" below an empty key, "//x", without an error, and fails a
// "replace" there: the soak's documents have such keys, and the handler
// sends such paths.)
//
// Documents are never changed in place: a patch copies the objects and
// arrays on the paths it changes and shares the rest, so that the clients
// of a topic, which hold the same documents, can share them (verify.go).

// applyPatch applies the operations of a JSON Patch to doc and returns the
// new document; doc is left as it was.
func applyPatch(doc any, patch any) (any, error) {
	ops, ok := patch.([]any)
	if !ok {
		return nil, fmt.Errorf("a patch is an array of operations")
	}
	for i, o := range ops {
		op, ok := o.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("operation %d is not an object", i)
		}
		name, _ := op["op"].(string)
		path, ok := op["path"].(string)
		if !ok {
			return nil, fmt.Errorf("operation %d (%s) has no path", i, name)
		}
		tokens, err := parsePointer(path)
		if err != nil {
			return nil, fmt.Errorf("operation %d (%s): %v", i, name, err)
		}
		value, hasValue := op["value"]
		switch name {
		case "add", "replace", "test":
			if !hasValue {
				return nil, fmt.Errorf("operation %d (%s) has no value", i, name)
			}
		}
		switch name {
		case "add":
			doc, err = add(doc, tokens, value)
		case "remove":
			doc, _, err = remove(doc, tokens)
		case "replace":
			if _, err = get(doc, tokens); err == nil {
				if doc, _, err = remove(doc, tokens); err == nil {
					doc, err = add(doc, tokens, value)
				}
			}
		case "move", "copy":
			from, ok := op["from"].(string)
			if !ok {
				return nil, fmt.Errorf("operation %d (%s) has no from", i, name)
			}
			var ft []string
			if ft, err = parsePointer(from); err != nil {
				break
			}
			var v any
			if name == "move" {
				if len(ft) < len(tokens) && strings.HasPrefix(path, from+"/") {
					return nil, fmt.Errorf("operation %d moves %s into itself, to %s", i, from, path)
				}
				doc, v, err = remove(doc, ft)
			} else {
				v, err = get(doc, ft)
			}
			if err == nil {
				doc, err = add(doc, tokens, v)
			}
		case "test":
			var v any
			if v, err = get(doc, tokens); err == nil && !jsonEqual(v, value) {
				err = fmt.Errorf("test of %s failed", path)
			}
		default:
			return nil, fmt.Errorf("operation %d: unknown op %q", i, name)
		}
		if err != nil {
			return nil, fmt.Errorf("operation %d (%s %s): %v", i, name, path, err)
		}
	}
	return doc, nil
}

// parsePointer splits an RFC 6901 JSON Pointer into its reference tokens.
func parsePointer(p string) ([]string, error) {
	if p == "" {
		return nil, nil
	}
	if p[0] != '/' {
		return nil, fmt.Errorf("pointer %q does not start with /", p)
	}
	tokens := strings.Split(p[1:], "/")
	for i, t := range tokens {
		if strings.Contains(strings.ReplaceAll(strings.ReplaceAll(t, "~0", ""), "~1", ""), "~") {
			return nil, fmt.Errorf("pointer %q has a ~ that is neither ~0 nor ~1", p)
		}
		tokens[i] = strings.ReplaceAll(strings.ReplaceAll(t, "~1", "/"), "~0", "~")
	}
	return tokens, nil
}

// index parses an array index token; n is the array's length, and end
// allows "-" and n (past the last element).
func index(t string, n int, end bool) (int, error) {
	if end && t == "-" {
		return n, nil
	}
	if t == "" || len(t) > 1 && t[0] == '0' || strings.Trim(t, "0123456789") != "" {
		return 0, fmt.Errorf("%q is not an array index", t)
	}
	i, err := strconv.Atoi(t)
	if err != nil || i > n || i == n && !end {
		return 0, fmt.Errorf("index %s out of range (length %d)", t, n)
	}
	return i, nil
}

// get returns the value at tokens.
func get(doc any, tokens []string) (any, error) {
	for _, t := range tokens {
		switch d := doc.(type) {
		case map[string]any:
			v, ok := d[t]
			if !ok {
				return nil, fmt.Errorf("no member %q", t)
			}
			doc = v
		case []any:
			i, err := index(t, len(d), false)
			if err != nil {
				return nil, err
			}
			doc = d[i]
		default:
			return nil, fmt.Errorf("%q goes into a scalar", t)
		}
	}
	return doc, nil
}

// change returns node with its child at tokens replaced by what f makes of
// the parent of that child and the last token, copying every container on
// the way.
func change(node any, tokens []string, f func(parent any, last string) (any, error)) (any, error) {
	if len(tokens) == 1 {
		return f(node, tokens[0])
	}
	t := tokens[0]
	switch d := node.(type) {
	case map[string]any:
		child, ok := d[t]
		if !ok {
			return nil, fmt.Errorf("no member %q", t)
		}
		c, err := change(child, tokens[1:], f)
		if err != nil {
			return nil, err
		}
		m := copyMap(d)
		m[t] = c
		return m, nil
	case []any:
		i, err := index(t, len(d), false)
		if err != nil {
			return nil, err
		}
		c, err := change(d[i], tokens[1:], f)
		if err != nil {
			return nil, err
		}
		a := append([]any(nil), d...)
		a[i] = c
		return a, nil
	}
	return nil, fmt.Errorf("%q goes into a scalar", t)
}

func copyMap(m map[string]any) map[string]any {
	c := make(map[string]any, len(m)+1)
	for k, v := range m {
		c[k] = v
	}
	return c
}

// add adds v at tokens and returns the new document.
func add(doc any, tokens []string, v any) (any, error) {
	if len(tokens) == 0 {
		return v, nil
	}
	return change(doc, tokens, func(parent any, last string) (any, error) {
		switch p := parent.(type) {
		case map[string]any:
			m := copyMap(p)
			m[last] = v
			return m, nil
		case []any:
			i, err := index(last, len(p), true)
			if err != nil {
				return nil, err
			}
			a := make([]any, 0, len(p)+1)
			a = append(append(append(a, p[:i]...), v), p[i:]...)
			return a, nil
		}
		return nil, fmt.Errorf("the parent of %q is a scalar", last)
	})
}

// remove removes the value at tokens and returns the new document and it.
func remove(doc any, tokens []string) (any, any, error) {
	if len(tokens) == 0 {
		return nil, doc, nil
	}
	var removed any
	doc, err := change(doc, tokens, func(parent any, last string) (any, error) {
		switch p := parent.(type) {
		case map[string]any:
			v, ok := p[last]
			if !ok {
				return nil, fmt.Errorf("no member %q to remove", last)
			}
			removed = v
			m := copyMap(p)
			delete(m, last)
			return m, nil
		case []any:
			i, err := index(last, len(p), false)
			if err != nil {
				return nil, err
			}
			removed = p[i]
			return append(append([]any(nil), p[:i]...), p[i+1:]...), nil
		}
		return nil, fmt.Errorf("the parent of %q is a scalar", last)
	})
	return doc, removed, err
}

// mergePatch applies an RFC 7396 merge patch to doc and returns the new
// document; doc is left as it was.
func mergePatch(doc, patch any) any {
	p, ok := patch.(map[string]any)
	if !ok {
		return patch
	}
	d, ok := doc.(map[string]any)
	if ok {
		d = copyMap(d)
	} else {
		d = map[string]any{}
	}
	for k, v := range p {
		if v == nil {
			delete(d, k)
		} else {
			d[k] = mergePatch(d[k], v)
		}
	}
	return d
}

// jsonEqual compares two JSON values, numbers by value.
func jsonEqual(a, b any) bool {
	switch x := a.(type) {
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, e := range x {
			f, ok := y[k]
			if !ok || !jsonEqual(e, f) {
				return false
			}
		}
		return true
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !jsonEqual(x[i], y[i]) {
				return false
			}
		}
		return true
	case fmt.Stringer: // json.Number
		y, ok := b.(fmt.Stringer)
		if !ok {
			return false
		}
		p, ok1 := new(big.Rat).SetString(x.String())
		q, ok2 := new(big.Rat).SetString(y.String())
		return ok1 && ok2 && p.Cmp(q) == 0 || x.String() == y.String()
	}
	return a == b
}
