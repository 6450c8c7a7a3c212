package wecom_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wecom-oidc/wecom-oidc/upstream"
	"github.com/wecom-oidc/wecom-oidc/upstream/wecom"
)

// login runs a web login of userID and returns its result.
func (e *env) login(c *wecom.Connector, userID string) (upstream.Identity, error) {
	return c.HandleCallback(context.Background(), codeCallback(e.sim.Code(userID, false, ""), uaBrowser))
}

// Outcomes of a failed call, for assertOutcome.
const (
	unavailable   = "unavailable"
	misconfigured = "misconfigured"
)

// assertOutcome checks err is a DeniedError of kind want, or an error of class want
// (unavailable, misconfigured) and of no other class, carrying WeCom's errcode (0: none).
func assertOutcome(t testing.TB, err error, want string, errcode int) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %s", want)
	}
	isUnavailable, isMisconfigured := errors.Is(err, upstream.ErrUnavailable), errors.Is(err, upstream.ErrMisconfigured)
	var denied *upstream.DeniedError
	isDenied := errors.As(err, &denied)
	switch want {
	case unavailable:
		if !isUnavailable || isMisconfigured || isDenied {
			t.Errorf("error %v: want ErrUnavailable only (unavailable %v, misconfigured %v, denied %v)", err, isUnavailable, isMisconfigured, isDenied)
		}
	case misconfigured:
		if isUnavailable || !isMisconfigured || isDenied {
			t.Errorf("error %v: want ErrMisconfigured only (unavailable %v, misconfigured %v, denied %v)", err, isUnavailable, isMisconfigured, isDenied)
		}
	default:
		if !isDenied || denied.Kind != want || isUnavailable || isMisconfigured {
			t.Errorf("error %v: want a DeniedError of kind %q only", err, want)
		}
	}
	if got := wecom.ErrCode(err); got != errcode {
		t.Errorf("errcode in the chain %d, want %d (%v)", got, errcode, err)
	}
}

func assertCalls(t testing.TB, e *env, endpoint string, want int) {
	t.Helper()
	if got := e.sim.Calls(endpoint); got != want {
		t.Errorf("%s calls = %d, want %d", endpoint, got, want)
	}
}

func assertWaits(t testing.TB, e *env, want ...time.Duration) {
	t.Helper()
	if got := e.sleeps.Waits(); !slices.Equal(got, want) {
		t.Errorf("backoff waits %v, want %v", got, want)
	}
}

const ms = time.Millisecond

// TestErrcodeTable walks the errcode table of the reference (§6.4) row by row: each errcode's
// classification, and how many times WeCom is called.
func TestErrcodeTable(t *testing.T) {
	t.Run("-1", func(t *testing.T) {
		t.Run("retried 3 times with backoff, then succeeds", func(t *testing.T) {
			e := MustEnv(t, nil, nil)
			c := e.MustConnector(t, nil)
			for range 3 {
				e.sim.FailNext("user/get", -1)
			}
			if _, err := e.login(c, "zhangsan"); err != nil {
				t.Fatal(err)
			}
			assertCalls(t, e, "user/get", 4)
			assertWaits(t, e, 100*ms, 200*ms, 400*ms)
		})
		t.Run("after 3 retries ErrUnavailable", func(t *testing.T) {
			e := MustEnv(t, nil, nil)
			c := e.MustConnector(t, nil)
			for range 5 {
				e.sim.FailNext("user/get", -1)
			}
			_, err := e.login(c, "zhangsan")
			assertOutcome(t, err, unavailable, -1)
			assertCalls(t, e, "user/get", 4)
			assertCalls(t, e, "gettoken", 1)
			assertWaits(t, e, 100*ms, 200*ms, 400*ms)
		})
		t.Run("gettoken retried too", func(t *testing.T) {
			e := MustEnv(t, nil, nil)
			c := e.MustConnector(t, nil)
			e.sim.FailNext("gettoken", -1)
			if _, err := e.login(c, "zhangsan"); err != nil {
				t.Fatal(err)
			}
			assertCalls(t, e, "gettoken", 2)
			assertWaits(t, e, 100*ms)
		})
		t.Run("a cancelled wait ends the retries", func(t *testing.T) {
			e := MustEnv(t, nil, nil)
			c := e.MustConnector(t, func(c *wecom.Config) {
				c.Sleep = func(ctx context.Context, d time.Duration) error { return context.Canceled }
			})
			for range 4 {
				e.sim.FailNext("user/get", -1)
			}
			_, err := e.login(c, "zhangsan")
			assertOutcome(t, err, unavailable, -1)
			assertCalls(t, e, "user/get", 1)
		})
	})

	for _, code := range []int{40014, 42001} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			t.Run("refreshed and retried once", func(t *testing.T) {
				e := MustEnv(t, nil, nil)
				c := e.MustConnector(t, nil)
				MustLogin(t, c, e.sim.Code("zhangsan", false, ""), uaBrowser)
				e.sim.InvalidateTokens(code)
				if _, err := e.login(c, "lisi"); err != nil {
					t.Fatal(err)
				}
				assertCalls(t, e, "gettoken", 2)
				assertCalls(t, e, "auth/getuserinfo", 3)
				assertWaits(t, e)
			})
			t.Run("rejected again: ErrUnavailable", func(t *testing.T) {
				e := MustEnv(t, nil, nil)
				c := e.MustConnector(t, nil)
				for range 3 {
					e.sim.FailNext("user/get", code)
				}
				_, err := e.login(c, "zhangsan")
				assertOutcome(t, err, unavailable, code)
				assertCalls(t, e, "user/get", 2)
				assertCalls(t, e, "gettoken", 2)
			})
		})
	}

	t.Run("40029", func(t *testing.T) {
		e := MustEnv(t, nil, nil)
		c := e.MustConnector(t, nil)
		code := e.sim.Code("zhangsan", false, "")
		MustLogin(t, c, code, uaBrowser)
		_, err := c.HandleCallback(context.Background(), codeCallback(code, uaBrowser))
		assertOutcome(t, err, upstream.DeniedCodeInvalid, 40029)
		assertCalls(t, e, "auth/getuserinfo", 2) // one per login: never retried
		assertCalls(t, e, "gettoken", 1)
		assertWaits(t, e)
	})

	t.Run("45009", func(t *testing.T) {
		t.Run("cool-down on the endpoint", func(t *testing.T) {
			e := MustEnv(t, nil, nil)
			c := e.MustConnector(t, nil)
			e.sim.FailNext("user/get", 45009)
			_, err := e.login(c, "zhangsan")
			assertOutcome(t, err, unavailable, 45009)
			assertCalls(t, e, "user/get", 1)
			assertWaits(t, e) // no retry
			if n := e.countLines("WARN", "45009"); n != 1 {
				t.Errorf("%d warnings about 45009, want 1:\n%s", n, e.logs)
			}

			// Inside the window: nothing reaches WeCom's user/get, at login or recheck.
			e.clock.Advance(30 * time.Second)
			_, err = e.login(c, "lisi")
			assertOutcome(t, err, unavailable, 45009)
			e.clock.Advance(29 * time.Second)
			_, err = c.Recheck(context.Background(), "lisi")
			assertOutcome(t, err, unavailable, 45009)
			assertCalls(t, e, "user/get", 1)
			if n := e.countLines("WARN", "45009"); n != 1 {
				t.Errorf("%d warnings about 45009 inside the window, want still 1", n)
			}
			// Other endpoints are not cooling down.
			if d, err := c.Department(context.Background(), 4); err != nil || d.Name != "市场部" {
				t.Errorf("department/get during user/get's cool-down: %+v, %v", d, err)
			}

			// After the window: WeCom is asked again.
			e.clock.Advance(time.Second)
			if _, err := e.login(c, "lisi"); err != nil {
				t.Fatalf("after the window: %v", err)
			}
			assertCalls(t, e, "user/get", 2)

			// A new 45009 opens a new window, with a new warning.
			e.sim.FailNext("user/get", 45009)
			_, err = e.login(c, "lisi")
			assertOutcome(t, err, unavailable, 45009)
			if n := e.countLines("WARN", "45009"); n != 2 {
				t.Errorf("%d warnings about 45009 after a second window, want 2", n)
			}
		})
		t.Run("configurable window", func(t *testing.T) {
			e := MustEnv(t, nil, nil)
			c := e.MustConnector(t, func(c *wecom.Config) { c.RateLimitCooldown = 10 * time.Second })
			e.sim.FailNext("user/get", 45009)
			_, err := e.login(c, "zhangsan")
			assertOutcome(t, err, unavailable, 45009)
			e.clock.Advance(10*time.Second - time.Millisecond)
			_, err = e.login(c, "zhangsan")
			assertOutcome(t, err, unavailable, 45009)
			assertCalls(t, e, "user/get", 1)
			e.clock.Advance(time.Millisecond)
			if _, err := e.login(c, "zhangsan"); err != nil {
				t.Fatal(err)
			}
			assertCalls(t, e, "user/get", 2)
		})
		t.Run("gettoken", func(t *testing.T) {
			e := MustEnv(t, nil, nil)
			c := e.MustConnector(t, nil)
			e.sim.FailNext("gettoken", 45009)
			_, err := e.login(c, "zhangsan")
			assertOutcome(t, err, unavailable, 45009)
			_, err = e.login(c, "zhangsan")
			assertOutcome(t, err, unavailable, 45009)
			assertCalls(t, e, "gettoken", 1)
			assertCalls(t, e, "auth/getuserinfo", 0)
			e.clock.Advance(wecom.DefaultRateLimitCooldown)
			if _, err := e.login(c, "zhangsan"); err != nil {
				t.Fatal(err)
			}
			assertCalls(t, e, "gettoken", 2)
		})
	})

	t.Run("45033", func(t *testing.T) {
		t.Run("retried twice with backoff, then succeeds", func(t *testing.T) {
			e := MustEnv(t, nil, nil)
			c := e.MustConnector(t, nil)
			e.sim.FailNext("auth/getuserinfo", 45033)
			e.sim.FailNext("auth/getuserinfo", 45033)
			if _, err := e.login(c, "zhangsan"); err != nil {
				t.Fatal(err)
			}
			assertCalls(t, e, "auth/getuserinfo", 3)
			assertWaits(t, e, 100*ms, 200*ms)
		})
		t.Run("after 2 retries ErrUnavailable", func(t *testing.T) {
			e := MustEnv(t, nil, nil)
			c := e.MustConnector(t, nil)
			for range 4 {
				e.sim.FailNext("user/get", 45033)
			}
			_, err := e.login(c, "zhangsan")
			assertOutcome(t, err, unavailable, 45033)
			assertCalls(t, e, "user/get", 3)
			assertWaits(t, e, 100*ms, 200*ms)
		})
	})

	for _, code := range []int{50002, 60111, 60021} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			e := MustEnv(t, nil, nil)
			c := e.MustConnector(t, nil)
			e.sim.FailNext("user/get", code)
			_, err := e.login(c, "zhangsan")
			assertOutcome(t, err, upstream.DeniedNotVisible, code)
			assertCalls(t, e, "user/get", 1)
			assertWaits(t, e)
		})
	}

	t.Run("60011", func(t *testing.T) {
		t.Run("user/get: denied", func(t *testing.T) {
			e := MustEnv(t, nil, nil)
			c := e.MustConnector(t, nil)
			e.sim.FailNext("user/get", 60011)
			_, err := e.login(c, "zhangsan")
			assertOutcome(t, err, upstream.DeniedNotVisible, 60011)
			assertCalls(t, e, "user/get", 1)
		})
		t.Run("department/get: no name", func(t *testing.T) {
			e := MustEnv(t, nil, nil)
			c := e.MustConnector(t, nil)
			e.sim.FailNext("department/get", 60011)
			id, err := e.login(c, "lisi")
			if err != nil {
				t.Fatal(err)
			}
			if want := []upstream.Department{{ID: 4}}; !reflect.DeepEqual(id.Departments, want) {
				t.Errorf("departments %+v, want %+v", id.Departments, want)
			}
			if e.countLines("WARN", "withheld") != 1 {
				t.Errorf("no warning:\n%s", e.logs)
			}
			assertCalls(t, e, "department/get", 1)
			if _, err := e.login(c, "lisi"); err != nil { // the answer is cached
				t.Fatal(err)
			}
			assertCalls(t, e, "department/get", 1)
		})
		t.Run("tag/get: no tag", func(t *testing.T) {
			e := MustEnv(t, nil, nil)
			c := e.MustConnector(t, func(c *wecom.Config) { c.Tags = true })
			e.sim.FailNext("tag/get", 60011) // tag 1, 管理员, or tag 2; either way zhangsan has no tag
			e.sim.FailNext("tag/get", 60011)
			id, err := e.login(c, "zhangsan")
			if err != nil {
				t.Fatal(err)
			}
			if id.Tags != nil {
				t.Errorf("tags %+v, want none", id.Tags)
			}
			if e.countLines("WARN", "tag withheld") != 2 {
				t.Errorf("want two warnings:\n%s", e.logs)
			}
			assertCalls(t, e, "tag/get", 2)
		})
	})

	// Configuration faults: ErrMisconfigured, never retried (nor the token refreshed), logged at
	// ERROR with a hint.
	config := []struct {
		code     int
		endpoint string
		hint     string
		change   func(*wecom.Config)
	}{
		{40001, "gettoken", "secret", func(c *wecom.Config) { c.Secret = "wrong-secret-value" }},
		{40013, "gettoken", "corp id", func(c *wecom.Config) { c.CorpID = "wwwrongcorp" }},
		{40056, "auth/getuserinfo", "agent id", nil},
		{40082, "user/get", "suite token", nil},
		{42009, "user/get", "suite token", nil},
		{48002, "user/get", "forbids", nil},
		{50001, "auth/getuserinfo", "trusted domain", nil},
		{50003, "user/get", "disabled", nil},
		{60020, "gettoken", "trusted IPs", nil},
		{301002, "user/get", "another app", nil},
		{80001, "auth/getuserinfo", "ICP", nil},
		{85004, "auth/getuserinfo", "quota", nil},
		{85005, "auth/getuserinfo", "ownership", nil},
	}
	for _, tt := range config {
		t.Run(fmt.Sprint(tt.code), func(t *testing.T) {
			e := MustEnv(t, nil, nil)
			c := e.MustConnector(t, tt.change)
			if tt.change == nil {
				e.sim.FailNext(tt.endpoint, tt.code)
				e.sim.FailNext(tt.endpoint, tt.code) // would be consumed by a retry
			}
			_, err := e.login(c, "zhangsan")
			assertOutcome(t, err, misconfigured, tt.code)
			assertCalls(t, e, tt.endpoint, 1)
			if tt.endpoint != "gettoken" {
				assertCalls(t, e, "gettoken", 1)
			}
			assertWaits(t, e)
			if e.countLines("ERROR", "CONFIGURATION PROBLEM") != 1 || !strings.Contains(e.logs.String(), tt.hint) {
				t.Errorf("want one ERROR with a hint mentioning %q:\n%s", tt.hint, e.logs)
			}
		})
	}

	t.Run("errcode without a policy", func(t *testing.T) {
		e := MustEnv(t, nil, nil)
		c := e.MustConnector(t, nil)
		e.sim.FailNext("user/get", 40058)
		_, err := e.login(c, "zhangsan")
		assertOutcome(t, err, unavailable, 40058)
		assertCalls(t, e, "user/get", 1)
	})
}

func TestAPIErrorClasses(t *testing.T) {
	for _, tt := range []struct {
		code      int
		transient bool
		config    bool
	}{
		{-1, true, false}, {45009, true, false}, {45033, true, false},
		{40082, false, true}, {42009, false, true}, {80001, false, true}, {85004, false, true}, {85005, false, true},
		{60011, false, false}, {50002, false, false}, {40029, false, false},
	} {
		e := &wecom.APIError{Endpoint: "user/get", Code: tt.code}
		if e.Transient() != tt.transient || e.ConfigFault() != tt.config {
			t.Errorf("%d: Transient %v ConfigFault %v, want %v %v", tt.code, e.Transient(), e.ConfigFault(), tt.transient, tt.config)
		}
	}
}

func TestConcurrent45009WarnsOnce(t *testing.T) {
	e := MustEnv(t, nil, nil)
	c := e.MustConnector(t, nil)
	MustLogin(t, c, e.sim.Code("zhangsan", false, ""), uaBrowser) // token cached
	for range 8 {
		e.sim.FailNext("user/get", 45009)
	}
	errs := make(chan error, 8)
	for range 8 {
		go func() {
			_, err := c.Recheck(context.Background(), "zhangsan")
			errs <- err
		}()
	}
	for range 8 {
		assertOutcome(t, <-errs, unavailable, 45009)
	}
	if n := e.countLines("WARN", "45009"); n != 1 {
		t.Errorf("%d warnings, want 1", n)
	}
	if got := e.sim.Calls("user/get"); got < 2 || got > 9 { // 1 from the login, then 1 to 8
		t.Errorf("user/get calls = %d", got)
	}
}

// TestExportedCallsClassified: the API methods the connector exports carry the classes too.
func TestExportedCallsClassified(t *testing.T) {
	e := MustEnv(t, nil, nil)
	c := e.MustConnector(t, nil)
	ctx := context.Background()

	e.sim.SetHTTPStatus("user/get", 502)
	_, err := c.GetUser(ctx, "lisi")
	assertOutcome(t, err, unavailable, 0)
	e.sim.SetHTTPStatus("user/get", 0)

	e.sim.SetGarbage("department/get", true)
	_, err = c.Department(ctx, 4)
	assertOutcome(t, err, unavailable, 0)
	e.sim.SetGarbage("department/get", false)

	e.sim.FailNext("user/get", 60020)
	_, err = c.GetUser(ctx, "lisi")
	assertOutcome(t, err, misconfigured, 60020)

	// Errcodes whose meaning depends on the call carry no class: the caller decides.
	e.sim.FailNext("user/get", 60011)
	_, err = c.GetUser(ctx, "lisi")
	if wecom.ErrCode(err) != 60011 || errors.Is(err, upstream.ErrUnavailable) || errors.Is(err, upstream.ErrMisconfigured) {
		t.Errorf("GetUser 60011: %v, want the bare APIError", err)
	}
}
