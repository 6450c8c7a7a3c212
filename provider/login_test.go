package provider_test

import (
	"context"
	"html"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/zitadel/oidc/v3/pkg/client/rp"
	"github.com/zitadel/oidc/v3/pkg/oidc"
)

// startLogin sends a fresh browser through /authorize to the simulated WeCom's login page.
func startLogin(t *testing.T, h *harness, b *browser, state string) (page *http.Response, party rp.RelyingParty, verifier string) {
	t.Helper()
	party, err := rp.NewRelyingPartyOIDC(context.Background(), h.issuer, webClientID, webClientSecret, webRedirect, allScopes)
	if err != nil {
		t.Fatal(err)
	}
	verifier = randomString() + randomString()
	page, loc := b.follow(rp.AuthURL(state, party, rp.WithCodeChallenge(oidc.NewSHACodeChallenge(verifier))),
		func(u *url.URL) bool { return strings.HasPrefix(u.String(), webRedirect) })
	if loc != nil || page.StatusCode != http.StatusOK {
		t.Fatalf("expected the WeCom login page, got status %d / redirect %v", page.StatusCode, loc)
	}
	return page, party, verifier
}

// TestOneGetTokenForManyLogins: the corp access token is fetched once and shared by every login,
// sequential and concurrent.
func TestOneGetTokenForManyLogins(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	for range 5 {
		exchange(t, h, newBrowser(t, desktopUA), webClientID, webRedirect, "zhangsan")
	}
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() { exchange(t, h, newBrowser(t, desktopUA), webClientID, webRedirect, "lisi") })
	}
	wg.Wait()
	if n := h.sim.Calls("gettoken"); n != 1 {
		t.Fatalf("21 logins made %d gettoken calls, want 1", n)
	}
	if n := h.sim.Calls("auth/getuserinfo"); n != 21 {
		t.Fatalf("auth/getuserinfo called %d times for 21 logins", n)
	}
}

// TestTokenInvalidatedByWeCom: WeCom drops the cached token early (40014, or 42001); the call is
// refreshed and retried once and the person never notices.
func TestTokenInvalidatedByWeCom(t *testing.T) {
	for _, errcode := range []int{40014, 42001} {
		t.Run(strconv.Itoa(errcode), func(t *testing.T) {
			h := newHarness(t, harnessOptions{})
			exchange(t, h, newBrowser(t, desktopUA), webClientID, webRedirect, "zhangsan")
			h.sim.InvalidateTokens(errcode)
			claims := exchange(t, h, newBrowser(t, desktopUA), webClientID, webRedirect, "wangwu")
			if claims.Subject != "wangwu" {
				t.Fatalf("sub = %q", claims.Subject)
			}
			if n := h.sim.Calls("gettoken"); n != 2 {
				t.Fatalf("gettoken calls = %d, want 2 (initial + one refresh)", n)
			}
		})
	}
}

// TestDeniedLoginsReachTheApplication: every refusal is an OAuth access_denied at the
// application's redirect URI, with its state — never a 500 or a dead end.
func TestDeniedLoginsReachTheApplication(t *testing.T) {
	tests := []struct {
		name  string
		click func(t *testing.T, h *harness, b *browser, page *http.Response) string
	}{
		{"non-member", func(t *testing.T, _ *harness, _ *browser, page *http.Response) string {
			return clickMember(t, page, "outsider")
		}},
		{"disabled member", func(t *testing.T, _ *harness, _ *browser, page *http.Response) string {
			return clickMember(t, page, "zhaoliu")
		}},
		{"member disabled after the page was shown", func(t *testing.T, h *harness, _ *browser, page *http.Response) string {
			h.sim.SetStatus("wangwu", 5) // left the company
			return clickMember(t, page, "wangwu")
		}},
		{"callback without a code", func(t *testing.T, _ *harness, _ *browser, page *http.Response) string {
			return cancelLink(t, page)
		}},
		{"reused WeCom code", func(t *testing.T, h *harness, _ *browser, page *http.Response) string {
			// A first login whose WeCom code we keep...
			other := newBrowser(t, desktopUA)
			otherPage, _, _ := startLogin(t, h, other, "first")
			callback := clickMember(t, otherPage, "zhangsan")
			res, loc := other.follow(callback, func(u *url.URL) bool { return strings.Contains(u.Path, "/login/wecom/callback") })
			if loc == nil {
				t.Fatalf("first login did not reach our callback (status %d)", res.StatusCode)
			}
			if q := h.signInFrom(other, loc.String()); q.Get("code") == "" {
				t.Fatalf("first login failed: %v", q)
			}
			// ...presented again with this browser's own, valid state.
			q := loc.Query()
			q.Set("state", stateOf(t, page))
			replay := *loc
			replay.RawQuery = q.Encode()
			return replay.String()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, harnessOptions{})
			b := newBrowser(t, desktopUA)
			page, _, _ := startLogin(t, h, b, "app-state")
			got := h.signInFrom(b, tt.click(t, h, b, page))
			if got.Get("error") != "access_denied" || got.Get("state") != "app-state" || got.Get("code") != "" {
				t.Fatalf("application got %v, want error=access_denied with its state and no code", got)
			}
		})
	}
}

// signInFrom follows redirects from raw until the application's redirect URI.
func (h *harness) signInFrom(b *browser, raw string) url.Values {
	h.t.Helper()
	res, loc := b.follow(raw, func(u *url.URL) bool { return strings.HasPrefix(u.String(), webRedirect) })
	if loc == nil {
		h.t.Fatalf("ended on a page with status %d, not at the application:\n%s", res.StatusCode, readBody(h.t, res))
	}
	return loc.Query()
}

// TestCallbackFromAnotherBrowser: a WeCom callback carried to a different browser (a phished
// link) is refused, and the state is spent.
func TestCallbackFromAnotherBrowser(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	victim := newBrowser(t, desktopUA)
	page, _, _ := startLogin(t, h, victim, "s")
	callback := clickMember(t, page, "zhangsan")
	res, loc := victim.follow(callback, func(u *url.URL) bool { return strings.Contains(u.Path, "/login/wecom/callback") })
	if loc == nil {
		t.Fatalf("did not reach our callback (status %d)", res.StatusCode)
	}
	attacker := newBrowser(t, desktopUA)
	got := attacker.get(loc.String())
	body := readBody(t, got)
	if got.StatusCode != http.StatusBadRequest || got.Header.Get("Location") != "" {
		t.Fatalf("callback in another browser: status %d, Location %q", got.StatusCode, got.Header.Get("Location"))
	}
	if !strings.Contains(body, "浏览器") {
		t.Fatalf("error page does not explain the browser mismatch:\n%s", body)
	}
	if n := h.sim.Calls("auth/getuserinfo"); n != 0 {
		t.Fatalf("WeCom code exchanged %d times for a foreign browser", n)
	}
}

// TestPromptNoneWithoutSession: prompt=none and no session → login_required at the application.
func TestPromptNoneWithoutSession(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	party, err := rp.NewRelyingPartyOIDC(context.Background(), h.issuer, webClientID, webClientSecret, webRedirect, allScopes)
	if err != nil {
		t.Fatal(err)
	}
	authURL := rp.AuthURL("quiet", party, rp.AuthURLOpt(rp.WithPromptURLParam("none")),
		rp.WithCodeChallenge(oidc.NewSHACodeChallenge(randomString()+randomString())))
	got := h.signInFrom(newBrowser(t, desktopUA), authURL)
	if got.Get("error") != "login_required" || got.Get("state") != "quiet" {
		t.Fatalf("got %v, want login_required with state", got)
	}
}

func cancelLink(t *testing.T, page *http.Response) string {
	t.Helper()
	body := readBody(t, page)
	i := strings.Index(body, `data-cancel="true" href="`)
	if i < 0 {
		t.Fatalf("no cancel link on the WeCom page:\n%s", body)
	}
	rest := body[i+len(`data-cancel="true" href="`):]
	href := rest[:strings.IndexByte(rest, '"')]
	u, err := page.Request.URL.Parse(html.UnescapeString(href))
	if err != nil {
		t.Fatal(err)
	}
	return u.String()
}

// stateOf returns the WeCom state our provider put on the login page's URL.
func stateOf(t *testing.T, page *http.Response) string {
	t.Helper()
	s := page.Request.URL.Query().Get("state")
	if s == "" {
		t.Fatalf("login page URL %s has no state", page.Request.URL)
	}
	return s
}
