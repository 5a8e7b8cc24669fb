// Command scheduler enqueues the periodic maintenance tasks on the low queue:
// maintenance:reconcile (RECONCILE_INTERVAL), maintenance:retention (RETENTION_INTERVAL) and
// maintenance:model-sync (MODEL_SYNC_INTERVAL). Each task's id is derived from its type and
// time slot, so that two schedulers running at once (for availability) enqueue each slot's
// task once. It serves /health and /metrics on SCHEDULER_METRICS_PORT.
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

	"github.com/predq/predq/internal/config"
	"github.com/predq/predq/internal/redisdb"
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
	getenv, err := config.WithDotEnv(getenv, ".env")
	if err != nil {
		return err
	}
	cfg, err := config.Load(getenv)
	if err != nil {
		return fmt.Errorf("config:\n%w", err)
	}
	logger := telemetry.NewLogger(stdout, cfg.LogLevel, "scheduler")
	logger.InfoContext(ctx, "starting", append([]any{"version", version, "reconcile_interval", cfg.ReconcileInterval.String(),
		"retention_interval", cfg.RetentionInterval.String(), "model_sync_interval", cfg.ModelSyncInterval.String()},
		cfg.Redacted()...)...)
	redisOpts, err := redisdb.ParseURL(cfg.RedisURL)
	if err != nil {
		return fmt.Errorf("REDIS_URL: %w", err)
	}
	rdb, err := redisdb.Open(cfg.RedisURL, 2*time.Second)
	if err != nil {
		return err
	}
	defer rdb.Close()
	reg := telemetry.NewRegistry()
	ops, err := telemetry.StartOps(cfg.SchedulerMetricsPort, reg, func(ctx context.Context) error { return rdb.Ping(ctx).Err() }, logger)
	if err != nil {
		return err
	}
	sched := tasks.NewScheduler(tasks.RedisConnOpt(redisOpts, 2*time.Second), []tasks.Periodic{
		{Type: tasks.TypeMaintenanceReconcile, Every: cfg.ReconcileInterval, Timeout: 5 * time.Minute},
		{Type: tasks.TypeMaintenanceRetention, Every: cfg.RetentionInterval, Timeout: 30 * time.Minute},
		{Type: tasks.TypeMaintenanceModelSync, Every: cfg.ModelSyncInterval, Timeout: time.Minute},
	}, reg, logger)
	defer sched.Close()
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { sched.Run(runCtx); close(done) }()
	logger.InfoContext(ctx, "scheduling")

	var runErr error
	select {
	case <-ctx.Done():
	case err := <-ops.Err():
		runErr = fmt.Errorf("ops server: %w", err)
	}
	cancel()
	<-done
	sctx, cancelShutdown := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancelShutdown()
	_ = ops.Shutdown(sctx)
	logger.Info("stopped")
	return runErr
}
