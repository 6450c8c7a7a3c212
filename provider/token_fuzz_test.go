package provider_test

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/wecom-oidc/wecom-oidc/storage"
)

// FuzzTokenEndpoint posts a fuzzed body, with a fuzzed Authorization header and one of four
// content types, to /oauth/token. In body and header, $CODE becomes an authorization code of the
// web client that was already redeemed, $REFRESH a refresh token of the web client that was
// already rotated, $ACCESS an access token of the web client, and $ASSERTION a fresh, validly
// signed private_key_jwt client assertion of the jwt client — so the fuzzer holds valid client
// credentials and spent or misplaced grants, but no grant it could redeem. The provider's clock
// moves 7 s before each input, which keeps the failed-authentication limiter from answering 429
// to everything after ten failures. Properties:
//   - no 5xx (and no panic);
//   - never a 2xx: nothing the fuzzer holds is a grant it may redeem;
//   - every answer is a JSON object with a non-empty "error" (RFC 6749 §5.2).
func FuzzTokenEndpoint(f *testing.F) {
	for _, s := range tokenSeeds {
		f.Add(s.body, s.authorization, s.contentType)
	}
	fz := newTokenFuzz(f)
	f.Fuzz(fz.run)
}

// Content types of FuzzTokenEndpoint (contentType % 4).
var tokenContentTypes = []string{
	"application/x-www-form-urlencoded",
	"application/json",
	"",
	"multipart/form-data; boundary=fuzz",
}

const (
	webBasic   = "Basic d2ViOndlYi1zZWNyZXQtMDEyMzQ1Njc4OWFiY2RlZg==" // web:web-secret-0123456789abcdef
	otherBasic = "Basic b3RoZXI6d2ViLXNlY3JldC0wMTIzNDU2Nzg5YWJjZGVm" // other:web-secret-0123456789abcdef
	jwtClient  = "jwt"
	jwtKeyID   = "fuzz-key"
)

// tokenSeeds are the same inputs as testdata/fuzz/FuzzTokenEndpoint.
var tokenSeeds = []struct {
	body, authorization string
	contentType         uint8
}{
	// Near-valid: well-formed requests of authenticated clients with spent or foreign grants.
	{"grant_type=authorization_code&code=$CODE&redirect_uri=https%3A%2F%2Frp.example.com%2Fcallback", webBasic, 0},
	{"grant_type=refresh_token&refresh_token=$REFRESH", webBasic, 0},
	{"grant_type=refresh_token&refresh_token=$REFRESH&client_id=web&client_secret=web-secret-0123456789abcdef", "", 0},
	{"grant_type=authorization_code&code=$CODE&redirect_uri=https%3A%2F%2Fother.example.com%2Foidc%2Fcallback", otherBasic, 0},
	{"grant_type=refresh_token&refresh_token=$ACCESS", webBasic, 0},
	{"grant_type=authorization_code&code=0123456789&redirect_uri=https%3A%2F%2Fjwt.example.com%2Fcallback&client_id=jwt" +
		"&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion=$ASSERTION", "", 0},
	{"grant_type=authorization_code&code=x&client_id=spa&code_verifier=dBjftJeZ4CVP-mJ92ZY7TlF-u1q7p7_V1Gjd8nXNk1mQ&redirect_uri=http%3A%2F%2F127.0.0.1%3A5173%2Fcallback", "", 0},
	// Grants this provider does not offer, with valid client credentials.
	{"grant_type=client_credentials&scope=openid", webBasic, 0},
	{"grant_type=password&username=zhangsan&password=x", webBasic, 0},
	{"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=$ASSERTION", "", 0},
	{"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token=$ACCESS&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token", webBasic, 0},
	{"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code&device_code=x&client_id=spa", "", 0},
	// Hostile: wrong secrets, malformed headers and bodies, other content types.
	{"grant_type=refresh_token&refresh_token=$REFRESH", "Basic d2ViOndyb25n", 0},
	{"grant_type=authorization_code&code=$CODE", "Basic %%%", 0},
	{"grant_type=authorization_code&code=$CODE", "Bearer $ACCESS", 0},
	{"grant_type=refresh_token&refresh_token=$REFRESH&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion=eyJhbGciOiJub25lIn0.eyJpc3MiOiJ3ZWIiLCJzdWIiOiJ3ZWIifQ.", "", 0},
	{`{"grant_type":"refresh_token","refresh_token":"$REFRESH"}`, webBasic, 1},
	{"grant_type=refresh_token&refresh_token=$REFRESH", webBasic, 2},
	{"--fuzz\r\nContent-Disposition: form-data; name=\"grant_type\"\r\n\r\nrefresh_token\r\n--fuzz\r\nContent-Disposition: form-data; name=\"refresh_token\"\r\n\r\n$REFRESH\r\n--fuzz--\r\n", webBasic, 3},
	{"grant_type=authorization_code&grant_type=refresh_token&code=%zz;refresh_token=$REFRESH&client_id=web&client_id=other", webBasic, 0},
}

type tokenFuzz struct {
	issuer  string
	clock   *testClock
	client  *http.Client
	key     *rsa.PrivateKey // the jwt client's key
	code    string          // redeemed
	refresh string          // rotated
	access  string          // live
}

func newTokenFuzz(f *testing.F) *tokenFuzz {
	quietLibraryLogs(f)
	key := newRSAKey(f)
	set, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: jwtKeyID, Algorithm: "RS256", Use: "sig"}}})
	if err != nil {
		f.Fatal(err)
	}
	clock := &testClock{}
	h := newHarness(f, harnessOptions{now: clock.Now, clients: []storage.Client{{
		ID: jwtClient, AuthMethod: "private_key_jwt", JWKS: string(set), RedirectURIs: []string{"https://jwt.example.com/callback"},
	}}})
	fz := &tokenFuzz{issuer: h.issuer, clock: clock, client: fuzzClient(), key: key}

	// zhangsan signs in at the web client: redeem the code, then rotate the refresh token.
	v := url.Values{
		"response_type": {"code"}, "client_id": {webClientID}, "redirect_uri": {webRedirect},
		"scope": {"openid offline_access"}, "state": {"setup"}, "nonce": {"setup"}, "prompt": {"consent"},
	}
	q := h.signIn(newBrowser(f, desktopUA), h.issuer+"/authorize?"+v.Encode(), webRedirect, "zhangsan")
	fz.code = q.Get("code")
	first := fz.mustToken(f, url.Values{"grant_type": {"authorization_code"}, "code": {fz.code}, "redirect_uri": {webRedirect}})
	second := fz.mustToken(f, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {first["refresh_token"]}})
	fz.refresh, fz.access = first["refresh_token"], second["access_token"]
	if fz.code == "" || fz.refresh == "" || fz.access == "" || second["refresh_token"] == "" {
		f.Fatalf("setup: code %q, tokens %v then %v", fz.code, first, second)
	}
	return fz
}

// mustToken redeems form at the token endpoint as the web client.
func (fz *tokenFuzz) mustToken(f *testing.F, form url.Values) map[string]string {
	req, err := http.NewRequest(http.MethodPost, fz.issuer+"/oauth/token", strings.NewReader(form.Encode()))
	if err != nil {
		f.Fatal(err)
	}
	req.Header.Set("Content-Type", tokenContentTypes[0])
	req.Header.Set("Authorization", webBasic)
	res, err := fz.client.Do(req)
	if err != nil {
		f.Fatal(err)
	}
	defer res.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil || res.StatusCode != http.StatusOK {
		f.Fatalf("setup: token endpoint: status %d, %v (%v)", res.StatusCode, out, err)
	}
	strs := make(map[string]string)
	for k, v := range out {
		if s, ok := v.(string); ok {
			strs[k] = s
		}
	}
	return strs
}

// assertion is a fresh client assertion of the jwt client, signed with its registered key.
func (fz *tokenFuzz) assertion(t *testing.T) string {
	now := time.Now()
	return signJWT(t, fz.key, jwtKeyID, nil, map[string]any{
		"iss": jwtClient, "sub": jwtClient, "aud": []string{fz.issuer}, "jti": rand.Text(),
		"iat": now.Unix(), "exp": now.Add(time.Minute).Unix(),
	})
}

// expand replaces the placeholders in s.
func (fz *tokenFuzz) expand(t *testing.T, s string) string {
	if !strings.Contains(s, "$") {
		return s
	}
	s = strings.NewReplacer("$CODE", fz.code, "$REFRESH", fz.refresh, "$ACCESS", fz.access).Replace(s)
	for strings.Contains(s, "$ASSERTION") {
		s = strings.Replace(s, "$ASSERTION", fz.assertion(t), 1)
	}
	return s
}

// failureStep is how far the provider's clock moves before each input: the failed-authentication
// limiter allows 10 failures a minute per client and per address, and nine steps fill a minute, so
// every input reaches the token endpoint instead of the limiter's 429.
const failureStep = 7 * time.Second

func (fz *tokenFuzz) run(t *testing.T, body, authorization string, contentType uint8) {
	fz.clock.Advance(failureStep)
	req, err := http.NewRequest(http.MethodPost, fz.issuer+"/oauth/token", bytes.NewReader([]byte(fz.expand(t, body))))
	if err != nil {
		t.Fatal(err)
	}
	if ct := tokenContentTypes[int(contentType)%len(tokenContentTypes)]; ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	if a := headerValue(fz.expand(t, authorization)); a != "" {
		req.Header.Set("Authorization", a)
	}
	res, err := fz.client.Do(req)
	if err != nil {
		t.Fatalf("POST /oauth/token: %v", err)
	}
	raw, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("POST /oauth/token (Content-Type %q, Authorization %q): status %d, Content-Type %q:\n%s",
		req.Header.Get("Content-Type"), req.Header.Get("Authorization"), res.StatusCode, res.Header.Get("Content-Type"), raw)
	switch {
	case res.StatusCode >= 500:
		t.Fatalf("status %d", res.StatusCode)
	case res.StatusCode < 300:
		t.Fatalf("status %d: the token endpoint granted something", res.StatusCode)
	}
	if mt, _, err := mime.ParseMediaType(res.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		t.Fatalf("error answer with Content-Type %q, not application/json", res.Header.Get("Content-Type"))
	}
	var doc struct {
		Error *string `json:"error"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil || doc.Error == nil || *doc.Error == "" {
		t.Fatalf("error answer is not a JSON object with an error code (%v)", err)
	}
}
