package tasks_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/trace"

	"github.com/predq/predq/internal/prediction"
	"github.com/predq/predq/internal/tasks"
)

// groupSizes returns the number of tasks waiting in each group of the default queue.
func groupSizes(t *testing.T, b bundle) map[string]int {
	t.Helper()
	groups, err := b.inspector.Groups(tasks.QueueDefault)
	require.NoError(t, err)
	out := map[string]int{}
	for _, g := range groups {
		out[g.Group] = g.Size
	}
	return out
}

func total(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func TestRecorder(t *testing.T) {
	t.Parallel()

	t.Run("EnqueuesOnePersistTaskPerRecordIntoTheGroups", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		rec, _ := newRecorder(t, b, func(c *tasks.RecorderConfig) { c.GroupShards = 4 })
		sc := trace.NewSpanContext(trace.SpanContextConfig{
			TraceID: trace.TraceID{1, 2, 3}, SpanID: trace.SpanID{4, 5, 6}, TraceFlags: trace.FlagsSampled,
		})
		ctx := trace.ContextWithSpanContext(context.Background(), sc)
		recs := records("e", 200)
		require.NoError(t, rec.Record(ctx, recs))

		sizes := groupSizes(t, b)
		require.Equal(t, 200, total(sizes))
		require.Len(t, sizes, 4, "spread over the 4 shards: %v", sizes)
		for g := range sizes {
			require.Regexp(t, `^predictions:[0-3]$`, g)
		}
		infos, err := b.inspector.ListAggregatingTasks(tasks.QueueDefault, "predictions:0")
		require.NoError(t, err)
		require.NotEmpty(t, infos)
		for _, info := range infos {
			require.Equal(t, tasks.TypePredictionPersist, info.Type)
			require.Regexp(t, `^prediction:persist:e-\d+$`, info.ID, "TaskID derived from the request id")
			require.Contains(t, info.Headers["traceparent"], sc.TraceID().String(), "trace context travels with the task")
		}
		require.Zero(t, countRows(t, b.pool), "nothing written directly")
	})

	t.Run("EnqueueRetryIsHarmless", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		rec, reg := newRecorder(t, b, nil)
		recs := records("r", 30)
		require.NoError(t, rec.Record(context.Background(), recs))
		require.NoError(t, rec.Record(context.Background(), recs), "a TaskID conflict is success")
		require.NoError(t, rec.Record(context.Background(), recs[:1]))
		require.Equal(t, 30, total(groupSizes(t, b)))
		require.Zero(t, metric(t, reg, "ml_persist_fallback_total"))
	})

	t.Run("LowConfidenceRaisesAnAlertTaskHighConfidenceDoesNot", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		rec, _ := newRecorder(t, b, nil)
		recs := []prediction.Record{
			record("c", 0, 0.95), record("c", 1, 0.55), record("c", 2, 0.7), // 0.7 == threshold: not low
			record("c", 3, 0.69), record("c", 4, 0.99),
		}
		require.NoError(t, rec.Record(context.Background(), recs))
		require.NoError(t, rec.Record(context.Background(), []prediction.Record{record("single", 0, 0.51)}))

		infos, err := b.inspector.ListPendingTasks(tasks.QueueCritical)
		require.NoError(t, err)
		var ids []string
		for _, info := range infos {
			require.Equal(t, tasks.TypeAlertLowConfidence, info.Type)
			ids = append(ids, info.ID)
		}
		slices.Sort(ids)
		require.Equal(t, []string{"alert:low_confidence:c-1", "alert:low_confidence:c-3", "alert:low_confidence:single-0"}, ids)
		require.Equal(t, 6, total(groupSizes(t, b)), "every record is persisted, low or not")
	})

	t.Run("RedisDownWritesToPostgresAndCounts", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		rec, reg := newRecorder(t, b, func(c *tasks.RecorderConfig) { c.BreakerCooldown = time.Minute })
		b.redis.Stop()

		batch := []prediction.Record{record("f", 0, 0.9), record("f", 1, 0.6), record("f", 2, 0.9)}
		require.NoError(t, rec.Record(context.Background(), batch))
		require.EqualValues(t, 3, countRows(t, b.pool))
		require.EqualValues(t, 3, metric(t, reg, "ml_persist_fallback_total"))
		require.EqualValues(t, 1, metric(t, reg, "ml_alert_fallback_total", "model_version", "v1.0.0"),
			"the low-confidence record is logged and counted by the api")
		require.EqualValues(t, 1, metric(t, reg, "ml_persist_queue_circuit_open"))

		// The circuit is open: the next call does not wait for Redis at all.
		start := time.Now()
		require.NoError(t, rec.Record(context.Background(), []prediction.Record{record("f", 3, 0.9)}))
		require.Less(t, time.Since(start), 200*time.Millisecond)
		require.EqualValues(t, 4, countRows(t, b.pool))
		require.EqualValues(t, 4, metric(t, reg, "ml_persist_fallback_total"))

		got, err := b.store.Get(context.Background(), "f-1")
		require.NoError(t, err)
		require.Equal(t, 0.6, got.Confidence)
	})

	t.Run("RedisAndPostgresDownIsErrUnavailable", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		rec, reg := newRecorder(t, b, func(c *tasks.RecorderConfig) {
			c.Store = deadStore(t)
			c.FallbackTimeout = time.Second
		})
		b.redis.Stop()
		err := rec.Record(context.Background(), records("x", 2))
		require.ErrorIs(t, err, prediction.ErrUnavailable)
		require.EqualValues(t, 2, metric(t, reg, "ml_persist_unavailable_total"))
		require.Zero(t, metric(t, reg, "ml_persist_fallback_total"))
	})

	t.Run("CancelledCallerStillRecords", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		rec, _ := newRecorder(t, b, nil)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		require.NoError(t, rec.Record(ctx, records("k", 5)))
		require.Equal(t, 5, total(groupSizes(t, b)))
	})

	t.Run("UnencodableRecordGoesToPostgresWithoutOpeningTheCircuit", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		rec, reg := newRecorder(t, b, nil)
		recs := records("n", 3)
		recs[1].LatencyMS = nan()
		require.NoError(t, rec.Record(context.Background(), recs))
		require.Equal(t, 2, total(groupSizes(t, b)))
		require.EqualValues(t, 1, metric(t, reg, "ml_persist_fallback_total"))
		require.Zero(t, metric(t, reg, "ml_persist_queue_circuit_open"))
	})
}
