package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// submitAs submits an NDJSON job with key; safe from any goroutine (no require).
func (s *stack) submitAs(key string, body []byte, query string) (int, http.Header, []byte, error) {
	req, err := http.NewRequest("POST", s.base+"/api/v1/jobs"+query, bytes.NewReader(body))
	if err != nil {
		return 0, nil, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/x-ndjson")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b, err
}

// jobAs reads a job with key.
func (s *stack) jobAs(key, id string) jobObject {
	s.t.Helper()
	r := s.callAs(key, "GET", "/api/v1/jobs/"+id)
	require.Equal(s.t, http.StatusOK, r.status, string(r.body))
	var j jobObject
	r.decode(s.t, &j)
	return j
}

func (s *stack) mustSubmitAs(key string, body []byte) jobObject {
	s.t.Helper()
	status, _, b, err := s.submitAs(key, body, "")
	require.NoError(s.t, err)
	require.Equal(s.t, http.StatusAccepted, status, string(b))
	var j jobObject
	require.NoError(s.t, json.Unmarshal(b, &j))
	return j
}

// fairRows is the rows of A's big job in TestFairShareSmallJobsOvertakeBigJob: the issue's
// 2,000,000, or E2E_FAIR_ROWS for a quicker local run.
func fairRows(t *testing.T) int {
	t.Helper()
	v := os.Getenv("E2E_FAIR_ROWS")
	if v == "" {
		return 2_000_000
	}
	n, err := strconv.Atoi(v)
	require.NoError(t, err, "E2E_FAIR_ROWS")
	require.GreaterOrEqual(t, n, 20_000, "E2E_FAIR_ROWS: A's job must outlast B's ten")
	return n
}

// ndjsonStream is n NDJSON rows of xs written as they are read, so that a job of millions
// of rows is not held in the test's memory.
func ndjsonStream(xs [][]float64, n int) io.Reader {
	lines := make([][]byte, len(xs))
	for i := range xs {
		lines[i] = ndjsonRows(xs[i:i+1], 1)
	}
	pr, pw := io.Pipe()
	go func() {
		bw := bufio.NewWriterSize(pw, 256<<10)
		for i := range n {
			if _, err := bw.Write(lines[i%len(lines)]); err != nil {
				pw.CloseWithError(err)
				return
			}
		}
		pw.CloseWithError(bw.Flush())
	}()
	return pr
}

// Issue 21: while key A's 2,000,000-row job runs, key B's ten 200-row jobs, submitted at
// once, each finish before A has done another 10% of its rows: chunks are claimed by fair
// order over keys, not in the order their tasks were queued. A's chunks are a 400th of its
// rows (5,000), so that its 400 tokens are all queued ahead of B's.
func TestFairShareSmallJobsOvertakeBigJob(t *testing.T) {
	t.Parallel()
	bigRows := fairRows(t)
	s := startStack(t, stackOpts{env: map[string]string{"JOB_CHUNK_SIZE": strconv.Itoa(max(500, bigRows/400))}})
	xs, _ := sonar(t)
	req, err := http.NewRequest("POST", s.base+"/api/v1/jobs", ndjsonStream(xs, bigRows))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+apiKey)
	req.Header.Set("Content-Type", "application/x-ndjson")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	rb, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	require.Equal(t, http.StatusAccepted, resp.StatusCode, string(rb))
	var a jobObject
	require.NoError(t, json.Unmarshal(rb, &a))

	// A has started and holds the workers.
	require.Eventually(t, func() bool { return s.jobAs(apiKey, a.ID).Processed >= bigRows/20 }, 2*time.Minute, 50*time.Millisecond)
	require.Equal(t, "running", s.jobAs(apiKey, a.ID).Status)

	small := ndjsonRows(xs, 200)
	ids := make([]string, 10)
	var wg sync.WaitGroup
	errs := make([]error, 10)
	for i := range ids {
		wg.Go(func() {
			status, _, b, err := s.submitAs(otherKey, small, "")
			if err == nil && status != http.StatusAccepted {
				err = fmt.Errorf("status %d: %s", status, b)
			}
			var j jobObject
			if err == nil {
				err = json.Unmarshal(b, &j)
			}
			ids[i], errs[i] = j.ID, err
		})
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	// B's jobs, one list call per poll (polling each job would load the api more than the
	// jobs do).
	require.Eventually(t, func() bool {
		r := s.callAs(otherKey, "GET", "/api/v1/jobs?status=succeeded&limit=100")
		var list struct {
			Jobs []jobObject `json:"jobs"`
		}
		if r.status != http.StatusOK || json.Unmarshal(r.body, &list) != nil {
			return false
		}
		return len(list.Jobs) == len(ids)
	}, 2*time.Minute, 25*time.Millisecond)
	require.Equal(t, "running", s.jobAs(apiKey, a.ID).Status, "A must still run for the comparison to mean anything")

	// For each of B's jobs, A's rows done between B's job row being written (the start of its
	// submission's transaction) and B's job finishing, from the done times of A's chunks.
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, s.dbURL)
	require.NoError(t, err)
	defer conn.Close(ctx)
	var worst int
	var report []string
	for _, id := range ids {
		var aRows int
		var took time.Duration
		require.NoError(t, conn.QueryRow(ctx, `SELECT COALESCE(sum(c.rows), 0)::int, b.finished_at - b.created_at
			FROM jobs b LEFT JOIN job_chunks c ON c.job_id = $2 AND c.status = 'done' AND c.done_at > b.created_at AND c.done_at <= b.finished_at
			WHERE b.id = $1 GROUP BY b.finished_at, b.created_at`, id, a.ID).Scan(&aRows, &took))
		worst = max(worst, aRows)
		report = append(report, fmt.Sprintf("%v/%d", took.Round(time.Millisecond), aRows))
	}
	t.Logf("B's ten 200-row jobs, created → succeeded / A's rows done meanwhile: %v; the most: %d (%.1f%% of A)",
		report, worst, 100*float64(worst)/float64(bigRows))
	require.Less(t, worst, bigRows/10, "A did another 10%% before one of B's jobs was done")
	require.Equal(t, "succeeded", s.waitJob(a.ID, 10*time.Minute).Status)
}

// Issue 21: two big jobs of two keys with equal weights progress at equal rates (within 20%).
func TestFairShareEqualWeightsEqualRates(t *testing.T) {
	t.Parallel()
	s := startStack(t, stackOpts{env: map[string]string{"JOB_CHUNK_SIZE": "500"}})
	xs, _ := sonar(t)
	const rows = 150_000
	body := ndjsonRows(xs, rows)
	var a, b jobObject
	var wg sync.WaitGroup
	var errA, errB error
	submit := func(key string, out *jobObject, errp *error) {
		status, _, resp, err := s.submitAs(key, body, "")
		if err == nil && status != http.StatusAccepted {
			err = fmt.Errorf("status %d: %s", status, resp)
		}
		if err == nil {
			err = json.Unmarshal(resp, out)
		}
		*errp = err
	}
	wg.Go(func() { submit(apiKey, &a, &errA) })
	wg.Go(func() { submit(otherKey, &b, &errB) })
	wg.Wait()
	require.NoError(t, errA)
	require.NoError(t, errB)

	// From the moment both run, until one of them has done another 40% of its rows.
	var a1, b1 jobObject
	require.Eventually(t, func() bool {
		a1, b1 = s.jobAs(apiKey, a.ID), s.jobAs(otherKey, b.ID)
		return a1.Processed > 0 && b1.Processed > 0
	}, 2*time.Minute, 50*time.Millisecond)
	var a2, b2 jobObject
	require.Eventually(t, func() bool {
		a2, b2 = s.jobAs(apiKey, a.ID), s.jobAs(otherKey, b.ID)
		return max(a2.Processed-a1.Processed, b2.Processed-b1.Processed) >= rows*4/10
	}, 3*time.Minute, 50*time.Millisecond)
	da, db := a2.Processed-a1.Processed, b2.Processed-b1.Processed
	t.Logf("rows done in the window: A %d, B %d (ratio %.3f)", da, db, float64(min(da, db))/float64(max(da, db)))
	require.Equal(t, "running", a2.Status)
	require.Equal(t, "running", b2.Status)
	require.GreaterOrEqual(t, float64(min(da, db)), 0.8*float64(max(da, db)), "equal weights, rates within 20%%")
	require.Equal(t, "succeeded", s.waitJob(a.ID, 3*time.Minute).Status)
	// B is polled until it ends too: it may finish a moment after A.
	var bEnd jobObject
	require.Eventually(t, func() bool {
		bEnd = s.jobAs(otherKey, b.ID)
		return bEnd.Status != "queued" && bEnd.Status != "running"
	}, 3*time.Minute, 50*time.Millisecond)
	require.Equal(t, "succeeded", bEnd.Status)
}

// Issue 21: a key past its quota of queued jobs gets 429 naming the quota, with Retry-After;
// another key is not affected. The first key's quota is its own (API_KEYS' attributes).
func TestJobQuotas(t *testing.T) {
	t.Parallel()
	s := startStack(t, stackOpts{noWorker: true, env: map[string]string{
		"API_KEYS":             "e2e:" + apiKey + ":predict+jobs:max_queued_jobs=2,other:" + otherKey,
		"JOB_MAX_PENDING_ROWS": "1000",
	}})
	xs, _ := sonar(t)
	body := ndjsonRows(xs, 10)
	s.mustSubmitAs(apiKey, body)
	s.mustSubmitAs(apiKey, body)
	status, header, b, err := s.submitAs(apiKey, body, "")
	require.NoError(t, err)
	require.Equal(t, http.StatusTooManyRequests, status, string(b))
	require.Equal(t, "application/problem+json", header.Get("Content-Type"))
	require.NotEmpty(t, header.Get("Retry-After"))
	var p struct {
		Type    string `json:"type"`
		Quota   string `json:"quota"`
		Limit   int64  `json:"limit"`
		Current int64  `json:"current"`
	}
	require.NoError(t, json.Unmarshal(b, &p))
	require.Equal(t, "https://predq.dev/problems/quota-exceeded", p.Type)
	require.Equal(t, "queued_jobs", p.Quota)
	require.EqualValues(t, 2, p.Limit)
	require.EqualValues(t, 2, p.Current)

	// The other key is unaffected by the first's jobs; past the default pending rows
	// (JOB_MAX_PENDING_ROWS) it is refused at the end of its body, and nothing is stored.
	s.mustSubmitAs(otherKey, ndjsonRows(xs, 900))
	status, header, b, err = s.submitAs(otherKey, ndjsonRows(xs, 200), "")
	require.NoError(t, err)
	require.Equal(t, http.StatusTooManyRequests, status, string(b))
	require.NotEmpty(t, header.Get("Retry-After"))
	require.NoError(t, json.Unmarshal(b, &p))
	require.Equal(t, "pending_rows", p.Quota)
	require.EqualValues(t, 1000, p.Limit)
	require.EqualValues(t, 900, p.Current)
	r := s.callAs(otherKey, "GET", "/api/v1/jobs")
	require.Equal(t, http.StatusOK, r.status)
	var list struct {
		Jobs []jobObject `json:"jobs"`
	}
	r.decode(t, &list)
	require.Len(t, list.Jobs, 1, "the refused job left nothing")
	s.mustSubmitAs(otherKey, ndjsonRows(xs, 100)) // what fits is still accepted
}
