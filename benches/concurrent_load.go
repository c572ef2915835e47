// The concurrent client of benches/concurrent_instructions.sh: CONNS keep-alive connections to
// 127.0.0.1:PORT, all in flight at once, each doing rounds of "write DEPTH GET /plaintext in one
// write, read DEPTH responses" (DEPTH 1: keep-alive, one request in flight per connection;
// DEPTH 16: pipelined). Every response is read by its framing (status line 200, Content-Length,
// body "Hello, World!"), so any server's heads will do.
//
// It counts requests on the client side, which is what callgrind's instructions are divided by:
// it runs WARM rounds on every connection, prints "warm", waits for a line on stdin (the caller
// zeroes the server's counters), runs ROUNDS rounds on every connection (all CONNS at once),
// prints "done N" with N = CONNS × ROUNDS × DEPTH, every one of them answered, and waits for
// another line before it closes its connections. Nothing is in flight when it prints either line,
// so the window between them holds exactly N requests.
//
// Standard library only: go build -o load benches/concurrent_load.go
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
)

const request = "GET /plaintext HTTP/1.1\r\nHost: localhost\r\n\r\n"

type conn struct {
	c     net.Conn
	r     *bufio.Reader
	batch []byte
	depth int
}

// round writes the batch and reads DEPTH responses.
func (k *conn) round() error {
	if _, err := k.c.Write(k.batch); err != nil {
		return err
	}
	for i := 0; i < k.depth; i++ {
		if err := k.response(); err != nil {
			return err
		}
	}
	return nil
}

// response reads one response: the head up to its blank line, then Content-Length bytes.
func (k *conn) response() error {
	status, err := k.r.ReadSlice('\n')
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(status, []byte("HTTP/1.1 200 ")) {
		return fmt.Errorf("unexpected status line %q", status)
	}
	length := -1
	for {
		line, err := k.r.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(line) <= 2 {
			break
		}
		colon := bytes.IndexByte(line, ':')
		if colon > 0 && bytes.EqualFold(line[:colon], []byte("content-length")) {
			length, err = strconv.Atoi(string(bytes.TrimSpace(line[colon+1:])))
			if err != nil {
				return fmt.Errorf("bad Content-Length %q", line)
			}
		}
	}
	if length != len("Hello, World!") {
		return fmt.Errorf("Content-Length %d, not 13", length)
	}
	body, err := k.r.Peek(length)
	if err != nil {
		return err
	}
	if string(body) != "Hello, World!" {
		return fmt.Errorf("unexpected body %q", body)
	}
	_, err = k.r.Discard(length)
	return err
}

// all runs ROUNDS rounds on every connection at once and returns the first error.
func all(conns []*conn, rounds int) error {
	var wg sync.WaitGroup
	errs := make(chan error, len(conns))
	for _, k := range conns {
		wg.Add(1)
		go func(k *conn) {
			defer wg.Done()
			for i := 0; i < rounds; i++ {
				if err := k.round(); err != nil {
					errs <- err
					return
				}
			}
		}(k)
	}
	wg.Wait()
	close(errs)
	return <-errs
}

func main() {
	port := flag.Int("port", 0, "server port on 127.0.0.1")
	nconns := flag.Int("conns", 32, "connections, all in flight at once")
	depth := flag.Int("depth", 1, "requests per write (1: keep-alive; 16: pipelined)")
	rounds := flag.Int("rounds", 500, "measured rounds per connection")
	warm := flag.Int("warm", 20, "warm-up rounds per connection")
	flag.Parse()
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "concurrent_load:", err)
		os.Exit(1)
	}
	conns := make([]*conn, *nconns)
	for i := range conns {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", *port))
		if err != nil {
			fail(err)
		}
		conns[i] = &conn{c: c, r: bufio.NewReaderSize(c, 64*1024),
			batch: bytes.Repeat([]byte(request), *depth), depth: *depth}
	}
	stdin := bufio.NewReader(os.Stdin)
	if err := all(conns, *warm); err != nil {
		fail(err)
	}
	fmt.Println("warm")
	if _, err := stdin.ReadString('\n'); err != nil {
		fail(err)
	}
	if err := all(conns, *rounds); err != nil {
		fail(err)
	}
	fmt.Printf("done %d\n", *nconns**rounds**depth)
	stdin.ReadString('\n')
	for _, k := range conns {
		k.c.Close()
	}
}
