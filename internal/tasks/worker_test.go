package tasks_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/predq/predq/internal/prediction"
	"github.com/predq/predq/internal/tasks"
)

// persistTask builds the prediction:persist task of recs.
func persistTask(t *testing.T, recs []prediction.Record) *asynq.Task {
	t.Helper()
	task, err := tasks.NewPredictionPersistTask(recs, nil)
	require.NoError(t, err)
	return task
}

func TestWorker(t *testing.T) {
	t.Parallel()

	t.Run("BatchTaskDeliveredTwiceWritesEachRecordOnce", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		_, reg := startWorker(t, b, nil)
		task := persistTask(t, records("twice", 300))
		for range 2 { // two deliveries of the same batch (asynq is at-least-once)
			_, err := b.client.Enqueue(task)
			require.NoError(t, err)
		}
		require.Eventually(t, func() bool {
			return metric(t, reg, "worker_tasks_processed_total", "task_type", tasks.TypePredictionPersist, "outcome", "success") == 2
		}, 15*time.Second, 20*time.Millisecond)
		require.EqualValues(t, 300, countRows(t, b.pool))
		var distinct int64
		require.NoError(t, b.pool.QueryRow(context.Background(), "SELECT count(DISTINCT request_id) FROM predictions").Scan(&distinct))
		require.EqualValues(t, 300, distinct)
		require.EqualValues(t, 300, metric(t, reg, "ml_persist_records_total", "outcome", "inserted"))
		require.EqualValues(t, 300, metric(t, reg, "ml_persist_records_total", "outcome", "duplicate"))
	})

	t.Run("PredictionsSharingARequestIDAreStoredAndAlertedEachOnce", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		_, reg := startWorker(t, b, nil)
		// A client sent one X-Request-ID with two predictions (other features, an id each),
		// both below their threshold.
		first, second := record("same", 0, 0.55), record("same", 1, 0.6)
		second.RequestID = first.RequestID
		recs := []prediction.Record{first, second}
		enqueueRecords(t, newPersistClient(t, b), context.Background(), recs)
		_, err := b.client.Enqueue(persistTask(t, recs)) // and the persist task again: a replay
		require.NoError(t, err)
		require.Eventually(t, func() bool {
			return metric(t, reg, "worker_tasks_processed_total", "task_type", tasks.TypePredictionPersist, "outcome", "success") == 2 &&
				metric(t, reg, "ml_low_confidence_total") == 2
		}, 15*time.Second, 20*time.Millisecond, "both persist tasks run, and an alert for each prediction")
		waitRows(t, b.pool, 2, 5*time.Second)
		for _, r := range recs {
			var requestID string
			var features []float64
			require.NoError(t, b.pool.QueryRow(context.Background(), "SELECT request_id, input_features FROM predictions WHERE id = $1", r.ID).
				Scan(&requestID, &features))
			require.Equal(t, first.RequestID, requestID)
			require.Equal(t, r.Features, features)
		}
		require.EqualValues(t, 2, metric(t, reg, "ml_persist_records_total", "outcome", "duplicate"))
	})

	t.Run("RecordsWithoutIDOfAnOlderApiAreStoredOnceAcrossReplays", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		_, reg := startWorker(t, b, nil)
		recs := records("old", 3)
		var payload []map[string]any
		raw, err := json.Marshal(recs)
		require.NoError(t, err)
		require.NoError(t, json.Unmarshal(raw, &payload))
		for _, r := range payload {
			delete(r, "id") // what an api from before server ids enqueued
		}
		raw, err = json.Marshal(payload)
		require.NoError(t, err)
		for range 2 {
			_, err := b.client.Enqueue(asynq.NewTask(tasks.TypePredictionPersist, raw), asynq.Queue(tasks.QueueDefault))
			require.NoError(t, err)
		}
		require.Eventually(t, func() bool {
			return metric(t, reg, "worker_tasks_processed_total", "task_type", tasks.TypePredictionPersist, "outcome", "success") == 2
		}, 15*time.Second, 20*time.Millisecond)
		require.EqualValues(t, 3, countRows(t, b.pool))
		for _, r := range recs {
			var id uuid.UUID
			require.NoError(t, b.pool.QueryRow(context.Background(), "SELECT id FROM predictions WHERE request_id = $1", r.RequestID).Scan(&id))
			require.Equal(t, prediction.DerivedID(r.RequestID, r.CreatedAt), id)
		}
	})

	t.Run("LowConfidenceAlertIsLoggedCountedAndPosted", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		var mu sync.Mutex
		var got []tasks.AlertWebhookBody
		var keys []string
		hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var body tasks.AlertWebhookBody
			raw, _ := io.ReadAll(r.Body)
			require.NoError(t, json.Unmarshal(raw, &body))
			mu.Lock()
			got = append(got, body)
			keys = append(keys, r.Header.Get("Idempotency-Key"))
			mu.Unlock()
		}))
		t.Cleanup(hook.Close)
		_, reg := startWorker(t, b, func(c *tasks.WorkerConfig) { c.Alert.WebhookURL, c.Alert.Sender = hook.URL, alertSender(t) })
		recs := []prediction.Record{record("w", 0, 0.9), record("w", 1, 0.55), record("w", 2, 0.99), record("w", 3, 0.6)}
		enqueueRecords(t, newPersistClient(t, b), context.Background(), recs)

		require.Eventually(t, func() bool {
			return metric(t, reg, "ml_alert_webhook_total", "outcome", "delivered") == 2
		}, 10*time.Second, 20*time.Millisecond)
		require.EqualValues(t, 2, metric(t, reg, "ml_low_confidence_total", "model_version", "v1.0.0"))
		mu.Lock()
		defer mu.Unlock()
		require.Len(t, got, 2)
		byID := map[string]tasks.AlertWebhookBody{}
		for _, g := range got {
			require.Equal(t, "prediction.low_confidence", g.Type)
			byID[g.Data.RequestID] = g
		}
		require.Equal(t, 0.55, byID["w-1"].Data.Confidence)
		require.Equal(t, 0.7, byID["w-1"].Data.Threshold)
		require.Equal(t, "v1.0.0", byID["w-3"].Data.ModelVersion)
		require.Equal(t, recs[1].ID, byID["w-1"].Data.PredictionID)
		require.ElementsMatch(t, []string{"alert:low_confidence:" + recs[1].ID.String(), "alert:low_confidence:" + recs[3].ID.String()}, keys,
			"keyed by the prediction's id")
		waitRows(t, b.pool, 4, 10*time.Second)
	})

	t.Run("FailingAlertWebhookIsRetriedAndCountedOnce", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		var calls atomic.Int32
		hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if calls.Add(1) <= 2 {
				w.WriteHeader(http.StatusBadGateway)
			}
		}))
		t.Cleanup(hook.Close)
		_, reg := startWorker(t, b, func(c *tasks.WorkerConfig) { c.Alert.WebhookURL, c.Alert.Sender = hook.URL, alertSender(t) })
		enqueueRecords(t, newPersistClient(t, b), context.Background(), []prediction.Record{record("h", 0, 0.5)})
		require.Eventually(t, func() bool {
			return metric(t, reg, "ml_alert_webhook_total", "outcome", "delivered") == 1
		}, 15*time.Second, 20*time.Millisecond)
		require.EqualValues(t, 3, calls.Load())
		require.EqualValues(t, 2, metric(t, reg, "ml_alert_webhook_total", "outcome", "error"))
		require.EqualValues(t, 1, metric(t, reg, "ml_low_confidence_total"), "retries do not count again")
	})

	t.Run("BadPayloadIsArchivedWithoutRetry", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		_, reg := startWorker(t, b, nil)
		for _, tt := range []struct{ typ, queue string }{
			{tasks.TypePredictionPersist, tasks.QueueDefault},
			{tasks.TypeAlertLowConfidence, tasks.QueueCritical},
		} {
			_, err := b.client.Enqueue(asynq.NewTask(tt.typ, []byte("not json")), asynq.Queue(tt.queue), asynq.MaxRetry(5))
			require.NoError(t, err)
		}
		require.Eventually(t, func() bool {
			a1, _ := b.inspector.ListArchivedTasks(tasks.QueueDefault)
			a2, _ := b.inspector.ListArchivedTasks(tasks.QueueCritical)
			return len(a1) == 1 && len(a2) == 1
		}, 10*time.Second, 20*time.Millisecond)
		require.EqualValues(t, 2, metric(t, reg, "worker_tasks_processed_total", "outcome", "skipped"))
		require.Zero(t, metric(t, reg, "worker_tasks_processed_total", "outcome", "error"), "never retried")
	})

	t.Run("InvalidRecordIsLeftOutTheOthersAreStored", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		_, reg := startWorker(t, b, nil)
		recs := records("i", 5)
		recs[2].RequestID = ""
		recs[3].Features = nil
		_, err := b.client.Enqueue(persistTask(t, recs))
		require.NoError(t, err)
		waitRows(t, b.pool, 3, 10*time.Second)
		require.EqualValues(t, 2, metric(t, reg, "ml_persist_records_total", "outcome", "invalid"))
	})

	t.Run("UnfinishedTaskGoesBackToItsQueueOnShutdown", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		reg := testRegistry()
		w, err := tasks.NewWorker(tasks.WorkerConfig{
			Redis: b.opts, Store: b.store, Registerer: reg, Logger: b.logger, LogLevel: "warn",
			ShutdownTimeout: 300 * time.Millisecond,
		})
		require.NoError(t, err)
		started := make(chan struct{})
		w.Handle("test:block", asynq.HandlerFunc(func(ctx context.Context, _ *asynq.Task) error {
			close(started)
			<-ctx.Done()
			return ctx.Err()
		}))
		require.NoError(t, w.Start())
		_, err = b.client.Enqueue(asynq.NewTask("test:block", nil), asynq.TaskID("blocker"))
		require.NoError(t, err)
		select {
		case <-started:
		case <-time.After(10 * time.Second):
			t.Fatal("task not started")
		}
		w.Stop()
		w.Shutdown()
		require.NoError(t, w.Close())
		info, err := b.inspector.GetTaskInfo(tasks.QueueDefault, "blocker")
		require.NoError(t, err)
		require.Equal(t, asynq.TaskStatePending, info.State, "pushed back, not lost")
		require.Zero(t, info.Retried, "a requeue is no failed attempt")
	})

	t.Run("TaskSpanContinuesTheRequestTrace", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		spans := tracetest.NewSpanRecorder()
		tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
		t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
		client := newPersistClient(t, b)

		ctx1, req1 := tp.Tracer("http").Start(context.Background(), "POST /api/v1/predict")
		ctx2, req2 := tp.Tracer("http").Start(context.Background(), "POST /api/v1/predict")
		// One batch of both requests' records, as a Recorder enqueues it: in the first
		// request's trace, linking the second; the alert in the second's.
		require.NoError(t, client.EnqueuePersist(ctx1, []prediction.Record{record("t", 0, 0.9), record("t", 1, 0.5)},
			[]trace.SpanContext{req2.SpanContext()}))
		require.NoError(t, client.EnqueueAlert(ctx2, record("t", 1, 0.5)))
		req1.End()
		req2.End()
		_, _ = startWorker(t, b, func(c *tasks.WorkerConfig) { c.Tracer = tp.Tracer("worker") })
		waitRows(t, b.pool, 2, 10*time.Second)

		var persist, alert sdktrace.ReadOnlySpan
		require.Eventually(t, func() bool {
			for _, s := range spans.Ended() {
				switch s.Name() {
				case tasks.TypePredictionPersist:
					persist = s
				case tasks.TypeAlertLowConfidence:
					alert = s
				}
			}
			return persist != nil && alert != nil
		}, 5*time.Second, 20*time.Millisecond)
		require.Equal(t, trace.SpanKindConsumer, persist.SpanKind())
		traces := []trace.TraceID{req1.SpanContext().TraceID(), req2.SpanContext().TraceID()}
		require.Contains(t, traces, persist.Parent().TraceID(), "the batch continues one request's trace")
		require.Len(t, persist.Links(), 1, "and links the other")
		require.Contains(t, traces, persist.Links()[0].SpanContext.TraceID())
		require.NotEqual(t, persist.Parent().TraceID(), persist.Links()[0].SpanContext.TraceID())
		require.Equal(t, req2.SpanContext().TraceID(), alert.Parent().TraceID())
	})
}
