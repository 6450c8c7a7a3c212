package provider

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"

	httphelper "github.com/zitadel/oidc/v3/pkg/http"

	"github.com/wecom-oidc/wecom-oidc/storage"
	"github.com/wecom-oidc/wecom-oidc/upstream"
)

// The device authorization grant (RFC 8628), for command-line tools and devices without a
// browser, with WeCom as the login step. The OP library has the grant, but its device endpoint
// lets any caller that names a confidential client start a flow, its token endpoint knows no
// client_secret_post, a device code stays redeemable after its tokens were issued, and it can
// answer only access_denied for a wrong code; so both endpoints are ours (clientEndpoint sends
// them here) and the library only mints the tokens.
//
// Statuses of a storage.DeviceAuthorization:
const (
	devicePending  = "pending"
	deviceApproved = "approved" // the person allowed it; the next poll gets the tokens
	deviceIssued   = "issued"   // the tokens were handed out: the device code is spent
	deviceDenied   = "denied"
)

const (
	// deviceCodeTTL: the person has this long to find a browser, sign in and allow the device.
	deviceCodeTTL = 10 * time.Minute
	// devicePollInterval is the default least time between polls, in seconds (RFC 8628 §3.2's
	// default). A poll sooner than that after the previous one is told slow_down, after which the
	// device waits 5 s more (§3.5). The least interval itself stays: were it raised with every
	// slow_down too, a device that began too fast would never catch up.
	devicePollInterval = 5
	// User codes: 8 letters of an alphabet without vowels (no words) and without letters that
	// look alike, shown as XXXX-XXXX: 20^8 ≈ 2^34.6 codes, a code lives ten minutes, and an
	// address that types ten wrong ones in a minute is refused for the rest of it.
	userCodeAlphabet = op.CharSetBase20
	userCodeLength   = 8
	// deviceGrantType is the device flow's grant_type.
	deviceGrantType = string(oidc.GrantTypeDeviceCode)
)

var errDeviceState = errors.New("provider: the device authorization is not in the expected state")

// deviceErrorText describes the token endpoint's answers to a polling device.
var deviceErrorText = map[string]string{
	"authorization_pending": "the person has not allowed the device yet",
	"slow_down":             "polling too fast: wait 5 seconds longer between polls from now on (RFC 8628 §3.5)",
	"access_denied":         "the person denied the device",
	"invalid_grant":         "the device code was already used or belongs to another client",
}

// deviceEndpointPath is the verification page, at the issuer.
const deviceEndpointPath = "/device"

// deviceClient authenticates the client of a device-authorization or device-token request as its
// registration requires (a public client names itself; a confidential one must authenticate:
// client_secret_basic, client_secret_post or private_key_jwt) and checks it may use the device
// flow. On failure it has answered.
func (p *Provider) deviceClient(w http.ResponseWriter, r *http.Request) (storage.Client, bool) {
	if err := postCredentialsToBasic(r); err != nil {
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", "the request body does not parse", "")
		return storage.Client{}, false
	}
	id, authenticated, err := op.ClientIDFromRequest(r, p.op)
	if err != nil {
		writeOAuthError(w, http.StatusUnauthorized, "invalid_client", "client authentication failed", `Basic realm="wecom-oidc"`)
		return storage.Client{}, false
	}
	c, err := p.store.GetClient(r.Context(), id)
	if err != nil || (!c.Public && !authenticated) {
		writeOAuthError(w, http.StatusUnauthorized, "invalid_client", "client authentication failed", `Basic realm="wecom-oidc"`)
		return storage.Client{}, false
	}
	if !c.DeviceFlow {
		writeOAuthError(w, http.StatusBadRequest, "unauthorized_client", "this client may not use the device flow", "")
		return storage.Client{}, false
	}
	return c, true
}

// deviceAuthorization is the device authorization endpoint (RFC 8628 §3.1–3.2).
func (p *Provider) deviceAuthorization(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if r.Method != http.MethodPost {
		writeOAuthError(w, http.StatusMethodNotAllowed, "invalid_request", "use POST", "")
		return
	}
	c, ok := p.deviceClient(w, r)
	if !ok {
		return
	}
	var scopes []string
	for _, s := range strings.Fields(r.PostFormValue("scope")) {
		if slices.Contains(supportedScopes, s) && !slices.Contains(scopes, s) {
			scopes = append(scopes, s)
		}
	}
	deviceCode := newSecret()
	now := p.now()
	d := storage.DeviceAuthorization{
		DeviceCodeHash: storage.HashSecret(deviceCode),
		ClientID:       c.ID,
		Scopes:         scopes,
		Status:         devicePending,
		Interval:       int64(p.cfg.DevicePollInterval / time.Second),
		CreatedAt:      now,
		ExpiresAt:      now.Add(deviceCodeTTL),
	}
	var err error
	for range 5 { // a user code taken by a live authorization: draw another
		d.UserCode, err = op.NewUserCode([]rune(userCodeAlphabet), userCodeLength, 4)
		if err == nil {
			err = p.store.CreateDeviceAuthorization(ctx, d)
		}
		if !errors.Is(err, storage.ErrAlreadyExists) {
			break
		}
	}
	if err != nil {
		p.log.ErrorContext(ctx, "device authorization: store", "client_id", c.ID, "error", err)
		writeOAuthError(w, http.StatusInternalServerError, "server_error", "could not start the device authorization", "")
		return
	}
	p.metrics.crossDevice(flowDevice, crossStarted)
	p.log.InfoContext(ctx, "device authorization started", "client_id", c.ID)
	verification := p.cfg.Issuer + deviceEndpointPath
	httphelper.MarshalJSON(w, &oidc.DeviceAuthorizationResponse{
		DeviceCode:              deviceCode,
		UserCode:                d.UserCode,
		VerificationURI:         verification,
		VerificationURIComplete: verification + "?user_code=" + d.UserCode,
		ExpiresIn:               int(deviceCodeTTL / time.Second),
		Interval:                int(d.Interval),
	})
}

// deviceToken answers a device's poll at the token endpoint (RFC 8628 §3.4–3.5): pending,
// slow_down, access_denied, expired_token, or — once — the tokens.
func (p *Provider) deviceToken(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	c, ok := p.deviceClient(w, r)
	if !ok {
		return
	}
	code, _ := formValueFold(r.PostForm, "device_code")
	if code == "" {
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", "device_code is required", "")
		return
	}
	now := p.now()
	var answer string // the error to answer, or "" for the tokens
	d, err := p.store.UpdateDeviceAuthorization(ctx, storage.HashSecret(code), func(cur *storage.DeviceAuthorization) error {
		switch {
		case cur.ClientID != c.ID:
			answer = "invalid_grant"
			return errDeviceState
		case cur.Status == deviceApproved:
			cur.Status, answer = deviceIssued, ""
		case cur.Status == deviceDenied:
			answer = "access_denied"
			return errDeviceState
		case cur.Status == devicePending:
			answer = "authorization_pending"
			if !cur.LastPolledAt.IsZero() && now.Sub(cur.LastPolledAt) < time.Duration(cur.Interval)*time.Second {
				answer = "slow_down"
			}
			cur.LastPolledAt = now
		default: // issued: the code is spent
			answer = "invalid_grant"
			return errDeviceState
		}
		return nil
	})
	switch {
	case errors.Is(err, storage.ErrNotFound):
		p.metrics.crossDevice(flowDevice, crossExpired)
		writeOAuthError(w, http.StatusBadRequest, "expired_token", "the device code is unknown or has expired; start again", "")
		return
	case err != nil && !errors.Is(err, errDeviceState):
		p.log.ErrorContext(ctx, "device token: read the authorization", "client_id", c.ID, "error", err)
		writeOAuthError(w, http.StatusInternalServerError, "server_error", "could not read the device authorization", "")
		return
	case answer != "":
		writeOAuthError(w, http.StatusBadRequest, answer, deviceErrorText[answer], "")
		return
	}
	if u, err := p.store.GetUser(ctx, d.Subject); err != nil || u.Disabled {
		writeOAuthError(w, http.StatusBadRequest, "invalid_grant", "the account is disabled", "")
		return
	}
	req := &op.DeviceAuthorizationState{
		ClientID: d.ClientID, Audience: []string{d.ClientID}, Scopes: d.Scopes, Expires: d.ExpiresAt,
		Done: true, Subject: d.Subject, AMR: d.AMR, AuthTime: d.AuthTime,
	}
	opClient, err := p.op.Storage().GetClientByClientID(ctx, c.ID)
	if err != nil {
		writeOAuthError(w, http.StatusInternalServerError, "server_error", "could not read the client", "")
		return
	}
	resp, err := op.CreateDeviceTokenResponse(ctx, req, p.op, opClient)
	if err != nil {
		p.log.ErrorContext(ctx, "device token: mint tokens", "client_id", c.ID, "error", err)
		writeOAuthError(w, http.StatusInternalServerError, "server_error", "could not issue the tokens", "")
		return
	}
	p.metrics.crossDevice(flowDevice, crossCompleted)
	p.log.InfoContext(ctx, "device signed in", "client_id", c.ID, "sub", d.Subject)
	httphelper.MarshalJSON(w, resp)
}

// devicePage is the verification page (verification_uri): the person types the code (or
// arrives with it), signs in through WeCom unless this browser has a session, and allows or
// denies the device.
func (p *Provider) devicePage(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	lang := pickLang(nil, r.Header.Get("Accept-Language"))
	if r.Method == http.MethodPost {
		p.deviceAnswer(w, r, lang)
		return
	}
	typed := r.URL.Query().Get("user_code")
	entry := func(status int, problem string) {
		p.renderFlow(w, status, flowPage{
			Lang: lang, Title: msgDeviceTitle.Title[lang], Body: msgDeviceBody.Title[lang], Error: problem,
			Form: &flowForm{Method: http.MethodGet, Action: deviceEndpointPath,
				Input: "user_code", InputLabel: msgDeviceCodeLabel.Title[lang], InputValue: typed,
				Buttons: []flowButton{{Name: "go", Value: "1", Text: msgContinue.Title[lang]}}},
		})
	}
	if typed == "" {
		entry(http.StatusOK, "")
		return
	}
	addr := p.remoteAddr(r)
	if blocked, _ := p.userCodeMisses.blocked(addr); blocked {
		p.log.WarnContext(ctx, "device page: too many wrong user codes", "addr", addr)
		entry(http.StatusTooManyRequests, msgDeviceTooMany.Title[lang])
		return
	}
	userCode := normalizeUserCode(typed)
	d, err := p.deviceByUserCode(ctx, userCode)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		p.failPageLang(w, r, lang, http.StatusInternalServerError, msgInternal, "device page: read the device authorization", err)
		return
	}
	if err != nil {
		p.userCodeMisses.fail(addr)
		p.log.InfoContext(ctx, "device page: unknown or expired user code", "error", err)
		entry(http.StatusBadRequest, msgDeviceUnknown.Title[lang])
		return
	}
	if d.Status != devicePending {
		p.renderPage(w, lang, http.StatusBadRequest, msgDeviceUsed)
		return
	}
	sess, user, ok := p.currentSession(ctx, r)
	if !ok {
		p.deviceLogin(w, r, d, lang)
		return
	}
	name := user.Name
	if name == "" {
		name = user.Subject
	}
	p.renderFlow(w, http.StatusOK, flowPage{
		Lang:   lang,
		Title:  fmt.Sprintf(msgDeviceConfirmTtl.Title[lang], p.clientNameByID(ctx, d.ClientID)),
		Body:   fmt.Sprintf(msgDeviceConfirm.Title[lang], name),
		Detail: d.UserCode,
		Form: &flowForm{Method: http.MethodPost, Action: deviceEndpointPath,
			Hidden: map[string]string{"user_code": d.UserCode, "token": p.formToken("device", sess.ID, d.UserCode)},
			Buttons: []flowButton{
				{Name: "action", Value: "allow", Text: msgAllow.Title[lang]},
				{Name: "action", Value: "deny", Text: msgDeny.Title[lang]},
			}},
	})
}

// deviceByUserCode finds the live device authorization with the (canonical) user code.
func (p *Provider) deviceByUserCode(ctx context.Context, userCode string) (storage.DeviceAuthorization, error) {
	if userCode == "" {
		return storage.DeviceAuthorization{}, fmt.Errorf("%w: not a user code", storage.ErrNotFound)
	}
	return p.store.GetDeviceAuthorizationByUserCode(ctx, userCode)
}

// deviceLogin sends the person to WeCom to sign in before they may allow the device. Either door:
// the verification page may be opened on a computer or inside the WeCom app.
func (p *Provider) deviceLogin(w http.ResponseWriter, r *http.Request, d storage.DeviceAuthorization, lang string) {
	up, ok := p.chooseUpstream(r, storage.AuthRequest{})
	if !ok {
		links := make([]link, 0, len(p.cfg.Upstreams))
		for _, u := range p.cfg.Upstreams {
			links = append(links, link{ID: "upstream-" + u.ID, Text: upstreamLabel(u, lang),
				Href: deviceEndpointPath + "?user_code=" + url.QueryEscape(d.UserCode) + "&upstream=" + url.QueryEscape(u.ID)})
		}
		p.renderPage(w, lang, http.StatusOK, msgChooser, links...)
		return
	}
	p.toUpstream(w, r, lang, "device page", up.Connector.LoginURL, storage.LoginState{
		Upstream:       up.ID,
		BrowserHash:    storage.HashSecret(p.browserID(w, r)),
		DeviceUserCode: d.UserCode,
		ExpiresAt:      p.now().Add(loginStateTTL),
	})
}

// deviceCallback is WeCom's callback of a sign-in started on the verification page (the state is
// consumed and belongs to this browser): the person gets an SSO session here and goes back to
// the page, which now asks them to allow the device.
func (p *Provider) deviceCallback(w http.ResponseWriter, r *http.Request, ls storage.LoginState, up Upstream) {
	ctx := r.Context()
	lang := pickLang(nil, r.Header.Get("Accept-Language"))
	id, err := up.Connector.HandleCallback(ctx, r)
	if err == nil {
		var user storage.User
		now := p.now()
		if user, err = p.signInUser(ctx, up, id, now); err == nil {
			sess, secret := p.newSession(ctx, r, user.Subject, now, []string{id.Method})
			if err = p.store.CreateSession(ctx, sess); err == nil {
				http.SetCookie(w, p.cookie(sessionCookie, secret, p.cfg.SessionTTL))
				p.metrics.login(loginSuccess, up.ID)
				p.log.InfoContext(ctx, "login", "sub", user.Subject, "method", id.Method, "for", "device")
				http.Redirect(w, r, deviceEndpointPath+"?user_code="+url.QueryEscape(ls.DeviceUserCode), http.StatusFound)
				return
			}
		}
	}
	var denied *upstream.DeniedError
	retry := link{ID: "retry", Href: deviceEndpointPath + "?user_code=" + url.QueryEscape(ls.DeviceUserCode), Text: msgRetry}
	switch {
	case errors.As(err, &denied) && denied.Kind == upstream.DeniedCodeInvalid:
		// WeCom's code was spent (a reloaded callback): no verdict on the person, so try again.
		p.log.InfoContext(ctx, "device callback: WeCom code already used", "upstream", up.ID)
		p.renderPage(w, lang, http.StatusBadRequest, msgStateUsed, retry)
	case errors.As(err, &denied), errors.Is(err, errUserDisabled):
		p.metrics.login(loginDenied, up.ID)
		p.denyDevice(ctx, ls.DeviceUserCode)
		msg := msgDeviceDenied
		if denied != nil && denied.Kind == upstream.DeniedNotVisible {
			msg = msgNotVisible
		}
		p.log.InfoContext(ctx, "device sign-in refused", "upstream", up.ID, "error", err)
		p.renderPage(w, lang, http.StatusForbidden, msg)
	case errors.Is(err, upstream.ErrMisconfigured):
		p.metrics.login(loginMisconfigured, up.ID)
		p.failPageLang(w, r, lang, http.StatusBadGateway, msgMisconfigured, "device callback: upstream misconfigured", err)
	case errors.Is(err, upstream.ErrUnavailable):
		p.metrics.login(loginUnavailable, up.ID)
		p.log.ErrorContext(ctx, "device callback: upstream unavailable", "error", err)
		p.renderPage(w, lang, http.StatusServiceUnavailable, msgUnavailable, retry)
	default:
		p.metrics.login(loginError, up.ID)
		p.failPageLang(w, r, lang, http.StatusInternalServerError, msgInternal, "device callback: record the sign-in", err)
	}
}

// deviceAnswer takes the signed-in person's answer: allow or deny.
func (p *Provider) deviceAnswer(w http.ResponseWriter, r *http.Request, lang string) {
	ctx := r.Context()
	userCode := normalizeUserCode(r.PostFormValue("user_code"))
	sess, _, ok := p.currentSession(ctx, r)
	if !ok || !sameOrigin(r, p.cfg.Issuer) ||
		subtle.ConstantTimeCompare([]byte(r.PostFormValue("token")), []byte(p.formToken("device", sess.ID, userCode))) != 1 {
		p.failPageLang(w, r, lang, http.StatusBadRequest, msgRequestExpired, "device page: answer without this browser's session", nil)
		return
	}
	d, err := p.deviceByUserCode(ctx, userCode)
	if err != nil {
		p.failPageLang(w, r, lang, http.StatusBadRequest, msgDeviceUsed, "device page: code expired before the answer", err)
		return
	}
	allow := r.PostFormValue("action") == "allow"
	_, err = p.store.UpdateDeviceAuthorization(ctx, d.DeviceCodeHash, func(cur *storage.DeviceAuthorization) error {
		if cur.Status != devicePending {
			return errDeviceState
		}
		if allow {
			cur.Status, cur.Subject, cur.AuthTime, cur.AMR = deviceApproved, sess.Subject, sess.AuthTime, sess.AMR
		} else {
			cur.Status = deviceDenied
		}
		return nil
	})
	if err != nil {
		p.failPageLang(w, r, lang, http.StatusBadRequest, msgDeviceUsed, "device page: answered twice or expired", err)
		return
	}
	if !allow {
		p.metrics.crossDevice(flowDevice, crossDenied)
		p.log.InfoContext(ctx, "device denied", "client_id", d.ClientID, "sub", sess.Subject)
		p.renderPage(w, lang, http.StatusOK, msgDeviceDenied)
		return
	}
	p.log.InfoContext(ctx, "device allowed", "client_id", d.ClientID, "sub", sess.Subject)
	p.renderPage(w, lang, http.StatusOK, msgDeviceDone)
}

// denyDevice ends a device authorization whose person WeCom refused, so the device stops polling.
func (p *Provider) denyDevice(ctx context.Context, userCode string) {
	d, err := p.deviceByUserCode(ctx, userCode)
	if err == nil {
		_, err = p.store.UpdateDeviceAuthorization(ctx, d.DeviceCodeHash, func(cur *storage.DeviceAuthorization) error {
			if cur.Status != devicePending {
				return errDeviceState
			}
			cur.Status = deviceDenied
			return nil
		})
	}
	if err == nil {
		p.metrics.crossDevice(flowDevice, crossDenied)
	}
}

// formToken binds a form to what it was rendered for (a session and the thing it acts on): a
// MAC under the provider's own key, so a page of another origin cannot forge the form.
func (p *Provider) formToken(purpose string, parts ...string) string {
	key := p.cfg.Keys.CryptoKey()
	mac := hmac.New(sha256.New, key[:])
	mac.Write([]byte(purpose))
	for _, part := range parts {
		mac.Write([]byte{0})
		mac.Write([]byte(part))
	}
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}
