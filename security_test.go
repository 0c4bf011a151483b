package pollsse

import (
	"bufio"
	"fmt"
	"net/http"
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

// newUsersAPI returns an upstream that answers each user's bearer token
// with that user's document: alice's and bob's, 403 to mallory's, and 401
// to any other.
func newUsersAPI(t *testing.T) *fakeAPI {
	api := newFakeAPI(t, "")
	api.setFor("Bearer alice-token", http.StatusOK, `{"user":"alice","balance":100}`)
	api.setFor("Bearer bob-token", http.StatusOK, `{"user":"bob","balance":5}`)
	api.setFor("Bearer mallory-token", http.StatusForbidden, "forbidden")
	return api
}

func bearer(token string) http.Header {
	return http.Header{"Authorization": {"Bearer " + token}}
}

// openStreamWith is openStream with request headers.
func openStreamWith(t *testing.T, url string, header http.Header, lastEventID string) *streamClient {
	t.Helper()
	client := &http.Client{Transport: headerTransport{header: header}}
	return openStream(t, client, url, lastEventID)
}

// headerTransport adds headers to every request that it sends with base,
// http.DefaultTransport when nil.
type headerTransport struct {
	header http.Header
	base   http.RoundTripper
}

func (ht headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	for name, values := range ht.header {
		r.Header[name] = values
	}
	if ht.base != nil {
		return ht.base.RoundTrip(r)
	}
	return http.DefaultTransport.RoundTrip(r)
}
