package main

// Slow clients (slowloris): connections that trickle a request line and headers one byte at a
// time, or a body, must be cut off by the server's timeouts from the configuration's http block,
// while ordinary requests keep being answered at once.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// slowHTTPConfig loads the http block through the environment, as an operator would set it.
func slowHTTPConfig(t *testing.T, env map[string]string) HTTPConfig {
	t.Helper()
	cfg, err := LoadConfig("", func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(ModeDev); err != nil {
		t.Fatal(err)
	}
	return cfg.HTTP
}

// serveForTest runs serveUntilDone on a loopback listener until the test ends.
func serveForTest(t *testing.T, handler http.Handler, limits HTTPConfig) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serveUntilDone(ctx, ln, handler, limits, slog.New(slog.DiscardHandler)) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serveUntilDone: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("serveUntilDone did not return")
		}
	})
	return ln.Addr().String()
}

// testHandler answers /healthz at once and reads POST bodies in full.
func testHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("POST /echo", func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, "body: "+err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%d bytes\n", len(b))
	})
	return mux
}

// trickle opens a connection, writes head at once, then one byte of tail every interval, and
// reports how long after dialling the server closed the connection (or -1 when it was still open
// after the whole tail). Whatever the server answered before closing is returned too.
func trickle(addr, head, tail string, interval time.Duration) (closedAfter time.Duration, answer string, err error) {
	start := time.Now()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return 0, "", err
	}
	defer conn.Close()
	closed := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(conn) // until the server closes
		closed <- string(b)
	}()
	if _, err := io.WriteString(conn, head); err != nil {
		return 0, "", err
	}
	for i := 0; i < len(tail); i++ {
		select {
		case answer = <-closed:
			return time.Since(start), answer, nil
		case <-time.After(interval):
		}
		if _, err := conn.Write([]byte{tail[i]}); err != nil {
			answer = <-closed
			return time.Since(start), answer, nil
		}
	}
	select {
	case answer = <-closed:
		return time.Since(start), answer, nil
	case <-time.After(2 * interval):
		return -1, "", nil
	}
}

// durations summarises a set of durations.
type durations []time.Duration

func (d durations) stats() (lo, median, hi time.Duration) {
	if len(d) == 0 {
		return 0, 0, 0
	}
	s := append(durations(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[0], s[len(s)/2], s[len(s)-1]
}

// normalTraffic issues ordinary requests (each on a new connection) every interval until stop is
// closed, and returns their latencies and failures.
func normalTraffic(addr string, every time.Duration, stop <-chan struct{}) (lat durations, failures []string) {
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	t := time.NewTicker(every)
	defer t.Stop()
	for i := 0; ; i++ {
		select {
		case <-stop:
			return lat, failures
		case <-t.C:
		}
		start := time.Now()
		var res *http.Response
		var err error
		if i%2 == 0 {
			res, err = client.Get("http://" + addr + "/healthz")
		} else {
			res, err = client.Post("http://"+addr+"/echo", "text/plain", strings.NewReader("hello"))
		}
		if err != nil {
			failures = append(failures, err.Error())
			continue
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		lat = append(lat, time.Since(start))
		if res.StatusCode != http.StatusOK {
			failures = append(failures, res.Status)
		}
	}
}

// TestSlowlorisHeaders: 200 connections each trickling a request line and headers one byte per
// 500 ms are closed by the server once ReadHeaderTimeout (1 s here) has passed, and ordinary
// requests sent meanwhile are answered quickly.
func TestSlowlorisHeaders(t *testing.T) {
	limits := slowHTTPConfig(t, map[string]string{
		"WECOM_OIDC_HTTP__READ_HEADER_TIMEOUT": "1s",
		"WECOM_OIDC_HTTP__READ_TIMEOUT":        "3s",
		"WECOM_OIDC_HTTP__WRITE_TIMEOUT":       "3s",
		"WECOM_OIDC_HTTP__IDLE_TIMEOUT":        "3s",
	})
	// The shedding middleware is part of the real stack: a header that never ends must not take a
	// slot, so a low limit still lets ordinary requests through.
	addr := serveForTest(t, limitConcurrency(testHandler(), 8), limits)

	const slow = 200
	const interval = 500 * time.Millisecond
	head := "GET /healthz HTTP/1.1\r\nHost: x\r\n"
	tail := "X-Slow: " + strings.Repeat("a", 12) + "\r\n\r\n" // 20 bytes: 10 s at one byte per 500 ms

	stop := make(chan struct{})
	var normal durations
	var normalFailures []string
	normalDone := make(chan struct{})
	go func() {
		defer close(normalDone)
		normal, normalFailures = normalTraffic(addr, 20*time.Millisecond, stop)
	}()

	var mu sync.Mutex
	var closedAfter durations
	var stillOpen, answered, refused int
	var sample string
	var dialErrs []error
	var wg sync.WaitGroup
	for i := range slow {
		wg.Go(func() {
			// Half trickle from the first byte of the request line, half after it.
			h, tl := head, tail
			if i%2 == 0 {
				h, tl = "", head+tail
			}
			d, answer, err := trickle(addr, h, tl, interval)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				dialErrs = append(dialErrs, err)
			case d < 0:
				stillOpen++
			default:
				closedAfter = append(closedAfter, d)
				switch {
				case answer == "":
				case strings.HasPrefix(answer, "HTTP/1.1 400 ") || strings.HasPrefix(answer, "HTTP/1.1 408 "):
					refused++ // net/http's own answer to an unfinished header
				default:
					answered++
					sample = answer
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	<-normalDone

	lo, med, hi := closedAfter.stats()
	nlo, nmed, nhi := normal.stats()
	t.Logf("%d slow-header connections: closed by the server after %v…%v (median %v); %d still open; %d answered 400 by net/http, %d served; ordinary requests meanwhile: %d, latency %v…%v (median %v), %d failed",
		slow, lo.Round(time.Millisecond), hi.Round(time.Millisecond), med.Round(time.Millisecond), stillOpen, refused, answered,
		len(normal), nlo.Round(time.Microsecond), nhi.Round(time.Microsecond), nmed.Round(time.Microsecond), len(normalFailures))
	if len(dialErrs) > 0 {
		t.Errorf("%d slow connections could not be opened, first: %v", len(dialErrs), dialErrs[0])
	}
	if stillOpen > 0 {
		t.Errorf("%d slow-header connections were still open after sending 20 bytes over 10 s", stillOpen)
	}
	if answered > 0 {
		t.Errorf("%d slow-header connections were served: the request should never have reached the handler:\n%s", answered, sample)
	}
	if lo < limits.ReadHeaderTimeout-100*time.Millisecond {
		t.Errorf("a slow connection was closed after %v, before ReadHeaderTimeout %v", lo, limits.ReadHeaderTimeout)
	}
	if hi > limits.ReadHeaderTimeout+time.Second {
		t.Errorf("a slow connection stayed open %v, want ≤ ReadHeaderTimeout %v + 1s", hi, limits.ReadHeaderTimeout)
	}
	if len(normalFailures) > 0 {
		t.Errorf("%d ordinary requests failed during the attack, first: %s", len(normalFailures), normalFailures[0])
	}
	if len(normal) < 10 {
		t.Errorf("only %d ordinary requests were made", len(normal))
	}
	if nhi > 500*time.Millisecond {
		t.Errorf("an ordinary request took %v during the attack, want < 500ms", nhi)
	}
}

// TestSlowBodiesAndIdleConnections: a body trickled one byte per 500 ms is cut off at ReadTimeout
// (the handler sees an error, the connection is closed); a keep-alive connection left idle is
// closed at IdleTimeout.
func TestSlowBodiesAndIdleConnections(t *testing.T) {
	limits := slowHTTPConfig(t, map[string]string{
		"WECOM_OIDC_HTTP__READ_HEADER_TIMEOUT": "1s",
		"WECOM_OIDC_HTTP__READ_TIMEOUT":        "2s",
		"WECOM_OIDC_HTTP__WRITE_TIMEOUT":       "3s",
		"WECOM_OIDC_HTTP__IDLE_TIMEOUT":        "1500ms",
	})
	addr := serveForTest(t, testHandler(), limits)

	const slow = 20
	var mu sync.Mutex
	var closedAfter durations
	var stillOpen int
	var wg sync.WaitGroup
	for range slow {
		wg.Go(func() {
			d, _, err := trickle(addr, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\n", strings.Repeat("b", 20), 500*time.Millisecond)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				t.Error(err)
			case d < 0:
				stillOpen++
			default:
				closedAfter = append(closedAfter, d)
			}
		})
	}

	// Idle keep-alive connections: one request, then silence.
	idleClosed := make(chan time.Duration, 5)
	for range 5 {
		go func() {
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				idleClosed <- -1
				return
			}
			defer conn.Close()
			io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
			br := bufio.NewReader(conn)
			res, err := http.ReadResponse(br, nil)
			if err != nil {
				idleClosed <- -1
				return
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			start := time.Now()
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := br.ReadByte(); err == io.EOF {
				idleClosed <- time.Since(start)
				return
			}
			idleClosed <- -1
		}()
	}
	wg.Wait()
	var idle durations
	for range 5 {
		idle = append(idle, <-idleClosed)
	}

	lo, _, hi := closedAfter.stats()
	ilo, _, ihi := idle.stats()
	t.Logf("%d slow-body connections closed after %v…%v (ReadTimeout %v), %d still open; idle keep-alive connections closed after %v…%v (IdleTimeout %v)",
		slow, lo.Round(time.Millisecond), hi.Round(time.Millisecond), limits.ReadTimeout, stillOpen,
		ilo.Round(time.Millisecond), ihi.Round(time.Millisecond), limits.IdleTimeout)
	if stillOpen > 0 || hi > limits.ReadTimeout+time.Second {
		t.Errorf("slow bodies: %d connections still open, the longest lived %v; want all closed ≤ ReadTimeout %v + 1s", stillOpen, hi, limits.ReadTimeout)
	}
	if ilo < 0 || ihi > limits.IdleTimeout+time.Second {
		t.Errorf("idle keep-alive connections closed after %v…%v (-1: not closed within 5s), want ≤ IdleTimeout %v + 1s", ilo, ihi, limits.IdleTimeout)
	}
}

// TestSlowBodiesHoldSheddingSlots measures what the shedding middleware does against slow
// bodies: unlike a slow header, a request whose headers are complete is being served, so a body
// trickled in holds a concurrency slot until ReadTimeout. With as many slow bodies as slots,
// every other request is shed (503) until then. This is logged, not failed: it is the price of
// counting requests in the handler; the defence is a ReadTimeout far below the default 30s or a
// limit well above what an attacker can open.
func TestSlowBodiesHoldSheddingSlots(t *testing.T) {
	limits := slowHTTPConfig(t, map[string]string{
		"WECOM_OIDC_HTTP__READ_HEADER_TIMEOUT": "1s",
		"WECOM_OIDC_HTTP__READ_TIMEOUT":        "2s",
	})
	const slots = 4
	addr := serveForTest(t, limitConcurrency(testHandler(), slots), limits)
	var wg sync.WaitGroup
	for range slots {
		wg.Go(func() {
			trickle(addr, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\n", strings.Repeat("b", 20), 500*time.Millisecond)
		})
	}
	time.Sleep(300 * time.Millisecond)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	start := time.Now()
	shed, firstOK := 0, time.Duration(-1)
	for time.Since(start) < 4*time.Second {
		res, err := client.Post("http://"+addr+"/echo", "text/plain", strings.NewReader("x"))
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode == http.StatusServiceUnavailable {
			shed++
		} else if firstOK < 0 {
			firstOK = time.Since(start)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	wg.Wait()
	t.Logf("%d slow bodies against %d slots: %d ordinary requests shed with 503; the first was served %v later (ReadTimeout %v)",
		slots, slots, shed, (firstOK + 300*time.Millisecond).Round(100*time.Millisecond), limits.ReadTimeout)
	if firstOK < 0 {
		t.Errorf("no ordinary request was served within 4s: slots held beyond ReadTimeout %v", limits.ReadTimeout)
	}
}
