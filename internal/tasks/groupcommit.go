package tasks

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/predq/predq/internal/prediction"
)

// GroupCommit is a prediction.Recorder that batches the records of concurrent requests in
// the api itself (group commit): while one batch is being written, the records of the
// requests that arrive meanwhile gather, and the next write takes them all. On PathPostgres a
// batch is one COPY into Postgres (one commit); on PathQueue it is one prediction:persist
// task whose payload is the array of records. Each request is answered only once the batch
// holding its record is stored or enqueued (by the Recorder's path, or by its fallback when
// that fails). Nothing waits for a timer: under light load a batch holds one record and costs
// one round trip; under load one round trip carries many records.
type GroupCommit struct {
	r        *Recorder
	maxBatch int
	in       chan *commitWaiter
	wg       sync.WaitGroup
}

type commitWaiter struct {
	ctx  context.Context
	recs []prediction.Record
	done chan error
}

var _ prediction.Recorder = (*GroupCommit)(nil)

// Defaults of NewGroupCommit.
//
// One committer: while it enqueues, the records of every request gather for its next batch,
// so batches are about twice as large as with two, and each persist task's fixed costs
// (asynq's enqueue, dequeue and done scripts, the worker's decode, one INSERT) are shared by
// twice as many records (README Benchmarks).
const (
	DefaultGroupCommitBatch      = 500
	DefaultGroupCommitCommitters = 1
)

// NewGroupCommit batches for r (which enqueues, and falls back to Postgres) with committers
// goroutines, each taking whatever has gathered (up to maxBatch records) for one enqueue.
// Zero values pick the defaults. Close it after the last Record.
func NewGroupCommit(r *Recorder, maxBatch, committers int) *GroupCommit {
	if maxBatch <= 0 {
		maxBatch = DefaultGroupCommitBatch
	}
	if committers <= 0 {
		committers = DefaultGroupCommitCommitters
	}
	g := &GroupCommit{r: r, maxBatch: maxBatch, in: make(chan *commitWaiter, 4096)}
	for range committers {
		g.wg.Go(g.commit)
	}
	return g
}

// Close stops the committers once every pending record is committed.
func (g *GroupCommit) Close() {
	close(g.in)
	g.wg.Wait()
}

// Record implements prediction.Recorder: it returns once recs are enqueued or stored, or
// with an error wrapping prediction.ErrUnavailable.
func (g *GroupCommit) Record(ctx context.Context, recs []prediction.Record) error {
	if len(recs) == 0 {
		return nil
	}
	w := &commitWaiter{ctx: ctx, recs: recs, done: make(chan error, 1)}
	g.in <- w
	return <-w.done
}

func (g *GroupCommit) commit() {
	for w := range g.in {
		batch := []*commitWaiter{w}
		n := len(w.recs)
		// Take what has gathered; then yield to the goroutines that can run now, as long as
		// that brings more records (a few rounds at most): on a busy process the batch then
		// holds the records of every request about to answer, not the one or two that were
		// first. On an idle process it costs one Gosched, no timer.
		for round := 0; round < 4 && n < g.maxBatch; round++ {
			took := 0
		gather:
			for n < g.maxBatch {
				select {
				case next, ok := <-g.in:
					if !ok {
						break gather
					}
					batch = append(batch, next)
					n += len(next.recs)
					took++
				default:
					break gather
				}
			}
			if round > 0 && took == 0 {
				break
			}
			runtime.Gosched()
		}
		err := g.r.recordBatch(batch, n)
		for _, b := range batch {
			b.done <- err
		}
	}
}

// recordBatch records the n records of batch and enqueues one alert task per low-confidence
// record. On PathQueue the records become one prediction:persist task, and when Redis cannot
// take it they are written to Postgres like Record's fallback. On PathPostgres they are
// written to Postgres (storeBatch), and when Postgres cannot take them they become the
// prediction:persist task instead.
//
// Traces: the persist task continues the trace of the first request (through the producer
// span "enqueue prediction:persist", on PathPostgres the span "store predictions", which
// holds the write) and carries the traceparents of up to MaxTraceLinks other requests in
// HeaderTraceLinks, which the worker's consumer span links, as for a task of asynq's
// aggregator; each alert task, and each log line about a record, continues the trace of the
// record's own request. The span links the other requests on both paths.
func (r *Recorder) recordBatch(batch []*commitWaiter, n int) error {
	recs := make([]prediction.Record, 0, n)
	for _, w := range batch {
		recs = append(recs, w.recs...)
	}
	var links []trace.Link
	for _, w := range batch[1:] {
		if sc := trace.SpanContextFromContext(w.ctx); sc.IsValid() && len(links) < MaxTraceLinks {
			links = append(links, trace.Link{SpanContext: sc})
		}
	}
	name, kind := "enqueue "+TypePredictionPersist, trace.SpanKindProducer
	attrs := []attribute.KeyValue{attribute.String("messaging.system", "asynq"), attribute.Int("messaging.batch.message_count", len(recs))}
	if r.direct {
		name, kind = "store predictions", trace.SpanKindInternal
		attrs = []attribute.KeyValue{attribute.Int("predq.batch.records", len(recs))}
	}
	ctx, span := r.tracer.Start(context.WithoutCancel(batch[0].ctx), name,
		trace.WithSpanKind(kind), trace.WithLinks(links...), trace.WithAttributes(attrs...))
	defer span.End()
	var perr error
	if r.direct {
		if perr = r.storeBatch(ctx, recs); perr == nil {
			r.alertBatch(ctx, batch)
			return nil
		}
		span.SetAttributes(attribute.Int("predq.fallback_records", len(recs)))
	}
	// The persist task's headers, built only when there is a task: a traceparent per request
	// of the batch for HeaderTraceLinks.
	headers := map[string]string{}
	r.propagator.Inject(ctx, propagation.MapCarrier(headers))
	if tl := traceLinksHeader(headers["traceparent"], batch[1:]); tl != "" {
		headers[HeaderTraceLinks] = tl
	}
	var qerr error
	if r.breakerOpen() {
		qerr = errBreakerOpen
	} else {
		qerr = r.enqueueBatch(ctx, recs, headers, batch)
		if qerr != nil && !errors.Is(qerr, errEncode) {
			r.trip(ctx, qerr)
		}
	}
	if qerr == nil {
		if r.direct {
			r.metrics.fallbackToQueue.Add(float64(len(recs)))
		}
		return nil
	}
	if r.direct {
		// Postgres failed first: the records are neither stored nor queued.
		r.metrics.unavailable.Add(float64(len(recs)))
		err := fmt.Errorf("%w: record %d predictions: postgres: %v; queue: %v", prediction.ErrUnavailable, len(recs), perr, qerr)
		span.RecordError(err)
		span.SetStatus(codes.Error, "unrecorded")
		return err
	}
	// Same path as Record for records that could not be enqueued.
	if err := r.storeDirectly(ctx, span, recs, qerr); err != nil {
		return err
	}
	r.alertsNotQueued(batch)
	return nil
}

// alertsNotQueued logs and counts the low-confidence records of batch as alerts that were not
// enqueued (alertNotQueued), each in its own request's context.
func (r *Recorder) alertsNotQueued(batch []*commitWaiter) {
	for _, w := range batch {
		for _, rec := range w.recs {
			if rec.LowConfidence() {
				r.alertNotQueued(w.ctx, rec)
			}
		}
	}
}

// storeBatch writes recs to Postgres within the store timeout (PathPostgres). After a failure
// it opens the Postgres breaker: until the cooldown ends, batches go to the queue at once.
func (r *Recorder) storeBatch(ctx context.Context, recs []prediction.Record) error {
	if r.pgBreakerOpen() {
		return errPostgresOpen
	}
	sctx, cancel := context.WithTimeout(ctx, r.storeTimeout)
	_, err := r.store.Insert(sctx, recs)
	cancel()
	if err != nil {
		r.tripPostgres(ctx, err)
		return err
	}
	r.metrics.directBatch.Observe(float64(len(recs)))
	return nil
}

// errPostgresOpen: Postgres was not tried because a write failed moments ago.
var errPostgresOpen = errors.New("postgres unavailable moments ago (circuit open)")

// alertBatch enqueues the alert task of each low-confidence record of batch whose records are
// stored (PathPostgres); a record whose alert cannot be enqueued is logged and counted by the
// api, as on the fallback.
func (r *Recorder) alertBatch(ctx context.Context, batch []*commitWaiter) {
	if r.breakerOpen() {
		r.alertsNotQueued(batch)
		return
	}
	if err := r.enqueueAlerts(ctx, batch); err != nil {
		r.trip(ctx, err)
	}
}

// traceLinksHeader returns the HeaderTraceLinks value of a batch: the distinct W3C
// traceparents of the requests of others, leaving out first, at most MaxTraceLinks.
func traceLinksHeader(first string, others []*commitWaiter) string {
	seen := map[string]bool{first: true}
	var tps []string
	w3c := propagation.TraceContext{}
	for _, w := range others {
		h := propagation.MapCarrier{}
		w3c.Inject(w.ctx, h)
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

// enqueueBatch enqueues the persist task of recs with headers, then the alert tasks of batch
// (enqueueAlerts).
func (r *Recorder) enqueueBatch(ctx context.Context, recs []prediction.Record, headers map[string]string, batch []*commitWaiter) error {
	payload, err := marshalPersistBatch(recs)
	if err != nil {
		return fmt.Errorf("%w: %v", errEncode, err)
	}
	t := NewPredictionPersistBatchTask(payload, headers)
	// asynq gives the batch a random id; a replay of the task writes nothing twice
	// (ON CONFLICT (request_id) DO NOTHING).
	if err := r.enqueue(ctx, t); err != nil {
		return err
	}
	// The records are queued: an alert that is not is logged and counted by enqueueAlerts.
	if err := r.enqueueAlerts(ctx, batch); err != nil {
		r.trip(ctx, err)
	}
	return nil
}

// enqueueAlerts enqueues the alert task of each low-confidence record of batch with the trace
// context of its own request (the first request's through ctx, which holds the producer
// span). Each alert that is not enqueued is logged and counted, as on the fallback; after the
// first failed enqueue the rest are not tried (a hung Redis would hold the batch for a
// timeout per alert), and that failure is returned.
func (r *Recorder) enqueueAlerts(ctx context.Context, batch []*commitWaiter) error {
	var failed error
	for i, w := range batch {
		wctx := context.WithoutCancel(w.ctx)
		if i == 0 {
			wctx = ctx
		}
		var wh map[string]string
		for _, rec := range w.recs {
			if !rec.LowConfidence() {
				continue
			}
			if wh == nil {
				wh = map[string]string{}
				r.propagator.Inject(wctx, propagation.MapCarrier(wh))
			}
			err := failed
			if err == nil {
				at, encErr := NewAlertLowConfidenceTask(rec, wh)
				if err = encErr; err == nil {
					err = r.enqueue(ctx, at)
					failed = err
				}
			}
			if err != nil {
				r.metrics.alertFallback.WithLabelValues(rec.ModelVersion).Inc()
				r.logger.WarnContext(wctx, "low-confidence prediction (alert not queued)", "request_id", rec.RequestID,
					"model_version", rec.ModelVersion, "confidence", rec.Confidence, "threshold", rec.ConfidenceThreshold, "error", err)
			}
		}
	}
	return failed
}
