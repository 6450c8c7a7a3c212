// Package keys owns wecom-oidc's key material: the RS256 key that signs ID tokens (published at
// /keys as a JWKS) and the 32-byte symmetric key the OP library encrypts authorization codes and
// opaque access tokens with.
//
// Keys are created on first start, persisted through the small Store interface (the storage
// package's database, file mode 0600) and afterwards served from memory: SigningKey and
// PublicKeys sit on the path of every token response and every token verification, so they never
// touch the database. A stored key that fails to parse stops the start-up; it is never replaced,
// because replacing it would silently invalidate every token already issued.
package keys

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"sort"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// Algorithm names as stored in Record.Algorithm.
const (
	// RS256 is the signing algorithm every relying party supports (OIDC Discovery requires it).
	RS256 = string(jose.RS256)
	// Symmetric marks the 32-byte key for the OP's encryption of codes and opaque access tokens.
	Symmetric = "A256GCM"
)

// rsaBits is the RS256 modulus size: 2048 bits is what every RP verifies and signs in ~1.2 ms.
const rsaBits = 2048

// Record is a persisted key. Private holds the PKCS#8 DER of a signing key, or the raw 32 bytes of
// the symmetric key.
type Record struct {
	ID        string
	Algorithm string
	Private   []byte
	CreatedAt time.Time
	// NotAfter: the key is no longer published after this time (zero: no limit).
	NotAfter time.Time
}

// Store persists key records.
type Store interface {
	ListKeys(ctx context.Context) ([]Record, error)
	PutKey(ctx context.Context, r Record) error
}

// Set is the in-memory view of the keys; its methods are safe for concurrent use because it is
// never modified after Open.
type Set struct {
	signing signingKey
	public  []op.Key
	crypto  [32]byte
}

// Open loads the keys from store, creating and persisting whichever of the two is missing.
func Open(ctx context.Context, store Store, now func() time.Time) (*Set, error) {
	if now == nil {
		now = time.Now
	}
	records, err := store.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("keys: load: %w", err)
	}
	s := &Set{}
	var haveSigning, haveCrypto bool
	// Newest last: the newest signing key signs, every unexpired one is published.
	sort.SliceStable(records, func(i, j int) bool { return records[i].CreatedAt.Before(records[j].CreatedAt) })
	for _, r := range records {
		switch r.Algorithm {
		case Symmetric:
			if len(r.Private) != len(s.crypto) {
				return nil, fmt.Errorf("keys: stored symmetric key %q has %d bytes, want 32; refusing to replace it", r.ID, len(r.Private))
			}
			copy(s.crypto[:], r.Private)
			haveCrypto = true
		case RS256:
			k, err := parseRSA(r)
			if err != nil {
				return nil, err
			}
			if !r.NotAfter.IsZero() && !now().Before(r.NotAfter) {
				continue
			}
			s.public = append(s.public, publicKey{id: r.ID, key: &k.key.PublicKey})
			s.signing = k
			haveSigning = true
		default:
			return nil, fmt.Errorf("keys: stored key %q has unsupported algorithm %q", r.ID, r.Algorithm)
		}
	}
	if !haveCrypto {
		r := Record{ID: newID(), Algorithm: Symmetric, Private: make([]byte, 32), CreatedAt: now()}
		rand.Read(r.Private) // never fails: crypto/rand crashes the program instead
		if err := store.PutKey(ctx, r); err != nil {
			return nil, fmt.Errorf("keys: save symmetric key: %w", err)
		}
		copy(s.crypto[:], r.Private)
	}
	if !haveSigning {
		priv, err := rsa.GenerateKey(rand.Reader, rsaBits)
		if err != nil {
			return nil, fmt.Errorf("keys: generate RS256 key: %w", err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(priv)
		if err != nil {
			return nil, fmt.Errorf("keys: encode RS256 key: %w", err)
		}
		r := Record{ID: newID(), Algorithm: RS256, Private: der, CreatedAt: now()}
		if err := store.PutKey(ctx, r); err != nil {
			return nil, fmt.Errorf("keys: save RS256 key: %w", err)
		}
		s.signing = signingKey{id: r.ID, key: priv}
		s.public = append(s.public, publicKey{id: r.ID, key: &priv.PublicKey})
	}
	return s, nil
}

// SigningKey is the key that signs tokens now.
func (s *Set) SigningKey() op.SigningKey { return s.signing }

// PublicKeys are the keys published in the JWKS: every key a valid token may carry.
func (s *Set) PublicKeys() []op.Key { return s.public }

// Algorithms lists the signing algorithms in use, for discovery.
func (s *Set) Algorithms() []jose.SignatureAlgorithm {
	return []jose.SignatureAlgorithm{s.signing.SignatureAlgorithm()}
}

// CryptoKey is the OP library's symmetric key.
func (s *Set) CryptoKey() [32]byte { return s.crypto }

func parseRSA(r Record) (signingKey, error) {
	parsed, err := x509.ParsePKCS8PrivateKey(r.Private)
	if err != nil {
		return signingKey{}, fmt.Errorf("keys: stored key %q does not parse (refusing to replace it): %w", r.ID, err)
	}
	priv, ok := parsed.(*rsa.PrivateKey)
	if !ok {
		return signingKey{}, fmt.Errorf("keys: stored key %q is %T, not RSA", r.ID, parsed)
	}
	return signingKey{id: r.ID, key: priv}, nil
}

// newID returns a random key id: 128 bits in base32, so it never contains ':' (which the OP
// library splits opaque tokens on).
func newID() string { return rand.Text() }

type signingKey struct {
	id  string
	key *rsa.PrivateKey
}

func (k signingKey) SignatureAlgorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (k signingKey) Key() any                                    { return k.key }
func (k signingKey) ID() string                                  { return k.id }

type publicKey struct {
	id  string
	key *rsa.PublicKey
}

func (k publicKey) ID() string                         { return k.id }
func (k publicKey) Algorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (k publicKey) Use() string                        { return "sig" }
func (k publicKey) Key() any                           { return k.key }
