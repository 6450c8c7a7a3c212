package record

import (
	"encoding/json"
	"time"

	"github.com/wecom-oidc/wecom-oidc/storage"
)

// The keys of the map Store.Stats returns.
const (
	StatClients       = "clients"
	StatUsers         = "users"
	StatSessions      = "sessions"
	StatAuthRequests  = "auth_requests"
	StatAccessTokens  = "access_tokens"
	StatRefreshTokens = "refresh_tokens"
	StatKeys          = "keys"
	StatScanLogins    = "scan_logins"
	StatDeviceAuths   = "device_authorizations"
)

// Count is one of the counts Store.Stats reports: the records of Kind that Live accepts.
type Count struct {
	Stat string // the key in the map Stats returns
	Kind string // the kind of record counted
	// Live reports whether the record raw counts at now. It is nil when every record counts
	// (clients and users do not expire), so that a backend may count them without decoding.
	// family reports whether a refresh family is live: Family.Live of its record, false when the
	// record is absent or does not decode (as CheckFamily fails closed on it). Live asks only
	// about the families of tokens that are otherwise live, so a backend that reads families on
	// demand reads no more of them than it must.
	Live func(raw []byte, now time.Time, family func(id string) bool) (bool, error)
}

// Counts lists the counts of Store.Stats, in the order backends take them, and what makes a
// record live, by the Store's clock:
//
//	clients, users   every record (they do not expire)
//	keys             keys still published: NotAfter zero or after now
//	sessions         unexpired sessions
//	auth_requests    unexpired auth requests
//	access_tokens    unexpired access tokens not revoked, by themselves or through their family
//	refresh_tokens   unexpired refresh tokens not rotated, whose family is live and not revoked
//	scan_logins      unexpired scan sign-ins
//	device_authorizations  unexpired device authorizations (the user-code index is not counted)
func Counts() []Count {
	always := func(TokenOwner, func(string) bool) bool { return true }
	return []Count{
		{StatClients, KindClients, nil},
		{StatUsers, KindUsers, nil},
		{StatKeys, KindKeys, publishedKey},
		{StatSessions, KindSessions, liveOwner(always)},
		{StatAuthRequests, KindAuthRequests, liveOwner(always)},
		{StatAccessTokens, KindAccessTokens, liveOwner(func(t TokenOwner, family func(string) bool) bool {
			return !t.Revoked && (t.FamilyID == "" || family(t.FamilyID))
		})},
		{StatRefreshTokens, KindRefreshTokens, liveOwner(func(t TokenOwner, family func(string) bool) bool {
			return t.RotatedAt == nil && family(t.FamilyID)
		})},
		{StatScanLogins, KindScanLogins, liveOwner(always)},
		{StatDeviceAuths, KindDeviceAuths, liveOwner(always)},
	}
}

// publishedKey is Live for a storage.KeyRecord: the key is still published.
func publishedKey(raw []byte, now time.Time, _ func(string) bool) (bool, error) {
	var k struct {
		NotAfter time.Time `json:"not_after"`
	}
	if err := json.Unmarshal(raw, &k); err != nil {
		return false, err
	}
	return k.NotAfter.IsZero() || k.NotAfter.After(now), nil
}

// liveOwner returns Live for records with an expiry: unexpired, and accepted by keep.
func liveOwner(keep func(t TokenOwner, family func(string) bool) bool) func([]byte, time.Time, func(string) bool) (bool, error) {
	return func(raw []byte, now time.Time, family func(string) bool) (bool, error) {
		var t TokenOwner
		if err := json.Unmarshal(raw, &t); err != nil {
			return false, err
		}
		return !Expired(t.ExpiresAt, now) && keep(t, family), nil
	}
}

// Swept counts in res one record of the kind that the sweep (DeleteExpired) removed. Families,
// links, user-code index entries and upstream tokens are removed too but not counted: GCResult
// has no field for them (families, links and the index are internal bookkeeping; the upstream
// token is a cache).
func Swept(res *storage.GCResult, kind string) {
	switch kind {
	case KindAuthRequests:
		res.AuthRequests++
	case KindCodes:
		res.Codes++
	case KindLoginStates:
		res.LoginStates++
	case KindAccessTokens:
		res.AccessTokens++
	case KindRefreshTokens:
		res.RefreshTokens++
	case KindSessions:
		res.Sessions++
	case KindScanLogins:
		res.ScanLogins++
	case KindDeviceAuths:
		res.DeviceAuths++
	}
}

// AddSwept adds to res the counts of one sweep transaction.
func AddSwept(res *storage.GCResult, chunk storage.GCResult) {
	res.AuthRequests += chunk.AuthRequests
	res.Codes += chunk.Codes
	res.LoginStates += chunk.LoginStates
	res.AccessTokens += chunk.AccessTokens
	res.RefreshTokens += chunk.RefreshTokens
	res.Sessions += chunk.Sessions
	res.ScanLogins += chunk.ScanLogins
	res.DeviceAuths += chunk.DeviceAuths
}
