package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/wecom-oidc/wecom-oidc/storage/bolt"
)

const storageUsage = `usage: wecom-oidc storage restore --from FILE [--config FILE]
  loads a copy written by wecom-oidc backup into the configured store, which must be empty:
  with storage.backend etcd, the prefix must hold no records (stop the replicas, delete the
  prefix with etcdctl del --prefix, restore, start them); with bolt, storage.path must not
  exist (the copy is checked and put there).`

// runStorage: `wecom-oidc storage restore --from FILE`. It works on the store directly, never
// through a server: a server serving from the store would make it non-empty.
func runStorage(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "restore" {
		return errors.New(storageUsage)
	}
	flags, configPath := newFlagSet("storage restore", getenv, stderr)
	from := flags.String("from", "", "the backup to load")
	pos, err := parseArgs(flags, args[1:])
	if err != nil {
		return err
	}
	if len(pos) > 0 || *from == "" {
		return errors.New(storageUsage)
	}
	cfg, err := LoadConfig(*configPath, getenv)
	if err != nil {
		return err
	}
	var ps problems // only the storage block matters here
	if cfg.Storage.validate(&ps); len(ps) > 0 {
		return &ValidationError{Problems: ps}
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
