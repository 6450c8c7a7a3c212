package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// result is everything a run measured; the text report and -json are two views of it.
type result struct {
	Server          string         `json:"server"` // how the server was reached
	ServerPID       int            `json:"server_pid,omitempty"`
	Concurrency     int            `json:"concurrency"`
	Duration        string         `json:"duration"`
	Warmup          string         `json:"warmup"`
	CeilingDuration string         `json:"ceiling_duration"`
	GOMAXPROCS      int            `json:"gomaxprocs"`
	LoadAverage     string         `json:"load_average,omitempty"` // /proc/loadavg's 1, 5, 15 minutes at the start
	Ceilings        *ceilings      `json:"ceilings,omitempty"`
	Phases          []*phaseResult `json:"phases,omitempty"`
	Memory          *memoryResult  `json:"memory,omitempty"`
	Soak            *soakResult    `json:"soak,omitempty"`
	Checks          []checkResult  `json:"checks,omitempty"`
}

// ceilings are the figures each phase is compared with, measured in the same run.
type ceilings struct {
	SignaturesPerSec   float64      `json:"rs256_signatures_per_sec"`
	BareRequestsPerSec float64      `json:"bare_handler_requests_per_sec"`
	Bare               *phaseResult `json:"bare_handler"`
}

// of is the value of the named ceiling (0 when unknown).
func (c *ceilings) of(name string) float64 {
	if c == nil {
		return 0
	}
	switch name {
	case ceilingSign:
		return c.SignaturesPerSec
	case ceilingBare:
		return c.BareRequestsPerSec
	}
	return 0
}

// phaseResult is one phase's figures. Latencies are in milliseconds.
type phaseResult struct {
	Name         string         `json:"name"`
	Ops          int            `json:"ops"`
	ElapsedSec   float64        `json:"elapsed_s"`
	OpsPerSec    float64        `json:"ops_per_sec"`
	Ceiling      string         `json:"ceiling,omitempty"`
	CeilingRatio float64        `json:"ceiling_ratio,omitempty"`
	ServerCPUMs  *float64       `json:"server_cpu_ms_per_op,omitempty"` // nil: not measured
	BenchCPUMs   *float64       `json:"bench_cpu_ms_per_op,omitempty"`
	Errors       map[string]int `json:"errors"`
	Latency      latencyStats   `json:"latency_ms"` // of the whole op: the sum of its steps
	Steps        []stepStats    `json:"steps"`
}

type latencyStats struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

type stepStats struct {
	Label string `json:"step"`
	latencyStats
}

// newPhaseResult condenses a phase's tally; before and after are the CPU readings at its ends.
func newPhaseResult(name string, t *tally, elapsed time.Duration, before, after cpuSample) *phaseResult {
	r := &phaseResult{
		Name:       name,
		Ops:        t.ops,
		ElapsedSec: elapsed.Seconds(),
		Errors:     t.errors,
		Latency:    stats(t.latency),
	}
	if elapsed > 0 {
		r.OpsPerSec = float64(t.ops) / elapsed.Seconds()
	}
	if t.ops > 0 {
		bench := ms(after.Bench-before.Bench) / float64(t.ops)
		r.BenchCPUMs = &bench
		if before.ServerOK && after.ServerOK {
			server := ms(after.Server-before.Server) / float64(t.ops)
			r.ServerCPUMs = &server
		}
	}
	for _, label := range t.order {
		r.Steps = append(r.Steps, stepStats{Label: label, latencyStats: stats(t.steps[label])})
	}
	return r
}

// stats sorts samples in place and takes their percentiles.
func stats(samples []time.Duration) latencyStats {
	slices.Sort(samples)
	s := latencyStats{N: len(samples)}
	if len(samples) > 0 {
		s.P50 = ms(percentile(samples, 50))
		s.P90 = ms(percentile(samples, 90))
		s.P99 = ms(percentile(samples, 99))
		s.Max = ms(samples[len(samples)-1])
	}
	return s
}

// percentile is the p-th percentile of sorted samples by nearest rank: the smallest sample
// with at least p% of all samples at or below it. Zero for no samples.
func percentile(sorted []time.Duration, p int) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	rank := (p*n + 99) / 100 // ⌈p·n/100⌉ in integers
	rank = max(1, min(rank, n))
	return sorted[rank-1]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// memoryResult is the server's memory at the end of the run; nil fields were not measurable.
type memoryResult struct {
	PeakRSS *int64 `json:"peak_rss_bytes,omitempty"`
	RSS     *int64 `json:"rss_bytes,omitempty"`
	RSSAnon *int64 `json:"rss_anon_bytes,omitempty"` // of RSS: heap and stacks
	RSSFile *int64 `json:"rss_file_bytes,omitempty"` // of RSS: mapped files, mostly the database
	DBSize  *int64 `json:"db_size_bytes,omitempty"`
}

// checkResult is one target: passed, failed, or skipped when its figure was not measured.
type checkResult struct {
	Name    string `json:"name"`
	Figure  string `json:"figure"`
	Pass    bool   `json:"pass"`
	Skipped bool   `json:"skipped,omitempty"`
}

func (c checkResult) verdict() string {
	switch {
	case c.Skipped:
		return "SKIP"
	case c.Pass:
		return "PASS"
	}
	return "FAIL"
}

// targets are the goals, settable by flags.
type targets struct {
	LoginsRatio   float64
	RefreshRatio  float64
	UserinfoRatio float64
	LoginP99      time.Duration
	PeakRSSMiB    float64
}

// check compares the result with the targets.
func check(r *result, tg targets) []checkResult {
	phase := func(name string) *phaseResult {
		for _, p := range r.Phases {
			if p.Name == name {
				return p
			}
		}
		return nil
	}
	ratio := func(name string, want float64) checkResult {
		c := checkResult{Name: fmt.Sprintf("%s ≥ %.0f%% of its ceiling", name, want*100)}
		p := phase(name)
		if p == nil || p.CeilingRatio == 0 && p.Ops > 0 {
			c.Skipped, c.Figure = true, "not measured"
			return c
		}
		c.Figure = fmt.Sprintf("%.1f%% (%.1f ops/s of %s %.1f)", p.CeilingRatio*100, p.OpsPerSec, p.Ceiling, r.Ceilings.of(p.Ceiling))
		c.Pass = p.CeilingRatio >= want
		return c
	}
	out := []checkResult{
		ratio("logins", tg.LoginsRatio),
		ratio("refresh", tg.RefreshRatio),
		ratio("userinfo", tg.UserinfoRatio),
	}
	p99 := checkResult{Name: fmt.Sprintf("login p99 ≤ %s", tg.LoginP99)}
	if p := phase("logins"); p == nil || p.Ops == 0 {
		p99.Skipped, p99.Figure = true, "not measured"
	} else {
		p99.Figure = fmt.Sprintf("%.2f ms", p.Latency.P99)
		p99.Pass = p.Latency.P99 <= ms(tg.LoginP99)
	}
	mem := checkResult{Name: fmt.Sprintf("server peak memory ≤ %s MiB", strconv.FormatFloat(tg.PeakRSSMiB, 'f', -1, 64))}
	if r.Memory == nil || r.Memory.PeakRSS == nil {
		mem.Skipped, mem.Figure = true, "not measured"
	} else {
		mem.Figure = mib(*r.Memory.PeakRSS)
		mem.Pass = float64(*r.Memory.PeakRSS) <= tg.PeakRSSMiB*(1<<20)
	}
	return append(out, p99, mem)
}

// failed reports whether a check failed (skips do not fail).
func failed(checks []checkResult) bool {
	return slices.ContainsFunc(checks, func(c checkResult) bool { return !c.Skipped && !c.Pass })
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// table writes rows as aligned columns, numbers right-aligned.
type table struct {
	right []bool // per column
	rows  [][]string
}

func (t *table) add(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) write(w io.Writer, indent string) {
	widths := make([]int, len(t.right))
	for _, row := range t.rows {
		for i, c := range row {
			widths[i] = max(widths[i], len([]rune(c)))
		}
	}
	for _, row := range t.rows {
		var b strings.Builder
		b.WriteString(indent)
		for i, c := range row {
			pad := strings.Repeat(" ", widths[i]-len([]rune(c)))
			if i > 0 {
				b.WriteString("  ")
			}
			if t.right[i] {
				b.WriteString(pad + c)
			} else if i < len(row)-1 {
				b.WriteString(c + pad)
			} else {
				b.WriteString(c)
			}
		}
		fmt.Fprintln(w, b.String())
	}
}

func f1(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }
func f2(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) }

func optMs(v *float64) string {
	if v == nil {
		return "n/a"
	}
	return f2(*v)
}

func errorCount(errs map[string]int) int {
	n := 0
	for _, c := range errs {
		n += c
	}
	return n
}

// writeReport prints the result as plain text.
func writeReport(w io.Writer, r *result) {
	fmt.Fprintf(w, "wecom-oidc-bench: %s\n", r.Server)
	if r.Soak != nil {
		fmt.Fprintf(w, "soak of %s at concurrency %d, GOMAXPROCS %d\n", r.Soak.Duration, r.Concurrency, r.GOMAXPROCS)
	} else {
		fmt.Fprintf(w, "concurrency %d, duration %s per phase, warm-up %s, ceilings %s, GOMAXPROCS %d\n",
			r.Concurrency, r.Duration, r.Warmup, r.CeilingDuration, r.GOMAXPROCS)
	}

	if r.LoadAverage != "" {
		// Other processes on the machine lower the ceilings and the phases alike, and not always
		// in the same proportion: a loaded machine makes the ratios noisy.
		fmt.Fprintf(w, "load average at the start: %s\n", r.LoadAverage)
	}

	if c := r.Ceilings; c != nil {
		fmt.Fprintln(w, "\nceilings (server idle)")
		t := &table{right: []bool{false, true, false}}
		t.add(ceilingSign, f1(c.SignaturesPerSec), fmt.Sprintf("%d goroutines, RSA-2048, SHA-256 + PKCS #1 v1.5", r.GOMAXPROCS))
		t.add(ceilingBare, f1(c.BareRequestsPerSec), fmt.Sprintf("in-process net/http, ~300-byte JSON, %d workers", r.Concurrency))
		t.write(w, "  ")
	}

	if len(r.Phases) > 0 {
		fmt.Fprintln(w)
		t := &table{right: []bool{false, true, true, true, false, true, true, true}}
		t.add("phase", "ops", "ops/s", "of ceiling", "ceiling", "server CPU ms/op", "bench CPU ms/op", "errors")
		for _, p := range r.Phases {
			ratio := "n/a"
			if p.CeilingRatio > 0 || p.Ops == 0 {
				ratio = f1(p.CeilingRatio*100) + "%"
			}
			t.add(p.Name, strconv.Itoa(p.Ops), f1(p.OpsPerSec), ratio, p.Ceiling,
				optMs(p.ServerCPUMs), optMs(p.BenchCPUMs), strconv.Itoa(errorCount(p.Errors)))
		}
		t.write(w, "")
	}

	all := r.Phases
	if r.Ceilings != nil && r.Ceilings.Bare != nil {
		all = append([]*phaseResult{r.Ceilings.Bare}, all...)
	}
	if r.Soak != nil {
		all = append(all, r.Soak.Load)
	}
	writeErrors(w, all)
	writeLatencies(w, all)
	writeMemory(w, r.Memory)
	if r.Soak != nil {
		writeSoakSummary(w, r.Soak)
	}
	if len(r.Checks) > 0 {
		fmt.Fprintln(w, "\nchecks")
		t := &table{right: []bool{false, false, false}}
		for _, c := range r.Checks {
			t.add(c.verdict(), c.Name, c.Figure)
		}
		t.write(w, "  ")
	}
}

// writeErrors lists errors by phase and kind, most frequent first.
func writeErrors(w io.Writer, all []*phaseResult) {
	t := &table{right: []bool{false, true, false}}
	for _, p := range all {
		kinds := slices.SortedFunc(maps.Keys(p.Errors), func(a, b string) int {
			return cmp.Or(cmp.Compare(p.Errors[b], p.Errors[a]), cmp.Compare(a, b))
		})
		for _, k := range kinds {
			t.add(p.Name, strconv.Itoa(p.Errors[k]), k)
		}
	}
	if len(t.rows) == 0 {
		return
	}
	fmt.Fprintln(w, "\nerrors")
	t.write(w, "  ")
}

// writeLatencies prints each phase's op latency, then each of its steps.
func writeLatencies(w io.Writer, all []*phaseResult) {
	if len(all) == 0 {
		return
	}
	fmt.Fprintln(w, "\nlatency (ms; op = the sum of its steps; successful ops only)")
	t := &table{right: []bool{false, false, true, true, true, true, true}}
	t.add("phase", "step", "n", "p50", "p90", "p99", "max")
	row := func(phase, label string, s latencyStats) {
		t.add(phase, label, strconv.Itoa(s.N), f2(s.P50), f2(s.P90), f2(s.P99), f2(s.Max))
	}
	for _, p := range all {
		row(p.Name, "op", p.Latency)
		if len(p.Steps) > 1 {
			for _, s := range p.Steps {
				row("", "  "+s.Label, s.latencyStats)
			}
		}
	}
	t.write(w, "")
}

func writeMemory(w io.Writer, m *memoryResult) {
	if m == nil {
		return
	}
	opt := func(v *int64) string {
		if v == nil {
			return "n/a"
		}
		return mib(*v)
	}
	split := ""
	if m.RSSAnon != nil && m.RSSFile != nil {
		split = fmt.Sprintf(" (anonymous %s, file-backed %s)", mib(*m.RSSAnon), mib(*m.RSSFile))
	}
	fmt.Fprintf(w, "\nserver memory: peak RSS %s, RSS now %s%s, database file %s\n", opt(m.PeakRSS), opt(m.RSS), split, opt(m.DBSize))
}

// writeJSON writes the result to path, indented.
func writeJSON(path string, r *result) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("json: %w", err)
	}
	if err := os.WriteFile(path, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("json: %w", err)
	}
	return nil
}
