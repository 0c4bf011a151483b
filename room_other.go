//go:build !linux || 386

package pollsse

import "errors"

// canMeasureRoom tells whether socketRoom can tell the room in a socket's
// send buffer on this system. On this one it cannot: the streams over TLS
// and those that Caddy's access log counts keep their goroutines.
const canMeasureRoom = false

// socketRoom is never called on this system.
func socketRoom(fd uintptr) (room, queued int, err error) {
	return 0, 0, errors.ErrUnsupported
}
