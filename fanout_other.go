//go:build !unix

package pollsse

import "errors"

// canDetach tells whether this system's sockets can be written without
// blocking through syscall.RawConn, so that detach takes streams over. On
// this one they are not: detach declines every stream, and each keeps its
// goroutine.
const canDetach = false

// writeSocket is never called on this system: no stream is detached.
func writeSocket(fd uintptr, b []byte) (int, error) {
	return 0, errors.ErrUnsupported
}
