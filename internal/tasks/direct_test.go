package tasks_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/pgtest"
	"github.com/predq/predq/internal/prediction"
	"github.com/predq/predq/internal/tasks"
)

// countingStore counts the Insert calls that reach a store.
type countingStore struct {
	tasks.Inserter
	calls atomic.Int64
}

func (c *countingStore) Insert(ctx context.Context, recs []prediction.Record) (int64, error) {
	c.calls.Add(1)
	return c.Inserter.Insert(ctx, recs)
}

// deadStore is a store whose Postgres refuses connections (nothing listens on its port).
func deadStore(t *testing.T) *prediction.Store {
	t.Helper()
	return prediction.NewStore(pgtest.Unreachable(t))
}

// persistQueued returns the request ids of the records in the pending persist tasks.
func persistQueued(t *testing.T, b bundle) []string {
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

func withPostgresPath(c *tasks.RecorderConfig) { c.Path = tasks.PathPostgres }

func TestPostgresPath(t *testing.T) {
	t.Parallel()

	t.Run("EachRecordIsStoredWhenRecordReturns", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		rec, reg := newRecorder(t, b, withPostgresPath)
		gc := tasks.NewGroupCommit(rec, 0, 0)
		defer gc.Close()
		const n = 120
		var wg sync.WaitGroup
		var missing atomic.Int64
		for i := range n {
			wg.Go(func() {
				conf := 0.9
				if i%10 == 3 {
					conf = 0.6 // below the 0.7 threshold: an alert task
				}
				r := record("pg", i, conf)
				if !assertNoError(t, gc.Record(context.Background(), []prediction.Record{r})) {
					return
				}
				// Read right after the answer would go out: the row is there already.
				if _, err := b.store.Get(context.Background(), r.RequestID); err != nil {
					missing.Add(1)
				}
			})
		}
		wg.Wait()
		require.Zero(t, missing.Load(), "records not in Postgres when Record returned")
		require.EqualValues(t, n, countRows(t, b.pool))
		require.Empty(t, persistQueued(t, b), "nothing goes through the queue")

		alerts, err := b.inspector.ListPendingTasks(tasks.QueueCritical, asynq.PageSize(100))
		require.NoError(t, err)
		var alerted []string
		for _, a := range alerts {
			require.Equal(t, tasks.TypeAlertLowConfidence, a.Type)
			alerted = append(alerted, a.ID)
		}
		slices.Sort(alerted)
		var want []string
		for i := 3; i < n; i += 10 {
			want = append(want, fmt.Sprintf("alert:low_confidence:pg-%d", i))
		}
		slices.Sort(want)
		require.Equal(t, want, alerted, "one alert task per low-confidence record")

		require.EqualValues(t, n, metricSum(t, reg, "ml_persist_direct_batch_records"))
		require.Less(t, metric(t, reg, "ml_persist_direct_batch_records"), float64(n), "concurrent records share batches")
		require.Zero(t, metric(t, reg, "ml_persist_fallback_total"))
	})

	t.Run("PostgresDownEnqueuesForTheWorker", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		store := &countingStore{Inserter: deadStore(t)}
		rec, reg := newRecorder(t, b, func(c *tasks.RecorderConfig) {
			withPostgresPath(c)
			c.Store = store
			c.BreakerCooldown = time.Minute
		})
		require.NoError(t, rec.Record(context.Background(), []prediction.Record{record("q", 0, 0.9), record("q", 1, 0.6)}))
		require.EqualValues(t, 1, store.calls.Load())
		require.EqualValues(t, 2, metric(t, reg, "ml_persist_fallback_total", "to", "queue"))
		require.Zero(t, metric(t, reg, "ml_persist_fallback_total", "to", "postgres"))
		require.EqualValues(t, 1, metric(t, reg, "ml_persist_postgres_circuit_open"))
		require.Zero(t, metric(t, reg, "ml_persist_queue_circuit_open"))

		// The circuit is open: the next batch goes to the queue without trying Postgres.
		gc := tasks.NewGroupCommit(rec, 0, 0)
		defer gc.Close()
		require.NoError(t, gc.Record(context.Background(), []prediction.Record{record("q", 2, 0.9)}))
		require.EqualValues(t, 1, store.calls.Load(), "Postgres not tried while the circuit is open")
		require.Equal(t, []string{"q-0", "q-1", "q-2"}, persistQueued(t, b))
		alerts, err := b.inspector.ListPendingTasks(tasks.QueueCritical)
		require.NoError(t, err)
		require.Len(t, alerts, 1)
		require.Equal(t, "alert:low_confidence:q-1", alerts[0].ID)

		// The queued records are ordinary persist tasks: a worker stores them.
		startWorker(t, b, nil)
		waitRows(t, b.pool, 3, 10*time.Second)
	})

	t.Run("PostgresAndRedisDownIsErrUnavailable", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		rec, reg := newRecorder(t, b, func(c *tasks.RecorderConfig) {
			withPostgresPath(c)
			c.Store = deadStore(t)
		})
		b.redis.Stop()
		gc := tasks.NewGroupCommit(rec, 0, 0)
		defer gc.Close()
		err := gc.Record(context.Background(), records("x", 3))
		require.ErrorIs(t, err, prediction.ErrUnavailable)
		require.ErrorContains(t, err, "postgres:")
		require.ErrorContains(t, err, "queue:")
		require.EqualValues(t, 3, metric(t, reg, "ml_persist_unavailable_total"))
		require.Zero(t, metric(t, reg, "ml_persist_fallback_total"))
	})

	t.Run("RedisDownStillStoresAndLogsTheAlert", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		rec, reg := newRecorder(t, b, withPostgresPath)
		b.redis.Stop()
		require.NoError(t, rec.Record(context.Background(), []prediction.Record{
			record("r", 0, 0.9), record("r", 1, 0.6), record("r", 2, 0.5), record("r", 3, 0.65),
		}))
		require.EqualValues(t, 4, countRows(t, b.pool))
		require.EqualValues(t, 3, metric(t, reg, "ml_alert_fallback_total", "model_version", "v1.0.0"),
			"each alert that could not be enqueued is logged and counted by the api")
		require.EqualValues(t, 1, metric(t, reg, "ml_persist_queue_circuit_open"),
			"the failed alert enqueue opens the queue's circuit")
		require.Zero(t, metric(t, reg, "ml_persist_fallback_total"))
		require.Zero(t, metric(t, reg, "ml_persist_unavailable_total"))

		// The next low-confidence record is stored, and its alert logged, while the circuit is open.
		require.NoError(t, rec.Record(context.Background(), []prediction.Record{record("r", 4, 0.6)}))
		require.EqualValues(t, 4, metric(t, reg, "ml_alert_fallback_total", "model_version", "v1.0.0"))
		require.EqualValues(t, 5, countRows(t, b.pool))
	})

	t.Run("ADataErrorLeavesTheCircuitClosed", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		store := &countingStore{Inserter: b.store}
		rec, reg := newRecorder(t, b, func(c *tasks.RecorderConfig) {
			withPostgresPath(c)
			c.Store = store
		})
		bad := record("d", 0, 0.9)
		bad.UserID = "nul\x00byte" // Postgres text cannot hold NUL: 22021
		require.NoError(t, rec.Record(context.Background(), []prediction.Record{bad, record("d", 2, 0.9)}))
		require.Equal(t, []string{"d-0", "d-2"}, persistQueued(t, b), "the batch Postgres refused is queued")
		require.Zero(t, metric(t, reg, "ml_persist_postgres_circuit_open"))

		require.NoError(t, rec.Record(context.Background(), []prediction.Record{record("d", 1, 0.9)}))
		require.EqualValues(t, 2, store.calls.Load(), "Postgres is tried for the next batch")
		require.EqualValues(t, 1, countRows(t, b.pool))

		// The worker writes the refused batch one record at a time: only the bad one is left out.
		startWorker(t, b, nil)
		waitRows(t, b.pool, 2, 10*time.Second)
		_, err := b.store.Get(context.Background(), "d-2")
		require.NoError(t, err)
	})

	t.Run("UnknownPathIsRefused", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		_, err := tasks.NewRecorder(tasks.RecorderConfig{Redis: b.opts, Store: b.store, Path: "disk"})
		require.ErrorContains(t, err, `"disk"`)
	})
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
