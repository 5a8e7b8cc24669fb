package tasks

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Middleware returns the handler middleware of the worker: it continues the trace that the
// task's headers carry (the request that enqueued it) with a consumer span named after the
// task type, links the traces listed in HeaderTraceLinks (the other requests of a persist
// task), and counts and times every task by type and outcome. m may be nil (not counted).
func Middleware(tracer trace.Tracer, prop propagation.TextMapPropagator, m *WorkerMetrics) asynq.MiddlewareFunc {
	if m == nil {
		m = NewWorkerMetrics(nil)
	}
	return func(next asynq.Handler) asynq.Handler {
		return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
			ctx = prop.Extract(ctx, propagation.MapCarrier(t.Headers()))
			id, _ := asynq.GetTaskID(ctx)
			queue, _ := asynq.GetQueueName(ctx)
			retried, _ := asynq.GetRetryCount(ctx)
			opts := []trace.SpanStartOption{
				trace.WithSpanKind(trace.SpanKindConsumer),
				trace.WithAttributes(
					attribute.String("messaging.system", "asynq"),
					attribute.String("messaging.destination.name", queue),
					attribute.String("messaging.message.id", id),
					attribute.Int("asynq.retry_count", retried),
				),
			}
			if links := traceLinks(t.Headers()[HeaderTraceLinks]); len(links) > 0 {
				opts = append(opts, trace.WithLinks(links...))
			}
			ctx, span := tracer.Start(ctx, t.Type(), opts...)
			defer span.End()
			start := time.Now()
			err := next.ProcessTask(ctx, t)
			outcome := "success"
			switch {
			case errors.Is(err, asynq.SkipRetry):
				outcome = "skipped"
			case err != nil:
				outcome = "error"
			}
			if err != nil {
				span.RecordError(err)
				span.SetStatus(codes.Error, outcome)
			}
			m.tasks.WithLabelValues(t.Type(), outcome).Inc()
			m.duration.WithLabelValues(t.Type()).Observe(time.Since(start).Seconds())
			return err
		})
	}
}

// traceLinks parses the comma-separated traceparents of HeaderTraceLinks.
func traceLinks(v string) []trace.Link {
	if v == "" {
		return nil
	}
	var links []trace.Link
	w3c := propagation.TraceContext{}
	for _, tp := range strings.Split(v, ",") {
		sc := trace.SpanContextFromContext(w3c.Extract(context.Background(), traceparentCarrier(strings.TrimSpace(tp))))
		if sc.IsValid() {
			links = append(links, trace.Link{SpanContext: sc})
		}
		if len(links) == MaxTraceLinks {
			break
		}
	}
	return links
}

// traceparentCarrier holds one traceparent as a carrier for the W3C propagator.
func traceparentCarrier(tp string) propagation.MapCarrier {
	return propagation.MapCarrier{"traceparent": tp}
}
