package wecom

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"

	"github.com/wecom-oidc/wecom-oidc/upstream"
)

// Login methods reported in upstream.Identity.Method.
const (
	MethodClient = "wecom_client" // inside the WeCom client
	MethodWeb    = "wecom_web"    // web login: QR code or the desktop client's quick login
)

// Connector is the WeCom upstream.Connector, and a client of the WeCom APIs it needs. It is safe
// for concurrent use.
type Connector struct {
	cfg    Config
	log    *slog.Logger
	tokens *tokenCache
	depts  *deptCache
}

var _ upstream.Connector = (*Connector)(nil)

// New validates cfg and returns a Connector. It makes no network calls.
func New(cfg Config) (*Connector, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	c := &Connector{
		cfg:   cfg,
		log:   cfg.Logger.With(slog.Group("upstream", slog.String("type", "wecom"), slog.String("corp_id", cfg.CorpID), slog.String("agent_id", cfg.AgentID))),
		depts: newDeptCache(cfg.DepartmentTTL, cfg.Now),
	}
	c.tokens = &tokenCache{
		key:     TokenKey(cfg.CorpID, cfg.AgentID),
		store:   cfg.Tokens,
		fetch:   c.fetchToken,
		timeout: cfg.Timeout,
		now:     cfg.Now,
		log:     c.log,
	}
	return c, nil
}

// TokenKey is the TokenStore key of an app's access token: tokens are per app, not per corp.
func TokenKey(corpID, agentID string) string { return corpID + "/" + agentID }

// InClient reports whether userAgent is the WeCom client's built-in browser.
func InClient(userAgent string) bool {
	return strings.Contains(strings.ToLower(userAgent), "wxwork")
}

// LoginURL returns WeCom's authorization page for the browser described by hints: the in-client
// page inside the WeCom client, the web-login page elsewhere. state must be 1–128 ASCII letters or
// digits, WeCom's rule.
func (c *Connector) LoginURL(state string, hints upstream.LoginHints) (string, error) {
	if !validState(state) {
		return "", errors.New("wecom: state must be 1 to 128 ASCII letters or digits")
	}
	var b strings.Builder
	param := func(k, v string) {
		if b.Len() > 0 {
			b.WriteByte('&')
		}
		b.WriteString(url.QueryEscape(k))
		b.WriteByte('=')
		b.WriteString(url.QueryEscape(v))
	}
	if InClient(hints.UserAgent) {
		param("appid", c.cfg.CorpID)
		param("redirect_uri", c.cfg.RedirectURL)
		param("response_type", "code")
		param("scope", c.cfg.Scope)
		param("state", state)
		param("agentid", c.cfg.AgentID)
		return c.cfg.OAuthBaseURL + "/connect/oauth2/authorize?" + b.String() + "#wechat_redirect", nil
	}
	param("login_type", "CorpApp")
	param("appid", c.cfg.CorpID)
	param("agentid", c.cfg.AgentID)
	param("redirect_uri", c.cfg.RedirectURL)
	param("state", state)
	param("lang", loginLang(hints.Lang))
	return c.cfg.LoginBaseURL + "/wwlogin/sso/login?" + b.String(), nil
}

func validState(s string) bool {
	if len(s) < 1 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if !('a' <= ch && ch <= 'z' || 'A' <= ch && ch <= 'Z' || '0' <= ch && ch <= '9') {
			return false
		}
	}
	return true
}

// loginLang maps a language preference to the web-login page's lang: "en" for English, else "zh".
func loginLang(lang string) string {
	if strings.HasPrefix(strings.ToLower(strings.TrimSpace(lang)), "en") {
		return "en"
	}
	return "zh"
}

// HandleCallback turns WeCom's redirect back to RedirectURL into the member's identity. The
// caller has checked state. The code is exchanged exactly once. A person WeCom did not
// authenticate, or who may not sign in (declined, used or expired code, not a member, outside the
// app's visible range, not active), gives an *upstream.DeniedError; any other error is a WeCom,
// network or configuration fault.
func (c *Connector) HandleCallback(ctx context.Context, r *http.Request) (upstream.Identity, error) {
	q := r.URL.Query()
	code := firstNonEmpty(q.Get("code"), q.Get("auth_code"))
	if code == "" {
		return upstream.Identity{}, &upstream.DeniedError{Reason: "the person declined or cancelled the WeCom login"}
	}
	method := MethodWeb
	if InClient(r.UserAgent()) {
		method = MethodClient
	}

	info, err := c.GetUserInfo(ctx, code)
	if err != nil {
		if ErrCode(err) == CodeInvalidCode {
			return upstream.Identity{}, &upstream.DeniedError{Reason: "the WeCom login code was already used or has expired; please sign in again", Err: err}
		}
		return upstream.Identity{}, fmt.Errorf("wecom: exchanging the login code: %w", err)
	}
	if info.UserID == "" {
		if info.OpenID != "" || info.ExternalUserID != "" {
			return upstream.Identity{}, &upstream.DeniedError{Reason: "the person is not a member of the corp"}
		}
		return upstream.Identity{}, errors.New("wecom: auth/getuserinfo answered neither userid nor openid")
	}
	log := c.log.With(slog.String("userid", info.UserID), slog.String("method", method))

	var detail UserDetail
	if info.UserTicket != "" {
		d, err := c.GetUserDetail(ctx, info.UserTicket)
		switch {
		case err != nil:
			log.WarnContext(ctx, "wecom: reading the member's sensitive fields failed; continuing without them", slog.Any("error", err))
		case d.UserID != "" && !strings.EqualFold(d.UserID, info.UserID):
			log.WarnContext(ctx, "wecom: auth/getuserdetail answered for another userid; ignoring it", slog.String("detail_userid", d.UserID))
		default:
			detail = d
		}
	}

	user, err := c.GetUser(ctx, info.UserID)
	if err != nil {
		switch ErrCode(err) {
		case CodeNoPrivilege, CodeUserNotFound, CodeUserNotInRange, CodeOutOfRange:
			return upstream.Identity{}, &upstream.DeniedError{Reason: "the member is outside the app's visible range or unknown to WeCom", Err: err}
		}
		return upstream.Identity{}, fmt.Errorf("wecom: reading member %q: %w", info.UserID, err)
	}
	if user.Status != StatusActive {
		return upstream.Identity{}, &upstream.DeniedError{Reason: statusReason(user.Status)}
	}

	id := upstream.Identity{
		CorpID:         c.cfg.CorpID,
		UserID:         firstNonEmpty(user.UserID, info.UserID),
		Name:           user.Name,
		Alias:          user.Alias,
		Email:          firstNonEmpty(detail.BizMail, user.BizMail),
		PersonalEmail:  firstNonEmpty(detail.Email, user.Email),
		Mobile:         firstNonEmpty(detail.Mobile, user.Mobile),
		Gender:         gender(firstNonEmpty(knownGender(detail.Gender), knownGender(user.Gender))),
		Avatar:         firstNonEmpty(detail.Avatar, user.Avatar),
		Address:        firstNonEmpty(detail.Address, user.Address),
		Position:       user.Position,
		MainDepartment: user.MainDepartment,
		Status:         user.Status,
		Extra:          user.TextAttrs(),
		Method:         method,
	}
	for _, depID := range user.Department {
		d, err := c.Department(ctx, depID)
		if err != nil {
			log.WarnContext(ctx, "wecom: department name unavailable; using the id alone",
				slog.Int64("department", depID), slog.Any("error", err))
		}
		id.Departments = append(id.Departments, upstream.Department{ID: depID, Name: d.Name})
	}
	log.DebugContext(ctx, "wecom: login", slog.Bool("user_ticket", info.UserTicket != ""))
	return id, nil
}

// statusReason explains a user/get status other than active.
func statusReason(status int) string {
	switch status {
	case StatusDisabled:
		return "the WeCom account is disabled (status 2)"
	case StatusNotActivated:
		return "the WeCom account is not activated yet (status 4)"
	case StatusLeft:
		return "the person has left the corp (WeCom status 5)"
	}
	return fmt.Sprintf("the WeCom account is not active (status %d)", status)
}

// knownGender drops WeCom's "0" (unknown, or the member did not consent), so that a real value
// from elsewhere wins.
func knownGender(g string) string {
	if g == "1" || g == "2" {
		return g
	}
	return ""
}

func gender(g string) string {
	switch g {
	case "1":
		return "male"
	case "2":
		return "female"
	}
	return ""
}
