package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/localsvc"
	"github.com/predq/predq/internal/pgtest"
	"github.com/predq/predq/internal/postgres"
	"github.com/predq/predq/internal/redistest"
)

// answer is one HTTP exchange of these tests.
type answer struct {
	status int
	header http.Header
	body   []byte
}

// call sends one request with the test key; body is sent as it is (a string or an io.Reader).
func call(t *testing.T, base, method, path string, hdr map[string]string, body any) (answer, error) {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case io.Reader:
		rd = b
	default:
		enc, err := json.Marshal(b)
		require.NoError(t, err)
		rd = bytes.NewReader(enc)
		if hdr == nil {
			hdr = map[string]string{}
		}
		if hdr["Content-Type"] == "" {
			hdr["Content-Type"] = "application/json"
		}
	}
	req, err := http.NewRequest(method, base+path, rd)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+testKey)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	client := &http.Client{Timeout: 30 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return answer{status: resp.StatusCode, header: resp.Header, body: b}, err
}

func ndjson(xs [][]float64, n int) string {
	var sb strings.Builder
	for i := range n {
		b, _ := json.Marshal(xs[i%len(xs)])
		sb.Write(b)
		sb.WriteByte('\n')
	}
	return sb.String()
}

// Issue 18.1: while Postgres is down every route that needs it answers 503 problem+json with
// Retry-After (never 500), sync predicts go on, readiness stays 200 and names Postgres down;
// once Postgres is back every route answers again, without restarting the api.
func TestPostgresOutageIs503(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pg, err := localsvc.StartPostgres(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { _ = pg.Stop() })
	dbURL := postgres.WithDatabase(pg.URL, "predq")
	redisURL := redistest.New(t).URL
	env := map[string]string{"DATABASE_URL": dbURL, "REDIS_URL": redisURL, "MODEL_PATH": "../../models", "LOG_LEVEL": "error"}
	require.NoError(t, run(ctx, []string{"api", "migrate"}, func(k string) string { return env[k] }, io.Discard, io.Discard))
	// The api process is stopped (t.Cleanup of startAPI) before the Postgres it uses.
	a := startAPI(t, map[string]string{"DATABASE_URL": dbURL, "REDIS_URL": redisURL, "LOG_LEVEL": "error"})
	xs, _ := sonar(t)

	ok := func(method, path string, hdr map[string]string, body any) answer {
		t.Helper()
		ans, err := call(t, a.base, method, path, hdr, body)
		require.NoError(t, err)
		require.Less(t, ans.status, 300, "%s %s: %s", method, path, ans.body)
		return ans
	}
	ndjsonHdr := map[string]string{"Content-Type": "application/x-ndjson"}
	sub := ok("POST", "/api/v1/jobs", ndjsonHdr, ndjson(xs, 20))
	var j struct {
		ID string `json:"id"`
	}
	require.NoError(t, json.Unmarshal(sub.body, &j))
	var pred output
	require.NoError(t, json.Unmarshal(ok("POST", "/api/v1/predict", nil, map[string]any{"features": xs[3]}).body, &pred))
	require.Eventually(t, func() bool {
		ans, err := call(t, a.base, "GET", "/api/v1/predictions/"+pred.RequestID, nil, nil)
		return err == nil && ans.status == http.StatusOK
	}, 10*time.Second, 50*time.Millisecond)

	// Every route that needs Postgres, as a client would call it during the outage.
	type route struct {
		method, path string
		hdr          map[string]string
		body         func() any
	}
	idem := func(key string) map[string]string { return map[string]string{"Idempotency-Key": key} }
	routes := []route{
		{"POST", "/api/v1/jobs", ndjsonHdr, func() any { return ndjson(xs, 30) }},
		{"POST", "/api/v1/jobs", map[string]string{"Content-Type": "application/x-ndjson", "Idempotency-Key": "job-during-outage"}, func() any { return ndjson(xs, 31) }},
		{"POST", "/api/v1/predict", idem("predict-during-outage"), func() any { return map[string]any{"features": xs[40]} }},
		{"POST", "/api/v1/predict/batch", idem("batch-during-outage"), func() any {
			return map[string]any{"samples": []any{map[string]any{"features": xs[41]}}}
		}},
		{"GET", "/api/v1/predictions/" + pred.RequestID, nil, nil},
		{"GET", "/api/v1/predictions", nil, nil},
		{"GET", "/api/v1/jobs", nil, nil},
		{"GET", "/api/v1/jobs/" + j.ID, nil, nil},
		{"GET", "/api/v1/jobs/" + j.ID + "/results", nil, nil},
		{"GET", "/api/v1/jobs/" + j.ID + "/results", map[string]string{"Accept": "application/x-ndjson"}, nil},
		{"POST", "/api/v1/jobs/" + j.ID + "/cancel", nil, nil},
		{"POST", "/api/v1/models/v2.0.0/promote", nil, nil},
		{"GET", "/api/v1/jobs/" + j.ID + "/events", nil, nil}, // the job is cancelled by then: the stream ends
	}
	body := func(r route) any {
		if r.body == nil {
			return nil
		}
		return r.body()
	}

	require.NoError(t, pg.Halt())
	for round := range 3 { // the first calls meet the cut connections, the later ones a refused connect
		for _, r := range routes {
			ans, err := call(t, a.base, r.method, r.path, r.hdr, body(r))
			require.NoError(t, err)
			require.Equal(t, http.StatusServiceUnavailable, ans.status, "round %d: %s %s: %s", round, r.method, r.path, ans.body)
			require.Equal(t, "application/problem+json", ans.header.Get("Content-Type"), "%s %s", r.method, r.path)
			require.NotEmpty(t, ans.header.Get("Retry-After"), "%s %s", r.method, r.path)
			require.Contains(t, string(ans.body), `"status":503`)
		}
	}
	// What works through the outage: sync predicts (cache, inference, the queue as the store),
	// the model list, and readiness, which names Postgres down.
	ok("POST", "/api/v1/predict", nil, map[string]any{"features": xs[50]})
	ok("POST", "/api/v1/predict/batch", nil, map[string]any{"samples": []any{map[string]any{"features": xs[51]}}})
	ok("GET", "/api/v1/models", nil, nil)
	ready, err := call(t, a.base, "GET", "/health/ready", nil, nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, ready.status, string(ready.body))
	var rep struct {
		Status string                    `json:"status"`
		Checks map[string]map[string]any `json:"checks"`
	}
	require.NoError(t, json.Unmarshal(ready.body, &rep))
	require.Equal(t, "degraded", rep.Status)
	require.Equal(t, "down", rep.Checks["postgres"]["status"])

	// Postgres comes back on the same port and data: the same api answers again.
	require.NoError(t, pg.Restart(ctx))
	require.Eventually(t, func() bool {
		ans, err := call(t, a.base, "GET", "/api/v1/jobs/"+j.ID, nil, nil)
		return err == nil && ans.status == http.StatusOK
	}, 30*time.Second, 100*time.Millisecond, "the api recovers without a restart")
	for _, r := range routes {
		ok(r.method, r.path, r.hdr, body(r))
	}
	ready, err = call(t, a.base, "GET", "/health/ready", nil, nil)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(ready.body, &rep))
	require.Equal(t, "ok", rep.Checks["postgres"]["status"])
}

// buildAPI builds this command's binary once per test run.
func buildAPI(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "api")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, string(out))
	return bin
}

// proc is an api process started from the binary.
type proc struct {
	base string
	cmd  *exec.Cmd
}

// startProc starts the api binary with env and waits until it answers.
func startProc(t *testing.T, bin string, env map[string]string) *proc {
	t.Helper()
	for attempt := 1; ; attempt++ {
		port, err := localsvc.FreePort()
		require.NoError(t, err)
		cmd := exec.Command(bin)
		cmd.Env = append(os.Environ(), "PORT="+strconv.Itoa(port))
		for k, v := range env {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		var logs bytes.Buffer
		cmd.Stdout, cmd.Stderr = &logs, &logs
		require.NoError(t, cmd.Start())
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		p := &proc{base: fmt.Sprintf("http://127.0.0.1:%d", port), cmd: cmd}
		up, exited, _ := waitLive(p.base+"/health/live", done, 20*time.Second)
		if up {
			t.Cleanup(func() {
				_ = cmd.Process.Kill()
				t.Log("api process ended:", <-done)
			})
			return p
		}
		_ = cmd.Process.Kill()
		t.Log("api process ended:", <-done)
		if exited && attempt < 5 && strings.Contains(logs.String(), "address already in use") {
			continue
		}
		t.Fatalf("api did not start: %s", logs.String())
	}
}

// Issue 18.2: an upload whose api was killed (kill -9) leaves its Idempotency-Key claimed
// only for the lease: a retry on a new api process is refused at most until the lease
// lapses, then accepted, and the job exists once.
func TestKilledUploadFreesItsKeyAfterTheLease(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	bin := buildAPI(t)
	const lease = 3 * time.Second
	env := map[string]string{
		"DATABASE_URL":      pgtest.NewURL(t),
		"REDIS_URL":         redistest.New(t).URL,
		"MODEL_PATH":        "../../models",
		"API_KEYS":          "tester:" + testKey,
		"LOG_LEVEL":         "warn",
		"IDEMPOTENCY_LEASE": lease.String(),
	}
	db, err := pgx.Connect(ctx, env["DATABASE_URL"])
	require.NoError(t, err)
	t.Cleanup(func() { db.Close(context.Background()) })
	leaseOf := func() (time.Time, bool) {
		var at time.Time
		err := db.QueryRow(ctx, `SELECT lease_expires FROM idempotency_keys WHERE key = 'upload-1' AND status = 'in_flight'`).Scan(&at)
		return at, err == nil
	}
	xs, _ := sonar(t)
	rows := ndjson(xs, 2000)
	hdr := map[string]string{"Content-Type": "application/x-ndjson", "Idempotency-Key": "upload-1"}

	first := startProc(t, bin, env)
	// A slow upload: half the rows, then the client waits while the api holds the key.
	pr, pw := io.Pipe()
	t.Cleanup(func() { pw.Close() })
	upload := make(chan error, 1)
	go func() {
		_, err := call(t, first.base, "POST", "/api/v1/jobs", hdr, pr)
		upload <- err
	}()
	_, err = io.WriteString(pw, rows[:len(rows)/2])
	require.NoError(t, err)
	var claimed time.Time
	require.Eventually(t, func() bool {
		var ok bool
		claimed, ok = leaseOf()
		return ok
	}, 10*time.Second, 20*time.Millisecond, "the upload claims its key")
	require.Eventually(t, func() bool {
		at, ok := leaseOf()
		return ok && at.After(claimed)
	}, 3*lease, 20*time.Millisecond, "the lease is renewed while the upload runs")
	busy, err := call(t, first.base, "POST", "/api/v1/jobs", hdr, rows)
	require.NoError(t, err)
	require.Equal(t, http.StatusConflict, busy.status, "a live upload keeps its key: %s", busy.body)

	require.NoError(t, first.cmd.Process.Kill()) // SIGKILL: nothing is released
	killed := time.Now()
	// The client gives up its upload (its transport waits on the body it is still sending).
	pw.CloseWithError(errors.New("upload abandoned"))
	require.Error(t, <-upload)
	_, held := leaseOf()
	require.True(t, held, "the dead process's claim is still in the table")

	second := startProc(t, bin, env)
	var accepted answer
	statuses := map[int]int{}
	require.Eventually(t, func() bool {
		ans, err := call(t, second.base, "POST", "/api/v1/jobs", hdr, rows)
		if err != nil {
			return false
		}
		statuses[ans.status]++
		accepted = ans
		return ans.status == http.StatusAccepted
	}, 10*lease, 100*time.Millisecond, "the retry is accepted once the lease lapsed")
	took := time.Since(killed)
	t.Logf("retry accepted %s after the kill; answers before: %v", took.Round(10*time.Millisecond), statuses)
	require.LessOrEqual(t, took, lease+10*time.Second, "within the lease (and the new api's start)")
	for st := range statuses {
		require.Contains(t, []int{http.StatusConflict, http.StatusAccepted}, st, "only 409 before the lease lapsed")
	}
	require.NotEmpty(t, accepted.header.Get("Location"))

	again, err := call(t, second.base, "POST", "/api/v1/jobs", hdr, rows)
	require.NoError(t, err)
	require.Equal(t, http.StatusAccepted, again.status)
	require.Equal(t, "true", again.header.Get("Idempotent-Replayed"))
	require.Equal(t, string(accepted.body), string(again.body), "the first answer, byte for byte")
	require.Equal(t, accepted.header.Get("Location"), again.header.Get("Location"))
	var jobs int
	require.NoError(t, db.QueryRow(ctx, `SELECT count(*) FROM jobs`).Scan(&jobs))
	require.Equal(t, 1, jobs, "the job exists once")
}
