package tasks_test

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/trace"

	"github.com/predq/predq/internal/pgtest"
	"github.com/predq/predq/internal/prediction"
	"github.com/predq/predq/internal/redisdb"
	"github.com/predq/predq/internal/redistest"
	"github.com/predq/predq/internal/tasks"
	"github.com/predq/predq/internal/webhook"
)

// bundle holds the collaborators of the thing under test: a fresh database and a throwaway
// Redis of its own.
type bundle struct {
	pool      *pgxpool.Pool
	store     *prediction.Store
	redis     *redistest.Server
	opts      redisdb.Options
	inspector *asynq.Inspector
	client    *asynq.Client
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
	client := asynq.NewClient(tasks.RedisConnOpt(opts, 0))
	t.Cleanup(func() { _ = client.Close() })
	return bundle{pool: pool, store: prediction.NewStore(pool), redis: rs, opts: opts, inspector: insp, client: client, logger: testLogger(t)}
}

// newPersistClient builds a PersistClient on the bundle's Redis.
func newPersistClient(t testing.TB, b bundle) *tasks.PersistClient {
	t.Helper()
	c := tasks.NewPersistClient(b.opts, time.Second, nil)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// enqueueRecords enqueues recs as one persist task and an alert task per low-confidence
// record, in the trace of ctx, as a Recorder does.
func enqueueRecords(t testing.TB, c *tasks.PersistClient, ctx context.Context, recs []prediction.Record, links ...trace.SpanContext) {
	t.Helper()
	require.NoError(t, c.EnqueuePersist(ctx, recs, links))
	for _, r := range recs {
		if r.LowConfidence() {
			require.NoError(t, c.EnqueueAlert(ctx, r))
		}
	}
}

// startWorker starts a Worker on the bundle with its own registry; it is shut down at the end
// of the test.
func startWorker(t testing.TB, b bundle, mod func(*tasks.WorkerConfig)) (*tasks.Worker, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg := tasks.WorkerConfig{
		Redis: b.opts, Store: b.store, Registerer: reg, Logger: b.logger, LogLevel: "warn",
		Concurrency: 8, ShutdownTimeout: 5 * time.Second,
		RetryDelay: func(int, error, *asynq.Task) time.Duration { return 100 * time.Millisecond },
	}
	if mod != nil {
		mod(&cfg)
	}
	w, err := tasks.NewWorker(cfg)
	require.NoError(t, err)
	require.NoError(t, w.Start())
	t.Cleanup(func() {
		w.Stop()
		w.Shutdown()
		_ = w.Close()
	})
	return w, reg
}

// record is the factory of test records; confidence decides whether it is low (threshold 0.7).
func record(prefix string, i int, confidence float64) prediction.Record {
	feats := make([]float64, 60)
	for j := range feats {
		feats[j] = float64(i*60+j)/7 - 3.25
	}
	p := confidence
	id, at := prefix+"-"+strconv.Itoa(i), time.Now().UTC().Truncate(time.Microsecond)
	return prediction.Record{
		ID: prediction.NewID(id, at), RequestID: id, UserID: "alice", Features: feats,
		Prediction: p, Confidence: confidence, PredictionClass: prediction.ClassPositive, ModelVersion: "v1.0.0",
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

// testLogger routes logs to t.Log.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func testRegistry() *prometheus.Registry { return prometheus.NewRegistry() }

// alertSender is the worker's alert sender, allowed to reach the loopback receivers of tests.
func alertSender(t testing.TB) *webhook.Sender {
	t.Helper()
	s, err := webhook.NewSender(webhook.SenderConfig{Secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", AllowPrivate: true, Timeout: 5 * time.Second})
	require.NoError(t, err)
	return s
}
