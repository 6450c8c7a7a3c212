package wecom

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

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
	cfg      Config
	log      *slog.Logger
	tokens   *tokenCache
	cooldown *cooldown
	depts    *cache[int64, Department]
	tagLists *cache[struct{}, []tagRef]
	tags     *cache[int64, tagMembers]
}

var (
	_ upstream.Connector   = (*Connector)(nil)
	_ upstream.Rechecker   = (*Connector)(nil)
	_ upstream.PhoneSignIn = (*Connector)(nil)
)

// New validates cfg and returns a Connector. It makes no network calls.
func New(cfg Config) (*Connector, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	c := &Connector{
		cfg:      cfg,
		log:      cfg.Logger.With(slog.Group("upstream", slog.String("type", "wecom"), slog.String("corp_id", cfg.CorpID), slog.String("agent_id", cfg.AgentID))),
		depts:    newCache[int64, Department]("department", cfg.DepartmentTTL, cfg.Now, withheld),
		tagLists: newCache[struct{}, []tagRef]("tag list", cfg.DepartmentTTL, cfg.Now, nil),
		tags:     newCache[int64, tagMembers]("tag", cfg.DepartmentTTL, cfg.Now, withheld),
	}
	c.cooldown = &cooldown{
		window: cfg.RateLimitCooldown,
		now:    cfg.Now,
		log:    c.log,
		until:  make(map[string]time.Time),
		cause:  make(map[string]*APIError),
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

// CloseIdleConnections closes the connections to WeCom kept for reuse (none is in use then).
func (c *Connector) CloseIdleConnections() { c.cfg.HTTPClient.CloseIdleConnections() }

// LoginURL returns WeCom's authorization page for the browser described by hints: the in-client
// page inside the WeCom client, the web-login page elsewhere. state must be 1–128 ASCII letters or
// digits, WeCom's rule.
func (c *Connector) LoginURL(state string, hints upstream.LoginHints) (string, error) {
	if !validState(state) {
		return "", errors.New("wecom: state must be 1 to 128 ASCII letters or digits")
	}
	if InClient(hints.UserAgent) {
		return c.inClientURL(state, c.cfg.Scope), nil
	}
	return c.cfg.LoginBaseURL + "/wwlogin/sso/login?" + orderedQuery(
		"login_type", "CorpApp",
		"appid", c.cfg.CorpID,
		"agentid", c.cfg.AgentID,
		"redirect_uri", c.cfg.RedirectURL,
		"state", state,
		"lang", loginLang(hints.Lang),
	), nil
}

// PhoneLoginURL returns the in-client authorization page with scope snsapi_privateinfo, whatever
// Config.Scope says: the scan sign-in exists to bring the sensitive fields (mobile, email,
// avatar) that only a user_ticket discloses, and the person consents on their phone.
func (c *Connector) PhoneLoginURL(state string, _ upstream.LoginHints) (string, error) {
	if !validState(state) {
		return "", errors.New("wecom: state must be 1 to 128 ASCII letters or digits")
	}
	return c.inClientURL(state, ScopePrivateInfo), nil
}

// InApp reports whether userAgent is the WeCom client's built-in browser.
func (c *Connector) InApp(userAgent string) bool { return InClient(userAgent) }

// inClientURL is the in-client authorization page (connect/oauth2/authorize) with scope, its
// parameters in the order WeCom documents.
func (c *Connector) inClientURL(state, scope string) string {
	return c.cfg.OAuthBaseURL + "/connect/oauth2/authorize?" + orderedQuery(
		"appid", c.cfg.CorpID,
		"redirect_uri", c.cfg.RedirectURL,
		"response_type", "code",
		"scope", scope,
		"state", state,
		"agentid", c.cfg.AgentID,
	) + "#wechat_redirect"
}

// orderedQuery encodes key, value pairs in the order given (url.Values sorts by key).
func orderedQuery(pairs ...string) string {
	var b strings.Builder
	for i := 0; i+1 < len(pairs); i += 2 {
		if b.Len() > 0 {
			b.WriteByte('&')
		}
		b.WriteString(url.QueryEscape(pairs[i]))
		b.WriteByte('=')
		b.WriteString(url.QueryEscape(pairs[i+1]))
	}
	return b.String()
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
// app's visible range, not active), gives an *upstream.DeniedError with its Kind; any other error
// is in upstream.ErrUnavailable or upstream.ErrMisconfigured, with WeCom's *APIError (if any) in
// its chain.
func (c *Connector) HandleCallback(ctx context.Context, r *http.Request) (upstream.Identity, error) {
	id, err := c.handleCallback(ctx, r)
	return id, classify(err)
}

// WeCom's part of one login is bounded as a whole, not only call by call: the mandatory calls
// (gettoken when due, auth/getuserinfo, user/get) and the optional lookups together may take
// loginBudget timeouts, and the optional lookups (getuserdetail, department names and paths,
// tags) share one timeout between them — they degrade instead of failing, so a slow WeCom costs
// the person one timeout of waiting for them, not one per lookup. With the default 10 s timeout a
// login ends within 20 s, inside the HTTP server's 30 s write timeout.
const loginBudget = 2

func (c *Connector) handleCallback(ctx context.Context, r *http.Request) (upstream.Identity, error) {
	ctx, cancel := context.WithTimeout(ctx, loginBudget*c.cfg.Timeout)
	defer cancel()
	q := r.URL.Query()
	code := firstNonEmpty(q.Get("code"), q.Get("auth_code"))
	if code == "" {
		return upstream.Identity{}, &upstream.DeniedError{Kind: upstream.DeniedDeclined, Reason: "the person declined or cancelled the WeCom login"}
	}
	method := MethodWeb
	if InClient(r.UserAgent()) {
		method = MethodClient
	}

	info, err := c.GetUserInfo(ctx, code)
	if err != nil {
		switch errcode := ErrCode(err); {
		case errcode == CodeInvalidCode:
			return upstream.Identity{}, &upstream.DeniedError{Kind: upstream.DeniedCodeInvalid, Reason: "the WeCom login code was already used or has expired; please sign in again", Err: err}
		case notVisible(errcode):
			return upstream.Identity{}, &upstream.DeniedError{Kind: upstream.DeniedNotVisible, Reason: "the member is outside the app's visible range or unknown to WeCom", Err: err}
		}
		return upstream.Identity{}, fmt.Errorf("wecom: exchanging the login code: %w", err)
	}
	if info.UserID == "" {
		if info.OpenID != "" || info.ExternalUserID != "" {
			return upstream.Identity{}, &upstream.DeniedError{Kind: upstream.DeniedNotMember, Reason: "the person is not a member of the corp"}
		}
		return upstream.Identity{}, errors.New("wecom: auth/getuserinfo answered neither userid nor openid")
	}
	log := c.log.With(slog.String("userid", info.UserID), slog.String("method", method))

	// The optional lookups share one timeout; getuserdetail runs while user/get does.
	optional, cancelOptional := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancelOptional()
	details := make(chan UserDetail, 1)
	go func() {
		var detail UserDetail
		if info.UserTicket != "" {
			d, err := c.GetUserDetail(optional, info.UserTicket)
			switch {
			case err != nil:
				log.WarnContext(ctx, "wecom: reading the member's sensitive fields failed; continuing without them", slog.Any("error", err))
			case d.UserID != "" && !strings.EqualFold(d.UserID, info.UserID):
				log.WarnContext(ctx, "wecom: auth/getuserdetail answered for another userid; ignoring it", slog.String("detail_userid", d.UserID))
			default:
				detail = d
			}
		}
		details <- detail
	}()

	user, err := c.member(ctx, info.UserID)
	detail := <-details // buffered: the lookup never outlives the login
	if err != nil {
		return upstream.Identity{}, err
	}
	if user.UserID != "" && !strings.EqualFold(user.UserID, info.UserID) {
		return upstream.Identity{}, fmt.Errorf("wecom: user/get answered for %q, not the member who signed in: %w", user.UserID, upstream.ErrUnavailable)
	}
	id := c.identity(optional, log, info.UserID, user, detail)
	id.Method = method
	log.DebugContext(ctx, "wecom: login", slog.Bool("user_ticket", info.UserTicket != ""))
	return id, nil
}

// Recheck reads the member userID again without them (user/get, plus department names and paths
// and, with Config.Tags, tags, as at login and from the same caches), to find out whether they may
// still sign in. An inactive member is DeniedInactive; one WeCom no longer shows the app (60111,
// 60011, 60021, 50002) DeniedNotVisible; when WeCom cannot answer the error is in
// upstream.ErrUnavailable (or upstream.ErrMisconfigured). The identity has no Method (nobody
// authenticated) and only the contact fields user/get discloses: for apps created after
// 2022-06-20 none, since those come only with a login's user_ticket.
func (c *Connector) Recheck(ctx context.Context, userID string) (upstream.Identity, error) {
	if userID == "" {
		return upstream.Identity{}, &upstream.DeniedError{Kind: upstream.DeniedNotMember, Reason: "no WeCom userid to recheck"}
	}
	user, err := c.member(ctx, userID)
	if err != nil {
		return upstream.Identity{}, classify(err)
	}
	return c.identity(ctx, c.log.With(slog.String("userid", userID), slog.String("method", "recheck")), userID, user, UserDetail{}), nil
}

// member reads userID with user/get and checks they may sign in: a member WeCom does not show the
// app, or one not active, is a *upstream.DeniedError.
func (c *Connector) member(ctx context.Context, userID string) (User, error) {
	user, err := c.GetUser(ctx, userID)
	if err != nil {
		if notVisible(ErrCode(err)) {
			return User{}, &upstream.DeniedError{Kind: upstream.DeniedNotVisible, Reason: "the member is outside the app's visible range or unknown to WeCom", Err: err}
		}
		return User{}, fmt.Errorf("wecom: reading member %q: %w", userID, err)
	}
	if user.Status != StatusActive {
		return User{}, &upstream.DeniedError{Kind: upstream.DeniedInactive, Reason: statusReason(user.Status)}
	}
	return user, nil
}

// notVisible reports whether a member lookup's errcode means WeCom will not show the member to
// the app: outside its visible range (50002, 60011, 60021) or unknown (60111: left, deleted, or
// outside the range).
func notVisible(errcode int) bool {
	switch errcode {
	case CodeOutOfRange, CodeNoPrivilege, CodeUserNotInRange, CodeUserNotFound:
		return true
	}
	return false
}

// identity assembles the member's identity from user/get, the sensitive fields of a user_ticket
// (if any), their departments and, with Config.Tags, their tags. Department and tag lookups that
// fail degrade (logged), never fail the login.
func (c *Connector) identity(ctx context.Context, log *slog.Logger, userID string, user User, detail UserDetail) upstream.Identity {
	id := upstream.Identity{
		CorpID:         c.cfg.CorpID,
		UserID:         firstNonEmpty(user.UserID, userID),
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
	}
	for _, depID := range user.Department {
		dep := upstream.Department{ID: depID}
		d, err := c.Department(ctx, depID)
		switch {
		case withheld(err): // logged when fetched
		case err != nil:
			log.WarnContext(ctx, "wecom: department name unavailable; using the id alone",
				slog.Int64("department", depID), slog.Any("error", err))
		default:
			dep.Name = d.Name
			path, err := c.departmentPath(ctx, d)
			if err != nil && !withheld(err) {
				log.WarnContext(ctx, "wecom: department path unavailable",
					slog.Int64("department", depID), slog.Any("error", err))
			}
			dep.Path = path
		}
		id.Departments = append(id.Departments, dep)
	}
	if c.cfg.Tags {
		id.Tags = c.memberTags(ctx, log, id.UserID, user.Department)
	}
	return id
}

// maxDepartmentDepth bounds a department path (WeCom allows 15 levels below the root).
const maxDepartmentDepth = 16

// errNoName is a department on the way with an empty name: WeCom withheld it.
var errNoName = errors.New("a department on the way has no name")

// departmentPath is the names from the top-level department below the root down to d, walking
// parents through the department cache. The root (parentid 0) is not part of it, so a member of
// the root has an empty, non-nil path. It is nil with an error when a department on the way is
// withheld or unavailable, the parents form a cycle, or the path is deeper than
// maxDepartmentDepth.
func (c *Connector) departmentPath(ctx context.Context, d Department) ([]string, error) {
	names := []string{}
	seen := map[int64]bool{d.ID: true}
	for d.ParentID != 0 {
		if d.Name == "" {
			return nil, fmt.Errorf("wecom: department %d: %w", d.ID, errNoName)
		}
		if len(names) == maxDepartmentDepth {
			return nil, fmt.Errorf("wecom: department path deeper than %d", maxDepartmentDepth)
		}
		names = append(names, d.Name)
		if seen[d.ParentID] {
			return nil, fmt.Errorf("wecom: department %d's parents form a cycle", d.ParentID)
		}
		seen[d.ParentID] = true
		parent, err := c.Department(ctx, d.ParentID)
		if err != nil {
			return nil, err
		}
		d = parent
	}
	slices.Reverse(names)
	return names, nil
}

// tagLookups bounds the concurrent tag/get calls of one login (WeCom limits concurrency: 45033).
const tagLookups = 4

// memberTags returns the tags of userID in departments, sorted by id: those listing the userid or
// one of the departments. A failed tag/list gives none; a failed or withheld tag/get leaves that
// tag out. Failures are logged, never returned.
func (c *Connector) memberTags(ctx context.Context, log *slog.Logger, userID string, departments []int64) []upstream.Tag {
	refs, err := c.tagList(ctx)
	if err != nil {
		log.WarnContext(ctx, "wecom: reading the corp's tags failed; continuing without tags", slog.Any("error", err))
		return nil
	}
	found := make([]*upstream.Tag, len(refs))
	sem := make(chan struct{}, tagLookups)
	var wg sync.WaitGroup
	for i, ref := range refs {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			m, err := c.tag(ctx, ref.ID)
			switch {
			case withheld(err): // logged when fetched
			case err != nil:
				log.WarnContext(ctx, "wecom: reading a tag's members failed; leaving the tag out",
					slog.Int64("tag", ref.ID), slog.Any("error", err))
			case m.has(userID, departments):
				found[i] = &upstream.Tag{ID: ref.ID, Name: firstNonEmpty(m.Name, ref.Name)}
			}
		})
	}
	wg.Wait()
	var tags []upstream.Tag
	for _, t := range found {
		if t != nil {
			tags = append(tags, *t)
		}
	}
	slices.SortFunc(tags, func(a, b upstream.Tag) int { return cmp.Compare(a.ID, b.ID) })
	return tags
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
