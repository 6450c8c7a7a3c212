package provider_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"

	gooidc "github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/wecom-oidc/wecom-oidc/upstream/wecom/wecomsim"
)

// scrape returns the provider's /metrics text.
func scrape(t *testing.T, issuer string) string {
	t.Helper()
	res, err := http.Get(issuer + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body := readBody(t, res)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: status %d", res.StatusCode)
	}
	return body
}

// metricValue finds `name{labels} value` in a scrape; labels is a substring of the label set.
func metricValue(scrape, name, labels string) string {
	for _, line := range strings.Split(scrape, "\n") {
		if strings.HasPrefix(line, name+"{") && strings.Contains(line, labels) {
			return line[strings.LastIndexByte(line, ' ')+1:]
		}
	}
	return ""
}

// TestMetricsMove: a login, a token exchange and a refresh show in /metrics, with WeCom's calls,
// the records gauge and request latency by route pattern (never by raw path).
func TestMetricsMove(t *testing.T) {
	op := newConfOP(t, harnessOptions{})
	before := scrape(t, op.h.issuer)
	if v := metricValue(before, "wecom_oidc_logins_total", `result="success"`); v != "" {
		t.Fatalf("a login counted before any login: %s", v)
	}
	f := op.login(newBrowser(t, desktopUA), cWeb, "zhangsan", "scope", "openid offline_access")
	op.refreshOK(op.refresh(cWeb, authBasic, f.tokens.RefreshToken))
	http.Get(op.h.issuer + "/no/such/path/" + randomString()) //nolint:errcheck // only its label matters

	after := scrape(t, op.h.issuer)
	for _, want := range []struct{ name, labels, value string }{
		{"wecom_oidc_logins_total", `result="success",upstream="corp"`, "1"},
		{"wecom_oidc_tokens_issued_total", `grant="authorization_code"`, "1"},
		{"wecom_oidc_tokens_issued_total", `grant="refresh_token"`, "1"},
		{"wecom_oidc_wecom_api_calls_total", `endpoint="auth/getuserinfo",errcode="0"`, "1"},
		{"wecom_oidc_wecom_token_refreshes_total", `result="ok"`, "1"},
		{"wecom_oidc_records", `kind="users"`, "1"},
		{"wecom_oidc_records", `kind="clients"`, "4"},
	} {
		if got := metricValue(after, want.name, want.labels); got != want.value {
			t.Errorf("%s{%s} = %q, want %s", want.name, want.labels, got, want.value)
		}
	}
	if metricValue(after, "wecom_oidc_http_request_duration_seconds_count", `route="/oauth/token"`) == "" {
		t.Error("no latency series for route /oauth/token")
	}
	if strings.Contains(after, "/no/such/path") {
		t.Error("a raw request path became a metric label")
	}
}

// TestReadyz: ready when storage, key and the last WeCom token fetch are fine; not ready when
// WeCom refuses our secret.
func TestReadyz(t *testing.T) {
	op := newConfOP(t, harnessOptions{})
	ready := func() (int, map[string]any) {
		res, err := http.Get(op.h.issuer + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		var doc map[string]any
		if err := json.Unmarshal([]byte(readBody(t, res)), &doc); err != nil {
			t.Fatal(err)
		}
		return res.StatusCode, doc
	}
	if status, doc := ready(); status != http.StatusOK {
		t.Fatalf("fresh provider: %d %v", status, doc)
	}
	op.login(newBrowser(t, desktopUA), cWeb, "zhangsan")
	if status, doc := ready(); status != http.StatusOK {
		t.Fatalf("after a login: %d %v", status, doc)
	}
	op.h.sim.InvalidateTokens(40014)
	op.h.sim.FailNext("gettoken", 40001) // the secret was reset in the WeCom console
	b := newBrowser(t, desktopUA)
	page, _ := b.follow(op.authorizeURL(authParams(cWeb)), isAppURL)
	res, _ := b.follow(clickMember(t, page, "zhangsan"), isAppURL)
	drain(res)
	status, doc := ready()
	checks, _ := doc["checks"].(map[string]any)
	if status != http.StatusServiceUnavailable || !strings.HasPrefix(checks["wecom_token"].(string), "last fetch failed") {
		t.Fatalf("after gettoken failed: %d %v", status, doc)
	}
}

// lockedBuffer collects log output from concurrent handlers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// recordingSim wraps the simulated WeCom and keeps every value WeCom hands out that must stay
// secret: access tokens, login codes, user tickets.
type recordingSim struct {
	next http.Handler
	mu   sync.Mutex
	seen []string
}

var simSecretFields = regexp.MustCompile(`"(access_token|user_ticket)":"([^"]+)"|[?&]code=([^&"]+)`)

func (r *recordingSim) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	rec := httptest.NewRecorder()
	r.next.ServeHTTP(rec, req)
	body := rec.Body.String()
	r.mu.Lock()
	for _, m := range simSecretFields.FindAllStringSubmatch(body+" "+rec.Header().Get("Location"), -1) {
		r.seen = append(r.seen, m[2]+m[3])
	}
	r.mu.Unlock()
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	io.Copy(w, rec.Body) //nolint:errcheck // test plumbing
}

// TestNoSecretsInLogs runs logins (both doors), code exchanges, refreshes, userinfo, a failed
// client authentication, a replayed code, a WeCom outage and a logout with every logger at
// debug — ours and the OP library's — and checks that no secret, code, token, cookie or
// user_ticket appears in any line.
func TestNoSecretsInLogs(t *testing.T) {
	logs := &lockedBuffer{}
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	prev := slog.Default()
	slog.SetDefault(logger) // the OP library logs through the default logger
	t.Cleanup(func() { slog.SetDefault(prev) })

	var rec *recordingSim
	op := newConfOP(t, harnessOptions{logger: logger, wrapSim: func(h http.Handler) http.Handler {
		rec = &recordingSim{next: h}
		return rec
	}})
	secrets := []string{webClientSecret, cLogout.secret, wecomsim.DefaultSeed().Secret}

	desktop, phone := newBrowser(t, desktopUA), newBrowser(t, wecomUA)
	for _, b := range []*browser{desktop, phone} {
		f := op.login(b, cWeb, "zhangsan", "scope", "openid profile email offline_access")
		r := op.refresh(cWeb, authBasic, f.tokens.RefreshToken)
		op.refreshOK(r)
		op.userinfo("get", r.AccessToken)
		secrets = append(secrets, f.tokens.AccessToken, f.tokens.RefreshToken, f.tokens.IDToken,
			r.AccessToken, r.RefreshToken, r.IDToken, f.loc.Query().Get("code"))
		op.tokenError(op.refresh(cWeb, authBasic, f.tokens.RefreshToken), "invalid_grant") // reuse
		u, _ := url.Parse(op.h.issuer)
		for _, c := range b.client.Jar.Cookies(u) {
			secrets = append(secrets, c.Value)
		}
	}
	// A replayed code, a wrong client secret, a WeCom outage, a logout.
	f := op.login(desktop, cWeb, "lisi")
	op.tokenError(op.exchange(cWeb, authBasic, f.loc.Query().Get("code"), ""), "invalid_grant")
	bad := cWeb
	bad.secret = "wrong-secret-0123456789abcdef"
	v := authParams(cWeb)
	op.tokenError(op.exchange(bad, authBasic, op.authResponse(op.authorize(desktop, v, ""), cWeb, v), ""), "invalid_client")
	secrets = append(secrets, bad.secret)
	op.h.sim.SetHTTPStatus("user/get", http.StatusBadGateway)
	page, _ := newBrowser(t, desktopUA).follow(op.authorizeURL(authParams(cWeb)), isAppURL)
	drain(page)
	op.h.sim.SetHTTPStatus("user/get", 0)
	op.endSession(desktop, url.Values{"id_token_hint": {f.tokens.IDToken}})

	rec.mu.Lock()
	secrets = append(secrets, rec.seen...)
	rec.mu.Unlock()
	out := logs.String()
	if len(out) < 1000 || !strings.Contains(out, `"msg":"request"`) {
		t.Fatalf("suspiciously little logging (%d bytes): is the logger wired?", len(out))
	}
	checked := 0
	for _, s := range secrets {
		if len(s) < 8 {
			continue
		}
		checked++
		if strings.Contains(out, s) {
			t.Errorf("a secret (%.6s…, %d chars) appears in the logs", s, len(s))
		}
	}
	if checked < 20 {
		t.Fatalf("only %d secrets collected; the test is not looking", checked)
	}
	t.Logf("%d secrets checked against %d bytes of debug logs", checked, len(out))
}

// TestBehindTLSProxy: the issuer is the https URL of a TLS-terminating reverse proxy that talks
// plain HTTP to the provider; a relying party signs in through it. The browser's cookies are
// Secure (the issuer is https), so the login only works because they travel over TLS.
func TestBehindTLSProxy(t *testing.T) {
	var target *url.URL
	proxy := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		httputil.NewSingleHostReverseProxy(target).ServeHTTP(w, r)
	}))
	t.Cleanup(proxy.Close)
	h := newHarness(t, harnessOptions{issuer: proxy.URL})
	target, _ = url.Parse(h.backend)

	b := newBrowser(t, desktopUA)
	cookies := &setCookieRecorder{next: proxy.Client().Transport}
	b.client.Transport = cookies
	ctx := gooidc.ClientContext(context.Background(), proxy.Client())
	provider, err := gooidc.NewProvider(ctx, proxy.URL)
	if err != nil {
		t.Fatal(err)
	}
	conf := &oauth2.Config{ClientID: cWeb.id, ClientSecret: cWeb.secret, Endpoint: provider.Endpoint(), RedirectURL: cWeb.redirect, Scopes: []string{"openid"}}
	verifier := oauth2.GenerateVerifier()
	got := h.signIn(b, conf.AuthCodeURL("s", oauth2.S256ChallengeOption(verifier)), cWeb.redirect, "zhangsan")
	if !hasCookie(b, proxy.URL, "wecom_oidc_session") {
		t.Fatal("no session cookie for the https issuer")
	}
	tok, err := conf.Exchange(ctx, got.Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := provider.Verifier(&gooidc.Config{ClientID: cWeb.id}).Verify(ctx, tok.Extra("id_token").(string)); err != nil {
		t.Fatalf("ID token through the proxy: %v", err)
	}
	for _, c := range cookies.all() {
		if strings.HasPrefix(c.Name, "wecom_oidc_") && (!c.Secure || !c.HttpOnly || c.SameSite != http.SameSiteLaxMode) {
			t.Errorf("cookie %s: Secure=%v HttpOnly=%v SameSite=%v, want Secure, HttpOnly, Lax", c.Name, c.Secure, c.HttpOnly, c.SameSite)
		}
	}
}

// setCookieRecorder keeps every Set-Cookie the browser receives, attributes included.
type setCookieRecorder struct {
	next    http.RoundTripper
	mu      sync.Mutex
	cookies []*http.Cookie
}

func (s *setCookieRecorder) RoundTrip(r *http.Request) (*http.Response, error) {
	res, err := s.next.RoundTrip(r)
	if err == nil {
		s.mu.Lock()
		s.cookies = append(s.cookies, res.Cookies()...)
		s.mu.Unlock()
	}
	return res, err
}

func (s *setCookieRecorder) all() []*http.Cookie {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*http.Cookie(nil), s.cookies...)
}

// hasCookie reports whether the browser would send the named cookie to raw.
func hasCookie(b *browser, raw, name string) bool {
	u, _ := url.Parse(raw)
	for _, c := range b.client.Jar.Cookies(u) {
		if c.Name == name {
			return true
		}
	}
	return false
}
