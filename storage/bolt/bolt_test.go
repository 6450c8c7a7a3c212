package bolt

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/wecom-oidc/wecom-oidc/storage"
	"github.com/wecom-oidc/wecom-oidc/storage/internal/record"
	"github.com/wecom-oidc/wecom-oidc/storage/storagetest"
)

// openTest opens a store at path and closes it when the test ends. A store the test closed
// itself is fine.
func openTest(tb testing.TB, path string, opts Options) *Store {
	tb.Helper()
	s, err := Open(path, opts)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil && !errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
			tb.Errorf("Close: %v", err)
		}
	})
	return s
}

func TestConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, now func() time.Time) storage.Store {
		return openTest(t, filepath.Join(t.TempDir(), "wecom-oidc.db"), Options{Now: now})
	}, func(t *testing.T, path string, now func() time.Time) storage.Store {
		return openTest(t, path, Options{Now: now})
	})
}

func TestFileModeAndParentDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state", "nested")
	path := filepath.Join(dir, "wecom-oidc.db")
	openTest(t, path, Options{})
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("database file mode = %v, want 0600", got)
	}
	di, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := di.Mode().Perm(); got != 0o700 {
		t.Errorf("created directory mode = %v, want 0700", got)
	}
}

func TestSecondOpenFailsFastWhileLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wecom-oidc.db")
	openTest(t, path, Options{})
	start := time.Now()
	s2, err := Open(path, Options{Timeout: 100 * time.Millisecond})
	elapsed := time.Since(start)
	if err == nil {
		_ = s2.Close()
		t.Fatal("second Open of a locked database succeeded")
	}
	if !errors.Is(err, bolterrors.ErrTimeout) {
		t.Errorf("error %v does not wrap bbolt's ErrTimeout", err)
	}
	for _, want := range []string{path, "in use by another wecom-oidc process", "within 100ms"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if elapsed > 2*time.Second {
		t.Errorf("second Open took %v with a 100ms timeout", elapsed)
	}
}

func TestDataSurvivesReopen(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "wecom-oidc.db")
	clock := storagetest.NewClock(storagetest.Start())
	s := openTest(t, path, Options{Now: clock.Now})
	c := storage.Client{ID: "grafana", RedirectURIs: []string{"https://g/cb"}, Source: storage.SourceConfig}
	if err := s.CreateClient(ctx, c); err != nil {
		t.Fatal(err)
	}
	at := storage.AccessToken{ID: "at_1", FamilyID: "f1", Scopes: []string{"openid"}, ExpiresAt: clock.Now().Add(time.Hour)}
	rt := storage.RefreshToken{Hash: storage.HashSecret("r1"), FamilyID: "f1", Scopes: []string{"openid"}, ExpiresAt: clock.Now().Add(time.Hour)}
	if err := s.CreateTokens(ctx, at, &rt); err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeRefreshFamily(ctx, "f1"); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err == nil {
		t.Error("second Close succeeded")
	}

	s = openTest(t, path, Options{Now: clock.Now})
	got, err := s.GetClient(ctx, "grafana")
	if err != nil {
		t.Fatalf("GetClient after reopen: %v", err)
	}
	if got.ID != c.ID || got.RedirectURIs[0] != c.RedirectURIs[0] {
		t.Errorf("client after reopen = %+v", got)
	}
	if _, err := s.GetAccessToken(ctx, "at_1"); !errors.Is(err, storage.ErrRevoked) {
		t.Errorf("GetAccessToken after reopen: %v, want ErrRevoked (the revocation must persist)", err)
	}
}

func TestOpenRejectsNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wecom-oidc.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	err = s.db.Update(func(tx *bbolt.Tx) error {
		return bkt(tx, bucketMeta).Put([]byte(metaSchemaKey), []byte{0, 0, 0, 0, 0, 0, 0, 2})
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(path, Options{})
	if err == nil {
		_ = s.Close()
		t.Fatal("Open accepted a database with schema version 2")
	}
	if !strings.Contains(err.Error(), "schema version 2") {
		t.Errorf("error %q does not name the schema version", err)
	}
	// The failed Open released the lock.
	s, err = Open(path, Options{Timeout: 100 * time.Millisecond})
	if err == nil {
		_ = s.Close()
	} else if errors.Is(err, bolterrors.ErrTimeout) {
		t.Errorf("lock still held after a failed Open: %v", err)
	}
}

// bucketSizes counts the keys of every bucket.
func bucketSizes(tb testing.TB, s *Store) map[string]int {
	tb.Helper()
	sizes := map[string]int{}
	err := s.db.View(func(tx *bbolt.Tx) error {
		for _, name := range allBuckets() {
			sizes[name] = tx.Bucket([]byte(name)).Stats().KeyN
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return sizes
}

// TestDeleteExpiredShrinksBuckets checks the physical effect of a sweep, expiry index included,
// with a chunk size small enough that the sweep takes several transactions.
func TestDeleteExpiredShrinksBuckets(t *testing.T) {
	ctx := t.Context()
	clock := storagetest.NewClock(storagetest.Start())
	s := openTest(t, filepath.Join(t.TempDir(), "wecom-oidc.db"), Options{Now: clock.Now})
	s.gcChunk = 3
	t0 := clock.Now()

	mustNil := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	for _, id := range []string{"ar1", "ar2", "ar3", "ar4"} {
		mustNil("CreateAuthRequest", s.CreateAuthRequest(ctx, storage.AuthRequest{ID: id, ExpiresAt: t0.Add(10 * time.Minute)}))
	}
	mustNil("CreateAuthRequest(live)", s.CreateAuthRequest(ctx, storage.AuthRequest{ID: "live", ExpiresAt: t0.Add(time.Hour)}))
	mustNil("SaveCode(1)", s.SaveCode(ctx, "c1", "ar1", t0.Add(time.Minute)))
	mustNil("SaveCode(2)", s.SaveCode(ctx, "c2", "ar2", t0.Add(time.Minute)))
	mustNil("SaveCode(live)", s.SaveCode(ctx, "c3", "live", t0.Add(time.Hour)))
	_, err := s.ConsumeCode(ctx, "c2")
	mustNil("ConsumeCode", err)
	mustNil("CreateLoginState", s.CreateLoginState(ctx, storage.LoginState{State: "s1", ExpiresAt: t0.Add(time.Minute)}))
	rt := storage.RefreshToken{Hash: "r1", FamilyID: "f1", ExpiresAt: t0.Add(20 * time.Minute)}
	mustNil("CreateTokens", s.CreateTokens(ctx, storage.AccessToken{ID: "at1", FamilyID: "f1", ExpiresAt: t0.Add(5 * time.Minute)}, &rt))
	mustNil("CreateSession", s.CreateSession(ctx, storage.Session{ID: "sess", ExpiresAt: t0.Add(time.Minute)}))
	mustNil("PutUpstreamToken", s.PutUpstreamToken(ctx, storage.UpstreamToken{Key: "k", Token: "t", ExpiresAt: t0.Add(time.Minute)}))
	// Replacing records must not leave their old index entries behind.
	mustNil("PutUpstreamToken(again)", s.PutUpstreamToken(ctx, storage.UpstreamToken{Key: "k", Token: "t2", ExpiresAt: t0.Add(2 * time.Minute)}))
	_, err = s.UpdateAuthRequest(ctx, "ar4", func(ar *storage.AuthRequest) error { ar.ExpiresAt = t0.Add(11 * time.Minute); return nil })
	mustNil("UpdateAuthRequest", err)

	checkIndex(t, s)
	before := bucketSizes(t, s)
	want := map[string]int{
		"auth_requests": 5, "codes": 3, "auth_request_codes": 3, "login_states": 1, "access_tokens": 1,
		"refresh_tokens": 1, "refresh_families": 1, "sessions": 1, "upstream_tokens": 1,
		// one entry per expiring record: 5+3+1+1+1+1+1+1
		"expiry": 14,
	}
	for name, n := range want {
		if before[name] != n {
			t.Errorf("before the sweep: bucket %s has %d keys, want %d", name, before[name], n)
		}
	}

	// Deleting an auth request drops its pending code and the link, and their index entries.
	mustNil("DeleteAuthRequest", s.DeleteAuthRequest(ctx, "ar1"))
	after := bucketSizes(t, s)
	if after["auth_requests"] != 4 || after["codes"] != 2 || after["auth_request_codes"] != 2 || after["expiry"] != 12 {
		t.Errorf("after DeleteAuthRequest: %v", after)
	}

	clock.Advance(30 * time.Minute)
	res, err := s.DeleteExpired(ctx)
	mustNil("DeleteExpired", err)
	wantRes := storage.GCResult{AuthRequests: 3, Codes: 1, LoginStates: 1, AccessTokens: 1, RefreshTokens: 1, Sessions: 1}
	if res != wantRes {
		t.Errorf("DeleteExpired = %+v, want %+v", res, wantRes)
	}
	checkIndex(t, s)
	after = bucketSizes(t, s)
	wantAfter := map[string]int{
		"auth_requests": 1, "codes": 1, "auth_request_codes": 1, "login_states": 0, "access_tokens": 0,
		"refresh_tokens": 0, "refresh_families": 0, "sessions": 0, "upstream_tokens": 0,
		"expiry": 2, // the live auth request and its code
	}
	for name, n := range wantAfter {
		if after[name] != n {
			t.Errorf("after the sweep: bucket %s has %d keys, want %d", name, after[name], n)
		}
	}
}

func TestIndexKeyOrderAndParse(t *testing.T) {
	base := storagetest.Start()
	tests := []struct {
		name   string
		a, b   time.Time
		aFirst bool
	}{
		{"later sorts after", base, base.Add(time.Nanosecond), true},
		{"zero time sorts first", time.Time{}, base, true},
		{"pre-1970 sorts first", time.Date(1960, 1, 1, 0, 0, 0, 0, time.UTC), time.Unix(0, 1), true},
		{"far future sorts last", time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC), base, false},
	}
	for _, tt := range tests {
		ka, kb := indexKey(tt.a, bucketCodes, []byte("k")), indexKey(tt.b, bucketCodes, []byte("k"))
		if got := string(ka) < string(kb); got != tt.aFirst {
			t.Errorf("%s: key(a) < key(b) = %v", tt.name, got)
		}
	}
	k := indexKey(base, bucketRefreshTokens, []byte("a\x00b"))
	nanos, bucket, key, ok := parseIndexKey(k)
	if !ok || nanos != uint64(base.UnixNano()) || bucket != "refresh_tokens" || string(key) != "a\x00b" {
		t.Errorf("parseIndexKey = %d %q %q %v", nanos, bucket, key, ok)
	}
}

func TestCanceledContext(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "wecom-oidc.db"), Options{})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := s.PutUser(ctx, storage.User{Subject: "u"}); !errors.Is(err, context.Canceled) {
		t.Errorf("PutUser with a canceled context: %v", err)
	}
	if _, err := s.GetUser(t.Context(), "u"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("user written despite the canceled context: %v", err)
	}
}

// TestSweepIgnoresStaleIndexEntries plants an index entry that no longer matches its record (as
// a crash between releases with another layout might leave) and checks the sweep drops the
// entry but keeps the live record.
func TestSweepIgnoresStaleIndexEntries(t *testing.T) {
	ctx := t.Context()
	clock := storagetest.NewClock(storagetest.Start())
	s := openTest(t, filepath.Join(t.TempDir(), "wecom-oidc.db"), Options{Now: clock.Now})
	t0 := clock.Now()
	if err := s.CreateSession(ctx, storage.Session{ID: "sess", ExpiresAt: t0.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	err := s.db.Update(func(tx *bbolt.Tx) error {
		return bkt(tx, bucketExpiry).Put(indexKey(t0.Add(time.Minute), bucketSessions, []byte("sess")), []byte{})
	})
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Minute)
	res, err := s.DeleteExpired(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Total() != 0 {
		t.Errorf("DeleteExpired = %+v, want nothing counted", res)
	}
	if _, err := s.GetSession(ctx, "sess"); err != nil {
		t.Errorf("live session swept through a stale index entry: %v", err)
	}
	if n := bucketSizes(t, s)["expiry"]; n != 1 {
		t.Errorf("expiry index has %d entries, want 1 (the stale one dropped)", n)
	}
}

func TestRotateRefusesAnotherFamily(t *testing.T) {
	ctx := t.Context()
	clock := storagetest.NewClock(storagetest.Start())
	s := openTest(t, filepath.Join(t.TempDir(), "wecom-oidc.db"), Options{Now: clock.Now})
	exp := clock.Now().Add(time.Hour)
	rt := storage.RefreshToken{Hash: "h0", FamilyID: "f1", ExpiresAt: exp}
	if err := s.CreateTokens(ctx, storage.AccessToken{ID: "at0", FamilyID: "f1", ExpiresAt: exp}, &rt); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name         string
		nextFamily   string
		accessFamily string
	}{
		{"next in another family", "f2", "f1"},
		{"access in another family", "f1", "f2"},
	}
	for _, tt := range tests {
		next := storage.RefreshToken{Hash: "h1", FamilyID: tt.nextFamily, ExpiresAt: exp}
		at := storage.AccessToken{ID: "at1", FamilyID: tt.accessFamily, ExpiresAt: exp}
		if err := s.RotateRefreshToken(ctx, "h0", next, at); !errors.Is(err, storage.ErrConflict) {
			t.Errorf("%s: RotateRefreshToken = %v, want ErrConflict", tt.name, err)
		}
	}
	// The refused rotations left the presented token unrotated.
	if _, err := s.GetRefreshToken(ctx, "h0"); err != nil {
		t.Errorf("GetRefreshToken after refused rotations: %v", err)
	}
}

// checkIndex asserts that the expiry index and the expiring records match one to one: every
// entry names a stored record carrying that expiry, and every expiring record has its entry.
func checkIndex(tb testing.TB, s *Store) {
	tb.Helper()
	err := s.db.View(func(tx *bbolt.Tx) error {
		entries := map[string]bool{}
		err := bkt(tx, bucketExpiry).ForEach(func(k, _ []byte) error {
			_, bucket, key, ok := parseIndexKey(k)
			if !ok || !expiringBucket(bucket) {
				tb.Errorf("malformed index entry %q", k)
				return nil
			}
			raw := bkt(tx, bucket).Get(key)
			if raw == nil {
				tb.Errorf("index entry for missing record %s/%q", bucket, key)
				return nil
			}
			exp, err := record.ExpiryOf(raw)
			if err != nil {
				return err
			}
			if string(indexKey(exp, bucket, key)) != string(k) {
				tb.Errorf("index entry for %s/%q has another expiry than the record (%s)", bucket, key, exp)
			}
			entries[string(k)] = true
			return nil
		})
		if err != nil {
			return err
		}
		for _, bucket := range allBuckets() {
			if !expiringBucket(bucket) {
				continue
			}
			err := bkt(tx, bucket).ForEach(func(k, raw []byte) error {
				exp, err := record.ExpiryOf(raw)
				if err != nil {
					return err
				}
				if !entries[string(indexKey(exp, bucket, k))] {
					tb.Errorf("record %s/%q has no index entry", bucket, k)
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
}

// checkLinks asserts that every link entry expires with what it points at: an access link with
// its access token, a family link with its family record (which must name the link's auth
// request or session).
func checkLinks(tb testing.TB, s *Store) {
	tb.Helper()
	err := s.db.View(func(tx *bbolt.Tx) error {
		check := func(bucket string, k []byte, target string, key string, wantAR, wantSession string) error {
			l, _, err := getJSON[record.Link](bkt(tx, bucket), k)
			if err != nil {
				return err
			}
			raw := bkt(tx, target).Get([]byte(key))
			if raw == nil {
				tb.Errorf("link %s/%q points at missing %s/%q", bucket, k, target, key)
				return nil
			}
			exp, err := record.ExpiryOf(raw)
			if err != nil {
				return err
			}
			if !exp.Equal(l.ExpiresAt) {
				tb.Errorf("link %s/%q expires %v, its %s record %v", bucket, k, l.ExpiresAt, target, exp)
			}
			if target == bucketFamilies {
				fam, _, err := getJSON[record.Family](bkt(tx, target), []byte(key))
				if err != nil {
					return err
				}
				if (wantAR != "" && fam.AuthRequestID != wantAR) || (wantSession != "" && fam.SessionID != wantSession) {
					tb.Errorf("link %s/%q: family %q names auth request %q, session %q", bucket, k, key, fam.AuthRequestID, fam.SessionID)
				}
			}
			return nil
		}
		err := bkt(tx, bucketARTokens).ForEach(func(k, _ []byte) error {
			n := int(binary.BigEndian.Uint16(k))
			ar, rest := string(k[2:2+n]), k[2+n:]
			switch rest[0] {
			case linkAccess:
				return check(bucketARTokens, k, bucketAccessTokens, string(rest[1:]), "", "")
			case linkFamily:
				return check(bucketARTokens, k, bucketFamilies, string(rest[1:]), ar, "")
			}
			return nil
		})
		if err != nil {
			return err
		}
		return bkt(tx, bucketSessionFamilies).ForEach(func(k, _ []byte) error {
			n := int(binary.BigEndian.Uint16(k))
			return check(bucketSessionFamilies, k, bucketFamilies, string(k[2+n:]), "", string(k[2:2+n]))
		})
	})
	if err != nil {
		tb.Fatal(err)
	}
}

// linkExpiry reads the expiry of a link entry; ok is false when it is absent.
func linkExpiry(tb testing.TB, s *Store, bucket string, key []byte) (exp time.Time, ok bool) {
	tb.Helper()
	err := s.db.View(func(tx *bbolt.Tx) error {
		l, found, err := getJSON[record.Link](bkt(tx, bucket), key)
		exp, ok = l.ExpiresAt, found
		return err
	})
	if err != nil {
		tb.Fatal(err)
	}
	return exp, ok
}

// TestRevocationLinks follows the auth_request_tokens and session_families entries through
// their life: written by CreateTokens, moved by rotation, kept by DeleteAuthRequest, dropped
// with their session, swept with what they point at, and always in the expiry index.
func TestRevocationLinks(t *testing.T) {
	ctx := t.Context()
	clock := storagetest.NewClock(storagetest.Start())
	s := openTest(t, filepath.Join(t.TempDir(), "wecom-oidc.db"), Options{Now: clock.Now})
	t0 := clock.Now()
	mustNil := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	sizes := func(when string, want map[string]int) {
		t.Helper()
		got := bucketSizes(t, s)
		for name, n := range want {
			if got[name] != n {
				t.Errorf("%s: bucket %s has %d keys, want %d", when, name, got[name], n)
			}
		}
		checkIndex(t, s)
		checkLinks(t, s)
	}

	mustNil("CreateSession", s.CreateSession(ctx, storage.Session{ID: "sess", ExpiresAt: t0.Add(8 * time.Hour)}))
	mustNil("CreateSession(2)", s.CreateSession(ctx, storage.Session{ID: "sess2", ExpiresAt: t0.Add(8 * time.Hour)}))
	for _, ar := range []string{"ar1", "ar2", "ar3"} {
		mustNil("CreateAuthRequest", s.CreateAuthRequest(ctx, storage.AuthRequest{ID: ar, ExpiresAt: t0.Add(10 * time.Minute)}))
		mustNil("SaveCode", s.SaveCode(ctx, "code-"+ar, ar, t0.Add(2*time.Minute)))
		_, err := s.ConsumeCode(ctx, "code-"+ar)
		mustNil("ConsumeCode", err)
	}
	// ar1: access 1h and family f1 (refresh 24h) under sess. ar2: an access token (30m) only.
	// ar3: family f3 under sess2. f4: under sess, from no auth request.
	rt1 := storage.RefreshToken{Hash: "r1", FamilyID: "f1", SessionID: "sess", ExpiresAt: t0.Add(24 * time.Hour)}
	mustNil("CreateTokens(ar1)", s.CreateTokens(ctx, storage.AccessToken{ID: "at1", FamilyID: "f1", AuthRequestID: "ar1", ExpiresAt: t0.Add(time.Hour)}, &rt1))
	mustNil("CreateTokens(ar2)", s.CreateTokens(ctx, storage.AccessToken{ID: "at2", AuthRequestID: "ar2", ExpiresAt: t0.Add(30 * time.Minute)}, nil))
	rt3 := storage.RefreshToken{Hash: "r3", FamilyID: "f3", SessionID: "sess2", ExpiresAt: t0.Add(24 * time.Hour)}
	mustNil("CreateTokens(ar3)", s.CreateTokens(ctx, storage.AccessToken{ID: "at3", FamilyID: "f3", AuthRequestID: "ar3", ExpiresAt: t0.Add(time.Hour)}, &rt3))
	rt4 := storage.RefreshToken{Hash: "r4", FamilyID: "f4", SessionID: "sess", ExpiresAt: t0.Add(time.Hour)}
	mustNil("CreateTokens(f4)", s.CreateTokens(ctx, storage.AccessToken{ID: "at4", FamilyID: "f4", ExpiresAt: t0.Add(time.Hour)}, &rt4))
	for _, ar := range []string{"ar1", "ar2", "ar3"} {
		mustNil("DeleteAuthRequest", s.DeleteAuthRequest(ctx, ar))
	}
	sizes("after issuing", map[string]int{"auth_request_tokens": 5, "session_families": 3, "auth_requests": 0, "codes": 3})

	// A rotation extends f1, and its two links with it.
	clock.Advance(time.Minute)
	mustNil("RotateRefreshToken", s.RotateRefreshToken(ctx, "r1",
		storage.RefreshToken{Hash: "r1b", FamilyID: "f1", SessionID: "sess", ExpiresAt: t0.Add(48 * time.Hour)},
		storage.AccessToken{ID: "at1b", FamilyID: "f1", ExpiresAt: t0.Add(2 * time.Hour)}))
	for _, l := range []struct {
		bucket string
		key    []byte
	}{
		{bucketARTokens, arTokenKey("ar1", linkFamily, "f1")},
		{bucketSessionFamilies, sessionFamilyKey("sess", "f1")},
	} {
		if exp, ok := linkExpiry(t, s, l.bucket, l.key); !ok || !exp.Equal(t0.Add(48*time.Hour)) {
			t.Errorf("link %s/%q expires %v (present %v), want the extended family's %v", l.bucket, l.key, exp, ok, t0.Add(48*time.Hour))
		}
	}
	sizes("after the rotation", map[string]int{"auth_request_tokens": 5, "session_families": 3})

	// A replay revokes and leaves a marker until the code's expiry.
	_, err := s.ConsumeCode(ctx, "code-ar2")
	if !errors.Is(err, storage.ErrAlreadyUsed) {
		t.Fatalf("replayed ConsumeCode: %v", err)
	}
	if _, ok := linkExpiry(t, s, bucketARTokens, arTokenKey("ar2", linkReplayed, "")); !ok {
		t.Error("no replay marker for ar2")
	}
	sizes("after the replay", map[string]int{"auth_request_tokens": 6})

	// EndSession drops the session's links; DeleteSession does too.
	_, err = s.EndSession(ctx, "sess2")
	mustNil("EndSession", err)
	sizes("after EndSession", map[string]int{"session_families": 2, "auth_request_tokens": 6, "sessions": 1})

	// Sweeps: the marker and the codes at 2m, at2 at 30m, at1, at3, at4 and f4 at 1h, the
	// session (and its links) at 8h, f3 at 24h, f1 at 48h.
	for _, step := range []struct {
		at   time.Duration
		want map[string]int
	}{
		{3 * time.Minute, map[string]int{"auth_request_tokens": 5, "codes": 0, "session_families": 2}},
		{31 * time.Minute, map[string]int{"auth_request_tokens": 4, "access_tokens": 4}},
		{2*time.Hour + time.Minute, map[string]int{"auth_request_tokens": 2, "access_tokens": 0, "refresh_families": 2, "session_families": 1}},
		{9 * time.Hour, map[string]int{"auth_request_tokens": 2, "sessions": 0, "session_families": 0, "refresh_families": 2}},
		{25 * time.Hour, map[string]int{"auth_request_tokens": 1, "refresh_families": 1}},
		{49 * time.Hour, map[string]int{"auth_request_tokens": 0, "refresh_families": 0, "refresh_tokens": 0, "expiry": 0}},
	} {
		clock.Set(t0.Add(step.at))
		_, err := s.DeleteExpired(ctx)
		mustNil("DeleteExpired", err)
		sizes("after the sweep at +"+step.at.String(), step.want)
	}

	// DeleteSession drops the session's links too.
	mustNil("CreateSession(3)", s.CreateSession(ctx, storage.Session{ID: "sess3", ExpiresAt: clock.Now().Add(time.Hour)}))
	rt5 := storage.RefreshToken{Hash: "r5", FamilyID: "f5", SessionID: "sess3", ExpiresAt: clock.Now().Add(time.Hour)}
	mustNil("CreateTokens(f5)", s.CreateTokens(ctx, storage.AccessToken{ID: "at5", FamilyID: "f5", ExpiresAt: clock.Now().Add(time.Hour)}, &rt5))
	sizes("before DeleteSession", map[string]int{"session_families": 1})
	mustNil("DeleteSession", s.DeleteSession(ctx, "sess3"))
	sizes("after DeleteSession", map[string]int{"session_families": 0, "refresh_families": 1})
}

// TestConcurrentUpdatesLoseNothing: concurrent UpdateUser calls on one user are serialised, so
// every change lands (fn may run more than once; each run starts from the stored user).
func TestConcurrentUpdatesLoseNothing(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "wecom-oidc.db"), Options{})
	const goroutines = 16
	var wg sync.WaitGroup
	for i := range goroutines {
		wg.Go(func() {
			_, err := s.UpdateUser(t.Context(), "u", func(u *storage.User, _ bool) error {
				u.Extra = maps.Clone(u.Extra)
				if u.Extra == nil {
					u.Extra = map[string]string{}
				}
				u.Extra[strconv.Itoa(i)] = "x"
				return nil
			})
			if err != nil {
				t.Errorf("UpdateUser #%d: %v", i, err)
			}
		})
	}
	wg.Wait()
	u, err := s.GetUser(t.Context(), "u")
	if err != nil {
		t.Fatal(err)
	}
	if len(u.Extra) != goroutines {
		t.Errorf("user has %d Extra entries, want %d: %v", len(u.Extra), goroutines, u.Extra)
	}
}

// cancelingWriter cancels its context at its first write and counts its writes.
type cancelingWriter struct {
	cancel context.CancelFunc
	writes int
}

func (w *cancelingWriter) Write(p []byte) (int, error) {
	w.writes++
	w.cancel()
	return len(p), nil
}

// TestBackupStopsWhenCanceled: a context cancelled during the copy stops it at the next write.
func TestBackupStopsWhenCanceled(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "wecom-oidc.db"), Options{})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	w := &cancelingWriter{cancel: cancel}
	n, err := s.Backup(ctx, w)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Backup cancelled during the copy: %v, want context.Canceled", err)
	}
	if w.writes != 1 || n != int64(s.db.Info().PageSize) {
		t.Errorf("Backup went on after the cancellation: %d writes, %d bytes reported", w.writes, n)
	}
}

// slowWriter delays every write, so that a backup lasts while writers go on.
type slowWriter struct {
	w     io.Writer
	delay time.Duration
}

func (w slowWriter) Write(p []byte) (int, error) {
	time.Sleep(w.delay)
	return w.w.Write(p)
}

// loadWrite is one write of TestBackupUnderWriteLoad, with when it started and when it was
// acknowledged (the call returned nil).
type loadWrite struct {
	kind           string // "client", "tokens", "user", "user-update"
	writer, n      int
	started, acked time.Time
}

// TestBackupUnderWriteLoad runs writers that keep creating clients, tokens and users and
// updating a user while a backup is taken, then checks the copy: every write acknowledged before
// Backup was called is in it and reads back whole, no write started after Backup returned is,
// and the file passes bbolt's consistency check.
func TestBackupUnderWriteLoad(t *testing.T) {
	const (
		writers      = 4
		maxPerWriter = 3000                  // bounds the test's size,
		maxDuration  = 5 * time.Second       // and its time
		beforeBackup = 1000                  // acknowledged writes before the backup starts
		afterBackup  = 200                   // and after it returned
		chunkDelay   = 20 * time.Millisecond // per write of the copy to its file
	)
	ctx := t.Context()
	dir := t.TempDir()
	s := openTest(t, filepath.Join(dir, "wecom-oidc.db"), Options{})
	created := time.Date(2030, time.January, 2, 3, 4, 5, 600, time.UTC)
	expires := time.Now().Add(time.Hour).UTC().Round(0)

	client := func(w, n int) storage.Client {
		id := fmt.Sprintf("c-%d-%05d", w, n)
		return storage.Client{ID: id, Name: "load " + id, RedirectURIs: []string{"https://" + id + ".example/cb"},
			Source: storage.SourceCLI, CreatedAt: created, UpdatedAt: created}
	}
	tokens := func(w, n int) (storage.AccessToken, storage.RefreshToken) {
		fam, sub := fmt.Sprintf("f-%d-%05d", w, n), fmt.Sprintf("sub-%d", w)
		at := storage.AccessToken{ID: fmt.Sprintf("at_%d_%05d", w, n), ClientID: "load", Subject: sub, Scopes: []string{"openid"},
			FamilyID: fam, CreatedAt: created, ExpiresAt: expires}
		rt := storage.RefreshToken{Hash: storage.HashSecret("r-" + fam), ID: "rt_" + fam, FamilyID: fam, ClientID: "load",
			Subject: sub, Scopes: []string{"openid", "offline_access"}, AuthTime: created, CreatedAt: created, ExpiresAt: expires}
		return at, rt
	}
	user := func(w, n int) storage.User {
		sub := fmt.Sprintf("u-%d-%05d", w, n)
		return storage.User{Subject: sub, CorpID: "ww-load", UserID: sub, Name: "load " + sub, FirstSeen: created, LastLogin: created}
	}
	counter := func(w int) string { return fmt.Sprintf("counter-%d", w) }

	var acked atomic.Int64
	stop := make(chan struct{})
	deadline := time.Now().Add(maxDuration)
	done := make([][]loadWrite, writers)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for n := range maxPerWriter {
				select {
				case <-stop:
					return
				default:
				}
				if time.Now().After(deadline) {
					return
				}
				op := loadWrite{writer: w, n: n, started: time.Now()}
				var err error
				switch n % 4 {
				case 0:
					op.kind, err = "client", s.CreateClient(ctx, client(w, n))
				case 1:
					at, rt := tokens(w, n)
					op.kind, err = "tokens", s.CreateTokens(ctx, at, &rt)
				case 2:
					op.kind, err = "user", s.PutUser(ctx, user(w, n))
				case 3:
					op.kind = "user-update"
					_, err = s.UpdateUser(ctx, counter(w), func(u *storage.User, _ bool) error {
						if u.Extra == nil {
							u.Extra = map[string]string{}
						}
						u.Extra[strconv.Itoa(n)] = "x"
						return nil
					})
				}
				if err != nil {
					t.Errorf("writer %d: %s #%d: %v", w, op.kind, n, err)
					return
				}
				op.acked = time.Now()
				done[w] = append(done[w], op)
				acked.Add(1)
			}
		})
	}
	waitFor := func(target int64) {
		for acked.Load() < target && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
	}

	waitFor(beforeBackup)
	path := filepath.Join(dir, "backup.db")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	ackedAtCall := acked.Load()
	called := time.Now()
	n, err := s.Backup(ctx, slowWriter{w: f, delay: chunkDelay})
	returned := time.Now()
	ackedAtReturn := acked.Load()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		close(stop)
		wg.Wait()
		t.Fatalf("Backup: %v", err)
	}
	waitFor(ackedAtReturn + afterBackup)
	close(stop)
	wg.Wait()
	if t.Failed() {
		return
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() != n {
		t.Fatalf("backup file: %v, size %d; Backup reported %d bytes", err, fi.Size(), n)
	}
	t.Logf("backup: %d bytes in %v; writes acknowledged before it was called %d, while it ran %d, in all %d",
		n, returned.Sub(called).Round(time.Millisecond), ackedAtCall, ackedAtReturn-ackedAtCall, acked.Load())
	// Writers went on while the copy was written: some write was acknowledged in the second half
	// of the backup (when a writer waits to enlarge bbolt's memory map, every write stalls until
	// the backup's read transaction ends).
	var longest time.Duration
	var lateHalf int
	mid := called.Add(returned.Sub(called) / 2)
	for _, ops := range done {
		for _, op := range ops {
			if op.acked.After(called) && op.started.Before(returned) {
				longest = max(longest, op.acked.Sub(op.started))
			}
			if op.acked.After(mid) && op.acked.Before(returned) {
				lateHalf++
			}
		}
	}
	t.Logf("longest write overlapping the backup: %v; acknowledged in its second half: %d", longest.Round(time.Millisecond), lateHalf)
	if lateHalf == 0 {
		t.Errorf("no write was acknowledged in the second half of the backup: writers were blocked (longest write %v)", longest)
	}

	// The file as written passes bbolt's consistency check.
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatalf("bbolt.Open(backup): %v", err)
	}
	err = db.View(func(tx *bbolt.Tx) error {
		var errs []error
		for err := range tx.Check() {
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("consistency check of the backup: %v", err)
	}

	b := openTest(t, path, Options{})
	counters := map[int]storage.User{}
	for w := range writers {
		u, err := b.GetUser(ctx, counter(w))
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("GetUser(%s) in the backup: %v", counter(w), err)
		}
		counters[w] = u
	}
	var checked, absent int
	for _, ops := range done {
		for _, op := range ops {
			before, after := op.acked.Before(called), op.started.After(returned)
			if !before && !after {
				continue // overlapping the backup: either way is right
			}
			var present bool
			var err error
			switch op.kind {
			case "client":
				want := client(op.writer, op.n)
				var got storage.Client
				got, err = b.GetClient(ctx, want.ID)
				present = err == nil
				if present && !reflect.DeepEqual(got, want) {
					t.Fatalf("client %s in the backup = %+v, want %+v", want.ID, got, want)
				}
			case "tokens":
				wantAT, wantRT := tokens(op.writer, op.n)
				var gotAT storage.AccessToken
				var gotRT storage.RefreshToken
				gotAT, err = b.GetAccessToken(ctx, wantAT.ID)
				present = err == nil
				if present {
					gotRT, err = b.GetRefreshToken(ctx, wantRT.Hash)
					if err != nil {
						t.Fatalf("access token %s is in the backup but its refresh token: %v", wantAT.ID, err)
					}
					if !reflect.DeepEqual(gotAT, wantAT) || !reflect.DeepEqual(gotRT, wantRT) {
						t.Fatalf("tokens of %s in the backup = %+v, %+v, want %+v, %+v", wantAT.FamilyID, gotAT, gotRT, wantAT, wantRT)
					}
				}
			case "user":
				want := user(op.writer, op.n)
				var got storage.User
				got, err = b.GetUser(ctx, want.Subject)
				present = err == nil
				if present && !reflect.DeepEqual(got, want) {
					t.Fatalf("user %s in the backup = %+v, want %+v", want.Subject, got, want)
				}
			case "user-update":
				present = counters[op.writer].Extra[strconv.Itoa(op.n)] == "x"
			}
			if err != nil && !errors.Is(err, storage.ErrNotFound) {
				t.Fatalf("%s #%d of writer %d in the backup: %v", op.kind, op.n, op.writer, err)
			}
			switch {
			case before && !present:
				t.Fatalf("%s #%d of writer %d, acknowledged %v before Backup was called, is missing from the backup",
					op.kind, op.n, op.writer, called.Sub(op.acked))
			case after && present:
				t.Fatalf("%s #%d of writer %d, started %v after Backup returned, is in the backup",
					op.kind, op.n, op.writer, op.started.Sub(returned))
			}
			if before {
				checked++
			} else {
				absent++
			}
		}
	}
	if checked == 0 || absent == 0 {
		t.Fatalf("checked %d writes acknowledged before the backup and %d started after it; want some of each", checked, absent)
	}
	t.Logf("backup checked: all %d writes acknowledged before Backup was called are present and whole; none of the %d started after it returned is", checked, absent)
}
