package provider_test

// The attack suite (issue 7, item 2): one test per class of attack on an OpenID Provider, each
// subtest named after the attack. Every test asserts that the defence holds and is written so it
// fails against a provider without that defence; the comment above each test names the defence
// and where it lives. Background: RFC 9700 and the CVEs of peer providers listed in the
// landscape notes (Hydra's lower-cased redirect URIs, Keycloak's localhost prefix match and
// userinfo confusion, Dex's unbound approval step, ZITADEL's cross-client code redemption).

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wecom-oidc/wecom-oidc/provider"
	"github.com/wecom-oidc/wecom-oidc/upstream/wecom/wecomsim"
)

// ---------------------------------------------------------------------------------------------
// 1. Redirect-URI tricks at /authorize
// ---------------------------------------------------------------------------------------------

// refusedRedirect: the authorization request v is refused on a page of its own — 400, no
// Location (so nothing, not even an error, goes to the tricked URI), and WeCom never reached.
func refusedRedirect(t *testing.T, op *confOP, v url.Values) {
	t.Helper()
	pages := op.wecomPages()
	res := newBrowser(t, desktopUA).get(op.authorizeURL(v))
	body := readBody(t, res)
	if res.StatusCode != http.StatusBadRequest || res.Header.Get("Location") != "" {
		t.Errorf("redirect_uri %q: status %d, Location %q; want 400 without Location\n%.300s",
			v.Get("redirect_uri"), res.StatusCode, res.Header.Get("Location"), body)
	}
	if op.wecomPages() != pages {
		t.Errorf("redirect_uri %q: the WeCom login page was reached", v.Get("redirect_uri"))
	}
}

// acceptedRedirect: v is accepted: /authorize sends the browser on to the login page.
func acceptedRedirect(t *testing.T, op *confOP, v url.Values) {
	t.Helper()
	res := newBrowser(t, desktopUA).get(op.authorizeURL(v))
	body := readBody(t, res)
	loc, _ := url.Parse(res.Header.Get("Location"))
	if res.StatusCode != http.StatusFound || loc == nil || !strings.HasSuffix(loc.Path, "/login") {
		t.Errorf("redirect_uri %q: status %d, Location %q; want a redirect to /login\n%.300s",
			v.Get("redirect_uri"), res.StatusCode, res.Header.Get("Location"), body)
	}
}

// webRedirectTricks are variations of https://rp.example.com/callback, none of which may be
// accepted for the web client: RFC 9700 §2.1 requires exact string matching.
var webRedirectTricks = []struct{ name, uri string }{
	{"scheme uppercase", "HTTPS://rp.example.com/callback"},
	{"scheme mixed case", "Https://rp.example.com/callback"},
	{"host uppercase", "https://RP.EXAMPLE.COM/callback"},
	{"host one letter uppercase", "https://rp.Example.com/callback"},
	{"path uppercase", "https://rp.example.com/CALLBACK"},
	{"path one letter uppercase", "https://rp.example.com/Callback"},
	{"trailing slash", webRedirect + "/"},
	{"host trailing dot", "https://rp.example.com./callback"},
	{"extra path segment", webRedirect + "/evil"},
	{"registered URI as prefix", webRedirect + "x"},
	{"dot-dot after the path", webRedirect + "/../callback"},
	{"dot-dot before the path", "https://rp.example.com/evil/../callback"},
	{"encoded dot-dot", "https://rp.example.com/evil/%2e%2e/callback"},
	{"encoded dot-dot uppercase", "https://rp.example.com/evil/%2E%2E/callback"},
	{"dot-dot-semicolon", "https://rp.example.com/evil/..;/callback"},
	{"dot segment", "https://rp.example.com/./callback"},
	{"double slash", "https://rp.example.com//callback"},
	{"extra query", webRedirect + "?x=1"},
	{"empty query", webRedirect + "?"},
	{"query carrying a code", webRedirect + "?code=attacker"},
	{"query carrying a redirect", webRedirect + "?next=https://evil.example/"},
	{"path parameter", webRedirect + ";x=1"},
	{"userinfo", "https://user@rp.example.com/callback"},
	{"userinfo with password", "https://user:pass@rp.example.com/callback"},
	{"registered host as userinfo", "https://rp.example.com@evil.example/callback"},
	{"registered host and port as userinfo", "https://rp.example.com:443@evil.example/callback"},
	{"attacker host as userinfo", "https://evil.example@rp.example.com/callback"},
	{"two at signs", "https://evil.example@rp.example.com@evil.example/callback"},
	{"encoded at sign", "https://rp.example.com%40evil.example/callback"},
	{"empty fragment", webRedirect + "#"},
	{"fragment", webRedirect + "#x"},
	{"registered URI in the fragment", "https://evil.example/#" + webRedirect},
	{"registered URI in the query", "https://evil.example/?u=" + webRedirect},
	{"registered host as subdomain", "https://rp.example.com.evil.example/callback"},
	{"subdomain of the registered host", "https://evil.rp.example.com/callback"},
	{"Cyrillic е in the host", "https://rp.\u0435xample.com/callback"},
	{"Cyrillic р in the host", "https://r\u0440.example.com/callback"},
	{"Cyrillic а in the host", "https://rp.ex\u0430mple.com/callback"},
	{"Cyrillic с in the path", "https://rp.example.com/\u0441allback"},
	{"fullwidth full stop in the host", "https://rp\uff0eexample.com/callback"},
	{"fullwidth solidus", "https://rp.example.com\uff0fcallback"},
	{"punycode host", "https://xn--rp-ekc.example.com/callback"},
	{"http instead of https", "http://rp.example.com/callback"},
	{"explicit default port", "https://rp.example.com:443/callback"},
	{"other port", "https://rp.example.com:8443/callback"},
	{"empty port", "https://rp.example.com:/callback"},
	{"javascript scheme", "javascript:alert(1)"},
	{"javascript scheme around the URI", "javascript://rp.example.com/callback%0aalert(1)"},
	{"javascript scheme with a newline", "javascript://rp.example.com/callback\nalert(1)"},
	{"data scheme", "data:text/html,<script>alert(1)</script>"},
	{"data scheme base64", "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg=="},
	{"scheme-relative", "//rp.example.com/callback"},
	{"relative path", "/callback"},
	{"whole URI percent-encoded", url.QueryEscape(webRedirect)},
	{"whole URI double-encoded", url.QueryEscape(url.QueryEscape(webRedirect))},
	{"double-encoded slash", "https://rp.example.com%252Fcallback"},
	{"double-encoded path letter", "https://rp.example.com/%2563allback"},
	{"backslash as path separator", "https://rp.example.com\\callback"},
	{"backslashes everywhere", "https:\\\\rp.example.com\\callback"},
	{"backslash before at sign", "https://evil.example\\@rp.example.com/callback"},
	{"backslash after the host", "https://rp.example.com\\@evil.example/callback"},
	{"trailing backslash", webRedirect + "\\"},
	{"leading space", " " + webRedirect},
	{"trailing space", webRedirect + " "},
	{"trailing tab", webRedirect + "\t"},
	{"trailing newline", webRedirect + "\n"},
	{"trailing CRLF", webRedirect + "\r\n"},
	{"space after the host", "https://rp.example.com /callback"},
	{"tab inside the scheme", "ht\ttps://rp.example.com/callback"},
	{"NUL", webRedirect + "\x00"},
	{"encoded space", webRedirect + "%20"},
	{"encoded NUL", webRedirect + "%00"},
	{"plus sign", "https://rp.example.com/call+back"},
	{"another client's redirect URI", otherRedirect},
	{"the logout client's redirect URI", cLogout.redirect},
	{"missing", ""},
}

// TestAttackRedirectURI: every variation of the web client's registered redirect URI is refused
// at /authorize with a 400 page.
//
// Defence: the OP library's ValidateAuthReqRedirectURI (zitadel op/auth_request.go:
// checkURIAgainstRedirects, slices.Contains over client.RedirectURIs, provider/client.go), and
// ErrInvalidRequestRedirectURI having redirects disabled (op.AuthRequestError answers 400). A
// provider matching case-insensitively (Hydra CVE-2020-15234), by prefix, after normalising
// paths (Keycloak CVE-2026-3872) or with a URL parser that differs from browsers would redirect
// to /login here instead.
func TestAttackRedirectURI(t *testing.T) {
	silenceLibraryLogs(t)
	op := newConfOP(t, harnessOptions{})
	t.Run("control: the registered URI is accepted", func(t *testing.T) {
		acceptedRedirect(t, op, authParams(cWeb))
	})
	for _, tt := range webRedirectTricks {
		t.Run(tt.name, func(t *testing.T) {
			refusedRedirect(t, op, authParams(cWeb, "redirect_uri", tt.uri))
		})
	}
	// Percent-encoding any single character gives a different string (and, for ':' or '/', a
	// URL a browser resolves differently): it must not match.
	for i := 0; i < len(webRedirect); i++ {
		for _, format := range []string{"%%%02X", "%%%02x"} {
			enc := fmt.Sprintf(format, webRedirect[i])
			if format == "%%%02x" && strings.ToUpper(enc) == enc {
				continue // no letters in the hex: same as the upper-case form
			}
			uri := webRedirect[:i] + enc + webRedirect[i+1:]
			t.Run(fmt.Sprintf("percent-encoded %q at %d as %s", webRedirect[i], i, enc), func(t *testing.T) {
				refusedRedirect(t, op, authParams(cWeb, "redirect_uri", uri))
			})
		}
	}
}

// TestAttackLoopbackRedirectURI: for the native loopback client (http://127.0.0.1:5173/callback)
// only the port may vary (RFC 8252 §7.3, RFC 9700 §2.1); the host must stay the registered
// loopback literal — never a name that merely starts with it.
//
// Defence: client.ApplicationType (provider/client.go) makes the public loopback client native;
// the library's validateAuthReqRedirectURINative parses the URI (HTTPLoopbackOrLocalhost:
// url.Parse + net.ParseIP(...).IsLoopback, no prefix match) and compares path and query
// (equalURI). Keycloak CVE-2026-18211 / CVE-2024-8883 accepted http://localhost.evil.test.
func TestAttackLoopbackRedirectURI(t *testing.T) {
	silenceLibraryLogs(t)
	op := newConfOP(t, harnessOptions{})
	withPKCE := func(uri string) url.Values {
		v := authParams(cSPA, "redirect_uri", uri)
		pkce(v)
		return v
	}
	for _, uri := range []string{spaRedirect, "http://127.0.0.1:1/callback", "http://127.0.0.1:49152/callback",
		"http://127.0.0.1:65535/callback", "http://127.0.0.1/callback"} {
		t.Run("accepted: port varies: "+uri, func(t *testing.T) {
			acceptedRedirect(t, op, withPKCE(uri))
		})
	}
	t.Run("accepted: another port works end to end", func(t *testing.T) {
		o := op.with(t)
		c := cSPA
		c.redirect = "http://127.0.0.1:49152/callback"
		v := authParams(c)
		verifier := pkce(v)
		b := newBrowser(t, desktopUA)
		atApp := func(u *url.URL) bool { return u.Path == "/callback" }
		res, loc := b.follow(o.authorizeURL(v), atApp)
		if loc == nil {
			res, loc = b.follow(clickMember(t, res, "zhangsan"), atApp)
		}
		if loc == nil {
			t.Fatalf("login ended on a page (status %d)", res.StatusCode)
		}
		o.tokenOK(o.exchange(c, authNone, o.authResponse(loc, c, v), verifier))
	})
	for _, tt := range []struct{ name, uri string }{
		{"path uppercase", "http://127.0.0.1:5173/Callback"},
		{"trailing slash", "http://127.0.0.1:5173/callback/"},
		{"extra path segment", "http://127.0.0.1:5173/callback/x"},
		{"other path", "http://127.0.0.1:5173/"},
		{"dot-dot", "http://127.0.0.1:5173/x/../callback"},
		{"encoded dot-dot", "http://127.0.0.1:5173/x/%2e%2e/callback"},
		{"extra query", "http://127.0.0.1:5173/callback?x=1"},
		{"empty query", "http://127.0.0.1:5173/callback?"},
		{"fragment", "http://127.0.0.1:5173/callback#x"},
		{"host localhost.evil.example", "http://localhost.evil.example:5173/callback"},
		{"host 127.0.0.1.evil.example", "http://127.0.0.1.evil.example:5173/callback"},
		{"host 127.0.0.1.nip.io", "http://127.0.0.1.nip.io:5173/callback"},
		{"host localhost", "http://localhost:5173/callback"},
		{"host [::1]", "http://[::1]:5173/callback"},
		{"host 127.0.0.2", "http://127.0.0.2:5173/callback"},
		{"host IPv4-mapped IPv6 loopback", "http://[::ffff:127.0.0.1]:5173/callback"},
		{"host 127.1", "http://127.1:5173/callback"},
		{"host 0x7f000001", "http://0x7f000001:5173/callback"},
		{"host 2130706433", "http://2130706433:5173/callback"},
		{"loopback as userinfo", "http://127.0.0.1:5173@evil.example/callback"},
		{"loopback as userinfo, attacker port", "http://127.0.0.1@evil.example:5173/callback"},
		{"attacker userinfo before loopback", "http://evil.example@127.0.0.1:5173/callback"},
		{"https instead of http", "https://127.0.0.1:5173/callback"},
		{"scheme uppercase", "HTTP://127.0.0.1:5173/callback"},
		{"percent-encoded port colon", "http://127.0.0.1%3A5173/callback"},
		{"percent-encoded path letter", "http://127.0.0.1:5173/%63allback"},
		{"backslash", "http://127.0.0.1:5173\\callback"},
		{"backslash before at sign", "http://evil.example\\@127.0.0.1:5173/callback"},
		{"trailing space", spaRedirect + " "},
		{"javascript scheme", "javascript:alert(1)"},
		{"custom scheme", "com.evil.app:/callback"},
		{"the web client's redirect URI", webRedirect},
	} {
		t.Run(tt.name, func(t *testing.T) {
			refusedRedirect(t, op, withPKCE(tt.uri))
		})
	}
}

// ---------------------------------------------------------------------------------------------
// 2. Open redirect
// ---------------------------------------------------------------------------------------------

// offsite reports a redirect in res that leaves the provider (relative Locations resolved).
func offsite(res *http.Response, issuer *url.URL) string {
	if res.StatusCode < 300 || res.StatusCode >= 400 {
		return ""
	}
	loc, err := res.Request.URL.Parse(res.Header.Get("Location"))
	if err != nil {
		return res.Header.Get("Location")
	}
	if loc.Scheme != issuer.Scheme || loc.Host != issuer.Host {
		return loc.String()
	}
	return ""
}

// TestAttackPostLogoutRedirect: end_session redirects only to a post_logout_redirect_uri
// registered, byte for byte, for the client the request names (by client_id or the
// id_token_hint's azp); anything else is refused or ends on the provider's own /logged-out page.
//
// Defence: the library's ValidateEndSessionPostLogoutRedirectURI (zitadel op/session.go: exact
// comparison with client.PostLogoutRedirectURIs, provider/client.go) and its ignoring the URI
// when no client is named. ZITADEL GHSA-v959-qxv6-6f8p: an unvalidated post-logout redirect.
func TestAttackPostLogoutRedirect(t *testing.T) {
	silenceLibraryLogs(t)
	op := newConfOP(t, harnessOptions{})
	issuer, _ := url.Parse(op.h.issuer)
	f := op.login(newBrowser(t, desktopUA), cLogout, "zhangsan")
	reg := cLogout.postLogout
	end := func(t *testing.T, q url.Values) *http.Response {
		res := newBrowser(t, desktopUA).get(op.meta.EndSessionEndpoint + "?" + q.Encode())
		drain(res)
		return res
	}
	t.Run("control: the registered URI is honoured", func(t *testing.T) {
		res := end(t, url.Values{"client_id": {cLogout.id}, "post_logout_redirect_uri": {reg}})
		if got := offsite(res, issuer); !strings.HasPrefix(got, reg) {
			t.Fatalf("registered post_logout_redirect_uri: status %d, Location %q", res.StatusCode, res.Header.Get("Location"))
		}
	})
	tricks := []struct{ name, uri string }{
		{"unregistered", "https://evil.example/"},
		{"extra query", reg + "?x=1"},
		{"empty query", reg + "?"},
		{"other path", "https://logout-rp.example/elsewhere"},
		{"extra path segment", reg + "/evil"},
		{"trailing slash", reg + "/"},
		{"other host", "https://evil.example/post_logout_redirect"},
		{"registered host as subdomain", "https://logout-rp.example.evil.example/post_logout_redirect"},
		{"registered host as userinfo", "https://logout-rp.example@evil.example/post_logout_redirect"},
		{"host uppercase", "https://LOGOUT-RP.example/post_logout_redirect"},
		{"http instead of https", "http://logout-rp.example/post_logout_redirect"},
		{"other port", "https://logout-rp.example:8443/post_logout_redirect"},
		{"fragment", reg + "#x"},
		{"percent-encoded letter", "https://logout-rp.example/%70ost_logout_redirect"},
		{"backslash", "https://logout-rp.example\\@evil.example/post_logout_redirect"},
		{"scheme-relative", "//evil.example/post_logout_redirect"},
		{"javascript scheme", "javascript:alert(1)"},
		{"the client's login redirect URI", cLogout.redirect},
		{"another client's redirect URI", webRedirect},
	}
	names := []struct {
		name string
		q    func(uri string) url.Values
	}{
		{"named by client_id", func(uri string) url.Values {
			return url.Values{"client_id": {cLogout.id}, "post_logout_redirect_uri": {uri}, "state": {"s"}}
		}},
		{"named by id_token_hint", func(uri string) url.Values {
			return url.Values{"id_token_hint": {f.tokens.IDToken}, "post_logout_redirect_uri": {uri}, "state": {"s"}}
		}},
		{"named by both", func(uri string) url.Values {
			return url.Values{"client_id": {cLogout.id}, "id_token_hint": {f.tokens.IDToken}, "post_logout_redirect_uri": {uri}}
		}},
		{"no client named", func(uri string) url.Values {
			return url.Values{"post_logout_redirect_uri": {uri}, "state": {"s"}}
		}},
		{"another client named", func(uri string) url.Values {
			return url.Values{"client_id": {webClientID}, "post_logout_redirect_uri": {uri}}
		}},
		{"unknown client named", func(uri string) url.Values {
			return url.Values{"client_id": {"no-such-client"}, "post_logout_redirect_uri": {uri}}
		}},
	}
	for _, tt := range tricks {
		for _, n := range names {
			t.Run(tt.name+"/"+n.name, func(t *testing.T) {
				res := end(t, n.q(tt.uri))
				if got := offsite(res, issuer); got != "" {
					t.Errorf("post_logout_redirect_uri %q: redirected off the provider to %q (status %d)", tt.uri, got, res.StatusCode)
				}
			})
		}
	}
	t.Run("registered URI of another client", func(t *testing.T) {
		res := end(t, url.Values{"client_id": {webClientID}, "post_logout_redirect_uri": {reg}})
		if got := offsite(res, issuer); got != "" {
			t.Errorf("logout-rp's post-logout URI honoured for client web: %q", got)
		}
	})
}

// TestAttackErrorPagesNeverRedirect: a request with attacker input that fails anywhere answers on
// the provider's own page, or (once client and redirect URI are validated) at the registered
// redirect URI — never at a URI from the request.
//
// Defence: the library validates client and redirect_uri before any error redirect
// (zitadel/oidc#627 → #641: errors were redirected to unverified URIs); our own pages
// (login.go failPage, interceptors.go) only ever render messages, never Locations from input;
// rejectToApp uses the stored, validated auth request.
func TestAttackErrorPagesNeverRedirect(t *testing.T) {
	silenceLibraryLogs(t)
	op := newConfOP(t, harnessOptions{})
	issuer, _ := url.Parse(op.h.issuer)
	evil := "https://evil.example/steal"
	authz := func(kv ...string) string {
		v := url.Values{"redirect_uri": {evil}, "scope": {"openid"}, "response_type": {"code"}, "state": {"s"}}
		for i := 0; i+1 < len(kv); i += 2 {
			v.Set(kv[i], kv[i+1])
		}
		return op.meta.AuthorizationEndpoint + "?" + v.Encode()
	}
	valid := func(kv ...string) string { return op.authorizeURL(authParams(cWeb, kv...)) }
	for _, tt := range []struct{ name, url string }{
		{"authorize: unknown client", authz("client_id", "no-such-client")},
		{"authorize: no client", authz()},
		{"authorize: known client, unregistered redirect", authz("client_id", webClientID)},
		{"authorize: unregistered redirect and bad response_type", authz("client_id", webClientID, "response_type", "token")},
		{"authorize: unregistered redirect and no scope", authz("client_id", webClientID, "scope", "")},
		{"authorize: unregistered redirect and prompt=none", authz("client_id", webClientID, "prompt", "none")},
		{"authorize: unregistered redirect and request_uri", authz("client_id", webClientID, "request_uri", evil)},
		{"authorize: unregistered redirect and form_post", authz("client_id", webClientID, "response_mode", "form_post")},
		{"authorize: unregistered redirect and bad PKCE", authz("client_id", webClientID, "code_challenge", "x", "code_challenge_method", "plain")},
		{"authorize: unsigned request object naming the redirect", op.meta.AuthorizationEndpoint + "?" + url.Values{
			"client_id": {webClientID}, "response_type": {"code"}, "scope": {"openid"},
			"request": {unsignedJWT(t, map[string]any{"client_id": webClientID, "redirect_uri": evil, "response_type": "code"})},
		}.Encode()},
		{"authorize: valid request, bad response_type", valid("response_type", "token")},
		{"authorize: valid request, request_uri", valid("request_uri", evil)},
		{"authorize: valid request, response_mode names a URI", valid("response_mode", evil)},
		{"login: unknown auth request", op.h.issuer + "/login?authRequestID=nope&redirect_uri=" + url.QueryEscape(evil) + "&next=" + url.QueryEscape(evil)},
		{"WeCom callback: forged", op.h.issuer + "/login/wecom/callback?state=nope&code=x&redirect_uri=" + url.QueryEscape(evil)},
		{"return link: unknown auth request", op.h.issuer + "/login/return?authRequestID=nope&error=access_denied&redirect_uri=" + url.QueryEscape(evil)},
		{"authorize callback: unknown auth request", op.h.issuer + "/authorize/callback?id=nope&redirect_uri=" + url.QueryEscape(evil)},
		{"end_session: unregistered URI", op.meta.EndSessionEndpoint + "?client_id=web&post_logout_redirect_uri=" + url.QueryEscape(evil)},
		{"end_session: forged id_token_hint", op.meta.EndSessionEndpoint + "?id_token_hint=x.y.z&post_logout_redirect_uri=" + url.QueryEscape(evil)},
		{"logged-out page", op.h.issuer + "/logged-out?redirect_uri=" + url.QueryEscape(evil) + "&next=" + url.QueryEscape(evil)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			res := newBrowser(t, desktopUA).get(tt.url)
			body := readBody(t, res)
			if got := offsite(res, issuer); got != "" {
				if u, _ := url.Parse(got); u == nil || u.Scheme+"://"+u.Host+u.Path != webRedirect {
					t.Errorf("redirected to %q (status %d)", got, res.StatusCode)
				}
			}
			if strings.Contains(res.Header.Get("Location"), "evil.example") {
				t.Errorf("Location carries the attacker's URI: %q", res.Header.Get("Location"))
			}
			if isHTML(res.Header) && strings.Contains(body, "evil.example") {
				t.Errorf("the page links to the attacker's URI:\n%.500s", body)
			}
		})
	}
}

// TestAttackLoginReturnWhitelist: /login/return takes a person back to the application only with
// one of the errors our own pages offer, and only from the browser that started the login; the
// application never receives an attacker's error text.
//
// Defence: loginReturn (login.go): returnErrors whitelist, sameBrowser, and the description
// taken from returnErrors, never from the request.
func TestAttackLoginReturnWhitelist(t *testing.T) {
	silenceLibraryLogs(t)
	op := newConfOP(t, harnessOptions{})
	b := newBrowser(t, desktopUA)
	v := authParams(cWeb)
	id, page := startAt(t, op, b, v)
	drain(page)
	ret := func(q url.Values) string {
		q.Set("authRequestID", id)
		return op.h.issuer + "/login/return?" + q.Encode()
	}
	for _, e := range []string{"", "invalid_request", "login_required", "consent_required", "interaction_required",
		"invalid_scope", "unauthorized_client", "ACCESS_DENIED", "Access_Denied", " access_denied", "access_denied ",
		"access_denied\x00", "access_denied<script>alert(1)</script>", "javascript:alert(1)", "access_denied&error=x"} {
		t.Run(fmt.Sprintf("error %q refused", e), func(t *testing.T) {
			res := b.get(ret(url.Values{"error": {e}}))
			drain(res)
			if res.StatusCode != http.StatusBadRequest || res.Header.Get("Location") != "" {
				t.Errorf("error=%q: status %d, Location %q; want a 400 page", e, res.StatusCode, res.Header.Get("Location"))
			}
		})
	}
	t.Run("whitelisted error from another browser refused", func(t *testing.T) {
		res := newBrowser(t, desktopUA).get(ret(url.Values{"error": {"access_denied"}}))
		drain(res)
		if res.StatusCode != http.StatusBadRequest || res.Header.Get("Location") != "" {
			t.Errorf("another browser: status %d, Location %q; want a 400 page", res.StatusCode, res.Header.Get("Location"))
		}
	})
	t.Run("whitelisted error carries none of the attacker's text", func(t *testing.T) {
		res := b.get(ret(url.Values{"error": {"access_denied"}, "error_description": {"call +86 evil to unlock"},
			"error_uri": {"https://evil.example/help"}, "redirect_uri": {"https://evil.example/"}, "state": {"forged"}}))
		drain(res)
		loc, err := url.Parse(res.Header.Get("Location"))
		if res.StatusCode != http.StatusFound || err != nil || loc.Scheme+"://"+loc.Host+loc.Path != webRedirect {
			t.Fatalf("status %d, Location %q; want the registered redirect URI", res.StatusCode, res.Header.Get("Location"))
		}
		q := loc.Query()
		if q.Get("error") != "access_denied" || q.Get("state") != v.Get("state") {
			t.Errorf("application got %v, want error=access_denied and its own state", q)
		}
		if strings.Contains(loc.String(), "evil") || q.Get("error_uri") != "" {
			t.Errorf("the attacker's text reached the application: %s", loc)
		}
	})
}

// ---------------------------------------------------------------------------------------------
// 3. Login steps replayed, WeCom states forged or reused
// ---------------------------------------------------------------------------------------------

// TestAttackAuthorizeCallbackFromAnotherBrowser: the OP library's endpoint that hands out a code
// for a finished login (/authorize/callback?id=…; our own login pages answer the application
// directly, but the endpoint stays reachable) only works in the browser that logged in: the auth
// request id alone is worth nothing (Dex CVE-2022-39222).
//
// Defence: intercept (interceptors.go), the /authorize/callback case: sameBrowser against the
// auth request's BrowserHash before the library's AuthorizeCallback runs.
func TestAttackAuthorizeCallbackFromAnotherBrowser(t *testing.T) {
	silenceLibraryLogs(t)
	op := newConfOP(t, harnessOptions{})
	victim := newBrowser(t, desktopUA)
	v := authParams(cWeb)
	id, page := startAt(t, op, victim, v)
	cb := toAuthorizeCallback(t, victim, clickMember(t, page, "zhangsan"), id)

	strangers := map[string]*browser{"fresh browser": newBrowser(t, desktopUA)}
	withCookie := newBrowser(t, desktopUA)
	_, own := startAt(t, op, withCookie, authParams(cWeb)) // its own binding cookie and auth request
	drain(own)
	strangers["browser with its own login"] = withCookie
	for name, b := range strangers {
		t.Run(name, func(t *testing.T) {
			res := b.get(cb.String())
			body := readBody(t, res)
			if res.StatusCode != http.StatusBadRequest || res.Header.Get("Location") != "" {
				t.Fatalf("status %d, Location %q; want 400 without a code", res.StatusCode, res.Header.Get("Location"))
			}
			if !strings.Contains(body, "浏览器") {
				t.Errorf("the page does not explain the browser mismatch:\n%.300s", body)
			}
		})
	}
	t.Run("the victim's own browser still gets its code", func(t *testing.T) {
		o := op.with(t)
		res, loc := victim.follow(cb.String(), isAppURL)
		if loc == nil {
			t.Fatalf("victim ended on a page (status %d)", res.StatusCode)
		}
		o.tokenOK(o.exchange(cWeb, authBasic, o.authResponse(loc, cWeb, v), ""))
	})
}

// TestAttackWeComCallbackInAnotherBrowser: WeCom's callback with a valid, unused state only works
// in the browser the state was minted for — whether the victim's callback is stolen into the
// attacker's browser, or the attacker's planted in the victim's (login CSRF).
//
// Defence: wecomCallback (login.go): ConsumeLoginState then sameBrowser(ls.BrowserHash), both
// before HandleCallback exchanges WeCom's code.
func TestAttackWeComCallbackInAnotherBrowser(t *testing.T) {
	silenceLibraryLogs(t)
	op := newConfOP(t, harnessOptions{})
	t.Run("victim's callback in the attacker's browser", func(t *testing.T) {
		victim, attacker := newBrowser(t, desktopUA), newBrowser(t, desktopUA)
		_, vPage := startAt(t, op, victim, authParams(cWeb))
		cb := toOurCallback(t, victim, clickMember(t, vPage, "zhangsan"))
		_, aPage := startAt(t, op, attacker, authParams(cWeb)) // the attacker has a binding cookie of its own
		drain(aPage)
		calls := op.h.sim.Calls("auth/getuserinfo")
		res := attacker.get(cb.String())
		drain(res)
		if res.StatusCode != http.StatusBadRequest || res.Header.Get("Location") != "" {
			t.Fatalf("status %d, Location %q; want a 400 page", res.StatusCode, res.Header.Get("Location"))
		}
		if n := op.h.sim.Calls("auth/getuserinfo") - calls; n != 0 {
			t.Fatalf("WeCom's code exchanged %d times for the wrong browser", n)
		}
	})
	t.Run("attacker's callback planted in the victim's browser", func(t *testing.T) {
		o := op.with(t)
		victim, attacker := newBrowser(t, desktopUA), newBrowser(t, desktopUA)
		_, vPage := startAt(t, op, victim, authParams(cWeb))
		drain(vPage)
		_, aPage := startAt(t, op, attacker, authParams(cWeb))
		cb := toOurCallback(t, attacker, clickMember(t, aPage, "lisi"))
		calls := op.h.sim.Calls("auth/getuserinfo")
		res := victim.get(cb.String())
		drain(res)
		if res.StatusCode != http.StatusBadRequest || res.Header.Get("Location") != "" {
			t.Fatalf("status %d, Location %q; want a 400 page", res.StatusCode, res.Header.Get("Location"))
		}
		if n := op.h.sim.Calls("auth/getuserinfo") - calls; n != 0 {
			t.Fatalf("WeCom's code exchanged %d times for the wrong browser", n)
		}
		o.expectLoggedOut(victim, cWeb) // the victim was not signed in as the attacker
	})
}

// alnumState is a string of the shape our WeCom states have (32 of [A-Za-z0-9]), never minted.
func alnumState() string { return (rand.Text() + rand.Text())[:32] }

// TestAttackForgedWeComState: a WeCom callback whose state has the right shape but was never
// minted, or a wrong shape, is refused before WeCom's code is exchanged — even with a valid WeCom
// code and a browser in the middle of a login.
//
// Defence: wecomCallback (login.go): validWeComState, then ConsumeLoginState (the store knows
// only states it was given by login), before HandleCallback.
func TestAttackForgedWeComState(t *testing.T) {
	silenceLibraryLogs(t)
	op := newConfOP(t, harnessOptions{})
	b := newBrowser(t, desktopUA)
	_, page := startAt(t, op, b, authParams(cWeb))
	minted := stateOf(t, page)
	drain(page)
	forged := alnumState()
	for _, tt := range []struct{ name, state string }{
		{"right shape, never minted", forged},
		{"minted state with one character changed", minted[:31] + string("ab"[bytesIndex(minted[31])])},
		{"minted state lower-cased", strings.ToLower(minted)},
		{"empty", ""},
		{"too short", forged[:31]},
		{"too long", forged + "A"},
		{"minted state plus a suffix", minted + "A"},
		{"non-alphanumeric", forged[:31] + "-"},
		{"non-ASCII", forged[:30] + "é"},
		{"minted state twice", minted + "&state=" + minted},
	} {
		t.Run(tt.name, func(t *testing.T) {
			calls := op.h.sim.Calls("auth/getuserinfo")
			q := url.Values{"code": {op.h.sim.Code("zhangsan", false, "")}, "state": {tt.state}}
			res := b.get(op.h.issuer + "/login/wecom/callback?" + q.Encode())
			drain(res)
			if res.StatusCode != http.StatusBadRequest || res.Header.Get("Location") != "" {
				t.Errorf("state %q: status %d, Location %q; want a 400 page", tt.state, res.StatusCode, res.Header.Get("Location"))
			}
			if n := op.h.sim.Calls("auth/getuserinfo") - calls; n != 0 {
				t.Errorf("state %q: WeCom's code exchanged %d times", tt.state, n)
			}
		})
	}
}

// bytesIndex picks 0 or 1 so the replacement character differs from c.
func bytesIndex(c byte) int {
	if c == 'a' {
		return 1
	}
	return 0
}

// TestAttackReusedWeComState: after a login succeeded, its WeCom callback — or its state with a
// fresh WeCom code — is refused, in the same browser and in any other.
//
// Defence: storage ConsumeLoginState (single use, consumed before anything else in
// wecomCallback, login.go).
func TestAttackReusedWeComState(t *testing.T) {
	silenceLibraryLogs(t)
	op := newConfOP(t, harnessOptions{})
	b := newBrowser(t, desktopUA)
	_, page := startAt(t, op, b, authParams(cWeb))
	cb := toOurCallback(t, b, clickMember(t, page, "zhangsan"))
	if got := op.h.signInFrom(b, cb.String()); got.Get("code") == "" {
		t.Fatalf("first use failed: %v", got)
	}
	fresh := *cb
	q := fresh.Query()
	q.Set("code", op.h.sim.Code("lisi", false, ""))
	fresh.RawQuery = q.Encode()
	for _, tt := range []struct {
		name string
		b    *browser
		url  string
	}{
		{"same callback, same browser", b, cb.String()},
		{"same state with a fresh WeCom code, same browser", b, fresh.String()},
		{"same callback, another browser", newBrowser(t, desktopUA), cb.String()},
	} {
		t.Run(tt.name, func(t *testing.T) {
			calls := op.h.sim.Calls("auth/getuserinfo")
			res := tt.b.get(tt.url)
			drain(res)
			if res.StatusCode != http.StatusBadRequest || res.Header.Get("Location") != "" {
				t.Errorf("status %d, Location %q; want a 400 page", res.StatusCode, res.Header.Get("Location"))
			}
			if n := op.h.sim.Calls("auth/getuserinfo") - calls; n != 0 {
				t.Errorf("WeCom's code exchanged %d times for a spent state", n)
			}
		})
	}
}

// ---------------------------------------------------------------------------------------------
// 4. Concurrent redemption of one code
// ---------------------------------------------------------------------------------------------

// TestAttackConcurrentCodeRedemption: 16 simultaneous redemptions of one code over HTTP. At most
// one may succeed, every other is invalid_grant, and the replays revoke whatever the code
// produced (RFC 6749 §4.1.2), so no live token is left over.
//
// Defence: opStorage.AuthRequestByCode → bolt ConsumeCode (one bbolt write transaction marks the
// code used; a second consume revokes what was issued) and CreateTokens' checkNotReplayed. A
// check-then-act store (read "unused", later mark "used") lets several requests through.
//
// The issue asked for exactly one 200: when a replay consumes before the winner has written its
// tokens, the winner's CreateTokens is refused too and nobody succeeds, which is the stricter
// outcome RFC 6749 §4.1.2 allows. The test therefore demands at most one, and logs how many.
func TestAttackConcurrentCodeRedemption(t *testing.T) {
	silenceLibraryLogs(t)
	op := newConfOP(t, harnessOptions{})
	v := authParams(cWeb, "scope", "openid offline_access")
	code := op.authResponse(op.authorize(newBrowser(t, desktopUA), v, "zhangsan"), cWeb, v)
	form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {cWeb.redirect}}.Encode()

	const n = 16
	type result struct {
		status int
		body   map[string]any
		err    error
	}
	results := make([]result, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			req, _ := http.NewRequest(http.MethodPost, op.meta.TokenEndpoint, strings.NewReader(form))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.SetBasicAuth(cWeb.id, cWeb.secret)
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				results[i].err = err
				return
			}
			defer res.Body.Close()
			b, _ := io.ReadAll(res.Body)
			results[i].status = res.StatusCode
			_ = json.Unmarshal(b, &results[i].body)
		})
	}
	close(start)
	wg.Wait()

	var wins []map[string]any
	for i, r := range results {
		switch {
		case r.err != nil:
			t.Errorf("request %d: %v", i, r.err)
		case r.status == http.StatusOK:
			wins = append(wins, r.body)
		case r.status != http.StatusBadRequest || r.body["error"] != "invalid_grant":
			t.Errorf("request %d: status %d %v, want 200 or 400 invalid_grant", i, r.status, r.body)
		}
	}
	t.Logf("%d of %d concurrent redemptions succeeded", len(wins), n)
	if len(wins) > 1 {
		t.Fatalf("one code redeemed %d times", len(wins))
	}
	for _, w := range wins {
		at, _ := w["access_token"].(string)
		if status, _, _ := op.userinfo("get", at); status != http.StatusUnauthorized {
			t.Errorf("the winner's access token still works after 15 replays (userinfo %d)", status)
		}
		if rt, _ := w["refresh_token"].(string); rt != "" {
			op.tokenError(op.refresh(cWeb, authBasic, rt), "invalid_grant")
		}
	}
}

// ---------------------------------------------------------------------------------------------
// 5. PKCE downgrade
// ---------------------------------------------------------------------------------------------

// TestAttackPKCEDowngrade: PKCE cannot be stripped, weakened or faked (RFC 9700 §2.1.1, §4.8).
//
// Defences: opStorage.CreateAuthRequest (opstorage.go) refuses a method other than S256 and a
// public client without a challenge; the library's AuthorizeCodeChallenge (zitadel
// op/token_code.go) requires the verifier when a challenge was stored and compares it; for the
// verifier-without-challenge case it relies on the library refusing a code_verifier when the
// auth request has no challenge (README: "a verifier without a challenge is refused").
func TestAttackPKCEDowngrade(t *testing.T) {
	silenceLibraryLogs(t)
	op := newConfOP(t, harnessOptions{})
	b := newBrowser(t, desktopUA)
	op.login(b, cWeb, "zhangsan") // a session, so the cases below skip WeCom
	code := func(o *confOP, c confClient, v url.Values) string {
		return o.authResponse(o.authorize(b, v, "zhangsan"), c, v)
	}
	// refused: a 400 invalid_grant or invalid_request, and no token.
	refused := func(t *testing.T, tr tokenResponse) {
		t.Helper()
		if tr.status != http.StatusBadRequest || tr.AccessToken != "" || (tr.Error != "invalid_grant" && tr.Error != "invalid_request") {
			t.Fatalf("status %d %v; want 400 invalid_grant or invalid_request", tr.status, tr.body)
		}
	}
	t.Run("challenge sent, no verifier at the token endpoint", func(t *testing.T) {
		o := op.with(t)
		v := authParams(cWeb)
		pkce(v)
		refused(t, o.exchange(cWeb, authBasic, code(o, cWeb, v), ""))
	})
	t.Run("public client: challenge sent, no verifier", func(t *testing.T) {
		o := op.with(t)
		v := authParams(cSPA)
		pkce(v)
		refused(t, o.exchange(cSPA, authNone, code(o, cSPA, v), ""))
	})
	t.Run("verifier sent without a challenge", func(t *testing.T) {
		o := op.with(t)
		v := authParams(cWeb)
		refused(t, o.exchange(cWeb, authBasic, code(o, cWeb, v), randomString()+randomString()))
	})
	t.Run("wrong verifier", func(t *testing.T) {
		o := op.with(t)
		v := authParams(cWeb)
		pkce(v)
		o.tokenError(o.exchange(cWeb, authBasic, code(o, cWeb, v), randomString()+randomString()), "invalid_grant")
	})
	t.Run("public client: wrong verifier", func(t *testing.T) {
		o := op.with(t)
		v := authParams(cSPA)
		pkce(v)
		o.tokenError(o.exchange(cSPA, authNone, code(o, cSPA, v), randomString()+randomString()), "invalid_grant")
	})
	t.Run("the challenge itself as verifier", func(t *testing.T) {
		o := op.with(t)
		v := authParams(cSPA)
		pkce(v)
		o.tokenError(o.exchange(cSPA, authNone, code(o, cSPA, v), v.Get("code_challenge")), "invalid_grant")
	})
	t.Run("right verifier after a wrong one", func(t *testing.T) {
		// A wrong guess spends the code: an attacker holding a stolen code gets one try.
		o := op.with(t)
		v := authParams(cSPA)
		verifier := pkce(v)
		c := code(o, cSPA, v)
		o.tokenError(o.exchange(cSPA, authNone, c, randomString()+randomString()), "invalid_grant")
		o.tokenError(o.exchange(cSPA, authNone, c, verifier), "invalid_grant")
	})
	for _, tt := range []struct {
		name string
		c    confClient
		kv   []string
	}{
		{"code_challenge_method=plain refused at /authorize", cWeb, []string{"code_challenge", randomString() + randomString(), "code_challenge_method", "plain"}},
		{"public client: code_challenge_method=plain refused", cSPA, []string{"code_challenge", randomString() + randomString(), "code_challenge_method", "plain"}},
		{"challenge without a method (plain by default) refused", cWeb, []string{"code_challenge", randomString() + randomString()}},
		{"unknown code_challenge_method refused", cWeb, []string{"code_challenge", randomString() + randomString(), "code_challenge_method", "S512"}},
		{"public client without PKCE refused", cSPA, nil},
		{"public client with a method but no challenge refused", cSPA, []string{"code_challenge_method", "S256"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			o := op.with(t)
			v := authParams(tt.c, tt.kv...)
			pages := o.wecomPages()
			res, loc := o.followToApp(b, o.authorizeURL(v))
			drain(res)
			if loc != nil && loc.Query().Get("code") != "" {
				t.Fatalf("a code was issued: %s", loc)
			}
			if loc != nil && loc.Query().Get("error") == "" {
				t.Fatalf("sent to %s without an error", loc)
			}
			if loc == nil && res.StatusCode < 400 {
				t.Fatalf("status %d, want an error", res.StatusCode)
			}
			if o.wecomPages() != pages {
				t.Error("the WeCom login page was shown")
			}
		})
	}
}

// ---------------------------------------------------------------------------------------------
// 6. Cross-client use of codes and tokens
// ---------------------------------------------------------------------------------------------

// TestAttackCrossClient: what was issued to client A (web) is worthless to client B (other), even
// with B's valid credentials (ZITADEL GHSA-xqxv-4jc2-x56x).
//
// Defences: the library's code exchange compares the auth request's client with the
// authenticated client (zitadel op/token_code.go AuthorizeCodeClient / ValidateAccessTokenRequest)
// after opStorage.AuthRequestByCode has consumed the code (so A's later redemption fails — the
// code is single use); the refresh grant compares the stored token's client (op/token_refresh.go)
// and TokenRequestByRefreshToken has no side effect; SetIntrospectionFromToken and RevokeToken /
// GetRefreshTokenInfo (opstorage.go) check the owning client.
func TestAttackCrossClient(t *testing.T) {
	silenceLibraryLogs(t)
	op := newConfOP(t, harnessOptions{})
	b := newBrowser(t, desktopUA)
	op.login(b, cWeb, "zhangsan")
	codeFor := func(o *confOP, c confClient, kv ...string) (string, url.Values) {
		v := authParams(c, kv...)
		return o.authResponse(o.authorize(b, v, "zhangsan"), c, v), v
	}
	t.Run("A's code redeemed by B", func(t *testing.T) {
		o := op.with(t)
		code, _ := codeFor(o, cWeb)
		form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {cWeb.redirect}}
		o.tokenError(o.token(cOther, authBasic, form), "invalid_grant")
		form.Set("redirect_uri", cOther.redirect)
		o.tokenError(o.token(cOther, authBasic, form), "invalid_grant")
		// A's own redemption: refused (the code was spent by B's attempt) or, at most, once.
		if first := o.exchange(cWeb, authBasic, code, ""); first.status == http.StatusOK {
			o.tokenError(o.exchange(cWeb, authBasic, code, ""), "invalid_grant")
		} else {
			t.Logf("A's redemption after B's attempt: %d %v (the code was spent)", first.status, first.body)
		}
	})
	t.Run("public client's code redeemed by a confidential client with the verifier", func(t *testing.T) {
		o := op.with(t)
		v := authParams(cSPA)
		verifier := pkce(v)
		code := o.authResponse(o.authorize(b, v, "zhangsan"), cSPA, v)
		form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {cSPA.redirect}, "code_verifier": {verifier}}
		o.tokenError(o.token(cWeb, authBasic, form), "invalid_grant")
	})
	t.Run("confidential client's code redeemed as a public client", func(t *testing.T) {
		o := op.with(t)
		code, _ := codeFor(o, cWeb)
		form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {cWeb.redirect}}
		tr := o.token(cSPA, authNone, form)
		if tr.status == http.StatusOK || tr.AccessToken != "" {
			t.Fatalf("web's code redeemed by the public client: %v", tr.body)
		}
	})
	t.Run("A's refresh token used by B", func(t *testing.T) {
		o := op.with(t)
		code, _ := codeFor(o, cWeb, "scope", "openid offline_access")
		tr := o.exchange(cWeb, authBasic, code, "")
		o.tokenOK(tr)
		o.tokenError(o.refresh(cOther, authBasic, tr.RefreshToken), "invalid_grant")
		// The provider's choice: B's attempt has no effect on A's token (it is not a reuse of a
		// rotated token, and an attacker must not be able to revoke A's session by guessing).
		o.refreshOK(o.refresh(cWeb, authBasic, tr.RefreshToken))
	})
	t.Run("introspection of A's tokens by B", func(t *testing.T) {
		o := op.with(t)
		code, _ := codeFor(o, cWeb, "scope", "openid offline_access")
		tr := o.exchange(cWeb, authBasic, code, "")
		o.tokenOK(tr)
		for name, tok := range map[string]string{"access token": tr.AccessToken, "refresh token": tr.RefreshToken, "ID token": tr.IDToken} {
			res, body := o.postForm(o.meta.IntrospectionEndpoint, cOther, authBasic, url.Values{"token": {tok}}, nil)
			var m map[string]any
			_ = json.Unmarshal([]byte(body), &m)
			if res.StatusCode != http.StatusOK || m["active"] != false || m["sub"] != nil {
				t.Errorf("B introspecting A's %s: status %d %v; want active false and nothing else", name, res.StatusCode, m)
			}
		}
		// Control: A itself sees its access token active.
		res, body := o.postForm(o.meta.IntrospectionEndpoint, cWeb, authBasic, url.Values{"token": {tr.AccessToken}}, nil)
		if res.StatusCode != http.StatusOK || !strings.Contains(body, `"active":true`) {
			t.Errorf("A introspecting its own access token: %d %s", res.StatusCode, body)
		}
	})
	t.Run("revocation of A's tokens by B", func(t *testing.T) {
		o := op.with(t)
		code, _ := codeFor(o, cWeb, "scope", "openid offline_access")
		tr := o.exchange(cWeb, authBasic, code, "")
		o.tokenOK(tr)
		for _, form := range []url.Values{
			{"token": {tr.AccessToken}},
			{"token": {tr.AccessToken}, "token_type_hint": {"access_token"}},
			{"token": {tr.RefreshToken}},
			{"token": {tr.RefreshToken}, "token_type_hint": {"refresh_token"}},
		} {
			res, body := o.postForm(o.meta.RevocationEndpoint, cOther, authBasic, form, nil)
			t.Logf("B revoking A's token (hint %q): %d %s", form.Get("token_type_hint"), res.StatusCode, strings.TrimSpace(body))
		}
		if status, _, _ := o.userinfo("get", tr.AccessToken); status != http.StatusOK {
			t.Errorf("A's access token stopped working after B's revocation (userinfo %d)", status)
		}
		o.refreshOK(o.refresh(cWeb, authBasic, tr.RefreshToken))
	})
}

// ---------------------------------------------------------------------------------------------
// 7. Oversize input
// ---------------------------------------------------------------------------------------------

// silenceLibraryLogs discards what the OP library logs through slog's default logger for the rest
// of the test: attacker-sized values would otherwise flood the test output.
func silenceLibraryLogs(t *testing.T) {
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.DiscardHandler))
	t.Cleanup(func() { slog.SetDefault(prev) })
}

// TestAttackOversizeInput: megabyte query strings, headers and bodies and ten thousand
// parameters get a prompt 4xx, and the provider stays healthy. The provider runs behind an
// http.Server configured as cmd/wecom-oidc/app.go serveUntilDone configures it.
//
// Defences: http.Server.MaxHeaderBytes (64 KiB in serveUntilDone) answers 431 for the request
// line and headers; net/http's ParseForm caps url-encoded bodies at 10 MB; beyond that the
// provider must refuse what it would otherwise store (auth requests are stored before anyone
// signs in).
func TestAttackOversizeInput(t *testing.T) {
	silenceLibraryLogs(t)
	var p *provider.Provider
	op := newConfOP(t, harnessOptions{provider: &p})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler:           p,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
	go srv.Serve(ln) //nolint:errcheck // closed at cleanup
	t.Cleanup(func() { srv.Close() })
	base := "http://" + ln.Addr().String()
	path := func(endpoint string) string {
		u, _ := url.Parse(endpoint)
		return base + u.Path
	}
	authorize, token := path(op.meta.AuthorizationEndpoint), path(op.meta.TokenEndpoint)
	mb := strings.Repeat("A", 1<<20)
	params := func(n int, distinct bool) string {
		var sb strings.Builder
		for i := range n {
			if i > 0 {
				sb.WriteByte('&')
			}
			if distinct {
				fmt.Fprintf(&sb, "p%d=x", i)
			} else {
				sb.WriteString("a=x")
			}
		}
		return sb.String()
	}
	post := func(target, body string, basic bool) *http.Request {
		req, _ := http.NewRequest(http.MethodPost, target, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if basic {
			req.SetBasicAuth(cWeb.id, cWeb.secret)
		}
		return req
	}
	get := func(target string, header ...string) *http.Request {
		req, _ := http.NewRequest(http.MethodGet, target, nil)
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		return req
	}
	valid := authParams(cWeb)
	for _, tt := range []struct {
		name string
		req  *http.Request
		// also: another answer that is a refusal too — "rfc200": the endpoint's RFC answers an
		// unknown token with 200 (RFC 7009 §2.2; RFC 7662 §2.2 active false); "error redirect": an
		// OAuth error at the client's registered redirect URI (the request names a valid client).
		also string
	}{
		{"1 MB query string at /authorize", get(authorize + "?" + authParams(cWeb, "state", mb).Encode()), ""},
		{"1 MB query string at /login", get(base + "/login?authRequestID=" + mb), ""},
		{"1 MB header value", get(authorize+"?"+valid.Encode(), "X-Junk", mb), ""},
		{"1 MB cookie", get(authorize+"?"+valid.Encode(), "Cookie", "wecom_oidc_browser="+mb), ""},
		{"1 MB Authorization header at the token endpoint", get(token, "Authorization", "Basic "+mb), ""},
		{"1 MB form body at the token endpoint", post(token, "grant_type=authorization_code&code="+mb, true), ""},
		{"1 MB junk parameter at the token endpoint", post(token, "junk="+mb, true), ""},
		{"1 MB client_id at the token endpoint", post(token, "grant_type=authorization_code&code=x&client_secret=x&client_id="+mb, false), ""},
		{"1 MB body at introspection", post(path(op.meta.IntrospectionEndpoint), "token="+mb, true), "rfc200"},
		{"1 MB body at revocation", post(path(op.meta.RevocationEndpoint), "token="+mb, true), "rfc200"},
		{"1 MB body at end_session", post(path(op.meta.EndSessionEndpoint), "id_token_hint="+mb, false), ""},
		{"1 MB body at userinfo", post(path(op.meta.UserinfoEndpoint), "access_token="+mb, false), ""},
		{"1 MB junk body at /authorize", post(authorize, "junk="+mb, false), ""},
		{"10 000 values of one parameter in the /authorize query", get(authorize + "?" + params(10000, false)), ""},
		{"10 000 parameters at /authorize", post(authorize, params(10000, true), false), ""},
		{"10 000 parameters at the token endpoint", post(token, params(10000, true), true), ""},
		{"10 000 values of one parameter at the token endpoint", post(token, params(10000, false), true), ""},
		{"20 MB body at the token endpoint", post(token, "grant_type=authorization_code&code="+strings.Repeat("A", 20<<20), true), ""},
		{"1 MB state in an otherwise valid authorization request", post(authorize, authParams(cWeb, "state", mb).Encode(), false), "error redirect"},
		{"1 MB nonce in an otherwise valid authorization request", post(authorize, authParams(cWeb, "nonce", mb).Encode(), false), "error redirect"},
		{"1 MB login_hint in an otherwise valid authorization request", post(authorize, authParams(cWeb, "login_hint", mb).Encode(), false), "error redirect"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			res, err := clientFrom("127.0.0.9").Do(tt.req)
			took := time.Since(start)
			if err != nil {
				// The server may close the connection on a body it will not read; that is a
				// refusal too, as long as it stays healthy (checked below).
				t.Logf("no answer (%v) after %s", err, took)
				return
			}
			body := readBody(t, res)
			loc, _ := url.Parse(res.Header.Get("Location"))
			switch {
			case tt.also == "rfc200" && res.StatusCode == http.StatusOK && !strings.Contains(body, `"active":true`):
			case tt.also == "error redirect" && res.StatusCode == http.StatusFound && loc != nil &&
				strings.HasPrefix(loc.String(), webRedirect+"?") && loc.Query().Get("error") != "":
			case res.StatusCode < 400 || res.StatusCode >= 500:
				t.Errorf("status %d (Location %.80q); want a 4xx refusal", res.StatusCode, res.Header.Get("Location"))
			}
			if took > 10*time.Second {
				t.Errorf("took %s", took)
			}
			t.Logf("status %d in %s", res.StatusCode, took.Round(time.Millisecond))
		})
	}
	t.Run("still healthy", func(t *testing.T) {
		res, err := http.Get(base + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		drain(res)
		if res.StatusCode != http.StatusOK {
			t.Fatalf("/healthz %d", res.StatusCode)
		}
		op.with(t).login(newBrowser(t, desktopUA), cWeb, "zhangsan")
	})
}

// TestAttackOversizeClientIDNotRetained: failed client authentications with megabyte client ids
// do not make the provider keep megabytes. An unauthenticated attacker may send up to 10 MB per
// form; whatever per-client state the provider keeps about failures (rate limiting) must not
// hold the raw id.
//
// Defence: whatever bounds the size of the keys the failure limiter (ratelimit.go
// failureLimiter) stores — e.g. refusing over-long client ids before counting, or keying on a
// hash. Without it, each failure keeps its client id for the whole window.
func TestAttackOversizeClientIDNotRetained(t *testing.T) {
	silenceLibraryLogs(t)
	op := newConfOP(t, harnessOptions{})
	const n, size = 8, 4 << 20
	before := heapAfterGC()
	for i := range n {
		// Introspection authenticates the client before anything else (client_secret_post).
		body := "token=x&client_secret=x&client_id=" + strings.Repeat(string(rune('a'+i)), size)
		req, _ := http.NewRequest(http.MethodPost, op.meta.IntrospectionEndpoint, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		res, err := clientFrom(fmt.Sprintf("127.0.1.%d", i+1)).Do(req)
		if refusedWhileSending(err) {
			continue // the server refused the oversized body before reading it (413, then close)
		}
		if err != nil {
			t.Fatal(err)
		}
		drain(res)
		if res.StatusCode < 400 || res.StatusCode >= 500 {
			t.Fatalf("status %d, want 4xx", res.StatusCode)
		}
	}
	after := heapAfterGC()
	grown := int64(after) - int64(before)
	t.Logf("live heap grew by %.1f MB after %d failed authentications with %d MB client ids", float64(grown)/(1<<20), n, size>>20)
	if grown > 8<<20 {
		t.Errorf("the provider keeps %.1f MB after %d failed authentications with %d MB client ids: attacker-sized keys are retained",
			float64(grown)/(1<<20), n, size>>20)
	}
}

// TestAttackOversizeAuthRequestNotStored: anyone may send an authorization request for a known
// client — no credentials, no login — and it is stored for authRequestTTL (10 minutes) before
// anyone signs in. Parameters the provider stores and echoes (state, nonce, login_hint) must be
// bounded, or each request writes up to net/http's 10 MB form limit to the database.
//
// Defence: whatever bounds the stored auth request (a length limit on state, nonce, login_hint,
// … at /authorize, refused with invalid_request). Without it the database grows by what the
// attacker sends.
func TestAttackOversizeAuthRequestNotStored(t *testing.T) {
	silenceLibraryLogs(t)
	op := newConfOP(t, harnessOptions{})
	size := func() int64 {
		n, err := op.h.store.Backup(context.Background(), io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	const n, mb = 5, 9
	before := size()
	accepted := 0
	for i := range n {
		v := authParams(cWeb, "state", strings.Repeat(string(rune('a'+i)), mb<<20))
		req, _ := http.NewRequest(http.MethodPost, op.meta.AuthorizationEndpoint, strings.NewReader(v.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		res, err := clientFrom(fmt.Sprintf("127.0.3.%d", i+1)).Do(req)
		if refusedWhileSending(err) {
			continue // refused before the body was read
		}
		if err != nil {
			t.Fatal(err)
		}
		drain(res)
		if res.StatusCode == http.StatusFound {
			accepted++
		}
	}
	grown := size() - before
	t.Logf("%d of %d unauthenticated requests with a %d MB state accepted; the database grew by %.1f MB", accepted, n, mb, float64(grown)/(1<<20))
	if grown > 2<<20 {
		t.Errorf("%d unauthenticated authorization requests with a %d MB state grew the database by %.1f MB",
			n, mb, float64(grown)/(1<<20))
	}
}

// ---------------------------------------------------------------------------------------------
// 8. XSS
// ---------------------------------------------------------------------------------------------

// noLiveMarkup fails t for every HTML response in log that shows a payload unescaped, every
// page whose CSP would let a script run, and every redirect to a script URL.
func noLiveMarkup(t *testing.T, log *responseLog) {
	t.Helper()
	all := log.responses()
	if len(all) == 0 {
		t.Fatal("no response from the provider was recorded")
	}
	for _, s := range all {
		m := unescapedPayload(s.body)
		if m != "" && (isHTML(s.header) || !strings.EqualFold(s.header.Get("X-Content-Type-Options"), "nosniff")) {
			t.Errorf("%s (status %d, %s) shows %q unescaped:\n%.400s", s, s.status, s.header.Get("Content-Type"), m, s.body)
		}
		if isPage(s) && isHTML(s.header) {
			for _, p := range pageHeaderProblems(s.header) {
				if strings.Contains(p, "script") || strings.Contains(p, "Content-Security-Policy") {
					t.Errorf("%s (status %d): %s", s, s.status, p)
				}
			}
		}
		if loc := strings.ToLower(strings.TrimSpace(s.header.Get("Location"))); strings.HasPrefix(loc, "javascript:") || strings.HasPrefix(loc, "data:") {
			t.Errorf("%s redirects to %q", s, loc)
		}
	}
}

// TestAttackXSS: script payloads in every input that reaches a page — WeCom's profile fields and
// error messages, the authorization request's parameters, the return link, the chooser's
// upstream names, and every parameter of the error pages — never show as live markup, and every
// page's CSP forbids scripts.
//
// Defences: pages.go — pages render only our own message texts through html/template (a
// provider that printed errmsg, ui_locales or error_description into the page would fail here);
// the chooser's names go through html/template; renderPage and securityHeaders set
// default-src 'none'; the library's form_post template is html/template too.
func TestAttackXSS(t *testing.T) {
	silenceLibraryLogs(t)
	payload := strings.Join(xssPayloads, " ")
	op := newConfOP(t, harnessOptions{
		seed: func(c *wecomsim.Config) {
			c.Departments = append(c.Departments, wecomsim.Department{ID: 5, ParentID: 1, Name: xssPayloads[0], NameEN: xssPayloads[1]})
			c.Members = append(c.Members, wecomsim.Member{
				UserID: "xss", Name: xssPayloads[0], Alias: xssPayloads[1], Position: xssPayloads[2],
				Email: "x@example.com", Departments: []int64{5}, MainDepartment: 5, Status: wecomsim.StatusActive,
				ExtAttrs: map[string]string{xssPayloads[0]: xssPayloads[1]},
			})
		},
		wrapSim: func(h http.Handler) http.Handler { return &errmsgInjector{next: h, payload: payload} },
	})
	watch := func(t *testing.T) (*responseLog, *browser) {
		log := newResponseLog(op.h.issuer, nil)
		return log, watchedBrowser(t, log)
	}
	// failedLogin drives b from v to the WeCom page, clicks user, and expects one of our pages
	// with status want.
	failedLogin := func(t *testing.T, b *browser, v url.Values, user string, want int) {
		t.Helper()
		_, page := startAt(t, op, b, v)
		res, loc := b.follow(clickMember(t, page, user), isAppURL)
		drain(res)
		if loc != nil || res.StatusCode != want {
			t.Fatalf("want our page with status %d; got status %d, sent to %v", want, res.StatusCode, loc)
		}
	}
	t.Run("WeCom profile fields", func(t *testing.T) {
		o := op.with(t)
		log, b := watch(t)
		f := o.login(b, cWeb, "xss", "scope", "openid profile email")
		if f.id.str("name") != xssPayloads[0] {
			t.Logf("name claim %q", f.id.str("name"))
		}
		o.userinfoOK("get", f)
		o.expectLoggedIn(b, cWeb, f.id.str("sub"))
		noLiveMarkup(t, log)
	})
	t.Run("WeCom errmsg on the unavailable page", func(t *testing.T) {
		log, b := watch(t)
		op.h.sim.FailNext("auth/getuserinfo", 47001)
		failedLogin(t, b, authParams(cWeb), "xss", http.StatusServiceUnavailable)
		noLiveMarkup(t, log)
	})
	t.Run("WeCom errmsg on the misconfigured page", func(t *testing.T) {
		log, b := watch(t)
		op.h.sim.FailNext("auth/getuserinfo", 60020)
		failedLogin(t, b, authParams(cWeb), "xss", http.StatusBadGateway)
		noLiveMarkup(t, log)
	})
	t.Run("WeCom errmsg when gettoken fails", func(t *testing.T) {
		log, b := watch(t)
		op.h.sim.InvalidateTokens(40014)
		op.h.sim.FailNext("gettoken", 40001)
		_, page := startAt(t, op, b, authParams(cWeb))
		res, _ := b.follow(clickMember(t, page, "xss"), isAppURL)
		drain(res)
		noLiveMarkup(t, log)
	})
	t.Run("WeCom errmsg of user/get", func(t *testing.T) {
		log, b := watch(t)
		op.h.sim.FailNext("user/get", 60011)
		_, page := startAt(t, op, b, authParams(cWeb))
		res, _ := b.follow(clickMember(t, page, "xss"), isAppURL)
		drain(res)
		noLiveMarkup(t, log)
	})
	t.Run("not-visible page", func(t *testing.T) {
		log, b := watch(t)
		op.h.sim.SetVisible("xss", false)
		defer op.h.sim.SetVisible("xss", true)
		failedLogin(t, b, authParams(cWeb), "xss", http.StatusForbidden)
		noLiveMarkup(t, log)
	})
	t.Run("ui_locales and login_hint on a page", func(t *testing.T) {
		log, b := watch(t)
		op.h.sim.FailNext("auth/getuserinfo", 47001)
		failedLogin(t, b, authParams(cWeb, "ui_locales", payload, "login_hint", payload, "claims_locales", payload), "xss", http.StatusServiceUnavailable)
		noLiveMarkup(t, log)
	})
	t.Run("state, nonce and other request parameters", func(t *testing.T) {
		o := op.with(t)
		log, b := watch(t)
		v := authParams(cWeb, "state", payload, "nonce", payload, "acr_values", payload, "display", payload,
			"claims_locales", payload, "ui_locales", payload, "login_hint", payload, "idp_hint", payload)
		o.tokenOK(o.exchange(cWeb, authBasic, o.authResponse(o.authorize(b, v, "xss"), cWeb, v), ""))
		noLiveMarkup(t, log)
	})
	t.Run("state in a form_post response", func(t *testing.T) {
		o := op.with(t)
		log, b := watch(t)
		o.login(b, cWeb, "xss")
		res, loc := b.follow(o.authorizeURL(authParams(cWeb, "state", payload, "response_mode", "form_post")), isAppURL)
		body := readBody(t, res)
		if loc != nil || res.StatusCode != http.StatusOK || !strings.Contains(body, "<form") {
			t.Fatalf("want the form_post page; status %d, sent to %v", res.StatusCode, loc)
		}
		if !strings.Contains(body, "&lt;script&gt;alert(1)&lt;/script&gt;") {
			t.Errorf("the state is not on the form_post page, escaped: the test proves nothing\n%.600s", body)
		}
		noLiveMarkup(t, log)
	})
	t.Run("error and error_description at the return link", func(t *testing.T) {
		log, b := watch(t)
		id, page := startAt(t, op, b, authParams(cWeb))
		drain(page)
		res := b.get(op.h.issuer + "/login/return?" + url.Values{"authRequestID": {id}, "error": {payload}, "error_description": {payload}}.Encode())
		drain(res)
		res = b.get(op.h.issuer + "/login/return?" + url.Values{"authRequestID": {id}, "error": {"access_denied"}, "error_description": {payload}}.Encode())
		drain(res)
		if loc, _ := url.Parse(res.Header.Get("Location")); loc == nil || strings.Contains(loc.Query().Get("error_description"), "alert") {
			t.Errorf("the payload reached the application: %q", res.Header.Get("Location"))
		}
		noLiveMarkup(t, log)
	})
	t.Run("every parameter of the error pages", func(t *testing.T) {
		log, b := watch(t)
		pq := url.QueryEscape(payload)
		for _, raw := range []string{
			op.h.issuer + "/login?authRequestID=" + pq + "&upstream=" + pq,
			op.h.issuer + "/login/wecom/callback?state=" + pq + "&code=" + pq,
			op.h.issuer + "/login/wecom/callback?state=" + alnumState() + "&code=" + pq,
			op.h.issuer + "/login/return?authRequestID=" + pq + "&error=" + pq,
			op.h.issuer + "/authorize/callback?id=" + pq,
			op.h.issuer + "/logged-out?state=" + pq,
			op.meta.AuthorizationEndpoint + "?client_id=" + pq + "&redirect_uri=" + pq + "&state=" + pq,
			op.meta.AuthorizationEndpoint + "?client_id=web&redirect_uri=" + pq + "&response_type=" + pq + "&scope=" + pq,
			op.authorizeURL(authParams(cWeb, "response_type", payload, "state", payload)),
			op.authorizeURL(authParams(cWeb, "scope", payload)),
			op.authorizeURL(authParams(cWeb, "prompt", payload)),
			op.authorizeURL(authParams(cWeb, "max_age", payload)),
			op.authorizeURL(authParams(cWeb, "response_mode", payload)),
			op.authorizeURL(authParams(cWeb, "code_challenge", payload, "code_challenge_method", payload)),
			op.authorizeURL(authParams(cWeb, "id_token_hint", payload)),
			op.authorizeURL(authParams(cWeb, "request", payload)),
			op.meta.EndSessionEndpoint + "?state=" + pq,
			op.meta.EndSessionEndpoint + "?client_id=web&post_logout_redirect_uri=" + pq + "&state=" + pq,
			op.meta.EndSessionEndpoint + "?id_token_hint=" + pq + "&ui_locales=" + pq + "&logout_hint=" + pq,
			op.meta.EndSessionEndpoint + "?client_id=" + pq,
		} {
			if _, to := b.follow(raw, isAppURL); to != nil && strings.Contains(to.String(), "alert") && to.Host != "rp.example.com" {
				t.Errorf("%s sent the browser to %s", raw, to)
			}
		}
		noLiveMarkup(t, log)
	})
	t.Run("chooser with hostile upstream names", func(t *testing.T) {
		chooser := newConfOP(t, harnessOptions{
			corps:         []func(*wecomsim.Config){nil, nil},
			subject:       "{corp_id}.{userid}",
			upstreamNames: [][2]string{{xssPayloads[0], xssPayloads[1]}, {xssPayloads[1], xssPayloads[2]}},
		})
		for _, lang := range []string{"zh", "en"} {
			log := newResponseLog(chooser.h.issuer, nil)
			b := watchedBrowser(t, log)
			_, page := startAt(t, chooser, b, authParams(cWeb, "ui_locales", lang))
			body := readBody(t, page)
			if !strings.Contains(body, "upstream-corp-a") {
				t.Fatalf("not the chooser:\n%.300s", body)
			}
			if !strings.Contains(body, "&lt;img src=x onerror=alert(1)&gt;") {
				t.Errorf("the hostile name is not on the chooser, escaped: the test proves nothing\n%.600s", body)
			}
			noLiveMarkup(t, log)
		}
	})
}

// ---------------------------------------------------------------------------------------------
// 9. Security headers
// ---------------------------------------------------------------------------------------------

// TestAttackSecurityHeaders: every page the provider renders — our own and the OP library's —
// forbids framing (clickjacking) and scripts and sniffing, and sends no referrer; token and
// userinfo answers are never cached.
//
// Defences: securityHeaders (provider.go) on /login*, renderPage (pages.go) on every page we
// render, wherever it is reached from; the token-endpoint Cache-Control in clientEndpoint /
// intercept (interceptors.go). The OP library's own error pages (/authorize with an unknown
// client or redirect URI: op.AuthRequestError → http.Error) and its form_post page are pages too,
// and have no such headers unless the provider adds them.
func TestAttackSecurityHeaders(t *testing.T) {
	silenceLibraryLogs(t)
	op := newConfOP(t, harnessOptions{})
	log := newResponseLog(op.h.issuer, nil)
	page := func(t *testing.T, b *browser, raw string, wantStatus int) seen {
		t.Helper()
		res, loc := b.follow(raw, isAppURL)
		drain(res)
		if loc != nil || res.StatusCode != wantStatus {
			t.Fatalf("%s: status %d, sent to %v; want a page with status %d", raw, res.StatusCode, loc, wantStatus)
		}
		all := log.responses()
		return all[len(all)-1]
	}
	pageAfterClick := func(t *testing.T, b *browser, user string, wantStatus int) seen {
		t.Helper()
		_, wecom := startAt(t, op, b, authParams(cWeb))
		return page(t, b, clickMember(t, wecom, user), wantStatus)
	}
	for _, tt := range []struct {
		name string
		get  func(t *testing.T, b *browser) seen
	}{
		{"login error page", func(t *testing.T, b *browser) seen {
			return page(t, b, op.h.issuer+"/login?authRequestID=nope", http.StatusBadRequest)
		}},
		{"WeCom callback error page", func(t *testing.T, b *browser) seen {
			return page(t, b, op.h.issuer+"/login/wecom/callback?state=nope&code=x", http.StatusBadRequest)
		}},
		{"return link error page", func(t *testing.T, b *browser) seen {
			return page(t, b, op.h.issuer+"/login/return?authRequestID=nope&error=access_denied", http.StatusBadRequest)
		}},
		{"authorize callback error page", func(t *testing.T, b *browser) seen {
			return page(t, b, op.h.issuer+"/authorize/callback?id=nope", http.StatusBadRequest)
		}},
		{"logged-out page", func(t *testing.T, b *browser) seen {
			return page(t, b, op.h.issuer+"/logged-out", http.StatusOK)
		}},
		{"logged-out page after end_session", func(t *testing.T, b *browser) seen {
			return page(t, b, op.meta.EndSessionEndpoint, http.StatusOK)
		}},
		{"upstream unavailable page", func(t *testing.T, b *browser) seen {
			op.h.sim.FailNext("auth/getuserinfo", 47001)
			return pageAfterClick(t, b, "zhangsan", http.StatusServiceUnavailable)
		}},
		{"upstream misconfigured page", func(t *testing.T, b *browser) seen {
			op.h.sim.FailNext("auth/getuserinfo", 60020)
			return pageAfterClick(t, b, "zhangsan", http.StatusBadGateway)
		}},
		{"not-visible page", func(t *testing.T, b *browser) seen {
			op.h.sim.SetVisible("lisi", false)
			defer op.h.sim.SetVisible("lisi", true)
			return pageAfterClick(t, b, "lisi", http.StatusForbidden)
		}},
		{"authorize error page: unknown client", func(t *testing.T, b *browser) seen {
			return page(t, b, op.meta.AuthorizationEndpoint+"?client_id=nope&redirect_uri="+url.QueryEscape(webRedirect)+"&response_type=code&scope=openid", http.StatusBadRequest)
		}},
		{"authorize error page: unregistered redirect_uri", func(t *testing.T, b *browser) seen {
			return page(t, b, op.authorizeURL(authParams(cWeb, "redirect_uri", "https://evil.example/")), http.StatusBadRequest)
		}},
		{"authorize error page: no redirect_uri", func(t *testing.T, b *browser) seen {
			return page(t, b, op.authorizeURL(authParams(cWeb, "redirect_uri", "")), http.StatusBadRequest)
		}},
		{"authorize error page: no client_id", func(t *testing.T, b *browser) seen {
			return page(t, b, op.authorizeURL(authParams(cWeb, "client_id", "")), http.StatusBadRequest)
		}},
		{"form_post response page", func(t *testing.T, b *browser) seen {
			op.with(t).login(b, cWeb, "zhangsan")
			return page(t, b, op.authorizeURL(authParams(cWeb, "response_mode", "form_post")), http.StatusOK)
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := tt.get(t, watchedBrowser(t, log))
			checkPageHeaders(t, tt.name, s)
		})
	}
	t.Run("chooser page", func(t *testing.T) {
		chooser := newConfOP(t, harnessOptions{corps: []func(*wecomsim.Config){nil, nil}, subject: "{corp_id}.{userid}"})
		clog := newResponseLog(chooser.h.issuer, nil)
		_, res := startAt(t, chooser, watchedBrowser(t, clog), authParams(cWeb))
		drain(res)
		all := clog.responses()
		checkPageHeaders(t, "chooser", all[len(all)-1])
	})
	noStore := func(t *testing.T, what string, h http.Header) {
		t.Helper()
		if cc := strings.ToLower(h.Get("Cache-Control")); !strings.Contains(cc, "no-store") {
			t.Errorf("%s: Cache-Control %q, want no-store", what, h.Get("Cache-Control"))
		}
	}
	t.Run("token and userinfo answers are not cached", func(t *testing.T) {
		o := op.with(t)
		f := o.login(newBrowser(t, desktopUA), cWeb, "zhangsan", "scope", "openid offline_access")
		noStore(t, "token response", f.tokens.header)
		r := o.refresh(cWeb, authBasic, f.tokens.RefreshToken)
		o.refreshOK(r)
		noStore(t, "refresh response", r.header)
		noStore(t, "token error", o.refresh(cWeb, authBasic, "nope").header)
		for _, how := range []string{"get", "post-header", "post-body"} {
			_, h, _ := o.userinfo(how, r.AccessToken)
			noStore(t, "userinfo ("+how+")", h)
		}
		_, h, _ := o.userinfo("get", "nope")
		noStore(t, "userinfo error", h)
		// Not required by RFC 7662, noted for the record: introspection answers carry the person's claims.
		res, _ := o.postForm(o.meta.IntrospectionEndpoint, cWeb, authBasic, url.Values{"token": {r.AccessToken}}, nil)
		t.Logf("introspection Cache-Control: %q", res.Header.Get("Cache-Control"))
	})
}

// ---------------------------------------------------------------------------------------------
// 10. Cookies
// ---------------------------------------------------------------------------------------------

// cookiesSet returns every cookie the logged responses set.
func cookiesSet(log *responseLog) []*http.Cookie {
	var out []*http.Cookie
	for _, s := range log.responses() {
		out = append(out, (&http.Response{Header: s.header}).Cookies()...)
	}
	return out
}

// TestAttackCookieAttributes: every cookie the provider sets — the browser binding, the session,
// and the expiring session cookie at logout — is HttpOnly, SameSite=Lax, host-only, and Secure
// when the issuer is https (checked through a TLS-terminating proxy, as deployed).
//
// Defence: (*Provider).cookie (login.go), used for every Set-Cookie, with secure from the
// issuer's scheme (provider.go New); expireOnRedirect (interceptors.go) uses it too.
func TestAttackCookieAttributes(t *testing.T) {
	silenceLibraryLogs(t)
	run := func(t *testing.T, h *harness, client *http.Client, issuer string, wantSecure bool) {
		disc, err := client.Get(issuer + "/.well-known/openid-configuration")
		if err != nil {
			t.Fatal(err)
		}
		var meta struct {
			Authorization string `json:"authorization_endpoint"`
			EndSession    string `json:"end_session_endpoint"`
		}
		if err := json.Unmarshal([]byte(readBody(t, disc)), &meta); err != nil {
			t.Fatal(err)
		}
		log := newResponseLog(issuer, client.Transport)
		b := watchedBrowser(t, log)
		v := authParams(cWeb)
		pkce(v)
		h.signIn(b, meta.Authorization+"?"+v.Encode(), cWeb.redirect, "zhangsan")
		v = authParams(cWeb, "prompt", "login") // a new session replaces the old
		pkce(v)
		h.signIn(b, meta.Authorization+"?"+v.Encode(), cWeb.redirect, "lisi")
		res, _ := b.follow(meta.EndSession, func(*url.URL) bool { return false })
		drain(res)
		cookies := cookiesSet(log)
		names := map[string]int{}
		for _, c := range cookies {
			names[c.Name]++
			if !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Secure != wantSecure || c.Domain != "" {
				t.Errorf("cookie %s: HttpOnly=%v SameSite=%v Secure=%v Domain=%q; want HttpOnly, Lax, Secure=%v, host-only",
					c.Name, c.HttpOnly, c.SameSite, c.Secure, c.Domain, wantSecure)
			}
		}
		if names["wecom_oidc_browser"] == 0 || names["wecom_oidc_session"] < 3 {
			t.Fatalf("cookies set: %v; want the browser cookie, two sessions and the logout's expiry", names)
		}
		t.Logf("%d Set-Cookie headers checked: %v", len(cookies), names)
	}
	t.Run("https issuer behind a TLS proxy", func(t *testing.T) {
		var target *url.URL
		proxy := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			httputil.NewSingleHostReverseProxy(target).ServeHTTP(w, r)
		}))
		t.Cleanup(proxy.Close)
		h := newHarness(t, harnessOptions{issuer: proxy.URL})
		target, _ = url.Parse(h.backend)
		run(t, h, proxy.Client(), proxy.URL, true)
	})
	t.Run("http loopback issuer", func(t *testing.T) {
		h := newHarness(t, harnessOptions{})
		run(t, h, &http.Client{Transport: http.DefaultTransport}, h.issuer, false)
	})
}

// ---------------------------------------------------------------------------------------------
// 11. Client-secret brute force
// ---------------------------------------------------------------------------------------------

// TestAttackClientSecretBruteForce: failed client authentication is rate-limited per client id
// and per remote address — after 10 failures within a minute further attempts get 429 with
// Retry-After, the right secret included, until the window passes; successes do not count; other
// clients and addresses are unaffected.
//
// Defence: limitAuthFailures / failureLimiter (ratelimit.go), wrapped around the token,
// introspection and revocation endpoints in intercept (interceptors.go). Without it every wrong
// secret is an unthrottled guess.
func TestAttackClientSecretBruteForce(t *testing.T) {
	silenceLibraryLogs(t)
	const limit = 10
	// attempt authenticates as id with secret at the token endpoint with a refresh token that
	// does not exist: the right secret gives 400 invalid_grant, a wrong one 401 invalid_client.
	// (The code grant is no oracle: the library looks the code up before it authenticates the
	// client, so a made-up code is invalid_grant whatever the secret.)
	attempt := func(t *testing.T, op *confOP, from *http.Client, id, secret string) (int, http.Header) {
		t.Helper()
		form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"no-such-token"}}
		status, h, _ := postTo(t, from, op.meta.TokenEndpoint, form, id, secret)
		return status, h
	}
	fail := func(t *testing.T, op *confOP, from *http.Client, id string, n int) {
		t.Helper()
		for i := range n {
			if status, _ := attempt(t, op, from, id, "wrong-secret-0123456789"); status != http.StatusUnauthorized {
				t.Fatalf("failure %d for %s: status %d, want 401", i+1, id, status)
			}
		}
	}
	// failUnknown fails to authenticate as a client id that does not exist, at introspection.
	failUnknown := func(t *testing.T, op *confOP, from *http.Client, id string) {
		t.Helper()
		if status, _, _ := postTo(t, from, op.meta.IntrospectionEndpoint, url.Values{"token": {"x"}}, id, "x"); status != http.StatusUnauthorized {
			t.Fatalf("unknown client %s: status %d, want 401", id, status)
		}
	}
	limited := func(t *testing.T, status int, h http.Header, what string) {
		t.Helper()
		if status != http.StatusTooManyRequests {
			t.Errorf("%s: status %d, want 429", what, status)
			return
		}
		secs, err := strconv.Atoi(h.Get("Retry-After"))
		if err != nil || secs < 1 || secs > 61 {
			t.Errorf("%s: Retry-After %q, want seconds within the minute", what, h.Get("Retry-After"))
		}
	}
	allowed := func(t *testing.T, status int, what string) {
		t.Helper()
		if status != http.StatusBadRequest {
			t.Errorf("%s: status %d, want 400 invalid_grant (authenticated, not limited)", what, status)
		}
	}
	a, b, c := clientFrom("127.0.0.2"), clientFrom("127.0.0.3"), clientFrom("127.0.0.4")

	t.Run("client locked after 10 failures, even with the right secret", func(t *testing.T) {
		op := newConfOP(t, harnessOptions{})
		fail(t, op, a, webClientID, limit)
		status, h := attempt(t, op, a, webClientID, webClientSecret)
		limited(t, status, h, "right secret from the attacking address")
		status, h = attempt(t, op, b, webClientID, webClientSecret)
		limited(t, status, h, "right secret from another address")
		status, h = attempt(t, op, b, webClientID, "wrong-secret-0123456789")
		limited(t, status, h, "wrong secret from another address")
		status, _ = attempt(t, op, c, otherClientID, webClientSecret)
		allowed(t, status, "another client from another address")
	})
	t.Run("address locked after failures across client ids", func(t *testing.T) {
		op := newConfOP(t, harnessOptions{})
		for i := range limit {
			failUnknown(t, op, a, fmt.Sprintf("ghost-%d", i))
		}
		status, h := attempt(t, op, a, otherClientID, webClientSecret)
		limited(t, status, h, "another client from the attacking address")
		status, _ = attempt(t, op, b, otherClientID, webClientSecret)
		allowed(t, status, "the same client from another address")
		status, _ = attempt(t, op, b, webClientID, webClientSecret)
		allowed(t, status, "web from another address")
	})
	t.Run("client locked by failures from many addresses", func(t *testing.T) {
		op := newConfOP(t, harnessOptions{})
		for i := range limit {
			fail(t, op, clientFrom(fmt.Sprintf("127.0.2.%d", i+1)), webClientID, 1)
		}
		status, h := attempt(t, op, c, webClientID, webClientSecret)
		limited(t, status, h, "right secret from a fresh address")
	})
	t.Run("successes do not count", func(t *testing.T) {
		op := newConfOP(t, harnessOptions{})
		for i := range 3 * limit {
			if status, _ := attempt(t, op, a, webClientID, webClientSecret); status != http.StatusBadRequest {
				t.Fatalf("success %d: status %d, want 400 invalid_grant", i+1, status)
			}
		}
		fail(t, op, a, webClientID, limit-1)
		status, _ := attempt(t, op, a, webClientID, webClientSecret)
		allowed(t, status, "after 30 successes and 9 failures")
		fail(t, op, a, webClientID, 1)
		status, h := attempt(t, op, a, webClientID, webClientSecret)
		limited(t, status, h, "after the 10th failure")
	})
	t.Run("the lock ends with the window", func(t *testing.T) {
		op := newConfOP(t, harnessOptions{})
		fail(t, op, a, webClientID, limit)
		status, h := attempt(t, op, a, webClientID, webClientSecret)
		limited(t, status, h, "locked")
		op.clock.Advance(30 * time.Second)
		status, h = attempt(t, op, a, webClientID, webClientSecret)
		limited(t, status, h, "half a minute later")
		op.clock.Advance(31 * time.Second)
		status, _ = attempt(t, op, a, webClientID, webClientSecret)
		allowed(t, status, "after the window")
	})
	t.Run("failures at every client-authenticating endpoint count", func(t *testing.T) {
		op := newConfOP(t, harnessOptions{})
		for i := range limit {
			endpoint := op.meta.IntrospectionEndpoint
			if i%2 == 1 {
				endpoint = op.meta.RevocationEndpoint
			}
			if status, _, _ := postTo(t, a, endpoint, url.Values{"token": {"x"}}, webClientID, "wrong-secret-0123456789"); status != http.StatusUnauthorized {
				t.Fatalf("failure %d at %s: status %d, want 401", i+1, endpoint, status)
			}
		}
		status, h := attempt(t, op, b, webClientID, webClientSecret)
		limited(t, status, h, "token endpoint after failures at introspection and revocation")
		status, h, _ = postTo(t, b, op.meta.IntrospectionEndpoint, url.Values{"token": {"x"}}, webClientID, webClientSecret)
		limited(t, status, h, "introspection")
	})
	t.Run("client_secret_post failures count", func(t *testing.T) {
		op := newConfOP(t, harnessOptions{})
		form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"x"},
			"client_id": {webClientID}, "client_secret": {"wrong-secret-0123456789"}}
		for i := range limit {
			if status, _, _ := postTo(t, a, op.meta.TokenEndpoint, form, "", ""); status != http.StatusUnauthorized {
				t.Fatalf("failure %d: status %d, want 401", i+1, status)
			}
		}
		status, h := attempt(t, op, b, webClientID, webClientSecret)
		limited(t, status, h, "Basic with the right secret after client_secret_post failures")
	})
	t.Run("a client refused for another reason than its credentials is not counted", func(t *testing.T) {
		// B authenticates correctly and asks to revoke A's access token; the provider refuses
		// (401 invalid_client, "the token was not issued to this client"). That is not a failed
		// authentication: B must not lock itself (or its address) out by it.
		op := newConfOP(t, harnessOptions{})
		f := op.login(newBrowser(t, desktopUA), cWeb, "zhangsan")
		for range limit {
			postTo(t, a, op.meta.RevocationEndpoint, url.Values{"token": {f.tokens.AccessToken}}, otherClientID, webClientSecret)
		}
		status, _ := attempt(t, op, b, otherClientID, webClientSecret)
		allowed(t, status, "client other after revoking another client's token 10 times")
		status, _ = attempt(t, op, a, webClientID, webClientSecret)
		allowed(t, status, "client web from the address that revoked")
	})
	t.Run("unknown client id at the refresh grant is invalid_client and counts", func(t *testing.T) {
		// A made-up client id must answer like a wrong secret: 401 invalid_client (RFC 6749
		// §5.2), counted. Otherwise the answer tells which client ids exist, and guesses of ids
		// escape the per-address limit.
		op := newConfOP(t, harnessOptions{})
		status, _, body := postTo(t, a, op.meta.TokenEndpoint, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"x"}}, "ghost", "x")
		if status != http.StatusUnauthorized || body["error"] != "invalid_client" {
			t.Errorf("unknown client id: status %d %v; want 401 invalid_client, as for a wrong secret", status, body)
		}
		if d, _ := body["error_description"].(string); strings.Contains(d, "storage") || strings.Contains(d, "ghost") {
			t.Errorf("the answer shows internals: %q", d)
		}
		for i := 1; i < limit; i++ {
			postTo(t, a, op.meta.TokenEndpoint, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"x"}}, fmt.Sprintf("ghost-%d", i), "x")
		}
		status, h := attempt(t, op, a, webClientID, webClientSecret)
		limited(t, status, h, "the address after 10 unknown client ids at the refresh grant")
	})
	t.Run("behind the documented reverse proxy, one attacker does not lock out everyone", func(t *testing.T) {
		// docs/operations.md deploys the provider behind nginx on 127.0.0.1 with
		// X-Forwarded-For; every request then comes from the proxy's address. An attacker failing
		// with made-up client ids must not lock out every other client of the provider.
		var target *url.URL
		proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			httputil.NewSingleHostReverseProxy(target).ServeHTTP(w, r) // sets X-Forwarded-For
		}))
		t.Cleanup(proxy.Close)
		h := newHarness(t, harnessOptions{issuer: proxy.URL})
		target, _ = url.Parse(h.backend)
		op := &confOP{t: t, h: h}
		op.meta.TokenEndpoint = proxy.URL + "/oauth/token"
		op.meta.IntrospectionEndpoint = proxy.URL + "/oauth/introspect"
		if status, _ := attempt(t, op, b, otherClientID, webClientSecret); status != http.StatusBadRequest {
			t.Fatalf("control through the proxy: status %d, want 400", status)
		}
		for i := range limit {
			failUnknown(t, op, a, fmt.Sprintf("ghost-%d", i))
		}
		status, _ := attempt(t, op, b, otherClientID, webClientSecret)
		allowed(t, status, "another client, from another address, through the same proxy")
	})
}

// refusedWhileSending reports a request the server answered and closed before reading its whole
// body (an early 413): the client sees its write fail.
func refusedWhileSending(err error) bool {
	return err != nil && (errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		strings.Contains(err.Error(), "connection reset") || strings.Contains(err.Error(), "broken pipe"))
}
