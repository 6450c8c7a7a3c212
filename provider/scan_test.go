package provider_test

import (
	"context"
	"encoding/json"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/zitadel/oidc/v3/pkg/client/rp"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"golang.org/x/oauth2"
)

// scanPage is what the computer's QR page tells a test: the link its QR code carries and where
// its script polls.
type scanPage struct {
	link, poll string
}

var (
	qrLinkRe = regexp.MustCompile(`id="qr-link">([^<]+)<`)
	pollRe   = regexp.MustCompile(`data-poll="([^"]+)"`)
	actionRe = regexp.MustCompile(`<form method="POST" action="([^"]+)"`)
)

// openScanPage follows authURL in the computer's browser to the QR page.
func openScanPage(t *testing.T, b *browser, authURL string) scanPage {
	t.Helper()
	res, loc := b.follow(authURL, func(*url.URL) bool { return false })
	body := readBody(t, res)
	if loc != nil || res.StatusCode != http.StatusOK || !strings.Contains(body, `<svg`) {
		t.Fatalf("want the QR page, got status %d:\n%s", res.StatusCode, body)
	}
	if csp := res.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "connect-src 'self'") || !strings.Contains(csp, "script-src 'sha256-") {
		t.Errorf("QR page CSP %q: want its one script and same-origin polling only", csp)
	}
	link, poll := qrLinkRe.FindStringSubmatch(body), pollRe.FindStringSubmatch(body)
	if link == nil || poll == nil {
		t.Fatalf("QR page without link or poll URL:\n%s", body)
	}
	p := scanPage{link: html.UnescapeString(link[1])}
	u, err := res.Request.URL.Parse(html.UnescapeString(poll[1]))
	if err != nil {
		t.Fatal(err)
	}
	p.poll = u.String()
	return p
}

// status polls as the QR page's script does.
func (s scanPage) status(t *testing.T, b *browser) (status, next string) {
	t.Helper()
	res := b.get(s.poll)
	body := readBody(t, res)
	var got struct{ Status, Next string }
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatalf("status poll: %d %s", res.StatusCode, body)
	}
	if got.Next != "" {
		u, _ := res.Request.URL.Parse(got.Next)
		got.Next = u.String()
	}
	return got.Status, got.Next
}

// post submits the phone's confirmation form, as its browser would (same origin).
func (b *browser) post(raw string, form url.Values, origin string) *http.Response {
	b.t.Helper()
	req, err := http.NewRequest(http.MethodPost, raw, strings.NewReader(form.Encode()))
	if err != nil {
		b.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("User-Agent", b.userAgent)
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	res, err := b.client.Do(req)
	if err != nil {
		b.t.Fatalf("POST %s: %v", raw, err)
	}
	return res
}

// openOnPhone opens the QR code's link on a phone and returns its confirmation form's action.
func openOnPhone(t *testing.T, phone *browser, link string) string {
	t.Helper()
	res := phone.get(link)
	body := readBody(t, res)
	m := actionRe.FindStringSubmatch(body)
	if res.StatusCode != http.StatusOK || m == nil || !strings.Contains(body, "在电脑上登录") {
		t.Fatalf("phone: want the confirmation page, got %d:\n%s", res.StatusCode, body)
	}
	// Under no-referrer the browser would post with "Origin: null", which is refused.
	if rp := res.Header.Get("Referrer-Policy"); rp != "same-origin" {
		t.Errorf("confirmation page Referrer-Policy %q, want same-origin", rp)
	}
	u, _ := res.Request.URL.Parse(html.UnescapeString(m[1]))
	return u.String()
}

// confirmOnPhone opens the link on the phone, confirms, and signs userID in at the simulated
// WeCom; it returns the page the phone ends on.
func confirmOnPhone(t *testing.T, phone *browser, link, issuer, userID string) *http.Response {
	t.Helper()
	res := phone.post(openOnPhone(t, phone, link), url.Values{"action": {"confirm"}}, issuer)
	res.Body.Close()
	wecomURL, err := res.Request.URL.Parse(res.Header.Get("Location"))
	if err != nil || res.StatusCode != http.StatusSeeOther {
		t.Fatalf("confirm: %d to %q", res.StatusCode, res.Header.Get("Location"))
	}
	res, _ = phone.follow(clickMember(t, phone.get(wecomURL.String()), userID), func(*url.URL) bool { return false })
	return res
}

// TestScanSignIn is the scan sign-in end to end with two browsers — a computer and a phone with
// the WeCom app, separate cookie jars — for an application using zitadel's RP: the computer ends
// at the application with an ID token carrying the mobile and email that only getuserdetail
// gives (the app was created after 2022-06-20: user/get discloses neither).
func TestScanSignIn(t *testing.T) {
	op := newConfOP(t, harnessOptions{desktopScan: "prefer"})
	h := op.h
	ctx := context.Background()
	party, err := rp.NewRelyingPartyOIDC(ctx, h.issuer, webClientID, webClientSecret, webRedirect, allScopes,
		rp.WithAuthStyle(oauth2.AuthStyleInHeader))
	if err != nil {
		t.Fatal(err)
	}
	verifier := randomString() + randomString()
	authURL := rp.AuthURL("app-state", party, rp.WithCodeChallenge(oidc.NewSHACodeChallenge(verifier)))

	desktop, phone := newBrowser(t, desktopUA), newBrowser(t, wecomUA)
	scan := openScanPage(t, desktop, authURL)
	if !strings.HasPrefix(scan.link, h.issuer+"/login/wecom/m/") {
		t.Fatalf("QR link %q", scan.link)
	}
	if got, _ := scan.status(t, desktop); got != "pending" {
		t.Fatalf("status before the scan = %q", got)
	}
	if op.wecomPages() != 0 {
		t.Fatal("the computer was sent to WeCom's web login")
	}

	action := openOnPhone(t, phone, scan.link)
	if got, _ := scan.status(t, desktop); got != "opened" {
		t.Fatalf("status after the phone opened the link = %q", got)
	}
	// Until the person confirms, nothing signs the computer in.
	res := desktop.get(strings.Replace(scan.poll, "/login/scan/status", "/login/scan/finish", 1))
	res.Body.Close()
	if loc := res.Header.Get("Location"); res.StatusCode != http.StatusFound || !strings.HasPrefix(loc, "/login?") {
		t.Fatalf("finish before confirmation: %d to %q, want back to the QR page", res.StatusCode, loc)
	}
	if h.sim.Calls("connect/oauth2/authorize") != 0 {
		t.Fatal("the phone reached WeCom without confirming")
	}

	res = phone.post(action, url.Values{"action": {"confirm"}}, h.issuer)
	res.Body.Close()
	wecomURL, _ := res.Request.URL.Parse(res.Header.Get("Location"))
	if res.StatusCode != http.StatusSeeOther || wecomURL.Path != "/connect/oauth2/authorize" || wecomURL.Query().Get("scope") != "snsapi_privateinfo" {
		t.Fatalf("confirm: %d to %s, want WeCom's in-client authorization with snsapi_privateinfo", res.StatusCode, wecomURL)
	}
	if got, _ := scan.status(t, desktop); got != "confirmed" {
		t.Fatalf("status after confirmation = %q", got)
	}
	res, loc := phone.follow(clickMember(t, phone.get(wecomURL.String()), "zhangsan"), func(*url.URL) bool { return false })
	if body := readBody(t, res); loc != nil || res.StatusCode != http.StatusOK || !strings.Contains(body, "已在电脑上登录") {
		t.Fatalf("phone after WeCom: %d\n%s", res.StatusCode, body)
	}
	if h.sim.Calls("auth/getuserdetail") == 0 {
		t.Fatal("getuserdetail was not called: no user_ticket came from the in-client door")
	}

	status, next := scan.status(t, desktop)
	if status != "approved" || !strings.Contains(next, "/login/scan/finish") {
		t.Fatalf("status after WeCom = %q, next %q", status, next)
	}
	_, appURL := desktop.follow(next, func(u *url.URL) bool { return strings.HasPrefix(u.String(), webRedirect) })
	if appURL == nil || appURL.Query().Get("state") != "app-state" || appURL.Query().Get("code") == "" {
		t.Fatalf("the computer did not reach the application with a code: %v", appURL)
	}
	tokens, err := rp.CodeExchange[*oidc.IDTokenClaims](ctx, appURL.Query().Get("code"), party, rp.WithCodeVerifier(verifier))
	if err != nil {
		t.Fatalf("code exchange: %v", err)
	}
	c := tokens.IDTokenClaims
	if c.Subject != "zhangsan" || c.Email != "zhangsan@corp.example" || c.PhoneNumber != "+86 13800000001" {
		t.Errorf("ID token sub/email/phone_number = %q/%q/%q, want zhangsan with the mobile and email of getuserdetail", c.Subject, c.Email, c.PhoneNumber)
	}
	if !slices.Contains(c.AuthenticationMethodsReferences, "wecom_client") {
		t.Errorf("amr = %v, want wecom_client (signed in inside the WeCom app)", c.AuthenticationMethodsReferences)
	}

	// Single use, everywhere: the link, the finish, the WeCom callback.
	if res := phone.get(scan.link); res.StatusCode != http.StatusBadRequest || !strings.Contains(readBody(t, res), "二维码已失效") {
		t.Errorf("link opened again after the sign-in: %d", res.StatusCode)
	}
	if res := desktop.get(next); res.StatusCode != http.StatusBadRequest {
		res.Body.Close()
		t.Errorf("finish taken twice: %d %s", res.StatusCode, res.Header.Get("Location"))
	}
	// The computer has its own SSO session now: another application signs in without WeCom.
	pages := op.wecomPages()
	op.expectLoggedIn(desktop, cOther, "zhangsan")
	if op.wecomPages() != pages {
		t.Error("the computer's second sign-in went to WeCom: no session from the scan")
	}
	// The phone holds none.
	op.expectSilentError(phone, cOther, authParams(cOther, "prompt", "none"), "login_required")

	metrics := readBody(t, desktop.get(h.issuer+"/metrics"))
	for _, want := range []string{
		`wecom_oidc_cross_device_total{flow="scan",result="started"} 1`,
		`wecom_oidc_cross_device_total{flow="scan",result="completed"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// TestScanSignInRefusals: what must not sign the computer in.
func TestScanSignInRefusals(t *testing.T) {
	op := newConfOP(t, harnessOptions{desktopScan: "prefer"})
	h := op.h
	start := func(t *testing.T) (*browser, scanPage) {
		desktop := newBrowser(t, desktopUA)
		return desktop, openScanPage(t, desktop, op.authorizeURL(authParams(cWeb)))
	}
	usedPage := func(t *testing.T, res *http.Response) {
		t.Helper()
		if body := readBody(t, res); res.StatusCode != http.StatusBadRequest || !strings.Contains(body, "二维码已失效") {
			t.Errorf("got %d, want the code-no-longer-works page:\n%s", res.StatusCode, body)
		}
	}

	t.Run("expired handle", func(t *testing.T) {
		desktop, scan := start(t)
		op.clock.Advance(3 * time.Minute)
		usedPage(t, newBrowser(t, wecomUA).get(scan.link))
		status, next := scan.status(t, desktop)
		if status != "expired" || !strings.Contains(next, "/login?authRequestID=") {
			t.Errorf("computer: status %q next %q, want expired and a fresh code", status, next)
		}
		// The fresh page has a new code that works.
		res, _ := desktop.follow(next, func(*url.URL) bool { return false })
		body := readBody(t, res)
		if m := qrLinkRe.FindStringSubmatch(body); m == nil || html.UnescapeString(m[1]) == scan.link {
			t.Errorf("no fresh code after expiry:\n%s", body)
		}
	})

	t.Run("second phone", func(t *testing.T) {
		desktop, scan := start(t)
		action := openOnPhone(t, newBrowser(t, wecomUA), scan.link)
		thief := newBrowser(t, wecomUA)
		usedPage(t, thief.get(scan.link))
		// Nor can the second phone answer the first one's page.
		res := thief.post(action, url.Values{"action": {"confirm"}}, h.issuer)
		readBody(t, res)
		if res.StatusCode != http.StatusBadRequest {
			t.Errorf("second phone confirming: %d", res.StatusCode)
		}
		if got, _ := scan.status(t, desktop); got != "opened" {
			t.Errorf("status %q, want still opened by the first phone", got)
		}
	})

	t.Run("confirmation from another site", func(t *testing.T) {
		desktop, scan := start(t)
		phone := newBrowser(t, wecomUA)
		action := openOnPhone(t, phone, scan.link)
		res := phone.post(action, url.Values{"action": {"confirm"}}, "https://evil.example")
		readBody(t, res)
		if res.StatusCode != http.StatusBadRequest {
			t.Errorf("cross-origin confirm: %d", res.StatusCode)
		}
		if got, _ := scan.status(t, desktop); got != "opened" {
			t.Errorf("status %q after a cross-origin confirm", got)
		}
	})

	t.Run("not the WeCom app", func(t *testing.T) {
		desktop, scan := start(t)
		res := newBrowser(t, "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Safari/604.1").get(scan.link)
		if body := readBody(t, res); res.StatusCode != http.StatusOK || !strings.Contains(body, "请使用企业微信扫码") {
			t.Errorf("camera app: %d\n%s", res.StatusCode, body)
		}
		if got, _ := scan.status(t, desktop); got != "pending" {
			t.Errorf("status %q: a non-WeCom browser claimed the code", got)
		}
		openOnPhone(t, newBrowser(t, wecomUA), scan.link) // still free for the app
	})

	t.Run("cancelled on the phone", func(t *testing.T) {
		desktop, scan := start(t)
		phone := newBrowser(t, wecomUA)
		action := openOnPhone(t, phone, scan.link)
		res := phone.post(action, url.Values{"action": {"cancel"}}, h.issuer)
		if body := readBody(t, res); res.StatusCode != http.StatusOK || !strings.Contains(body, "已取消登录") {
			t.Fatalf("cancel: %d\n%s", res.StatusCode, body)
		}
		status, next := scan.status(t, desktop)
		if status != "denied" || next == "" {
			t.Fatalf("computer: status %q next %q", status, next)
		}
		res, loc := desktop.follow(next, isAppURL)
		if body := readBody(t, res); loc != nil || !strings.Contains(body, "手机上已取消登录") || !strings.Contains(body, `id="retry"`) {
			t.Errorf("computer after the cancel: %v\n%s", loc, body)
		}
		// The cancelled code cannot be confirmed afterwards.
		res = phone.post(action, url.Values{"action": {"confirm"}}, h.issuer)
		readBody(t, res)
		if res.StatusCode != http.StatusBadRequest || h.sim.Calls("connect/oauth2/authorize") != 0 {
			t.Errorf("confirm after cancel: %d", res.StatusCode)
		}
	})

	t.Run("WeCom refuses the person", func(t *testing.T) {
		desktop, scan := start(t)
		res := confirmOnPhone(t, newBrowser(t, wecomUA), scan.link, h.issuer, "zhaoliu")
		readBody(t, res)
		if res.StatusCode != http.StatusForbidden {
			t.Errorf("disabled member on the phone: %d", res.StatusCode)
		}
		if status, _ := scan.status(t, desktop); status != "denied" {
			t.Errorf("computer: status %q, want denied", status)
		}
	})

	t.Run("WeCom unavailable on the phone", func(t *testing.T) {
		desktop, scan := start(t)
		h.sim.SetHTTPStatus("auth/getuserinfo", http.StatusBadGateway)
		defer h.sim.SetHTTPStatus("auth/getuserinfo", 0)
		res := confirmOnPhone(t, newBrowser(t, wecomUA), scan.link, h.issuer, "zhangsan")
		readBody(t, res)
		if res.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("phone with WeCom down: %d", res.StatusCode)
		}
		status, next := scan.status(t, desktop)
		if status != "failed" {
			t.Fatalf("computer: status %q, want failed", status)
		}
		res, _ = desktop.follow(next, isAppURL)
		if body := readBody(t, res); !strings.Contains(body, "暂时无法连接企业微信") || !strings.Contains(body, "error=temporarily_unavailable") {
			t.Errorf("computer after WeCom failed on the phone:\n%s", body)
		}
	})

	t.Run("another browser's poll", func(t *testing.T) {
		_, scan := start(t)
		if status, next := scan.status(t, newBrowser(t, desktopUA)); status != "expired" || strings.Contains(next, "finish") {
			t.Errorf("stranger's poll: %q %q, want nothing about the scan", status, next)
		}
	})

	t.Run("web login still offered", func(t *testing.T) {
		desktop := newBrowser(t, desktopUA)
		res, _ := desktop.follow(op.authorizeURL(authParams(cWeb)), func(*url.URL) bool { return false })
		body := readBody(t, res)
		m := regexp.MustCompile(`id="web-login" href="([^"]+)"`).FindStringSubmatch(body)
		if m == nil {
			t.Fatalf("no web-login link:\n%s", body)
		}
		u, _ := res.Request.URL.Parse(html.UnescapeString(m[1]))
		_, loc := desktop.follow(u.String(), func(u *url.URL) bool { return strings.Contains(u.Path, "/wwlogin/sso/login") })
		if loc == nil {
			t.Error("the web-login link does not lead to WeCom's web login")
		}
	})
}
