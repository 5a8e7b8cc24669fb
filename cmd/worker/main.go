// Command worker drains the asynq queues critical, default, batch and low: it writes the
// aggregated prediction records to Postgres and raises low-confidence alerts. It serves
// /health, /health/live, /health/ready and /metrics on WORKER_METRICS_PORT (0: a free port,
// logged). On SIGINT or SIGTERM it stops taking tasks, waits up to WORKER_SHUTDOWN_TIMEOUT for
// the active ones, pushes the unfinished ones back to their queues, and exits.
//
//	worker            run
//	worker version    print the version
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.opentelemetry.io/otel"

	"github.com/predq/predq/internal/config"
	"github.com/predq/predq/internal/job"
	"github.com/predq/predq/internal/maintenance"
	"github.com/predq/predq/internal/modelreg"
	"github.com/predq/predq/internal/postgres"
	"github.com/predq/predq/internal/predstore"
	"github.com/predq/predq/internal/redisdb"
	"github.com/predq/predq/internal/tasks"
	"github.com/predq/predq/internal/telemetry"
	"github.com/predq/predq/internal/webhook"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	if err := run(context.Background(), os.Args, os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(1)
	}
}

// workerConfig holds the worker's own variables (listed in config.Vars).
type workerConfig struct {
	Queues          map[string]int // WORKER_QUEUES
	ShutdownTimeout time.Duration  // WORKER_SHUTDOWN_TIMEOUT
	GroupMaxSize    int            // PERSIST_GROUP_MAX_SIZE
	GroupMaxDelay   time.Duration  // PERSIST_GROUP_MAX_DELAY
	ChunkWriters    int            // JOB_CHUNK_WRITERS
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(args) > 1 {
		switch args[1] {
		case "version":
			fmt.Fprintln(stdout, version)
			return nil
		case "-h", "--help", "help":
			fmt.Fprintln(stdout, "usage: worker [version]")
			return nil
		default:
			return fmt.Errorf("unknown command %q (want no argument or version)", args[1])
		}
	}
	getenv, err := config.WithDotEnv(getenv, ".env")
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	cfg, err := config.Load(getenv)
	wcfg, werr := loadWorkerConfig(getenv)
	if err := errors.Join(err, werr); err != nil {
		return fmt.Errorf("config:\n%w", err)
	}
	redisOpts, err := redisdb.ParseURL(cfg.RedisURL)
	if err != nil {
		return fmt.Errorf("REDIS_URL: %w", err)
	}

	gogc, memLimit := config.TuneGC(getenv)
	logger := telemetry.NewLogger(stdout, cfg.LogLevel, "worker")
	logger.InfoContext(ctx, "starting", append([]any{"version", version, "gogc", gogc, "gomemlimit", memLimit, "queues", wcfg.Queues,
		"shutdown_timeout", wcfg.ShutdownTimeout.String(), "persist_group_max_size", wcfg.GroupMaxSize,
		"persist_group_max_delay", wcfg.GroupMaxDelay.String(), "job_chunk_writers", wcfg.ChunkWriters, "alert_webhook", cfg.AlertWebhookURL != ""},
		cfg.Redacted()...)...)

	tp, shutdownTracing, err := telemetry.TracerProvider(ctx, "predq-worker", version, cfg.OTLPEndpoint)
	if err != nil {
		return err
	}
	defer shutdownTracing(context.WithoutCancel(ctx)) //nolint:errcheck
	telemetry.SetGlobal(tp)
	reg := telemetry.NewRegistry()
	stopPprof, err := telemetry.StartPprof(cfg.PprofAddr, logger)
	if err != nil {
		return err
	}
	defer stopPprof()

	pool, err := postgres.Open(ctx, cfg.DatabaseURL, cfg.DBPoolSize)
	if err != nil {
		return err
	}
	defer pool.Close()

	// Batch jobs: the worker needs every model version, kept current like the api's.
	registry := modelreg.New(cfg.ModelPath, pool, logger)
	if err := registry.Load(ctx); err != nil {
		logger.WarnContext(ctx, "model registry not synced with Postgres; using the local artifacts", "error", err)
	}
	rdb, err := redisdb.Open(cfg.RedisURL, 0)
	if err != nil {
		return err
	}
	defer rdb.Close()
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go registry.Watch(watchCtx, rdb, 30*time.Second)

	deliveries := webhook.NewStore(pool, nil)
	jobClient := tasks.NewJobClient(tasks.RedisConnOpt(redisOpts, 0), deliveries, logger)
	defer jobClient.Close()
	jobs, err := job.NewService(job.Config{
		Pool: pool, Models: registry, Enqueuer: jobClient, Notifier: deliveries,
		ChunkSize: cfg.JobChunkSize, ChunkWriters: wcfg.ChunkWriters, Timeout: cfg.JobTimeout, Registerer: reg, Logger: logger,
	})
	if err != nil {
		return err
	}
	var deliverer *webhook.Deliverer
	if cfg.WebhookSecret != "" {
		sender, err := webhook.NewSender(webhook.SenderConfig{
			Secret: cfg.WebhookSecret, AllowPrivate: cfg.WebhookAllowPrivate, Logger: logger, Registerer: reg,
		})
		if err != nil {
			return fmt.Errorf("WEBHOOK_SECRET: %w", err)
		}
		deliverer = webhook.NewDeliverer(deliveries, sender, logger)
	} else {
		logger.WarnContext(ctx, "WEBHOOK_SECRET is not set: job webhooks stay pending until a worker has it")
	}

	w, err := tasks.NewWorker(tasks.WorkerConfig{
		Redis:           redisOpts,
		Store:           predstore.New(pool),
		Queues:          wcfg.Queues,
		Concurrency:     cfg.WorkerConcurrency,
		ShutdownTimeout: wcfg.ShutdownTimeout,
		GroupMaxSize:    wcfg.GroupMaxSize,
		GroupMaxDelay:   wcfg.GroupMaxDelay,
		Alert:           tasks.AlertConfig{WebhookURL: cfg.AlertWebhookURL},
		LogLevel:        cfg.LogLevel,
		Registerer:      reg,
		Logger:          logger,
		Tracer:          tp.Tracer("predq/tasks"),
		Propagator:      otel.GetTextMapPropagator(),
		RetryDelay:      tasks.RetryDelay,
	})
	if err != nil {
		return err
	}
	defer w.Close()
	w.Handle(tasks.TypeJobRun, tasks.HandleJobRun(jobs))
	w.Handle(tasks.TypeJobChunk, tasks.HandleJobChunk(jobs, logger))
	if deliverer != nil {
		w.Handle(tasks.TypeWebhookDeliver, tasks.HandleWebhookDeliver(deliverer))
	}
	w.Handle(tasks.TypeMaintenanceReconcile, tasks.HandleReconcile(tasks.ReconcileConfig{
		Pool: pool, Jobs: jobClient, Runner: jobs, Grace: cfg.ReconcileGrace, Logger: logger,
	}))
	w.Handle(tasks.TypeMaintenanceRetention, tasks.HandleRetention(pool, maintenance.Retention{
		Predictions: cfg.PredictionRetention, Jobs: cfg.JobRetention,
	}, logger))
	w.Handle(tasks.TypeMaintenanceModelSync, tasks.HandleModelSync(registry.Refresh, func(ctx context.Context) error {
		return modelreg.Announce(ctx, rdb, "model-sync")
	}))

	ready := func(ctx context.Context) error {
		return errors.Join(postgres.Ping(ctx, pool), w.Ping(ctx))
	}
	ops, err := telemetry.StartOps(cfg.WorkerMetricsPort, reg, ready, logger)
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := ops.Shutdown(sctx); err != nil {
			logger.Error("ops server shutdown", "error", err)
		}
	}()

	if err := w.Start(); err != nil {
		return fmt.Errorf("start worker: %w", err)
	}
	logger.InfoContext(ctx, "processing", "concurrency", cfg.WorkerConcurrency)

	var runErr error
	select {
	case <-ctx.Done():
		logger.Info("signal received: shutting down")
	case err := <-ops.Err():
		runErr = fmt.Errorf("ops server: %w", err)
		logger.Error("ops server stopped: shutting down", "error", err)
	}
	// Ordered shutdown: no new tasks, then drain the active ones (the unfinished are pushed
	// back to their queues after the timeout), then the deferred closes: HTTP, Redis, Postgres.
	start := time.Now()
	w.Stop()
	w.Shutdown()
	logger.Info("stopped", "drain_ms", time.Since(start).Milliseconds())
	return runErr
}

// loadWorkerConfig reads the worker's variables, with the defaults of config.Vars; all
// problems are returned together.
func loadWorkerConfig(getenv func(string) string) (workerConfig, error) {
	get := func(name string) string {
		if v := strings.TrimSpace(getenv(name)); v != "" {
			return v
		}
		for _, v := range config.Vars {
			if v.Name == name {
				return v.Default
			}
		}
		panic("worker: unknown variable " + name) // every variable is in config.Vars
	}
	var (
		c    workerConfig
		errs []error
		err  error
	)
	if c.Queues, err = tasks.ParseQueues(get("WORKER_QUEUES")); err != nil {
		errs = append(errs, fmt.Errorf("WORKER_QUEUES: %w", err))
	}
	duration := func(name string, lo, hi time.Duration) time.Duration {
		d, err := time.ParseDuration(get(name))
		if err != nil || d < lo || d > hi {
			errs = append(errs, fmt.Errorf("%s: must be a duration between %s and %s, got %q", name, lo, hi, get(name)))
		}
		return d
	}
	c.ShutdownTimeout = duration("WORKER_SHUTDOWN_TIMEOUT", time.Second, 10*time.Minute)
	c.GroupMaxDelay = duration("PERSIST_GROUP_MAX_DELAY", time.Second, time.Minute)
	n, err := strconv.Atoi(get("PERSIST_GROUP_MAX_SIZE"))
	if err != nil || n < 1 || n > 5000 {
		errs = append(errs, fmt.Errorf("PERSIST_GROUP_MAX_SIZE: must be a whole number between 1 and 5000, got %q", get("PERSIST_GROUP_MAX_SIZE")))
	}
	c.GroupMaxSize = n
	w, err := strconv.Atoi(get("JOB_CHUNK_WRITERS"))
	if err != nil || w < 1 || w > 64 {
		errs = append(errs, fmt.Errorf("JOB_CHUNK_WRITERS: must be a whole number between 1 and 64, got %q", get("JOB_CHUNK_WRITERS")))
	}
	c.ChunkWriters = w
	return c, errors.Join(errs...)
}
