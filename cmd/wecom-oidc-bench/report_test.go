package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func durations(ms ...int) []time.Duration {
	out := make([]time.Duration, len(ms))
	for i, m := range ms {
		out[i] = time.Duration(m) * time.Millisecond
	}
	return out
}

func TestPercentile(t *testing.T) {
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond // 1..100 ms
	}
	tests := []struct {
		name    string
		samples []time.Duration
		p       int
		want    time.Duration
	}{
		{"empty", nil, 99, 0},
		{"one", durations(7), 50, 7 * time.Millisecond},
		{"one p99", durations(7), 99, 7 * time.Millisecond},
		// Nearest rank: ⌈p·n/100⌉-th smallest.
		{"p50 of 100", hundred, 50, 50 * time.Millisecond},
		{"p90 of 100", hundred, 90, 90 * time.Millisecond},
		{"p99 of 100", hundred, 99, 99 * time.Millisecond},
		{"p100 of 100", hundred, 100, 100 * time.Millisecond},
		{"p50 of 4", durations(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{"p90 of 4", durations(1, 2, 3, 4), 90, 4 * time.Millisecond},
		{"p99 of 10", durations(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 99, 10 * time.Millisecond},
		{"p90 of 10", durations(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 90, 9 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentile(tt.samples, tt.p); got != tt.want {
				t.Errorf("percentile(p%d) = %v, want %v", tt.p, got, tt.want)
			}
		})
	}
}

func TestStatsSorts(t *testing.T) {
	s := stats(durations(30, 10, 20, 40))
	want := latencyStats{N: 4, P50: 20, P90: 40, P99: 40, Max: 40}
	if s != want {
		t.Errorf("stats = %+v, want %+v", s, want)
	}
	if z := stats(nil); z != (latencyStats{}) {
		t.Errorf("stats(nil) = %+v", z)
	}
}

func TestNewPhaseResult(t *testing.T) {
	tl := newTally()
	tl.success(&recorder{steps: []step{{"authorize", 2 * time.Millisecond}, {"token", 3 * time.Millisecond}}})
	tl.success(&recorder{steps: []step{{"authorize", 4 * time.Millisecond}, {"token", 5 * time.Millisecond}}})
	tl.errors["http 500 at token"] = 3
	before := cpuSample{Server: time.Second, ServerOK: true, Bench: time.Second}
	after := cpuSample{Server: time.Second + 20*time.Millisecond, ServerOK: true, Bench: time.Second + 4*time.Millisecond}
	r := newPhaseResult("logins", tl, 2*time.Second, before, after)
	if r.Ops != 2 || r.OpsPerSec != 1 {
		t.Errorf("ops %d, ops/s %v; want 2, 1", r.Ops, r.OpsPerSec)
	}
	if r.ServerCPUMs == nil || *r.ServerCPUMs != 10 || r.BenchCPUMs == nil || *r.BenchCPUMs != 2 {
		t.Errorf("CPU ms/op server %v bench %v; want 10, 2", r.ServerCPUMs, r.BenchCPUMs)
	}
	if r.Latency.Max != 9 || r.Latency.P50 != 5 {
		t.Errorf("op latency %+v; want p50 5 (2+3), max 9 (4+5)", r.Latency)
	}
	if len(r.Steps) != 2 || r.Steps[0].Label != "authorize" || r.Steps[1].Label != "token" || r.Steps[1].Max != 5 {
		t.Errorf("steps %+v", r.Steps)
	}
	unmeasured := newPhaseResult("x", tl, time.Second, cpuSample{}, cpuSample{})
	if unmeasured.ServerCPUMs != nil {
		t.Errorf("server CPU without a reading: %v", *unmeasured.ServerCPUMs)
	}
}

func TestTable(t *testing.T) {
	tb := &table{right: []bool{false, true, false}}
	tb.add("phase", "ops", "note")
	tb.add("logins", "7", "张三")
	tb.add("exchange", "12345", "")
	var b bytes.Buffer
	tb.write(&b, "  ")
	want := "" +
		"  phase       ops  note\n" +
		"  logins        7  张三\n" +
		"  exchange  12345  \n"
	if b.String() != want {
		t.Errorf("table:\n%s\nwant:\n%s", b.String(), want)
	}
}

func sampleResult() *result {
	server, bench := 3.5, 0.9
	peak, rss, db := int64(40<<20), int64(38<<20), int64(16<<20)
	return &result{
		Server: "wecom-oidc dev started at http://127.0.0.1:1234 (pid 99)", Concurrency: 32,
		Duration: "20s", Warmup: "5s", CeilingDuration: "5s", GOMAXPROCS: 2,
		Ceilings: &ceilings{SignaturesPerSec: 1000, BareRequestsPerSec: 20000,
			Bare: &phaseResult{Name: "bare handler", Ops: 100000, OpsPerSec: 20000, Errors: map[string]int{}, Latency: latencyStats{N: 100000, P50: 0.2}}},
		Phases: []*phaseResult{
			{Name: "logins", Ops: 6000, OpsPerSec: 300, Ceiling: ceilingSign, CeilingRatio: 0.3, ServerCPUMs: &server, BenchCPUMs: &bench,
				Errors:  map[string]int{"http 500 at callback": 2, "timeout at token": 5},
				Latency: latencyStats{N: 6000, P50: 20, P90: 40, P99: 70, Max: 90},
				Steps:   []stepStats{{"authorize", latencyStats{N: 6000, P50: 2}}, {"token", latencyStats{N: 6000, P50: 9}}}},
			{Name: "refresh", Ops: 18000, OpsPerSec: 900, Ceiling: ceilingSign, CeilingRatio: 0.9, Errors: map[string]int{},
				Latency: latencyStats{N: 18000, P50: 5}},
		},
		Memory: &memoryResult{PeakRSS: &peak, RSS: &rss, DBSize: &db},
	}
}

func TestWriteReport(t *testing.T) {
	r := sampleResult()
	r.Checks = check(r, targets{LoginsRatio: 0.55, RefreshRatio: 0.85, UserinfoRatio: 0.55, LoginP99: 60 * time.Millisecond, PeakRSSMiB: 48})
	var b bytes.Buffer
	writeReport(&b, r)
	out := b.String()
	for _, want := range []string{
		"RS256 signatures/s   1000.0",
		"bare handler req/s  20000.0",
		"logins    6000  300.0       30.0%  RS256 signatures/s              3.50             0.90       7",
		"refresh  18000  900.0       90.0%  RS256 signatures/s               n/a              n/a       0",
		"  logins  5  timeout at token\n  logins  2  http 500 at callback\n", // most frequent first
		"logins        op             6000  20.00  40.00  70.00  90.00",
		"                authorize    6000   2.00",
		"server memory: peak RSS 40.0 MiB, RSS now 38.0 MiB, database file 16.0 MiB",
		"FAIL  logins ≥ 55% of its ceiling",
		"PASS  refresh ≥ 85% of its ceiling",
		"SKIP  userinfo ≥ 55% of its ceiling",
		"FAIL  login p99 ≤ 60ms",
		"70.00 ms",
		"PASS  server peak memory ≤ 48 MiB",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if !failed(r.Checks) {
		t.Error("failed(checks) = false with two failures")
	}
}

func TestCheckSkipsUnmeasured(t *testing.T) {
	r := &result{Phases: nil, Memory: &memoryResult{}}
	checks := check(r, targets{LoginsRatio: 0.5, LoginP99: time.Second, PeakRSSMiB: 1})
	for _, c := range checks {
		if !c.Skipped {
			t.Errorf("%s: %s, want SKIP", c.Name, c.verdict())
		}
	}
	if failed(checks) {
		t.Error("skipped checks count as failed")
	}
}
