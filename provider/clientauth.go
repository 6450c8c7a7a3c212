package provider

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/oidc"

	"github.com/wecom-oidc/wecom-oidc/storage"
)

// maxAssertionLife bounds how far in the future a client assertion may expire: its jti is
// remembered until then.
const maxAssertionLife = time.Hour

// checkClientAssertion authenticates a private_key_jwt client before the OP library sees the
// request, for two things the library does not do: a signature that fails is invalid_client
// (RFC 7523 §3.2; the library reports invalid_grant, after it has already spent the code), and an
// assertion is accepted once (OIDC Core §9: jti, single use). The library verifies the assertion
// again afterwards (audience, iat age). It returns "" when the request carries no assertion or the
// assertion passes, otherwise a description for invalid_client.
func (p *Provider) checkClientAssertion(r *http.Request) string {
	if r.Method != http.MethodPost || r.ParseForm() != nil {
		return ""
	}
	// Read as the library's decoder does: names in any letter case, query included.
	typ, ok1 := formValueFold(r.Form, "client_assertion_type")
	assertion, ok2 := formValueFold(r.Form, "client_assertion")
	if !ok1 || !ok2 {
		return "client_assertion is given more than once"
	}
	if typ != oidc.ClientAssertionTypeJWTAssertion {
		if assertion != "" {
			return "client_assertion needs client_assertion_type " + oidc.ClientAssertionTypeJWTAssertion
		}
		return ""
	}
	jws, err := jose.ParseSigned(assertion,
		[]jose.SignatureAlgorithm{jose.RS256, jose.ES256, jose.PS256})
	if err != nil || len(jws.Signatures) != 1 {
		return "client_assertion is not a signed JWT"
	}
	var claims struct {
		Issuer  string `json:"iss"`
		Subject string `json:"sub"`
		JTI     string `json:"jti"`
		Expiry  int64  `json:"exp"`
	}
	if err := json.Unmarshal(jws.UnsafePayloadWithoutVerification(), &claims); err != nil {
		return "client_assertion claims do not parse"
	}
	if claims.Issuer == "" || claims.Issuer != claims.Subject {
		return "client_assertion iss and sub must both be the client_id"
	}
	key, err := (&opStorage{p: p}).GetKeyByIDAndClientID(r.Context(), jws.Signatures[0].Header.KeyID, claims.Issuer)
	if err != nil {
		return "no registered key for this client_assertion"
	}
	if _, err := jws.Verify(key); err != nil {
		return "client_assertion signature does not verify"
	}
	exp := time.Unix(claims.Expiry, 0)
	now := time.Now()
	switch {
	case claims.JTI == "":
		return "client_assertion needs a jti"
	case !exp.After(now) || exp.Sub(now) > maxAssertionLife:
		return fmt.Sprintf("client_assertion must expire within %s", maxAssertionLife)
	}
	// Single use across every process sharing the store (replicas), until the assertion expires.
	switch err := p.store.UseClientAssertion(r.Context(), storage.HashSecret(claims.Issuer+"\x00"+claims.JTI), exp); {
	case errors.Is(err, storage.ErrAlreadyUsed):
		return "client_assertion was already used"
	case err != nil:
		p.log.ErrorContext(r.Context(), "client authentication: could not record the assertion's jti", "error", err)
		return "the client_assertion could not be checked; try again"
	}
	return ""
}
