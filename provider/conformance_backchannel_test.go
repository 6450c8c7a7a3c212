package provider_test

// The Back-Channel RP-Initiated Logout OP plan: oidcc-backchannel-rp-initiated-logout.

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/wecom-oidc/wecom-oidc/storage"
)

const backchannelLogoutEvent = "http://schemas.openid.net/event/backchannel-logout"

// bclRequest is one request that reached a client's backchannel_logout_uri.
type bclRequest struct {
	method, contentType string
	form                url.Values
}

// bclReceiver is a client's backchannel_logout_uri: it records every request, fails the first
// failFirst of them with 500, and holds each successful answer for delay (released at the end of
// the test) to show whether the provider waits for it.
type bclReceiver struct {
	srv       *httptest.Server
	got       chan bclRequest
	failFirst atomic.Int32
	delay     time.Duration
	release   chan struct{}
}

func newBCLReceiver(t *testing.T, failFirst int, delay time.Duration) *bclReceiver {
	t.Helper()
	r := &bclReceiver{got: make(chan bclRequest, 16), delay: delay, release: make(chan struct{})}
	r.failFirst.Store(int32(failFirst))
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		form, _ := url.ParseQuery(string(body))
		r.got <- bclRequest{method: req.Method, contentType: req.Header.Get("Content-Type"), form: form}
		if r.failFirst.Add(-1) >= 0 {
			http.Error(w, "try again", http.StatusInternalServerError)
			return
		}
		if r.delay > 0 {
			select {
			case <-time.After(r.delay):
			case <-r.release:
			}
		}
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(r.srv.Close)
	t.Cleanup(func() { close(r.release) }) // runs before srv.Close
	return r
}

// next waits for the next back-channel request.
func (r *bclReceiver) next(t *testing.T, within time.Duration) bclRequest {
	t.Helper()
	select {
	case req := <-r.got:
		return req
	case <-time.After(within):
		t.Fatalf("no back-channel logout request within %v", within)
		return bclRequest{}
	}
}

// bclClient is a client registered with a backchannel_logout_uri at r.
func bclClient(r *bclReceiver) (confClient, harnessOptions) {
	c := confClient{
		id: "bcl-rp", secret: "bcl-rp-secret-0123456789abcdef",
		redirect: "https://bcl-rp.example/callback", postLogout: "https://bcl-rp.example/post_logout_redirect",
	}
	rec := c.record()
	rec.BackchannelLogoutURI = r.srv.URL + "/backchannel_logout"
	rec.BackchannelLogoutSessionRequired = true
	return c, harnessOptions{clients: []storage.Client{rec}}
}

// checkLogoutToken verifies a back-channel logout request as the suite does (OIDC Back-Channel
// Logout 1.0 §2.4–2.5): a form POST with logout_token, a JWT signed with a key from the provider's
// JWKS, typ logout+jwt (or JWT), iss, aud, iat, exp, jti, the event, sub and sid matching the ID
// token, and no nonce.
func (op *confOP) checkLogoutToken(t *testing.T, req bclRequest, c confClient, id idToken) {
	t.Helper()
	if req.method != http.MethodPost || !strings.HasPrefix(req.contentType, "application/x-www-form-urlencoded") {
		t.Fatalf("back-channel request %s with Content-Type %q, want a form POST", req.method, req.contentType)
	}
	if extra := unexpectedParams(req.form, "logout_token"); len(extra) > 0 {
		t.Errorf("unexpected parameters in the back-channel request: %v", extra)
	}
	raw := req.form.Get("logout_token")
	if raw == "" {
		t.Fatal("no logout_token")
	}
	jws, err := jose.ParseSigned(raw, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatalf("logout_token is not an RS256 JWS: %v", err)
	}
	hdr := jws.Signatures[0].Header
	set := op.jwks()
	keys := set.Key(hdr.KeyID)
	if len(keys) != 1 {
		t.Fatalf("logout_token kid %q names %d keys in the JWKS", hdr.KeyID, len(keys))
	}
	if _, err := jws.Verify(keys[0]); err != nil {
		t.Fatalf("logout_token signature: %v", err)
	}
	if typ, _ := hdr.ExtraHeaders[jose.HeaderType].(string); typ != "logout+jwt" && typ != "JWT" {
		t.Errorf("logout_token typ = %q, want logout+jwt (or JWT)", typ)
	}
	claims := jwtPart(t, raw, 1)
	if claims["iss"] != op.h.issuer {
		t.Errorf("iss = %v", claims["iss"])
	}
	if aud := audience(claims["aud"]); len(aud) == 0 || !slices.Contains(aud, c.id) {
		t.Errorf("aud = %v, want %s", claims["aud"], c.id)
	}
	iat, _ := claims["iat"].(float64)
	exp, _ := claims["exp"].(float64)
	now := float64(time.Now().Unix())
	if iat == 0 || iat > now+60 || iat < now-600 {
		t.Errorf("iat = %v", claims["iat"])
	}
	if exp <= iat {
		t.Errorf("exp = %v, iat %v", claims["exp"], claims["iat"])
	}
	if jti, _ := claims["jti"].(string); jti == "" {
		t.Error("no jti")
	}
	events, _ := claims["events"].(map[string]any)
	if ev, ok := events[backchannelLogoutEvent].(map[string]any); !ok || len(ev) != 0 {
		t.Errorf("events = %v, want {%q: {}}", claims["events"], backchannelLogoutEvent)
	}
	if _, ok := claims["nonce"]; ok {
		t.Error("logout_token has a nonce")
	}
	sid, hasSid := claims["sid"]
	if _, hasSub := claims["sub"]; !hasSub && !hasSid {
		t.Error("logout_token has neither sub nor sid")
	}
	if sub, ok := claims["sub"]; ok && sub != id.str("sub") {
		t.Errorf("logout_token sub = %v, ID token sub %q", sub, id.str("sub"))
	}
	idSid, ok := id.claims["sid"].(string)
	switch {
	case !ok || idSid == "":
		t.Error("the ID token has no sid (backchannel_logout_session_required)")
	case sid != idSid:
		t.Errorf("logout_token sid = %v, ID token sid %q", sid, idSid)
	}
}

// oidcc-backchannel-rp-initiated-logout: after logout at end_session, the client's
// backchannel_logout_uri receives a valid logout token; the person's redirect to the
// post_logout_redirect_uri is not held up by the receiver; prompt=none then fails. A receiver that
// fails twice still gets the token (bounded retry).
func confBackchannelLogout(t *testing.T) {
	t.Run("delivery", func(t *testing.T) {
		t.Parallel()
		// The receiver holds its answer for 3 s: a provider that waited for it could not redirect
		// the person in under 2 s.
		recv := newBCLReceiver(t, 0, 3*time.Second)
		c, opts := bclClient(recv)
		op := newConfOP(t, opts)
		if op.raw["backchannel_logout_supported"] != true {
			t.Errorf("backchannel_logout_supported = %v", op.raw["backchannel_logout_supported"])
		}
		b := newBrowser(t, desktopUA)
		f := op.login(b, c, "zhangsan")
		state := logoutState()
		start := time.Now()
		res, loc := op.endSession(b, url.Values{
			"id_token_hint": {f.tokens.IDToken}, "post_logout_redirect_uri": {c.postLogout}, "state": {state},
		})
		elapsed := time.Since(start)
		expectPostLogoutRedirect(t, res, loc, c.postLogout, state)
		if elapsed >= 2*time.Second {
			t.Errorf("end_session took %v: the redirect waited for the back channel", elapsed)
		}
		op.checkLogoutToken(t, recv.next(t, 5*time.Second), c, f.id)
		op.expectLoggedOut(b, c)
	})
	t.Run("retry", func(t *testing.T) {
		t.Parallel()
		recv := newBCLReceiver(t, 2, 0)
		c, opts := bclClient(recv)
		op := newConfOP(t, opts)
		b := newBrowser(t, desktopUA)
		f := op.login(b, c, "zhangsan")
		res, loc := op.endSession(b, url.Values{"id_token_hint": {f.tokens.IDToken}, "post_logout_redirect_uri": {c.postLogout}})
		expectPostLogoutRedirect(t, res, loc, c.postLogout, "")
		first := recv.next(t, 5*time.Second)
		recv.next(t, 20*time.Second)
		third := recv.next(t, 20*time.Second)
		op.checkLogoutToken(t, third, c, f.id)
		if first.form.Get("logout_token") == "" {
			t.Error("first attempt had no logout_token")
		}
		op.expectLoggedOut(b, c)
	})
}
