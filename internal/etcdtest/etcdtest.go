// Package etcdtest starts a throwaway etcd server for tests: the etcd binary of Debian's
// etcd-server package (or $ETCD_BIN), a single-member cluster listening on free loopback ports,
// its data directory in a temporary directory, with etcd's default durability (fsync on). The
// storage/etcd tests start one for the package in TestMain; the multi-replica test of
// cmd/wecom-oidc starts one of its own. On Linux the server dies with the test binary, so none
// outlives a test that timed out or crashed.
package etcdtest

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// InstallHint says how to get an etcd binary.
const InstallHint = "install Debian's etcd-server package (apt-get update && apt-get install -y etcd-server) " +
	"or point ETCD_BIN at an etcd binary"

// Server is a running etcd started by Start.
type Server struct {
	// Endpoint is the client URL, http://127.0.0.1:<port>.
	Endpoint string

	cmd     *exec.Cmd
	dir     string
	exited  chan struct{}
	waitErr error
}

// Start finds the etcd binary and starts a single-member cluster on free loopback ports,
// retrying with other ports when the ones picked were taken meanwhile. Stop it with Stop.
func Start() (*Server, error) {
	bin := os.Getenv("ETCD_BIN")
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("etcd"); err != nil {
			bin = "/usr/bin/etcd"
		}
	}
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("no etcd binary (%v): %s", err, InstallHint)
	}
	var errs []error
	for range 3 {
		s, err := tryStart(bin)
		if err == nil {
			return s, nil
		}
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("start %s: %w", bin, errors.Join(errs...))
}

// MustStart starts a server for one test and stops it when the test ends; the test fails when
// there is no etcd binary or it does not start.
func MustStart(tb testing.TB) *Server {
	tb.Helper()
	s, err := Start()
	if err != nil {
		tb.Fatalf("test etcd: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.Stop(); err != nil {
			tb.Errorf("stopping the test etcd: %v", err)
		}
	})
	return s
}

func tryStart(bin string) (*Server, error) {
	clientPort, err := FreePort()
	if err != nil {
		return nil, err
	}
	peerPort, err := FreePort()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "wecom-oidc-etcd-test-")
	if err != nil {
		return nil, err
	}
	clientURL := fmt.Sprintf("http://127.0.0.1:%d", clientPort)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", peerPort)
	logPath := filepath.Join(dir, "etcd.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	defer logFile.Close() // the child has its own descriptor
	cmd := exec.Command(bin,
		"--name", "wecom-oidc-test",
		"--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", clientURL,
		"--advertise-client-urls", clientURL,
		"--listen-peer-urls", peerURL,
		"--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "wecom-oidc-test="+peerURL,
		"--initial-cluster-state", "new",
		"--initial-cluster-token", "wecom-oidc-test",
		"--logger", "zap",
		"--log-outputs", "stderr",
	)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = childProcAttr()
	if err := cmd.Start(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	s := &Server{Endpoint: clientURL, cmd: cmd, dir: dir, exited: make(chan struct{})}
	go func() {
		s.waitErr = cmd.Wait()
		close(s.exited)
	}()
	if err := s.waitReady(30 * time.Second); err != nil {
		_ = s.Stop()
		tail, _ := os.ReadFile(logPath)
		if len(tail) > 4000 {
			tail = tail[len(tail)-4000:]
		}
		return nil, fmt.Errorf("%w; etcd's log ends with:\n%s", err, tail)
	}
	return s, nil
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitReady polls etcd's /health until it reports healthy, the process exits, or timeout.
func (s *Server) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: time.Second}
	for {
		select {
		case <-s.exited:
			return fmt.Errorf("etcd exited before answering: %v", s.waitErr)
		default:
		}
		resp, err := client.Get(s.Endpoint + "/health")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK && strings.Contains(string(body), `"health":"true"`) {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("etcd did not report healthy within %s (last error %v)", timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Stop sends SIGTERM, then SIGKILL after ten seconds, and removes the data directory. Stopping
// a stopped server does nothing.
func (s *Server) Stop() error {
	defer os.RemoveAll(s.dir)
	select {
	case <-s.exited:
		return nil
	default:
	}
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("SIGTERM: %w", err)
	}
	select {
	case <-s.exited:
		return nil
	case <-time.After(10 * time.Second):
	}
	if err := s.cmd.Process.Kill(); err != nil {
		return fmt.Errorf("SIGKILL: %w", err)
	}
	<-s.exited
	return errors.New("etcd ignored SIGTERM for 10s and was killed")
}
