package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/pgtest"
	"github.com/predq/predq/internal/postgres"
	"github.com/predq/predq/internal/prediction"
	"github.com/predq/predq/internal/redisdb"
	"github.com/predq/predq/internal/redistest"
	"github.com/predq/predq/internal/tasks"
)

// env is a fake environment for run.
type env map[string]string

func (e env) get(k string) string { return e[k] }

// bundle is a fresh database and a throwaway Redis, with a Recorder that plays the api.
type bundle struct {
	env      env
	pool     *pgxpool.Pool
	recorder *prediction.QueueFirst
}

func setup(t *testing.T) bundle {
	t.Helper()
	dbURL := pgtest.NewURL(t)
	rs := redistest.New(t)
	pool, err := postgres.Open(context.Background(), dbURL, 4)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	opts, err := redisdb.ParseURL(rs.URL)
	require.NoError(t, err)
	queue := tasks.NewPersistClient(opts, time.Second, nil)
	t.Cleanup(func() { _ = queue.Close() })
	rec, err := prediction.NewQueueFirst(prediction.RecorderConfig{Store: prediction.NewStore(pool), Queue: queue})
	require.NoError(t, err)
	t.Cleanup(rec.Close)
	return bundle{
		env: env{
			"DATABASE_URL": dbURL, "REDIS_URL": rs.URL, "WORKER_METRICS_PORT": "0", "LOG_LEVEL": "info",
			"WORKER_SHUTDOWN_TIMEOUT": "5s", "WORKER_CONCURRENCY": "8",
		},
		pool:     pool,
		recorder: rec,
	}
}

func record(prefix string, i int, confidence float64) prediction.Record {
	feats := make([]float64, 60)
	for j := range feats {
		feats[j] = float64(i+j) / 10
	}
	return prediction.Record{
		RequestID: prefix + "-" + strconv.Itoa(i), Features: feats, Prediction: confidence, Confidence: confidence,
		PredictionClass: prediction.ClassPositive, ModelVersion: "v1.0.0", Preprocessing: "standard",
		ConfidenceThreshold: 0.6, LatencyMS: 0.4, CreatedAt: time.Now().UTC(),
	}
}

func countRows(t *testing.T, pool *pgxpool.Pool) int64 {
	t.Helper()
	var n int64
	require.NoError(t, pool.QueryRow(context.Background(), "SELECT count(*) FROM predictions").Scan(&n))
	return n
}

// logWatcher scans JSON log lines and hands out the address of the ops server.
type logWatcher struct {
	addr chan string
	mu   sync.Mutex
	logs []string
}

func watchLogs(t *testing.T, r io.Reader) *logWatcher {
	lw := &logWatcher{addr: make(chan string, 1)}
	go func() {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			lw.mu.Lock()
			lw.logs = append(lw.logs, line)
			lw.mu.Unlock()
			var rec struct {
				Msg  string `json:"msg"`
				Addr string `json:"addr"`
			}
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "ops endpoints listening" {
				lw.addr <- rec.Addr
			}
		}
	}()
	t.Cleanup(func() {
		if t.Failed() {
			lw.mu.Lock()
			defer lw.mu.Unlock()
			for _, l := range lw.logs {
				t.Log(l)
			}
		}
	})
	return lw
}

func (lw *logWatcher) waitAddr(t *testing.T) string {
	t.Helper()
	select {
	case a := <-lw.addr:
		_, port, err := splitPort(a)
		require.NoError(t, err)
		return "127.0.0.1:" + port
	case <-time.After(30 * time.Second):
		t.Fatal("the worker did not log its ops address")
		return ""
	}
}

func splitPort(addr string) (string, string, error) {
	i := strings.LastIndex(addr, ":")
	if i < 0 {
		return "", "", fmt.Errorf("no port in %q", addr)
	}
	return addr[:i], addr[i+1:], nil
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

func TestRun(t *testing.T) {
	t.Parallel()

	t.Run("PersistsRecordsAlertsAndServesHealthAndMetrics", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		pr, pw := io.Pipe()
		lw := watchLogs(t, pr)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		var runErr error
		go func() {
			defer close(done)
			runErr = run(ctx, []string{"worker"}, b.env.get, pw, io.Discard)
			pw.Close()
		}()
		t.Cleanup(func() {
			cancel()
			<-done
		})
		addr := lw.waitAddr(t)

		const n = 1000
		for i := 0; i < n; i += 100 {
			batch := make([]prediction.Record, 100)
			for j := range batch {
				conf := 0.9
				if (i+j)%100 == 0 {
					conf = 0.55 // one low-confidence record per batch
				}
				batch[j] = record("run", i+j, conf)
			}
			require.NoError(t, b.recorder.Record(context.Background(), batch))
		}
		require.Eventually(t, func() bool { return countRows(t, b.pool) >= n }, 30*time.Second, 50*time.Millisecond)
		require.EqualValues(t, n, countRows(t, b.pool))

		code, _ := httpGet(t, "http://"+addr+"/health")
		require.Equal(t, http.StatusOK, code)
		code, body := httpGet(t, "http://"+addr+"/health/ready")
		require.Equal(t, http.StatusOK, code, body)
		require.Eventually(t, func() bool {
			_, body = httpGet(t, "http://"+addr+"/metrics")
			return strings.Contains(body, `ml_low_confidence_total{model_version="v1.0.0"} 10`)
		}, 10*time.Second, 50*time.Millisecond, "ten alerts handled")
		require.Contains(t, body, `ml_persist_records_total{outcome="inserted"} 1000`)
		require.Contains(t, body, `asynq_queue_size{queue="default"}`, "asynq's queue metrics")
		require.Contains(t, body, "go_goroutines")

		cancel()
		select {
		case <-done:
			require.NoError(t, runErr)
		case <-time.After(30 * time.Second):
			t.Fatal("run did not return after cancel")
		}
	})

	t.Run("BadConfigNamesEveryVariable", func(t *testing.T) {
		t.Parallel()
		e := env{"WORKER_QUEUES": "critical=1", "JOB_CHUNK_WRITERS": "0", "WORKER_SHUTDOWN_TIMEOUT": "forever", "REDIS_URL": "http://x"}
		err := run(context.Background(), []string{"worker"}, e.get, io.Discard, io.Discard)
		require.Error(t, err)
		for _, name := range []string{"WORKER_QUEUES", "JOB_CHUNK_WRITERS", "WORKER_SHUTDOWN_TIMEOUT", "REDIS_URL"} {
			require.ErrorContains(t, err, name)
		}
	})
}

// buildWorker builds this command into dir and returns the binary's path.
func buildWorker(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "worker")
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go" // the toolchain of this repository
	}
	out, err := exec.Command(goBin, "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "go build: %s", out)
	return bin
}

// startProcess starts the worker binary and returns it with its log watcher.
func startProcess(t *testing.T, bin string, e env) (*exec.Cmd, *logWatcher) {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range e {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = cmd.Stdout
	lw := watchLogs(t, stdout)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	lw.waitAddr(t)
	return cmd, lw
}

func TestProcessStoppedMidLoadLosesNothing(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the worker binary")
	}
	bin := buildWorker(t, t.TempDir())
	b := setup(t)

	first, _ := startProcess(t, bin, b.env)

	// The load: 5,000 records in batches of 25 over about 4 s, as the api would record them.
	const total, batchSize = 5000, 25
	loadDone := make(chan error, 1)
	go func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for i := 0; i < total; i += batchSize {
			batch := make([]prediction.Record, batchSize)
			for j := range batch {
				batch[j] = record("load", i+j, 0.9)
			}
			if err := b.recorder.Record(context.Background(), batch); err != nil {
				loadDone <- err
				return
			}
			<-tick.C
		}
		loadDone <- nil
	}()

	// Stop the first worker once it has written some of the load.
	require.Eventually(t, func() bool { return countRows(t, b.pool) > 0 }, 30*time.Second, 20*time.Millisecond)
	require.NoError(t, first.Process.Signal(syscall.SIGTERM))
	exited := make(chan error, 1)
	go func() { exited <- first.Wait() }()
	select {
	case err := <-exited:
		require.NoError(t, err, "a clean exit after SIGTERM")
	case <-time.After(30 * time.Second):
		t.Fatal("the worker did not exit after SIGTERM")
	}
	atStop := countRows(t, b.pool)
	t.Logf("rows when the first worker had stopped: %d of %d", atStop, total)
	require.Less(t, atStop, int64(total), "the worker was stopped in the middle of the load")

	startProcess(t, bin, b.env)
	select {
	case err := <-loadDone:
		require.NoError(t, err)
	case <-time.After(60 * time.Second):
		t.Fatal("the load did not finish")
	}
	require.Eventually(t, func() bool { return countRows(t, b.pool) >= total }, 60*time.Second, 50*time.Millisecond)

	ids := make([]string, total)
	for i := range ids {
		ids[i] = "load-" + strconv.Itoa(i)
	}
	var rows, distinct, expected int64
	require.NoError(t, b.pool.QueryRow(context.Background(),
		`SELECT count(*), count(DISTINCT request_id), count(*) FILTER (WHERE request_id = ANY($1)) FROM predictions`, ids).
		Scan(&rows, &distinct, &expected))
	require.EqualValues(t, total, rows, "every record stored")
	require.EqualValues(t, total, distinct, "each once")
	require.EqualValues(t, total, expected, "and they are the records of the load")
}
