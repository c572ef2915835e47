// How a TLS client connection ended, shared by tlscheck.go and hsdrain.go: each is built with
// this file beside it (go build tlscheck.go tlsend.go). Standard library only.
//
// How close_notify is told from a ragged EOF: Go's tls.Conn.Read returns io.EOF for both (a
// TCP end on a record boundary counts as EOF). The TCP connection under it is wrapped, and
// notes when its own Read returned io.EOF: after close_notify, tls.Conn returns io.EOF without
// having read the TCP stream's end (it reads no further than the alert record); after a ragged
// EOF it has seen the TCP end first.
package main

import (
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
)

// eofConn is the TCP connection under a tls.Conn; it notes when its own Read saw the end of
// the TCP stream.
type eofConn struct {
	net.Conn
	eof atomic.Bool
}

func (c *eofConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err == io.EOF {
		c.eof.Store(true)
	}
	return n, err
}

// errKind names how a read or write on a connection ended: "open" (no error), "fin" (EOF),
// "reset", "broken_pipe", "timeout", or "error: " and the error's text (shortErr).
func errKind(err error) string {
	switch {
	case err == nil:
		return "open"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "fin"
	case errors.Is(err, syscall.ECONNRESET):
		return "reset"
	case errors.Is(err, syscall.EPIPE):
		return "broken_pipe"
	case errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	}
	return "error: " + shortErr(err)
}

// shortErr is an error's text without addresses and ports.
func shortErr(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		s = s[i+2:]
	}
	return s
}

// tlsEnd names how a TLS connection over raw ended, from the error a read on it returned:
// "close_notify" (the TLS layer returned EOF before the TCP stream ended), "ragged_eof" (the
// TCP stream ended first), or errKind's name for any other end ("open" when there was none).
func tlsEnd(raw *eofConn, err error) string {
	k := errKind(err)
	if k != "fin" {
		return k
	}
	if raw.eof.Load() {
		return "ragged_eof"
	}
	return "close_notify"
}
