// Package bolt is the embedded storage.Store backend: one bbolt file holding every record
// wecom-oidc keeps.
//
// # Layout
//
// Each record kind has its own bucket and every value is JSON. The kinds, and the internal
// records shown in braces, are package storage/internal/record's, which the etcd backend shares:
//
//	clients           client id          → storage.Client
//	auth_requests     auth request id    → storage.AuthRequest
//	codes             code hash          → {auth request id, expires, used}
//	auth_request_codes len16(ar id) ‖ ar id ‖ code hash → (empty); finds the codes of a request
//	auth_request_tokens len16(ar id) ‖ ar id ‖ 'a' ‖ access token id → {expires}
//	                    len16(ar id) ‖ ar id ‖ 'f' ‖ family id       → {expires}
//	                    len16(ar id) ‖ ar id ‖ 'x'                   → {expires}; a code was replayed
//	login_states      state              → storage.LoginState
//	access_tokens     access token id    → storage.AccessToken + revoked flag
//	refresh_tokens    refresh token hash → storage.RefreshToken
//	refresh_families  family id          → {revoked, expires, session id, auth request id}
//	sessions          session id (hash)  → storage.Session
//	session_families  len16(session id) ‖ session id ‖ family id → {expires}
//	users             subject            → storage.User
//	keys              key id             → storage.KeyRecord
//	upstream_tokens   "corp_id/agent_id" → storage.UpstreamToken
//	client_assertions assertion id       → {expires}; a private_key_jwt assertion already used
//	scan_logins       handle hash        → storage.ScanLogin
//	device_authorizations device code hash → storage.DeviceAuthorization
//	device_user_codes user code          → {device code hash, expires}; finds an authorization
//	                                       by its user code
//	expiry            be64(unix ns) ‖ bucket name ‖ 0x00 ‖ key → (empty)
//	meta              "schema"           → schema version
//
// Every write of a record that expires also writes its entry in the expiry index (and removes
// the entry of the record it replaces), so DeleteExpired walks the index from its start up to
// "now" and costs what it deletes, not the size of the database. Revoking a refresh family is a
// single write to its family record, which every refresh- and access-token lookup consults.
//
// The user-code index device_user_codes names the device authorization that last took each
// code and expires with it: CreateDeviceAuthorization writes it (over the entry of an expired
// authorization, whose code is free again), and an update that moves the authorization's expiry
// moves the entry's. It is swept by its own index entry; the sweep of an authorization never
// touches it, since by then the code may belong to another one.
//
// The link buckets auth_request_tokens and session_families are indexes written by CreateTokens:
// what ConsumeCode revokes on a replayed code, and what EndSession revokes. Their entries expire
// with what they point at — an access token's entry with the token, a family's entries with the
// family record, moved along whenever a rotation extends the family — so they outlive every
// token they could revoke and are swept like the rest. They are not tied to the lifetime of the
// auth request (DeleteAuthRequest keeps them: a replay after it must still revoke); a session's
// family entries go with the session (EndSession, DeleteSession, the sweep), after which nothing
// reads them. The replay marker ('x') lives until the replayed code's expiry.
//
// # Atomicity
//
// bbolt has one writer at a time and serialisable transactions, so every read-check-write the
// storage contract asks to be atomic (ConsumeCode, ConsumeLoginState, UpdateAuthRequest,
// RotateRefreshToken, the reuse detection in GetRefreshToken, AddSessionClient, EndSession,
// UpdateUser, RevokeUserTokens, UpdateScanLogin, CreateDeviceAuthorization,
// UpdateDeviceAuthorization) runs inside one write transaction. Writes are group-committed
// (writer.go): the writes that arrive while a commit is in progress share the next transaction
// and its fsyncs, so a write never waits for more than the commit in progress and its own, and
// the disk's fsync rate does not cap the logins per second. A write's function may therefore run
// more than once (when another write of its group fails) and is a pure function of the
// transaction; outcomes that must commit and still be reported as errors (a replayed code, a
// reused refresh token) are returned through variables the function resets on each run.
//
// Stats and Backup only read (db.View). Backup copies the file as one read transaction sees it
// (Tx.WriteTo), so the copy is consistent while writers go on. bbolt can only enlarge its memory
// map when no read transaction is open, so Open maps 1 GiB up front (see initialMmapSize): a
// long backup then does not hold up the writers.
//
// # File and lock
//
// Open creates the parent directory (0700) and the file (0600) when missing, and takes bbolt's
// exclusive file lock: a second process, or a second Open in this one, fails after
// Options.Timeout (1s by default) with an error saying the database is in use, instead of
// blocking for ever.
package bolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync/atomic"
	"time"

	bbolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/wecom-oidc/wecom-oidc/storage"
	"github.com/wecom-oidc/wecom-oidc/storage/internal/record"
)

// Options tune Open. The zero value is ready to use.
type Options struct {
	// Timeout is how long Open waits for the file lock held by another process; 0 means 1s.
	Timeout time.Duration
	// Now is the Store's clock, used for every expiry decision; nil means time.Now.
	Now func() time.Time
}

const (
	defaultTimeout = time.Second
	// fileMode: the database holds signing keys and token records, readable by the owner only.
	fileMode = 0o600
	// dirMode is used only when Open has to create the parent directory.
	dirMode = 0o700
	// schemaVersion is stored in the meta bucket; Open refuses a file written by a newer layout.
	schemaVersion = 1
	// defaultGCChunk bounds how many expired records one DeleteExpired transaction removes, so
	// a large sweep does not hold the writer lock for long.
	defaultGCChunk = 1000
)

// Bucket names: one bucket per kind of record, named as package record names the kinds (the etcd
// backend names its keys alike), plus this backend's own expiry index and meta bucket. They
// never contain 0x00, which separates the bucket name from the record key in the expiry index.
const (
	bucketClients         = record.KindClients
	bucketAuthRequests    = record.KindAuthRequests
	bucketCodes           = record.KindCodes
	bucketARCodes         = record.KindARCodes
	bucketARTokens        = record.KindARTokens
	bucketLoginStates     = record.KindLoginStates
	bucketAccessTokens    = record.KindAccessTokens
	bucketRefreshTokens   = record.KindRefreshTokens
	bucketFamilies        = record.KindFamilies
	bucketSessions        = record.KindSessions
	bucketSessionFamilies = record.KindSessionFamilies
	bucketUsers           = record.KindUsers
	bucketKeys            = record.KindKeys
	bucketUpstream        = record.KindUpstream
	bucketAssertions      = record.KindAssertions
	bucketScanLogins      = record.KindScanLogins
	bucketDeviceAuths     = record.KindDeviceAuths
	bucketDeviceUserCodes = record.KindDeviceUserCodes
	bucketExpiry          = "expiry"
	bucketMeta            = "meta"
)

// allBuckets lists every bucket Open creates. A database written before a bucket was added gains
// it at its next Open, under the same schema version: a new kind is an addition that older
// builds do not read. (An older build that opens the file again leaves the new records alone,
// but its sweep drops their expiry index entries, so they stay in the file, invisible to the
// getters, past their expiry; its export refuses the file rather than leave them behind.)
func allBuckets() []string {
	return []string{
		bucketClients, bucketAuthRequests, bucketCodes, bucketARCodes, bucketLoginStates,
		bucketAccessTokens, bucketRefreshTokens, bucketFamilies, bucketSessions, bucketUsers,
		bucketKeys, bucketUpstream, bucketExpiry, bucketMeta, bucketARTokens, bucketSessionFamilies,
		bucketAssertions, bucketScanLogins, bucketDeviceAuths, bucketDeviceUserCodes,
	}
}

// expiringBucket reports whether the bucket holds records with an expiry, the only ones the
// expiry index may name: a corrupt index entry can never make the sweep delete a client, a user
// or a key.
func expiringBucket(name string) bool {
	switch name {
	case bucketAuthRequests, bucketCodes, bucketLoginStates, bucketAccessTokens, bucketRefreshTokens,
		bucketFamilies, bucketSessions, bucketUpstream, bucketARTokens, bucketSessionFamilies,
		bucketAssertions, bucketScanLogins, bucketDeviceAuths, bucketDeviceUserCodes:
		return true
	}
	return false
}

// bkt returns the named bucket, which Open has created.
func bkt(tx *bbolt.Tx, name string) *bbolt.Bucket { return tx.Bucket([]byte(name)) }

// metaSchemaKey is the meta bucket's key for the schema version.
const metaSchemaKey = "schema"

// initialMmapSize is the size of the memory map Open asks bbolt for: 1 GiB of address space
// (not of file: the file grows with its data) on 64-bit systems other than Windows, where bbolt
// would grow the file to the map's size. A writer that must enlarge the map waits for every open
// read transaction and holds up the readers that arrive meanwhile, so a long read — Backup to a
// slow writer — would otherwise stall the store whenever the file outgrows the map; with this
// map that happens only once the database passes 1 GiB.
func initialMmapSize() int {
	if runtime.GOOS == "windows" || strconv.IntSize < 64 {
		return 0
	}
	return 1 << 30
}

// Store is the bbolt implementation of storage.Store. It is safe for concurrent use.
type Store struct {
	db      *bbolt.DB
	path    string
	now     func() time.Time
	gcChunk int
	closed  atomic.Bool

	clients recordCache[storage.Client]
	users   recordCache[storage.User]

	// The group-commit writer (writer.go).
	writes     chan writeRequest
	stopWriter chan struct{}
	writerDone chan struct{}
}

var _ storage.Store = (*Store)(nil)

// Open opens (creating if needed) the database at path. See the package documentation for the
// file mode and locking behaviour.
func Open(path string, opts Options) (*Store, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = defaultTimeout
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if err := os.MkdirAll(filepath.Dir(path), dirMode); err != nil {
		return nil, fmt.Errorf("storage: create directory for database %s: %w", path, err)
	}
	db, err := bbolt.Open(path, fileMode, &bbolt.Options{
		Timeout:         opts.Timeout,
		InitialMmapSize: initialMmapSize(),
		// The free-page list is derived data: not writing it at every commit keeps a commit's
		// cost independent of how much the sweeper has freed; Open rebuilds it by scanning the
		// file. The hashmap freelist finds free runs in constant time (etcd runs bbolt so too).
		NoFreelistSync: true,
		FreelistType:   bbolt.FreelistMapType,
	})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("storage: database %s is in use by another wecom-oidc process (lock not acquired within %s): %w",
				path, opts.Timeout, err)
		}
		return nil, fmt.Errorf("storage: open database %s: %w", path, err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		for _, name := range allBuckets() {
			if _, err := tx.CreateBucketIfNotExists([]byte(name)); err != nil {
				return fmt.Errorf("create bucket %s: %w", name, err)
			}
		}
		meta := bkt(tx, bucketMeta)
		if v := meta.Get([]byte(metaSchemaKey)); v != nil {
			if len(v) != 8 {
				return fmt.Errorf("malformed schema version %x", v)
			}
			if got := binary.BigEndian.Uint64(v); got != schemaVersion {
				return fmt.Errorf("schema version %d, this build understands %d", got, schemaVersion)
			}
			return nil
		}
		return meta.Put([]byte(metaSchemaKey), binary.BigEndian.AppendUint64(nil, schemaVersion))
	})
	if err != nil {
		_ = db.Close() // the initialisation error is the one worth reporting
		return nil, fmt.Errorf("storage: initialise database %s: %w", path, err)
	}
	s := &Store{
		db: db, path: path, now: opts.Now, gcChunk: defaultGCChunk,
		clients:    recordCache[storage.Client]{clone: cloneClient},
		users:      recordCache[storage.User]{clone: cloneUser, limit: userCacheSize},
		writes:     make(chan writeRequest),
		stopWriter: make(chan struct{}),
		writerDone: make(chan struct{}),
	}
	go s.runWriter()
	return s, nil
}

// Close closes the database. Every later call, Close included, fails.
func (s *Store) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return fmt.Errorf("storage: close database %s: %w", s.path, bolterrors.ErrDatabaseNotOpen)
	}
	close(s.stopWriter)
	<-s.writerDone
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("storage: close database %s: %w", s.path, err)
	}
	return nil
}

// Health runs a read transaction that touches a bucket's first page.
func (s *Store) Health(ctx context.Context) (err error) {
	defer wrap(&err, "health")
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.db.View(func(tx *bbolt.Tx) error {
		b := bkt(tx, bucketMeta)
		if b == nil {
			return errors.New("meta bucket missing")
		}
		if k, _ := b.Cursor().First(); k == nil {
			return errors.New("meta bucket empty")
		}
		return nil
	})
}

// exists reports whether key may be in the bucket: a read that lets a write that would find
// nothing be answered without queueing for the writer. When the read fails it says yes, and the
// write reports the failure.
func (s *Store) exists(bucket, key string) bool {
	found := false
	err := s.db.View(func(tx *bbolt.Tx) error {
		found = bkt(tx, bucket).Get([]byte(key)) != nil
		return nil
	})
	return found || err != nil
}

// wrap prefixes a non-nil *err with "storage: " and the operation, keeping the chain for
// errors.Is. Used as `defer wrap(&err, "get client %q", id)`.
func wrap(err *error, format string, args ...any) {
	if *err != nil {
		*err = fmt.Errorf("storage: %s: %w", fmt.Sprintf(format, args...), *err)
	}
}

// --- JSON helpers (called inside transactions: bbolt's value slices live only as long as the
// transaction, and decoding copies everything out of them) ---

// getJSON decodes the value at key into a T; ok is false when the key is absent.
func getJSON[T any](b *bbolt.Bucket, key []byte) (v T, ok bool, err error) {
	raw := b.Get(key)
	if raw == nil {
		return v, false, nil
	}
	v, err = record.Decode[T](key, raw)
	return v, err == nil, err
}

// viewRecord reads the record at key in a read transaction. It returns ErrNotFound when the key
// is absent or when dead (nil for records without expiry) says the record has expired at now.
func viewRecord[T any](s *Store, ctx context.Context, bucket, key string, dead func(v T, now time.Time) bool) (v T, err error) {
	if err := ctx.Err(); err != nil {
		return v, err
	}
	now := s.now()
	err = s.db.View(func(tx *bbolt.Tx) error {
		got, ok, err := getJSON[T](bkt(tx, bucket), []byte(key))
		if err != nil {
			return err
		}
		if !ok || (dead != nil && dead(got, now)) {
			return storage.ErrNotFound
		}
		v = got
		return nil
	})
	return v, err
}

// viewAll reads every record of a bucket, in key order.
func viewAll[T any](s *Store, ctx context.Context, bucket string) (vs []T, err error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	err = s.db.View(func(tx *bbolt.Tx) error {
		vs, err = listJSON[T](bkt(tx, bucket))
		return err
	})
	if err != nil {
		return nil, err
	}
	return vs, nil
}

// listJSON decodes every value of a bucket, in key order.
func listJSON[T any](b *bbolt.Bucket) ([]T, error) {
	out := []T{}
	err := b.ForEach(func(_, raw []byte) error {
		var v T
		if err := json.Unmarshal(raw, &v); err != nil {
			return fmt.Errorf("decode record: %w", err)
		}
		out = append(out, v)
		return nil
	})
	return out, err
}

// --- expiry index ---

// indexKey is be64(expiry ns) ‖ bucket ‖ 0x00 ‖ key.
func indexKey(exp time.Time, bucket string, key []byte) []byte {
	k := make([]byte, 8, 8+len(bucket)+1+len(key))
	binary.BigEndian.PutUint64(k, record.ExpiryNanos(exp))
	k = append(k, bucket...)
	k = append(k, 0)
	return append(k, key...)
}

// parseIndexKey splits an index key; ok is false for a malformed key.
func parseIndexKey(k []byte) (nanos uint64, bucket string, key []byte, ok bool) {
	if len(k) < 10 {
		return 0, "", nil, false
	}
	rest := k[8:]
	i := bytes.IndexByte(rest, 0)
	if i <= 0 {
		return 0, "", nil, false
	}
	return binary.BigEndian.Uint64(k), string(rest[:i]), rest[i+1:], true
}

// putExpiring writes value (which must carry expires_at == exp) under key and keeps the expiry
// index in step: the entry of the record being replaced, if any, is removed first.
func putExpiring(tx *bbolt.Tx, bucket string, key, value []byte, exp time.Time) error {
	if len(key) == 0 {
		return errors.New("empty key")
	}
	b, idx := bkt(tx, bucket), bkt(tx, bucketExpiry)
	if old := b.Get(key); old != nil {
		oldExp, err := record.ExpiryOf(old)
		if err != nil {
			return err
		}
		if err := idx.Delete(indexKey(oldExp, bucket, key)); err != nil {
			return err
		}
	}
	if err := b.Put(key, value); err != nil {
		return err
	}
	return idx.Put(indexKey(exp, bucket, key), []byte{})
}

// putNew is putExpiring for a create: it fails with ErrAlreadyExists when key is taken, whether
// or not the existing record has expired (ids are random; a clash is a bug worth seeing).
func putNew(tx *bbolt.Tx, bucket string, key, value []byte, exp time.Time, what string) error {
	if len(key) == 0 {
		return fmt.Errorf("empty %s key", what)
	}
	if bkt(tx, bucket).Get(key) != nil {
		return fmt.Errorf("%s: %w", what, storage.ErrAlreadyExists)
	}
	return putExpiring(tx, bucket, key, value, exp)
}

// deleteExpiring removes key and its index entry; a missing key is not an error.
func deleteExpiring(tx *bbolt.Tx, bucket string, key []byte) error {
	b := bkt(tx, bucket)
	old := b.Get(key)
	if old == nil {
		return nil
	}
	exp, err := record.ExpiryOf(old)
	if err != nil {
		return err
	}
	if err := bkt(tx, bucketExpiry).Delete(indexKey(exp, bucket, key)); err != nil {
		return err
	}
	return b.Delete(key)
}

// DeleteExpired sweeps the expiry index from its start up to now, in transactions of at most
// gcChunk entries. Families, link entries and upstream tokens are removed too but are not
// counted: GCResult has no field for them (families and links are internal bookkeeping; the
// upstream token is a cache).
func (s *Store) DeleteExpired(ctx context.Context) (res storage.GCResult, err error) {
	defer wrap(&err, "delete expired")
	now := record.ExpiryNanos(s.now())
	for {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		var chunk storage.GCResult
		var seen int
		err := s.update(ctx, func(tx *bbolt.Tx) error {
			chunk, seen = storage.GCResult{}, 0 // reset: the function's effects are its return values
			idx := bkt(tx, bucketExpiry)
			var keys [][]byte
			c := idx.Cursor()
			for k, _ := c.First(); k != nil && len(keys) < s.gcChunk; k, _ = c.Next() {
				if len(k) >= 8 && binary.BigEndian.Uint64(k) > now {
					break
				}
				keys = append(keys, bytes.Clone(k)) // deleting under a live cursor is unsafe
			}
			seen = len(keys)
			for _, k := range keys {
				if err := sweep(tx, k, &chunk); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return res, err
		}
		record.AddSwept(&res, chunk)
		if seen < s.gcChunk {
			return res, nil
		}
	}
}

// sweep removes one due index entry and, unless the entry is stale (its record gone or now
// carrying another expiry), the record it names.
func sweep(tx *bbolt.Tx, k []byte, res *storage.GCResult) error {
	idx := bkt(tx, bucketExpiry)
	if err := idx.Delete(k); err != nil {
		return err
	}
	_, bucket, key, ok := parseIndexKey(k)
	if !ok || !expiringBucket(bucket) {
		return nil // malformed entry: dropping it is all there is to do
	}
	b := bkt(tx, bucket)
	raw := b.Get(key)
	if raw == nil {
		return nil
	}
	exp, err := record.ExpiryOf(raw)
	if err != nil || !bytes.Equal(indexKey(exp, bucket, key), k) {
		// Stale entry, or an undecodable record: never destroy data on a doubtful index entry.
		return nil
	}
	if bucket == bucketCodes {
		if code, err := record.Decode[record.Code](key, raw); err == nil {
			if err := bkt(tx, bucketARCodes).Delete(arCodeKey(code.AuthRequestID, string(key))); err != nil {
				return err
			}
		}
	}
	if err := b.Delete(key); err != nil {
		return err
	}
	if bucket == bucketSessions {
		// An expired session can no longer be ended, so its family links have no reader left.
		if err := dropSessionLinks(tx, string(key)); err != nil {
			return err
		}
	}
	record.Swept(res, bucket)
	return nil
}
