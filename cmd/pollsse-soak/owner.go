package main

import (
	"fmt"
	"net"
	"os"
	"strings"
)

// Which Caddy process polls: on the memory store each instance says so in
// the X-Soak-Instance header (header_up), but on the redis store a
// header_up of its own would make each instance's topics others (its
// values are part of a topic's identity), so the upstream asks the system
// which process holds the other end of each connection.

// socketOwner returns the pid, of pids, whose process holds the TCP socket
// whose local address is local and remote address remote (both IPv4), ""
// when none does. It reads /proc/net/tcp and /proc/<pid>/fd (Linux).
func socketOwner(local, remote *net.TCPAddr, pids []string) string {
	inode := socketInode(local, remote)
	if inode == "" {
		return ""
	}
	want := "socket:[" + inode + "]"
	for _, pid := range pids {
		dir := "/proc/" + pid + "/fd"
		ents, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range ents {
			if link, err := os.Readlink(dir + "/" + e.Name()); err == nil && link == want {
				return pid
			}
		}
	}
	return ""
}

// countSocketsTo returns how many of the open files of the process pid are
// TCP sockets to port on the loopback address.
func countSocketsTo(pid string, port int) int {
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return 0
	}
	remote := procAddr(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	inodes := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n")[1:] {
		if f := strings.Fields(line); len(f) > 9 && f[2] == remote {
			inodes["socket:["+f[9]+"]"] = true
		}
	}
	dir := "/proc/" + pid + "/fd"
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range ents {
		if link, err := os.Readlink(dir + "/" + e.Name()); err == nil && inodes[link] {
			n++
		}
	}
	return n
}

// socketInode returns the inode of the TCP socket from local to remote, ""
// when there is none.
func socketInode(local, remote *net.TCPAddr) string {
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return ""
	}
	l, r := procAddr(local), procAddr(remote)
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 9 && f[1] == l && f[2] == r {
			return f[9]
		}
	}
	return ""
}

// procAddr writes an IPv4 address as /proc/net/tcp does: the address as a
// little-endian hex word, a colon, the port in hex.
func procAddr(a *net.TCPAddr) string {
	ip := a.IP.To4()
	if ip == nil {
		return ""
	}
	return fmt.Sprintf("%02X%02X%02X%02X:%04X", ip[3], ip[2], ip[1], ip[0], a.Port)
}

// pollerOf returns the run id of the instance whose process opened the
// connection c to the upstream, "unknown" when it cannot tell.
func (s *soak) pollerOf(c net.Conn) string {
	remote, ok1 := c.RemoteAddr().(*net.TCPAddr)
	local, ok2 := c.LocalAddr().(*net.TCPAddr)
	if !ok1 || !ok2 {
		return "unknown"
	}
	var pids []string
	byPid := map[string]*instance{}
	for _, in := range s.insts {
		if pid := in.pid(); pid != "" {
			pids = append(pids, pid)
			byPid[pid] = in
		}
	}
	// The Caddy end of the connection is the upstream's remote address.
	if pid := socketOwner(remote, local, pids); pid != "" {
		return byPid[pid].runID()
	}
	return "unknown"
}
