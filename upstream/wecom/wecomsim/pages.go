package wecomsim

import (
	"bytes"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Page paths, relative to the simulator's root; also their names for Calls.
const (
	pageAuthorize = "connect/oauth2/authorize"
	pageWebLogin  = "wwlogin/sso/login"
)

// selectParam is added to a page's own query by the member links: the page then completes the
// login for that member.
const selectParam = "wecomsim_userid"

// loginRequest is a validated login-page request.
type loginRequest struct {
	inClient bool
	scope    string // in-client door only
	redirect *url.URL
	state    string
	lang     string // "zh" or "en"
}

// validate checks a login page's parameters as WeCom does, returning a problem for the person
// when they are wrong.
func (s *Sim) validate(q url.Values, inClient bool) (loginRequest, string) {
	req := loginRequest{inClient: inClient, state: q.Get("state"), lang: "zh"}
	if q.Get("lang") == "en" {
		req.lang = "en"
	}
	if !inClient {
		switch q.Get("login_type") {
		case "CorpApp":
		case "ServiceApp":
			return req, "login_type=ServiceApp (third-party apps) is not simulated; use CorpApp"
		default:
			return req, "login_type 参数错误 (must be CorpApp)"
		}
	}
	if appid := q.Get("appid"); appid == "" {
		return req, "appid 参数缺失 (appid is missing)"
	} else if appid != s.cfg.CorpID {
		return req, "appid 参数错误 (appid must be the corp id)"
	}
	if inClient {
		if q.Get("response_type") != "code" {
			return req, "response_type 参数错误 (must be code)"
		}
		req.scope = q.Get("scope")
		if req.scope != ScopeBase && req.scope != ScopePrivateInfo {
			return req, "scope 参数错误 (must be snsapi_base or snsapi_privateinfo)"
		}
	}
	switch agentID := q.Get("agentid"); {
	case agentID == "" && !inClient:
		return req, "agentid 参数缺失 (agentid is required with login_type=CorpApp)"
	case agentID == "" && req.scope == ScopePrivateInfo:
		return req, "agentid 参数缺失 (agentid is required with snsapi_privateinfo)"
	case agentID != "" && agentID != s.cfg.AgentID:
		return req, "无效的agentid参数 (invalid agentid)"
	}
	raw := q.Get("redirect_uri")
	if raw == "" {
		return req, "redirect_uri 参数缺失 (redirect_uri is missing)"
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return req, "redirect_uri 参数错误 (redirect_uri must be an absolute http(s) URL)"
	}
	req.redirect = u
	if !validState(req.state) {
		return req, "state 参数错误 (state must be at most 128 letters or digits)"
	}
	return req, ""
}

// validState is WeCom's rule: [a-zA-Z0-9]{0,128}.
func validState(s string) bool {
	if len(s) > 128 {
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

// callbackURL is redirect_uri with code (unless empty: the person cancelled) and state added.
func callbackURL(redirect *url.URL, code, state string) string {
	u := *redirect
	q := u.Query()
	if code != "" {
		q.Set("code", code)
	}
	q.Set("state", state)
	u.RawQuery = q.Encode()
	return u.String()
}

// page serves a login page: an error page (400) for bad parameters, a redirect completing the
// login for a chosen member (or AutoLogin), else the member list.
func (s *Sim) page(w http.ResponseWriter, r *http.Request, door string) {
	q := r.URL.Query()
	req, problem := s.validate(q, door == pageAuthorize)
	if problem != "" {
		s.render(w, http.StatusBadRequest, "error", errorData{Title: "参数错误", Lang: req.lang, Problem: problem})
		return
	}
	if req.inClient && !strings.Contains(strings.ToLower(r.UserAgent()), "wxwork") {
		// The in-client authorization works only in the WeCom app's browser: a phone that
		// scanned a link with its camera, or a computer's browser, gets WeCom's notice.
		s.render(w, http.StatusOK, "error", errorData{Title: "企业微信", Lang: req.lang,
			Problem: "请在企业微信客户端打开链接 (open this link in the WeCom app)"})
		return
	}

	chosen, explicit := q.Get(selectParam), true
	if chosen == "" {
		chosen, explicit = s.cfg.AutoLogin, false
	}
	if chosen != "" {
		s.mu.Lock()
		key := strings.ToLower(chosen)
		code := ""
		if s.members[key] != nil {
			code = s.mintCodeLocked(key, req.inClient, req.scope)
		}
		s.mu.Unlock()
		switch {
		case code != "":
			http.Redirect(w, r, callbackURL(req.redirect, code, req.state), http.StatusFound)
			return
		case explicit:
			s.render(w, http.StatusBadRequest, "error", errorData{Title: "参数错误", Lang: req.lang, Problem: "unknown member " + chosen})
			return
		}
		// An AutoLogin naming nobody: show the list.
	}

	data := listData{
		Lang:       req.lang,
		InClient:   req.inClient,
		CorpID:     s.cfg.CorpID,
		AgentID:    s.cfg.AgentID,
		Scope:      req.scope,
		CancelHref: callbackURL(req.redirect, "", req.state),
	}
	s.mu.Lock()
	for _, key := range s.order {
		m := s.members[key]
		var depts []string
		for _, id := range m.Departments {
			if d, ok := s.depts[id]; ok {
				depts = append(depts, d.Name)
			}
		}
		data.Members = append(data.Members, memberLink{
			UserID:      m.UserID,
			Name:        m.Name,
			Note:        memberNote(m),
			Departments: strings.Join(depts, "、"),
			Href:        selectHref(q, m.UserID),
		})
	}
	if !req.inClient {
		if m := s.quickLoginMemberLocked(); m != nil {
			data.QuickLogin = &memberLink{UserID: m.UserID, Name: m.Name, Href: selectHref(q, m.UserID)}
		}
	}
	s.mu.Unlock()
	name := "weblogin"
	data.Title = "企业微信登录"
	if req.inClient {
		name, data.Title = "authorize", "企业微信"
	}
	s.render(w, http.StatusOK, name, data)
}

// selectHref is the page's own URL, relative, completing the login for userID.
func selectHref(q url.Values, userID string) string {
	link := cloneValues(q)
	link.Set(selectParam, userID)
	return "?" + link.Encode()
}

// quickLoginMemberLocked is whom the desktop client's quick login signs in: AutoLogin's member,
// else the first active member, else nobody. s.mu must be held.
func (s *Sim) quickLoginMemberLocked() *Member {
	if m := s.members[strings.ToLower(s.cfg.AutoLogin)]; m != nil && !m.NonMember {
		return m
	}
	for _, key := range s.order {
		if m := s.members[key]; !m.NonMember && m.Status == StatusActive {
			return m
		}
	}
	return nil
}

func cloneValues(q url.Values) url.Values {
	out := make(url.Values, len(q)+1)
	for k, v := range q {
		out[k] = append([]string(nil), v...)
	}
	return out
}

func memberNote(m *Member) string {
	if m.NonMember {
		return "非企业成员 (not a member)"
	}
	var notes []string
	switch m.Status {
	case StatusActive:
	case StatusDisabled:
		notes = append(notes, "已禁用 (disabled)")
	case StatusNotActivated:
		notes = append(notes, "未激活 (not activated)")
	case StatusLeft:
		notes = append(notes, "已离职 (left)")
	default:
		notes = append(notes, "status "+strconv.Itoa(m.Status))
	}
	if m.OutsideVisibleRange {
		notes = append(notes, "不在应用可见范围 (outside the app's visible range)")
	}
	return strings.Join(notes, " · ")
}

type listData struct {
	Title      string
	Lang       string
	InClient   bool
	CorpID     string
	AgentID    string
	Scope      string
	Members    []memberLink
	CancelHref string
	// QuickLogin is whom the desktop client's quick-login panel signs in (web-login page only).
	QuickLogin *memberLink
}

type memberLink struct {
	UserID, Name, Note, Departments, Href string
}

type errorData struct {
	Title   string
	Lang    string
	Problem string
}

// render executes a page template into a buffer first, so a template failure is a clean 500.
func (s *Sim) render(w http.ResponseWriter, status int, name string, data any) {
	var buf bytes.Buffer
	if err := s.pages.ExecuteTemplate(&buf, name, data); err != nil {
		http.Error(w, "wecomsim: rendering page: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes()) // a failed write means the browser left
}

// pageTemplates are the simulator's pages, escaped by html/template.
const pageTemplates = `
{{define "head"}}<!DOCTYPE html>
<html lang="{{if eq .Lang "en"}}en{{else}}zh-CN{{end}}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}}</title>
<style>
body{margin:0;font-family:-apple-system,"PingFang SC","Microsoft YaHei",sans-serif;background:#f2f3f5;color:#222}
.card{max-width:420px;margin:48px auto;background:#fff;border-radius:8px;box-shadow:0 2px 12px rgba(0,0,0,.08);padding:28px}
h1{font-size:20px;margin:0 0 4px;color:#0082ef}
.sim{font-size:12px;color:#c05600;background:#fff4e5;border-radius:4px;padding:6px 8px;margin:12px 0}
.meta{font-size:12px;color:#888}
ul{list-style:none;padding:0;margin:16px 0}
li a{display:block;padding:10px 12px;border:1px solid #e5e6eb;border-radius:6px;margin-bottom:8px;text-decoration:none;color:#222}
li a:hover{border-color:#0082ef;background:#f5faff}
.uid{color:#888;font-size:12px;margin-left:6px}
.note{color:#c0392b;font-size:12px;margin-left:6px}
.dept{display:block;color:#888;font-size:12px}
.cancel{display:inline-block;margin-top:8px;color:#888}
.quick{border:1px solid #cfe6ff;background:#f5faff;border-radius:6px;padding:10px 12px;margin:12px 0}
.quick p{margin:0 0 6px;font-size:13px;color:#0082ef}
.quick a{display:inline-block;padding:6px 14px;border-radius:4px;background:#0082ef;color:#fff;text-decoration:none}
.qr{width:160px;height:160px;margin:12px auto;border:1px dashed #bbb;display:flex;align-items:center;justify-content:center;color:#aaa;font-size:12px;text-align:center}
</style>
</head>
<body>{{end}}

{{define "members"}}<ul>
{{range .Members}}<li><a data-userid="{{.UserID}}" href="{{.Href}}">{{.Name}}<span class="uid">{{.UserID}}</span>{{if .Note}}<span class="note">{{.Note}}</span>{{end}}{{if .Departments}}<span class="dept">{{.Departments}}</span>{{end}}</a></li>
{{end}}</ul>
<a class="cancel" data-cancel="true" href="{{.CancelHref}}">{{if eq .Lang "en"}}Cancel{{else}}取消{{end}}</a>{{end}}

{{define "simnote"}}<p class="sim">这是模拟的企业微信（wecomsim），仅供开发和测试。This is a simulated WeCom for development and tests, not the real one.</p>{{end}}

{{define "authorize"}}{{template "head" .}}
<div class="card">
<h1>企业微信 · 网页授权</h1>
<p class="meta">corp {{.CorpID}} · agent {{.AgentID}} · scope {{.Scope}}</p>
{{template "simnote" .}}
<p>{{if eq .Scope "snsapi_privateinfo"}}该应用申请获取你的头像、手机、邮箱等信息。选择成员以同意授权：{{else}}选择以哪位成员身份进入应用：{{end}}</p>
{{template "members" .}}
</div>
</body></html>{{end}}

{{define "weblogin"}}{{template "head" .}}
<div class="card">
<h1>{{if eq .Lang "en"}}WeCom Login{{else}}企业微信登录{{end}}</h1>
<p class="meta">corp {{.CorpID}} · agent {{.AgentID}}</p>
{{template "simnote" .}}
{{with .QuickLogin}}<div class="quick">
<p>检测到企业微信桌面端 · WeCom desktop app detected</p>
<a data-quick-login="{{.UserID}}" href="{{.Href}}">{{if eq $.Lang "en"}}Quick login as {{.Name}}{{else}}以 {{.Name}} 身份快速登录{{end}}</a>
</div>{{end}}
<div class="qr">{{if eq .Lang "en"}}QR code (simulated):<br>choose a member below{{else}}二维码（模拟）<br>请在下方选择成员{{end}}</div>
<p>{{if eq .Lang "en"}}Quick login as:{{else}}快速登录：{{end}}</p>
{{template "members" .}}
</div>
</body></html>{{end}}

{{define "error"}}{{template "head" .}}
<div class="card">
<h1>{{if eq .Lang "en"}}Request error{{else}}参数错误{{end}}</h1>
{{template "simnote" .}}
<p class="problem">{{.Problem}}</p>
</div>
</body></html>{{end}}

`
