package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/localsvc"
	"github.com/predq/predq/internal/pgtest"
	"github.com/predq/predq/internal/redistest"
)

const testKey = "test-key-0123456789abcdef"

// api is a running api process (run() in this test process) and its client.
type api struct {
	base     string
	grpcAddr string // host:port of the gRPC server
	t        *testing.T
}

type testWriter struct {
	t  *testing.T
	mu sync.Mutex
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// startAPI runs the api with env on top of a fresh database, a throwaway Redis and the
// shipped models, and waits until it answers (HTTP and gRPC on free ports). A port picked free can be taken before the api
// binds it (the tests run in parallel); the api then exits saying so, and starts again on
// another.
func startAPI(t *testing.T, env map[string]string) *api {
	t.Helper()
	vars := map[string]string{
		"MODEL_PATH": "../../models",
		"API_KEYS":   "tester:" + testKey,
		"LOG_LEVEL":  "warn",
	}
	if env["DATABASE_URL"] == "" {
		vars["DATABASE_URL"] = pgtest.NewURL(t)
	}
	if env["REDIS_URL"] == "" {
		vars["REDIS_URL"] = redistest.New(t).URL
	}
	for k, v := range env {
		vars[k] = v
	}
	for attempt := 1; ; attempt++ {
		port, err := localsvc.FreePort()
		require.NoError(t, err)
		these := maps.Clone(vars)
		these["PORT"] = strconv.Itoa(port)
		grpcPort, err := localsvc.FreePort()
		require.NoError(t, err)
		if env["GRPC_PORT"] == "" {
			these["GRPC_PORT"] = strconv.Itoa(grpcPort)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		w := &testWriter{t: t}
		go func() { done <- run(ctx, []string{"api"}, func(k string) string { return these[k] }, w, w) }()
		a := &api{base: fmt.Sprintf("http://127.0.0.1:%d", port), grpcAddr: "127.0.0.1:" + these["GRPC_PORT"], t: t}
		up, exited, exitErr := waitLive(a.base+"/health/live", done, 20*time.Second)
		if up {
			t.Cleanup(func() {
				cancel()
				select {
				case err := <-done:
					require.NoError(t, err)
				case <-time.After(30 * time.Second):
					t.Error("api did not stop within 30s")
				}
			})
			return a
		}
		cancel()
		if !exited {
			select {
			case err := <-done:
				t.Logf("api ended before answering: %v", err)
			case <-time.After(30 * time.Second):
			}
			t.Fatalf("api did not answer on %s within 20s", a.base)
		}
		if attempt < 5 && exitErr != nil && strings.Contains(exitErr.Error(), "address already in use") {
			t.Logf("port %d was taken before the api could bind it; trying another", port)
			continue
		}
		t.Fatalf("api exited: %v", exitErr)
	}
}

// waitLive polls url until it answers 200 (up), the api's run returns on done (exited, with
// its error) or the time is up.
func waitLive(url string, done <-chan error, within time.Duration) (up, exited bool, err error) {
	client := &http.Client{Timeout: 2 * time.Second}
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		select {
		case err := <-done:
			return false, true, err
		default:
		}
		if resp, err := client.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return true, false, nil
			}
		}
	}
	return false, false, nil
}

func (a *api) do(method, path string, body any, out any) int {
	a.t.Helper()
	return a.doAs(testKey, method, path, body, out)
}

// doAs is do with key as the API key.
func (a *api) doAs(key, method, path string, body any, out any) int {
	a.t.Helper()
	return a.callAs(key, method, path, nil, body, out)
}

type output struct {
	Prediction      float64 `json:"prediction"`
	Confidence      float64 `json:"confidence"`
	ModelVersion    string  `json:"model_version"`
	PredictionClass string  `json:"prediction_class"`
	Cached          bool    `json:"cached"`
	RequestID       string  `json:"request_id"`
	Timestamp       string  `json:"timestamp"`
}

// sonar reads the shipped data set: features and whether each row is a mine (positive).
func sonar(t *testing.T) ([][]float64, []bool) {
	t.Helper()
	f, err := os.Open("../../data/sonar.csv")
	require.NoError(t, err)
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	require.NoError(t, err)
	var xs [][]float64
	var ys []bool
	for _, r := range rows {
		x := make([]float64, 60)
		for i := range x {
			x[i], err = strconv.ParseFloat(r[i], 64)
			require.NoError(t, err)
		}
		xs = append(xs, x)
		ys = append(ys, r[60] == "M")
	}
	return xs, ys
}

func TestAPIPredictsWithCacheAndBatch(t *testing.T) {
	t.Parallel()
	// A generous cache timeout: on a loaded host a Redis call past the default would (rightly)
	// be answered by inference, and the cache-hit check would fail for the wrong reason.
	a := startAPI(t, map[string]string{"REDIS_TIMEOUT": "10s"})
	xs, ys := sonar(t)

	t.Run("second identical predict is a cache hit with the same numbers", func(t *testing.T) {
		var first, second output
		require.Equal(t, http.StatusOK, a.do("POST", "/api/v1/predict", map[string]any{"features": xs[0]}, &first))
		require.Equal(t, http.StatusOK, a.do("POST", "/api/v1/predict", map[string]any{"features": xs[0]}, &second))
		require.False(t, first.Cached)
		require.True(t, second.Cached)
		require.Equal(t, first.Prediction, second.Prediction)
		require.Equal(t, first.Confidence, second.Confidence)
		require.Equal(t, "v2.0.0", first.ModelVersion, "latest resolves to the highest version")
		require.NotEqual(t, first.RequestID, second.RequestID)
		_, err := time.Parse(time.RFC3339, first.Timestamp)
		require.NoError(t, err)
	})

	t.Run("batch of all 208 rows is accurate and equals single predictions", func(t *testing.T) {
		samples := make([]map[string]any, len(xs))
		for i, x := range xs {
			samples[i] = map[string]any{"features": x, "model_version": "v2.0.0"}
		}
		var resp struct {
			Predictions []output `json:"predictions"`
			Total       int      `json:"total"`
		}
		require.Equal(t, http.StatusOK, a.do("POST", "/api/v1/predict/batch", map[string]any{"samples": samples, "parallel": true}, &resp))
		require.Equal(t, len(xs), resp.Total)
		require.Len(t, resp.Predictions, len(xs))
		correct := 0
		for i, p := range resp.Predictions {
			if (p.PredictionClass == "positive") == ys[i] {
				correct++
			}
		}
		acc := float64(correct) / float64(len(xs))
		t.Logf("v2.0.0 accuracy on the 208 rows: %.4f", acc)
		require.GreaterOrEqual(t, acc, 0.85)
		for _, i := range []int{0, 1, 50, 97, 150, 207} {
			var single output
			require.Equal(t, http.StatusOK, a.do("POST", "/api/v1/predict", map[string]any{"features": xs[i], "model_version": "v2.0.0"}, &single))
			require.InDelta(t, single.Prediction, resp.Predictions[i].Prediction, 1e-12, "row %d", i)
		}
	})

	t.Run("every variant answers", func(t *testing.T) {
		for _, c := range []struct{ version, prep string }{
			{"v1.0.0", "standard"}, {"v1.0.0", "minmax"}, {"latest", "robust"}, {"v2.0.0", "minmax"},
		} {
			var out output
			require.Equal(t, http.StatusOK, a.do("POST", "/api/v1/predict", map[string]any{"features": xs[3], "model_version": c.version, "preprocessing": c.prep}, &out), c)
			require.True(t, out.Prediction >= 0 && out.Prediction <= 1)
		}
	})

	t.Run("models are listed with metrics and aliases", func(t *testing.T) {
		var resp struct {
			Models []struct {
				Version string   `json:"version"`
				Aliases []string `json:"aliases"`
			} `json:"models"`
		}
		require.Equal(t, http.StatusOK, a.do("GET", "/api/v1/models", nil, &resp))
		list := resp.Models
		require.Len(t, list, 2)
		require.Equal(t, "v2.0.0", list[1].Version)
		require.Contains(t, list[1].Aliases, "latest")
		require.Equal(t, http.StatusNotFound, a.do("GET", "/api/v1/models/v9.9.9", nil, nil))
	})

	t.Run("unknown model version is a 404 problem", func(t *testing.T) {
		require.Equal(t, http.StatusNotFound, a.do("POST", "/api/v1/predict", map[string]any{"features": xs[0], "model_version": "v9.0.0"}, nil))
	})
}

func TestAPIAnswersWithoutRedis(t *testing.T) {
	t.Parallel()
	port, err := localsvc.FreePort() // nothing listens there
	require.NoError(t, err)
	a := startAPI(t, map[string]string{"REDIS_URL": fmt.Sprintf("redis://127.0.0.1:%d/0", port)})
	xs, _ := sonar(t)
	for range 2 {
		var out output
		require.Equal(t, http.StatusOK, a.do("POST", "/api/v1/predict", map[string]any{"features": xs[10]}, &out))
		require.False(t, out.Cached)
	}
	var ready struct {
		Status string `json:"status"`
		Checks map[string]struct {
			Status string `json:"status"`
		} `json:"checks"`
	}
	require.Equal(t, http.StatusOK, a.do("GET", "/health/ready", nil, &ready), "one store down must not fail readiness")
	require.Equal(t, "degraded", ready.Status)
	require.Equal(t, "down", ready.Checks["redis"].Status)
}

func TestAPISkipsACorruptArtifact(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, name := range []string{"v1.0.0.json", "v2.0.0.json"} {
		b, err := os.ReadFile(filepath.Join("../../models", name))
		require.NoError(t, err)
		if name == "v2.0.0.json" {
			changed := bytes.Replace(b, []byte(`"output_bias": `), []byte(`"output_bias": 1`), 1) // valid JSON, wrong checksum
			require.False(t, bytes.Equal(b, changed), "the artifact must have been changed")
			b = changed
		}
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), b, 0o644))
	}
	a := startAPI(t, map[string]string{"MODEL_PATH": dir})
	xs, _ := sonar(t)
	var out output
	require.Equal(t, http.StatusOK, a.do("POST", "/api/v1/predict", map[string]any{"features": xs[0]}, &out))
	require.Equal(t, "v1.0.0", out.ModelVersion, "latest falls back to the highest loaded version")
	require.Equal(t, http.StatusNotFound, a.do("POST", "/api/v1/predict", map[string]any{"features": xs[0], "model_version": "v2.0.0"}, nil))

	var ready map[string]any
	require.Equal(t, http.StatusOK, a.do("GET", "/health/ready", nil, &ready))
	b, _ := json.Marshal(ready)
	require.Contains(t, string(b), "v2.0.0.json", "readiness names the refused artifact")
	require.Contains(t, string(b), "checksum")
}

func TestMigrateTwiceAtOnce(t *testing.T) {
	t.Parallel()
	admin := pgtest.AdminURL(t)
	name := "predq_migrate_" + strconv.FormatInt(time.Now().UnixNano(), 36)
	u := strings.Replace(admin, "/postgres?", "/"+name+"?", 1)
	t.Cleanup(func() {
		ctx := context.Background()
		conn, err := pgx.Connect(ctx, admin)
		if err == nil {
			_, _ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
			conn.Close(ctx)
		}
	})
	env := func(k string) string {
		switch k {
		case "DATABASE_URL":
			return u
		case "LOG_LEVEL":
			return "warn"
		}
		return ""
	}
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = run(context.Background(), []string{"api", "migrate"}, env, io.Discard, io.Discard)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	require.NoError(t, run(context.Background(), []string{"api", "migrate"}, env, io.Discard, io.Discard), "migrate is idempotent")
}

func TestConfigErrorNamesTheVariable(t *testing.T) {
	t.Parallel()
	err := run(context.Background(), []string{"api"}, func(k string) string {
		if k == "REDIS_TTL" {
			return "5"
		}
		return ""
	}, io.Discard, io.Discard)
	require.ErrorContains(t, err, "REDIS_TTL")
}

func TestPromotionReachesEveryAPIProcess(t *testing.T) {
	t.Parallel()
	env := map[string]string{"DATABASE_URL": pgtest.NewURL(t), "REDIS_URL": redistest.New(t).URL}
	a := startAPI(t, env)
	b := startAPI(t, env)
	xs, _ := sonar(t)
	latestOn := func(x *api) string {
		var out output
		require.Equal(t, http.StatusOK, x.do("POST", "/api/v1/predict", map[string]any{"features": xs[7]}, &out))
		return out.ModelVersion
	}
	require.Equal(t, "v2.0.0", latestOn(b))

	var info struct {
		Version string   `json:"version"`
		Aliases []string `json:"aliases"`
	}
	require.Equal(t, http.StatusOK, a.do("POST", "/api/v1/models/v1.0.0/promote", nil, &info))
	require.Equal(t, "v1.0.0", info.Version)
	require.Contains(t, info.Aliases, "latest")
	require.Equal(t, "v1.0.0", latestOn(a))
	require.Eventually(t, func() bool { return latestOn(b) == "v1.0.0" }, 5*time.Second, 50*time.Millisecond,
		"the other process switches through pub/sub, without a restart")

	require.Equal(t, http.StatusNotFound, a.do("POST", "/api/v1/models/v7.0.0/promote", nil, nil))
	require.Equal(t, http.StatusUnprocessableEntity, a.do("POST", "/api/v1/models/v1.0.0/promote?alias=NO%20WAY", nil, nil))
}

// Idempotency-Key on predict: a retry gets the first answer byte for byte (same request id,
// not a cache hit: nothing ran again), another body with the key is 422, and a key whose
// request failed may be used again.
func TestPredictIdempotencyKey(t *testing.T) {
	t.Parallel()
	a := startAPI(t, nil)
	xs, _ := sonar(t)
	post := func(path, key string, body any) (int, http.Header, []byte) {
		t.Helper()
		b, err := json.Marshal(body)
		require.NoError(t, err)
		req, err := http.NewRequest("POST", a.base+path, bytes.NewReader(b))
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+testKey)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", key)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		out, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, resp.Header, out
	}

	for off, path := range []string{"/api/v1/predict", "/api/v1/predict/batch"} {
		t.Run(path, func(t *testing.T) {
			body := func(i int) any { // rows of their own per path: no answer is cached before
				x := xs[i+50*off]
				if path == "/api/v1/predict" {
					return map[string]any{"features": x}
				}
				return map[string]any{"samples": []any{map[string]any{"features": x}}}
			}
			key := "retry-" + path
			st, h1, first := post(path, key, body(10))
			require.Equal(t, http.StatusOK, st, string(first))
			require.Empty(t, h1.Get("Idempotent-Replayed"))
			st, h2, again := post(path, key, body(10))
			require.Equal(t, http.StatusOK, st, string(again))
			require.Equal(t, "true", h2.Get("Idempotent-Replayed"))
			require.Equal(t, string(first), string(again), "the first answer, byte for byte")
			require.NotContains(t, string(again), `"cached":true`)

			st, _, other := post(path, key, body(11))
			require.Equal(t, http.StatusUnprocessableEntity, st, string(other))
			require.Contains(t, string(other), `"field":"Idempotency-Key"`)

			// A refused request keeps nothing: the key answers the corrected request.
			bad := "bad-" + path
			st, _, refused := post(path, bad, map[string]any{"features": []float64{1}})
			require.GreaterOrEqual(t, st, 400, string(refused))
			st, _, fixed := post(path, bad, body(12))
			require.Equal(t, http.StatusOK, st, string(fixed))
		})
	}
}
