// Command api is the HTTP and gRPC front door: synchronous predictions, batch job
// submission and the read API on HTTP; the Open Inference Protocol's gRPC service on
// GRPC_PORT. Subcommands:
//
//	api [serve]                      serve HTTP on PORT and gRPC on GRPC_PORT
//	api migrate                      apply the database migrations (creating the database if missing)
//	api keys create --name NAME [--scope S]...  store a new API key and print it once (also
//	                                 --class, --weight, --max-pending-rows, --max-queued-jobs)
//	api promote VERSION [--alias NAME]   point an alias (default latest) at a version, in every process
//	api healthcheck [--url URL] [--grpc HOST:PORT]  exit 0 when the api answers /health/live
//	                                 (and its gRPC health service SERVING): the container health check
//	api version                      print the version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynqmon"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel"
	"golang.org/x/sync/errgroup"

	"github.com/predq/predq/internal/admission"
	"github.com/predq/predq/internal/auth"
	"github.com/predq/predq/internal/config"
	"github.com/predq/predq/internal/grpcapi"
	"github.com/predq/predq/internal/health"
	"github.com/predq/predq/internal/httpapi"
	"github.com/predq/predq/internal/idempotency"
	"github.com/predq/predq/internal/job"
	"github.com/predq/predq/internal/modelreg"
	"github.com/predq/predq/internal/oip"
	"github.com/predq/predq/internal/postgres"
	"github.com/predq/predq/internal/prediction"
	"github.com/predq/predq/internal/redisdb"
	"github.com/predq/predq/internal/startup"
	"github.com/predq/predq/internal/tasks"
	"github.com/predq/predq/internal/telemetry"
	"github.com/predq/predq/internal/webhook"
	"github.com/predq/predq/migrations"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	// The request ids (UUIDv7) and job ids take their random bits from a buffer refilled
	// from crypto/rand in blocks rather than one read per id, which is cheaper on the request
	// path. Set before any goroutine makes one.
	uuid.EnableRandPool()
	if err := run(context.Background(), os.Args, os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "api:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	cmd := "serve"
	if len(args) > 1 {
		cmd = args[1]
	}
	rest := []string{}
	if len(args) > 2 {
		rest = args[2:]
	}
	switch cmd {
	case "serve":
		cfg, err := config.FromEnv(getenv)
		if err != nil {
			return err
		}
		gogc, memLimit := config.TuneGC(getenv)
		return serve(ctx, cfg, stdout, "gogc", gogc, "gomemlimit", memLimit)
	case "migrate":
		cfg, err := config.FromEnv(getenv)
		if err != nil {
			return err
		}
		return migrate(ctx, cfg, stdout)
	case "keys":
		cfg, err := config.FromEnv(getenv)
		if err != nil {
			return err
		}
		return keys(ctx, cfg, rest, stdout, stderr)
	case "promote":
		cfg, err := config.FromEnv(getenv)
		if err != nil {
			return err
		}
		return promote(ctx, cfg, rest, stdout, stderr)
	case "healthcheck":
		return healthcheck(ctx, getenv, rest, stderr)
	case "version":
		fmt.Fprintln(stdout, version)
		return nil
	case "-h", "--help", "help":
		fmt.Fprintln(stdout, "usage: api [serve | migrate | keys create --name NAME [--scope S]... | promote VERSION [--alias NAME] | healthcheck [--url URL] [--grpc HOST:PORT] | version]")
		return nil
	default:
		return fmt.Errorf("unknown command %q (want serve, migrate, keys, promote, healthcheck or version)", cmd)
	}
}

// serve runs the HTTP API and the gRPC server until ctx is done; logArgs are added to the
// "starting" log line. Shutdown is ordered: both listeners stop taking connections and the
// requests and calls in flight are drained (20 s at most; gRPC's health says NOT_SERVING
// at once), then the model watcher stops, then the deferred closes run: the
// group commit's last batches, the queue clients, Redis, Postgres, tracing.
func serve(ctx context.Context, cfg config.Config, stdout io.Writer, logArgs ...any) error {
	proc, err := startup.Open(ctx, startup.Options{
		Service: "api", Version: version, Stdout: stdout, LogLevel: cfg.LogLevel,
		LogArgs:      append(logArgs, cfg.Redacted()...),
		OTLPEndpoint: cfg.OTLPEndpoint, PprofAddr: cfg.PprofAddr,
		DatabaseURL: cfg.DatabaseURL, DBPoolSize: cfg.DBPoolSize,
		RedisURL: cfg.RedisURL,
	})
	if err != nil {
		return err
	}
	defer proc.Close()
	logger, tp, reg, pool, queueRedis, redisOpts := proc.Logger, proc.Tracer, proc.Registry, proc.Pool, proc.Redis, proc.RedisOpts
	cacheRedis, err := redisdb.Open(cfg.CacheRedisURL, cfg.RedisTimeout)
	if err != nil {
		return fmt.Errorf("CACHE_REDIS_URL: %w", err)
	}
	defer cacheRedis.Close()

	persistQueue := tasks.NewPersistClient(redisOpts, prediction.DefaultEnqueueTimeout, nil)
	defer persistQueue.Close()
	// Group commit: the records of concurrent requests share one write to Postgres, or one
	// enqueue with PERSIST_PATH=queue.
	recorder, err := prediction.NewRecorder(cfg.PersistPath, prediction.RecorderConfig{
		Store:      prediction.NewStore(pool),
		Queue:      persistQueue,
		Registerer: reg,
		Logger:     logger,
		Tracer:     tp.Tracer("predq/prediction"),
	})
	if err != nil {
		return err
	}
	defer recorder.Close()

	registry := modelreg.New(cfg.ModelPath, pool, logger)
	if err := registry.Load(ctx); err != nil {
		logger.WarnContext(ctx, "model registry not synced with Postgres; serving the local artifacts", "error", err)
	}
	if registry.Loaded() == 0 {
		logger.ErrorContext(ctx, "no model loaded: predictions will answer 503", "model_path", cfg.ModelPath)
	}

	svc, err := prediction.NewService(prediction.ServiceConfig{
		Models:           registry,
		Cache:            prediction.NewCache(cacheRedis, cfg.RedisTTL, cfg.RedisTimeout, reg, logger),
		Recorder:         recorder,
		PersistCacheHits: cfg.PersistCacheHits,
		Registerer:       reg,
		Tracer:           tp.Tracer("predq/prediction"),
		Logger:           logger,
	})
	if err != nil {
		return err
	}
	// DATABASE_READ_URL: a streaming replica for the reads that tolerate lag.
	var readPool *pgxpool.Pool
	if cfg.DatabaseReadURL != "" {
		if readPool, err = postgres.Open(ctx, cfg.DatabaseReadURL, cfg.DBPoolSize); err != nil {
			return fmt.Errorf("DATABASE_READ_URL: %w", err)
		}
		defer readPool.Close()
	}
	deliveries := webhook.NewStore(pool, nil)
	jobClient := tasks.NewJobClient(tasks.RedisConnOpt(redisOpts, 2*time.Second), logger).WithBatchShards(cfg.BatchShards)
	defer jobClient.Close()
	jobs, err := job.NewService(job.Config{
		Pool:     pool,
		ReadPool: readPool,
		Models:   registry,
		Enqueuer: jobClient,
		Waker:    tasks.NewWaker(queueRedis),
		Notifier: deliveries,
		CheckURL: func(ctx context.Context, raw string) error {
			return webhook.ValidateURL(ctx, raw, cfg.WebhookAllowPrivate)
		},
		MaxSamples: cfg.MaxJobSamples,
		MaxRows:    cfg.MaxJobRows,
		ChunkSize:  cfg.JobChunkSize,
		Timeout:    cfg.JobTimeout,
		// The quotas are checked where jobs are submitted.
		MaxPendingRows: cfg.JobMaxPendingRows,
		MaxQueuedJobs:  cfg.JobMaxQueuedJobs,
		Registerer:     reg,
		Logger:         logger,
	})
	if err != nil {
		return err
	}
	checker := &health.Checker{
		Postgres: func(ctx context.Context) error { return postgres.Ping(ctx, pool) },
		Redis:    func(ctx context.Context) error { return queueRedis.Ping(ctx).Err() },
		Models:   func() ([]string, []modelreg.LoadFailure) { return registry.Versions(), registry.Failures() },
	}
	var monitoring http.Handler
	if cfg.MonitoringUser != "" {
		mon := asynqmon.New(asynqmon.Options{
			RootPath:          "/monitoring",
			RedisConnOpt:      tasks.RedisConnOpt(redisOpts, 0),
			PrometheusAddress: cfg.MonitoringPrometheus,
			ReadOnly:          cfg.MonitoringReadOnly,
		})
		defer mon.Close()
		monitoring = mon
	}
	keyring, err := auth.NewKeys(cfg.APIKeys, pool, reg)
	if err != nil {
		return fmt.Errorf("API_KEYS: %w", err)
	}
	// The Open Inference Protocol over the same predict feature, for both of its bindings
	// (REST on /v2, gRPC on GRPC_PORT).
	oipSvc, err := oip.NewService(oip.Config{
		Predictor:     svc,
		Models:        registry,
		ServerVersion: version,
		MaxRows:       cfg.MaxBatchSize,
		Ready:         func(ctx context.Context) bool { return checker.Ready(ctx).Ready },
	})
	if err != nil {
		return err
	}
	var admit *admission.Controller
	if cfg.AdmissionControl {
		if admit, err = admission.New(admission.Config{
			MinLimit: cfg.AdmissionMinLimit, MaxLimit: cfg.AdmissionMaxLimit, InitialLimit: cfg.AdmissionInitialLimit,
			QueueSize: cfg.AdmissionQueueSize, MaxWait: cfg.AdmissionMaxWait, Registerer: reg,
		}); err != nil {
			return err
		}
	}
	srv, err := httpapi.New(httpapi.Config{
		Version:            version,
		AllowedOrigins:     cfg.AllowedOrigins,
		BodyLimit:          cfg.BodyLimit,
		MaxBatchSize:       cfg.MaxBatchSize,
		MaxJobSamples:      cfg.MaxJobSamples,
		RateLimit:          cfg.RateLimit,
		RateBurst:          cfg.RateBurst,
		RateRedis:          queueRedis,
		RateRedisTimeout:   cfg.RedisTimeout,
		AuthFailRate:       cfg.AuthFailRate,
		AuthFailBurst:      cfg.AuthFailBurst,
		Admission:          admit,
		Logger:             logger,
		Registerer:         reg,
		MetricsHandler:     telemetry.MetricsHandler(reg),
		TracerProvider:     tp,
		Propagator:         otel.GetTextMapPropagator(),
		Monitoring:         monitoring,
		MonitoringUser:     cfg.MonitoringUser,
		MonitoringPassword: cfg.MonitoringPassword,
	}, httpapi.Deps{
		Predictor:   svc,
		Models:      registry,
		Auth:        keyring,
		Readiness:   checker,
		Promoter:    promoter{registry, queueRedis},
		Predictions: predictionReads(pool, readPool, logger),
		Jobs:        jobs,
		Replays:     jobs,
		Idempotency: idempotency.NewStore(pool, cfg.IdempotencyLease),
		OIP:         oipSvc,
	})
	if err != nil {
		return err
	}

	// The same oip.Service answers the protocol's gRPC binding.
	grpcSrv, err := grpcapi.New(grpcapi.Config{
		Inference:      oipSvc,
		Auth:           keyring,
		Limits:         srv, // one rate limit per key, one failed-authentication allowance per address, whichever door
		MaxRecvMsgSize: int(cfg.BodyLimit),
		Logger:         logger,
		Registerer:     reg,
		TracerProvider: tp,
		Propagator:     otel.GetTextMapPropagator(),
	})
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", net.JoinHostPort("", strconv.Itoa(cfg.Port)))
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	grpcLn, err := net.Listen("tcp", net.JoinHostPort("", strconv.Itoa(cfg.GRPCPort)))
	if err != nil {
		ln.Close()
		return fmt.Errorf("grpc listen: %w", err)
	}
	httpSrv := httpapi.NewHTTPServer(ln.Addr().String(), srv.Handler())
	// The watcher outlives the drain: it stops once the requests in flight are answered.
	watchCtx, stopWatch := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWatch()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		// Promotions and new artifacts reach this process through pub/sub, and every 30 s in
		// any case.
		registry.Watch(watchCtx, queueRedis, 30*time.Second)
		return nil
	})
	g.Go(func() error {
		if err := httpSrv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		if err := grpcSrv.Serve(grpcLn); err != nil {
			return fmt.Errorf("grpc: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		logger.Info("shutting down: draining HTTP requests and gRPC calls")
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 20*time.Second)
		defer cancel()
		// Both doors stop taking work and drain at once, within the same bound.
		var drain errgroup.Group
		drain.Go(func() error {
			if err := httpSrv.Shutdown(sctx); err != nil {
				logger.Error("http shutdown", "error", err)
			}
			return nil
		})
		drain.Go(func() error {
			grpcSrv.Shutdown(sctx)
			return nil
		})
		_ = drain.Wait()
		stopWatch()
		return nil
	})
	logger.InfoContext(ctx, "listening", "addr", ln.Addr().String(), "grpc_addr", grpcLn.Addr().String(), "models", registry.Versions())
	if err := g.Wait(); err != nil {
		return err
	}
	logger.Info("stopped")
	return nil
}

// migrate applies the migrations, creating the database first when it does not exist.
func migrate(ctx context.Context, cfg config.Config, stdout io.Writer) error {
	logger := telemetry.NewLogger(stdout, cfg.LogLevel, "api")
	if err := ensureDatabase(ctx, cfg.DatabaseURL); err != nil {
		return err
	}
	pool, err := postgres.Open(ctx, cfg.DatabaseURL, 2)
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := postgres.Migrate(ctx, pool, migrations.FS, logger); err != nil {
		return err
	}
	logger.InfoContext(ctx, "migrations up to date")
	return nil
}

func ensureDatabase(ctx context.Context, url string) error {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return fmt.Errorf("DATABASE_URL: %w", err)
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(cctx, cfg)
	if err == nil {
		return conn.Close(ctx)
	}
	if !postgres.IsCode(err, "3D000") { // invalid_catalog_name: the database does not exist
		return fmt.Errorf("connect: %w", err)
	}
	name := cfg.Database
	cfg.Database = "postgres"
	conn, err = pgx.ConnectConfig(cctx, cfg)
	if err != nil {
		return fmt.Errorf("connect to create database %s: %w", name, err)
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(cctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	if err != nil && !postgres.IsCode(err, "42P04") && !postgres.IsCode(err, postgres.CodeUniqueViolation) { // created meanwhile
		return fmt.Errorf("create database %s: %w", name, err)
	}
	return nil
}

func keys(ctx context.Context, cfg config.Config, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "create" {
		return errors.New("usage: api keys create --name NAME [--scope SCOPE] [--class interactive|bulk] [--weight N] [--max-pending-rows N] [--max-queued-jobs N] (--scope repeatable)")
	}
	fs := flag.NewFlagSet("keys create", flag.ContinueOnError)
	fs.SetOutput(stderr)
	name := fs.String("name", "", "name of the key (a label: the key's tenant is its id)")
	var scopeNames []string
	fs.Func("scope", "a scope of the key, repeatable: predict, jobs, admin or review (default predict and jobs)", func(s string) error {
		scopeNames = append(scopeNames, s)
		return nil
	})
	def := auth.DefaultAttributes()
	var attrs auth.Attributes
	fs.StringVar(&attrs.Class, "class", def.Class, "priority class of its synchronous work: interactive or bulk (shed first under overload)")
	fs.IntVar(&attrs.Weight, "weight", def.Weight, "its weight in the fair share of batch capacity (1..1000)")
	fs.Int64Var(&attrs.MaxPendingRows, "max-pending-rows", 0, "rows it may have pending across its jobs (0: the configured default)")
	fs.IntVar(&attrs.MaxQueuedJobs, "max-queued-jobs", 0, "jobs it may have queued (0: the configured default)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if err := attrs.Check(); err != nil {
		return fmt.Errorf("keys create: %w", err)
	}
	var scopes []auth.Scope
	if len(scopeNames) > 0 {
		var err error
		if scopes, err = auth.ParseScopes(scopeNames); err != nil {
			return fmt.Errorf("--scope: %w", err)
		}
	}
	pool, err := pgxpool.New(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	key, err := auth.Create(ctx, pool, *name, scopes, attrs)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, key)
	return nil
}

func healthcheck(ctx context.Context, getenv func(string) string, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	port := getenv("PORT")
	if port == "" {
		port = "8080"
	}
	url := fs.String("url", "http://127.0.0.1:"+port+"/health/live", "URL to check")
	grpcAddr := fs.String("grpc", "", "host:port of the gRPC server whose health service (grpc.health.v1, the server as a whole) must answer SERVING too")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if *grpcAddr != "" {
		if err := grpcapi.CheckHealth(ctx, *grpcAddr, ""); err != nil {
			return fmt.Errorf("healthcheck: %w", err)
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, *url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: %s answered %d", *url, resp.StatusCode)
	}
	return nil
}

// promoter moves an alias and announces it to every process.
type promoter struct {
	registry *modelreg.Registry
	rdb      redis.UniversalClient
}

func (p promoter) Promote(ctx context.Context, version, alias string) error {
	if err := p.registry.Promote(ctx, version, alias); err != nil {
		return err
	}
	// The other processes also refresh on their own within 30 s if the announcement is lost.
	_ = modelreg.Announce(ctx, p.rdb, "promote "+version+" to "+alias)
	return nil
}

func promote(ctx context.Context, cfg config.Config, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("promote", flag.ContinueOnError)
	fs.SetOutput(stderr)
	alias := fs.String("alias", "latest", "alias to move")
	var version string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		version, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if version == "" && fs.NArg() > 0 {
		version = fs.Arg(0)
	}
	if version == "" {
		return errors.New("usage: api promote VERSION [--alias NAME]")
	}
	logger := telemetry.NewLogger(stderr, "warn", "api")
	pool, err := postgres.Open(ctx, cfg.DatabaseURL, 2)
	if err != nil {
		return err
	}
	defer pool.Close()
	rdb, err := redisdb.Open(cfg.RedisURL, 2*time.Second)
	if err != nil {
		return err
	}
	defer rdb.Close()
	registry := modelreg.New(cfg.ModelPath, pool, logger)
	if err := (promoter{registry, rdb}).Promote(ctx, version, *alias); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s now points at %s\n", *alias, version)
	return nil
}

// predictionReads is the reader of GET /api/v1/predictions and /api/v1/predictions/{id}: the
// list reads the replica (DATABASE_READ_URL) when there is one, lag included, and gives way
// to the primary when the replica cannot be reached; a lookup by id reads the primary (an
// answer a client just had is found once stored, whatever the replica's lag).
func predictionReads(primary, replica *pgxpool.Pool, logger *slog.Logger) httpapi.PredictionReader {
	if replica == nil {
		return prediction.NewStore(primary)
	}
	return replicaPredictions{Store: prediction.NewStore(primary), replica: prediction.NewStore(replica), logger: logger}
}

type replicaPredictions struct {
	*prediction.Store // the primary: Get
	replica           *prediction.Store
	logger            *slog.Logger
}

func (r replicaPredictions) List(ctx context.Context, f prediction.ListFilter) ([]prediction.Stored, string, error) {
	items, next, err := r.replica.List(ctx, f)
	if err != nil && postgres.IsUnavailable(err) {
		r.logger.WarnContext(ctx, "read replica unavailable; listing predictions on the primary", "error", err)
		return r.Store.List(ctx, f)
	}
	return items, next, err
}
