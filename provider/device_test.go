package provider_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"html"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zitadel/oidc/v3/pkg/oidc"
	"golang.org/x/oauth2"

	"github.com/wecom-oidc/wecom-oidc/storage"
)

// Device-flow clients: a command-line tool (public) and a confidential one.
var (
	cCLI     = confClient{id: "cli", redirect: "http://127.0.0.1/unused"}
	cCLIConf = confClient{id: "cli-conf", secret: "cli-conf-secret-0123456789abcdef", redirect: "https://cli.example/unused"}
)

func deviceClients() []storage.Client {
	a, b := cCLI.record(), cCLIConf.record()
	a.DeviceFlow, b.DeviceFlow = true, true
	return []storage.Client{a, b}
}

var (
	userCodeRe    = regexp.MustCompile(`^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$`)
	deviceTokenRe = regexp.MustCompile(`name="token" value="([^"]+)"`)
)

// deviceConfig is the device's x/oauth2 configuration for the client c.
func (op *confOP) deviceConfig(c confClient) *oauth2.Config {
	return &oauth2.Config{
		ClientID: c.id, ClientSecret: c.secret,
		Endpoint: oauth2.Endpoint{
			DeviceAuthURL: op.meta.DeviceAuthorizationEndpoint,
			TokenURL:      op.meta.TokenEndpoint,
			AuthStyle:     oauth2.AuthStyleInParams,
		},
		Scopes: []string{"openid", "profile", "email", "phone", "offline_access"},
	}
}

// poll runs the device's polling (x/oauth2's DeviceAccessToken) in the background.
func poll(ctx context.Context, cfg *oauth2.Config, da *oauth2.DeviceAuthResponse) <-chan pollResult {
	done := make(chan pollResult, 1)
	go func() {
		tok, err := cfg.DeviceAccessToken(ctx, da)
		done <- pollResult{tok, err}
	}()
	return done
}

type pollResult struct {
	tok *oauth2.Token
	err error
}

func (r pollResult) errorCode() string {
	var re *oauth2.RetrieveError
	if errors.As(r.err, &re) {
		return re.ErrorCode
	}
	return ""
}

func wait(t *testing.T, done <-chan pollResult) pollResult {
	t.Helper()
	select {
	case r := <-done:
		return r
	case <-time.After(20 * time.Second):
		t.Fatal("the device's polling did not end")
		return pollResult{}
	}
}

// verify is the person at the verification page in browser b: it opens the URL, signs in through
// WeCom as userID when the browser has no session, and returns the confirmation form's values.
func (op *confOP) verify(b *browser, verificationURL, userID string) url.Values {
	op.t.Helper()
	res, loc := b.follow(verificationURL, func(u *url.URL) bool { return u.Host != mustParse(op.t, op.h.issuer).Host })
	if loc != nil {
		res, _ = b.follow(clickMember(op.t, b.get(loc.String()), userID), func(*url.URL) bool { return false })
	}
	body := readBody(op.t, res)
	token := deviceTokenRe.FindStringSubmatch(body)
	userCode := regexp.MustCompile(`name="user_code" value="([^"]+)"`).FindStringSubmatch(body)
	if res.StatusCode != http.StatusOK || token == nil || userCode == nil {
		op.t.Fatalf("want the device confirmation page, got %d:\n%s", res.StatusCode, body)
	}
	// Under no-referrer the browser would post with "Origin: null", which is refused.
	if rp := res.Header.Get("Referrer-Policy"); rp != "same-origin" {
		op.t.Errorf("confirmation page Referrer-Policy %q, want same-origin", rp)
	}
	return url.Values{"user_code": {userCode[1]}, "token": {html.UnescapeString(token[1])}}
}

// answer posts the person's answer on the confirmation page.
func (op *confOP) answer(b *browser, form url.Values, action string) (int, string) {
	op.t.Helper()
	form = cloneForm(form)
	form.Set("action", action)
	res := b.post(op.h.issuer+"/device", form, op.h.issuer)
	return res.StatusCode, readBody(op.t, res)
}

func mustParse(t testing.TB, raw string) *url.URL {
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// TestDeviceFlow is RFC 8628 end to end with golang.org/x/oauth2's device flow as the device: it
// polls while the person opens the verification page, signs in through the simulated WeCom and
// allows it; the device gets tokens (once), and its ID token and refresh token work.
func TestDeviceFlow(t *testing.T) {
	op := newConfOP(t, harnessOptions{clients: deviceClients(), devicePollInterval: time.Second})
	ctx := context.Background()

	if op.meta.DeviceAuthorizationEndpoint != op.h.issuer+"/device_authorization" {
		t.Fatalf("discovery device_authorization_endpoint = %q", op.meta.DeviceAuthorizationEndpoint)
	}
	if !slices.Contains(op.meta.GrantTypesSupported, oidc.GrantTypeDeviceCode) {
		t.Errorf("grant_types_supported = %v, want the device grant", op.meta.GrantTypesSupported)
	}

	cfg := op.deviceConfig(cCLI)
	da, err := cfg.DeviceAuth(ctx)
	if err != nil {
		t.Fatalf("device authorization: %v", err)
	}
	if !userCodeRe.MatchString(da.UserCode) || da.VerificationURI != op.h.issuer+"/device" ||
		da.VerificationURIComplete != da.VerificationURI+"?user_code="+da.UserCode || da.Interval != 1 {
		t.Fatalf("device authorization response %+v", da)
	}
	if left := time.Until(da.Expiry); left < 9*time.Minute || left > 10*time.Minute {
		t.Errorf("expires in %v, want 10m", left)
	}
	done := poll(ctx, cfg, da)

	// The person types the code as people do: lower case, a space for the dash.
	b := newBrowser(t, desktopUA)
	entry := readBody(t, b.get(da.VerificationURI))
	if !strings.Contains(entry, `name="user_code"`) {
		t.Fatalf("verification page without a code field:\n%s", entry)
	}
	typed := strings.ToLower(strings.Replace(da.UserCode, "-", " ", 1))
	form := op.verify(b, da.VerificationURI+"?user_code="+url.QueryEscape(typed), "zhangsan")
	if form.Get("user_code") != da.UserCode {
		t.Fatalf("confirmation for %q, want %q", form.Get("user_code"), da.UserCode)
	}
	select {
	case r := <-done:
		t.Fatalf("the device got an answer before the person allowed it: %+v", r)
	default:
	}

	if status, body := op.answer(b, form, "allow"); status != http.StatusOK || !strings.Contains(body, "设备已登录") {
		t.Fatalf("allow: %d\n%s", status, body)
	}
	r := wait(t, done)
	if r.err != nil {
		t.Fatalf("device token: %v", r.err)
	}
	idToken, _ := r.tok.Extra("id_token").(string)
	id := op.checkIDToken(idToken, cCLI, "")
	if id.str("sub") != "zhangsan" || id.str("name") != "张三" {
		t.Errorf("device ID token sub/name = %q/%q", id.str("sub"), id.str("name"))
	}
	if status, _, info := op.userinfo("get", r.tok.AccessToken); status != http.StatusOK || info["sub"] != "zhangsan" {
		t.Errorf("userinfo with the device's access token: %d %v", status, info)
	}
	if r.tok.RefreshToken == "" {
		t.Fatal("no refresh token for offline_access")
	}
	op.refreshOK(op.refresh(cCLI, authNone, r.tok.RefreshToken))

	// The device code is spent; the page's answer too.
	again := op.token(cCLI, authNone, url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:device_code"}, "device_code": {da.DeviceCode}})
	op.tokenError(again, "invalid_grant")
	if status, _ := op.answer(b, form, "allow"); status != http.StatusBadRequest {
		t.Errorf("second answer: %d", status)
	}
	// Another client cannot redeem it either.
	da2, err := cfg.DeviceAuth(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stolen := op.token(cCLIConf, authPost, url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:device_code"}, "device_code": {da2.DeviceCode}})
	op.tokenError(stolen, "invalid_grant")

	metrics := readBody(t, b.get(op.h.issuer+"/metrics"))
	for _, want := range []string{
		`wecom_oidc_cross_device_total{flow="device",result="started"} 2`,
		`wecom_oidc_cross_device_total{flow="device",result="completed"} 1`,
		`wecom_oidc_tokens_issued_total{grant="device_code"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// TestDeviceFlowPolling: slow_down, expiry and denial, each seen by x/oauth2's client, and
// slow_down's rule checked poll by poll.
func TestDeviceFlowPolling(t *testing.T) {
	op := newConfOP(t, harnessOptions{clients: deviceClients(), devicePollInterval: 2 * time.Second})
	ctx := context.Background()
	cfg := op.deviceConfig(cCLI)
	pollForm := func(da *oauth2.DeviceAuthResponse) url.Values {
		return url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:device_code"}, "device_code": {da.DeviceCode}}
	}

	t.Run("slow_down, poll by poll", func(t *testing.T) {
		da, err := cfg.DeviceAuth(ctx)
		if err != nil {
			t.Fatal(err)
		}
		op.tokenError(op.token(cCLI, authNone, pollForm(da)), "authorization_pending")
		op.tokenError(op.token(cCLI, authNone, pollForm(da)), "slow_down")
		op.clock.Advance(time.Second)
		op.tokenError(op.token(cCLI, authNone, pollForm(da)), "slow_down") // 1 s after the last poll
		op.clock.Advance(2 * time.Second)
		op.tokenError(op.token(cCLI, authNone, pollForm(da)), "authorization_pending")
	})

	t.Run("slow_down with x/oauth2", func(t *testing.T) {
		da, err := cfg.DeviceAuth(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// An impatient device polls every second where 2 are asked: told slow_down, it waits 6 s
		// and is then in time. The person allows it meanwhile.
		da.Interval = 1
		var slowDowns atomic.Int32
		client := &http.Client{Transport: countingTransport{next: http.DefaultTransport, seen: func(body string) {
			if strings.Contains(body, `"slow_down"`) {
				slowDowns.Add(1)
			}
		}}}
		done := poll(context.WithValue(ctx, oauth2.HTTPClient, client), cfg, da)
		b := newBrowser(t, desktopUA)
		form := op.verify(b, da.VerificationURIComplete, "zhangsan")
		time.Sleep(2500 * time.Millisecond) // past the device's second poll
		if status, _ := op.answer(b, form, "allow"); status != http.StatusOK {
			t.Fatalf("allow: %d", status)
		}
		r := wait(t, done)
		if r.err != nil {
			t.Fatalf("device token after slow_down: %v", r.err)
		}
		if n := slowDowns.Load(); n != 1 {
			t.Errorf("the device was told slow_down %d times, want 1", n)
		}
	})

	t.Run("denied", func(t *testing.T) {
		da, err := cfg.DeviceAuth(ctx)
		if err != nil {
			t.Fatal(err)
		}
		done := poll(ctx, cfg, da)
		b := newBrowser(t, desktopUA)
		form := op.verify(b, da.VerificationURIComplete, "lisi")
		if status, body := op.answer(b, form, "deny"); status != http.StatusOK || !strings.Contains(body, "已拒绝") {
			t.Fatalf("deny: %d\n%s", status, body)
		}
		if r := wait(t, done); r.errorCode() != "access_denied" {
			t.Errorf("device after denial: %v, want access_denied", r.err)
		}
		if status, _ := op.answer(b, form, "allow"); status != http.StatusBadRequest {
			t.Errorf("allow after deny: %d", status)
		}
	})

	t.Run("expired", func(t *testing.T) {
		da, err := cfg.DeviceAuth(ctx)
		if err != nil {
			t.Fatal(err)
		}
		op.clock.Advance(11 * time.Minute) // the code's ten minutes pass
		if r := wait(t, poll(ctx, cfg, da)); r.errorCode() != "expired_token" {
			t.Errorf("device after expiry: %v, want expired_token", r.err)
		}
		res := newBrowser(t, desktopUA).get(da.VerificationURIComplete)
		if body := readBody(t, res); res.StatusCode != http.StatusBadRequest || !strings.Contains(body, `id="error"`) {
			t.Errorf("verification page for an expired code: %d\n%s", res.StatusCode, body)
		}
	})

	t.Run("WeCom refuses the person", func(t *testing.T) {
		da, err := cfg.DeviceAuth(ctx)
		if err != nil {
			t.Fatal(err)
		}
		b := newBrowser(t, desktopUA)
		_, loc := b.follow(da.VerificationURIComplete, func(u *url.URL) bool { return strings.Contains(u.Path, "/wwlogin/") })
		if loc == nil {
			t.Fatal("no WeCom login for a browser without a session")
		}
		res, _ := b.follow(clickMember(t, b.get(loc.String()), "zhaoliu"), func(*url.URL) bool { return false })
		readBody(t, res)
		if res.StatusCode != http.StatusForbidden {
			t.Errorf("disabled member: %d", res.StatusCode)
		}
		op.clock.Advance(3 * time.Second)
		op.tokenError(op.token(cCLI, authNone, pollForm(da)), "access_denied")
	})
}

// TestDeviceFlowClients: who may start a device flow, and how they authenticate.
func TestDeviceFlowClients(t *testing.T) {
	op := newConfOP(t, harnessOptions{clients: deviceClients()})
	start := func(c confClient, auth tokenAuth) (int, map[string]any) {
		res, body := op.postForm(op.meta.DeviceAuthorizationEndpoint, c, auth, url.Values{"scope": {"openid bogus"}}, nil)
		var m map[string]any
		if err := json.Unmarshal([]byte(body), &m); err != nil {
			t.Fatalf("not JSON (%d): %s", res.StatusCode, body)
		}
		if cc := res.Header.Get("Cache-Control"); cc != "no-store" {
			t.Errorf("Cache-Control %q", cc)
		}
		return res.StatusCode, m
	}
	for _, tc := range []struct {
		name   string
		c      confClient
		auth   tokenAuth
		status int
		err    string
	}{
		{"public", cCLI, authNone, http.StatusOK, ""},
		{"confidential, basic", cCLIConf, authBasic, http.StatusOK, ""},
		{"confidential, post", cCLIConf, authPost, http.StatusOK, ""},
		{"confidential without its secret", cCLIConf, authNone, http.StatusUnauthorized, "invalid_client"},
		{"confidential, wrong secret", confClient{id: cCLIConf.id, secret: "wrong-secret-0123456789"}, authBasic, http.StatusUnauthorized, "invalid_client"},
		{"not opted in", cWeb, authBasic, http.StatusBadRequest, "unauthorized_client"},
		{"unknown client", confClient{id: "nobody"}, authNone, http.StatusUnauthorized, "invalid_client"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, m := start(tc.c, tc.auth)
			if status != tc.status || (tc.err != "" && m["error"] != tc.err) {
				t.Fatalf("%d %v, want %d %s", status, m, tc.status, tc.err)
			}
			if tc.err == "" && (m["device_code"] == "" || m["user_code"] == nil) {
				t.Errorf("response %v", m)
			}
		})
	}

	t.Run("answers need this browser's session", func(t *testing.T) {
		cfg := op.deviceConfig(cCLI)
		da, err := cfg.DeviceAuth(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		b := newBrowser(t, desktopUA)
		form := op.verify(b, da.VerificationURIComplete, "zhangsan")
		if status, _ := op.answer(newBrowser(t, desktopUA), form, "allow"); status != http.StatusBadRequest {
			t.Errorf("answer from a browser without the session: %d", status)
		}
		forged := cloneForm(form)
		forged.Set("token", "forged")
		if status, _ := op.answer(b, forged, "allow"); status != http.StatusBadRequest {
			t.Errorf("answer with a forged token: %d", status)
		}
		res := b.post(op.h.issuer+"/device", url.Values{"user_code": form["user_code"], "token": form["token"], "action": {"allow"}}, "https://evil.example")
		readBody(t, res)
		if res.StatusCode != http.StatusBadRequest {
			t.Errorf("answer from another origin: %d", res.StatusCode)
		}
		op.tokenError(op.token(cCLI, authNone, url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:device_code"}, "device_code": {da.DeviceCode}}), "authorization_pending")
	})

	t.Run("guessing user codes", func(t *testing.T) {
		b := newBrowser(t, desktopUA)
		for i := range 11 {
			res := b.get(op.h.issuer + "/device?user_code=BCDF-GHJ" + string("BCDFGHJKLMN"[i]))
			readBody(t, res)
			want := http.StatusBadRequest
			if i == 10 {
				want = http.StatusTooManyRequests
			}
			if res.StatusCode != want {
				t.Fatalf("wrong code %d: status %d, want %d", i+1, res.StatusCode, want)
			}
		}
		op.clock.Advance(time.Minute)
		if res := b.get(op.h.issuer + "/device?user_code=BCDF-GHJK"); res.StatusCode != http.StatusBadRequest {
			t.Errorf("a minute later: %d, want the page again", res.StatusCode)
		}
	})

	t.Run("inside the WeCom app, the in-client door", func(t *testing.T) {
		da, err := op.deviceConfig(cCLI).DeviceAuth(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		_, loc := newBrowser(t, wecomUA).follow(da.VerificationURIComplete, func(u *url.URL) bool { return strings.Contains(u.Path, "/connect/oauth2/authorize") })
		if loc == nil {
			t.Error("the WeCom app was not sent to the in-client authorization")
		}
	})
}

// countingTransport shows a test every response body the device receives.
type countingTransport struct {
	next http.RoundTripper
	seen func(body string)
}

func (c countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := c.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		return nil, err
	}
	c.seen(string(body))
	res.Body = io.NopCloser(bytes.NewReader(body))
	return res, nil
}
