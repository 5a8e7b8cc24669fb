package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"time"

	"github.com/predq/predq/internal/localsvc"
	"github.com/predq/predq/tools/internal/overload"
	"github.com/predq/predq/tools/internal/proc"
)

// The overload phase's api: admission control on, with these bounds (the other apis of the
// bench run with it off, so that their points measure the pipeline, not the shedding).
var overloadEnv = []string{
	"ADMISSION_CONTROL=true",
	"ADMISSION_MIN_LIMIT=2",
	"ADMISSION_INITIAL_LIMIT=8",
	"ADMISSION_QUEUE_SIZE=16",
	"ADMISSION_MAX_WAIT=50ms",
}

// overloadResult is the overload phase's measurement.
type overloadResult struct {
	overload.Report
	Conns, Factor int
	RSSBefore     int64 `json:"rss_before"`
	RSSMax        int64 `json:"rss_max"`
	Violations    int   `json:"violations"`
}

// overloadPhase starts an api with admission control on and runs tools/internal/overload
// against it: unloaded, peak at 8 connections, then 4× the clients paced to 4× the peak's
// goodput, half on a bulk key.
func (b *bench) overloadPhase(ctx context.Context) (*overloadResult, error) {
	port, err := localsvc.FreePort()
	if err != nil {
		return nil, err
	}
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	cmd := b.pin.command(ctx, b.pin.Server, filepath.Join(b.binDir, "api"))
	cmd.Dir, cmd.Env = b.binDir, append(append(minimalEnv(b.env), "PORT="+strconv.Itoa(port), "GRPC_PORT=0"), overloadEnv...)
	api, err := proc.Start("api-admission", cmd, 64<<10)
	if err != nil {
		return nil, err
	}
	defer api.Stop()
	if err := api.WaitHTTP(ctx, url+"/health/ready", 60*time.Second); err != nil {
		return nil, fmt.Errorf("api-admission: %w: %s", err, tail(api))
	}
	d := map[bool][3]time.Duration{false: {3 * time.Second, 5 * time.Second, 20 * time.Second}, true: {time.Second, time.Second, 3 * time.Second}}[b.opts.Smoke]
	res := &overloadResult{Conns: 8, Factor: 4}
	if _, res.RSSBefore, err = proc.PeakRSS(api.PID()); err != nil {
		return nil, err
	}
	b.log("overload: unloaded %s, peak %s at %d conns, overload %s at %d conns paced to %d× the peak", d[0], d[1], res.Conns, d[2], res.Conns*res.Factor, res.Factor)
	rep, err := overload.Run(ctx, overload.Config{BaseURL: url, InteractiveKey: b.key, BulkKey: b.bulkKey,
		Conns: res.Conns, Factor: res.Factor, Unloaded: d[0], Peak: d[1], Overload: d[2],
		Sample: func() {
			if _, rss, err := proc.PeakRSS(api.PID()); err == nil {
				res.RSSMax = max(res.RSSMax, rss)
			}
		}})
	if err != nil {
		return nil, err
	}
	res.Report, res.Violations = rep, len(rep.Violations)
	if len(rep.Violations) > 0 {
		b.log("overload: %d answers broke their contract, the first: %s", len(rep.Violations), rep.Violations[0])
	}
	return res, nil
}

// overloadRows are the phase's rows: goodput against the peak and p99 against the unloaded
// p99, as ratios of the same run, and how each class was shed.
func overloadRows(o *overloadResult) []row {
	inter, bulk := o.Overload.ByClass["interactive"], o.Overload.ByClass["bulk"]
	if inter == nil {
		inter = &overload.ClassStats{}
	}
	if bulk == nil {
		bulk = &overload.ClassStats{}
	}
	shed := fmt.Sprintf("offered %.1f× the peak; shed: interactive %.1f%%, bulk %.1f%%; Retry-After values %v; %d answers broke their contract; api RSS %.0f MB before, %.0f MB max",
		o.OfferedRatio, 100*inter.ShedFraction, 100*bulk.ShedFraction, o.RetryAfter, o.Violations, float64(o.RSSBefore)/1e6, float64(o.RSSMax)/1e6)
	good := row{Group: "overload", Measure: fmt.Sprintf("overload: goodput at %d× the peak's clients, paced to %d× its rate (admission control on)", o.Factor, o.Factor),
		Value: o.Overload.OKPerSec, Unit: "req/s", P50MS: ptr(o.Overload.P50MS), P99MS: ptr(o.Overload.P99MS), Note: shed}.
		withCeiling(fmt.Sprintf("peak goodput at %d connections", o.Conns), o.Peak.OKPerSec).atLeast(targetOverloadGoodput, "", true)
	p99 := row{Group: "overload", Measure: "overload: admitted requests' p99", Value: o.Overload.P99MS, Unit: "ms",
		Note: fmt.Sprintf("interactive p99 %.1f ms, bulk p99 %.1f ms", inter.P99MS, bulk.P99MS)}.
		withCeiling("unloaded p99 (one connection)", o.Unloaded.P99MS)
	p99.Target = fmt.Sprintf("≤ %g×", targetOverloadP99)
	p99.Met = ptr(p99.Ratio != nil && *p99.Ratio <= targetOverloadP99)
	return []row{good, p99}
}
