// Package storage defines the records wecom-oidc keeps (clients, auth requests, codes, tokens,
// sessions, users, signing keys, the cached WeCom access token), the Store interface every backend
// implements, and the sentinel errors callers branch on with errors.Is.
//
// The contract is written for more than one engine: bbolt (package storage/bolt) is the embedded
// default, and the same interface must be implementable on a distributed store (etcd) for several
// replicas. So every method that must be atomic says so, and nothing here exposes an engine detail.
//
// Secrets and bearer values (client secrets, codes, refresh tokens, session ids) are handed to the
// Store already hashed with HashSecret; the Store never sees them in clear. The one exception is the
// cached WeCom access token, which must be replayed to WeCom and so is kept as is.
//
// Every record with an expiry is invisible to getters once it has expired (ErrNotFound), whether or
// not the sweeper (DeleteExpired) has removed it yet. "Now" is the Store's own clock (Options.Now in
// the bolt backend), so tests can move time.
package storage

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"io"
	"time"
)

// Sentinel errors. Backends wrap them with %w; callers compare with errors.Is.
var (
	// ErrNotFound: no such record, or it has expired.
	ErrNotFound = errors.New("storage: not found")
	// ErrAlreadyExists: a create met an existing key.
	ErrAlreadyExists = errors.New("storage: already exists")
	// ErrAlreadyUsed: a single-use value (code, WeCom state) was presented a second time.
	ErrAlreadyUsed = errors.New("storage: already used")
	// ErrTokenReused: a refresh token that had already been rotated was presented again; the
	// Store has revoked its whole family.
	ErrTokenReused = errors.New("storage: refresh token reused, family revoked")
	// ErrRevoked: the record exists but was revoked (a refresh family, an access token).
	ErrRevoked = errors.New("storage: revoked")
	// ErrConflict: an update's precondition did not hold (for example completing an auth request
	// twice, or binding it to a second browser).
	ErrConflict = errors.New("storage: conflict")
)

// HashSecret returns the form in which a secret or bearer value is stored and looked up:
// base64url(SHA-256(value)) without padding. The values hashed here are all high-entropy random
// strings (≥128 bits), so a fast hash is the right choice: it keeps client authentication and code
// redemption in microseconds.
func HashSecret(value string) string {
	sum := sha256.Sum256([]byte(value))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// Client is a registered relying party.
type Client struct {
	ID string `json:"id"`
	// SecretHash is HashSecret(secret); empty for public clients.
	SecretHash             string   `json:"secret_hash,omitempty"`
	Name                   string   `json:"name,omitempty"`
	RedirectURIs           []string `json:"redirect_uris"`
	PostLogoutRedirectURIs []string `json:"post_logout_redirect_uris,omitempty"`
	// Public clients have no secret and must use PKCE.
	Public bool `json:"public,omitempty"`
	// IDTokenClaims puts profile, email, phone and address claims into the ID token as well as
	// userinfo (Grafana reads only the ID token).
	IDTokenClaims bool `json:"id_token_claims"`
	// AuthMethod is how a confidential client authenticates at the token endpoint:
	// "client_secret_basic" (the default when empty; client_secret_post is accepted too) or
	// "private_key_jwt" (a JWT signed with a key from JWKS or JWKSURI). Public clients: "none".
	AuthMethod string `json:"auth_method,omitempty"`
	// JWKS is the client's public key set (a JSON Web Key Set document), for private_key_jwt.
	JWKS string `json:"jwks,omitempty"`
	// JWKSURI is where the client publishes its key set, for private_key_jwt.
	JWKSURI string `json:"jwks_uri,omitempty"`
	// BackchannelLogoutURI receives a signed logout token when a session the client signed in
	// through ends (OpenID Connect Back-Channel Logout 1.0).
	BackchannelLogoutURI string `json:"backchannel_logout_uri,omitempty"`
	// BackchannelLogoutSessionRequired: the client needs `sid` in logout tokens (and ID tokens).
	BackchannelLogoutSessionRequired bool `json:"backchannel_logout_session_required,omitempty"`
	// Groups chooses what the `groups` claim holds for this client, in order: "names"
	// (department names, the default when empty), "ids", "paths" (研发中心/平台组), "tags".
	Groups []string `json:"groups,omitempty"`
	// DeviceFlow lets the client use the device authorization grant (RFC 8628): command-line
	// tools and devices without a browser. Off unless the operator turns it on.
	DeviceFlow bool `json:"device_flow,omitempty"`
	// Source is "config" for clients reconciled from the config file, "cli" for the others.
	Source    string    `json:"source"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Client sources.
const (
	SourceConfig = "config"
	SourceCLI    = "cli"
)

// AuthRequest is one /authorize request, from its creation until its code is redeemed.
// Lifetime: ten minutes (the caller sets ExpiresAt).
type AuthRequest struct {
	ID           string   `json:"id"`
	ClientID     string   `json:"client_id"`
	RedirectURI  string   `json:"redirect_uri"` // raw, compared byte for byte at the token endpoint
	State        string   `json:"state,omitempty"`
	Nonce        string   `json:"nonce,omitempty"`
	Scopes       []string `json:"scopes"`
	ResponseType string   `json:"response_type"`
	ResponseMode string   `json:"response_mode,omitempty"`
	// CodeChallenge and CodeChallengeMethod are empty when PKCE was not used.
	CodeChallenge       string   `json:"code_challenge,omitempty"`
	CodeChallengeMethod string   `json:"code_challenge_method,omitempty"`
	Prompt              []string `json:"prompt,omitempty"`
	MaxAge              *int64   `json:"max_age,omitempty"` // seconds; nil when absent
	LoginHint           string   `json:"login_hint,omitempty"`
	UILocales           []string `json:"ui_locales,omitempty"`
	HintSubject         string   `json:"hint_subject,omitempty"` // sub of a verified id_token_hint
	// UpstreamHint names the upstream to sign in with (idp_hint, or a login_hint naming one).
	UpstreamHint string    `json:"upstream_hint,omitempty"`
	CreatedAt    time.Time `json:"created_at"`
	ExpiresAt    time.Time `json:"expires_at"`

	// BrowserHash binds the request to the browser that first opened the login page:
	// HashSecret of that browser's binding cookie. Set once.
	BrowserHash string `json:"browser_hash,omitempty"`

	// Completion, filled when the person has authenticated.
	Done      bool      `json:"done,omitempty"`
	Subject   string    `json:"subject,omitempty"`
	AuthTime  time.Time `json:"auth_time,omitempty"`
	AMR       []string  `json:"amr,omitempty"`
	SessionID string    `json:"session_id,omitempty"` // the SSO session's id (hash form)
}

// Completion is what a finished sign-in writes to its auth request (Store.CompleteAuthRequest).
type Completion struct {
	Subject  string
	AuthTime time.Time
	AMR      []string
	// NewSession, when not nil, is the SSO session the sign-in started; its ID becomes the
	// request's SessionID. Otherwise SessionID names the existing session it was completed from.
	NewSession *Session
	SessionID  string
	// ExpiresAt is the least expiry the request gets: its code must stay redeemable.
	ExpiresAt time.Time
	// CodeHash, when set, is HashSecret of the code handed to the application, valid until
	// CodeExpiresAt.
	CodeHash      string
	CodeExpiresAt time.Time
}

// LoginState is the value wecom-oidc sends to WeCom as `state` ([A-Za-z0-9]{32}), mapped to the
// auth request it continues and the browser that started it. Single use; ten-minute lifetime.
//
// A state continues exactly one of: an auth request (AuthRequestID); a scan sign-in, on the phone
// that scanned the code (ScanHandleHash, with the AuthRequestID of the computer's request); or
// the verification of a device authorization (DeviceUserCode, no AuthRequestID).
type LoginState struct {
	State         string    `json:"state"`
	AuthRequestID string    `json:"auth_request_id,omitempty"`
	Upstream      string    `json:"upstream,omitempty"` // the upstream the person was sent to
	BrowserHash   string    `json:"browser_hash"`
	ExpiresAt     time.Time `json:"expires_at"`
	// ScanHandleHash names the ScanLogin this login on a phone completes.
	ScanHandleHash string `json:"scan_handle_hash,omitempty"`
	// DeviceUserCode names the DeviceAuthorization the person is signing in to approve.
	DeviceUserCode string `json:"device_user_code,omitempty"`
}

// ScanLogin is a sign-in shown on one device as a QR code and authenticated on another — a phone
// with the WeCom app — keyed by HashSecret of the handle in the code's link. The provider moves
// its Status along (pending, confirmed, approved, finished; or denied, failed); the Store only
// keeps it. Lifetime: a few minutes (the caller sets ExpiresAt).
type ScanLogin struct {
	HandleHash    string `json:"handle_hash"`
	AuthRequestID string `json:"auth_request_id"` // the computer's auth request
	Upstream      string `json:"upstream,omitempty"`
	// DesktopBrowserHash is the browser showing the code; PhoneBrowserHash the first browser that
	// opened its link (set once, by the provider).
	DesktopBrowserHash string `json:"desktop_browser_hash"`
	PhoneBrowserHash   string `json:"phone_browser_hash,omitempty"`
	Status             string `json:"status"`
	// Reason says why a denied or failed sign-in ended (a key of the provider's messages).
	Reason string `json:"reason,omitempty"`
	// Who signed in on the phone, once approved.
	Subject   string    `json:"subject,omitempty"`
	AuthTime  time.Time `json:"auth_time,omitempty"`
	AMR       []string  `json:"amr,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

// DeviceAuthorization is one OAuth device authorization (RFC 8628), keyed by HashSecret of its
// device code, and findable by its user code while it lives. The provider moves its Status along
// (pending, approved, issued; or denied); the Store only keeps it. Lifetime: minutes (the caller
// sets ExpiresAt).
type DeviceAuthorization struct {
	DeviceCodeHash string `json:"device_code_hash"`
	// UserCode is the code the person types, in its canonical form (e.g. "BCDF-GHJK"); no two
	// live authorizations share one.
	UserCode string   `json:"user_code"`
	ClientID string   `json:"client_id"`
	Scopes   []string `json:"scopes"`
	Status   string   `json:"status"`
	// Interval is the least time between two polls, in seconds; LastPolledAt the latest poll.
	Interval     int64     `json:"interval"`
	LastPolledAt time.Time `json:"last_polled_at,omitempty"`
	// Who approved it, once approved.
	Subject   string    `json:"subject,omitempty"`
	AuthTime  time.Time `json:"auth_time,omitempty"`
	AMR       []string  `json:"amr,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

// AccessToken is the record behind an opaque access token. The token string itself is made by
// the OP library (an encryption of ID and subject); only the record is stored.
type AccessToken struct {
	ID       string   `json:"id"` // "at_" + random, never containing ':'
	ClientID string   `json:"client_id"`
	Subject  string   `json:"subject"`
	Audience []string `json:"audience,omitempty"`
	Scopes   []string `json:"scopes"`
	// FamilyID links the token to the refresh family it was issued with ("" when none): revoking
	// the family makes the access token invalid too.
	FamilyID string `json:"family_id,omitempty"`
	// AuthRequestID is the auth request whose code produced the token ("" on refresh).
	AuthRequestID string    `json:"auth_request_id,omitempty"`
	CreatedAt     time.Time `json:"created_at"`
	ExpiresAt     time.Time `json:"expires_at"`
}

// RefreshToken is one refresh token of a family. A family starts at a code exchange with
// offline_access; each refresh rotates it: the presented token is marked rotated and a new one
// joins the family. Presenting a rotated token again revokes the family.
type RefreshToken struct {
	// Hash is HashSecret(token value): the key the token is found by.
	Hash     string    `json:"hash"`
	ID       string    `json:"id"` // "rt_" + random; what revocation and logs name
	FamilyID string    `json:"family_id"`
	ClientID string    `json:"client_id"`
	Subject  string    `json:"subject"`
	Audience []string  `json:"audience,omitempty"`
	Scopes   []string  `json:"scopes"`
	AuthTime time.Time `json:"auth_time"`
	AMR      []string  `json:"amr,omitempty"`
	// SessionID is the SSO session the family was issued under (hash form).
	SessionID string    `json:"session_id,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
	// RotatedAt is set when the token has been exchanged for its successor.
	RotatedAt *time.Time `json:"rotated_at,omitempty"`
}

// Session is an SSO session: the person authenticated at WeCom at AuthTime, and later logins by
// the same browser skip WeCom while it lasts. ID is HashSecret of the session cookie.
type Session struct {
	ID       string    `json:"id"`
	Subject  string    `json:"subject"`
	AuthTime time.Time `json:"auth_time"`
	AMR      []string  `json:"amr,omitempty"`
	// Clients are the ids of the clients the session has signed in to, in order, each once:
	// the audience of back-channel logout when the session ends.
	Clients   []string  `json:"clients,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

// User is what wecom-oidc knows of a person, refreshed at every login. Subject is the OIDC `sub`.
type User struct {
	Subject        string            `json:"subject"`
	Upstream       string            `json:"upstream,omitempty"` // the upstream that authenticated them
	CorpID         string            `json:"corp_id"`
	UserID         string            `json:"userid"`
	Name           string            `json:"name,omitempty"`
	Alias          string            `json:"alias,omitempty"`
	Email          string            `json:"email,omitempty"`
	EmailVerified  bool              `json:"email_verified,omitempty"`
	Mobile         string            `json:"mobile,omitempty"`
	Gender         string            `json:"gender,omitempty"` // "male", "female" or ""
	Avatar         string            `json:"avatar,omitempty"`
	Address        string            `json:"address,omitempty"`
	Position       string            `json:"position,omitempty"`
	Departments    []Department      `json:"departments,omitempty"`
	MainDepartment int64             `json:"main_department,omitempty"`
	Tags           []Tag             `json:"tags,omitempty"`
	Status         int               `json:"status,omitempty"` // WeCom's user/get status
	Extra          map[string]string `json:"extra,omitempty"`
	Disabled       bool              `json:"disabled,omitempty"` // disabled by an operator
	// DisabledAt is when an operator last disabled the user: SSO sessions that began before it
	// stay dead after the user is enabled again.
	DisabledAt time.Time `json:"disabled_at,omitempty"`
	FirstSeen  time.Time `json:"first_seen"`
	LastLogin  time.Time `json:"last_login"`
	// LastChecked is when the upstream last confirmed the account may sign in (a login, or a
	// re-check at refresh).
	LastChecked time.Time `json:"last_checked"`
}

// Department is a WeCom department a user belongs to. Path is the names from the top-level
// department down to this one (nil when withheld).
type Department struct {
	ID   int64    `json:"id"`
	Name string   `json:"name,omitempty"`
	Path []string `json:"path,omitempty"`
}

// Tag is a WeCom tag (标签) on a user.
type Tag struct {
	ID   int64  `json:"id"`
	Name string `json:"name,omitempty"`
}

// KeyRecord is a signing key. Private is the PKCS#8 DER of the private key.
type KeyRecord struct {
	ID        string    `json:"id"` // kid
	Algorithm string    `json:"alg"`
	Private   []byte    `json:"private"`
	CreatedAt time.Time `json:"created_at"`
	// ActivatesAt is when the key starts signing (zero: at once); it is published from creation.
	ActivatesAt time.Time `json:"activates_at,omitempty"`
	// NotAfter: the key stops being published after this time (zero: never). Set on retirement.
	NotAfter time.Time `json:"not_after,omitempty"`
}

// UpstreamToken is a cached upstream access token (WeCom's gettoken), shared by every request and
// every process using the database. Key identifies the app: "corp_id/agent_id".
type UpstreamToken struct {
	Key       string    `json:"key"`
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
}

// GCResult counts what DeleteExpired removed, by kind.
type GCResult struct {
	AuthRequests  int
	Codes         int
	LoginStates   int
	AccessTokens  int
	RefreshTokens int
	Sessions      int
	ScanLogins    int
	DeviceAuths   int
}

// Total is the number of records removed.
func (r GCResult) Total() int {
	return r.AuthRequests + r.Codes + r.LoginStates + r.AccessTokens + r.RefreshTokens + r.Sessions +
		r.ScanLogins + r.DeviceAuths
}

// Store is the persistence boundary. Implementations are safe for concurrent use.
type Store interface {
	// Clients.

	// CreateClient fails with ErrAlreadyExists when the id is taken.
	CreateClient(ctx context.Context, c Client) error
	// PutClient creates or replaces a client (used to reconcile the config file's clients).
	PutClient(ctx context.Context, c Client) error
	GetClient(ctx context.Context, id string) (Client, error)
	// ListClients returns every client, ordered by id.
	ListClients(ctx context.Context) ([]Client, error)
	// DeleteClient fails with ErrNotFound when there is no such client.
	DeleteClient(ctx context.Context, id string) error

	// Auth requests and codes.

	// CreateAuthRequest fails with ErrAlreadyExists when the id is taken.
	CreateAuthRequest(ctx context.Context, ar AuthRequest) error
	// GetAuthRequest returns ErrNotFound for unknown or expired requests.
	GetAuthRequest(ctx context.Context, id string) (AuthRequest, error)
	// UpdateAuthRequest runs fn on the live request inside one atomic read-modify-write and stores
	// the result; an error from fn aborts the update and is returned as is. The id cannot change.
	// fn may run more than once (a backend retries when a concurrent write intervened) and while
	// the backend holds its write lock: it must depend only on its argument, be quick and do no I/O.
	UpdateAuthRequest(ctx context.Context, id string, fn func(*AuthRequest) error) (AuthRequest, error)
	// DeleteAuthRequest removes the request and its unredeemed codes; a redeemed code's tombstone
	// stays until the code's own expiry, so a replay still reports ErrAlreadyUsed. Deleting a
	// missing request is not an error (the OP library calls it after tokens exist).
	DeleteAuthRequest(ctx context.Context, id string) error
	// SaveCode maps HashSecret(code) to an auth request until expiresAt.
	SaveCode(ctx context.Context, codeHash, authRequestID string, expiresAt time.Time) error
	// CompleteAuthRequest records a finished sign-in in one atomic write: the live, not yet done
	// request id becomes Done with c's subject, auth time, AMR and session; its expiry moves to
	// c.ExpiresAt if that is later; c.NewSession, when set, is created as it is (its Clients
	// should name the request's client; ErrAlreadyExists if its id is taken), else the request's
	// client is added to the session c.SessionID if that is still live; and c.CodeHash, when set, is saved as SaveCode would. ErrNotFound when the request is
	// unknown or expired, ErrConflict when it is already done; nothing is written then.
	CompleteAuthRequest(ctx context.Context, id string, c Completion) (AuthRequest, error)
	// ConsumeCode redeems a code, atomically and exactly once: of any number of concurrent calls
	// with one code, one returns its auth request and every other fails. A code presented again
	// after its redemption fails with ErrAlreadyUsed (until the code's own expiry) and, in the same
	// transaction, revokes every token issued from that auth request — access tokens whose
	// AuthRequestID is the code's auth request, and the refresh families started with them
	// (RFC 6749 §4.1.2: a replayed code means it leaked). An unknown or expired code fails with
	// ErrNotFound. The auth request must still be live.
	ConsumeCode(ctx context.Context, codeHash string) (AuthRequest, error)

	// WeCom login states.

	CreateLoginState(ctx context.Context, s LoginState) error
	// ConsumeLoginState returns the state and deletes it in one atomic step: exactly one caller
	// wins; every other gets ErrNotFound (unknown, expired or already consumed).
	ConsumeLoginState(ctx context.Context, state string) (LoginState, error)

	// Cross-device sign-in: scan sign-ins and device authorizations. Their Update methods apply
	// fn to the live record and store the result in one atomic step, and return it: of
	// concurrent updates each sees the result of the ones before it. fn may run more than once;
	// when it returns an error nothing is written and the error is returned (wrapped). The key
	// (and a device authorization's UserCode) cannot be changed. ErrNotFound: unknown or expired.

	// CreateScanLogin fails with ErrAlreadyExists when the handle is taken.
	CreateScanLogin(ctx context.Context, s ScanLogin) error
	GetScanLogin(ctx context.Context, handleHash string) (ScanLogin, error)
	UpdateScanLogin(ctx context.Context, handleHash string, fn func(*ScanLogin) error) (ScanLogin, error)
	// CreateDeviceAuthorization fails with ErrAlreadyExists when the device code, or the user code
	// of an unexpired authorization, is taken (an expired one's user code is free again).
	CreateDeviceAuthorization(ctx context.Context, d DeviceAuthorization) error
	GetDeviceAuthorization(ctx context.Context, deviceCodeHash string) (DeviceAuthorization, error)
	GetDeviceAuthorizationByUserCode(ctx context.Context, userCode string) (DeviceAuthorization, error)
	UpdateDeviceAuthorization(ctx context.Context, deviceCodeHash string, fn func(*DeviceAuthorization) error) (DeviceAuthorization, error)

	// Tokens.

	// CreateTokens stores an access token and, when refresh is not nil, the first refresh token of
	// a new family (refresh.FamilyID), in one transaction. When access.AuthRequestID is set, both
	// are recorded as issued from that auth request (see ConsumeCode); when refresh.SessionID is
	// set, the family is recorded under that session (see EndSession). Once the auth request's
	// code has been replayed, CreateTokens for it fails with ErrRevoked (until the code's expiry),
	// so a replay racing the first exchange cannot leave live tokens behind; otherwise the auth
	// request is deleted in the same transaction, as DeleteAuthRequest would (its code has done
	// its work, and the OP library's DeleteAuthRequest that follows then finds nothing to write).
	CreateTokens(ctx context.Context, access AccessToken, refresh *RefreshToken) error
	// GetAccessToken returns a live token: ErrNotFound when unknown or expired, ErrRevoked when it
	// or its family was revoked.
	GetAccessToken(ctx context.Context, id string) (AccessToken, error)
	// GetRefreshToken returns the live refresh token with this hash. A token that has already been
	// rotated makes the Store revoke its family and return ErrTokenReused; a revoked family gives
	// ErrRevoked; unknown or expired, ErrNotFound.
	GetRefreshToken(ctx context.Context, hash string) (RefreshToken, error)
	// RotateRefreshToken exchanges the token with hash presentedHash for next (same family) and
	// stores access, in one transaction, after re-checking that the presented token is still live
	// there: of two concurrent rotations of one token exactly one succeeds, and the loser — like
	// any later presentation of the rotated token — revokes the family and gets ErrTokenReused.
	RotateRefreshToken(ctx context.Context, presentedHash string, next RefreshToken, access AccessToken) error
	// RevokeAccessToken makes the access token invalid; unknown ids are not an error.
	RevokeAccessToken(ctx context.Context, id string) error
	// RevokeRefreshFamily makes every refresh token of the family, and every access token issued
	// with it, invalid; unknown families are not an error.
	RevokeRefreshFamily(ctx context.Context, familyID string) error

	// SSO sessions.

	CreateSession(ctx context.Context, s Session) error
	// GetSession returns ErrNotFound for unknown or expired sessions.
	GetSession(ctx context.Context, id string) (Session, error)
	// DeleteSession is not an error for a missing session.
	DeleteSession(ctx context.Context, id string) error
	// AddSessionClient records that the live session signed clientID in (once; order kept).
	// ErrNotFound when the session is unknown or expired.
	AddSessionClient(ctx context.Context, sessionID, clientID string) error
	// EndSession deletes the session and revokes, in the same transaction, every refresh family
	// issued under it (RefreshToken.SessionID) and their access tokens. It returns the session as
	// it was, for back-channel logout; ErrNotFound when it is unknown or expired (nothing revoked).
	EndSession(ctx context.Context, id string) (Session, error)

	// Users.

	// PutUser creates or replaces the user with this subject.
	PutUser(ctx context.Context, u User) error
	// UpdateUser runs fn on the user with this subject inside one atomic read-modify-write — a
	// zero User and exists=false when there is none yet — and stores the result (created if it
	// did not exist). An error from fn aborts and is returned as is; fn must not change Subject
	// and, like UpdateAuthRequest's, may run more than once and must be quick and do no I/O.
	UpdateUser(ctx context.Context, subject string, fn func(u *User, exists bool) error) (User, error)
	// RevokeUserTokens revokes every refresh family and access token issued to subject and
	// returns how many families it revoked.
	RevokeUserTokens(ctx context.Context, subject string) (int, error)
	GetUser(ctx context.Context, subject string) (User, error)
	// ListUsers returns every user, ordered by subject.
	ListUsers(ctx context.Context) ([]User, error)

	// Signing keys.

	// ListKeys returns every stored key, ordered by CreatedAt.
	ListKeys(ctx context.Context) ([]KeyRecord, error)
	// PutKey creates or replaces a key.
	PutKey(ctx context.Context, k KeyRecord) error
	// CreateKey stores k only if no key has its id, atomically: of any number of concurrent
	// calls with one id, on any number of processes sharing the store, exactly one succeeds and
	// every other fails with ErrAlreadyExists, leaving the stored key as the winner wrote it.
	// Replicas starting together on an empty store use it to agree on one key.
	CreateKey(ctx context.Context, k KeyRecord) error
	// DeleteKey removes a key; a missing one is not an error.
	DeleteKey(ctx context.Context, id string) error

	// Upstream (WeCom) access-token cache.

	// GetUpstreamToken returns ErrNotFound when nothing is cached or the cached token has expired.
	GetUpstreamToken(ctx context.Context, key string) (UpstreamToken, error)
	PutUpstreamToken(ctx context.Context, t UpstreamToken) error
	// DeleteUpstreamToken forgets the cached token (WeCom invalidated it); missing is not an error.
	DeleteUpstreamToken(ctx context.Context, key string) error
	// UseClientAssertion records that the client assertion id (its issuer and jti) was accepted,
	// until expiresAt: ErrAlreadyUsed when it was, and has not expired since. Of concurrent uses
	// of one id by any processes sharing the store exactly one succeeds (OIDC Core §9: a jti is
	// single use, across every replica).
	UseClientAssertion(ctx context.Context, id string, expiresAt time.Time) error
	// ClaimUpstreamRefresh claims, until the given time, the right to fetch a new upstream token
	// for key: true when no unexpired claim was held (the claim is now the caller's), false when
	// one was. Of concurrent claims by any processes sharing the store exactly one gets true.
	// There is no release: the claimant saves the new token, and the claim expires.
	ClaimUpstreamRefresh(ctx context.Context, key string, until time.Time) (bool, error)

	// Housekeeping.

	// DeleteExpired removes every record whose expiry has passed (by the Store's clock) and
	// reports how many of each kind. Used-code tombstones and rotated refresh tokens go when
	// their own expiry passes.
	DeleteExpired(ctx context.Context) (GCResult, error)
	// Health reports whether the store can serve reads.
	Health(ctx context.Context) error
	// Stats counts the live (unexpired) records of each kind, for metrics: keys "clients",
	// "users", "sessions", "auth_requests", "access_tokens", "refresh_tokens", "keys",
	// "scan_logins", "device_authorizations".
	Stats(ctx context.Context) (map[string]int, error)
	// Backup writes a consistent copy of the whole store to w while the store keeps serving
	// reads and writes, and returns the bytes written. Every write acknowledged before Backup was
	// called is in the copy. For bolt the copy is a database file that Open accepts.
	Backup(ctx context.Context, w io.Writer) (int64, error)
	// Close releases the store. Calls after Close fail.
	Close() error
}
