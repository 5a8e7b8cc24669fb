package prediction

import (
	"context"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// tracedQueue is the queue of the trace tests: it keeps the trace context that each enqueue
// is given (internal/tasks writes it into the task headers; its tests check that part).
type tracedQueue struct {
	mu      sync.Mutex
	persist []trace.SpanContext
	links   [][]trace.SpanContext
	alerts  map[string]trace.SpanContext
}

func (q *tracedQueue) EnqueuePersist(ctx context.Context, _ []Record, links []trace.SpanContext) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.persist = append(q.persist, trace.SpanContextFromContext(ctx))
	q.links = append(q.links, links)
	return nil
}

func (q *tracedQueue) EnqueueAlert(ctx context.Context, rec Record) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.alerts[rec.RequestID] = trace.SpanContextFromContext(ctx)
	return nil
}

// ctxInserter takes every record and keeps the span context of each Insert call.
type ctxInserter struct{ calls []trace.SpanContext }

func (c *ctxInserter) Insert(ctx context.Context, recs []Record) (int64, error) {
	c.calls = append(c.calls, trace.SpanContextFromContext(ctx))
	return int64(len(recs)), nil
}

// failingInserter refuses every batch, as a Postgres that is down.
type failingInserter struct{}

func (failingInserter) Insert(context.Context, []Record) (int64, error) {
	return 0, context.DeadlineExceeded
}

// traceRecord is a record of the trace tests (threshold 0.8).
func traceRecord(id string, confidence float64) Record {
	return Record{RequestID: id, Features: []float64{1}, ModelVersion: "v1", PredictionClass: "M",
		Prediction: confidence, Confidence: confidence, ConfidenceThreshold: 0.8}
}

// traceBatch returns a tracer whose spans spans records and a batch of three requests: the
// first two each the root of its own trace, the third without a trace.
func traceBatch(t *testing.T) (*tracetest.SpanRecorder, trace.Tracer, *commitBatch, trace.Span, trace.Span) {
	t.Helper()
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	client := tp.Tracer("client")
	ctx0, req0 := client.Start(context.Background(), "request 0")
	ctx1, req1 := client.Start(context.Background(), "request 1")
	b := &commitBatch{waiters: []*commitWaiter{
		{ctx: ctx0, recs: []Record{traceRecord("r0", 0.6)}},
		{ctx: ctx1, recs: []Record{traceRecord("r1a", 0.9), traceRecord("r1b", 0.7)}},
		{ctx: context.Background(), recs: []Record{traceRecord("r2", 0.95)}},
	}}
	for _, w := range b.waiters {
		b.recs = append(b.recs, w.recs...)
	}
	return spans, tp.Tracer("prediction"), b, req0, req1
}

func spanNamed(spans *tracetest.SpanRecorder, name string) sdktrace.ReadOnlySpan {
	for _, s := range spans.Ended() {
		if s.Name() == name {
			return s
		}
	}
	return nil
}

// A batch of several requests on the queue path: the persist task continues the first
// request's trace (through the producer span) and links the others; each alert continues
// its own request's trace.
func TestQueueFirstBatchKeepsEachRequestsTrace(t *testing.T) {
	t.Parallel()
	spans, tracer, b, req0, req1 := traceBatch(t)
	q := &tracedQueue{alerts: map[string]trace.SpanContext{}}
	r, err := NewQueueFirst(RecorderConfig{Store: &ctxInserter{}, Queue: q, Tracer: tracer})
	require.NoError(t, err)
	require.NoError(t, r.write(b))
	req0.End()
	req1.End()

	producer := spanNamed(spans, "enqueue prediction:persist")
	require.NotNil(t, producer)
	require.Equal(t, trace.SpanKindProducer, producer.SpanKind())
	require.Equal(t, req0.SpanContext().SpanID(), producer.Parent().SpanID())
	require.Len(t, producer.Links(), 1)
	require.Equal(t, req1.SpanContext().TraceID(), producer.Links()[0].SpanContext.TraceID())

	require.Len(t, q.persist, 1, "one persist task")
	require.Equal(t, producer.SpanContext().SpanID(), q.persist[0].SpanID(), "enqueued under the producer span")
	require.Len(t, q.links[0], 1)
	require.Equal(t, req1.SpanContext().TraceID(), q.links[0][0].TraceID(), "linking the second request")

	require.Len(t, q.alerts, 2, "r0 and r1b; r1a is confident enough")
	require.Equal(t, req0.SpanContext().TraceID(), q.alerts["r0"].TraceID())
	require.Equal(t, req1.SpanContext().SpanID(), q.alerts["r1b"].SpanID())
}

// On the Postgres path the batch is written under the span "store predictions", a child of
// the first request that links the others; each alert still continues its own request's
// trace; when Postgres fails, the persist task is enqueued under that span.
func TestPostgresFirstStoreSpan(t *testing.T) {
	t.Parallel()
	spans, tracer, b, req0, req1 := traceBatch(t)
	store := &ctxInserter{}
	q := &tracedQueue{alerts: map[string]trace.SpanContext{}}
	r, err := NewPostgresFirst(RecorderConfig{Store: store, Queue: q, Tracer: tracer})
	require.NoError(t, err)
	require.NoError(t, r.write(b))
	req0.End()
	req1.End()

	require.Nil(t, spanNamed(spans, "enqueue prediction:persist"), "nothing is enqueued for persistence")
	st := spanNamed(spans, "store predictions")
	require.NotNil(t, st)
	require.Equal(t, trace.SpanKindInternal, st.SpanKind())
	require.Equal(t, req0.SpanContext().SpanID(), st.Parent().SpanID())
	require.Len(t, st.Links(), 1)
	require.Equal(t, req1.SpanContext().TraceID(), st.Links()[0].SpanContext.TraceID())
	require.Len(t, store.calls, 1)
	require.Equal(t, st.SpanContext().SpanID(), store.calls[0].SpanID(), "the write runs under the store span")
	require.Empty(t, q.persist)
	require.Equal(t, req1.SpanContext().SpanID(), q.alerts["r1b"].SpanID())

	t.Run("PostgresDownEnqueuesUnderTheStoreSpan", func(t *testing.T) {
		spans, tracer, b, req0, req1 := traceBatch(t)
		q := &tracedQueue{alerts: map[string]trace.SpanContext{}}
		r, err := NewPostgresFirst(RecorderConfig{Store: failingInserter{}, Queue: q, Tracer: tracer})
		require.NoError(t, err)
		require.NoError(t, r.write(b))
		req0.End()
		req1.End()
		st := spanNamed(spans, "store predictions")
		require.NotNil(t, st)
		require.Len(t, q.persist, 1)
		require.Equal(t, st.SpanContext().SpanID(), q.persist[0].SpanID())
		require.Equal(t, req1.SpanContext().TraceID(), q.links[0][0].TraceID())
	})
}
