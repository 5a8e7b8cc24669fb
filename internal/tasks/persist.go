package tasks

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/predq/predq/internal/prediction"
	"github.com/predq/predq/internal/redisdb"
)

// PersistClient enqueues the prediction:persist and alert:low_confidence tasks of answered
// predictions: the queue of the prediction feature's Recorders, which hold the policy (when
// to enqueue, breakers, fallbacks).
type PersistClient struct {
	rdb        redis.UniversalClient
	client     *asynq.Client
	propagator propagation.TextMapPropagator
}

var _ prediction.Enqueuer = (*PersistClient)(nil)

// NewPersistClient returns a PersistClient on the queue Redis whose dialling, reads and writes
// are bounded by timeout; prop writes the trace context into the task headers (nil: W3C trace
// context). It does not contact Redis. Close it.
func NewPersistClient(o redisdb.Options, timeout time.Duration, prop propagation.TextMapPropagator) *PersistClient {
	if prop == nil {
		prop = propagation.TraceContext{}
	}
	uo := o.Universal(timeout)
	uo.ContextTimeoutEnabled = true
	rdb := redis.NewUniversalClient(uo)
	return &PersistClient{rdb: rdb, client: asynq.NewClientFromRedisClient(rdb), propagator: prop}
}

// Close closes the Redis client.
func (c *PersistClient) Close() error { return c.rdb.Close() }

// EnqueuePersist implements prediction.Enqueuer: one prediction:persist task holding recs,
// continuing the trace of ctx, with the traceparents of links in HeaderTraceLinks (which the
// worker's consumer span links). asynq gives the task a random id; a replay writes nothing
// twice (each record carries its prediction's server id: ON CONFLICT (id) DO NOTHING).
func (c *PersistClient) EnqueuePersist(ctx context.Context, recs []prediction.Record, links []trace.SpanContext) error {
	headers := map[string]string{}
	c.propagator.Inject(ctx, propagation.MapCarrier(headers))
	if tl := traceLinksHeader(headers["traceparent"], links); tl != "" {
		headers[HeaderTraceLinks] = tl
	}
	t, err := NewPredictionPersistTask(recs, headers)
	if err != nil {
		return fmt.Errorf("%w: %w", prediction.ErrEncode, err)
	}
	return c.enqueue(ctx, t)
}

// EnqueueAlert implements prediction.Enqueuer: the alert:low_confidence task of rec, in the
// trace of ctx; its TaskID is derived from the prediction's id (AlertKey), so a second enqueue
// is a conflict, which is success.
func (c *PersistClient) EnqueueAlert(ctx context.Context, rec prediction.Record) error {
	headers := map[string]string{}
	c.propagator.Inject(ctx, propagation.MapCarrier(headers))
	t, err := NewAlertLowConfidenceTask(rec, headers)
	if err != nil {
		return fmt.Errorf("%w: %w", prediction.ErrEncode, err)
	}
	return c.enqueue(ctx, t)
}

func (c *PersistClient) enqueue(ctx context.Context, t *asynq.Task) error {
	_, err := c.client.EnqueueContext(ctx, t)
	if err == nil || errors.Is(err, asynq.ErrTaskIDConflict) {
		return nil
	}
	return fmt.Errorf("enqueue %s: %w", t.Type(), err)
}

// traceLinksHeader returns the HeaderTraceLinks value of links: their distinct W3C
// traceparents, leaving out first, at most MaxTraceLinks.
func traceLinksHeader(first string, links []trace.SpanContext) string {
	seen := map[string]bool{first: true}
	var tps []string
	w3c := propagation.TraceContext{}
	for _, sc := range links {
		h := propagation.MapCarrier{}
		w3c.Inject(trace.ContextWithSpanContext(context.Background(), sc), h)
		tp := h["traceparent"]
		if tp == "" || seen[tp] {
			continue
		}
		seen[tp] = true
		tps = append(tps, tp)
		if len(tps) == MaxTraceLinks {
			break
		}
	}
	return strings.Join(tps, ",")
}
