package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/pgtest"
	"github.com/predq/predq/internal/postgres"
	"github.com/predq/predq/internal/prediction"
	"github.com/predq/predq/internal/redisdb"
	"github.com/predq/predq/internal/redistest"
	"github.com/predq/predq/internal/tasks"
)

// callAs is doAs with request headers; it returns the status.
func (a *api) callAs(key, method, path string, hdr map[string]string, body, out any) int {
	a.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		require.NoError(a.t, err)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, a.base+path, rd)
	require.NoError(a.t, err)
	req.Header.Set("Authorization", "Bearer "+key)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(a.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(a.t, err)
	if out != nil {
		require.NoError(a.t, json.Unmarshal(b, out), string(b))
	}
	return resp.StatusCode
}

// startPersistWorker runs the worker's prediction:persist handler on the queue Redis and
// database of an api with PERSIST_PATH=queue, until the end of the test.
func startPersistWorker(t *testing.T, redisURL, dbURL string) {
	t.Helper()
	opts, err := redisdb.ParseURL(redisURL)
	require.NoError(t, err)
	pool, err := postgres.Open(context.Background(), dbURL, 4)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	w, err := tasks.NewWorker(tasks.WorkerConfig{Redis: opts, Store: prediction.NewStore(pool), LogLevel: "error", ShutdownTimeout: 5 * time.Second})
	require.NoError(t, err)
	require.NoError(t, w.Start())
	t.Cleanup(func() {
		w.Stop()
		w.Shutdown()
		_ = w.Close()
	})
}

type storedPrediction struct {
	ID        uuid.UUID `json:"id"`
	RequestID string    `json:"request_id"`
	Features  []float64 `json:"input_features"`
	UserID    string    `json:"user_id"`
}

type idOutput struct {
	ID         uuid.UUID `json:"id"`
	RequestID  string    `json:"request_id"`
	Prediction float64   `json:"prediction"`
}

// A client's X-Request-ID is no key: two predictions sent with the same one are both stored,
// each under the id its answer carries, and found by either; a request id finds the key's
// newest, and another key using the same request id neither sees nor shadows them. Through
// either persistence path (the api writing to Postgres; the worker writing what it queued).
func TestAReusedRequestIDStoresEachPrediction(t *testing.T) {
	t.Parallel()
	for _, path := range []string{prediction.PathPostgres, prediction.PathQueue} {
		t.Run(path, func(t *testing.T) {
			t.Parallel()
			const keyA, keyB = "tenant-a-key-0123456789", "tenant-b-key-0123456789"
			dbURL, redisURL := pgtest.NewURL(t), redistest.New(t).URL
			a := startAPI(t, map[string]string{"API_KEYS": "a:" + keyA + ",b:" + keyB, "PERSIST_PATH": path,
				"DATABASE_URL": dbURL, "REDIS_URL": redisURL})
			if path == prediction.PathQueue {
				startPersistWorker(t, redisURL, dbURL)
			}
			xs, _ := sonar(t)
			same := map[string]string{"X-Request-ID": "reused-id"}
			predict := func(key string, row int) idOutput {
				t.Helper()
				var out idOutput
				require.Equal(t, http.StatusOK, a.callAs(key, "POST", "/api/v1/predict", same, map[string]any{"features": xs[row]}, &out))
				require.Equal(t, "reused-id", out.RequestID)
				require.EqualValues(t, 7, out.ID.Version(), "the answer carries the server's id, a UUIDv7")
				return out
			}
			first, second := predict(keyA, 10), predict(keyA, 11)
			other := predict(keyB, 12)
			require.NotEqual(t, first.ID, second.ID)
			require.NotEqual(t, first.Prediction, second.Prediction)

			get := func(key, id string) (storedPrediction, int) {
				t.Helper()
				var p storedPrediction
				var status int
				require.Eventually(t, func() bool {
					p = storedPrediction{}
					status = a.callAs(key, "GET", "/api/v1/predictions/"+id, nil, nil, &p)
					return status == http.StatusOK
				}, 10*time.Second, 50*time.Millisecond, "GET %s", id)
				return p, status
			}
			for _, c := range []struct {
				out idOutput
				row int
			}{{first, 10}, {second, 11}} {
				p, _ := get(keyA, c.out.ID.String())
				require.Equal(t, c.out.ID, p.ID)
				require.Equal(t, "reused-id", p.RequestID)
				require.Equal(t, xs[c.row], p.Features, "each id holds its own prediction")
			}
			p, _ := get(keyA, "reused-id")
			require.Equal(t, second.ID, p.ID, "the request id finds A's newest, not B's (newer still)")
			p, _ = get(keyB, "reused-id")
			require.Equal(t, other.ID, p.ID, "B's request id finds B's")
			require.Equal(t, xs[12], p.Features)
			for _, id := range []uuid.UUID{first.ID, second.ID} {
				require.Equal(t, http.StatusNotFound, a.callAs(keyB, "GET", "/api/v1/predictions/"+id.String(), nil, nil, nil),
					"B cannot read A's prediction by its id")
			}
			require.Equal(t, http.StatusNotFound, a.callAs(keyA, "GET", "/api/v1/predictions/"+other.ID.String(), nil, nil, nil))

			var list struct {
				Predictions []storedPrediction `json:"predictions"`
			}
			require.Equal(t, http.StatusOK, a.callAs(keyA, "GET", "/api/v1/predictions?request_id=reused-id", nil, nil, &list))
			require.Len(t, list.Predictions, 2, "A's two predictions sent with that request id")
			require.Equal(t, []uuid.UUID{second.ID, first.ID}, []uuid.UUID{list.Predictions[0].ID, list.Predictions[1].ID}, "newest first")

			// A batch sent twice with one X-Request-ID: each sample of each an id of its own.
			var batch1, batch2 struct {
				Predictions []idOutput `json:"predictions"`
			}
			body := map[string]any{"samples": []any{map[string]any{"features": xs[20]}, map[string]any{"features": xs[21]}}}
			bodyAgain := map[string]any{"samples": []any{map[string]any{"features": xs[22]}, map[string]any{"features": xs[23]}}}
			require.Equal(t, http.StatusOK, a.callAs(keyA, "POST", "/api/v1/predict/batch", map[string]string{"X-Request-ID": "batch-id"}, body, &batch1))
			require.Equal(t, http.StatusOK, a.callAs(keyA, "POST", "/api/v1/predict/batch", map[string]string{"X-Request-ID": "batch-id"}, bodyAgain, &batch2))
			rows := map[uuid.UUID]int{batch1.Predictions[0].ID: 20, batch1.Predictions[1].ID: 21, batch2.Predictions[0].ID: 22, batch2.Predictions[1].ID: 23}
			require.Len(t, rows, 4, "four ids")
			for id, row := range rows {
				p, _ := get(keyA, id.String())
				require.Equal(t, xs[row], p.Features)
			}
			require.Equal(t, "batch-id-1", batch2.Predictions[1].RequestID)
			p, _ = get(keyA, "batch-id-1")
			require.Equal(t, batch2.Predictions[1].ID, p.ID)

			require.Equal(t, http.StatusOK, a.callAs(keyA, "GET", "/api/v1/predictions", nil, nil, &list))
			require.Len(t, list.Predictions, 6)
			for _, p := range list.Predictions {
				require.NotEqual(t, uuid.Nil, p.ID, "the list shows the id")
				require.NotEmpty(t, p.RequestID, "and the request id")
			}
		})
	}
}
