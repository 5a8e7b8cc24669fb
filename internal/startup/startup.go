// Package startup opens what the api, worker and scheduler processes share: the JSON logger,
// the tracer provider, the Prometheus registry, the pprof listener, the Postgres pool and the
// queue Redis. Each binary's run calls Open with plain values from its configuration and
// defers Close.
package startup

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"

	"github.com/predq/predq/internal/postgres"
	"github.com/predq/predq/internal/redisdb"
	"github.com/predq/predq/internal/telemetry"
)

// Options are the plain values a process starts from.
type Options struct {
	Service string    // api, worker or scheduler: the logs' service, and predq-<service> in traces
	Version string    // of the binary
	Stdout  io.Writer // receives the JSON logs
	// LogLevel is debug, info, warn or error.
	LogLevel string
	// LogArgs are added to the "starting" line (the redacted configuration).
	LogArgs []any

	OTLPEndpoint string // OTLP/HTTP endpoint for traces; empty: spans carry ids, none is recorded
	PprofAddr    string // host:port of a net/http/pprof listener; empty: none

	DatabaseURL string // empty: no pool
	DBPoolSize  int

	RedisURL     string        // the queue Redis
	RedisTimeout time.Duration // of each call of Process.Redis (0: go-redis's defaults)
}

// Process holds what Open opened.
type Process struct {
	Logger     *slog.Logger
	Tracer     trace.TracerProvider // also otel's global, with the W3C propagators
	Registry   *prometheus.Registry // Go runtime and process collectors registered
	Pool       *pgxpool.Pool        // nil without Options.DatabaseURL
	RedisOpts  redisdb.Options      // Options.RedisURL, parsed
	Redis      redis.UniversalClient
	closers    []func()
	closeTrace func(context.Context) error
}

// Open logs the "starting" line, then sets up tracing (installed as otel's global, which
// redisdb and the contrib instrumentation read, so it comes before the clients), the
// registry, pprof, the pool and the Redis client, in that order. On an error it closes what
// it had opened; the error names the variable at fault where one is.
func Open(ctx context.Context, o Options) (*Process, error) {
	p := &Process{Logger: telemetry.NewLogger(o.Stdout, o.LogLevel, o.Service)}
	p.Logger.InfoContext(ctx, "starting", append([]any{"version", o.Version}, o.LogArgs...)...)
	ok := false
	defer func() {
		if !ok {
			p.Close()
		}
	}()

	tp, shutdown, err := telemetry.TracerProvider(ctx, "predq-"+o.Service, o.Version, o.OTLPEndpoint)
	if err != nil {
		return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_ENDPOINT: %w", err)
	}
	p.Tracer, p.closeTrace = tp, shutdown
	telemetry.SetGlobal(tp)
	p.Registry = telemetry.NewRegistry()

	stopPprof, err := telemetry.StartPprof(o.PprofAddr, p.Logger)
	if err != nil {
		return nil, err
	}
	p.closers = append(p.closers, stopPprof)

	if o.DatabaseURL != "" {
		if p.Pool, err = postgres.Open(ctx, o.DatabaseURL, o.DBPoolSize); err != nil {
			return nil, err
		}
		p.closers = append(p.closers, p.Pool.Close)
	}

	if p.RedisOpts, err = redisdb.ParseURL(o.RedisURL); err != nil {
		return nil, fmt.Errorf("REDIS_URL: %w", err)
	}
	if p.Redis, err = redisdb.Open(o.RedisURL, o.RedisTimeout); err != nil {
		return nil, fmt.Errorf("REDIS_URL: %w", err)
	}
	p.closers = append(p.closers, func() { _ = p.Redis.Close() })
	ok = true
	return p, nil
}

// Close closes what Open opened, in the reverse order: the Redis client, the pool, the pprof
// listener, and last the tracer provider, which flushes the spans still pending (for at
// most 10 s).
func (p *Process) Close() {
	for i := len(p.closers) - 1; i >= 0; i-- {
		p.closers[i]()
	}
	p.closers = nil
	if p.closeTrace != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := p.closeTrace(ctx); err != nil {
			p.Logger.Warn("flushing traces", "error", err)
		}
		p.closeTrace = nil
	}
}
