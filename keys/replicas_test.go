package keys

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// The tests of this file are several Sets on one store, as several replicas on one etcd prefix:
// they must end with the same keys, and create each key of the schedule once.

// barrier holds the first n callers of wait until all n have arrived; later callers pass.
type barrier struct {
	mu      sync.Mutex
	n       int
	arrived chan struct{}
}

func newBarrier(n int) *barrier { return &barrier{n: n, arrived: make(chan struct{})} }

func (b *barrier) wait() {
	b.mu.Lock()
	if b.n == 0 {
		b.mu.Unlock()
		return
	}
	b.n--
	if b.n == 0 {
		close(b.arrived)
	}
	b.mu.Unlock()
	<-b.arrived
}

// openAll opens n Sets on store at once, each on its own goroutine, as replicas starting together.
func openAll(t *testing.T, n int, store Store, c *clock, alg string) []*Set {
	t.Helper()
	sets := make([]*Set, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			sets[i], errs[i] = Open(context.Background(), store, Config{
				Algorithm: alg, RotationPeriod: period, Retention: retention, Now: c.Now, Logger: quietLogger(),
			})
		})
	}
	close(start)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return sets
}

// agree fails unless every Set has the same symmetric key, signing key and published keys as the
// first.
func agree(t *testing.T, sets []*Set) {
	t.Helper()
	for i, s := range sets[1:] {
		if s.CryptoKey() != sets[0].CryptoKey() {
			t.Fatalf("replica %d has another symmetric key", i+1)
		}
		if s.SigningKey().ID() != sets[0].SigningKey().ID() {
			t.Fatalf("replica %d signs with %s, replica 0 with %s", i+1, s.SigningKey().ID(), sets[0].SigningKey().ID())
		}
		if got, want := publishedIDs(s), publishedIDs(sets[0]); !slices.Equal(got, want) {
			t.Fatalf("replica %d publishes %v, replica 0 %v", i+1, got, want)
		}
	}
}

func TestReplicasStartingTogetherShareKeys(t *testing.T) {
	for _, alg := range []string{ES256, RS256} {
		t.Run(alg, func(t *testing.T) {
			c := newClock()
			// Every replica lists the empty store before any creates a key.
			store := &memStore{listGate: newBarrier(6)}
			sets := openAll(t, 6, store, c, alg)
			agree(t, sets)
			if got := len(store.signingIDs()); got != 2 {
				t.Fatalf("%d signing keys stored, want 2 (active and next): %v", got, store.signingIDs())
			}
			if len(store.records) != 3 {
				t.Fatalf("%d records stored, want the symmetric key and two signing keys", len(store.records))
			}
			if _, ok := store.record(SymmetricKeyID); !ok {
				t.Fatalf("no symmetric key under %q", SymmetricKeyID)
			}
			one(t, sets[0], StateActive)
			one(t, sets[0], StateNext)
			// A token one replica signs verifies with the keys another publishes.
			if _, err := verify(sign(t, sets[1]), sets[4].PublicKeys()); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestReplicasRunCreatesOneNextKey(t *testing.T) {
	ctx := context.Background()
	c := newClock()
	store := &memStore{}
	sets := openAll(t, 5, store, c, ES256)
	next := one(t, sets[0], StateNext).ID

	// The next key activates on every replica at once, without a write; then every replica's
	// Run step wants the following next key.
	c.Advance(period + time.Minute)
	store.listGate = newBarrier(len(sets)) // every step reads before any creates
	creates := store.creates
	var wg sync.WaitGroup
	errs := make([]error, len(sets))
	for i, s := range sets {
		wg.Go(func() { errs[i] = s.step(ctx) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if got := store.creates - creates; got != 1 {
		t.Fatalf("the replicas' steps created %d keys, want 1", got)
	}
	agree(t, sets)
	if got := one(t, sets[2], StateActive).ID; got != next {
		t.Fatalf("active %s, want the former next key %s", got, next)
	}
	n2 := one(t, sets[3], StateNext)
	if !n2.ActivatesAt.Equal(t0.Add(2 * period)) {
		t.Fatalf("the new next key activates at %v, want %v", n2.ActivatesAt, t0.Add(2*period))
	}
	if got := len(store.signingIDs()); got != 3 {
		t.Fatalf("stored %v, want the retired, active and next keys", store.signingIDs())
	}
}

func TestReplicasRotatingAtOnceRotateOnce(t *testing.T) {
	c := newClock()
	store := &memStore{}
	sets := openAll(t, 3, store, c, EdDSA)
	next := one(t, sets[0], StateNext).ID
	c.Advance(time.Hour)
	store.listGate = newBarrier(2) // both read the store before either writes
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		wg.Go(func() { errs[i] = sets[i].Rotate(context.Background()) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if err := sets[2].Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	agree(t, sets)
	if got := sets[2].SigningKey().ID(); got != next {
		t.Fatalf("signing with %s, want the pre-published %s", got, next)
	}
	if got := len(store.signingIDs()); got != 3 {
		t.Fatalf("two rotations at once stored %v; want one rotation: retired, active, next", store.signingIDs())
	}
}

// TestReplicaSeesRotationWithinReloadInterval: Run re-reads the store every ReloadInterval, so a
// rotation made through another replica reaches this one within it.
func TestReplicaSeesRotationWithinReloadInterval(t *testing.T) {
	c := newClock()
	store := &memStore{}
	cfg := Config{Algorithm: ES256, Now: c.Now, Logger: quietLogger(), ReloadInterval: 20 * time.Millisecond}
	a, err := Open(context.Background(), store, cfg)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Open(context.Background(), store, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go b.Run(ctx)
	old := b.SigningKey().ID()
	if err := a.Rotate(context.Background()); err != nil {
		t.Fatal(err)
	}
	rotated := time.Now()
	for b.SigningKey().ID() == old {
		if time.Since(rotated) > 5*time.Second {
			t.Fatal("the other replica did not switch keys within 5s (ReloadInterval 20ms)")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if b.SigningKey().ID() != a.SigningKey().ID() || !slices.Equal(publishedIDs(a), publishedIDs(b)) {
		t.Fatalf("after the reload: %s / %v vs %s / %v", b.SigningKey().ID(), publishedIDs(b), a.SigningKey().ID(), publishedIDs(a))
	}
}

// TestReplicaWithSlowClockCreatesNoKey: a replica whose clock is behind the one that created the
// first key signs with it (it is the earliest) instead of creating another, and sees to its
// successor as any replica would.
func TestReplicaWithSlowClockCreatesNoKey(t *testing.T) {
	c := newClock()
	store := &memStore{}
	first := open(t, store, c, ES256)
	puts := store.puts
	behind := &clock{t: t0.Add(-2 * time.Second)}
	slow := open(t, store, behind, ES256)
	if store.puts != puts {
		t.Fatalf("the slow replica wrote %d records", store.puts-puts)
	}
	if slow.SigningKey().ID() != first.SigningKey().ID() {
		t.Fatalf("slow replica signs with %s, want %s", slow.SigningKey().ID(), first.SigningKey().ID())
	}
	if err := slow.Rotate(context.Background()); err == nil || !strings.Contains(err.Error(), "before every stored key") {
		t.Fatalf("Rotate with the clock before every key: %v", err)
	}

	// The slow replica reads the store between the first key's creation and its successor's:
	// it creates that successor itself, under the id the other replica would have used.
	sym, _ := store.record(SymmetricKeyID)
	firstKey, _ := store.record(one(t, first, StateActive).ID)
	early := &memStore{records: []Record{sym, firstKey}}
	slow = open(t, early, behind, ES256)
	if got, want := early.signingIDs(), store.signingIDs(); !slices.Equal(got, want) {
		t.Fatalf("the slow replica stored %v; the other replica's keys are %v", got, want)
	}
	if got, want := publishedIDs(slow), publishedIDs(first); !slices.Equal(got, want) {
		t.Fatalf("the slow replica publishes %v, the other %v", got, want)
	}
}

func TestSlotIDs(t *testing.T) {
	a, b := &Set{}, &Set{}
	b.crypto[0] = 1
	ids := map[string]bool{}
	for _, s := range []*Set{a, b} {
		for _, place := range []string{"first", "after X", "after Y"} {
			id := s.slotID(place)
			if id != s.slotID(place) {
				t.Fatalf("slotID(%q) is not deterministic", place)
			}
			if len(id) != 26 || strings.ContainsAny(id, ":=") {
				t.Fatalf("slotID(%q) = %q, want 26 base32 characters", place, id)
			}
			ids[id] = true
		}
	}
	if len(ids) != 6 {
		t.Fatalf("slot ids collide across places or symmetric keys: %v", ids)
	}
}

// TestReplicaReloadsOnChangeSignal: with Config.Changes (a store's watch), a replica follows a
// rotation made by another at once, long before its ReloadInterval.
func TestReplicaReloadsOnChangeSignal(t *testing.T) {
	c := newClock()
	store := &memStore{}
	changes := make(chan struct{}, 1)
	a, err := Open(context.Background(), store, Config{Algorithm: ES256, Now: c.Now, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Open(context.Background(), store, Config{Algorithm: ES256, Now: c.Now, Logger: quietLogger(), ReloadInterval: time.Hour, Changes: changes})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go b.Run(ctx)
	old := b.SigningKey().ID()
	if err := a.Rotate(context.Background()); err != nil {
		t.Fatal(err)
	}
	changes <- struct{}{}
	signalled := time.Now()
	for b.SigningKey().ID() == old {
		if time.Since(signalled) > 5*time.Second {
			t.Fatal("the other replica did not switch keys within 5s of the change signal (ReloadInterval 1h)")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if b.SigningKey().ID() != a.SigningKey().ID() {
		t.Fatalf("after the signal: signs with %s, the rotating replica with %s", b.SigningKey().ID(), a.SigningKey().ID())
	}
}
