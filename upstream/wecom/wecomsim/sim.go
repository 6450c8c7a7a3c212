// Package wecomsim is a simulated WeCom (企业微信): the server APIs and the two login pages a
// WeCom login touches, served from one base URL so it stands in for qyapi.weixin.qq.com,
// open.weixin.qq.com and login.work.weixin.qq.com at once. Tests use it over httptest, and
// `wecom-oidc dev` lets a developer click through its pages.
//
// It keeps WeCom's rules, not just its shapes: answers are JSON with HTTP 200 even for errors
// ({"errcode":N,"errmsg":"…"}); gettoken checks the corp id (40013) and secret (40001); access
// tokens expire (and are then reported as 40014, as WeCom does); a missing token is 41001; login
// codes are single use, live five minutes and are bound to the member, the scope and the door
// (an unknown, used or expired code is 40029); a user_ticket (1800 s) comes only with scope
// snsapi_privateinfo through the in-client door for a member; apps are "new" by default, so
// user/get withholds the contact fields (Config.LegacyContactFields restores them).
//
// Endpoints, relative to the simulator's root:
//
//	cgi-bin/gettoken            cgi-bin/auth/getuserinfo    cgi-bin/user/getuserinfo (old, CamelCase keys)
//	cgi-bin/auth/getuserdetail  cgi-bin/user/get            cgi-bin/department/get (with parentid)
//	cgi-bin/tag/list            cgi-bin/tag/get
//	connect/oauth2/authorize    (the in-client authorization page)
//	wwlogin/sso/login           (the web-login page)
//
// The pages list every member, including a disabled one, a non-member and members outside the
// app's visible range (with a note), each as a link carrying data-userid="<userid>" that completes
// the login, plus a cancel link. The web-login page also shows WeCom's desktop quick-login panel,
// a link carrying data-quick-login="<userid>" that signs in the first active member (or
// AutoLogin's).
//
// The in-client authorization page is the WeCom app on a phone (or the desktop client): it opens
// only in a browser whose User-Agent names the app (contains "wxwork", as PhoneUserAgent does) and
// otherwise shows WeCom's "open this link in the WeCom client" notice, so a test of the scan
// sign-in or of the device flow's in-client door must be the simulated phone to get through.
// Choosing a member there stands for the person holding that phone, and with snsapi_privateinfo
// for their consent.
//
// A member outside the app's visible range (Member.OutsideVisibleRange, SetVisible) is what WeCom
// makes of one: the login pages still show them and auth/getuserinfo still answers their userid
// (but no user_ticket), while user/get answers 60011 and tag/get leaves them out.
//
// Test controls let tests provoke what real WeCom does rarely: Calls, FailNext (any errcode:
// -1, 45009, 45033, 60020, 50002, …), InvalidateTokens, SetStatus, SetVisible, Code, and the
// faults of the network in front of WeCom, SetLatency, SetHTTPStatus and SetGarbage.
//
// The simulator is for development and tests only: its secret is not secret and it trusts every
// redirect URI (it does not model trusted domains or trusted IPs).
package wecomsim

import (
	"crypto/rand"
	"fmt"
	"html/template"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// PhoneUserAgent is the User-Agent of the WeCom app's browser on an iPhone: the simulated phone.
const PhoneUserAgent = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) " +
	"Mobile/15E148 wxwork/4.1.26 MicroMessenger/7.0.1 Language/zh ColorScheme/Light"

// Lifetimes WeCom documents.
const (
	DefaultTokenTTL = 7200 * time.Second
	CodeTTL         = 5 * time.Minute
	TicketTTL       = 1800 * time.Second
)

// Scopes of the in-client authorization page.
const (
	ScopeBase        = "snsapi_base"
	ScopePrivateInfo = "snsapi_privateinfo"
)

// Member statuses, as user/get reports them.
const (
	StatusActive       = 1
	StatusDisabled     = 2
	StatusNotActivated = 4
	StatusLeft         = 5
)

// Config describes the simulated corp and app.
type Config struct {
	CorpID, AgentID, Secret string
	Members                 []Member
	Departments             []Department
	Tags                    []Tag
	// AutoLogin is the userid the login pages log in at once, without showing the member list.
	AutoLogin string
	// TokenTTL is the access tokens' lifetime; default 7200 s.
	TokenTTL time.Duration
	// LegacyContactFields simulates an app created before 2022-06-20: user/get also returns
	// email, biz_mail, mobile, gender, avatar and address. New apps (the default) get none.
	LegacyContactFields bool
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Member is a person the simulated corp knows.
type Member struct {
	UserID, Name, Alias, Position string
	Email, BizMail, Mobile        string
	Gender                        string // "0" unknown, "1" male, "2" female
	Avatar, Address               string
	Departments                   []int64
	MainDepartment                int64
	Status                        int // 1 active, 2 disabled, 4 not activated, 5 left
	ExtAttrs                      map[string]string
	// NonMember marks an outsider (e.g. a WeChat user): auth/getuserinfo answers an openid only,
	// and user/get does not know them.
	NonMember bool
	// OutsideVisibleRange puts the member outside the app's visible range (可见范围).
	OutsideVisibleRange bool
}

// Department is a unit of the simulated corp.
type Department struct {
	ID, ParentID int64
	Name, NameEN string
}

// Tag is a label (标签) of the simulated corp: members listed by userid, and departments.
type Tag struct {
	ID       int64
	Name     string
	UserIDs  []string
	PartyIDs []int64
}

// Sim is a simulated WeCom. It is an http.Handler and safe for concurrent use.
type Sim struct {
	cfg   Config
	pages *template.Template

	mu       sync.Mutex
	members  map[string]*Member // by lower-case userid: WeCom userids are case-insensitive
	order    []string           // lower-case userids in seed order
	depts    map[int64]Department
	tags     map[int64]Tag
	tokens   map[string]simToken
	codes    map[string]simCode
	tickets  map[string]simTicket
	calls    map[string]int
	failNext map[string][]int
	latency  map[string]time.Duration
	status   map[string]int  // SetHTTPStatus
	garbage  map[string]bool // SetGarbage
}

type simToken struct {
	expires  time.Time
	failWith int // non-zero: InvalidateTokens dropped it
}

// simCode is a login code, bound to a member, a scope and a door.
type simCode struct {
	userID   string // lower-case
	scope    string
	inClient bool
	expires  time.Time
}

type simTicket struct {
	userID  string // lower-case
	expires time.Time
}

// New returns a simulator for cfg. cfg is copied; the caller may reuse it.
func New(cfg Config) *Sim {
	if cfg.TokenTTL <= 0 {
		cfg.TokenTTL = DefaultTokenTTL
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Sim{
		cfg:      cfg,
		pages:    template.Must(template.New("pages").Parse(pageTemplates)),
		members:  make(map[string]*Member, len(cfg.Members)),
		depts:    make(map[int64]Department, len(cfg.Departments)),
		tags:     make(map[int64]Tag, len(cfg.Tags)),
		tokens:   make(map[string]simToken),
		codes:    make(map[string]simCode),
		tickets:  make(map[string]simTicket),
		calls:    make(map[string]int),
		failNext: make(map[string][]int),
		latency:  make(map[string]time.Duration),
		status:   make(map[string]int),
		garbage:  make(map[string]bool),
	}
	for _, m := range cfg.Members {
		m.Departments = slices.Clone(m.Departments)
		m.ExtAttrs = maps.Clone(m.ExtAttrs)
		key := strings.ToLower(m.UserID)
		if _, dup := s.members[key]; !dup {
			s.order = append(s.order, key)
		}
		s.members[key] = &m
	}
	for _, d := range cfg.Departments {
		s.depts[d.ID] = d
	}
	for _, t := range cfg.Tags {
		t.UserIDs, t.PartyIDs = slices.Clone(t.UserIDs), slices.Clone(t.PartyIDs)
		s.tags[t.ID] = t
	}
	s.cfg.Members, s.cfg.Departments, s.cfg.Tags = nil, nil, nil // the maps above are the truth
	return s
}

// DefaultSeed is the demo corp: four departments below the root 模拟科技, members with Chinese
// names, one without any email, a disabled one and a non-member, and two tags: 管理员 (zhangsan)
// and 值班 (department 4, 市场部). Its secret is public; never use it for anything real.
func DefaultSeed() Config {
	return Config{
		CorpID:  "wwsim0000000000001",
		AgentID: "1000002",
		Secret:  "wecomsim-public-demo-secret",
		Departments: []Department{
			{ID: 1, Name: "模拟科技", NameEN: "Sim Tech"},
			{ID: 2, ParentID: 1, Name: "研发中心", NameEN: "R&D Center"},
			{ID: 3, ParentID: 2, Name: "平台组", NameEN: "Platform Team"},
			{ID: 4, ParentID: 1, Name: "市场部", NameEN: "Marketing"},
		},
		Members: []Member{
			{
				UserID: "zhangsan", Name: "张三", Alias: "San Zhang", Position: "工程师",
				Email: "zhangsan@example.com", BizMail: "zhangsan@corp.example", Mobile: "+86 13800000001",
				Gender: "1", Avatar: "https://avatar.example.com/zhangsan.png", Address: "北京市海淀区中关村大街1号",
				Departments: []int64{2, 3}, MainDepartment: 3, Status: StatusActive,
				ExtAttrs: map[string]string{"工号": "E1001"},
			},
			{
				UserID: "lisi", Name: "李四", Position: "市场经理",
				BizMail: "lisi@corp.example", Mobile: "+86 13800000002", Gender: "2",
				Departments: []int64{4}, MainDepartment: 4, Status: StatusActive,
			},
			{
				UserID: "wangwu", Name: "王五", Position: "实习生", Gender: "1",
				Departments: []int64{2}, MainDepartment: 2, Status: StatusActive,
			},
			{
				UserID: "zhaoliu", Name: "赵六", Position: "销售", BizMail: "zhaoliu@corp.example", Gender: "1",
				Departments: []int64{4}, MainDepartment: 4, Status: StatusDisabled,
			},
			{UserID: "outsider", Name: "外部联系人", NonMember: true},
		},
		Tags: []Tag{
			{ID: 1, Name: "管理员", UserIDs: []string{"zhangsan"}},
			{ID: 2, Name: "值班", PartyIDs: []int64{4}},
		},
	}
}

// ServeHTTP serves the APIs and pages at the simulator's root (mount it with http.StripPrefix
// to serve it under a path).
func (s *Sim) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch p := strings.Trim(r.URL.Path, "/"); p {
	case "cgi-bin/gettoken":
		s.api(w, r, "gettoken", s.gettoken)
	case "cgi-bin/auth/getuserinfo":
		s.api(w, r, "auth/getuserinfo", func(r *http.Request) response { return s.getUserInfo(r, false) })
	case "cgi-bin/user/getuserinfo":
		s.api(w, r, "user/getuserinfo", func(r *http.Request) response { return s.getUserInfo(r, true) })
	case "cgi-bin/auth/getuserdetail":
		s.api(w, r, "auth/getuserdetail", s.getUserDetail)
	case "cgi-bin/user/get":
		s.api(w, r, "user/get", s.getUser)
	case "cgi-bin/department/get":
		s.api(w, r, "department/get", s.getDepartment)
	case "cgi-bin/tag/list":
		s.api(w, r, "tag/list", s.tagList)
	case "cgi-bin/tag/get":
		s.api(w, r, "tag/get", s.tagGet)
	case pageAuthorize, pageWebLogin:
		if s.arrive(w, r, p) {
			s.page(w, r, p)
		}
	default:
		http.NotFound(w, r)
	}
}

// Calls reports how many requests reached endpoint: an API path below cgi-bin ("gettoken",
// "auth/getuserinfo", "user/get", …) or a page ("connect/oauth2/authorize", "wwlogin/sso/login").
// Requests answered by FailNext count too.
func (s *Sim) Calls(endpoint string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[endpointName(endpoint)]
}

// InvalidateTokens makes every access token issued so far fail with errcode (40014 or 42001), as
// when WeCom drops tokens early. Tokens issued afterwards work.
func (s *Sim) InvalidateTokens(errcode int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, t := range s.tokens {
		t.failWith = errcode
		s.tokens[k] = t
	}
}

// FailNext makes the next call to endpoint (named as for Calls) answer errcode, any WeCom errcode
// (-1, 45009, 45033, 60020, 50002, …), before anything else is checked. Calls queue: FailNext
// twice fails the next two calls; a queued 0 lets one call through normally.
func (s *Sim) FailNext(endpoint string, errcode int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	name := endpointName(endpoint)
	s.failNext[name] = append(s.failNext[name], errcode)
}

// SetLatency delays every answer of endpoint (named as for Calls) by d; 0 removes the delay. A
// client that gives up meanwhile gets nothing.
func (s *Sim) SetLatency(endpoint string, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latency[endpointName(endpoint)] = d
}

// SetHTTPStatus makes endpoint (named as for Calls) answer HTTP status with an HTML error page, as
// a proxy or gateway in front of WeCom does (e.g. 502); 0 or 200 restores normal answers.
func (s *Sim) SetHTTPStatus(endpoint string, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status[endpointName(endpoint)] = status
}

// SetGarbage makes endpoint (named as for Calls) answer HTTP 200 with a body that is not JSON, or
// restores normal answers.
func (s *Sim) SetGarbage(endpoint string, on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.garbage[endpointName(endpoint)] = on
}

// SetVisible puts a member inside or outside the app's visible range. An unknown userid is
// ignored.
func (s *Sim) SetVisible(userID string, visible bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m := s.members[strings.ToLower(userID)]; m != nil {
		m.OutsideVisibleRange = !visible
	}
}

// arrive counts a request to endpoint and applies the network faults set for it: the latency,
// then an HTTP status or garbage. It reports whether the request should be answered normally.
func (s *Sim) arrive(w http.ResponseWriter, r *http.Request, name string) bool {
	s.mu.Lock()
	s.calls[name]++
	delay, status, garbage := s.latency[name], s.status[name], s.garbage[name]
	s.mu.Unlock()

	if delay > 0 {
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			return false // the client gave up
		}
	}
	switch {
	case status != 0 && status != http.StatusOK:
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(status)
		_, _ = fmt.Fprintf(w, "<html>\r\n<head><title>%d %s</title></head>\r\n<body>\r\n<center><h1>%d %s</h1></center>\r\n<hr><center>stgw</center>\r\n</body>\r\n</html>\r\n",
			status, http.StatusText(status), status, http.StatusText(status))
		return false
	case garbage:
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, "<!DOCTYPE html><html><body><p>系统繁忙，请稍后再试 (wecomsim garbage)</p></body></html>")
		return false
	}
	return true
}

// SetStatus changes a member's status (1 active, 2 disabled, 4 not activated, 5 left). An unknown
// userid is ignored.
func (s *Sim) SetStatus(userID string, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m := s.members[strings.ToLower(userID)]; m != nil {
		m.Status = status
	}
}

// Code mints a login code as if the member had clicked through a login page: through the in-client
// door with scope, or through the web-login door (scope is then irrelevant). It returns "" for an
// unknown userid.
func (s *Sim) Code(userID string, inClient bool, scope string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := strings.ToLower(userID)
	if s.members[key] == nil {
		return ""
	}
	return s.mintCodeLocked(key, inClient, scope)
}

func (s *Sim) mintCodeLocked(userKey string, inClient bool, scope string) string {
	now := s.cfg.Now()
	for c, v := range s.codes { // sweep, so abandoned codes do not pile up
		if !now.Before(v.expires) {
			delete(s.codes, c)
		}
	}
	if !inClient {
		scope = "" // the web-login door has no scope
	}
	code := randomString()
	s.codes[code] = simCode{userID: userKey, scope: scope, inClient: inClient, expires: now.Add(CodeTTL)}
	return code
}

// endpointName normalizes "cgi-bin/user/get", "/cgi-bin/user/get" and "user/get" to "user/get".
func endpointName(endpoint string) string {
	return strings.TrimPrefix(strings.Trim(endpoint, "/"), "cgi-bin/")
}

// randomString is an unguessable token, code or ticket (52 base32 characters, 260 bits).
func randomString() string { return rand.Text() + rand.Text() }
