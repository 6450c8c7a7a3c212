package provider

import (
	"strings"
	"testing"

	"github.com/zitadel/oidc/v3/pkg/op"
)

func TestTokenCrypto(t *testing.T) {
	var key, other [32]byte
	key[0], other[0] = 1, 2
	c := newTokenCrypto(key)
	const plain = "at_ABCDEFGHIJKLMNOPQRSTUVWXYZ234567:zhangsan"

	sealed, err := c.Encrypt(plain)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(sealed, "zhangsan") || strings.ContainsAny(sealed, ".+/=") {
		t.Fatalf("sealed value %q shows the plaintext or is not base64url", sealed)
	}
	if again, _ := c.Encrypt(plain); again == sealed {
		t.Fatal("two seals of one value are equal: the salt is not random")
	}
	if got, err := c.Decrypt(sealed); err != nil || got != plain {
		t.Fatalf("Decrypt = %q, %v; want the plaintext", got, err)
	}

	// Values sealed by the library's own formats with the same key (before an upgrade) still open.
	for name, old := range map[string]op.Crypto{
		"JWE A256GCMKW": op.NewAES256GCMCrypto(key, ""),
		"AES-CFB":       op.NewAESCrypto(key),
	} {
		v, err := old.Encrypt(plain)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := c.Decrypt(v); err != nil || got != plain {
			t.Errorf("%s value: Decrypt = %q, %v; want the plaintext", name, got, err)
		}
	}

	// Anything altered, truncated or sealed with another key does not open.
	raw := []byte(sealed)
	raw[len(raw)/2] ^= 1
	otherSealed, _ := newTokenCrypto(other).Encrypt(plain)
	for name, v := range map[string]string{
		"flipped bit":   string(raw),
		"truncated":     sealed[:len(sealed)-4],
		"another key":   otherSealed,
		"empty":         "",
		"not base64url": "@@@@",
	} {
		if got, err := (tokenCrypto{key: key[:]}).Decrypt(v); err == nil {
			t.Errorf("%s: Decrypt = %q, want an error", name, got)
		}
	}
}

func BenchmarkTokenCrypto(b *testing.B) {
	var key [32]byte
	const plain = "at_ABCDEFGHIJKLMNOPQRSTUVWXYZ234567:zhangsan"
	for name, c := range map[string]op.Crypto{"own": tokenCrypto{key: key[:]}, "library JWE": op.NewAES256GCMCrypto(key, "")} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				v, err := c.Encrypt(plain)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := c.Decrypt(v); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
