package provider_test

// Helpers for the conformance suite (conformance_test.go): the OpenID Foundation's test modules
// replayed against a real provider, the way the certification suite drives an OP — a browser with
// cookies, raw HTTP to every endpoint, and ID tokens checked against the published keys.

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	gooidc "github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/oidc"

	"github.com/wecom-oidc/wecom-oidc/storage"
)

// testClock is the provider's clock in conformance tests: real time plus an offset that a test
// moves forward instead of sleeping.
type testClock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
}

// confClient is a registered client as the suite knows it.
type confClient struct {
	id, secret, redirect string
	postLogout           string // a registered post_logout_redirect_uri, if any
}

var (
	cWeb   = confClient{id: webClientID, secret: webClientSecret, redirect: webRedirect}
	cOther = confClient{id: otherClientID, secret: webClientSecret, redirect: otherRedirect}
	cSPA   = confClient{id: spaClientID, redirect: spaRedirect}
	// cLogout is registered for the RP-initiated logout plan, with a post-logout redirect URI.
	cLogout = confClient{
		id: "logout-rp", secret: "logout-rp-secret-0123456789abcdef",
		redirect: "https://logout-rp.example/callback", postLogout: "https://logout-rp.example/post_logout_redirect",
	}
)

func (c confClient) record() storage.Client {
	sc := storage.Client{ID: c.id, RedirectURIs: []string{c.redirect}, IDTokenClaims: true}
	if c.secret == "" {
		sc.Public = true
	} else {
		sc.SecretHash = storage.HashSecret(c.secret)
	}
	if c.postLogout != "" {
		sc.PostLogoutRedirectURIs = []string{c.postLogout}
	}
	return sc
}

// confOP is one provider under test, as the suite sees it: its discovery document, a clock the
// test may move, and the simulated WeCom behind it.
type confOP struct {
	t     *testing.T
	h     *harness
	clock *testClock
	meta  oidc.DiscoveryConfiguration
	raw   map[string]any // the discovery document as sent
	// discoveryResponse is the HTTP response discovery came in (body consumed).
	discoveryResponse *http.Response
	verifier          *gooidc.IDTokenVerifier
	keys              *gooidc.Provider
}

// newConfOP starts a fresh provider (database, keys, simulated WeCom) and reads its discovery
// document. The logout client is always registered; opts may add more.
func newConfOP(t *testing.T, opts harnessOptions) *confOP {
	t.Helper()
	clock := &testClock{}
	if opts.now == nil {
		opts.now = clock.Now
	}
	opts.clients = append(opts.clients, cLogout.record())
	h := newHarness(t, opts)
	op := &confOP{t: t, h: h, clock: clock}

	res, err := http.Get(h.issuer + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	body := readBody(t, res)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("discovery: status %d: %s", res.StatusCode, body)
	}
	op.discoveryResponse = res
	if err := json.Unmarshal([]byte(body), &op.raw); err != nil {
		t.Fatalf("discovery is not JSON: %v\n%s", err, body)
	}
	if err := json.Unmarshal([]byte(body), &op.meta); err != nil {
		t.Fatalf("discovery does not decode: %v", err)
	}
	op.keys, err = gooidc.NewProvider(context.Background(), h.issuer)
	if err != nil {
		t.Fatalf("go-oidc discovery: %v", err)
	}
	return op
}

// wecomPages is how many times the simulated WeCom's login pages were opened.
func (op *confOP) wecomPages() int {
	return op.h.sim.Calls("wwlogin/sso/login") + op.h.sim.Calls("connect/oauth2/authorize")
}

// authParams is an authorization request for client c: response_type=code, scope=openid, a fresh
// state and nonce. kv are overrides, name then value; an empty value removes the parameter.
func authParams(c confClient, kv ...string) url.Values {
	v := url.Values{
		"response_type": {"code"},
		"client_id":     {c.id},
		"redirect_uri":  {c.redirect},
		"scope":         {"openid"},
		"state":         {randomString()},
		"nonce":         {randomString()},
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "" {
			v.Del(kv[i])
		} else {
			v.Set(kv[i], kv[i+1])
		}
	}
	return v
}

func (op *confOP) authorizeURL(v url.Values) string {
	return op.meta.AuthorizationEndpoint + "?" + v.Encode()
}

// authorize runs the authorization request v in browser b. When the provider shows the WeCom
// login page, user is clicked (with user "" the test fails there). It returns where the browser
// was finally sent outside the provider (the client's redirect URI, normally).
func (op *confOP) authorize(b *browser, v url.Values, user string) *url.URL {
	op.t.Helper()
	res, loc := op.followToApp(b, op.authorizeURL(v))
	if loc != nil {
		return loc
	}
	if user == "" {
		op.t.Fatalf("expected a redirect to the client; got a page, status %d:\n%s", res.StatusCode, readBody(op.t, res))
	}
	if res.StatusCode != http.StatusOK {
		op.t.Fatalf("expected the WeCom login page; got status %d:\n%s", res.StatusCode, readBody(op.t, res))
	}
	res, loc = op.followToApp(b, clickMember(op.t, res, user))
	if loc == nil {
		op.t.Fatalf("login ended on a page (status %d), not at the client:\n%s", res.StatusCode, readBody(op.t, res))
	}
	return loc
}

// followToApp follows redirects from raw until a page is shown or the browser is sent to a
// registered client's redirect or post-logout URI (any https URL, or the spa's loopback one).
func (op *confOP) followToApp(b *browser, raw string) (*http.Response, *url.URL) {
	op.t.Helper()
	return b.follow(raw, isAppURL)
}

// isAppURL: every client redirect URI in these tests is https (never served) or the spa's
// loopback address; the provider and the simulated WeCom are plain http.
func isAppURL(u *url.URL) bool {
	return u.Scheme == "https" || strings.HasPrefix(u.String(), spaRedirect)
}

// authResponse checks what the client received at its redirect URI in the default response mode
// for code: parameters in the query, none in a fragment, no error, the state echoed. It returns
// the code.
func (op *confOP) authResponse(loc *url.URL, c confClient, v url.Values) string {
	op.t.Helper()
	if got := loc.Scheme + "://" + loc.Host + loc.Path; got != c.redirect {
		op.t.Fatalf("sent to %s, want the redirect URI %s", loc, c.redirect)
	}
	q := loc.Query()
	if e := q.Get("error"); e != "" {
		op.t.Fatalf("authorization error %s (%s)", e, q.Get("error_description"))
	}
	if loc.Fragment != "" {
		op.t.Errorf("response in the fragment (%q) for response_mode query", loc.Fragment)
	}
	if q.Get("code") == "" {
		op.t.Fatalf("no code at the redirect URI: %s", loc)
	}
	if q.Get("state") != v.Get("state") {
		op.t.Fatalf("state %q came back as %q", v.Get("state"), q.Get("state"))
	}
	// RFC 9207: a provider that advertises the iss parameter must send it, with its issuer.
	if op.raw["authorization_response_iss_parameter_supported"] == true && q.Get("iss") != op.h.issuer {
		op.t.Errorf("iss at the redirect URI = %q, want %q", q.Get("iss"), op.h.issuer)
	}
	return q.Get("code")
}

// authError checks an error response at the client's redirect URI and returns the error code.
func (op *confOP) authError(loc *url.URL, c confClient, v url.Values) string {
	op.t.Helper()
	if loc == nil {
		op.t.Fatal("no redirect to the client")
	}
	if got := loc.Scheme + "://" + loc.Host + loc.Path; got != c.redirect {
		op.t.Fatalf("sent to %s, want the redirect URI %s", loc, c.redirect)
	}
	q := loc.Query()
	if q.Get("code") != "" {
		op.t.Fatalf("got a code, want an error: %s", loc)
	}
	if q.Get("error") == "" {
		op.t.Fatalf("no error at the redirect URI: %s", loc)
	}
	if s := v.Get("state"); s != "" && q.Get("state") != s {
		op.t.Errorf("error response state = %q, want %q", q.Get("state"), s)
	}
	return q.Get("error")
}

// tokenAuth is how a client authenticates at the token endpoint.
type tokenAuth int

const (
	authBasic tokenAuth = iota // client_secret_basic
	authPost                   // client_secret_post
	authNone                   // public client: client_id only
)

// tokenResponse is a token endpoint answer, success or error.
type tokenResponse struct {
	status       int
	header       http.Header
	body         map[string]any
	AccessToken  string
	TokenType    string
	IDToken      string
	RefreshToken string
	Error        string
}

// postForm POSTs a form to endpoint, with client authentication per auth.
func (op *confOP) postForm(endpoint string, c confClient, auth tokenAuth, form url.Values, header http.Header) (*http.Response, string) {
	op.t.Helper()
	form = cloneForm(form)
	switch auth {
	case authPost:
		form.Set("client_id", c.id)
		form.Set("client_secret", c.secret)
	case authNone:
		form.Set("client_id", c.id)
	}
	req, err := http.NewRequest(http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		op.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for k, vs := range header {
		req.Header[k] = vs
	}
	if auth == authBasic {
		req.SetBasicAuth(url.QueryEscape(c.id), url.QueryEscape(c.secret))
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		op.t.Fatalf("POST %s: %v", endpoint, err)
	}
	return res, readBody(op.t, res)
}

func cloneForm(v url.Values) url.Values {
	out := url.Values{}
	for k, vs := range v {
		out[k] = slices.Clone(vs)
	}
	return out
}

// token calls the token endpoint.
func (op *confOP) token(c confClient, auth tokenAuth, form url.Values) tokenResponse {
	op.t.Helper()
	res, body := op.postForm(op.meta.TokenEndpoint, c, auth, form, nil)
	tr := tokenResponse{status: res.StatusCode, header: res.Header}
	if err := json.Unmarshal([]byte(body), &tr.body); err != nil {
		op.t.Fatalf("token endpoint: status %d, not JSON: %s", res.StatusCode, body)
	}
	tr.AccessToken, _ = tr.body["access_token"].(string)
	tr.TokenType, _ = tr.body["token_type"].(string)
	tr.IDToken, _ = tr.body["id_token"].(string)
	tr.RefreshToken, _ = tr.body["refresh_token"].(string)
	tr.Error, _ = tr.body["error"].(string)
	return tr
}

// exchange redeems a code; verifier is the PKCE code_verifier ("" when none was used).
func (op *confOP) exchange(c confClient, auth tokenAuth, code, verifier string) tokenResponse {
	op.t.Helper()
	form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {c.redirect}}
	if verifier != "" {
		form.Set("code_verifier", verifier)
	}
	return op.token(c, auth, form)
}

// refresh uses a refresh token.
func (op *confOP) refresh(c confClient, auth tokenAuth, refreshToken string) tokenResponse {
	op.t.Helper()
	return op.token(c, auth, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refreshToken}})
}

// tokenOK checks a successful token response to a code exchange (RFC 6749 §5.1, OIDC Core
// §3.1.3.3): it must carry an ID token.
func (op *confOP) tokenOK(tr tokenResponse) {
	op.t.Helper()
	op.refreshOK(tr)
	if tr.IDToken == "" {
		op.t.Fatal("no id_token in the token response")
	}
}

// refreshOK checks a successful token response, where an ID token is optional (OIDC Core §12.2).
func (op *confOP) refreshOK(tr tokenResponse) {
	op.t.Helper()
	if tr.status != http.StatusOK {
		op.t.Fatalf("token endpoint: status %d: %v", tr.status, tr.body)
	}
	if ct := tr.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		op.t.Errorf("token response Content-Type %q", ct)
	}
	if tr.AccessToken == "" || !strings.EqualFold(tr.TokenType, "Bearer") {
		op.t.Fatalf("token response access_token/token_type = %q/%q", tr.AccessToken, tr.TokenType)
	}
	if exp, ok := tr.body["expires_in"].(float64); ok && exp <= 0 {
		op.t.Errorf("expires_in = %v", exp)
	}
}

// tokenError checks an error from the token endpoint and returns its code.
func (op *confOP) tokenError(tr tokenResponse, want string) {
	op.t.Helper()
	if tr.status == http.StatusOK || tr.AccessToken != "" {
		op.t.Fatalf("token endpoint succeeded (status %d), want %s", tr.status, want)
	}
	if tr.Error != want {
		op.t.Fatalf("token endpoint error %q (status %d, %v), want %s", tr.Error, tr.status, tr.body, want)
	}
	wantStatus := http.StatusBadRequest
	if want == "invalid_client" {
		wantStatus = http.StatusUnauthorized
	}
	if tr.status != wantStatus {
		op.t.Errorf("token endpoint %s with status %d, want %d", want, tr.status, wantStatus)
	}
}

// idToken is a verified ID token.
type idToken struct {
	raw    string
	header map[string]any
	claims map[string]any
}

func (t idToken) str(name string) string { s, _ := t.claims[name].(string); return s }

func (t idToken) num(name string) int64 { f, _ := t.claims[name].(float64); return int64(f) }

// checkIDToken is the suite's standard ID token checks (OIDC Core §3.1.3.7): signature with a key
// from jwks_uri, RS256 with a kid, iss, aud, azp, exp, iat, sub, nonce. nonce "" means the
// request had none, so the token must have none.
func (op *confOP) checkIDToken(raw string, c confClient, nonce string) idToken {
	op.t.Helper()
	// The algorithm discovery advertises (RS256 unless keys.algorithm says otherwise).
	alg := "RS256"
	if algs := op.meta.IDTokenSigningAlgValuesSupported; len(algs) == 1 {
		alg = algs[0]
	}
	v := op.keys.Verifier(&gooidc.Config{ClientID: c.id, SupportedSigningAlgs: []string{alg}})
	if _, err := v.Verify(context.Background(), raw); err != nil {
		op.t.Fatalf("ID token does not verify (signature, iss, aud, exp): %v", err)
	}
	tok := idToken{raw: raw, header: jwtPart(op.t, raw, 0), claims: jwtPart(op.t, raw, 1)}
	if tok.header["alg"] != alg {
		op.t.Errorf("ID token alg = %v, want %s", tok.header["alg"], alg)
	}
	if kid, _ := tok.header["kid"].(string); kid == "" {
		op.t.Error("ID token header has no kid")
	}
	if tok.str("iss") != op.h.issuer {
		op.t.Errorf("iss = %q, want %q", tok.str("iss"), op.h.issuer)
	}
	aud := audience(tok.claims["aud"])
	if !slices.Contains(aud, c.id) {
		op.t.Errorf("aud = %v, want it to contain %s", aud, c.id)
	}
	if azp, ok := tok.claims["azp"]; (len(aud) > 1 || ok) && azp != c.id {
		op.t.Errorf("azp = %v with aud %v, want %s", azp, aud, c.id)
	}
	sub := tok.str("sub")
	if sub == "" || len(sub) > 255 {
		op.t.Errorf("sub = %q", sub)
	}
	now := time.Now().Unix()
	iat, exp := tok.num("iat"), tok.num("exp")
	if iat == 0 || iat > now+60 || iat < now-600 {
		op.t.Errorf("iat = %d, now %d", iat, now)
	}
	if exp <= iat {
		op.t.Errorf("exp %d not after iat %d", exp, iat)
	}
	if got, ok := tok.claims["nonce"]; nonce == "" && ok {
		op.t.Errorf("nonce %v in the ID token of a request without one", got)
	} else if nonce != "" && got != nonce {
		op.t.Errorf("nonce = %v, want %q", got, nonce)
	}
	if at, ok := tok.claims["auth_time"]; ok {
		if _, isNum := at.(float64); !isNum {
			op.t.Errorf("auth_time = %v, want a number", at)
		}
	}
	return tok
}

func audience(v any) []string {
	switch a := v.(type) {
	case string:
		return []string{a}
	case []any:
		return claimStrings(a)
	}
	return nil
}

// jwtPart decodes part i (0 header, 1 payload) of a compact JWS.
func jwtPart(t testing.TB, raw string, i int) map[string]any {
	t.Helper()
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		t.Fatalf("not a compact JWS: %q", raw)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[i])
	if err != nil {
		t.Fatalf("JWS part %d: %v", i, err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("JWS part %d: %v", i, err)
	}
	return m
}

// flow is one successful login and code exchange.
type flow struct {
	params url.Values
	loc    *url.URL
	tokens tokenResponse
	id     idToken
}

// codeFlow runs the authorization request v for client c in browser b (signing user in at WeCom
// when asked), checks the response, redeems the code with auth and checks the tokens. verifier is
// the PKCE code_verifier matching v's code_challenge, or "".
func (op *confOP) codeFlow(b *browser, c confClient, auth tokenAuth, v url.Values, user, verifier string) flow {
	op.t.Helper()
	loc := op.authorize(b, v, user)
	code := op.authResponse(loc, c, v)
	tr := op.exchange(c, auth, code, verifier)
	op.tokenOK(tr)
	return flow{params: v, loc: loc, tokens: tr, id: op.checkIDToken(tr.IDToken, c, v.Get("nonce"))}
}

// login is the plain happy flow for client c (client_secret_basic, or PKCE for a public client).
func (op *confOP) login(b *browser, c confClient, user string, kv ...string) flow {
	op.t.Helper()
	v := authParams(c, kv...)
	verifier, auth := "", authBasic
	if c.secret == "" {
		verifier, auth = pkce(v), authNone
	}
	return op.codeFlow(b, c, auth, v, user, verifier)
}

// pkce adds an S256 code_challenge to v and returns its verifier.
func pkce(v url.Values) string {
	verifier := randomString() + randomString() // 104 characters, within 43–128
	v.Set("code_challenge", oidc.NewSHACodeChallenge(verifier))
	v.Set("code_challenge_method", "S256")
	return verifier
}

// expectSilentError runs v in b and expects an error at c's redirect URI without the WeCom page.
func (op *confOP) expectSilentError(b *browser, c confClient, v url.Values, want string) {
	op.t.Helper()
	pages := op.wecomPages()
	res, loc := op.followToApp(b, op.authorizeURL(v))
	if loc == nil {
		op.t.Fatalf("want error=%s at the client; the browser stayed on a page (status %d)", want, res.StatusCode)
	}
	if got := op.authError(loc, c, v); got != want {
		op.t.Fatalf("error = %s (%s), want %s", got, loc.Query().Get("error_description"), want)
	}
	if op.wecomPages() != pages {
		op.t.Error("the WeCom login page was shown")
	}
}

// expectLoggedOut: prompt=none fails with login_required, as after a logout.
func (op *confOP) expectLoggedOut(b *browser, c confClient) {
	op.t.Helper()
	op.expectSilentError(b, c, authParams(c, "prompt", "none"), "login_required")
}

// expectLoggedIn: prompt=none succeeds without WeCom, for the same person.
func (op *confOP) expectLoggedIn(b *browser, c confClient, sub string) {
	op.t.Helper()
	pages := op.wecomPages()
	v := authParams(c, "prompt", "none")
	res, loc := op.followToApp(b, op.authorizeURL(v))
	if loc == nil {
		op.t.Fatalf("prompt=none: the browser stayed on a page (status %d), want a code", res.StatusCode)
	}
	if e := loc.Query().Get("error"); e != "" {
		op.t.Fatalf("prompt=none: error %s (%s): the session has ended", e, loc.Query().Get("error_description"))
	}
	code := op.authResponse(loc, c, v)
	tr := op.exchange(c, authBasic, code, "")
	op.tokenOK(tr)
	if id := op.checkIDToken(tr.IDToken, c, v.Get("nonce")); id.str("sub") != sub {
		op.t.Errorf("prompt=none signed in %q, want %q", id.str("sub"), sub)
	}
	if op.wecomPages() != pages {
		op.t.Error("prompt=none showed the WeCom login page")
	}
}

// userinfo calls the userinfo endpoint with the access token: "get" (Authorization header),
// "post-header" or "post-body" (access_token form parameter).
func (op *confOP) userinfo(how, accessToken string) (int, http.Header, map[string]any) {
	op.t.Helper()
	var req *http.Request
	var err error
	switch how {
	case "get":
		req, err = http.NewRequest(http.MethodGet, op.meta.UserinfoEndpoint, nil)
		if err == nil {
			req.Header.Set("Authorization", "Bearer "+accessToken)
		}
	case "post-header":
		req, err = http.NewRequest(http.MethodPost, op.meta.UserinfoEndpoint, nil)
		if err == nil {
			req.Header.Set("Authorization", "Bearer "+accessToken)
		}
	case "post-body":
		req, err = http.NewRequest(http.MethodPost, op.meta.UserinfoEndpoint,
			strings.NewReader(url.Values{"access_token": {accessToken}}.Encode()))
		if err == nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
	default:
		op.t.Fatalf("userinfo: unknown method %q", how)
	}
	if err != nil {
		op.t.Fatal(err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		op.t.Fatal(err)
	}
	body := readBody(op.t, res)
	var m map[string]any
	if res.StatusCode == http.StatusOK {
		if err := json.Unmarshal([]byte(body), &m); err != nil {
			op.t.Fatalf("userinfo is not JSON: %s", body)
		}
	}
	return res.StatusCode, res.Header, m
}

// userinfoOK checks a successful userinfo response for the ID token's subject.
func (op *confOP) userinfoOK(how string, f flow) map[string]any {
	op.t.Helper()
	status, header, info := op.userinfo(how, f.tokens.AccessToken)
	if status != http.StatusOK {
		op.t.Fatalf("userinfo (%s): status %d", how, status)
	}
	if ct := header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		op.t.Errorf("userinfo Content-Type %q, want application/json", ct)
	}
	if info["sub"] != f.id.str("sub") {
		op.t.Errorf("userinfo sub %v, ID token sub %q", info["sub"], f.id.str("sub"))
	}
	return info
}

// jwks fetches the provider's key set.
func (op *confOP) jwks() jose.JSONWebKeySet {
	op.t.Helper()
	res, err := http.Get(op.meta.JwksURI)
	if err != nil {
		op.t.Fatal(err)
	}
	body := readBody(op.t, res)
	if res.StatusCode != http.StatusOK {
		op.t.Fatalf("jwks_uri: status %d", res.StatusCode)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal([]byte(body), &set); err != nil {
		op.t.Fatalf("jwks_uri: %v\n%s", err, body)
	}
	return set
}

// endSession sends browser b to the end_session_endpoint with params (GET) and follows the
// provider's own redirects. It returns the page the browser ended on, or where outside the
// provider it was sent.
func (op *confOP) endSession(b *browser, params url.Values) (*http.Response, *url.URL) {
	op.t.Helper()
	if op.meta.EndSessionEndpoint == "" {
		op.t.Fatal("no end_session_endpoint in discovery")
	}
	raw := op.meta.EndSessionEndpoint
	if len(params) > 0 {
		raw += "?" + params.Encode()
	}
	return op.followToApp(b, raw)
}

// signJWT signs claims with key (RS256, kid).
func signJWT(t testing.TB, key *rsa.PrivateKey, kid string, header map[jose.HeaderKey]any, claims map[string]any) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType("JWT")
	for k, v := range header {
		opts = opts.WithHeader(k, v)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: key, KeyID: kid}}, opts)
	if err != nil {
		t.Fatal(err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	out, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func newRSAKey(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// unsignedJWT is a JWT with alg none.
func unsignedJWT(t testing.TB, claims map[string]any) string {
	t.Helper()
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." +
		base64.RawURLEncoding.EncodeToString(payload) + "."
}

func drain(res *http.Response) {
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
}
