package main

import (
	"strings"
	"testing"
	"time"
)

func TestParseStatCPU(t *testing.T) {
	tests := []struct {
		name    string
		stat    string
		want    uint64
		wantErr bool
	}{
		{
			name: "plain",
			stat: "6715 (cat) R 6712 6712 31633 0 -1 4194304 124 0 0 0 7 3 0 0 20 0 1 0 911644 3133440 360",
			want: 10,
		},
		{
			// The command name may hold spaces and parentheses; only the last ')' ends it.
			name: "command with spaces and parens",
			stat: "42 (a) b (c d)) S 1 42 42 0 -1 4194560 0 0 0 0 1500 250 0 0 20 0 9 0 100 0 0",
			want: 1750,
		},
		{name: "no command", stat: "42 S 1 2 3", wantErr: true},
		{name: "too short", stat: "42 (x) S 1 2 3", wantErr: true},
		{name: "not a number", stat: "42 (x) S 1 42 42 0 -1 0 0 0 0 0 u 3 0 0", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStatCPU([]byte(tt.stat))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("ticks = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestParseStatusMem(t *testing.T) {
	status := "Name:\twecom-oidc\nVmPeak:\t 1300000 kB\nVmHWM:\t   36420 kB\nVmRSS:\t   35100 kB\n" +
		"RssAnon:\t   19000 kB\nRssFile:\t   16100 kB\nRssShmem:\t       0 kB\nThreads:\t9\n"
	m, err := parseStatusMem([]byte(status))
	if err != nil {
		t.Fatal(err)
	}
	if want := (procMem{Peak: 36420 << 10, Now: 35100 << 10, Anon: 19000 << 10, File: 16100 << 10}); m != want {
		t.Errorf("got %+v, want %+v", m, want)
	}
	old, err := parseStatusMem([]byte("VmHWM:\t 12 kB\nVmRSS:\t 10 kB\n")) // before Linux 4.5
	if err != nil || old.Anon != -1 || old.File != -1 {
		t.Errorf("without RssAnon/RssFile: %+v, %v; want them -1", old, err)
	}
	for _, bad := range []string{
		"Name:\tkthreadd\n",             // kernel threads have neither
		"VmHWM:\t 12 kB\n",              // no VmRSS
		"VmHWM:\t 12 MB\nVmRSS:\t 1 kB", // unexpected unit
	} {
		if _, err := parseStatusMem([]byte(bad)); err == nil {
			t.Errorf("parseStatusMem(%q): no error", bad)
		}
	}
}

func TestProcSelf(t *testing.T) {
	if _, err := procCPU("self"); err != nil {
		t.Skipf("no /proc here: %v", err)
	}
	// Burn a little CPU so the reading is not zero for certain.
	deadline := time.Now().Add(30 * time.Millisecond)
	for time.Now().Before(deadline) {
	}
	d, err := procCPU("self")
	if err != nil || d <= 0 {
		t.Errorf("procCPU(self) = %v, %v; want a positive time", d, err)
	}
}

func TestDevConfig(t *testing.T) {
	cfg := devConfig("s3cret-s3cret-s3cret-s3cret-s3cret", "/tmp/x/admin.sock", false)
	for _, want := range []string{
		"log: {level: warn}",
		`admin: {socket: "/tmp/x/admin.sock"}`,
		"  - id: bench",
		`    secret: "s3cret-s3cret-s3cret-s3cret-s3cret"`,
		`    redirect_uris: ["http://127.0.0.1:9/bench/callback"]`,
		"    groups: [names]",
	} {
		if !strings.Contains(cfg, want+"\n") {
			t.Errorf("config lacks %q:\n%s", want, cfg)
		}
	}
	if strings.Contains(cfg, "tokens:") {
		t.Errorf("benchmark config sets token lifetimes:\n%s", cfg)
	}
	soak := devConfig("x", "/s", true)
	if !strings.Contains(soak, "tokens: {access_token_ttl: 10s, id_token_ttl: 10s, refresh_token_ttl: 15s, session_ttl: 15s}\n") {
		t.Errorf("soak config lacks the short lifetimes:\n%s", soak)
	}
}

func TestServerEnv(t *testing.T) {
	got := serverEnv([]string{"PATH=/bin", "WECOM_OIDC_LISTEN=0.0.0.0:80", "HOME=/root", "WECOM_OIDC_LOG__LEVEL=debug"})
	if strings.Join(got, " ") != "PATH=/bin HOME=/root" {
		t.Errorf("serverEnv = %q", got)
	}
}

func TestParseHeapAlloc(t *testing.T) {
	text := "heap profile: 1: 2 [3: 4] @ heap/1048576\n\n# runtime.MemStats\n# Alloc = 123\n# TotalAlloc = 999\n# HeapAlloc = 12345678\n# HeapSys = 1\n"
	if got, err := parseHeapAlloc(text); err != nil || got != 12345678 {
		t.Fatalf("parseHeapAlloc = %d, %v; want 12345678", got, err)
	}
	if _, err := parseHeapAlloc("# Alloc = 1\n"); err == nil {
		t.Fatal("parseHeapAlloc without HeapAlloc: no error")
	}
}
