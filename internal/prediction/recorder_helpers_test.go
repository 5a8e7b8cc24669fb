package prediction_test

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/pgtest"
	"github.com/predq/predq/internal/prediction"
	"github.com/predq/predq/internal/redisdb"
	"github.com/predq/predq/internal/redistest"
	"github.com/predq/predq/internal/tasks"
)

// bundle holds the collaborators of a Recorder under test: a fresh database, a throwaway
// Redis of its own, and the queue adapter the api uses (tasks.PersistClient).
type bundle struct {
	pool      *pgxpool.Pool
	store     *prediction.Store
	redis     *redistest.Server
	opts      redisdb.Options
	queue     *tasks.PersistClient
	inspector *asynq.Inspector
	logger    *slog.Logger
}

func setup(t testing.TB) bundle {
	t.Helper()
	pool := pgtest.New(t)
	rs := redistest.New(t)
	opts, err := redisdb.ParseURL(rs.URL)
	require.NoError(t, err)
	insp := asynq.NewInspector(tasks.RedisConnOpt(opts, 0))
	t.Cleanup(func() { _ = insp.Close() })
	queue := tasks.NewPersistClient(opts, prediction.DefaultEnqueueTimeout, nil)
	t.Cleanup(func() { _ = queue.Close() })
	return bundle{pool: pool, store: prediction.NewStore(pool), redis: rs, opts: opts, queue: queue, inspector: insp, logger: testLogger(t)}
}

// newRecorder builds the Recorder of path on the bundle with its own registry.
func newRecorder(t testing.TB, b bundle, path string, mod func(*prediction.RecorderConfig)) (prediction.BatchingRecorder, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg := prediction.RecorderConfig{Store: b.store, Queue: b.queue, Registerer: reg, Logger: b.logger}
	if mod != nil {
		mod(&cfg)
	}
	r, err := prediction.NewRecorder(path, cfg)
	require.NoError(t, err)
	t.Cleanup(r.Close)
	return r, reg
}

// startWorker starts a worker on the bundle; it is shut down at the end of the test.
func startWorker(t testing.TB, b bundle) {
	t.Helper()
	w, err := tasks.NewWorker(tasks.WorkerConfig{
		Redis: b.opts, Store: b.store, Logger: b.logger, LogLevel: "warn", Concurrency: tasks.DefaultConcurrency,
		ShutdownTimeout: 5 * time.Second,
		RetryDelay:      func(int, error, *asynq.Task) time.Duration { return 100 * time.Millisecond },
	})
	require.NoError(t, err)
	require.NoError(t, w.Start())
	t.Cleanup(func() {
		w.Stop()
		w.Shutdown()
		_ = w.Close()
	})
}

// record is the factory of test records; confidence decides whether it is low (threshold 0.7).
func record(prefix string, i int, confidence float64) prediction.Record {
	feats := make([]float64, 60)
	for j := range feats {
		feats[j] = float64(i*60+j)/7 - 3.25
	}
	id, at := prefix+"-"+strconv.Itoa(i), time.Now().UTC().Truncate(time.Microsecond)
	return prediction.Record{
		ID: prediction.NewID(id, at), RequestID: id, UserID: "alice", Features: feats,
		Prediction: confidence, Confidence: confidence, PredictionClass: prediction.ClassPositive, ModelVersion: "v1.0.0",
		Preprocessing: "standard", ConfidenceThreshold: 0.7, LatencyMS: 0.5, CreatedAt: at,
	}
}

// records returns n high-confidence records.
func records(prefix string, n int) []prediction.Record {
	out := make([]prediction.Record, n)
	for i := range out {
		out[i] = record(prefix, i, 0.9)
	}
	return out
}

func countRows(t testing.TB, pool *pgxpool.Pool) int64 {
	t.Helper()
	var n int64
	require.NoError(t, pool.QueryRow(context.Background(), "SELECT count(*) FROM predictions").Scan(&n))
	return n
}

// waitRows waits until the predictions table holds exactly want rows.
func waitRows(t testing.TB, pool *pgxpool.Pool, want int64, within time.Duration) {
	t.Helper()
	var got int64
	require.Eventually(t, func() bool {
		got = countRows(t, pool)
		return got >= want
	}, within, 20*time.Millisecond, "rows: got %d, want %d", got, want)
	require.Equal(t, want, countRows(t, pool))
}

// persistQueued returns the request ids of the records in the pending persist tasks.
func persistQueued(t testing.TB, b bundle) []string {
	t.Helper()
	infos, err := b.inspector.ListPendingTasks(tasks.QueueDefault, asynq.PageSize(1000))
	if errors.Is(err, asynq.ErrQueueNotFound) {
		return nil // nothing was ever enqueued there
	}
	require.NoError(t, err)
	var ids []string
	for _, info := range infos {
		require.Equal(t, tasks.TypePredictionPersist, info.Type)
		recs, err := tasks.ParsePersistPayload(info.Payload)
		require.NoError(t, err)
		for _, r := range recs {
			ids = append(ids, r.RequestID)
		}
	}
	slices.Sort(ids)
	return ids
}

// alertsQueued returns the TaskIDs of the pending alert tasks.
// alertTaskIDs returns the sorted alert TaskIDs of recs (keyed by each prediction's id).
func alertTaskIDs(recs ...prediction.Record) []string {
	var ids []string
	for _, r := range recs {
		ids = append(ids, tasks.AlertTaskID(r.ID.String()))
	}
	slices.Sort(ids)
	return ids
}

func alertsQueued(t testing.TB, b bundle) []string {
	t.Helper()
	infos, err := b.inspector.ListPendingTasks(tasks.QueueCritical, asynq.PageSize(1000))
	if errors.Is(err, asynq.ErrQueueNotFound) {
		return nil
	}
	require.NoError(t, err)
	var ids []string
	for _, info := range infos {
		require.Equal(t, tasks.TypeAlertLowConfidence, info.Type)
		ids = append(ids, info.ID)
	}
	slices.Sort(ids)
	return ids
}

// countingStore counts the Insert calls that reach a store.
type countingStore struct {
	prediction.Inserter
	calls atomic.Int64
}

func (c *countingStore) Insert(ctx context.Context, recs []prediction.Record) (int64, error) {
	c.calls.Add(1)
	return c.Inserter.Insert(ctx, recs)
}

// deadStore is a store whose Postgres refuses connections (nothing listens on its port).
func deadStore(t testing.TB) *prediction.Store {
	t.Helper()
	return prediction.NewStore(pgtest.Unreachable(t))
}

// metric sums the values of the series of name whose labels include labels (counters,
// gauges; the sample count of histograms).
func metric(t testing.TB, reg prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if have[k] != v {
					continue series
				}
			}
			sum += value(m)
		}
	}
	return sum
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	return 0
}

// metricSum is the sum of the samples of the histogram name (all its series).
func metricSum(t testing.TB, reg prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetHistogram().GetSampleSum()
		}
	}
	return sum
}

// testLogger routes logs to t.Log.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func nan() float64 {
	var z float64
	return z / z
}

// assertNoError reports err without stopping the goroutine's test from outside its own
// goroutine (require would call FailNow there).
func assertNoError(t *testing.T, err error) bool {
	t.Helper()
	if err != nil {
		t.Error(err)
		return false
	}
	return true
}
