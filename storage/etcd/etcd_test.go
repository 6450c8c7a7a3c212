package etcd

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/wecom-oidc/wecom-oidc/internal/etcdtest"
	"github.com/wecom-oidc/wecom-oidc/storage"
	"github.com/wecom-oidc/wecom-oidc/storage/internal/record"
	"github.com/wecom-oidc/wecom-oidc/storage/storagetest"
)

// The tests run against a real etcd server, which TestMain starts once for the package (see
// package internal/etcdtest). Each test works under a key prefix of its own. Without an etcd
// binary every test that needs the server fails, saying how to install one.

// testEtcd is the server TestMain started: err says why there is none.
type testEtcd struct {
	endpoint string
	admin    *clientv3.Client // for looking at keys and leases behind the Store's back
	err      error
}

// server is set once by TestMain, before any test runs, and only read afterwards.
var server testEtcd

func TestMain(m *testing.M) {
	os.Exit(runWithEtcd(m))
}

func runWithEtcd(m *testing.M) int {
	proc, err := etcdtest.Start()
	if err != nil {
		server.err = err
		return m.Run() // the tests that need the server fail with err
	}
	server.endpoint = proc.Endpoint
	server.admin, err = clientv3.New(clientv3.Config{Endpoints: []string{proc.Endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		server.err = fmt.Errorf("admin client: %w", err)
	}
	code := m.Run()
	if server.admin != nil {
		_ = server.admin.Close()
	}
	if err := proc.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "stopping the test etcd: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// mustServer fails the test when there is no test etcd.
func mustServer(tb testing.TB) {
	tb.Helper()
	if server.err != nil {
		tb.Fatalf("no etcd server for the tests: %v", server.err)
	}
}

// testPrefix is a key prefix no other test uses.
func testPrefix() string { return "/wecom-oidc-test/" + rand.Text() + "/" }

// mustOpen opens a Store on the test etcd (cfg's Endpoints are filled in; an empty Prefix gets a
// fresh one) and closes it, and deletes its keys, at the end of the test. A test may close the
// Store itself: the second Close's error is ignored.
func mustOpen(tb testing.TB, cfg Config) *Store {
	tb.Helper()
	mustServer(tb)
	cfg.Endpoints = []string{server.endpoint}
	if cfg.Prefix == "" {
		cfg.Prefix = testPrefix()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := Open(ctx, cfg)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() {
		_ = s.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := server.admin.Delete(ctx, s.prefix, clientv3.WithPrefix()); err != nil {
			tb.Errorf("delete the test's keys: %v", err)
		}
	})
	return s
}

func TestConformance(t *testing.T) {
	mustServer(t)
	storagetest.Run(t, func(t *testing.T, now func() time.Time) storage.Store {
		return mustOpen(t, Config{Now: now})
	}, func(t *testing.T, path string, now func() time.Time) storage.Store {
		// The copy is restored into a fresh prefix, as an operator would restore it into a new
		// prefix or cluster.
		s := mustOpen(t, Config{Now: now})
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := s.Restore(t.Context(), f); err != nil {
			t.Fatalf("Restore: %v", err)
		}
		return s
	})
}

// --- replicas ---

// mustReplicas opens two Stores — two clients, as two replicas would have — on one fresh prefix,
// sharing clock.
func mustReplicas(tb testing.TB, clock *storagetest.Clock) (a, b *Store) {
	tb.Helper()
	prefix := testPrefix()
	return mustOpen(tb, Config{Prefix: prefix, Now: clock.Now}), mustOpen(tb, Config{Prefix: prefix, Now: clock.Now})
}

func TestReplicasSeeEachOthersWrites(t *testing.T) {
	clock := storagetest.NewClock(storagetest.Start())
	a, b := mustReplicas(t, clock)
	ctx := t.Context()
	now := clock.Now()

	c := storage.Client{ID: "grafana", RedirectURIs: []string{"https://grafana.example/cb"}, Source: storage.SourceCLI, CreatedAt: now, UpdatedAt: now}
	if err := a.CreateClient(ctx, c); err != nil {
		t.Fatal(err)
	}
	if err := b.CreateClient(ctx, c); !errors.Is(err, storage.ErrAlreadyExists) {
		t.Fatalf("CreateClient on the other replica: %v, want ErrAlreadyExists", err)
	}
	if got, err := b.GetClient(ctx, "grafana"); err != nil || got.RedirectURIs[0] != c.RedirectURIs[0] {
		t.Fatalf("GetClient on the other replica: %+v, %v", got, err)
	}

	ar := storage.AuthRequest{ID: "ar1", ClientID: "grafana", Scopes: []string{"openid"}, CreatedAt: now, ExpiresAt: now.Add(10 * time.Minute)}
	if err := a.CreateAuthRequest(ctx, ar); err != nil {
		t.Fatal(err)
	}
	if _, err := b.UpdateAuthRequest(ctx, "ar1", func(r *storage.AuthRequest) error { r.BrowserHash = "b"; return nil }); err != nil {
		t.Fatal(err)
	}
	if got, err := a.GetAuthRequest(ctx, "ar1"); err != nil || got.BrowserHash != "b" {
		t.Fatalf("GetAuthRequest after the other replica's update: %+v, %v", got, err)
	}

	if err := b.PutUser(ctx, storage.User{Subject: "zhangsan", Name: "张三"}); err != nil {
		t.Fatal(err)
	}
	if u, err := a.GetUser(ctx, "zhangsan"); err != nil || u.Name != "张三" {
		t.Fatalf("GetUser on the other replica: %+v, %v", u, err)
	}

	sess := storage.Session{ID: storage.HashSecret("cookie"), Subject: "zhangsan", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	if err := a.CreateSession(ctx, sess); err != nil {
		t.Fatal(err)
	}
	at := storage.AccessToken{ID: "at_1", ClientID: "grafana", Subject: "zhangsan", FamilyID: "f1", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	rt := storage.RefreshToken{Hash: storage.HashSecret("rt1"), ID: "rt_1", FamilyID: "f1", ClientID: "grafana", Subject: "zhangsan",
		SessionID: sess.ID, CreatedAt: now, ExpiresAt: now.Add(24 * time.Hour)}
	if err := b.CreateTokens(ctx, at, &rt); err != nil {
		t.Fatal(err)
	}
	if _, err := a.EndSession(ctx, sess.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := b.GetRefreshToken(ctx, rt.Hash); !errors.Is(err, storage.ErrRevoked) {
		t.Fatalf("GetRefreshToken on the other replica after EndSession: %v, want ErrRevoked", err)
	}
	if _, err := b.GetAccessToken(ctx, at.ID); !errors.Is(err, storage.ErrRevoked) {
		t.Fatalf("GetAccessToken on the other replica after EndSession: %v, want ErrRevoked", err)
	}
}

// raceReplicas runs f(store, i) for i in 0..n-1, each in its own goroutine, released together,
// alternating the two replicas, and returns the errors in order.
func raceReplicas(n int, a, b *Store, f func(s *Store, i int) error) []error {
	errs := make([]error, n)
	start := make(chan struct{})
	done := make(chan struct{})
	for i := range n {
		s := a
		if i%2 == 1 {
			s = b
		}
		go func() {
			defer func() { done <- struct{}{} }()
			<-start
			errs[i] = f(s, i)
		}()
	}
	close(start)
	for range n {
		<-done
	}
	return errs
}

// tally counts nil errors and the errors matching want; other lists the rest.
func tally(errs []error, want error) (ok, matched int, other []error) {
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case errors.Is(err, want):
			matched++
		default:
			other = append(other, err)
		}
	}
	return ok, matched, other
}

func TestReplicasConsumeCodeExactlyOnce(t *testing.T) {
	clock := storagetest.NewClock(storagetest.Start())
	a, b := mustReplicas(t, clock)
	ctx := t.Context()
	const goroutines = 16
	for round := range 5 {
		now := clock.Now()
		id := fmt.Sprintf("ar-%d", round)
		if err := a.CreateAuthRequest(ctx, storage.AuthRequest{ID: id, CreatedAt: now, ExpiresAt: now.Add(10 * time.Minute)}); err != nil {
			t.Fatal(err)
		}
		code := storage.HashSecret("code-" + id)
		if err := b.SaveCode(ctx, code, id, now.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		errs := raceReplicas(goroutines, a, b, func(s *Store, _ int) error {
			got, err := s.ConsumeCode(ctx, code)
			if err == nil && got.ID != id {
				return fmt.Errorf("winner got auth request %q", got.ID)
			}
			return err
		})
		ok, used, other := tally(errs, storage.ErrAlreadyUsed)
		if ok != 1 || used != goroutines-1 || len(other) != 0 {
			t.Fatalf("round %d: %d winners, %d ErrAlreadyUsed, other %v; want 1, %d, none", round, ok, used, other, goroutines-1)
		}
	}
}

func TestReplicasCompleteAuthRequestOnce(t *testing.T) {
	clock := storagetest.NewClock(storagetest.Start())
	a, b := mustReplicas(t, clock)
	ctx := t.Context()
	const goroutines = 16
	for round := range 5 {
		now := clock.Now()
		id := fmt.Sprintf("ar-%d", round)
		if err := a.CreateAuthRequest(ctx, storage.AuthRequest{ID: id, ClientID: "grafana", CreatedAt: now, ExpiresAt: now.Add(10 * time.Minute)}); err != nil {
			t.Fatal(err)
		}
		errs := raceReplicas(goroutines, a, b, func(s *Store, i int) error {
			sess := storage.Session{ID: fmt.Sprintf("sess-%d-%d", round, i), Subject: "s", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
			_, err := s.CompleteAuthRequest(ctx, id, storage.Completion{Subject: "s", NewSession: &sess,
				CodeHash: storage.HashSecret(fmt.Sprintf("code-%d-%d", round, i)), CodeExpiresAt: now.Add(time.Minute)})
			return err
		})
		ok, conflicts, other := tally(errs, storage.ErrConflict)
		if ok != 1 || conflicts != goroutines-1 || len(other) != 0 {
			t.Fatalf("round %d: %d winners, %d ErrConflict, other %v; want 1, %d, none", round, ok, conflicts, other, goroutines-1)
		}
		got, err := b.GetAuthRequest(ctx, id)
		if err != nil || !got.Done {
			t.Fatalf("round %d: request after the race: %+v, %v", round, got, err)
		}
		resp, err := server.admin.Get(ctx, a.kindPrefix(kindSessions), clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		if resp.Count != int64(round+1) {
			t.Fatalf("round %d: %d sessions stored, want one per round: the losers' sessions were written", round, resp.Count)
		}
	}
}

func TestReplicasConsumeLoginStateExactlyOnce(t *testing.T) {
	clock := storagetest.NewClock(storagetest.Start())
	a, b := mustReplicas(t, clock)
	ctx := t.Context()
	const goroutines = 16
	for round := range 5 {
		ls := storage.LoginState{State: fmt.Sprintf("state%027d", round), AuthRequestID: "ar", ExpiresAt: clock.Now().Add(time.Minute)}
		if err := a.CreateLoginState(ctx, ls); err != nil {
			t.Fatal(err)
		}
		errs := raceReplicas(goroutines, a, b, func(s *Store, _ int) error {
			_, err := s.ConsumeLoginState(ctx, ls.State)
			return err
		})
		ok, gone, other := tally(errs, storage.ErrNotFound)
		if ok != 1 || gone != goroutines-1 || len(other) != 0 {
			t.Fatalf("round %d: %d winners, %d ErrNotFound, other %v; want 1, %d, none", round, ok, gone, other, goroutines-1)
		}
	}
}

func TestReplicasCreateKeyOnce(t *testing.T) {
	clock := storagetest.NewClock(storagetest.Start())
	a, b := mustReplicas(t, clock)
	ctx := t.Context()
	const goroutines = 16
	for round := range 5 {
		id := fmt.Sprintf("key-%d", round)
		errs := raceReplicas(goroutines, a, b, func(s *Store, i int) error {
			return s.CreateKey(ctx, storage.KeyRecord{ID: id, Algorithm: "ES256", Private: fmt.Appendf(nil, "candidate %d", i), CreatedAt: clock.Now()})
		})
		ok, taken, other := tally(errs, storage.ErrAlreadyExists)
		if ok != 1 || taken != goroutines-1 || len(other) != 0 {
			t.Fatalf("round %d: %d winners, %d ErrAlreadyExists, other %v; want 1, %d, none", round, ok, taken, other, goroutines-1)
		}
		winner := slices.IndexFunc(errs, func(err error) bool { return err == nil })
		ks, err := b.ListKeys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if i := slices.IndexFunc(ks, func(k storage.KeyRecord) bool { return k.ID == id }); i < 0 || string(ks[i].Private) != fmt.Sprintf("candidate %d", winner) {
			t.Fatalf("round %d: stored %v, want candidate %d's key", round, ks, winner)
		}
	}
}

func TestReplicasRotateExactlyOnce(t *testing.T) {
	clock := storagetest.NewClock(storagetest.Start())
	a, b := mustReplicas(t, clock)
	ctx := t.Context()
	const goroutines = 8
	for round := range 5 {
		now := clock.Now()
		fam := fmt.Sprintf("f%d", round)
		rt0 := storage.RefreshToken{Hash: storage.HashSecret(fam + "-0"), ID: "rt_" + fam, FamilyID: fam, Subject: "s", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
		at0 := storage.AccessToken{ID: "at_" + fam + "-0", FamilyID: fam, Subject: "s", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
		if err := a.CreateTokens(ctx, at0, &rt0); err != nil {
			t.Fatal(err)
		}
		errs := raceReplicas(goroutines, a, b, func(s *Store, i int) error {
			next := rt0
			next.Hash, next.ID = storage.HashSecret(fmt.Sprintf("%s-%d", fam, i+1)), fmt.Sprintf("rt_%s-%d", fam, i+1)
			at := at0
			at.ID = fmt.Sprintf("at_%s-%d", fam, i+1)
			return s.RotateRefreshToken(ctx, rt0.Hash, next, at)
		})
		ok, reused, other := tally(errs, storage.ErrTokenReused)
		if ok != 1 || reused != goroutines-1 || len(other) != 0 {
			t.Fatalf("round %d: %d winners, %d ErrTokenReused, other %v; want 1, %d, none", round, ok, reused, other, goroutines-1)
		}
		if _, err := b.GetAccessToken(ctx, at0.ID); !errors.Is(err, storage.ErrRevoked) {
			t.Fatalf("round %d: the family survived the losing rotations: %v", round, err)
		}
	}
}

func TestReplicasUpdateUserLosesNothing(t *testing.T) {
	clock := storagetest.NewClock(storagetest.Start())
	a, b := mustReplicas(t, clock)
	ctx := t.Context()
	const goroutines = 16
	errs := raceReplicas(goroutines, a, b, func(s *Store, i int) error {
		_, err := s.UpdateUser(ctx, "u", func(u *storage.User, _ bool) error {
			if u.Extra == nil {
				u.Extra = map[string]string{}
			}
			u.Extra[fmt.Sprintf("g%02d", i)] = "x"
			return nil
		})
		return err
	})
	for i, err := range errs {
		if err != nil {
			t.Fatalf("UpdateUser #%d: %v", i, err)
		}
	}
	u, err := b.GetUser(ctx, "u")
	if err != nil {
		t.Fatal(err)
	}
	if len(u.Extra) != goroutines {
		t.Fatalf("%d of %d concurrent updates kept: %v", len(u.Extra), goroutines, u.Extra)
	}
}

func TestReplicasSweepCountsEachRecordOnce(t *testing.T) {
	clock := storagetest.NewClock(storagetest.Start())
	a, b := mustReplicas(t, clock)
	ctx := t.Context()
	const n = 60
	now := clock.Now()
	for i := range n {
		if err := a.CreateAuthRequest(ctx, storage.AuthRequest{ID: fmt.Sprintf("ar-%02d", i), CreatedAt: now, ExpiresAt: now.Add(time.Minute)}); err != nil {
			t.Fatal(err)
		}
	}
	clock.Advance(time.Minute)
	results := make([]storage.GCResult, 4)
	errs := raceReplicas(len(results), a, b, func(s *Store, i int) error {
		var err error
		results[i], err = s.DeleteExpired(ctx)
		return err
	})
	total := 0
	for i, err := range errs {
		if err != nil {
			t.Fatalf("DeleteExpired #%d: %v", i, err)
		}
		total += results[i].AuthRequests
	}
	if total != n {
		t.Fatalf("concurrent sweeps counted %d auth requests (%v), want %d", total, results, n)
	}
}

// --- leases ---

// mustLease returns the lease of key and its remaining TTL in seconds; 0, 0 for a key without one.
func mustLease(tb testing.TB, key string) (clientv3.LeaseID, int64) {
	tb.Helper()
	ctx := tb.Context()
	resp, err := server.admin.Get(ctx, key)
	if err != nil {
		tb.Fatal(err)
	}
	if len(resp.Kvs) != 1 {
		tb.Fatalf("key %q missing", key)
	}
	id := clientv3.LeaseID(resp.Kvs[0].Lease)
	if id == 0 {
		return 0, 0
	}
	ttl, err := server.admin.TimeToLive(ctx, id)
	if err != nil {
		tb.Fatal(err)
	}
	return id, ttl.TTL
}

func TestLeaseOutlivesExpiryByMarginAndGrain(t *testing.T) {
	clock := storagetest.NewClock(storagetest.Start())
	s := mustOpen(t, Config{Now: clock.Now})
	ctx := t.Context()
	now := clock.Now()
	exp := now.Add(time.Hour)
	for _, id := range []string{"ar1", "ar2"} {
		if err := s.CreateAuthRequest(ctx, storage.AuthRequest{ID: id, CreatedAt: now, ExpiresAt: exp}); err != nil {
			t.Fatal(err)
		}
	}
	id1, ttl := mustLease(t, s.key(kindAuthRequests, "ar1"))
	id2, _ := mustLease(t, s.key(kindAuthRequests, "ar2"))
	idx, _ := mustLease(t, s.key(kindExpiry, indexID(exp, kindAuthRequests, "ar1")))
	if id1 == 0 || id1 != id2 || idx != id1 {
		t.Fatalf("records and index entries with one expiry should share one lease: %x, %x, index %x", id1, id2, idx)
	}
	// d = 1h + 5m margin; the grain for d is 8m (1m doubled until ≥ d/16); +1s for the request.
	minTTL, maxTTL := int64((time.Hour + defaultLeaseMargin).Seconds()), int64((time.Hour+defaultLeaseMargin+8*time.Minute).Seconds())+2
	if ttl < minTTL-2 || ttl > maxTTL {
		t.Fatalf("lease TTL %ds, want between %d and %d", ttl, minTTL, maxTTL)
	}

	// Moving the expiry moves the lease and the index entry.
	later := exp.Add(24 * time.Hour)
	if _, err := s.UpdateAuthRequest(ctx, "ar1", func(r *storage.AuthRequest) error { r.ExpiresAt = later; return nil }); err != nil {
		t.Fatal(err)
	}
	moved, ttl := mustLease(t, s.key(kindAuthRequests, "ar1"))
	if moved == id1 || ttl < int64((25*time.Hour).Seconds()) {
		t.Fatalf("after extending the expiry by a day: lease %x (was %x), TTL %ds", moved, id1, ttl)
	}
	resp, err := server.admin.Get(ctx, s.key(kindExpiry, indexID(exp, kindAuthRequests, "ar1")))
	if err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("old index entry still there (%v)", err)
	}
	if idx, _ := mustLease(t, s.key(kindExpiry, indexID(later, kindAuthRequests, "ar1"))); idx != moved {
		t.Fatalf("new index entry has lease %x, the record %x", idx, moved)
	}

	// A write that keeps the expiry keeps the lease.
	sess := storage.Session{ID: "sess", Subject: "s", CreatedAt: now, ExpiresAt: exp}
	if err := s.CreateSession(ctx, sess); err != nil {
		t.Fatal(err)
	}
	before, _ := mustLease(t, s.key(kindSessions, "sess"))
	if err := s.AddSessionClient(ctx, "sess", "grafana"); err != nil {
		t.Fatal(err)
	}
	if after, _ := mustLease(t, s.key(kindSessions, "sess")); after != before || after == 0 {
		t.Fatalf("AddSessionClient changed the session's lease from %x to %x", before, after)
	}

	// Records without expiry have no lease.
	if err := s.PutUser(ctx, storage.User{Subject: "u"}); err != nil {
		t.Fatal(err)
	}
	if id, _ := mustLease(t, s.key(kindUsers, "u")); id != 0 {
		t.Fatalf("user record has lease %x", id)
	}
}

func TestLeaseRemovesUnsweptRecords(t *testing.T) {
	s := mustOpen(t, Config{}) // the real clock: leases run on it
	s.leases.margin, s.leases.grain = 0, time.Second
	ctx := t.Context()
	now := time.Now()
	ls := storage.LoginState{State: "short", AuthRequestID: "ar", ExpiresAt: now.Add(2 * time.Second)}
	if err := s.CreateLoginState(ctx, ls); err != nil {
		t.Fatal(err)
	}
	keep := storage.LoginState{State: "long", AuthRequestID: "ar", ExpiresAt: now.Add(time.Hour)}
	if err := s.CreateLoginState(ctx, keep); err != nil {
		t.Fatal(err)
	}
	if _, ttl := mustLease(t, s.key(kindLoginStates, "short")); ttl < 1 || ttl > 5 {
		t.Fatalf("lease TTL %ds for a record expiring in 2s (no margin, 1s grain)", ttl)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := server.admin.Get(ctx, s.prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil {
			t.Fatal(err)
		}
		var keys []string
		for _, kv := range resp.Kvs {
			keys = append(keys, strings.TrimPrefix(string(kv.Key), s.prefix))
		}
		short := false
		for _, k := range keys {
			if strings.Contains(k, "short") {
				short = true
			}
		}
		if !short {
			if len(keys) != 3 { // meta, the long state and its index entry
				t.Fatalf("after the lease fired the prefix holds %v", keys)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the expired login state's lease has not removed it: %v", keys)
		}
		time.Sleep(250 * time.Millisecond)
	}
	if _, err := s.ConsumeLoginState(ctx, "long"); err != nil {
		t.Fatalf("the other state: %v", err)
	}
}

func TestLeaseRoundingNeverShortens(t *testing.T) {
	clock := storagetest.NewClock(storagetest.Start())
	s := mustOpen(t, Config{Now: clock.Now})
	l := s.leases
	real := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l.realNow = func() time.Time { return real }
	for _, d := range []time.Duration{0, time.Second, time.Minute, 10 * time.Minute, 8 * time.Hour, 30 * 24 * time.Hour} {
		id, ok, err := l.leaseFor(t.Context(), clock.Now().Add(d))
		if err != nil || !ok {
			t.Fatalf("leaseFor(+%s): %v, %v", d, ok, err)
		}
		ttl, err := server.admin.TimeToLive(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		need := d + l.margin
		if time.Duration(ttl.GrantedTTL)*time.Second < need {
			t.Fatalf("lease for +%s granted %ds, needs at least %s", d, ttl.GrantedTTL, need)
		}
		if over := time.Duration(ttl.GrantedTTL)*time.Second - need; over > max(2*l.grain, need/8)+2*time.Second {
			t.Fatalf("lease for +%s granted %ds: %s more than needed", d, ttl.GrantedTTL, over)
		}
	}
	if _, ok, err := l.leaseFor(t.Context(), clock.Now().Add(20*365*24*time.Hour)); err != nil || ok {
		t.Fatalf("a record expiring in 20 years got a lease (%v)", err)
	}
}

// --- Open ---

func TestOpenNormalisesThePrefix(t *testing.T) {
	prefix := strings.TrimSuffix(testPrefix(), "/")
	s := mustOpen(t, Config{Prefix: prefix})
	if s.prefix != prefix+"/" {
		t.Fatalf("prefix %q, want %q", s.prefix, prefix+"/")
	}
	resp, err := server.admin.Get(t.Context(), prefix+"/meta/schema")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "1" {
		t.Fatalf("schema key: %v, %v", resp, err)
	}
}

func TestOpenRefusesANewerSchema(t *testing.T) {
	mustServer(t)
	prefix := testPrefix()
	t.Cleanup(func() { _, _ = server.admin.Delete(context.Background(), prefix, clientv3.WithPrefix()) })
	if _, err := server.admin.Put(t.Context(), prefix+"meta/schema", "2"); err != nil {
		t.Fatal(err)
	}
	s, err := Open(t.Context(), Config{Endpoints: []string{server.endpoint}, Prefix: prefix})
	if err == nil {
		_ = s.Close()
		t.Fatal("Open accepted a prefix written by a newer schema")
	}
	if !strings.Contains(err.Error(), "schema version 2") {
		t.Fatalf("Open: %v, want it to name the schema version", err)
	}
}

func TestOpenFailsFastWithoutACluster(t *testing.T) {
	port, err := etcdtest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = Open(t.Context(), Config{
		Endpoints:   []string{fmt.Sprintf("http://127.0.0.1:%d", port)},
		DialTimeout: 500 * time.Millisecond, RequestTimeout: 500 * time.Millisecond,
	})
	if err == nil {
		t.Fatal("Open succeeded without a cluster")
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("Open took %s to fail", took)
	}
	if _, err := Open(t.Context(), Config{}); err == nil {
		t.Fatal("Open succeeded without endpoints")
	}
}

// --- fan-out beyond one etcd transaction ---

// mustIssueMany stores n families of subject "sub-1", each with an access token, all issued from
// auth request arID under session sessionID.
func mustIssueMany(tb testing.TB, s *Store, clock *storagetest.Clock, n int, arID, sessionID string) ([]storage.AccessToken, []storage.RefreshToken) {
	tb.Helper()
	now := clock.Now()
	var ats []storage.AccessToken
	var rts []storage.RefreshToken
	for i := range n {
		fam := fmt.Sprintf("f%03d", i)
		at := storage.AccessToken{ID: "at_" + fam, Subject: "sub-1", FamilyID: fam, AuthRequestID: arID, CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
		rt := storage.RefreshToken{Hash: storage.HashSecret(fam), ID: "rt_" + fam, FamilyID: fam, Subject: "sub-1", SessionID: sessionID, CreatedAt: now, ExpiresAt: now.Add(24 * time.Hour)}
		if err := s.CreateTokens(tb.Context(), at, &rt); err != nil {
			tb.Fatalf("CreateTokens #%d: %v", i, err)
		}
		ats, rts = append(ats, at), append(rts, rt)
	}
	return ats, rts
}

// allRevoked fails unless every token reads ErrRevoked.
func allRevoked(tb testing.TB, s *Store, ats []storage.AccessToken, rts []storage.RefreshToken) {
	tb.Helper()
	for _, at := range ats {
		if _, err := s.GetAccessToken(tb.Context(), at.ID); !errors.Is(err, storage.ErrRevoked) {
			tb.Fatalf("GetAccessToken(%s): %v, want ErrRevoked", at.ID, err)
		}
	}
	for _, rt := range rts {
		if _, err := s.GetRefreshToken(tb.Context(), rt.Hash); !errors.Is(err, storage.ErrRevoked) {
			tb.Fatalf("GetRefreshToken(%s): %v, want ErrRevoked", rt.ID, err)
		}
	}
}

// many is more families than one etcd transaction can revoke (maxTxnOps operations).
const many = maxTxnOps + 10

func TestCodeReplayRevokesMoreThanOneTransactionHolds(t *testing.T) {
	clock := storagetest.NewClock(storagetest.Start())
	s := mustOpen(t, Config{Now: clock.Now})
	ctx := t.Context()
	now := clock.Now()
	if err := s.CreateAuthRequest(ctx, storage.AuthRequest{ID: "ar", CreatedAt: now, ExpiresAt: now.Add(10 * time.Minute)}); err != nil {
		t.Fatal(err)
	}
	code := storage.HashSecret("code")
	if err := s.SaveCode(ctx, code, "ar", now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ConsumeCode(ctx, code); err != nil {
		t.Fatal(err)
	}
	ats, rts := mustIssueMany(t, s, clock, many, "ar", "")
	if _, err := s.ConsumeCode(ctx, code); !errors.Is(err, storage.ErrAlreadyUsed) {
		t.Fatalf("replayed ConsumeCode: %v, want ErrAlreadyUsed", err)
	}
	allRevoked(t, s, ats, rts)
	at := storage.AccessToken{ID: "at_late", AuthRequestID: "ar", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	if err := s.CreateTokens(ctx, at, nil); !errors.Is(err, storage.ErrRevoked) {
		t.Fatalf("CreateTokens after the replay: %v, want ErrRevoked", err)
	}
}

func TestEndSessionRevokesMoreThanOneTransactionHolds(t *testing.T) {
	clock := storagetest.NewClock(storagetest.Start())
	s := mustOpen(t, Config{Now: clock.Now})
	ctx := t.Context()
	now := clock.Now()
	sess := storage.Session{ID: "sess", Subject: "sub-1", CreatedAt: now, ExpiresAt: now.Add(8 * time.Hour)}
	if err := s.CreateSession(ctx, sess); err != nil {
		t.Fatal(err)
	}
	ats, rts := mustIssueMany(t, s, clock, many, "", sess.ID)
	if _, err := s.EndSession(ctx, sess.ID); err != nil {
		t.Fatal(err)
	}
	allRevoked(t, s, ats, rts)
	if _, err := s.GetSession(ctx, sess.ID); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("GetSession after EndSession: %v", err)
	}
}

func TestRevokeUserTokensCountsAcrossTransactions(t *testing.T) {
	clock := storagetest.NewClock(storagetest.Start())
	s := mustOpen(t, Config{Now: clock.Now})
	ats, rts := mustIssueMany(t, s, clock, many, "", "")
	if err := s.RevokeRefreshFamily(t.Context(), rts[0].FamilyID); err != nil {
		t.Fatal(err)
	}
	n, err := s.RevokeUserTokens(t.Context(), "sub-1")
	if err != nil {
		t.Fatal(err)
	}
	if n != many-1 {
		t.Fatalf("RevokeUserTokens revoked %d families, want %d", n, many-1)
	}
	allRevoked(t, s, ats, rts)
}

// --- backup and restore ---

func TestRestoreRefusesAPrefixInUse(t *testing.T) {
	clock := storagetest.NewClock(storagetest.Start())
	src := mustOpen(t, Config{Now: clock.Now})
	ctx := t.Context()
	if err := src.PutUser(ctx, storage.User{Subject: "u"}); err != nil {
		t.Fatal(err)
	}
	var copy strings.Builder
	if _, err := src.Backup(ctx, &copy); err != nil {
		t.Fatal(err)
	}
	if _, err := src.Restore(ctx, strings.NewReader(copy.String())); !errors.Is(err, storage.ErrAlreadyExists) {
		t.Fatalf("Restore into a prefix holding records: %v, want ErrAlreadyExists", err)
	}
}

func TestRestoreRefusesATruncatedCopy(t *testing.T) {
	clock := storagetest.NewClock(storagetest.Start())
	src := mustOpen(t, Config{Now: clock.Now})
	ctx := t.Context()
	for _, sub := range []string{"a", "b", "c"} {
		if err := src.PutUser(ctx, storage.User{Subject: sub}); err != nil {
			t.Fatal(err)
		}
	}
	var copy strings.Builder
	if _, err := src.Backup(ctx, &copy); err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(copy.String(), "\n")
	truncated := strings.Join(lines[:len(lines)-2], "") // without the end line
	dst := mustOpen(t, Config{Now: clock.Now})
	if _, err := dst.Restore(ctx, strings.NewReader(truncated)); err == nil || !strings.Contains(err.Error(), "truncated") {
		t.Fatalf("Restore of a truncated copy: %v, want an error saying so", err)
	}
	dst2 := mustOpen(t, Config{Now: clock.Now})
	if _, err := dst2.Restore(ctx, strings.NewReader("not a backup\n")); err == nil {
		t.Fatal("Restore accepted garbage")
	}
	dst3 := mustOpen(t, Config{Now: clock.Now})
	n, err := dst3.Restore(ctx, strings.NewReader(copy.String()))
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Fatalf("Restore wrote %d keys, want 3 (meta/schema is Open's)", n)
	}
}

// --- keys ---

func TestIndexIDRoundTrip(t *testing.T) {
	for _, tt := range []struct {
		exp      time.Time
		kind, id string
	}{
		{storagetest.Start(), kindAuthRequests, "ar1"},
		{time.Time{}, kindUpstream, "ww0123/1000002"},
		{time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC), kindARTokens, "a%2Fb/f/fam"},
	} {
		nanos, kind, id, ok := parseIndexID(indexID(tt.exp, tt.kind, tt.id))
		if !ok || nanos != record.ExpiryNanos(tt.exp) || kind != tt.kind || id != tt.id {
			t.Errorf("parseIndexID(indexID(%v, %q, %q)) = %d, %q, %q, %v", tt.exp, tt.kind, tt.id, nanos, kind, id, ok)
		}
	}
	for _, bad := range []string{"", "0000", "000000000000000g/codes/x", "0000000000000000/codes/", "0000000000000000/codes"} {
		if _, _, _, ok := parseIndexID(bad); ok {
			t.Errorf("parseIndexID(%q) accepted a malformed id", bad)
		}
	}
	// Escaped link components keep one id's links apart from another's.
	if strings.HasPrefix(sessionFamilyID("a/b", "f"), sessionFamiliesPrefix("a")) {
		t.Error("session a's link prefix covers a link of session a/b")
	}
}

// TestWatchKeysSeesOtherReplicasKeys: a key written through one replica's Store signals the
// other's WatchKeys.
func TestWatchKeysSeesOtherReplicasKeys(t *testing.T) {
	clock := storagetest.NewClock(storagetest.Start())
	a, b := mustReplicas(t, clock)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	changed := a.WatchKeys(ctx)
	// The watch starts asynchronously: write until it has seen a write, within a bound.
	deadline := time.After(10 * time.Second)
	for i := 0; ; i++ {
		k := storage.KeyRecord{ID: fmt.Sprintf("k%d", i), Algorithm: "ES256", Private: []byte("x"), CreatedAt: clock.Now()}
		if err := b.CreateKey(ctx, k); err != nil {
			t.Fatal(err)
		}
		select {
		case <-changed:
			return
		case <-time.After(200 * time.Millisecond):
		case <-deadline:
			t.Fatal("no signal within 10s of keys written through the other replica")
		}
	}
}

// --- cross-device records ---

// TestReplicasTakeAUserCodeOnce races creates of device authorizations sharing one user code on
// two replicas, first for a fresh code and then for the code of an expired authorization: each
// time exactly one wins, and the code leads to it from either replica.
func TestReplicasTakeAUserCodeOnce(t *testing.T) {
	clock := storagetest.NewClock(storagetest.Start())
	a, b := mustReplicas(t, clock)
	ctx := t.Context()
	const goroutines = 16
	for round := range 3 {
		now := clock.Now()
		candidate := func(i int) storage.DeviceAuthorization {
			return storage.DeviceAuthorization{DeviceCodeHash: storage.HashSecret(fmt.Sprintf("device-%d-%d", round, i)), UserCode: "BCDF-GHJK",
				ClientID: "cli", Status: "pending", CreatedAt: now, ExpiresAt: now.Add(time.Minute)}
		}
		errs := raceReplicas(goroutines, a, b, func(s *Store, i int) error { return s.CreateDeviceAuthorization(ctx, candidate(i)) })
		ok, taken, other := tally(errs, storage.ErrAlreadyExists)
		if ok != 1 || taken != goroutines-1 || len(other) != 0 {
			t.Fatalf("round %d: %d winners, %d ErrAlreadyExists, other %v; want 1, %d, none", round, ok, taken, other, goroutines-1)
		}
		winner := candidate(slices.IndexFunc(errs, func(err error) bool { return err == nil }))
		for _, s := range []*Store{a, b} {
			if got, err := s.GetDeviceAuthorizationByUserCode(ctx, "BCDF-GHJK"); err != nil || got.DeviceCodeHash != winner.DeviceCodeHash {
				t.Fatalf("round %d: the user code leads to %q (%v), want the winner %q", round, got.DeviceCodeHash, err, winner.DeviceCodeHash)
			}
		}
		clock.Advance(time.Minute) // the winner expires: its code is free for the next round
	}
}

// TestReplicasUpdateDeviceAuthorizationLosesNothing increments a device authorization's interval
// from both replicas at once: every increment lands.
func TestReplicasUpdateDeviceAuthorizationLosesNothing(t *testing.T) {
	clock := storagetest.NewClock(storagetest.Start())
	a, b := mustReplicas(t, clock)
	ctx := t.Context()
	d := storage.DeviceAuthorization{DeviceCodeHash: storage.HashSecret("device"), UserCode: "BCDF-GHJK", ClientID: "cli",
		Status: "pending", ExpiresAt: clock.Now().Add(time.Minute)}
	if err := a.CreateDeviceAuthorization(ctx, d); err != nil {
		t.Fatal(err)
	}
	const goroutines = 16
	errs := raceReplicas(goroutines, a, b, func(s *Store, _ int) error {
		_, err := s.UpdateDeviceAuthorization(ctx, d.DeviceCodeHash, func(d *storage.DeviceAuthorization) error { d.Interval++; return nil })
		return err
	})
	if ok, _, other := tally(errs, nil); ok != goroutines {
		t.Fatalf("%d updates succeeded, want %d (errors %v)", ok, goroutines, other)
	}
	if got, err := b.GetDeviceAuthorization(ctx, d.DeviceCodeHash); err != nil || got.Interval != goroutines {
		t.Fatalf("Interval after %d increments: %d (%v)", goroutines, got.Interval, err)
	}
}

// TestDeviceAuthorizationExpiryMovesLeases checks that an update moving a device authorization's
// expiry moves the lease and the index entry of the record and of its user code's index entry
// together, and that an update keeping it keeps both leases.
func TestDeviceAuthorizationExpiryMovesLeases(t *testing.T) {
	clock := storagetest.NewClock(storagetest.Start())
	s := mustOpen(t, Config{Now: clock.Now})
	ctx := t.Context()
	exp := clock.Now().Add(time.Hour)
	d := storage.DeviceAuthorization{DeviceCodeHash: storage.HashSecret("device"), UserCode: "BCDF-GHJK", ClientID: "cli",
		Status: "pending", ExpiresAt: exp}
	if err := s.CreateDeviceAuthorization(ctx, d); err != nil {
		t.Fatal(err)
	}
	keys := []string{
		s.key(kindDeviceAuths, d.DeviceCodeHash), s.key(kindDeviceUserCodes, d.UserCode),
		s.key(kindExpiry, indexID(exp, kindDeviceAuths, d.DeviceCodeHash)), s.key(kindExpiry, indexID(exp, kindDeviceUserCodes, d.UserCode)),
	}
	first, _ := mustLease(t, keys[0])
	for _, k := range keys[1:] {
		if id, _ := mustLease(t, k); first == 0 || id != first {
			t.Fatalf("%s has lease %x, the record %x: one expiry, one lease", k, id, first)
		}
	}

	// Keeping the expiry keeps the leases.
	if _, err := s.UpdateDeviceAuthorization(ctx, d.DeviceCodeHash, func(d *storage.DeviceAuthorization) error { d.Status = "approved"; return nil }); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if id, _ := mustLease(t, k); id != first {
			t.Fatalf("an update keeping the expiry moved %s to lease %x from %x", k, id, first)
		}
	}

	later := exp.Add(24 * time.Hour)
	if _, err := s.UpdateDeviceAuthorization(ctx, d.DeviceCodeHash, func(d *storage.DeviceAuthorization) error { d.ExpiresAt = later; return nil }); err != nil {
		t.Fatal(err)
	}
	moved, ttl := mustLease(t, keys[0])
	if moved == first || ttl < int64((25*time.Hour).Seconds()) {
		t.Fatalf("after extending the expiry by a day: lease %x (was %x), TTL %ds", moved, first, ttl)
	}
	for _, k := range []string{
		s.key(kindDeviceUserCodes, d.UserCode),
		s.key(kindExpiry, indexID(later, kindDeviceAuths, d.DeviceCodeHash)), s.key(kindExpiry, indexID(later, kindDeviceUserCodes, d.UserCode)),
	} {
		if id, _ := mustLease(t, k); id != moved {
			t.Fatalf("%s has lease %x, the moved record %x", k, id, moved)
		}
	}
	for _, k := range keys[2:] {
		if resp, err := server.admin.Get(ctx, k); err != nil || len(resp.Kvs) != 0 {
			t.Fatalf("old index entry %s still there (%v)", k, err)
		}
	}
	raw, ok, err := s.get(ctx, s.key(kindDeviceUserCodes, d.UserCode))
	if err != nil || !ok {
		t.Fatalf("user code entry: %v, present %v", err, ok)
	}
	if entry, err := record.Decode[record.UserCode]("", raw); err != nil || !entry.ExpiresAt.Equal(later) || entry.DeviceCodeHash != d.DeviceCodeHash {
		t.Fatalf("user code entry %+v (%v), want %q until %v", entry, err, d.DeviceCodeHash, later)
	}
}
