package pollsse

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jsonpatch "github.com/evanphx/json-patch/v5"
)

// A mutatingAPI is an upstream whose document changes at random (seeded).
// Every version it serves carries its number in "version", and the test
// keeps each version so that a client's document can be checked after every
// event, not only at the end.
type mutatingAPI struct {
	*fakeAPI
	rng *rand.Rand

	mu       sync.Mutex
	doc      map[string]any
	version  int
	versions map[int]any // version -> document, decoded
}

func newMutatingAPI(t *testing.T, seed uint64) *mutatingAPI {
	m := &mutatingAPI{
		fakeAPI:  newFakeAPI(t, ""),
		rng:      rand.New(rand.NewPCG(seed, seed)),
		versions: map[int]any{},
		doc: map[string]any{
			"items": []any{},
			"meta":  map[string]any{"name": "list", "a/b": "slash", "m~n": "tilde", "": "empty key"},
		},
	}
	m.publish()
	return m
}

// publish serves the current document as the next version.
func (m *mutatingAPI) publish() {
	m.version++
	m.doc["version"] = float64(m.version)
	body, err := json.Marshal(m.doc)
	if err != nil {
		panic(err)
	}
	var decoded any
	json.Unmarshal(body, &decoded)
	m.versions[m.version] = decoded
	m.set(string(body))
}

// step makes one random change and publishes it.
func (m *mutatingAPI) step() {
	m.mu.Lock()
	defer m.mu.Unlock()
	items := m.doc["items"].([]any)
	meta := m.doc["meta"].(map[string]any)
	r := m.rng
	switch op := r.IntN(8); {
	case op < 2 || len(items) == 0: // insert an item anywhere
		item := map[string]any{"id": float64(r.IntN(1e6)), "n": float64(r.IntN(100)), "text": m.text()}
		i := r.IntN(len(items) + 1)
		items = append(items[:i], append([]any{item}, items[i:]...)...)
	case op == 2: // remove an item
		i := r.IntN(len(items))
		items = append(items[:i], items[i+1:]...)
	case op == 3: // move an item
		i, j := r.IntN(len(items)), r.IntN(len(items))
		it := items[i]
		items = append(items[:i], items[i+1:]...)
		items = append(items[:j], append([]any{it}, items[j:]...)...)
	case op == 4: // change a field of an item
		it := items[r.IntN(len(items))].(map[string]any)
		it["n"] = float64(r.IntN(100))
		if r.IntN(3) == 0 {
			it["text"] = m.text()
		}
	case op == 5: // add or drop a nested field
		it := items[r.IntN(len(items))].(map[string]any)
		if _, ok := it["tags"]; ok {
			delete(it, "tags")
		} else {
			it["tags"] = []any{m.text(), nil, true, map[string]any{"deep": []any{1.0, 2.5}}}
		}
	case op == 6: // change the meta object, keys with / and ~ included
		keys := []string{"name", "a/b", "m~n", "", "~1", "new key"}
		k := keys[r.IntN(len(keys))]
		if r.IntN(4) == 0 {
			delete(meta, k)
		} else {
			meta[k] = m.text()
		}
	default: // replace the whole list with a short new one
		if r.IntN(10) == 0 {
			items = []any{map[string]any{"id": 1.0, "n": 0.0, "text": "reset"}}
		}
	}
	m.doc["items"] = items
	m.publish()
}

// text returns a random string with the characters a framing bug would
// trip over.
func (m *mutatingAPI) text() string {
	parts := []string{"plain", "line\nbreak", "cr\rlf\r\n", "data: fake", "\u2028sep", "ünï©ødé", "tab\t", `quote"`, "nul\x00", "id: 1"}
	return parts[m.rng.IntN(len(parts))] + fmt.Sprint(m.rng.IntN(1000))
}

func (m *mutatingAPI) versionDoc(v int) (any, int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.versions[v], m.version
}

// A rebuildingClient is a browser's view of one stream: it applies
// snapshots and patches, and reconnects with Last-Event-ID.
type rebuildingClient struct {
	t       *testing.T
	api     *mutatingAPI
	url     string
	doc     []byte
	version int
	lastID  string

	snapshots, patches, resumes, resumedBySnapshot int
}

// apply applies one event and checks the document against the version it
// claims to be.
func (c *rebuildingClient) apply(ev sseEvent) error {
	switch ev.name {
	case "snapshot":
		c.doc = []byte(ev.data)
		c.snapshots++
	case "patch":
		if c.doc == nil {
			return fmt.Errorf("patch %s before any snapshot", ev.id)
		}
		patch, err := jsonpatch.DecodePatch([]byte(ev.data))
		if err != nil {
			return fmt.Errorf("patch %s does not decode: %v\n%s", ev.id, err, ev.data)
		}
		doc, err := patch.Apply(c.doc)
		if err != nil {
			return fmt.Errorf("patch %s does not apply to the client's document: %v\npatch %s\ndoc %s", ev.id, err, ev.data, c.doc)
		}
		c.doc = doc
		c.patches++
	case "status":
		return nil
	default:
		return fmt.Errorf("unexpected event %+v", ev)
	}
	if !ev.hasID || ev.id == "" {
		return fmt.Errorf("%s event without id", ev.name)
	}
	c.lastID = ev.id
	var got map[string]any
	if err := json.Unmarshal(c.doc, &got); err != nil {
		return fmt.Errorf("client document is not JSON: %v", err)
	}
	v := int(got["version"].(float64))
	if ev.name == "patch" && v <= c.version {
		return fmt.Errorf("patch %s took the document from version %d to %d: a duplicate", ev.id, c.version, v)
	}
	if v < c.version {
		return fmt.Errorf("snapshot %s went back from version %d to %d", ev.id, c.version, v)
	}
	want, _ := c.api.versionDoc(v)
	if !reflect.DeepEqual(any(got), want) {
		return fmt.Errorf("after %s %s the client's version %d differs from what the upstream served:\n got %s", ev.name, ev.id, v, c.doc)
	}
	c.version = v
	return nil
}

// session connects once (resuming when it has an id), applies events until
// stop says so, and disconnects. It returns the first error of the stream.
func (c *rebuildingClient) session(rng *rand.Rand, stop func(events int) bool) error {
	u, header := c.url, c.lastID
	if c.lastID != "" {
		c.resumes++
		switch rng.IntN(4) {
		case 0: // a page that keeps the id itself
			u += "?last_event_id=" + url.QueryEscape(c.lastID)
			header = ""
		case 1: // an id from nowhere: the server must answer with a snapshot
			header = "bogus-" + fmt.Sprint(rng.IntN(100))
		}
	}
	sc := openStream(c.t, http.DefaultClient, u, header)
	defer sc.close()
	first := true
	for events := 0; !stop(events); events++ {
		ev, ok := sc.nextOrTimeout(200 * time.Millisecond)
		if !ok {
			continue
		}
		if first && c.lastID != "" && ev.name == "snapshot" && !strings.HasPrefix(header, "bogus-") {
			c.resumedBySnapshot++
		}
		first = false
		if err := c.apply(ev); err != nil {
			return err
		}
	}
	return nil
}

func TestEndToEndRandomMutations(t *testing.T) {
	const (
		steps   = 400
		clients = 6
		seed    = 20261122
	)
	api := newMutatingAPI(t, seed)
	base := startCaddy(t, "["+pollSSERoute("/events", fmt.Sprintf(`"upstream":%q,"interval":"100ms","history":3`, api.URL))+"]")

	var mutating atomic.Bool
	mutating.Store(true)
	var wg sync.WaitGroup
	cs := make([]*rebuildingClient, clients)
	for i := range cs {
		c := &rebuildingClient{t: t, api: api, url: base + "/events"}
		cs[i] = c
		rng := rand.New(rand.NewPCG(seed, uint64(i)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for mutating.Load() {
				n := 1 + rng.IntN(30)
				if err := c.session(rng, func(events int) bool { return events >= n || !mutating.Load() }); err != nil {
					t.Error(err)
					mutating.Store(false)
					return
				}
				// Stay away long enough, sometimes, to fall out of the
				// history: time away, as a browser's, while the upstream
				// changes on the clock.
				time.Sleep(time.Duration(rng.IntN(600)) * time.Millisecond)
			}
		}()
	}
	// Changes paced on the clock, several to a poll interval, so that
	// polls see one change or many.
	for range steps {
		api.step()
		time.Sleep(15 * time.Millisecond)
	}
	mutating.Store(false)
	wg.Wait()
	if t.Failed() {
		return
	}
	_, final := api.versionDoc(0)
	var resumes, bySnapshot, patches int
	for _, c := range cs {
		// A last session that runs until the client holds the final version.
		deadline := time.Now().Add(10 * time.Second)
		if err := c.session(rand.New(rand.NewPCG(seed, 99)), func(int) bool { return c.version == final || time.Now().After(deadline) }); err != nil {
			t.Fatal(err)
		}
		if c.version != final {
			t.Errorf("client ended at version %d, the upstream at %d", c.version, final)
		}
		resumes += c.resumes
		bySnapshot += c.resumedBySnapshot
		patches += c.patches
	}
	t.Logf("%d upstream versions, %d polls; %d clients applied %d patches over %d resumes, %d of which got a snapshot for an expired id",
		final, api.count.Load(), clients, patches, resumes, bySnapshot)
	if resumes == 0 || bySnapshot == 0 || bySnapshot == resumes {
		t.Errorf("the run did not exercise both replay and expired-id resumes (%d resumes, %d by snapshot)", resumes, bySnapshot)
	}
}
