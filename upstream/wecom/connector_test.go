package wecom_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wecom-oidc/wecom-oidc/upstream"
	"github.com/wecom-oidc/wecom-oidc/upstream/wecom"
	"github.com/wecom-oidc/wecom-oidc/upstream/wecom/wecomsim"
)

func TestNewValidatesConfig(t *testing.T) {
	e := MustEnv(t, nil, nil)
	tests := []struct {
		name    string
		change  func(*wecom.Config)
		wantErr string
	}{
		{"ok", func(*wecom.Config) {}, ""},
		{"default scope and base URLs", func(c *wecom.Config) { c.Scope, c.APIBaseURL, c.OAuthBaseURL, c.LoginBaseURL = "", "", "", "" }, ""},
		{"no corp id", func(c *wecom.Config) { c.CorpID = "" }, "corp id"},
		{"no agent id", func(c *wecom.Config) { c.AgentID = "" }, "agent id"},
		{"agent id not digits", func(c *wecom.Config) { c.AgentID = "abc" }, "digits"},
		{"no secret", func(c *wecom.Config) { c.Secret = "" }, "secret"},
		{"bad scope", func(c *wecom.Config) { c.Scope = "snsapi_userinfo" }, "scope"},
		{"relative API URL", func(c *wecom.Config) { c.APIBaseURL = "qyapi.weixin.qq.com" }, "api base URL"},
		{"no redirect URL", func(c *wecom.Config) { c.RedirectURL = "" }, "redirect URL"},
		{"relative redirect URL", func(c *wecom.Config) { c.RedirectURL = "/login/wecom/callback" }, "redirect URL"},
		{"redirect URL with fragment", func(c *wecom.Config) { c.RedirectURL = redirectURL + "#x" }, "fragment"},
		{"no token store", func(c *wecom.Config) { c.Tokens = nil }, "token store"},
		{"negative timeout", func(c *wecom.Config) { c.Timeout = -time.Second }, "timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := e.Config(wecom.ScopeBase)
			tt.change(&cfg)
			_, err := wecom.New(cfg)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("New error %v, want one mentioning %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), e.seed.Secret) {
				t.Error("error reveals the secret")
			}
		})
	}
	t.Run("reports every problem", func(t *testing.T) {
		_, err := wecom.New(wecom.Config{})
		for _, want := range []string{"corp id", "agent id", "secret", "redirect URL", "token store"} {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("error %v does not mention %q", err, want)
			}
		}
	})
}

func TestLoginURL(t *testing.T) {
	e := MustEnv(t, nil, nil)
	c := e.MustConnector(t, nil)
	state := "AbcXYZ0123456789AbcXYZ0123456789"

	t.Run("in-client door", func(t *testing.T) {
		for _, ua := range []string{uaClient, "Mozilla/5.0 WXWork/4.0 (Windows)", "wxWork"} {
			raw, err := c.LoginURL(state, upstream.LoginHints{UserAgent: ua, Lang: "en"})
			if err != nil {
				t.Fatal(err)
			}
			u, err := url.Parse(raw)
			if err != nil {
				t.Fatal(err)
			}
			if got := u.Scheme + "://" + u.Host + u.Path; got != e.srv.URL+"/connect/oauth2/authorize" {
				t.Errorf("endpoint %s", got)
			}
			if u.Fragment != "wechat_redirect" || !strings.HasSuffix(raw, "#wechat_redirect") {
				t.Errorf("fragment %q, want wechat_redirect", u.Fragment)
			}
			want := url.Values{
				"appid": {e.seed.CorpID}, "redirect_uri": {redirectURL}, "response_type": {"code"},
				"scope": {"snsapi_privateinfo"}, "state": {state}, "agentid": {e.seed.AgentID},
			}
			if got := u.Query(); !reflect.DeepEqual(got, want) {
				t.Errorf("query %v\nwant  %v", got, want)
			}
			if !strings.HasPrefix(u.RawQuery, "appid=") || !strings.Contains(u.RawQuery, "redirect_uri=https%3A%2F%2Fsso.example.com%2Flogin%2Fwecom%2Fcallback") {
				t.Errorf("raw query %s: want WeCom's parameter order and an encoded redirect_uri", u.RawQuery)
			}
			assertSimAccepts(t, raw)
		}
	})

	t.Run("web door", func(t *testing.T) {
		tests := []struct{ lang, want string }{{"", "zh"}, {"zh", "zh"}, {"zh-CN", "zh"}, {"en", "en"}, {"en-US", "en"}, {"fr", "zh"}}
		for _, ua := range []string{uaBrowser, "", "Mozilla/5.0 MicroMessenger/8.0"} {
			for _, tt := range tests {
				raw, err := c.LoginURL(state, upstream.LoginHints{UserAgent: ua, Lang: tt.lang})
				if err != nil {
					t.Fatal(err)
				}
				u, _ := url.Parse(raw)
				if got := u.Scheme + "://" + u.Host + u.Path; got != e.srv.URL+"/wwlogin/sso/login" {
					t.Errorf("endpoint %s", got)
				}
				if u.Fragment != "" {
					t.Errorf("fragment %q, want none", u.Fragment)
				}
				want := url.Values{
					"login_type": {"CorpApp"}, "appid": {e.seed.CorpID}, "agentid": {e.seed.AgentID},
					"redirect_uri": {redirectURL}, "state": {state}, "lang": {tt.want},
				}
				if got := u.Query(); !reflect.DeepEqual(got, want) {
					t.Errorf("lang %q: query %v\nwant  %v", tt.lang, got, want)
				}
				if !strings.HasPrefix(u.RawQuery, "login_type=CorpApp&appid=") {
					t.Errorf("raw query %s: want WeCom's parameter order", u.RawQuery)
				}
			}
		}
		raw, _ := c.LoginURL(state, upstream.LoginHints{UserAgent: uaBrowser})
		assertSimAccepts(t, raw)
	})

	t.Run("state rejected", func(t *testing.T) {
		for _, bad := range []string{"", strings.Repeat("a", 129), "abc-def", "abc=", "a/b", "a b", "状态", "abc\n"} {
			if _, err := c.LoginURL(bad, upstream.LoginHints{UserAgent: uaClient}); err == nil {
				t.Errorf("state %q accepted", bad)
			}
		}
		if _, err := c.LoginURL(strings.Repeat("a", 128), upstream.LoginHints{}); err != nil {
			t.Errorf("128-byte state rejected: %v", err)
		}
	})
}

// assertSimAccepts checks the simulator's page (which validates like WeCom) accepts loginURL.
func assertSimAccepts(t testing.TB, loginURL string) {
	t.Helper()
	resp, err := http.Get(loginURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("simulated WeCom rejected %s: HTTP %d", loginURL, resp.StatusCode)
	}
}

func TestCallbackInClientPrivateInfo(t *testing.T) {
	e := MustEnv(t, nil, nil)
	c := e.MustConnector(t, nil)
	loginURL, err := c.LoginURL("State1", upstream.LoginHints{UserAgent: uaClient})
	if err != nil {
		t.Fatal(err)
	}
	r := e.MustClickThrough(t, loginURL, "zhangsan", uaClient)
	if got := r.URL.Query().Get("state"); got != "State1" {
		t.Fatalf("state came back as %q", got)
	}
	id, err := c.HandleCallback(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	want := upstream.Identity{
		CorpID: e.seed.CorpID, UserID: "zhangsan", Name: "张三", Alias: "San Zhang",
		Email: "zhangsan@corp.example", PersonalEmail: "zhangsan@example.com", Mobile: "+86 13800000001",
		Gender: "male", Avatar: "https://avatar.example.com/zhangsan.png", Address: "北京市海淀区中关村大街1号",
		Position:       "工程师",
		Departments:    []upstream.Department{{ID: 2, Name: "研发中心", Path: []string{"研发中心"}}, {ID: 3, Name: "平台组", Path: []string{"研发中心", "平台组"}}},
		MainDepartment: 3, Status: 1, Extra: map[string]string{"工号": "E1001"}, Method: wecom.MethodClient,
	}
	if !reflect.DeepEqual(id, want) {
		t.Errorf("identity\n got %+v\nwant %+v", id, want)
	}
	if got := e.sim.Calls("auth/getuserdetail"); got != 1 {
		t.Errorf("getuserdetail calls = %d, want 1", got)
	}
}

func TestCallbackWithoutTicket(t *testing.T) {
	tests := []struct {
		name       string
		legacy     bool
		scope      string
		ua         string
		wantMethod string
		wantEmail  string
		wantMobile string
		wantGender string
	}{
		{"web login, new app", false, wecom.ScopePrivateInfo, uaBrowser, wecom.MethodWeb, "", "", ""},
		{"in-client snsapi_base, new app", false, wecom.ScopeBase, uaClient, wecom.MethodClient, "", "", ""},
		{"web login, legacy app", true, wecom.ScopePrivateInfo, uaBrowser, wecom.MethodWeb, "zhangsan@corp.example", "+86 13800000001", "male"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := MustEnv(t, func(c *wecomsim.Config) { c.LegacyContactFields = tt.legacy }, nil)
			c := e.MustConnector(t, func(c *wecom.Config) { c.Scope = tt.scope })
			loginURL, err := c.LoginURL("S", upstream.LoginHints{UserAgent: tt.ua})
			if err != nil {
				t.Fatal(err)
			}
			id, err := c.HandleCallback(context.Background(), e.MustClickThrough(t, loginURL, "zhangsan", tt.ua))
			if err != nil {
				t.Fatal(err)
			}
			if id.UserID != "zhangsan" || id.Name != "张三" || id.Method != tt.wantMethod || len(id.Departments) != 2 {
				t.Errorf("identity %+v", id)
			}
			if id.Email != tt.wantEmail || id.Mobile != tt.wantMobile || id.Gender != tt.wantGender {
				t.Errorf("email %q mobile %q gender %q, want %q %q %q", id.Email, id.Mobile, id.Gender, tt.wantEmail, tt.wantMobile, tt.wantGender)
			}
			if got := e.sim.Calls("auth/getuserdetail"); got != 0 {
				t.Errorf("getuserdetail called %d times without a ticket", got)
			}
		})
	}
}

func TestMemberWithoutEmail(t *testing.T) {
	e := MustEnv(t, nil, nil)
	c := e.MustConnector(t, nil)
	id := MustLogin(t, c, e.sim.Code("wangwu", true, wecomsim.ScopePrivateInfo), uaClient)
	if id.UserID != "wangwu" || id.Email != "" || id.PersonalEmail != "" || id.Name != "王五" {
		t.Errorf("identity %+v", id)
	}
}

func TestAuthCodeParameter(t *testing.T) {
	e := MustEnv(t, nil, nil)
	c := e.MustConnector(t, nil)
	r := callback(url.Values{"auth_code": {e.sim.Code("lisi", false, "")}, "state": {"S"}}, uaBrowser)
	id, err := c.HandleCallback(context.Background(), r)
	if err != nil || id.UserID != "lisi" || id.Gender != "" {
		t.Fatalf("HandleCallback = %+v, %v", id, err)
	}
}

func TestOneGettokenForManyLogins(t *testing.T) {
	t.Run("50 sequential", func(t *testing.T) {
		e := MustEnv(t, nil, nil)
		c := e.MustConnector(t, nil)
		for range 50 {
			MustLogin(t, c, e.sim.Code("zhangsan", true, wecomsim.ScopePrivateInfo), uaClient)
		}
		if got := e.sim.Calls("gettoken"); got != 1 {
			t.Errorf("gettoken calls = %d, want 1", got)
		}
	})
	t.Run("50 concurrent", func(t *testing.T) {
		e := MustEnv(t, nil, nil)
		c := e.MustConnector(t, nil)
		codes := make([]string, 50)
		for i := range codes {
			codes[i] = e.sim.Code("zhangsan", i%2 == 0, wecomsim.ScopePrivateInfo)
		}
		var wg sync.WaitGroup
		for _, code := range codes {
			wg.Go(func() {
				id, err := c.HandleCallback(context.Background(), codeCallback(code, uaClient))
				if err != nil || id.UserID != "zhangsan" || len(id.Departments) != 2 || id.Departments[1].Name != "平台组" {
					t.Errorf("HandleCallback = %+v, %v", id, err)
				}
			})
		}
		wg.Wait()
		if got := e.sim.Calls("gettoken"); got != 1 {
			t.Errorf("gettoken calls = %d, want 1", got)
		}
		if got := e.sim.Calls("department/get"); got != 3 {
			t.Errorf("department/get calls = %d, want 3 (one per department and the root, concurrent misses coalesced)", got)
		}
		if got := e.sim.Calls("auth/getuserinfo"); got != 50 {
			t.Errorf("getuserinfo calls = %d, want 50", got)
		}
	})
}

func TestTokenSharedThroughStore(t *testing.T) {
	e := MustEnv(t, nil, nil)
	a := e.MustConnector(t, nil)
	MustLogin(t, a, e.sim.Code("zhangsan", false, ""), uaBrowser)
	if e.store.token(e.tokenKey()) == "" {
		t.Fatalf("token not saved under %q", e.tokenKey())
	}
	b := e.MustConnector(t, nil) // another process, same store
	MustLogin(t, b, e.sim.Code("lisi", false, ""), uaBrowser)
	if got := e.sim.Calls("gettoken"); got != 1 {
		t.Errorf("gettoken calls = %d, want 1: the second connector should reuse the stored token", got)
	}
}

func TestTokenRefreshedAheadOfExpiry(t *testing.T) {
	e := MustEnv(t, nil, nil)
	c := e.MustConnector(t, nil)
	MustLogin(t, c, e.sim.Code("zhangsan", false, ""), uaBrowser)
	first := e.store.token(e.tokenKey())

	// 7200 s token, 5 min margin: still used at 6899 s...
	e.clock.Advance(7200*time.Second - 5*time.Minute - time.Second)
	MustLogin(t, c, e.sim.Code("zhangsan", false, ""), uaBrowser)
	if got := e.sim.Calls("gettoken"); got != 1 {
		t.Fatalf("gettoken calls = %d before the margin, want 1", got)
	}
	// ...and replaced from 6900 s on, while WeCom would still accept it.
	e.clock.Advance(2 * time.Second)
	MustLogin(t, c, e.sim.Code("zhangsan", false, ""), uaBrowser)
	if got := e.sim.Calls("gettoken"); got != 2 {
		t.Errorf("gettoken calls = %d inside the margin, want 2", got)
	}
	if second := e.store.token(e.tokenKey()); second == first || second == "" {
		t.Error("the refreshed token was not saved to the store")
	}
	if got := e.sim.Calls("user/get"); got != 3 {
		t.Errorf("user/get calls = %d, want 3 (no call failed)", got)
	}
}

func TestTokenRejectedIsRefreshedAndRetriedOnce(t *testing.T) {
	for _, errcode := range []int{40014, 42001} {
		t.Run(fmt.Sprint(errcode), func(t *testing.T) {
			t.Run("retry succeeds", func(t *testing.T) {
				e := MustEnv(t, nil, nil)
				c := e.MustConnector(t, nil)
				MustLogin(t, c, e.sim.Code("zhangsan", false, ""), uaBrowser)
				old := e.store.token(e.tokenKey())

				e.sim.InvalidateTokens(errcode) // WeCom drops the token early
				id := MustLogin(t, c, e.sim.Code("lisi", false, ""), uaBrowser)
				if id.UserID != "lisi" {
					t.Errorf("logged in %q", id.UserID)
				}
				if got := e.sim.Calls("gettoken"); got != 2 {
					t.Errorf("gettoken calls = %d, want 2", got)
				}
				if got := e.sim.Calls("auth/getuserinfo"); got != 3 {
					t.Errorf("getuserinfo calls = %d, want 3 (1 + the rejected one + its retry)", got)
				}
				if now := e.store.token(e.tokenKey()); now == old || now == "" {
					t.Error("the store still holds the rejected token")
				}
			})
			t.Run("second rejection is not retried", func(t *testing.T) {
				e := MustEnv(t, nil, nil)
				c := e.MustConnector(t, nil)
				e.sim.FailNext("auth/getuserinfo", errcode)
				e.sim.FailNext("auth/getuserinfo", errcode)
				e.sim.FailNext("auth/getuserinfo", errcode) // would be consumed by a third try
				_, err := c.HandleCallback(context.Background(), codeCallback(e.sim.Code("lisi", false, ""), uaBrowser))
				var apiErr *wecom.APIError
				if !errors.As(err, &apiErr) || apiErr.Code != errcode || upstream.IsDenied(err) || !errors.Is(err, upstream.ErrUnavailable) {
					t.Fatalf("HandleCallback error %v, want APIError %d in ErrUnavailable, not denied", err, errcode)
				}
				if got := e.sim.Calls("auth/getuserinfo"); got != 2 {
					t.Errorf("getuserinfo calls = %d, want 2 (one retry only)", got)
				}
				if got := e.sim.Calls("gettoken"); got != 2 {
					t.Errorf("gettoken calls = %d, want 2", got)
				}
			})
		})
	}
}

func TestTokenRejectedSharedStore(t *testing.T) {
	e := MustEnv(t, nil, nil)
	a, b := e.MustConnector(t, nil), e.MustConnector(t, nil)
	MustLogin(t, a, e.sim.Code("zhangsan", false, ""), uaBrowser)
	MustLogin(t, b, e.sim.Code("zhangsan", false, ""), uaBrowser)
	e.sim.InvalidateTokens(40014)
	MustLogin(t, a, e.sim.Code("zhangsan", false, ""), uaBrowser) // a refreshes and saves
	MustLogin(t, b, e.sim.Code("zhangsan", false, ""), uaBrowser) // b finds a's token in the store
	if got := e.sim.Calls("gettoken"); got != 2 {
		t.Errorf("gettoken calls = %d, want 2", got)
	}
	if e.store.forgets != 1 {
		t.Errorf("store forgets = %d, want 1 (b must not forget a's fresh token)", e.store.forgets)
	}
}

func TestConfigErrorsAreNotRetried(t *testing.T) {
	tests := []struct {
		name     string
		change   func(*wecom.Config)
		failNext string // endpoint answering errcode instead
		errcode  int
		endpoint string
		hint     string
	}{
		{"wrong secret", func(c *wecom.Config) { c.Secret = "wrong-secret-value" }, "", 40001, "gettoken", "secret"},
		{"wrong corp id", func(c *wecom.Config) { c.CorpID = "wwwrongcorp" }, "", 40013, "gettoken", "corp id"},
		{"untrusted IP", nil, "gettoken", 60020, "gettoken", "trusted IPs"},
		{"API forbidden", nil, "gettoken", 48002, "gettoken", "forbids"},
		{"untrusted domain at exchange", nil, "auth/getuserinfo", 50001, "auth/getuserinfo", "trusted domain"},
		{"untrusted IP at user/get", nil, "user/get", 60020, "user/get", "trusted IPs"},
		{"app disabled", nil, "user/get", 50003, "user/get", "disabled"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := MustEnv(t, nil, nil)
			c := e.MustConnector(t, tt.change)
			if tt.failNext != "" {
				e.sim.FailNext(tt.failNext, tt.errcode)
			}
			code := e.sim.Code("zhangsan", false, "")
			_, err := c.HandleCallback(context.Background(), codeCallback(code, uaBrowser))
			if err == nil || upstream.IsDenied(err) {
				t.Fatalf("error %v, want a non-denied configuration error", err)
			}
			if !errors.Is(err, upstream.ErrMisconfigured) || errors.Is(err, upstream.ErrUnavailable) {
				t.Errorf("error %v: want ErrMisconfigured only", err)
			}
			if wecom.ErrCode(err) != tt.errcode || !wecom.IsConfigFault(err) {
				t.Errorf("ErrCode = %d, IsConfigFault = %v; want %d, true (%v)", wecom.ErrCode(err), wecom.IsConfigFault(err), tt.errcode, err)
			}
			if got := e.sim.Calls(tt.endpoint); got != 1 {
				t.Errorf("%s calls = %d, want 1 (never retried)", tt.endpoint, got)
			}
			logs := e.logs.String()
			if !strings.Contains(logs, "level=ERROR") || !strings.Contains(logs, "CONFIGURATION PROBLEM") || !strings.Contains(logs, tt.hint) {
				t.Errorf("no loud operator message mentioning %q in logs:\n%s", tt.hint, logs)
			}
			for _, secret := range []string{e.seed.Secret, "wrong-secret-value", code} {
				if strings.Contains(logs, secret) || strings.Contains(err.Error(), secret) {
					t.Errorf("secret or code %q leaked into logs or error", secret)
				}
			}
		})
	}
}

func TestBothKeyCasings(t *testing.T) {
	// A WeCom that answers the code exchange with the old CamelCase keys (UserId, OpenId).
	oldKeys := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/cgi-bin/auth/getuserinfo" {
				r.URL.Path = "/cgi-bin/user/getuserinfo"
			}
			h.ServeHTTP(w, r)
		})
	}
	for _, tt := range []struct {
		name         string
		wrap         func(http.Handler) http.Handler
		wantEndpoint string
	}{{"lower case", nil, "auth/getuserinfo"}, {"CamelCase", oldKeys, "user/getuserinfo"}} {
		t.Run(tt.name, func(t *testing.T) {
			e := MustEnv(t, nil, tt.wrap)
			c := e.MustConnector(t, nil)
			id := MustLogin(t, c, e.sim.Code("zhangsan", true, wecomsim.ScopePrivateInfo), uaClient)
			if id.UserID != "zhangsan" || id.Mobile == "" {
				t.Errorf("identity %+v", id)
			}
			_, err := c.HandleCallback(context.Background(), codeCallback(e.sim.Code("outsider", true, wecomsim.ScopeBase), uaClient))
			if !upstream.IsDenied(err) {
				t.Errorf("non-member: %v, want denied", err)
			}
		})
	}
	if got := func() int {
		e := MustEnv(t, nil, oldKeys)
		c := e.MustConnector(t, nil)
		MustLogin(t, c, e.sim.Code("lisi", false, ""), uaBrowser)
		return e.sim.Calls("user/getuserinfo")
	}(); got != 1 {
		t.Errorf("the rewrite did not reach the old endpoint (%d calls)", got)
	}
}

func TestDenied(t *testing.T) {
	type test struct {
		name       string
		setup      func(e *env) *http.Request
		wantKind   string
		wantReason string
		wantCode   int // errcode wrapped in the DeniedError, if any
	}
	tests := []test{
		{"no code", func(e *env) *http.Request { return callback(url.Values{"state": {"S"}}, uaBrowser) }, upstream.DeniedDeclined, "declined", 0},
		{"non-member", func(e *env) *http.Request {
			return codeCallback(e.sim.Code("outsider", false, ""), uaBrowser)
		}, upstream.DeniedNotMember, "not a member", 0},
		{"disabled", func(e *env) *http.Request { return codeCallback(e.sim.Code("zhaoliu", false, ""), uaBrowser) }, upstream.DeniedInactive, "disabled", 0},
		{"not activated", func(e *env) *http.Request {
			e.sim.SetStatus("wangwu", 4)
			return codeCallback(e.sim.Code("wangwu", false, ""), uaBrowser)
		}, upstream.DeniedInactive, "not activated", 0},
		{"left", func(e *env) *http.Request {
			e.sim.SetStatus("lisi", 5)
			return codeCallback(e.sim.Code("lisi", true, wecomsim.ScopePrivateInfo), uaClient)
		}, upstream.DeniedInactive, "left", 0},
		{"outside the visible range", func(e *env) *http.Request {
			e.sim.SetVisible("lisi", false)
			return codeCallback(e.sim.Code("lisi", true, wecomsim.ScopePrivateInfo), uaClient)
		}, upstream.DeniedNotVisible, "visible range", 60011},
		{"unknown code", func(e *env) *http.Request { return codeCallback("not-a-code", uaBrowser) }, upstream.DeniedCodeInvalid, "used or has expired", 40029},
		{"expired code", func(e *env) *http.Request {
			code := e.sim.Code("zhangsan", false, "")
			e.clock.Advance(6 * time.Minute)
			return codeCallback(code, uaBrowser)
		}, upstream.DeniedCodeInvalid, "used or has expired", 40029},
	}
	for _, code := range []int{60111, 60011, 60021, 50002} {
		tests = append(tests, test{fmt.Sprintf("user/get %d", code), func(e *env) *http.Request {
			e.sim.FailNext("user/get", code)
			return codeCallback(e.sim.Code("zhangsan", false, ""), uaBrowser)
		}, upstream.DeniedNotVisible, "visible range", code})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := MustEnv(t, nil, nil)
			c := e.MustConnector(t, nil)
			id, err := c.HandleCallback(context.Background(), tt.setup(e))
			var denied *upstream.DeniedError
			if !errors.As(err, &denied) {
				t.Fatalf("HandleCallback = %+v, %v; want a DeniedError", id, err)
			}
			if denied.Kind != tt.wantKind {
				t.Errorf("kind %q, want %q", denied.Kind, tt.wantKind)
			}
			if errors.Is(err, upstream.ErrUnavailable) || errors.Is(err, upstream.ErrMisconfigured) {
				t.Errorf("denial %v also claims an error class", err)
			}
			if !strings.Contains(denied.Reason, tt.wantReason) {
				t.Errorf("reason %q, want it to mention %q", denied.Reason, tt.wantReason)
			}
			if got := wecom.ErrCode(err); got != tt.wantCode {
				t.Errorf("wrapped errcode %d, want %d", got, tt.wantCode)
			}
			if got := e.sim.Calls("auth/getuserinfo"); got > 1 {
				t.Errorf("getuserinfo calls = %d, want at most 1", got)
			}
		})
	}
}

func TestReusedCodeIsDeniedAndNeverRetried(t *testing.T) {
	e := MustEnv(t, nil, nil)
	c := e.MustConnector(t, nil)
	code := e.sim.Code("zhangsan", true, wecomsim.ScopePrivateInfo)
	MustLogin(t, c, code, uaClient)
	_, err := c.HandleCallback(context.Background(), codeCallback(code, uaClient))
	if !upstream.IsDenied(err) || wecom.ErrCode(err) != wecom.CodeInvalidCode {
		t.Fatalf("second use: %v, want denied with 40029", err)
	}
	if got := e.sim.Calls("auth/getuserinfo"); got != 2 {
		t.Errorf("getuserinfo calls = %d, want 2 (one per attempt)", got)
	}
	if got := e.sim.Calls("gettoken"); got != 1 {
		t.Errorf("gettoken calls = %d, want 1 (40029 is not a token problem)", got)
	}
}

func TestUpstreamFaults(t *testing.T) {
	broken := func(endpoint, mode string, release <-chan struct{}) func(http.Handler) http.Handler {
		return func(h http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/cgi-bin/"+endpoint {
					h.ServeHTTP(w, r)
					return
				}
				switch mode {
				case "500":
					http.Error(w, `{"errcode":-1}`, http.StatusInternalServerError)
				case "garbage":
					w.Header().Set("Content-Type", "text/html")
					fmt.Fprint(w, "<html>502 Bad Gateway</html>")
				case "huge":
					w.Header().Set("Content-Type", "application/json")
					fmt.Fprint(w, `{"errcode":0,"name":"`+strings.Repeat("x", 2<<20)+`"}`)
				case "hang":
					select {
					case <-r.Context().Done():
					case <-release:
					}
				}
			})
		}
	}
	tests := []struct {
		endpoint, mode, want string
	}{
		{"gettoken", "500", "HTTP status 500"},
		{"auth/getuserinfo", "500", "HTTP status 500"},
		{"user/get", "garbage", "not WeCom JSON"},
		{"gettoken", "garbage", "not WeCom JSON"},
		{"user/get", "huge", "larger than"},
		{"gettoken", "hang", "no answer within"},
		{"auth/getuserinfo", "hang", "no answer within"},
		{"user/get", "hang", "no answer within"},
	}
	for _, tt := range tests {
		t.Run(tt.endpoint+" "+tt.mode, func(t *testing.T) {
			release := make(chan struct{})
			e := MustEnv(t, nil, broken(tt.endpoint, tt.mode, release))
			t.Cleanup(func() { close(release) }) // runs before the server's Close, which waits for handlers
			c := e.MustConnector(t, func(c *wecom.Config) { c.Timeout = 200 * time.Millisecond })
			code := e.sim.Code("zhangsan", false, "")
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			start := time.Now()
			_, err := c.HandleCallback(ctx, codeCallback(code, uaBrowser))
			elapsed := time.Since(start)
			if err == nil || upstream.IsDenied(err) {
				t.Fatalf("error %v, want a non-denied fault", err)
			}
			var apiErr *wecom.APIError
			if errors.As(err, &apiErr) {
				t.Errorf("error %v is an APIError; want a transport/format error", err)
			}
			if !errors.Is(err, upstream.ErrUnavailable) || errors.Is(err, upstream.ErrMisconfigured) {
				t.Errorf("error %v: want ErrUnavailable only", err)
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.endpoint) || !strings.Contains(msg, tt.want) {
				t.Errorf("error %q, want it to name %s and say %q", msg, tt.endpoint, tt.want)
			}
			if tt.mode == "hang" && !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("error %v does not wrap context.DeadlineExceeded", err)
			}
			if elapsed > 5*time.Second {
				t.Errorf("took %s; the per-call timeout should bound it", elapsed)
			}
			for _, secret := range []string{e.seed.Secret, code} {
				if strings.Contains(msg, secret) || strings.Contains(e.logs.String(), secret) {
					t.Errorf("error or logs leak %q: %s", secret, msg)
				}
			}
		})
	}
}

func TestDepartmentNames(t *testing.T) {
	t.Run("cached", func(t *testing.T) {
		e := MustEnv(t, nil, nil)
		c := e.MustConnector(t, nil)
		MustLogin(t, c, e.sim.Code("zhangsan", false, ""), uaBrowser)
		if got := e.sim.Calls("department/get"); got != 3 {
			t.Fatalf("department/get calls = %d, want 3 (2, 3 and the root 1)", got)
		}
		id := MustLogin(t, c, e.sim.Code("zhangsan", false, ""), uaBrowser)
		if got := e.sim.Calls("department/get"); got != 3 {
			t.Errorf("department/get calls = %d after a second login, want still 3", got)
		}
		if id.Departments[0].Name != "研发中心" {
			t.Errorf("departments %+v", id.Departments)
		}
		e.clock.Advance(wecom.DefaultDepartmentTTL)
		MustLogin(t, c, e.sim.Code("zhangsan", false, ""), uaBrowser)
		if got := e.sim.Calls("department/get"); got != 6 {
			t.Errorf("department/get calls = %d after the TTL, want 6", got)
		}
	})
	t.Run("unavailable name does not fail the login", func(t *testing.T) {
		e := MustEnv(t, func(c *wecomsim.Config) {
			c.Members[0].Departments = []int64{2, 99} // 99 does not exist: 60123
		}, nil)
		c := e.MustConnector(t, nil)
		e.sim.FailNext("department/get", 60011) // department 2 is withheld from the app
		id := MustLogin(t, c, e.sim.Code("zhangsan", false, ""), uaBrowser)
		want := []upstream.Department{{ID: 2}, {ID: 99}}
		if !reflect.DeepEqual(id.Departments, want) {
			t.Errorf("departments %+v, want %+v", id.Departments, want)
		}
		if e.countLines("WARN", "withheld") != 1 || e.countLines("WARN", "department name unavailable") != 1 {
			t.Errorf("want one warning for each department:\n%s", e.logs)
		}
		if got := e.sim.Calls("department/get"); got != 2 {
			t.Errorf("department/get calls = %d, want 2", got)
		}
		// The withheld answer is cached; the failure is not: the next login asks for 99 again.
		MustLogin(t, c, e.sim.Code("zhangsan", false, ""), uaBrowser)
		if got := e.sim.Calls("department/get"); got != 3 {
			t.Errorf("department/get calls = %d after a second login, want 3 (99 again, not 2)", got)
		}
		e.clock.Advance(wecom.DefaultDepartmentTTL)
		id = MustLogin(t, c, e.sim.Code("zhangsan", false, ""), uaBrowser)
		if id.Departments[0].Name != "研发中心" || !reflect.DeepEqual(id.Departments[0].Path, []string{"研发中心"}) {
			t.Errorf("departments %+v after the TTL", id.Departments)
		}
	})
}

func TestGetUserDetailFailureContinues(t *testing.T) {
	e := MustEnv(t, nil, nil)
	c := e.MustConnector(t, nil)
	e.sim.SetHTTPStatus("auth/getuserdetail", http.StatusBadGateway)
	id := MustLogin(t, c, e.sim.Code("zhangsan", true, wecomsim.ScopePrivateInfo), uaClient)
	if id.UserID != "zhangsan" || id.Name != "张三" || id.Mobile != "" || id.Email != "" {
		t.Errorf("identity %+v, want one without sensitive fields", id)
	}
	if !strings.Contains(e.logs.String(), "level=WARN") {
		t.Error("no warning logged")
	}
}

func TestSecretsNeverLogged(t *testing.T) {
	e := MustEnv(t, nil, nil)
	c := e.MustConnector(t, nil)
	code := e.sim.Code("zhangsan", true, wecomsim.ScopePrivateInfo)
	MustLogin(t, c, code, uaClient)
	e.sim.InvalidateTokens(42001)
	MustLogin(t, c, e.sim.Code("lisi", false, ""), uaBrowser)
	logs := e.logs.String()
	if logs == "" {
		t.Fatal("expected some debug logs")
	}
	for _, secret := range []string{e.seed.Secret, code, e.store.token(e.tokenKey())} {
		if strings.Contains(logs, secret) {
			t.Errorf("logs contain %q:\n%s", secret, logs)
		}
	}
}

func TestAPIError(t *testing.T) {
	err := fmt.Errorf("login: %w", &wecom.APIError{Endpoint: "gettoken", Code: 40001, Msg: "invalid credential"})
	var apiErr *wecom.APIError
	if !errors.As(err, &apiErr) || !apiErr.ConfigFault() || apiErr.TokenRejected() || apiErr.Hint() == "" {
		t.Errorf("40001: %+v", apiErr)
	}
	if got := err.Error(); got != "login: wecom: gettoken: errcode 40001: invalid credential" {
		t.Errorf("Error() = %q", got)
	}
	tests := []struct {
		code          int
		config, token bool
	}{
		{40001, true, false}, {40013, true, false}, {48002, true, false}, {50001, true, false},
		{60020, true, false}, {40056, true, false}, {301002, true, false}, {50003, true, false},
		{40014, false, true}, {42001, false, true}, {40029, false, false}, {60111, false, false}, {-1, false, false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.code), func(t *testing.T) {
			e := &wecom.APIError{Endpoint: "x", Code: tt.code}
			if e.ConfigFault() != tt.config || e.TokenRejected() != tt.token || wecom.IsConfigFault(e) != tt.config || wecom.ErrCode(e) != tt.code {
				t.Errorf("ConfigFault %v TokenRejected %v", e.ConfigFault(), e.TokenRejected())
			}
		})
	}
	if wecom.ErrCode(errors.New("plain")) != 0 || wecom.IsConfigFault(nil) {
		t.Error("helpers misreport a non-API error")
	}
}

// claimingStore is a memStore that also grants the refresh claim (wecom.TokenClaimer), as the
// provider's storage adapter does for processes sharing a database.
type claimingStore struct {
	*memStore
	mu     sync.Mutex
	until  map[string]time.Time
	now    func() time.Time
	claims int
}

func (s *claimingStore) ClaimRefresh(_ context.Context, key string, until time.Time) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.claims++
	if s.now().Before(s.until[key]) {
		return false, nil
	}
	s.until[key] = until
	return true, nil
}

// TestTokenRefreshOnceAcrossProcesses: several processes (connectors) sharing a store that grants
// the refresh claim need a token at the same moment; one calls gettoken, the others wait for
// the token it saves. The sim answers gettoken slowly, so they all look while it runs.
func TestTokenRefreshOnceAcrossProcesses(t *testing.T) {
	e := MustEnv(t, nil, nil)
	e.sim.SetLatency("gettoken", 200*time.Millisecond)
	store := &claimingStore{memStore: e.store, until: map[string]time.Time{}, now: time.Now}
	const processes = 4
	var wg sync.WaitGroup
	for i := range processes {
		c := e.MustConnector(t, func(cfg *wecom.Config) {
			cfg.Tokens = store
			cfg.Now = time.Now // the claim and the polling run on real time
		})
		wg.Go(func() {
			MustLogin(t, c, e.sim.Code([]string{"zhangsan", "lisi"}[i%2], false, ""), uaBrowser)
		})
	}
	wg.Wait()
	if got := e.sim.Calls("gettoken"); got != 1 {
		t.Errorf("gettoken calls = %d for %d processes, want 1", got, processes)
	}
	if store.claims < 2 {
		t.Errorf("%d refresh claims, want one per process that found no token", store.claims)
	}
}

// The scan sign-in's phone page asks for the full profile whatever the in-client door's
// configured scope: the sensitive fields are what it is for.
func TestPhoneLoginURL(t *testing.T) {
	e := MustEnv(t, nil, nil)
	c := e.MustConnector(t, func(cfg *wecom.Config) { cfg.Scope = wecom.ScopeBase })
	state := "AbcXYZ0123456789AbcXYZ0123456789"
	raw, err := c.PhoneLoginURL(state, upstream.LoginHints{UserAgent: uaBrowser})
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if got := u.Scheme + "://" + u.Host + u.Path; got != e.srv.URL+"/connect/oauth2/authorize" || u.Fragment != "wechat_redirect" {
		t.Errorf("URL %s, want the in-client authorization page", raw)
	}
	if got := u.Query().Get("scope"); got != wecom.ScopePrivateInfo {
		t.Errorf("scope %q, want %s", got, wecom.ScopePrivateInfo)
	}
	if got, _ := c.LoginURL(state, upstream.LoginHints{UserAgent: uaClient}); !strings.Contains(got, "scope="+wecom.ScopeBase) {
		t.Errorf("the in-client door lost its configured scope: %s", got)
	}
	if _, err := c.PhoneLoginURL("bad state!", upstream.LoginHints{}); err == nil {
		t.Error("a malformed state was accepted")
	}
	if !c.InApp(uaClient) || c.InApp(uaBrowser) {
		t.Errorf("InApp(%q)=%v, InApp(%q)=%v", uaClient, c.InApp(uaClient), uaBrowser, c.InApp(uaBrowser))
	}
	assertSimAccepts(t, raw)
}
