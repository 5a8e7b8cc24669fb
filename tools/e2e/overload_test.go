package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/predq/predq/tools/internal/overload"
	"github.com/predq/predq/tools/internal/proc"
)

const (
	interactiveKey = "ovl-interactive-0123456789"
	bulkKey        = "ovl-bulk-0123456789abcdef"
)

// Issue 21: a closed loop at four times the clients of the peak point, half on a bulk key,
// against the real api with admission control on. Asserted, because they hold however loaded
// the machine is: every rejection is a 503 or 429 problem+json with a Retry-After of 1..60 s;
// every 200 carries its request id and is stored (nothing answered is lost); no other status;
// the bulk class is shed more than the interactive one; the api's memory stays bounded.
// Reported, not asserted (the 2-core machine's noise decides them): the admitted p99 against
// the unloaded p99 and the goodput against the peak's; tools/bench -phases overload reports
// the same ratios.
func TestOverloadShedsBulkFirstAndLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("a 30-second load test")
	}
	s := startStack(t, stackOpts{env: map[string]string{
		"API_KEYS":                "ovl:" + interactiveKey + ",ovlbulk:" + bulkKey + "::class=bulk",
		"LOG_LEVEL":               "warn",
		"ADMISSION_CONTROL":       "true",
		"ADMISSION_MIN_LIMIT":     "2",
		"ADMISSION_INITIAL_LIMIT": "8",
		"ADMISSION_QUEUE_SIZE":    "16",
		"ADMISSION_MAX_WAIT":      "50ms",
	}})
	pid := s.procs["api"].PID()
	_, rssBefore, err := proc.PeakRSS(pid)
	require.NoError(t, err)
	var mu sync.Mutex
	var rssMax int64
	var limits []string
	rep, err := overload.Run(context.Background(), overload.Config{
		BaseURL: s.base, InteractiveKey: interactiveKey, BulkKey: bulkKey,
		Conns: 8, Factor: 4, Unloaded: 3 * time.Second, Peak: 5 * time.Second, Overload: 20 * time.Second,
		Sample: func() {
			if _, rss, err := proc.PeakRSS(pid); err == nil {
				mu.Lock()
				rssMax = max(rssMax, rss)
				mu.Unlock()
			}
			if l := admissionLimit(s.base); l != "" {
				mu.Lock()
				limits = append(limits, l)
				mu.Unlock()
			}
		},
	})
	require.NoError(t, err)
	figures, _ := json.MarshalIndent(rep, "", "  ")
	t.Logf("overload report:\n%s", figures)
	t.Logf("admitted p99 %.1f ms = %.2f x unloaded p99 %.1f ms; goodput %.0f/s = %.2f x peak %.0f/s; offered %.2f x peak; api RSS %.1f MB before, %.1f MB max",
		rep.Overload.P99MS, rep.P99Ratio, rep.Unloaded.P99MS, rep.Overload.OKPerSec, rep.GoodputRatio, rep.Peak.OKPerSec,
		rep.OfferedRatio, float64(rssBefore)/1e6, float64(rssMax)/1e6)

	t.Logf("admission limit every 250 ms under overload: %s", strings.Join(limits, " "))
	require.Empty(t, rep.Violations, "every answer keeps its contract")
	for _, p := range []overload.Point{rep.Unloaded, rep.Peak, rep.Overload} {
		require.Zero(t, p.Other, "no status but 200, 503 and 429")
		require.Positive(t, p.OK)
	}
	require.Positive(t, rep.Overload.Rejected, "the overload point overloaded the api")
	inter, bulk := rep.Overload.ByClass["interactive"], rep.Overload.ByClass["bulk"]
	require.Positive(t, inter.OK, "interactive requests are served under overload")
	require.Greater(t, bulk.ShedFraction, inter.ShedFraction, "bulk is shed before interactive")
	require.NotEmpty(t, rep.RetryAfter)

	// Nothing answered is lost: every computed 200 is in predictions.
	require.Equal(t, len(rep.Answered), countRows(t, s.dbURL, `SELECT count(*) FROM predictions WHERE request_id = ANY($1)`, rep.Answered))
	// Memory stays bounded: the api does not hold the rejected load.
	require.Less(t, rssMax, max(3*rssBefore, rssBefore+200<<20), "api RSS %d bytes under overload, %d before", rssMax, rssBefore)
}

// admissionLimit reads predq_admission_limit from the api's /metrics ("" when it cannot).
func admissionLimit(base string) string {
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "predq_admission_limit "); ok {
			return v
		}
	}
	return ""
}
