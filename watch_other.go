//go:build !linux

package pollsse

import (
	"net"
	"syscall"
)

// watchedConn is the socket of a stream in the watcher of watch_linux.go,
// which other systems do without.
type watchedConn struct{}

// watchConn watches the client of s, a stream of a group on conn, on a
// goroutine of the stream's own, which ends s when the client leaves or
// sends too much.
func (s *subscriber) watchConn(conn net.Conn, _ syscall.RawConn, sent int) {
	go s.watch(conn, sent)
}

// unwatch does nothing: the goroutine of watchConn ends when the connection
// closes.
func (s *subscriber) unwatch() {}
