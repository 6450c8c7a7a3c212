package storagetest

import (
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wecom-oidc/wecom-oidc/storage"
)

// This file covers the cross-device sign-in records: scan sign-ins, device authorizations and
// their lookup by user code, and the login states that continue them.

// errFinished is what the compare-and-set functions of the concurrency cases return when they
// find the record already moved on.
var errFinished = errors.New("storagetest: already finished")

func crossDeviceCases() []testCase {
	return []testCase{
		{"ScanLogin/CreateGetUpdate", testScanLoginRoundTrip},
		{"ScanLogin/CreateDuplicate", func(t *testing.T, e *env) {
			sl := e.scanLogin("1", 5*time.Minute)
			noErr(t, e.s.CreateScanLogin(e.ctx, sl), "CreateScanLogin")
			other := e.scanLogin("1", time.Hour)
			other.Status, other.AuthRequestID = "confirmed", "ar-other"
			isErr(t, e.s.CreateScanLogin(e.ctx, other), storage.ErrAlreadyExists, "second CreateScanLogin")
			got, err := e.s.GetScanLogin(e.ctx, sl.HandleHash)
			noErr(t, err, "GetScanLogin")
			equal(t, got, sl, "scan login after a refused create")
		}},
		{"ScanLogin/CreateRefusesIncomplete", func(t *testing.T, e *env) {
			tests := []struct {
				name   string
				change func(*storage.ScanLogin)
			}{
				{"no handle hash", func(s *storage.ScanLogin) { s.HandleHash = "" }},
				{"no auth request", func(s *storage.ScanLogin) { s.AuthRequestID = "" }},
				{"no expiry", func(s *storage.ScanLogin) { s.ExpiresAt = time.Time{} }},
			}
			for _, tt := range tests {
				sl := e.scanLogin("1", 5*time.Minute)
				tt.change(&sl)
				if err := e.s.CreateScanLogin(e.ctx, sl); err == nil {
					t.Errorf("CreateScanLogin with %s succeeded", tt.name)
				}
			}
			_, err := e.s.GetScanLogin(e.ctx, e.scanLogin("1", 0).HandleHash)
			isErr(t, err, storage.ErrNotFound, "GetScanLogin after refused creates")
		}},
		{"ScanLogin/NotFound", func(t *testing.T, e *env) {
			var calls atomic.Int32
			fn := func(s *storage.ScanLogin) error { calls.Add(1); s.Status = "finished"; return nil }
			sl := e.scanLogin("1", 5*time.Minute)
			noErr(t, e.s.CreateScanLogin(e.ctx, sl), "CreateScanLogin")
			e.notFound(t, []notFoundCheck{
				{"GetScanLogin(unknown)", func() error { _, err := e.s.GetScanLogin(e.ctx, storage.HashSecret("handle-x")); return err }},
				{"GetScanLogin(empty)", func() error { _, err := e.s.GetScanLogin(e.ctx, ""); return err }},
				{"UpdateScanLogin(unknown)", func() error { _, err := e.s.UpdateScanLogin(e.ctx, storage.HashSecret("handle-x"), fn); return err }},
			})
			// A record is dead at its ExpiresAt.
			e.clock.Set(sl.ExpiresAt)
			e.notFound(t, []notFoundCheck{
				{"GetScanLogin(expired)", func() error { _, err := e.s.GetScanLogin(e.ctx, sl.HandleHash); return err }},
				{"UpdateScanLogin(expired)", func() error { _, err := e.s.UpdateScanLogin(e.ctx, sl.HandleHash, fn); return err }},
			})
			if n := calls.Load(); n != 0 {
				t.Fatalf("the update function ran %d times on missing records", n)
			}
			e.clock.Set(sl.ExpiresAt.Add(-time.Nanosecond))
			got, err := e.s.GetScanLogin(e.ctx, sl.HandleHash)
			noErr(t, err, "GetScanLogin 1ns before ExpiresAt")
			equal(t, got, sl, "scan login the expired update left alone")
		}},
		{"ScanLogin/UpdateFnError", func(t *testing.T, e *env) {
			sl := e.scanLogin("1", 5*time.Minute)
			noErr(t, e.s.CreateScanLogin(e.ctx, sl), "CreateScanLogin")
			errNope := errors.New("storagetest: nope")
			_, err := e.s.UpdateScanLogin(e.ctx, sl.HandleHash, func(s *storage.ScanLogin) error {
				s.Status, s.Subject, s.ExpiresAt = "finished", "sub-1", s.ExpiresAt.Add(time.Hour)
				return errNope
			})
			isErr(t, err, errNope, "UpdateScanLogin with a failing function")
			got, err := e.s.GetScanLogin(e.ctx, sl.HandleHash)
			noErr(t, err, "GetScanLogin")
			equal(t, got, sl, "scan login after a failed update")
			// Nor did the expiry move: the record is swept at its own.
			e.clock.Set(sl.ExpiresAt)
			res, err := e.s.DeleteExpired(e.ctx)
			noErr(t, err, "DeleteExpired")
			equal(t, res, storage.GCResult{ScanLogins: 1}, "DeleteExpired at the unmoved expiry")
		}},
		{"ScanLogin/UpdateKeepsKey", func(t *testing.T, e *env) {
			sl := e.scanLogin("1", 5*time.Minute)
			noErr(t, e.s.CreateScanLogin(e.ctx, sl), "CreateScanLogin")
			other := storage.HashSecret("handle-other")
			_, err := e.s.UpdateScanLogin(e.ctx, sl.HandleHash, func(s *storage.ScanLogin) error {
				s.HandleHash, s.Status = other, "finished"
				return nil
			})
			isErr(t, err, storage.ErrConflict, "UpdateScanLogin changing the handle hash")
			got, err := e.s.GetScanLogin(e.ctx, sl.HandleHash)
			noErr(t, err, "GetScanLogin")
			equal(t, got, sl, "scan login after a refused update")
			_, err = e.s.GetScanLogin(e.ctx, other)
			isErr(t, err, storage.ErrNotFound, "GetScanLogin of the handle the update named")
		}},
		{"ScanLogin/ConcurrentUpdates", func(t *testing.T, e *env) {
			sl := e.scanLogin("1", 5*time.Minute)
			noErr(t, e.s.CreateScanLogin(e.ctx, sl), "CreateScanLogin")
			const n = 16
			// Compare-and-set: of n updates moving "pending" to "finished", exactly one sees
			// "pending"; the others see its result and give up.
			errs := race(n, func(i int) error {
				_, err := e.s.UpdateScanLogin(e.ctx, sl.HandleHash, func(s *storage.ScanLogin) error {
					if s.Status != "pending" {
						return errFinished
					}
					s.Status, s.Subject = "finished", fmt.Sprintf("sub-%02d", i)
					return nil
				})
				return err
			})
			winner := oneWinner(t, errs, errFinished)
			got, err := e.s.GetScanLogin(e.ctx, sl.HandleHash)
			noErr(t, err, "GetScanLogin")
			if got.Status != "finished" || got.Subject != fmt.Sprintf("sub-%02d", winner) {
				t.Fatalf("after the race: status %q, subject %q; want finished by the winner, #%d", got.Status, got.Subject, winner)
			}
			// No update is lost: each appends its own value, and all of them are there.
			errs = race(n, func(i int) error {
				_, err := e.s.UpdateScanLogin(e.ctx, sl.HandleHash, func(s *storage.ScanLogin) error {
					s.AMR = append(s.AMR, fmt.Sprintf("m%02d", i))
					return nil
				})
				return err
			})
			for i, err := range errs {
				noErr(t, err, fmt.Sprintf("concurrent UpdateScanLogin #%d", i))
			}
			got, err = e.s.GetScanLogin(e.ctx, sl.HandleHash)
			noErr(t, err, "GetScanLogin")
			equal(t, slices.Sorted(slices.Values(got.AMR)), appended(n), "AMR after concurrent appends")
		}},
		{"ScanLogin/ExpiryMoves", func(t *testing.T, e *env) {
			t0 := e.clock.Now()
			later, earlier := e.scanLogin("later", 5*time.Minute), e.scanLogin("earlier", 20*time.Minute)
			for _, sl := range []storage.ScanLogin{later, earlier} {
				noErr(t, e.s.CreateScanLogin(e.ctx, sl), "CreateScanLogin")
			}
			moveExpiry := func(sl *storage.ScanLogin, exp time.Time) {
				t.Helper()
				got, err := e.s.UpdateScanLogin(e.ctx, sl.HandleHash, func(s *storage.ScanLogin) error { s.ExpiresAt = exp; return nil })
				noErr(t, err, "UpdateScanLogin(expiry)")
				sl.ExpiresAt = exp
				equal(t, got, *sl, "UpdateScanLogin(expiry)")
			}
			moveExpiry(&later, t0.Add(10*time.Minute))
			moveExpiry(&earlier, t0.Add(3*time.Minute))
			get := func(sl storage.ScanLogin) func() error {
				return func() error { _, err := e.s.GetScanLogin(e.ctx, sl.HandleHash); return err }
			}
			e.sweepAt(t, t0.Add(3*time.Minute), storage.GCResult{ScanLogins: 1}, "the earlier expiry")
			e.notFound(t, []notFoundCheck{{"GetScanLogin(moved earlier)", get(earlier)}})
			e.sweepAt(t, t0.Add(5*time.Minute), storage.GCResult{}, "the later one's first expiry")
			got, err := e.s.GetScanLogin(e.ctx, later.HandleHash)
			noErr(t, err, "GetScanLogin(moved later) at its first expiry")
			equal(t, got, later, "scan login moved later")
			e.sweepAt(t, t0.Add(10*time.Minute), storage.GCResult{ScanLogins: 1}, "the later expiry")
			// Back to when both lived: the sweeps removed them for good.
			e.clock.Set(t0.Add(time.Minute))
			e.notFound(t, []notFoundCheck{
				{"GetScanLogin(moved later) after the sweep", get(later)},
				{"GetScanLogin(moved earlier) after the sweep", get(earlier)},
			})
		}},

		{"DeviceAuth/CreateGetUpdate", testDeviceAuthRoundTrip},
		{"DeviceAuth/CreateDuplicate", func(t *testing.T, e *env) {
			d := e.deviceAuth("1", "BCDF-GHJK", 10*time.Minute)
			noErr(t, e.s.CreateDeviceAuthorization(e.ctx, d), "CreateDeviceAuthorization")
			tests := []struct {
				name string
				dup  storage.DeviceAuthorization
			}{
				{"same device code, another user code", e.deviceAuth("1", "LMNP-QRST", time.Hour)},
				{"another device code, same user code", e.deviceAuth("2", "BCDF-GHJK", time.Hour)},
			}
			for _, tt := range tests {
				isErr(t, e.s.CreateDeviceAuthorization(e.ctx, tt.dup), storage.ErrAlreadyExists, "CreateDeviceAuthorization: "+tt.name)
			}
			// Neither refused create wrote anything.
			e.notFound(t, []notFoundCheck{
				{"GetDeviceAuthorizationByUserCode of the refused code", func() error {
					_, err := e.s.GetDeviceAuthorizationByUserCode(e.ctx, "LMNP-QRST")
					return err
				}},
				{"GetDeviceAuthorization of the refused device code", func() error {
					_, err := e.s.GetDeviceAuthorization(e.ctx, tests[1].dup.DeviceCodeHash)
					return err
				}},
			})
			e.deviceAuthIs(t, d, "after refused creates")
		}},
		{"DeviceAuth/CreateRefusesIncomplete", func(t *testing.T, e *env) {
			tests := []struct {
				name   string
				change func(*storage.DeviceAuthorization)
			}{
				{"no device code hash", func(d *storage.DeviceAuthorization) { d.DeviceCodeHash = "" }},
				{"no user code", func(d *storage.DeviceAuthorization) { d.UserCode = "" }},
				{"no client", func(d *storage.DeviceAuthorization) { d.ClientID = "" }},
				{"no expiry", func(d *storage.DeviceAuthorization) { d.ExpiresAt = time.Time{} }},
			}
			for _, tt := range tests {
				d := e.deviceAuth("1", "BCDF-GHJK", 10*time.Minute)
				tt.change(&d)
				if err := e.s.CreateDeviceAuthorization(e.ctx, d); err == nil {
					t.Errorf("CreateDeviceAuthorization with %s succeeded", tt.name)
				}
			}
			e.notFound(t, []notFoundCheck{
				{"GetDeviceAuthorization after refused creates", func() error {
					_, err := e.s.GetDeviceAuthorization(e.ctx, e.deviceAuth("1", "", 0).DeviceCodeHash)
					return err
				}},
				{"GetDeviceAuthorizationByUserCode after refused creates", func() error {
					_, err := e.s.GetDeviceAuthorizationByUserCode(e.ctx, "BCDF-GHJK")
					return err
				}},
			})
		}},
		{"DeviceAuth/NotFound", func(t *testing.T, e *env) {
			var calls atomic.Int32
			fn := func(d *storage.DeviceAuthorization) error { calls.Add(1); d.Status = "approved"; return nil }
			d := e.deviceAuth("1", "BCDF-GHJK", 10*time.Minute)
			noErr(t, e.s.CreateDeviceAuthorization(e.ctx, d), "CreateDeviceAuthorization")
			unknown := storage.HashSecret("device-x")
			e.notFound(t, []notFoundCheck{
				{"GetDeviceAuthorization(unknown)", func() error { _, err := e.s.GetDeviceAuthorization(e.ctx, unknown); return err }},
				{"GetDeviceAuthorization(empty)", func() error { _, err := e.s.GetDeviceAuthorization(e.ctx, ""); return err }},
				{"GetDeviceAuthorizationByUserCode(unknown)", func() error {
					_, err := e.s.GetDeviceAuthorizationByUserCode(e.ctx, "BCDF-GHJL")
					return err
				}},
				{"GetDeviceAuthorizationByUserCode(empty)", func() error { _, err := e.s.GetDeviceAuthorizationByUserCode(e.ctx, ""); return err }},
				{"UpdateDeviceAuthorization(unknown)", func() error { _, err := e.s.UpdateDeviceAuthorization(e.ctx, unknown, fn); return err }},
			})
			e.clock.Set(d.ExpiresAt)
			e.notFound(t, []notFoundCheck{
				{"GetDeviceAuthorization(expired)", func() error { _, err := e.s.GetDeviceAuthorization(e.ctx, d.DeviceCodeHash); return err }},
				{"GetDeviceAuthorizationByUserCode(expired)", func() error {
					_, err := e.s.GetDeviceAuthorizationByUserCode(e.ctx, d.UserCode)
					return err
				}},
				{"UpdateDeviceAuthorization(expired)", func() error { _, err := e.s.UpdateDeviceAuthorization(e.ctx, d.DeviceCodeHash, fn); return err }},
			})
			if n := calls.Load(); n != 0 {
				t.Fatalf("the update function ran %d times on missing records", n)
			}
			e.clock.Set(d.ExpiresAt.Add(-time.Nanosecond))
			e.deviceAuthIs(t, d, "1ns before ExpiresAt")
		}},
		{"DeviceAuth/UpdateFnError", func(t *testing.T, e *env) {
			d := e.deviceAuth("1", "BCDF-GHJK", 10*time.Minute)
			noErr(t, e.s.CreateDeviceAuthorization(e.ctx, d), "CreateDeviceAuthorization")
			errNope := errors.New("storagetest: nope")
			_, err := e.s.UpdateDeviceAuthorization(e.ctx, d.DeviceCodeHash, func(d *storage.DeviceAuthorization) error {
				d.Status, d.Subject, d.ExpiresAt = "approved", "sub-1", d.ExpiresAt.Add(time.Hour)
				return errNope
			})
			isErr(t, err, errNope, "UpdateDeviceAuthorization with a failing function")
			e.deviceAuthIs(t, d, "after a failed update")
			e.clock.Set(d.ExpiresAt)
			res, err := e.s.DeleteExpired(e.ctx)
			noErr(t, err, "DeleteExpired")
			equal(t, res, storage.GCResult{DeviceAuths: 1}, "DeleteExpired at the unmoved expiry")
		}},
		{"DeviceAuth/UpdateKeepsKeyAndUserCode", func(t *testing.T, e *env) {
			d := e.deviceAuth("1", "BCDF-GHJK", 10*time.Minute)
			noErr(t, e.s.CreateDeviceAuthorization(e.ctx, d), "CreateDeviceAuthorization")
			otherHash, otherCode := storage.HashSecret("device-other"), "LMNP-QRST"
			tests := []struct {
				name   string
				change func(*storage.DeviceAuthorization)
			}{
				{"device code hash", func(d *storage.DeviceAuthorization) { d.DeviceCodeHash = otherHash }},
				{"user code", func(d *storage.DeviceAuthorization) { d.UserCode = otherCode }},
				{"both", func(d *storage.DeviceAuthorization) { d.DeviceCodeHash, d.UserCode = otherHash, otherCode }},
			}
			for _, tt := range tests {
				_, err := e.s.UpdateDeviceAuthorization(e.ctx, d.DeviceCodeHash, func(d *storage.DeviceAuthorization) error {
					tt.change(d)
					d.Status = "approved"
					return nil
				})
				isErr(t, err, storage.ErrConflict, "UpdateDeviceAuthorization changing the "+tt.name)
			}
			e.deviceAuthIs(t, d, "after refused updates")
			e.notFound(t, []notFoundCheck{
				{"GetDeviceAuthorization of the hash an update named", func() error {
					_, err := e.s.GetDeviceAuthorization(e.ctx, otherHash)
					return err
				}},
				{"GetDeviceAuthorizationByUserCode of the code an update named", func() error {
					_, err := e.s.GetDeviceAuthorizationByUserCode(e.ctx, otherCode)
					return err
				}},
			})
		}},
		{"DeviceAuth/ConcurrentUpdates", func(t *testing.T, e *env) {
			d := e.deviceAuth("1", "BCDF-GHJK", 10*time.Minute)
			noErr(t, e.s.CreateDeviceAuthorization(e.ctx, d), "CreateDeviceAuthorization")
			const n = 16
			errs := race(n, func(i int) error {
				_, err := e.s.UpdateDeviceAuthorization(e.ctx, d.DeviceCodeHash, func(d *storage.DeviceAuthorization) error {
					if d.Status != "pending" {
						return errFinished
					}
					d.Status, d.Subject = "approved", fmt.Sprintf("sub-%02d", i)
					return nil
				})
				return err
			})
			winner := oneWinner(t, errs, errFinished)
			got, err := e.s.GetDeviceAuthorizationByUserCode(e.ctx, d.UserCode)
			noErr(t, err, "GetDeviceAuthorizationByUserCode")
			if got.Status != "approved" || got.Subject != fmt.Sprintf("sub-%02d", winner) {
				t.Fatalf("after the race: status %q, subject %q; want approved by the winner, #%d", got.Status, got.Subject, winner)
			}
			// No update is lost: n increments of the interval.
			errs = race(n, func(int) error {
				_, err := e.s.UpdateDeviceAuthorization(e.ctx, d.DeviceCodeHash, func(d *storage.DeviceAuthorization) error {
					d.Interval++
					return nil
				})
				return err
			})
			for i, err := range errs {
				noErr(t, err, fmt.Sprintf("concurrent UpdateDeviceAuthorization #%d", i))
			}
			got, err = e.s.GetDeviceAuthorization(e.ctx, d.DeviceCodeHash)
			noErr(t, err, "GetDeviceAuthorization")
			if got.Interval != d.Interval+n {
				t.Fatalf("Interval after %d concurrent increments = %d, want %d", n, got.Interval, d.Interval+n)
			}
		}},
		{"DeviceAuth/ConcurrentCreatesOneUserCode", func(t *testing.T, e *env) {
			const n = 16
			ds := make([]storage.DeviceAuthorization, n)
			for i := range ds {
				ds[i] = e.deviceAuth(fmt.Sprint(i), "BCDF-GHJK", 10*time.Minute)
			}
			errs := race(n, func(i int) error { return e.s.CreateDeviceAuthorization(e.ctx, ds[i]) })
			winner := oneWinner(t, errs, storage.ErrAlreadyExists)
			e.deviceAuthIs(t, ds[winner], "the winner of the race for the user code")
			for i, d := range ds {
				if i == winner {
					continue
				}
				_, err := e.s.GetDeviceAuthorization(e.ctx, d.DeviceCodeHash)
				isErr(t, err, storage.ErrNotFound, fmt.Sprintf("GetDeviceAuthorization of loser #%d", i))
			}
		}},
		{"DeviceAuth/UserCodeFreeAfterExpiry", func(t *testing.T, e *env) {
			t0 := e.clock.Now()
			old := e.deviceAuth("old", "BCDF-GHJK", 5*time.Minute)
			noErr(t, e.s.CreateDeviceAuthorization(e.ctx, old), "CreateDeviceAuthorization(old)")
			e.clock.Set(old.ExpiresAt)
			_, err := e.s.GetDeviceAuthorizationByUserCode(e.ctx, old.UserCode)
			isErr(t, err, storage.ErrNotFound, "GetDeviceAuthorizationByUserCode at the old one's expiry")
			newer := e.deviceAuth("new", old.UserCode, 10*time.Minute)
			noErr(t, e.s.CreateDeviceAuthorization(e.ctx, newer), "CreateDeviceAuthorization(new) with the expired one's code")
			e.deviceAuthIs(t, newer, "the code's new holder")
			_, err = e.s.UpdateDeviceAuthorization(e.ctx, old.DeviceCodeHash, func(d *storage.DeviceAuthorization) error {
				d.ExpiresAt = d.ExpiresAt.Add(time.Hour)
				return nil
			})
			isErr(t, err, storage.ErrNotFound, "UpdateDeviceAuthorization reviving the expired one")
			third := e.deviceAuth("third", old.UserCode, 10*time.Minute)
			isErr(t, e.s.CreateDeviceAuthorization(e.ctx, third), storage.ErrAlreadyExists, "CreateDeviceAuthorization with the new holder's code")

			// The code never leads back to the old authorization, even with the clock back at a
			// time it lived (it is still stored: nothing has swept it).
			e.clock.Set(t0)
			got, err := e.s.GetDeviceAuthorizationByUserCode(e.ctx, old.UserCode)
			noErr(t, err, "GetDeviceAuthorizationByUserCode with the clock back")
			equal(t, got, newer, "GetDeviceAuthorizationByUserCode with the clock back")

			// The sweep removes the old authorization, not the code's index entry, now the new
			// one's.
			e.sweepAt(t, old.ExpiresAt, storage.GCResult{DeviceAuths: 1}, "the old one's expiry")
			e.deviceAuthIs(t, newer, "after the old one was swept")
		}},
		{"DeviceAuth/ExpiryMoves", func(t *testing.T, e *env) {
			t0 := e.clock.Now()
			later, earlier := e.deviceAuth("later", "BCDF-GHJK", 5*time.Minute), e.deviceAuth("earlier", "LMNP-QRST", 20*time.Minute)
			for _, d := range []storage.DeviceAuthorization{later, earlier} {
				noErr(t, e.s.CreateDeviceAuthorization(e.ctx, d), "CreateDeviceAuthorization")
			}
			moveExpiry := func(d *storage.DeviceAuthorization, exp time.Time) {
				t.Helper()
				got, err := e.s.UpdateDeviceAuthorization(e.ctx, d.DeviceCodeHash, func(d *storage.DeviceAuthorization) error { d.ExpiresAt = exp; return nil })
				noErr(t, err, "UpdateDeviceAuthorization(expiry)")
				d.ExpiresAt = exp
				equal(t, got, *d, "UpdateDeviceAuthorization(expiry)")
			}
			moveExpiry(&later, t0.Add(10*time.Minute))
			moveExpiry(&earlier, t0.Add(3*time.Minute))

			e.sweepAt(t, t0.Add(3*time.Minute), storage.GCResult{DeviceAuths: 1}, "the earlier expiry")
			e.notFound(t, []notFoundCheck{
				{"GetDeviceAuthorizationByUserCode(moved earlier)", func() error {
					_, err := e.s.GetDeviceAuthorizationByUserCode(e.ctx, earlier.UserCode)
					return err
				}},
			})
			// Its code is free again at once.
			again := e.deviceAuth("again", earlier.UserCode, 10*time.Minute)
			noErr(t, e.s.CreateDeviceAuthorization(e.ctx, again), "CreateDeviceAuthorization with the swept one's code")
			e.deviceAuthIs(t, again, "the swept one's code taken again")

			// The one moved later, and its code, outlive their first expiry and its sweep.
			e.sweepAt(t, t0.Add(5*time.Minute), storage.GCResult{}, "the later one's first expiry")
			e.deviceAuthIs(t, later, "at its first expiry")
			e.sweepAt(t, t0.Add(10*time.Minute), storage.GCResult{DeviceAuths: 1}, "the later expiry")
			e.clock.Set(t0.Add(time.Minute))
			e.notFound(t, []notFoundCheck{
				{"GetDeviceAuthorization(moved later) after the sweep", func() error {
					_, err := e.s.GetDeviceAuthorization(e.ctx, later.DeviceCodeHash)
					return err
				}},
				{"GetDeviceAuthorizationByUserCode(moved later) after the sweep", func() error {
					_, err := e.s.GetDeviceAuthorizationByUserCode(e.ctx, later.UserCode)
					return err
				}},
			})
		}},

		{"LoginState/ContinuesScanOrDevice", func(t *testing.T, e *env) {
			// A state continues an auth request, a scan sign-in (with the computer's auth
			// request), or a device verification (with no auth request at all).
			scan := e.loginState("scan0123456789abcdefghijklmnopqrs", "ar-desktop", 10*time.Minute)
			scan.Upstream, scan.ScanHandleHash = "corp-a", storage.HashSecret("handle-1")
			device := e.loginState("devc0123456789abcdefghijklmnopqrs", "", 10*time.Minute)
			device.Upstream, device.DeviceUserCode = "corp-a", "BCDF-GHJK"
			for _, ls := range []storage.LoginState{scan, device} {
				noErr(t, e.s.CreateLoginState(e.ctx, ls), "CreateLoginState("+ls.State+")")
			}
			for _, ls := range []storage.LoginState{scan, device} {
				got, err := e.s.ConsumeLoginState(e.ctx, ls.State)
				noErr(t, err, "ConsumeLoginState("+ls.State+")")
				equal(t, got, ls, "ConsumeLoginState("+ls.State+")")
				_, err = e.s.ConsumeLoginState(e.ctx, ls.State)
				isErr(t, err, storage.ErrNotFound, "second ConsumeLoginState("+ls.State+")")
			}
		}},
	}
}

// testScanLoginRoundTrip stores a scan sign-in, reads it back, and moves it along with an update
// that sets every field the provider sets, and a later expiry: every field, every time to the
// nanosecond, comes back.
func testScanLoginRoundTrip(t *testing.T, e *env) {
	sl := e.scanLogin("1", 5*time.Minute)
	noErr(t, e.s.CreateScanLogin(e.ctx, sl), "CreateScanLogin")
	got, err := e.s.GetScanLogin(e.ctx, sl.HandleHash)
	noErr(t, err, "GetScanLogin")
	equal(t, got, sl, "GetScanLogin")

	now := e.clock.Now()
	want := sl
	want.PhoneBrowserHash = storage.HashSecret("phone-1")
	want.Status, want.Reason = "approved", "wecom.approved"
	want.Subject, want.AuthTime, want.AMR = "sub-1", now.Add(-1500*time.Millisecond+7), []string{"wecom", "qr"}
	want.ExpiresAt = sl.ExpiresAt.Add(2*time.Minute + 3)
	var seen storage.ScanLogin // what the last run of fn was given
	got, err = e.s.UpdateScanLogin(e.ctx, sl.HandleHash, func(s *storage.ScanLogin) error {
		seen = *s
		s.PhoneBrowserHash = want.PhoneBrowserHash
		s.Status, s.Reason = want.Status, want.Reason
		s.Subject, s.AuthTime, s.AMR = want.Subject, want.AuthTime, slices.Clone(want.AMR)
		s.ExpiresAt = want.ExpiresAt
		return nil
	})
	noErr(t, err, "UpdateScanLogin")
	equal(t, seen, sl, "the record the update function was given")
	equal(t, got, want, "UpdateScanLogin's result")
	got, err = e.s.GetScanLogin(e.ctx, sl.HandleHash)
	noErr(t, err, "GetScanLogin after the update")
	equal(t, got, want, "GetScanLogin after the update")

	// Of several scan sign-ins each is its own.
	other := e.scanLogin("2", time.Minute)
	noErr(t, e.s.CreateScanLogin(e.ctx, other), "CreateScanLogin(other)")
	got, err = e.s.GetScanLogin(e.ctx, other.HandleHash)
	noErr(t, err, "GetScanLogin(other)")
	equal(t, got, other, "GetScanLogin(other)")
}

// testDeviceAuthRoundTrip stores a device authorization, reads it back by device code and by
// user code, and moves it along with an update that sets every field the provider sets, and a
// later expiry.
func testDeviceAuthRoundTrip(t *testing.T, e *env) {
	d := e.deviceAuth("1", "BCDF-GHJK", 10*time.Minute)
	noErr(t, e.s.CreateDeviceAuthorization(e.ctx, d), "CreateDeviceAuthorization")
	e.deviceAuthIs(t, d, "after the create")

	now := e.clock.Now()
	want := d
	want.Status, want.Interval, want.LastPolledAt = "approved", 10, now.Add(-3*time.Second+11)
	want.Subject, want.AuthTime, want.AMR = "sub-1", now.Add(-1500*time.Millisecond+7), []string{"wecom"}
	want.ExpiresAt = d.ExpiresAt.Add(5*time.Minute + 3)
	var seen storage.DeviceAuthorization
	got, err := e.s.UpdateDeviceAuthorization(e.ctx, d.DeviceCodeHash, func(d *storage.DeviceAuthorization) error {
		seen = *d
		d.Status, d.Interval, d.LastPolledAt = want.Status, want.Interval, want.LastPolledAt
		d.Subject, d.AuthTime, d.AMR = want.Subject, want.AuthTime, slices.Clone(want.AMR)
		d.ExpiresAt = want.ExpiresAt
		return nil
	})
	noErr(t, err, "UpdateDeviceAuthorization")
	equal(t, seen, d, "the record the update function was given")
	equal(t, got, want, "UpdateDeviceAuthorization's result")
	e.deviceAuthIs(t, want, "after the update")

	other := e.deviceAuth("2", "LMNP-QRST", time.Minute)
	noErr(t, e.s.CreateDeviceAuthorization(e.ctx, other), "CreateDeviceAuthorization(other)")
	e.deviceAuthIs(t, other, "another authorization")
	e.deviceAuthIs(t, want, "beside another authorization")
}

// deviceAuthIs checks that d is stored as is and found both by its device code and by its user
// code.
func (e *env) deviceAuthIs(tb testing.TB, d storage.DeviceAuthorization, when string) {
	tb.Helper()
	got, err := e.s.GetDeviceAuthorization(e.ctx, d.DeviceCodeHash)
	noErr(tb, err, "GetDeviceAuthorization "+when)
	equal(tb, got, d, "GetDeviceAuthorization "+when)
	got, err = e.s.GetDeviceAuthorizationByUserCode(e.ctx, d.UserCode)
	noErr(tb, err, "GetDeviceAuthorizationByUserCode "+when)
	equal(tb, got, d, "GetDeviceAuthorizationByUserCode "+when)
}

// notFoundCheck is one call that must fail with ErrNotFound.
type notFoundCheck struct {
	what string
	call func() error
}

// notFound fails the test unless every call fails with ErrNotFound.
func (e *env) notFound(tb testing.TB, checks []notFoundCheck) {
	tb.Helper()
	for _, c := range checks {
		isErr(tb, c.call(), storage.ErrNotFound, c.what)
	}
}

// sweepAt moves the clock to at and checks what DeleteExpired removes there.
func (e *env) sweepAt(tb testing.TB, at time.Time, want storage.GCResult, when string) {
	tb.Helper()
	e.clock.Set(at)
	res, err := e.s.DeleteExpired(e.ctx)
	noErr(tb, err, "DeleteExpired at "+when)
	equal(tb, res, want, "DeleteExpired at "+when)
}

// oneWinner checks that exactly one of errs is nil and every other one is lose, and returns the
// winner's index.
func oneWinner(tb testing.TB, errs []error, lose error) int {
	tb.Helper()
	ok, matched, other := countErrs(errs, lose)
	if ok != 1 || matched[lose] != len(errs)-1 || len(other) != 0 {
		tb.Fatalf("of %d racing calls %d succeeded and %d failed with %v; want exactly one winner (other errors: %v)",
			len(errs), ok, matched[lose], lose, other)
	}
	return slices.IndexFunc(errs, func(err error) bool { return err == nil })
}

// appended is what n concurrent appends of "m%02d" leave, sorted.
func appended(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("m%02d", i)
	}
	return out
}
