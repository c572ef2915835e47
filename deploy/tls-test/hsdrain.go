// hsdrain: handshakes in progress across a graceful shutdown (deploy/tls-test/handshake_drain.sh).
// Standard library only (Debian's golang-go builds it offline).
//
//	hsdrain serve -addr 127.0.0.1:PORT [-cert C -key K] [-timeout 30s]
//	    The Go server compared with quiesce: net/http's ListenAndServeTLS (ListenAndServe
//	    without -cert), "Hello, World!" on every path, after a 1 s sleep on /slow. SIGTERM or
//	    SIGQUIT calls srv.Shutdown with a context of -timeout (the idiomatic graceful shutdown);
//	    the process exits when Shutdown returns. Logs to stderr when and how it ended.
//	hsdrain run -addr … -roots cert.pem -pid PID -signal TERM|QUIT [-stalled 5] [-partial 5]
//	        [-finish 5] [-finish-after 50ms] [-late 0] [-late-after 1500ms] [-inflight /slow]
//	        [-age 300ms] [-wait 75s]
//	    Opens, before the signal: -stalled connections that send nothing; -partial ones that
//	    send the first half of a ClientHello and never the rest; -finish ones that send the
//	    first half too, and the rest -finish-after the signal, then complete the handshake and
//	    make one GET /plaintext (keep-alive); -late ones that do the same -late-after the
//	    signal (after quiesce's last call for new connections); one connection with a request
//	    to -inflight sent 300 ms before the signal. -age after the others are set up (their age
//	    at the signal), it sends the signal to PID itself, then watches /proc/PID until the
//	    process is gone (or a zombie). Prints one JSON object: when the process ended and what
//	    each connection saw and when, in ms since the signal.
//
// What a connection saw: a raw connection (stalled, partial) reads the TCP stream and reports
// "fin" (the read returned EOF), "reset" (ECONNRESET), "timeout" (nothing within -wait) and
// any bytes received first (a TLS alert is named: "alert:<level>:<description>"). A TLS
// connection (finish, late, inflight) reports the handshake's result, the response's status, its
// Connection header and body, and then how the connection ended: "close_notify" (the TLS
// layer returned EOF before the TCP stream ended: the alert came first, as tlsend.go tells
// it), "ragged_eof", "reset", or "timeout".
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: hsdrain serve|run [flags]")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "serve":
		serve(os.Args[2:])
	case "run":
		run(os.Args[2:])
	default:
		fmt.Fprintln(os.Stderr, "usage: hsdrain serve|run [flags]")
		os.Exit(2)
	}
}

// --- the Go server ---

func serve(args []string) {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	addr := fs.String("addr", "", "listen address")
	cert := fs.String("cert", "", "certificate (PEM); plain HTTP without it")
	key := fs.String("key", "", "key (PEM)")
	timeout := fs.Duration("timeout", 30*time.Second, "Shutdown's context")
	fs.Parse(args)
	logger := log.New(os.Stderr, "", log.LstdFlags|log.Lmicroseconds)

	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(time.Second)
		}
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "Hello, World!")
	})
	srv := &http.Server{Addr: *addr, Handler: mux}
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGQUIT, syscall.SIGINT)
	done := make(chan struct{})
	go func() {
		sig := <-signals
		start := time.Now()
		logger.Printf("signal %v: Shutdown with a %v context", sig, *timeout)
		ctx, cancel := context.WithTimeout(context.Background(), *timeout)
		defer cancel()
		err := srv.Shutdown(ctx)
		logger.Printf("Shutdown returned after %d ms: %v", time.Since(start).Milliseconds(), err)
		close(done)
	}()
	var err error
	if *cert != "" {
		err = srv.ListenAndServeTLS(*cert, *key)
	} else {
		err = srv.ListenAndServe()
	}
	if !errors.Is(err, http.ErrServerClosed) {
		logger.Fatalf("listen: %v", err)
	}
	<-done
}

// --- the clients ---

// outcome is what one connection saw; times in ms since the signal.
type outcome struct {
	Kind      string  `json:"kind"`
	ConnectMs float64 `json:"connect_ms"`
	Handshake string  `json:"handshake,omitempty"` // finish, inflight: "ok" or why not
	Status    int     `json:"status,omitempty"`
	ConnHdr   string  `json:"connection_header,omitempty"`
	Body      string  `json:"body,omitempty"`
	RespMs    float64 `json:"response_ms,omitempty"`
	First     string  `json:"first_bytes,omitempty"` // stalled, partial: what came before the end
	End       string  `json:"end"`
	EndMs     float64 `json:"end_ms"`
	Err       string  `json:"error,omitempty"`
}

type report struct {
	Signal      string    `json:"signal"`
	ExitMs      float64   `json:"exit_ms"` // -1: still running after -wait
	Connections []outcome `json:"connections"`
}

// inflightLead: the slow request is sent this long before the signal.
const inflightLead = 300 * time.Millisecond

var signalAt atomic.Int64 // unix ns of the signal; 0 before it

// sinceSignal is ms since the signal (negative before it, from -age's estimate).
func sinceSignal(t time.Time, estimate time.Time) float64 {
	base := time.Unix(0, signalAt.Load())
	if signalAt.Load() == 0 {
		base = estimate
	}
	return float64(t.Sub(base).Microseconds()) / 1000
}

// rawConn notes when its own Read saw the end of the TCP stream (eofConn, tlsend.go).
type rawConn struct {
	eofConn
	// Holding the ClientHello: the first Write sends half of it and the rest once release
	// is closed.
	hold    bool
	release chan struct{}
	writes  int
}

func (c *rawConn) Write(p []byte) (int, error) {
	c.writes++
	if !c.hold || c.writes > 1 {
		return c.Conn.Write(p)
	}
	half := len(p) / 2
	if _, err := c.Conn.Write(p[:half]); err != nil {
		return 0, err
	}
	<-c.release
	n, err := c.Conn.Write(p[half:])
	return half + n, err
}

// captureConn catches a ClientHello as Go's crypto/tls writes it: the first half of it is what
// the partial and finishing connections send before the signal.
type captureConn struct {
	net.Conn
	hello []byte
}

func (c *captureConn) Write(p []byte) (int, error) {
	c.hello = append([]byte(nil), p...)
	return 0, errors.New("captured")
}
func (c *captureConn) Read([]byte) (int, error)         { return 0, io.EOF }
func (c *captureConn) Close() error                     { return nil }
func (c *captureConn) SetDeadline(time.Time) error      { return nil }
func (c *captureConn) SetReadDeadline(time.Time) error  { return nil }
func (c *captureConn) SetWriteDeadline(time.Time) error { return nil }

var alertNames = map[byte]string{0: "close_notify", 10: "unexpected_message", 20: "bad_record_mac",
	40: "handshake_failure", 47: "illegal_parameter", 50: "decode_error", 70: "protocol_version",
	80: "internal_error", 90: "user_canceled", 109: "missing_extension", 112: "unrecognized_name"}

// describe names what a raw connection received: a TLS alert record, or the first bytes.
func describe(b []byte) string {
	if len(b) >= 7 && b[0] == 21 {
		level := map[byte]string{1: "warning", 2: "fatal"}[b[5]]
		name := alertNames[b[6]]
		if name == "" {
			name = fmt.Sprint(b[6])
		}
		return "alert:" + level + ":" + name
	}
	if len(b) > 16 {
		b = b[:16]
	}
	return fmt.Sprintf("%d bytes: %q", len(b), b)
}

// watchRaw reads a raw connection until it ends or -wait is over.
func watchRaw(c net.Conn, o *outcome, deadline time.Time, estimate time.Time) {
	c.SetReadDeadline(deadline)
	var got []byte
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			o.End = errKind(err)
			o.EndMs = sinceSignal(time.Now(), estimate)
			break
		}
	}
	if len(got) > 0 {
		o.First = describe(got)
	}
}

// exchange makes one GET on a TLS connection and waits for its end.
func exchange(c *tls.Conn, raw *rawConn, path string, o *outcome, deadline time.Time, estimate time.Time) {
	c.SetDeadline(deadline)
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: localhost\r\n\r\n", path); err != nil {
		o.Err = "write: " + errKind(err)
		o.End = errKind(err)
		o.EndMs = sinceSignal(time.Now(), estimate)
		return
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		o.Err = "response: " + errKind(err)
		o.End = tlsEnd(&raw.eofConn, err)
		o.EndMs = sinceSignal(time.Now(), estimate)
		return
	}
	body, err := io.ReadAll(resp.Body)
	o.RespMs = sinceSignal(time.Now(), estimate)
	o.Status = resp.StatusCode
	// ReadResponse takes "Connection: close" out of the header into resp.Close.
	o.ConnHdr = resp.Header.Get("Connection")
	if resp.Close {
		o.ConnHdr = "close"
	}
	o.Body = string(body)
	if err != nil {
		o.Err = "body: " + errKind(err)
	}
	if _, err = br.ReadByte(); err == nil {
		o.End = "data after the response"
	} else {
		o.End = tlsEnd(&raw.eofConn, err)
	}
	o.EndMs = sinceSignal(time.Now(), estimate)
}

func run(args []string) {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	addr := fs.String("addr", "", "server address")
	rootsFile := fs.String("roots", "", "certificate to trust (PEM)")
	pid := fs.Int("pid", 0, "the server's pid")
	sigName := fs.String("signal", "TERM", "TERM or QUIT")
	stalled := fs.Int("stalled", 5, "connections that send nothing")
	partial := fs.Int("partial", 5, "connections that send half a ClientHello")
	finish := fs.Int("finish", 5, "connections that finish the ClientHello after the signal")
	finishAfter := fs.Duration("finish-after", 50*time.Millisecond, "when they do, after the signal")
	late := fs.Int("late", 0, "connections that finish the ClientHello -late-after the signal")
	lateAfter := fs.Duration("late-after", 1500*time.Millisecond, "when they do, after the signal")
	inflight := fs.String("inflight", "", "path of a slow request in flight at the signal (none if empty)")
	age := fs.Duration("age", 300*time.Millisecond, "from the handshaking connections set up to the signal")
	wait := fs.Duration("wait", 75*time.Second, "longest wait for anything")
	fs.Parse(args)

	pem, err := os.ReadFile(*rootsFile)
	if err != nil {
		log.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	cfg := &tls.Config{RootCAs: roots, ServerName: "localhost", NextProtos: []string{"http/1.1"}}
	sig := map[string]syscall.Signal{"TERM": syscall.SIGTERM, "QUIT": syscall.SIGQUIT}[*sigName]
	if sig == 0 || *pid == 0 {
		log.Fatal("need -pid and -signal TERM|QUIT")
	}

	capture := &captureConn{}
	tls.Client(capture, cfg).Handshake()
	hello := capture.hello
	if len(hello) < 10 {
		log.Fatal("no ClientHello captured")
	}

	// Until the signal, times are relative to an estimate of it (set up + -age).
	estimate := time.Now().Add(*age + 200*time.Millisecond)
	deadline := time.Now().Add(*wait)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var outs []outcome
	add := func(o *outcome) {
		mu.Lock()
		outs = append(outs, *o)
		mu.Unlock()
	}
	dial := func() (net.Conn, time.Time, error) {
		d := net.Dialer{Timeout: 5 * time.Second}
		c, err := d.Dial("tcp", *addr)
		return c, time.Now(), err
	}
	release := make(chan struct{})
	releaseLate := make(chan struct{})
	var ready sync.WaitGroup

	// client starts one connection of KIND in its own goroutine: a dial that fails is its
	// outcome (in Handshake too for a TLS client) and counts as set up; else BODY gets the
	// connection and when it was made, and calls ready.Done() once it is set up.
	client := func(kind string, isTLS bool, body func(o *outcome, c net.Conn, at time.Time)) {
		ready.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			o := &outcome{Kind: kind}
			c, at, err := dial()
			if err != nil {
				o.End = "dial: " + errKind(err)
				if isTLS {
					o.Handshake, o.End = o.End, "none"
				}
				ready.Done()
			} else {
				body(o, c, at)
				c.Close()
			}
			add(o)
		}()
	}

	for i := 0; i < *stalled+*partial; i++ {
		kind := "stalled"
		if i >= *stalled {
			kind = "partial"
		}
		client(kind, false, func(o *outcome, c net.Conn, at time.Time) {
			if kind == "partial" {
				c.Write(hello[:len(hello)/2])
			}
			ready.Done()
			watchRaw(c, o, deadline, estimate)
			o.ConnectMs = sinceSignal(at, estimate)
		})
	}
	for i := 0; i < *finish+*late; i++ {
		kind, when := "finish", release
		if i >= *finish {
			kind, when = "late", releaseLate
		}
		client(kind, true, func(o *outcome, tcp net.Conn, at time.Time) {
			ready.Done()
			raw := &rawConn{eofConn: eofConn{Conn: tcp}, hold: true, release: when}
			c := tls.Client(raw, cfg)
			c.SetDeadline(deadline)
			if err := c.Handshake(); err != nil {
				o.Handshake = "failed: " + tlsEnd(&raw.eofConn, err)
				o.End = o.Handshake
				o.EndMs = sinceSignal(time.Now(), estimate)
			} else {
				o.Handshake = "ok"
				exchange(c, raw, "/plaintext", o, deadline, estimate)
			}
			o.ConnectMs = sinceSignal(at, estimate)
		})
	}
	ready.Wait()
	// The handshaking connections are -age old at the signal; the request in flight was
	// sent inflightLead before it (or with them, when -age is shorter).
	setUp := time.Now()
	if lead := *age - inflightLead; lead > 0 {
		time.Sleep(lead)
	}
	if *inflight != "" {
		client("inflight", true, func(o *outcome, tcp net.Conn, at time.Time) {
			raw := &rawConn{eofConn: eofConn{Conn: tcp}}
			c := tls.Client(raw, cfg)
			c.SetDeadline(deadline)
			if err := c.Handshake(); err != nil {
				o.Handshake, o.End = errKind(err), "none"
				ready.Done()
				return
			}
			o.Handshake = "ok"
			ready.Done()
			exchange(c, raw, *inflight, o, deadline, estimate)
			o.ConnectMs = sinceSignal(at, estimate)
		})
		ready.Wait()
	}
	time.Sleep(time.Until(setUp.Add(*age)))

	signalAt.Store(time.Now().UnixNano())
	if err := syscall.Kill(*pid, sig); err != nil {
		log.Fatalf("kill %d: %v", *pid, err)
	}
	go func() {
		time.Sleep(*finishAfter)
		close(release)
	}()
	go func() {
		time.Sleep(*lateAfter)
		close(releaseLate)
	}()
	r := report{Signal: *sigName, ExitMs: -1}
	for time.Now().Before(deadline) {
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", *pid))
		// The state is the field after the command's closing parenthesis.
		if err != nil || strings.HasPrefix(strings.TrimSpace(string(st[strings.LastIndexByte(string(st), ')')+1:])), "Z") {
			r.ExitMs = sinceSignal(time.Now(), estimate)
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	wg.Wait()
	r.Connections = outs
	json.NewEncoder(os.Stdout).Encode(r)
}
