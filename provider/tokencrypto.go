package provider

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"

	"github.com/zitadel/oidc/v3/pkg/op"
)

// tokenCrypto seals what the OP library puts inside authorization codes and access tokens (an
// auth request id; a token id and the subject), in place of the library's JWE (A256GCMKW +
// A256GCM), which costs a JSON header, a key wrap and two AES-GCM operations per token — a
// fifth of a userinfo request's CPU.
//
// A value is base64url(salt ‖ AES-256-GCM(k, zero nonce, plaintext)) with a 24-byte random salt
// and k = HMAC-SHA256(key, salt): every value has its own key, so the zero nonce is never
// reused, and random salts of 192 bits never collide (random 96-bit nonces under one key, as in
// the JWE, are good for about 2³² values).
type tokenCrypto struct{ key []byte }

const tokenSaltLen = 24

var errTokenSeal = errors.New("provider: not a value this provider sealed")

// newTokenCrypto returns the provider's crypto: tokenCrypto, which also opens the values the
// library's own formats sealed with the same key before an upgrade (until they expire).
func newTokenCrypto(key [32]byte) op.Crypto {
	own := tokenCrypto{key: key[:]}
	return op.NewCompositeCrypto(own, []op.Decrypter{own, op.NewAES256GCMCrypto(key, ""), op.NewAESCrypto(key)})
}

func (c tokenCrypto) aead(salt []byte) (cipher.AEAD, error) {
	mac := hmac.New(sha256.New, c.key)
	mac.Write(salt)
	block, err := aes.NewCipher(mac.Sum(nil))
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

func (c tokenCrypto) Encrypt(s string) (string, error) {
	salt := make([]byte, tokenSaltLen, tokenSaltLen+len(s)+16)
	rand.Read(salt) // never fails: crypto/rand crashes the program instead
	aead, err := c.aead(salt)
	if err != nil {
		return "", err
	}
	sealed := aead.Seal(salt, make([]byte, aead.NonceSize()), []byte(s), nil)
	return base64.RawURLEncoding.EncodeToString(sealed), nil
}

func (c tokenCrypto) Decrypt(s string) (string, error) {
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(raw) < tokenSaltLen+16 {
		return "", errTokenSeal
	}
	aead, err := c.aead(raw[:tokenSaltLen])
	if err != nil {
		return "", err
	}
	plain, err := aead.Open(nil, make([]byte, aead.NonceSize()), raw[tokenSaltLen:], nil)
	if err != nil {
		return "", errTokenSeal
	}
	return string(plain), nil
}
