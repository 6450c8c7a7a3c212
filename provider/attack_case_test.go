package provider_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/wecom-oidc/wecom-oidc/storage"
)

// The OP library's form decoder matches parameter names without regard to letter case; every
// check made before the library runs must read them the same way, or a name spelled differently
// walks past it. These cases spell the names differently.

// TestAttackCaseVariantAssertionReplay: a private_key_jwt assertion is single use even when its
// parameter names are spelled Client_assertion_type / Client_assertion.
func TestAttackCaseVariantAssertionReplay(t *testing.T) {
	key := newRSAKey(t)
	set, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "k", Algorithm: "RS256", Use: "sig"}}})
	c := confClient{id: "pkj-case", redirect: "https://pkj-case.example/cb"}
	op := newConfOP(t, harnessOptions{clients: []storage.Client{{ID: c.id, AuthMethod: "private_key_jwt", JWKS: string(set), RedirectURIs: []string{c.redirect}}}})
	now := time.Now()
	assertion := signJWT(t, key, "k", nil, map[string]any{
		"iss": c.id, "sub": c.id, "aud": []string{op.h.issuer}, "jti": randomString(),
		"iat": now.Unix(), "exp": now.Add(time.Minute).Unix(),
	})
	b := newBrowser(t, desktopUA)
	redeem := func(typeName, assertionName string) tokenResponse {
		v := authParams(c)
		code := op.authResponse(op.authorize(b, v, "zhangsan"), c, v)
		return op.token(c, authNone, url.Values{
			"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {c.redirect},
			typeName: {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}, assertionName: {assertion},
		})
	}
	op.tokenOK(redeem("client_assertion_type", "client_assertion"))
	for _, spelling := range [][2]string{{"Client_assertion_type", "Client_assertion"}, {"CLIENT_ASSERTION_TYPE", "client_Assertion"}} {
		if tr := redeem(spelling[0], spelling[1]); tr.status != http.StatusUnauthorized || tr.Error != "invalid_client" {
			t.Errorf("the used assertion under %v: status %d %q, want 401 invalid_client", spelling, tr.status, tr.Error)
		}
	}
}

// TestAttackCaseVariantClientIDBruteForce: failures under Client_id count against that client.
func TestAttackCaseVariantClientIDBruteForce(t *testing.T) {
	op := newConfOP(t, harnessOptions{})
	// Each attempt from its own address: only the per-client count can produce the 429.
	post := func(from int, idName, secret string) int {
		form := url.Values{"token": {"x"}, idName: {webClientID}, "client_secret": {secret}}
		res, err := clientFrom(fmt.Sprintf("127.0.9.%d", from)).Post(op.meta.IntrospectionEndpoint, "application/x-www-form-urlencoded", strings.NewReader(form.Encode()))
		if err != nil {
			t.Fatal(err)
		}
		drain(res)
		return res.StatusCode
	}
	for i := range 10 {
		if status := post(i+1, "Client_id", "wrong-secret-0123456789"); status != http.StatusUnauthorized {
			t.Fatalf("failure %d: status %d, want 401", i+1, status)
		}
	}
	if status := post(100, "client_id", webClientSecret); status != http.StatusTooManyRequests {
		t.Fatalf("after 10 failures spelled Client_id, the right secret got %d, want 429", status)
	}
}
