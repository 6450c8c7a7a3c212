package main

import (
	"os/exec"
	"path/filepath"
	"testing"
)

// buildBinary builds the command into a temporary directory, for the tests that run it as a
// process of its own (the crash test, the replica test).
func buildBinary(t *testing.T) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go tool to build the binary: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "wecom-oidc")
	cmd := exec.Command(goTool, "build", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}
