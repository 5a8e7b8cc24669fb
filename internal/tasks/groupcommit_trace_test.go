package tasks

import (
	"context"
	"strings"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/predq/predq/internal/prediction"
	"github.com/predq/predq/internal/redisdb"
	"github.com/predq/predq/internal/redistest"
)

// nopInserter takes every record (the fallback is not exercised here).
type nopInserter struct{}

func (nopInserter) Insert(_ context.Context, recs []prediction.Record) (int64, error) {
	return int64(len(recs)), nil
}

// traceSetup returns a Recorder of cfg (Redis and Tracer filled in: a throwaway Redis, a
// tracer whose spans spans records), the inspector of its Redis, and the contexts and spans of
// two client requests, each the root of its own trace.
func traceSetup(t *testing.T, cfg RecorderConfig) (r *Recorder, spans *tracetest.SpanRecorder, insp *asynq.Inspector, ctx0, ctx1 context.Context, req0, req1 trace.Span) {
	t.Helper()
	rs := redistest.New(t)
	opts, err := redisdb.ParseURL(rs.URL)
	require.NoError(t, err)
	spans = tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	cfg.Redis, cfg.Tracer = opts, tp.Tracer("tasks")
	r, err = NewRecorder(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = r.Close() })
	insp = asynq.NewInspector(RedisConnOpt(opts, 0))
	t.Cleanup(func() { _ = insp.Close() })
	client := tp.Tracer("client")
	ctx0, req0 = client.Start(context.Background(), "request 0")
	ctx1, req1 = client.Start(context.Background(), "request 1")
	return r, spans, insp, ctx0, ctx1, req0, req1
}

// traceRecord is a record of the trace tests (threshold 0.8).
func traceRecord(id string, confidence float64) prediction.Record {
	return prediction.Record{RequestID: id, Features: []float64{1}, ModelVersion: "v1", PredictionClass: "M",
		Prediction: confidence, Confidence: confidence, ConfidenceThreshold: 0.8}
}

// A group-commit batch of several requests: the persist task continues the first request's
// trace and links the others; each alert continues its own request's trace.
func TestGroupCommitBatchKeepsEachRequestsTrace(t *testing.T) {
	t.Parallel()
	// Three requests, each the server span of its own trace; the third has no trace at all.
	r, spans, insp, ctx0, ctx1, req0, req1 := traceSetup(t, RecorderConfig{Store: nopInserter{}})
	rec := traceRecord
	batch := []*commitWaiter{
		{ctx: ctx0, recs: []prediction.Record{rec("r0", 0.6)}},
		{ctx: ctx1, recs: []prediction.Record{rec("r1a", 0.9), rec("r1b", 0.7)}},
		{ctx: context.Background(), recs: []prediction.Record{rec("r2", 0.95)}},
	}
	require.NoError(t, r.recordBatch(batch, 4))
	req0.End()
	req1.End()

	traceOf := func(h map[string]string) trace.SpanContext {
		return trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), propagation.MapCarrier(h)))
	}

	// The producer span is a child of the first request and links the second.
	var producer sdktrace.ReadOnlySpan
	for _, s := range spans.Ended() {
		if s.Name() == "enqueue "+TypePredictionPersist {
			producer = s
		}
	}
	require.NotNil(t, producer)
	require.Equal(t, req0.SpanContext().SpanID(), producer.Parent().SpanID())
	require.Len(t, producer.Links(), 1)
	require.Equal(t, req1.SpanContext().TraceID(), producer.Links()[0].SpanContext.TraceID())

	// One persist task, in the first trace, linking the second.
	pending, err := insp.ListPendingTasks(QueueDefault)
	require.NoError(t, err)
	require.Len(t, pending, 1)
	h := pending[0].Headers
	require.Equal(t, producer.SpanContext().SpanID(), traceOf(h).SpanID())
	links := strings.Split(h[HeaderTraceLinks], ",")
	require.Len(t, links, 1)
	require.Equal(t, req1.SpanContext().TraceID(), traceOf(map[string]string{"traceparent": links[0]}).TraceID())
	got := traceLinks(h[HeaderTraceLinks]) // as the worker's middleware reads it
	require.Len(t, got, 1)
	require.Equal(t, req1.SpanContext().TraceID(), got[0].SpanContext.TraceID())

	// The alerts of r0 and r1b, each in its own request's trace.
	a0, err := insp.GetTaskInfo(QueueCritical, AlertTaskID("r0"))
	require.NoError(t, err)
	require.Equal(t, req0.SpanContext().TraceID(), traceOf(a0.Headers).TraceID())
	require.NotContains(t, a0.Headers, HeaderTraceLinks)
	a1, err := insp.GetTaskInfo(QueueCritical, AlertTaskID("r1b"))
	require.NoError(t, err)
	require.Equal(t, req1.SpanContext().SpanID(), traceOf(a1.Headers).SpanID())
	_, err = insp.GetTaskInfo(QueueCritical, AlertTaskID("r1a"))
	require.ErrorIs(t, err, asynq.ErrTaskNotFound, "r1a is confident enough")
}

// ctxInserter takes every record and keeps the span context of each Insert call.
type ctxInserter struct{ calls []trace.SpanContext }

func (c *ctxInserter) Insert(ctx context.Context, recs []prediction.Record) (int64, error) {
	c.calls = append(c.calls, trace.SpanContextFromContext(ctx))
	return int64(len(recs)), nil
}

// On PathPostgres the batch is written under the span "store predictions", a child of the
// first request that links the others; each alert still continues its own request's trace.
func TestGroupCommitStoreSpanOnThePostgresPath(t *testing.T) {
	t.Parallel()
	store := &ctxInserter{}
	r, spans, insp, ctx0, ctx1, req0, req1 := traceSetup(t, RecorderConfig{Path: PathPostgres, Store: store})
	batch := []*commitWaiter{
		{ctx: ctx0, recs: []prediction.Record{traceRecord("r0", 0.9)}},
		{ctx: ctx1, recs: []prediction.Record{traceRecord("r1", 0.7)}},
	}
	require.NoError(t, r.recordBatch(batch, 2))
	req0.End()
	req1.End()

	var store0 sdktrace.ReadOnlySpan
	for _, s := range spans.Ended() {
		require.NotEqual(t, "enqueue "+TypePredictionPersist, s.Name(), "nothing is enqueued for persistence")
		if s.Name() == "store predictions" {
			store0 = s
		}
	}
	require.NotNil(t, store0)
	require.Equal(t, trace.SpanKindInternal, store0.SpanKind())
	require.Equal(t, req0.SpanContext().SpanID(), store0.Parent().SpanID())
	require.Len(t, store0.Links(), 1)
	require.Equal(t, req1.SpanContext().TraceID(), store0.Links()[0].SpanContext.TraceID())
	require.Len(t, store.calls, 1)
	require.Equal(t, store0.SpanContext().SpanID(), store.calls[0].SpanID(), "the write runs under the store span")

	_, err := insp.ListPendingTasks(QueueDefault)
	require.ErrorIs(t, err, asynq.ErrQueueNotFound, "no persist task")
	a1, err := insp.GetTaskInfo(QueueCritical, AlertTaskID("r1"))
	require.NoError(t, err)
	require.Equal(t, req1.SpanContext().SpanID(),
		trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), propagation.MapCarrier(a1.Headers))).SpanID())
}
