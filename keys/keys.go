// Package keys owns wecom-oidc's key material: the signing keys that sign ID tokens, JWT access
// tokens and logout tokens (published at /keys as a JWKS), and the 32-byte symmetric key the OP
// library encrypts authorization codes and opaque access tokens with.
//
// # Rotation schedule
//
// The schedule lives in the stored records, so every process using the store (the server, its
// replicas, the CLI) derives the same state from it at a given time:
//
//   - A key's activation time is its ActivatesAt, or its CreatedAt when ActivatesAt is zero (keys
//     stored before rotation existed).
//   - The active key, the one that signs, is the key with the latest activation ≤ now (ties: the
//     later CreatedAt, then the larger ID).
//   - Keys that activate after now are "next": published in the JWKS, not signing.
//   - Keys that activated before the active one are "retired": published until their NotAfter (when
//     a retired key has none, until its successor's activation + Retention), then dropped from the
//     JWKS and deleted from the store by Run.
//   - Open, Run and Rotate keep exactly one next key. It is created with ActivatesAt = the active
//     key's activation + RotationPeriod (at least now + RotationPeriod, so it is always published a
//     whole period before it signs), and the active key then gets NotAfter = next.ActivatesAt +
//     Retention.
//   - When time passes the next key's ActivatesAt it becomes active without any write; Run's next
//     step creates the following next key.
//   - Rotate moves the next key's ActivatesAt to now, gives the previously active key NotAfter =
//     now + Retention and creates a new next key.
//
// # Several replicas
//
// Every replica runs Open and Run on one shared store, so every key the schedule calls for is
// created under an id every replica derives alike, with Store.CreateKey, which stores a record
// only when its id is absent: of the replicas racing to create a key exactly one succeeds, and
// the others drop the key they generated and read the winner's.
//
//   - The symmetric key has the fixed id SymmetricKeyID (stores from before it keep theirs:
//     the newest symmetric key is the one in use).
//   - The first signing key of an empty store has the id slotID(symmetric key, "first"), and
//     the key that follows key X (the next key created once X is active) slotID(symmetric key,
//     "after " + X's id), where slotID is HMAC-SHA-256 under a key derived from the symmetric
//     key, in base32.
//     So "the next key after X" is one record for the whole cluster: Run on every replica, and
//     Rotate on several at once, create it once. The ids are unique to the store (the
//     symmetric key is random), and a slot is filled once: "after X" only while X is active
//     without a successor, "first" only while the store holds no signing key. So, unless an
//     operator deletes keys by hand, a kid never names two different keys.
//   - A replica whose clock is behind the one that created the first key finds no key active
//     yet; it creates no other (the earliest key signs until its clock catches up), where a
//     single process would have created one, and takes the earliest key as the one whose
//     successor must exist.
//
// A replica learns of keys another one created when it re-reads the store: at Open, at Rotate,
// at each step of Run, every ReloadInterval (one minute by default), and at once when the store
// signals a change (Config.Changes: etcd's watch). The interval is the bound
// within which every replica publishes a new next key, signs with a key another replica
// promoted with Rotate, and stops publishing a retired key. It costs nothing in correctness:
// a key signs only after a whole RotationPeriod of being published (Rotate excepted, whose new
// signing key was published as the next key all the same), and a retired key stays published
// for Retention, so every replica can verify what any other signs. What it does cost: after a
// Rotate in response to a leaked key, the other replicas go on signing with that key for up to
// ReloadInterval.
//
// # Hot path
//
// SigningKey, PublicKeys and Algorithms sit on the path of every token response and every token
// verification. They read an immutable snapshot through an atomic pointer: no lock, no store
// access. A snapshot knows the interval of time it holds for; when the clock leaves it (a next key
// activates, a retired key's NotAfter passes) the first caller derives the new state from the same
// parsed keys and publishes it with a compare-and-swap.
//
// # Safety
//
// A stored key that fails to parse stops the start-up (and a Reload); it is never replaced, because
// replacing it would silently invalidate every token already issued. Key ids are random (keys
// stored by earlier versions) or derived (see Several replicas), 26 characters of base32, and
// never contain ':' (the OP library splits opaque tokens on it).
package keys

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base32"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// Algorithm names as stored in Record.Algorithm.
const (
	// RS256 is the signing algorithm every relying party supports (OIDC Discovery requires it).
	RS256 = string(jose.RS256)
	// ES256 is ECDSA on P-256 with SHA-256: ~20× faster to sign than RS256.
	ES256 = string(jose.ES256)
	// EdDSA is Ed25519. Verifiers (the OP's own and relying parties') must allow it explicitly.
	EdDSA = string(jose.EdDSA)
	// Symmetric marks the 32-byte key for the OP's encryption of codes and opaque access tokens.
	Symmetric = "A256GCM"
)

// rsaBits is the RS256 modulus size: 2048 bits is what every RP verifies and signs in ~1.2 ms.
const rsaBits = 2048

// Defaults for Config.
const (
	DefaultRotationPeriod = 720 * time.Hour
	DefaultRetention      = 24 * time.Hour
)

// DefaultReloadInterval is how often Run re-reads the store and maintains the schedule.
const DefaultReloadInterval = time.Minute

// SymmetricKeyID is the id under which Open creates the symmetric key: one well-known record,
// so that replicas starting together on an empty store create it once.
const SymmetricKeyID = "symmetric"

// ErrAlreadyExists is what Store.CreateKey returns (errors.Is) when the id is taken.
var ErrAlreadyExists = errors.New("keys: a key with this id exists")

// Record is a persisted key. Private holds the PKCS#8 DER of a signing key, or the raw 32 bytes of
// the symmetric key.
type Record struct {
	ID        string
	Algorithm string
	Private   []byte
	CreatedAt time.Time
	// ActivatesAt is when the key starts signing; it is published from its creation. Zero: at
	// CreatedAt (keys stored before rotation existed).
	ActivatesAt time.Time
	// NotAfter: once retired, the key is no longer published after this time (zero: until its
	// successor's activation + Retention). Ignored while the key is active or next.
	NotAfter time.Time
}

// Store persists key records. Several processes may share one.
type Store interface {
	ListKeys(ctx context.Context) ([]Record, error)
	// PutKey creates or replaces the record with this ID.
	PutKey(ctx context.Context, r Record) error
	// CreateKey stores r only when no record has its ID, atomically across every process using
	// the store; otherwise it fails with an error wrapping ErrAlreadyExists and writes nothing.
	CreateKey(ctx context.Context, r Record) error
	// DeleteKey removes a record; a missing one is not an error.
	DeleteKey(ctx context.Context, id string) error
}

// Config configures a Set.
type Config struct {
	// Algorithm is "RS256" (the default), "ES256" or "EdDSA", for keys created from now on; keys
	// already stored keep theirs.
	Algorithm string
	// RotationPeriod is how long a key signs before the next takes over (default 720h).
	RotationPeriod time.Duration
	// Retention is how long a retired key stays published after it stops signing (default 24h).
	// It must cover the longest lifetime of a token signed with the key.
	Retention time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Logger receives key creations, rotations and deletions (default slog.Default()).
	Logger *slog.Logger
	// ReloadInterval is how often Run re-reads the store (default DefaultReloadInterval): the
	// bound within which this process sees keys other processes created or rotated.
	ReloadInterval time.Duration
	// Changes, when set, signals that the stored keys changed (a store that can watch them, such
	// as etcd's WatchKeys): Run then re-reads them at once instead of at its next interval.
	Changes <-chan struct{}
}

// Info describes a published signing key, for `wecom-oidc keys list`.
type Info struct {
	ID        string
	Algorithm string
	// State is "next", "active" or "retired".
	State       string
	CreatedAt   time.Time
	ActivatesAt time.Time
	// NotAfter is when the key leaves the JWKS: for a retired key the effective time, for the
	// active key the time its current schedule gives it (zero when none is set yet).
	NotAfter time.Time
}

// Key states reported by Info.
const (
	StateNext    = "next"
	StateActive  = "active"
	StateRetired = "retired"
)

// Set is the in-memory view of the keys. Its methods are safe for concurrent use.
type Set struct {
	store     Store
	alg       string
	period    time.Duration
	retention time.Duration
	now       func() time.Time
	log       *slog.Logger
	reload    time.Duration
	changes   <-chan struct{} // nil: Run reloads on its interval only
	crypto    [32]byte

	// mu serializes everything that reads the store to replace the snapshot or writes to it
	// (Reload, Rotate, Run's step), so that two of them in this process never race each other
	// (two Rotate calls never create two next keys).
	mu   sync.Mutex
	view atomic.Pointer[view]
}

// Open loads the keys from store and brings the schedule up to date: it creates the symmetric
// key, an active key and a next key when missing, and deletes retired keys past their NotAfter.
// It refuses to start when a stored key does not parse.
func Open(ctx context.Context, store Store, cfg Config) (*Set, error) {
	s := &Set{store: store, period: cfg.RotationPeriod, retention: cfg.Retention, now: cfg.Now, log: cfg.Logger, reload: cfg.ReloadInterval, changes: cfg.Changes}
	var ok bool
	if s.alg, ok = canonicalAlg(cfg.Algorithm); !ok {
		return nil, fmt.Errorf("keys: unsupported signing algorithm %q (want RS256, ES256 or EdDSA)", cfg.Algorithm)
	}
	if s.period == 0 {
		s.period = DefaultRotationPeriod
	}
	if s.retention == 0 {
		s.retention = DefaultRetention
	}
	if s.reload == 0 {
		s.reload = DefaultReloadInterval
	}
	if s.period < 0 || s.retention < 0 || s.reload < 0 {
		return nil, errors.New("keys: rotation period, retention and reload interval must not be negative")
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.Default()
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	es, sym, err := s.load(ctx, nil)
	if err != nil {
		return nil, err
	}
	if len(sym) == 0 {
		r := Record{ID: SymmetricKeyID, Algorithm: Symmetric, Private: make([]byte, 32), CreatedAt: s.now()}
		rand.Read(r.Private) // never fails: crypto/rand crashes the program instead
		switch err := store.CreateKey(ctx, r); {
		case err == nil:
			sym = append(sym, r)
		case errors.Is(err, ErrAlreadyExists):
			// Another process created it meanwhile (and maybe more): use what it stored.
			if es, sym, err = s.load(ctx, nil); err != nil {
				return nil, err
			}
			if len(sym) == 0 {
				return nil, errors.New("keys: the symmetric key another process created has vanished")
			}
		default:
			return nil, fmt.Errorf("keys: save symmetric key: %w", err)
		}
	}
	// Several symmetric keys only arise from two processes of a version before SymmetricKeyID
	// starting at once on an empty store; every process picks the same one: the newest (by
	// CreatedAt, then ID).
	slices.SortStableFunc(sym, func(a, b Record) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	copy(s.crypto[:], sym[len(sym)-1].Private)

	t := s.now()
	es, err = s.maintain(ctx, es, t)
	if err != nil {
		return nil, err
	}
	s.view.Store(derive(es, t, s.retention))
	return s, nil
}

// SigningKey is the key that signs tokens now.
func (s *Set) SigningKey() op.SigningKey { return s.current().signing }

// PublicKeys are the keys published in the JWKS: the active key, the next key and the retired keys
// still within their retention. The slice is shared; do not modify it.
func (s *Set) PublicKeys() []op.Key { return s.current().public }

// Algorithms lists the active key's algorithm, for discovery.
func (s *Set) Algorithms() []jose.SignatureAlgorithm { return s.current().algs }

// CryptoKey is the OP library's symmetric key. It is never rotated.
func (s *Set) CryptoKey() [32]byte { return s.crypto }

// Info lists the published signing keys, newest first (next, active, then retired keys).
func (s *Set) Info() []Info {
	v := s.current()
	t := s.now()
	_, st := classify(v.entries, t, s.retention)
	var out []Info
	for i := len(v.entries) - 1; i >= 0; i-- {
		if !st[i].published {
			continue
		}
		e := v.entries[i]
		out = append(out, Info{
			ID: e.rec.ID, Algorithm: e.rec.Algorithm, State: st[i].state,
			CreatedAt: e.rec.CreatedAt, ActivatesAt: e.act, NotAfter: st[i].notAfter,
		})
	}
	return out
}

// Rotate makes the pre-published next key sign from now on: its ActivatesAt becomes now, the
// previously active key gets NotAfter = now + Retention, and a new next key is created. Every write
// reaches the store before this process switches keys. It re-reads the store first, so it rotates
// what is stored, not a stale view. Rotations on several replicas at once (two operators) may
// make one rotation: they promote the same next key and create one key after it.
func (s *Set) Rotate(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	es, _, err := s.load(ctx, s.entries())
	if err != nil {
		return err
	}
	t := s.now()
	if es, err = s.ensureActive(ctx, es, t); err != nil {
		return err
	}
	a, _ := classify(es, t, s.retention)
	if a < 0 {
		return fmt.Errorf("keys: not rotating: the clock (%s) is before every stored key's activation", t.Format(time.RFC3339))
	}
	if a == len(es)-1 {
		// The invariant says there is a next key; someone removed it. Rotating must still
		// happen (it may be a response to a leaked key), so this key signs without having been
		// pre-published: relying parties that cache the JWKS refetch it on the unknown kid.
		s.log.Warn("keys: no pre-published next key to rotate to; the new key signs at once")
		if es, err = s.ensureNext(ctx, es, t); err != nil {
			return err
		}
		if a, _ = classify(es, t, s.retention); a < 0 || a == len(es)-1 {
			return errors.New("keys: not rotating: no next key after creating one")
		}
	}
	old, next := es[a], es[a+1]

	nr := next.rec
	nr.ActivatesAt = t
	if err := s.store.PutKey(ctx, nr); err != nil {
		return fmt.Errorf("keys: activate key %q: %w", nr.ID, err)
	}
	next.rec, next.act = nr, t

	or := old.rec
	or.ActivatesAt = old.act
	or.NotAfter = t.Add(s.retention)
	if err := s.store.PutKey(ctx, or); err != nil {
		return fmt.Errorf("keys: retire key %q: %w", or.ID, err)
	}
	old.rec = or
	sortEntries(es)

	if es, err = s.maintain(ctx, es, t); err != nil {
		return err
	}
	s.log.Info("keys: rotated", "retired_kid", old.rec.ID, "active_kid", next.rec.ID,
		"retired_not_after", or.NotAfter)
	s.view.Store(derive(es, t, s.retention))
	return nil
}

// Reload re-reads the store: another process (the CLI, a replica) may have rotated the keys. It
// writes nothing. When a stored key does not parse, it returns the error and keeps the current
// keys.
func (s *Set) Reload(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	es, _, err := s.load(ctx, s.entries())
	if err != nil {
		return err
	}
	if len(es) == 0 {
		return errors.New("keys: the store holds no signing key; keeping the current ones")
	}
	s.view.Store(derive(es, s.now(), s.retention))
	return nil
}

// Run keeps the schedule until ctx ends: every ReloadInterval, and whenever Config.Changes
// signals, it re-reads the store, creates the next key when the previous one has started
// signing (once for all replicas: see the package doc), and deletes retired keys past their
// NotAfter. Errors are logged; the current keys stay in use.
func (s *Set) Run(ctx context.Context) {
	tick := time.NewTicker(s.reload)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-s.changes:
		}
		if err := s.step(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("keys: maintenance failed", "err", err)
		}
	}
}

// step is one round of Run: Reload, then maintain the schedule.
func (s *Set) step(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	es, _, err := s.load(ctx, s.entries())
	if err != nil {
		return err
	}
	t := s.now()
	es, err = s.maintain(ctx, es, t)
	if len(es) > 0 {
		s.view.Store(derive(es, t, s.retention))
	}
	return err
}

// entries are the parsed keys of the current snapshot (nil before Open has stored one), for
// load to reuse.
func (s *Set) entries() []*entry {
	if v := s.view.Load(); v != nil {
		return v.entries
	}
	return nil
}

// maintain establishes the invariants at time t: an active key, exactly one next key (when there
// is none), and no stored key past its retention. It returns the entries as now stored.
func (s *Set) maintain(ctx context.Context, es []*entry, t time.Time) ([]*entry, error) {
	es, err := s.ensureActive(ctx, es, t)
	if err != nil {
		return es, err
	}
	if es, err = s.ensureNext(ctx, es, t); err != nil {
		return es, err
	}
	return s.sweep(ctx, es, t)
}

// ensureActive creates the first signing key, active from t, when the store holds none. When it
// holds keys but none has activated by t (this process's clock is behind the one that created
// them, or it stepped back), it creates nothing: derive lets the earliest key sign meanwhile.
func (s *Set) ensureActive(ctx context.Context, es []*entry, t time.Time) ([]*entry, error) {
	if len(es) > 0 {
		return es, nil
	}
	es, _, err := s.create(ctx, es, s.slotID("first"), t, t)
	return es, err
}

// ensureNext creates the next key when there is none, with ActivatesAt = the active key's
// activation + RotationPeriod (no earlier than t + RotationPeriod), and gives the active key
// NotAfter = next.ActivatesAt + Retention. The next key is stored first: should the second write
// fail, the active key's retention derived from its successor is the same. Its id is derived
// from the active key's, so of the replicas doing this at once only one creates it (and writes
// the NotAfter); the others adopt it.
func (s *Set) ensureNext(ctx context.Context, es []*entry, t time.Time) ([]*entry, error) {
	a, _ := classify(es, t, s.retention)
	if a < 0 && len(es) > 0 {
		// No key has activated by t: this clock is behind the one that created them (typically
		// a replica that lost the race for the first key, having read its clock before the
		// winner). The earliest key signs meanwhile (see derive), so it is the one whose
		// successor must exist.
		a = 0
	}
	if a < 0 || a < len(es)-1 {
		return es, nil
	}
	active := es[a]
	at := active.act.Add(s.period)
	if !at.After(t) {
		// The active key has signed for a whole period without a next key (a store from before
		// rotation, a long outage): publish the next one a whole period ahead all the same.
		at = t.Add(s.period)
	}
	es, created, err := s.create(ctx, es, s.slotID("after "+active.rec.ID), at, t)
	if err != nil || !created {
		return es, err
	}
	r := active.rec
	r.ActivatesAt = active.act
	r.NotAfter = at.Add(s.retention)
	if err := s.store.PutKey(ctx, r); err != nil {
		return es, fmt.Errorf("keys: schedule retirement of key %q: %w", r.ID, err)
	}
	active.rec = r
	return es, nil
}

// sweep deletes retired keys past their retention.
func (s *Set) sweep(ctx context.Context, es []*entry, t time.Time) ([]*entry, error) {
	_, st := classify(es, t, s.retention)
	var errs []error
	kept := es[:0:0]
	for i, e := range es {
		if st[i].state != StateRetired || st[i].published {
			kept = append(kept, e)
			continue
		}
		if err := s.store.DeleteKey(ctx, e.rec.ID); err != nil {
			errs = append(errs, fmt.Errorf("keys: delete expired key %q: %w", e.rec.ID, err))
			kept = append(kept, e) // not published any more, whatever the store holds
			continue
		}
		s.log.Info("keys: deleted expired key", "kid", e.rec.ID, "not_after", st[i].notAfter)
	}
	return kept, errors.Join(errs...)
}

// create generates a key with the configured algorithm, activating at `at`, and stores it under
// id unless that id is taken. It returns the entries with the key added and created = true; or,
// when another process created a key with that id first, the entries as the store now holds
// them (the other key included) and created = false.
func (s *Set) create(ctx context.Context, es []*entry, id string, at, t time.Time) (_ []*entry, created bool, err error) {
	priv, err := generate(s.alg)
	if err != nil {
		return es, false, fmt.Errorf("keys: generate %s key: %w", s.alg, err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return es, false, fmt.Errorf("keys: encode %s key: %w", s.alg, err)
	}
	// CreatedAt strictly after every stored key's, so that it orders keys activating at the same
	// instant (two rotations within one clock tick) by creation.
	createdAt := t
	for _, e := range es {
		if !createdAt.After(e.rec.CreatedAt) {
			createdAt = e.rec.CreatedAt.Add(time.Nanosecond)
		}
	}
	r := Record{ID: id, Algorithm: s.alg, Private: der, CreatedAt: createdAt, ActivatesAt: at}
	switch err := s.store.CreateKey(ctx, r); {
	case errors.Is(err, ErrAlreadyExists):
		s.log.Debug("keys: another process created this key first; using the stored one", "kid", id)
		fresh, _, err := s.load(ctx, es)
		if err != nil {
			return es, false, err
		}
		return fresh, false, nil
	case err != nil:
		return es, false, fmt.Errorf("keys: save %s key: %w", s.alg, err)
	}
	s.log.Info("keys: created signing key", "kid", r.ID, "alg", r.Algorithm, "activates_at", at)
	e, err := newEntry(r, priv)
	if err != nil {
		return es, false, err
	}
	es = append(es, e)
	sortEntries(es)
	return es, true, nil
}

// slotID is the id of the key that fills a place in the schedule ("first", "after <kid>"), the
// same in every process using the store: HMAC-SHA-256 of the place under a key derived from the
// symmetric key, 128 bits in 26 characters of base32, the shape of the random ids of earlier
// versions (never containing ':').
//
// The ids are public (the JWKS), so they are not computed under the symmetric key itself, which
// the OP's token encryption uses as an HMAC key too (on 24-byte salts): the derivation label is
// 18 bytes, so the id key is never one of those encryption keys, and no id is an output of them.
func (s *Set) slotID(place string) string {
	derive := hmac.New(sha256.New, s.crypto[:])
	derive.Write([]byte(slotLabel))
	mac := hmac.New(sha256.New, derive.Sum(nil))
	mac.Write([]byte(place))
	return base32.StdEncoding.EncodeToString(mac.Sum(nil)[:16])[:26]
}

// slotLabel derives slotID's key from the symmetric key.
const slotLabel = "wecom-oidc key ids"

// load reads and parses every stored key. Keys already parsed in known (same ID, algorithm and
// bytes) are reused, so the periodic reload does not re-parse RSA keys.
func (s *Set) load(ctx context.Context, known []*entry) (es []*entry, sym []Record, err error) {
	recs, err := s.store.ListKeys(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("keys: load: %w", err)
	}
	cache := make(map[string]*entry, len(known))
	for _, e := range known {
		cache[e.rec.ID] = e
	}
	for _, r := range recs {
		switch r.Algorithm {
		case Symmetric:
			if len(r.Private) != 32 {
				return nil, nil, fmt.Errorf("keys: stored symmetric key %q has %d bytes, want 32; refusing to replace it", r.ID, len(r.Private))
			}
			sym = append(sym, r)
		case RS256, ES256, EdDSA:
			if c := cache[r.ID]; c != nil && c.rec.Algorithm == r.Algorithm && bytes.Equal(c.rec.Private, r.Private) {
				e := *c
				e.rec = r
				e.act = activation(r)
				es = append(es, &e)
				continue
			}
			e, err := parse(r)
			if err != nil {
				return nil, nil, err
			}
			es = append(es, e)
		default:
			return nil, nil, fmt.Errorf("keys: stored key %q has unsupported algorithm %q", r.ID, r.Algorithm)
		}
	}
	sortEntries(es)
	return es, sym, nil
}

// entry is a parsed signing key.
type entry struct {
	rec    Record
	act    time.Time // effective activation
	signer signingKey
	pub    publicKey
}

func activation(r Record) time.Time {
	if r.ActivatesAt.IsZero() {
		return r.CreatedAt
	}
	return r.ActivatesAt
}

// sortEntries orders by activation, then CreatedAt, then ID: the order every process agrees on.
func sortEntries(es []*entry) {
	slices.SortStableFunc(es, func(a, b *entry) int {
		if c := a.act.Compare(b.act); c != 0 {
			return c
		}
		if c := a.rec.CreatedAt.Compare(b.rec.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.rec.ID, b.rec.ID)
	})
}

type keyState struct {
	state     string
	notAfter  time.Time
	published bool
}

// classify derives every key's state at t from the sorted entries. active is the index of the
// active key, -1 when no key has activated by t.
func classify(es []*entry, t time.Time, retention time.Duration) (active int, st []keyState) {
	active = -1
	for i, e := range es {
		if !e.act.After(t) {
			active = i
		}
	}
	st = make([]keyState, len(es))
	for i, e := range es {
		switch {
		case i > active:
			st[i] = keyState{state: StateNext, notAfter: e.rec.NotAfter, published: true}
		case i == active:
			st[i] = keyState{state: StateActive, notAfter: e.rec.NotAfter, published: true}
		default:
			na := e.rec.NotAfter
			if na.IsZero() {
				na = es[i+1].act.Add(retention)
			}
			st[i] = keyState{state: StateRetired, notAfter: na, published: t.Before(na)}
		}
	}
	return active, st
}

// view is an immutable snapshot: the parsed keys and what they mean at times in [from, until).
type view struct {
	entries []*entry
	signing op.SigningKey
	public  []op.Key
	algs    []jose.SignatureAlgorithm
	from    time.Time
	until   time.Time // zero: no change ahead
}

func (v *view) holds(t time.Time) bool {
	return !t.Before(v.from) && (v.until.IsZero() || t.Before(v.until))
}

// derive computes the snapshot at t. es must not be empty.
func derive(es []*entry, t time.Time, retention time.Duration) *view {
	active, st := classify(es, t, retention)
	v := &view{entries: es}
	if active < 0 {
		// The clock is before every key's activation (it stepped back): the earliest key signs
		// until the schedule catches up. Never leave the OP without a key.
		active = 0
		v.until = es[0].act
	} else {
		v.from = es[active].act
		if active+1 < len(es) {
			v.until = es[active+1].act
		}
	}
	for i, e := range es {
		if !st[i].published {
			if st[i].notAfter.After(v.from) {
				v.from = st[i].notAfter
			}
			continue
		}
		v.public = append(v.public, e.pub)
		if st[i].state == StateRetired && (v.until.IsZero() || st[i].notAfter.Before(v.until)) {
			v.until = st[i].notAfter
		}
	}
	v.public = slices.Clip(v.public)
	v.signing = es[active].signer
	v.algs = []jose.SignatureAlgorithm{es[active].signer.alg}
	return v
}

// current returns the snapshot for now, deriving a new one when the clock has left the current
// snapshot's interval. Lock-free.
func (s *Set) current() *view {
	v := s.view.Load()
	t := s.now()
	if v.holds(t) {
		return v
	}
	nv := derive(v.entries, t, s.retention)
	s.view.CompareAndSwap(v, nv) // on failure a Reload or another caller stored a newer one
	return nv
}

func canonicalAlg(a string) (string, bool) {
	switch strings.ToUpper(a) {
	case "", "RS256":
		return RS256, true
	case "ES256":
		return ES256, true
	case "EDDSA":
		return EdDSA, true
	}
	return "", false
}

func generate(alg string) (any, error) {
	switch alg {
	case ES256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case EdDSA:
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		return priv, err
	default:
		return rsa.GenerateKey(rand.Reader, rsaBits)
	}
}

func parse(r Record) (*entry, error) {
	parsed, err := x509.ParsePKCS8PrivateKey(r.Private)
	if err != nil {
		return nil, fmt.Errorf("keys: stored key %q does not parse (refusing to replace it): %w", r.ID, err)
	}
	return newEntry(r, parsed)
}

func newEntry(r Record, priv any) (*entry, error) {
	var pub any
	switch k := priv.(type) {
	case *rsa.PrivateKey:
		if r.Algorithm == RS256 {
			pub = &k.PublicKey
		}
	case *ecdsa.PrivateKey:
		if r.Algorithm == ES256 && k.Curve == elliptic.P256() {
			pub = &k.PublicKey
		}
	case ed25519.PrivateKey:
		if r.Algorithm == EdDSA {
			pub = k.Public().(ed25519.PublicKey)
		}
	}
	if pub == nil {
		return nil, fmt.Errorf("keys: stored key %q is %s, but its private key is a %T (refusing to replace it)", r.ID, r.Algorithm, priv)
	}
	alg := jose.SignatureAlgorithm(r.Algorithm)
	return &entry{
		rec:    r,
		act:    activation(r),
		signer: signingKey{id: r.ID, alg: alg, key: priv},
		pub:    publicKey{id: r.ID, alg: alg, key: pub},
	}, nil
}

// signingKey is an op.SigningKey. key is *rsa.PrivateKey, *ecdsa.PrivateKey or
// ed25519.PrivateKey (a value, as go-jose wants).
type signingKey struct {
	id  string
	alg jose.SignatureAlgorithm
	key any
}

func (k signingKey) SignatureAlgorithm() jose.SignatureAlgorithm { return k.alg }
func (k signingKey) Key() any                                    { return k.key }
func (k signingKey) ID() string                                  { return k.id }

// publicKey is an op.Key. key is *rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey.
type publicKey struct {
	id  string
	alg jose.SignatureAlgorithm
	key any
}

func (k publicKey) ID() string                         { return k.id }
func (k publicKey) Algorithm() jose.SignatureAlgorithm { return k.alg }
func (k publicKey) Use() string                        { return "sig" }
func (k publicKey) Key() any                           { return k.key }
