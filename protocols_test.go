package pollsse

import (
	"bufio"
	"compress/gzip"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/klauspost/compress/zstd"
	"github.com/quic-go/quic-go/http3"
)

// eventReader reads events from r on its own goroutine, and calls done, if
// given, when r ends.
func eventReader(r io.Reader, done func()) <-chan sseEvent {
	ch := make(chan sseEvent, 64)
	go func() {
		defer close(ch)
		if done != nil {
			defer done()
		}
		br := bufio.NewReader(r)
		for {
			ev, err := readEvent(br)
			if err != nil {
				return
			}
			if ev.name != "" {
				ch <- ev
			}
		}
	}()
	return ch
}

// expectOneByOne checks that the snapshot and then each change arrive on
// their own: the upstream changes only after the previous event arrived, and
// nothing else is written meanwhile (no heartbeat, long interval), so an
// event held back in a buffer would never arrive.
func expectOneByOne(t *testing.T, api *fakeAPI, events <-chan sseEvent) {
	t.Helper()
	want := []string{"snapshot", "patch", "patch"}
	for i, name := range want {
		select {
		case ev, ok := <-events:
			if !ok || ev.name != name {
				t.Fatalf("event %d: got %+v, want %s", i, ev, name)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("event %d (%s) held back", i, name)
		}
		api.set(fmt.Sprintf(`{"n":%d}`, i+1))
	}
}

// TestEventsArriveOneByOneBehindEncode: compressed streams, on a host with
// an access log too, where the stream's headers are written apart from its
// first event (flushHeaders), through encode.
func TestEventsArriveOneByOneBehindEncode(t *testing.T) {
	for _, tt := range []struct {
		enc    string
		logged bool
	}{{"gzip", false}, {"zstd", false}, {"gzip", true}, {"zstd", true}} {
		enc := tt.enc
		name := enc
		var opts []caddyOption
		if tt.logged {
			name += " logged"
			opts = append(opts, withAccessLogs(`{}`))
		}
		t.Run(name, func(t *testing.T) {
			api := newFakeAPI(t, `{"n":0}`)
			base := startCaddy(t, fmt.Sprintf(`[{"handle":[{"handler":"encode","encodings":{%q:{}},"prefer":[%q]}]},%s]`, enc, enc,
				pollSSERoute("/events", fmt.Sprintf(`"upstream":%q,"interval":"100ms","heartbeat":"1h"`, api.URL))), opts...)
			req, _ := http.NewRequest(http.MethodGet, base+"/events", nil)
			req.Header.Set("Accept-Encoding", enc)
			resp, err := http.DefaultTransport.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if got := resp.Header.Get("Content-Encoding"); got != enc {
				t.Fatalf("Content-Encoding %q, want %q", got, enc)
			}
			var body io.Reader
			var done func()
			switch enc {
			case "gzip":
				zr, err := gzip.NewReader(resp.Body)
				if err != nil {
					t.Fatal(err)
				}
				body = zr
			case "zstd":
				zr, err := zstd.NewReader(resp.Body)
				if err != nil {
					t.Fatal(err)
				}
				body, done = zr, zr.Close
			}
			expectOneByOne(t, api, eventReader(body, done))
		})
	}
}

// selfSignedPEM returns a certificate and key for localhost and 127.0.0.1.
func selfSignedPEM(t *testing.T) (certPEM, keyPEM string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}))
}

func TestEventsArriveOneByOneOverHTTP2AndHTTP3(t *testing.T) {
	api := newFakeAPI(t, `{"n":0}`)
	cert, key := selfSignedPEM(t)
	port := freePort(t)
	certJSON, _ := json.Marshal(cert)
	keyJSON, _ := json.Marshal(key)
	cfg := fmt.Sprintf(`{
		"admin": {"disabled": true},
		"storage": {"module": "file_system", "root": %q},
		"logging": {"logs": {"default": {"level": "ERROR"}}},
		"apps": {
			"tls": {"certificates": {"load_pem": [{"certificate": %s, "key": %s, "tags": ["test"]}]}},
			"http": {"servers": {"test": {
				"listen": ["127.0.0.1:%d"],
				"protocols": ["h1", "h2", "h3"],
				"automatic_https": {"disable": true},
				"tls_connection_policies": [{"certificate_selection": {"any_tag": ["test"]}}],
				"routes": [%s]
			}}}
		}
	}`, t.TempDir(), certJSON, keyJSON, port, pollSSERoute("/events", fmt.Sprintf(`"upstream":%q,"interval":"100ms","heartbeat":"1h"`, api.URL)))
	if err := caddy.Load([]byte(cfg), true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stopCaddy(t)
		assertNoStreamGoroutines(t)
	})
	url := fmt.Sprintf("https://127.0.0.1:%d/events", port)
	tlsConfig := &tls.Config{InsecureSkipVerify: true}

	h2, h3 := &http.Transport{TLSClientConfig: tlsConfig, ForceAttemptHTTP2: true}, &http3.Transport{TLSClientConfig: tlsConfig}
	t.Cleanup(func() {
		h2.CloseIdleConnections()
		h3.Close()
	})
	transports := map[string]http.RoundTripper{"HTTP/2.0": h2, "HTTP/3.0": h3}
	for _, proto := range []string{"HTTP/2.0", "HTTP/3.0"} {
		t.Run(proto, func(t *testing.T) {
			api.set(`{"n":0}`)
			client := &http.Client{Transport: transports[proto]}
			resp, err := client.Get(url)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.Proto != proto || resp.StatusCode != http.StatusOK {
				t.Fatalf("got %s %d, want %s 200", resp.Proto, resp.StatusCode, proto)
			}
			expectOneByOne(t, api, eventReader(resp.Body, nil))
		})
	}
}
