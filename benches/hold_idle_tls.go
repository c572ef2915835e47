// hold_idle_tls: the TLS counterpart of hold_idle.py, for benches/tls.sh. Opens N connections to
// a local HTTPS server, completes the TLS 1.3 handshake on each (the server's certificate checked
// against -cacert), sends one GET, reads the whole response, then holds every connection idle.
//
// Prints "ready N" on stdout once every connection has been answered, then holds them until
// SIGTERM/SIGINT or -hold, whichever comes first. Exits 1 (after a message on stderr) if a
// connection fails, gets a non-200 answer, or everything is not ready within -timeout. Only
// loopback addresses are accepted. Standard library only: `go build hold_idle_tls.go`.
//
// Usage: hold_idle_tls -port PORT -count N -cacert CERT.pem [-host 127.0.0.1] [-path /plaintext]
//
//	[-concurrency 64] [-timeout 120s] [-hold 900s]
package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

func main() {
	host := flag.String("host", "127.0.0.1", "server address (loopback only)")
	port := flag.Int("port", 0, "server port")
	count := flag.Int("count", 0, "connections to hold")
	path := flag.String("path", "/plaintext", "path of the one request per connection")
	cacert := flag.String("cacert", "", "PEM file of the certificate the server presents")
	concurrency := flag.Int("concurrency", 64, "most handshakes in progress at once")
	timeout := flag.Duration("timeout", 120*time.Second, "time allowed to get every connection ready")
	hold := flag.Duration("hold", 900*time.Second, "longest hold, then exit")
	flag.Parse()

	fail := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "hold_idle_tls: "+format+"\n", args...)
		os.Exit(1)
	}
	ip := net.ParseIP(*host)
	if ip == nil || !ip.IsLoopback() {
		fail("refusing non-loopback host %s", *host)
	}
	if *port <= 0 || *count <= 0 || *cacert == "" {
		fail("-port, -count and -cacert are required")
	}
	pem, err := os.ReadFile(*cacert)
	if err != nil {
		fail("read -cacert: %v", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		fail("no certificate in %s", *cacert)
	}
	config := &tls.Config{
		RootCAs:                roots,
		ServerName:             *host,
		MinVersion:             tls.VersionTLS13,
		NextProtos:             []string{"http/1.1"},
		SessionTicketsDisabled: true,
	}
	addr := net.JoinHostPort(*host, fmt.Sprint(*port))
	request := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", *path, addr)

	// One goroutine per connection, at most -concurrency of them at a time: handshake, request,
	// response; the connection then joins `held` and nothing reads it any more.
	deadline := time.Now().Add(*timeout)
	var mu sync.Mutex
	held := make([]*tls.Conn, 0, *count)
	ready := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(held)
	}
	errs := make(chan error, *count)
	slots := make(chan struct{}, *concurrency)
	var wg sync.WaitGroup
	for i := 0; i < *count; i++ {
		slots <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			conn, err := tls.DialWithDialer(&net.Dialer{Deadline: deadline}, "tcp", addr, config)
			if err != nil {
				errs <- fmt.Errorf("handshake: %w", err)
				return
			}
			conn.SetDeadline(deadline)
			if _, err := io.WriteString(conn, request); err != nil {
				errs <- fmt.Errorf("write: %w", err)
				conn.Close()
				return
			}
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				errs <- fmt.Errorf("response: %w", err)
				conn.Close()
				return
			}
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != 200 {
				errs <- fmt.Errorf("response: status %d, body: %v", resp.StatusCode, err)
				conn.Close()
				return
			}
			conn.SetDeadline(time.Time{})
			mu.Lock()
			held = append(held, conn)
			mu.Unlock()
		}()
		select {
		case err := <-errs:
			fail("%v (ready %d/%d)", err, ready(), *count)
		default:
		}
	}
	wg.Wait()
	close(errs)
	if err, ok := <-errs; ok {
		fail("%v (ready %d/%d)", err, ready(), *count)
	}

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	fmt.Printf("ready %d\n", len(held))
	select {
	case <-stop:
	case <-time.After(*hold):
	}
	for _, conn := range held {
		conn.Close()
	}
}
