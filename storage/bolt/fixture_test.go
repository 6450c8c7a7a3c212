package bolt

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/wecom-oidc/wecom-oidc/storage"
	"github.com/wecom-oidc/wecom-oidc/storage/internal/record"
	"github.com/wecom-oidc/wecom-oidc/storage/storagetest"
)

// testdata/schema1.db is a database of schema version 1 written by the code as it was before the
// internal records moved to storage/internal/record (commit 1cfc4e0), with writeFixture and
// Backup. The tests below open a copy of it: a database file from the field must keep opening,
// reading and behaving the same. Rewrite it (-update-fixture) only when the format changes on
// purpose, and then keep the old file under another name.
var updateFixture = flag.Bool("update-fixture", false, "rewrite testdata/schema1.db with writeFixture")

const fixturePath = "testdata/schema1.db"

// fixtureTime is the clock writeFixture ran at.
var fixtureTime = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// writeFixture writes a record of every kind through the Store's API, so that each bucket holds
// what the flows leave in it:
//
//	ar1: completed with a new session sess1 and code c1, redeemed, exchanged for at1 and the
//	     family fam1 (rt1), then c1 replayed: at1 and fam1 revoked, the replay marked;
//	ar2: completed from sess1 with code c2, redeemed, exchanged for at2 and fam2 (rt2), and rt2
//	     rotated to rt3 with at3;
//	ar3: pending, with the unredeemed code c3;
//	at4: an access token without a family; at5: one revoked by itself;
//	sess2, sess3 (expiring at +1m), the login state, two clients, two users, a published and a
//	retired key, the cached upstream token.
func writeFixture(tb testing.TB, s *Store) {
	tb.Helper()
	ctx := context.Background()
	t0 := fixtureTime
	must := func(err error) {
		tb.Helper()
		if err != nil {
			tb.Fatal(err)
		}
	}
	want := func(err, target error) {
		tb.Helper()
		if !errors.Is(err, target) {
			tb.Fatalf("got %v, want %v", err, target)
		}
	}
	maxAge := int64(300)
	must(s.PutClient(ctx, storage.Client{
		ID: "app", SecretHash: storage.HashSecret("secret"), Name: "App",
		RedirectURIs: []string{"https://app.example/cb"}, PostLogoutRedirectURIs: []string{"https://app.example/"},
		IDTokenClaims: true, AuthMethod: "client_secret_basic", BackchannelLogoutURI: "https://app.example/bcl",
		BackchannelLogoutSessionRequired: true, Groups: []string{"names", "paths"},
		Source: storage.SourceConfig, CreatedAt: t0.Add(-48 * time.Hour), UpdatedAt: t0.Add(-24 * time.Hour),
	}))
	must(s.CreateClient(ctx, storage.Client{
		ID: "spa", RedirectURIs: []string{"http://127.0.0.1/cb"}, Public: true, AuthMethod: "none",
		Source: storage.SourceCLI, CreatedAt: t0.Add(-time.Hour), UpdatedAt: t0.Add(-time.Hour),
	}))
	must(s.PutUser(ctx, storage.User{
		Subject: "sub-1", Upstream: "wecom", CorpID: "ww1", UserID: "zhangsan", Name: "张三", Alias: "San",
		Email: "zs@example.com", EmailVerified: true, Mobile: "+86 138", Gender: "male", Avatar: "https://a/1.png",
		Address: "深圳", Position: "SRE",
		Departments:    []storage.Department{{ID: 1, Name: "研发中心", Path: []string{"研发中心"}}, {ID: 7, Name: "平台组", Path: []string{"研发中心", "平台组"}}},
		MainDepartment: 7, Tags: []storage.Tag{{ID: 3, Name: "oncall"}}, Status: 1, Extra: map[string]string{"工号": "007"},
		FirstSeen: t0.Add(-72 * time.Hour), LastLogin: t0, LastChecked: t0,
	}))
	must(s.PutUser(ctx, storage.User{
		Subject: "sub-2", CorpID: "ww1", UserID: "lisi", Disabled: true, DisabledAt: t0.Add(-time.Hour),
		FirstSeen: t0.Add(-72 * time.Hour), LastLogin: t0.Add(-2 * time.Hour), LastChecked: t0.Add(-2 * time.Hour),
	}))
	must(s.PutKey(ctx, storage.KeyRecord{ID: "k1", Algorithm: "RS256", Private: []byte{0x30, 0x82, 0x01}, CreatedAt: t0.Add(-30 * 24 * time.Hour)}))
	must(s.PutKey(ctx, storage.KeyRecord{ID: "k0", Algorithm: "ES256", Private: []byte{0x30, 0x77}, CreatedAt: t0.Add(-60 * 24 * time.Hour),
		ActivatesAt: t0.Add(-59 * 24 * time.Hour), NotAfter: t0.Add(-time.Hour)}))
	must(s.PutUpstreamToken(ctx, storage.UpstreamToken{Key: "ww1/1000002", Token: "wecom-token", ExpiresAt: t0.Add(2 * time.Hour)}))
	must(s.CreateLoginState(ctx, storage.LoginState{State: "S0123456789abcdefghijklmnopqrstu", AuthRequestID: "ar3", Upstream: "wecom",
		BrowserHash: storage.HashSecret("browser"), ExpiresAt: t0.Add(10 * time.Minute)}))

	authRequest := func(id string) storage.AuthRequest {
		return storage.AuthRequest{
			ID: id, ClientID: "app", RedirectURI: "https://app.example/cb", State: "st-" + id, Nonce: "n-" + id,
			Scopes: []string{"openid", "profile", "offline_access"}, ResponseType: "code", ResponseMode: "query",
			CodeChallenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", CodeChallengeMethod: "S256",
			Prompt: []string{"login"}, MaxAge: &maxAge, LoginHint: "zhangsan", UILocales: []string{"zh-CN"},
			UpstreamHint: "wecom", BrowserHash: storage.HashSecret("browser"),
			CreatedAt: t0.Add(-time.Minute), ExpiresAt: t0.Add(9 * time.Minute),
		}
	}
	sess1 := storage.HashSecret("session-1")
	codeExp := t0.Add(time.Minute)
	tokenExp := t0.Add(time.Hour)
	refreshExp := t0.Add(30 * 24 * time.Hour)

	// ar1: the flow whose code is replayed.
	must(s.CreateAuthRequest(ctx, authRequest("ar1")))
	_, err := s.CompleteAuthRequest(ctx, "ar1", storage.Completion{
		Subject: "sub-1", AuthTime: t0.Add(-30 * time.Second), AMR: []string{"pwd"},
		NewSession: &storage.Session{ID: sess1, Subject: "sub-1", AuthTime: t0.Add(-30 * time.Second), AMR: []string{"pwd"},
			Clients: []string{"app"}, CreatedAt: t0, ExpiresAt: t0.Add(8 * time.Hour)},
		ExpiresAt: t0.Add(10 * time.Minute), CodeHash: storage.HashSecret("c1"), CodeExpiresAt: codeExp,
	})
	must(err)
	_, err = s.ConsumeCode(ctx, storage.HashSecret("c1"))
	must(err)
	must(s.CreateTokens(ctx,
		storage.AccessToken{ID: "at1", ClientID: "app", Subject: "sub-1", Audience: []string{"app"}, Scopes: []string{"openid"},
			FamilyID: "fam1", AuthRequestID: "ar1", CreatedAt: t0, ExpiresAt: tokenExp},
		&storage.RefreshToken{Hash: storage.HashSecret("rt1"), ID: "rt_1", FamilyID: "fam1", ClientID: "app", Subject: "sub-1",
			Audience: []string{"app"}, Scopes: []string{"openid", "offline_access"}, AuthTime: t0.Add(-30 * time.Second),
			AMR: []string{"pwd"}, SessionID: sess1, CreatedAt: t0, ExpiresAt: refreshExp}))
	_, err = s.ConsumeCode(ctx, storage.HashSecret("c1"))
	want(err, storage.ErrAlreadyUsed)

	// ar2: completed from the existing session; its family rotates once.
	must(s.CreateAuthRequest(ctx, authRequest("ar2")))
	_, err = s.CompleteAuthRequest(ctx, "ar2", storage.Completion{
		Subject: "sub-1", AuthTime: t0.Add(-30 * time.Second), AMR: []string{"pwd"}, SessionID: sess1,
		ExpiresAt: t0.Add(10 * time.Minute), CodeHash: storage.HashSecret("c2"), CodeExpiresAt: codeExp,
	})
	must(err)
	_, err = s.ConsumeCode(ctx, storage.HashSecret("c2"))
	must(err)
	must(s.CreateTokens(ctx,
		storage.AccessToken{ID: "at2", ClientID: "app", Subject: "sub-1", Scopes: []string{"openid"},
			FamilyID: "fam2", AuthRequestID: "ar2", CreatedAt: t0, ExpiresAt: tokenExp},
		&storage.RefreshToken{Hash: storage.HashSecret("rt2"), ID: "rt_2", FamilyID: "fam2", ClientID: "app", Subject: "sub-1",
			Scopes: []string{"openid", "offline_access"}, AuthTime: t0.Add(-30 * time.Second), SessionID: sess1,
			CreatedAt: t0, ExpiresAt: refreshExp}))
	must(s.RotateRefreshToken(ctx, storage.HashSecret("rt2"),
		storage.RefreshToken{Hash: storage.HashSecret("rt3"), ID: "rt_3", FamilyID: "fam2", ClientID: "app", Subject: "sub-1",
			Scopes: []string{"openid", "offline_access"}, AuthTime: t0.Add(-30 * time.Second), SessionID: sess1,
			CreatedAt: t0, ExpiresAt: refreshExp.Add(time.Hour)},
		storage.AccessToken{ID: "at3", ClientID: "app", Subject: "sub-1", Scopes: []string{"openid"}, FamilyID: "fam2",
			CreatedAt: t0, ExpiresAt: tokenExp}))

	// ar3: pending, with a code nobody redeemed.
	must(s.CreateAuthRequest(ctx, authRequest("ar3")))
	must(s.SaveCode(ctx, storage.HashSecret("c3"), "ar3", codeExp))

	// Access tokens without a family, one of them revoked.
	must(s.CreateTokens(ctx, storage.AccessToken{ID: "at4", ClientID: "app", Subject: "sub-2", Scopes: []string{"openid"}, CreatedAt: t0, ExpiresAt: tokenExp}, nil))
	must(s.CreateTokens(ctx, storage.AccessToken{ID: "at5", ClientID: "spa", Subject: "sub-1", CreatedAt: t0, ExpiresAt: tokenExp}, nil))
	must(s.RevokeAccessToken(ctx, "at5"))

	must(s.CreateSession(ctx, storage.Session{ID: storage.HashSecret("session-2"), Subject: "sub-2", AuthTime: t0, CreatedAt: t0, ExpiresAt: t0.Add(8 * time.Hour)}))
	must(s.CreateSession(ctx, storage.Session{ID: storage.HashSecret("session-3"), Subject: "sub-1", AuthTime: t0, CreatedAt: t0, ExpiresAt: t0.Add(time.Minute)}))
}

// openFixture opens a copy of testdata/schema1.db (after rewriting it, with -update-fixture).
func openFixture(t *testing.T, clock *storagetest.Clock) *Store {
	t.Helper()
	if *updateFixture {
		s := openTest(t, filepath.Join(t.TempDir(), "w.db"), Options{Now: storagetest.NewClock(fixtureTime).Now})
		writeFixture(t, s)
		var buf bytes.Buffer
		if _, err := s.Backup(t.Context(), &buf); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(fixturePath, buf.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	raw, err := os.ReadFile(fixturePath)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "wecom-oidc.db")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	return openTest(t, path, Options{Now: clock.Now})
}

// TestSchema1Fixture opens a database written by an earlier build and checks that every record
// reads back, and every flow goes on, as it did for the build that wrote it.
func TestSchema1Fixture(t *testing.T) {
	ctx := t.Context()
	clock := storagetest.NewClock(fixtureTime.Add(time.Second))
	s := openFixture(t, clock)
	checkIndex(t, s)
	checkLinks(t, s)

	stats, err := s.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantStats := map[string]int{
		"clients": 2, "users": 2, "keys": 1, "sessions": 3, "auth_requests": 1,
		"access_tokens":  3, // at2, at3, at4; at1 (family revoked) and at5 (revoked) not
		"refresh_tokens": 1, // rt3; rt1's family is revoked, rt2 is rotated
		// Kinds added after the fixture was written: their buckets are created at Open.
		"scan_logins": 0, "device_authorizations": 0,
	}
	if !reflect.DeepEqual(stats, wantStats) {
		t.Errorf("Stats = %v, want %v", stats, wantStats)
	}

	c, err := s.GetClient(ctx, "app")
	if err != nil || c.Name != "App" || !c.BackchannelLogoutSessionRequired || len(c.Groups) != 2 {
		t.Errorf("GetClient(app) = %+v, %v", c, err)
	}
	u, err := s.GetUser(ctx, "sub-1")
	if err != nil || u.Name != "张三" || len(u.Departments) != 2 || u.Departments[1].Path[1] != "平台组" || u.Extra["工号"] != "007" {
		t.Errorf("GetUser(sub-1) = %+v, %v", u, err)
	}
	if ks, err := s.ListKeys(ctx); err != nil || len(ks) != 2 || ks[0].ID != "k0" || ks[1].ID != "k1" {
		t.Errorf("ListKeys = %+v, %v", ks, err)
	}
	if tok, err := s.GetUpstreamToken(ctx, "ww1/1000002"); err != nil || tok.Token != "wecom-token" {
		t.Errorf("GetUpstreamToken = %+v, %v", tok, err)
	}
	if ar, err := s.GetAuthRequest(ctx, "ar3"); err != nil || *ar.MaxAge != 300 || ar.Done {
		t.Errorf("GetAuthRequest(ar3) = %+v, %v", ar, err)
	}
	for _, id := range []string{"ar1", "ar2"} { // deleted by CreateTokens
		if _, err := s.GetAuthRequest(ctx, id); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("GetAuthRequest(%s) = %v, want ErrNotFound", id, err)
		}
	}
	sess1 := storage.HashSecret("session-1")
	if sess, err := s.GetSession(ctx, sess1); err != nil || !reflect.DeepEqual(sess.Clients, []string{"app"}) {
		t.Errorf("GetSession(sess1) = %+v, %v", sess, err)
	}

	for id, want := range map[string]error{"at1": storage.ErrRevoked, "at2": nil, "at3": nil, "at4": nil, "at5": storage.ErrRevoked, "at6": storage.ErrNotFound} {
		if _, err := s.GetAccessToken(ctx, id); !errors.Is(err, want) {
			t.Errorf("GetAccessToken(%s) = %v, want %v", id, err, want)
		}
	}
	if _, err := s.GetRefreshToken(ctx, storage.HashSecret("rt1")); !errors.Is(err, storage.ErrRevoked) {
		t.Errorf("GetRefreshToken(rt1) = %v, want ErrRevoked", err)
	}
	rt3, err := s.GetRefreshToken(ctx, storage.HashSecret("rt3"))
	if err != nil || rt3.ID != "rt_3" || rt3.RotatedAt != nil {
		t.Errorf("GetRefreshToken(rt3) = %+v, %v", rt3, err)
	}

	// The replay marker of ar1 still refuses tokens; c1 stays a tombstone; c3 redeems.
	err = s.CreateTokens(ctx, storage.AccessToken{ID: "at7", AuthRequestID: "ar1", ExpiresAt: clock.Now().Add(time.Hour)}, nil)
	if !errors.Is(err, storage.ErrRevoked) {
		t.Errorf("CreateTokens for the replayed ar1 = %v, want ErrRevoked", err)
	}
	if _, err := s.ConsumeCode(ctx, storage.HashSecret("c1")); !errors.Is(err, storage.ErrAlreadyUsed) {
		t.Errorf("ConsumeCode(c1) = %v, want ErrAlreadyUsed", err)
	}
	if ar, err := s.ConsumeCode(ctx, storage.HashSecret("c3")); err != nil || ar.ID != "ar3" {
		t.Errorf("ConsumeCode(c3) = %+v, %v", ar, err)
	}
	if ls, err := s.ConsumeLoginState(ctx, "S0123456789abcdefghijklmnopqrstu"); err != nil || ls.AuthRequestID != "ar3" {
		t.Errorf("ConsumeLoginState = %+v, %v", ls, err)
	}

	// The family extended by the rotation still rotates; ending sess1 revokes it through the
	// session's link.
	err = s.RotateRefreshToken(ctx, storage.HashSecret("rt3"),
		storage.RefreshToken{Hash: storage.HashSecret("rt4"), FamilyID: "fam2", Subject: "sub-1", ExpiresAt: clock.Now().Add(time.Hour)},
		storage.AccessToken{ID: "at8", FamilyID: "fam2", Subject: "sub-1", ExpiresAt: clock.Now().Add(time.Hour)})
	if err != nil {
		t.Errorf("RotateRefreshToken(rt3): %v", err)
	}
	if _, err := s.EndSession(ctx, sess1); err != nil {
		t.Errorf("EndSession(sess1): %v", err)
	}
	for _, id := range []string{"at2", "at3", "at8"} {
		if _, err := s.GetAccessToken(ctx, id); !errors.Is(err, storage.ErrRevoked) {
			t.Errorf("GetAccessToken(%s) after EndSession = %v, want ErrRevoked", id, err)
		}
	}
	if n, err := s.RevokeUserTokens(ctx, "sub-2"); err != nil || n != 0 {
		t.Errorf("RevokeUserTokens(sub-2) = %d, %v; want 0 families", n, err)
	}
	if _, err := s.GetAccessToken(ctx, "at4"); !errors.Is(err, storage.ErrRevoked) {
		t.Errorf("GetAccessToken(at4) after RevokeUserTokens = %v, want ErrRevoked", err)
	}
	// The kinds added since the fixture was written work in it: Open created their buckets.
	exp := clock.Now().Add(10 * time.Minute)
	if err := s.CreateScanLogin(ctx, storage.ScanLogin{HandleHash: "h1", AuthRequestID: "ar3", Status: "pending", ExpiresAt: exp}); err != nil {
		t.Errorf("CreateScanLogin: %v", err)
	}
	if err := s.CreateDeviceAuthorization(ctx, storage.DeviceAuthorization{DeviceCodeHash: "d1", UserCode: "BCDF-GHJK", ClientID: "spa",
		Status: "pending", ExpiresAt: exp}); err != nil {
		t.Errorf("CreateDeviceAuthorization: %v", err)
	}
	if d, err := s.GetDeviceAuthorizationByUserCode(ctx, "BCDF-GHJK"); err != nil || d.DeviceCodeHash != "d1" {
		t.Errorf("GetDeviceAuthorizationByUserCode = %+v, %v", d, err)
	}
	checkIndex(t, s)
	checkLinks(t, s)

	// Far in the future everything that expires is swept.
	clock.Set(fixtureTime.Add(365 * 24 * time.Hour))
	res, err := s.DeleteExpired(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// ar3; c1, c2, c3; at1-at5 and at8; rt1-rt4; sess2, sess3 (sess1 was ended); h1; d1. The
	// login state was consumed.
	wantRes := storage.GCResult{AuthRequests: 1, Codes: 3, LoginStates: 0, AccessTokens: 6, RefreshTokens: 4, Sessions: 2,
		ScanLogins: 1, DeviceAuths: 1}
	if res != wantRes {
		t.Errorf("DeleteExpired = %+v, want %+v", res, wantRes)
	}
	checkIndex(t, s)
	for bucket, n := range bucketSizes(t, s) {
		if expiringBucket(bucket) && n != 0 {
			t.Errorf("after the sweep %s holds %d records", bucket, n)
		}
	}
}

// TestSchema1FixtureRecordsReencodeAlike decodes every record of the database an earlier build
// wrote, with the types this build stores them as, and encodes it again: the bytes must be those
// on disk, for the internal records of package record as for package storage's types. So the
// format did not change, and a record rewritten by this build reads in the earlier one.
func TestSchema1FixtureRecordsReencodeAlike(t *testing.T) {
	s := openFixture(t, storagetest.NewClock(fixtureTime))
	reencode := map[string]func(raw []byte) ([]byte, error){
		bucketClients:         roundTrip[storage.Client],
		bucketAuthRequests:    roundTrip[storage.AuthRequest],
		bucketCodes:           roundTrip[record.Code],
		bucketARTokens:        roundTrip[record.Link],
		bucketLoginStates:     roundTrip[storage.LoginState],
		bucketAccessTokens:    roundTrip[record.Access],
		bucketRefreshTokens:   roundTrip[storage.RefreshToken],
		bucketFamilies:        roundTrip[record.Family],
		bucketSessions:        roundTrip[storage.Session],
		bucketSessionFamilies: roundTrip[record.Link],
		bucketUsers:           roundTrip[storage.User],
		bucketKeys:            roundTrip[storage.KeyRecord],
		bucketUpstream:        roundTrip[storage.UpstreamToken],
	}
	err := s.db.View(func(tx *bbolt.Tx) error {
		for bucket, again := range reencode {
			n := 0
			err := bkt(tx, bucket).ForEach(func(k, raw []byte) error {
				n++
				got, err := again(raw)
				if err != nil {
					return fmt.Errorf("%s/%q: %w", bucket, k, err)
				}
				if !bytes.Equal(got, raw) {
					t.Errorf("%s/%q re-encodes differently:\n on disk %s\n now     %s", bucket, k, raw, got)
				}
				return nil
			})
			if err != nil {
				return err
			}
			if n == 0 {
				t.Errorf("the fixture holds no %s: nothing of that kind is checked", bucket)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// roundTrip decodes raw as a T and encodes it again, as the Store reads and writes records.
func roundTrip[T any](raw []byte) ([]byte, error) {
	v, err := record.Decode[T]("", raw)
	if err != nil {
		return nil, err
	}
	return record.Encode(v)
}
