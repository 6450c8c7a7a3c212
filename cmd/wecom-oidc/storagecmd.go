package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/wecom-oidc/wecom-oidc/storage/bolt"
	"github.com/wecom-oidc/wecom-oidc/storage/etcd"
)

const storageUsage = `usage: wecom-oidc storage restore --from FILE [--config FILE]
       wecom-oidc storage migrate --from BOLT_FILE --to etcd [--config FILE]
restore loads a copy written by wecom-oidc backup into the configured store, which must be empty:
  with storage.backend etcd, the prefix must hold no records (stop the replicas, delete the
  prefix with etcdctl del --prefix, restore, start them); with bolt, storage.path must not
  exist (the copy is checked and put there).
migrate moves a bolt database to etcd: --config is the configuration the replicas will run
  with (storage.backend etcd; its storage.etcd block is the target, whose prefix must be
  empty), --from the database the single server used (its storage.path). Stop that server
  first; the database is read, never written. Expired records are left out.`

// runStorage: `wecom-oidc storage restore|migrate`. Both work on the stores directly, never
// through a server: a server serving from the target would make it non-empty, and one serving
// from the bolt database holds its lock.
func runStorage(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New(storageUsage)
	}
	switch args[0] {
	case "restore":
		return runRestore(ctx, args[1:], getenv, stdout, stderr)
	case "migrate":
		return runMigrate(ctx, args[1:], getenv, stdout, stderr)
	}
	return errors.New(storageUsage)
}

// runRestore: `wecom-oidc storage restore --from FILE`.
func runRestore(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	flags, configPath := newFlagSet("storage restore", getenv, stderr)
	from := flags.String("from", "", "the backup to load")
	pos, err := parseArgs(flags, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 || *from == "" {
		return errors.New(storageUsage)
	}
	cfg, err := loadStorageConfig(*configPath, getenv)
	if err != nil {
		return err
	}
	f, err := os.Open(*from)
	if err != nil {
		return err
	}
	defer f.Close()
	if cfg.Storage.Backend == BackendEtcd {
		return restoreEtcd(ctx, cfg.Storage, f, stdout)
	}
	return restoreBolt(cfg.Storage.Path, f, stdout)
}

// loadStorageConfig loads the configuration and checks its storage block, the only one the
// storage commands use.
func loadStorageConfig(configPath string, getenv func(string) string) (*Config, error) {
	cfg, err := LoadConfig(configPath, getenv)
	if err != nil {
		return nil, err
	}
	var ps problems
	if cfg.Storage.validate(&ps); len(ps) > 0 {
		return nil, &ValidationError{Problems: ps}
	}
	return cfg, nil
}

// runMigrate: `wecom-oidc storage migrate --from BOLT_FILE --to etcd`. The target is the
// configured store — the configuration the replicas will run with — so that endpoints, TLS and
// credentials are given once, where the servers read them; the database is named by path,
// since with storage.backend etcd the configuration no longer points at it. --to says which
// way the move goes and must match storage.backend: run with the old bolt configuration by
// mistake, the command says so instead of guessing.
func runMigrate(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	flags, configPath := newFlagSet("storage migrate", getenv, stderr)
	from := flags.String("from", "", "the bolt database to move (the single server's storage.path); only read")
	to := flags.String("to", "", "the backend to move it to: etcd, the configuration's storage.etcd")
	pos, err := parseArgs(flags, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 || *from == "" || *to == "" {
		return errors.New(storageUsage)
	}
	if *to != BackendEtcd {
		return fmt.Errorf("--to %s: storage migrate moves a bolt database to etcd only (to move one to another machine, copy it with wecom-oidc backup)", *to)
	}
	cfg, err := loadStorageConfig(*configPath, getenv)
	if err != nil {
		return err
	}
	if cfg.Storage.Backend != BackendEtcd {
		return fmt.Errorf("--to etcd, but the configuration's storage.backend is %s: run storage migrate with the configuration "+
			"the replicas will use (storage.backend: etcd and its storage.etcd block)", cfg.Storage.Backend)
	}
	return migrateToEtcd(ctx, *from, cfg.Storage, stdout)
}

// etcdPrefix is the key prefix the etcd backend uses for ec: etcd.Open's defaulting.
func etcdPrefix(ec EtcdConfig) string {
	p := cmp.Or(ec.Prefix, etcd.DefaultPrefix)
	if !strings.HasSuffix(p, "/") {
		p += "/"
	}
	return p
}

// errRestoreStopped ends the export of a migration once the restore has stopped reading it.
var errRestoreStopped = errors.New("the restore stopped reading")

// migrateToEtcd streams the bolt database at from, as bolt.ExportEtcd translates it, into the
// configured etcd prefix through etcd.Store.Restore, which refuses a prefix holding records, and
// prints what moved, by kind.
func migrateToEtcd(ctx context.Context, from string, sc StorageConfig, stdout io.Writer) (err error) {
	s, err := openEtcd(ctx, sc.Etcd)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := s.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	type exported struct {
		res bolt.ExportResult
		err error
	}
	pr, pw := io.Pipe()
	done := make(chan exported, 1)
	go func() {
		res, err := bolt.ExportEtcd(ctx, from, pw, bolt.ExportOptions{})
		pw.CloseWithError(err) // nil: the restore reads the copy to its end
		done <- exported{res, err}
	}()
	n, err := s.Restore(ctx, pr)
	pr.CloseWithError(errRestoreStopped) // unblocks the export if the restore gave up early
	x := <-done
	if x.err != nil && !errors.Is(x.err, errRestoreStopped) {
		err = x.err // the restore only saw the copy break off; the export knows why
	}
	if err != nil {
		if n > 0 {
			return fmt.Errorf("%w\nthe prefix holds %d keys of the unfinished migration: delete them (etcdctl del --prefix %s) before trying again",
				err, n, etcdPrefix(sc.Etcd))
		}
		return err
	}
	fmt.Fprintf(stdout, "migrated bolt %s to %s: %d keys\n", from, sc.describe(), n)
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "KIND\tMOVED\tLEFT OUT (expired)")
	for _, kind := range bolt.ExportKinds() {
		fmt.Fprintf(tw, "%s\t%d\t%d\n", kind, x.res.Moved[kind], x.res.LeftOut[kind])
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	stats, err := s.Stats(ctx)
	if err != nil {
		return fmt.Errorf("migrated, but reading the counts back from etcd failed: %w", err)
	}
	var live []string
	for _, k := range slices.Sorted(maps.Keys(stats)) {
		live = append(live, fmt.Sprintf("%s %d", k, stats[k]))
	}
	fmt.Fprintf(stdout, "live in etcd now: %s\n", strings.Join(live, ", "))
	fmt.Fprintf(stdout, "%s was only read. Start the replicas on etcd; keep the database until they serve.\n", from)
	return nil
}

// restoreEtcd loads an etcd backup into the configured prefix (etcd.Store.Restore refuses a
// prefix holding records).
func restoreEtcd(ctx context.Context, sc StorageConfig, r io.Reader, stdout io.Writer) (err error) {
	s, err := openEtcd(ctx, sc.Etcd)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := s.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	n, err := s.Restore(ctx, r)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "restored %d keys into %s\n", n, sc.describe())
	return nil
}

// restoreBolt copies a bolt backup to path, which must not exist: to path.tmp first (0600),
// which must open as a wecom-oidc database, then renamed into place.
func restoreBolt(path string, r io.Reader, stdout io.Writer) (err error) {
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("%s exists; stop the server and move it away first", path)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp := path + ".restore"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	n, err := io.Copy(f, r)
	if err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	s, err := bolt.Open(tmp, bolt.Options{Timeout: time.Second})
	if err != nil {
		return fmt.Errorf("the copy does not open as a database: %w", err)
	}
	if err = s.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, path); err != nil {
		return err
	}
	if err = syncDir(filepath.Dir(path)); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "restored %s (%d bytes)\n", path, n)
	return nil
}
