package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Limits of the server's life cycle.
const (
	readyTimeout = 30 * time.Second // from exec to GET /readyz answering 200
	stopGrace    = 10 * time.Second // from SIGTERM to SIGKILL
	logTailBytes = 4 << 10          // how much of the server's log a failure prints
)

// server is the provider under test: one this program started (and stops), or one already
// running that it only talks to.
type server struct {
	baseURL      string // scheme://host:port, a loopback host
	clientID     string
	clientSecret string
	redirectURI  string

	pid         int    // 0: unknown; the server's CPU and memory are then not measured
	dbPath      string // "": unknown; the database size is then not reported
	adminSocket string // "": none known; no CPU profile
	started     bool   // true: this program started it and stops it in close

	cmd     *exec.Cmd
	exited  chan struct{} // closed when the started process has exited
	waitErr error         // the process's exit, valid once exited is closed
	dir     string        // temporary directory holding config, data, socket and log
	logPath string
}

// benchClientID is the confidential client written into the started server's configuration.
const benchClientID = "bench"

// benchRedirectURI is never requested: a login stops at the redirect that points at it. Port 9
// (discard) on loopback, so that a mistake could not reach anything.
const benchRedirectURI = "http://127.0.0.1:9/bench/callback"

// startServer runs `BINARY dev` on a free loopback port with a configuration of its own in a new
// temporary directory, and returns once GET /readyz answers 200. soak shortens the token and
// session lifetimes so that records expire during a soak. On error nothing is left running and
// the directory is removed; the server's log tail has been written to stderr.
func startServer(ctx context.Context, binary string, soak bool, stderr io.Writer) (*server, error) {
	bin, err := exec.LookPath(binary)
	if err != nil {
		return nil, fmt.Errorf("server binary: %w (build it with `make build`, or pass -server or -url)", err)
	}
	dir, err := os.MkdirTemp("", "wecom-oidc-bench-")
	if err != nil {
		return nil, fmt.Errorf("temporary directory: %w", err)
	}
	s := &server{
		clientID:     benchClientID,
		clientSecret: rand.Text() + rand.Text(), // 52 characters, 260 random bits
		redirectURI:  benchRedirectURI,
		adminSocket:  filepath.Join(dir, "admin.sock"),
		dbPath:       filepath.Join(dir, "data", "wecom-oidc.db"),
		started:      true,
		dir:          dir,
		logPath:      filepath.Join(dir, "server.log"),
	}
	fail := func(err error) (*server, error) {
		s.printLogTail(stderr)
		s.close(stderr)
		return nil, err
	}

	configPath := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(configPath, []byte(devConfig(s.clientSecret, s.adminSocket, soak)), 0o600); err != nil {
		return fail(fmt.Errorf("write config: %w", err))
	}
	addr, err := freeLoopbackAddr()
	if err != nil {
		return fail(err)
	}
	s.baseURL = "http://" + addr
	logFile, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fail(fmt.Errorf("server log: %w", err))
	}
	defer logFile.Close() // the child holds its own descriptor

	cmd := exec.Command(bin, "dev", "--config", configPath, "--listen", addr, "--data", filepath.Join(dir, "data"))
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = serverEnv(os.Environ())
	// The server must not outlive this program, even when this program is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fail(fmt.Errorf("start %s: %w", bin, err))
	}
	s.cmd, s.pid, s.exited = cmd, cmd.Process.Pid, make(chan struct{})
	go func() {
		s.waitErr = cmd.Wait()
		close(s.exited)
	}()
	if err := s.waitReady(ctx); err != nil {
		return fail(err)
	}
	return s, nil
}

// devConfig is the started server's configuration: quiet logs, the admin socket in our
// directory, one confidential client, and for a soak lifetimes short enough, and sweeps frequent
// enough, that the store reaches its steady state — as many records expire and are swept as are
// made — within the soak's first minute: from then on a leak is the only way to grow.
func devConfig(secret, socket string, soak bool) string {
	var b strings.Builder
	b.WriteString("log: {level: warn}\n")
	// Logins go straight to the simulated web login: the scan sign-in needs a second device.
	b.WriteString("dev: {desktop_scan: \"off\"}\n")
	fmt.Fprintf(&b, "admin: {socket: %s}\n", strconv.Quote(socket))
	if soak {
		b.WriteString("tokens: {access_token_ttl: 10s, id_token_ttl: 10s, refresh_token_ttl: 15s, session_ttl: 15s}\n")
		b.WriteString("storage: {sweep_interval: 2s}\n")
	}
	b.WriteString("clients:\n")
	fmt.Fprintf(&b, "  - id: %s\n", benchClientID)
	fmt.Fprintf(&b, "    secret: %s\n", strconv.Quote(secret))
	fmt.Fprintf(&b, "    redirect_uris: [%s]\n", strconv.Quote(benchRedirectURI))
	b.WriteString("    groups: [names]\n")
	return b.String()
}

// serverEnv is our environment without WECOM_OIDC_* variables, so that the configuration we
// wrote is the one measured.
func serverEnv(environ []string) []string {
	out := make([]string, 0, len(environ))
	for _, kv := range environ {
		if !strings.HasPrefix(kv, "WECOM_OIDC_") {
			out = append(out, kv)
		}
	}
	return out
}

// freeLoopbackAddr picks a free port by binding :0 and closing. Another process could take the
// port before the server binds it; the server then fails to start, and says so in its log.
func freeLoopbackAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("pick a port: %w", err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		return "", fmt.Errorf("pick a port: %w", err)
	}
	return addr, nil
}

// waitReady polls GET /readyz until it answers 200, the process exits, or readyTimeout passes.
func (s *server) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.baseURL+"/readyz", nil)
		if err != nil {
			return fmt.Errorf("readiness: %w", err)
		}
		if resp, err := client.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-s.exited:
			return fmt.Errorf("server exited before it was ready: %w", s.exitError())
		case <-ctx.Done():
			return fmt.Errorf("server not ready after %s: %w", readyTimeout, ctx.Err())
		case <-tick.C:
		}
	}
}

// exitError describes how the started process ended; call it after exited is closed.
func (s *server) exitError() error {
	if s.waitErr != nil {
		return s.waitErr
	}
	return errors.New("exit status 0")
}

// alive reports whether the started process still runs (always true for one we did not start).
func (s *server) alive() bool {
	if !s.started || s.exited == nil {
		return true
	}
	select {
	case <-s.exited:
		return false
	default:
		return true
	}
}

// close stops a server we started: SIGTERM, then SIGKILL after stopGrace, and removes its
// directory. A server that did not exit cleanly gets its log tail printed. It does nothing for
// a server we did not start.
func (s *server) close(stderr io.Writer) {
	if !s.started {
		return
	}
	if s.cmd != nil && s.exited != nil {
		clean := true
		select {
		case <-s.exited:
			clean = false // it died on its own: that is a failure worth a log tail
		default:
			_ = s.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-s.exited:
				clean = s.waitErr == nil
			case <-time.After(stopGrace):
				fmt.Fprintf(stderr, "wecom-oidc-bench: server did not stop within %s of SIGTERM; killing it\n", stopGrace)
				_ = s.cmd.Process.Kill()
				<-s.exited
				clean = false
			}
		}
		if !clean {
			fmt.Fprintf(stderr, "wecom-oidc-bench: server exit: %v\n", s.exitError())
			s.printLogTail(stderr)
		}
		s.cmd = nil
	}
	if s.dir != "" {
		if err := os.RemoveAll(s.dir); err != nil {
			fmt.Fprintf(stderr, "wecom-oidc-bench: remove %s: %v\n", s.dir, err)
		}
		s.dir = ""
	}
}

// printLogTail writes the last logTailBytes of the started server's log to w.
func (s *server) printLogTail(w io.Writer) {
	if s.logPath == "" {
		return
	}
	data, err := os.ReadFile(s.logPath)
	if err != nil || len(data) == 0 {
		return
	}
	if len(data) > logTailBytes {
		data = data[len(data)-logTailBytes:]
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			data = data[i+1:]
		}
	}
	fmt.Fprintf(w, "--- server log (tail of %s) ---\n%s--- end of server log ---\n", s.logPath, data)
}

// dbSize is the database file's size in bytes; ok is false when unknown.
func (s *server) dbSize() (size int64, ok bool) {
	if s.dbPath == "" {
		return 0, false
	}
	fi, err := os.Stat(s.dbPath)
	if err != nil {
		return 0, false
	}
	return fi.Size(), true
}

// clockTicks is the unit of utime and stime in /proc/PID/stat: USER_HZ, which Linux fixes at
// 100 for user space on every architecture Go supports (getconf CLK_TCK).
const clockTicks = 100

// procCPU is the CPU time (user + system, all threads) a process has used so far; proc is a
// PID or "self".
func procCPU(proc string) (time.Duration, error) {
	data, err := os.ReadFile("/proc/" + proc + "/stat")
	if err != nil {
		return 0, fmt.Errorf("cpu time: %w", err)
	}
	ticks, err := parseStatCPU(data)
	if err != nil {
		return 0, fmt.Errorf("cpu time of %s: %w", proc, err)
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// parseStatCPU returns utime + stime, in clock ticks, from the contents of /proc/PID/stat.
// The command name (field 2) is in parentheses and may itself hold spaces and parentheses, so
// the fields are counted from the last ')': state is field 3, utime 14 and stime 15.
func parseStatCPU(data []byte) (uint64, error) {
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, errors.New("malformed stat: no command name")
	}
	fields := strings.Fields(string(data[i+1:]))
	const utime, stime = 14 - 3, 15 - 3 // indexes counted from state (field 3)
	if len(fields) <= stime {
		return 0, fmt.Errorf("malformed stat: %d fields after the command name", len(fields))
	}
	u, err := strconv.ParseUint(fields[utime], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("malformed stat utime: %w", err)
	}
	s, err := strconv.ParseUint(fields[stime], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("malformed stat stime: %w", err)
	}
	return u + s, nil
}

// procMem is a process's resident memory in bytes: peak (VmHWM) and now (VmRSS), and of the
// latter the anonymous part (heap, stacks) and the file-backed part — for the provider mostly
// the pages of its bbolt database, which is mapped into memory and so counts in its RSS.
// Anon and File are -1 on kernels older than 4.5, which do not report them.
type procMem struct {
	Peak int64
	Now  int64
	Anon int64
	File int64
}

// readProcMem reads /proc/PID/status.
func readProcMem(pid int) (procMem, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return procMem{}, fmt.Errorf("memory: %w", err)
	}
	m, err := parseStatusMem(data)
	if err != nil {
		return procMem{}, fmt.Errorf("memory of %d: %w", pid, err)
	}
	return m, nil
}

// parseStatusMem reads VmHWM, VmRSS, RssAnon and RssFile ("VmRSS:\t   12345 kB") from
// /proc/PID/status.
func parseStatusMem(data []byte) (procMem, error) {
	m := procMem{Anon: -1, File: -1}
	var haveHWM, haveRSS bool
	for line := range strings.Lines(string(data)) {
		key, value, ok := strings.Cut(line, ":")
		if !ok || (key != "VmHWM" && key != "VmRSS" && key != "RssAnon" && key != "RssFile") {
			continue
		}
		f := strings.Fields(value)
		if len(f) != 2 || f[1] != "kB" {
			return procMem{}, fmt.Errorf("malformed status line %q", strings.TrimSpace(line))
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return procMem{}, fmt.Errorf("malformed status line %q: %w", strings.TrimSpace(line), err)
		}
		switch key {
		case "VmHWM":
			m.Peak, haveHWM = kb<<10, true
		case "VmRSS":
			m.Now, haveRSS = kb<<10, true
		case "RssAnon":
			m.Anon = kb << 10
		case "RssFile":
			m.File = kb << 10
		}
	}
	if !haveHWM || !haveRSS {
		return procMem{}, errors.New("status has no VmHWM or VmRSS (a kernel thread, or not Linux?)")
	}
	return m, nil
}

// cpuMeter reads the CPU time of the server (when its PID is known) and of this program.
type cpuMeter struct {
	serverPID int
}

// cpuSample is one reading; ServerOK is false when the server's time could not be read.
type cpuSample struct {
	Server   time.Duration
	ServerOK bool
	Bench    time.Duration
}

func (m cpuMeter) sample() cpuSample {
	var s cpuSample
	if m.serverPID > 0 {
		if d, err := procCPU(strconv.Itoa(m.serverPID)); err == nil {
			s.Server, s.ServerOK = d, true
		}
	}
	if d, err := procCPU("self"); err == nil {
		s.Bench = d
	}
	return s
}

// maxProfile bounds a CPU profile read from the admin socket.
const maxProfile = 64 << 20

// fetchProfile asks a server we started, through its admin socket, for a CPU profile of the
// next seconds (GET /debug/pprof/profile) and writes it to path.
func (s *server) fetchProfile(ctx context.Context, seconds int, path string) error {
	body, err := s.adminGet(ctx, "/debug/pprof/profile?seconds="+strconv.Itoa(seconds), time.Duration(seconds)*time.Second+30*time.Second)
	if err != nil {
		return fmt.Errorf("cpu profile: %w", err)
	}
	if err := os.WriteFile(path, body, 0o644); err != nil {
		return fmt.Errorf("cpu profile: %w", err)
	}
	return nil
}

// liveHeap asks the server, through its admin socket, to collect garbage and report its heap
// (GET /debug/pprof/heap?gc=1&debug=1, whose text ends with runtime.MemStats): the bytes of
// live objects, which only a leak makes grow over a steady load.
func (s *server) liveHeap(ctx context.Context) (int64, error) {
	body, err := s.adminGet(ctx, "/debug/pprof/heap?gc=1&debug=1", 30*time.Second)
	if err != nil {
		return 0, fmt.Errorf("heap: %w", err)
	}
	return parseHeapAlloc(string(body))
}

// parseHeapAlloc reads "# HeapAlloc = N" from a debug=1 heap profile.
func parseHeapAlloc(text string) (int64, error) {
	for line := range strings.Lines(text) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "# HeapAlloc = "); ok {
			return strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, errors.New("heap profile without HeapAlloc")
}

// adminGet GETs path from the admin socket of a server we started.
func (s *server) adminGet(ctx context.Context, path string, timeout time.Duration) ([]byte, error) {
	if s.adminSocket == "" {
		return nil, errors.New("no admin socket known")
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", s.adminSocket)
		},
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: timeout}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://unix"+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxProfile))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s over %s: %s", req.URL.Path, s.adminSocket, resp.Status)
	}
	return body, nil
}

// loadAverage is the machine's load average over 1, 5 and 15 minutes ("" when unknown).
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}
