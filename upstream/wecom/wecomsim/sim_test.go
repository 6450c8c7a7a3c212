package wecomsim_test

import (
	"bytes"
	"encoding/json"
	"html"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wecom-oidc/wecom-oidc/upstream/wecom/wecomsim"
)

// fakeClock is a settable clock shared by a test and the simulator.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// testSim is a simulator behind httptest with a fake clock.
type testSim struct {
	*wecomsim.Sim
	cfg   wecomsim.Config
	srv   *httptest.Server
	clock *fakeClock
}

// MustSim serves the default seed, changed by mutate.
func MustSim(t testing.TB, mutate func(*wecomsim.Config)) *testSim {
	t.Helper()
	clock := newFakeClock()
	cfg := wecomsim.DefaultSeed()
	cfg.Now = clock.Now
	if mutate != nil {
		mutate(&cfg)
	}
	sim := wecomsim.New(cfg)
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	return &testSim{Sim: sim, cfg: cfg, srv: srv, clock: clock}
}

// noRedirect is a client that reports redirects instead of following them.
func noRedirect() *http.Client {
	return &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// MustAPI calls an API and decodes its JSON answer; it fails unless the status is 200.
func (s *testSim) MustAPI(t testing.TB, method, endpoint string, q url.Values, body any) map[string]any {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, s.srv.URL+"/cgi-bin/"+endpoint+"?"+q.Encode(), rd)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: HTTP %d, want 200 (WeCom answers errors with 200)", endpoint, resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("%s: Content-Type %q", endpoint, ct)
	}
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatalf("%s: %v", endpoint, err)
	}
	if _, ok := m["errmsg"]; !ok {
		t.Errorf("%s: answer has no errmsg: %v", endpoint, m)
	}
	return m
}

func (s *testSim) MustGet(t testing.TB, endpoint string, q url.Values) map[string]any {
	t.Helper()
	return s.MustAPI(t, http.MethodGet, endpoint, q, nil)
}

// MustToken fetches an access token.
func (s *testSim) MustToken(t testing.TB) string {
	t.Helper()
	m := s.MustGet(t, "gettoken", url.Values{"corpid": {s.cfg.CorpID}, "corpsecret": {s.cfg.Secret}})
	tok, _ := m["access_token"].(string)
	if errcode(m) != 0 || tok == "" {
		t.Fatalf("gettoken: %v", m)
	}
	return tok
}

func errcode(m map[string]any) int {
	f, _ := m["errcode"].(float64)
	return int(f)
}

func wantErrcode(t testing.TB, what string, m map[string]any, want int) {
	t.Helper()
	if got := errcode(m); got != want {
		t.Errorf("%s: errcode %d, want %d (answer %v)", what, got, want, m)
	}
}

func TestGettoken(t *testing.T) {
	s := MustSim(t, nil)
	tests := []struct {
		name         string
		corpID, sec  string
		wantErrcode  int
		wantAnyToken bool
	}{
		{"ok", s.cfg.CorpID, s.cfg.Secret, 0, true},
		{"wrong corp id", "wwwrong", s.cfg.Secret, 40013, false},
		{"wrong secret", s.cfg.CorpID, "nope", 40001, false},
		{"missing corp id", "", s.cfg.Secret, 41002, false},
		{"missing secret", s.cfg.CorpID, "", 41004, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := s.MustGet(t, "gettoken", url.Values{"corpid": {tt.corpID}, "corpsecret": {tt.sec}})
			wantErrcode(t, "gettoken", m, tt.wantErrcode)
			tok, _ := m["access_token"].(string)
			if (tok != "") != tt.wantAnyToken {
				t.Errorf("access_token %q", tok)
			}
			if tt.wantAnyToken && m["expires_in"] != float64(7200) {
				t.Errorf("expires_in = %v, want 7200", m["expires_in"])
			}
		})
	}
	if a, b := s.MustToken(t), s.MustToken(t); a == b {
		t.Error("two gettoken calls returned the same token; want random tokens")
	}
	if got := s.Calls("gettoken"); got != len(tests)+2 {
		t.Errorf("Calls(gettoken) = %d, want %d", got, len(tests)+2)
	}
}

func TestAccessTokenRules(t *testing.T) {
	s := MustSim(t, nil)
	userGet := func(tok string) map[string]any {
		q := url.Values{"userid": {"zhangsan"}}
		if tok != "" {
			q.Set("access_token", tok)
		}
		return s.MustGet(t, "user/get", q)
	}
	wantErrcode(t, "missing token", userGet(""), 41001)
	wantErrcode(t, "unknown token", userGet("bogus"), 40014)

	tok := s.MustToken(t)
	wantErrcode(t, "fresh token", userGet(tok), 0)
	s.clock.Advance(7200*time.Second - time.Second)
	wantErrcode(t, "token one second before expiry", userGet(tok), 0)
	s.clock.Advance(time.Second)
	wantErrcode(t, "expired token (WeCom says 40014)", userGet(tok), 40014)

	for _, code := range []int{40014, 42001} {
		tok := s.MustToken(t)
		s.InvalidateTokens(code)
		wantErrcode(t, "invalidated token", userGet(tok), code)
		wantErrcode(t, "token issued after InvalidateTokens", userGet(s.MustToken(t)), 0)
	}
}

func TestTokenTTLConfigurable(t *testing.T) {
	s := MustSim(t, func(c *wecomsim.Config) { c.TokenTTL = time.Minute })
	m := s.MustGet(t, "gettoken", url.Values{"corpid": {s.cfg.CorpID}, "corpsecret": {s.cfg.Secret}})
	if m["expires_in"] != float64(60) {
		t.Errorf("expires_in = %v, want 60", m["expires_in"])
	}
}

func TestCodeRules(t *testing.T) {
	s := MustSim(t, nil)
	tok := s.MustToken(t)
	exchange := func(code string) map[string]any {
		return s.MustGet(t, "auth/getuserinfo", url.Values{"access_token": {tok}, "code": {code}})
	}

	t.Run("single use", func(t *testing.T) {
		code := s.Code("zhangsan", false, "")
		m := exchange(code)
		wantErrcode(t, "first exchange", m, 0)
		if m["userid"] != "zhangsan" {
			t.Errorf("userid = %v", m["userid"])
		}
		wantErrcode(t, "second exchange", exchange(code), 40029)
	})
	t.Run("unknown", func(t *testing.T) { wantErrcode(t, "unknown code", exchange("nonsense"), 40029) })
	t.Run("missing", func(t *testing.T) { wantErrcode(t, "missing code", exchange(""), 41008) })
	t.Run("lives five minutes", func(t *testing.T) {
		young, old := s.Code("lisi", false, ""), s.Code("lisi", false, "")
		s.clock.Advance(5*time.Minute - time.Second)
		wantErrcode(t, "code just under 5 minutes old", exchange(young), 0)
		tok = s.MustToken(t)
		s.clock.Advance(time.Second)
		wantErrcode(t, "code 5 minutes old", exchange(old), 40029)
	})
	t.Run("invalid token leaves the code unused", func(t *testing.T) {
		code := s.Code("zhangsan", false, "")
		wantErrcode(t, "bad token", s.MustGet(t, "auth/getuserinfo", url.Values{"access_token": {"bogus"}, "code": {code}}), 40014)
		wantErrcode(t, "same code, good token", exchange(code), 0)
	})
	t.Run("unknown member", func(t *testing.T) {
		if code := s.Code("nobody", true, wecomsim.ScopeBase); code != "" {
			t.Errorf("Code(nobody) = %q, want empty", code)
		}
	})
}

func TestUserTicketOnlyInClientPrivateInfoMember(t *testing.T) {
	s := MustSim(t, nil)
	tok := s.MustToken(t)
	tests := []struct {
		name       string
		userID     string
		inClient   bool
		scope      string
		wantTicket bool
	}{
		{"in-client privateinfo member", "zhangsan", true, wecomsim.ScopePrivateInfo, true},
		{"in-client base member", "zhangsan", true, wecomsim.ScopeBase, false},
		{"web login (privateinfo ignored)", "zhangsan", false, wecomsim.ScopePrivateInfo, false},
		{"web login", "zhangsan", false, "", false},
		{"in-client privateinfo non-member", "outsider", true, wecomsim.ScopePrivateInfo, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := s.MustGet(t, "auth/getuserinfo", url.Values{"access_token": {tok}, "code": {s.Code(tt.userID, tt.inClient, tt.scope)}})
			wantErrcode(t, "getuserinfo", m, 0)
			ticket, _ := m["user_ticket"].(string)
			if (ticket != "") != tt.wantTicket {
				t.Fatalf("user_ticket present = %v, want %v (%v)", ticket != "", tt.wantTicket, m)
			}
			if tt.wantTicket && m["expires_in"] != float64(1800) {
				t.Errorf("expires_in = %v, want 1800", m["expires_in"])
			}
		})
	}
}

func TestNonMember(t *testing.T) {
	s := MustSim(t, nil)
	tok := s.MustToken(t)
	m := s.MustGet(t, "auth/getuserinfo", url.Values{"access_token": {tok}, "code": {s.Code("outsider", false, "")}})
	wantErrcode(t, "getuserinfo", m, 0)
	if _, ok := m["userid"]; ok {
		t.Errorf("non-member got a userid: %v", m)
	}
	openID, _ := m["openid"].(string)
	if openID == "" {
		t.Fatalf("no openid: %v", m)
	}
	m2 := s.MustGet(t, "auth/getuserinfo", url.Values{"access_token": {tok}, "code": {s.Code("outsider", true, wecomsim.ScopeBase)}})
	if m2["openid"] != openID {
		t.Errorf("openid not stable: %v then %v", openID, m2["openid"])
	}
	wantErrcode(t, "user/get of a non-member", s.MustGet(t, "user/get", url.Values{"access_token": {tok}, "userid": {"outsider"}}), 60111)
}

func TestOldGetUserInfoCamelCase(t *testing.T) {
	s := MustSim(t, nil)
	tok := s.MustToken(t)
	m := s.MustGet(t, "user/getuserinfo", url.Values{"access_token": {tok}, "code": {s.Code("zhangsan", true, wecomsim.ScopePrivateInfo)}})
	wantErrcode(t, "user/getuserinfo", m, 0)
	if m["UserId"] != "zhangsan" || m["DeviceId"] == nil || m["user_ticket"] == nil {
		t.Errorf("member answer %v, want UserId, DeviceId, user_ticket", m)
	}
	if _, ok := m["userid"]; ok {
		t.Errorf("old endpoint answered lower-case userid: %v", m)
	}
	m = s.MustGet(t, "user/getuserinfo", url.Values{"access_token": {tok}, "code": {s.Code("outsider", false, "")}})
	if m["OpenId"] == nil || m["UserId"] != nil {
		t.Errorf("non-member answer %v, want OpenId only", m)
	}
	if s.Calls("user/getuserinfo") != 2 || s.Calls("auth/getuserinfo") != 0 {
		t.Errorf("Calls: old %d new %d", s.Calls("user/getuserinfo"), s.Calls("auth/getuserinfo"))
	}
}

func TestGetUserDetail(t *testing.T) {
	s := MustSim(t, nil)
	tok := s.MustToken(t)
	m := s.MustGet(t, "auth/getuserinfo", url.Values{"access_token": {tok}, "code": {s.Code("zhangsan", true, wecomsim.ScopePrivateInfo)}})
	ticket, _ := m["user_ticket"].(string)
	if ticket == "" {
		t.Fatalf("no ticket: %v", m)
	}
	detail := func(body any) map[string]any {
		return s.MustAPI(t, http.MethodPost, "auth/getuserdetail", url.Values{"access_token": {tok}}, body)
	}

	d := detail(map[string]string{"user_ticket": ticket})
	wantErrcode(t, "getuserdetail", d, 0)
	want := map[string]any{
		"userid": "zhangsan", "gender": "1", "mobile": "+86 13800000001", "email": "zhangsan@example.com",
		"biz_mail": "zhangsan@corp.example", "address": "北京市海淀区中关村大街1号", "avatar": "https://avatar.example.com/zhangsan.png",
	}
	for k, v := range want {
		if d[k] != v {
			t.Errorf("%s = %v, want %v", k, d[k], v)
		}
	}
	if _, ok := d["qr_code"]; !ok {
		t.Error("no qr_code")
	}
	if _, ok := d["name"]; ok {
		t.Error("getuserdetail answered a name; WeCom's does not")
	}
	wantErrcode(t, "ticket reused within its life", detail(map[string]string{"user_ticket": ticket}), 0)
	wantErrcode(t, "GET", s.MustGet(t, "auth/getuserdetail", url.Values{"access_token": {tok}}), 43002)
	wantErrcode(t, "unknown ticket", detail(map[string]string{"user_ticket": "bogus"}), 40029)
	wantErrcode(t, "not JSON", detail("just a string"), 47001)

	s.clock.Advance(1800 * time.Second)
	tok = s.MustToken(t)
	wantErrcode(t, "expired ticket", s.MustAPI(t, http.MethodPost, "auth/getuserdetail", url.Values{"access_token": {tok}}, map[string]string{"user_ticket": ticket}), 40029)
}

func TestUserGet(t *testing.T) {
	contact := []string{"email", "biz_mail", "mobile", "gender", "avatar", "address"}
	for _, legacy := range []bool{false, true} {
		name := "new app"
		if legacy {
			name = "legacy app"
		}
		t.Run(name, func(t *testing.T) {
			s := MustSim(t, func(c *wecomsim.Config) { c.LegacyContactFields = legacy })
			tok := s.MustToken(t)
			m := s.MustGet(t, "user/get", url.Values{"access_token": {tok}, "userid": {"ZhangSan"}})
			wantErrcode(t, "user/get", m, 0)
			if m["userid"] != "zhangsan" || m["name"] != "张三" || m["position"] != "工程师" || m["status"] != float64(1) || m["main_department"] != float64(3) {
				t.Errorf("user/get = %v", m)
			}
			if got, _ := json.Marshal(m["department"]); string(got) != "[2,3]" {
				t.Errorf("department = %s", got)
			}
			if got, _ := json.Marshal(m["extattr"]); string(got) != `{"attrs":[{"name":"工号","text":{"value":"E1001"},"type":0}]}` {
				t.Errorf("extattr = %s", got)
			}
			for _, f := range contact {
				if _, ok := m[f]; ok != legacy {
					t.Errorf("field %s present = %v, want %v", f, ok, legacy)
				}
			}
			wantErrcode(t, "unknown userid", s.MustGet(t, "user/get", url.Values{"access_token": {tok}, "userid": {"nobody"}}), 60111)
			wantErrcode(t, "missing userid", s.MustGet(t, "user/get", url.Values{"access_token": {tok}}), 41009)
		})
	}
}

func TestDepartmentGet(t *testing.T) {
	s := MustSim(t, nil)
	tok := s.MustToken(t)
	m := s.MustGet(t, "department/get", url.Values{"access_token": {tok}, "id": {"3"}})
	wantErrcode(t, "department/get", m, 0)
	d, _ := m["department"].(map[string]any)
	if d["name"] != "平台组" || d["parentid"] != float64(2) || d["id"] != float64(3) {
		t.Errorf("department = %v", d)
	}
	wantErrcode(t, "unknown department", s.MustGet(t, "department/get", url.Values{"access_token": {tok}, "id": {"99"}}), 60123)
	wantErrcode(t, "bad id", s.MustGet(t, "department/get", url.Values{"access_token": {tok}, "id": {"x"}}), 40058)
}

func TestFailNextAndSetStatus(t *testing.T) {
	s := MustSim(t, nil)
	tok := s.MustToken(t)
	s.FailNext("user/get", 60020)
	s.FailNext("cgi-bin/user/get", -1)
	q := url.Values{"access_token": {tok}, "userid": {"lisi"}}
	wantErrcode(t, "first failure", s.MustGet(t, "user/get", q), 60020)
	wantErrcode(t, "second failure", s.MustGet(t, "user/get", q), -1)
	wantErrcode(t, "after the failures", s.MustGet(t, "user/get", q), 0)
	if got := s.Calls("user/get"); got != 3 {
		t.Errorf("Calls(user/get) = %d, want 3", got)
	}
	s.SetStatus("lisi", wecomsim.StatusLeft)
	s.SetStatus("nobody", wecomsim.StatusLeft) // ignored
	if m := s.MustGet(t, "user/get", q); m["status"] != float64(5) {
		t.Errorf("status = %v, want 5", m["status"])
	}
}

// page is a fetched login page.
type page struct {
	status   int
	body     string
	location string
	url      *url.URL
}

// MustPage opens a page on the simulated phone (the WeCom app's browser; the web-login page does
// not look at the browser).
func (s *testSim) MustPage(t testing.TB, rawURL string) page {
	t.Helper()
	return s.mustPageAs(t, rawURL, wecomsim.PhoneUserAgent)
}

func (s *testSim) mustPageAs(t testing.TB, rawURL, userAgent string) page {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("User-Agent", userAgent)
	resp, err := noRedirect().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(rawURL)
	return page{status: resp.StatusCode, body: string(b), location: resp.Header.Get("Location"), url: u}
}

var linkRE = regexp.MustCompile(`data-userid="([^"]*)" href="([^"]*)"`)

// links maps each member link's userid to its absolute URL.
func (p page) links(t testing.TB) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, m := range linkRE.FindAllStringSubmatch(p.body, -1) {
		ref, err := url.Parse(html.UnescapeString(m[2]))
		if err != nil {
			t.Fatal(err)
		}
		out[html.UnescapeString(m[1])] = p.url.ResolveReference(ref).String()
	}
	return out
}

var cancelRE = regexp.MustCompile(`data-cancel="true" href="([^"]*)"`)

func (s *testSim) authorizeURL(q url.Values) string {
	return s.srv.URL + "/connect/oauth2/authorize?" + q.Encode() + "#wechat_redirect"
}

func (s *testSim) webLoginURL(q url.Values) string {
	return s.srv.URL + "/wwlogin/sso/login?" + q.Encode()
}

func (s *testSim) authorizeQuery(scope string) url.Values {
	return url.Values{
		"appid": {s.cfg.CorpID}, "redirect_uri": {"https://sso.example.com/login/wecom/callback?x=1"},
		"response_type": {"code"}, "scope": {scope}, "state": {"Abc123"}, "agentid": {s.cfg.AgentID},
	}
}

func (s *testSim) webLoginQuery() url.Values {
	return url.Values{
		"login_type": {"CorpApp"}, "appid": {s.cfg.CorpID}, "agentid": {s.cfg.AgentID},
		"redirect_uri": {"https://sso.example.com/login/wecom/callback?x=1"}, "state": {"Abc123"}, "lang": {"zh"},
	}
}

func TestPageValidation(t *testing.T) {
	s := MustSim(t, nil)
	type change func(url.Values)
	set := func(k, v string) change { return func(q url.Values) { q.Set(k, v) } }
	del := func(k string) change { return func(q url.Values) { q.Del(k) } }
	tests := []struct {
		name     string
		inClient bool
		change   change
		wantOK   bool
	}{
		{"in-client ok", true, func(url.Values) {}, true},
		{"in-client empty state ok", true, set("state", ""), true},
		{"in-client base without agentid ok", true, func(q url.Values) { q.Set("scope", "snsapi_base"); q.Del("agentid") }, true},
		{"in-client wrong appid", true, set("appid", "wwother"), false},
		{"in-client missing appid", true, del("appid"), false},
		{"in-client wrong agentid", true, set("agentid", "1000003"), false},
		{"in-client privateinfo without agentid", true, del("agentid"), false},
		{"in-client response_type token", true, set("response_type", "token"), false},
		{"in-client bad scope", true, set("scope", "snsapi_userinfo_x"), false},
		{"in-client missing redirect_uri", true, del("redirect_uri"), false},
		{"in-client relative redirect_uri", true, set("redirect_uri", "/login/wecom/callback"), false},
		{"in-client javascript redirect_uri", true, set("redirect_uri", "javascript:alert(1)"), false},
		{"in-client state too long", true, set("state", strings.Repeat("a", 129)), false},
		{"in-client state not alphanumeric", true, set("state", "abc+/="), false},
		{"web ok", false, func(url.Values) {}, true},
		{"web state of 128", false, set("state", strings.Repeat("Z", 128)), true},
		{"web missing agentid", false, del("agentid"), false},
		{"web wrong agentid", false, set("agentid", "1"), false},
		{"web ServiceApp", false, set("login_type", "ServiceApp"), false},
		{"web missing login_type", false, del("login_type"), false},
		{"web wrong appid", false, set("appid", "wwother"), false},
		{"web bad state", false, set("state", "a-b"), false},
		{"web missing redirect_uri", false, del("redirect_uri"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var u string
			if tt.inClient {
				q := s.authorizeQuery(wecomsim.ScopePrivateInfo)
				tt.change(q)
				u = s.authorizeURL(q)
			} else {
				q := s.webLoginQuery()
				tt.change(q)
				u = s.webLoginURL(q)
			}
			p := s.MustPage(t, u)
			if tt.wantOK {
				if p.status != http.StatusOK || len(p.links(t)) == 0 {
					t.Fatalf("status %d, want 200 with member links:\n%s", p.status, p.body)
				}
				return
			}
			if p.status != http.StatusBadRequest {
				t.Fatalf("status %d, want 400:\n%s", p.status, p.body)
			}
			if len(p.links(t)) != 0 || !strings.Contains(p.body, "参数错误") {
				t.Errorf("error page should explain and offer no login:\n%s", p.body)
			}
		})
	}
}

func TestPagesCompleteLogin(t *testing.T) {
	s := MustSim(t, nil)
	tok := s.MustToken(t)
	tests := []struct {
		name       string
		url        string
		title      string
		wantTicket bool
	}{
		{"in-client privateinfo", s.authorizeURL(s.authorizeQuery(wecomsim.ScopePrivateInfo)), "<title>企业微信</title>", true},
		{"in-client base", s.authorizeURL(s.authorizeQuery(wecomsim.ScopeBase)), "<title>企业微信</title>", false},
		{"web login", s.webLoginURL(s.webLoginQuery()), "<title>企业微信登录</title>", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := s.MustPage(t, tt.url)
			if p.status != http.StatusOK {
				t.Fatalf("status %d", p.status)
			}
			if !strings.Contains(p.body, tt.title) || !strings.Contains(p.body, "模拟") || !strings.Contains(p.body, `charset="utf-8"`) {
				t.Errorf("page lacks title, simulation notice or charset:\n%s", p.body)
			}
			links := p.links(t)
			for _, id := range []string{"zhangsan", "lisi", "wangwu", "zhaoliu", "outsider"} {
				if links[id] == "" {
					t.Errorf("no link for %s", id)
				}
			}

			done := s.MustPage(t, links["zhangsan"])
			if done.status != http.StatusFound {
				t.Fatalf("member link: status %d, want 302", done.status)
			}
			back, err := url.Parse(done.location)
			if err != nil {
				t.Fatal(err)
			}
			if back.Host != "sso.example.com" || back.Path != "/login/wecom/callback" {
				t.Errorf("redirected to %s", done.location)
			}
			bq := back.Query()
			if bq.Get("state") != "Abc123" || bq.Get("x") != "1" || bq.Get("code") == "" {
				t.Errorf("callback query %v: want code, state=Abc123 and the redirect URI's own x=1", bq)
			}
			m := s.MustGet(t, "auth/getuserinfo", url.Values{"access_token": {tok}, "code": {bq.Get("code")}})
			if m["userid"] != "zhangsan" || (m["user_ticket"] != nil) != tt.wantTicket {
				t.Errorf("exchange = %v, want zhangsan with ticket %v", m, tt.wantTicket)
			}

			c := cancelRE.FindStringSubmatch(p.body)
			if c == nil {
				t.Fatalf("no cancel link:\n%s", p.body)
			}
			cu, _ := url.Parse(html.UnescapeString(c[1]))
			if cu.Query().Has("code") || cu.Query().Get("state") != "Abc123" || cu.Host != "sso.example.com" {
				t.Errorf("cancel link %s: want redirect_uri?state=Abc123 without code", cu)
			}
		})
	}
	if s.Calls("connect/oauth2/authorize") == 0 || s.Calls("wwlogin/sso/login") == 0 {
		t.Error("page calls not counted")
	}
}

func TestPageEscapesHTML(t *testing.T) {
	s := MustSim(t, func(c *wecomsim.Config) {
		c.Members = append(c.Members, wecomsim.Member{UserID: "evil", Name: `<script>alert("x")</script>`, Status: 1})
	})
	q := s.webLoginQuery()
	q.Set("redirect_uri", `https://sso.example.com/cb?a="><img src=x onerror=alert(1)>`)
	p := s.MustPage(t, s.webLoginURL(q))
	if p.status != http.StatusOK {
		t.Fatalf("status %d", p.status)
	}
	for _, bad := range []string{`<script>alert`, `"><img`, `<img src=x`} {
		if strings.Contains(p.body, bad) {
			t.Errorf("page contains unescaped %q", bad)
		}
	}
	if !strings.Contains(p.body, "&lt;script&gt;") {
		t.Errorf("member name not shown escaped:\n%s", p.body)
	}
}

func TestAutoLogin(t *testing.T) {
	t.Run("known member", func(t *testing.T) {
		s := MustSim(t, func(c *wecomsim.Config) { c.AutoLogin = "lisi" })
		tok := s.MustToken(t)
		for _, u := range []string{s.authorizeURL(s.authorizeQuery(wecomsim.ScopeBase)), s.webLoginURL(s.webLoginQuery())} {
			p := s.MustPage(t, u)
			if p.status != http.StatusFound {
				t.Fatalf("status %d, want 302", p.status)
			}
			back, _ := url.Parse(p.location)
			m := s.MustGet(t, "auth/getuserinfo", url.Values{"access_token": {tok}, "code": {back.Query().Get("code")}})
			if m["userid"] != "lisi" {
				t.Errorf("auto-login exchanged to %v", m)
			}
		}
	})
	t.Run("still validates", func(t *testing.T) {
		s := MustSim(t, func(c *wecomsim.Config) { c.AutoLogin = "lisi" })
		q := s.webLoginQuery()
		q.Set("state", "bad state")
		if p := s.MustPage(t, s.webLoginURL(q)); p.status != http.StatusBadRequest {
			t.Errorf("status %d, want 400", p.status)
		}
	})
	t.Run("unknown member shows the list", func(t *testing.T) {
		s := MustSim(t, func(c *wecomsim.Config) { c.AutoLogin = "nobody" })
		if p := s.MustPage(t, s.webLoginURL(s.webLoginQuery())); p.status != http.StatusOK || len(p.links(t)) != 5 {
			t.Errorf("status %d, links %d", p.status, len(p.links(t)))
		}
	})
}

func TestConcurrentUse(t *testing.T) {
	s := MustSim(t, nil)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			tok := s.MustToken(t)
			code := s.Code("zhangsan", i%2 == 0, wecomsim.ScopePrivateInfo)
			// Other goroutines invalidate tokens meanwhile: 40014 is a fair answer too.
			if m := s.MustGet(t, "auth/getuserinfo", url.Values{"access_token": {tok}, "code": {code}}); m["userid"] != "zhangsan" && errcode(m) != 40014 {
				t.Errorf("exchange = %v", m)
			}
		})
		wg.Go(func() {
			s.InvalidateTokens(40014)
			s.SetStatus("lisi", 1+i%2)
			s.FailNext("department/get", 60011)
			_ = s.Calls("gettoken")
		})
	}
	wg.Wait()
	if got := s.Calls("auth/getuserinfo"); got != 20 {
		t.Errorf("Calls(auth/getuserinfo) = %d, want 20", got)
	}
}

func TestUnknownPath(t *testing.T) {
	s := MustSim(t, nil)
	if p := s.MustPage(t, s.srv.URL+"/cgi-bin/nope"); p.status != http.StatusNotFound {
		t.Errorf("status %d, want 404", p.status)
	}
}

func TestTagEndpoints(t *testing.T) {
	s := MustSim(t, nil)
	tok := s.MustToken(t)
	m := s.MustGet(t, "tag/list", url.Values{"access_token": {tok}})
	wantErrcode(t, "tag/list", m, 0)
	if got, _ := json.Marshal(m["taglist"]); string(got) != `[{"tagid":1,"tagname":"管理员"},{"tagid":2,"tagname":"值班"}]` {
		t.Errorf("taglist = %s", got)
	}

	m = s.MustGet(t, "tag/get", url.Values{"access_token": {tok}, "tagid": {"1"}})
	wantErrcode(t, "tag/get 1", m, 0)
	if got, _ := json.Marshal(m["userlist"]); m["tagname"] != "管理员" || string(got) != `[{"name":"张三","userid":"zhangsan"}]` {
		t.Errorf("tag 1 = %v (userlist %s)", m, got)
	}
	if got, _ := json.Marshal(m["partylist"]); string(got) != `[]` {
		t.Errorf("tag 1 partylist = %s", got)
	}
	m = s.MustGet(t, "tag/get", url.Values{"access_token": {tok}, "tagid": {"2"}})
	if got, _ := json.Marshal(m["partylist"]); m["tagname"] != "值班" || string(got) != `[4]` {
		t.Errorf("tag 2 = %v (partylist %s)", m, got)
	}
	if got, _ := json.Marshal(m["userlist"]); string(got) != `[]` {
		t.Errorf("tag 2 userlist = %s", got)
	}

	wantErrcode(t, "unknown tag", s.MustGet(t, "tag/get", url.Values{"access_token": {tok}, "tagid": {"99"}}), 40068)
	wantErrcode(t, "bad tagid", s.MustGet(t, "tag/get", url.Values{"access_token": {tok}, "tagid": {"x"}}), 40058)
	wantErrcode(t, "tag/list without a token", s.MustGet(t, "tag/list", nil), 41001)
	wantErrcode(t, "tag/get with a bad token", s.MustGet(t, "tag/get", url.Values{"access_token": {"bogus"}, "tagid": {"1"}}), 40014)

	// Filtered to the visible range, as WeCom does.
	s.SetVisible("zhangsan", false)
	m = s.MustGet(t, "tag/get", url.Values{"access_token": {tok}, "tagid": {"1"}})
	if got, _ := json.Marshal(m["userlist"]); string(got) != `[]` {
		t.Errorf("tag 1 userlist with zhangsan outside the range = %s", got)
	}
	if s.Calls("tag/list") != 2 || s.Calls("tag/get") != 6 {
		t.Errorf("Calls: tag/list %d tag/get %d", s.Calls("tag/list"), s.Calls("tag/get"))
	}
}

func TestFailNextAnyErrcode(t *testing.T) {
	s := MustSim(t, nil)
	tok := s.MustToken(t)
	codes := []int{-1, 45009, 45033, 60020, 50002, 60011, 60021, 48002, 40082, 42009, 85005, 301002, 12345}
	for _, code := range codes {
		s.FailNext("tag/list", code)
	}
	s.FailNext("tag/list", 0) // passes one call through
	s.FailNext("tag/list", -1)
	for _, code := range codes {
		m := s.MustGet(t, "tag/list", url.Values{"access_token": {tok}})
		wantErrcode(t, "FailNext", m, code)
		if msg, _ := m["errmsg"].(string); !strings.Contains(msg, "wecomsim") {
			t.Errorf("errmsg %q", msg)
		}
	}
	if m := s.MustGet(t, "tag/list", url.Values{"access_token": {tok}}); errcode(m) != 0 || m["taglist"] == nil {
		t.Errorf("queued 0: %v, want a normal answer", m)
	}
	wantErrcode(t, "after the 0", s.MustGet(t, "tag/list", url.Values{"access_token": {tok}}), -1)
	wantErrcode(t, "queue empty", s.MustGet(t, "tag/list", url.Values{"access_token": {tok}}), 0)
}

func TestNetworkFaults(t *testing.T) {
	s := MustSim(t, nil)
	tok := s.MustToken(t)
	get := func(client *http.Client, endpoint string) (*http.Response, string, error) {
		resp, err := client.Get(s.srv.URL + "/cgi-bin/" + endpoint + "?access_token=" + tok + "&userid=lisi")
		if err != nil {
			return nil, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b), nil
	}

	t.Run("HTTP status", func(t *testing.T) {
		s.SetHTTPStatus("user/get", http.StatusBadGateway)
		resp, body, err := get(http.DefaultClient, "user/get")
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 502 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") || !strings.Contains(body, "<html>") || !strings.Contains(body, "502 Bad Gateway") {
			t.Errorf("HTTP %d %s:\n%s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
		if resp, _, _ := get(http.DefaultClient, "department/get"); resp.StatusCode != 200 {
			t.Errorf("another endpoint: HTTP %d", resp.StatusCode)
		}
		s.SetHTTPStatus("cgi-bin/user/get", 0)
		wantErrcode(t, "after SetHTTPStatus 0", s.MustGet(t, "user/get", url.Values{"access_token": {tok}, "userid": {"lisi"}}), 0)
	})
	t.Run("HTTP status keeps FailNext", func(t *testing.T) {
		s.FailNext("user/get", 60020)
		s.SetHTTPStatus("user/get", http.StatusServiceUnavailable)
		if resp, _, _ := get(http.DefaultClient, "user/get"); resp.StatusCode != 503 {
			t.Errorf("HTTP %d", resp.StatusCode)
		}
		s.SetHTTPStatus("user/get", http.StatusOK)
		wantErrcode(t, "FailNext after the outage", s.MustGet(t, "user/get", url.Values{"access_token": {tok}, "userid": {"lisi"}}), 60020)
	})
	t.Run("garbage", func(t *testing.T) {
		s.SetGarbage("user/get", true)
		resp, body, err := get(http.DefaultClient, "user/get")
		if err != nil {
			t.Fatal(err)
		}
		var v any
		if resp.StatusCode != 200 || json.Unmarshal([]byte(body), &v) == nil || body == "" {
			t.Errorf("HTTP %d, body %q: want 200 with something that is not JSON", resp.StatusCode, body)
		}
		s.SetGarbage("user/get", false)
		wantErrcode(t, "after SetGarbage false", s.MustGet(t, "user/get", url.Values{"access_token": {tok}, "userid": {"lisi"}}), 0)
	})
	t.Run("latency", func(t *testing.T) {
		s.SetLatency("user/get", time.Hour)
		impatient := &http.Client{Timeout: 50 * time.Millisecond}
		if _, _, err := get(impatient, "user/get"); err == nil {
			t.Error("a request to a slow endpoint finished within the client's timeout")
		}
		if _, _, err := get(impatient, "department/get"); err != nil {
			t.Errorf("another endpoint: %v", err)
		}
		s.SetLatency("user/get", 0)
		if _, _, err := get(impatient, "user/get"); err != nil {
			t.Errorf("after SetLatency 0: %v", err)
		}
	})
	t.Run("pages too", func(t *testing.T) {
		s.SetHTTPStatus("wwlogin/sso/login", http.StatusBadGateway)
		if p := s.MustPage(t, s.webLoginURL(s.webLoginQuery())); p.status != 502 {
			t.Errorf("web-login page: HTTP %d", p.status)
		}
		s.SetHTTPStatus("wwlogin/sso/login", 0)
	})
	if got := s.Calls("user/get"); got != 8 {
		t.Errorf("Calls(user/get) = %d, want 8 (faulty answers count)", got)
	}
}

func TestSetVisible(t *testing.T) {
	s := MustSim(t, nil)
	tok := s.MustToken(t)
	s.SetVisible("LiSi", false)
	s.SetVisible("nobody", false) // ignored

	wantErrcode(t, "user/get", s.MustGet(t, "user/get", url.Values{"access_token": {tok}, "userid": {"lisi"}}), 60011)
	m := s.MustGet(t, "auth/getuserinfo", url.Values{"access_token": {tok}, "code": {s.Code("lisi", true, wecomsim.ScopePrivateInfo)}})
	if m["userid"] != "lisi" || m["user_ticket"] != nil {
		t.Errorf("getuserinfo = %v, want the userid and no user_ticket", m)
	}
	for _, u := range []string{s.webLoginURL(s.webLoginQuery()), s.authorizeURL(s.authorizeQuery(wecomsim.ScopeBase))} {
		p := s.MustPage(t, u)
		if p.links(t)["lisi"] == "" || !strings.Contains(p.body, "outside the app&#39;s visible range") {
			t.Errorf("page does not list lisi with a note:\n%s", p.body)
		}
	}

	s.SetVisible("lisi", true)
	wantErrcode(t, "user/get back in range", s.MustGet(t, "user/get", url.Values{"access_token": {tok}, "userid": {"lisi"}}), 0)

	// A ticket issued in range stops working outside it.
	m = s.MustGet(t, "auth/getuserinfo", url.Values{"access_token": {tok}, "code": {s.Code("zhangsan", true, wecomsim.ScopePrivateInfo)}})
	s.SetVisible("zhangsan", false)
	wantErrcode(t, "getuserdetail outside the range", s.MustAPI(t, http.MethodPost, "auth/getuserdetail", url.Values{"access_token": {tok}}, map[string]any{"user_ticket": m["user_ticket"]}), 60011)
}

var quickRE = regexp.MustCompile(`data-quick-login="([^"]*)" href="([^"]*)"`)

func TestQuickLogin(t *testing.T) {
	t.Run("first active member", func(t *testing.T) {
		s := MustSim(t, func(c *wecomsim.Config) {
			c.Members[0].Status = wecomsim.StatusDisabled // zhangsan: lisi is the first active member
		})
		tok := s.MustToken(t)
		p := s.MustPage(t, s.webLoginURL(s.webLoginQuery()))
		if !strings.Contains(p.body, "检测到企业微信桌面端 · WeCom desktop app detected") {
			t.Errorf("no quick-login panel:\n%s", p.body)
		}
		m := quickRE.FindStringSubmatch(p.body)
		if m == nil || m[1] != "lisi" || !strings.Contains(p.body, "李四") {
			t.Fatalf("quick-login link %v, want lisi", m)
		}
		ref, _ := url.Parse(html.UnescapeString(m[2]))
		done := s.MustPage(t, p.url.ResolveReference(ref).String())
		if done.status != http.StatusFound {
			t.Fatalf("quick login: HTTP %d", done.status)
		}
		back, _ := url.Parse(done.location)
		if back.Query().Get("state") != "Abc123" {
			t.Errorf("callback %s", done.location)
		}
		if m := s.MustGet(t, "auth/getuserinfo", url.Values{"access_token": {tok}, "code": {back.Query().Get("code")}}); m["userid"] != "lisi" || m["user_ticket"] != nil {
			t.Errorf("quick login exchanged to %v", m)
		}
		if len(p.links(t)) != 5 {
			t.Errorf("the quick-login link counts as a member link: %d links", len(p.links(t)))
		}
	})
	t.Run("not inside the client", func(t *testing.T) {
		s := MustSim(t, nil)
		if p := s.MustPage(t, s.authorizeURL(s.authorizeQuery(wecomsim.ScopeBase))); strings.Contains(p.body, "data-quick-login") {
			t.Errorf("in-client page shows the desktop panel:\n%s", p.body)
		}
	})
	t.Run("nobody active", func(t *testing.T) {
		s := MustSim(t, func(c *wecomsim.Config) { c.Members = c.Members[3:] }) // zhaoliu (disabled), outsider
		if p := s.MustPage(t, s.webLoginURL(s.webLoginQuery())); p.status != 200 || strings.Contains(p.body, "data-quick-login") {
			t.Errorf("HTTP %d, panel shown without an active member:\n%s", p.status, p.body)
		}
	})
	t.Run("escaped", func(t *testing.T) {
		s := MustSim(t, func(c *wecomsim.Config) {
			c.Members = append([]wecomsim.Member{{UserID: `x"><b>`, Name: `<script>alert("q")</script>`, Status: 1}}, c.Members...)
		})
		p := s.MustPage(t, s.webLoginURL(s.webLoginQuery()))
		if strings.Contains(p.body, `<script>alert`) || strings.Contains(p.body, `"><b>`) {
			t.Errorf("page contains unescaped member data:\n%s", p.body)
		}
		if m := quickRE.FindStringSubmatch(p.body); m == nil || html.UnescapeString(m[1]) != `x"><b>` {
			t.Errorf("quick-login link %v", m)
		}
	})
}

// The in-client authorization opens only in the WeCom app: a camera app or a computer's browser
// gets WeCom's notice and no member to choose.
func TestInClientPageNeedsTheApp(t *testing.T) {
	s := MustSim(t, nil)
	u := s.authorizeURL(s.authorizeQuery(wecomsim.ScopePrivateInfo))
	for _, ua := range []string{"", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) Safari/604.1", "Mozilla/5.0 (X11; Linux x86_64) Chrome/130.0"} {
		p := s.mustPageAs(t, u, ua)
		if p.status != http.StatusOK || !strings.Contains(p.body, "请在企业微信客户端打开链接") || len(p.links(t)) != 0 {
			t.Errorf("UA %q: status %d, want WeCom's open-in-the-app notice and no member:\n%s", ua, p.status, p.body)
		}
	}
	if p := s.MustPage(t, u); len(p.links(t)) == 0 {
		t.Errorf("the simulated phone sees no member:\n%s", p.body)
	}
}
