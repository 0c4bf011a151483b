//go:build linux

package pollsse

import (
	"net"
	"sync"
	"syscall"
)

// The clients of the streams that groups write are watched by one goroutine
// of the process, waiting on an epoll set of their sockets, rather than by a
// goroutine per stream blocked in a read: a browser sends nothing until it
// leaves, and a goroutine that waits for that holds a stack of a few KB for
// the stream's whole life.
//
// The set exists while any stream is watched. Each socket is in it under a
// token of its own, never used again, so that an event that was read for a
// socket that has since been closed, and whose descriptor a new connection
// may have, finds nothing. A socket leaves the set before its connection
// closes (subscriber.closeConn), so that the set never holds a descriptor
// that is another file's.
var clients clientWatcher

type clientWatcher struct {
	mu      sync.Mutex
	epfd    int // -1 when no stream is watched and the goroutine has ended
	wake    [2]int
	running bool
	next    uint64
	watched map[uint64]*watchedConn
}

// A watchedConn is the socket of a stream in the watcher's set.
type watchedConn struct {
	s     *subscriber
	conn  net.Conn
	rc    syscall.RawConn
	fd    int
	token uint64
	sent  int
}

// watchEvents is how many events one wait of the watcher takes.
const watchEvents = 128

// watchConn watches the client of s, a stream of a group on conn, whose
// socket is rc and whose client has sent sent bytes after its request, and
// ends s when the client leaves or sends too much. It falls back to a
// goroutine of the stream's own when the socket cannot be watched. s.mu is
// held.
func (s *subscriber) watchConn(conn net.Conn, rc syscall.RawConn, sent int) {
	// A client that has sent too much already (with its request) is
	// ended by the goroutine at once.
	if sent <= maxClientBytes {
		if w, err := clients.add(s, conn, rc, sent); err == nil {
			s.watched = w
			return
		}
	}
	go s.watch(conn, sent)
}

// unwatch takes the socket of s out of the watcher's set, if it is in it;
// it must be before the connection closes.
func (s *subscriber) unwatch() {
	if s.watched != nil {
		clients.remove(s.watched)
	}
}

func (cw *clientWatcher) add(s *subscriber, conn net.Conn, rc syscall.RawConn, sent int) (*watchedConn, error) {
	fd := -1
	if err := rc.Control(func(f uintptr) { fd = int(f) }); err != nil {
		return nil, err
	}
	cw.mu.Lock()
	defer cw.mu.Unlock()
	if !cw.running {
		if err := cw.open(); err != nil {
			return nil, err
		}
	}
	cw.next++
	w := &watchedConn{s: s, conn: conn, rc: rc, fd: fd, token: cw.next, sent: sent}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP}
	ev.Fd, ev.Pad = int32(w.token), int32(w.token>>32)
	if err := syscall.EpollCtl(cw.epfd, syscall.EPOLL_CTL_ADD, fd, &ev); err != nil {
		if !cw.running {
			cw.stop()
		}
		return nil, err
	}
	cw.watched[w.token] = w
	if !cw.running {
		cw.running = true
		go cw.run(cw.epfd, cw.wake[0])
	}
	return w, nil
}

// open makes the epoll set and the pipe that wakes its goroutine.
func (cw *clientWatcher) open() error {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return err
	}
	var wake [2]int
	if err := syscall.Pipe2(wake[:], syscall.O_NONBLOCK|syscall.O_CLOEXEC); err != nil {
		syscall.Close(epfd)
		return err
	}
	// Token 0 is the pipe's.
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN}
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, wake[0], &ev); err != nil {
		syscall.Close(epfd)
		syscall.Close(wake[0])
		syscall.Close(wake[1])
		return err
	}
	cw.epfd, cw.wake = epfd, wake
	if cw.watched == nil {
		cw.watched = make(map[uint64]*watchedConn)
	}
	return nil
}

// stop closes the set and the pipe, when no goroutine waits on them.
func (cw *clientWatcher) stop() {
	syscall.Close(cw.epfd)
	syscall.Close(cw.wake[0])
	syscall.Close(cw.wake[1])
	cw.epfd = -1
}

func (cw *clientWatcher) remove(w *watchedConn) {
	cw.mu.Lock()
	defer cw.mu.Unlock()
	if cw.watched[w.token] != w {
		return
	}
	delete(cw.watched, w.token)
	syscall.EpollCtl(cw.epfd, syscall.EPOLL_CTL_DEL, w.fd, nil)
	if len(cw.watched) == 0 {
		// The goroutine sees that the set is empty, and ends.
		syscall.Write(cw.wake[1], []byte{0})
	}
}

// run waits on the set epfd, whose wake-up pipe is wake, and reads the
// sockets that have something, until no stream is watched.
func (cw *clientWatcher) run(epfd, wake int) {
	var events [watchEvents]syscall.EpollEvent
	var buf [watchBufferSize * 16]byte
	var ready []*watchedConn
	for {
		n, err := syscall.EpollWait(epfd, events[:], -1)
		if err != nil && err != syscall.EINTR {
			// The set cannot be waited on: each stream still in it gets
			// a goroutine of its own.
			cw.fallBack()
			return
		}
		ready = ready[:0]
		cw.mu.Lock()
		for _, ev := range events[:max(n, 0)] {
			token := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			if token == 0 {
				for {
					if m, _ := syscall.Read(wake, buf[:]); m <= 0 {
						break
					}
				}
				continue
			}
			if w := cw.watched[token]; w != nil {
				ready = append(ready, w)
			}
		}
		if len(cw.watched) == 0 {
			cw.running = false
			cw.stop()
			cw.mu.Unlock()
			return
		}
		cw.mu.Unlock()
		for _, w := range ready {
			w.read(buf[:])
		}
		clear(ready)
	}
}

// read reads what the client of w has sent, and ends its stream when the
// client has left or sent too much. Only the watcher's goroutine reads w.
func (w *watchedConn) read(buf []byte) {
	var n int
	var rerr error
	if err := w.rc.Read(func(fd uintptr) bool {
		n, rerr = syscall.Read(int(fd), buf)
		return true
	}); err != nil {
		// The connection is closing: its stream is ending already.
		return
	}
	switch {
	case rerr == syscall.EAGAIN || rerr == syscall.EINTR:
		return
	case rerr == nil && n > 0:
		if w.sent += n; w.sent <= maxClientBytes {
			return
		}
		w.s.cfg.logClientSent(errClientSent)
	}
	// The client closed the connection (a read of nothing), or it broke.
	w.s.close()
}

// fallBack gives each stream still in the set a goroutine that watches it,
// after a failure of the set itself.
func (cw *clientWatcher) fallBack() {
	cw.mu.Lock()
	left := make([]*watchedConn, 0, len(cw.watched))
	for token, w := range cw.watched {
		left = append(left, w)
		delete(cw.watched, token)
	}
	cw.running = false
	cw.stop()
	cw.mu.Unlock()
	for _, w := range left {
		go w.s.watch(w.conn, w.sent)
	}
}
