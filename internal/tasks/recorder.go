package tasks

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/predq/predq/internal/prediction"
	"github.com/predq/predq/internal/redisdb"
)

// Inserter writes prediction records idempotently (ON CONFLICT (request_id) DO NOTHING) and
// returns how many rows it inserted. *prediction.Store implements it.
type Inserter interface {
	Insert(ctx context.Context, recs []prediction.Record) (int64, error)
}

// Defaults of RecorderConfig. EnqueueWorkers: asynq has no batch enqueue, so each record is
// one Lua script call, and Redis's single thread bounds a batch whatever the concurrency
// (BenchmarkRecordBatch): a few workers are enough.
const (
	DefaultEnqueueTimeout  = 500 * time.Millisecond
	DefaultStoreTimeout    = time.Second
	DefaultFallbackTimeout = 5 * time.Second
	DefaultBreakerCooldown = 2 * time.Second
	DefaultEnqueueWorkers  = 8
	DefaultGroupShards     = 32
)

// Persistence paths of the records of answered predictions (RecorderConfig.Path, PERSIST_PATH).
const (
	// PathPostgres: the api writes each group-committed batch to Postgres itself (one COPY, one
	// commit) before it answers, and enqueues a prediction:persist task for the worker only when
	// Postgres cannot take the batch. An answered prediction is then in Postgres, the source of
	// truth, when its client reads the answer: a Redis without persistence loses nothing, and
	// GET /predictions/{id} finds it at once.
	PathPostgres = "postgres"
	// PathQueue: the api enqueues each batch as a prediction:persist task and the worker writes
	// it (DESIGN section 2); the api writes to Postgres itself only when the queue fails.
	PathQueue = "queue"
)

// RecorderConfig configures a Recorder. Redis and Store are required.
type RecorderConfig struct {
	// Path is PathPostgres or PathQueue; empty means PathQueue.
	Path string
	// Redis is the queue Redis (REDIS_URL).
	Redis redisdb.Options
	// Store takes the records when they cannot be enqueued.
	Store Inserter
	// Registerer receives the Recorder's metrics (nil: not registered).
	Registerer prometheus.Registerer
	// Logger logs fallbacks and the low-confidence warnings of records that got no alert task.
	Logger *slog.Logger
	// Tracer starts the producer span of each Record call (nil: no spans of its own; the
	// caller's trace context still travels in the task headers).
	Tracer trace.Tracer
	// Propagator writes the trace context into task headers (nil: W3C trace context).
	Propagator propagation.TextMapPropagator
	// EnqueueTimeout bounds one enqueue (and the Redis client's dial, read and write).
	EnqueueTimeout time.Duration
	// StoreTimeout bounds the Postgres write of a batch on PathPostgres; past it the batch is
	// enqueued instead (a write that commits late is harmless: the worker's replay writes
	// nothing twice).
	StoreTimeout time.Duration
	// FallbackTimeout bounds the direct Postgres write of the fallback (PathQueue).
	FallbackTimeout time.Duration
	// BreakerCooldown: after an enqueue fails, Record writes to Postgres directly, without
	// trying Redis, for this long; the first call after it tries Redis again. On PathPostgres,
	// likewise after a failed write to Postgres: batches go to the queue without trying it.
	BreakerCooldown time.Duration
	// EnqueueWorkers bounds the concurrent enqueues of one Record call (a batch predict).
	EnqueueWorkers int
	// GroupShards is the number of asynq groups the records are spread over (by a hash of the
	// request id); each group yields at most GroupMaxSize records per aggregation run (1 s).
	GroupShards int
}

// Recorder implements prediction.Recorder. On PathPostgres it writes records to Postgres
// itself and uses the queue as the fallback (see recordBatch). On PathQueue it uses asynq:
// each record becomes one prediction:persist task in a group of the default queue (through
// GroupCommit, one task per batch), and each low-confidence record one
// alert:low_confidence task on the critical queue. When Redis cannot take a record, the
// Recorder writes it to Postgres itself (counted in ml_persist_fallback_total) and, since
// that record gets no alert task, logs the low-confidence warning itself (counted in
// ml_alert_fallback_total): the worker's alert webhook is not called for it. When Postgres
// cannot take it either, Record returns an error wrapping prediction.ErrUnavailable.
type Recorder struct {
	client     *asynq.Client
	rdb        redis.UniversalClient
	store      Inserter
	logger     *slog.Logger
	tracer     trace.Tracer
	propagator propagation.TextMapPropagator
	metrics    *recorderMetrics

	direct          bool // PathPostgres
	enqueueTimeout  time.Duration
	storeTimeout    time.Duration
	fallbackTimeout time.Duration
	cooldown        time.Duration
	workers         int
	shards          uint32

	openUntil   atomic.Int64 // breaker: unix nanoseconds until which Redis is not tried
	pgOpenUntil atomic.Int64 // PathPostgres breaker: until which Postgres is not tried first
	now         func() time.Time
}

var _ prediction.Recorder = (*Recorder)(nil)

// NewRecorder builds a Recorder and its Redis client; it does not contact Redis. Close it.
func NewRecorder(cfg RecorderConfig) (*Recorder, error) {
	if cfg.Store == nil {
		return nil, errors.New("tasks: RecorderConfig.Store is required")
	}
	if len(cfg.Redis.Addrs) == 0 {
		return nil, errors.New("tasks: RecorderConfig.Redis has no address")
	}
	switch cfg.Path {
	case "", PathQueue, PathPostgres:
	default:
		return nil, fmt.Errorf("tasks: RecorderConfig.Path must be %q or %q, got %q", PathPostgres, PathQueue, cfg.Path)
	}
	r := &Recorder{
		direct:          cfg.Path == PathPostgres,
		storeTimeout:    cmp.Or(cfg.StoreTimeout, DefaultStoreTimeout),
		store:           cfg.Store,
		logger:          cmp.Or(cfg.Logger, slog.New(slog.DiscardHandler)),
		tracer:          cfg.Tracer,
		propagator:      cfg.Propagator,
		enqueueTimeout:  cmp.Or(cfg.EnqueueTimeout, DefaultEnqueueTimeout),
		fallbackTimeout: cmp.Or(cfg.FallbackTimeout, DefaultFallbackTimeout),
		cooldown:        cmp.Or(cfg.BreakerCooldown, DefaultBreakerCooldown),
		workers:         max(1, cmp.Or(cfg.EnqueueWorkers, DefaultEnqueueWorkers)),
		shards:          uint32(max(1, cmp.Or(cfg.GroupShards, DefaultGroupShards))),
		now:             time.Now,
	}
	if r.tracer == nil {
		r.tracer = noop.NewTracerProvider().Tracer("tasks")
	}
	if r.propagator == nil {
		r.propagator = propagation.TraceContext{}
	}
	uo := cfg.Redis.Universal(r.enqueueTimeout)
	uo.ContextTimeoutEnabled = true
	r.rdb = redis.NewUniversalClient(uo)
	r.client = asynq.NewClientFromRedisClient(r.rdb)
	r.metrics = newRecorderMetrics(cfg.Registerer, r.breakerOpen, r.pgBreakerOpen)
	return r, nil
}

// Close closes the Redis client.
func (r *Recorder) Close() error { return r.rdb.Close() }

// Ping checks the queue Redis (for readiness).
func (r *Recorder) Ping(ctx context.Context) error { return r.rdb.Ping(ctx).Err() }

// group returns the group of a request id.
func (r *Recorder) group(requestID string) string {
	if r.shards == 1 {
		return PersistGroup + ":0"
	}
	h := fnv.New32a()
	h.Write([]byte(requestID))
	return PersistGroup + ":" + strconv.FormatUint(uint64(h.Sum32()%r.shards), 10)
}

func (r *Recorder) breakerOpen() bool { return r.isOpen(&r.openUntil) }

func (r *Recorder) pgBreakerOpen() bool { return r.isOpen(&r.pgOpenUntil) }

// isOpen reports whether the breaker whose deadline is until is open.
func (r *Recorder) isOpen(until *atomic.Int64) bool { return r.now().UnixNano() < until.Load() }

// open opens the breaker whose deadline is until for the cooldown, and reports whether it was
// closed (so that the transition is logged once).
func (r *Recorder) open(until *atomic.Int64) bool {
	return until.Swap(r.now().Add(r.cooldown).UnixNano()) < r.now().UnixNano()
}

// errBreakerOpen: Redis was not tried because it failed moments ago.
var errBreakerOpen = errors.New("queue unavailable moments ago (circuit open)")

// Record records recs. On PathPostgres it is recordBatch with recs as one batch. On
// PathQueue it enqueues the persist task (and the alert task) of every record; records that
// cannot be enqueued are written to Postgres directly. It returns nil when every record is either
// queued or stored, and an error wrapping prediction.ErrUnavailable otherwise. The caller's
// cancellation does not interrupt it (the answer was computed; it is recorded regardless),
// but every Redis and Postgres call has its own deadline.
func (r *Recorder) Record(ctx context.Context, recs []prediction.Record) error {
	if len(recs) == 0 {
		return nil
	}
	if r.direct {
		return r.recordBatch([]*commitWaiter{{ctx: ctx, recs: recs}}, len(recs))
	}
	ctx = context.WithoutCancel(ctx)
	ctx, span := r.tracer.Start(ctx, "enqueue "+TypePredictionPersist, trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(attribute.String("messaging.system", "asynq"), attribute.Int("messaging.batch.message_count", len(recs))))
	defer span.End()
	headers := map[string]string{}
	r.propagator.Inject(ctx, propagation.MapCarrier(headers))

	var (
		unqueued []prediction.Record // not enqueued: go to Postgres
		noAlert  []prediction.Record // low confidence without an alert task
		qerr     error
	)
	if r.breakerOpen() {
		unqueued, qerr = recs, errBreakerOpen
		for _, rec := range recs {
			if rec.LowConfidence() {
				noAlert = append(noAlert, rec)
			}
		}
	} else {
		unqueued, noAlert, qerr = r.enqueueAll(ctx, recs, headers)
		if qerr != nil && !errors.Is(qerr, errEncode) {
			r.trip(ctx, qerr)
		}
	}
	if len(unqueued) > 0 {
		if err := r.storeDirectly(ctx, span, unqueued, qerr); err != nil {
			return err
		}
	}
	for _, rec := range noAlert {
		r.alertNotQueued(ctx, rec)
	}
	return nil
}

// storeDirectly writes records that could not be enqueued (qerr says why) to Postgres; when
// that fails too it returns an error wrapping prediction.ErrUnavailable.
func (r *Recorder) storeDirectly(ctx context.Context, span trace.Span, recs []prediction.Record, qerr error) error {
	span.SetAttributes(attribute.Int("predq.fallback_records", len(recs)))
	fctx, cancel := context.WithTimeout(ctx, r.fallbackTimeout)
	_, perr := r.store.Insert(fctx, recs)
	cancel()
	if perr != nil {
		r.metrics.unavailable.Add(float64(len(recs)))
		err := fmt.Errorf("%w: record %d predictions: queue: %v; postgres: %v", prediction.ErrUnavailable, len(recs), qerr, perr)
		span.RecordError(err)
		span.SetStatus(codes.Error, "unrecorded")
		return err
	}
	r.metrics.fallbackToPostgres.Add(float64(len(recs)))
	return nil
}

// alertNotQueued logs and counts the low-confidence warning of a record that got no alert
// task (the worker's alert webhook is not called for it).
func (r *Recorder) alertNotQueued(ctx context.Context, rec prediction.Record) {
	r.metrics.alertFallback.WithLabelValues(rec.ModelVersion).Inc()
	r.logger.WarnContext(ctx, "low-confidence prediction (alert not queued: queue unavailable)",
		"request_id", rec.RequestID, "model_version", rec.ModelVersion,
		"confidence", rec.Confidence, "threshold", rec.ConfidenceThreshold)
}

// tripPostgres opens the PathPostgres breaker for the cooldown after a failed write; the
// transition is logged once. An error of the data (a Postgres error of class 22 or 23) leaves
// it closed, since the next batch may be fine, and is logged each time: the worker writes
// such a batch one record at a time and leaves out only the records Postgres refuses.
func (r *Recorder) tripPostgres(ctx context.Context, err error) {
	if isDataError(err) {
		r.logger.WarnContext(ctx, "postgres refused a batch of predictions: enqueuing it for the worker", "error", err.Error())
		return
	}
	if r.open(&r.pgOpenUntil) {
		r.logger.WarnContext(ctx, "postgres unavailable: enqueuing predictions for the worker",
			"error", err.Error(), "retry_in", r.cooldown.String())
	}
}

// trip opens the breaker for the cooldown; the transition is logged once.
func (r *Recorder) trip(ctx context.Context, err error) {
	if r.open(&r.openUntil) {
		r.logger.WarnContext(ctx, "queue unavailable: writing predictions to Postgres directly",
			"error", err.Error(), "retry_in", r.cooldown.String())
	}
}

// errEncode: a record could not be encoded as a task; it goes to Postgres but does not open
// the breaker.
var errEncode = errors.New("encode task")

// enqueueAll enqueues the tasks of recs with at most r.workers enqueues in flight. It returns
// the records that were not enqueued, the low-confidence records that got no alert task, and
// the first error. After the first Redis failure the remaining enqueues are abandoned.
func (r *Recorder) enqueueAll(ctx context.Context, recs []prediction.Record, headers map[string]string) ([]prediction.Record, []prediction.Record, error) {
	if len(recs) == 1 {
		queued, alerted, err := r.enqueueOne(ctx, recs[0], headers)
		var unqueued, noAlert []prediction.Record
		if !queued {
			unqueued = recs
		}
		if recs[0].LowConfidence() && !alerted {
			noAlert = recs
		}
		return unqueued, noAlert, err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	queued := make([]bool, len(recs))
	alerted := make([]bool, len(recs))
	var (
		mu               sync.Mutex
		redisErr, encErr error
		wg               sync.WaitGroup
		next             atomic.Int64
	)
	for range min(r.workers, len(recs)) {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(recs) {
					return
				}
				var err error
				queued[i], alerted[i], err = r.enqueueOne(ctx, recs[i], headers)
				if err == nil {
					continue
				}
				mu.Lock()
				switch {
				case errors.Is(err, errEncode):
					encErr = cmp.Or(encErr, err)
				case redisErr == nil:
					redisErr = err
					cancel(err) // abandon the rest: they go to Postgres
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	firstErr := cmp.Or(redisErr, encErr)
	var unqueued, noAlert []prediction.Record
	for i, rec := range recs {
		if !queued[i] {
			unqueued = append(unqueued, rec)
		}
		if rec.LowConfidence() && !alerted[i] {
			noAlert = append(noAlert, rec)
		}
	}
	return unqueued, noAlert, firstErr
}

// enqueueOne enqueues the persist task of rec and, when it is low-confidence and the persist
// task was queued, its alert task. A TaskID conflict means "already enqueued": success.
func (r *Recorder) enqueueOne(ctx context.Context, rec prediction.Record, headers map[string]string) (queued, alerted bool, err error) {
	if err := context.Cause(ctx); err != nil {
		return false, false, err
	}
	t, err := NewPredictionPersistTask(rec, r.group(rec.RequestID), headers)
	if err != nil {
		return false, false, fmt.Errorf("%w: %v", errEncode, err)
	}
	if err := r.enqueue(ctx, t); err != nil {
		return false, false, err
	}
	if !rec.LowConfidence() {
		return true, false, nil
	}
	at, err := NewAlertLowConfidenceTask(rec, headers)
	if err != nil {
		return true, false, fmt.Errorf("%w: %v", errEncode, err)
	}
	if err := r.enqueue(ctx, at); err != nil {
		return true, false, err
	}
	return true, true, nil
}

func (r *Recorder) enqueue(ctx context.Context, t *asynq.Task) error {
	ctx, cancel := context.WithTimeout(ctx, r.enqueueTimeout)
	defer cancel()
	_, err := r.client.EnqueueContext(ctx, t)
	if err == nil || errors.Is(err, asynq.ErrTaskIDConflict) {
		return nil
	}
	return fmt.Errorf("enqueue %s: %w", t.Type(), err)
}

type recorderMetrics struct {
	fallbackToPostgres prometheus.Counter
	fallbackToQueue    prometheus.Counter
	unavailable        prometheus.Counter
	alertFallback      *prometheus.CounterVec
	directBatch        prometheus.Histogram
}

func newRecorderMetrics(reg prometheus.Registerer, open, pgOpen func() bool) *recorderMetrics {
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
	if reg != nil {
		reg.MustRegister(fallback, m.unavailable, m.alertFallback, m.directBatch, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "ml_persist_queue_circuit_open",
			Help: "1 while the api skips the queue after an enqueue failure (PERSIST_PATH=queue: it writes predictions to Postgres directly).",
		}, func() float64 {
			return boolGauge(open())
		}), prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "ml_persist_postgres_circuit_open",
			Help: "1 while the api skips Postgres after a failed write and enqueues predictions for the worker (PERSIST_PATH=postgres).",
		}, func() float64 {
			return boolGauge(pgOpen())
		}))
	}
	return m
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
