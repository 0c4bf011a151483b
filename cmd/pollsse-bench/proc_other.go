//go:build !linux

package main

import (
	"errors"
	"runtime"
	"syscall"
)

// checkSystem tells whether the tool can measure on this system: it reads
// the server's CPU, memory and open files from /proc, which only Linux has.
func checkSystem() error {
	return errors.New("runs on Linux only: it reads the server's CPU, memory and open files from /proc, which " + runtime.GOOS + " does not have")
}

// The measurements that proc_linux.go takes; run stops at checkSystem
// before any of them.

func cpuSeconds(string) float64 { return 0 }
func machineBusy() float64      { return 0 }
func rssKB(string) int64        { return 0 }
func openFiles(string) int      { return -1 }
func raiseOpenFiles() uint64    { return 0 }

func rcvBufControl(int) func(network, address string, rc syscall.RawConn) error { return nil }
