// tlscheck: the Go crypto/tls clients of deploy/tls-test/ (clients.sh and restarts.sh).
// Standard library only (Debian's golang-go builds it offline).
//
//	tlscheck probe -addr 127.0.0.1:PORT -roots a.pem[,b.pem] [-tls 1.2|1.3]
//	    One handshake and one GET /plaintext. Prints one line: version, cipher suite, ALPN,
//	    the certificate's CN, the status and body. Exit 1 when any of it fails.
//	tlscheck idle -addr … -roots … [-tls 1.2|1.3] [-wait 20s]
//	    One GET /plaintext on a keep-alive connection, prints "ready", then waits for the
//	    server to close the idle connection and prints how: close_notify, ragged_eof (the TCP
//	    stream ended without close_notify), reset, or timeout. Exit 1 unless close_notify.
//	tlscheck load -addr … -roots … -loops 32 -fresh 4 -idle 8 -duration 30s
//	    Closed-loop HTTPS clients; prints one JSON object when -duration is over (below).
//
// How close_notify is told from a ragged EOF: tlsend.go (built with this file).
//
// load: -loops keep-alive clients alternate GET /plaintext and POST /echo on one connection,
// reconnecting when the server says Connection: close (the drain) or closes; -fresh clients
// make a new connection (a full handshake, Connection: close) per request; -idle clients make
// one request and then hold the connection idle until the server closes it, then do it again.
// Every fourth client of each kind (the second, the sixth, …) is capped at TLS 1.2. A request
// is lost when it was written whole and the connection ended (or failed) before its response
// was read whole; a connection refused (no listener) is not a request the server accepted, and
// is counted apart. Each
// completed handshake records the leaf certificate (serial and CN) and when it was first and
// last seen, so a rotation shows when the new certificate appeared.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// conn is one client connection.
type conn struct {
	raw *eofConn
	tls *tls.Conn
	br  *bufio.Reader
}

type options struct {
	addr, serverName string
	roots            *x509.CertPool
	maxVersion       uint16
}

func (o *options) config(capTLS12 bool) *tls.Config {
	cfg := &tls.Config{RootCAs: o.roots, ServerName: o.serverName, NextProtos: []string{"http/1.1"}, MinVersion: tls.VersionTLS12}
	if o.maxVersion != 0 {
		cfg.MaxVersion = o.maxVersion
	}
	if capTLS12 {
		cfg.MaxVersion = tls.VersionTLS12
	}
	return cfg
}

// dialErr is why a connection could not be made: refused (nothing listens), or a failed
// handshake.
type dialErr struct {
	refused bool
	err     error
}

func (e *dialErr) Error() string { return e.err.Error() }

func (o *options) dial(deadline time.Time, capTLS12 bool) (*conn, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	tcp, err := d.Dial("tcp", o.addr)
	if err != nil {
		return nil, &dialErr{refused: errors.Is(err, syscall.ECONNREFUSED), err: err}
	}
	raw := &eofConn{Conn: tcp}
	c := tls.Client(raw, o.config(capTLS12))
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := c.Handshake(); err != nil {
		tcp.Close()
		return nil, &dialErr{err: err}
	}
	if p := c.ConnectionState().NegotiatedProtocol; p != "http/1.1" {
		tcp.Close()
		return nil, &dialErr{err: fmt.Errorf("ALPN negotiated %q, not http/1.1", p)}
	}
	c.SetDeadline(deadline)
	return &conn{raw: raw, tls: c, br: bufio.NewReader(c)}, nil
}

func (c *conn) close() { c.tls.Close() }

// exchange sends one request and reads its response whole. sent says whether the request
// was written whole (a failure after that loses it).
func (c *conn) exchange(method, path string, body []byte, close bool) (resp *http.Response, got []byte, sent bool, err error) {
	var req bytes.Buffer
	fmt.Fprintf(&req, "%s %s HTTP/1.1\r\nHost: localhost\r\n", method, path)
	if body != nil {
		fmt.Fprintf(&req, "Content-Type: application/octet-stream\r\nContent-Length: %d\r\n", len(body))
	}
	if close {
		req.WriteString("Connection: close\r\n")
	}
	req.WriteString("\r\n")
	req.Write(body)
	if _, err := c.tls.Write(req.Bytes()); err != nil {
		return nil, nil, false, err
	}
	resp, err = http.ReadResponse(c.br, nil)
	if err != nil {
		return nil, nil, true, err
	}
	got, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, got, true, err
}

// awaitEnd reads until the server ends the connection, and says how it did.
func (c *conn) awaitEnd(timeout time.Duration) string {
	if timeout > 0 {
		c.tls.SetReadDeadline(time.Now().Add(timeout))
	}
	var buf [512]byte
	for {
		n, err := c.br.Read(buf[:])
		if err != nil {
			return tlsEnd(c.raw, err)
		}
		if n > 0 {
			return "unexpected bytes"
		}
	}
}

func parseTLS(s string) uint16 {
	switch s {
	case "":
		return 0
	case "1.2":
		return tls.VersionTLS12
	case "1.3":
		return tls.VersionTLS13
	}
	fmt.Fprintf(os.Stderr, "tlscheck: -tls %q: expected 1.2 or 1.3\n", s)
	os.Exit(2)
	return 0
}

func versionName(v uint16) string {
	switch v {
	case tls.VersionTLS12:
		return "TLSv1.2"
	case tls.VersionTLS13:
		return "TLSv1.3"
	}
	return fmt.Sprintf("0x%04x", v)
}

func loadRoots(list string) *x509.CertPool {
	pool := x509.NewCertPool()
	for _, path := range strings.Split(list, ",") {
		pem, err := os.ReadFile(path)
		if err != nil || !pool.AppendCertsFromPEM(pem) {
			fmt.Fprintf(os.Stderr, "tlscheck: no certificate in %s (%v)\n", path, err)
			os.Exit(2)
		}
	}
	return pool
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: tlscheck probe|idle|load -addr HOST:PORT -roots PEM[,PEM] …")
		os.Exit(2)
	}
	mode := os.Args[1]
	fs := flag.NewFlagSet(mode, flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:8443", "server address")
	serverName := fs.String("server-name", "localhost", "SNI and the name the certificate must carry")
	roots := fs.String("roots", "", "comma-separated PEM files of trusted certificates")
	version := fs.String("tls", "", "highest TLS version offered: 1.2 or 1.3 (default: both)")
	wait := fs.Duration("wait", 20*time.Second, "idle: how long to wait for the server to close")
	loops := fs.Int("loops", 32, "load: keep-alive clients")
	fresh := fs.Int("fresh", 4, "load: clients making a new connection per request")
	idle := fs.Int("idle", 8, "load: clients holding an idle connection until the server closes it")
	duration := fs.Duration("duration", 30*time.Second, "load: how long to run")
	fs.Parse(os.Args[2:])
	o := &options{addr: *addr, serverName: *serverName, roots: loadRoots(*roots), maxVersion: parseTLS(*version)}
	switch mode {
	case "probe":
		os.Exit(probe(o))
	case "idle":
		os.Exit(idleOnce(o, *wait))
	case "load":
		load(o, *loops, *fresh, *idle, *duration)
	default:
		fmt.Fprintf(os.Stderr, "tlscheck: unknown mode %q\n", mode)
		os.Exit(2)
	}
}

// probe: one handshake, one request.
func probe(o *options) int {
	c, err := o.dial(time.Now().Add(10*time.Second), false)
	if err != nil {
		fmt.Printf("handshake failed: %v\n", err)
		return 1
	}
	defer c.close()
	st := c.tls.ConnectionState()
	resp, body, _, err := c.exchange("GET", "/plaintext", nil, false)
	if err != nil {
		fmt.Printf("%s %s: request failed: %v\n", versionName(st.Version), tls.CipherSuiteName(st.CipherSuite), err)
		return 1
	}
	fmt.Printf("version=%s cipher=%s alpn=%s cn=%s status=%d body=%q\n", versionName(st.Version),
		tls.CipherSuiteName(st.CipherSuite), st.NegotiatedProtocol, st.PeerCertificates[0].Subject.CommonName,
		resp.StatusCode, body)
	if resp.StatusCode != 200 || string(body) != "Hello, World!" {
		return 1
	}
	return 0
}

// idleOnce: one request, then wait for the server to close the idle connection.
func idleOnce(o *options, wait time.Duration) int {
	c, err := o.dial(time.Now().Add(wait+10*time.Second), false)
	if err != nil {
		fmt.Printf("handshake failed: %v\n", err)
		return 1
	}
	defer c.close()
	resp, _, _, err := c.exchange("GET", "/plaintext", nil, false)
	if err != nil || resp.StatusCode != 200 {
		fmt.Printf("request failed: %v\n", err)
		return 1
	}
	fmt.Printf("ready %s\n", versionName(c.tls.ConnectionState().Version))
	end := c.awaitEnd(wait)
	fmt.Println(end)
	if end != "close_notify" {
		return 1
	}
	return 0
}

// counts is a map of named counters, each with its first example.
type counts struct {
	mu       sync.Mutex
	n        map[string]int64
	examples map[string]string
}

func newCounts() *counts { return &counts{n: map[string]int64{}, examples: map[string]string{}} }

func (c *counts) add(kind, example string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n[kind]++
	if _, ok := c.examples[kind]; !ok && example != "" {
		c.examples[kind] = example
	}
}

func (c *counts) total() (t int64) {
	for _, v := range c.n {
		t += v
	}
	return
}

// certSeen is one leaf certificate as handshakes presented it.
type certSeen struct {
	Serial  string `json:"serial"`
	CN      string `json:"cn"`
	FirstMs int64  `json:"first_ms"`
	// When the TCP connect of the first handshake that presented it began.
	FirstDialMs int64 `json:"first_dial_ms"`
	LastMs      int64 `json:"last_ms"`
	Count       int64 `json:"handshakes"`
}

type certLog struct {
	mu    sync.Mutex
	certs map[string]*certSeen
}

func (l *certLog) note(c *conn, dialed time.Time) {
	leaf := c.tls.ConnectionState().PeerCertificates[0]
	now := time.Now().UnixMilli()
	key := leaf.SerialNumber.Text(16)
	l.mu.Lock()
	defer l.mu.Unlock()
	s, ok := l.certs[key]
	if !ok {
		s = &certSeen{Serial: key, CN: leaf.Subject.CommonName, FirstMs: now, FirstDialMs: dialed.UnixMilli()}
		l.certs[key] = s
	}
	s.LastMs = now
	s.Count++
}

type loadResult struct {
	Seconds          float64           `json:"seconds"`
	Requests         int64             `json:"requests"`
	OK               int64             `json:"ok"`
	Lost             int64             `json:"lost"`
	LostKinds        map[string]int64  `json:"lost_by_kind"`
	LostExamples     map[string]string `json:"lost_examples"`
	Wrong            int64             `json:"wrong_answers"`
	WrongKinds       map[string]int64  `json:"wrong_by_kind"`
	WrongExamples    map[string]string `json:"wrong_examples"`
	Refused          int64             `json:"refused_connections"`
	Handshakes       int64             `json:"handshakes"`
	HandshakeFailed  int64             `json:"handshakes_failed"`
	HandshakeKinds   map[string]int64  `json:"handshake_failures"`
	HandshakeExample map[string]string `json:"handshake_failure_examples"`
	Versions         map[string]int64  `json:"versions"`
	Ends             map[string]int64  `json:"connection_ends"`
	Certs            []*certSeen       `json:"certificates"`
}

// load runs the clients for duration and prints the result.
func load(o *options, loops, fresh, idle int, duration time.Duration) {
	start := time.Now()
	// Requests still in flight when the run ends are not counted; their connections get a few
	// seconds more, so that none is cut by a deadline of ours while the run is still on.
	ctx, cancel := context.WithDeadline(context.Background(), start.Add(duration))
	deadline := start.Add(duration + 3*time.Second)
	defer cancel()
	var requests, ok, refused, handshakes int64
	lost, wrong, hsFailed, versions, ends := newCounts(), newCounts(), newCounts(), newCounts(), newCounts()
	certs := &certLog{certs: map[string]*certSeen{}}

	connect := func(capTLS12 bool) *conn {
		for ctx.Err() == nil {
			dialed := time.Now()
			c, err := o.dial(deadline, capTLS12)
			if err == nil {
				atomic.AddInt64(&handshakes, 1)
				certs.note(c, dialed)
				versions.add(versionName(c.tls.ConnectionState().Version), "")
				return c
			}
			if ctx.Err() != nil {
				return nil
			}
			var de *dialErr
			if errors.As(err, &de) && de.refused {
				atomic.AddInt64(&refused, 1)
			} else {
				hsFailed.add(shortErr(err), err.Error())
			}
			time.Sleep(10 * time.Millisecond)
		}
		return nil
	}
	// One request on c; the connection is still usable when it returns true.
	payload := bytes.Repeat([]byte("q"), 64)
	request := func(kind string, c *conn, n int, close bool) bool {
		method, path, body := "GET", "/plaintext", []byte(nil)
		if n%2 == 1 {
			method, path, body = "POST", "/echo", payload
		}
		resp, got, sent, err := c.exchange(method, path, body, close)
		if ctx.Err() != nil {
			return false // cut by the end of the run: not counted
		}
		if !sent && err != nil {
			// Not written whole: the server had already ended the connection.
			ends.add(kind+": before a request: "+tlsEnd(c.raw, err), err.Error())
			return false
		}
		atomic.AddInt64(&requests, 1)
		switch {
		case err != nil:
			lost.add(method+" "+tlsEnd(c.raw, err), err.Error())
			return false
		case resp.StatusCode != 200:
			wrong.add(fmt.Sprintf("%s status %d", method, resp.StatusCode), string(got))
		case body == nil && string(got) != "Hello, World!", body != nil && !bytes.Equal(got, body):
			wrong.add(method+" wrong body", string(got))
		default:
			atomic.AddInt64(&ok, 1)
		}
		if resp.Close {
			// Connection: close: the server ends the connection next.
			ends.add(kind+": after Connection: close: "+c.awaitEnd(5*time.Second), "")
			return false
		}
		return true
	}

	var wg sync.WaitGroup
	for i := 0; i < loops; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			var c *conn
			for n := i; ctx.Err() == nil; n++ {
				if c == nil {
					if c = connect(i%4 == 1); c == nil {
						return
					}
				}
				if !request("keep-alive", c, n, false) {
					c.close()
					c = nil
				}
			}
			if c != nil {
				c.close()
			}
		}(i)
	}
	for i := 0; i < fresh; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for n := i; ctx.Err() == nil; n++ {
				c := connect(i%4 == 1)
				if c == nil {
					return
				}
				request("fresh", c, n, true)
				c.close()
			}
		}(i)
	}
	for i := 0; i < idle; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for ctx.Err() == nil {
				c := connect(i%4 == 1)
				if c == nil {
					return
				}
				if request("idle", c, 0, false) {
					end := c.awaitEnd(0)
					if ctx.Err() == nil {
						ends.add("idle: while idle: "+end, "")
					}
				}
				c.close()
			}
		}(i)
	}
	wg.Wait()

	r := loadResult{
		Seconds: time.Since(start).Seconds(), Requests: requests, OK: ok,
		Lost: lost.total(), LostKinds: lost.n, LostExamples: lost.examples,
		Wrong: wrong.total(), WrongKinds: wrong.n, WrongExamples: wrong.examples,
		Refused: refused, Handshakes: handshakes,
		HandshakeFailed: hsFailed.total(), HandshakeKinds: hsFailed.n, HandshakeExample: hsFailed.examples,
		Versions: versions.n, Ends: ends.n,
	}
	for _, s := range certs.certs {
		r.Certs = append(r.Certs, s)
	}
	sort.Slice(r.Certs, func(a, b int) bool { return r.Certs[a].FirstMs < r.Certs[b].FirstMs })
	out, _ := json.Marshal(r)
	fmt.Println(string(out))
}
