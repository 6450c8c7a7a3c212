package provider

import (
	"net"
	"net/url"
	"time"

	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/wecom-oidc/wecom-oidc/storage"
)

// client adapts a storage.Client to op.Client. Every client uses the authorization code flow
// (PKCE S256 mandatory for public clients) and may hold refresh tokens.
type client struct {
	storage.Client
	loginURL   func(string) string
	idTokenTTL time.Duration
}

var _ op.Client = (*client)(nil)

func (c *client) GetID() string                    { return c.ID }
func (c *client) RedirectURIs() []string           { return c.Client.RedirectURIs }
func (c *client) PostLogoutRedirectURIs() []string { return c.Client.PostLogoutRedirectURIs }

// ApplicationType drives the library's redirect rules. Confidential clients are web apps. A public
// client that redirects to a loopback http address or a custom scheme is a native app (RFC 8252:
// any loopback port matches); any other public client is a browser app, held to https.
func (c *client) ApplicationType() op.ApplicationType {
	if !c.Public {
		return op.ApplicationTypeWeb
	}
	for _, raw := range c.Client.RedirectURIs {
		u, err := url.Parse(raw)
		if err != nil {
			continue
		}
		if (u.Scheme == "http" && isLoopback(u.Hostname())) || (u.Scheme != "http" && u.Scheme != "https") {
			return op.ApplicationTypeNative
		}
	}
	return op.ApplicationTypeUserAgent
}

func (c *client) AuthMethod() oidc.AuthMethod {
	if c.Public {
		return oidc.AuthMethodNone
	}
	if c.Client.AuthMethod == AuthMethodPrivateKeyJWT {
		return oidc.AuthMethodPrivateKeyJWT
	}
	// The library accepts client_secret_post as well for a basic client (Config.AuthMethodPost).
	return oidc.AuthMethodBasic
}

func (c *client) ResponseTypes() []oidc.ResponseType {
	return []oidc.ResponseType{oidc.ResponseTypeCode}
}
func (c *client) GrantTypes() []oidc.GrantType {
	if c.DeviceFlow {
		return []oidc.GrantType{oidc.GrantTypeCode, oidc.GrantTypeRefreshToken, oidc.GrantTypeDeviceCode}
	}
	return []oidc.GrantType{oidc.GrantTypeCode, oidc.GrantTypeRefreshToken}
}
func (c *client) LoginURL(id string) string                                    { return c.loginURL(id) }
func (c *client) AccessTokenType() op.AccessTokenType                          { return op.AccessTokenTypeBearer }
func (c *client) IDTokenLifetime() time.Duration                               { return c.idTokenTTL }
func (c *client) DevMode() bool                                                { return false }
func (c *client) IsScopeAllowed(scope string) bool                             { return scope == scopeGroups }
func (c *client) IDTokenUserinfoClaimsAssertion() bool                         { return c.IDTokenClaims }
func (c *client) ClockSkew() time.Duration                                     { return 0 }
func (c *client) RestrictAdditionalIdTokenScopes() func([]string) []string     { return keepScopes }
func (c *client) RestrictAdditionalAccessTokenScopes() func([]string) []string { return keepScopes }

func keepScopes(scopes []string) []string { return scopes }

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
