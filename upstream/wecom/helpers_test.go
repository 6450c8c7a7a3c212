package wecom_test

import (
	"bytes"
	"context"
	"html"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wecom-oidc/wecom-oidc/upstream"
	"github.com/wecom-oidc/wecom-oidc/upstream/wecom"
	"github.com/wecom-oidc/wecom-oidc/upstream/wecom/wecomsim"
)

const (
	redirectURL = "https://sso.example.com/login/wecom/callback"
	uaClient    = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 wxwork/4.1.22 MicroMessenger/7.0.1 Language/zh"
	uaBrowser   = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"
)

// fakeClock is a settable clock shared by a test, the simulator and the connector.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// memStore is an in-memory TokenStore that counts its use.
type memStore struct {
	mu                    sync.Mutex
	tokens                map[string]memToken
	loads, saves, forgets int
}

type memToken struct {
	token     string
	expiresAt time.Time
}

func newMemStore() *memStore { return &memStore{tokens: map[string]memToken{}} }

func (s *memStore) LoadToken(_ context.Context, key string) (string, time.Time, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.loads++
	t, ok := s.tokens[key]
	return t.token, t.expiresAt, ok, nil
}

func (s *memStore) SaveToken(_ context.Context, key, token string, expiresAt time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.saves++
	s.tokens[key] = memToken{token, expiresAt}
	return nil
}

func (s *memStore) ForgetToken(_ context.Context, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.forgets++
	delete(s.tokens, key)
	return nil
}

func (s *memStore) token(key string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tokens[key].token
}

// syncBuffer collects log output from concurrent goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// sleepRecorder stands in for the retry backoff: it records the waits and returns at once.
type sleepRecorder struct {
	mu sync.Mutex
	ds []time.Duration
}

func (s *sleepRecorder) Sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ds = append(s.ds, d)
	return ctx.Err()
}

func (s *sleepRecorder) Waits() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.ds...)
}

// observed is one Observer.Call.
type observed struct {
	Endpoint string
	Errcode  int
}

// recordingObserver is a wecom.Observer that keeps what it is told.
type recordingObserver struct {
	mu       sync.Mutex
	calls    []observed
	refresh  []error
	duration time.Duration
}

func (o *recordingObserver) Call(endpoint string, errcode int, d time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.calls = append(o.calls, observed{endpoint, errcode})
	o.duration += d
}

func (o *recordingObserver) TokenRefresh(err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.refresh = append(o.refresh, err)
}

// Take returns what was observed since the last Take.
func (o *recordingObserver) Take() ([]observed, []error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	calls, refresh := o.calls, o.refresh
	o.calls, o.refresh = nil, nil
	return calls, refresh
}

// env is a simulated WeCom over real HTTP plus what connectors need to use it.
type env struct {
	seed   wecomsim.Config
	sim    *wecomsim.Sim
	srv    *httptest.Server
	store  *memStore
	clock  *fakeClock
	logs   *syncBuffer
	sleeps *sleepRecorder
}

// MustEnv starts the simulator with the default seed changed by mutate. wrap, if set, wraps the
// simulator's handler (to break or rewrite endpoints).
func MustEnv(t testing.TB, mutate func(*wecomsim.Config), wrap func(http.Handler) http.Handler) *env {
	t.Helper()
	clock := &fakeClock{t: time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)}
	seed := wecomsim.DefaultSeed()
	seed.Now = clock.Now
	if mutate != nil {
		mutate(&seed)
	}
	sim := wecomsim.New(seed)
	var h http.Handler = sim
	if wrap != nil {
		h = wrap(sim)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &env{seed: seed, sim: sim, srv: srv, store: newMemStore(), clock: clock, logs: &syncBuffer{}, sleeps: &sleepRecorder{}}
}

// Config is a connector configuration pointing every base URL at the simulator.
func (e *env) Config(scope string) wecom.Config {
	return wecom.Config{
		CorpID: e.seed.CorpID, AgentID: e.seed.AgentID, Secret: e.seed.Secret, Scope: scope,
		APIBaseURL: e.srv.URL, OAuthBaseURL: e.srv.URL, LoginBaseURL: e.srv.URL,
		RedirectURL: redirectURL,
		HTTPClient:  e.srv.Client(),
		Tokens:      e.store,
		Logger:      slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Now:         e.clock.Now,
		Sleep:       e.sleeps.Sleep,
	}
}

// MustConnector builds a connector for the simulator; mutate may change its config.
func (e *env) MustConnector(t testing.TB, mutate func(*wecom.Config)) *wecom.Connector {
	t.Helper()
	cfg := e.Config(wecom.ScopePrivateInfo)
	if mutate != nil {
		mutate(&cfg)
	}
	c, err := wecom.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (e *env) tokenKey() string { return wecom.TokenKey(e.seed.CorpID, e.seed.AgentID) }

// countLines counts the log lines at level containing substr.
func (e *env) countLines(level, substr string) int {
	n := 0
	for line := range strings.Lines(e.logs.String()) {
		if strings.Contains(line, "level="+level) && strings.Contains(line, substr) {
			n++
		}
	}
	return n
}

// callback is WeCom's redirect back to us carrying query, from a browser with userAgent.
func callback(query url.Values, userAgent string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, redirectURL+"?"+query.Encode(), nil)
	r.Header.Set("User-Agent", userAgent)
	return r
}

func codeCallback(code, userAgent string) *http.Request {
	return callback(url.Values{"code": {code}, "state": {"S1"}}, userAgent)
}

// MustLogin completes a login with code and fails the test on error.
func MustLogin(t testing.TB, c *wecom.Connector, code, userAgent string) upstream.Identity {
	t.Helper()
	id, err := c.HandleCallback(context.Background(), codeCallback(code, userAgent))
	if err != nil {
		t.Fatalf("HandleCallback: %v", err)
	}
	return id
}

var memberLinkRE = regexp.MustCompile(`data-userid="([^"]*)" href="([^"]*)"`)

// MustClickThrough opens loginURL like a browser, clicks the member's link on the simulated page
// and returns the request WeCom's redirect makes to our callback.
func (e *env) MustClickThrough(t testing.TB, loginURL, userID, userAgent string) *http.Request {
	t.Helper()
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(u string) *http.Response {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, u, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("User-Agent", userAgent)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	resp := get(loginURL)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("login page: HTTP %d:\n%s", resp.StatusCode, body)
	}
	var link string
	for _, m := range memberLinkRE.FindAllStringSubmatch(string(body), -1) {
		if html.UnescapeString(m[1]) == userID {
			link = html.UnescapeString(m[2])
		}
	}
	if link == "" {
		t.Fatalf("login page has no link for %s", userID)
	}
	ref, err := url.Parse(link)
	if err != nil {
		t.Fatal(err)
	}
	resp = get(resp.Request.URL.ResolveReference(ref).String())
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("member link: HTTP %d, want 302", resp.StatusCode)
	}
	r := httptest.NewRequest(http.MethodGet, resp.Header.Get("Location"), nil)
	r.Header.Set("User-Agent", userAgent)
	return r
}
