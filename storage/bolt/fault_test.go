package bolt

// Disk and file faults: a database on a read-only file system, an unwritable file or directory,
// a full disk and a file size limit. Open must fail with an error naming the file; a write that
// cannot be stored must fail (never be acknowledged and then lost), leave the database consistent,
// and the store must work again once there is room.
//
// Read-only mounts and a full disk need a tmpfs, so those tests need root with CAP_SYS_ADMIN (a
// container without it skips them, saying so). Root also ignores file modes, so as root the
// unwritable file and directory are made immutable (chattr +i) instead of chmod'ed. The file size
// limit (RLIMIT_FSIZE, in a child process) needs no privilege.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	bbolt "go.etcd.io/bbolt"

	"github.com/wecom-oidc/wecom-oidc/storage"
)

// mountTmpfs mounts a tmpfs of the given size ("4m") on a fresh directory and unmounts it when the
// test ends (after the stores opened later are closed). It skips the test where mounting is not
// allowed.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size+",mode=0700"); err != nil {
		t.Skipf("cannot mount a tmpfs here (%v): no CAP_SYS_ADMIN in this container?", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			_ = syscall.Unmount(dir, syscall.MNT_DETACH)
		}
	})
	return dir
}

// remount makes the tmpfs at dir read-only or writable again.
func remount(t *testing.T, dir string, readOnly bool) {
	t.Helper()
	flags := uintptr(syscall.MS_REMOUNT)
	if readOnly {
		flags |= syscall.MS_RDONLY
	}
	if err := syscall.Mount("", dir, "", flags, ""); err != nil {
		t.Fatalf("remount %s (read-only %t): %v", dir, readOnly, err)
	}
}

// Linux's FS_IOC_GETFLAGS / FS_IOC_SETFLAGS (_IOR/_IOW('f', 1|2, long)) and FS_IMMUTABLE_FL.
const (
	fsIocGetFlags   = 0x80086601
	fsIocSetFlags   = 0x40086602
	fsImmutableFlag = 0x00000010
)

// setImmutable sets or clears the immutable attribute (chattr +i / -i) of path.
func setImmutable(path string, on bool) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var flags int32
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), fsIocGetFlags, uintptr(unsafe.Pointer(&flags))); errno != 0 {
		return fmt.Errorf("get attributes of %s: %w", path, errno)
	}
	if on {
		flags |= fsImmutableFlag
	} else {
		flags &^= fsImmutableFlag
	}
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), fsIocSetFlags, uintptr(unsafe.Pointer(&flags))); errno != 0 {
		return fmt.Errorf("set attributes of %s: %w", path, errno)
	}
	return nil
}

// makeUnwritable makes path (a file or a directory) unwritable for this process: chmod for a
// normal user, the immutable attribute for root (who ignores modes). It is undone when the test
// ends. It returns how.
func makeUnwritable(t *testing.T, path string, mode os.FileMode) string {
	t.Helper()
	if os.Geteuid() != 0 {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Chmod(path, fi.Mode().Perm()) })
		return fmt.Sprintf("chmod %o", mode)
	}
	if err := setImmutable(path, true); err != nil {
		t.Skipf("root ignores file modes, and the immutable attribute is not available here: %v", err)
	}
	t.Cleanup(func() {
		if err := setImmutable(path, false); err != nil {
			t.Errorf("clear the immutable attribute: %v", err)
		}
	})
	return "chattr +i (root ignores file modes)"
}

// checkConsistent runs bbolt's consistency check over the whole file.
func checkConsistent(t *testing.T, s *Store) {
	t.Helper()
	err := s.db.View(func(tx *bbolt.Tx) error {
		var problems []string
		for err := range tx.Check() {
			problems = append(problems, err.Error())
		}
		if len(problems) > 0 {
			return errors.New(strings.Join(problems, "; "))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("the database is not consistent: %v", err)
	}
}

// seedClient writes one client and closes the store, so that a database file exists.
func seedClient(t *testing.T, path string) {
	t.Helper()
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateClient(context.Background(), storage.Client{ID: "seed", RedirectURIs: []string{"https://a/cb"}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// wantOpenError checks that Open failed with an error naming the file and the cause.
func wantOpenError(t *testing.T, path string, err error, cause ...string) {
	t.Helper()
	if err == nil {
		t.Fatal("Open succeeded")
	}
	if !strings.Contains(err.Error(), path) {
		t.Errorf("Open's error does not name the database file %s: %v", path, err)
	}
	found := false
	for _, c := range cause {
		found = found || strings.Contains(err.Error(), c)
	}
	if !found {
		t.Errorf("Open's error %q does not say why (one of %q)", err, cause)
	}
	t.Logf("Open: %v", err)
}

// TestOpenOnReadOnlyFileSystem: the file system holding the database is mounted read-only; Open
// fails at once with an error naming the file, and works again once it is writable.
func TestOpenOnReadOnlyFileSystem(t *testing.T) {
	dir := mountTmpfs(t, "4m")
	path := filepath.Join(dir, "wecom-oidc.db")
	seedClient(t, path)
	remount(t, dir, true)
	start := time.Now()
	s, err := Open(path, Options{})
	if err == nil {
		s.Close()
	}
	wantOpenError(t, path, err, "read-only file system")
	if !errors.Is(err, syscall.EROFS) {
		t.Errorf("Open's error does not wrap EROFS: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Open took %v to fail", d)
	}
	// A new database in a read-only directory tree fails the same way.
	nested := filepath.Join(dir, "state", "wecom-oidc.db")
	if s, err := Open(nested, Options{}); err == nil {
		s.Close()
		t.Error("Open created a database on a read-only file system")
	} else if !strings.Contains(err.Error(), nested) || !errors.Is(err, syscall.EROFS) {
		t.Errorf("Open of a new database on a read-only file system: %v", err)
	}

	remount(t, dir, false)
	s = openTest(t, path, Options{})
	if _, err := s.GetClient(context.Background(), "seed"); err != nil {
		t.Fatalf("after the remount: %v", err)
	}
	checkConsistent(t, s)
}

// TestOpenUnwritableFile: the database file exists but this process may not write it.
func TestOpenUnwritableFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wecom-oidc.db")
	seedClient(t, path)
	how := makeUnwritable(t, path, 0o400)
	t.Logf("file made unwritable with %s", how)
	s, err := Open(path, Options{Timeout: 200 * time.Millisecond})
	if err == nil {
		s.Close()
	}
	wantOpenError(t, path, err, "permission denied", "operation not permitted")
	if !errors.Is(err, os.ErrPermission) {
		t.Errorf("Open's error is not a permission error (errors.Is(err, fs.ErrPermission)): %v", err)
	}
}

// TestOpenInUnwritableDirectory: no database yet, and its directory is not writable.
func TestOpenInUnwritableDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	how := makeUnwritable(t, dir, 0o500)
	t.Logf("directory made unwritable with %s", how)
	path := filepath.Join(dir, "wecom-oidc.db")
	s, err := Open(path, Options{Timeout: 200 * time.Millisecond})
	if err == nil {
		s.Close()
	}
	wantOpenError(t, path, err, "permission denied", "operation not permitted")
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a file was left at %s: %v", path, err)
	}
}

// TestRootIgnoresFileModes documents why the tests above use chattr as root: a 0400 database is
// opened read-write by root. (The server does not refuse it; nothing to fix, but worth knowing.)
func TestRootIgnoresFileModes(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only root ignores file modes")
	}
	path := filepath.Join(t.TempDir(), "wecom-oidc.db")
	seedClient(t, path)
	if err := os.Chmod(path, 0o400); err != nil {
		t.Fatal(err)
	}
	s := openTest(t, path, Options{})
	if err := s.CreateClient(context.Background(), storage.Client{ID: "root-wrote", RedirectURIs: []string{"https://a/cb"}}); err != nil {
		t.Fatalf("root could not write a 0400 database: %v", err)
	}
	t.Log("root opens and writes a 0400 database: file modes are no protection against a process running as root")
}

// fillDisk writes a filler file in dir until the file system is full, then gives back about
// spare bytes; it returns the filler's path.
func fillDisk(t *testing.T, dir string, spare int64) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 64<<10)
	var n int64
	for range 1 << 14 { // bounded: 1 GiB
		w, err := f.Write(chunk)
		n += int64(w)
		if err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling the disk: %v", err)
			}
			break
		}
	}
	if err := f.Truncate(max(n-spare, 0)); err != nil {
		t.Fatal(err)
	}
	return path
}

// bigClient is a client of about 1.5 KiB, so that a few hundred fill the spare room.
func bigClient(id string) storage.Client {
	return storage.Client{ID: id, Name: strings.Repeat("n", 1500), RedirectURIs: []string{"https://app.example/" + id}}
}

// hugeClient is a client of about 32 KiB (overflow pages), to reach a size limit quickly.
func hugeClient(id string) storage.Client {
	return storage.Client{ID: id, Name: strings.Repeat("n", 32<<10), RedirectURIs: []string{"https://app.example/" + id}}
}

// TestDiskFull: the disk fills up while clients (one transaction each) and sessions (batched)
// are written. Every write either is acknowledged or fails with an error saying the disk is full
// and naming the file; the database stays consistent and readable; once room is made writes
// succeed again, and after a reopen every acknowledged record is there.
func TestDiskFull(t *testing.T) {
	ctx := context.Background()
	dir := mountTmpfs(t, "4m")
	path := filepath.Join(dir, "wecom-oidc.db")
	s := openTest(t, path, Options{})
	filler := fillDisk(t, dir, 256<<10)

	var mu sync.Mutex
	clients := map[string]bool{}  // acknowledged client ids
	sessions := map[string]bool{} // acknowledged session ids
	var firstErr error
	failures := 0
	write := func(i int) error {
		id := fmt.Sprintf("c%05d", i)
		err := s.CreateClient(ctx, bigClient(id))
		mu.Lock()
		defer mu.Unlock()
		if err == nil {
			clients[id] = true
			return nil
		}
		failures++
		if firstErr == nil {
			firstErr = err
		}
		return err
	}
	writeSessions := func(g, i int) error {
		id := fmt.Sprintf("s%d-%05d", g, i)
		err := s.CreateSession(ctx, storage.Session{ID: id, Subject: strings.Repeat("u", 500), ExpiresAt: time.Now().Add(time.Hour)})
		mu.Lock()
		defer mu.Unlock()
		if err == nil {
			sessions[id] = true
			return nil
		}
		failures++
		if firstErr == nil {
			firstErr = err
		}
		return err
	}

	// Write until the disk is full: clients from this goroutine, sessions (batched) from four
	// others; each writer stops at its first refusal.
	i := 0
	var wg sync.WaitGroup
	sessionErrs := make([]error, 4)
	for g := range 4 {
		wg.Go(func() {
			for j := range 20000 {
				if sessionErrs[g] = writeSessions(g, j); sessionErrs[g] != nil {
					return
				}
			}
		})
	}
	for ; i < 5000; i++ {
		if write(i) != nil {
			break
		}
	}
	wg.Wait()
	for g, err := range sessionErrs {
		if err == nil {
			t.Errorf("session writer %d never saw the disk full", g)
		} else if !errors.Is(err, syscall.ENOSPC) {
			t.Errorf("session writer %d: the error does not wrap ENOSPC: %v", g, err)
		}
	}
	if firstErr == nil {
		t.Fatalf("%d clients and %d sessions written to a 4 MiB file system without an error", len(clients), len(sessions))
	}
	t.Logf("disk full after %d clients and %d sessions acknowledged: %v", len(clients), len(sessions), firstErr)
	if !errors.Is(firstErr, syscall.ENOSPC) {
		t.Errorf("the error does not wrap ENOSPC: %v", firstErr)
	}
	if !strings.Contains(firstErr.Error(), path) {
		t.Errorf("the error does not name the database file %s: %v", path, firstErr)
	}

	// Still full: more writes fail (or fit into freed pages), reads work, the file is consistent.
	for j := 0; j < 50; j++ {
		i++
		write(i)
		writeSessions(9, j)
	}
	checkConsistent(t, s)
	for id := range clients {
		if _, err := s.GetClient(ctx, id); err != nil {
			t.Fatalf("acknowledged client %s unreadable on a full disk: %v", id, err)
		}
	}
	if err := s.Health(ctx); err != nil {
		t.Errorf("Health on a full disk: %v", err)
	}

	// Room again: every write succeeds.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	failuresBefore := failures
	for j := 0; j < 100; j++ {
		i++
		write(i)
		writeSessions(8, j)
	}
	if failures != failuresBefore {
		t.Fatalf("%d writes failed after room was made: %v", failures-failuresBefore, firstErr)
	}
	checkConsistent(t, s)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s = openTest(t, path, Options{})
	checkConsistent(t, s)
	lost := 0
	for id := range clients {
		if _, err := s.GetClient(ctx, id); err != nil {
			lost++
			t.Errorf("acknowledged client %s lost: %v", id, err)
		}
	}
	for id := range sessions {
		if _, err := s.GetSession(ctx, id); err != nil {
			lost++
			t.Errorf("acknowledged session %s lost: %v", id, err)
		}
	}
	t.Logf("disk full: %d writes refused; %d acknowledged writes checked after reopening, %d lost", failures, len(clients)+len(sessions), lost)
}

// TestReopenOnFullDisk: the store is closed while the disk is full and opened again before any
// room is made. Opening needs no new data; if it fails anyway, the error must say why.
func TestReopenOnFullDisk(t *testing.T) {
	ctx := context.Background()
	dir := mountTmpfs(t, "4m")
	path := filepath.Join(dir, "wecom-oidc.db")
	s := openTest(t, path, Options{})
	filler := fillDisk(t, dir, 128<<10)
	var acked []string
	var werr error
	for i := range 5000 {
		id := fmt.Sprintf("c%05d", i)
		if werr = s.CreateClient(ctx, bigClient(id)); werr != nil {
			break
		}
		acked = append(acked, id)
	}
	if werr == nil {
		t.Fatal("the disk never filled up")
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close on a full disk: %v", err)
	}
	s2, err := Open(path, Options{})
	if err != nil {
		t.Logf("Open on a full disk fails (the store writes at every open): %v", err)
		if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), path) {
			t.Errorf("Open on a full disk: the error should name the file and say the disk is full: %v", err)
		}
		if err := os.Remove(filler); err != nil {
			t.Fatal(err)
		}
		s2 = openTest(t, path, Options{})
	} else {
		t.Cleanup(func() { s2.Close() })
		t.Log("Open on a full disk succeeds")
	}
	checkConsistent(t, s2)
	for _, id := range acked {
		if _, err := s2.GetClient(ctx, id); err != nil {
			t.Errorf("acknowledged client %s lost: %v", id, err)
		}
	}
	t.Logf("%d acknowledged clients checked after reopening", len(acked))
}

// fsizeChildEnv makes the test binary the child of TestFileSizeLimit: the database path.
const fsizeChildEnv = "WECOM_OIDC_FSIZE_CHILD_DB"

// TestFileSizeLimit: a child process whose file size limit (RLIMIT_FSIZE) stops the database from
// growing — the way a quota or a full disk stops a file system that cannot be mounted here.
// Each write the child reports as acknowledged must be in the file afterwards, the first refusal
// must be a clear error, and the parent (without the limit) opens a consistent database.
func TestFileSizeLimit(t *testing.T) {
	if path := os.Getenv(fsizeChildEnv); path != "" {
		fsizeChild(path)
		return
	}
	path := filepath.Join(t.TempDir(), "wecom-oidc.db")
	seedClient(t, path)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	limit := fi.Size() + 256<<10
	cmd := exec.Command(os.Args[0], "-test.run=^TestFileSizeLimit$", "-test.count=1")
	cmd.Env = append(os.Environ(), fsizeChildEnv+"="+path, "WECOM_OIDC_FSIZE_LIMIT="+strconv.FormatInt(limit, 10))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	var report struct {
		Acked []string `json:"acked"`
		Err   string   `json:"err"`
		Size  int64    `json:"size"`
	}
	line := ""
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "FSIZE-REPORT ") {
			line = strings.TrimPrefix(l, "FSIZE-REPORT ")
		}
	}
	if err := json.Unmarshal([]byte(line), &report); err != nil {
		t.Fatalf("child report: %v\n%s", err, out)
	}
	t.Logf("file size limit %d bytes: %d writes acknowledged, then: %s (file %d bytes)", limit, len(report.Acked), report.Err, report.Size)
	if report.Err == "" {
		t.Fatal("the child never hit the file size limit")
	}
	if !strings.Contains(report.Err, path) || !strings.Contains(report.Err, "file too large") {
		t.Errorf("the error should name the file and say it cannot grow: %s", report.Err)
	}
	s := openTest(t, path, Options{})
	checkConsistent(t, s)
	for _, id := range report.Acked {
		if _, err := s.GetClient(context.Background(), id); err != nil {
			t.Errorf("acknowledged client %s lost: %v", id, err)
		}
	}
	// Without the limit the database grows again.
	if err := s.CreateClient(context.Background(), bigClient("after-the-limit")); err != nil {
		t.Fatalf("write without the limit: %v", err)
	}
	t.Logf("file size limit: %d acknowledged writes checked, 0 lost", len(report.Acked))
}

// fsizeChild writes clients under a file size limit until one fails, and prints a report.
func fsizeChild(path string) {
	limit, _ := strconv.ParseUint(os.Getenv("WECOM_OIDC_FSIZE_LIMIT"), 10, 64)
	signal.Ignore(syscall.SIGXFSZ) // a write past the limit fails with EFBIG instead of killing us
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: limit, Max: limit}); err != nil {
		fmt.Println("setrlimit:", err)
		os.Exit(1)
	}
	s, err := Open(path, Options{})
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(1)
	}
	var acked []string
	var werr error
	for i := range 2000 { // 32 KiB each: bounded at 64 MiB
		id := fmt.Sprintf("c%05d", i)
		if werr = s.CreateClient(context.Background(), hugeClient(id)); werr != nil {
			break
		}
		acked = append(acked, id)
	}
	// A few more after the first refusal: each is either refused or acknowledged.
	for i := range 20 {
		id := fmt.Sprintf("late%02d", i)
		if s.CreateClient(context.Background(), hugeClient(id)) == nil {
			acked = append(acked, id)
		}
	}
	if err := s.Close(); err != nil {
		fmt.Println("close:", err)
		os.Exit(1)
	}
	report := map[string]any{"acked": acked, "err": ""}
	if werr != nil {
		report["err"] = werr.Error()
	}
	if fi, err := os.Stat(path); err == nil {
		report["size"] = fi.Size()
	}
	raw, _ := json.Marshal(report)
	fmt.Println("FSIZE-REPORT " + string(raw))
}
