package provider

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/zitadel/oidc/v3/pkg/oidc"

	"github.com/wecom-oidc/wecom-oidc/storage"
	"github.com/wecom-oidc/wecom-oidc/upstream"
)

// The scan sign-in. A computer's login page shows a QR code of a short single-use link,
// /login/wecom/m/{handle}. The person scans it with the WeCom app; the phone that opens the link
// first is bound to it and shows a confirmation ("Sign in to <app> on a computer?"); on confirm
// it goes through WeCom's in-client authorization with consent (the only door that discloses
// mobile and email), and WeCom's callback on the phone approves the computer's sign-in. The
// computer's page polls the status with its own cookie, and once approved finishes the login
// itself: its session cookie is set in its own browser, and the code goes to the application
// from there. So the phone never holds anything the computer's login needs, and the computer
// never trusts anything but its own cookie and the store.
//
// Statuses of a storage.ScanLogin:
const (
	scanPending   = "pending"   // shown on the computer
	scanOpened    = "opened"    // a phone opened the link; its confirmation page is shown
	scanConfirmed = "confirmed" // the person confirmed; the phone is at WeCom
	scanApproved  = "approved"  // WeCom signed the person in; the computer may finish
	scanFinished  = "finished"  // the computer took the sign-in
	scanDenied    = "denied"    // cancelled on the phone, or refused by WeCom
	scanFailed    = "failed"    // WeCom or we could not complete it
	// scanExpired is no stored status: what the computer is told when the record is gone.
	scanExpired = "expired"
)

// Desktop scan settings (Upstream.DesktopScan).
const (
	ScanOff    = "off"    // the computer goes straight to WeCom's web login
	ScanOffer  = "offer"  // the web login first, the QR code offered beside it
	ScanPrefer = "prefer" // the QR code first, the web login offered beside it
)

const (
	// scanLinkTTL: how long a QR code's link may be opened. Short: a code on a screen can be
	// photographed.
	scanLinkTTL = 2 * time.Minute
	// scanLoginTTL: how long a confirmed phone has for WeCom (consent included), and an approved
	// sign-in for the computer to take it.
	scanLoginTTL = 5 * time.Minute
	// scanHandleLen: 24 characters of [A-Za-z0-9] carry 142 bits and keep the QR code small.
	scanHandleLen = 24
	// qrSize is the QR code's width on the page, in CSS pixels.
	qrSize = 232
)

// Reasons a scan sign-in ended without one, besides the upstream's refusal kinds.
const (
	reasonCancelled     = "cancelled"
	reasonInternal      = "internal"
	reasonUnavailable   = "unavailable"
	reasonMisconfigured = "misconfigured"
)

var (
	errScanState  = errors.New("provider: the scan sign-in is not in the expected state")
	errOtherPhone = errors.New("provider: the scan link was opened on another phone")
)

// scanUpstream returns the upstream's phone sign-in when the scan sign-in is to be offered on
// this page: turned on, the connector can do it, the person is not already in the app (there the
// in-client door is direct), and they did not choose the web login.
func (p *Provider) scanUpstream(r *http.Request, up Upstream) (upstream.PhoneSignIn, bool) {
	if up.DesktopScan != ScanOffer && up.DesktopScan != ScanPrefer {
		return nil, false
	}
	phone, ok := up.Connector.(upstream.PhoneSignIn)
	if !ok || phone.InApp(r.UserAgent()) || r.URL.Query().Get("door") == "web" {
		return nil, false
	}
	return phone, true
}

// renderScan shows the computer's QR page for ar, with a fresh handle.
func (p *Provider) renderScan(w http.ResponseWriter, r *http.Request, ar storage.AuthRequest, up Upstream, lang string) {
	ctx := r.Context()
	handle := randomAlnum(scanHandleLen)
	now := p.now()
	err := p.store.CreateScanLogin(ctx, storage.ScanLogin{
		HandleHash:         storage.HashSecret(handle),
		AuthRequestID:      ar.ID,
		Upstream:           up.ID,
		DesktopBrowserHash: ar.BrowserHash,
		Status:             scanPending,
		CreatedAt:          now,
		ExpiresAt:          now.Add(scanLinkTTL),
	})
	if err != nil {
		p.failPageLang(w, r, lang, http.StatusInternalServerError, msgInternal, "scan: store the QR code's handle", err)
		return
	}
	scanLink := p.cfg.Issuer + "/login/wecom/m/" + handle
	svg, err := qrSVG(scanLink, qrSize, msgScanTitle.Title[lang])
	if err != nil {
		p.failPageLang(w, r, lang, http.StatusInternalServerError, msgInternal, "scan: draw the QR code", err)
		return
	}
	query := "?authRequestID=" + url.QueryEscape(ar.ID) + "&h=" + handle
	page := flowPage{
		Lang:     lang,
		Title:    msgScanTitle.Title[lang],
		Body:     msgScanBody.Title[lang],
		QR:       svg,
		QRLink:   scanLink,
		Status:   scanStatusText[scanPending].Title[lang],
		Poll:     "/login/scan/status" + query,
		Messages: statusMessages(lang),
		Links: shownLinks(lang, link{ID: "web-login", Text: msgWebLoginInstead,
			Href: "/login?authRequestID=" + url.QueryEscape(ar.ID) + "&upstream=" + url.QueryEscape(up.ID) + "&door=web"}),
	}
	if up.DesktopScan == ScanOffer {
		page.Body, page.LinksFirst = msgScanOffer.Title[lang], true
		page.Links[0].Text = msgWebLogin.Title[lang]
	}
	p.renderFlow(w, http.StatusOK, page)
}

// desktopScan returns the scan the computer's request names (authRequestID and h): the zero
// ScanLogin when it has expired or belongs to another browser. On a storage failure it has
// answered (ok false).
func (p *Provider) desktopScan(w http.ResponseWriter, r *http.Request) (storage.ScanLogin, string, bool) {
	q := r.URL.Query()
	handle := q.Get("h")
	if !validAlnum(handle, scanHandleLen) {
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", "malformed scan handle", "")
		return storage.ScanLogin{}, "", false
	}
	s, err := p.store.GetScanLogin(r.Context(), storage.HashSecret(handle))
	switch {
	case err == nil && (s.AuthRequestID != q.Get("authRequestID") || !p.sameBrowser(r, s.DesktopBrowserHash)):
		// Another browser's scan is, to this one, no scan at all.
		return storage.ScanLogin{}, handle, true
	case errors.Is(err, storage.ErrNotFound):
		return storage.ScanLogin{}, handle, true // gone: expired
	case err != nil:
		p.log.ErrorContext(r.Context(), "scan: read status", "error", err)
		writeOAuthError(w, http.StatusInternalServerError, "server_error", "could not read the sign-in", "")
		return storage.ScanLogin{}, "", false
	}
	return s, handle, true
}

// scanStatus answers the QR page's poll: {"status": …, "next": where to go now, if anywhere}.
func (p *Provider) scanStatus(w http.ResponseWriter, r *http.Request) {
	s, handle, ok := p.desktopScan(w, r)
	if !ok {
		return
	}
	arID := r.URL.Query().Get("authRequestID")
	status, next := s.Status, ""
	switch s.Status {
	case "":
		status, next = scanExpired, "/login?authRequestID="+url.QueryEscape(arID)
		p.metrics.crossDevice(flowScan, crossExpired)
	case scanApproved, scanDenied, scanFailed:
		next = "/login/scan/finish?authRequestID=" + url.QueryEscape(arID) + "&h=" + handle
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(map[string]string{"status": status, "next": next})
}

// scanFinish ends the scan sign-in on the computer: an approved one becomes this browser's
// session and the application's code (once: the approval is taken atomically); a cancelled or
// failed one a page saying so.
func (p *Provider) scanFinish(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	s, _, ok := p.desktopScan(w, r)
	if !ok {
		return
	}
	ar, err := p.store.GetAuthRequest(ctx, r.URL.Query().Get("authRequestID"))
	if err != nil || s.Status == "" {
		p.failPage(w, r, http.StatusBadRequest, msgRequestExpired, "scan finish: sign-in or auth request gone", err)
		return
	}
	lang := pickLang(ar.UILocales, r.Header.Get("Accept-Language"))
	switch s.Status {
	case scanDenied, scanFailed:
		msg, back := msgScanDeniedDesktop, "access_denied"
		switch s.Reason {
		case upstream.DeniedNotVisible:
			msg = msgNotVisible
		case reasonUnavailable:
			msg, back = msgUnavailable, "temporarily_unavailable"
		case reasonMisconfigured:
			msg, back = msgMisconfigured, "server_error"
		case reasonInternal:
			msg, back = msgInternal, "server_error"
		}
		p.renderPage(w, lang, http.StatusOK, msg,
			link{ID: "retry", Href: "/login?authRequestID=" + url.QueryEscape(ar.ID), Text: msgScanAgain},
			returnLink(ar, back))
		return
	case scanApproved:
	default:
		http.Redirect(w, r, "/login?authRequestID="+url.QueryEscape(ar.ID), http.StatusFound)
		return
	}
	s, err = p.store.UpdateScanLogin(ctx, s.HandleHash, func(cur *storage.ScanLogin) error {
		if cur.Status != scanApproved {
			return errScanState
		}
		cur.Status = scanFinished
		return nil
	})
	if err != nil {
		p.failPageLang(w, r, lang, http.StatusBadRequest, msgRequestExpired, "scan finish: already taken or expired", err)
		return
	}
	if u, err := p.store.GetUser(ctx, s.Subject); err != nil || u.Disabled {
		p.metrics.login(loginDenied, s.Upstream)
		p.rejectToApp(w, r, ar, oidc.ErrAccessDenied().WithDescription("this account is disabled"))
		return
	}
	sess, secret := p.newSession(ctx, r, s.Subject, s.AuthTime, s.AMR)
	sess.Clients = []string{ar.ClientID}
	done, code, err := p.complete(ctx, ar, storage.Completion{Subject: s.Subject, AuthTime: s.AuthTime, AMR: s.AMR, NewSession: &sess})
	if err != nil {
		p.failPageLang(w, r, lang, http.StatusBadRequest, msgRequestExpired, "scan finish: complete auth request", err)
		return
	}
	http.SetCookie(w, p.cookie(sessionCookie, secret, p.cfg.SessionTTL))
	p.metrics.crossDevice(flowScan, crossCompleted)
	p.log.InfoContext(ctx, "login", "client_id", ar.ClientID, "sub", s.Subject, "method", "scan")
	p.sendCode(w, r, done, code)
}

// phoneScan is the QR code's link, opened on the phone: it binds the scan to this phone and asks
// the person to confirm (GET), then sends them to WeCom or cancels (POST).
func (p *Provider) phoneScan(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	lang := pickLang(nil, r.Header.Get("Accept-Language"))
	handle := chi.URLParam(r, "handle")
	if !validAlnum(handle, scanHandleLen) {
		p.failPageLang(w, r, lang, http.StatusNotFound, msgScanUsed, "scan: malformed handle", nil)
		return
	}
	hash := storage.HashSecret(handle)
	s, err := p.store.GetScanLogin(ctx, hash)
	if err != nil {
		p.failPageLang(w, r, lang, http.StatusBadRequest, msgScanUsed, "scan: unknown or expired handle", err)
		return
	}
	up, ok := p.upstreamByID(s.Upstream)
	phone, can := up.Connector.(upstream.PhoneSignIn)
	if !ok || !can {
		p.failPageLang(w, r, lang, http.StatusBadRequest, msgScanUsed, "scan: upstream no longer configured", nil)
		return
	}
	if !phone.InApp(r.UserAgent()) {
		// Not claimed: the same person may still scan it with the app.
		p.renderPage(w, lang, http.StatusOK, msgOpenInApp)
		return
	}
	if r.Method == http.MethodPost {
		p.phoneScanAnswer(w, r, s, up, phone, lang)
		return
	}
	browser := storage.HashSecret(p.browserID(w, r))
	var claimed bool
	s, err = p.store.UpdateScanLogin(ctx, hash, func(cur *storage.ScanLogin) error {
		claimed = false
		switch {
		case cur.Status == scanPending:
			cur.Status, cur.PhoneBrowserHash, claimed = scanOpened, browser, true
		case cur.Status == scanOpened && cur.PhoneBrowserHash == browser:
			// The same phone reloading its confirmation page.
		case cur.PhoneBrowserHash != browser:
			return errOtherPhone
		default:
			return errScanState
		}
		return nil
	})
	if err != nil {
		p.failPageLang(w, r, lang, http.StatusBadRequest, msgScanUsed, "scan: link used, expired or opened on another phone", err)
		return
	}
	if claimed {
		p.metrics.crossDevice(flowScan, crossStarted)
	}
	app := p.clientName(ctx, s.AuthRequestID)
	p.renderFlow(w, http.StatusOK, flowPage{
		Lang:  lang,
		Title: fmt.Sprintf(msgScanConfirmTitle.Title[lang], app),
		Body:  msgScanConfirmBody.Title[lang],
		Form: &flowForm{Method: http.MethodPost, Action: "/login/wecom/m/" + handle, Buttons: []flowButton{
			{Name: "action", Value: "confirm", Text: msgConfirmSignIn.Title[lang]},
			{Name: "action", Value: "cancel", Text: msgCancel.Title[lang]},
		}},
	})
}

// phoneScanAnswer takes the person's answer on the confirmation page. The answer counts only from
// the phone the link is bound to: the binding cookie is SameSite=Lax, so a form posted from
// another site arrives without it.
func (p *Provider) phoneScanAnswer(w http.ResponseWriter, r *http.Request, s storage.ScanLogin, up Upstream, phone upstream.PhoneSignIn, lang string) {
	ctx := r.Context()
	if !p.sameBrowser(r, s.PhoneBrowserHash) || !sameOrigin(r, p.cfg.Issuer) {
		p.failPageLang(w, r, lang, http.StatusBadRequest, msgScanUsed, "scan: answer from another browser", nil)
		return
	}
	confirm := r.PostFormValue("action") == "confirm"
	now := p.now()
	_, err := p.store.UpdateScanLogin(ctx, s.HandleHash, func(cur *storage.ScanLogin) error {
		if cur.Status != scanOpened || cur.PhoneBrowserHash != s.PhoneBrowserHash {
			return errScanState
		}
		if confirm {
			cur.Status, cur.ExpiresAt = scanConfirmed, now.Add(scanLoginTTL)
		} else {
			cur.Status, cur.Reason = scanDenied, reasonCancelled
		}
		return nil
	})
	if err != nil {
		p.failPageLang(w, r, lang, http.StatusBadRequest, msgScanUsed, "scan: answered twice or expired", err)
		return
	}
	if !confirm {
		p.metrics.crossDevice(flowScan, crossDenied)
		p.log.InfoContext(ctx, "scan sign-in cancelled on the phone")
		p.renderPage(w, lang, http.StatusOK, msgScanCancelled)
		return
	}
	ok := p.toUpstream(w, r, lang, "scan", phone.PhoneLoginURL, storage.LoginState{
		AuthRequestID:  s.AuthRequestID,
		Upstream:       up.ID,
		BrowserHash:    s.PhoneBrowserHash,
		ScanHandleHash: s.HandleHash,
		ExpiresAt:      now.Add(scanLoginTTL),
	})
	if !ok {
		p.failScan(ctx, s.HandleHash, scanFailed, reasonInternal)
	}
}

// phoneCallback is WeCom's callback on the phone of a scan sign-in (the state is consumed and
// belongs to this phone): it signs the person in and approves the computer's sign-in. The
// application is on the computer, so every outcome is a page here and a status there.
func (p *Provider) phoneCallback(w http.ResponseWriter, r *http.Request, ls storage.LoginState, up Upstream) {
	ctx := r.Context()
	lang := pickLang(nil, r.Header.Get("Accept-Language"))
	id, err := up.Connector.HandleCallback(ctx, r)
	if err != nil {
		p.phoneFailed(w, r, ls, up, lang, err)
		return
	}
	now := p.now()
	user, err := p.signInUser(ctx, up, id, now)
	if err != nil {
		p.phoneFailed(w, r, ls, up, lang, err)
		return
	}
	_, err = p.store.UpdateScanLogin(ctx, ls.ScanHandleHash, func(cur *storage.ScanLogin) error {
		if cur.Status != scanConfirmed {
			return errScanState
		}
		cur.Status, cur.Subject, cur.AuthTime, cur.AMR = scanApproved, user.Subject, now, []string{id.Method}
		cur.ExpiresAt = now.Add(scanLoginTTL)
		return nil
	})
	if err != nil {
		p.failPageLang(w, r, lang, http.StatusBadRequest, msgScanUsed, "scan callback: the computer's sign-in expired", err)
		return
	}
	p.metrics.login(loginSuccess, up.ID)
	p.log.InfoContext(ctx, "scan sign-in approved on the phone", "sub", user.Subject, "method", id.Method)
	p.renderPage(w, lang, http.StatusOK, msgScanDone)
}

// phoneFailed records why the phone could not sign the person in, for the computer, and tells
// the phone.
func (p *Provider) phoneFailed(w http.ResponseWriter, r *http.Request, ls storage.LoginState, up Upstream, lang string, err error) {
	ctx := r.Context()
	var denied *upstream.DeniedError
	switch {
	case errors.As(err, &denied), errors.Is(err, errUserDisabled):
		reason := "disabled"
		if denied != nil {
			reason = denied.Kind
		}
		p.metrics.login(loginDenied, up.ID)
		p.metrics.crossDevice(flowScan, crossDenied)
		p.log.InfoContext(ctx, "scan sign-in denied", "upstream", up.ID, "reason", reason)
		p.failScan(ctx, ls.ScanHandleHash, scanDenied, reason)
		msg := msgScanCancelled
		if reason == upstream.DeniedNotVisible {
			msg = msgNotVisible
		}
		p.renderPage(w, lang, http.StatusForbidden, msg)
	case errors.Is(err, upstream.ErrMisconfigured):
		p.metrics.login(loginMisconfigured, up.ID)
		p.failScan(ctx, ls.ScanHandleHash, scanFailed, reasonMisconfigured)
		p.failPageLang(w, r, lang, http.StatusBadGateway, msgMisconfigured, "scan callback: upstream misconfigured", err)
	case errors.Is(err, upstream.ErrUnavailable):
		p.metrics.login(loginUnavailable, up.ID)
		p.failScan(ctx, ls.ScanHandleHash, scanFailed, reasonUnavailable)
		p.failPageLang(w, r, lang, http.StatusServiceUnavailable, msgUnavailable, "scan callback: upstream unavailable", err)
	default:
		p.metrics.login(loginError, up.ID)
		p.failScan(ctx, ls.ScanHandleHash, scanFailed, reasonInternal)
		p.failPageLang(w, r, lang, http.StatusInternalServerError, msgInternal, "scan callback: record the sign-in", err)
	}
}

// failScan ends a scan sign-in that cannot complete (status scanDenied or scanFailed), so the
// computer stops waiting.
func (p *Provider) failScan(ctx context.Context, handleHash, status, reason string) {
	_, err := p.store.UpdateScanLogin(ctx, handleHash, func(cur *storage.ScanLogin) error {
		if cur.Status == scanFinished {
			return errScanState
		}
		cur.Status, cur.Reason = status, reason
		return nil
	})
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		p.log.WarnContext(ctx, "scan: could not record the failure for the computer", "error", err)
	}
}

// clientName is the registered name of the application an auth request is for (its id when it
// has none).
func (p *Provider) clientName(ctx context.Context, authRequestID string) string {
	ar, err := p.store.GetAuthRequest(ctx, authRequestID)
	if err != nil {
		return "?"
	}
	return p.clientNameByID(ctx, ar.ClientID)
}

func (p *Provider) clientNameByID(ctx context.Context, clientID string) string {
	c, err := p.store.GetClient(ctx, clientID)
	if err != nil || c.Name == "" {
		return clientID
	}
	return c.Name
}

// sameOrigin reports whether a form post came from a page of the issuer. Browsers send Origin on
// every POST (our form pages use Referrer-Policy same-origin, or it would be "null"); a request
// without one (an old browser) is judged by its cookies alone.
func sameOrigin(r *http.Request, issuer string) bool {
	origin := r.Header.Get("Origin")
	return origin == "" || origin == originOf(issuer)
}

// validAlnum reports whether s is n characters of [A-Za-z0-9].
func validAlnum(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}
