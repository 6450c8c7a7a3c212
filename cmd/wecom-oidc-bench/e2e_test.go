package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestEndToEnd builds the real server and runs every phase for a second against it, with the
// targets set so low that -check must pass: what is tested is the tool, not the server's speed.
func TestEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts the server")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to build the server with")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "wecom-oidc")
	build := exec.Command(goBin, "build", "-o", bin, "../wecom-oidc")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the server: %v\n%s", err, out)
	}

	jsonPath := filepath.Join(dir, "result.json")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	err = run(ctx, []string{
		"-server", bin, "-concurrency", "4", "-duration", "1s", "-warmup", "0s", "-ceiling-duration", "1s",
		"-json", jsonPath, "-check",
		"-target-logins", "0", "-target-refresh", "0", "-target-userinfo", "0",
		"-target-login-p99", "30s", "-target-peak-mib", "4096",
	}, func(string) string { return "" }, &stdout, &stderr)
	t.Logf("report:\n%s", stdout.String())
	if err != nil {
		t.Fatalf("run: %v\nstderr:\n%s", err, stderr.String())
	}
	for _, want := range []string{"ceilings", "logins", "exchange", "refresh", "userinfo", "server memory: peak RSS", "PASS"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("report lacks %q", want)
		}
	}
	for _, bad := range []string{"FAIL", "SKIP"} {
		if strings.Contains(stdout.String(), bad) {
			t.Errorf("report has a check %s", bad)
		}
	}

	data, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	var res result
	if err := json.Unmarshal(data, &res); err != nil {
		t.Fatal(err)
	}
	if res.Ceilings == nil || res.Ceilings.SignaturesPerSec <= 0 || res.Ceilings.BareRequestsPerSec <= 0 {
		t.Errorf("ceilings %+v", res.Ceilings)
	}
	if len(res.Phases) != 4 {
		t.Fatalf("%d phases, want 4", len(res.Phases))
	}
	for _, p := range res.Phases {
		if p.Ops == 0 || errorCount(p.Errors) != 0 || p.CeilingRatio <= 0 || p.ServerCPUMs == nil {
			t.Errorf("%s: ops %d, errors %v, ratio %v, server CPU %v", p.Name, p.Ops, p.Errors, p.CeilingRatio, p.ServerCPUMs)
		}
	}
	// The login's hops are whatever the provider does today; the ends are fixed.
	if steps := res.Phases[0].Steps; len(steps) < 4 || steps[0].Label != "authorize" ||
		!slices.ContainsFunc(steps, func(s stepStats) bool { return s.Label == "wecom" }) ||
		steps[len(steps)-2].Label != "token" || steps[len(steps)-1].Label != "userinfo" {
		t.Errorf("login steps %+v", steps)
	}
	if res.Memory == nil || res.Memory.PeakRSS == nil || res.Memory.DBSize == nil {
		t.Errorf("memory %+v", res.Memory)
	}
	if res.ServerPID <= 0 {
		t.Fatalf("server pid %d", res.ServerPID)
	}
	if err := syscall.Kill(res.ServerPID, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("the server (pid %d) still runs after the bench: %v", res.ServerPID, err)
	}
}
