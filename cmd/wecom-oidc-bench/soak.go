package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Soak parameters.
const (
	soakEvery     = 10 * time.Second // sampling interval
	soakRefreshes = 5                // per cycle, after the login
	soakUserinfos = 5
)

// recordsMetric is the provider's gauge of live records by kind (provider/metrics.go).
const recordsMetric = "wecom_oidc_records"

// soakSample is the server's state at one moment of the soak; nil fields were not measurable.
type soakSample struct {
	AtSec   float64 `json:"at_s"`
	RSS     *int64  `json:"rss_bytes,omitempty"`
	RSSAnon *int64  `json:"rss_anon_bytes,omitempty"` // of RSS: heap and stacks
	// LiveHeap is the server's heap right after a collection: what a leak would grow.
	LiveHeap *int64         `json:"live_heap_bytes,omitempty"`
	DBSize   *int64         `json:"db_size_bytes,omitempty"`
	Records  map[string]int `json:"records,omitempty"`
	// ScrapeMs is how long GET /metrics took: the records gauge is computed at scrape time.
	ScrapeMs float64 `json:"metrics_scrape_ms,omitempty"`
	Cycles   int64   `json:"cycles"`
	Errors   int64   `json:"errors"`
}

// soakResult is a soak's load, its samples, and the comparison of the end with the baseline.
type soakResult struct {
	Duration string       `json:"duration"`
	Load     *phaseResult `json:"load"`
	Samples  []soakSample `json:"samples"`
	Baseline soakSample   `json:"baseline"`
	Final    soakSample   `json:"final"`
	Note     string       `json:"note,omitempty"`
	Check    checkResult  `json:"check"`
}

// soakPrepare: each op is a cycle — a login, soakRefreshes refreshes with rotation, then
// soakUserinfos userinfo calls with the newest access token.
func soakPrepare(t *target) prepareFunc {
	return func(context.Context, int) (opFunc, error) {
		return func(ctx context.Context, rec *recorder) error {
			tok, err := t.login(ctx, rec)
			if err != nil {
				return err
			}
			for range soakRefreshes {
				if tok, err = t.refresh(ctx, rec, tok); err != nil {
					return err
				}
			}
			for range soakUserinfos {
				if err := t.userinfo(ctx, rec, tok); err != nil {
					return err
				}
			}
			return nil
		}, nil
	}
}

// runSoak runs the mixed load for warmup, unmeasured, then for d, sampling the server every
// soakEvery and printing each sample to out as it comes; the end is compared with the sample at
// baselineAt. The warm-up lets the store reach its steady state, where records expire as fast as
// they are made: it takes the longest lifetime of a record (a redeemed code is kept until the
// code's expiry, two minutes, to recognise a replay) plus a sweep.
func runSoak(ctx context.Context, t *target, s *server, concurrency int, warmup, d, baselineAt time.Duration, out io.Writer) (*soakResult, error) {
	if warmup > 0 {
		fmt.Fprintf(out, "soak warm-up: %s of the same load, not measured\n", warmup)
		if _, err := runPhase(ctx, phaseSpec{name: "soak warm-up", workers: concurrency, duration: warmup, prepare: soakPrepare(t), meter: cpuMeter{serverPID: s.pid}}); err != nil {
			return nil, err
		}
	}
	feed := &progressFeed{}
	res := &soakResult{Duration: d.String()}
	var start time.Time
	take := func() soakSample {
		at := time.Since(start).Round(time.Second).Seconds()
		cycles, errs := feed.ops.Load(), feed.errors.Load()
		smp := sampleServer(ctx, t, s)
		smp.AtSec, smp.Cycles, smp.Errors = at, cycles, errs
		return smp
	}
	fmt.Fprintf(out, "soak: %s of cycles (a login, %d refreshes, %d userinfo calls) at concurrency %d, sampled every %s\n",
		d, soakRefreshes, soakUserinfos, concurrency, soakEvery)
	fmt.Fprintf(out, "%6s  %10s  %10s  %10s  %10s  %8s  %6s  %10s  %s\n", "t", "RSS", "of it anon", "live heap", "database", "cycles", "errors", "metrics ms", "live records")

	var mu sync.Mutex
	sampling, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	started := func() {
		start = time.Now()
		wg.Go(func() {
			tick := time.NewTicker(soakEvery)
			defer tick.Stop()
			for {
				select {
				case <-sampling.Done():
					return
				case <-tick.C:
				}
				if time.Since(start) > d-soakEvery/2 {
					return // the final sample, taken when the load stops, covers the end
				}
				smp := take()
				mu.Lock()
				res.Samples = append(res.Samples, smp)
				mu.Unlock()
				writeSoakSample(out, smp)
			}
		})
	}
	load, err := runPhase(ctx, phaseSpec{
		name: "soak", workers: concurrency, duration: d, prepare: soakPrepare(t),
		meter: cpuMeter{serverPID: s.pid}, started: started, progress: feed,
	})
	stop()
	wg.Wait()
	if err != nil {
		return nil, err
	}
	res.Load = load
	res.Final = take()
	writeSoakSample(out, res.Final)
	res.Baseline, res.Note = soakBaseline(res.Samples, d, baselineAt)
	res.Check = compareSoak(heapBounds(res.Baseline, res.Final, append(res.Samples, res.Final)))
	return res, nil
}

// heapBounds returns base and final with their live heap replaced by what the leak check
// compares: the highest live heap up to the baseline, and the lowest over the last minute. A
// sample's live heap includes whatever the 32 workers allocated between the collection and the
// reading (several MiB, either way); a leak raises the lowest values, that noise does not.
func heapBounds(base, final soakSample, samples []soakSample) (soakSample, soakSample) {
	var hi, lo *int64
	for _, smp := range samples {
		if smp.LiveHeap == nil {
			continue
		}
		if smp.AtSec <= base.AtSec && (hi == nil || *smp.LiveHeap > *hi) {
			hi = smp.LiveHeap
		}
		if smp.AtSec >= final.AtSec-60 && (lo == nil || *smp.LiveHeap < *lo) {
			lo = smp.LiveHeap
		}
	}
	base.LiveHeap, final.LiveHeap = hi, lo
	return base, final
}

// soakBaseline picks the sample the end is compared with: the first at or after at, or, for a
// soak shorter than twice that, the first at or after half of it (the comparison then says
// little: the store grows until its records start to expire and be swept).
func soakBaseline(samples []soakSample, d, at time.Duration) (soakSample, string) {
	note := ""
	if d < 2*at {
		note = fmt.Sprintf("soak shorter than %s: baseline at %s instead of %s; the records have hardly begun to expire, so the comparison is not conclusive",
			2*at, d/2, at)
		at = d / 2
	}
	for _, s := range samples {
		if s.AtSec >= at.Seconds() {
			return s, note
		}
	}
	if len(samples) > 0 {
		return samples[len(samples)-1], note
	}
	return soakSample{}, "no sample was taken"
}

// compareSoak passes when the database file at the end is no larger than at the baseline and
// the live heap (see heapBounds) no larger either. RSS is shown, not compared: beyond the heap
// it holds the pages of the database file the process has touched, bounded by the file. A
// figure not measured on both sides is left out; with neither, the check is skipped.
func compareSoak(base, final soakSample) checkResult {
	c := checkResult{Name: "soak: database file and live heap at the end ≤ at the baseline", Pass: true}
	var figs []string
	cmpOne := func(name string, b, f *int64) {
		if b == nil || f == nil {
			return
		}
		figs = append(figs, fmt.Sprintf("%s %s → %s", name, mib(*b), mib(*f)))
		if *f > *b {
			c.Pass = false
		}
	}
	cmpOne("database", base.DBSize, final.DBSize)
	cmpOne("live heap (highest before, lowest in the last minute)", base.LiveHeap, final.LiveHeap)
	if base.RSS != nil && final.RSS != nil {
		figs = append(figs, fmt.Sprintf("(RSS %s → %s)", mib(*base.RSS), mib(*final.RSS)))
	}
	if len(figs) == 0 {
		c.Skipped, c.Pass, c.Figure = true, false, "neither the database size nor the heap is known"
		return c
	}
	c.Figure = fmt.Sprintf("%s (baseline at %.0fs)", strings.Join(figs, ", "), base.AtSec)
	return c
}

// sampleServer reads what is measurable now: RSS (with a PID), the database size (when we
// know the file) and the live record counts from /metrics.
func sampleServer(ctx context.Context, t *target, s *server) soakSample {
	var smp soakSample
	if s.pid > 0 {
		if m, err := readProcMem(s.pid); err == nil {
			smp.RSS = &m.Now
			if m.Anon >= 0 {
				smp.RSSAnon = &m.Anon
			}
		}
	}
	if size, ok := s.dbSize(); ok {
		smp.DBSize = &size
	}
	if heap, err := s.liveHeap(ctx); err == nil {
		smp.LiveHeap = &heap
	}
	start := time.Now()
	if body, err := t.get(ctx, s.baseURL+"/metrics"); err == nil {
		smp.ScrapeMs = ms(time.Since(start))
		smp.Records = parseRecords(string(body))
	}
	return smp
}

// parseRecords reads the records gauge (`wecom_oidc_records{kind="sessions"} 12`) from
// Prometheus text; nil when it is absent.
func parseRecords(text string) map[string]int {
	var out map[string]int
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, recordsMetric+"{")
		if !ok {
			continue
		}
		labels, value, ok := strings.Cut(rest, "} ")
		if !ok {
			continue
		}
		kind := ""
		for l := range strings.SplitSeq(labels, ",") {
			if v, ok := strings.CutPrefix(l, `kind="`); ok {
				kind = strings.TrimSuffix(v, `"`)
			}
		}
		n, err := strconv.ParseFloat(strings.Fields(value)[0], 64)
		if kind == "" || err != nil {
			continue
		}
		if out == nil {
			out = map[string]int{}
		}
		out[kind] = int(n)
	}
	return out
}

func optMiB(v *int64) string {
	if v == nil {
		return "n/a"
	}
	return mib(*v)
}

func formatRecords(r map[string]int) string {
	if r == nil {
		return "n/a"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(r)) {
		parts = append(parts, k+"="+strconv.Itoa(r[k]))
	}
	return strings.Join(parts, " ")
}

func writeSoakSample(w io.Writer, s soakSample) {
	fmt.Fprintf(w, "%5.0fs  %10s  %10s  %10s  %10s  %8d  %6d  %10.1f  %s\n", s.AtSec, optMiB(s.RSS), optMiB(s.RSSAnon), optMiB(s.LiveHeap), optMiB(s.DBSize), s.Cycles, s.Errors, s.ScrapeMs, formatRecords(s.Records))
}

// writeSoakSummary prints the comparison of the end with the baseline.
func writeSoakSummary(w io.Writer, s *soakResult) {
	fmt.Fprintf(w, "\nsoak %s: %d cycles, %.1f cycles/s, %d errors\n", s.Duration, s.Load.Ops, s.Load.OpsPerSec, errorCount(s.Load.Errors))
	t := &table{right: []bool{false, true, true, true, true, true, false}}
	t.add("", "t", "RSS", "of it anon", "live heap", "database", "live records")
	for _, row := range []struct {
		name string
		s    soakSample
	}{{"baseline", s.Baseline}, {"end", s.Final}} {
		t.add(row.name, fmt.Sprintf("%.0fs", row.s.AtSec), optMiB(row.s.RSS), optMiB(row.s.RSSAnon), optMiB(row.s.LiveHeap), optMiB(row.s.DBSize), formatRecords(row.s.Records))
	}
	t.write(w, "  ")
	if s.Note != "" {
		fmt.Fprintf(w, "  note: %s\n", s.Note)
	}
	fmt.Fprintf(w, "  %s  %s: %s\n", s.Check.verdict(), s.Check.Name, s.Check.Figure)
}
