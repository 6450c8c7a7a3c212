package etcd

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/wecom-oidc/wecom-oidc/storage"
	"github.com/wecom-oidc/wecom-oidc/storage/internal/ctxio"
	"github.com/wecom-oidc/wecom-oidc/storage/internal/record"
)

// A backup is a JSON-lines stream:
//
//	{"format":"wecom-oidc/etcd-backup","version":1,"schema":1,"revision":R,"prefix":"/wecom-oidc/","created_at":…}
//	{"k":<base64 key relative to the prefix>,"v":<base64 value>}   one line per key, in key order
//	{"end":true,"keys":N}
//
// Keys are relative to the prefix, so a copy restores into any prefix of any cluster. Keys and
// values are base64 so that the copy is byte-exact whatever they hold. Leases are not copied:
// Restore derives them again from the records' expiries. The last line lets Restore tell a
// complete copy from a truncated one.
const (
	backupFormat  = "wecom-oidc/etcd-backup"
	backupVersion = 1
)

type backupHeader struct {
	Format    string    `json:"format"`
	Version   int       `json:"version"`
	Schema    int       `json:"schema"`
	Revision  int64     `json:"revision"`
	Prefix    string    `json:"prefix"`
	CreatedAt time.Time `json:"created_at"`
}

type backupLine struct {
	Key   []byte `json:"k,omitempty"`
	Value []byte `json:"v,omitempty"`
	End   bool   `json:"end,omitempty"`
	Keys  int    `json:"keys,omitempty"`
}

// Backup writes every key under the prefix as it is at one revision — the cluster's revision
// when Backup starts, so every write acknowledged before the call is in the copy — in the format
// above, which Restore loads. The keys are read in pages pinned to that revision, so the copy is
// consistent while the replicas go on writing; should etcd compact that revision away before the
// copy ends (auto-compaction with a retention shorter than the backup takes), Backup fails with
// etcd's ErrCompacted instead of writing a torn copy. ctx is checked before every write to w
// (every 32 KiB); n counts the bytes w accepted, also when the copy fails part way.
func (s *Store) Backup(ctx context.Context, w io.Writer) (n int64, err error) {
	defer wrap(&err, "backup")
	if err := s.usable(ctx); err != nil {
		return 0, err
	}
	cw := ctxio.NewWriter(ctx, w)
	bw := bufio.NewWriterSize(cw, 32<<10)
	enc := json.NewEncoder(bw)
	keys := 0
	// A linearizable read fixes the revision: every write acknowledged before it is at or below.
	rctx, cancel := s.rctx(ctx)
	resp, err := s.cli.Get(rctx, s.key(kindMeta, metaSchema))
	cancel()
	if err != nil {
		return 0, err
	}
	rev := resp.Header.Revision
	err = enc.Encode(backupHeader{
		Format: backupFormat, Version: backupVersion, Schema: schemaVersion,
		Revision: rev, Prefix: s.prefix, CreatedAt: s.now(),
	})
	if err == nil {
		_, err = s.scan(ctx, s.prefix, rev, func(key string, raw []byte) error {
			keys++
			return enc.Encode(backupLine{Key: []byte(strings.TrimPrefix(key, s.prefix)), Value: raw})
		})
	}
	if err == nil {
		err = enc.Encode(backupLine{End: true, Keys: keys})
	}
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		if cw.Err() != nil {
			// The error w (or ctx) gave is the one to report, and to match with errors.Is.
			err = fmt.Errorf("write copy: %w", cw.Err())
		}
		return cw.Written(), err
	}
	return cw.Written(), nil
}

// restoreBatch bounds one transaction of Restore: keys, and bytes (etcd refuses requests above
// --max-request-bytes, 1.5 MiB by default).
const (
	restoreBatchKeys  = 64
	restoreBatchBytes = 1 << 20
)

// Restore loads a copy written by Backup (by this or another Store, under any prefix) into this
// Store's prefix, which must hold nothing but the schema version Open wrote, and returns the
// number of keys it wrote. Expiring records, links and index entries get leases derived from
// their expiries, as if written now by the Store's clock. The keys are written in transactions
// of restoreBatchKeys, each refusing to overwrite a key (a writer that raced the restore makes it
// fail); a copy that fails part way — truncated, or refused — leaves what was written so far:
// delete the prefix (etcdctl del --prefix) before trying again. Replicas should not serve from
// the prefix until Restore has returned.
func (s *Store) Restore(ctx context.Context, r io.Reader) (n int, err error) {
	defer wrap(&err, "restore")
	if err := s.usable(ctx); err != nil {
		return 0, err
	}
	if err := s.checkEmpty(ctx); err != nil {
		return 0, err
	}
	dec := json.NewDecoder(bufio.NewReaderSize(r, 64<<10))
	var h backupHeader
	if err := dec.Decode(&h); err != nil {
		return 0, fmt.Errorf("read header: %w", err)
	}
	if h.Format != backupFormat || h.Version != backupVersion {
		return 0, fmt.Errorf("not a wecom-oidc etcd backup (format %q, version %d)", h.Format, h.Version)
	}
	if h.Schema != schemaVersion {
		return 0, fmt.Errorf("backup of schema version %d, this build understands %d", h.Schema, schemaVersion)
	}
	var batch []clientv3.Op
	var cmps []clientv3.Cmp
	size := 0
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		rctx, cancel := s.rctx(ctx)
		defer cancel()
		resp, err := s.cli.Txn(rctx).If(cmps...).Then(batch...).Commit()
		if err != nil {
			return err
		}
		if !resp.Succeeded {
			return fmt.Errorf("a key of the copy appeared under the prefix while restoring: %w", storage.ErrAlreadyExists)
		}
		n += len(batch)
		batch, cmps, size = batch[:0], cmps[:0], 0
		return nil
	}
	seen := 0
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		var l backupLine
		if err := dec.Decode(&l); err != nil {
			if errors.Is(err, io.EOF) {
				return n, fmt.Errorf("copy truncated after %d keys (no end line)", seen)
			}
			return n, fmt.Errorf("read key %d: %w", seen+1, err)
		}
		if l.End {
			if l.Keys != seen {
				return n, fmt.Errorf("copy announces %d keys and holds %d", l.Keys, seen)
			}
			break
		}
		seen++
		rel := string(l.Key)
		if rel == kindMeta+"/"+metaSchema {
			continue // Open wrote it, and the header's schema was checked
		}
		kind, id, ok := strings.Cut(rel, "/")
		if !ok || kind == "" || id == "" {
			return n, fmt.Errorf("malformed key %q", rel)
		}
		opts, err := s.restoreLease(ctx, kind, id, l.Value)
		if err != nil {
			return n, fmt.Errorf("key %q: %w", rel, err)
		}
		key := s.prefix + rel
		batch = append(batch, clientv3.OpPut(key, string(l.Value), opts...))
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(key), "=", 0))
		size += len(key) + len(l.Value)
		if len(batch) >= restoreBatchKeys || size >= restoreBatchBytes {
			if err := flush(); err != nil {
				return n, err
			}
		}
	}
	if err := flush(); err != nil {
		return n, err
	}
	return n, nil
}

// checkEmpty fails unless the prefix holds nothing but the schema version.
func (s *Store) checkEmpty(ctx context.Context) error {
	rctx, cancel := s.rctx(ctx)
	defer cancel()
	resp, err := s.cli.Get(rctx, s.prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithLimit(2))
	if err != nil {
		return err
	}
	for _, kv := range resp.Kvs {
		if string(kv.Key) != s.key(kindMeta, metaSchema) {
			return fmt.Errorf("prefix %q is not empty (it holds %q): %w", s.prefix, kv.Key, storage.ErrAlreadyExists)
		}
	}
	return nil
}

// restoreLease returns the put options giving a restored key the lease it would have been
// written with.
func (s *Store) restoreLease(ctx context.Context, kind, id string, raw []byte) ([]clientv3.OpOption, error) {
	if !leasedKind(kind) {
		return nil, nil
	}
	var exp time.Time
	if kind == kindExpiry {
		nanos, _, _, ok := parseIndexID(id)
		if !ok {
			return nil, fmt.Errorf("malformed expiry index entry")
		}
		if nanos > math.MaxInt64 {
			return nil, nil // beyond any lease
		}
		exp = time.Unix(0, int64(nanos))
	} else {
		var err error
		if exp, err = record.ExpiryOf(raw); err != nil {
			return nil, err
		}
	}
	return s.leaseOpts(ctx, exp)
}
