package provider_test

import (
	"net/http"
	"net/url"
	"testing"
)

// FuzzAuthorize sends a fuzzed query string to /authorize — from a browser without cookies, or
// from one with an SSO session — and follows every redirect that stays on the provider (/login,
// /authorize/callback). Properties, at every hop:
//   - no 5xx (and no panic: the recoverer would answer 500);
//   - a redirect (3xx Location) or a form_post page goes only to the provider itself, to the
//     simulated WeCom, or to a redirect URI registered for a client the request names in
//     client_id — scheme, host and path byte for byte (RFC 8252 loopback ports for the native
//     spa client) — never an open redirect;
//   - a Location never holds characters a browser reads differently from Go (a backslash).
func FuzzAuthorize(f *testing.F) {
	for _, s := range authorizeSeeds {
		f.Add(s.query, s.session)
	}
	fz := newAuthorizeFuzz(f)
	f.Fuzz(fz.run)
}

// authorizeSeeds are valid requests, near-valid ones and hostile ones; the same inputs are in
// testdata/fuzz/FuzzAuthorize.
var authorizeSeeds = []struct {
	query   string
	session bool
}{
	// Valid: to WeCom without a session, straight back with a code with one.
	{"response_type=code&client_id=web&redirect_uri=https%3A%2F%2Frp.example.com%2Fcallback&scope=openid+profile+email&state=st-1&nonce=n-1", false},
	{"response_type=code&client_id=web&redirect_uri=https%3A%2F%2Frp.example.com%2Fcallback&scope=openid+groups+offline_access&state=st-2&nonce=n-2&prompt=consent", true},
	{"response_type=code&client_id=spa&redirect_uri=http%3A%2F%2F127.0.0.1%3A5173%2Fcallback&scope=openid&state=s&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256", true},
	{"response_type=code&client_id=web&redirect_uri=https%3A%2F%2Frp.example.com%2Fcallback&scope=openid&state=s&response_mode=form_post", true},
	// Near-valid: refusals that go back to the application, or to WeCom again.
	{"response_type=code&client_id=web&redirect_uri=https%3A%2F%2Frp.example.com%2Fcallback&scope=openid&state=s&prompt=none", false},
	{"response_type=code&client_id=web&redirect_uri=https%3A%2F%2Frp.example.com%2Fcallback&scope=openid&prompt=login&max_age=0&ui_locales=en", true},
	{"response_type=token&client_id=web&redirect_uri=https%3A%2F%2Frp.example.com%2Fcallback&scope=openid&state=s", false},
	{"response_type=code&client_id=spa&redirect_uri=http%3A%2F%2Flocalhost%3A9999%2Fcallback&scope=openid&state=s", true},
	{"response_type=code&client_id=web&redirect_uri=https%3A%2F%2Frp.example.com%2Fcallback&scope=openid&id_token_hint=eyJhbGciOiJub25lIn0.e30.&prompt=none", true},
	// Hostile: redirect URIs of another client or of nobody, encodings, smuggling.
	{"response_type=code&client_id=web&redirect_uri=https%3A%2F%2Fother.example.com%2Foidc%2Fcallback&scope=openid&state=s", true},
	{"response_type=code&client_id=web&redirect_uri=%2F%2Fevil.example%2Fcallback&scope=openid&state=s", true},
	{"response_type=code&client_id=web&redirect_uri=https%3A%2F%2Frp.example.com%40evil.example%2Fcallback&scope=openid", true},
	{"response_type=code&client_id=web&redirect_uri=https%3A%2F%2Frp.example.com%2Fcallback%2F..%2F..%2Fevil&scope=openid", true},
	// Spellings that percent-decode to a registered URI, and a loopback URI with another scheme
	// (the library accepted these before 3df94a4), a parameter name in other case.
	{"response_type=code&client_id=web&redirect_uri=https%3A%2F%2Frp.example.com%2Fcall%2562ack&scope=openid&state=s", true},
	{"client_id=web&redirect_uri=https%3A%252F%252Frp.example.com%2Fcallback", false},
	{"response_type=code&client_id=web&redirect_uri=https%253A%2F%2Frp.example.com%2Fcallback&scope=openid", true},
	{"response_type=code&client_id=spa&redirect_uri=https%3A%2F%2Flocalhost%3A5173%2Fcallback&scope=openid&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256", true},
	{"ClienT_id=web&redireCt_uri=https%3A%2F%2Frp.example.com%2Fcallback", true},
	{"response_type=code&client_id=web&client_id=other&redirect_uri=https%3A%2F%2Frp.example.com%2Fcallback&redirect_uri=https%3A%2F%2Fevil.example%2F&scope=openid", true},
	{"response_type=code&client_id=web&redirect_uri=https%3A%2F%2Frp.example.com%2Fcallback&scope=openid&request=eyJhbGciOiJub25lIn0.eyJyZWRpcmVjdF91cmkiOiJodHRwczovL2V2aWwuZXhhbXBsZS8ifQ.&state=s", false},
	{"response_type=code&client_id=web&redirect_uri=https%3A%2F%2Frp.example.com%2Fcallback&scope=openid&request_uri=https%3A%2F%2Fevil.example%2Freq&state=s", false},
	{"response_type=code&client_id=web;redirect_uri=https://evil.example/&redirect_uri=https%3A%2F%2Frp.example.com%2Fcallback&scope=openid&max_age=-1&idp_hint=%zz", true},
	{"client_id=nobody&redirect_uri=https%3A%2F%2Fevil.example%2F&response_type=code&scope=openid&state=%0d%0aSet-Cookie:x=1", false},
	// Found: a parameter name in other case escapes the exact redirect_uri check (the library reads
	// names case-insensitively), so unregistered spellings get errors and codes again.
	{"Client_id=spa&redireCt_uri=http%3A%2F%2Flocalhost%3A%2Fcallback", true},
	{"response_type=code&client_id=web&Redirect_uri=https%3A%2F%2Frp.example.com%2Fcall%2562ack&scope=openid", true},
}

type authorizeFuzz struct {
	h       *harness
	client  *http.Client
	session []*http.Cookie // a browser that signed zhangsan in: its binding and SSO cookies
	issuer  string         // origin of the provider
	wecom   string         // origin of the simulated WeCom
}

func newAuthorizeFuzz(f *testing.F) *authorizeFuzz {
	quietLibraryLogs(f)
	h := newHarness(f, harnessOptions{})
	fz := &authorizeFuzz{h: h, client: fuzzClient(), issuer: h.issuer}

	v := url.Values{
		"response_type": {"code"}, "client_id": {webClientID}, "redirect_uri": {webRedirect},
		"scope": {"openid"}, "state": {"setup"}, "nonce": {"setup"},
	}
	authURL := h.issuer + "/authorize?" + v.Encode()

	// Where the provider sends a browser without a session: the simulated WeCom.
	_, loc := newBrowser(f, desktopUA).follow(authURL, func(u *url.URL) bool { return origin(u) != h.issuer })
	if loc == nil {
		f.Fatal("setup: the provider did not send a new browser to WeCom")
	}
	fz.wecom = origin(loc)

	// A browser with an SSO session.
	b := newBrowser(f, desktopUA)
	if q := h.signIn(b, authURL, webRedirect, "zhangsan"); q.Get("code") == "" {
		f.Fatalf("setup: sign-in gave no code: %v", q)
	}
	issuerURL, err := url.Parse(h.issuer)
	if err != nil {
		f.Fatal(err)
	}
	for _, c := range b.client.Jar.Cookies(issuerURL) {
		if c.Name == fuzzBrowserCookie || c.Name == fuzzSessionCookie {
			fz.session = append(fz.session, c)
		}
	}
	if len(fz.session) != 2 {
		f.Fatalf("setup: the signed-in browser holds %d of the provider's 2 cookies", len(fz.session))
	}
	return fz
}

// maxHops bounds the redirects followed on the provider (/authorize → /login →
// /authorize/callback → application is three).
const maxHops = 5

func (fz *authorizeFuzz) run(t *testing.T, query string, withSession bool) {
	rawQuery := escapeRequestTarget(query)
	clientIDs := paramValues(queryValues(rawQuery), "client_id")
	var cookies []*http.Cookie
	if withSession {
		cookies = fz.session
	}

	res, body := fuzzGet(t, fz.client, fz.issuer+"/authorize", rawQuery, cookies)
	for hop := 0; ; hop++ {
		t.Logf("GET %s: status %d, Location %q", res.Request.URL, res.StatusCode, res.Header.Get("Location"))
		if res.StatusCode >= 500 {
			t.Fatalf("GET %s: status %d:\n%s", res.Request.URL, res.StatusCode, body)
		}
		if to := formPostTarget(t, res, body); to != nil && !isRegisteredRedirect(to, clientIDs) {
			t.Fatalf("GET %s: form_post to %s, not a redirect URI of client_id %q", res.Request.URL, to, clientIDs)
		}
		loc := redirectTarget(t, res)
		switch {
		case loc == nil:
			return // a page
		case origin(loc) == fz.issuer:
			if hop == maxHops {
				t.Fatalf("more than %d redirects on the provider, the last to %s", maxHops, loc)
			}
			next := *loc
			next.RawQuery, next.Fragment = "", ""
			res, body = fuzzGet(t, fz.client, next.String(), loc.RawQuery, cookies)
		case origin(loc) == fz.wecom:
			return
		case isRegisteredRedirect(loc, clientIDs):
			return
		default:
			t.Fatalf("GET %s: open redirect (status %d) to %s: not the provider, WeCom, or a redirect URI of client_id %q",
				res.Request.URL, res.StatusCode, loc, clientIDs)
		}
	}
}
