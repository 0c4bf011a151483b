//go:build !linux

package main

import (
	"errors"
	"runtime"
)

// checkSystem tells whether the soak can run on this system: it reads
// Caddy's open files and which process holds a connection from /proc,
// which only Linux has.
func checkSystem() error {
	return errors.New("runs on Linux only: it reads Caddy's open files and connections from /proc, which " + runtime.GOOS + " does not have")
}

// What sys_linux.go does; run stops at checkSystem before either.

func raiseOpenFiles()               {}
func setReceiveBuffer(uintptr, int) {}
