package main

// What the tool reads of the system, on Linux: CPU, memory and open files
// of a process from /proc, the open-files limit, and the receive buffer of
// a socket. proc_other.go says elsewhere that the tool needs Linux.

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// checkSystem tells whether the tool can measure on this system.
func checkSystem() error { return nil }

// clockTicks is USER_HZ, the unit of utime and stime in /proc: 100 on Linux.
const clockTicks = 100

// cpuSeconds returns the user+system CPU time of process pid ("self" for
// this one), from /proc/PID/stat.
func cpuSeconds(pid string) float64 {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0
	}
	// The command name is in parentheses and may hold spaces: fields
	// count from after its closing parenthesis, where field 3 (state) is.
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+2:]))
	utime, _ := strconv.ParseFloat(f[11], 64) // field 14
	stime, _ := strconv.ParseFloat(f[12], 64) // field 15
	return (utime + stime) / clockTicks
}

// machineBusy returns the seconds all CPUs of the machine were not idle,
// from /proc/stat: what the server and this tool used, and everyone else.
func machineBusy() float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	var total, idle float64
	for i, f := range strings.Fields(line)[1:] {
		v, _ := strconv.ParseFloat(f, 64)
		if i < 8 { // user nice system idle iowait irq softirq steal
			total += v
		}
		if i == 3 || i == 4 {
			idle += v
		}
	}
	return (total - idle) / clockTicks
}

// rssKB returns the resident set size of process pid in KB (VmRSS).
func rssKB(pid string) int64 {
	b, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// openFiles returns how many file descriptors process pid holds.
func openFiles(pid string) int {
	ents, err := os.ReadDir("/proc/" + pid + "/fd")
	if err != nil {
		return -1
	}
	return len(ents)
}

// raiseOpenFiles raises this process's soft RLIMIT_NOFILE to its hard limit
// and returns the new soft limit.
func raiseOpenFiles() uint64 {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0
	}
	lim.Cur = lim.Max
	syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	return lim.Cur
}

// rcvBufControl returns a dialer's Control that sets the socket's
// SO_RCVBUF to size before it connects, when the window is agreed on.
func rcvBufControl(size int) func(network, address string, rc syscall.RawConn) error {
	return func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) {
			syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, size)
		})
	}
}
