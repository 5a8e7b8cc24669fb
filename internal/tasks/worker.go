package tasks

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"time"

	"github.com/hibiken/asynq"
	"github.com/hibiken/asynq/x/metrics"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/predq/predq/internal/prediction"
	"github.com/predq/predq/internal/redisdb"
)

// Defaults of WorkerConfig.
const (
	DefaultConcurrency       = 16
	DefaultShutdownTimeout   = 20 * time.Second
	DefaultTaskCheckInterval = 100 * time.Millisecond
	// DefaultDelayedTaskCheckInterval: how often retries and scheduled tasks are moved to
	// their queues (asynq's default is 5 s).
	DefaultDelayedTaskCheckInterval = time.Second
)

// WorkerConfig configures a Worker. Redis and Store are required.
type WorkerConfig struct {
	// Redis is the queue Redis (REDIS_URL).
	Redis redisdb.Options
	// Store writes prediction records.
	Store prediction.Inserter
	// Queues are the queue weights (nil: DefaultQueues).
	Queues map[string]int
	// Concurrency is the number of tasks run at once (WORKER_CONCURRENCY; default 16).
	Concurrency int
	// ShutdownTimeout is how long Shutdown waits for active tasks before it pushes them back
	// to their queues (default 20 s).
	ShutdownTimeout time.Duration
	// TaskCheckInterval is how long an idle worker waits before looking at empty queues again
	// (asynq's default is 1 s; default here 100 ms, so a task waits 50-150 ms when idle).
	TaskCheckInterval time.Duration
	// DelayedTaskCheckInterval is how often due retries and scheduled tasks are moved to
	// their queues (default 1 s).
	DelayedTaskCheckInterval time.Duration
	// RetryDelay computes the delay before a failed task's next attempt (nil: asynq's
	// exponential backoff, 15 s and up). Tests shorten it.
	RetryDelay func(n int, err error, t *asynq.Task) time.Duration
	// Alert configures alert:low_confidence (its Metrics and Logger are filled in).
	Alert AlertConfig
	// LogLevel is asynq's own log level (debug, info, warn, error; default info).
	LogLevel string
	// Registerer receives the worker metrics and asynq's queue metrics (nil: none).
	Registerer prometheus.Registerer
	// Logger receives the worker's and asynq's logs (nil: discarded).
	Logger *slog.Logger
	// Tracer starts the consumer span of each task (nil: no spans).
	Tracer trace.Tracer
	// Propagator reads the trace context of task headers (nil: W3C trace context).
	Propagator propagation.TextMapPropagator
}

// Worker is an asynq.Server with predq's handlers, middleware and metrics. Use
// Start, then Stop (no new tasks) and Shutdown (wait for active tasks up to ShutdownTimeout,
// push the unfinished ones back to their queues), then Close.
type Worker struct {
	srv       *asynq.Server
	mux       *asynq.ServeMux
	inspector *asynq.Inspector
	metrics   *WorkerMetrics
	logger    *slog.Logger
}

// NewWorker builds a Worker. It registers the worker metrics and asynq's queue metrics
// (asynq_queue_size, asynq_queue_latency_seconds, …) on cfg.Registerer.
func NewWorker(cfg WorkerConfig) (*Worker, error) {
	if cfg.Store == nil {
		return nil, errors.New("tasks: WorkerConfig.Store is required")
	}
	if len(cfg.Redis.Addrs) == 0 {
		return nil, errors.New("tasks: WorkerConfig.Redis has no address")
	}
	if cfg.Alert.WebhookURL != "" && cfg.Alert.Sender == nil {
		return nil, errors.New("tasks: WorkerConfig.Alert.Sender is required with a WebhookURL (alerts are signed)")
	}
	logger := cmp.Or(cfg.Logger, slog.New(slog.DiscardHandler))
	tracer := cfg.Tracer
	if tracer == nil {
		tracer = noop.NewTracerProvider().Tracer("tasks")
	}
	prop := cfg.Propagator
	if prop == nil {
		prop = propagation.TraceContext{}
	}
	queues := cfg.Queues
	if queues == nil {
		queues = DefaultQueues()
	}
	m := NewWorkerMetrics(cfg.Registerer)
	conn := RedisConnOpt(cfg.Redis, 0)
	w := &Worker{mux: asynq.NewServeMux(), inspector: asynq.NewInspector(conn), metrics: m, logger: logger}
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(metrics.NewQueueMetricsCollector(w.inspector)); err != nil {
			w.inspector.Close()
			return nil, err
		}
	}
	var retry asynq.RetryDelayFunc
	if cfg.RetryDelay != nil {
		retry = asynq.RetryDelayFunc(cfg.RetryDelay)
	}
	w.srv = asynq.NewServer(conn, asynq.Config{
		Concurrency:              cmp.Or(cfg.Concurrency, DefaultConcurrency),
		Queues:                   maps.Clone(queues),
		ShutdownTimeout:          cmp.Or(cfg.ShutdownTimeout, DefaultShutdownTimeout),
		TaskCheckInterval:        cmp.Or(cfg.TaskCheckInterval, DefaultTaskCheckInterval),
		DelayedTaskCheckInterval: cmp.Or(cfg.DelayedTaskCheckInterval, DefaultDelayedTaskCheckInterval),
		RetryDelayFunc:           retry,
		ErrorHandler:             asynq.ErrorHandlerFunc(w.handleError),
		Logger:                   NewLogger(logger),
		LogLevel:                 AsynqLogLevel(cmp.Or(cfg.LogLevel, "info")),
	})
	alert := cfg.Alert
	alert.Metrics, alert.Logger = m, logger
	w.mux.Use(Middleware(tracer, prop, m))
	w.mux.Handle(TypePredictionPersist, HandlePredictionPersist(cfg.Store, m, logger))
	w.mux.Handle(TypeAlertLowConfidence, HandleAlertLowConfidence(alert))
	return w, nil
}

// Handle registers the handler of another task type (before Start).
func (w *Worker) Handle(taskType string, h asynq.Handler) { w.mux.Handle(taskType, h) }

// Start starts processing; it returns at once.
func (w *Worker) Start() error { return w.srv.Start(w.mux) }

// Stop stops taking new tasks; active tasks go on.
func (w *Worker) Stop() { w.srv.Stop() }

// Shutdown waits for active tasks up to ShutdownTimeout, pushes the unfinished ones back to
// their queues, and stops every background goroutine of the server.
func (w *Worker) Shutdown() { w.srv.Shutdown() }

// Close releases the inspector's Redis connection (after Shutdown).
func (w *Worker) Close() error { return w.inspector.Close() }

// Ping checks the queue Redis (for readiness); it returns when ctx ends even if Redis does
// not answer.
func (w *Worker) Ping(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- w.srv.Ping() }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		return fmt.Errorf("redis ping: %w", ctx.Err())
	}
}

// handleError logs a failed attempt: a warning while asynq will retry, an error when the task
// is archived (retries exhausted or SkipRetry).
func (w *Worker) handleError(ctx context.Context, t *asynq.Task, err error) {
	id, _ := asynq.GetTaskID(ctx)
	queue, _ := asynq.GetQueueName(ctx)
	retried, _ := asynq.GetRetryCount(ctx)
	maxRetry, _ := asynq.GetMaxRetry(ctx)
	final := retried >= maxRetry || errors.Is(err, asynq.SkipRetry)
	level := slog.LevelWarn
	msg := "task failed; will retry"
	if final {
		level, msg = slog.LevelError, "task failed; archived"
	}
	w.logger.Log(ctx, level, msg, "task_type", t.Type(), "task_id", id, "queue", queue,
		"retried", retried, "max_retry", maxRetry, "error", err.Error())
}

// WorkerMetrics are the worker's metrics.
type WorkerMetrics struct {
	tasks         *prometheus.CounterVec
	duration      *prometheus.HistogramVec
	persisted     *prometheus.CounterVec
	batch         prometheus.Histogram
	lowConfidence *prometheus.CounterVec
	webhook       *prometheus.CounterVec
}

// NewWorkerMetrics builds the worker metrics and registers them on reg (nil: not registered).
func NewWorkerMetrics(reg prometheus.Registerer) *WorkerMetrics {
	m := &WorkerMetrics{
		tasks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "worker_tasks_processed_total",
			Help: "Task attempts by type and outcome (success, error: retried, skipped: archived at once).",
		}, []string{"task_type", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "worker_task_duration_seconds",
			Help:    "Duration of task attempts by type.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"task_type"}),
		persisted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ml_persist_records_total",
			Help: "Prediction records handled by prediction:persist: inserted, duplicate (already stored), invalid (left out).",
		}, []string{"outcome"}),
		batch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "ml_persist_batch_records",
			Help:    "Records written per prediction:persist task.",
			Buckets: []float64{1, 5, 10, 25, 50, 100, 200, 300, 400, 500, 1000},
		}),
		lowConfidence: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ml_low_confidence_total",
			Help: "Low-confidence predictions alerted by the worker (see also ml_alert_fallback_total of the api).",
		}, []string{"model_version"}),
		webhook: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ml_alert_webhook_total",
			Help: "Alert webhook attempts by outcome (delivered, error).",
		}, []string{"outcome"}),
	}
	// The series of known label values exist from the start, at 0, so that a dashboard or an
	// alert rule reads 0 rather than no data before the first task.
	for _, o := range []string{"inserted", "duplicate", "invalid"} {
		m.persisted.WithLabelValues(o)
	}
	for _, o := range []string{"delivered", "error"} {
		m.webhook.WithLabelValues(o)
	}
	if reg != nil {
		reg.MustRegister(m.tasks, m.duration, m.persisted, m.batch, m.lowConfidence, m.webhook)
	}
	return m
}
