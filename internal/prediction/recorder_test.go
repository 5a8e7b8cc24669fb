package prediction_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/prediction"
	"github.com/predq/predq/internal/tasks"
)

func TestQueueFirst(t *testing.T) {
	t.Parallel()

	t.Run("BatchesConcurrentRecordsIntoPersistTasks", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		rec, _ := newRecorder(t, b, prediction.PathQueue, func(c *prediction.RecorderConfig) { c.MaxBatch = 50 })
		const n = 400
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				assertNoError(t, rec.Record(context.Background(), []prediction.Record{record("gc", i, 0.9)}))
			})
		}
		wg.Wait()
		rec.Close()

		infos := pendingPersist(t, b)
		seen := map[string]int{}
		for _, recs := range infos {
			require.LessOrEqual(t, len(recs), 50, "a batch holds at most MaxBatch records")
			for _, r := range recs {
				seen[r.RequestID]++
			}
		}
		require.Len(t, seen, n, "every record is in exactly one task")
		for id, c := range seen {
			require.Equal(t, 1, c, id)
		}
		require.Less(t, len(infos), n, "concurrent records share tasks")
		require.Zero(t, countRows(t, b.pool), "nothing written directly")
		t.Logf("%d records in %d tasks", n, len(infos))
	})

	t.Run("LowConfidenceRaisesAnAlertTaskHighConfidenceDoesNot", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		rec, _ := newRecorder(t, b, prediction.PathQueue, nil)
		recs := []prediction.Record{
			record("c", 0, 0.95), record("c", 1, 0.55), record("c", 2, 0.7), // 0.7 == threshold: not low
			record("c", 3, 0.69), record("c", 4, 0.99),
		}
		require.NoError(t, rec.Record(context.Background(), recs))
		single := record("single", 0, 0.51)
		require.NoError(t, rec.Record(context.Background(), []prediction.Record{single}))
		require.NoError(t, rec.Record(context.Background(), []prediction.Record{single}), "an alert enqueued again is success")
		require.Equal(t, alertTaskIDs(recs[1], recs[3], single), alertsQueued(t, b), "keyed by the prediction's id")
		require.Len(t, persistQueued(t, b), 7, "every record is persisted, low or not")
	})

	t.Run("RedisDownWritesToPostgresAndCounts", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		rec, reg := newRecorder(t, b, prediction.PathQueue, func(c *prediction.RecorderConfig) { c.BreakerCooldown = time.Minute })
		b.redis.Stop()

		batch := []prediction.Record{record("f", 0, 0.9), record("f", 1, 0.6), record("f", 2, 0.9)}
		require.NoError(t, rec.Record(context.Background(), batch))
		require.EqualValues(t, 3, countRows(t, b.pool))
		require.EqualValues(t, 3, metric(t, reg, "ml_persist_fallback_total"))
		require.EqualValues(t, 3, metric(t, reg, "ml_persist_fallback_total", "to", "postgres"))
		require.EqualValues(t, 1, metric(t, reg, "ml_alert_fallback_total", "model_version", "v1.0.0"),
			"the low-confidence record is logged and counted by the api")
		require.EqualValues(t, 1, metric(t, reg, "ml_persist_queue_circuit_open"))

		// The circuit is open: the next call does not wait for Redis at all.
		start := time.Now()
		require.NoError(t, rec.Record(context.Background(), []prediction.Record{record("f", 3, 0.9)}))
		require.Less(t, time.Since(start), 200*time.Millisecond)
		require.EqualValues(t, 4, countRows(t, b.pool))
		require.EqualValues(t, 4, metric(t, reg, "ml_persist_fallback_total"))

		got, err := b.store.Get(context.Background(), "alice", "f-1")
		require.NoError(t, err)
		require.Equal(t, 0.6, got.Confidence)
	})

	t.Run("GroupCommitFallsBackToPostgres", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		rec, _ := newRecorder(t, b, prediction.PathQueue, nil)
		b.redis.Stop()
		var wg sync.WaitGroup
		for i := range 20 {
			wg.Go(func() {
				assertNoError(t, rec.Record(context.Background(), []prediction.Record{record("down", i, 0.9)}))
			})
		}
		wg.Wait()
		n, err := b.store.Count(context.Background())
		require.NoError(t, err)
		require.Equal(t, int64(20), n, "answered predictions are stored even with Redis down")
	})

	t.Run("RedisAndPostgresDownIsErrUnavailable", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		rec, reg := newRecorder(t, b, prediction.PathQueue, func(c *prediction.RecorderConfig) {
			c.Store = deadStore(t)
			c.FallbackTimeout = time.Second
		})
		b.redis.Stop()
		err := rec.Record(context.Background(), records("x", 2))
		require.ErrorIs(t, err, prediction.ErrUnavailable)
		require.ErrorContains(t, err, "postgres:")
		require.ErrorContains(t, err, "queue:")
		require.EqualValues(t, 2, metric(t, reg, "ml_persist_unavailable_total"))
		require.Zero(t, metric(t, reg, "ml_persist_fallback_total"))
	})

	t.Run("CancelledCallerStillRecords", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		rec, _ := newRecorder(t, b, prediction.PathQueue, nil)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		require.NoError(t, rec.Record(ctx, records("k", 5)))
		require.Len(t, persistQueued(t, b), 5)
	})

	t.Run("UnencodableBatchGoesToPostgresWithoutOpeningTheCircuit", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		rec, reg := newRecorder(t, b, prediction.PathQueue, nil)
		recs := records("n", 3)
		recs[1].LatencyMS = nan()
		require.NoError(t, rec.Record(context.Background(), recs))
		require.Empty(t, persistQueued(t, b))
		require.EqualValues(t, 3, countRows(t, b.pool))
		require.EqualValues(t, 3, metric(t, reg, "ml_persist_fallback_total"))
		require.Zero(t, metric(t, reg, "ml_persist_queue_circuit_open"))
	})

	t.Run("QueuedRecordsAreStoredByTheWorkerOnce", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		rec, _ := newRecorder(t, b, prediction.PathQueue, nil)
		for i := range 12 {
			require.NoError(t, rec.Record(context.Background(), records("g"+string(rune('a'+i)), 100)))
		}
		startWorker(t, b)
		waitRows(t, b.pool, 1200, 20*time.Second)
	})
}

func TestPostgresFirst(t *testing.T) {
	t.Parallel()

	t.Run("EachRecordIsStoredWhenRecordReturns", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		rec, reg := newRecorder(t, b, prediction.PathPostgres, nil)
		const n = 120
		var wg sync.WaitGroup
		var missing atomic.Int64
		var mu sync.Mutex
		var low []prediction.Record
		for i := range n {
			wg.Go(func() {
				conf := 0.9
				if i%10 == 3 {
					conf = 0.6 // below the 0.7 threshold: an alert task
				}
				r := record("pg", i, conf)
				if conf < 0.7 {
					mu.Lock()
					low = append(low, r)
					mu.Unlock()
				}
				if !assertNoError(t, rec.Record(context.Background(), []prediction.Record{r})) {
					return
				}
				// Read right after the answer would go out: the row is there already.
				if _, err := b.store.Get(context.Background(), "alice", r.RequestID); err != nil {
					missing.Add(1)
				}
			})
		}
		wg.Wait()
		require.Zero(t, missing.Load(), "records not in Postgres when Record returned")
		require.EqualValues(t, n, countRows(t, b.pool))
		require.Empty(t, persistQueued(t, b), "nothing goes through the queue")

		require.Len(t, low, n/10)
		require.Equal(t, alertTaskIDs(low...), alertsQueued(t, b), "one alert task per low-confidence record")

		require.EqualValues(t, n, metricSum(t, reg, "ml_persist_direct_batch_records"))
		require.Less(t, metric(t, reg, "ml_persist_direct_batch_records"), float64(n), "concurrent records share batches")
		require.Zero(t, metric(t, reg, "ml_persist_fallback_total"))
	})

	t.Run("PostgresDownEnqueuesForTheWorker", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		store := &countingStore{Inserter: deadStore(t)}
		rec, reg := newRecorder(t, b, prediction.PathPostgres, func(c *prediction.RecorderConfig) {
			c.Store = store
			c.BreakerCooldown = time.Minute
		})
		q1 := record("q", 1, 0.6)
		require.NoError(t, rec.Record(context.Background(), []prediction.Record{record("q", 0, 0.9), q1}))
		require.EqualValues(t, 1, store.calls.Load())
		require.EqualValues(t, 2, metric(t, reg, "ml_persist_fallback_total", "to", "queue"))
		require.Zero(t, metric(t, reg, "ml_persist_fallback_total", "to", "postgres"))
		require.EqualValues(t, 1, metric(t, reg, "ml_persist_postgres_circuit_open"))
		require.Zero(t, metric(t, reg, "ml_persist_queue_circuit_open"))

		// The circuit is open: the next batch goes to the queue without trying Postgres.
		require.NoError(t, rec.Record(context.Background(), []prediction.Record{record("q", 2, 0.9)}))
		require.EqualValues(t, 1, store.calls.Load(), "Postgres not tried while the circuit is open")
		require.Equal(t, []string{"q-0", "q-1", "q-2"}, persistQueued(t, b))
		require.Equal(t, alertTaskIDs(q1), alertsQueued(t, b))

		// The queued records are ordinary persist tasks: a worker stores them.
		startWorker(t, b)
		waitRows(t, b.pool, 3, 10*time.Second)
	})

	t.Run("PostgresSlowerThanTheStoreTimeoutEnqueues", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		rec, reg := newRecorder(t, b, prediction.PathPostgres, func(c *prediction.RecorderConfig) {
			c.Store = slowStore{b.store}
		})
		start := time.Now()
		require.NoError(t, rec.Record(context.Background(), records("slow", 2)))
		require.Less(t, time.Since(start), 1500*time.Millisecond, "the store timeout (1 s) bounds the wait")
		require.Equal(t, []string{"slow-0", "slow-1"}, persistQueued(t, b))
		require.EqualValues(t, 2, metric(t, reg, "ml_persist_fallback_total", "to", "queue"))
	})

	t.Run("PostgresAndRedisDownIsErrUnavailable", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		rec, reg := newRecorder(t, b, prediction.PathPostgres, func(c *prediction.RecorderConfig) { c.Store = deadStore(t) })
		b.redis.Stop()
		err := rec.Record(context.Background(), records("x", 3))
		require.ErrorIs(t, err, prediction.ErrUnavailable)
		require.ErrorContains(t, err, "postgres:")
		require.ErrorContains(t, err, "queue:")
		require.EqualValues(t, 3, metric(t, reg, "ml_persist_unavailable_total"))
		require.Zero(t, metric(t, reg, "ml_persist_fallback_total"))
	})

	t.Run("RedisDownStillStoresAndLogsTheAlert", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		rec, reg := newRecorder(t, b, prediction.PathPostgres, nil)
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
		rec, reg := newRecorder(t, b, prediction.PathPostgres, func(c *prediction.RecorderConfig) { c.Store = store })
		bad := record("d", 0, 0.9)
		bad.UserID = "nul\x00byte" // Postgres text cannot hold NUL: 22021
		require.NoError(t, rec.Record(context.Background(), []prediction.Record{bad, record("d", 2, 0.9)}))
		require.Equal(t, []string{"d-0", "d-2"}, persistQueued(t, b), "the batch Postgres refused is queued")
		require.Zero(t, metric(t, reg, "ml_persist_postgres_circuit_open"))

		require.NoError(t, rec.Record(context.Background(), []prediction.Record{record("d", 1, 0.9)}))
		require.EqualValues(t, 2, store.calls.Load(), "Postgres is tried for the next batch")
		require.EqualValues(t, 1, countRows(t, b.pool))

		// The worker writes the refused batch one record at a time: only the bad one is left out.
		startWorker(t, b)
		waitRows(t, b.pool, 2, 10*time.Second)
		_, err := b.store.Get(context.Background(), "alice", "d-2")
		require.NoError(t, err)
	})

	t.Run("UnknownPathIsRefused", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		_, err := prediction.NewRecorder("disk", prediction.RecorderConfig{Store: b.store, Queue: b.queue})
		require.ErrorContains(t, err, `"disk"`)
	})
}

// slowStore is a store that answers only when its caller's deadline is over.
type slowStore struct{ prediction.Inserter }

func (slowStore) Insert(ctx context.Context, _ []prediction.Record) (int64, error) {
	<-ctx.Done()
	return 0, ctx.Err()
}

// pendingPersist returns the records of each pending persist task.
func pendingPersist(t *testing.T, b bundle) [][]prediction.Record {
	t.Helper()
	infos, err := b.inspector.ListPendingTasks(tasks.QueueDefault, asynq.PageSize(1000))
	require.NoError(t, err)
	var out [][]prediction.Record
	for _, info := range infos {
		recs, err := tasks.ParsePersistPayload(info.Payload)
		require.NoError(t, err)
		out = append(out, recs)
	}
	return out
}
