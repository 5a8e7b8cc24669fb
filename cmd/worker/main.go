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
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel"
	"golang.org/x/sync/errgroup"

	"github.com/predq/predq/internal/config"
	"github.com/predq/predq/internal/idempotency"
	"github.com/predq/predq/internal/job"
	"github.com/predq/predq/internal/maintenance"
	"github.com/predq/predq/internal/modelreg"
	"github.com/predq/predq/internal/postgres"
	"github.com/predq/predq/internal/prediction"
	"github.com/predq/predq/internal/startup"
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
	cfg, err := config.FromEnv(getenv)
	queues, qerr := tasks.ParseQueues(cfg.WorkerQueues)
	if qerr != nil {
		qerr = fmt.Errorf("WORKER_QUEUES: %w", qerr)
		if err == nil {
			qerr = fmt.Errorf("config:\n%w", qerr)
		}
	}
	if err := errors.Join(err, qerr); err != nil {
		return err
	}

	gogc, memLimit := config.TuneGC(getenv)
	proc, err := startup.Open(ctx, startup.Options{
		Service: "worker", Version: version, Stdout: stdout, LogLevel: cfg.LogLevel,
		LogArgs:      append([]any{"gogc", gogc, "gomemlimit", memLimit}, cfg.Redacted()...),
		OTLPEndpoint: cfg.OTLPEndpoint, PprofAddr: cfg.PprofAddr,
		DatabaseURL: cfg.DatabaseURL, DBPoolSize: cfg.DBPoolSize,
		RedisURL: cfg.RedisURL,
	})
	if err != nil {
		return err
	}
	defer proc.Close()
	logger, tp, reg, pool, rdb, redisOpts := proc.Logger, proc.Tracer, proc.Registry, proc.Pool, proc.Redis, proc.RedisOpts

	// Batch jobs: the worker needs every model version, kept current like the api's.
	registry := modelreg.New(cfg.ModelPath, pool, logger)
	if err := registry.Load(ctx); err != nil {
		logger.WarnContext(ctx, "model registry not synced with Postgres; using the local artifacts", "error", err)
	}
	deliveries := webhook.NewStore(pool, nil)
	jobClient := tasks.NewJobClient(tasks.RedisConnOpt(redisOpts, 0), logger).WithBatchShards(cfg.BatchShards)
	defer jobClient.Close()
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
	jobCfg := job.Config{
		Pool: pool, Models: registry, Enqueuer: jobClient, Notifier: deliveries,
		ChunkSize: cfg.JobChunkSize, ChunkWriters: cfg.JobChunkWriters, Timeout: cfg.JobTimeout, Registerer: reg, Logger: logger,
	}
	if deliverer != nil {
		// The worker that finishes a job makes its webhook's first attempt at once.
		jobCfg.DeliverNow = func(ctx context.Context, id uuid.UUID) (bool, error) {
			err := deliverer.Deliver(ctx, id, 1, false)
			return err == nil, err
		}
	}
	jobs, err := job.NewService(jobCfg)
	if err != nil {
		return err
	}

	// Alerts go out as job webhooks do: signed with WEBHOOK_SECRET, under the same SSRF guard
	// (WEBHOOK_ALLOW_PRIVATE for a receiver on a private address). A sender of its own keeps
	// them out of webhook_deliveries_total; ml_alert_webhook_total counts them.
	alert := tasks.AlertConfig{WebhookURL: cfg.AlertWebhookURL}
	if cfg.AlertWebhookURL != "" {
		if cfg.WebhookSecret == "" {
			return errors.New("ALERT_WEBHOOK_URL: alerts are signed with WEBHOOK_SECRET, which is not set")
		}
		if alert.Sender, err = webhook.NewSender(webhook.SenderConfig{
			Secret: cfg.WebhookSecret, AllowPrivate: cfg.WebhookAllowPrivate, Timeout: 5 * time.Second, Logger: logger,
		}); err != nil {
			return fmt.Errorf("WEBHOOK_SECRET: %w", err)
		}
	}
	w, err := tasks.NewWorker(tasks.WorkerConfig{
		Redis:           redisOpts,
		Store:           prediction.NewStore(pool),
		Queues:          tasks.ShardQueues(queues, cfg.BatchShards),
		Concurrency:     cfg.WorkerConcurrency,
		ShutdownTimeout: cfg.WorkerShutdownTimeout,
		Alert:           alert,
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
	w.Handle(tasks.TypeJobChunk, tasks.HandleJobChunk(jobs))
	if deliverer != nil {
		w.Handle(tasks.TypeWebhookDeliver, tasks.HandleWebhookDeliver(deliverer))
	}
	jobStore := job.NewStore(pool)
	// What each key is owed in the fair share, read from Postgres at each scrape (only the
	// worker exports it, since every process would report the same).
	reg.MustRegister(job.NewShareCollector(jobStore))
	w.Handle(tasks.TypeMaintenanceReconcile, tasks.HandleReconcile(tasks.ReconcileConfig{
		Jobs: jobStore, Deliveries: deliveries, Enqueuer: jobClient, Runner: jobs, Grace: cfg.ReconcileGrace, Logger: logger,
	}))
	w.Handle(tasks.TypeMaintenanceRetention, tasks.HandleRetention(maintenance.Stores{
		Predictions: prediction.NewStore(pool), Jobs: jobStore, Idempotency: idempotency.NewStore(pool, 0), Deliveries: deliveries,
	}, maintenance.Retention{Predictions: cfg.PredictionRetention, Jobs: cfg.JobRetention}, logger))
	w.Handle(tasks.TypeMaintenancePartitions, tasks.HandlePartitions(func(ctx context.Context) (int, error) {
		return maintenance.EnsurePartitions(ctx, pool, time.Now(), cfg.PartitionDaysAhead)
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
	if err := w.Start(); err != nil {
		shutdownOps(ctx, ops, logger)
		return fmt.Errorf("start worker: %w", err)
	}
	logger.InfoContext(ctx, "processing", "concurrency", cfg.WorkerConcurrency)

	// The watcher keeps models current while the active tasks drain; it stops after them.
	watchCtx, stopWatch := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWatch()
	g, gctx := errgroup.WithContext(ctx)
	// Two lanes run a small job's chunk as soon as the api wakes them (tasks.WakeKey), rather
	// than at the worker's next look at its queues.
	lanesCtx, stopLanes := context.WithCancel(context.WithoutCancel(ctx))
	defer stopLanes()
	lanesDone := make(chan struct{})
	go func() {
		defer close(lanesDone)
		tasks.Lanes(lanesCtx, rdb, 2, jobs.RunNextNow, logger)
	}()
	g.Go(func() error {
		registry.Watch(watchCtx, rdb, 30*time.Second)
		return nil
	})
	g.Go(func() error {
		if err := <-ops.Err(); err != nil {
			logger.Error("ops server stopped: shutting down", "error", err)
			return fmt.Errorf("ops server: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		if ctx.Err() != nil {
			logger.Info("signal received: shutting down")
		}
		// Ordered shutdown: no new tasks, then drain the active ones (the unfinished are
		// pushed back to their queues after WORKER_SHUTDOWN_TIMEOUT), then the watcher and the
		// ops server; the deferred closes follow: the queue clients, Redis, Postgres, tracing.
		start := time.Now()
		w.Stop()
		stopLanes()
		w.Shutdown()
		<-lanesDone
		stopWatch()
		shutdownOps(ctx, ops, logger)
		logger.Info("stopped", "drain_ms", time.Since(start).Milliseconds())
		return nil
	})
	return g.Wait()
}

// shutdownOps stops the ops server, waiting 5 s at most for the requests it is serving.
func shutdownOps(ctx context.Context, ops *telemetry.OpsServer, logger *slog.Logger) {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := ops.Shutdown(sctx); err != nil {
		logger.Error("ops server shutdown", "error", err)
	}
}
