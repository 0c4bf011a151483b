package pollsse

import (
	"bufio"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// getStatus makes a GET request with the given headers and returns the
// response's status and body; a stream is closed once its headers are in.
func getStatus(t *testing.T, url string, header http.Header) (int, http.Header) {
	t.Helper()
	resp := getWith(t, url, header)
	resp.Body.Close()
	return resp.StatusCode, resp.Header
}

// getWith sends a GET of url with header.
func getWith(t *testing.T, url string, header http.Header) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, values := range header {
		req.Header[name] = values
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp
}

// eventSourceStatus requests url as a browser's EventSource does and
// returns the status of the response that ends its retries. A stream that
// ends before any event (the upstream refused the credentials of a topic
// that had no answer yet when it opened) is requested again, as EventSource
// does after the retry hint; the test fails if a stream sends an event or
// does not end.
func eventSourceStatus(t *testing.T, url string, header http.Header) (int, http.Header) {
	t.Helper()
	for range 3 {
		resp := getWith(t, url, header)
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			return resp.StatusCode, resp.Header
		}
		ended := make(chan error, 1)
		go func() {
			br := bufio.NewReader(resp.Body)
			for {
				ev, err := readEvent(br)
				if err != nil {
					ended <- nil
					return
				}
				if !ev.comment && ev.retry == "" {
					ended <- fmt.Errorf("a refused stream sent %+v", ev)
					return
				}
			}
		}()
		select {
		case err := <-ended:
			if err != nil {
				t.Error(err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("GET %s: the stream did not end", url)
		}
		resp.Body.Close()
	}
	t.Fatalf("GET %s: no answer but 200 in 3 tries", url)
	return 0, nil
}

// A usersAPI answers with each user's own document, picked by the bearer
// token of the request: 401 without a known token, 403 for "mallory".
type usersAPI struct {
	*fakeAPI
	mu   sync.Mutex
	docs map[string]string // token -> document; "" refuses with 401
}

func newUsersAPI(t *testing.T) *usersAPI {
	u := &usersAPI{fakeAPI: newFakeAPI(t, ""), docs: map[string]string{
		"alice-token": `{"user":"alice","balance":100}`,
		"bob-token":   `{"user":"bob","balance":5}`,
	}}
	u.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.count.Add(1)
		u.fakeAPI.mu.Lock()
		u.requests = append(u.requests, r.Clone(r.Context()))
		u.fakeAPI.mu.Unlock()
		token := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		if token == "mallory-token" {
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		u.mu.Lock()
		doc := u.docs[token]
		u.mu.Unlock()
		if doc == "" {
			w.Header().Set("WWW-Authenticate", "Bearer")
			http.Error(w, "who are you", http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, doc)
	})
	return u
}

func (u *usersAPI) setDoc(token, doc string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.docs[token] = doc
}

func bearer(token string) http.Header {
	return http.Header{"Authorization": {"Bearer " + token}}
}

// openStreamWith is openStream with request headers.
func openStreamWith(t *testing.T, url string, header http.Header, lastEventID string) *streamClient {
	t.Helper()
	client := &http.Client{Transport: headerTransport{header}}
	return openStream(t, client, url, lastEventID)
}

// headerTransport adds headers to every request.
type headerTransport struct{ header http.Header }

func (ht headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	for name, values := range ht.header {
		r.Header[name] = values
	}
	return http.DefaultTransport.RoundTrip(r)
}
