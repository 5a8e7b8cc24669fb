package e2e

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

func countRows(t *testing.T, dbURL, sql string, args ...any) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	require.NoError(t, err)
	defer conn.Close(ctx)
	var n int
	require.NoError(t, conn.QueryRow(ctx, sql, args...).Scan(&n))
	return n
}

// Issue 3: every answered prediction is stored exactly once, through the worker.
func TestConcurrentPredictsAreAllPersistedOnce(t *testing.T) {
	t.Parallel()
	s := startStack(t, stackOpts{})
	xs, _ := sonar(t)
	const n = 500
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	ids := make([]string, n)
	var mu sync.Mutex
	low := 0
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			// Every third request asks for a high threshold, so some answers are low-confidence.
			body := map[string]any{"features": xs[i%len(xs)]}
			if i%3 == 0 {
				body["confidence_threshold"] = 0.99
			}
			r := s.call("POST", "/api/v1/predict", body, map[string]string{"X-Request-ID": "e2e-" + strconv.Itoa(i)})
			require.Equal(t, http.StatusOK, r.status, string(r.body))
			var out struct {
				RequestID  string  `json:"request_id"`
				Confidence float64 `json:"confidence"`
			}
			r.decode(t, &out)
			mu.Lock()
			ids[i] = out.RequestID
			if i%3 == 0 && out.Confidence < 0.99 {
				low++
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	answered := time.Now()
	require.Eventually(t, func() bool {
		return countRows(t, s.dbURL, `SELECT count(*) FROM predictions`) >= n
	}, 20*time.Second, 100*time.Millisecond, "worker: %s", s.logs("worker"))
	t.Logf("500 predictions stored %.1fs after the last answer", time.Since(answered).Seconds())
	require.Equal(t, n, countRows(t, s.dbURL, `SELECT count(DISTINCT request_id) FROM predictions`))
	require.Equal(t, n, countRows(t, s.dbURL, `SELECT count(*) FROM predictions WHERE request_id = ANY($1)`, ids))
	require.Equal(t, n/3+1, countRows(t, s.dbURL, `SELECT count(*) FROM predictions WHERE confidence_threshold = 0.99`))

	// The read API serves them, newest first, by id or request id.
	r := s.call("GET", "/api/v1/predictions?limit=10", nil, nil)
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	var page struct {
		Predictions []struct {
			ID        int64  `json:"id"`
			RequestID string `json:"request_id"`
		} `json:"predictions"`
		NextCursor string `json:"next_cursor"`
	}
	r.decode(t, &page)
	require.Len(t, page.Predictions, 10)
	require.NotEmpty(t, page.NextCursor)
	r = s.call("GET", "/api/v1/predictions/e2e-7", nil, nil)
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	r = s.call("GET", "/api/v1/predictions/"+strconv.FormatInt(page.Predictions[0].ID, 10), nil, nil)
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	require.Equal(t, http.StatusNotFound, s.call("GET", "/api/v1/predictions/nope", nil, nil).status)

	// Low-confidence answers raised alerts that the worker handled (counted once each).
	if low > 0 {
		require.Eventually(t, func() bool {
			return metricValue(scrape(t, "http://127.0.0.1:"+s.env["WORKER_METRICS_PORT"]+"/metrics"), "ml_low_confidence_total") >= float64(low)
		}, 10*time.Second, 100*time.Millisecond)
	}
}
