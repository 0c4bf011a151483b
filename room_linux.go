//go:build linux && !386

package pollsse

import (
	"syscall"
	"unsafe"
)

// canMeasureRoom tells whether socketRoom can tell the room in a socket's
// send buffer on this system, so that detach takes over the streams whose
// writes must go whole (TLS, and those that Caddy's access log counts).
const canMeasureRoom = true

// The option and the fields of its answer that socketRoom reads
// (linux/sock_diag.h).
const (
	soMeminfo          = 55 // SO_MEMINFO
	skMeminfoSndbuf    = 3  // SK_MEMINFO_SNDBUF
	skMeminfoWmemQueue = 5  // SK_MEMINFO_WMEM_QUEUED
	skMeminfoVars      = 9  // SK_MEMINFO_VARS
)

// socketRoom returns the room left in the send buffer of the socket fd and
// what its buffer holds, as the kernel counts them (the data and the
// buffers that hold it): a write that the room holds takes no wait.
func socketRoom(fd uintptr) (room, queued int, err error) {
	var info [skMeminfoVars]uint32
	size := uint32(unsafe.Sizeof(info))
	_, _, errno := syscall.Syscall6(syscall.SYS_GETSOCKOPT, fd, syscall.SOL_SOCKET, soMeminfo,
		uintptr(unsafe.Pointer(&info[0])), uintptr(unsafe.Pointer(&size)), 0)
	if errno != 0 {
		return 0, 0, errno
	}
	queued = int(info[skMeminfoWmemQueue])
	return int(info[skMeminfoSndbuf]) - queued, queued, nil
}
