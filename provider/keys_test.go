package provider_test

import (
	"context"
	"net/url"
	"slices"
	"testing"
	"time"

	gooidc "github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"

	"github.com/wecom-oidc/wecom-oidc/keys"
)

// kidOf returns the key id in a JWT's header.
func kidOf(t *testing.T, raw string) string {
	t.Helper()
	jws, err := jose.ParseSigned(raw, []jose.SignatureAlgorithm{jose.RS256, jose.ES256, jose.EdDSA})
	if err != nil {
		t.Fatal(err)
	}
	return jws.Signatures[0].Header.KeyID
}

// TestKeyRotationWithTokensOutstanding: after a rotation, an ID token signed before it still
// verifies against the JWKS until the retention has passed, while new tokens carry the new kid.
func TestKeyRotationWithTokensOutstanding(t *testing.T) {
	var set *keys.Set
	op := newConfOP(t, harnessOptions{keys: &set})
	ctx := context.Background()
	before := op.login(newBrowser(t, desktopUA), cWeb, "zhangsan")
	oldKid := kidOf(t, before.tokens.IDToken)
	published := func() []string {
		var kids []string
		for _, k := range op.jwks().Keys {
			kids = append(kids, k.KeyID)
		}
		return kids
	}
	if got := published(); len(got) != 2 || !slices.Contains(got, oldKid) {
		t.Fatalf("JWKS before rotation = %v: want the active key and the pre-published next key", got)
	}

	if err := set.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	after := op.login(newBrowser(t, desktopUA), cWeb, "lisi")
	newKid := kidOf(t, after.tokens.IDToken)
	if newKid == oldKid {
		t.Fatalf("a token signed after the rotation carries the old kid %s", oldKid)
	}
	// A fresh verifier (no cached keys) checks both tokens against the JWKS as served now.
	verify := func(raw string) error {
		p, err := gooidc.NewProvider(ctx, op.h.issuer)
		if err != nil {
			return err
		}
		_, err = p.Verifier(&gooidc.Config{ClientID: cWeb.id, Now: op.clock.Now}).Verify(ctx, raw)
		return err
	}
	if err := verify(before.tokens.IDToken); err != nil {
		t.Fatalf("token signed before the rotation no longer verifies: %v", err)
	}
	if err := verify(after.tokens.IDToken); err != nil {
		t.Fatalf("token signed after the rotation: %v", err)
	}
	if got := published(); !slices.Contains(got, oldKid) || !slices.Contains(got, newKid) || len(got) != 3 {
		t.Fatalf("JWKS after rotation = %v: want the retired %s, the active %s and a new next key", got, oldKid, newKid)
	}

	// Past the retention (24h by default, beyond the ID token's lifetime) the retired key goes.
	op.clock.Advance(25 * time.Hour)
	if err := set.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if got := published(); slices.Contains(got, oldKid) {
		t.Fatalf("retired key %s still published after its retention: %v", oldKid, got)
	}
}

// TestSigningAlgorithms: RS256, ES256 and EdDSA keys each sign ID tokens that a relying party
// verifies with the algorithm discovery names, and each is accepted back as an id_token_hint.
func TestSigningAlgorithms(t *testing.T) {
	for _, alg := range []string{"RS256", "ES256", "EdDSA"} {
		t.Run(alg, func(t *testing.T) {
			op := newConfOP(t, harnessOptions{keyAlgorithm: alg})
			if got := stringsOf(op.raw["id_token_signing_alg_values_supported"]); !slices.Equal(got, []string{alg}) {
				t.Errorf("id_token_signing_alg_values_supported = %v, want [%s]", got, alg)
			}
			b := newBrowser(t, desktopUA)
			f := op.login(b, cLogout, "zhangsan")
			ctx := context.Background()
			if _, err := op.keys.Verifier(&gooidc.Config{ClientID: cLogout.id, SupportedSigningAlgs: []string{alg}, Now: op.clock.Now}).
				Verify(ctx, f.tokens.IDToken); err != nil {
				t.Fatalf("ID token signed with %s: %v", alg, err)
			}
			// The OP verifies its own tokens too: an id_token_hint at logout.
			_, loc := op.endSession(b, url.Values{"id_token_hint": {f.tokens.IDToken}, "post_logout_redirect_uri": {cLogout.postLogout}})
			if loc == nil || loc.String() != cLogout.postLogout {
				t.Fatalf("logout with a %s id_token_hint: redirect %v, want %s", alg, loc, cLogout.postLogout)
			}
		})
	}
}
