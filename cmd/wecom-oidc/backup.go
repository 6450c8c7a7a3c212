package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

const backupUsage = `usage: wecom-oidc backup --out FILE [--force] [--config FILE]
  writes a consistent copy of the store to FILE, while the server runs (through its admin
  socket) or when it is stopped. With storage.backend bolt the copy is a database file: restore
  by stopping the server and putting it in storage.path's place (or pointing storage.path at
  it). With etcd it is a JSON-lines copy of the prefix: restore it into an empty prefix with
  wecom-oidc storage restore --from FILE.`

// runBackup: `wecom-oidc backup --out FILE`.
func runBackup(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	flags, configPath := newFlagSet("backup", getenv, stderr)
	out := flags.String("out", "", "file to write the copy to (mode 0600)")
	force := flags.Bool("force", false, "replace FILE if it exists")
	pos, err := parseArgs(flags, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 || *out == "" {
		return errors.New(backupUsage)
	}
	cfg, err := LoadConfig(*configPath, getenv)
	if err != nil {
		return err
	}
	if same, _ := sameFile(*out, cfg.Storage.Path); same && cfg.Storage.Backend != BackendEtcd {
		return fmt.Errorf("--out %s is the database itself", *out)
	}
	return withAdmin(ctx, cfg, func(a admin) error {
		n, err := writeBackup(ctx, a, *out, *force)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "wrote %s (%d bytes)\n", *out, n)
		return nil
	})
}

// writeBackup writes a's backup to path.tmp (mode 0600), syncs it and renames it to path, so that
// path is either absent or a complete copy. Without force an existing path is refused.
func writeBackup(ctx context.Context, a admin, path string, force bool) (n int64, err error) {
	if !force {
		if _, err := os.Lstat(path); err == nil {
			return 0, fmt.Errorf("%s exists; choose another --out or add --force", path)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return 0, err
		}
	}
	tmp := path + ".tmp"
	if force {
		if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return 0, err
		}
	}
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return 0, fmt.Errorf("%s exists (another backup running, or one interrupted?); remove it or add --force", tmp)
		}
		return 0, err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if n, err = a.Backup(ctx, f); err != nil {
		return n, err
	}
	if err = f.Sync(); err != nil {
		return n, fmt.Errorf("sync %s: %w", tmp, err)
	}
	if err = f.Close(); err != nil {
		return n, fmt.Errorf("close %s: %w", tmp, err)
	}
	if !force {
		// Checked again: path may have appeared while the copy was written.
		if _, err = os.Lstat(path); err == nil {
			return n, fmt.Errorf("%s appeared while the backup was written; not replacing it (add --force)", path)
		}
	}
	if err = os.Rename(tmp, path); err != nil {
		return n, err
	}
	return n, syncDir(filepath.Dir(path))
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// sameFile reports whether a and b name one existing file.
func sameFile(a, b string) (bool, error) {
	fa, err := os.Stat(a)
	if err != nil {
		return false, err
	}
	fb, err := os.Stat(b)
	if err != nil {
		return false, err
	}
	return os.SameFile(fa, fb), nil
}
