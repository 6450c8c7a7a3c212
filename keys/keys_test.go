package keys

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/client/rp"
	"github.com/zitadel/oidc/v3/pkg/crypto"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

const (
	period    = 720 * time.Hour
	retention = 24 * time.Hour
)

var t0 = time.Date(2026, 11, 21, 8, 0, 0, 0, time.UTC)

// clock is a fake clock shared by the Sets of a test.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: t0} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type memStore struct {
	mu      sync.Mutex
	records []Record
	puts    int // PutKey and CreateKey calls that wrote
	creates int // CreateKey calls that wrote
	deletes int
	failPut error // returned by PutKey when set
	// listDelay widens the window between reading and writing, for the concurrency test.
	listDelay time.Duration
	// listGate, when set, holds the ListKeys calls it admits, once they have read, until all of
	// them have: several Sets read the store before any of them writes.
	listGate *barrier
}

func (m *memStore) ListKeys(context.Context) ([]Record, error) {
	time.Sleep(m.listDelay)
	m.mu.Lock()
	recs := append([]Record(nil), m.records...)
	gate := m.listGate
	m.mu.Unlock()
	if gate != nil {
		gate.wait() // after the read: every admitted caller has read before any returns
	}
	return recs, nil
}

func (m *memStore) PutKey(_ context.Context, r Record) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failPut != nil {
		return m.failPut
	}
	m.puts++
	for i := range m.records {
		if m.records[i].ID == r.ID {
			m.records[i] = r
			return nil
		}
	}
	m.records = append(m.records, r)
	return nil
}

func (m *memStore) CreateKey(_ context.Context, r Record) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failPut != nil {
		return m.failPut
	}
	for _, have := range m.records {
		if have.ID == r.ID {
			return fmt.Errorf("memStore: key %q: %w", r.ID, ErrAlreadyExists)
		}
	}
	m.puts++
	m.creates++
	m.records = append(m.records, r)
	return nil
}

func (m *memStore) DeleteKey(_ context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.records = slices.DeleteFunc(m.records, func(r Record) bool {
		if r.ID == id {
			m.deletes++
			return true
		}
		return false
	})
	return nil
}

func (m *memStore) record(id string) (Record, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range m.records {
		if r.ID == id {
			return r, true
		}
	}
	return Record{}, false
}

func (m *memStore) signingIDs() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var ids []string
	for _, r := range m.records {
		if r.Algorithm != Symmetric {
			ids = append(ids, r.ID)
		}
	}
	slices.Sort(ids)
	return ids
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func open(t *testing.T, store Store, c *clock, alg string) *Set {
	t.Helper()
	s, err := Open(context.Background(), store, Config{
		Algorithm: alg, RotationPeriod: period, Retention: retention, Now: c.Now, Logger: quietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// byState returns the Info entries in a state.
func byState(s *Set, state string) []Info {
	var out []Info
	for _, i := range s.Info() {
		if i.State == state {
			out = append(out, i)
		}
	}
	return out
}

func one(t *testing.T, s *Set, state string) Info {
	t.Helper()
	got := byState(s, state)
	if len(got) != 1 {
		t.Fatalf("%d %s keys, want 1: %+v", len(got), state, s.Info())
	}
	return got[0]
}

func publishedIDs(s *Set) []string {
	var ids []string
	for _, k := range s.PublicKeys() {
		ids = append(ids, k.ID())
	}
	slices.Sort(ids)
	return ids
}

func sorted(ids ...string) []string {
	ids = slices.Clone(ids)
	slices.Sort(ids)
	return ids
}

// sign makes a JWT with the Set's signing key, the way the OP does.
func sign(t *testing.T, s *Set) string {
	t.Helper()
	signer, err := op.SignerFromKey(s.SigningKey())
	if err != nil {
		t.Fatal(err)
	}
	jws, err := signer.Sign([]byte(`{"sub":"alice"}`))
	if err != nil {
		t.Fatal(err)
	}
	token, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return token
}

// verify checks token against the published keys the way a JWKS consumer does: by kid.
func verify(token string, published []op.Key) (kid string, err error) {
	jws, err := jose.ParseSigned(token, []jose.SignatureAlgorithm{jose.RS256, jose.ES256, jose.EdDSA})
	if err != nil {
		return "", err
	}
	kid = jws.Signatures[0].Header.KeyID
	for _, k := range published {
		if k.ID() == kid {
			if jose.SignatureAlgorithm(jws.Signatures[0].Header.Algorithm) != k.Algorithm() {
				return kid, fmt.Errorf("token alg %s, key alg %s", jws.Signatures[0].Header.Algorithm, k.Algorithm())
			}
			_, err := jws.Verify(k.Key())
			return kid, err
		}
	}
	return kid, fmt.Errorf("kid %q not published", kid)
}

func TestFirstStartCreatesActiveAndNext(t *testing.T) {
	ctx := context.Background()
	c := newClock()
	store := &memStore{}
	s := open(t, store, c, "")

	active, next := one(t, s, StateActive), one(t, s, StateNext)
	if len(s.Info()) != 2 {
		t.Fatalf("Info = %+v, want two keys", s.Info())
	}
	if s.SigningKey().ID() != active.ID {
		t.Fatalf("signing kid %s, want the active %s", s.SigningKey().ID(), active.ID)
	}
	if got, want := publishedIDs(s), sorted(active.ID, next.ID); !slices.Equal(got, want) {
		t.Fatalf("published %v, want %v", got, want)
	}
	if !active.ActivatesAt.Equal(t0) || !next.ActivatesAt.Equal(t0.Add(period)) {
		t.Fatalf("activations %v and %v, want %v and %v", active.ActivatesAt, next.ActivatesAt, t0, t0.Add(period))
	}
	if !active.NotAfter.Equal(t0.Add(period + retention)) {
		t.Fatalf("active NotAfter %v, want %v", active.NotAfter, t0.Add(period+retention))
	}
	if s.Info()[0].State != StateNext {
		t.Fatalf("Info is not newest first: %+v", s.Info())
	}
	if got := s.SigningKey().SignatureAlgorithm(); got != jose.RS256 || !slices.Equal(s.Algorithms(), []jose.SignatureAlgorithm{jose.RS256}) {
		t.Fatalf("algorithm %s / %v, want RS256", got, s.Algorithms())
	}
	if _, ok := s.SigningKey().Key().(*rsa.PrivateKey); !ok {
		t.Fatalf("signing key is %T", s.SigningKey().Key())
	}
	for _, id := range []string{active.ID, next.ID} {
		if strings.Contains(id, ":") || id == "" {
			t.Fatalf("kid %q", id)
		}
	}
	if s.CryptoKey() == ([32]byte{}) {
		t.Fatal("symmetric key is all zero")
	}
	// The records carry the schedule.
	if r, _ := store.record(next.ID); !r.ActivatesAt.Equal(t0.Add(period)) {
		t.Fatalf("stored next key %+v", r)
	}
	if kid, err := verify(sign(t, s), s.PublicKeys()); err != nil || kid != active.ID {
		t.Fatalf("verify: kid %s, %v", kid, err)
	}

	// Reopening writes nothing and serves the same keys.
	puts := store.puts
	again := open(t, store, c, "")
	if store.puts != puts {
		t.Fatalf("second Open wrote %d records", store.puts-puts)
	}
	if again.SigningKey().ID() != active.ID || again.CryptoKey() != s.CryptoKey() ||
		!slices.Equal(publishedIDs(again), publishedIDs(s)) {
		t.Fatal("reopened keys differ from the stored ones")
	}
	if err := again.step(ctx); err != nil || store.puts != puts || store.deletes != 0 {
		t.Fatalf("a step with nothing due wrote: err %v, %d puts, %d deletes", err, store.puts-puts, store.deletes)
	}
}

func TestScheduledRotation(t *testing.T) {
	ctx := context.Background()
	c := newClock()
	store := &memStore{}
	s := open(t, store, c, ES256)
	a, n := one(t, s, StateActive).ID, one(t, s, StateNext).ID
	oldToken := sign(t, s)

	c.Advance(period - time.Nanosecond)
	if s.SigningKey().ID() != a {
		t.Fatal("the next key signs before its ActivatesAt")
	}

	// At the next key's ActivatesAt it signs, with no write and no Reload.
	puts := store.puts
	c.Advance(time.Nanosecond)
	if s.SigningKey().ID() != n {
		t.Fatalf("signing kid %s at the next key's ActivatesAt, want %s", s.SigningKey().ID(), n)
	}
	if store.puts != puts {
		t.Fatal("the switch wrote to the store")
	}
	if got := one(t, s, StateRetired); got.ID != a || !got.NotAfter.Equal(t0.Add(period+retention)) {
		t.Fatalf("retired %+v", got)
	}
	if len(byState(s, StateNext)) != 0 {
		t.Fatal("a next key exists before the step")
	}

	// Run's step creates the following next key, a whole period ahead.
	c.Advance(time.Minute)
	if err := s.step(ctx); err != nil {
		t.Fatal(err)
	}
	n2 := one(t, s, StateNext)
	if !n2.ActivatesAt.Equal(t0.Add(2 * period)) {
		t.Fatalf("new next key activates at %v, want %v", n2.ActivatesAt, t0.Add(2*period))
	}
	if got := one(t, s, StateActive); got.ID != n || !got.NotAfter.Equal(t0.Add(2*period+retention)) {
		t.Fatalf("active %+v", got)
	}
	if got, want := publishedIDs(s), sorted(a, n, n2.ID); !slices.Equal(got, want) {
		t.Fatalf("published %v, want %v", got, want)
	}
	if _, err := verify(oldToken, s.PublicKeys()); err != nil {
		t.Fatalf("token of the retired key: %v", err)
	}

	// The retired key stays published until ActivatesAt(new) + Retention ...
	c.Advance(retention - time.Minute - time.Nanosecond)
	if !slices.Contains(publishedIDs(s), a) {
		t.Fatal("retired key dropped before its NotAfter")
	}
	if err := s.step(ctx); err != nil || store.deletes != 0 {
		t.Fatalf("step deleted a retained key: %v, %d deletes", err, store.deletes)
	}
	// ... then it is gone from the JWKS at once and deleted by the next step.
	c.Advance(time.Nanosecond)
	if slices.Contains(publishedIDs(s), a) {
		t.Fatal("retired key still published at its NotAfter")
	}
	if _, err := verify(oldToken, s.PublicKeys()); err == nil {
		t.Fatal("token of an expired key still verifies")
	}
	if _, ok := store.record(a); !ok {
		t.Fatal("deleted before the step")
	}
	if err := s.step(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := store.record(a); ok {
		t.Fatal("expired key still stored after the step")
	}
	if got, want := store.signingIDs(), sorted(n, n2.ID); !slices.Equal(got, want) {
		t.Fatalf("stored %v, want %v", got, want)
	}
}

func TestRotate(t *testing.T) {
	ctx := context.Background()
	c := newClock()
	store := &memStore{}
	s := open(t, store, c, "")
	a, n := one(t, s, StateActive).ID, one(t, s, StateNext).ID
	before := sign(t, s)

	c.Advance(5 * time.Hour)
	rotatedAt := c.Now()
	if err := s.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	if s.SigningKey().ID() != n {
		t.Fatalf("after Rotate kid %s signs, want the pre-published %s", s.SigningKey().ID(), n)
	}
	after := sign(t, s)
	if kid, err := verify(after, s.PublicKeys()); err != nil || kid != n {
		t.Fatalf("new token: kid %s, %v", kid, err)
	}
	if kid, err := verify(before, s.PublicKeys()); err != nil || kid != a {
		t.Fatalf("token signed before the rotation: kid %s, %v", kid, err)
	}
	if got := one(t, s, StateActive); !got.ActivatesAt.Equal(rotatedAt) || !got.NotAfter.Equal(rotatedAt.Add(period+retention)) {
		t.Fatalf("active %+v", got)
	}
	if got := one(t, s, StateRetired); got.ID != a || !got.NotAfter.Equal(rotatedAt.Add(retention)) {
		t.Fatalf("retired %+v", got)
	}
	n2 := one(t, s, StateNext)
	if n2.ID == a || n2.ID == n || !n2.ActivatesAt.Equal(rotatedAt.Add(period)) {
		t.Fatalf("next %+v", n2)
	}
	// Persisted: a fresh Set on the store agrees.
	fresh := open(t, store, c, "")
	if fresh.SigningKey().ID() != n || !slices.Equal(publishedIDs(fresh), publishedIDs(s)) {
		t.Fatal("a fresh Set derives another state from the store")
	}

	c.Advance(retention - time.Nanosecond)
	if _, err := verify(before, s.PublicKeys()); err != nil {
		t.Fatalf("old token within retention: %v", err)
	}
	c.Advance(time.Nanosecond)
	if _, err := verify(before, s.PublicKeys()); err == nil {
		t.Fatal("old token verifies after retention")
	}
	if err := s.step(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := store.record(a); ok {
		t.Fatal("retired key not deleted after retention")
	}
}

// Rotations within one clock tick (the fake clock never moves here) promote key after key: the
// key that signs is always the one that was next.
func TestRotateTwiceInOneTick(t *testing.T) {
	c := newClock()
	s := open(t, &memStore{}, c, EdDSA)
	for i := range 6 {
		next := one(t, s, StateNext).ID
		if err := s.Rotate(context.Background()); err != nil {
			t.Fatal(err)
		}
		if s.SigningKey().ID() != next {
			t.Fatalf("rotation %d: %s signs, want %s", i, s.SigningKey().ID(), next)
		}
		one(t, s, StateNext)
	}
}

func TestRotatePersistsBeforeSwitching(t *testing.T) {
	c := newClock()
	store := &memStore{}
	s := open(t, store, c, EdDSA)
	a := s.SigningKey().ID()
	published := publishedIDs(s)
	store.failPut = errors.New("disk full")
	if err := s.Rotate(context.Background()); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("Rotate error %v", err)
	}
	if s.SigningKey().ID() != a || !slices.Equal(publishedIDs(s), published) {
		t.Fatal("the keys switched although nothing was stored")
	}
}

func TestConcurrentRotate(t *testing.T) {
	c := newClock()
	store := &memStore{}
	s := open(t, store, c, ES256)
	store.listDelay = 2 * time.Millisecond
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() { errs <- s.Rotate(context.Background()) })
	}
	// Hot-path readers race the rotations (under -race).
	stop := make(chan struct{})
	var readers sync.WaitGroup
	for range 2 {
		readers.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if s.SigningKey() == nil || len(s.PublicKeys()) < 2 || len(s.Algorithms()) != 1 {
					t.Error("inconsistent snapshot")
					return
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	readers.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, set := range []*Set{s, open(t, store, c, ES256)} {
		one(t, set, StateActive)
		one(t, set, StateNext)
		if got := len(byState(set, StateRetired)); got != 8 {
			t.Fatalf("%d retired keys, want 8 (the first key and 7 promoted ones)", got)
		}
	}
	if got := len(store.signingIDs()); got != 10 {
		t.Fatalf("%d stored signing keys, want 10", got)
	}
	// The key that signs is the last one promoted: the newest retired key is its predecessor.
	info := s.Info()
	if info[0].State != StateNext || info[1].State != StateActive || info[1].ID != s.SigningKey().ID() {
		t.Fatalf("Info = %+v", info)
	}
}

func TestReloadSeesAnotherSetsRotation(t *testing.T) {
	ctx := context.Background()
	c := newClock()
	store := &memStore{}
	server := open(t, store, c, ES256)
	cli := open(t, store, c, ES256)
	if server.SigningKey().ID() != cli.SigningKey().ID() {
		t.Fatal("two Sets on one store disagree")
	}
	old := server.SigningKey().ID()
	c.Advance(time.Hour)
	if err := cli.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	if server.SigningKey().ID() != old {
		t.Fatal("the server switched before reloading")
	}
	if err := server.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if server.SigningKey().ID() != cli.SigningKey().ID() || server.SigningKey().ID() == old {
		t.Fatalf("after Reload the server signs with %s, the CLI with %s", server.SigningKey().ID(), cli.SigningKey().ID())
	}
	if !slices.Equal(publishedIDs(server), publishedIDs(cli)) {
		t.Fatalf("published %v vs %v", publishedIDs(server), publishedIDs(cli))
	}
	// The server's own step does not create a second next key.
	if err := server.step(ctx); err != nil {
		t.Fatal(err)
	}
	one(t, server, StateNext)
	if len(store.signingIDs()) != 3 {
		t.Fatalf("stored %v", store.signingIDs())
	}
}

func TestReloadKeepsKeysWhenStoreBreaks(t *testing.T) {
	ctx := context.Background()
	c := newClock()
	store := &memStore{}
	s := open(t, store, c, ES256)
	kid := s.SigningKey().ID()
	store.records = append(store.records, Record{ID: "bad", Algorithm: ES256, Private: []byte("junk"), CreatedAt: t0})
	if err := s.Reload(ctx); err == nil || !strings.Contains(err.Error(), "does not parse") {
		t.Fatalf("Reload error %v", err)
	}
	if err := s.step(ctx); err == nil {
		t.Fatal("step accepted a broken key")
	}
	if s.SigningKey().ID() != kid {
		t.Fatal("signing key changed")
	}
	if _, ok := store.record("bad"); !ok {
		t.Fatal("broken key was removed")
	}
}

func TestAlgorithms(t *testing.T) {
	for _, tt := range []struct {
		alg       string
		priv, pub any
	}{
		{"", &rsa.PrivateKey{}, &rsa.PublicKey{}},
		{RS256, &rsa.PrivateKey{}, &rsa.PublicKey{}},
		{ES256, &ecdsa.PrivateKey{}, &ecdsa.PublicKey{}},
		{EdDSA, ed25519.PrivateKey{}, ed25519.PublicKey{}},
		{"eddsa", ed25519.PrivateKey{}, ed25519.PublicKey{}},
	} {
		t.Run(tt.alg, func(t *testing.T) {
			c := newClock()
			store := &memStore{}
			s := open(t, store, c, tt.alg)
			want, _ := canonicalAlg(tt.alg)
			if got := s.SigningKey().SignatureAlgorithm(); string(got) != want {
				t.Fatalf("alg %s, want %s", got, want)
			}
			if !slices.Equal(s.Algorithms(), []jose.SignatureAlgorithm{jose.SignatureAlgorithm(want)}) {
				t.Fatalf("Algorithms %v", s.Algorithms())
			}
			if fmt.Sprintf("%T", s.SigningKey().Key()) != fmt.Sprintf("%T", tt.priv) {
				t.Fatalf("private key is %T, want %T", s.SigningKey().Key(), tt.priv)
			}
			for _, k := range s.PublicKeys() {
				if fmt.Sprintf("%T", k.Key()) != fmt.Sprintf("%T", tt.pub) || string(k.Algorithm()) != want || k.Use() != "sig" {
					t.Fatalf("public key %T %s %s", k.Key(), k.Algorithm(), k.Use())
				}
			}
			token := sign(t, s)
			if _, err := verify(token, s.PublicKeys()); err != nil {
				t.Fatal(err)
			}
			// The published key marshals as a JWK that verifies the token (what RPs fetch).
			raw, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{
				Key: s.PublicKeys()[0].Key(), KeyID: s.PublicKeys()[0].ID(), Algorithm: want, Use: "sig",
			}}})
			if err != nil {
				t.Fatal(err)
			}
			var set jose.JSONWebKeySet
			if err := json.Unmarshal(raw, &set); err != nil {
				t.Fatal(err)
			}
			jws, _ := jose.ParseSigned(token, []jose.SignatureAlgorithm{jose.SignatureAlgorithm(want)})
			if _, err := jws.Verify(set.Key(s.SigningKey().ID())[0]); err != nil {
				t.Fatalf("verify with the JWK: %v", err)
			}
			// The stored key parses back.
			again := open(t, store, c, RS256)
			if again.SigningKey().ID() != s.SigningKey().ID() || again.SigningKey().SignatureAlgorithm() != s.SigningKey().SignatureAlgorithm() {
				t.Fatal("reopened key differs")
			}
			if _, err := verify(sign(t, again), s.PublicKeys()); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestAlgorithmChangeAppliesToNewKeys(t *testing.T) {
	ctx := context.Background()
	c := newClock()
	store := &memStore{}
	open(t, store, c, RS256)
	s := open(t, store, c, EdDSA)
	// Both stored keys keep RS256; the key created after the change is EdDSA.
	if s.SigningKey().SignatureAlgorithm() != jose.RS256 || one(t, s, StateNext).Algorithm != RS256 {
		t.Fatalf("stored keys changed algorithm: %+v", s.Info())
	}
	c.Advance(time.Minute)
	if err := s.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	if s.SigningKey().SignatureAlgorithm() != jose.RS256 || one(t, s, StateNext).Algorithm != EdDSA {
		t.Fatalf("after one rotation: %+v", s.Info())
	}
	c.Advance(time.Minute)
	if err := s.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	if s.SigningKey().SignatureAlgorithm() != jose.EdDSA || !slices.Equal(s.Algorithms(), []jose.SignatureAlgorithm{jose.EdDSA}) {
		t.Fatalf("after two rotations: %+v", s.Info())
	}
	// Tokens of both algorithms verify during the retention.
	if _, err := verify(sign(t, s), s.PublicKeys()); err != nil {
		t.Fatal(err)
	}
}

func TestLegacyStoreUpgrade(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, rsaBits)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(rsaKey)
	if err != nil {
		t.Fatal(err)
	}
	sym := Record{ID: "SYM", Algorithm: Symmetric, Private: make([]byte, 32)}
	sym.Private[0] = 7
	for _, tt := range []struct {
		name     string
		age      time.Duration
		wantNext time.Time
	}{
		// A key younger than a period: the next one takes over a period after its creation.
		{"young key", 24 * time.Hour, t0.Add(period - 24*time.Hour)},
		// An old key has signed for more than a period: the next one is still published a
		// whole period before it signs.
		{"old key", 400 * 24 * time.Hour, t0.Add(period)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			created := t0.Add(-tt.age)
			legacy := Record{ID: "LEGACY", Algorithm: RS256, Private: der, CreatedAt: created}
			sym.CreatedAt = created
			store := &memStore{records: []Record{sym, legacy}}
			c := newClock()
			s := open(t, store, c, ES256)
			if s.SigningKey().ID() != "LEGACY" || s.CryptoKey()[0] != 7 {
				t.Fatal("the legacy keys are not the ones in use")
			}
			active, next := one(t, s, StateActive), one(t, s, StateNext)
			if !active.ActivatesAt.Equal(created) || !next.ActivatesAt.Equal(tt.wantNext) || next.Algorithm != ES256 {
				t.Fatalf("active %+v next %+v", active, next)
			}
			r, _ := store.record("LEGACY")
			if !r.ActivatesAt.Equal(created) || !r.NotAfter.Equal(tt.wantNext.Add(retention)) || !slices.Equal(r.Private, der) {
				t.Fatalf("legacy record after upgrade %+v", r)
			}
			if len(store.signingIDs()) != 2 {
				t.Fatalf("stored %v", store.signingIDs())
			}
			c.Advance(tt.wantNext.Sub(t0))
			if s.SigningKey().ID() != next.ID {
				t.Fatal("next key does not take over on schedule")
			}
		})
	}
}

// A retired key without a NotAfter (two next keys from two replicas rotating at once, a crash
// between writes) is retained until its successor's activation + Retention.
func TestRetiredKeyWithoutNotAfter(t *testing.T) {
	ctx := context.Background()
	c := newClock()
	store := &memStore{}
	s := open(t, store, c, ES256)
	a := s.SigningKey().ID()
	store.mu.Lock()
	for i := range store.records {
		store.records[i].NotAfter = time.Time{}
	}
	store.mu.Unlock()
	if err := s.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	c.Advance(period)
	if got := one(t, s, StateRetired); got.ID != a || !got.NotAfter.Equal(t0.Add(period+retention)) {
		t.Fatalf("retired %+v", got)
	}
	c.Advance(retention)
	if slices.Contains(publishedIDs(s), a) {
		t.Fatal("still published")
	}
	if err := s.step(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := store.record(a); ok {
		t.Fatal("not deleted")
	}
}

func TestOpenRefusesToReplaceBrokenKeys(t *testing.T) {
	ed := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	edDER, err := x509.MarshalPKCS8PrivateKey(ed)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		record Record
		want   string
	}{
		{"garbage RSA key", Record{ID: "k1", Algorithm: RS256, Private: []byte("not DER"), CreatedAt: t0}, "does not parse"},
		{"garbage ES256 key", Record{ID: "k1", Algorithm: ES256, Private: []byte("not DER"), CreatedAt: t0}, "does not parse"},
		{"Ed25519 key stored as RS256", Record{ID: "k1", Algorithm: RS256, Private: edDER, CreatedAt: t0}, "ed25519.PrivateKey"},
		{"short symmetric key", Record{ID: "k2", Algorithm: Symmetric, Private: []byte("short"), CreatedAt: t0}, "want 32"},
		{"unknown algorithm", Record{ID: "k3", Algorithm: "HS256", Private: []byte("x"), CreatedAt: t0}, "unsupported algorithm"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := &memStore{records: []Record{tt.record}}
			c := newClock()
			_, err := Open(context.Background(), store, Config{Now: c.Now, Logger: quietLogger()})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Open error = %v, want one containing %q", err, tt.want)
			}
			if store.puts != 0 || store.deletes != 0 {
				t.Fatalf("Open wrote %d and deleted %d keys over a broken store", store.puts, store.deletes)
			}
		})
	}
}

func TestOpenRejectsBadConfig(t *testing.T) {
	for _, cfg := range []Config{{Algorithm: "HS256"}, {RotationPeriod: -time.Hour}, {Retention: -time.Hour}} {
		store := &memStore{}
		if _, err := Open(context.Background(), store, cfg); err == nil || store.puts != 0 {
			t.Fatalf("Open(%+v) = %v, %d puts", cfg, err, store.puts)
		}
	}
}

func TestRunStopsWithContext(t *testing.T) {
	c := newClock()
	s := open(t, &memStore{}, c, ES256)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return")
	}
}

// An ID token signed by each algorithm, across a rotation, verifies with zitadel's RP verifier
// reading the JWKS served by op.Keys. EdDSA needs the RP to allow it explicitly.
func TestIDTokenVerifiesWithRP(t *testing.T) {
	for _, alg := range []string{RS256, ES256, EdDSA} {
		t.Run(alg, func(t *testing.T) {
			ctx := context.Background()
			c := newClock()
			s := open(t, &memStore{}, c, alg)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				op.Keys(w, r, keyProvider{s})
			}))
			defer srv.Close()
			const issuer, clientID = "https://op.example", "app"
			idToken := func() string {
				claims := oidc.NewIDTokenClaims(issuer, "alice", []string{clientID}, time.Now().Add(time.Hour), time.Now(), "", "", nil, clientID, 0)
				claims.SignatureAlg = s.SigningKey().SignatureAlgorithm()
				signer, err := op.SignerFromKey(s.SigningKey())
				if err != nil {
					t.Fatal(err)
				}
				token, err := crypto.Sign(claims, signer)
				if err != nil {
					t.Fatal(err)
				}
				return token
			}
			keySet := rp.NewRemoteKeySet(srv.Client(), srv.URL)
			verifier := rp.NewIDTokenVerifier(issuer, clientID, keySet, rp.WithSupportedSigningAlgorithms(alg))

			before := idToken()
			if _, err := rp.VerifyIDToken[*oidc.IDTokenClaims](ctx, before, verifier); err != nil {
				t.Fatalf("before rotation: %v", err)
			}
			if err := s.Rotate(ctx); err != nil {
				t.Fatal(err)
			}
			after := idToken()
			for _, token := range []string{before, after} {
				if _, err := rp.VerifyIDToken[*oidc.IDTokenClaims](ctx, token, verifier); err != nil {
					t.Fatalf("after rotation: %v", err)
				}
			}
			if alg == EdDSA {
				// The trap: the RP's default allow-list is RS256, ES256, PS256.
				def := rp.NewIDTokenVerifier(issuer, clientID, keySet)
				if _, err := rp.VerifyIDToken[*oidc.IDTokenClaims](ctx, after, def); err == nil {
					t.Fatal("the default RP verifier accepted EdDSA")
				}
			}
		})
	}
}

type keyProvider struct{ s *Set }

func (k keyProvider) KeySet(context.Context) ([]op.Key, error) { return k.s.PublicKeys(), nil }

func BenchmarkSigningKey(b *testing.B) {
	s, err := Open(context.Background(), &memStore{}, Config{Algorithm: ES256, Logger: quietLogger()})
	if err != nil {
		b.Fatal(err)
	}
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if s.SigningKey() == nil || len(s.PublicKeys()) == 0 {
				b.Fatal("no key")
			}
		}
	})
}
