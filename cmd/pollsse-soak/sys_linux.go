package main

import "syscall"

// checkSystem tells whether the soak can run on this system.
func checkSystem() error { return nil }

// raiseOpenFiles raises the soft limit of open files to the hard one: a
// storm opens a thousand connections at once.
func raiseOpenFiles() {
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil {
		lim.Cur = lim.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
}

// setReceiveBuffer sets the receive buffer of the socket fd to n bytes.
func setReceiveBuffer(fd uintptr, n int) {
	syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, n)
}
