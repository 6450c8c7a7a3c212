package provider_test

// Faults of WeCom and of back-channel receivers, seen from the person and from the process: a
// slow, failing or babbling WeCom must end every login on the provider's own page within the
// connector's timeout, and neither those logins nor back-channel deliveries to a dead receiver may
// leave goroutines behind.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zitadel/oidc/v3/pkg/oidc"

	"github.com/wecom-oidc/wecom-oidc/keys"
	"github.com/wecom-oidc/wecom-oidc/provider"
	"github.com/wecom-oidc/wecom-oidc/storage"
	"github.com/wecom-oidc/wecom-oidc/storage/bolt"
	"github.com/wecom-oidc/wecom-oidc/upstream/wecom"
	"github.com/wecom-oidc/wecom-oidc/upstream/wecom/wecomsim"
)

// faultTimeout is the connector's per-call timeout in these tests (production: wecom.timeout, 10s).
const faultTimeout = time.Second

// faultOP is a provider over bbolt with one simulated WeCom, like the harness, but with a short
// connector timeout, the production HTTP clients (nil: http.DefaultTransport, so their idle
// connections can be closed before goroutines are counted) and a Close the test calls itself.
type faultOP struct {
	t      *testing.T
	sim    *wecomsim.Sim
	conn   *wecom.Connector
	p      *provider.Provider
	issuer string
	// closed is set once the test has closed the provider itself.
	closed bool
}

func newFaultOP(t *testing.T, clients ...storage.Client) *faultOP {
	t.Helper()
	store, err := bolt.Open(filepath.Join(t.TempDir(), "wecom-oidc.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	var handler http.Handler
	opSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { handler.ServeHTTP(w, r) }))
	t.Cleanup(opSrv.Close)
	seed := wecomsim.DefaultSeed()
	sim := wecomsim.New(seed)
	simSrv := httptest.NewServer(sim)
	t.Cleanup(simSrv.Close)
	metrics := provider.NewMetrics(store)
	conn, err := wecom.New(wecom.Config{
		CorpID: seed.CorpID, AgentID: seed.AgentID, Secret: seed.Secret, Scope: wecom.ScopePrivateInfo,
		APIBaseURL: simSrv.URL, OAuthBaseURL: simSrv.URL, LoginBaseURL: simSrv.URL,
		RedirectURL: opSrv.URL + "/login/wecom/callback",
		Tokens:      provider.UpstreamTokens{Store: store},
		Timeout:     faultTimeout,
		Observer:    metrics,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	keySet, err := keys.Open(ctx, provider.KeyStore(store), keys.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	p, err := provider.New(provider.Config{
		Issuer: opSrv.URL, Store: store, Keys: keySet, Metrics: metrics,
		Upstreams: []provider.Upstream{{ID: "corp", Name: "模拟企业", NameEN: "Sim corp", CorpID: seed.CorpID, Connector: conn}},
	})
	if err != nil {
		t.Fatal(err)
	}
	handler = p
	op := &faultOP{t: t, sim: sim, conn: conn, p: p, issuer: opSrv.URL}
	t.Cleanup(func() {
		if op.closed {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := p.Close(ctx); err != nil {
			t.Errorf("provider close: %v", err)
		}
	})
	for _, c := range append([]storage.Client{
		{ID: webClientID, SecretHash: storage.HashSecret(webClientSecret), RedirectURIs: []string{webRedirect}, IDTokenClaims: true},
	}, clients...) {
		c.Source, c.CreatedAt = storage.SourceCLI, time.Now()
		if err := store.CreateClient(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	return op
}

// faultBrowser is a browser safe to use from any goroutine: failures are returned, not fatal.
type faultBrowser struct {
	client *http.Client
	tr     *http.Transport
}

// userAgentTransport sends every request with the browser's User-Agent.
type userAgentTransport struct {
	base *http.Transport
	ua   string
}

func (u userAgentTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("User-Agent", u.ua)
	return u.base.RoundTrip(r)
}

// newFaultBrowser is a desktop browser, or the WeCom client's with inClient.
func newFaultBrowser(inClient ...bool) *faultBrowser {
	tr := &http.Transport{Proxy: nil, DisableCompression: true}
	ua := desktopUA
	if len(inClient) > 0 && inClient[0] {
		ua = wecomUA
	}
	jar, _ := cookiejar.New(nil)
	return &faultBrowser{tr: tr, client: &http.Client{
		Transport: userAgentTransport{tr, ua}, Jar: jar, Timeout: 30 * time.Second,
		CheckRedirect: func(req *http.Request, _ []*http.Request) error {
			if req.URL.Scheme == "https" { // a client's redirect URI: never served
				return http.ErrUseLastResponse
			}
			return nil
		},
	}}
}

// loginResult is where one login through the simulated WeCom ended.
type loginResult struct {
	status int
	body   string
	app    *url.URL      // the client's redirect URI the browser was sent to, or nil for a page
	took   time.Duration // from the click at WeCom to the provider's final answer
}

// login starts an authorization for the web client (English pages), clicks zhangsan on the
// simulated WeCom page and follows the provider until a page or the client's redirect URI.
// verifier is the PKCE verifier sent.
func (op *faultOP) login(b *faultBrowser) (res loginResult, verifier string, err error) {
	verifier = randomString() + randomString()
	v := url.Values{
		"response_type": {"code"}, "client_id": {webClientID}, "redirect_uri": {webRedirect},
		"scope": {"openid profile"}, "state": {randomString()}, "nonce": {randomString()}, "ui_locales": {"en"},
		"code_challenge": {oidc.NewSHACodeChallenge(verifier)}, "code_challenge_method": {"S256"},
	}
	page, err := b.client.Get(op.issuer + "/authorize?" + v.Encode())
	if err != nil {
		return res, "", err
	}
	body, _ := io.ReadAll(page.Body)
	page.Body.Close()
	var href string
	for _, m := range memberLink.FindAllStringSubmatch(string(body), -1) {
		if m[1] == "zhangsan" {
			href = m[2]
		} else if m[4] == "zhangsan" {
			href = m[3]
		}
	}
	if href == "" {
		return res, "", fmt.Errorf("no WeCom page with zhangsan (status %d):\n%s", page.StatusCode, body)
	}
	click, err := page.Request.URL.Parse(html.UnescapeString(href))
	if err != nil {
		return res, "", err
	}
	start := time.Now()
	final, err := b.client.Get(click.String())
	if err != nil {
		return res, "", fmt.Errorf("after the click at WeCom (%v): %w", time.Since(start), err)
	}
	body, _ = io.ReadAll(final.Body)
	final.Body.Close()
	res = loginResult{status: final.StatusCode, body: string(body), took: time.Since(start)}
	if final.StatusCode >= 300 && final.StatusCode < 400 {
		res.app, err = final.Request.URL.Parse(final.Header.Get("Location"))
	}
	return res, verifier, err
}

// goroutineBaseline waits until the goroutine count is steady and returns it.
func goroutineBaseline(closeIdle func()) int {
	closeIdle()
	n := runtime.NumGoroutine()
	for range 20 {
		time.Sleep(25 * time.Millisecond)
		closeIdle()
		m := runtime.NumGoroutine()
		if m == n {
			break
		}
		n = m
	}
	return n
}

// settleGoroutines closes idle connections and waits, up to deadline, for the goroutine count to
// come back to at most want; it returns the last count and, when it did not, every goroutine's stack.
func settleGoroutines(want int, within time.Duration, closeIdle func()) (int, string) {
	deadline := time.Now().Add(within)
	for {
		closeIdle()
		n := runtime.NumGoroutine()
		if n <= want {
			return n, ""
		}
		if time.Now().After(deadline) {
			var buf bytes.Buffer
			_ = pprof.Lookup("goroutine").WriteTo(&buf, 1)
			return n, buf.String()
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// goroutineTolerance is how many goroutines above the baseline count as noise (a timer, a
// connection being torn down by the runtime).
const goroutineTolerance = 3

func closeDefaultIdle() {
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
}

// TestWeComFaultsEndOnPageWithoutLeaks: WeCom slower than the connector timeout, answering HTTP
// 500, or answering garbage — every one of a burst of 20 concurrent logins ends on the provider's
// "WeCom cannot be reached" page (503) within the connector timeout + 1 s, and once the burst is
// over the goroutine count is back where it was.
func TestWeComFaultsEndOnPageWithoutLeaks(t *testing.T) {
	slow := 3 * faultTimeout
	apis := []string{"gettoken", "auth/getuserinfo", "auth/getuserdetail", "user/get", "department/get"}
	tests := []struct {
		name    string
		breakIt func(*wecomsim.Sim)
	}{
		{"slow getuserinfo", func(s *wecomsim.Sim) { s.SetLatency("auth/getuserinfo", slow) }},
		{"slow everything", func(s *wecomsim.Sim) {
			for _, e := range apis {
				s.SetLatency(e, slow)
			}
		}},
		{"slow gettoken after the token was revoked", func(s *wecomsim.Sim) {
			s.SetLatency("gettoken", slow)
			s.InvalidateTokens(wecom.CodeInvalidToken)
		}},
		{"slow user/get", func(s *wecomsim.Sim) { s.SetLatency("user/get", slow) }},
		{"500 getuserinfo", func(s *wecomsim.Sim) { s.SetHTTPStatus("auth/getuserinfo", http.StatusInternalServerError) }},
		{"500 user/get", func(s *wecomsim.Sim) { s.SetHTTPStatus("user/get", http.StatusInternalServerError) }},
		{"500 gettoken after the token was revoked", func(s *wecomsim.Sim) {
			s.SetHTTPStatus("gettoken", http.StatusInternalServerError)
			s.InvalidateTokens(wecom.CodeTokenExpired)
		}},
		{"garbage getuserinfo", func(s *wecomsim.Sim) { s.SetGarbage("auth/getuserinfo", true) }},
		{"garbage user/get", func(s *wecomsim.Sim) { s.SetGarbage("user/get", true) }},
		{"garbage gettoken after the token was revoked", func(s *wecomsim.Sim) {
			s.SetGarbage("gettoken", true)
			s.InvalidateTokens(wecom.CodeInvalidToken)
		}},
	}
	const burst = 20
	bound := faultTimeout + time.Second
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			op := newFaultOP(t)
			// Warm up: one good login fills the token and department caches and the connection
			// pools, so the baseline holds what a serving process always has.
			warm := newFaultBrowser()
			if res, _, err := op.login(warm); err != nil || res.app == nil || res.app.Query().Get("code") == "" {
				t.Fatalf("warm-up login: %v (status %d)\n%s", err, res.status, res.body)
			}
			warm.tr.CloseIdleConnections()
			browsers := make([]*faultBrowser, burst)
			for i := range browsers {
				browsers[i] = newFaultBrowser()
			}
			closeIdle := func() {
				closeDefaultIdle()
				op.conn.CloseIdleConnections()
				for _, b := range browsers {
					b.tr.CloseIdleConnections()
				}
			}
			before := goroutineBaseline(closeIdle)

			tt.breakIt(op.sim)
			results := make([]loginResult, burst)
			errs := make([]error, burst)
			var wg sync.WaitGroup
			for i := range burst {
				wg.Go(func() { results[i], _, errs[i] = op.login(browsers[i]) })
			}
			wg.Wait()
			var slowest time.Duration
			for i, res := range results {
				if errs[i] != nil {
					t.Errorf("login %d: %v", i, errs[i])
					continue
				}
				slowest = max(slowest, res.took)
				if res.app != nil {
					t.Errorf("login %d went to the application (%v) instead of the provider's page", i, res.app)
					continue
				}
				if res.status != http.StatusServiceUnavailable || !strings.Contains(res.body, "WeCom cannot be reached right now") {
					t.Errorf("login %d: status %d, want 503 with the unavailable page:\n%s", i, res.status, res.body)
				}
				if res.took > bound {
					t.Errorf("login %d took %v, want < connector timeout %v + 1s", i, res.took, faultTimeout)
				}
			}
			after, stacks := settleGoroutines(before+goroutineTolerance, 5*time.Second, closeIdle)
			t.Logf("%s: %d logins, slowest %v (bound %v); goroutines %d before, %d after", tt.name, burst, slowest.Round(time.Millisecond), bound, before, after)
			if stacks != "" {
				t.Errorf("goroutine leak: %d before the burst, %d after (tolerance %d):\n%s", before, after, goroutineTolerance, stacks)
			}
		})
	}
}

// TestWeComSlowSecondaryLookups: the lookups a login survives without (the sensitive fields of
// auth/getuserdetail, department names) each have the connector's timeout; when WeCom is slow on
// all of them, the person must still get an answer within the connector timeout + 1 s, not one
// timeout per lookup one after another. zhangsan signs in inside the WeCom client (so
// getuserdetail is asked) and is in two departments; the caches are cold.
func TestWeComSlowSecondaryLookups(t *testing.T) {
	op := newFaultOP(t)
	for _, e := range []string{"auth/getuserdetail", "department/get"} {
		op.sim.SetLatency(e, 3*faultTimeout)
	}
	res, _, err := op.login(newFaultBrowser(true))
	if err != nil {
		t.Fatal(err)
	}
	outcome := fmt.Sprintf("page, status %d", res.status)
	if res.app != nil {
		outcome = "at the application"
	}
	t.Logf("in-client login with slow getuserdetail and department/get (cold caches): %s after %v", outcome, res.took.Round(time.Millisecond))
	if bound := faultTimeout + time.Second; res.took > bound {
		t.Errorf("the login took %v (%s): %.1f× the connector timeout %v; want < %v — the slow lookups are waited for one after another, with no deadline for the login as a whole",
			res.took.Round(time.Millisecond), outcome, float64(res.took)/float64(faultTimeout), faultTimeout, bound)
	}
}

// blackHole accepts connections and never answers: a back-channel receiver that hangs.
func blackHole(t *testing.T) (addr string, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			ln.Close()
			<-done
			mu.Lock()
			for _, c := range conns {
				c.Close()
			}
			mu.Unlock()
		})
	}
	t.Cleanup(stop)
	return ln.Addr().String(), stop
}

// TestBackchannelDeadReceiverNoLeak: logouts whose back-channel receivers hang, refuse
// connections or keep answering 500 — Close with a short deadline abandons the deliveries at once,
// and afterwards no delivery goroutine is left.
func TestBackchannelDeadReceiverNoLeak(t *testing.T) {
	hang, stopHang := blackHole(t)
	refused := func() string { // a port nobody listens on
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().String()
	}()
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "down", http.StatusInternalServerError)
	}))
	t.Cleanup(failing.Close)
	receivers := map[string]string{
		"bcl-hang":    "http://" + hang + "/backchannel",
		"bcl-refused": "http://" + refused + "/backchannel",
		"bcl-500":     failing.URL + "/backchannel",
	}
	var clients []storage.Client
	for id, uri := range receivers {
		clients = append(clients, storage.Client{
			ID: id, SecretHash: storage.HashSecret(webClientSecret), RedirectURIs: []string{"https://" + id + ".example/cb"},
			BackchannelLogoutURI: uri, BackchannelLogoutSessionRequired: true,
		})
	}
	op := newFaultOP(t, clients...)

	// Warm up with one login, then take the baseline.
	warm := newFaultBrowser()
	if res, _, err := op.login(warm); err != nil || res.app == nil {
		t.Fatalf("warm-up login: %v", err)
	}
	warm.tr.CloseIdleConnections()
	var browsers []*faultBrowser
	closeIdle := func() {
		closeDefaultIdle()
		op.conn.CloseIdleConnections()
		failing.CloseClientConnections()
		for _, b := range browsers {
			b.tr.CloseIdleConnections()
		}
	}
	before := goroutineBaseline(closeIdle)

	// Each of 5 people signs in to every back-channel client in one browser, then logs out.
	const people = 5
	for range people {
		b := newFaultBrowser()
		browsers = append(browsers, b)
		var idToken string
		for id := range receivers {
			idToken = op.signInClient(b, id)
		}
		res, err := b.client.Get(op.issuer + "/end_session?" + url.Values{"id_token_hint": {idToken}}.Encode())
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode >= 400 {
			t.Fatalf("end_session: status %d", res.StatusCode)
		}
	}
	time.Sleep(200 * time.Millisecond) // deliveries are under way: connecting, hanging, retrying
	inFlight := runtime.NumGoroutine() - before

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := op.p.Close(ctx)
	took := time.Since(start)
	op.closed = true
	if err == nil {
		t.Error("Close returned nil although deliveries to a hanging receiver were in flight")
	}
	if took > time.Second {
		t.Errorf("Close took %v with a 300ms deadline", took)
	}
	stopHang()
	after, stacks := settleGoroutines(before+goroutineTolerance, 5*time.Second, closeIdle)
	t.Logf("%d logouts × %d dead receivers: %d goroutines above the baseline while delivering; Close returned in %v (%v); goroutines %d before, %d after",
		people, len(receivers), inFlight, took.Round(time.Millisecond), err, before, after)
	if stacks != "" {
		t.Errorf("goroutine leak after Close: %d before, %d after (tolerance %d):\n%s", before, after, goroutineTolerance, stacks)
	}
}

// signInClient signs the browser's person in to client id (secret webClientSecret, redirect
// https://<id>.example/cb) and returns the ID token; the browser's SSO session spares WeCom after
// the first time.
func (op *faultOP) signInClient(b *faultBrowser, id string) string {
	op.t.Helper()
	redirect := "https://" + id + ".example/cb"
	verifier := randomString() + randomString()
	v := url.Values{
		"response_type": {"code"}, "client_id": {id}, "redirect_uri": {redirect}, "scope": {"openid"},
		"state": {randomString()}, "nonce": {randomString()},
		"code_challenge": {oidc.NewSHACodeChallenge(verifier)}, "code_challenge_method": {"S256"},
	}
	res, err := b.client.Get(op.issuer + "/authorize?" + v.Encode())
	if err != nil {
		op.t.Fatal(err)
	}
	if res.StatusCode == http.StatusOK { // the WeCom page: click zhangsan
		res, err = b.client.Get(clickMember(op.t, res, "zhangsan"))
		if err != nil {
			op.t.Fatal(err)
		}
	}
	res.Body.Close()
	loc, err := url.Parse(res.Header.Get("Location"))
	if err != nil || loc.Query().Get("code") == "" {
		op.t.Fatalf("sign-in to %s: status %d, Location %q", id, res.StatusCode, res.Header.Get("Location"))
	}
	form := url.Values{"grant_type": {"authorization_code"}, "code": {loc.Query().Get("code")},
		"redirect_uri": {redirect}, "code_verifier": {verifier}}
	req, _ := http.NewRequest(http.MethodPost, op.issuer+"/oauth/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(id, webClientSecret)
	tr, err := b.client.Do(req)
	if err != nil {
		op.t.Fatal(err)
	}
	defer tr.Body.Close()
	var tokens struct {
		IDToken string `json:"id_token"`
	}
	if err := json.NewDecoder(tr.Body).Decode(&tokens); err != nil || tr.StatusCode != http.StatusOK || tokens.IDToken == "" {
		op.t.Fatalf("code exchange for %s: status %d, %v", id, tr.StatusCode, err)
	}
	return tokens.IDToken
}
