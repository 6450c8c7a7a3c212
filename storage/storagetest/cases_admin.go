package storagetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/wecom-oidc/wecom-oidc/storage"
)

// This file covers the operator and housekeeping operations: UpdateUser, RevokeUserTokens,
// Stats and Backup.

func userUpdateCases() []testCase {
	return []testCase{
		{"User/UpdateCreates", func(t *testing.T, e *env) {
			other := e.user("other")
			noErr(t, e.s.PutUser(e.ctx, other), "PutUser(other)")
			want := e.user("new")
			got, err := e.s.UpdateUser(e.ctx, "new", func(u *storage.User, exists bool) error {
				if exists {
					t.Errorf("fn: exists = true for a subject never stored")
				}
				// The contract hands fn "a zero User"; the subject may already be filled in.
				if seen := *u; (seen.Subject != "" && seen.Subject != "new") || !zeroBesidesSubject(seen) {
					t.Errorf("fn got %+v for a missing user, want a zero User", seen)
				}
				*u = want
				return nil
			})
			noErr(t, err, "UpdateUser(new)")
			equal(t, got, want, "UpdateUser(new) result")
			stored, err := e.s.GetUser(e.ctx, "new")
			noErr(t, err, "GetUser(new)")
			equal(t, stored, want, "user created by UpdateUser")
			list, err := e.s.ListUsers(e.ctx)
			noErr(t, err, "ListUsers")
			equal(t, list, []storage.User{want, other}, "ListUsers after UpdateUser created one")
		}},
		{"User/UpdateModifies", func(t *testing.T, e *env) {
			u, other := e.user("s"), e.user("other")
			noErr(t, e.s.PutUser(e.ctx, u), "PutUser")
			noErr(t, e.s.PutUser(e.ctx, other), "PutUser(other)")
			want := u
			want.Name, want.Disabled, want.Departments = "Renamed", true, nil
			want.Extra = map[string]string{"employee_no": "42", "note": "moved"}
			want.LastLogin = u.LastLogin.Add(time.Hour)
			got, err := e.s.UpdateUser(e.ctx, "s", func(cur *storage.User, exists bool) error {
				if !exists {
					t.Errorf("fn: exists = false for a stored user")
				}
				equal(t, *cur, u, "user handed to fn")
				cur.Name, cur.Disabled, cur.Departments = "Renamed", true, nil
				cur.Extra["note"] = "moved"
				cur.LastLogin = cur.LastLogin.Add(time.Hour)
				return nil
			})
			noErr(t, err, "UpdateUser")
			equal(t, got, want, "UpdateUser result")
			stored, err := e.s.GetUser(e.ctx, "s")
			noErr(t, err, "GetUser")
			equal(t, stored, want, "user after UpdateUser")
			stored, err = e.s.GetUser(e.ctx, "other")
			noErr(t, err, "GetUser(other)")
			equal(t, stored, other, "other user after UpdateUser")
		}},
		{"User/UpdateAborts", func(t *testing.T, e *env) {
			u := e.user("s")
			noErr(t, e.s.PutUser(e.ctx, u), "PutUser")
			errAbort := errors.New("disabled upstream")
			for _, sub := range []string{"s", "missing"} {
				_, err := e.s.UpdateUser(e.ctx, sub, func(cur *storage.User, _ bool) error {
					cur.Name, cur.Disabled = "Changed", true
					cur.Extra = map[string]string{"x": "y"}
					return errAbort
				})
				isErr(t, err, errAbort, "UpdateUser("+sub+") with a failing fn")
				// The contract returns fn's error "as is": not even wrapped.
				if err != errAbort {
					t.Errorf("UpdateUser(%s) returned %v, want fn's error as is", sub, err)
				}
				_, err = e.s.UpdateUser(e.ctx, sub, func(cur *storage.User, _ bool) error {
					cur.Subject, cur.Name = "someone-else", "Changed"
					return nil
				})
				isErr(t, err, storage.ErrConflict, "UpdateUser("+sub+") changing the subject")
			}
			got, err := e.s.GetUser(e.ctx, "s")
			noErr(t, err, "GetUser")
			equal(t, got, u, "user after aborted updates")
			for _, sub := range []string{"missing", "someone-else"} {
				_, err = e.s.GetUser(e.ctx, sub)
				isErr(t, err, storage.ErrNotFound, "GetUser("+sub+") after aborted updates")
			}
			list, err := e.s.ListUsers(e.ctx)
			noErr(t, err, "ListUsers")
			equal(t, list, []storage.User{u}, "ListUsers after aborted updates")
		}},
		{"User/UpdateConcurrent", func(t *testing.T, e *env) {
			// Read-modify-write: of concurrent updates of one user none may be lost. Each adds
			// its own Extra entry and increments a counter held in Extra.
			const goroutines = 16
			for round := range raceRounds {
				sub := fmt.Sprintf("race-%d", round)
				if round%2 == 1 {
					noErr(t, e.s.PutUser(e.ctx, e.user(sub)), "PutUser") // odd rounds: an existing user
				}
				errs := race(goroutines, func(i int) error {
					_, err := e.s.UpdateUser(e.ctx, sub, func(u *storage.User, _ bool) error {
						if u.Extra == nil {
							u.Extra = map[string]string{}
						}
						n, _ := strconv.Atoi(u.Extra["count"])
						u.Extra["count"] = strconv.Itoa(n + 1)
						u.Extra[fmt.Sprintf("g%02d", i)] = "x"
						return nil
					})
					return err
				})
				for i, err := range errs {
					noErr(t, err, fmt.Sprintf("round %d: UpdateUser #%d", round, i))
				}
				got, err := e.s.GetUser(e.ctx, sub)
				noErr(t, err, "GetUser")
				if got.Extra["count"] != strconv.Itoa(goroutines) {
					t.Fatalf("round %d: counter = %q after %d updates: updates were lost (extra %v)", round, got.Extra["count"], goroutines, got.Extra)
				}
				for i := range goroutines {
					if got.Extra[fmt.Sprintf("g%02d", i)] != "x" {
						t.Fatalf("round %d: update #%d lost; extra %v", round, i, got.Extra)
					}
				}
			}
		}},
	}
}

// zeroBesidesSubject reports whether every field of u but Subject is zero.
func zeroBesidesSubject(u storage.User) bool {
	u.Subject = ""
	return reflect.DeepEqual(u, storage.User{})
}

func revokeUserCases() []testCase {
	return []testCase{
		{"RevokeUserTokens/OnlyThatSubject", func(t *testing.T, e *env) {
			// sub-1 (the builders' subject): a family rotated twice, a fresh family, an access
			// token without family, and a family revoked already.
			at0, rt0 := e.issueFamily(t, "f1")
			rt1, at1, err := e.rotate(t, rt0, 1)
			noErr(t, err, "rotate f1 0→1")
			rt2, at2, err := e.rotate(t, rt1, 2)
			noErr(t, err, "rotate f1 1→2")
			atF2, rtF2 := e.issueFamily(t, "f2")
			plain := e.access("plain", "", time.Hour)
			noErr(t, e.s.CreateTokens(e.ctx, plain, nil), "CreateTokens(plain)")
			e.issueFamily(t, "f-old")
			noErr(t, e.s.RevokeRefreshFamily(e.ctx, "f-old"), "RevokeRefreshFamily(f-old)")
			// Others, among them a subject of which "sub-1" is a prefix.
			var otherRTs []storage.RefreshToken
			var otherATs []storage.AccessToken
			for _, sub := range []string{"sub-2", "sub-10", "sub-"} {
				at := e.access(sub+"-0", "fam-"+sub, time.Hour)
				rt := e.refresh(sub+"-0", "fam-"+sub, 24*time.Hour)
				at.Subject, rt.Subject = sub, sub
				noErr(t, e.s.CreateTokens(e.ctx, at, &rt), "CreateTokens("+sub+")")
				p := e.access(sub+"-plain", "", time.Hour)
				p.Subject = sub
				noErr(t, e.s.CreateTokens(e.ctx, p, nil), "CreateTokens("+sub+" plain)")
				otherRTs, otherATs = append(otherRTs, rt), append(otherATs, at, p)
			}

			n, err := e.s.RevokeUserTokens(e.ctx, "sub-1")
			noErr(t, err, "RevokeUserTokens")
			equal(t, n, 2, "families revoked (f1 and f2; f-old was revoked already)")
			e.familyDead(t, []storage.RefreshToken{rt2, rtF2}, []storage.AccessToken{at0, at1, at2, atF2})
			_, err = e.s.GetAccessToken(e.ctx, plain.ID)
			isErr(t, err, storage.ErrRevoked, "GetAccessToken of sub-1's access token without family")
			_, _, err = e.rotate(t, rt2, 3)
			isErr(t, err, storage.ErrRevoked, "RotateRefreshToken in a revoked family")
			e.tokensLive(t, otherRTs, otherATs)

			n, err = e.s.RevokeUserTokens(e.ctx, "sub-1")
			noErr(t, err, "second RevokeUserTokens")
			equal(t, n, 0, "families revoked by a second RevokeUserTokens")
			n, err = e.s.RevokeUserTokens(e.ctx, "nobody")
			noErr(t, err, "RevokeUserTokens(unknown subject)")
			equal(t, n, 0, "families revoked for an unknown subject")
			e.tokensLive(t, otherRTs, otherATs)

			// Revocation is not a ban: tokens issued afterwards are live.
			atNew, rtNew := e.issueFamily(t, "f-new")
			e.tokensLive(t, []storage.RefreshToken{rtNew}, []storage.AccessToken{atNew})
		}},
		{"RevokeUserTokens/AfterTheirOtherTokensWereSwept", func(t *testing.T, e *env) {
			// f1's only refresh token expired and was swept while its access token lives on;
			// f2's access token expired and was swept while its refresh token lives on. Each
			// family is found through the token that is left.
			at1 := e.access("f1-0", "f1", time.Hour)
			rt1 := e.refresh("f1-0", "f1", 2*time.Minute)
			noErr(t, e.s.CreateTokens(e.ctx, at1, &rt1), "CreateTokens(f1)")
			at2 := e.access("f2-0", "f2", time.Minute)
			rt2 := e.refresh("f2-0", "f2", 24*time.Hour)
			noErr(t, e.s.CreateTokens(e.ctx, at2, &rt2), "CreateTokens(f2)")
			e.clock.Advance(5 * time.Minute)
			_, err := e.s.DeleteExpired(e.ctx)
			noErr(t, err, "DeleteExpired")
			e.tokensLive(t, []storage.RefreshToken{rt2}, []storage.AccessToken{at1})
			_, err = e.s.RevokeUserTokens(e.ctx, "sub-1")
			noErr(t, err, "RevokeUserTokens")
			_, err = e.s.GetAccessToken(e.ctx, at1.ID)
			isErr(t, err, storage.ErrRevoked, "GetAccessToken(f1) after RevokeUserTokens")
			_, err = e.s.GetRefreshToken(e.ctx, rt2.Hash)
			isErr(t, err, storage.ErrRevoked, "GetRefreshToken(f2) after RevokeUserTokens")
		}},
	}
}

// statKinds are the keys Stats reports.
var statKinds = []string{"clients", "users", "sessions", "auth_requests", "access_tokens", "refresh_tokens", "keys",
	"scan_logins", "device_authorizations"}

// stats builds a Stats result from counts in statKinds order.
func stats(counts ...int) map[string]int {
	m := make(map[string]int, len(statKinds))
	for i, k := range statKinds {
		m[k] = counts[i]
	}
	return m
}

func statsCases() []testCase {
	return []testCase{
		{"Stats/Counts", func(t *testing.T, e *env) {
			got, err := e.s.Stats(e.ctx)
			noErr(t, err, "Stats(empty)")
			equal(t, got, stats(0, 0, 0, 0, 0, 0, 0, 0, 0), "Stats of an empty store")

			t0 := e.clock.Now()
			const short = time.Minute // what is created with it has expired when Stats runs
			e.populateForStats(t, short)
			e.clock.Advance(2 * short)
			//            clients users sessions auth_requests access refresh keys scan device
			want := stats(2, 2, 2, 2, 3, 1, 2, 2, 2)
			got, err = e.s.Stats(e.ctx)
			noErr(t, err, "Stats")
			equal(t, got, want, "Stats (expired, revoked and rotated records not counted)")

			// The sweep removes only what was not counted.
			_, err = e.s.DeleteExpired(e.ctx)
			noErr(t, err, "DeleteExpired")
			got, err = e.s.Stats(e.ctx)
			noErr(t, err, "Stats after DeleteExpired")
			equal(t, got, want, "Stats after DeleteExpired")

			// Past every expiry only what does not expire remains: clients, users, the key
			// that was never retired.
			e.clock.Set(t0.Add(25 * time.Hour))
			got, err = e.s.Stats(e.ctx)
			noErr(t, err, "Stats after every expiry")
			equal(t, got, stats(2, 2, 0, 0, 0, 0, 1, 0, 0), "Stats after every expiry")
		}},
	}
}

// populateForStats stores, for every kind Stats counts, live records and records that are dead
// (expired once the clock has moved by more than short, revoked, rotated):
//
//	clients 2; users 2; keys 2 live, 1 retired; sessions 2 live, 1 expiring; auth requests 2
//	live, 1 expiring; refresh tokens 1 live (fA-1), 1 rotated, and the tokens of a revoked, a
//	reused and an expiring family; access tokens 3 live (fA-0, fA-1, p1), and one revoked, one
//	expiring, and those of the dead families; scan sign-ins 2 live (one of them updated), 1
//	expiring; device authorizations 2 live (one of them updated), 1 expiring.
func (e *env) populateForStats(tb testing.TB, short time.Duration) {
	tb.Helper()
	t0 := e.clock.Now()
	for _, id := range []string{"a", "b"} {
		noErr(tb, e.s.CreateClient(e.ctx, e.client(id)), "CreateClient")
	}
	noErr(tb, e.s.PutUser(e.ctx, e.user("u1")), "PutUser")
	_, err := e.s.UpdateUser(e.ctx, "u2", func(u *storage.User, _ bool) error { *u = e.user("u2"); return nil })
	noErr(tb, err, "UpdateUser(create)")

	live, retiring, retired := e.key("k-live", t0), e.key("k-retiring", t0), e.key("k-retired", t0)
	retiring.NotAfter, retired.NotAfter = t0.Add(time.Hour), t0.Add(short)
	for _, k := range []storage.KeyRecord{live, retiring, retired} {
		noErr(tb, e.s.PutKey(e.ctx, k), "PutKey("+k.ID+")")
	}

	for _, s := range []storage.Session{e.session("1", 8*time.Hour), e.session("2", 8*time.Hour), e.session("3", short)} {
		noErr(tb, e.s.CreateSession(e.ctx, s), "CreateSession")
	}
	e.createAuthRequest(tb, e.authRequest("ar1", 10*time.Minute))
	e.createAuthRequest(tb, e.authRequest("ar2", 10*time.Minute))
	e.createAuthRequest(tb, e.authRequest("ar3", short))

	_, rtA := e.issueFamily(tb, "fA")
	_, _, err = e.rotate(tb, rtA, 1)
	noErr(tb, err, "rotate fA")
	e.issueFamily(tb, "fB")
	noErr(tb, e.s.RevokeRefreshFamily(e.ctx, "fB"), "RevokeRefreshFamily(fB)")
	_, rtD := e.issueFamily(tb, "fD")
	_, _, err = e.rotate(tb, rtD, 1)
	noErr(tb, err, "rotate fD")
	_, err = e.s.GetRefreshToken(e.ctx, rtD.Hash)
	isErr(tb, err, storage.ErrTokenReused, "reuse of fD's rotated token")
	atC, rtC := e.access("fC-0", "fC", short), e.refresh("fC-0", "fC", short)
	noErr(tb, e.s.CreateTokens(e.ctx, atC, &rtC), "CreateTokens(fC)")

	noErr(tb, e.s.CreateTokens(e.ctx, e.access("p1", "", time.Hour), nil), "CreateTokens(p1)")
	p2 := e.access("p2", "", time.Hour)
	noErr(tb, e.s.CreateTokens(e.ctx, p2, nil), "CreateTokens(p2)")
	noErr(tb, e.s.RevokeAccessToken(e.ctx, p2.ID), "RevokeAccessToken(p2)")
	noErr(tb, e.s.CreateTokens(e.ctx, e.access("p3", "", short), nil), "CreateTokens(p3)")

	for _, sl := range []storage.ScanLogin{e.scanLogin("s1", 10*time.Minute), e.scanLogin("s2", 10*time.Minute), e.scanLogin("s3", short)} {
		noErr(tb, e.s.CreateScanLogin(e.ctx, sl), "CreateScanLogin")
	}
	_, err = e.s.UpdateScanLogin(e.ctx, e.scanLogin("s1", 0).HandleHash, func(s *storage.ScanLogin) error { s.Status = "confirmed"; return nil })
	noErr(tb, err, "UpdateScanLogin(s1)")
	for _, d := range []storage.DeviceAuthorization{
		e.deviceAuth("d1", "BCDF-GHJK", 10*time.Minute), e.deviceAuth("d2", "LMNP-QRST", 10*time.Minute), e.deviceAuth("d3", "VWXZ-BCDF", short),
	} {
		noErr(tb, e.s.CreateDeviceAuthorization(e.ctx, d), "CreateDeviceAuthorization")
	}
	_, err = e.s.UpdateDeviceAuthorization(e.ctx, e.deviceAuth("d1", "", 0).DeviceCodeHash, func(d *storage.DeviceAuthorization) error {
		d.Status = "approved"
		return nil
	})
	noErr(tb, err, "UpdateDeviceAuthorization(d1)")
}

func backupCases() []testCase {
	return []testCase{
		{"Backup/Restores", testBackupRestores},
		{"Backup/CanceledContext", func(t *testing.T, e *env) {
			noErr(t, e.s.CreateClient(e.ctx, e.client("c")), "CreateClient")
			ctx, cancel := context.WithCancel(e.ctx)
			cancel()
			var buf bytes.Buffer
			_, err := e.s.Backup(ctx, &buf)
			isErr(t, err, context.Canceled, "Backup with a canceled context")
		}},
		{"Backup/WriterError", func(t *testing.T, e *env) {
			noErr(t, e.s.CreateClient(e.ctx, e.client("c")), "CreateClient")
			// A first backup counts the writes a whole copy takes; then the writer fails at the
			// first, a middle and the last of them.
			count := &failingWriter{after: -1}
			_, err := e.s.Backup(e.ctx, count)
			noErr(t, err, "Backup")
			errDisk := errors.New("disk full")
			for _, after := range []int{0, count.writes / 2, count.writes - 1} {
				w := &failingWriter{after: after, err: errDisk}
				n, err := e.s.Backup(e.ctx, w)
				isErr(t, err, errDisk, fmt.Sprintf("Backup to a writer failing after %d writes", after))
				if n != w.written {
					t.Errorf("Backup to a writer failing after %d writes reported %d bytes; the writer took %d", after, n, w.written)
				}
			}
			// The store is unharmed.
			_, err = e.s.GetClient(e.ctx, "c")
			noErr(t, err, "GetClient after failed backups")
		}},
	}
}

// failingWriter accepts after writes (all of them when after is negative), then fails every
// write with err.
type failingWriter struct {
	after   int
	err     error
	writes  int
	written int64
}

func (w *failingWriter) Write(p []byte) (int, error) {
	if w.writes == w.after {
		return 0, w.err
	}
	w.writes++
	w.written += int64(len(p))
	return len(p), nil
}

// testBackupRestores backs up a store holding every kind of record, opens the copy with the
// backend and checks that it holds the same records in the same states, and nothing written
// after the backup.
func testBackupRestores(t *testing.T, e *env) {
	e.populateForStats(t, time.Minute)
	at, rt := e.issueFamily(t, "fE")
	rt1, at1, err := e.rotate(t, rt, 1)
	noErr(t, err, "rotate fE")
	plain := e.access("plain", "", time.Hour)
	noErr(t, e.s.CreateTokens(e.ctx, plain, nil), "CreateTokens(plain)")
	revoked := e.access("revoked", "", time.Hour)
	noErr(t, e.s.CreateTokens(e.ctx, revoked, nil), "CreateTokens(revoked)")
	noErr(t, e.s.RevokeAccessToken(e.ctx, revoked.ID), "RevokeAccessToken")
	ar, code := e.issueCode(t, "ar-code", 10*time.Minute, time.Minute)
	ls := e.loginState("0123456789abcdef0123456789abcdef", ar.ID, 10*time.Minute)
	noErr(t, e.s.CreateLoginState(e.ctx, ls), "CreateLoginState")
	sess := e.session("backup", 8*time.Hour)
	noErr(t, e.s.CreateSession(e.ctx, sess), "CreateSession")
	up := e.upstream("ww0123456789/1000002", "wecom-token", 2*time.Hour)
	noErr(t, e.s.PutUpstreamToken(e.ctx, up), "PutUpstreamToken")
	scan := e.scanLogin("backup", 5*time.Minute)
	noErr(t, e.s.CreateScanLogin(e.ctx, scan), "CreateScanLogin")
	dev := e.deviceAuth("backup", "HJKL-MNPQ", 10*time.Minute)
	noErr(t, e.s.CreateDeviceAuthorization(e.ctx, dev), "CreateDeviceAuthorization")
	// Moved along before the backup: the copy holds the moved record, and its moved expiry.
	scan.Status, scan.ExpiresAt = "confirmed", scan.ExpiresAt.Add(time.Minute)
	_, err = e.s.UpdateScanLogin(e.ctx, scan.HandleHash, func(s *storage.ScanLogin) error {
		s.Status, s.ExpiresAt = scan.Status, scan.ExpiresAt
		return nil
	})
	noErr(t, err, "UpdateScanLogin")

	clients, err := e.s.ListClients(e.ctx)
	noErr(t, err, "ListClients")
	users, err := e.s.ListUsers(e.ctx)
	noErr(t, err, "ListUsers")
	keys, err := e.s.ListKeys(e.ctx)
	noErr(t, err, "ListKeys")
	before, err := e.s.Stats(e.ctx)
	noErr(t, err, "Stats")

	var buf bytes.Buffer
	n, err := e.s.Backup(e.ctx, &buf)
	noErr(t, err, "Backup")
	if n != int64(buf.Len()) || n == 0 {
		t.Fatalf("Backup reported %d bytes and wrote %d", n, buf.Len())
	}
	// Writes after the backup: none may show in the copy.
	noErr(t, e.s.CreateClient(e.ctx, e.client("late")), "CreateClient(late)")
	noErr(t, e.s.RevokeRefreshFamily(e.ctx, "fE"), "RevokeRefreshFamily(fE)")
	_, err = e.s.UpdateUser(e.ctx, "u1", func(u *storage.User, _ bool) error { u.Name = "late"; return nil })
	noErr(t, err, "UpdateUser(u1)")
	_, err = e.s.UpdateDeviceAuthorization(e.ctx, dev.DeviceCodeHash, func(d *storage.DeviceAuthorization) error {
		d.Status = "approved"
		return nil
	})
	noErr(t, err, "UpdateDeviceAuthorization")

	if e.openBackup == nil {
		t.Skip("the backend gave no way to open a backup: its contents are not checked")
	}
	path := filepath.Join(t.TempDir(), "backup")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	c := &env{ctx: e.ctx, clock: e.clock, s: e.openBackup(t, path, e.clock.Now), start: e.start}
	if c.s == nil {
		t.Fatal("openBackup returned a nil store")
	}
	noErr(t, c.s.Health(c.ctx), "Health of the copy")
	gotClients, err := c.s.ListClients(c.ctx)
	noErr(t, err, "ListClients(copy)")
	equal(t, gotClients, clients, "clients in the copy")
	gotUsers, err := c.s.ListUsers(c.ctx)
	noErr(t, err, "ListUsers(copy)")
	equal(t, gotUsers, users, "users in the copy")
	gotKeys, err := c.s.ListKeys(c.ctx)
	noErr(t, err, "ListKeys(copy)")
	equal(t, gotKeys, keys, "keys in the copy")
	gotStats, err := c.s.Stats(c.ctx)
	noErr(t, err, "Stats(copy)")
	equal(t, gotStats, before, "Stats of the copy")
	gotSess, err := c.s.GetSession(c.ctx, sess.ID)
	noErr(t, err, "GetSession(copy)")
	equal(t, gotSess, sess, "session in the copy")
	gotUp, err := c.s.GetUpstreamToken(c.ctx, up.Key)
	noErr(t, err, "GetUpstreamToken(copy)")
	equal(t, gotUp, up, "upstream token in the copy")
	gotScan, err := c.s.GetScanLogin(c.ctx, scan.HandleHash)
	noErr(t, err, "GetScanLogin(copy)")
	equal(t, gotScan, scan, "scan login in the copy")
	c.deviceAuthIs(t, dev, "in the copy (not approved after the backup)")
	// The user-code index came along: the code is taken in the copy as in the original.
	isErr(t, c.s.CreateDeviceAuthorization(c.ctx, e.deviceAuth("backup-2", dev.UserCode, time.Minute)), storage.ErrAlreadyExists,
		"CreateDeviceAuthorization(copy) with a live authorization's user code")
	c.tokensLive(t, []storage.RefreshToken{rt1}, []storage.AccessToken{at, at1, plain})
	_, err = c.s.GetAccessToken(c.ctx, revoked.ID)
	isErr(t, err, storage.ErrRevoked, "GetAccessToken(copy) of a revoked token")
	_, err = c.s.GetRefreshToken(c.ctx, storage.HashSecret("fB-0"))
	isErr(t, err, storage.ErrRevoked, "GetRefreshToken(copy) in a revoked family")

	// Single-use values are usable once in the copy and, independently, once in the original.
	for _, s := range []*env{c, e} {
		gotAR, err := s.s.ConsumeCode(s.ctx, code)
		noErr(t, err, "ConsumeCode")
		equal(t, gotAR, ar, "auth request of the consumed code")
		_, err = s.s.ConsumeCode(s.ctx, code)
		isErr(t, err, storage.ErrAlreadyUsed, "second ConsumeCode")
		gotLS, err := s.s.ConsumeLoginState(s.ctx, ls.State)
		noErr(t, err, "ConsumeLoginState")
		equal(t, gotLS, ls, "login state")
	}

	// The reuse detection works in the copy (and revokes there only).
	_, err = c.s.GetRefreshToken(c.ctx, rt.Hash)
	isErr(t, err, storage.ErrTokenReused, "GetRefreshToken(copy) of a rotated token")
	c.familyDead(t, []storage.RefreshToken{rt1}, nil)
	_, err = c.s.GetClient(c.ctx, "late")
	isErr(t, err, storage.ErrNotFound, "GetClient(copy) of a client created after the backup")
	u1, err := c.s.GetUser(c.ctx, "u1")
	noErr(t, err, "GetUser(copy)")
	equal(t, u1, e.user("u1"), "user in the copy, not updated after the backup")
	noErr(t, c.s.PutUser(c.ctx, e.user("copy-only")), "PutUser(copy)")
	_, err = e.s.GetUser(e.ctx, "copy-only")
	isErr(t, err, storage.ErrNotFound, "GetUser(original) of a user written to the copy")
}
