// Command scheduler enqueues the periodic maintenance tasks on the low queue:
// maintenance:reconcile (RECONCILE_INTERVAL), maintenance:retention (RETENTION_INTERVAL),
// maintenance:model-sync (MODEL_SYNC_INTERVAL) and maintenance:partitions
// (PARTITION_INTERVAL). Each task's id is derived from its type and
// time slot, so that two schedulers running at once (for availability) enqueue each slot's
// task once. It also watches the queue Redis for lost data (tasks.LossWatcher) and then
// enqueues a reconcile at once. It serves /health and /metrics on SCHEDULER_METRICS_PORT.
//
//	scheduler            run
//	scheduler version    print the version
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/predq/predq/internal/config"
	"github.com/predq/predq/internal/startup"
	"github.com/predq/predq/internal/tasks"
	"github.com/predq/predq/internal/telemetry"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	if err := run(context.Background(), os.Args, os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "scheduler:", err)
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
		default:
			return fmt.Errorf("unknown command %q (want no argument or version)", args[1])
		}
	}
	cfg, err := config.FromEnv(getenv)
	if err != nil {
		return err
	}
	proc, err := startup.Open(ctx, startup.Options{
		Service: "scheduler", Version: version, Stdout: stdout, LogLevel: cfg.LogLevel,
		LogArgs: cfg.Redacted(),
		// No OTLPEndpoint and no PprofAddr: the scheduler records no spans of its own, and
		// PPROF_ADDR is the api's and the worker's.
		RedisURL: cfg.RedisURL, RedisTimeout: 2 * time.Second,
	})
	if err != nil {
		return err
	}
	defer proc.Close()
	logger, rdb := proc.Logger, proc.Redis
	ops, err := telemetry.StartOps(cfg.SchedulerMetricsPort, proc.Registry, func(ctx context.Context) error { return rdb.Ping(ctx).Err() }, logger)
	if err != nil {
		return err
	}
	sched := tasks.NewScheduler(tasks.RedisConnOpt(proc.RedisOpts, 2*time.Second), []tasks.Periodic{
		{Type: tasks.TypeMaintenanceReconcile, Every: cfg.ReconcileInterval, Timeout: 5 * time.Minute},
		{Type: tasks.TypeMaintenanceRetention, Every: cfg.RetentionInterval, Timeout: 30 * time.Minute},
		{Type: tasks.TypeMaintenanceModelSync, Every: cfg.ModelSyncInterval, Timeout: time.Minute},
		{Type: tasks.TypeMaintenancePartitions, Every: cfg.PartitionInterval, Timeout: 10 * time.Minute},
	}, proc.Registry, logger)
	defer sched.Close()
	// Redis that lost its data (restarted empty, flushed, failed over) is reconciled at once,
	// not at the next RECONCILE_INTERVAL slot plus RECONCILE_GRACE.
	watcher := tasks.NewLossWatcher(rdb, tasks.RedisConnOpt(proc.RedisOpts, 2*time.Second), tasks.DefaultLossCheckInterval, proc.Registry, logger).WithBatchShards(cfg.BatchShards)
	defer watcher.Close()

	// Ordered shutdown: scheduling stops (the loops return), then the ops server; the deferred
	// closes follow: the queue client, Redis, tracing.
	runCtx, stopRun := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRun()
	g, gctx := errgroup.WithContext(ctx)
	scheduled := make(chan struct{})
	g.Go(func() error {
		defer close(scheduled)
		sched.Run(runCtx)
		return nil
	})
	watched := make(chan struct{})
	g.Go(func() error {
		defer close(watched)
		watcher.Run(runCtx)
		return nil
	})
	g.Go(func() error {
		if err := <-ops.Err(); err != nil {
			return fmt.Errorf("ops server: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		stopRun()
		<-scheduled
		<-watched
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = ops.Shutdown(sctx)
		return nil
	})
	logger.InfoContext(ctx, "scheduling")
	err = g.Wait()
	logger.Info("stopped")
	return err
}
