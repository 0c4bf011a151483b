package pollsse

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"reflect"
	"unsafe"
)

// What a stream taken over from net/http lets go of: the buffers in which
// its request was read, which nothing reads again, and which each stream
// would otherwise hold for its life.

// releaseConnBuffers empties the buffers of brw, those of the connection
// that net/http handed over: its handler goroutine, which a stream that
// Caddy logs keeps until the stream ends, holds them until it returns, and
// net/http touches them no more once the connection is taken over.
func releaseConnBuffers(brw *bufio.ReadWriter) {
	*brw.Reader = bufio.Reader{}
	*brw.Writer = bufio.Writer{}
}

// releaseReadBuffers drops the buffers in which c read the handshake and
// the request (a few KB), and returns how many bytes of the client's that
// they held unread. A stream over c is never read through c again: watch
// reads the socket beneath. crypto/tls offers no way to do so, so the
// fields are zeroed through reflection, each found by name and type; one
// that this version of crypto/tls lacks is left alone.
func releaseReadBuffers(c *tls.Conn) (unread int) {
	v := reflect.ValueOf(c).Elem()
	for _, name := range [...]string{"rawInput", "input", "hand"} {
		f := v.FieldByName(name)
		if !f.IsValid() {
			continue
		}
		switch f.Type() {
		case reflect.TypeFor[bytes.Buffer]():
			b := (*bytes.Buffer)(unsafe.Pointer(f.UnsafeAddr()))
			if name != "hand" {
				unread += b.Len()
			}
			*b = bytes.Buffer{}
		case reflect.TypeFor[bytes.Reader]():
			r := (*bytes.Reader)(unsafe.Pointer(f.UnsafeAddr()))
			unread += r.Len()
			*r = bytes.Reader{}
		}
	}
	return unread
}
