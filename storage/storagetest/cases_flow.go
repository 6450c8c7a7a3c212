package storagetest

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/wecom-oidc/wecom-oidc/storage"
)

// This file covers the login flow: auth requests, codes and WeCom login states.

// raceRounds is how many times each concurrency test repeats its race: a store that is only
// usually atomic should fail at least one round.
const raceRounds = 5

func authRequestCases() []testCase {
	return []testCase{
		{"AuthRequest/CreateGet", func(t *testing.T, e *env) {
			ar := e.authRequest("ar1", 10*time.Minute)
			e.createAuthRequest(t, ar)
			got, err := e.s.GetAuthRequest(e.ctx, "ar1")
			noErr(t, err, "GetAuthRequest")
			equal(t, got, ar, "GetAuthRequest")

			bare := storage.AuthRequest{ID: "ar2", ClientID: "c", RedirectURI: "https://rp/cb", ResponseType: "code",
				Scopes: []string{"openid"}, CreatedAt: e.clock.Now(), ExpiresAt: e.clock.Now().Add(time.Minute)}
			e.createAuthRequest(t, bare)
			got, err = e.s.GetAuthRequest(e.ctx, "ar2")
			noErr(t, err, "GetAuthRequest(bare)")
			equal(t, got, bare, "GetAuthRequest(bare)")
		}},
		{"AuthRequest/CreateDuplicate", func(t *testing.T, e *env) {
			ar := e.authRequest("ar1", 10*time.Minute)
			e.createAuthRequest(t, ar)
			other := e.authRequest("ar1", time.Hour)
			other.ClientID = "impostor"
			isErr(t, e.s.CreateAuthRequest(e.ctx, other), storage.ErrAlreadyExists, "second CreateAuthRequest")
			got, err := e.s.GetAuthRequest(e.ctx, "ar1")
			noErr(t, err, "GetAuthRequest")
			equal(t, got, ar, "auth request after a refused create")
		}},
		{"AuthRequest/GetMissing", func(t *testing.T, e *env) {
			_, err := e.s.GetAuthRequest(e.ctx, "nope")
			isErr(t, err, storage.ErrNotFound, "GetAuthRequest(unknown)")
		}},
		{"AuthRequest/Expiry", func(t *testing.T, e *env) {
			ar := e.authRequest("ar1", 10*time.Minute)
			e.createAuthRequest(t, ar)
			e.clock.Set(ar.ExpiresAt.Add(-time.Nanosecond))
			_, err := e.s.GetAuthRequest(e.ctx, "ar1")
			noErr(t, err, "GetAuthRequest 1ns before expiry")
			e.clock.Set(ar.ExpiresAt)
			_, err = e.s.GetAuthRequest(e.ctx, "ar1")
			isErr(t, err, storage.ErrNotFound, "GetAuthRequest at ExpiresAt")
			e.clock.Advance(time.Hour)
			_, err = e.s.GetAuthRequest(e.ctx, "ar1")
			isErr(t, err, storage.ErrNotFound, "GetAuthRequest after expiry")
		}},
		{"AuthRequest/Update", func(t *testing.T, e *env) {
			ar := e.authRequest("ar1", 10*time.Minute)
			e.createAuthRequest(t, ar)
			authTime := e.clock.Now().Add(-time.Second)
			want := ar
			want.BrowserHash = storage.HashSecret("browser")
			want.Done, want.Subject, want.AuthTime = true, "sub-1", authTime
			want.AMR, want.SessionID = []string{"wecom"}, storage.HashSecret("sess")
			calls := 0
			got, err := e.s.UpdateAuthRequest(e.ctx, "ar1", func(r *storage.AuthRequest) error {
				calls++
				if r.ID != "ar1" || r.ClientID != ar.ClientID {
					return fmt.Errorf("fn got %+v", *r)
				}
				r.BrowserHash = want.BrowserHash
				r.Done, r.Subject, r.AuthTime, r.AMR, r.SessionID = true, "sub-1", authTime, []string{"wecom"}, want.SessionID
				return nil
			})
			noErr(t, err, "UpdateAuthRequest")
			if calls != 1 {
				t.Fatalf("fn ran %d times, want 1", calls)
			}
			equal(t, got, want, "UpdateAuthRequest result")
			stored, err := e.s.GetAuthRequest(e.ctx, "ar1")
			noErr(t, err, "GetAuthRequest")
			equal(t, stored, want, "stored auth request after update")
		}},
		{"AuthRequest/UpdateErrorAborts", func(t *testing.T, e *env) {
			ar := e.authRequest("ar1", 10*time.Minute)
			e.createAuthRequest(t, ar)
			errBrowser := errors.New("bound to another browser")
			_, err := e.s.UpdateAuthRequest(e.ctx, "ar1", func(r *storage.AuthRequest) error {
				r.Done, r.Subject, r.BrowserHash = true, "attacker", "x"
				return errBrowser
			})
			isErr(t, err, errBrowser, "UpdateAuthRequest with a failing fn")
			// The contract returns fn's error "as is": not even wrapped.
			if err != errBrowser {
				t.Errorf("UpdateAuthRequest returned %v, want fn's error as is", err)
			}
			got, err := e.s.GetAuthRequest(e.ctx, "ar1")
			noErr(t, err, "GetAuthRequest")
			equal(t, got, ar, "auth request after an aborted update")

			_, err = e.s.UpdateAuthRequest(e.ctx, "ar1", func(r *storage.AuthRequest) error {
				return fmt.Errorf("precondition: %w", storage.ErrConflict)
			})
			isErr(t, err, storage.ErrConflict, "UpdateAuthRequest returning ErrConflict")
		}},
		{"AuthRequest/UpdateMissingOrExpired", func(t *testing.T, e *env) {
			ar := e.authRequest("ar1", 10*time.Minute)
			e.createAuthRequest(t, ar)
			for _, tt := range []struct {
				name, id string
				advance  time.Duration
			}{
				{"unknown", "nope", 0},
				{"expired", "ar1", 10 * time.Minute},
			} {
				e.clock.Advance(tt.advance)
				called := false
				_, err := e.s.UpdateAuthRequest(e.ctx, tt.id, func(*storage.AuthRequest) error { called = true; return nil })
				isErr(t, err, storage.ErrNotFound, "UpdateAuthRequest("+tt.name+")")
				if called {
					t.Errorf("%s: fn was called on a dead request", tt.name)
				}
			}
		}},
		{"AuthRequest/UpdateCannotChangeID", func(t *testing.T, e *env) {
			e.createAuthRequest(t, e.authRequest("ar1", 10*time.Minute))
			_, _ = e.s.UpdateAuthRequest(e.ctx, "ar1", func(r *storage.AuthRequest) error {
				r.ID = "ar2"
				return nil
			}) // refusing or ignoring the change are both within the contract
			_, err := e.s.GetAuthRequest(e.ctx, "ar2")
			isErr(t, err, storage.ErrNotFound, "GetAuthRequest(new id)")
			got, err := e.s.GetAuthRequest(e.ctx, "ar1")
			noErr(t, err, "GetAuthRequest(original id)")
			if got.ID != "ar1" {
				t.Fatalf("record under ar1 has ID %q", got.ID)
			}
		}},
		{"AuthRequest/UpdateMovesExpiry", func(t *testing.T, e *env) {
			long := e.authRequest("long", 10*time.Minute)
			short := e.authRequest("short", 10*time.Minute)
			e.createAuthRequest(t, long)
			e.createAuthRequest(t, short)
			_, err := e.s.UpdateAuthRequest(e.ctx, "long", func(r *storage.AuthRequest) error {
				r.ExpiresAt = r.ExpiresAt.Add(time.Hour)
				return nil
			})
			noErr(t, err, "UpdateAuthRequest(extend)")
			_, err = e.s.UpdateAuthRequest(e.ctx, "short", func(r *storage.AuthRequest) error {
				r.ExpiresAt = e.clock.Now().Add(time.Minute)
				return nil
			})
			noErr(t, err, "UpdateAuthRequest(shorten)")

			e.clock.Advance(2 * time.Minute)
			_, err = e.s.GetAuthRequest(e.ctx, "short")
			isErr(t, err, storage.ErrNotFound, "GetAuthRequest(shortened) after its new expiry")
			res, err := e.s.DeleteExpired(e.ctx)
			noErr(t, err, "DeleteExpired")
			equal(t, res, storage.GCResult{AuthRequests: 1}, "DeleteExpired after the shortened expiry")

			e.clock.Advance(20 * time.Minute) // past the original expiry, before the extended one
			res, err = e.s.DeleteExpired(e.ctx)
			noErr(t, err, "DeleteExpired")
			equal(t, res, storage.GCResult{}, "DeleteExpired after the original expiry")
			_, err = e.s.GetAuthRequest(e.ctx, "long")
			noErr(t, err, "GetAuthRequest(extended) after its original expiry")
		}},
		{"AuthRequest/Delete", func(t *testing.T, e *env) {
			_, code := e.issueCode(t, "ar1", 10*time.Minute, time.Minute)
			_, otherCode := e.issueCode(t, "ar2", 10*time.Minute, time.Minute)
			noErr(t, e.s.DeleteAuthRequest(e.ctx, "ar1"), "DeleteAuthRequest")
			_, err := e.s.GetAuthRequest(e.ctx, "ar1")
			isErr(t, err, storage.ErrNotFound, "GetAuthRequest after delete")
			_, err = e.s.ConsumeCode(e.ctx, code)
			isErr(t, err, storage.ErrNotFound, "ConsumeCode of a deleted request's code")
			noErr(t, e.s.DeleteAuthRequest(e.ctx, "ar1"), "second DeleteAuthRequest")
			noErr(t, e.s.DeleteAuthRequest(e.ctx, "never"), "DeleteAuthRequest(unknown)")
			got, err := e.s.ConsumeCode(e.ctx, otherCode)
			noErr(t, err, "ConsumeCode of another request's code")
			if got.ID != "ar2" {
				t.Fatalf("ConsumeCode returned request %q, want ar2", got.ID)
			}
		}},
	}
}

func completeCases() []testCase {
	return []testCase{
		{"AuthRequest/CompleteWithNewSession", func(t *testing.T, e *env) {
			ar := e.authRequest("ar1", time.Minute)
			e.createAuthRequest(t, ar)
			sess := e.session("1", 8*time.Hour)
			sess.Clients = []string{ar.ClientID}
			authTime := e.clock.Now().Add(-time.Second)
			code := storage.HashSecret("code-ar1")
			got, err := e.s.CompleteAuthRequest(e.ctx, "ar1", storage.Completion{
				Subject: "sub-1", AuthTime: authTime, AMR: []string{"wecom"},
				NewSession: &sess,
				ExpiresAt:  e.clock.Now().Add(3 * time.Minute), // later than the request's own expiry
				CodeHash:   code, CodeExpiresAt: e.clock.Now().Add(2 * time.Minute),
			})
			noErr(t, err, "CompleteAuthRequest")
			want := ar
			want.Done, want.Subject, want.AuthTime, want.AMR, want.SessionID = true, "sub-1", authTime, []string{"wecom"}, sess.ID
			want.ExpiresAt = e.clock.Now().Add(3 * time.Minute)
			equal(t, got, want, "CompleteAuthRequest result")
			stored, err := e.s.GetAuthRequest(e.ctx, "ar1")
			noErr(t, err, "GetAuthRequest")
			equal(t, stored, want, "stored auth request")
			gotSess, err := e.s.GetSession(e.ctx, sess.ID)
			noErr(t, err, "GetSession")
			equal(t, gotSess, sess, "created session")
			e.clock.Advance(90 * time.Second) // past the request's own minute: the new expiry holds
			redeemed, err := e.s.ConsumeCode(e.ctx, code)
			noErr(t, err, "ConsumeCode of the completion's code")
			equal(t, redeemed, want, "ConsumeCode result")
		}},
		{"AuthRequest/CompleteFromExistingSession", func(t *testing.T, e *env) {
			sess := e.session("1", 8*time.Hour)
			sess.Clients = []string{"other"}
			noErr(t, e.s.CreateSession(e.ctx, sess), "CreateSession")
			ar := e.authRequest("ar1", 10*time.Minute)
			e.createAuthRequest(t, ar)
			ar2 := e.authRequest("ar2", 10*time.Minute)
			ar2.ClientID = ar.ClientID // a second sign-in of the same client must not list it twice
			e.createAuthRequest(t, ar2)
			for _, id := range []string{"ar1", "ar2"} {
				_, err := e.s.CompleteAuthRequest(e.ctx, id, storage.Completion{
					Subject: sess.Subject, AuthTime: sess.AuthTime, AMR: sess.AMR, SessionID: sess.ID,
				})
				noErr(t, err, "CompleteAuthRequest("+id+")")
			}
			gotSess, err := e.s.GetSession(e.ctx, sess.ID)
			noErr(t, err, "GetSession")
			equal(t, gotSess.Clients, []string{"other", ar.ClientID}, "session clients")

			// A session that ended meanwhile does not stop the sign-in it already vouched for.
			noErr(t, e.s.DeleteSession(e.ctx, sess.ID), "DeleteSession")
			e.createAuthRequest(t, e.authRequest("ar3", 10*time.Minute))
			got, err := e.s.CompleteAuthRequest(e.ctx, "ar3", storage.Completion{Subject: sess.Subject, SessionID: sess.ID})
			noErr(t, err, "CompleteAuthRequest with a session gone")
			if !got.Done || got.SessionID != sess.ID {
				t.Fatalf("completed request: Done %v, SessionID %q", got.Done, got.SessionID)
			}
		}},
		{"AuthRequest/CompleteRefusals", func(t *testing.T, e *env) {
			_, err := e.s.CompleteAuthRequest(e.ctx, "nope", storage.Completion{Subject: "s"})
			isErr(t, err, storage.ErrNotFound, "CompleteAuthRequest(unknown)")

			e.createAuthRequest(t, e.authRequest("ar1", 10*time.Minute))
			first := e.session("1", time.Hour)
			_, err = e.s.CompleteAuthRequest(e.ctx, "ar1", storage.Completion{Subject: "s", NewSession: &first, CodeHash: storage.HashSecret("c1"), CodeExpiresAt: e.clock.Now().Add(time.Minute)})
			noErr(t, err, "first CompleteAuthRequest")
			second := e.session("2", time.Hour)
			_, err = e.s.CompleteAuthRequest(e.ctx, "ar1", storage.Completion{Subject: "attacker", NewSession: &second, CodeHash: storage.HashSecret("c2"), CodeExpiresAt: e.clock.Now().Add(time.Minute)})
			isErr(t, err, storage.ErrConflict, "second CompleteAuthRequest")
			// Nothing of the refused completion was written.
			_, err = e.s.GetSession(e.ctx, second.ID)
			isErr(t, err, storage.ErrNotFound, "session of the refused completion")
			_, err = e.s.ConsumeCode(e.ctx, storage.HashSecret("c2"))
			isErr(t, err, storage.ErrNotFound, "code of the refused completion")
			got, err := e.s.GetAuthRequest(e.ctx, "ar1")
			noErr(t, err, "GetAuthRequest")
			if got.Subject != "s" {
				t.Fatalf("subject %q after a refused completion, want s", got.Subject)
			}

			e.createAuthRequest(t, e.authRequest("ar-old", time.Minute))
			e.clock.Advance(time.Minute)
			_, err = e.s.CompleteAuthRequest(e.ctx, "ar-old", storage.Completion{Subject: "s"})
			isErr(t, err, storage.ErrNotFound, "CompleteAuthRequest(expired)")
		}},
		{"AuthRequest/ConcurrentCompletionsOneWinner", func(t *testing.T, e *env) {
			e.createAuthRequest(t, e.authRequest("ar1", 10*time.Minute))
			errs := race(16, func(i int) error {
				sess := e.session(fmt.Sprint(i), time.Hour)
				_, err := e.s.CompleteAuthRequest(e.ctx, "ar1", storage.Completion{Subject: fmt.Sprint("s", i), NewSession: &sess})
				return err
			})
			wins := 0
			for i, err := range errs {
				switch {
				case err == nil:
					wins++
				case !errors.Is(err, storage.ErrConflict):
					t.Errorf("completion %d: %v, want nil or ErrConflict", i, err)
				}
			}
			if wins != 1 {
				t.Fatalf("%d completions won, want exactly 1", wins)
			}
		}},
		{"AuthRequest/ExchangeDeletesIt", func(t *testing.T, e *env) {
			_, code := e.issueCode(t, "ar1", 10*time.Minute, time.Minute)
			e.consume(t, code)
			at, _ := e.exchange(t, "ar1", "tok", "f1", "")
			_, err := e.s.GetAuthRequest(e.ctx, "ar1")
			isErr(t, err, storage.ErrNotFound, "GetAuthRequest after the exchange")
			noErr(t, e.s.DeleteAuthRequest(e.ctx, "ar1"), "DeleteAuthRequest after the exchange")
			// The replay still revokes what the code produced.
			_, err = e.s.ConsumeCode(e.ctx, code)
			isErr(t, err, storage.ErrAlreadyUsed, "replayed ConsumeCode")
			e.notLive(t, nil, []storage.AccessToken{at})
		}},
	}
}

func codeCases() []testCase {
	return []testCase{
		{"Code/SaveConsume", func(t *testing.T, e *env) {
			ar, code := e.issueCode(t, "ar1", 10*time.Minute, time.Minute)
			_, _ = e.issueCode(t, "ar2", 10*time.Minute, time.Minute)
			got, err := e.s.ConsumeCode(e.ctx, code)
			noErr(t, err, "ConsumeCode")
			equal(t, got, ar, "ConsumeCode result")
		}},
		{"Code/SecondConsumeAlreadyUsed", func(t *testing.T, e *env) {
			_, code := e.issueCode(t, "ar1", 10*time.Minute, time.Minute)
			_, err := e.s.ConsumeCode(e.ctx, code)
			noErr(t, err, "first ConsumeCode")
			for i := range 3 {
				_, err = e.s.ConsumeCode(e.ctx, code)
				isErr(t, err, storage.ErrAlreadyUsed, fmt.Sprintf("ConsumeCode #%d", i+2))
			}
			// Still "already used" just before the code's own expiry, "not found" from then on.
			e.clock.Advance(time.Minute - time.Nanosecond)
			_, err = e.s.ConsumeCode(e.ctx, code)
			isErr(t, err, storage.ErrAlreadyUsed, "ConsumeCode 1ns before the code's expiry")
			e.clock.Advance(time.Nanosecond)
			_, err = e.s.ConsumeCode(e.ctx, code)
			isErr(t, err, storage.ErrNotFound, "ConsumeCode at the code's expiry")
		}},
		{"Code/Unknown", func(t *testing.T, e *env) {
			_, _ = e.issueCode(t, "ar1", 10*time.Minute, time.Minute)
			_, err := e.s.ConsumeCode(e.ctx, storage.HashSecret("not-a-code"))
			isErr(t, err, storage.ErrNotFound, "ConsumeCode(unknown)")
		}},
		{"Code/Expired", func(t *testing.T, e *env) {
			_, code := e.issueCode(t, "ar1", 10*time.Minute, time.Minute)
			e.clock.Advance(time.Minute)
			_, err := e.s.ConsumeCode(e.ctx, code)
			isErr(t, err, storage.ErrNotFound, "ConsumeCode at its expiry")
		}},
		{"Code/AuthRequestMustBeLive", func(t *testing.T, e *env) {
			// A code outliving its auth request must not redeem.
			_, code := e.issueCode(t, "ar1", time.Minute, 5*time.Minute)
			e.clock.Advance(2 * time.Minute)
			_, err := e.s.ConsumeCode(e.ctx, code)
			isErr(t, err, storage.ErrNotFound, "ConsumeCode after its auth request expired")
		}},
		{"Code/ReplayAfterDeleteAuthRequest", func(t *testing.T, e *env) {
			// The OP deletes the auth request as soon as the code has produced tokens; a replay
			// after that must still be told apart from a wrong code.
			_, code := e.issueCode(t, "ar1", 10*time.Minute, time.Minute)
			_, err := e.s.ConsumeCode(e.ctx, code)
			noErr(t, err, "ConsumeCode")
			noErr(t, e.s.DeleteAuthRequest(e.ctx, "ar1"), "DeleteAuthRequest")
			_, err = e.s.ConsumeCode(e.ctx, code)
			isErr(t, err, storage.ErrAlreadyUsed, "ConsumeCode replayed after DeleteAuthRequest")
		}},
		{"Code/ConcurrentConsumeExactlyOnce", func(t *testing.T, e *env) {
			const goroutines = 16
			for round := range raceRounds {
				id := fmt.Sprintf("ar-%d", round)
				ar, code := e.issueCode(t, id, 10*time.Minute, time.Minute)
				type result struct {
					ar  storage.AuthRequest
					err error
				}
				results := race(goroutines, func(int) result {
					got, err := e.s.ConsumeCode(e.ctx, code)
					return result{got, err}
				})
				var errs []error
				for _, r := range results {
					errs = append(errs, r.err)
					if r.err == nil {
						equal(t, r.ar, ar, "winner's auth request")
					}
				}
				ok, matched, other := countErrs(errs, storage.ErrAlreadyUsed)
				if ok != 1 || matched[storage.ErrAlreadyUsed] != goroutines-1 || len(other) != 0 {
					t.Fatalf("round %d: %d winners, %d ErrAlreadyUsed, other errors %v; want 1, %d, none",
						round, ok, matched[storage.ErrAlreadyUsed], other, goroutines-1)
				}
			}
		}},
	}
}

func loginStateCases() []testCase {
	return []testCase{
		{"LoginState/CreateConsumeOnce", func(t *testing.T, e *env) {
			ls := e.loginState("AbCdEfGhIjKlMnOpQrStUvWxYz012345", "ar1", 10*time.Minute)
			other := e.loginState("ZZCdEfGhIjKlMnOpQrStUvWxYz012345", "ar2", 10*time.Minute)
			noErr(t, e.s.CreateLoginState(e.ctx, ls), "CreateLoginState")
			noErr(t, e.s.CreateLoginState(e.ctx, other), "CreateLoginState(other)")
			got, err := e.s.ConsumeLoginState(e.ctx, ls.State)
			noErr(t, err, "ConsumeLoginState")
			equal(t, got, ls, "ConsumeLoginState")
			_, err = e.s.ConsumeLoginState(e.ctx, ls.State)
			isErr(t, err, storage.ErrNotFound, "second ConsumeLoginState")
			got, err = e.s.ConsumeLoginState(e.ctx, other.State)
			noErr(t, err, "ConsumeLoginState(other)")
			equal(t, got, other, "ConsumeLoginState(other)")
		}},
		{"LoginState/Unknown", func(t *testing.T, e *env) {
			_, err := e.s.ConsumeLoginState(e.ctx, "nope")
			isErr(t, err, storage.ErrNotFound, "ConsumeLoginState(unknown)")
		}},
		{"LoginState/Expired", func(t *testing.T, e *env) {
			ls := e.loginState("state1", "ar1", 10*time.Minute)
			noErr(t, e.s.CreateLoginState(e.ctx, ls), "CreateLoginState")
			e.clock.Set(ls.ExpiresAt)
			_, err := e.s.ConsumeLoginState(e.ctx, ls.State)
			isErr(t, err, storage.ErrNotFound, "ConsumeLoginState at ExpiresAt")
			// Going back in time shows whether the failed call destroyed it; either is fine, but
			// it must still be consumable at most once.
			e.clock.Set(ls.ExpiresAt.Add(-time.Minute))
			_, err1 := e.s.ConsumeLoginState(e.ctx, ls.State)
			_, err2 := e.s.ConsumeLoginState(e.ctx, ls.State)
			if err1 == nil && err2 == nil {
				t.Fatal("login state consumed twice")
			}
			isErr(t, err2, storage.ErrNotFound, "last ConsumeLoginState")
		}},
		{"LoginState/ConcurrentConsumeExactlyOnce", func(t *testing.T, e *env) {
			const goroutines = 16
			for round := range raceRounds {
				ls := e.loginState(fmt.Sprintf("state%027d", round), "ar1", 10*time.Minute)
				noErr(t, e.s.CreateLoginState(e.ctx, ls), "CreateLoginState")
				errs := race(goroutines, func(int) error {
					got, err := e.s.ConsumeLoginState(e.ctx, ls.State)
					if err == nil && !reflect.DeepEqual(got, ls) {
						return fmt.Errorf("winner got %+v, want %+v", got, ls)
					}
					return err
				})
				ok, matched, other := countErrs(errs, storage.ErrNotFound)
				if ok != 1 || matched[storage.ErrNotFound] != goroutines-1 || len(other) != 0 {
					t.Fatalf("round %d: %d winners, %d ErrNotFound, other errors %v; want 1, %d, none",
						round, ok, matched[storage.ErrNotFound], other, goroutines-1)
				}
			}
		}},
	}
}
