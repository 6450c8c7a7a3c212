package bolt

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/wecom-oidc/wecom-oidc/internal/etcdtest"
	"github.com/wecom-oidc/wecom-oidc/storage"
	"github.com/wecom-oidc/wecom-oidc/storage/etcd"
	"github.com/wecom-oidc/wecom-oidc/storage/storagetest"
)

// exportScript writes, through the Store API, a record of every kind the flows leave behind,
// with the revocation state a migration must carry: a replayed code (its tokens revoked, the
// request marked), a rotated refresh token, a pending code, a session signed in to two clients
// and linked to two families, loose access tokens (one revoked), a scan sign-in moved along, a
// device authorization approved with its expiry moved (and its user code's index entry with
// it). Everything expires after t0+2m but for the auth request ar4 and its code, the session
// sess3 and the device authorization dev2 with its user code, which expire at t0+1m (sess3's
// family lives on).
func exportScript(tb testing.TB, s storage.Store, t0 time.Time) {
	tb.Helper()
	ctx := context.Background()
	must := func(err error) {
		tb.Helper()
		if err != nil {
			tb.Fatal(err)
		}
	}
	must(s.PutClient(ctx, storage.Client{ID: "app", SecretHash: storage.HashSecret("secret"), RedirectURIs: []string{"https://app.example/cb"},
		Source: storage.SourceConfig, CreatedAt: t0, UpdatedAt: t0}))
	must(s.CreateClient(ctx, storage.Client{ID: "spa", RedirectURIs: []string{"http://127.0.0.1/cb"}, Public: true, AuthMethod: "none",
		Source: storage.SourceCLI, CreatedAt: t0, UpdatedAt: t0}))
	must(s.PutUser(ctx, storage.User{Subject: "sub-1", CorpID: "ww1", UserID: "zhangsan", Name: "张三",
		Departments: []storage.Department{{ID: 7, Name: "平台组", Path: []string{"研发中心", "平台组"}}}, FirstSeen: t0, LastLogin: t0, LastChecked: t0}))
	must(s.PutKey(ctx, storage.KeyRecord{ID: "k1", Algorithm: "RS256", Private: []byte{0x30, 0x82}, CreatedAt: t0.Add(-time.Hour)}))
	must(s.PutKey(ctx, storage.KeyRecord{ID: "sym", Algorithm: "A256GCM", Private: bytes.Repeat([]byte{7}, 32), CreatedAt: t0.Add(-2 * time.Hour)}))
	must(s.PutUpstreamToken(ctx, storage.UpstreamToken{Key: "ww1/1000002", Token: "wecom-token", ExpiresAt: t0.Add(2 * time.Hour)}))
	must(s.CreateLoginState(ctx, storage.LoginState{State: "S0123456789abcdefghijklmnopqrstu", AuthRequestID: "ar3",
		BrowserHash: storage.HashSecret("browser"), ExpiresAt: t0.Add(10 * time.Minute)}))

	ar := func(id, client string, exp time.Duration) storage.AuthRequest {
		return storage.AuthRequest{ID: id, ClientID: client, RedirectURI: "https://app.example/cb", Scopes: []string{"openid", "offline_access"},
			ResponseType: "code", CreatedAt: t0, ExpiresAt: t0.Add(exp)}
	}
	sess1, sess3 := storage.HashSecret("session-1"), storage.HashSecret("session-3")
	codeExp, tokenExp, refreshExp := t0.Add(5*time.Minute), t0.Add(time.Hour), t0.Add(30*24*time.Hour)
	refresh := func(name, family, session string, exp time.Time) storage.RefreshToken {
		return storage.RefreshToken{Hash: storage.HashSecret(name), ID: "rt_" + name, FamilyID: family, ClientID: "app", Subject: "sub-1",
			Scopes: []string{"openid", "offline_access"}, AuthTime: t0, SessionID: session, CreatedAt: t0, ExpiresAt: exp}
	}
	access := func(id, family, authRequest string) storage.AccessToken {
		return storage.AccessToken{ID: id, ClientID: "app", Subject: "sub-1", Scopes: []string{"openid"}, FamilyID: family,
			AuthRequestID: authRequest, CreatedAt: t0, ExpiresAt: tokenExp}
	}

	// ar1: a new session, the code redeemed, exchanged, then replayed.
	must(s.CreateAuthRequest(ctx, ar("ar1", "app", 5*time.Minute)))
	_, err := s.CompleteAuthRequest(ctx, "ar1", storage.Completion{Subject: "sub-1", AuthTime: t0,
		NewSession: &storage.Session{ID: sess1, Subject: "sub-1", AuthTime: t0, Clients: []string{"app"}, CreatedAt: t0, ExpiresAt: t0.Add(8 * time.Hour)},
		ExpiresAt:  t0.Add(10 * time.Minute), CodeHash: storage.HashSecret("c1"), CodeExpiresAt: codeExp})
	must(err)
	_, err = s.ConsumeCode(ctx, storage.HashSecret("c1"))
	must(err)
	rt1 := refresh("rt1", "fam1", sess1, refreshExp)
	must(s.CreateTokens(ctx, access("at1", "fam1", "ar1"), &rt1))
	if _, err := s.ConsumeCode(ctx, storage.HashSecret("c1")); !errors.Is(err, storage.ErrAlreadyUsed) {
		tb.Fatalf("replayed code: %v", err)
	}

	// ar2: for the other client, from the existing session; its family rotates once.
	must(s.CreateAuthRequest(ctx, ar("ar2", "spa", 5*time.Minute)))
	_, err = s.CompleteAuthRequest(ctx, "ar2", storage.Completion{Subject: "sub-1", AuthTime: t0, SessionID: sess1,
		ExpiresAt: t0.Add(10 * time.Minute), CodeHash: storage.HashSecret("c2"), CodeExpiresAt: codeExp})
	must(err)
	_, err = s.ConsumeCode(ctx, storage.HashSecret("c2"))
	must(err)
	rt2 := refresh("rt2", "fam2", sess1, refreshExp)
	must(s.CreateTokens(ctx, access("at2", "fam2", "ar2"), &rt2))
	must(s.RotateRefreshToken(ctx, storage.HashSecret("rt2"), refresh("rt3", "fam2", sess1, refreshExp.Add(time.Hour)), access("at3", "fam2", "")))

	// ar3: pending, with a code nobody redeemed; ar4 the same, but expiring first.
	must(s.CreateAuthRequest(ctx, ar("ar3", "app", 5*time.Minute)))
	must(s.SaveCode(ctx, storage.HashSecret("c3"), "ar3", codeExp))
	must(s.CreateAuthRequest(ctx, ar("ar4", "app", time.Minute)))
	must(s.SaveCode(ctx, storage.HashSecret("c4"), "ar4", t0.Add(time.Minute)))

	// sess3 expires at t0+1m; the family issued under it does not.
	must(s.CreateSession(ctx, storage.Session{ID: sess3, Subject: "sub-1", AuthTime: t0, CreatedAt: t0, ExpiresAt: t0.Add(time.Minute)}))
	rt4 := refresh("rt4", "fam4", sess3, refreshExp)
	must(s.CreateTokens(ctx, access("at4", "fam4", ""), &rt4))

	// Access tokens without a family, one revoked by itself.
	must(s.CreateTokens(ctx, access("at5", "", ""), nil))
	must(s.CreateTokens(ctx, access("at6", "", ""), nil))
	must(s.RevokeAccessToken(ctx, "at6"))

	// Cross-device sign-ins.
	must(s.CreateScanLogin(ctx, storage.ScanLogin{HandleHash: storage.HashSecret("handle-1"), AuthRequestID: "ar3",
		DesktopBrowserHash: storage.HashSecret("browser"), Status: "pending", CreatedAt: t0, ExpiresAt: t0.Add(5 * time.Minute)}))
	_, err = s.UpdateScanLogin(ctx, storage.HashSecret("handle-1"), func(sl *storage.ScanLogin) error {
		sl.Status, sl.PhoneBrowserHash = "confirmed", storage.HashSecret("phone")
		return nil
	})
	must(err)
	device := func(name, userCode string, exp time.Duration) storage.DeviceAuthorization {
		return storage.DeviceAuthorization{DeviceCodeHash: storage.HashSecret(name), UserCode: userCode, ClientID: "spa",
			Scopes: []string{"openid", "offline_access"}, Status: "pending", Interval: 5, CreatedAt: t0, ExpiresAt: t0.Add(exp)}
	}
	must(s.CreateDeviceAuthorization(ctx, device("dev1", "BCDF-GHJK", 10*time.Minute)))
	_, err = s.UpdateDeviceAuthorization(ctx, storage.HashSecret("dev1"), func(d *storage.DeviceAuthorization) error {
		d.Status, d.Subject, d.AuthTime, d.AMR = "approved", "sub-1", t0, []string{"wecom"}
		d.ExpiresAt = t0.Add(15 * time.Minute)
		return nil
	})
	must(err)
	must(s.CreateDeviceAuthorization(ctx, device("dev2", "LMNP-QRST", time.Minute)))
}

// readCopy parses a copy in the etcd backup format into its keys and values; the schema key
// is left out (Restore skips it: Open writes its own).
func readCopy(tb testing.TB, raw []byte) map[string]string {
	tb.Helper()
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(nil, 1<<20)
	if !sc.Scan() {
		tb.Fatal("empty copy")
	}
	var h etcdBackupHeader
	if err := json.Unmarshal(sc.Bytes(), &h); err != nil || h.Format != etcdBackupFormat || h.Version != 1 || h.Schema != 1 {
		tb.Fatalf("header %s (%v)", sc.Bytes(), err)
	}
	kvs := map[string]string{}
	lines := 0
	for sc.Scan() {
		var l etcdBackupLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			tb.Fatalf("line %s: %v", sc.Bytes(), err)
		}
		if l.End {
			if l.Keys != lines {
				tb.Fatalf("end line counts %d keys, the copy holds %d", l.Keys, lines)
			}
			if sc.Scan() {
				tb.Fatalf("a line after the end: %s", sc.Bytes())
			}
			delete(kvs, "meta/schema")
			return kvs
		}
		lines++
		if _, dup := kvs[string(l.Key)]; dup {
			tb.Fatalf("key %q twice", l.Key)
		}
		kvs[string(l.Key)] = string(l.Value)
	}
	tb.Fatal("no end line")
	return nil
}

// dropStale removes from a copy of an etcd prefix the expiry index entries whose record is gone:
// the etcd backend leaves some behind (a link deleted with its prefix keeps its entry) for the
// sweep, which ignores them; an export, which derives the index from the records, has none.
func dropStale(tb testing.TB, kvs map[string]string) map[string]string {
	tb.Helper()
	for k := range kvs {
		entry, ok := strings.CutPrefix(k, "expiry/")
		if !ok {
			continue
		}
		parts := strings.SplitN(entry, "/", 3)
		if len(parts) != 3 {
			tb.Fatalf("malformed index entry %q", k)
		}
		if _, live := kvs[parts[1]+"/"+parts[2]]; !live {
			delete(kvs, k)
		}
	}
	return kvs
}

// diffCopies reports the keys whose presence or value differ.
func diffCopies(tb testing.TB, what string, got, want map[string]string) {
	tb.Helper()
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if g, ok := got[k]; !ok {
			tb.Errorf("%s: missing %q = %s", what, k, want[k])
		} else if g != want[k] {
			tb.Errorf("%s: %q = %s, want %s", what, k, g, want[k])
		}
	}
	for _, k := range slices.Sorted(maps.Keys(got)) {
		if _, ok := want[k]; !ok {
			tb.Errorf("%s: extra %q = %s", what, k, got[k])
		}
	}
}

func mustExport(tb testing.TB, path string, now time.Time) ([]byte, ExportResult) {
	tb.Helper()
	var buf bytes.Buffer
	res, err := ExportEtcd(context.Background(), path, &buf, ExportOptions{Now: func() time.Time { return now }})
	if err != nil {
		tb.Fatalf("ExportEtcd: %v", err)
	}
	return buf.Bytes(), res
}

func mustOpenEtcd(tb testing.TB, endpoint, prefix string, now func() time.Time) *etcd.Store {
	tb.Helper()
	s, err := etcd.Open(context.Background(), etcd.Config{Endpoints: []string{endpoint}, Prefix: prefix, Now: now})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

// TestExportEtcdMatchesEtcd runs one script on a bolt database and on an etcd prefix, and checks
// that the export of the database is, key for key and byte for byte, the etcd backend's own
// backup of the prefix; that Restore loads it into a new prefix as that backup; and that the
// restored prefix behaves as the database did (revocations, rotation, replay).
func TestExportEtcdMatchesEtcd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd")
	}
	server := etcdtest.MustStart(t)
	ctx := t.Context()
	clock := storagetest.NewClock(storagetest.Start())
	t0 := clock.Now()

	path := filepath.Join(t.TempDir(), "wecom-oidc.db")
	b := openTest(t, path, Options{Now: clock.Now})
	exportScript(t, b, t0)
	wantStats, err := b.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	e := mustOpenEtcd(t, server.Endpoint, "/written/", clock.Now)
	exportScript(t, e, t0)

	exported, res := mustExport(t, path, t0)
	var backup bytes.Buffer
	if _, err := e.Backup(ctx, &backup); err != nil {
		t.Fatal(err)
	}
	want := dropStale(t, readCopy(t, backup.Bytes()))
	diffCopies(t, "export vs the etcd backend's backup", readCopy(t, exported), want)
	if res.Keys != len(want) {
		t.Errorf("ExportResult.Keys = %d, the copy holds %d", res.Keys, len(want))
	}
	if len(res.LeftOut) != 0 {
		t.Errorf("left out at t0: %v", res.LeftOut)
	}

	r := mustOpenEtcd(t, server.Endpoint, "/restored/", clock.Now)
	n, err := r.Restore(ctx, bytes.NewReader(exported))
	if err != nil {
		t.Fatalf("Restore of the export: %v", err)
	}
	if n != len(want) {
		t.Errorf("Restore wrote %d keys, want %d", n, len(want))
	}
	backup.Reset()
	if _, err := r.Backup(ctx, &backup); err != nil {
		t.Fatal(err)
	}
	diffCopies(t, "restored prefix vs the etcd backend's", dropStale(t, readCopy(t, backup.Bytes())), want)

	if got, err := r.Stats(ctx); err != nil || !reflect.DeepEqual(got, wantStats) {
		t.Errorf("Stats on the restored prefix = %v (%v), on the database %v", got, err, wantStats)
	}
	if _, err := r.GetAccessToken(ctx, "at1"); !errors.Is(err, storage.ErrRevoked) {
		t.Errorf("at1 (revoked by the replay): %v", err)
	}
	if _, err := r.GetAccessToken(ctx, "at6"); !errors.Is(err, storage.ErrRevoked) {
		t.Errorf("at6 (revoked by itself): %v", err)
	}
	if _, err := r.GetAccessToken(ctx, "at3"); err != nil {
		t.Errorf("at3: %v", err)
	}
	if _, err := r.ConsumeCode(ctx, storage.HashSecret("c2")); !errors.Is(err, storage.ErrAlreadyUsed) {
		t.Errorf("c2 (redeemed before the export): %v", err)
	}
	if got, err := r.ConsumeCode(ctx, storage.HashSecret("c3")); err != nil || got.ID != "ar3" {
		t.Errorf("c3 (pending): %+v, %v", got, err)
	}
	// The rotated rt2 is presented again: fam2 is revoked, and rt3 with it.
	if _, err := r.GetRefreshToken(ctx, storage.HashSecret("rt2")); !errors.Is(err, storage.ErrTokenReused) {
		t.Errorf("rt2 (rotated before the export): %v", err)
	}
	if _, err := r.GetRefreshToken(ctx, storage.HashSecret("rt3")); !errors.Is(err, storage.ErrRevoked) {
		t.Errorf("rt3 after rt2's reuse: %v", err)
	}
	// Ending sess1 follows the session's links to fam1 (revoked already) and fam2.
	sess, err := r.EndSession(ctx, storage.HashSecret("session-1"))
	if err != nil || !slices.Equal(sess.Clients, []string{"app", "spa"}) {
		t.Errorf("EndSession: %+v, %v", sess, err)
	}
	// The cross-device records, and the user-code index, came along.
	if sl, err := r.GetScanLogin(ctx, storage.HashSecret("handle-1")); err != nil || sl.Status != "confirmed" {
		t.Errorf("GetScanLogin: %+v, %v", sl, err)
	}
	dev1, err := r.GetDeviceAuthorizationByUserCode(ctx, "BCDF-GHJK")
	if err != nil || dev1.DeviceCodeHash != storage.HashSecret("dev1") || dev1.Status != "approved" || !dev1.ExpiresAt.Equal(t0.Add(15*time.Minute)) {
		t.Errorf("GetDeviceAuthorizationByUserCode: %+v, %v", dev1, err)
	}
	err = r.CreateDeviceAuthorization(ctx, storage.DeviceAuthorization{DeviceCodeHash: storage.HashSecret("dev3"), UserCode: "BCDF-GHJK",
		ClientID: "spa", ExpiresAt: t0.Add(time.Hour)})
	if !errors.Is(err, storage.ErrAlreadyExists) {
		t.Errorf("CreateDeviceAuthorization with dev1's user code: %v, want ErrAlreadyExists", err)
	}
}

// TestExportEtcdLeavesOut checks what an export leaves out once records have expired, that the
// database file is not written to, and the refusals: a database in use, a file that is not a
// wecom-oidc database.
func TestExportEtcdLeavesOut(t *testing.T) {
	clock := storagetest.NewClock(storagetest.Start())
	t0 := clock.Now()
	path := filepath.Join(t.TempDir(), "wecom-oidc.db")
	s := openTest(t, path, Options{Now: clock.Now})
	exportScript(t, s, t0)

	t.Run("in use", func(t *testing.T) {
		var buf bytes.Buffer
		_, err := ExportEtcd(t.Context(), path, &buf, ExportOptions{Timeout: 50 * time.Millisecond})
		if err == nil || !strings.Contains(err.Error(), "in use") {
			t.Fatalf("export of an open database: %v", err)
		}
		if buf.Len() != 0 {
			t.Errorf("wrote %d bytes", buf.Len())
		}
	})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	before := fileSum(t, path)
	raw, res := mustExport(t, path, t0.Add(2*time.Minute))
	if after := fileSum(t, path); after != before {
		t.Error("the export changed the database file")
	}
	kvs := readCopy(t, raw)
	wantLeftOut := map[string]int{"auth_requests": 1, "codes": 1, "auth_request_codes": 1, "sessions": 1, "session_families": 1,
		"device_authorizations": 1, "device_user_codes": 1} // dev2 and its code
	if !reflect.DeepEqual(res.LeftOut, wantLeftOut) {
		t.Errorf("LeftOut = %v, want %v", res.LeftOut, wantLeftOut)
	}
	wantMoved := map[string]int{
		"clients": 2, "users": 1, "keys": 2, "upstream_tokens": 1, "login_states": 1,
		"auth_requests":      1, // ar3 (ar1 and ar2 went with their tokens)
		"codes":              3, // c1 and c2 used, c3 pending
		"auth_request_codes": 1, // c3's
		"sessions":           1, // sess1
		"session_families":   2, // sess1 → fam1, fam2
		"refresh_families":   3, "refresh_tokens": 4, "access_tokens": 6,
		"auth_request_tokens":   5, // ar1: a, f, x; ar2: a, f
		"scan_logins":           1,
		"device_authorizations": 1, "device_user_codes": 1, // dev1 and its code
	}
	if !reflect.DeepEqual(res.Moved, wantMoved) {
		t.Errorf("Moved = %v, want %v", res.Moved, wantMoved)
	}
	for k := range kvs {
		for _, gone := range []string{"ar4", storage.HashSecret("c4"), storage.HashSecret("session-3"), storage.HashSecret("dev2"), "LMNP-QRST"} {
			if strings.Contains(k, gone) {
				t.Errorf("expired %s exported as %q", gone, k)
			}
		}
	}
	expiring := 0
	for _, n := range res.Moved {
		expiring += n
	}
	expiring -= res.Moved["clients"] + res.Moved["users"] + res.Moved["keys"]
	if res.Keys != len(kvs) || len(kvs) != expiring*2+5 {
		t.Errorf("%d keys (result %d); want every record once and an index entry per expiring one (%d)", len(kvs), res.Keys, expiring*2+5)
	}

	t.Run("not a database", func(t *testing.T) {
		dir := t.TempDir()
		empty := filepath.Join(dir, "empty.db")
		if err := os.WriteFile(empty, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		other := filepath.Join(dir, "other.db")
		db, err := bbolt.Open(other, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Update(func(tx *bbolt.Tx) error { _, err := tx.CreateBucket([]byte("x")); return err }); err != nil {
			t.Fatal(err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{filepath.Join(dir, "missing.db"), empty, other} {
			var buf bytes.Buffer
			if _, err := ExportEtcd(t.Context(), p, &buf, ExportOptions{}); err == nil || buf.Len() != 0 {
				t.Errorf("export of %s: %v, %d bytes", filepath.Base(p), err, buf.Len())
			}
		}
		if _, err := os.Stat(filepath.Join(dir, "missing.db")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the export created the missing file: %v", err)
		}
	})
}

func fileSum(tb testing.TB, path string) [32]byte {
	tb.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return sha256.Sum256(raw)
}
