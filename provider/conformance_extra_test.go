package provider_test

// Modules the issue requires beyond the OpenID Foundation's plans: CORS for browser clients,
// introspection, revocation, and private_key_jwt client authentication.

import (
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/wecom-oidc/wecom-oidc/storage"
)

// spaOrigin is the origin of the spa client's registered redirect URI.
const spaOrigin = "http://127.0.0.1:5173"

// corsRequest sends one request with an Origin header and returns the response (body drained).
func corsRequest(t *testing.T, method, endpoint, origin string, header http.Header, body url.Values) *http.Response {
	t.Helper()
	var req *http.Request
	var err error
	if body != nil {
		req, err = http.NewRequest(method, endpoint, strings.NewReader(body.Encode()))
		if err == nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
	} else {
		req, err = http.NewRequest(method, endpoint, nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Origin", origin)
	for k, vs := range header {
		req.Header[k] = vs
	}
	res, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, endpoint, err)
	}
	drain(res)
	return res
}

// cors: the endpoints a browser app calls cross-origin (discovery, JWKS, token — preflight too —,
// userinfo, revocation, introspection) answer the spa's registered origin with
// Access-Control-Allow-Origin, and an unregistered origin without; the authorization endpoint
// never sends CORS headers (RFC 9700 §2.6), not even for the registered origin.
func confCORS(t *testing.T) {
	op := newConfOP(t, harnessOptions{})
	b := newBrowser(t, desktopUA)

	// A real code and tokens of the spa, so every call is one the app would make.
	v := authParams(cSPA, "scope", "openid offline_access")
	verifier := pkce(v)
	code := op.authResponse(op.authorize(b, v, "zhangsan"), cSPA, v)

	basic := func(c confClient) http.Header {
		req, _ := http.NewRequest(http.MethodGet, "/", nil)
		req.SetBasicAuth(url.QueryEscape(c.id), url.QueryEscape(c.secret))
		return http.Header{"Authorization": req.Header["Authorization"]}
	}
	bearer := func(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }
	preflight := http.Header{
		"Access-Control-Request-Method":  {"POST"},
		"Access-Control-Request-Headers": {"content-type"},
	}

	// The code exchange itself, from the app's origin.
	res, body := op.postForm(op.meta.TokenEndpoint, cSPA, authNone, url.Values{
		"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {cSPA.redirect}, "code_verifier": {verifier},
	}, http.Header{"Origin": {spaOrigin}})
	if res.StatusCode != http.StatusOK {
		t.Fatalf("token exchange from the app's origin: status %d: %s", res.StatusCode, body)
	}
	if got := res.Header.Get("Access-Control-Allow-Origin"); got != spaOrigin {
		t.Errorf("token endpoint (POST): Access-Control-Allow-Origin %q, want %q", got, spaOrigin)
	}
	var tokens struct {
		AccessToken  string `json:"access_token"`
		RefreshToken string `json:"refresh_token"`
	}
	if err := json.Unmarshal([]byte(body), &tokens); err != nil || tokens.AccessToken == "" {
		t.Fatalf("token response: %v: %s", err, body)
	}

	type call struct {
		name, method, endpoint string
		header                 http.Header
		body                   url.Values
	}
	calls := func(token string) []call {
		return []call{
			{"discovery", http.MethodGet, op.h.issuer + "/.well-known/openid-configuration", nil, nil},
			{"jwks", http.MethodGet, op.meta.JwksURI, nil, nil},
			{"token preflight", http.MethodOptions, op.meta.TokenEndpoint, preflight, nil},
			{"token", http.MethodPost, op.meta.TokenEndpoint, nil, url.Values{
				"grant_type": {"refresh_token"}, "refresh_token": {"not-a-token"}, "client_id": {cSPA.id}}},
			{"userinfo", http.MethodGet, op.meta.UserinfoEndpoint, bearer(token), nil},
			{"userinfo preflight", http.MethodOptions, op.meta.UserinfoEndpoint, http.Header{
				"Access-Control-Request-Method": {"GET"}, "Access-Control-Request-Headers": {"authorization"}}, nil},
			{"introspection", http.MethodPost, op.meta.IntrospectionEndpoint, basic(cWeb), url.Values{"token": {token}}},
			{"revocation", http.MethodPost, op.meta.RevocationEndpoint, nil, url.Values{
				"token": {"not-a-token"}, "client_id": {cSPA.id}}},
		}
	}
	for _, c := range calls(tokens.AccessToken) {
		if c.endpoint == "" {
			t.Errorf("%s: no endpoint in discovery", c.name)
			continue
		}
		res := corsRequest(t, c.method, c.endpoint, spaOrigin, c.header, c.body)
		if got := res.Header.Get("Access-Control-Allow-Origin"); got != spaOrigin {
			t.Errorf("%s (%s, status %d): Access-Control-Allow-Origin %q, want %q", c.name, c.method, res.StatusCode, got, spaOrigin)
		}
		if got := res.Header.Get("Access-Control-Allow-Credentials"); got == "true" {
			t.Errorf("%s: Access-Control-Allow-Credentials true; these endpoints take no cookies", c.name)
		}
		if c.method == http.MethodOptions && (res.StatusCode < 200 || res.StatusCode >= 300) {
			t.Errorf("%s: status %d", c.name, res.StatusCode)
		}
		if c.method == http.MethodOptions && !strings.Contains(res.Header.Get("Access-Control-Allow-Methods"), strings.Join(c.header["Access-Control-Request-Method"], "")) {
			t.Errorf("%s: Access-Control-Allow-Methods %q", c.name, res.Header.Get("Access-Control-Allow-Methods"))
		}
		evil := corsRequest(t, c.method, c.endpoint, "https://evil.example", c.header, c.body)
		if got := evil.Header.Get("Access-Control-Allow-Origin"); got != "" {
			t.Errorf("%s from https://evil.example: Access-Control-Allow-Origin %q", c.name, got)
		}
	}
	// The app's calls still work after all that: the token is live.
	if status, _, _ := op.userinfo("get", tokens.AccessToken); status != http.StatusOK {
		t.Errorf("userinfo with the spa's token: status %d", status)
	}

	// Never on the authorization endpoint.
	authz := op.authorizeURL(authParams(cSPA, "code_challenge", "x"+randomString(), "code_challenge_method", "S256"))
	for _, c := range []call{
		{"authorize", http.MethodGet, authz, nil, nil},
		{"authorize preflight", http.MethodOptions, op.meta.AuthorizationEndpoint, preflight, nil},
		{"authorize POST", http.MethodPost, op.meta.AuthorizationEndpoint, nil, authParams(cSPA)},
	} {
		res := corsRequest(t, c.method, c.endpoint, spaOrigin, c.header, c.body)
		for k := range res.Header {
			if strings.HasPrefix(strings.ToLower(k), "access-control-") {
				t.Errorf("%s: CORS header %s: %q", c.name, k, res.Header.Get(k))
			}
		}
	}
}

// introspection: client web's access token introspected by web is active, with sub, client_id,
// scope and exp; introspected by another client it is inactive (RFC 7662 §2.2 lets the server
// refuse to tell a client about another's tokens). Unknown tokens are inactive.
func confIntrospection(t *testing.T) {
	op := newConfOP(t, harnessOptions{})
	if op.meta.IntrospectionEndpoint == "" {
		t.Fatal("no introspection_endpoint in discovery")
	}
	f := op.login(newBrowser(t, desktopUA), cWeb, "zhangsan", "scope", "openid profile offline_access")
	introspect := func(c confClient, token string) map[string]any {
		t.Helper()
		res, body := op.postForm(op.meta.IntrospectionEndpoint, c, authBasic, url.Values{"token": {token}}, nil)
		if res.StatusCode != http.StatusOK {
			t.Fatalf("introspection by %s: status %d: %s", c.id, res.StatusCode, body)
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(body), &m); err != nil {
			t.Fatalf("introspection by %s: %v: %s", c.id, err, body)
		}
		return m
	}
	got := introspect(cWeb, f.tokens.AccessToken)
	if got["active"] != true {
		t.Fatalf("web's access token introspected by web: %v, want active", got)
	}
	if got["sub"] != "zhangsan" || got["client_id"] != cWeb.id {
		t.Errorf("sub/client_id = %v/%v", got["sub"], got["client_id"])
	}
	if scope, _ := got["scope"].(string); !slices.Contains(strings.Fields(scope), "openid") || !slices.Contains(strings.Fields(scope), "profile") {
		t.Errorf("scope = %v", got["scope"])
	}
	if exp, _ := got["exp"].(float64); int64(exp) <= time.Now().Unix() {
		t.Errorf("exp = %v", got["exp"])
	}
	if other := introspect(cOther, f.tokens.AccessToken); other["active"] != false || other["sub"] != nil {
		t.Errorf("web's access token introspected by other: %v, want only active false", other)
	}
	if unknown := introspect(cWeb, "not-a-token"); unknown["active"] != false {
		t.Errorf("unknown token: %v, want active false", unknown)
	}
	// A client that does not authenticate learns nothing.
	res, body := op.postForm(op.meta.IntrospectionEndpoint, confClient{id: cWeb.id, secret: "wrong-secret-0123456789"}, authBasic,
		url.Values{"token": {f.tokens.AccessToken}}, nil)
	if res.StatusCode != http.StatusUnauthorized || strings.Contains(body, "zhangsan") {
		t.Errorf("introspection with a wrong secret: status %d: %s", res.StatusCode, body)
	}
}

// revocation: client other cannot revoke web's refresh token (it keeps working); web can, and
// then the refresh token is invalid_grant and the access tokens of its family fail at userinfo.
// An access token revoked by its client fails at userinfo too.
func confRevocation(t *testing.T) {
	op := newConfOP(t, harnessOptions{})
	if op.meta.RevocationEndpoint == "" {
		t.Fatal("no revocation_endpoint in discovery")
	}
	b := newBrowser(t, desktopUA)
	f := op.login(b, cWeb, "zhangsan", "scope", "openid offline_access")
	revoke := func(c confClient, token, hint string) int {
		t.Helper()
		form := url.Values{"token": {token}}
		if hint != "" {
			form.Set("token_type_hint", hint)
		}
		res, _ := op.postForm(op.meta.RevocationEndpoint, c, authBasic, form, nil)
		return res.StatusCode
	}

	revoke(cOther, f.tokens.RefreshToken, "refresh_token")
	revoke(cOther, f.tokens.RefreshToken, "")
	revoke(cOther, f.tokens.AccessToken, "access_token")
	if status, _, _ := op.userinfo("get", f.tokens.AccessToken); status != http.StatusOK {
		t.Errorf("web's access token after other tried to revoke it: userinfo status %d", status)
	}
	refreshed := op.refresh(cWeb, authBasic, f.tokens.RefreshToken)
	op.refreshOK(refreshed)

	if status := revoke(cWeb, refreshed.RefreshToken, "refresh_token"); status != http.StatusOK {
		t.Fatalf("web revoking its refresh token: status %d", status)
	}
	op.tokenError(op.refresh(cWeb, authBasic, refreshed.RefreshToken), "invalid_grant")
	if status, _, _ := op.userinfo("get", refreshed.AccessToken); status != http.StatusUnauthorized {
		t.Errorf("access token of the revoked family: userinfo status %d, want 401", status)
	}

	// An access token on its own.
	g := op.login(b, cWeb, "", "scope", "openid")
	if status := revoke(cWeb, g.tokens.AccessToken, "access_token"); status != http.StatusOK {
		t.Fatalf("web revoking its access token: status %d", status)
	}
	if status, _, _ := op.userinfo("get", g.tokens.AccessToken); status != http.StatusUnauthorized {
		t.Errorf("revoked access token: userinfo status %d, want 401", status)
	}
}

// private_key_jwt: a client registered with its public keys authenticates at the token endpoint
// with an RS256 assertion (iss = sub = client_id, aud = the issuer, exp, iat, jti); an assertion
// signed by another key is invalid_client.
func confPrivateKeyJWT(t *testing.T) {
	key := newRSAKey(t)
	const kid = "pkj-key-1"
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: kid, Algorithm: "RS256", Use: "sig"}}}
	jwks, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	c := confClient{id: "pkj-rp", redirect: "https://pkj-rp.example/callback"}
	rec := storage.Client{ID: c.id, AuthMethod: "private_key_jwt", JWKS: string(jwks), RedirectURIs: []string{c.redirect}, IDTokenClaims: true}
	op := newConfOP(t, harnessOptions{clients: []storage.Client{rec}})
	if !slices.Contains(stringsOf(op.raw["token_endpoint_auth_methods_supported"]), "private_key_jwt") {
		t.Errorf("token_endpoint_auth_methods_supported = %v lacks private_key_jwt", op.meta.TokenEndpointAuthMethodsSupported)
	}

	sign := func(k *rsa.PrivateKey, kid string) string {
		now := time.Now()
		return signJWT(t, k, kid, nil, map[string]any{
			"iss": c.id, "sub": c.id, "aud": []string{op.h.issuer}, "jti": randomString(),
			"iat": now.Unix(), "exp": now.Add(time.Minute).Unix(),
		})
	}
	exchange := func(code, clientAssertion string) tokenResponse {
		return op.token(c, authNone, url.Values{
			"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {c.redirect},
			"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
			"client_assertion":      {clientAssertion},
		})
	}
	b := newBrowser(t, desktopUA)

	// Signed by a key the client did not register (same kid): invalid_client.
	v := authParams(c)
	code := op.authResponse(op.authorize(b, v, "zhangsan"), c, v)
	switch bad := exchange(code, sign(newRSAKey(t), kid)); {
	case bad.status == http.StatusOK || bad.AccessToken != "":
		t.Fatal("an assertion signed by an unregistered key was accepted")
	case bad.Error != "invalid_client" || bad.status != http.StatusUnauthorized:
		// RFC 7523 §3.2: an invalid client assertion is invalid_client (RFC 6749 §5.2: 401).
		t.Errorf("assertion signed by another key: error %q with status %d (%v), want invalid_client with 401",
			bad.Error, bad.status, bad.body)
	}

	// The registered key: tokens.
	v = authParams(c)
	code = op.authResponse(op.authorize(b, v, ""), c, v)
	good := sign(key, kid)
	tr := exchange(code, good)
	op.tokenOK(tr)
	op.checkIDToken(tr.IDToken, c, v.Get("nonce"))

	// The same assertion again, with a fresh code. OIDC Core §9 says assertions "MUST only be
	// used once"; the server may refuse a replayed jti (RFC 7523 §3), and this one does.
	v = authParams(c)
	code = op.authResponse(op.authorize(b, v, ""), c, v)
	if replay := exchange(code, good); replay.status != http.StatusUnauthorized || replay.Error != "invalid_client" {
		t.Errorf("replayed client assertion: status %d error %q, want 401 invalid_client", replay.status, replay.Error)
	}
	// The code was not spent by the refused attempt: a fresh assertion still redeems it.
	op.tokenOK(exchange(code, sign(key, kid)))
}
