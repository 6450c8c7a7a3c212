package storagetest

import (
	"errors"
	"testing"
	"time"

	"github.com/wecom-oidc/wecom-oidc/storage"
)

// This file covers what revokes tokens wholesale: a replayed authorization code (every token
// issued from its auth request) and the end of an SSO session (every refresh family issued under
// it), and the sweeping of what a store keeps to find those tokens.

// exchange stores what a code exchange for auth request arID produces: the access token
// "at_<name>" and, when family is not "", the first refresh token "<name>" of family, issued
// under sessionID. Access ttl 1h, refresh ttl 24h.
func (e *env) exchange(tb testing.TB, arID, name, family, sessionID string) (storage.AccessToken, *storage.RefreshToken) {
	tb.Helper()
	at := e.access(name, family, time.Hour)
	at.AuthRequestID = arID
	if family == "" {
		noErr(tb, e.s.CreateTokens(e.ctx, at, nil), "CreateTokens("+name+")")
		return at, nil
	}
	rt := e.refresh(name, family, 24*time.Hour)
	rt.SessionID = sessionID
	noErr(tb, e.s.CreateTokens(e.ctx, at, &rt), "CreateTokens("+name+")")
	return at, &rt
}

// notLive asserts that the tokens cannot be used: each reads ErrRevoked or ErrNotFound.
func (e *env) notLive(tb testing.TB, rts []storage.RefreshToken, ats []storage.AccessToken) {
	tb.Helper()
	dead := func(err error) bool { return errors.Is(err, storage.ErrRevoked) || errors.Is(err, storage.ErrNotFound) }
	for _, rt := range rts {
		if _, err := e.s.GetRefreshToken(e.ctx, rt.Hash); !dead(err) {
			tb.Fatalf("GetRefreshToken(%s): %v, want ErrRevoked or ErrNotFound", rt.ID, err)
		}
	}
	for _, at := range ats {
		if _, err := e.s.GetAccessToken(e.ctx, at.ID); !dead(err) {
			tb.Fatalf("GetAccessToken(%s): %v, want ErrRevoked or ErrNotFound", at.ID, err)
		}
	}
}

// consume redeems code, which must succeed.
func (e *env) consume(tb testing.TB, code string) {
	tb.Helper()
	_, err := e.s.ConsumeCode(e.ctx, code)
	noErr(tb, err, "ConsumeCode")
}

func revocationCases() []testCase {
	return []testCase{
		{"CodeReplay/RevokesIssuedTokens", testCodeReplayRevokes},
		{"CodeReplay/BeforeTokensRefusesThem", func(t *testing.T, e *env) {
			// A replay can race the first exchange and land between its ConsumeCode and its
			// CreateTokens: the tokens "issued from that auth request" must not come out live.
			_, code := e.issueCode(t, "ar1", 10*time.Minute, time.Minute)
			e.consume(t, code)
			_, err := e.s.ConsumeCode(e.ctx, code)
			isErr(t, err, storage.ErrAlreadyUsed, "replayed ConsumeCode")
			at := e.access("late", "f1", time.Hour)
			at.AuthRequestID = "ar1"
			rt := e.refresh("late", "f1", 24*time.Hour)
			if err := e.s.CreateTokens(e.ctx, at, &rt); err == nil {
				e.notLive(t, []storage.RefreshToken{rt}, []storage.AccessToken{at})
			}
			// Another request's exchange is not affected.
			_, code2 := e.issueCode(t, "ar2", 10*time.Minute, time.Minute)
			e.consume(t, code2)
			at2, rt2 := e.exchange(t, "ar2", "ar2-tok", "f2", "")
			e.tokensLive(t, []storage.RefreshToken{*rt2}, []storage.AccessToken{at2})
		}},
		{"CodeReplay/AfterRotationExtendedTheFamily", func(t *testing.T, e *env) {
			// The family outlives the expiry it was issued with (a rotation extended it) and a
			// sweep ran in between: the replay must still find and revoke it.
			t0 := e.clock.Now()
			_, code := e.issueCode(t, "ar1", 10*time.Minute, 10*time.Minute)
			e.consume(t, code)
			at0 := e.access("f1-0", "f1", time.Minute)
			at0.AuthRequestID = "ar1"
			rt0 := e.refresh("f1-0", "f1", 2*time.Minute)
			noErr(t, e.s.CreateTokens(e.ctx, at0, &rt0), "CreateTokens")
			noErr(t, e.s.DeleteAuthRequest(e.ctx, "ar1"), "DeleteAuthRequest")
			e.clock.Advance(time.Minute)
			rt1, at1, err := e.rotate(t, rt0, 1) // 24h refresh, 1h access
			noErr(t, err, "RotateRefreshToken")
			e.clock.Set(t0.Add(5 * time.Minute)) // past every expiry the family was issued with
			_, err = e.s.DeleteExpired(e.ctx)
			noErr(t, err, "DeleteExpired")
			e.tokensLive(t, []storage.RefreshToken{rt1}, []storage.AccessToken{at1})
			_, err = e.s.ConsumeCode(e.ctx, code)
			isErr(t, err, storage.ErrAlreadyUsed, "replayed ConsumeCode")
			e.familyDead(t, []storage.RefreshToken{rt1}, []storage.AccessToken{at1})
		}},
		{"CodeReplay/AfterTheAccessTokenWasSwept", func(t *testing.T, e *env) {
			// The access token issued with the family expires long before the family does.
			t0 := e.clock.Now()
			_, code := e.issueCode(t, "ar1", 10*time.Minute, 10*time.Minute)
			e.consume(t, code)
			at := e.access("f1-0", "f1", time.Minute)
			at.AuthRequestID = "ar1"
			rt := e.refresh("f1-0", "f1", 5*time.Minute)
			noErr(t, e.s.CreateTokens(e.ctx, at, &rt), "CreateTokens")
			e.clock.Set(t0.Add(2 * time.Minute))
			_, err := e.s.DeleteExpired(e.ctx)
			noErr(t, err, "DeleteExpired")
			e.tokensLive(t, []storage.RefreshToken{rt}, nil)
			_, err = e.s.ConsumeCode(e.ctx, code)
			isErr(t, err, storage.ErrAlreadyUsed, "replayed ConsumeCode")
			e.familyDead(t, []storage.RefreshToken{rt}, nil)
		}},
		{"EndSession/RevokesItsFamilies", testEndSession},
		{"EndSession/AfterTheAccessTokenWasSwept", func(t *testing.T, e *env) {
			t0 := e.clock.Now()
			s := e.session("1", 8*time.Hour)
			noErr(t, e.s.CreateSession(e.ctx, s), "CreateSession")
			at := e.access("f1-0", "f1", time.Minute)
			rt := e.refresh("f1-0", "f1", 5*time.Minute)
			rt.SessionID = s.ID
			noErr(t, e.s.CreateTokens(e.ctx, at, &rt), "CreateTokens")
			e.clock.Set(t0.Add(2 * time.Minute))
			_, err := e.s.DeleteExpired(e.ctx)
			noErr(t, err, "DeleteExpired")
			_, err = e.s.EndSession(e.ctx, s.ID)
			noErr(t, err, "EndSession")
			e.familyDead(t, []storage.RefreshToken{rt}, nil)
		}},
		{"EndSession/UnknownOrExpiredRevokesNothing", func(t *testing.T, e *env) {
			_, err := e.s.EndSession(e.ctx, storage.HashSecret("nope"))
			isErr(t, err, storage.ErrNotFound, "EndSession(unknown)")
			s := e.session("1", 30*time.Minute)
			noErr(t, e.s.CreateSession(e.ctx, s), "CreateSession")
			at, rt := e.exchange(t, "ar1", "f1-0", "f1", s.ID)
			e.clock.Set(s.ExpiresAt)
			_, err = e.s.EndSession(e.ctx, s.ID)
			isErr(t, err, storage.ErrNotFound, "EndSession at the session's expiry")
			e.tokensLive(t, []storage.RefreshToken{*rt}, []storage.AccessToken{at})
		}},
		{"EndSession/DeleteSessionRevokesNothing", func(t *testing.T, e *env) {
			s := e.session("1", 8*time.Hour)
			noErr(t, e.s.CreateSession(e.ctx, s), "CreateSession")
			at, rt := e.exchange(t, "ar1", "f1-0", "f1", s.ID)
			noErr(t, e.s.DeleteSession(e.ctx, s.ID), "DeleteSession")
			e.tokensLive(t, []storage.RefreshToken{*rt}, []storage.AccessToken{at})
			_, err := e.s.EndSession(e.ctx, s.ID)
			isErr(t, err, storage.ErrNotFound, "EndSession after DeleteSession")
			e.tokensLive(t, []storage.RefreshToken{*rt}, []storage.AccessToken{at})
		}},
		{"EndSession/AfterRotationExtendedTheFamily", func(t *testing.T, e *env) {
			t0 := e.clock.Now()
			s := e.session("1", 8*time.Hour)
			noErr(t, e.s.CreateSession(e.ctx, s), "CreateSession")
			at0 := e.access("f1-0", "f1", time.Minute)
			rt0 := e.refresh("f1-0", "f1", 2*time.Minute)
			rt0.SessionID = s.ID
			noErr(t, e.s.CreateTokens(e.ctx, at0, &rt0), "CreateTokens")
			e.clock.Advance(time.Minute)
			rt1, at1, err := e.rotate(t, rt0, 1)
			noErr(t, err, "RotateRefreshToken")
			e.clock.Set(t0.Add(5 * time.Minute))
			_, err = e.s.DeleteExpired(e.ctx)
			noErr(t, err, "DeleteExpired")
			e.tokensLive(t, []storage.RefreshToken{rt1}, []storage.AccessToken{at1})
			_, err = e.s.EndSession(e.ctx, s.ID)
			noErr(t, err, "EndSession")
			e.familyDead(t, []storage.RefreshToken{rt1}, []storage.AccessToken{at1})
		}},
		{"DeleteExpired/RevocationBookkeepingNotCounted", func(t *testing.T, e *env) {
			// Whatever a store keeps to find tokens by auth request or session is swept with them
			// and counted under no kind.
			t0 := e.clock.Now()
			s := e.session("1", 8*time.Hour)
			noErr(t, e.s.CreateSession(e.ctx, s), "CreateSession")
			_, code := e.issueCode(t, "ar1", 10*time.Minute, time.Minute)
			e.consume(t, code)
			at, rt := e.exchange(t, "ar1", "f1-0", "f1", s.ID)
			rt1, at1, err := e.rotate(t, *rt, 1)
			noErr(t, err, "RotateRefreshToken")
			_, code2 := e.issueCode(t, "ar2", 10*time.Minute, time.Minute)
			e.consume(t, code2)
			at2, _ := e.exchange(t, "ar2", "plain", "", "")
			_, err = e.s.ConsumeCode(e.ctx, code2) // a replay: revokes at2
			isErr(t, err, storage.ErrAlreadyUsed, "replayed ConsumeCode")
			noErr(t, e.s.AddSessionClient(e.ctx, s.ID, "grafana"), "AddSessionClient")

			e.clock.Set(t0.Add(25 * time.Hour))
			res, err := e.s.DeleteExpired(e.ctx)
			noErr(t, err, "DeleteExpired")
			// ar1 and ar2 went with their exchanges (CreateTokens deletes the request).
			want := storage.GCResult{Codes: 2, AccessTokens: 3, RefreshTokens: 2, Sessions: 1}
			equal(t, res, want, "DeleteExpired counts")
			res, err = e.s.DeleteExpired(e.ctx)
			noErr(t, err, "second DeleteExpired")
			equal(t, res, storage.GCResult{}, "second DeleteExpired")

			e.clock.Set(t0)
			_, err = e.s.ConsumeCode(e.ctx, code)
			isErr(t, err, storage.ErrNotFound, "ConsumeCode of a swept tombstone")
			_, err = e.s.EndSession(e.ctx, s.ID)
			isErr(t, err, storage.ErrNotFound, "EndSession of a swept session")
			for _, id := range []string{at.ID, at1.ID, at2.ID} {
				_, err = e.s.GetAccessToken(e.ctx, id)
				isErr(t, err, storage.ErrNotFound, "GetAccessToken("+id+") after the sweep")
			}
			for _, r := range []storage.RefreshToken{*rt, rt1} {
				_, err = e.s.GetRefreshToken(e.ctx, r.Hash)
				isErr(t, err, storage.ErrNotFound, "GetRefreshToken("+r.ID+") after the sweep")
			}
		}},
	}
}

func testCodeReplayRevokes(t *testing.T, e *env) {
	_, code1 := e.issueCode(t, "ar1", 10*time.Minute, time.Minute)
	_, code2 := e.issueCode(t, "ar2", 10*time.Minute, time.Minute)
	_, code3 := e.issueCode(t, "ar3", 10*time.Minute, time.Minute)
	for _, c := range []string{code1, code2, code3} {
		e.consume(t, c)
	}
	sess := e.session("1", 8*time.Hour)
	noErr(t, e.s.CreateSession(e.ctx, sess), "CreateSession")
	at1, rt1 := e.exchange(t, "ar1", "f1-0", "f1", sess.ID) // with offline_access
	at2, _ := e.exchange(t, "ar2", "plain", "", "")         // access token only
	at3, rt3 := e.exchange(t, "ar3", "f3-0", "f3", sess.ID) // another request, same session
	atX, rtX := e.issueFamily(t, "fx")                      // from an auth request with no code here
	// The client used the first tokens: the refresh token was rotated after the first use.
	rt1b, at1b, err := e.rotate(t, *rt1, 1)
	noErr(t, err, "RotateRefreshToken")
	// The OP deletes the auth request right after issuing tokens.
	noErr(t, e.s.DeleteAuthRequest(e.ctx, "ar1"), "DeleteAuthRequest(ar1)")

	_, err = e.s.ConsumeCode(e.ctx, code1)
	isErr(t, err, storage.ErrAlreadyUsed, "replayed ConsumeCode(ar1) after DeleteAuthRequest")
	e.familyDead(t, []storage.RefreshToken{rt1b}, []storage.AccessToken{at1, at1b})
	_, _, err = e.rotate(t, rt1b, 2)
	isErr(t, err, storage.ErrRevoked, "RotateRefreshToken in the revoked family")
	e.tokensLive(t, []storage.RefreshToken{*rt3, rtX}, []storage.AccessToken{at2, at3, atX})

	_, err = e.s.ConsumeCode(e.ctx, code2)
	isErr(t, err, storage.ErrAlreadyUsed, "replayed ConsumeCode(ar2), auth request still stored")
	_, err = e.s.GetAccessToken(e.ctx, at2.ID)
	isErr(t, err, storage.ErrRevoked, "GetAccessToken of the replayed code's access-only token")
	e.tokensLive(t, []storage.RefreshToken{*rt3, rtX}, []storage.AccessToken{at3, atX})

	// Replaying again changes nothing and still says so.
	_, err = e.s.ConsumeCode(e.ctx, code1)
	isErr(t, err, storage.ErrAlreadyUsed, "second replay of ar1's code")
	e.familyDead(t, []storage.RefreshToken{rt1b}, []storage.AccessToken{at1, at1b})
	e.tokensLive(t, []storage.RefreshToken{*rt3, rtX}, []storage.AccessToken{at3, atX})
}

func testEndSession(t *testing.T, e *env) {
	sA := e.session("a", 8*time.Hour)
	sB := e.session("b", 8*time.Hour)
	noErr(t, e.s.CreateSession(e.ctx, sA), "CreateSession(a)")
	noErr(t, e.s.CreateSession(e.ctx, sB), "CreateSession(b)")
	noErr(t, e.s.AddSessionClient(e.ctx, sA.ID, "grafana"), "AddSessionClient")

	atA1, rtA1 := e.exchange(t, "ar-a1", "fa1-0", "fa1", sA.ID)
	atA2, rtA2 := e.exchange(t, "ar-a2", "fa2-0", "fa2", sA.ID)
	rtA2b, atA2b, err := e.rotate(t, *rtA2, 1)
	noErr(t, err, "rotate fa2 0→1")
	rtA2c, atA2c, err := e.rotate(t, rtA2b, 2)
	noErr(t, err, "rotate fa2 1→2")
	atB, rtB := e.exchange(t, "ar-b", "fb-0", "fb", sB.ID)
	atN, rtN := e.exchange(t, "ar-n", "fn-0", "fn", "")
	atPlain, _ := e.exchange(t, "ar-p", "plain", "", "")

	got, err := e.s.EndSession(e.ctx, sA.ID)
	noErr(t, err, "EndSession")
	want := sA
	want.Clients = []string{"rp-a", "grafana"}
	equal(t, got, want, "EndSession returns the session as it was")

	e.familyDead(t, []storage.RefreshToken{*rtA1, rtA2c}, []storage.AccessToken{atA1, atA2, atA2b, atA2c})
	e.tokensLive(t, []storage.RefreshToken{*rtB, *rtN}, []storage.AccessToken{atB, atN, atPlain})
	_, err = e.s.GetSession(e.ctx, sA.ID)
	isErr(t, err, storage.ErrNotFound, "GetSession after EndSession")
	gotB, err := e.s.GetSession(e.ctx, sB.ID)
	noErr(t, err, "GetSession(b)")
	equal(t, gotB, sB, "the other session")

	_, err = e.s.EndSession(e.ctx, sA.ID)
	isErr(t, err, storage.ErrNotFound, "second EndSession")
	e.tokensLive(t, []storage.RefreshToken{*rtB, *rtN}, []storage.AccessToken{atB, atN, atPlain})

	// Ending the other session now revokes its family, and only that.
	got, err = e.s.EndSession(e.ctx, sB.ID)
	noErr(t, err, "EndSession(b)")
	equal(t, got, sB, "EndSession(b)")
	e.familyDead(t, []storage.RefreshToken{*rtB}, []storage.AccessToken{atB})
	e.tokensLive(t, []storage.RefreshToken{*rtN}, []storage.AccessToken{atN, atPlain})
}
