package provider_test

import (
	"html"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"
)

// Helpers of the fuzz targets (FuzzAuthorize, FuzzWeComCallback, FuzzTokenEndpoint). Each target
// builds one harness per fuzz process, outside f.Fuzz, and sends every input through real HTTP.

// Cookie names of the provider (unexported in package provider).
const (
	fuzzBrowserCookie = "wecom_oidc_browser"
	fuzzSessionCookie = "wecom_oidc_session"
)

// quietLibraryLogs silences the OP library, which logs every refused request through the default
// logger, while the fuzz target runs: a fuzz worker would spend its time writing them.
func quietLibraryLogs(f *testing.F) {
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.DiscardHandler))
	f.Cleanup(func() { slog.SetDefault(prev) })
}

// fuzzClient is an HTTP client that follows no redirects and keeps no cookies: every cookie a
// fuzz request carries is set explicitly.
func fuzzClient() *http.Client {
	return &http.Client{
		Timeout:       15 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// escapeRequestTarget makes raw usable as the query of a request line, as a browser would send
// it: bytes that cannot appear there (controls, space, '#', non-ASCII) are percent-encoded; every
// other byte — '%' with or without hex digits, ';', '&', '=' — goes as is, so the provider's
// query parsing sees the fuzzer's bytes.
func escapeRequestTarget(raw string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c <= ' ' || c >= 0x7f || c == '#' {
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// headerValue drops the bytes net/http refuses in a header value (controls other than tab).
func headerValue(raw string) string {
	return strings.Map(func(r rune) rune {
		if (r < ' ' && r != '\t') || r == 0x7f {
			return -1
		}
		return r
	}, raw)
}

// fuzzGet sends GET base?rawQuery (rawQuery already escaped) with the cookies and returns the
// response with its body read.
func fuzzGet(t *testing.T, c *http.Client, base, rawQuery string, cookies []*http.Cookie) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, base, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.URL.RawQuery = rawQuery
	req.Header.Set("User-Agent", desktopUA)
	for _, ck := range cookies {
		req.AddCookie(ck)
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", req.URL, err)
	}
	body, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		t.Fatalf("GET %s: reading the body: %v", req.URL, err)
	}
	return res, string(body)
}

// origin is scheme://host of an absolute URL.
func origin(u *url.URL) string { return u.Scheme + "://" + u.Host }

// redirectTarget returns where a redirect response sends the browser, or nil when res is not a
// redirect. It fails the test when the Location could not be followed safely: missing, with
// characters a browser reads differently from Go (a backslash is a slash to a browser: "/\evil"
// is "//evil"), or not parseable.
func redirectTarget(t *testing.T, res *http.Response) *url.URL {
	t.Helper()
	if res.StatusCode < 300 || res.StatusCode >= 400 || res.StatusCode == http.StatusNotModified {
		return nil
	}
	raw := res.Header.Get("Location")
	if raw == "" {
		t.Fatalf("%s %s: status %d without a Location", res.Request.Method, res.Request.URL, res.StatusCode)
	}
	if i := strings.IndexFunc(raw, func(r rune) bool { return r <= ' ' || r == 0x7f || r == '\\' }); i >= 0 {
		t.Fatalf("%s %s: Location %q has %q, which browsers do not read as Go does", res.Request.Method, res.Request.URL, raw, raw[i])
	}
	loc, err := res.Request.URL.Parse(raw)
	if err != nil {
		t.Fatalf("%s %s: unparseable Location %q: %v", res.Request.Method, res.Request.URL, raw, err)
	}
	return loc
}

// formPostAction matches the library's response_mode=form_post page (form_post.html.tmpl).
var formPostAction = regexp.MustCompile(`<form method="post" action="([^"]*)"`)

// formPostTarget returns where a form_post page sends the browser, or nil.
func formPostTarget(t *testing.T, res *http.Response, body string) *url.URL {
	t.Helper()
	m := formPostAction.FindStringSubmatch(body)
	if m == nil {
		return nil
	}
	raw := html.UnescapeString(m[1])
	u, err := res.Request.URL.Parse(raw)
	if err != nil {
		t.Fatalf("%s %s: unparseable form_post action %q: %v", res.Request.Method, res.Request.URL, raw, err)
	}
	return u
}

// registered is the redirect URIs of the harness's clients.
var registered = map[string][]string{
	webClientID:   {webRedirect},
	spaClientID:   {spaRedirect},
	otherClientID: {otherRedirect},
}

// isRegisteredRedirect reports whether u goes to a redirect URI registered for one of clientIDs:
// scheme, host and path equal to the registered URI's, byte for byte (the path as sent, not
// decoded). The spa client is a native app with a loopback redirect URI, for which RFC 8252 §7.3
// lets any port stand in; scheme, host name and path must still match.
func isRegisteredRedirect(u *url.URL, clientIDs []string) bool {
	if u.User != nil || u.Opaque != "" {
		return false
	}
	for _, id := range clientIDs {
		for _, raw := range registered[id] {
			r, err := url.Parse(raw)
			if err != nil {
				panic(err)
			}
			if u.Scheme != r.Scheme || u.EscapedPath() != r.EscapedPath() {
				continue
			}
			if u.Host == r.Host || id == spaClientID && u.Hostname() == r.Hostname() {
				return true
			}
		}
	}
	return false
}

// queryValues parses a raw query as the provider does (r.URL.Query(): pairs that do not parse are
// dropped, the others kept).
func queryValues(rawQuery string) url.Values {
	v, _ := url.ParseQuery(rawQuery)
	return v
}

// paramValues is every value of the parameter name in v, the name matched without regard to case:
// the OP library's form decoder reads "Client_ID" as client_id.
func paramValues(v url.Values, name string) []string {
	var out []string
	for k, vs := range v {
		if strings.EqualFold(k, name) {
			out = append(out, vs...)
		}
	}
	return out
}
