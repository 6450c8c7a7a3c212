package provider_test

import (
	"encoding/json"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	jmespath "github.com/jmespath-community/go-jmespath"

	"github.com/wecom-oidc/wecom-oidc/provider"
	"github.com/wecom-oidc/wecom-oidc/storage"
	"github.com/wecom-oidc/wecom-oidc/upstream/wecom/wecomsim"
)

// pageLink returns the href of the element with the id on a page of ours.
func pageLink(t *testing.T, res *http.Response, body, id string) string {
	t.Helper()
	m := regexp.MustCompile(`id="` + regexp.QuoteMeta(id) + `" href="([^"]+)"`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no link #%s on the page (status %d):\n%s", id, res.StatusCode, body)
	}
	u, err := res.Request.URL.Parse(html.UnescapeString(m[1]))
	if err != nil {
		t.Fatal(err)
	}
	return u.String()
}

// TestTwoCorpsBehindOneIssuer: with two upstreams the person chooses (or a hint chooses for them),
// and the same userid in two corps is two people.
func TestTwoCorpsBehindOneIssuer(t *testing.T) {
	op := newConfOP(t, harnessOptions{corps: []func(*wecomsim.Config){nil, nil}, subject: "{corp_id}.{userid}"})
	corpA, corpB := op.h.sims[0], op.h.sims[1]

	// No hint: the chooser, listing both, in the browser's language.
	b := newBrowser(t, desktopUA)
	v := authParams(cWeb, "ui_locales", "en")
	res, loc := b.follow(op.authorizeURL(v), isAppURL)
	if loc != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("expected the chooser, got status %d / redirect %v", res.StatusCode, loc)
	}
	body := readBody(t, res)
	for _, want := range []string{"Choose your organisation", "Sim corp A", "Sim corp B"} {
		if !strings.Contains(body, want) {
			t.Errorf("chooser lacks %q", want)
		}
	}
	page, _ := b.follow(pageLink(t, res, body, "upstream-corp-b"), isAppURL)
	if corpB.Calls("wwlogin/sso/login") != 1 || corpA.Calls("wwlogin/sso/login") != 0 {
		t.Fatalf("chose corp B, but the login pages opened were A=%d B=%d", corpA.Calls("wwlogin/sso/login"), corpB.Calls("wwlogin/sso/login"))
	}
	_, loc = b.follow(clickMember(t, page, "zhangsan"), isAppURL)
	subB := op.checkIDToken(op.exchange(cWeb, authBasic, op.authResponse(loc, cWeb, v), "").IDToken, cWeb, v.Get("nonce")).str("sub")

	// idp_hint skips the chooser.
	b2 := newBrowser(t, desktopUA)
	v2 := authParams(cWeb, "idp_hint", "corp-a")
	subA := op.checkIDToken(op.exchange(cWeb, authBasic, op.authResponse(op.authorizeIn(b2, v2, corpA, "zhangsan"), cWeb, v2), "").IDToken, cWeb, v2.Get("nonce")).str("sub")

	if subA == subB || !strings.HasSuffix(subA, ".zhangsan") || !strings.HasSuffix(subB, ".zhangsan") {
		t.Fatalf("zhangsan of corp A is %q and of corp B %q: want two distinct subjects", subA, subB)
	}

	// A login_hint naming the corp after '@' skips it too.
	b3 := newBrowser(t, desktopUA)
	v3 := authParams(cWeb, "login_hint", "lisi@corp-b")
	sub3 := op.checkIDToken(op.exchange(cWeb, authBasic, op.authResponse(op.authorizeIn(b3, v3, corpB, "lisi"), cWeb, v3), "").IDToken, cWeb, v3.Get("nonce")).str("sub")
	if !strings.HasPrefix(sub3, strings.TrimSuffix(subB, "zhangsan")) || !strings.HasSuffix(sub3, ".lisi") {
		t.Fatalf("lisi via login_hint got sub %q, want corp B's namespace (%q)", sub3, subB)
	}
}

// authorizeIn runs the authorization request in b, expecting the given corp's login page, and
// clicks user there; it returns where the application was sent.
func (op *confOP) authorizeIn(b *browser, v url.Values, corp *wecomsim.Sim, user string) *url.URL {
	op.t.Helper()
	before := corp.Calls("wwlogin/sso/login")
	page, loc := b.follow(op.authorizeURL(v), isAppURL)
	if loc != nil || corp.Calls("wwlogin/sso/login") != before+1 {
		op.t.Fatalf("expected that corp's login page, got status %d / redirect %v", page.StatusCode, loc)
	}
	_, loc = b.follow(clickMember(op.t, page, user), isAppURL)
	if loc == nil {
		op.t.Fatal("the login did not reach the application")
	}
	return loc
}

// TestDisabledMemberLosesRefresh: a member disabled in WeCom keeps refreshing until the re-check
// interval has passed, then the refresh fails and the token family is revoked.
func TestDisabledMemberLosesRefresh(t *testing.T) {
	for _, status := range []int{2, 5} { // disabled, left the company
		t.Run(map[int]string{2: "disabled", 5: "left"}[status], func(t *testing.T) {
			op := newConfOP(t, harnessOptions{recheckInterval: 10 * time.Minute, recheckGrace: time.Hour})
			f := op.login(newBrowser(t, desktopUA), cWeb, "zhangsan", "scope", "openid profile offline_access")
			op.h.sim.SetStatus("zhangsan", status)

			r1 := op.refresh(cWeb, authBasic, f.tokens.RefreshToken)
			op.refreshOK(r1) // within the interval: WeCom is not asked
			if n := op.h.sim.Calls("user/get"); n != 1 {
				t.Fatalf("user/get called %d times, want 1 (the login only)", n)
			}

			op.clock.Advance(11 * time.Minute)
			op.tokenError(op.refresh(cWeb, authBasic, r1.RefreshToken), "invalid_grant")
			if n := op.h.sim.Calls("user/get"); n != 2 {
				t.Fatalf("user/get called %d times, want 2 (login + one re-check)", n)
			}
			if status, _, _ := op.userinfo("get", r1.AccessToken); status != http.StatusUnauthorized {
				t.Fatalf("access token of the revoked family: userinfo status %d, want 401", status)
			}
		})
	}
}

// TestActiveMemberRecheckRefreshesProfile: a re-check of an active member updates the claims the
// next ID token carries (a department move shows up without a new login).
func TestActiveMemberRecheckRefreshesProfile(t *testing.T) {
	op := newConfOP(t, harnessOptions{recheckInterval: 10 * time.Minute})
	f := op.login(newBrowser(t, desktopUA), cWeb, "zhangsan", "scope", "openid profile offline_access")
	op.clock.Advance(11 * time.Minute)
	r := op.refresh(cWeb, authBasic, f.tokens.RefreshToken)
	op.refreshOK(r)
	u, err := op.h.store.GetUser(t.Context(), "zhangsan")
	if err != nil {
		t.Fatal(err)
	}
	if got := op.clock.Now().Sub(u.LastChecked); got < 0 || got > time.Minute {
		t.Fatalf("LastChecked %v not updated by the re-check (now %v)", u.LastChecked, op.clock.Now())
	}
}

// TestWeComDownDuringRefresh: inside the grace period refreshes go on; past it they fail closed,
// and work again once WeCom answers.
func TestWeComDownDuringRefresh(t *testing.T) {
	op := newConfOP(t, harnessOptions{recheckInterval: 10 * time.Minute, recheckGrace: time.Hour})
	f := op.login(newBrowser(t, desktopUA), cWeb, "zhangsan", "scope", "openid offline_access")
	op.h.sim.SetHTTPStatus("user/get", http.StatusBadGateway)

	op.clock.Advance(30 * time.Minute)
	r1 := op.refresh(cWeb, authBasic, f.tokens.RefreshToken)
	op.refreshOK(r1) // WeCom down, but the last confirmation is 30 min old: within the grace

	op.clock.Advance(40 * time.Minute) // 70 min since the last confirmation
	op.tokenError(op.refresh(cWeb, authBasic, r1.RefreshToken), "invalid_grant")

	op.h.sim.SetHTTPStatus("user/get", 0)
	op.refreshOK(op.refresh(cWeb, authBasic, r1.RefreshToken)) // not revoked: WeCom is back
}

// TestRecheckDoesNotStampede: many refreshes of one person due at once ask WeCom once.
func TestRecheckDoesNotStampede(t *testing.T) {
	op := newConfOP(t, harnessOptions{recheckInterval: 10 * time.Minute})
	var tokens []string
	for range 8 {
		tokens = append(tokens, op.login(newBrowser(t, desktopUA), cWeb, "zhangsan", "scope", "openid offline_access").tokens.RefreshToken)
	}
	before := op.h.sim.Calls("user/get")
	op.clock.Advance(11 * time.Minute)
	var wg sync.WaitGroup
	for _, rt := range tokens {
		wg.Go(func() { op.refreshOK(op.refresh(cWeb, authBasic, rt)) })
	}
	wg.Wait()
	if n := op.h.sim.Calls("user/get") - before; n != 1 {
		t.Fatalf("8 refreshes due together made %d user/get calls, want 1", n)
	}
}

// TestGroupShapes: each client chooses what `groups` holds.
func TestGroupShapes(t *testing.T) {
	shaped := func(id string) confClient {
		return confClient{id: id, secret: "shape-secret-0123456789abcdef", redirect: "https://" + id + ".example/cb"}
	}
	cases := []struct {
		client confClient
		shapes []string
		want   []string
	}{
		{shaped("names"), nil, []string{"研发中心", "平台组", "everyone"}},
		{shaped("ids"), []string{"ids"}, []string{"2", "3", "everyone"}},
		{shaped("paths"), []string{"paths"}, []string{"研发中心", "研发中心/平台组", "everyone"}},
		{shaped("tags"), []string{"tags"}, []string{"管理员", "everyone"}},
		{shaped("mixed"), []string{"paths", "tags"}, []string{"研发中心", "研发中心/平台组", "管理员", "everyone"}},
	}
	var records []storage.Client
	for _, c := range cases {
		r := c.client.record()
		r.Groups = c.shapes
		records = append(records, r)
	}
	op := newConfOP(t, harnessOptions{tags: true, clients: records, claims: provider.ClaimsConfig{DefaultGroups: []string{"everyone"}}})
	b := newBrowser(t, desktopUA)
	for _, c := range cases {
		t.Run(c.client.id, func(t *testing.T) {
			f := op.login(b, c.client, "zhangsan", "scope", "openid groups")
			if got := claimStrings(f.id.claims["groups"]); !slices.Equal(got, c.want) {
				t.Errorf("ID token groups = %q, want %q", got, c.want)
			}
			_, _, info := op.userinfo("get", f.tokens.AccessToken)
			if got := claimStrings(info["groups"]); !slices.Equal(got, c.want) {
				t.Errorf("userinfo groups = %q, want %q", got, c.want)
			}
		})
	}
}

// TestGrafanaRoleMapping evaluates the role_attribute_path of the README's Grafana example with
// JMESPath (Grafana's library) over the ID token, for three members.
func TestGrafanaRoleMapping(t *testing.T) {
	const rolePath = `contains(groups[*], '平台组') && 'Admin' || contains(groups[*], '市场部') && 'Editor' || 'Viewer'`
	op := newConfOP(t, harnessOptions{})
	for user, want := range map[string]string{"zhangsan": "Admin", "lisi": "Editor", "wangwu": "Viewer"} {
		f := op.login(newBrowser(t, desktopUA), cWeb, user, "scope", "openid profile email groups")
		payload := jwtPart(t, f.tokens.IDToken, 1)
		// Round-trip through JSON as Grafana does (it decodes the payload into any).
		raw, _ := json.Marshal(payload)
		var doc any
		if err := json.Unmarshal(raw, &doc); err != nil {
			t.Fatal(err)
		}
		got, err := jmespath.Search(rolePath, doc)
		if err != nil {
			t.Fatalf("%s: %v", user, err)
		}
		if got != want {
			t.Errorf("%s (groups %v): role %v, want %s", user, payload["groups"], got, want)
		}
	}
}

// TestUpstreamFailurePages: outside the visible range, WeCom down, WeCom refusing our setup —
// each a page in the person's language with a way back to the application, the outage one with a
// retry that works once WeCom is back. Nothing from the request is reflected.
func TestUpstreamFailurePages(t *testing.T) {
	tests := []struct {
		name      string
		lang      string
		breakIt   func(*wecomsim.Sim)
		status    int
		title     string
		returnErr string
		retry     bool
	}{
		{"not visible zh", "zh-CN", func(s *wecomsim.Sim) { s.SetVisible("zhangsan", false) }, http.StatusForbidden, "您无权使用此应用", "access_denied", false},
		{"not visible en", "en", func(s *wecomsim.Sim) { s.SetVisible("zhangsan", false) }, http.StatusForbidden, "You are not allowed to use this application", "access_denied", false},
		{"unavailable zh", "zh", func(s *wecomsim.Sim) { s.SetHTTPStatus("auth/getuserinfo", http.StatusBadGateway) }, http.StatusServiceUnavailable, "暂时无法连接企业微信", "temporarily_unavailable", true},
		{"unavailable en", "en", func(s *wecomsim.Sim) { s.SetGarbage("auth/getuserinfo", true) }, http.StatusServiceUnavailable, "WeCom cannot be reached right now", "temporarily_unavailable", true},
		{"misconfigured en", "en", func(s *wecomsim.Sim) { s.FailNext("auth/getuserinfo", 60020) }, http.StatusBadGateway, "The sign-in service is misconfigured", "server_error", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			op := newConfOP(t, harnessOptions{})
			b := newBrowser(t, desktopUA)
			hostile := `"><script>alert(1)</script>`
			v := authParams(cWeb, "ui_locales", tt.lang+" "+hostile, "state", "st-"+tt.name)
			page, loc := b.follow(op.authorizeURL(v), isAppURL)
			if loc != nil {
				t.Fatalf("went straight to the application: %v", loc)
			}
			tt.breakIt(op.h.sim)
			res, loc := b.follow(clickMember(t, page, "zhangsan"), isAppURL)
			if loc != nil {
				t.Fatalf("went to the application (%v) instead of showing a page", loc)
			}
			body := readBody(t, res)
			if res.StatusCode != tt.status || !strings.Contains(body, tt.title) {
				t.Fatalf("status %d, want %d with %q:\n%s", res.StatusCode, tt.status, tt.title, body)
			}
			if strings.Contains(body, "<script>") || strings.Contains(res.Header.Get("Content-Security-Policy"), "script-src") {
				t.Fatalf("page reflects input or allows scripts:\n%s", body)
			}
			if tt.retry {
				op.h.sim.SetHTTPStatus("auth/getuserinfo", 0)
				op.h.sim.SetGarbage("auth/getuserinfo", false)
				again, loc := b.follow(pageLink(t, res, body, "retry"), isAppURL)
				if loc != nil {
					t.Fatalf("retry went to the application without WeCom: %v", loc)
				}
				_, loc = b.follow(clickMember(t, again, "zhangsan"), isAppURL)
				if loc == nil || loc.Query().Get("code") == "" {
					t.Fatalf("retry after WeCom came back: %v", loc)
				}
				return
			}
			_, loc = b.follow(pageLink(t, res, body, "return"), isAppURL)
			if loc == nil || loc.Query().Get("error") != tt.returnErr || loc.Query().Get("state") != v.Get("state") {
				t.Fatalf("back to the application: %v, want error=%s with the state", loc, tt.returnErr)
			}
			// The return link is bound to this browser.
			stranger := newBrowser(t, desktopUA)
			if got := stranger.get(pageLink(t, res, body, "return")); got.StatusCode != http.StatusBadRequest {
				t.Fatalf("return link from another browser: status %d", got.StatusCode)
			}
		})
	}
}

// TestDisabledByOperator: an operator's disable (what `users disable` does) voids a code already
// issued, and after `users enable` the browser's old SSO session does not sign the person in
// silently: WeCom is asked again.
func TestDisabledByOperator(t *testing.T) {
	op := newConfOP(t, harnessOptions{})
	b := newBrowser(t, desktopUA)
	op.login(b, cWeb, "zhangsan") // the browser now holds an SSO session
	v := authParams(cWeb)
	code := op.authResponse(op.authorize(b, v, ""), cWeb, v) // silent, from the session

	setDisabled := func(disabled bool) {
		_, err := op.h.store.UpdateUser(t.Context(), "zhangsan", func(u *storage.User, _ bool) error {
			u.Disabled = disabled
			if disabled {
				u.DisabledAt = op.clock.Now()
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	setDisabled(true)
	op.tokenError(op.exchange(cWeb, authBasic, code, ""), "invalid_grant")

	setDisabled(false)
	pages := op.wecomPages()
	op.login(b, cWeb, "zhangsan")
	if op.wecomPages() == pages {
		t.Fatal("after enable, the SSO session from before the disable signed the person in without WeCom")
	}
}
