package storagetest

import (
	"fmt"
	"testing"
	"time"

	"github.com/wecom-oidc/wecom-oidc/storage"
)

// This file covers access tokens, refresh tokens, rotation and reuse detection.

// familyDead asserts that every given refresh token of a family reads ErrRevoked and every given
// access token ErrRevoked.
func (e *env) familyDead(tb testing.TB, rts []storage.RefreshToken, ats []storage.AccessToken) {
	tb.Helper()
	for _, rt := range rts {
		_, err := e.s.GetRefreshToken(e.ctx, rt.Hash)
		isErr(tb, err, storage.ErrRevoked, "GetRefreshToken("+rt.ID+") of a revoked family")
	}
	for _, at := range ats {
		_, err := e.s.GetAccessToken(e.ctx, at.ID)
		isErr(tb, err, storage.ErrRevoked, "GetAccessToken("+at.ID+") of a revoked family")
	}
}

// tokensLive asserts that the given tokens read back unchanged.
func (e *env) tokensLive(tb testing.TB, rts []storage.RefreshToken, ats []storage.AccessToken) {
	tb.Helper()
	for _, rt := range rts {
		got, err := e.s.GetRefreshToken(e.ctx, rt.Hash)
		noErr(tb, err, "GetRefreshToken("+rt.ID+")")
		equal(tb, got, rt, "GetRefreshToken("+rt.ID+")")
	}
	for _, at := range ats {
		got, err := e.s.GetAccessToken(e.ctx, at.ID)
		noErr(tb, err, "GetAccessToken("+at.ID+")")
		equal(tb, got, at, "GetAccessToken("+at.ID+")")
	}
}

func tokenCases() []testCase {
	return []testCase{
		{"Token/AccessOnly", func(t *testing.T, e *env) {
			at := e.access("a1", "", time.Hour)
			noErr(t, e.s.CreateTokens(e.ctx, at, nil), "CreateTokens(access only)")
			e.tokensLive(t, nil, []storage.AccessToken{at})
		}},
		{"Token/AccessAndRefresh", func(t *testing.T, e *env) {
			at, rt := e.issueFamily(t, "f1")
			e.tokensLive(t, []storage.RefreshToken{rt}, []storage.AccessToken{at})
		}},
		{"Token/Unknown", func(t *testing.T, e *env) {
			_, _ = e.issueFamily(t, "f1")
			_, err := e.s.GetAccessToken(e.ctx, "at_nope")
			isErr(t, err, storage.ErrNotFound, "GetAccessToken(unknown)")
			_, err = e.s.GetRefreshToken(e.ctx, storage.HashSecret("nope"))
			isErr(t, err, storage.ErrNotFound, "GetRefreshToken(unknown)")
			next := e.refresh("n", "f1", time.Hour)
			err = e.s.RotateRefreshToken(e.ctx, storage.HashSecret("nope"), next, e.access("n", "f1", time.Hour))
			isErr(t, err, storage.ErrNotFound, "RotateRefreshToken(unknown)")
			_, err = e.s.GetRefreshToken(e.ctx, next.Hash)
			isErr(t, err, storage.ErrNotFound, "next token of a failed rotation")
		}},
		{"Token/Expiry", func(t *testing.T, e *env) {
			at := e.access("a1", "f1", time.Hour)
			rt := e.refresh("r1", "f1", 2*time.Hour)
			noErr(t, e.s.CreateTokens(e.ctx, at, &rt), "CreateTokens")
			e.clock.Set(at.ExpiresAt.Add(-time.Nanosecond))
			e.tokensLive(t, []storage.RefreshToken{rt}, []storage.AccessToken{at})
			e.clock.Set(at.ExpiresAt)
			_, err := e.s.GetAccessToken(e.ctx, at.ID)
			isErr(t, err, storage.ErrNotFound, "GetAccessToken at ExpiresAt")
			e.tokensLive(t, []storage.RefreshToken{rt}, nil)
			e.clock.Set(rt.ExpiresAt)
			_, err = e.s.GetRefreshToken(e.ctx, rt.Hash)
			isErr(t, err, storage.ErrNotFound, "GetRefreshToken at ExpiresAt")
			next := e.refresh("r2", "f1", time.Hour)
			err = e.s.RotateRefreshToken(e.ctx, rt.Hash, next, e.access("a2", "f1", time.Hour))
			isErr(t, err, storage.ErrNotFound, "RotateRefreshToken of an expired token")
		}},
		{"Token/RevokeAccessToken", func(t *testing.T, e *env) {
			at1, rt1 := e.issueFamily(t, "f1")
			at2 := e.access("a2", "", time.Hour)
			noErr(t, e.s.CreateTokens(e.ctx, at2, nil), "CreateTokens(a2)")
			noErr(t, e.s.RevokeAccessToken(e.ctx, at1.ID), "RevokeAccessToken")
			_, err := e.s.GetAccessToken(e.ctx, at1.ID)
			isErr(t, err, storage.ErrRevoked, "GetAccessToken after revocation")
			noErr(t, e.s.RevokeAccessToken(e.ctx, at1.ID), "second RevokeAccessToken")
			noErr(t, e.s.RevokeAccessToken(e.ctx, "at_unknown"), "RevokeAccessToken(unknown)")
			// Neither another token nor the family's refresh token is affected.
			e.tokensLive(t, []storage.RefreshToken{rt1}, []storage.AccessToken{at2})
		}},
		{"Token/RevokeRefreshFamily", func(t *testing.T, e *env) {
			at1, rt1 := e.issueFamily(t, "f1")
			at2, rt2 := e.issueFamily(t, "f2")
			noErr(t, e.s.RevokeRefreshFamily(e.ctx, "f1"), "RevokeRefreshFamily")
			e.familyDead(t, []storage.RefreshToken{rt1}, []storage.AccessToken{at1})
			next, at, err := e.rotate(t, rt1, 1)
			isErr(t, err, storage.ErrRevoked, "RotateRefreshToken in a revoked family")
			_, err = e.s.GetRefreshToken(e.ctx, next.Hash)
			isErr(t, err, storage.ErrNotFound, "next token of a refused rotation")
			_, err = e.s.GetAccessToken(e.ctx, at.ID)
			isErr(t, err, storage.ErrNotFound, "access token of a refused rotation")
			noErr(t, e.s.RevokeRefreshFamily(e.ctx, "f1"), "second RevokeRefreshFamily")
			noErr(t, e.s.RevokeRefreshFamily(e.ctx, "unknown"), "RevokeRefreshFamily(unknown)")
			e.tokensLive(t, []storage.RefreshToken{rt2}, []storage.AccessToken{at2})
		}},
		{"Token/RevokeFamilyAfterRotations", func(t *testing.T, e *env) {
			at0, rt0 := e.issueFamily(t, "f1")
			rt1, at1, err := e.rotate(t, rt0, 1)
			noErr(t, err, "rotate 0→1")
			rt2, at2, err := e.rotate(t, rt1, 2)
			noErr(t, err, "rotate 1→2")
			noErr(t, e.s.RevokeRefreshFamily(e.ctx, "f1"), "RevokeRefreshFamily")
			e.familyDead(t, []storage.RefreshToken{rt2}, []storage.AccessToken{at0, at1, at2})
		}},
		{"Token/Rotate", func(t *testing.T, e *env) {
			at0, rt0 := e.issueFamily(t, "f1")
			e.clock.Advance(time.Minute)
			rt1, at1, err := e.rotate(t, rt0, 1)
			noErr(t, err, "RotateRefreshToken")
			e.tokensLive(t, []storage.RefreshToken{rt1}, []storage.AccessToken{at0, at1})
			e.clock.Advance(time.Minute)
			rt2, at2, err := e.rotate(t, rt1, 2)
			noErr(t, err, "second RotateRefreshToken")
			e.tokensLive(t, []storage.RefreshToken{rt2}, []storage.AccessToken{at0, at1, at2})
		}},
		{"Token/ReuseViaGetRevokesFamily", func(t *testing.T, e *env) {
			at0, rt0 := e.issueFamily(t, "f1")
			atOther, rtOther := e.issueFamily(t, "f2")
			rt1, at1, err := e.rotate(t, rt0, 1)
			noErr(t, err, "RotateRefreshToken")
			_, err = e.s.GetRefreshToken(e.ctx, rt0.Hash)
			isErr(t, err, storage.ErrTokenReused, "GetRefreshToken(rotated)")
			e.familyDead(t, []storage.RefreshToken{rt1}, []storage.AccessToken{at0, at1})
			// Presenting the rotated token again, by either door, still says reuse.
			_, err = e.s.GetRefreshToken(e.ctx, rt0.Hash)
			isErr(t, err, storage.ErrTokenReused, "GetRefreshToken(rotated) again")
			_, _, err = e.rotate(t, rt0, 2)
			isErr(t, err, storage.ErrTokenReused, "RotateRefreshToken(rotated)")
			_, _, err = e.rotate(t, rt1, 3)
			isErr(t, err, storage.ErrRevoked, "RotateRefreshToken(newest) after reuse")
			e.tokensLive(t, []storage.RefreshToken{rtOther}, []storage.AccessToken{atOther})
		}},
		{"Token/ReuseViaRotateRevokesFamily", func(t *testing.T, e *env) {
			at0, rt0 := e.issueFamily(t, "f1")
			rt1, at1, err := e.rotate(t, rt0, 1)
			noErr(t, err, "RotateRefreshToken")
			rt2, at2, err := e.rotate(t, rt0, 2)
			isErr(t, err, storage.ErrTokenReused, "RotateRefreshToken(rotated)")
			_, err = e.s.GetRefreshToken(e.ctx, rt2.Hash)
			isErr(t, err, storage.ErrNotFound, "next token of the refused rotation")
			_, err = e.s.GetAccessToken(e.ctx, at2.ID)
			isErr(t, err, storage.ErrNotFound, "access token of the refused rotation")
			e.familyDead(t, []storage.RefreshToken{rt1}, []storage.AccessToken{at0, at1})
			_, err = e.s.GetRefreshToken(e.ctx, rt0.Hash)
			isErr(t, err, storage.ErrTokenReused, "GetRefreshToken(rotated) after reuse")
		}},
		{"Token/ConcurrentRotateExactlyOnce", func(t *testing.T, e *env) {
			const goroutines = 8
			for round := range raceRounds {
				family := fmt.Sprintf("race-%d", round)
				at0, rt0 := e.issueFamily(t, family)
				type result struct {
					rt  storage.RefreshToken
					at  storage.AccessToken
					err error
				}
				results := race(goroutines, func(i int) result {
					rt, at, err := e.rotate(t, rt0, i+1)
					return result{rt, at, err}
				})
				var errs []error
				var winner *result
				var losers []result
				for i, r := range results {
					errs = append(errs, r.err)
					if r.err == nil {
						winner = &results[i]
					} else {
						losers = append(losers, r)
					}
				}
				ok, matched, other := countErrs(errs, storage.ErrTokenReused)
				if ok != 1 || matched[storage.ErrTokenReused] != goroutines-1 || len(other) != 0 {
					t.Fatalf("round %d: %d winners, %d ErrTokenReused, other errors %v; want 1, %d, none",
						round, ok, matched[storage.ErrTokenReused], other, goroutines-1)
				}
				// The losers presented a rotated token: the family, winner's tokens included, is dead.
				e.familyDead(t, []storage.RefreshToken{winner.rt}, []storage.AccessToken{at0, winner.at})
				for _, l := range losers {
					_, err := e.s.GetRefreshToken(e.ctx, l.rt.Hash)
					isErr(t, err, storage.ErrNotFound, "a losing rotation's next token")
					_, err = e.s.GetAccessToken(e.ctx, l.at.ID)
					isErr(t, err, storage.ErrNotFound, "a losing rotation's access token")
				}
			}
		}},
		{"Token/CreateDuplicates", func(t *testing.T, e *env) {
			at, rt := e.issueFamily(t, "f1")
			// The same refresh family again must not reset a family (for example a revoked one).
			noErr(t, e.s.RevokeRefreshFamily(e.ctx, "f1"), "RevokeRefreshFamily")
			again := e.refresh("f1-fresh", "f1", time.Hour)
			err := e.s.CreateTokens(e.ctx, e.access("fresh", "f1", time.Hour), &again)
			if err == nil {
				t.Fatal("CreateTokens reusing a revoked family id succeeded")
			}
			e.familyDead(t, []storage.RefreshToken{rt}, []storage.AccessToken{at})
		}},
	}
}
