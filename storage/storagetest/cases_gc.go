package storagetest

import (
	"fmt"
	"testing"
	"time"

	"github.com/wecom-oidc/wecom-oidc/storage"
)

// This file covers DeleteExpired.

func gcCases() []testCase {
	return []testCase{
		{"DeleteExpired/Empty", func(t *testing.T, e *env) {
			res, err := e.s.DeleteExpired(e.ctx)
			noErr(t, err, "DeleteExpired")
			equal(t, res, storage.GCResult{}, "DeleteExpired on an empty store")
		}},
		{"DeleteExpired/ExactlyTheExpired", testDeleteExpired},
		{"DeleteExpired/Many", func(t *testing.T, e *env) {
			const n = 25
			errs := race(n, func(i int) error {
				return e.s.CreateAuthRequest(e.ctx, e.authRequest(fmt.Sprintf("old-%02d", i), time.Minute))
			})
			for i, err := range errs {
				noErr(t, err, fmt.Sprintf("concurrent CreateAuthRequest #%d", i))
			}
			e.createAuthRequest(t, e.authRequest("live", time.Hour))
			e.clock.Advance(time.Minute)
			res, err := e.s.DeleteExpired(e.ctx)
			noErr(t, err, "DeleteExpired")
			equal(t, res, storage.GCResult{AuthRequests: n}, "DeleteExpired")
			if res.Total() != n {
				t.Fatalf("Total() = %d, want %d", res.Total(), n)
			}
			_, err = e.s.GetAuthRequest(e.ctx, "live")
			noErr(t, err, "GetAuthRequest(live)")
		}},
	}
}

// testDeleteExpired builds, for every kind, records that will be expired at the sweep and
// records that will not, sweeps, and checks the counts, the survivors, and — by moving the clock
// back to before any expiry — that the expired records are really gone, not merely hidden.
func testDeleteExpired(t *testing.T, e *env) {
	t0 := e.clock.Now()
	const sweepAfter = 30 * time.Minute

	// Auth requests and codes. ("ar-stale", not "ar-old": the access token "old" below names
	// "ar-old" as its auth request, and CreateTokens deletes the request it names.)
	arOld := e.authRequest("ar-stale", 10*time.Minute)
	e.createAuthRequest(t, arOld)
	arLive, codeLive := e.issueCode(t, "ar-live", time.Hour, time.Hour)
	codeOld := storage.HashSecret("code-old")
	noErr(t, e.s.SaveCode(e.ctx, codeOld, "ar-live", t0.Add(5*time.Minute)), "SaveCode(old)")
	codeUsed := storage.HashSecret("code-used")
	noErr(t, e.s.SaveCode(e.ctx, codeUsed, "ar-live", t0.Add(10*time.Minute)), "SaveCode(used)")
	_, err := e.s.ConsumeCode(e.ctx, codeUsed)
	noErr(t, err, "ConsumeCode(used)")

	// Login states: one expiring exactly at the sweep (ExpiresAt <= now is expired), one 1ns later.
	lsOld := e.loginState("state-old", "ar-live", sweepAfter)
	lsLive := e.loginState("state-live", "ar-live", sweepAfter+time.Nanosecond)
	noErr(t, e.s.CreateLoginState(e.ctx, lsOld), "CreateLoginState(old)")
	noErr(t, e.s.CreateLoginState(e.ctx, lsLive), "CreateLoginState(live)")

	// Tokens. Family "old" dies entirely. In family "live" the first access token and the
	// rotated first refresh token expire, while the rotated-to tokens live on: sweeping the
	// expired members must not break (or revoke) the family.
	atOld := e.access("old", "old", 10*time.Minute)
	rtOld := e.refresh("old", "old", 20*time.Minute)
	noErr(t, e.s.CreateTokens(e.ctx, atOld, &rtOld), "CreateTokens(old)")
	atA := e.access("live-a", "live", 5*time.Minute)
	rtA := e.refresh("live-a", "live", 20*time.Minute)
	noErr(t, e.s.CreateTokens(e.ctx, atA, &rtA), "CreateTokens(live)")
	rtB := e.refresh("live-b", "live", 2*time.Hour)
	atB := e.access("live-b", "live", time.Hour)
	noErr(t, e.s.RotateRefreshToken(e.ctx, rtA.Hash, rtB, atB), "RotateRefreshToken(live)")
	atPlain := e.access("plain", "", time.Hour)
	noErr(t, e.s.CreateTokens(e.ctx, atPlain, nil), "CreateTokens(plain)")

	// Sessions and the upstream token (swept, but not counted: GCResult has no field for it).
	sessOld := e.session("old", 10*time.Minute)
	sessLive := e.session("live", 24*time.Hour)
	noErr(t, e.s.CreateSession(e.ctx, sessOld), "CreateSession(old)")
	noErr(t, e.s.CreateSession(e.ctx, sessLive), "CreateSession(live)")
	upOld := e.upstream("corp/old", "tok-old", 10*time.Minute)
	upLive := e.upstream("corp/live", "tok-live", 2*time.Hour)
	noErr(t, e.s.PutUpstreamToken(e.ctx, upOld), "PutUpstreamToken(old)")
	noErr(t, e.s.PutUpstreamToken(e.ctx, upLive), "PutUpstreamToken(live)")

	// Cross-device sign-ins. The old device authorization's user code goes with it; the live
	// one's stays.
	scanOld := e.scanLogin("old", 10*time.Minute)
	scanLive := e.scanLogin("live", time.Hour)
	noErr(t, e.s.CreateScanLogin(e.ctx, scanOld), "CreateScanLogin(old)")
	noErr(t, e.s.CreateScanLogin(e.ctx, scanLive), "CreateScanLogin(live)")
	devOld := e.deviceAuth("old", "BCDF-GHJK", 10*time.Minute)
	devLive := e.deviceAuth("live", "LMNP-QRST", time.Hour)
	noErr(t, e.s.CreateDeviceAuthorization(e.ctx, devOld), "CreateDeviceAuthorization(old)")
	noErr(t, e.s.CreateDeviceAuthorization(e.ctx, devLive), "CreateDeviceAuthorization(live)")

	// Records without an expiry are never swept.
	noErr(t, e.s.CreateClient(e.ctx, e.client("c")), "CreateClient")
	noErr(t, e.s.PutUser(e.ctx, e.user("u")), "PutUser")
	noErr(t, e.s.PutKey(e.ctx, e.key("k", t0)), "PutKey")

	res, err := e.s.DeleteExpired(e.ctx)
	noErr(t, err, "DeleteExpired before anything expired")
	equal(t, res, storage.GCResult{}, "DeleteExpired before anything expired")

	e.clock.Set(t0.Add(sweepAfter))
	res, err = e.s.DeleteExpired(e.ctx)
	noErr(t, err, "DeleteExpired")
	want := storage.GCResult{AuthRequests: 1, Codes: 2, LoginStates: 1, AccessTokens: 2, RefreshTokens: 2, Sessions: 1,
		ScanLogins: 1, DeviceAuths: 1}
	equal(t, res, want, "DeleteExpired counts")
	if res.Total() != 11 {
		t.Fatalf("Total() = %d, want 11", res.Total())
	}
	res, err = e.s.DeleteExpired(e.ctx)
	noErr(t, err, "second DeleteExpired")
	equal(t, res, storage.GCResult{}, "second DeleteExpired (idempotent)")

	checkSurvivors := func(when string) {
		t.Helper()
		got, err := e.s.GetAuthRequest(e.ctx, "ar-live")
		noErr(t, err, when+": GetAuthRequest(live)")
		equal(t, got, arLive, when+": GetAuthRequest(live)")
		e.tokensLive(t, []storage.RefreshToken{rtB}, []storage.AccessToken{atB, atPlain})
		gotS, err := e.s.GetSession(e.ctx, sessLive.ID)
		noErr(t, err, when+": GetSession(live)")
		equal(t, gotS, sessLive, when+": GetSession(live)")
		gotU, err := e.s.GetUpstreamToken(e.ctx, upLive.Key)
		noErr(t, err, when+": GetUpstreamToken(live)")
		equal(t, gotU, upLive, when+": GetUpstreamToken(live)")
		gotScan, err := e.s.GetScanLogin(e.ctx, scanLive.HandleHash)
		noErr(t, err, when+": GetScanLogin(live)")
		equal(t, gotScan, scanLive, when+": GetScanLogin(live)")
		e.deviceAuthIs(t, devLive, when)
		_, err = e.s.GetClient(e.ctx, "c")
		noErr(t, err, when+": GetClient")
		_, err = e.s.GetUser(e.ctx, "u")
		noErr(t, err, when+": GetUser")
		keys, err := e.s.ListKeys(e.ctx)
		noErr(t, err, when+": ListKeys")
		if len(keys) != 1 {
			t.Fatalf("%s: %d keys, want 1", when, len(keys))
		}
	}
	checkSurvivors("after the sweep")

	// Back to t0, when everything was live: what the sweep removed must be gone for good.
	e.clock.Set(t0)
	for _, c := range []struct {
		what string
		err  error
	}{
		{"GetAuthRequest(old)", func() error { _, err := e.s.GetAuthRequest(e.ctx, arOld.ID); return err }()},
		{"ConsumeCode(old)", func() error { _, err := e.s.ConsumeCode(e.ctx, codeOld); return err }()},
		{"ConsumeCode(used tombstone)", func() error { _, err := e.s.ConsumeCode(e.ctx, codeUsed); return err }()},
		{"ConsumeLoginState(old)", func() error { _, err := e.s.ConsumeLoginState(e.ctx, lsOld.State); return err }()},
		{"GetAccessToken(old)", func() error { _, err := e.s.GetAccessToken(e.ctx, atOld.ID); return err }()},
		{"GetAccessToken(live family, first)", func() error { _, err := e.s.GetAccessToken(e.ctx, atA.ID); return err }()},
		{"GetRefreshToken(old)", func() error { _, err := e.s.GetRefreshToken(e.ctx, rtOld.Hash); return err }()},
		// Gone, so not a reuse: this must not revoke family "live".
		{"GetRefreshToken(rotated, swept)", func() error { _, err := e.s.GetRefreshToken(e.ctx, rtA.Hash); return err }()},
		{"GetSession(old)", func() error { _, err := e.s.GetSession(e.ctx, sessOld.ID); return err }()},
		{"GetUpstreamToken(old)", func() error { _, err := e.s.GetUpstreamToken(e.ctx, upOld.Key); return err }()},
		{"GetScanLogin(old)", func() error { _, err := e.s.GetScanLogin(e.ctx, scanOld.HandleHash); return err }()},
		{"GetDeviceAuthorization(old)", func() error { _, err := e.s.GetDeviceAuthorization(e.ctx, devOld.DeviceCodeHash); return err }()},
		{"GetDeviceAuthorizationByUserCode(old)", func() error {
			_, err := e.s.GetDeviceAuthorizationByUserCode(e.ctx, devOld.UserCode)
			return err
		}()},
	} {
		isErr(t, c.err, storage.ErrNotFound, c.what+" after the sweep")
	}
	checkSurvivors("with the clock back")

	// The survivors still work as such.
	got, err := e.s.ConsumeCode(e.ctx, codeLive)
	noErr(t, err, "ConsumeCode(live)")
	equal(t, got, arLive, "ConsumeCode(live)")
	gotLS, err := e.s.ConsumeLoginState(e.ctx, lsLive.State)
	noErr(t, err, "ConsumeLoginState(live)")
	equal(t, gotLS, lsLive, "ConsumeLoginState(live)")
	_, _, err = e.rotate(t, rtB, 3)
	noErr(t, err, "RotateRefreshToken(live family) after the sweep")
}
