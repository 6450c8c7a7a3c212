package keys

import (
	"context"
	"crypto/rsa"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

type memStore struct {
	mu      sync.Mutex
	records []Record
	puts    int
}

func (m *memStore) ListKeys(context.Context) ([]Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Record(nil), m.records...), nil
}

func (m *memStore) PutKey(_ context.Context, r Record) error {
	m.mu.Lock()
	defer m.mu.Unlock()
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

func TestOpenCreatesOnceAndReloads(t *testing.T) {
	ctx := context.Background()
	store := &memStore{}
	first, err := Open(ctx, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	if store.puts != 2 {
		t.Fatalf("first Open stored %d keys, want 2 (signing + symmetric)", store.puts)
	}
	if got := first.SigningKey().SignatureAlgorithm(); got != jose.RS256 {
		t.Fatalf("algorithm %s, want RS256", got)
	}
	if _, ok := first.SigningKey().Key().(*rsa.PrivateKey); !ok {
		t.Fatalf("signing key is %T", first.SigningKey().Key())
	}
	if strings.Contains(first.SigningKey().ID(), ":") {
		t.Fatalf("kid %q contains ':'", first.SigningKey().ID())
	}
	if n := len(first.PublicKeys()); n != 1 {
		t.Fatalf("%d public keys, want 1", n)
	}
	if first.CryptoKey() == ([32]byte{}) {
		t.Fatal("symmetric key is all zero")
	}

	second, err := Open(ctx, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	if store.puts != 2 {
		t.Fatalf("second Open stored keys again (%d puts)", store.puts)
	}
	if second.SigningKey().ID() != first.SigningKey().ID() || second.CryptoKey() != first.CryptoKey() {
		t.Fatal("reopened keys differ from the stored ones")
	}
	// The signature made by the reloaded key verifies with the first public key.
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: second.SigningKey().Key()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := signer.Sign([]byte("payload"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jws.Verify(first.PublicKeys()[0].Key()); err != nil {
		t.Fatalf("verify with published key: %v", err)
	}
}

func TestOpenRefusesToReplaceBrokenKeys(t *testing.T) {
	now := time.Date(2026, 11, 21, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name   string
		record Record
		want   string
	}{
		{"garbage RSA key", Record{ID: "k1", Algorithm: RS256, Private: []byte("not DER"), CreatedAt: now}, "does not parse"},
		{"short symmetric key", Record{ID: "k2", Algorithm: Symmetric, Private: []byte("short"), CreatedAt: now}, "want 32"},
		{"unknown algorithm", Record{ID: "k3", Algorithm: "HS256", Private: []byte("x"), CreatedAt: now}, "unsupported algorithm"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := &memStore{records: []Record{tt.record}}
			_, err := Open(context.Background(), store, func() time.Time { return now })
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Open error = %v, want one containing %q", err, tt.want)
			}
			if store.puts != 0 {
				t.Fatalf("Open wrote %d keys over a broken store", store.puts)
			}
		})
	}
}
