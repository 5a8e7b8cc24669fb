package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	"github.com/stretchr/testify/require"
)

type predictOut struct {
	Prediction   float64 `json:"prediction"`
	ModelVersion string  `json:"model_version"`
}

type resultRow struct {
	Index           int      `json:"index"`
	Prediction      *float64 `json:"prediction"`
	PredictionClass string   `json:"prediction_class"`
	LowConfidence   bool     `json:"low_confidence"`
	ModelVersion    string   `json:"model_version"`
}

// Issue 4: a 5,000-sample JSON job succeeds and every result equals the sync predict of the
// same row; results page and stream; the SSE stream ends with the final status.
func TestJSONJobMatchesSyncPredictions(t *testing.T) {
	t.Parallel()
	s := startStack(t, stackOpts{})
	xs, _ := sonar(t)
	const n = 5000
	samples := make([]map[string]any, n)
	for i := range samples {
		samples[i] = map[string]any{"features": xs[i%len(xs)]}
	}
	r := s.call("POST", "/api/v1/jobs", map[string]any{"samples": samples, "model_version": "v2.0.0",
		"confidence_threshold": 0.9, "metadata": map[string]string{"run": "e2e"}}, nil)
	require.Equal(t, http.StatusAccepted, r.status, string(r.body))
	var j jobObject
	r.decode(t, &j)
	require.Equal(t, "/api/v1/jobs/"+j.ID, r.header.Get("Location"))
	require.Equal(t, n, j.Total)

	// Progress as Server-Sent Events, to the end.
	events := readEvents(t, s, j.ID, "")
	require.NotEmpty(t, events)
	last := events[len(events)-1]
	require.Equal(t, "status", last.event)
	var final jobObject
	require.NoError(t, json.Unmarshal([]byte(last.data), &final))
	require.Equal(t, "succeeded", final.Status)
	require.Equal(t, n, final.Processed)
	require.Zero(t, final.Failed)
	require.Equal(t, 1.0, final.Progress)

	// The sync answers of the 208 distinct rows.
	sync := make([]map[string]any, len(xs))
	for i, x := range xs {
		sync[i] = map[string]any{"features": x, "model_version": "v2.0.0"}
	}
	r = s.call("POST", "/api/v1/predict/batch", map[string]any{"samples": sync}, nil)
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	var batch struct {
		Predictions []predictOut `json:"predictions"`
	}
	r.decode(t, &batch)

	// Pages of 1,000 in item order.
	seen, low := 0, 0
	cursor := ""
	for {
		r = s.call("GET", "/api/v1/jobs/"+j.ID+"/results?limit=1000&cursor="+cursor, nil, nil)
		require.Equal(t, http.StatusOK, r.status, string(r.body))
		var page struct {
			Results    []resultRow `json:"results"`
			NextCursor string      `json:"next_cursor"`
		}
		r.decode(t, &page)
		for _, res := range page.Results {
			require.Equal(t, seen, res.Index)
			require.Equal(t, "v2.0.0", res.ModelVersion)
			require.Equal(t, batch.Predictions[res.Index%len(xs)].Prediction, *res.Prediction, "item %d", res.Index)
			if res.LowConfidence {
				low++
			}
			seen++
		}
		if page.NextCursor == "" {
			break
		}
		cursor = page.NextCursor
	}
	require.Equal(t, n, seen)
	require.Equal(t, final.LowConfidence, low)

	// The same results streamed as NDJSON and CSV.
	r = s.call("GET", "/api/v1/jobs/"+j.ID+"/results", nil, map[string]string{"Accept": "application/x-ndjson"})
	require.Equal(t, http.StatusOK, r.status)
	require.Equal(t, n, bytes.Count(r.body, []byte("\n")))
	r = s.call("GET", "/api/v1/jobs/"+j.ID+"/results", nil, map[string]string{"Accept": "text/csv"})
	require.Equal(t, http.StatusOK, r.status)
	require.Equal(t, n+1, bytes.Count(r.body, []byte("\n")), "a header and one line per item")

	// Resuming the event stream after the end gives just the final status.
	events = readEvents(t, s, j.ID, fmt.Sprint(n))
	require.Len(t, events, 1)
	require.Equal(t, "status", events[0].event)

	// Another key does not see the job.
	require.Equal(t, http.StatusNotFound, s.callAs(otherKey, "GET", "/api/v1/jobs/"+j.ID).status)

	// The list shows it, filtered by status.
	r = s.call("GET", "/api/v1/jobs?status=succeeded", nil, nil)
	require.Equal(t, http.StatusOK, r.status)
	require.Contains(t, string(r.body), j.ID)
	r = s.call("GET", "/api/v1/jobs?status=running", nil, nil)
	require.NotContains(t, string(r.body), j.ID)
}

type sseEvent struct{ event, id, data string }

// readEvents reads the job's event stream until the server ends it.
func readEvents(t *testing.T, s *stack, id, lastEventID string) []sseEvent {
	t.Helper()
	req, err := http.NewRequest("GET", s.base+"/api/v1/jobs/"+id+"/events", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+apiKey)
	req.Header.Set("Accept", "text/event-stream")
	if lastEventID != "" {
		req.Header.Set("Last-Event-ID", lastEventID)
	}
	client := &http.Client{Timeout: 120 * time.Second}
	resp, err := client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	var out []sseEvent
	var cur sseEvent
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if cur.event != "" {
				out = append(out, cur)
			}
			cur = sseEvent{}
		case strings.HasPrefix(line, "event: "):
			cur.event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "id: "):
			cur.id = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "data: "):
			cur.data = strings.TrimPrefix(line, "data: ")
		}
	}
	require.NoError(t, sc.Err())
	return out
}

func (s *stack) callAs(key, method, path string) response {
	s.t.Helper()
	req, err := http.NewRequest(method, s.base+path, nil)
	require.NoError(s.t, err)
	req.Header.Set("X-API-Key", key)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(s.t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// Issue 4: a 200,000-row NDJSON upload, streamed; the api's peak memory is reported.
func TestLargeNDJSONJob(t *testing.T) {
	t.Parallel()
	s := startStack(t, stackOpts{env: map[string]string{"JOB_CHUNK_SIZE": "5000"}})
	xs, _ := sonar(t)
	const n = 200_000
	body := ndjsonRows(xs, n)
	before := s.peakRSS("api")
	start := time.Now()
	r := s.call("POST", "/api/v1/jobs?model_version=v1.0.0&preprocessing=minmax", bytes.NewReader(body),
		map[string]string{"Content-Type": "application/x-ndjson"})
	require.Equal(t, http.StatusAccepted, r.status, string(r.body))
	submitted := time.Since(start)
	var j jobObject
	r.decode(t, &j)
	require.Equal(t, n, j.Total)
	j = s.waitJob(j.ID, 3*time.Minute)
	took := time.Since(start)
	require.Equal(t, "succeeded", j.Status, "%+v", j)
	require.Equal(t, n, j.Processed)
	require.Equal(t, j.Total, j.Processed+j.Failed)
	require.Equal(t, n, countRows(t, s.dbURL, `SELECT count(*) FROM job_results WHERE job_id = $1`, j.ID))
	t.Logf("200,000-row NDJSON job (%d MB): upload %.1fs, submit to succeeded %.1fs (%.0f rows/s); api peak RSS %d MB (%d MB before the upload)",
		len(body)>>20, submitted.Seconds(), took.Seconds(), float64(n)/took.Seconds(), s.peakRSS("api")>>20, before>>20)
}

// Issue 4: cancel in the middle; finished results stay; a terminal job's cancel is 409.
func TestCancelRunningJob(t *testing.T) {
	t.Parallel()
	// One worker slot and small chunks, so that the job is still running when cancelled.
	s := startStack(t, stackOpts{env: map[string]string{"JOB_CHUNK_SIZE": "100", "WORKER_CONCURRENCY": "1"}})
	xs, _ := sonar(t)
	r := s.call("POST", "/api/v1/jobs", bytes.NewReader(ndjsonRows(xs, 20_000)), map[string]string{"Content-Type": "application/x-ndjson"})
	require.Equal(t, http.StatusAccepted, r.status, string(r.body))
	var j jobObject
	r.decode(t, &j)
	require.Eventually(t, func() bool { return s.job(j.ID).Processed > 0 }, 30*time.Second, 20*time.Millisecond)
	r = s.call("POST", "/api/v1/jobs/"+j.ID+"/cancel", nil, nil)
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	var c jobObject
	r.decode(t, &c)
	require.Equal(t, "cancelled", c.Status)
	require.Less(t, c.Processed, 20_000)
	// Every chunk task left runs (and does nothing): wait until the batch queue is empty.
	rdb := s.redis.Client(t)
	require.Eventually(t, func() bool {
		pending, _ := rdb.LLen(context.Background(), "asynq:{batch}:pending").Result()
		active, _ := rdb.LLen(context.Background(), "asynq:{batch}:active").Result()
		return pending == 0 && active == 0
	}, 30*time.Second, 20*time.Millisecond)
	after := s.job(j.ID)
	require.Equal(t, "cancelled", after.Status)
	require.Equal(t, c.Processed, after.Processed, "nothing is counted after the cancel")
	require.Equal(t, c.Processed, countRows(t, s.dbURL, `SELECT count(*) FROM job_results WHERE job_id = $1`, j.ID))
	require.Equal(t, http.StatusConflict, s.call("POST", "/api/v1/jobs/"+j.ID+"/cancel", nil, nil).status)
	require.Equal(t, http.StatusNotFound, s.call("POST", "/api/v1/jobs/00000000-0000-0000-0000-000000000000/cancel", nil, nil).status)
}

// Issue 4: Idempotency-Key replay, other body, concurrent.
func TestIdempotencyKey(t *testing.T) {
	t.Parallel()
	s := startStack(t, stackOpts{noWorker: true})
	xs, _ := sonar(t)
	body := ndjsonRows(xs, 300)
	hdr := map[string]string{"Content-Type": "application/x-ndjson", "Idempotency-Key": "key-1"}
	first := s.call("POST", "/api/v1/jobs", body, hdr)
	require.Equal(t, http.StatusAccepted, first.status, string(first.body))
	again := s.call("POST", "/api/v1/jobs", body, hdr)
	require.Equal(t, http.StatusAccepted, again.status)
	require.JSONEq(t, string(first.body), string(again.body), "the same key and body return the first answer")
	require.Equal(t, "true", again.header.Get("Idempotent-Replayed"))
	require.Equal(t, 1, countRows(t, s.dbURL, `SELECT count(*) FROM jobs`))

	other := s.call("POST", "/api/v1/jobs", ndjsonRows(xs, 301), hdr)
	require.Equal(t, http.StatusUnprocessableEntity, other.status, string(other.body))
	require.Contains(t, string(other.body), "Idempotency-Key")

	// Two at once with a new key: one is accepted, the other is 409 (or, if it arrived
	// after the first finished, the replay).
	big := ndjsonRows(xs, 50_000)
	var wg sync.WaitGroup
	statuses := make([]int, 2)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses[i] = s.call("POST", "/api/v1/jobs", big, map[string]string{"Content-Type": "application/x-ndjson", "Idempotency-Key": "key-2"}).status
		}()
	}
	wg.Wait()
	require.Contains(t, statuses, http.StatusAccepted)
	require.Subset(t, []int{http.StatusAccepted, http.StatusConflict}, statuses)
	require.Equal(t, 2, countRows(t, s.dbURL, `SELECT count(*) FROM jobs`), "one job per key")
}

// Issue 4: the webhook reaches a local receiver, signed (verified with the Standard
// Webhooks reference library); a receiver that fails at first gets it after retries.
func TestSignedWebhookWithRetries(t *testing.T) {
	t.Parallel()
	secret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	verifier, err := standardwebhooks.NewWebhook(secret)
	require.NoError(t, err)
	var calls atomic.Int32
	type delivery struct {
		id   string
		body []byte
	}
	got := make(chan delivery, 10)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if err := verifier.Verify(b, r.Header); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if calls.Add(1) <= 2 {
			http.Error(w, "not yet", http.StatusServiceUnavailable)
			return
		}
		got <- delivery{id: r.Header.Get("webhook-id"), body: b}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer recv.Close()
	s := startStack(t, stackOpts{})
	xs, _ := sonar(t)
	r := s.call("POST", "/api/v1/jobs", map[string]any{"samples": []any{map[string]any{"features": xs[0]}}, "webhook_url": recv.URL + "/hook"}, nil)
	require.Equal(t, http.StatusAccepted, r.status, string(r.body))
	var j jobObject
	r.decode(t, &j)
	var d delivery
	select {
	case d = <-got:
	case <-time.After(60 * time.Second):
		t.Fatalf("no webhook delivered; %d attempts; worker: %s", calls.Load(), s.logs("worker"))
	}
	var ev struct {
		Type string    `json:"type"`
		Data jobObject `json:"data"`
	}
	require.NoError(t, json.Unmarshal(d.body, &ev))
	require.Equal(t, "job.succeeded", ev.Type)
	require.Equal(t, j.ID, ev.Data.ID)
	require.NotEmpty(t, d.id)
	require.Eventually(t, func() bool {
		w := s.job(j.ID).Webhook
		return w != nil && w.Status == "delivered" && w.Attempts == 3
	}, 10*time.Second, 50*time.Millisecond, "the job shows the delivery: %+v", s.job(j.ID).Webhook)
}

// Issue 4: a webhook URL on a private address is refused at submission (422), unless allowed.
func TestWebhookSSRFRefused(t *testing.T) {
	t.Parallel()
	s := startStack(t, stackOpts{noWorker: true, env: map[string]string{"WEBHOOK_ALLOW_PRIVATE": "false"}})
	xs, _ := sonar(t)
	for _, u := range []string{"http://127.0.0.1:9/hook", "http://169.254.169.254/latest/meta-data", "http://10.1.2.3/x", "http://[::1]/x", "ftp://example.com/x"} {
		r := s.call("POST", "/api/v1/jobs", map[string]any{"samples": []any{map[string]any{"features": xs[0]}}, "webhook_url": u}, nil)
		require.Equal(t, http.StatusUnprocessableEntity, r.status, "%s: %s", u, r.body)
		require.Contains(t, string(r.body), `"webhook_url"`)
	}
	require.Zero(t, countRows(t, s.dbURL, `SELECT count(*) FROM jobs`), "nothing is stored")
}

// Issue 4: bad rows refuse the whole submission, naming the first bad rows.
func TestBadRowsRefuseTheJob(t *testing.T) {
	t.Parallel()
	s := startStack(t, stackOpts{noWorker: true})
	xs, _ := sonar(t)
	lines := strings.Split(string(ndjsonRows(xs, 1000)), "\n")
	lines[10] = `{"features":[1,2,3]}`
	lines[500] = `{"features":[1e400]}`
	r := s.call("POST", "/api/v1/jobs", strings.Join(lines, "\n"), map[string]string{"Content-Type": "application/x-ndjson"})
	require.Equal(t, http.StatusUnprocessableEntity, r.status, string(r.body))
	require.Contains(t, string(r.body), "rows[11].features")
	require.Contains(t, string(r.body), "rows[501].features")
	r = s.call("POST", "/api/v1/jobs", `{"samples":[{"features":[1]}],}`, map[string]string{"Content-Type": "application/json"})
	require.Equal(t, http.StatusBadRequest, r.status, string(r.body))
	r = s.call("POST", "/api/v1/jobs", "x", map[string]string{"Content-Type": "text/plain"})
	require.Equal(t, http.StatusUnsupportedMediaType, r.status)
	require.Zero(t, countRows(t, s.dbURL, `SELECT count(*) FROM jobs`))
}
