package e2e

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
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

// Issue 3: every computed prediction is stored exactly once, by either path: written by the
// api before it answers (PERSIST_PATH=postgres, the default: GET finds each prediction as soon
// as its answer is read), or through the worker (queue). The inputs are distinct: a cache hit
// is stored only when it is below its threshold, checked at the end.
func TestConcurrentPredictsAreAllPersistedOnce(t *testing.T) {
	t.Parallel()
	for _, path := range []string{"postgres", "queue"} {
		t.Run(path, func(t *testing.T) {
			t.Parallel()
			testConcurrentPredictsArePersistedOnce(t, path)
		})
	}
}

func testConcurrentPredictsArePersistedOnce(t *testing.T, path string) {
	s := startStack(t, stackOpts{env: map[string]string{"PERSIST_PATH": path}})
	xs, _ := sonar(t)
	var unread atomic.Int32 // postgres path: answers whose prediction GET did not find at once
	const n = 500
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	ids, serverIDs := make([]string, n), make([]string, n)
	var mu sync.Mutex
	low := 0
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			// Every third request asks for a high threshold, so some answers are low-confidence.
			body := map[string]any{"features": distinct(xs, i)}
			if i%3 == 0 {
				body["confidence_threshold"] = 0.99
			}
			r := s.call("POST", "/api/v1/predict", body, map[string]string{"X-Request-ID": "e2e-" + strconv.Itoa(i)})
			require.Equal(t, http.StatusOK, r.status, string(r.body))
			var out struct {
				ID         string  `json:"id"`
				RequestID  string  `json:"request_id"`
				Confidence float64 `json:"confidence"`
			}
			r.decode(t, &out)
			if path == "postgres" {
				if g := s.call("GET", "/api/v1/predictions/"+out.RequestID, nil, nil); g.status != http.StatusOK {
					unread.Add(1)
				}
			}
			mu.Lock()
			ids[i], serverIDs[i] = out.RequestID, out.ID
			if i%3 == 0 && out.Confidence < 0.99 {
				low++
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	require.Zero(t, unread.Load(), "predictions not readable right after their answer")
	answered := time.Now()
	require.Eventually(t, func() bool {
		return countRows(t, s.dbURL, `SELECT count(*) FROM predictions`) >= n
	}, 20*time.Second, 100*time.Millisecond, "worker: %s", s.logs("worker"))
	t.Logf("%s: 500 predictions stored %.1fs after the last answer", path, time.Since(answered).Seconds())
	require.Equal(t, n, countRows(t, s.dbURL, `SELECT count(DISTINCT request_id) FROM predictions`))
	require.Equal(t, n, countRows(t, s.dbURL, `SELECT count(*) FROM predictions WHERE request_id = ANY($1)`, ids))
	require.Equal(t, n, countRows(t, s.dbURL, `SELECT count(*) FROM predictions WHERE id::text = ANY($1)`, serverIDs),
		"each stored under the id its answer carries")
	require.Equal(t, n/3+1, countRows(t, s.dbURL, `SELECT count(*) FROM predictions WHERE confidence_threshold = 0.99`))

	// The read API serves them, newest first, by id or request id.
	r := s.call("GET", "/api/v1/predictions?limit=10", nil, nil)
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	var page struct {
		Predictions []struct {
			ID        string `json:"id"`
			RequestID string `json:"request_id"`
		} `json:"predictions"`
		NextCursor string `json:"next_cursor"`
	}
	r.decode(t, &page)
	require.Len(t, page.Predictions, 10)
	require.NotEmpty(t, page.NextCursor)
	r = s.call("GET", "/api/v1/predictions/e2e-7", nil, nil)
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	r = s.call("GET", "/api/v1/predictions/"+page.Predictions[0].ID, nil, nil)
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	require.Equal(t, http.StatusNotFound, s.call("GET", "/api/v1/predictions/nope", nil, nil).status)

	// A cache hit answers without being stored, unless it is below its threshold.
	var hit, lowHit struct {
		Cached     bool    `json:"cached"`
		Confidence float64 `json:"confidence"`
	}
	r = s.call("POST", "/api/v1/predict", map[string]any{"features": distinct(xs, 1)}, map[string]string{"X-Request-ID": "e2e-hit"})
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	r.decode(t, &hit)
	require.True(t, hit.Cached)
	r = s.call("POST", "/api/v1/predict", map[string]any{"features": distinct(xs, 1), "confidence_threshold": 1},
		map[string]string{"X-Request-ID": "e2e-low-hit"})
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	r.decode(t, &lowHit)
	require.True(t, lowHit.Cached)
	require.Less(t, lowHit.Confidence, 1.0)
	require.Eventually(t, func() bool {
		return countRows(t, s.dbURL, `SELECT count(*) FROM predictions WHERE request_id = 'e2e-low-hit' AND cached`) == 1
	}, 20*time.Second, 100*time.Millisecond, "the low-confidence hit is stored")
	require.Equal(t, http.StatusOK, s.call("GET", "/api/v1/predictions/e2e-low-hit", nil, nil).status)
	require.Equal(t, http.StatusNotFound, s.call("GET", "/api/v1/predictions/e2e-hit", nil, nil).status, "a confident hit is not stored")
	low++

	// Low-confidence answers raised alerts that the worker handled (counted once each).
	if low > 0 {
		require.Eventually(t, func() bool {
			return metricValue(scrape(t, "http://127.0.0.1:"+s.env["WORKER_METRICS_PORT"]+"/metrics"), "ml_low_confidence_total") >= float64(low)
		}, 10*time.Second, 100*time.Millisecond)
	}
}

// distinct is sonar row i mod 208 with its first feature moved by (1+i/208)·1e-9, so that no
// two i give the same input (no cache hit among them).
func distinct(xs [][]float64, i int) []float64 {
	x := append([]float64(nil), xs[i%len(xs)]...)
	x[0] += float64(1+i/len(xs)) * 1e-9
	return x
}
