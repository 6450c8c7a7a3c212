package bolt

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"time"

	bbolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/wecom-oidc/wecom-oidc/storage/internal/record"
)

// This file moves a database to the etcd backend: ExportEtcd writes the database file as the
// copy that storage/etcd's Store.Restore loads into an empty prefix (`wecom-oidc storage
// migrate`). The records are the same JSON in both backends (package record); what differs is
// how the keys of the link kinds are spelled and the expiry index, so the translation is of keys
// only, record by record.
//
// The copy is in the format of storage/etcd's backup.go, and its keys are those of the layout in
// storage/etcd's package documentation; this package cannot import storage/etcd (the backends
// are siblings), so both are restated here. TestExportEtcdMatchesEtcd pins them: a database and
// an etcd prefix that went through the same operations must export and back up to the same keys
// and values, and the export must restore to them.

// The etcd backup format: a header line, one line per key, an end line counting the keys.
const (
	etcdBackupFormat  = "wecom-oidc/etcd-backup"
	etcdBackupVersion = 1
	// etcdSchemaVersion is storage/etcd's schemaVersion: its layout, which ExportEtcd writes.
	etcdSchemaVersion = 1
	// etcdKindExpiry is the etcd kind of the expiry index.
	etcdKindExpiry = "expiry"
)

type etcdBackupHeader struct {
	Format    string    `json:"format"`
	Version   int       `json:"version"`
	Schema    int       `json:"schema"`
	Revision  int64     `json:"revision"`
	Prefix    string    `json:"prefix"`
	CreatedAt time.Time `json:"created_at"`
	// Source says where the copy came from; storage/etcd's Restore does not read it.
	Source string `json:"source,omitempty"`
}

type etcdBackupLine struct {
	Key   []byte `json:"k,omitempty"`
	Value []byte `json:"v,omitempty"`
	End   bool   `json:"end,omitempty"`
	Keys  int    `json:"keys,omitempty"`
}

// ExportOptions tune ExportEtcd. The zero value is ready to use.
type ExportOptions struct {
	// Timeout is how long ExportEtcd waits for the file lock of a process using the database;
	// 0 means 1s.
	Timeout time.Duration
	// Now decides which records have expired and are left out; nil means time.Now.
	Now func() time.Time
}

// ExportResult says what ExportEtcd wrote. The maps are keyed by package record's kinds
// ("clients", "refresh_tokens", "session_families", ...).
type ExportResult struct {
	// Moved counts the records written, by kind; links count as records of their kind.
	Moved map[string]int
	// LeftOut counts the records not written, by kind: expired ones, and links that lead from
	// a code or session left out (nothing reads them any more).
	LeftOut map[string]int
	// Keys is the number of etcd keys in the copy: the records and their expiry index entries.
	Keys int
}

// ExportKinds lists the kinds of record ExportEtcd moves, in the order it writes them (and
// reports them in): everything a database holds but its expiry index and schema version, which
// the etcd backend keeps its own way.
func ExportKinds() []string {
	return []string{
		record.KindClients, record.KindUsers, record.KindKeys, record.KindUpstream, record.KindAssertions,
		record.KindAuthRequests, record.KindCodes, record.KindARCodes, record.KindLoginStates,
		record.KindScanLogins, record.KindDeviceAuths, record.KindDeviceUserCodes,
		record.KindSessions, record.KindSessionFamilies, record.KindFamilies, record.KindRefreshTokens,
		record.KindAccessTokens, record.KindARTokens,
	}
}

// ExportEtcd writes the database at path to w as a copy that storage/etcd's Store.Restore
// loads: every record that has not expired by opts.Now, under the etcd key of its kind, and an
// expiry index entry for each record that expires. Records keep their bytes; what they say —
// revocations, rotated refresh tokens, used codes, the links that revocation follows — comes
// along unchanged.
//
// The database is opened read-only, under bbolt's shared lock: a process that has it open
// (a running server) makes ExportEtcd fail after opts.Timeout, and the file is not written to.
// Everything is read in one read transaction, so the copy is consistent. ctx is checked before
// every key written. The result counts what was written also when the export fails part way.
func ExportEtcd(ctx context.Context, path string, w io.Writer, opts ExportOptions) (res ExportResult, err error) {
	defer wrap(&err, "export %s", path)
	if opts.Timeout <= 0 {
		opts.Timeout = defaultTimeout
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	res = ExportResult{Moved: map[string]int{}, LeftOut: map[string]int{}}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	// A missing or empty file is refused before bbolt sees it: read-only, bbolt would try to
	// initialise an empty one and fail with a less helpful error.
	info, err := os.Stat(path)
	if err != nil {
		return res, err
	}
	if !info.Mode().IsRegular() || info.Size() == 0 {
		return res, errors.New("not a wecom-oidc database (not a regular file, or empty)")
	}
	db, err := bbolt.Open(path, fileMode, &bbolt.Options{Timeout: opts.Timeout, ReadOnly: true})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return res, fmt.Errorf("the database is in use, by a running server or another process (lock not acquired within %s); stop it first: %w",
				opts.Timeout, err)
		}
		return res, err
	}
	defer func() {
		if cerr := db.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	bw := bufio.NewWriterSize(w, 32<<10)
	x := &exporter{ctx: ctx, enc: json.NewEncoder(bw), now: opts.Now(), res: &res,
		codes: map[string]time.Time{}, sessions: map[string]bool{}}
	err = db.View(func(tx *bbolt.Tx) error {
		if err := checkExportable(tx); err != nil {
			return err
		}
		err := x.enc.Encode(etcdBackupHeader{
			Format: etcdBackupFormat, Version: etcdBackupVersion, Schema: etcdSchemaVersion,
			CreatedAt: x.now, Source: "bolt " + path,
		})
		if err != nil {
			return err
		}
		for _, kind := range ExportKinds() {
			if err := x.exportKind(tx, kind); err != nil {
				return fmt.Errorf("%s: %w", kind, err)
			}
		}
		return x.enc.Encode(etcdBackupLine{End: true, Keys: res.Keys})
	})
	if err != nil {
		return res, err
	}
	return res, bw.Flush()
}

// checkExportable fails unless tx is a wecom-oidc database of the schema this build reads, all
// of whose buckets it knows: a bucket it would not move must not be lost silently.
func checkExportable(tx *bbolt.Tx) error {
	meta := bkt(tx, bucketMeta)
	if meta == nil {
		return errors.New("not a wecom-oidc database (no meta bucket)")
	}
	v := meta.Get([]byte(metaSchemaKey))
	if len(v) != 8 {
		return fmt.Errorf("not a wecom-oidc database (schema version %x)", v)
	}
	if got := binary.BigEndian.Uint64(v); got != schemaVersion {
		return fmt.Errorf("schema version %d, this build exports %d", got, schemaVersion)
	}
	known := map[string]bool{bucketExpiry: true, bucketMeta: true}
	for _, kind := range ExportKinds() {
		known[kind] = true
	}
	return tx.ForEach(func(name []byte, _ *bbolt.Bucket) error {
		if !known[string(name)] {
			return fmt.Errorf("bucket %q is unknown to this build; not exporting a part of the database", name)
		}
		return nil
	})
}

// exporter is one run of ExportEtcd.
type exporter struct {
	ctx context.Context
	enc *json.Encoder
	now time.Time
	res *ExportResult
	// codes are the exported codes' expiries, by hash (auth_request_codes links take theirs);
	// sessions are the exported sessions (session_families links of others are left out).
	codes    map[string]time.Time
	sessions map[string]bool
}

// exportKind writes the records of one bucket. Bucket order matters: codes before their links,
// sessions before theirs.
func (x *exporter) exportKind(tx *bbolt.Tx, kind string) error {
	b := bkt(tx, kind)
	if b == nil {
		return nil // nothing of the kind was ever written
	}
	return b.ForEach(func(k, v []byte) error {
		var err error
		switch kind {
		case record.KindClients, record.KindUsers, record.KindKeys:
			err = x.put(kind, string(k), v)
		case record.KindARCodes:
			err = x.exportARCode(k)
		case record.KindARTokens:
			err = x.exportARToken(k, v)
		case record.KindSessionFamilies:
			err = x.exportSessionFamily(k, v)
		default:
			err = x.exportExpiring(kind, string(k), v)
		}
		if err != nil {
			return fmt.Errorf("key %q: %w", k, err)
		}
		return nil
	})
}

// exportExpiring writes a record that carries its expiry, unless it has expired.
func (x *exporter) exportExpiring(kind, id string, v []byte) error {
	exp, err := record.ExpiryOf(v)
	if err != nil {
		return err
	}
	if record.Expired(exp, x.now) {
		x.res.LeftOut[kind]++
		return nil
	}
	switch kind {
	case record.KindCodes:
		x.codes[id] = exp
	case record.KindSessions:
		x.sessions[id] = true
	}
	return x.putExpiring(kind, id, v, exp)
}

// exportARCode writes an auth_request_codes link. In bolt it is a bare key; in etcd it holds the
// expiry of its code, which it shares.
func (x *exporter) exportARCode(k []byte) error {
	arID, hash, ok := splitLenPrefix(k)
	if !ok || len(hash) == 0 {
		return errors.New("malformed link key")
	}
	exp, live := x.codes[string(hash)]
	if !live {
		x.res.LeftOut[record.KindARCodes]++
		return nil
	}
	v, err := record.Encode(record.Link{ExpiresAt: exp})
	if err != nil {
		return err
	}
	return x.putExpiring(record.KindARCodes, url.PathEscape(arID)+"/"+string(hash), v, exp)
}

// exportARToken writes an auth_request_tokens link: len16(ar) ‖ ar ‖ kind ‖ id in bolt,
// <escaped ar>/<kind>/<id> (the replay marker <escaped ar>/x) in etcd.
func (x *exporter) exportARToken(k, v []byte) error {
	arID, rest, ok := splitLenPrefix(k)
	if !ok || len(rest) == 0 {
		return errors.New("malformed link key")
	}
	id := url.PathEscape(arID) + "/"
	switch link, target := rest[0], string(rest[1:]); {
	case link == linkReplayed && target == "":
		id += string(linkReplayed)
	case (link == linkAccess || link == linkFamily) && target != "":
		id += string(link) + "/" + target
	default:
		return errors.New("malformed link key")
	}
	return x.exportExpiring(record.KindARTokens, id, v) // a record.Link in both backends
}

// exportSessionFamily writes a session_families link, unless its session was left out.
func (x *exporter) exportSessionFamily(k, v []byte) error {
	sessionID, familyID, ok := splitLenPrefix(k)
	if !ok || len(familyID) == 0 {
		return errors.New("malformed link key")
	}
	if !x.sessions[sessionID] {
		x.res.LeftOut[record.KindSessionFamilies]++
		return nil
	}
	return x.exportExpiring(record.KindSessionFamilies, url.PathEscape(sessionID)+"/"+string(familyID), v)
}

// putExpiring writes a record and its expiry index entry
// (expiry/<16 hex digits of record.ExpiryNanos>/<kind>/<id>, empty).
func (x *exporter) putExpiring(kind, id string, v []byte, exp time.Time) error {
	if err := x.put(kind, id, v); err != nil {
		return err
	}
	return x.line(fmt.Sprintf("%s/%016x/%s/%s", etcdKindExpiry, record.ExpiryNanos(exp), kind, id), nil)
}

// put writes a record under <kind>/<id> and counts it.
func (x *exporter) put(kind, id string, v []byte) error {
	if err := x.line(kind+"/"+id, v); err != nil {
		return err
	}
	x.res.Moved[kind]++
	return nil
}

// line writes one key (relative to the prefix) and its value.
func (x *exporter) line(key string, v []byte) error {
	if err := x.ctx.Err(); err != nil {
		return err
	}
	if err := x.enc.Encode(etcdBackupLine{Key: []byte(key), Value: v}); err != nil {
		return err
	}
	x.res.Keys++
	return nil
}

// splitLenPrefix splits a link key len16(id) ‖ id ‖ rest; ok is false when it is too short.
func splitLenPrefix(k []byte) (id string, rest []byte, ok bool) {
	if len(k) < 2 {
		return "", nil, false
	}
	n := int(binary.BigEndian.Uint16(k))
	if n == 0 || len(k) < 2+n {
		return "", nil, false
	}
	return string(k[2 : 2+n]), k[2+n:], true
}
