package pollsse

import (
	"fmt"
	"net/http"
	"testing"
)

// TestRefusedAPIKeyBeforeSnapshot: without forward_headers too, a 401 or 403
// before a subscriber's first snapshot is its response.
func TestRefusedAPIKeyBeforeSnapshot(t *testing.T) {
	api := newFakeAPI(t, `{"a":1}`)
	api.setStatus(http.StatusForbidden)
	base := startCaddy(t, "["+pollSSERoute("/events", fmt.Sprintf(`"upstream":%q,"header_up":{"X-Api-Key":["revoked"]}`, api.URL))+"]")
	// The first stream may open before the first answer, and then ends
	// without an event; the later ones get the status at once.
	for range 2 {
		if status, _ := eventSourceStatus(t, base+"/events", nil); status != http.StatusForbidden {
			t.Errorf("status %d, want 403", status)
		}
	}
}
