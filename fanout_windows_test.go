package pollsse

import "syscall"

// limitSocket sets the receive buffer of the socket of rc to rcvbuf bytes,
// for a net.Dialer's Control. mss, the largest segment, is left to the
// system: its syscall package names no option for it.
func limitSocket(rc syscall.RawConn, rcvbuf, mss int) error {
	return rc.Control(func(fd uintptr) {
		syscall.SetsockoptInt(syscall.Handle(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf)
	})
}
