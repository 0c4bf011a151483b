//go:build unix

package pollsse

import "syscall"

// canDetach tells whether this system's sockets can be written without
// blocking through syscall.RawConn, so that detach takes streams over.
const canDetach = true

// writeSocket writes b to the socket fd, which does not block, and returns
// how much of b it took: none, with EAGAIN, when its buffer is full.
func writeSocket(fd uintptr, b []byte) (int, error) {
	for {
		n, err := syscall.Write(int(fd), b)
		if err != syscall.EINTR {
			return n, err
		}
	}
}
