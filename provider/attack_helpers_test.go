package provider_test

// Helpers for the attack suite (attack_test.go): a recorder of every response the provider sends
// a browser, HTTP clients that connect from chosen loopback addresses, and the checks that pages
// carry their security headers and never echo attacker input as markup.

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// with returns a copy of op whose helpers report to t: a subtest must not fail its parent's T.
func (op *confOP) with(t *testing.T) *confOP {
	c := *op
	c.t = t
	return &c
}

// seen is one response the provider sent, body included.
type seen struct {
	method, url string
	status      int
	header      http.Header
	body        string
}

func (s seen) String() string { return s.method + " " + s.url }

// responseLog is a RoundTripper that keeps every response from one host (the provider's), so a
// test can check all of them afterwards: the pages a person saw, the redirects, the JSON.
type responseLog struct {
	next http.RoundTripper
	host string

	mu  sync.Mutex
	all []seen
}

func newResponseLog(issuer string, next http.RoundTripper) *responseLog {
	u, err := url.Parse(issuer)
	if err != nil {
		panic(err)
	}
	if next == nil {
		next = http.DefaultTransport
	}
	return &responseLog{next: next, host: u.Host}
}

func (l *responseLog) RoundTrip(r *http.Request) (*http.Response, error) {
	res, err := l.next.RoundTrip(r)
	if err != nil || r.URL.Host != l.host {
		return res, err
	}
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		return nil, err
	}
	res.Body = io.NopCloser(bytes.NewReader(b))
	l.mu.Lock()
	l.all = append(l.all, seen{method: r.Method, url: r.URL.String(), status: res.StatusCode, header: res.Header.Clone(), body: string(b)})
	l.mu.Unlock()
	return res, nil
}

func (l *responseLog) responses() []seen {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]seen(nil), l.all...)
}

// watchedBrowser is a browser whose every response from the provider is logged.
func watchedBrowser(t *testing.T, log *responseLog) *browser {
	b := newBrowser(t, desktopUA)
	b.client.Transport = log
	return b
}

// isHTML reports whether a browser would render the response as HTML: declared so, or
// undeclared and open to sniffing.
func isHTML(h http.Header) bool {
	ct := strings.ToLower(h.Get("Content-Type"))
	if ct == "" {
		return !strings.EqualFold(h.Get("X-Content-Type-Options"), "nosniff")
	}
	return strings.Contains(ct, "html")
}

// isPage: a response a person sees as a page (not a redirect, not JSON).
func isPage(s seen) bool {
	if s.status >= 300 && s.status < 400 {
		return false
	}
	ct := strings.ToLower(s.header.Get("Content-Type"))
	return isHTML(s.header) || strings.HasPrefix(ct, "text/")
}

// cspDirectives parses a Content-Security-Policy value into directive → sources.
func cspDirectives(v string) map[string][]string {
	out := map[string][]string{}
	for _, d := range strings.Split(v, ";") {
		f := strings.Fields(strings.TrimSpace(d))
		if len(f) == 0 {
			continue
		}
		out[strings.ToLower(f[0])] = f[1:]
	}
	return out
}

// pageHeaderProblems lists what a page lacks: a CSP with frame-ancestors 'none' that allows no
// script, X-Content-Type-Options nosniff, and a Referrer-Policy.
func pageHeaderProblems(h http.Header) []string {
	var problems []string
	csp := h.Get("Content-Security-Policy")
	dirs := cspDirectives(csp)
	switch {
	case csp == "":
		problems = append(problems, "no Content-Security-Policy")
	default:
		if fa := dirs["frame-ancestors"]; len(fa) != 1 || fa[0] != "'none'" {
			problems = append(problems, "CSP without frame-ancestors 'none': "+csp)
		}
		script, ok := dirs["script-src"]
		if !ok {
			script, ok = dirs["default-src"]
		}
		if !ok || !onlyHashedScripts(script) {
			problems = append(problems, "CSP allows scripts: "+csp)
		}
		for _, d := range []string{"script-src-elem", "script-src-attr"} {
			if v, ok := dirs[d]; ok && !onlyHashedScripts(v) {
				problems = append(problems, "CSP allows scripts through "+d+": "+csp)
			}
		}
	}
	if !strings.EqualFold(h.Get("X-Content-Type-Options"), "nosniff") {
		problems = append(problems, "no X-Content-Type-Options: nosniff")
	}
	if h.Get("Referrer-Policy") == "" {
		problems = append(problems, "no Referrer-Policy")
	}
	return problems
}

// onlyHashedScripts: the script sources run nothing an attacker could inject — 'none', or only
// the hashes of the page's own scripts ('unsafe-hashes' for a hashed event handler, as a form_post
// page's onload needs). 'unsafe-inline', 'self', hosts, schemes, nonces-with-inline are not.
func onlyHashedScripts(sources []string) bool {
	if len(sources) == 1 && sources[0] == "'none'" {
		return true
	}
	hashes := 0
	for _, s := range sources {
		switch {
		case strings.HasPrefix(s, "'sha256-"), strings.HasPrefix(s, "'sha384-"), strings.HasPrefix(s, "'sha512-"):
			hashes++
		case s == "'unsafe-hashes'":
		default:
			return false
		}
	}
	return hashes > 0
}

// checkPageHeaders fails t for every page in pages that lacks a security header.
func checkPageHeaders(t *testing.T, what string, s seen) {
	t.Helper()
	for _, p := range pageHeaderProblems(s.header) {
		t.Errorf("%s (%s, status %d, %s): %s", what, s, s.status, s.header.Get("Content-Type"), p)
	}
}

// XSS payloads, and how each would show if it reached markup unescaped.
var xssPayloads = []string{`<script>alert(1)</script>`, `"><img src=x onerror=alert(1)>`, `javascript:alert(1)`}

var (
	rawScript   = regexp.MustCompile(`(?i)<script>alert\(1\)</script>`)
	rawImg      = regexp.MustCompile(`(?i)<img src=x onerror=alert\(1\)>`)
	rawJSURL    = regexp.MustCompile(`(?i)(href|src|action|formaction)\s*=\s*["']?\s*javascript:alert\(1\)`)
	rawPatterns = []*regexp.Regexp{rawScript, rawImg, rawJSURL}
)

// unescapedPayload returns the payload pattern a response body shows as live markup, or "".
func unescapedPayload(body string) string {
	for _, re := range rawPatterns {
		if m := re.FindString(body); m != "" {
			return m
		}
	}
	return ""
}

// errmsgInjector stands between the provider and the simulated WeCom and replaces the errmsg of
// every failed API answer with payload, unescaped, as a hostile or broken upstream could send it.
type errmsgInjector struct {
	next    http.Handler
	payload string
}

func (e *errmsgInjector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec := httptest.NewRecorder()
	e.next.ServeHTTP(rec, r)
	body := rec.Body.Bytes()
	if strings.HasPrefix(rec.Header().Get("Content-Type"), "application/json") {
		var m map[string]any
		if json.Unmarshal(body, &m) == nil {
			if code, _ := m["errcode"].(float64); code != 0 {
				m["errmsg"] = e.payload
				var buf bytes.Buffer
				enc := json.NewEncoder(&buf)
				enc.SetEscapeHTML(false)
				_ = enc.Encode(m)
				body = buf.Bytes()
			}
		}
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(body)
}

// clientFrom is an HTTP client whose connections come from the loopback address ip (127.0.0.0/8
// is all loopback on Linux), so tests can play several remote addresses.
func clientFrom(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				return d.DialContext(ctx, network, addr)
			},
			DisableKeepAlives: true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// postTo POSTs form to endpoint with c, Basic credentials when id is set, and returns the status,
// headers and JSON body (nil when not JSON).
func postTo(t *testing.T, c *http.Client, endpoint string, form url.Values, id, secret string) (int, http.Header, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if id != "" {
		req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", endpoint, err)
	}
	body := readBody(t, res)
	var m map[string]any
	_ = json.Unmarshal([]byte(body), &m)
	return res.StatusCode, res.Header, m
}

// startAt runs the authorization request v in b up to the login page and returns the auth
// request's id and the page the browser was shown (the WeCom login page, or the chooser).
func startAt(t *testing.T, op *confOP, b *browser, v url.Values) (string, *http.Response) {
	t.Helper()
	res := b.get(op.authorizeURL(v))
	drain(res)
	if res.StatusCode != http.StatusFound {
		t.Fatalf("/authorize: status %d, want a redirect to the login page", res.StatusCode)
	}
	loc, err := res.Request.URL.Parse(res.Header.Get("Location"))
	if err != nil || !strings.HasSuffix(loc.Path, "/login") {
		t.Fatalf("/authorize sent the browser to %q, want /login", res.Header.Get("Location"))
	}
	id := loc.Query().Get("authRequestID")
	page, to := b.follow(loc.String(), isAppURL)
	if to != nil || page.StatusCode != http.StatusOK {
		t.Fatalf("login: status %d, sent to %v; want a login page", page.StatusCode, to)
	}
	return id, page
}

// toOurCallback follows a WeCom login link until the browser is sent to the provider's WeCom
// callback, and returns that URL without fetching it.
func toOurCallback(t *testing.T, b *browser, link string) *url.URL {
	t.Helper()
	res, loc := b.follow(link, func(u *url.URL) bool { return strings.HasSuffix(u.Path, "/login/wecom/callback") })
	if loc == nil {
		t.Fatalf("did not reach the provider's WeCom callback (status %d)", res.StatusCode)
	}
	return loc
}

// toAuthorizeCallback follows raw until the browser reaches the application with its code, and
// returns the URL of the OP library's /authorize/callback for auth request id — the endpoint that
// hands out a code for a finished login — unfetched.
func toAuthorizeCallback(t *testing.T, b *browser, raw, id string) *url.URL {
	t.Helper()
	res, loc := b.follow(raw, isAppURL)
	if loc == nil {
		t.Fatalf("did not reach the application (status %d)", res.StatusCode)
	}
	cb, err := res.Request.URL.Parse("/authorize/callback?id=" + url.QueryEscape(id))
	if err != nil {
		t.Fatal(err)
	}
	return cb
}

// heapAfterGC is the live heap, after a collection.
func heapAfterGC() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}
