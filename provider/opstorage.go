package provider

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/wecom-oidc/wecom-oidc/storage"
)

// opStorage adapts storage.Store to the OP library's op.Storage, adding the OIDC semantics the
// library leaves to storage: atomic single-use codes, refresh rotation with reuse detection,
// token liveness at userinfo, and claims.
type opStorage struct{ p *Provider }

var (
	_ op.Storage                        = (*opStorage)(nil)
	_ op.CanSetUserinfoFromRequest      = (*opStorage)(nil)
	_ op.CanTerminateSessionFromRequest = (*opStorage)(nil)
)

// Token id prefixes let RevokeToken tell what it was handed. None contains ':' (the library
// splits opaque access tokens on it).
const (
	prefixAccessToken   = "at_"
	prefixRefreshFamily = "rf_"
	prefixRefreshToken  = "rt_"
)

// newID returns 128 random bits in base32 (A–Z, 2–7): URL-safe and free of ':'.
func newID(prefix string) string { return prefix + rand.Text() }

// newSecret returns 256 random bits, base64url: the value of a refresh token or a cookie.
func newSecret() string {
	b := make([]byte, 32)
	rand.Read(b) // never fails: crypto/rand crashes the program instead
	return base64.RawURLEncoding.EncodeToString(b)
}

// --- auth requests and codes ---

func (s *opStorage) CreateAuthRequest(ctx context.Context, req *oidc.AuthRequest, hintSubject string) (op.AuthRequest, error) {
	if ctx.Value(requestURICtxKey{}) != nil {
		return nil, &oidc.Error{ErrorType: "request_uri_not_supported", Description: "request_uri is not supported; send the parameters directly"}
	}
	c, err := s.p.store.GetClient(ctx, req.ClientID)
	if err != nil {
		return nil, oidc.ErrInvalidClient().WithParent(err)
	}
	if req.CodeChallenge != "" && req.CodeChallengeMethod != oidc.CodeChallengeMethodS256 {
		return nil, oidc.ErrInvalidRequest().WithDescription("code_challenge_method must be S256")
	}
	if c.Public && req.CodeChallenge == "" {
		return nil, oidc.ErrInvalidRequest().WithDescription("PKCE with S256 is required for public clients")
	}
	now := s.p.now()
	ar := storage.AuthRequest{
		ID:                  newID(""),
		ClientID:            req.ClientID,
		RedirectURI:         req.RedirectURI,
		State:               req.State,
		Nonce:               req.Nonce,
		Scopes:              req.Scopes,
		ResponseType:        string(req.ResponseType),
		ResponseMode:        string(req.ResponseMode),
		CodeChallenge:       req.CodeChallenge,
		CodeChallengeMethod: string(req.CodeChallengeMethod),
		Prompt:              req.Prompt,
		LoginHint:           req.LoginHint,
		HintSubject:         hintSubject,
		BrowserHash:         browserHash(ctx),
		UpstreamHint:        upstreamHint(ctx, req.LoginHint),
		CreatedAt:           now,
		ExpiresAt:           now.Add(authRequestTTL),
	}
	if req.MaxAge != nil {
		maxAge := int64(*req.MaxAge)
		ar.MaxAge = &maxAge
	}
	for _, tag := range req.UILocales {
		ar.UILocales = append(ar.UILocales, tag.String())
	}
	if err := s.p.store.CreateAuthRequest(ctx, ar); err != nil {
		return nil, fmt.Errorf("provider: create auth request: %w", err)
	}
	return &authRequest{ar}, nil
}

func (s *opStorage) AuthRequestByID(ctx context.Context, id string) (op.AuthRequest, error) {
	ar, err := s.p.store.GetAuthRequest(ctx, id)
	if err != nil {
		return nil, err
	}
	return &authRequest{ar}, nil
}

// AuthRequestByCode redeems the code: the library calls it once per token request, before it
// checks the client and PKCE, and only deletes the auth request after minting tokens, so this is
// where single use must be enforced.
func (s *opStorage) AuthRequestByCode(ctx context.Context, code string) (op.AuthRequest, error) {
	ar, err := s.p.store.ConsumeCode(ctx, storage.HashSecret(code))
	if errors.Is(err, storage.ErrAlreadyUsed) {
		s.p.log.WarnContext(ctx, "authorization code replayed; tokens issued from it revoked")
	}
	if err != nil {
		return nil, err
	}
	// A login that finished before an operator disabled the person yields nothing.
	if u, err := s.p.store.GetUser(ctx, ar.Subject); err != nil || u.Disabled {
		return nil, oidc.ErrInvalidGrant().WithDescription("the account is disabled")
	}
	return &authRequest{ar}, nil
}

func (s *opStorage) SaveAuthCode(ctx context.Context, id, code string) error {
	return s.p.store.SaveCode(ctx, storage.HashSecret(code), id, s.p.now().Add(codeTTL))
}

func (s *opStorage) DeleteAuthRequest(ctx context.Context, id string) error {
	return s.p.store.DeleteAuthRequest(ctx, id)
}

// --- tokens ---

func (s *opStorage) CreateAccessToken(ctx context.Context, req op.TokenRequest) (string, time.Time, error) {
	access := s.newAccessToken(req, "")
	if err := s.p.store.CreateTokens(ctx, access, nil); err != nil {
		if errors.Is(err, storage.ErrRevoked) {
			return "", time.Time{}, oidc.ErrInvalidGrant().WithDescription("the code was replayed").WithParent(err)
		}
		return "", time.Time{}, err
	}
	s.p.metrics.issued(grantOf(req))
	return access.ID, access.ExpiresAt, nil
}

func (s *opStorage) CreateAccessAndRefreshTokens(ctx context.Context, req op.TokenRequest, current string) (string, string, time.Time, error) {
	now := s.p.now()
	value := newSecret()
	next := storage.RefreshToken{
		Hash:      storage.HashSecret(value),
		ID:        newID(prefixRefreshToken),
		Subject:   req.GetSubject(),
		Audience:  req.GetAudience(),
		Scopes:    req.GetScopes(),
		CreatedAt: now,
		ExpiresAt: now.Add(s.p.cfg.RefreshTokenTTL),
	}
	switch r := req.(type) {
	case *authRequest:
		next.FamilyID = newID(prefixRefreshFamily)
		next.ClientID, next.AuthTime, next.AMR, next.SessionID = r.ClientID, r.AuthTime, r.AMR, r.SessionID
	case *refreshTokenRequest:
		next.FamilyID = r.FamilyID
		next.ClientID, next.AuthTime, next.AMR, next.SessionID = r.ClientID, r.AuthTime, r.AMR, r.SessionID
	case *op.DeviceAuthorizationState:
		// No session: the device is not signed in through the browser that allowed it, and that
		// browser's logout does not sign the device out.
		next.FamilyID = newID(prefixRefreshFamily)
		next.ClientID, next.AuthTime, next.AMR = r.ClientID, r.AuthTime, r.AMR
	default:
		return "", "", time.Time{}, fmt.Errorf("provider: refresh token for unsupported request %T", req)
	}
	access := s.newAccessToken(req, next.FamilyID)
	var err error
	if current == "" {
		err = s.p.store.CreateTokens(ctx, access, &next)
	} else {
		err = s.p.store.RotateRefreshToken(ctx, storage.HashSecret(current), next, access)
	}
	if err != nil {
		if errors.Is(err, storage.ErrTokenReused) {
			s.p.log.WarnContext(ctx, "refresh token reused; family revoked", "family", next.FamilyID, "client", next.ClientID)
		}
		if errors.Is(err, storage.ErrTokenReused) || errors.Is(err, storage.ErrRevoked) || errors.Is(err, storage.ErrNotFound) {
			return "", "", time.Time{}, oidc.ErrInvalidGrant().WithParent(err)
		}
		return "", "", time.Time{}, err
	}
	s.p.metrics.issued(grantOf(req))
	return access.ID, value, access.ExpiresAt, nil
}

// grantOf names the grant a token request came from, for metrics.
func grantOf(req op.TokenRequest) string {
	switch req.(type) {
	case *refreshTokenRequest:
		return "refresh_token"
	case *op.DeviceAuthorizationState:
		return "device_code"
	}
	return "authorization_code"
}

func (s *opStorage) newAccessToken(req op.TokenRequest, familyID string) storage.AccessToken {
	now := s.p.now()
	t := storage.AccessToken{
		ID:        newID(prefixAccessToken),
		Subject:   req.GetSubject(),
		Audience:  req.GetAudience(),
		Scopes:    req.GetScopes(),
		FamilyID:  familyID,
		CreatedAt: now,
		ExpiresAt: now.Add(s.p.cfg.AccessTokenTTL),
	}
	switch r := req.(type) {
	case *authRequest:
		t.ClientID, t.AuthRequestID = r.ClientID, r.ID
	case *refreshTokenRequest:
		t.ClientID = r.ClientID
	case *op.DeviceAuthorizationState:
		t.ClientID = r.ClientID
	}
	return t
}

func (s *opStorage) TokenRequestByRefreshToken(ctx context.Context, token string) (op.RefreshTokenRequest, error) {
	rt, err := s.p.store.GetRefreshToken(ctx, storage.HashSecret(token))
	if err != nil {
		if errors.Is(err, storage.ErrTokenReused) {
			s.p.log.WarnContext(ctx, "rotated refresh token presented again; family revoked", "family", rt.FamilyID)
		}
		return nil, err
	}
	u, err := s.p.store.GetUser(ctx, rt.Subject)
	if err != nil {
		return nil, err
	}
	if u.Disabled {
		return nil, fmt.Errorf("provider: user %q is disabled", rt.Subject)
	}
	if err := s.p.stillAllowed(ctx, u, rt.FamilyID); err != nil {
		return nil, err
	}
	return &refreshTokenRequest{rt}, nil
}

// groupShapes is what the client wants in `groups` (nil: the default).
func (s *opStorage) groupShapes(ctx context.Context, clientID string) []string {
	c, err := s.p.store.GetClient(ctx, clientID)
	if err != nil {
		return nil
	}
	return c.Groups
}

// GetRefreshTokenInfo answers /revoke for refresh tokens: the id it returns is the family, so
// revoking a refresh token ends its family.
func (s *opStorage) GetRefreshTokenInfo(ctx context.Context, clientID, token string) (string, string, error) {
	rt, err := s.p.store.GetRefreshToken(ctx, storage.HashSecret(token))
	if err != nil || rt.ClientID != clientID {
		return "", "", op.ErrInvalidRefreshToken
	}
	return rt.Subject, rt.FamilyID, nil
}

// RevokeToken revokes an access token or a refresh family, only for the client it was issued to.
// Unknown tokens are not an error (RFC 7009 §2.2).
func (s *opStorage) RevokeToken(ctx context.Context, tokenOrID, userID, clientID string) *oidc.Error {
	switch {
	case len(tokenOrID) > len(prefixRefreshFamily) && tokenOrID[:len(prefixRefreshFamily)] == prefixRefreshFamily:
		// GetRefreshTokenInfo has checked the client.
		if err := s.p.store.RevokeRefreshFamily(ctx, tokenOrID); err != nil {
			return oidc.ErrServerError().WithParent(err)
		}
	case len(tokenOrID) > len(prefixAccessToken) && tokenOrID[:len(prefixAccessToken)] == prefixAccessToken:
		at, err := s.p.store.GetAccessToken(ctx, tokenOrID)
		if err != nil {
			return nil
		}
		if at.ClientID != clientID {
			// unauthorized_client, not invalid_client: the caller did authenticate, and a 401
			// here would count against it as a failed authentication.
			return oidc.ErrUnauthorizedClient().WithDescription("the token was not issued to this client")
		}
		if err := s.p.store.RevokeAccessToken(ctx, tokenOrID); err != nil {
			return oidc.ErrServerError().WithParent(err)
		}
	}
	return nil
}

// --- keys ---

func (s *opStorage) SigningKey(context.Context) (op.SigningKey, error) {
	return s.p.cfg.Keys.SigningKey(), nil
}

func (s *opStorage) SignatureAlgorithms(context.Context) ([]jose.SignatureAlgorithm, error) {
	return s.p.cfg.Keys.Algorithms(), nil
}

func (s *opStorage) KeySet(context.Context) ([]op.Key, error) {
	return s.p.cfg.Keys.PublicKeys(), nil
}

// --- clients ---

func (s *opStorage) GetClientByClientID(ctx context.Context, id string) (op.Client, error) {
	c, err := s.p.store.GetClient(ctx, id)
	if errors.Is(err, storage.ErrNotFound) {
		// Not the raw storage error: the library would answer 500 with its text.
		return nil, oidc.ErrInvalidClient().WithDescription("unknown client")
	}
	if err != nil {
		return nil, err
	}
	return &client{Client: c, loginURL: s.p.loginURL, idTokenTTL: s.p.cfg.IDTokenTTL}, nil
}

// AuthorizeClientIDSecret compares hashes in constant time. Secrets are 256-bit random values (or
// operator-chosen ones of at least 16 characters), so one SHA-256 suffices.
func (s *opStorage) AuthorizeClientIDSecret(ctx context.Context, id, secret string) error {
	c, err := s.p.store.GetClient(ctx, id)
	if err != nil {
		return err
	}
	if c.Public || c.SecretHash == "" {
		return errors.New("provider: client has no secret")
	}
	if subtle.ConstantTimeCompare([]byte(storage.HashSecret(secret)), []byte(c.SecretHash)) != 1 {
		return errors.New("provider: wrong client secret")
	}
	return nil
}

// --- claims ---

// SetUserinfoFromScopes is deprecated in the library but still called; SetUserinfoFromRequest
// does the work.
func (s *opStorage) SetUserinfoFromScopes(context.Context, *oidc.UserInfo, string, string, []string) error {
	return nil
}

func (s *opStorage) SetUserinfoFromRequest(ctx context.Context, info *oidc.UserInfo, req op.IDTokenRequest, scopes []string) error {
	u, err := s.p.store.GetUser(ctx, req.GetSubject())
	if err != nil {
		return fmt.Errorf("provider: claims for %q: %w", req.GetSubject(), err)
	}
	s.p.claims.setUserinfo(info, u, scopes, s.groupShapes(ctx, req.GetClientID()))
	// sid names the SSO session, so a back-channel logout token can be matched to this ID token.
	var sid string
	switch r := req.(type) {
	case *authRequest:
		sid = r.SessionID
	case *refreshTokenRequest:
		sid = r.SessionID
	}
	if sid != "" {
		info.AppendClaims("sid", sid)
	}
	return nil
}

// SetUserinfoFromToken serves /userinfo. The library has only decrypted the token; whether it is
// still live (unexpired, unrevoked, family intact) is decided here.
func (s *opStorage) SetUserinfoFromToken(ctx context.Context, info *oidc.UserInfo, tokenID, subject, _ string) error {
	at, err := s.p.store.GetAccessToken(ctx, tokenID)
	if err != nil {
		return err
	}
	if at.Subject != subject {
		return errors.New("provider: access token subject mismatch")
	}
	u, err := s.p.store.GetUser(ctx, subject)
	if err != nil {
		return err
	}
	if u.Disabled {
		return fmt.Errorf("provider: user %q is disabled", subject)
	}
	s.p.claims.setUserinfo(info, u, at.Scopes, s.groupShapes(ctx, at.ClientID))
	return nil
}

// SetIntrospectionFromToken answers /oauth/introspect for live access tokens issued to the asking
// client; anything else is reported inactive.
func (s *opStorage) SetIntrospectionFromToken(ctx context.Context, resp *oidc.IntrospectionResponse, tokenID, subject, clientID string) error {
	at, err := s.p.store.GetAccessToken(ctx, tokenID)
	if err != nil {
		return err
	}
	if at.Subject != subject || (at.ClientID != clientID && !slices.Contains(at.Audience, clientID)) {
		return errors.New("provider: token not issued to this client")
	}
	u, err := s.p.store.GetUser(ctx, subject)
	if err != nil {
		return err
	}
	info := new(oidc.UserInfo)
	s.p.claims.setUserinfo(info, u, at.Scopes, s.groupShapes(ctx, at.ClientID))
	resp.SetUserInfo(info)
	resp.Scope = at.Scopes
	resp.ClientID = at.ClientID
	resp.TokenType = oidc.BearerToken
	resp.Expiration = oidc.FromTime(at.ExpiresAt)
	resp.IssuedAt = oidc.FromTime(at.CreatedAt)
	resp.Audience = at.Audience
	resp.Issuer = s.p.cfg.Issuer
	resp.JWTID = at.ID
	return nil
}

func (s *opStorage) GetPrivateClaimsFromScopes(context.Context, string, string, []string) (map[string]any, error) {
	return nil, nil
}

func (s *opStorage) ValidateJWTProfileScopes(context.Context, string, []string) ([]string, error) {
	return nil, oidc.ErrUnsupportedGrantType().WithDescription("the JWT profile grant is not offered")
}

func (s *opStorage) Health(ctx context.Context) error { return s.p.store.Health(ctx) }

// --- request types handed to the library ---

// authRequest adapts storage.AuthRequest to op.AuthRequest.
type authRequest struct{ storage.AuthRequest }

var _ op.AuthRequest = (*authRequest)(nil)

func (a *authRequest) GetID() string          { return a.ID }
func (a *authRequest) GetACR() string         { return "" }
func (a *authRequest) GetAMR() []string       { return a.AMR }
func (a *authRequest) GetAudience() []string  { return []string{a.ClientID} }
func (a *authRequest) GetAuthTime() time.Time { return a.AuthTime }
func (a *authRequest) GetClientID() string    { return a.ClientID }
func (a *authRequest) GetNonce() string       { return a.Nonce }
func (a *authRequest) GetRedirectURI() string { return a.RedirectURI }
func (a *authRequest) GetScopes() []string    { return a.Scopes }
func (a *authRequest) GetState() string       { return a.State }
func (a *authRequest) GetSubject() string     { return a.Subject }
func (a *authRequest) Done() bool             { return a.AuthRequest.Done }
func (a *authRequest) GetResponseMode() oidc.ResponseMode {
	return oidc.ResponseMode(a.ResponseMode)
}
func (a *authRequest) GetResponseType() oidc.ResponseType {
	return oidc.ResponseType(a.ResponseType)
}
func (a *authRequest) GetCodeChallenge() *oidc.CodeChallenge {
	if a.CodeChallenge == "" {
		return nil
	}
	return &oidc.CodeChallenge{Challenge: a.CodeChallenge, Method: oidc.CodeChallengeMethod(a.CodeChallengeMethod)}
}

// LogValue keeps state, nonce and PKCE values out of the library's log lines.
func (a *authRequest) LogValue() slog.Value {
	return slog.GroupValue(slog.String("id", a.ID), slog.String("client_id", a.ClientID))
}

// refreshTokenRequest adapts a stored refresh token to op.RefreshTokenRequest. It must not satisfy
// op.AuthRequest: the library treats anything that does as a code exchange.
type refreshTokenRequest struct{ storage.RefreshToken }

var _ op.RefreshTokenRequest = (*refreshTokenRequest)(nil)

func (r *refreshTokenRequest) GetAMR() []string                 { return r.AMR }
func (r *refreshTokenRequest) GetAudience() []string            { return r.Audience }
func (r *refreshTokenRequest) GetAuthTime() time.Time           { return r.AuthTime }
func (r *refreshTokenRequest) GetClientID() string              { return r.ClientID }
func (r *refreshTokenRequest) GetScopes() []string              { return r.Scopes }
func (r *refreshTokenRequest) GetSubject() string               { return r.Subject }
func (r *refreshTokenRequest) SetCurrentScopes(scopes []string) { r.Scopes = scopes }
