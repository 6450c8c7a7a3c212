package provider_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// FuzzWeComCallback sends a fuzzed query to /login/wecom/callback, as WeCom's redirect back or as
// an attacker's forgery, from a browser without cookies, from the attacker's own browser (a binding
// cookie the provider accepts), or with a fuzzed binding cookie. In the query, $VICTIM becomes a
// state the provider just minted for another browser (the victim's login), $OWN one minted for the
// attacker's own browser, and $CODE a valid, unused WeCom login code for zhangsan — so the fuzzer
// holds everything an attacker could hold except the victim's cookie.
//
// Only a callback whose state (the first `state`, as the provider reads it) is $OWN, sent with the
// attacker's own cookie, was started by this browser. Properties:
//   - no 5xx, except the documented 502/503 upstream pages for a callback started by this browser
//     (the upstream is never asked about any other);
//   - WeCom's auth/getuserinfo is not called for a callback this browser did not start — not for
//     a state we did not mint, nor for one minted for another browser;
//   - such a callback never completes: no redirect, on the provider or from it, brings the
//     application a `code`;
//   - redirects go to the provider itself or to the web client's registered redirect URI (every
//     login here is the web client's).
func FuzzWeComCallback(f *testing.F) {
	for _, s := range callbackSeeds {
		f.Add(s.query, s.cookieMode, s.cookie)
	}
	fz := newCallbackFuzz(f)
	f.Fuzz(fz.run)
}

// Cookie modes of FuzzWeComCallback (cookieMode % 3).
const (
	cookieNone     = 0 // no cookie at all
	cookieAttacker = 1 // the attacker's own browser binding cookie
	cookieFuzzed   = 2 // the fuzzed string as the binding cookie
)

// callbackSeeds are the same inputs as testdata/fuzz/FuzzWeComCallback.
var callbackSeeds = []struct {
	query      string
	cookieMode uint8
	cookie     string
}{
	// Valid: WeCom's redirect back to the browser that started the login (code or auth_code).
	{"code=$CODE&state=$OWN", cookieAttacker, ""},
	{"auth_code=$CODE&state=$OWN&appid=wwsim", cookieAttacker, ""},
	// Near-valid: cancelled, a used or made-up code, a state not ours.
	{"state=$OWN", cookieAttacker, ""},
	{"code=0123456789abcdef&state=$OWN", cookieAttacker, ""},
	{"code=$CODE&state=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", cookieAttacker, ""},
	{"code=$CODE", cookieAttacker, ""},
	// Hostile: the victim's state with a valid code, from the attacker's browser or none; the
	// attacker's own state from a browser without (or with a forged) cookie; smuggled states.
	{"code=$CODE&state=$VICTIM", cookieAttacker, ""},
	{"code=$CODE&state=$VICTIM", cookieNone, ""},
	{"code=$CODE&state=$OWN", cookieNone, ""},
	{"code=$CODE&state=$OWN", cookieFuzzed, "forged-browser-binding-0123456789abcdef"},
	{"code=$CODE&state=$VICTIM&state=$OWN", cookieAttacker, ""},
	{"code=$CODE&code=x&state=$OWN&state=$VICTIM&redirect_uri=https%3A%2F%2Fevil.example%2F", cookieAttacker, ""},
	{"code=$CODE;state=$OWN", cookieAttacker, ""},
	{"code=$CODE&state=$OWN%00", cookieAttacker, ""},
	{"code=%zz&auth_code=$CODE&state=$VICTIM&authRequestID=x", cookieFuzzed, ""},
}

type callbackFuzz struct {
	h      *harness
	client *http.Client
	issuer string
	victim *http.Cookie // the victim's browser binding, which the attacker never holds
	own    *http.Cookie // the attacker's browser binding
	// victimStates and ownStates are states minted ahead, in the background: the store batches
	// its writes (up to 10 ms each), so minting them one by one would slow every input down.
	victimStates, ownStates <-chan string
	mintErr                 atomic.Pointer[error]
}

func newCallbackFuzz(f *testing.F) *callbackFuzz {
	quietLibraryLogs(f)
	h := newHarness(f, harnessOptions{})
	fz := &callbackFuzz{
		h: h, client: fuzzClient(), issuer: h.issuer,
		// The provider takes any binding value of 32 characters or more from the browser.
		victim: &http.Cookie{Name: fuzzBrowserCookie, Value: rand.Text() + rand.Text()},
		own:    &http.Cookie{Name: fuzzBrowserCookie, Value: rand.Text() + rand.Text()},
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	f.Cleanup(func() { cancel(); wg.Wait() })
	fz.victimStates = fz.mintStates(ctx, &wg, fz.victim)
	fz.ownStates = fz.mintStates(ctx, &wg, fz.own)
	return fz
}

// mintStates keeps a supply of states the provider minted for logins of the web client in the
// browser holding binding, until ctx ends.
func (fz *callbackFuzz) mintStates(ctx context.Context, wg *sync.WaitGroup, binding *http.Cookie) <-chan string {
	const minters = 4
	v := url.Values{
		"response_type": {"code"}, "client_id": {webClientID}, "redirect_uri": {webRedirect},
		"scope": {"openid"}, "state": {"app-state"}, "nonce": {"app-nonce"},
	}
	authURL := fz.issuer + "/authorize?" + v.Encode()
	states := make(chan string, 32)
	var minting sync.WaitGroup
	for range minters {
		minting.Go(func() {
			for {
				state, err := fz.mintState(ctx, authURL, binding)
				if err != nil {
					if ctx.Err() == nil {
						fz.mintErr.CompareAndSwap(nil, &err)
					}
					return
				}
				select {
				case states <- state:
				case <-ctx.Done():
					return
				}
			}
		})
	}
	wg.Go(func() { minting.Wait(); close(states) })
	return states
}

// state takes a minted state from states.
func (fz *callbackFuzz) state(t *testing.T, states <-chan string) string {
	s, ok := <-states
	if !ok {
		t.Fatalf("minting states failed: %v", *fz.mintErr.Load())
	}
	return s
}

// mintState starts one login: /authorize, then /login, which sends the browser to WeCom with a
// fresh state.
func (fz *callbackFuzz) mintState(ctx context.Context, authURL string, binding *http.Cookie) (string, error) {
	for i, path := range []string{"/authorize", "/login"} {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, authURL, nil)
		if err != nil {
			return "", err
		}
		req.AddCookie(binding)
		res, err := fz.client.Do(req)
		if err != nil {
			return "", err
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		loc, err := req.URL.Parse(res.Header.Get("Location"))
		switch {
		case err != nil:
			return "", err
		case res.StatusCode != http.StatusFound:
			return "", fmt.Errorf("mint: %s answered %d", path, res.StatusCode)
		case i == 1:
			if s := loc.Query().Get("state"); s != "" {
				return s, nil
			}
			return "", fmt.Errorf("mint: /login sent the browser to %s", loc)
		}
		authURL = loc.String()
	}
	panic("unreachable")
}

func (fz *callbackFuzz) run(t *testing.T, query string, cookieMode uint8, cookie string) {
	var ownState string
	if strings.Contains(query, "$VICTIM") {
		query = strings.ReplaceAll(query, "$VICTIM", fz.state(t, fz.victimStates))
	}
	if strings.Contains(query, "$OWN") {
		ownState = fz.state(t, fz.ownStates)
		query = strings.ReplaceAll(query, "$OWN", ownState)
	}
	if strings.Contains(query, "$CODE") {
		query = strings.ReplaceAll(query, "$CODE", fz.h.sim.Code("zhangsan", false, ""))
	}
	var cookies []*http.Cookie
	switch cookieMode % 3 {
	case cookieAttacker:
		cookies = []*http.Cookie{fz.own}
	case cookieFuzzed:
		if v := cookieValue(cookie); v != "" {
			cookies = []*http.Cookie{{Name: fuzzBrowserCookie, Value: v}}
		}
	}
	rawQuery := escapeRequestTarget(query)
	started := cookieMode%3 == cookieAttacker && ownState != "" && queryValues(rawQuery).Get("state") == ownState

	before := fz.h.sim.Calls("auth/getuserinfo")
	res, body := fuzzGet(t, fz.client, fz.issuer+"/login/wecom/callback", rawQuery, cookies)
	if calls := fz.h.sim.Calls("auth/getuserinfo") - before; calls > 0 && !started {
		t.Fatalf("GET %s (cookies %v): WeCom's auth/getuserinfo called %d times for a callback this browser did not start",
			res.Request.URL, cookies, calls)
	}
	for hop := 0; ; hop++ {
		t.Logf("GET %s (started by this browser: %v): status %d, Location %q", res.Request.URL, started, res.StatusCode, res.Header.Get("Location"))
		switch {
		case res.StatusCode == http.StatusBadGateway || res.StatusCode == http.StatusServiceUnavailable:
			if !started {
				t.Fatalf("GET %s: upstream page (status %d) for a callback this browser did not start:\n%s", res.Request.URL, res.StatusCode, body)
			}
		case res.StatusCode >= 500:
			t.Fatalf("GET %s: status %d:\n%s", res.Request.URL, res.StatusCode, body)
		}
		loc := redirectTarget(t, res)
		switch {
		case loc == nil:
			return
		case origin(loc) == fz.issuer:
			if hop == maxHops {
				t.Fatalf("more than %d redirects on the provider, the last to %s", maxHops, loc)
			}
			next := *loc
			next.RawQuery, next.Fragment = "", ""
			res, body = fuzzGet(t, fz.client, next.String(), loc.RawQuery, cookies)
		case !isRegisteredRedirect(loc, []string{webClientID}):
			t.Fatalf("GET %s: redirect (status %d) to %s, not the provider or the web client's redirect URI", res.Request.URL, res.StatusCode, loc)
		case loc.Query().Has("code") && !started:
			t.Fatalf("GET %s (cookies %v): a callback this browser did not start completed: the application got %s",
				res.Request.URL, cookies, loc)
		default:
			return
		}
	}
}

// cookieValue keeps the bytes net/http sends in a cookie value unquoted and unchanged.
func cookieValue(s string) string {
	return strings.Map(func(r rune) rune {
		if r <= ' ' || r >= 0x7f || r == '"' || r == ';' || r == '\\' || r == ',' {
			return -1
		}
		return r
	}, s)
}
