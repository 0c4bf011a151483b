package pollsse

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/wI2L/jsondiff"
)

// A document is one upstream response that parsed, kept between polls so that
// the next response is compared with it.
type document struct {
	// body is the response body as the upstream sent it: a body identical
	// to the previous one is unchanged without being parsed.
	body []byte
	// data is the data of the document's snapshot event: compact JSON.
	data []byte
}

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

// jsonPatchDiffer is the json_patch mode: changes are RFC 6902 JSON Patch
// arrays.
type jsonPatchDiffer struct{}

func (jsonPatchDiffer) parse(body []byte) (*document, error) {
	trimmed := bytes.TrimPrefix(body, []byte("\xef\xbb\xbf"))
	if !json.Valid(trimmed) {
		return nil, fmt.Errorf("response body is not valid JSON")
	}
	var buf bytes.Buffer
	buf.Grow(len(trimmed))
	if err := json.Compact(&buf, trimmed); err != nil {
		return nil, fmt.Errorf("compacting response body: %w", err)
	}
	return &document{body: body, data: buf.Bytes()}, nil
}

func (jsonPatchDiffer) diff(prev, next *document) (string, []byte, error) {
	if bytes.Equal(prev.data, next.data) {
		return "", nil, nil
	}
	patch, err := jsondiff.CompareJSON(prev.data, next.data)
	if err != nil {
		return "", nil, fmt.Errorf("comparing documents: %w", err)
	}
	if len(patch) == 0 {
		return "", nil, nil
	}
	data, err := json.Marshal(patch)
	if err != nil {
		return "", nil, fmt.Errorf("encoding patch: %w", err)
	}
	return eventPatch, data, nil
}
