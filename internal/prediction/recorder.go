package prediction

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/predq/predq/internal/batch"
	"github.com/predq/predq/internal/breaker"
	"github.com/predq/predq/internal/postgres"
)

// Persistence paths of the records of answered predictions (PERSIST_PATH), each a Recorder:
// PathPostgres is a PostgresFirst, PathQueue a QueueFirst.
const (
	PathPostgres = "postgres"
	PathQueue    = "queue"
)

// Defaults of RecorderConfig.
const (
	DefaultEnqueueTimeout  = 500 * time.Millisecond
	DefaultStoreTimeout    = time.Second
	DefaultFallbackTimeout = 5 * time.Second
	DefaultBreakerCooldown = 2 * time.Second
	DefaultMaxBatch        = 500
	// MaxTraceLinks bounds the other requests' traces that the span of a batch links.
	MaxTraceLinks = 32
)

// Inserter writes prediction records idempotently on their ids (ON CONFLICT (id) DO NOTHING) and
// returns how many rows it inserted. *Store implements it.
type Inserter interface {
	Insert(ctx context.Context, recs []Record) (int64, error)
}

// Enqueuer hands records to the queue, for the worker to store them (internal/tasks
// implements it). Both methods return an error wrapping ErrEncode when a record cannot be
// encoded as a task, which says nothing about the queue itself.
type Enqueuer interface {
	// EnqueuePersist enqueues one task holding recs, in the trace of ctx, which also links the
	// traces of links (the other requests whose records the batch holds). A replay of the task
	// stores nothing twice.
	EnqueuePersist(ctx context.Context, recs []Record, links []trace.SpanContext) error
	// EnqueueAlert enqueues the low-confidence alert of rec, in the trace of ctx; enqueuing
	// the alert of a record again is success.
	EnqueueAlert(ctx context.Context, rec Record) error
}

// ErrEncode: a record could not be encoded as a task (see Enqueuer).
var ErrEncode = errors.New("encode task")

// RecorderConfig configures a PostgresFirst or a QueueFirst. Store and Queue are required.
type RecorderConfig struct {
	Store Inserter
	Queue Enqueuer
	// Registerer receives the metrics (nil: not registered).
	Registerer prometheus.Registerer
	// Logger logs fallbacks and the low-confidence warnings of records that got no alert task.
	Logger *slog.Logger
	// Tracer starts the span of each batch (nil: none).
	Tracer trace.Tracer
	// EnqueueTimeout bounds one enqueue.
	EnqueueTimeout time.Duration
	// StoreTimeout bounds the PostgresFirst write of a batch; past it the batch is enqueued
	// instead (a write that commits late is harmless: the replay writes nothing twice).
	StoreTimeout time.Duration
	// FallbackTimeout bounds the QueueFirst write of a batch the queue did not take.
	FallbackTimeout time.Duration
	// BreakerCooldown: after the queue (or, on PostgresFirst, Postgres) failed, batches take
	// the other way without trying it for this long.
	BreakerCooldown time.Duration
	// MaxBatch bounds the records of one batch (a batch predict larger than it is one batch).
	MaxBatch int
}

// BatchingRecorder is a Recorder that group-commits in the background; Close waits for the
// batch in flight, after the last Record.
type BatchingRecorder interface {
	Recorder
	Close()
}

// NewRecorder returns the Recorder of path: a PostgresFirst for PathPostgres (or ""), a
// QueueFirst for PathQueue.
func NewRecorder(path string, cfg RecorderConfig) (BatchingRecorder, error) {
	switch path {
	case "", PathPostgres:
		return NewPostgresFirst(cfg)
	case PathQueue:
		return NewQueueFirst(cfg)
	}
	return nil, fmt.Errorf("prediction: persistence path must be %q or %q, got %q", PathPostgres, PathQueue, path)
}

// PostgresFirst is the Recorder that writes each batch to Postgres itself (one COPY, one
// commit) before its requests are answered, and enqueues a persist task for the worker only
// when Postgres cannot take the batch (down, refusing it, or slower than StoreTimeout;
// counted in ml_persist_fallback_total{to="queue"}). An answered prediction is then in
// Postgres, the source of truth, when its client reads the answer: a Redis without
// persistence loses nothing, and GET /predictions/{id} finds it at once. After a failed write
// Postgres is skipped for the breaker's cooldown. Each low-confidence record gets an alert
// task; when the queue cannot take it, the api logs and counts the warning itself
// (ml_alert_fallback_total). When neither takes a batch, Record returns an error wrapping
// ErrUnavailable.
type PostgresFirst struct{ g *groupCommit }

// QueueFirst is the Recorder that enqueues each batch as one persist task for the worker
// (DESIGN section 2), and writes it to Postgres itself only when the queue cannot take it
// (ml_persist_fallback_total{to="postgres"}); after a failed enqueue the queue is skipped for
// the breaker's cooldown. Alerts, and batches neither takes, as for PostgresFirst.
type QueueFirst struct{ g *groupCommit }

var (
	_ BatchingRecorder = (*PostgresFirst)(nil)
	_ BatchingRecorder = (*QueueFirst)(nil)
)

// NewPostgresFirst returns a PostgresFirst.
func NewPostgresFirst(cfg RecorderConfig) (*PostgresFirst, error) {
	r := &PostgresFirst{}
	g, err := newGroupCommit(cfg, r.write)
	r.g = g
	return r, err
}

// NewQueueFirst returns a QueueFirst.
func NewQueueFirst(cfg RecorderConfig) (*QueueFirst, error) {
	r := &QueueFirst{}
	g, err := newGroupCommit(cfg, r.write)
	r.g = g
	return r, err
}

// Record implements Recorder: it returns once recs are stored or enqueued, with the records
// of the requests that arrived meanwhile (group commit), or with an error wrapping
// ErrUnavailable. The caller's cancellation does not interrupt it (the answer was computed;
// it is recorded regardless), but every Redis and Postgres call has its own deadline.
func (r *PostgresFirst) Record(ctx context.Context, recs []Record) error {
	return r.g.record(ctx, recs)
}

// Close waits for the batch in flight (after the last Record).
func (r *PostgresFirst) Close() { r.g.batches.Wait() }

// Record implements Recorder, as PostgresFirst.Record does.
func (r *QueueFirst) Record(ctx context.Context, recs []Record) error { return r.g.record(ctx, recs) }

// Close waits for the batch in flight (after the last Record).
func (r *QueueFirst) Close() { r.g.batches.Wait() }

// write stores the batch (the span "store predictions", a child of the first request that
// links the others), else enqueues it.
func (r *PostgresFirst) write(b *commitBatch) error {
	g := r.g
	ctx, span := b.start(g, "store predictions", trace.SpanKindInternal, attribute.Int("predq.batch.records", len(b.recs)))
	defer span.End()
	perr := g.store(ctx, b.recs)
	if perr == nil {
		g.alert(ctx, b)
		return nil
	}
	span.SetAttributes(attribute.Int("predq.fallback_records", len(b.recs)))
	qerr := g.enqueue(ctx, b)
	if qerr == nil {
		g.metrics.fallbackToQueue.Add(float64(len(b.recs)))
		return nil
	}
	return g.unavailable(span, b, fmt.Errorf("postgres: %v; queue: %v", perr, qerr)) //nolint:errorlint // reported, not wrapped: the error is ErrUnavailable
}

// write enqueues the batch (the producer span "enqueue prediction:persist"), else stores it.
func (r *QueueFirst) write(b *commitBatch) error {
	g := r.g
	ctx, span := b.start(g, "enqueue prediction:persist", trace.SpanKindProducer,
		attribute.String("messaging.system", "asynq"), attribute.Int("messaging.batch.message_count", len(b.recs)))
	defer span.End()
	qerr := g.enqueue(ctx, b)
	if qerr == nil {
		return nil
	}
	span.SetAttributes(attribute.Int("predq.fallback_records", len(b.recs)))
	fctx, cancel := context.WithTimeout(ctx, g.fallbackTimeout)
	_, perr := g.inserter.Insert(fctx, b.recs)
	cancel()
	if perr != nil {
		return g.unavailable(span, b, fmt.Errorf("queue: %v; postgres: %v", qerr, perr)) //nolint:errorlint // reported, not wrapped
	}
	g.metrics.fallbackToPostgres.Add(float64(len(b.recs)))
	g.alertsNotQueued(b)
	return nil
}

// groupCommit is what both Recorders share: the batcher that gathers the records of
// concurrent requests, the store and the queue with a breaker each, and the metrics.
type groupCommit struct {
	inserter Inserter
	queue    Enqueuer
	logger   *slog.Logger
	tracer   trace.Tracer
	metrics  *recorderMetrics
	batches  *batch.Batcher[*commitWaiter]

	queueBreaker, pgBreaker                       *breaker.Breaker
	enqueueTimeout, storeTimeout, fallbackTimeout time.Duration
}

// commitWaiter is one Record call waiting for its batch.
type commitWaiter struct {
	ctx  context.Context
	recs []Record
	done chan error
}

// commitBatch is the waiters of one batch and their records, in order.
type commitBatch struct {
	waiters []*commitWaiter
	recs    []Record
}

func newGroupCommit(cfg RecorderConfig, write func(*commitBatch) error) (*groupCommit, error) {
	if cfg.Store == nil || cfg.Queue == nil {
		return nil, errors.New("prediction: RecorderConfig.Store and Queue are required")
	}
	cooldown := cmp.Or(cfg.BreakerCooldown, DefaultBreakerCooldown)
	g := &groupCommit{
		inserter:        cfg.Store,
		queue:           cfg.Queue,
		logger:          cmp.Or(cfg.Logger, slog.New(slog.DiscardHandler)),
		tracer:          cfg.Tracer,
		queueBreaker:    breaker.New(cooldown),
		pgBreaker:       breaker.New(cooldown),
		enqueueTimeout:  cmp.Or(cfg.EnqueueTimeout, DefaultEnqueueTimeout),
		storeTimeout:    cmp.Or(cfg.StoreTimeout, DefaultStoreTimeout),
		fallbackTimeout: cmp.Or(cfg.FallbackTimeout, DefaultFallbackTimeout),
	}
	if g.tracer == nil {
		g.tracer = noop.NewTracerProvider().Tracer("prediction")
	}
	g.metrics = newRecorderMetrics(cfg.Registerer, g.queueBreaker.Open, g.pgBreaker.Open)
	maxBatch := cmp.Or(cfg.MaxBatch, DefaultMaxBatch)
	g.batches = batch.New(maxBatch, func(w *commitWaiter) int { return len(w.recs) }, func(ws []*commitWaiter) {
		b := &commitBatch{waiters: ws}
		for _, w := range ws {
			b.recs = append(b.recs, w.recs...)
		}
		err := write(b)
		for _, w := range ws {
			w.done <- err
		}
	})
	return g, nil
}

func (g *groupCommit) record(ctx context.Context, recs []Record) error {
	if len(recs) == 0 {
		return nil
	}
	w := &commitWaiter{ctx: ctx, recs: recs, done: make(chan error, 1)}
	g.batches.Add(w)
	return <-w.done
}

// start starts the span of batch b: a child of the first request's trace that links the
// traces of the others (otherTraces).
func (b *commitBatch) start(g *groupCommit, name string, kind trace.SpanKind, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	var links []trace.Link
	for _, sc := range b.otherTraces() {
		links = append(links, trace.Link{SpanContext: sc})
	}
	return g.tracer.Start(context.WithoutCancel(b.waiters[0].ctx), name,
		trace.WithSpanKind(kind), trace.WithLinks(links...), trace.WithAttributes(attrs...))
}

// otherTraces returns the distinct span contexts of the requests of b after the first, at
// most MaxTraceLinks: the traces that its span and its persist task link.
func (b *commitBatch) otherTraces() []trace.SpanContext {
	var out []trace.SpanContext
	type spanID struct {
		trace trace.TraceID
		span  trace.SpanID
	}
	seen := map[spanID]bool{}
	for _, w := range b.waiters[1:] {
		sc := trace.SpanContextFromContext(w.ctx)
		id := spanID{sc.TraceID(), sc.SpanID()}
		if sc.IsValid() && !seen[id] && len(out) < MaxTraceLinks {
			seen[id] = true
			out = append(out, sc)
		}
	}
	return out
}

// errQueueOpen, errPostgresOpen: the dependency was not tried because it failed moments ago.
var (
	errQueueOpen    = errors.New("queue unavailable moments ago (circuit open)")
	errPostgresOpen = errors.New("postgres unavailable moments ago (circuit open)")
)

// store writes recs to Postgres within the store timeout (PostgresFirst). A failure opens the
// Postgres breaker, except an error of the data (SQLSTATE class 22 or 23): the next batch may
// be fine, and the worker writes such a batch one record at a time.
func (g *groupCommit) store(ctx context.Context, recs []Record) error {
	if g.pgBreaker.Open() {
		return errPostgresOpen
	}
	sctx, cancel := context.WithTimeout(ctx, g.storeTimeout)
	_, err := g.inserter.Insert(sctx, recs)
	cancel()
	if err == nil {
		g.metrics.directBatch.Observe(float64(len(recs)))
		return nil
	}
	switch {
	case postgres.IsDataError(err):
		g.logger.WarnContext(ctx, "postgres refused a batch of predictions: enqueuing it for the worker", "error", err.Error())
	case g.pgBreaker.Trip():
		g.logger.WarnContext(ctx, "postgres unavailable: enqueuing predictions for the worker",
			"error", err.Error(), "retry_in", g.pgBreaker.Cooldown().String())
	}
	return err
}

// enqueue enqueues the persist task of b, then the alert tasks of its low-confidence records
// (alert). A failed enqueue opens the queue breaker, except an encoding error.
func (g *groupCommit) enqueue(ctx context.Context, b *commitBatch) error {
	if g.queueBreaker.Open() {
		return errQueueOpen
	}
	qctx, cancel := context.WithTimeout(ctx, g.enqueueTimeout)
	err := g.queue.EnqueuePersist(qctx, b.recs, b.otherTraces())
	cancel()
	if err != nil {
		if !errors.Is(err, ErrEncode) {
			g.tripQueue(ctx, err)
		}
		return err
	}
	// The records are queued: an alert that is not is logged and counted by alert.
	g.alert(ctx, b)
	return nil
}

func (g *groupCommit) tripQueue(ctx context.Context, err error) {
	if g.queueBreaker.Trip() {
		g.logger.WarnContext(ctx, "queue unavailable: writing predictions to Postgres directly",
			"error", err.Error(), "retry_in", g.queueBreaker.Cooldown().String())
	}
}

// alert enqueues the alert task of each low-confidence record of b with the trace context of
// its own request (the first request's through ctx, which holds the batch's span). Each alert
// that is not enqueued is logged and counted; after the first failed enqueue the rest are not
// tried (a hung Redis would hold the batch for a timeout per alert), and the queue breaker
// opens.
func (g *groupCommit) alert(ctx context.Context, b *commitBatch) {
	if g.queueBreaker.Open() {
		g.alertsNotQueued(b)
		return
	}
	var failed error
	for i, w := range b.waiters {
		wctx := context.WithoutCancel(w.ctx)
		if i == 0 {
			wctx = ctx
		}
		for _, rec := range w.recs {
			if !rec.LowConfidence() {
				continue
			}
			err := failed
			if err == nil {
				qctx, cancel := context.WithTimeout(wctx, g.enqueueTimeout)
				err = g.queue.EnqueueAlert(qctx, rec)
				cancel()
				if err != nil && !errors.Is(err, ErrEncode) {
					failed = err
				}
			}
			if err != nil {
				g.metrics.alertFallback.WithLabelValues(rec.ModelVersion).Inc()
				g.logger.WarnContext(wctx, "low-confidence prediction (alert not queued)", "request_id", rec.RequestID,
					"model_version", rec.ModelVersion, "confidence", rec.Confidence, "threshold", rec.ConfidenceThreshold, "error", err)
			}
		}
	}
	if failed != nil {
		g.tripQueue(ctx, failed)
	}
}

// alertsNotQueued logs and counts the low-confidence warning of each record of b that got no
// alert task (the worker's alert webhook is not called for it), in its own request's context.
func (g *groupCommit) alertsNotQueued(b *commitBatch) {
	for _, w := range b.waiters {
		for _, rec := range w.recs {
			if rec.LowConfidence() {
				g.metrics.alertFallback.WithLabelValues(rec.ModelVersion).Inc()
				g.logger.WarnContext(w.ctx, "low-confidence prediction (alert not queued: queue unavailable)",
					"request_id", rec.RequestID, "model_version", rec.ModelVersion,
					"confidence", rec.Confidence, "threshold", rec.ConfidenceThreshold)
			}
		}
	}
}

// unavailable counts b's records as taken by neither path and returns the error of their
// requests, wrapping ErrUnavailable.
func (g *groupCommit) unavailable(span trace.Span, b *commitBatch, cause error) error {
	g.metrics.unavailable.Add(float64(len(b.recs)))
	err := fmt.Errorf("%w: record %d predictions: %v", ErrUnavailable, len(b.recs), cause) //nolint:errorlint // the causes are reported, not wrapped
	span.RecordError(err)
	span.SetStatus(codes.Error, "unrecorded")
	return err
}

type recorderMetrics struct {
	fallbackToPostgres prometheus.Counter
	fallbackToQueue    prometheus.Counter
	unavailable        prometheus.Counter
	alertFallback      *prometheus.CounterVec
	directBatch        prometheus.Histogram
}

func newRecorderMetrics(reg prometheus.Registerer, queueOpen, pgOpen func() bool) *recorderMetrics {
	fallback := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ml_persist_fallback_total",
		Help: "Prediction records the api could not persist by its path (PERSIST_PATH) and persisted by the other: " +
			"to=postgres, written by the api because the queue failed; to=queue, enqueued for the worker because Postgres failed.",
	}, []string{"to"})
	m := &recorderMetrics{
		fallbackToPostgres: fallback.WithLabelValues("postgres"),
		fallbackToQueue:    fallback.WithLabelValues("queue"),
		directBatch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "ml_persist_direct_batch_records",
			Help:    "Records of each batch the api wrote to Postgres itself (PERSIST_PATH=postgres): _sum counts the records.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 10),
		}),
		unavailable: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ml_persist_unavailable_total",
			Help: "Prediction records that neither the queue nor Postgres took (their requests got a 503).",
		}),
		alertFallback: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ml_alert_fallback_total",
			Help: "Low-confidence predictions whose alert could not be enqueued; logged by the api only (no alert webhook).",
		}, []string{"model_version"}),
	}
	gauge := func(open func() bool) func() float64 {
		return func() float64 {
			if open() {
				return 1
			}
			return 0
		}
	}
	if reg != nil {
		reg.MustRegister(fallback, m.unavailable, m.alertFallback, m.directBatch, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "ml_persist_queue_circuit_open",
			Help: "1 while the api skips the queue after an enqueue failure (PERSIST_PATH=queue: it writes predictions to Postgres directly).",
		}, gauge(queueOpen)), prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "ml_persist_postgres_circuit_open",
			Help: "1 while the api skips Postgres after a failed write and enqueues predictions for the worker (PERSIST_PATH=postgres).",
		}, gauge(pgOpen)))
	}
	return m
}
