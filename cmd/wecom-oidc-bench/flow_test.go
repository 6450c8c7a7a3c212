package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

func TestLabeller(t *testing.T) {
	l := newLabeller(endpoints{
		Authorization: "http://127.0.0.1:8080/authorize",
		Token:         "http://127.0.0.1:8080/oauth/token",
		UserInfo:      "http://127.0.0.1:8080/userinfo",
		JWKS:          "http://127.0.0.1:8080/keys",
	})
	tests := []struct{ path, want string }{
		{"/authorize", "authorize"},
		{"/login", "login"},
		{"/_wecomsim/wwlogin/sso/login", "wecom"},
		{"/_wecomsim/connect/oauth2/authorize", "wecom"},
		{"/login/wecom/callback", "callback"},
		{"/authorize/callback", "authorize/callback"},
		{"/oauth/token", "token"},
		{"/userinfo", "userinfo"},
		// Hops the provider might add or rename keep a name of their own.
		{"/login/return", "login/return"},
		{"/login/choose", "login/choose"},
		{"/", "/"},
	}
	for _, tt := range tests {
		if got := l.label(tt.path); got != tt.want {
			t.Errorf("label(%q) = %q, want %q", tt.path, got, tt.want)
		}
	}

	// An issuer with a path: the endpoints move, the labels do not.
	l = newLabeller(endpoints{Authorization: "https://localhost/sso/auth", Token: "https://localhost/sso/token"})
	for path, want := range map[string]string{"/sso/auth": "authorize", "/sso/auth/callback": "authorize/callback", "/sso/token": "token"} {
		if got := l.label(path); got != want {
			t.Errorf("label(%q) = %q, want %q", path, got, want)
		}
	}
}

func TestAudience(t *testing.T) {
	for raw, want := range map[string]bool{
		`"bench"`:           true,
		`["other","bench"]`: true,
		`"other"`:           false,
		`[]`:                false,
		`["benchmark"]`:     false,
	} {
		var a audience
		if err := json.Unmarshal([]byte(raw), &a); err != nil {
			t.Fatalf("%s: %v", raw, err)
		}
		if got := a.contains("bench"); got != want {
			t.Errorf("%s contains bench = %v, want %v", raw, got, want)
		}
	}
	var a audience
	if err := json.Unmarshal([]byte(`42`), &a); err == nil {
		t.Error("aud 42: no error")
	}
}

func TestErrorKind(t *testing.T) {
	base := failf("http 500 at callback", errors.New("boom"))
	if got := errorKind(fmt.Errorf("login: %w", base)); got != "http 500 at callback" {
		t.Errorf("errorKind(wrapped) = %q", got)
	}
	if got := errorKind(errors.New("plain")); got != "other" {
		t.Errorf("errorKind(plain) = %q", got)
	}
}

func TestRandomString(t *testing.T) {
	v := randomString(32)
	if len(v) != 43 {
		t.Errorf("a PKCE verifier from 32 bytes has %d characters, want 43", len(v))
	}
	if v == randomString(32) {
		t.Error("two random strings are equal")
	}
}

// mustSigner returns an RS256 signer for a fresh key with kid, and the JWKS publishing it.
func mustSigner(t testing.TB, kid string) (jose.Signer, []byte) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: key, KeyID: kid}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	jwks, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: kid, Algorithm: "RS256", Use: "sig"}}})
	if err != nil {
		t.Fatal(err)
	}
	return signer, jwks
}

func TestVerifyIDToken(t *testing.T) {
	signer, jwks := mustSigner(t, "k1")
	otherSigner, _ := mustSigner(t, "k1") // same kid, another key: a forgery
	unknownSigner, _ := mustSigner(t, "k2")
	fetches := 0
	tgt := &target{ep: endpoints{Issuer: "http://127.0.0.1:8080"}, clientID: "bench"}
	tgt.keys = &keyCache{url: "jwks", fetch: func(context.Context, string) ([]byte, error) { fetches++; return jwks, nil }}
	if err := tgt.keys.refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	tgt.keys.fetched = time.Time{} // allow the refetch an unknown kid triggers

	claims := func(mod func(map[string]any)) map[string]any {
		c := map[string]any{"iss": "http://127.0.0.1:8080", "aud": []string{"bench"}, "sub": "zhangsan",
			"nonce": "n1", "exp": time.Now().Add(time.Hour).Unix()}
		if mod != nil {
			mod(c)
		}
		return c
	}
	sign := func(s jose.Signer, c map[string]any) string {
		payload, _ := json.Marshal(c)
		jws, err := s.Sign(payload)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := jws.CompactSerialize()
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	tests := []struct {
		name     string
		token    string
		nonce    string
		sub      string
		wantKind string
	}{
		{name: "valid", token: sign(signer, claims(nil)), nonce: "n1"},
		{name: "valid without nonce check (refresh)", token: sign(signer, claims(func(c map[string]any) { delete(c, "nonce") })), sub: "zhangsan"},
		{name: "aud as a string", token: sign(signer, claims(func(c map[string]any) { c["aud"] = "bench" })), nonce: "n1"},
		{name: "forged", token: sign(otherSigner, claims(nil)), nonce: "n1", wantKind: "id_token signature"},
		{name: "unknown kid", token: sign(unknownSigner, claims(nil)), nonce: "n1", wantKind: "id_token unknown kid"},
		{name: "issuer", token: sign(signer, claims(func(c map[string]any) { c["iss"] = "http://evil" })), nonce: "n1", wantKind: "id_token iss"},
		{name: "audience", token: sign(signer, claims(func(c map[string]any) { c["aud"] = []string{"other"} })), nonce: "n1", wantKind: "id_token aud"},
		{name: "expired", token: sign(signer, claims(func(c map[string]any) { c["exp"] = time.Now().Add(-time.Second).Unix() })), nonce: "n1", wantKind: "id_token expired"},
		{name: "nonce", token: sign(signer, claims(nil)), nonce: "n2", wantKind: "id_token nonce"},
		{name: "subject changed", token: sign(signer, claims(nil)), sub: "lisi", wantKind: "id_token sub"},
		{name: "garbage", token: "not.a.jwt", wantKind: "id_token malformed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sub, err := tgt.verifyIDToken(context.Background(), tt.token, tt.nonce, tt.sub)
			if tt.wantKind == "" {
				if err != nil || sub != "zhangsan" {
					t.Fatalf("verifyIDToken = %q, %v", sub, err)
				}
				return
			}
			if got := errorKind(err); got != tt.wantKind {
				t.Fatalf("error kind %q (%v), want %q", got, err, tt.wantKind)
			}
		})
	}
	if fetches != 2 {
		t.Errorf("JWKS fetched %d times, want 2: once at the start, once for the unknown kid", fetches)
	}
}
