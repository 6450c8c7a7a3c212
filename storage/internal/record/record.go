// Package record holds what the two storage backends, storage/bolt and storage/etcd, store and
// decide alike: the internal records they keep next to package storage's types, the names of the
// kinds of record, the expiry rules, which records Stats counts as live, and the checks and
// derivations of the operations whose logic does not depend on the engine.
//
// Everything here is part of both backends' formats. The JSON of every type must stay the same
// byte for byte, and a kind's name is both a bbolt bucket and the first component of an etcd
// key, so a change here can leave existing databases unreadable: change a field or a name only
// with a migration in both backends. Nothing here reads or writes a store. Transactions,
// buckets and keys, the expiry index and leases belong to the backends.
package record

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/wecom-oidc/wecom-oidc/storage"
)

// Kinds of record. Each is a bucket in the bolt backend and the first component of every key of
// its records in the etcd backend. None contains 0x00 or "/", which the backends use as
// separators in their keys.
const (
	KindClients         = "clients"
	KindAuthRequests    = "auth_requests"
	KindCodes           = "codes"
	KindARCodes         = "auth_request_codes"
	KindARTokens        = "auth_request_tokens"
	KindLoginStates     = "login_states"
	KindAccessTokens    = "access_tokens"
	KindRefreshTokens   = "refresh_tokens"
	KindFamilies        = "refresh_families"
	KindSessions        = "sessions"
	KindSessionFamilies = "session_families"
	KindUsers           = "users"
	KindKeys            = "keys"
	KindUpstream        = "upstream_tokens"
	KindAssertions      = "client_assertions"
	KindScanLogins      = "scan_logins"
	KindDeviceAuths     = "device_authorizations"
	KindDeviceUserCodes = "device_user_codes"
)

// Code is the record of KindCodes, keyed by HashSecret(code). A redeemed code is kept, with Used
// set, until its own expiry, so that a replay is told apart (ErrAlreadyUsed) from a wrong code.
type Code struct {
	AuthRequestID string    `json:"auth_request_id"`
	ExpiresAt     time.Time `json:"expires_at"`
	Used          bool      `json:"used,omitempty"`
}

// DeletedWith reports whether deleting the auth request authRequestID deletes the code: only
// when the code is the request's and not yet redeemed. A redeemed code stays as a tombstone, so
// that a replay after the deletion still answers ErrAlreadyUsed and revokes what the code
// produced.
func (c Code) DeletedWith(authRequestID string) bool {
	return c.AuthRequestID == authRequestID && !c.Used
}

// Access is the record of KindAccessTokens: the token plus its own revocation flag (revocation
// through the family lives in the Family record). The embedded token's fields are flattened, so
// "expires_at" sits at the top level as in every expiring record.
type Access struct {
	storage.AccessToken
	Revoked bool `json:"revoked,omitempty"`
}

// Family is the record of KindFamilies, keyed by family id. Revoking a family is one write here,
// and every lookup of a token of the family reads it. ExpiresAt is the latest expiry of any
// refresh or access token issued in the family, so the record outlives all of them.
type Family struct {
	Revoked   bool      `json:"revoked,omitempty"`
	ExpiresAt time.Time `json:"expires_at"`
	// SessionID and AuthRequestID say which links lead to the family (KindSessionFamilies,
	// KindARTokens); extending the family moves their expiry along with the family's.
	SessionID     string `json:"session_id,omitempty"`
	AuthRequestID string `json:"auth_request_id,omitempty"`
}

// Live reports whether the family can still be used at now: not revoked and not expired. A
// family that is unknown or does not decode is not live either; callers decide that before.
func (f Family) Live(now time.Time) bool { return !f.Revoked && !Expired(f.ExpiresAt, now) }

// Link is the record of the link kinds (KindARTokens, KindSessionFamilies; in etcd
// KindARCodes too). It holds only an expiry, so that links are swept like every other expiring
// record.
type Link struct {
	ExpiresAt time.Time `json:"expires_at"`
}

// UserCode is the record of KindDeviceUserCodes, keyed by a device authorization's user code: the
// index that GetDeviceAuthorizationByUserCode reads. It names the authorization that last took
// the code and expires with it (an update that moves the authorization's expiry moves the
// entry's too), so that it is swept like every other expiring record. An entry is trusted only
// as far as the authorization it names agrees: stored, unexpired, holding the same user code.
type UserCode struct {
	DeviceCodeHash string    `json:"device_code_hash"`
	ExpiresAt      time.Time `json:"expires_at"`
}

// TokenOwner is the part of a refresh-token or access-token record that RevokeUserTokens and
// Stats read. It is decoded from those records and never written.
type TokenOwner struct {
	Subject   string     `json:"subject"`
	FamilyID  string     `json:"family_id"`
	ExpiresAt time.Time  `json:"expires_at"`
	RotatedAt *time.Time `json:"rotated_at"` // refresh tokens only
	Revoked   bool       `json:"revoked"`    // access tokens only
}

// Encode is the stored form of every record: its JSON.
func Encode(v any) ([]byte, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode record: %w", err)
	}
	return raw, nil
}

// Decode decodes the record stored at key (named in the error only).
func Decode[T any, K ~string | ~[]byte](key K, raw []byte) (T, error) {
	var v T
	if err := json.Unmarshal(raw, &v); err != nil {
		return v, fmt.Errorf("decode record %q: %w", key, err)
	}
	return v, nil
}
