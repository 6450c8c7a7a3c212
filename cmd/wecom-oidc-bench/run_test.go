package main

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestLoopbackURL(t *testing.T) {
	for _, ok := range []string{"http://127.0.0.1:8080", "http://127.9.0.1:1/", "http://localhost:8080", "http://[::1]:8080", "https://127.0.0.1/sso"} {
		if _, err := loopbackURL(ok); err != nil {
			t.Errorf("loopbackURL(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{
		"http://10.0.0.1:8080", "http://example.com", "http://0.0.0.0:8080", "http://[::]:80",
		"http://127.0.0.1.example.com", "ftp://127.0.0.1", "127.0.0.1:8080", "http://127.0.0.1:8080/?x=1",
	} {
		if _, err := loopbackURL(bad); err == nil {
			t.Errorf("loopbackURL(%q): accepted", bad)
		}
	}
	if got, _ := loopbackURL("http://127.0.0.1:8080/"); got != "http://127.0.0.1:8080" {
		t.Errorf("trailing slash kept: %q", got)
	}
}

func TestParseOptions(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr string
	}{
		{name: "defaults", args: nil},
		{name: "url elsewhere", args: []string{"-url", "http://192.168.1.2:8080", "-client-id", "a", "-client-secret", "b", "-redirect-uri", "c"}, wantErr: "not a loopback host"},
		{name: "url without client", args: []string{"-url", "http://127.0.0.1:8080"}, wantErr: "-url needs -client-id"},
		{name: "url with secret from env", args: []string{"-url", "http://127.0.0.1:8080", "-client-id", "a", "-redirect-uri", "c"}, env: map[string]string{secretEnv: "s"}},
		{name: "client without url", args: []string{"-client-id", "a"}, wantErr: "go with -url"},
		{name: "unknown phase", args: []string{"-phases", "logins,introspect"}, wantErr: `unknown phase "introspect"`},
		{name: "phase twice", args: []string{"-phases", "refresh,refresh"}, wantErr: "given twice"},
		{name: "no concurrency", args: []string{"-concurrency", "0"}, wantErr: "-concurrency"},
		{name: "stray argument", args: []string{"logins"}, wantErr: "unexpected argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := parseOptions(tt.args, env(tt.env), io.Discard)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("err = %v", err)
				}
				if o.budget() <= o.duration {
					t.Errorf("budget %s is not longer than a phase", o.budget())
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestRunPhase(t *testing.T) {
	var n atomic.Int64
	prepare := func(_ context.Context, worker int) (opFunc, error) {
		if worker == 3 {
			return nil, failf("http 503 at authorize", nil)
		}
		return func(_ context.Context, rec *recorder) error {
			i := n.Add(1)
			rec.add("step", time.Millisecond)
			switch {
			case i > 40:
				return errStop
			case i%10 == 0:
				return failf("state mismatch", nil)
			}
			return nil
		}, nil
	}
	res, err := runPhase(context.Background(), phaseSpec{name: "test", workers: 4, duration: 5 * time.Second, prepare: prepare})
	if err != nil {
		t.Fatal(err)
	}
	if res.Ops != 36 || res.Errors["state mismatch"] != 4 || res.Errors["setup: http 503 at authorize"] != 1 {
		t.Errorf("ops %d, errors %v; want 36 ops, 4 state mismatches, 1 setup error", res.Ops, res.Errors)
	}
	if res.ElapsedSec >= 5 {
		t.Errorf("phase ran %.1fs; it should end when every worker has stopped", res.ElapsedSec)
	}
	if len(res.Steps) != 1 || res.Steps[0].N != 36 {
		t.Errorf("steps %+v; want one step with 36 samples", res.Steps)
	}

	failing := func(context.Context, int) (opFunc, error) { return nil, errors.New("no") }
	if _, err := runPhase(context.Background(), phaseSpec{name: "x", workers: 2, duration: time.Second, prepare: failing}); err == nil {
		t.Error("a phase with no prepared worker succeeded")
	}
}

func TestParseRecords(t *testing.T) {
	text := `# HELP wecom_oidc_records Live records in the database by kind.
# TYPE wecom_oidc_records gauge
wecom_oidc_records{kind="access_tokens"} 120
wecom_oidc_records{kind="sessions"} 7
wecom_oidc_records_other{kind="x"} 1
wecom_oidc_logins_total{result="success",upstream="default"} 5
`
	got := parseRecords(text)
	if len(got) != 2 || got["access_tokens"] != 120 || got["sessions"] != 7 {
		t.Errorf("parseRecords = %v", got)
	}
	if parseRecords("go_goroutines 9\n") != nil {
		t.Error("records found in text without the gauge")
	}
	if s := formatRecords(got); s != "access_tokens=120 sessions=7" {
		t.Errorf("formatRecords = %q", s)
	}
}

func TestSoakCompare(t *testing.T) {
	size := func(mib int64) *int64 { v := mib << 20; return &v }
	samples := []soakSample{
		{AtSec: 10, DBSize: size(16), RSS: size(30), LiveHeap: size(10)},
		{AtSec: 60, DBSize: size(32), RSS: size(40), LiveHeap: size(12)},
		{AtSec: 120, DBSize: size(32), RSS: size(42), LiveHeap: size(12)},
	}
	base, note := soakBaseline(samples, 10*time.Minute, time.Minute)
	if base.AtSec != 60 || note != "" {
		t.Errorf("baseline at %vs (note %q), want 60s", base.AtSec, note)
	}
	if c := compareSoak(base, soakSample{DBSize: size(32), RSS: size(45), LiveHeap: size(12)}); !c.Pass || c.Skipped {
		t.Errorf("flat database and heap (RSS not compared): %s %s", c.verdict(), c.Figure)
	}
	// The heap compared is the highest up to the baseline and the lowest over the last minute.
	noisy := []soakSample{
		{AtSec: 30, LiveHeap: size(15)}, {AtSec: 60, LiveHeap: size(9)},
		{AtSec: 500, LiveHeap: size(14)}, {AtSec: 550, LiveHeap: size(11)}, {AtSec: 600, LiveHeap: size(16)},
	}
	b, f := heapBounds(noisy[1], noisy[4], noisy)
	if *b.LiveHeap != 15<<20 || *f.LiveHeap != 11<<20 {
		t.Errorf("heapBounds: %d, %d; want 15 MiB (highest to 60s) and 11 MiB (lowest from 540s)", *b.LiveHeap>>20, *f.LiveHeap>>20)
	}
	if c := compareSoak(base, soakSample{DBSize: size(48), RSS: size(39), LiveHeap: size(12)}); c.Pass {
		t.Errorf("grown database: %s %s", c.verdict(), c.Figure)
	}
	if c := compareSoak(base, soakSample{DBSize: size(32), RSS: size(39), LiveHeap: size(20)}); c.Pass {
		t.Errorf("grown heap: %s %s", c.verdict(), c.Figure)
	}
	if c := compareSoak(soakSample{}, soakSample{}); !c.Skipped || failed([]checkResult{c}) {
		t.Errorf("nothing measured: %s", c.verdict())
	}
	short, note := soakBaseline(samples, time.Minute, time.Minute)
	if short.AtSec != 60 || note == "" {
		t.Errorf("1-minute soak: baseline at %vs, note %q; want the first sample at or after 30s and a note", short.AtSec, note)
	}
}

func TestWriteSoakSummary(t *testing.T) {
	size := func(mib int64) *int64 { v := mib << 20; return &v }
	smp := soakSample{AtSec: 60, RSS: size(80), RSSAnon: size(27), LiveHeap: size(7), DBSize: size(48), Records: map[string]int{"sessions": 3}}
	res := &soakResult{Duration: "10m0s", Load: &phaseResult{Ops: 10, OpsPerSec: 1}, Baseline: smp, Final: smp}
	res.Check = compareSoak(smp, smp)
	var out strings.Builder
	writeSoakSummary(&out, res)
	for _, want := range []string{"baseline", "end", "7.0 MiB", "48.0 MiB", "sessions=3", "PASS"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, out.String())
		}
	}
}

// TestSoakBudgetCoversWarmup: the global deadline of a soak leaves room for its warm-up (a
// 3-minute warm-up once ran the soak into the deadline).
func TestSoakBudgetCoversWarmup(t *testing.T) {
	o := options{soak: 10 * time.Minute, warmup: 3 * time.Minute}
	if got, min := o.budget(), o.soak+o.warmup+soakEvery; got <= min {
		t.Fatalf("budget %s ≤ warm-up + soak %s", got, min)
	}
}
