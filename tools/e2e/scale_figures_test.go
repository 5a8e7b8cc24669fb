package e2e

import (
	"bytes"
	"net/http"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/redistest"
)

// Issue 22, figures: job throughput with 1 and 2 workers, on one Redis and on a 3-master
// cluster with the batch queue in 3 shards. A measurement, not a CI test: it runs when
// E2E_SCALE_FIGURES=1 (rows per job: E2E_SCALE_ROWS, default 200,000), e.g.
//
//	cd tools && E2E_SCALE_FIGURES=1 go test -count=1 -v -run TestScaleFigures -timeout 30m ./e2e
func TestScaleFigures(t *testing.T) {
	if os.Getenv("E2E_SCALE_FIGURES") != "1" {
		t.Skip("a measurement: set E2E_SCALE_FIGURES=1")
	}
	n := 200_000
	if v := os.Getenv("E2E_SCALE_ROWS"); v != "" {
		var err error
		n, err = strconv.Atoi(v)
		require.NoError(t, err)
	}
	xs, _ := sonar(t)
	body := ndjsonRows(xs, n)
	for _, c := range []struct {
		name    string
		cluster bool
		workers int
	}{
		{"one Redis, 1 worker", false, 1},
		{"one Redis, 2 workers", false, 2},
		{"3-master cluster, 3 shards, 1 worker", true, 1},
		{"3-master cluster, 3 shards, 2 workers", true, 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := stackOpts{env: map[string]string{"JOB_CHUNK_SIZE": "1000", "WORKER_CONCURRENCY": "4"}}
			if c.cluster {
				o.redisURL = redistest.NewCluster(t, 3, 1).URL
				o.env["BATCH_SHARDS"] = "3"
			}
			s := startStack(t, o)
			if c.workers == 2 {
				s.startReplica("worker2", "WORKER_METRICS_PORT")
			}
			r := s.call("POST", "/api/v1/jobs", bytes.NewReader(body), map[string]string{"Content-Type": "application/x-ndjson"})
			require.Equal(t, http.StatusAccepted, r.status, string(r.body))
			accepted := time.Now()
			var j jobObject
			r.decode(t, &j)
			j = s.waitJob(j.ID, 10*time.Minute)
			took := time.Since(accepted)
			require.Equal(t, "succeeded", j.Status)
			require.Equal(t, n, j.Processed)
			t.Logf("%s: %d rows from accepted to succeeded in %.1f s: %.0f rows/s", c.name, n, took.Seconds(), float64(n)/took.Seconds())
		})
	}
}
