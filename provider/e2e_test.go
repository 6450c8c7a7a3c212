package provider_test

import (
	"context"
	"errors"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	gooidc "github.com/coreos/go-oidc/v3/oidc"
	"github.com/zitadel/oidc/v3/pkg/client/rp"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"golang.org/x/oauth2"

	"github.com/wecom-oidc/wecom-oidc/upstream/wecom/wecomsim"
)

var allScopes = []string{"openid", "profile", "email", "phone", "groups", "offline_access"}

// TestZitadelRelyingParty: zitadel's OpenID-certified RP completes code + PKCE with
// client_secret_basic, verifies the ID token against the JWKS, reads userinfo, refreshes, and the
// rotated refresh token is refused afterwards.
func TestZitadelRelyingParty(t *testing.T) {
	// An app created before 2022-06-20: user/get still returns e-mail to the desktop web login.
	h := newHarness(t, harnessOptions{seed: func(c *wecomsim.Config) { c.LegacyContactFields = true }})
	ctx := context.Background()
	nonce := randomString()
	expectNonce := nonce
	party, err := rp.NewRelyingPartyOIDC(ctx, h.issuer, webClientID, webClientSecret, webRedirect, allScopes,
		rp.WithAuthStyle(oauth2.AuthStyleInHeader),
		rp.WithVerifierOpts(rp.WithNonce(func(context.Context) string { return expectNonce })),
	)
	if err != nil {
		t.Fatal(err)
	}
	verifier := randomString() + randomString()
	state := randomString()
	authURL := rp.AuthURL(state, party,
		rp.WithCodeChallenge(oidc.NewSHACodeChallenge(verifier)),
		rp.AuthURLOpt(rp.WithURLParam("nonce", nonce)))

	got := h.signIn(newBrowser(t, desktopUA), authURL, webRedirect, "zhangsan")
	if got.Get("state") != state {
		t.Fatalf("state %q came back as %q", state, got.Get("state"))
	}
	tokens, err := rp.CodeExchange[*oidc.IDTokenClaims](ctx, got.Get("code"), party, rp.WithCodeVerifier(verifier))
	if err != nil {
		t.Fatalf("code exchange: %v", err)
	}
	claims := tokens.IDTokenClaims
	if claims.Subject != "zhangsan" || claims.Name != "张三" || claims.PreferredUsername != "zhangsan" {
		t.Errorf("ID token sub/name/preferred_username = %q/%q/%q", claims.Subject, claims.Name, claims.PreferredUsername)
	}
	if claims.Email != "zhangsan@corp.example" {
		t.Errorf("ID token email = %q", claims.Email)
	}
	if claims.Nonce != nonce || claims.AuthTime == 0 || !slices.Contains(claims.Audience, webClientID) {
		t.Errorf("ID token nonce/auth_time/aud = %q/%v/%v", claims.Nonce, claims.AuthTime, claims.Audience)
	}
	groups := claimStrings(claims.Claims["groups"])
	if !slices.Contains(groups, "研发中心") || !slices.Contains(groups, "平台组") {
		t.Errorf("ID token groups = %v, want the department names", groups)
	}
	if tokens.RefreshToken == "" {
		t.Fatal("no refresh token with offline_access")
	}
	expectNonce = "" // ID tokens from a refresh carry no nonce (OIDC Core §12.2)

	info, err := rp.Userinfo[*oidc.UserInfo](ctx, tokens.AccessToken, tokens.TokenType, claims.Subject, party)
	if err != nil {
		t.Fatalf("userinfo: %v", err)
	}
	if info.Subject != claims.Subject || info.Name != "张三" || info.Email != "zhangsan@corp.example" {
		t.Errorf("userinfo = %+v", info)
	}

	refreshed, err := rp.RefreshTokens[*oidc.IDTokenClaims](ctx, party, tokens.RefreshToken, "", "")
	if err != nil {
		t.Fatalf("refresh: %v", err)
	}
	if refreshed.RefreshToken == "" || refreshed.RefreshToken == tokens.RefreshToken {
		t.Fatal("refresh did not rotate the refresh token")
	}
	if _, err := rp.Userinfo[*oidc.UserInfo](ctx, refreshed.AccessToken, refreshed.TokenType, claims.Subject, party); err != nil {
		t.Fatalf("userinfo with the refreshed access token: %v", err)
	}

	_, err = rp.RefreshTokens[*oidc.IDTokenClaims](ctx, party, tokens.RefreshToken, "", "")
	if !isInvalidGrant(err) {
		t.Fatalf("old refresh token: err = %v, want invalid_grant", err)
	}
	// Reuse of a rotated token is theft or a bug: the whole family dies, the newest token too.
	_, err = rp.RefreshTokens[*oidc.IDTokenClaims](ctx, party, refreshed.RefreshToken, "", "")
	if !isInvalidGrant(err) {
		t.Fatalf("newest refresh token after reuse: err = %v, want invalid_grant", err)
	}
	if _, err := rp.Userinfo[*oidc.UserInfo](ctx, refreshed.AccessToken, refreshed.TokenType, claims.Subject, party); err == nil {
		t.Fatal("access token of a revoked family still works at userinfo")
	}
}

// TestGoOIDCPublicClient: coreos/go-oidc with x/oauth2 as a public client (PKCE, no secret)
// signing in from inside the WeCom app, where the consent door yields the sensitive fields.
func TestGoOIDCPublicClient(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	ctx := context.Background()
	issuerProvider, err := gooidc.NewProvider(ctx, h.issuer)
	if err != nil {
		t.Fatal(err)
	}
	conf := &oauth2.Config{ClientID: spaClientID, Endpoint: issuerProvider.Endpoint(), RedirectURL: spaRedirect, Scopes: allScopes}
	verifier := oauth2.GenerateVerifier()
	state, nonce := randomString(), randomString()
	authURL := conf.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier), gooidc.Nonce(nonce))

	got := h.signIn(newBrowser(t, wecomUA), authURL, spaRedirect, "lisi")
	if got.Get("state") != state {
		t.Fatalf("state %q came back as %q", state, got.Get("state"))
	}
	tok, err := conf.Exchange(ctx, got.Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("exchange: %v", err)
	}
	rawID, _ := tok.Extra("id_token").(string)
	idToken, err := issuerProvider.Verifier(&gooidc.Config{ClientID: spaClientID}).Verify(ctx, rawID)
	if err != nil {
		t.Fatalf("verify ID token: %v", err)
	}
	if idToken.Nonce != nonce || idToken.Subject != "lisi" {
		t.Fatalf("ID token nonce/sub = %q/%q", idToken.Nonce, idToken.Subject)
	}
	var claims struct {
		Name          string   `json:"name"`
		Email         string   `json:"email"`
		EmailVerified *bool    `json:"email_verified"`
		Groups        []string `json:"groups"`
		AMR           []string `json:"amr"`
	}
	if err := idToken.Claims(&claims); err != nil {
		t.Fatal(err)
	}
	if claims.Name != "李四" || claims.Email == "" || claims.EmailVerified == nil || *claims.EmailVerified {
		t.Errorf("claims = %+v, want 李四 with an unverified email", claims)
	}
	if !slices.Contains(claims.AMR, "wecom_client") {
		t.Errorf("amr = %v, want wecom_client for the in-client door", claims.AMR)
	}

	info, err := issuerProvider.UserInfo(ctx, oauth2.StaticTokenSource(tok))
	if err != nil {
		t.Fatalf("userinfo: %v", err)
	}
	if info.Subject != idToken.Subject {
		t.Fatalf("userinfo sub %q != ID token sub %q", info.Subject, idToken.Subject)
	}

	expired := &oauth2.Token{RefreshToken: tok.RefreshToken, Expiry: time.Now().Add(-time.Hour)}
	fresh, err := conf.TokenSource(ctx, expired).Token()
	if err != nil {
		t.Fatalf("refresh: %v", err)
	}
	if fresh.RefreshToken == tok.RefreshToken {
		t.Fatal("refresh token not rotated")
	}
	if _, err := conf.TokenSource(ctx, expired).Token(); err == nil || !strings.Contains(err.Error(), "invalid_grant") {
		t.Fatalf("old refresh token: err = %v, want invalid_grant", err)
	}
}

// TestSecondApplicationUsesTheSession: a second application signs the same browser in without
// another WeCom round trip.
func TestSecondApplicationUsesTheSession(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	ctx := context.Background()
	b := newBrowser(t, desktopUA)
	first := exchange(t, h, b, webClientID, webRedirect, "zhangsan")

	before := h.sim.Calls("auth/getuserinfo")
	party, err := rp.NewRelyingPartyOIDC(ctx, h.issuer, otherClientID, webClientSecret, otherRedirect, allScopes)
	if err != nil {
		t.Fatal(err)
	}
	verifier := randomString() + randomString()
	res, loc := b.follow(rp.AuthURL("s2", party, rp.WithCodeChallenge(oidc.NewSHACodeChallenge(verifier))),
		func(u *url.URL) bool { return strings.HasPrefix(u.String(), otherRedirect) })
	if loc == nil {
		t.Fatalf("second application was not signed in silently; page status %d", res.StatusCode)
	}
	tokens, err := rp.CodeExchange[*oidc.IDTokenClaims](ctx, loc.Query().Get("code"), party, rp.WithCodeVerifier(verifier))
	if err != nil {
		t.Fatal(err)
	}
	if got := h.sim.Calls("auth/getuserinfo"); got != before {
		t.Fatalf("WeCom was asked again (%d → %d getuserinfo calls)", before, got)
	}
	if tokens.IDTokenClaims.Subject != first.Subject || tokens.IDTokenClaims.AuthTime != first.AuthTime {
		t.Fatalf("second sign-in sub/auth_time %q/%v, first %q/%v",
			tokens.IDTokenClaims.Subject, tokens.IDTokenClaims.AuthTime, first.Subject, first.AuthTime)
	}
	// Without profile claims in its ID token (id_token_claims off), the name comes from userinfo.
	if tokens.IDTokenClaims.Name != "" {
		t.Errorf("client without id_token_claims got name %q in the ID token", tokens.IDTokenClaims.Name)
	}
}

// exchange signs userID in at the given client with zitadel's RP and returns the ID token claims.
func exchange(t *testing.T, h *harness, b *browser, clientID, redirect, userID string) *oidc.IDTokenClaims {
	t.Helper()
	ctx := context.Background()
	party, err := rp.NewRelyingPartyOIDC(ctx, h.issuer, clientID, webClientSecret, redirect, allScopes)
	if err != nil {
		t.Fatal(err)
	}
	verifier := randomString() + randomString()
	got := h.signIn(b, rp.AuthURL("st", party, rp.WithCodeChallenge(oidc.NewSHACodeChallenge(verifier))), redirect, userID)
	if e := got.Get("error"); e != "" {
		t.Fatalf("sign-in of %s ended with error=%s (%s)", userID, e, got.Get("error_description"))
	}
	tokens, err := rp.CodeExchange[*oidc.IDTokenClaims](ctx, got.Get("code"), party, rp.WithCodeVerifier(verifier))
	if err != nil {
		t.Fatalf("code exchange for %s: %v", userID, err)
	}
	return tokens.IDTokenClaims
}

func claimStrings(v any) []string {
	list, _ := v.([]any)
	out := make([]string, 0, len(list))
	for _, x := range list {
		if s, ok := x.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

func isInvalidGrant(err error) bool {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		return re.ErrorCode == "invalid_grant"
	}
	return err != nil && strings.Contains(err.Error(), "invalid_grant")
}
