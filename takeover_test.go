package pollsse

import (
	"net"
	"testing"
)

func TestWatchClientReadsLittleOfAClientThatSendsData(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	go client.Write(make([]byte, 1<<20))
	counted := &countingConn{Conn: server}
	var buf [watchBufferSize]byte
	if err := watchClient(counted, buf[:], 0); err != errClientSent {
		t.Fatalf("watchClient returned %v, want errClientSent", err)
	}
	if counted.read > maxClientBytes+watchBufferSize {
		t.Errorf("read %d bytes of a client that sent 1 MiB; it may send %d", counted.read, maxClientBytes)
	}
	if most := (maxClientBytes + watchBufferSize) / watchBufferSize; counted.reads > most {
		t.Errorf("%d reads for %d bytes, want at most %d", counted.reads, counted.read, most)
	}
}

// A countingConn counts what is read from its connection.
type countingConn struct {
	net.Conn
	reads, read int
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.reads++
	c.read += n
	return n, err
}
