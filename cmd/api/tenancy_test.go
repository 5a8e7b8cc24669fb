package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/auth"
	"github.com/predq/predq/internal/pgtest"
	"github.com/predq/predq/internal/redistest"
)

// Two static keys without a name are two tenants: neither reads the other's predictions
// (by request id or in the list) or jobs.
func TestUnnamedStaticKeysAreTenantsOfTheirOwn(t *testing.T) {
	t.Parallel()
	const keyA, keyB = "unnamed-key-a-0123456789", "unnamed-key-b-0123456789"
	a := startAPI(t, map[string]string{"API_KEYS": keyA + "," + keyB})
	xs, _ := sonar(t)

	// A's prediction, under a request id of A's choosing.
	req, err := http.NewRequest("POST", a.base+"/api/v1/predict", strings.NewReader(`{"features":`+mustJSON(t, xs[20])+`}`))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+keyA)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Request-ID", "tenancy-a-1")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	type stored struct {
		RequestID string `json:"request_id"`
		UserID    string `json:"user_id"`
	}
	var mine stored
	require.Eventually(t, func() bool {
		return a.doAs(keyA, "GET", "/api/v1/predictions/tenancy-a-1", nil, nil) == http.StatusOK
	}, 10*time.Second, 50*time.Millisecond, "A reads its own prediction")
	require.Equal(t, http.StatusOK, a.doAs(keyA, "GET", "/api/v1/predictions/tenancy-a-1", nil, &mine))
	require.Equal(t, "tenancy-a-1", mine.RequestID)
	require.Regexp(t, `^[0-9a-f]{12}$`, mine.UserID, "stored under the key's id, not a name")

	require.Equal(t, http.StatusNotFound, a.doAs(keyB, "GET", "/api/v1/predictions/tenancy-a-1", nil, nil),
		"B cannot read A's prediction by its request id")

	var listA, listB struct {
		Predictions []stored `json:"predictions"`
	}
	require.Equal(t, http.StatusOK, a.doAs(keyA, "GET", "/api/v1/predictions", nil, &listA))
	require.Len(t, listA.Predictions, 1)
	require.Equal(t, http.StatusOK, a.doAs(keyB, "GET", "/api/v1/predictions", nil, &listB))
	require.Empty(t, listB.Predictions, "B's list holds none of A's predictions")

	var job struct {
		ID string `json:"id"`
	}
	require.Equal(t, http.StatusAccepted, a.doAs(keyA, "POST", "/api/v1/jobs", map[string]any{"samples": []any{map[string]any{"features": xs[21]}}}, &job))
	require.Equal(t, http.StatusOK, a.doAs(keyA, "GET", "/api/v1/jobs/"+job.ID, nil, nil))
	for _, r := range []struct{ method, path string }{
		{"GET", "/api/v1/jobs/" + job.ID}, {"GET", "/api/v1/jobs/" + job.ID + "/results"}, {"POST", "/api/v1/jobs/" + job.ID + "/cancel"},
	} {
		require.Equal(t, http.StatusNotFound, a.doAs(keyB, r.method, r.path, nil, nil), "B: %s %s", r.method, r.path)
	}
	var jobsB struct {
		Jobs []any `json:"jobs"`
	}
	require.Equal(t, http.StatusOK, a.doAs(keyB, "GET", "/api/v1/jobs", nil, &jobsB))
	require.Empty(t, jobsB.Jobs)
}

// Scopes of static keys: promote needs admin, the job routes jobs, predict predict; a key
// that lists none has every one.
func TestStaticKeyScopes(t *testing.T) {
	t.Parallel()
	const all, predictOnly, jobsOnly = "all-scopes-0123456789", "predict-only-0123456789", "jobs-only-0123456789"
	a := startAPI(t, map[string]string{"API_KEYS": "ops:" + all + ",ro:" + predictOnly + ":predict,batch:" + jobsOnly + ":jobs"})
	xs, _ := sonar(t)
	predict := map[string]any{"features": xs[30]}
	submit := map[string]any{"samples": []any{predict}}

	var p problem
	require.Equal(t, http.StatusForbidden, a.doAs(predictOnly, "POST", "/api/v1/models/v1.0.0/promote", nil, &p))
	require.Equal(t, "https://predq.dev/problems/forbidden", p.Type)
	require.Contains(t, p.Detail, "admin")
	require.Equal(t, http.StatusForbidden, a.doAs(jobsOnly, "POST", "/api/v1/models/v1.0.0/promote", nil, nil))
	require.Equal(t, http.StatusOK, a.doAs(all, "POST", "/api/v1/models/v1.0.0/promote", nil, nil), "a key listing no scopes has admin")

	require.Equal(t, http.StatusForbidden, a.doAs(predictOnly, "POST", "/api/v1/jobs", submit, &p))
	require.Contains(t, p.Detail, "jobs")
	require.Equal(t, http.StatusForbidden, a.doAs(predictOnly, "GET", "/api/v1/jobs", nil, nil))
	require.Equal(t, http.StatusOK, a.doAs(predictOnly, "POST", "/api/v1/predict", predict, nil))
	require.Equal(t, http.StatusOK, a.doAs(predictOnly, "GET", "/api/v1/models", nil, nil))

	require.Equal(t, http.StatusForbidden, a.doAs(jobsOnly, "POST", "/api/v1/predict", predict, &p))
	require.Contains(t, p.Detail, "predict")
	require.Equal(t, http.StatusForbidden, a.doAs(jobsOnly, "GET", "/api/v1/predictions", nil, nil))
	require.Equal(t, http.StatusAccepted, a.doAs(jobsOnly, "POST", "/api/v1/jobs", submit, nil))
}

// api keys create --scope stores the scopes with the key; without --scope a key may
// predict and run jobs but not promote; an unknown scope stores nothing.
func TestKeysCreateWithScopes(t *testing.T) {
	t.Parallel()
	env := map[string]string{"DATABASE_URL": pgtest.NewURL(t), "REDIS_URL": redistest.New(t).URL}
	a := startAPI(t, env)
	create := func(args ...string) (string, error) {
		var out, errOut bytes.Buffer
		err := run(context.Background(), append([]string{"api", "keys", "create"}, args...),
			func(k string) string { return env[k] }, &out, &errOut)
		return strings.TrimSpace(out.String()), err
	}
	xs, _ := sonar(t)
	predict := map[string]any{"features": xs[40]}
	submit := map[string]any{"samples": []any{predict}}

	predictOnly, err := create("--name", "ro", "--scope", "predict")
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, a.doAs(predictOnly, "POST", "/api/v1/predict", predict, nil))
	require.Equal(t, http.StatusForbidden, a.doAs(predictOnly, "POST", "/api/v1/jobs", submit, nil))
	require.Equal(t, http.StatusForbidden, a.doAs(predictOnly, "POST", "/api/v1/models/v1.0.0/promote", nil, nil))

	admin, err := create("--name", "ops", "--scope", "admin", "--scope", "predict")
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, a.doAs(admin, "POST", "/api/v1/models/v1.0.0/promote", nil, nil))
	require.Equal(t, http.StatusForbidden, a.doAs(admin, "GET", "/api/v1/jobs", nil, nil))

	plain, err := create("--name", "app")
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, a.doAs(plain, "POST", "/api/v1/predict", predict, nil))
	require.Equal(t, http.StatusAccepted, a.doAs(plain, "POST", "/api/v1/jobs", submit, nil))
	require.Equal(t, http.StatusForbidden, a.doAs(plain, "POST", "/api/v1/models/v2.0.0/promote", nil, nil),
		"the default scopes leave admin out")

	out, err := create("--name", "bad", "--scope", "predict", "--scope", "root")
	require.ErrorContains(t, err, `--scope: unknown scope "root"`)
	require.Empty(t, out, "no key is made")
}

// api keys create --class/--weight/--max-pending-rows/--max-queued-jobs store the key's
// attributes, which its lookup reads back; a bad one stores nothing and names the attribute.
func TestKeysCreateWithAttributes(t *testing.T) {
	t.Parallel()
	env := map[string]string{"DATABASE_URL": pgtest.NewURL(t), "REDIS_URL": redistest.New(t).URL}
	create := func(args ...string) (string, error) {
		var out, errOut bytes.Buffer
		err := run(context.Background(), append([]string{"api", "keys", "create"}, args...),
			func(k string) string { return env[k] }, &out, &errOut)
		return strings.TrimSpace(out.String()), err
	}
	key, err := create("--name", "etl", "--class", "bulk", "--weight", "4", "--max-pending-rows", "2000000", "--max-queued-jobs", "3")
	require.NoError(t, err)
	plain, err := create("--name", "app")
	require.NoError(t, err)

	pool, err := pgxpool.New(context.Background(), env["DATABASE_URL"])
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	keys, err := auth.NewKeys(nil, pool, nil)
	require.NoError(t, err)
	p, err := keys.Authenticate(context.Background(), key)
	require.NoError(t, err)
	require.Equal(t, auth.Attributes{Class: auth.ClassBulk, Weight: 4, MaxPendingRows: 2_000_000, MaxQueuedJobs: 3}, p.Attributes())
	p, err = keys.Authenticate(context.Background(), plain)
	require.NoError(t, err)
	require.Equal(t, auth.DefaultAttributes(), p.Attributes())

	for args, want := range map[string][]string{
		"attribute class":            {"--class", "batch"},
		"attribute weight":           {"--weight", "0"},
		"attribute max_queued_jobs":  {"--max-queued-jobs", "-1"},
		"attribute max_pending_rows": {"--max-pending-rows", "-5"},
	} {
		out, err := create(append([]string{"--name", "bad"}, want...)...)
		require.ErrorContains(t, err, args)
		require.Empty(t, out, "no key is made")
	}
	var n int
	require.NoError(t, pool.QueryRow(context.Background(), `SELECT count(*) FROM api_keys WHERE name = 'bad'`).Scan(&n))
	require.Zero(t, n)
}

type problem struct {
	Type   string `json:"type"`
	Detail string `json:"detail"`
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return string(b)
}
