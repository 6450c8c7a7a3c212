// Package etcd is the storage.Store backend for several wecom-oidc replicas: every record lives
// in an etcd v3 cluster, under one key prefix, and every read-modify-write the storage contract
// declares atomic is one etcd transaction. Replicas share nothing else; any number of them (and
// the CLI) may use the same prefix at once.
//
// # Layout
//
// Every key is Config.Prefix followed by a kind and a "/": the kinds, and most of what they
// hold, are those of the bolt backend, so that both read alike. Values are JSON; the record
// types are package storage's, plus the few internal records of package storage/internal/record
// that both backends share.
//
//	clients/<id>                      storage.Client
//	auth_requests/<id>                storage.AuthRequest
//	codes/<code hash>                 {auth request id, expires, used}
//	auth_request_codes/<ar>/<hash>    {expires}; finds the codes of a request
//	auth_request_tokens/<ar>/a/<id>   {expires}; an access token issued from the request
//	auth_request_tokens/<ar>/f/<id>   {expires}; a refresh family started from it
//	auth_request_tokens/<ar>/x        {expires}; a code of the request was replayed
//	login_states/<state>              storage.LoginState
//	access_tokens/<id>                storage.AccessToken + revoked flag
//	refresh_tokens/<hash>             storage.RefreshToken
//	refresh_families/<id>             {revoked, expires, session id, auth request id}
//	sessions/<id>                     storage.Session
//	session_families/<session>/<id>   {expires}; the families EndSession revokes
//	users/<subject>                   storage.User
//	keys/<kid>                        storage.KeyRecord
//	upstream_tokens/<corp/agent>      storage.UpstreamToken
//	client_assertions/<id>            {expires}; a private_key_jwt assertion already used
//	scan_logins/<handle hash>         storage.ScanLogin
//	device_authorizations/<hash>      storage.DeviceAuthorization
//	device_user_codes/<user code>     {device code hash, expires}; finds an authorization by its
//	                                  user code
//	expiry/<16 hex digits>/<kind>/<key>  (empty); the expiry index, by ExpiresAt in Unix ns
//	meta/schema                       schema version
//
// The user-code index device_user_codes names the device authorization that last took each code
// and expires with it: CreateDeviceAuthorization writes it, guarded, over the entry of an expired
// authorization (whose code is free again), and an update that moves the authorization's expiry
// moves the entry's, lease included. It is swept by its own index entry.
//
// In the link keys, <ar> and <session> are path-escaped (url.PathEscape), so that one id is never
// a prefix of another's keys; the last component of every key is kept as is, so that a range
// over a kind returns its records in id order, as ListClients and ListUsers promise.
//
// # Atomicity
//
// etcd transactions compare, then write; they cannot read. So every read-modify-write is
// optimistic (see txn.go): it reads what it needs at one revision, computes its writes, and
// commits them in one Txn guarded by If(ModRevision(key) == revision read) for every key whose
// value it relied on (and, for the link sets it scanned, that no key under the prefix changed).
// When another replica wrote in between, the Txn fails and the whole read-modify-write runs
// again from fresh reads. This is what makes ConsumeCode, ConsumeLoginState, CompleteAuthRequest,
// RotateRefreshToken and the reuse detection, UpdateAuthRequest, UpdateUser, AddSessionClient,
// EndSession, UpdateScanLogin, CreateDeviceAuthorization and UpdateDeviceAuthorization, and the
// sweep exactly-once across replicas. Two consequences callers may notice: the functions passed
// to UpdateAuthRequest, UpdateUser and the cross-device Update methods run once per attempt
// (each time on a fresh copy, and only the last run's result is stored), and a transaction that
// keeps losing gives up after maxAttempts.
//
// etcd refuses a transaction of more than 128 operations (its --max-txn-ops default). The
// revocations that fan out — a replayed code's tokens, a session's families, a user's tokens —
// revoke what exceeds one transaction in preceding ones (revocation is idempotent and
// monotonic), and the final transaction does the rest under the same guards.
//
// # Expiry
//
// Reads decide expiry by ExpiresAt and the Store's clock, as the contract says. On top of that,
// every expiring record, link and index entry is written with an etcd lease that ends after its
// ExpiresAt plus leaseMargin, so that etcd drops what no sweeper removed — the replicas may all
// be down. Leases are shared: one per deadline bucket (see lease.go), rounded up, so a lease
// fires some time after the record's expiry, never before it. DeleteExpired does not rely on
// them: it walks the expiry index up to "now" and removes, transactionally and exactly once
// across replicas, what has expired, tombstones and links included.
//
// # Backup
//
// Backup writes a logical copy of the prefix as it is at one revision: a JSON-lines stream of
// keys and values (backup.go). Restore loads such a copy into an empty prefix of any cluster,
// re-deriving the leases. etcd's own Maintenance.Snapshot is not used: it copies the whole
// cluster (every prefix, the auth store), needs the root role, and restores only as a new
// cluster's data directory, not into a running one.
package etcd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/wecom-oidc/wecom-oidc/storage"
	"github.com/wecom-oidc/wecom-oidc/storage/internal/record"
)

// Config configures Open.
type Config struct {
	// Endpoints are the etcd client URLs, e.g. "https://etcd-1.internal:2379".
	Endpoints []string
	// Prefix is prepended to every key; "" means DefaultPrefix. A "/" is appended when missing, so
	// that "/a" and "/ab" never share keys. Replicas of one deployment use the same prefix.
	Prefix string
	// Username and Password authenticate to etcd when its auth is enabled. The role needs
	// read-write access to the prefix's range only.
	Username, Password string
	// TLS, when set, is used for the client connections (and client certificates).
	TLS *tls.Config
	// DialTimeout bounds connecting to the cluster; 0 means 5s.
	DialTimeout time.Duration
	// RequestTimeout bounds each request to etcd; 0 means 5s.
	RequestTimeout time.Duration
	// Now is the Store's clock, used for every expiry decision; nil means time.Now.
	Now func() time.Time
}

// DefaultPrefix is the key prefix used when Config.Prefix is empty.
const DefaultPrefix = "/wecom-oidc/"

const (
	defaultDialTimeout    = 5 * time.Second
	defaultRequestTimeout = 5 * time.Second
	// schemaVersion is stored at meta/schema; Open refuses a prefix written by a newer layout.
	schemaVersion = 1
	// maxTxnOps is etcd's default --max-txn-ops: the most compares, or operations in one branch,
	// one transaction may carry.
	maxTxnOps = 128
)

// Kinds: the first component of every key under the prefix. The kinds of record are package
// record's (the bolt backend names its buckets alike); expiry and meta are this backend's own.
// None contains "/".
const (
	kindClients         = record.KindClients
	kindAuthRequests    = record.KindAuthRequests
	kindCodes           = record.KindCodes
	kindARCodes         = record.KindARCodes
	kindARTokens        = record.KindARTokens
	kindLoginStates     = record.KindLoginStates
	kindAccessTokens    = record.KindAccessTokens
	kindRefreshTokens   = record.KindRefreshTokens
	kindFamilies        = record.KindFamilies
	kindSessions        = record.KindSessions
	kindSessionFamilies = record.KindSessionFamilies
	kindUsers           = record.KindUsers
	kindKeys            = record.KindKeys
	kindUpstream        = record.KindUpstream
	kindAssertions      = record.KindAssertions
	kindScanLogins      = record.KindScanLogins
	kindDeviceAuths     = record.KindDeviceAuths
	kindDeviceUserCodes = record.KindDeviceUserCodes
	kindExpiry          = "expiry"
	kindMeta            = "meta"
)

// metaSchema is the meta key holding the schema version.
const metaSchema = "schema"

// expiringKind reports whether records of the kind carry "expires_at" and may be named by the
// expiry index: a corrupt index entry can never make the sweep delete a client, a user or a key.
func expiringKind(kind string) bool {
	switch kind {
	case kindAuthRequests, kindCodes, kindLoginStates, kindAccessTokens, kindRefreshTokens,
		kindFamilies, kindSessions, kindUpstream, kindARCodes, kindARTokens, kindSessionFamilies,
		kindAssertions, kindScanLogins, kindDeviceAuths, kindDeviceUserCodes:
		return true
	}
	return false
}

// leasedKind reports whether keys of the kind are written with a lease: the expiring kinds and
// the expiry index.
func leasedKind(kind string) bool { return expiringKind(kind) || kind == kindExpiry }

// Store is the etcd implementation of storage.Store. It is safe for concurrent use, and any
// number of Stores, in any number of processes, may share one prefix.
type Store struct {
	cli       *clientv3.Client
	prefix    string
	endpoints string
	now       func() time.Time
	timeout   time.Duration
	leases    *leaser
	closed    atomic.Bool
}

var _ storage.Store = (*Store)(nil)

// errClosed is what every call on a closed Store fails with.
var errClosed = errors.New("store is closed")

// Open connects to the cluster, checks that it answers (and that the credentials are accepted),
// and records the schema version under the prefix, or checks the one already there. ctx bounds
// only Open itself.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("storage: etcd: no endpoints")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if !strings.HasSuffix(cfg.Prefix, "/") {
		cfg.Prefix += "/"
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = defaultDialTimeout
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = defaultRequestTimeout
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	endpoints := strings.Join(cfg.Endpoints, ",")
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            cfg.Endpoints,
		DialTimeout:          cfg.DialTimeout,
		DialKeepAliveTime:    30 * time.Second,
		DialKeepAliveTimeout: 10 * time.Second,
		TLS:                  cfg.TLS,
		Username:             cfg.Username,
		Password:             cfg.Password,
		// Every failure reaches the caller as an error; the client's own zap log would only
		// repeat them, in another format, on stderr.
		Logger: zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("storage: etcd %s: connect: %w", endpoints, err)
	}
	s := &Store{
		cli:       cli,
		prefix:    cfg.Prefix,
		endpoints: endpoints,
		now:       cfg.Now,
		timeout:   cfg.RequestTimeout,
	}
	s.leases = newLeaser(s, defaultLeaseMargin, defaultLeaseGrain)
	if err := s.initSchema(ctx); err != nil {
		_ = cli.Close() // the initialisation error is the one worth reporting
		return nil, fmt.Errorf("storage: etcd %s, prefix %q: %w", endpoints, cfg.Prefix, err)
	}
	return s, nil
}

// initSchema writes the schema version when the prefix has none, in the same transaction that
// reads it otherwise: two replicas starting together agree.
func (s *Store) initSchema(ctx context.Context) error {
	ctx, cancel := s.rctx(ctx)
	defer cancel()
	key := s.key(kindMeta, metaSchema)
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, strconv.Itoa(schemaVersion))).
		Else(clientv3.OpGet(key)).
		Commit()
	if err != nil {
		return fmt.Errorf("initialise: %w", err)
	}
	if resp.Succeeded {
		return nil
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) != 1 {
		return errors.New("initialise: schema version vanished")
	}
	got, err := strconv.Atoi(string(kvs[0].Value))
	if err != nil {
		return fmt.Errorf("malformed schema version %q", kvs[0].Value)
	}
	if got != schemaVersion {
		return fmt.Errorf("schema version %d, this build understands %d", got, schemaVersion)
	}
	return nil
}

// Close closes the client connection. Records and their leases stay in etcd. Every later call,
// Close included, fails.
func (s *Store) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return fmt.Errorf("storage: etcd: close: %w", errClosed)
	}
	if err := s.cli.Close(); err != nil {
		return fmt.Errorf("storage: etcd: close: %w", err)
	}
	return nil
}

// Health reads the schema key with a linearizable read: it succeeds only when a quorum of the
// cluster answers within the request timeout.
func (s *Store) Health(ctx context.Context) (err error) {
	defer wrap(&err, "health")
	if err := s.usable(ctx); err != nil {
		return err
	}
	raw, ok, err := s.get(ctx, s.key(kindMeta, metaSchema))
	if err != nil {
		return err
	}
	if !ok || len(raw) == 0 {
		return errors.New("schema version missing")
	}
	return nil
}

// usable fails when the store is closed or ctx is done.
func (s *Store) usable(ctx context.Context) error {
	if s.closed.Load() {
		return errClosed
	}
	return ctx.Err()
}

// rctx bounds one request by the request timeout.
func (s *Store) rctx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.timeout)
}

// wrap prefixes a non-nil *err with "storage: " and the operation, keeping the chain for
// errors.Is. Used as `defer wrap(&err, "get client %q", id)`.
func wrap(err *error, format string, args ...any) {
	if *err != nil {
		*err = fmt.Errorf("storage: %s: %w", fmt.Sprintf(format, args...), *err)
	}
}

// --- keys ---

// key is the etcd key of the record id of a kind.
func (s *Store) key(kind, id string) string { return s.prefix + kind + "/" + id }

// kindPrefix is the prefix of every key of a kind.
func (s *Store) kindPrefix(kind string) string { return s.prefix + kind + "/" }

// esc makes an id safe as a non-final key component: it contains no "/" afterwards, so
// esc(a)+"/" is a prefix of esc(b)+"/"+… only when a == b.
func esc(id string) string { return url.PathEscape(id) }

// arCodeID is the auth_request_codes id linking a request to one of its codes.
func arCodeID(authRequestID, codeHash string) string { return esc(authRequestID) + "/" + codeHash }

// Kinds of auth_request_tokens entries.
const (
	linkAccess   = "a" // followed by "/" and an access token id
	linkFamily   = "f" // followed by "/" and a refresh family id
	linkReplayed = "x" // alone: a code of the request was presented again
)

// arTokensPrefix is the start of every auth_request_tokens id of a request.
func arTokensPrefix(authRequestID string) string { return esc(authRequestID) + "/" }

// arTokenID is an auth_request_tokens id; id is "" for the replay marker.
func arTokenID(authRequestID, link, id string) string {
	if link == linkReplayed {
		return arTokensPrefix(authRequestID) + linkReplayed
	}
	return arTokensPrefix(authRequestID) + link + "/" + id
}

// sessionFamiliesPrefix is the start of every session_families id of a session.
func sessionFamiliesPrefix(sessionID string) string { return esc(sessionID) + "/" }

// sessionFamilyID is the session_families id linking a session to a family.
func sessionFamilyID(sessionID, familyID string) string {
	return sessionFamiliesPrefix(sessionID) + familyID
}

// expiry index: expiry/<16 hex digits of record.ExpiryNanos>/<kind>/<id>.

// indexID is the expiry index id of the record id of a kind expiring at exp.
func indexID(exp time.Time, kind, id string) string {
	return fmt.Sprintf("%016x/%s/%s", record.ExpiryNanos(exp), kind, id)
}

// parseIndexID splits an expiry index id; ok is false for a malformed one.
func parseIndexID(s string) (nanos uint64, kind, id string, ok bool) {
	if len(s) < 18 || s[16] != '/' {
		return 0, "", "", false
	}
	n, err := strconv.ParseUint(s[:16], 16, 64)
	if err != nil {
		return 0, "", "", false
	}
	kind, id, found := strings.Cut(s[17:], "/")
	if !found || kind == "" || id == "" {
		return 0, "", "", false
	}
	return n, kind, id, true
}
