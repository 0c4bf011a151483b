package main

import (
	"bufio"
	"strings"
)

// readLine reads one line that ends in CR, LF or CRLF, as the SSE standard
// splits a stream; maxLine bounds it.
func readLine(br *bufio.Reader, sb *strings.Builder) (string, error) {
	sb.Reset()
	for {
		c, err := br.ReadByte()
		if err != nil {
			return sb.String(), err
		}
		switch c {
		case '\n':
			return sb.String(), nil
		case '\r':
			if next, err := br.Peek(1); err == nil && next[0] == '\n' {
				br.ReadByte()
			}
			return sb.String(), nil
		}
		sb.WriteByte(c)
	}
}

// readEvent reads the next block of the stream the way the HTML
// standard's event stream interpretation does: fields until a blank line,
// data lines joined by LF. A block of comments alone is a comment; a block
// with a retry field alone has retry set.
func readEvent(br *bufio.Reader) (sseEvent, error) {
	var ev sseEvent
	var data []string
	var sb strings.Builder
	seen := false
	for {
		line, err := readLine(br, &sb)
		if err != nil {
			return ev, err
		}
		if line == "" {
			if !seen {
				continue
			}
			ev.data = strings.Join(data, "\n")
			return ev, nil
		}
		seen = true
		if strings.HasPrefix(line, ":") {
			ev.comment = true
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "event":
			ev.name = value
		case "data":
			data = append(data, value)
		case "id":
			if !strings.ContainsRune(value, 0) {
				ev.id, ev.hasID = value, true
			}
		case "retry":
			ev.retry = value
		}
		ev.comment = ev.comment && ev.name == "" && data == nil && !ev.hasID && ev.retry == ""
	}
}
