// loadcheck: the clients of deploy/proxy-test/run.sh. Go's net/http, as a service calling
// quiesce (directly or through a proxy) would use it: keep-alive loops of GET and POST requests,
// and Server-Sent Events clients that behave as a browser's EventSource does (they honour
// `retry:` and resume with `Last-Event-ID`). It runs for -duration, then prints one JSON object:
// requests and their failures by kind, stream ends (clean: `event: shutdown` then the end of
// the body), events lost or repeated across reconnections, and the histogram of reconnection
// delays. Standard library only (Debian's golang-go builds it offline).
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

type counts struct {
	mu       sync.Mutex
	byKind   map[string]int64
	examples map[string]string
}

func (c *counts) add(kind, example string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.byKind[kind]++
	if _, ok := c.examples[kind]; !ok {
		c.examples[kind] = example
	}
}

func newCounts() *counts {
	return &counts{byKind: map[string]int64{}, examples: map[string]string{}}
}

type result struct {
	Target   string            `json:"target"`
	Seconds  float64           `json:"seconds"`
	Requests int64             `json:"requests"`
	OK       int64             `json:"ok"`
	Failed   int64             `json:"failed"`
	Failures map[string]int64  `json:"failures"`
	Examples map[string]string `json:"failure_examples"`

	Streams          int               `json:"streams"`
	StreamsOpened    int64             `json:"streams_opened"`
	StreamsNotOpened int64             `json:"streams_not_opened"`
	CleanEnds        int64             `json:"clean_stream_ends"`
	UncleanEnds      int64             `json:"unclean_stream_ends"`
	StreamFailures   map[string]int64  `json:"stream_failures"`
	StreamExamples   map[string]string `json:"stream_failure_examples"`
	Events           int64             `json:"events"`
	EventsLost       int64             `json:"events_lost"`
	EventsRepeated   int64             `json:"events_repeated"`
	Resumed          int64             `json:"resumed_with_last_event_id"`
	RetryValuesMs    map[string]int64  `json:"retry_before_shutdown_ms_histogram"`
	ReconnectDelayMs map[string]int64  `json:"reconnect_delay_ms_histogram"`
}

func main() {
	target := flag.String("target", "http://127.0.0.1:8080", "base URL")
	loops := flag.Int("loops", 32, "keep-alive request loops")
	streams := flag.Int("streams", 1000, "SSE clients")
	every := flag.String("every", "200ms", "the ?every= of /events")
	duration := flag.Duration("duration", 60*time.Second, "how long to run")
	defaultRetry := flag.Duration("default-retry", 3*time.Second, "reconnection delay before any retry: (EventSource's default)")
	flag.Parse()

	ctx, cancel := context.WithTimeout(context.Background(), *duration)
	defer cancel()
	start := time.Now()

	reqFailures, streamFailures := newCounts(), newCounts()
	var requests, ok int64
	var wg sync.WaitGroup

	loopTransport := &http.Transport{
		MaxIdleConns:        *loops * 2,
		MaxIdleConnsPerHost: *loops * 2,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
	}
	loopClient := &http.Client{Transport: loopTransport, Timeout: 30 * time.Second}
	for i := 0; i < *loops; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			body := bytes.Repeat([]byte("q"), 64)
			for n := i; ctx.Err() == nil; n++ {
				var req *http.Request
				switch n % 3 {
				case 0:
					req, _ = http.NewRequest("GET", *target+"/plaintext", nil)
				case 1:
					req, _ = http.NewRequest("POST", *target+"/echo", bytes.NewReader(body))
				default:
					req, _ = http.NewRequest("GET", *target+"/json", nil)
				}
				resp, err := loopClient.Do(req)
				if ctx.Err() != nil {
					if err == nil {
						resp.Body.Close()
					}
					return
				}
				atomic.AddInt64(&requests, 1)
				if err != nil {
					reqFailures.add(req.Method+" error: "+classify(err), err.Error())
					time.Sleep(10 * time.Millisecond)
					continue
				}
				got, rerr := io.ReadAll(resp.Body)
				resp.Body.Close()
				switch {
				case rerr != nil && ctx.Err() != nil:
					return
				case rerr != nil:
					reqFailures.add(req.Method+" body error: "+classify(rerr), rerr.Error())
				case resp.StatusCode != 200:
					reqFailures.add(fmt.Sprintf("%s status %d", req.Method, resp.StatusCode), string(got))
				case n%3 == 1 && !bytes.Equal(got, body):
					reqFailures.add("POST wrong echo", string(got))
				default:
					atomic.AddInt64(&ok, 1)
				}
			}
		}(i)
	}

	sse := &sseStats{retries: map[string]int64{}, delays: map[string]int64{}}
	streamTransport := &http.Transport{
		MaxIdleConnsPerHost: 0,
		DisableKeepAlives:   false,
		DisableCompression:  true,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
	}
	streamClient := &http.Client{Transport: streamTransport}
	for i := 0; i < *streams; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			// Spread the first connections over a second, as clients would arrive.
			time.Sleep(time.Duration(i) * time.Second / time.Duration(*streams))
			c := &sseClient{url: *target + "/events?every=" + *every, client: streamClient, retry: *defaultRetry, stats: sse, failures: streamFailures}
			c.run(ctx)
		}(i)
	}
	wg.Wait()

	r := result{
		Target: *target, Seconds: time.Since(start).Seconds(),
		Requests: requests, OK: ok, Failures: reqFailures.byKind, Examples: reqFailures.examples,
		Streams: *streams, StreamsOpened: sse.opened, StreamsNotOpened: sse.notOpened, CleanEnds: sse.clean, UncleanEnds: sse.unclean,
		StreamFailures: streamFailures.byKind, StreamExamples: streamFailures.examples,
		Events: sse.events, EventsLost: sse.lost, EventsRepeated: sse.repeated, Resumed: sse.resumed,
		RetryValuesMs: sse.retries, ReconnectDelayMs: sse.delays,
	}
	for _, v := range reqFailures.byKind {
		r.Failed += v
	}
	out, _ := json.Marshal(r)
	fmt.Println(string(out))
}

// classify names an error by its kind, without addresses or ports.
func classify(err error) string {
	s := err.Error()
	for _, k := range []string{"connection reset", "connection refused", "EOF", "broken pipe", "timeout", "deadline", "server closed idle"} {
		if strings.Contains(s, k) {
			return k
		}
	}
	return s
}

type sseStats struct {
	opened, notOpened, clean, unclean, events, lost, repeated, resumed int64
	mu                                                                 sync.Mutex
	retries, delays                                                    map[string]int64
}

func bucket(d time.Duration) string {
	ms := d.Milliseconds() / 100 * 100
	return fmt.Sprintf("%05d", ms)
}

func (s *sseStats) note(m map[string]int64, key string) {
	s.mu.Lock()
	m[key]++
	s.mu.Unlock()
}

type sseClient struct {
	url      string
	client   *http.Client
	retry    time.Duration
	lastID   string
	stats    *sseStats
	failures *counts
}

// run connects, reads, and reconnects as EventSource does until ctx ends.
func (c *sseClient) run(ctx context.Context) {
	for ctx.Err() == nil {
		opened, clean, err := c.once(ctx)
		if ctx.Err() != nil {
			return
		}
		ended := time.Now()
		if !opened {
			// Not a stream end: the connection or its answer failed.
			atomic.AddInt64(&c.stats.notOpened, 1)
			c.failures.add("not opened: "+classify(err), fmt.Sprint(err))
		} else if clean {
			atomic.AddInt64(&c.stats.clean, 1)
		} else {
			atomic.AddInt64(&c.stats.unclean, 1)
			kind := "ended without event: shutdown"
			if err != nil {
				kind = classify(err)
			}
			c.failures.add(kind, fmt.Sprint(err))
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(c.retry):
		}
		c.stats.note(c.stats.delays, bucket(time.Since(ended)))
	}
}

// once is one connection: whether the stream opened, and whether it ended cleanly (shutdown
// event, then the body's end).
func (c *sseClient) once(ctx context.Context) (bool, bool, error) {
	req, _ := http.NewRequestWithContext(ctx, "GET", c.url, nil)
	req.Header.Set("Accept", "text/event-stream")
	if c.lastID != "" {
		req.Header.Set("Last-Event-ID", c.lastID)
		atomic.AddInt64(&c.stats.resumed, 1)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return false, false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return false, false, fmt.Errorf("status %d", resp.StatusCode)
	}
	atomic.AddInt64(&c.stats.opened, 1)
	reader := bufio.NewReader(resp.Body)
	var event, id, data string
	var sawShutdown, hasID bool
	for {
		line, err := reader.ReadString('\n')
		if err != nil {
			if err == io.EOF && line == "" {
				return true, sawShutdown, nil
			}
			return true, false, err
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			// Dispatch.
			if hasID {
				c.checkID(id, event)
				c.lastID = id
			}
			if event == "shutdown" {
				sawShutdown = true
				// The delay this client will wait before reconnecting, as the server set it.
				c.stats.note(c.stats.retries, bucket(c.retry))
			} else if data != "" {
				atomic.AddInt64(&c.stats.events, 1)
			}
			event, data, hasID = "", "", false
			continue
		}
		if strings.HasPrefix(line, ":") {
			continue
		}
		field, value := line, ""
		if i := strings.IndexByte(line, ':'); i >= 0 {
			field, value = line[:i], strings.TrimPrefix(line[i+1:], " ")
		}
		switch field {
		case "event":
			event = value
		case "data":
			data += value
		case "id":
			id, hasID = value, true
		case "retry":
			if ms, err := strconv.Atoi(value); err == nil {
				c.retry = time.Duration(ms) * time.Millisecond
			}
		}
	}
}

// checkID counts events lost or repeated when ids are numbers that count up by one.
func (c *sseClient) checkID(id, event string) {
	n, err := strconv.ParseInt(id, 10, 64)
	last, lerr := strconv.ParseInt(c.lastID, 10, 64)
	if err != nil || lerr != nil || c.lastID == "" {
		return
	}
	switch {
	case event == "shutdown" && n == last:
		// The shutdown event repeats the last id, so a client resumes after it.
	case n == last+1:
	case n <= last:
		atomic.AddInt64(&c.stats.repeated, last-n+1)
	default:
		atomic.AddInt64(&c.stats.lost, n-last-1)
	}
}
