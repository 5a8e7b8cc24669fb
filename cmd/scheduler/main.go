// Command scheduler enqueues the periodic maintenance tasks (reconciliation, retention, model
// sync) on the low queue. Each task's id is derived from its type and time slot, so that two
// schedulers running at once enqueue each slot's task once.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hibiken/asynq"

	"github.com/predq/predq/internal/config"
	"github.com/predq/predq/internal/redisdb"
	"github.com/predq/predq/internal/telemetry"
)

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
	getenv, err := config.WithDotEnv(getenv, ".env")
	if err != nil {
		return err
	}
	cfg, err := config.Load(getenv)
	if err != nil {
		return fmt.Errorf("config:\n%w", err)
	}
	logger := telemetry.NewLogger(stdout, cfg.LogLevel, "scheduler")
	logger.InfoContext(ctx, "starting", append([]any{"version", version}, cfg.Redacted()...)...)
	rdb, err := redisdb.Open(cfg.RedisURL, 0)
	if err != nil {
		return err
	}
	defer rdb.Close()
	reg := telemetry.NewRegistry()
	ops, err := telemetry.StartOps(cfg.SchedulerMetricsPort, reg, func(ctx context.Context) error { return rdb.Ping(ctx).Err() }, logger)
	if err != nil {
		return err
	}
	sched := asynq.NewSchedulerFromRedisClient(rdb, &asynq.SchedulerOpts{Location: time.UTC})
	if err := sched.Start(); err != nil {
		return fmt.Errorf("scheduler: %w", err)
	}
	logger.InfoContext(ctx, "scheduler running")
	select {
	case <-ctx.Done():
	case err := <-ops.Err():
		logger.Error("ops server stopped", "error", err)
	}
	sched.Shutdown()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = ops.Shutdown(sctx)
	logger.Info("stopped")
	return nil
}
