package main

// Load shedding (http.max_concurrent_requests): beyond the limit a request gets 503 with
// Retry-After at once instead of queueing; probes bypass the limit; shed requests cost next to
// no memory; the requests being served are not disturbed and free their slots when done.

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"html"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zitadel/oidc/v3/pkg/oidc"

	"github.com/wecom-oidc/wecom-oidc/upstream/wecom/wecomsim"
)

// shedBound is how quickly a shed request must be answered: at once, not queued behind the held
// requests (which wait for WeCom up to its 30 s timeout here). Loose, for a loaded CI machine
// running the race detector; the log shows the real figures.
const shedBound = time.Second

// checkShed checks a response is the shedding answer: 503 with a Retry-After of whole seconds.
func checkShed(res *http.Response, took time.Duration) error {
	if res.StatusCode != http.StatusServiceUnavailable {
		return fmt.Errorf("status %d, want 503", res.StatusCode)
	}
	ra := res.Header.Get("Retry-After")
	if n, err := strconv.Atoi(ra); err != nil || n < 1 {
		return fmt.Errorf("Retry-After %q, want a number of seconds ≥ 1", ra)
	}
	if took > shedBound {
		return fmt.Errorf("shed after %v, want < %v", took, shedBound)
	}
	return nil
}

// TestLimitConcurrencyMiddleware drives limitConcurrency with a handler the test holds: exactly
// max requests are admitted, the next is shed at once, probes pass, a finished (or panicking)
// request frees its slot.
func TestLimitConcurrencyMiddleware(t *testing.T) {
	const max = 3
	release := make(chan struct{})
	entered := make(chan struct{}, 16)
	var inside atomic.Int32
	h := limitConcurrency(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inside.Add(1)
		defer inside.Add(-1)
		switch r.URL.Path {
		case "/panic":
			panic(http.ErrAbortHandler)
		case "/hold":
			entered <- struct{}{}
			<-release
		}
		io.WriteString(w, "ok")
	}), max)
	srv := httptest.NewServer(h)
	defer srv.Close()
	client := &http.Client{Timeout: 5 * time.Second}

	hold := func(n int) *sync.WaitGroup {
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() {
				res, err := client.Get(srv.URL + "/hold")
				if err != nil {
					t.Error(err)
					return
				}
				res.Body.Close()
				if res.StatusCode != http.StatusOK {
					t.Errorf("held request: status %d", res.StatusCode)
				}
			})
		}
		for range n {
			select {
			case <-entered:
			case <-time.After(5 * time.Second):
				t.Fatal("held requests did not reach the handler")
			}
		}
		return &wg
	}
	get := func(path string) (*http.Response, time.Duration) {
		start := time.Now()
		res, err := client.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res, time.Since(start)
	}

	// Panicking handlers give their slots back.
	for range 2 * max {
		if _, err := client.Get(srv.URL + "/panic"); err == nil {
			t.Fatal("a panicking handler answered")
		}
	}
	wg := hold(max)
	if got := inside.Load(); got != max {
		t.Fatalf("%d requests inside, want %d", got, max)
	}
	for _, path := range []string{"/", "/token", "/hold"} {
		res, took := get(path)
		if err := checkShed(res, took); err != nil {
			t.Errorf("GET %s beyond the limit: %v", path, err)
		}
	}
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		if res, _ := get(path); res.StatusCode != http.StatusOK {
			t.Errorf("GET %s while full: status %d, want 200 (probes bypass shedding)", path, res.StatusCode)
		}
	}
	close(release)
	wg.Wait()
	if res, _ := get("/"); res.StatusCode != http.StatusOK {
		t.Errorf("after the held requests finished: status %d", res.StatusCode)
	}
}

var shedMemberLink = regexp.MustCompile(`data-userid="zhangsan" href="([^"]+)"`)

// TestLoadShedding is the contract end to end: `serve` wiring (serveProvider) with
// http.max_concurrent_requests=4 from the environment; four logins are held in flight by a WeCom
// that does not answer auth/getuserinfo yet; meanwhile every other request is shed at once with
// 503 and Retry-After — 2,000 of them without the heap growing — while /healthz, /readyz and
// /metrics answer. Once WeCom answers, the four logins complete and the slots are free again.
func TestLoadShedding(t *testing.T) {
	const limit = 4
	seed := wecomsim.DefaultSeed()
	sim := wecomsim.New(seed)
	arrived := make(chan struct{}, 64)
	release := make(chan struct{})
	var releaseOnce sync.Once
	gated := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/auth/getuserinfo") {
			arrived <- struct{}{}
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
		}
		sim.ServeHTTP(w, r)
	})
	simSrv := httptest.NewServer(gated)
	defer simSrv.Close()
	defer releaseOnce.Do(func() { close(release) })

	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfgPath, []byte(`clients:
  - id: shed-app
    secret: shed-app-secret-0123456789abcdef
    redirect_uris: ["https://app.example.com/cb"]
`), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"WECOM_OIDC_HTTP__MAX_CONCURRENT_REQUESTS": strconv.Itoa(limit),
		"WECOM_OIDC_LISTEN":                        "127.0.0.1:0",
		"WECOM_OIDC_STORAGE__PATH":                 filepath.Join(dir, "wecom-oidc.db"),
		"WECOM_OIDC_WECOM__CORP_ID":                seed.CorpID,
		"WECOM_OIDC_WECOM__AGENT_ID":               seed.AgentID,
		"WECOM_OIDC_WECOM__SECRET":                 seed.Secret,
		"WECOM_OIDC_WECOM__API_BASE_URL":           simSrv.URL,
		"WECOM_OIDC_WECOM__OAUTH_BASE_URL":         simSrv.URL,
		"WECOM_OIDC_WECOM__LOGIN_BASE_URL":         simSrv.URL,
		"WECOM_OIDC_WECOM__TIMEOUT":                "30s",
	}
	cfg, err := LoadConfig(cfgPath, func(k string) string { return env[k] })
	if err != nil {
		// The README promises an environment form for every scalar key; carry on with the file.
		t.Errorf("http.max_concurrent_requests through the environment: %v", err)
		delete(env, "WECOM_OIDC_HTTP__MAX_CONCURRENT_REQUESTS")
		f, ferr := os.OpenFile(cfgPath, os.O_APPEND|os.O_WRONLY, 0)
		if ferr != nil {
			t.Fatal(ferr)
		}
		fmt.Fprintf(f, "http:\n  max_concurrent_requests: %d\n", limit)
		f.Close()
		if cfg, err = LoadConfig(cfgPath, func(k string) string { return env[k] }); err != nil {
			t.Fatal(err)
		}
	}
	if err := cfg.Validate(ModeDev); err != nil {
		t.Fatal(err)
	}
	if cfg.HTTP.MaxConcurrentRequests != limit {
		t.Fatalf("http.max_concurrent_requests from the environment = %d, want %d", cfg.HTTP.MaxConcurrentRequests, limit)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	issuerc := make(chan string, 1)
	served := make(chan error, 1)
	go func() {
		served <- serveProvider(ctx, cfg, slog.New(slog.DiscardHandler), serveOptions{ready: func(issuer string) { issuerc <- issuer }})
	}()
	var issuer string
	select {
	case issuer = <-issuerc:
	case err := <-served:
		t.Fatalf("serveProvider: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the server did not start")
	}
	defer func() {
		cancel()
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("serveProvider: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("serveProvider did not return")
		}
	}()
	web := &http.Client{Timeout: 10 * time.Second}
	for range 50 { // wait until it answers
		if res, err := web.Get(issuer + "/healthz"); err == nil {
			res.Body.Close()
			break
		}
		time.Sleep(20 * time.Millisecond)
	}

	// Hold `limit` logins at auth/getuserinfo.
	type held struct {
		loc *url.URL
		err error
	}
	results := make(chan held, limit)
	for range limit {
		go func() {
			loc, err := shedLogin(issuer)
			results <- held{loc, err}
		}()
	}
	for range limit {
		select {
		case <-arrived:
		case r := <-results:
			t.Fatalf("a login ended before WeCom answered: %v %v", r.loc, r.err)
		case <-time.After(10 * time.Second):
			t.Fatal("the logins did not reach WeCom's auth/getuserinfo")
		}
	}

	// Full: everything but the probes is shed at once.
	for _, tc := range []struct{ method, path string }{
		{"GET", "/.well-known/openid-configuration"},
		{"GET", "/keys"},
		{"GET", "/authorize?client_id=shed-app"},
		{"POST", "/oauth/token"},
	} {
		req, _ := http.NewRequest(tc.method, issuer+tc.path, nil)
		start := time.Now()
		res, err := web.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if err := checkShed(res, time.Since(start)); err != nil {
			t.Errorf("%s %s with %d requests in flight: %v", tc.method, tc.path, limit, err)
		}
	}
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		res, err := web.Get(issuer + path)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Errorf("%s while shedding: status %d, want 200", path, res.StatusCode)
		}
	}

	// 2,000 shed requests from 50 concurrent clients: all 503, each at once, heap unchanged.
	var before, after runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&before)
	goroutinesBefore := runtime.NumGoroutine()
	const burst, workers = 2000, 50
	burstClient := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	var next, shed atomic.Int64
	var lat durations
	var latMu sync.Mutex
	var firstErr error
	var errMu sync.Mutex
	start := time.Now()
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for next.Add(1) <= burst {
				t0 := time.Now()
				res, err := burstClient.Get(issuer + "/.well-known/openid-configuration")
				if err == nil {
					io.Copy(io.Discard, res.Body)
					res.Body.Close()
					took := time.Since(t0)
					latMu.Lock()
					lat = append(lat, took)
					latMu.Unlock()
					err = checkShed(res, took)
				}
				if err != nil {
					errMu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					errMu.Unlock()
					continue
				}
				shed.Add(1)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	burstClient.CloseIdleConnections()
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&after)
	growth := int64(after.HeapInuse) - int64(before.HeapInuse)
	_, median, slowest := lat.stats()
	t.Logf("%d requests beyond a limit of %d from %d clients: %d shed with 503 + Retry-After in %v (median %v, slowest %v); heap in use %.1f MiB → %.1f MiB (%+.1f MiB); goroutines %d → %d",
		burst, limit, workers, shed.Load(), elapsed.Round(time.Millisecond), median.Round(time.Microsecond), slowest.Round(time.Microsecond),
		float64(before.HeapInuse)/(1<<20), float64(after.HeapInuse)/(1<<20), float64(growth)/(1<<20), goroutinesBefore, runtime.NumGoroutine())
	if firstErr != nil {
		t.Errorf("%d of %d burst requests were not shed properly, first: %v", burst-int(shed.Load()), burst, firstErr)
	}
	if growth > 16<<20 {
		t.Errorf("heap in use grew by %.1f MiB over %d shed requests, want < 16 MiB", float64(growth)/(1<<20), burst)
	}

	// WeCom answers: the held logins complete normally and the slots are free again.
	releaseOnce.Do(func() { close(release) })
	for range limit {
		select {
		case r := <-results:
			if r.err != nil || r.loc.Query().Get("code") == "" {
				t.Errorf("held login after WeCom answered: %v (%v)", r.err, r.loc)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the held logins did not complete")
		}
	}
	for range 2 * limit {
		res, err := web.Get(issuer + "/.well-known/openid-configuration")
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Fatalf("after the held requests finished: status %d, want 200", res.StatusCode)
		}
	}
}

// shedLogin signs zhangsan in to shed-app through the simulated WeCom and returns where the
// browser was sent at the application.
func shedLogin(issuer string) (*url.URL, error) {
	verifier := rand.Text() + rand.Text()
	v := url.Values{
		"response_type": {"code"}, "client_id": {"shed-app"}, "redirect_uri": {"https://app.example.com/cb"},
		"scope": {"openid"}, "state": {rand.Text()}, "nonce": {rand.Text()},
		"code_challenge": {oidc.NewSHACodeChallenge(verifier)}, "code_challenge_method": {"S256"},
	}
	jar, _ := cookiejar.New(nil)
	b := &http.Client{Timeout: 30 * time.Second, Jar: jar, CheckRedirect: func(req *http.Request, _ []*http.Request) error {
		if req.URL.Scheme == "https" {
			return http.ErrUseLastResponse
		}
		return nil
	}}
	res, err := b.Get(issuer + "/authorize?" + v.Encode())
	if err != nil {
		return nil, err
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	m := shedMemberLink.FindSubmatch(body)
	if m == nil {
		return nil, fmt.Errorf("no WeCom page (status %d): %s", res.StatusCode, body)
	}
	next, err := res.Request.URL.Parse(html.UnescapeString(string(m[1])))
	if err != nil {
		return nil, err
	}
	if res, err = b.Get(next.String()); err != nil {
		return nil, err
	}
	res.Body.Close()
	loc, err := url.Parse(res.Header.Get("Location"))
	if err != nil || loc.Scheme != "https" {
		return nil, errors.Join(err, fmt.Errorf("login ended with status %d, Location %q", res.StatusCode, res.Header.Get("Location")))
	}
	return loc, nil
}
