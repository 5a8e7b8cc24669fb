// Package httpapi is the HTTP edge of the api process: routes, handlers, middleware,
// problem+json errors and the OpenAPI document. It is the only package that imports Echo, so
// that a move to another framework (or to Echo v5) stays a contained change.
//
// Every route is listed in routes.go; every error becomes an RFC 9457 problem in errors.go;
// the OpenAPI document that describes the routes is built in openapi.go, and a test keeps the
// two in step.
package httpapi

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/predq/predq/internal/admission"
	"github.com/predq/predq/internal/auth"
	"github.com/predq/predq/internal/health"
	"github.com/predq/predq/internal/job"
	"github.com/predq/predq/internal/modelreg"
	"github.com/predq/predq/internal/oip"
	"github.com/predq/predq/internal/prediction"
)

// Defaults of Config.
const (
	DefaultBodyLimit    int64 = 2 << 20 // 2 MiB
	DefaultMaxBatchSize       = 1000
)

// Predictor answers predictions (implemented by the prediction feature's service).
//
// Inputs reach it normalized and checked against the model-independent rules
// (prediction.Input.Validate); it checks the model-dependent ones. It returns
// *validate.Error for input the resolved model cannot take (field names as the client wrote
// them; for a batch prefixed "samples[i]."), prediction.ErrModelNotFound for an unknown
// version or alias, and prediction.ErrNoModels when no model is loaded.
type Predictor interface {
	// Predict answers one input.
	Predict(ctx context.Context, in prediction.Input, meta prediction.Meta) (prediction.Output, error)
	// PredictBatch answers inputs in order; parallel is the client's hint.
	PredictBatch(ctx context.Context, ins []prediction.Input, parallel bool, meta prediction.Meta) ([]prediction.Output, error)
}

// ModelCatalog lists the registered model versions (implemented by the model registry).
type ModelCatalog interface {
	// List returns every registered version.
	List(ctx context.Context) ([]modelreg.Info, error)
	// Get returns one version or alias; modelreg.ErrNotFound when it is not registered.
	Get(ctx context.Context, version string) (modelreg.Info, error)
}

// Authenticator resolves an API key to its principal (implemented by the auth feature). It
// returns auth.ErrUnauthorized for a missing, unknown or revoked key; any other error is
// treated as an internal failure.
type Authenticator interface {
	Authenticate(ctx context.Context, key string) (auth.Principal, error)
}

// ReadinessChecker reports whether the process can do its main work (implemented by the
// health package). It bounds its own checks in time.
type ReadinessChecker interface {
	Ready(ctx context.Context) health.Report
}

// Config holds the plain values the HTTP edge needs. The zero value of every optional field
// picks a default.
type Config struct {
	// Version is the service's build version, shown by GET / and in the OpenAPI document
	// (default "dev").
	Version string
	// AllowedOrigins are the browser origins allowed by CORS ("https://app.example.com");
	// "*" allows every origin. Empty turns CORS off. Credentials (cookies) are never allowed.
	AllowedOrigins []string
	// BodyLimit is the largest request body in bytes (default DefaultBodyLimit); larger
	// bodies get 413.
	BodyLimit int64
	// JobBodyLimit is the largest job upload in bytes (default DefaultJobBodyLimit); the
	// job feature bounds its rows too.
	JobBodyLimit int64
	// OIPAsyncBodyLimit is the largest body of an asynchronous /v2 infer (Prefer:
	// respond-async) in bytes (default DefaultOIPAsyncBodyLimit); it is read whole, and the
	// job feature bounds its rows (MAX_JOB_SAMPLES).
	OIPAsyncBodyLimit int64
	// MaxBatchSize is the largest number of samples of POST /api/v1/predict/batch (default
	// DefaultMaxBatchSize).
	MaxBatchSize int
	// MaxJobSamples is the largest number of samples of a JSON job body (default
	// job.DefaultMaxSamples). The job service enforces it; here it only bounds the OpenAPI
	// document's JobRequest.samples, so pass the value the service was given.
	MaxJobSamples int
	// RateLimit is the sustained number of requests per second allowed per API key on
	// /api/v1/*; 0 turns rate limiting off.
	RateLimit float64
	// RateBurst is the burst allowed per API key (default max(1, ceil(RateLimit))).
	RateBurst int
	// RateRedis, when not nil, holds the rate limits (GCRA), so that every replica shares
	// one allowance per key; while it does not answer within RateRedisTimeout (default
	// 100ms) each process falls back to its own buckets. nil: per-process buckets only.
	RateRedis        redis.UniversalClient
	RateRedisTimeout time.Duration
	// AuthFailRate is the sustained number of failed authentications per second allowed per
	// client address (on /api/v1 and /monitoring/); past AuthFailBurst (default
	// max(1, ceil(AuthFailRate))) the address gets 429 before its key is checked. 0 turns
	// it off.
	AuthFailRate  float64
	AuthFailBurst int
	// Admission, when not nil, admits the synchronous routes (predict, batch predict) under
	// an adaptive concurrency limit with a short priority queue; past it they answer 503
	// (see Server.admit). nil: every request runs at once.
	Admission *admission.Controller
	// Logger receives the access log and the errors (default: discarded).
	Logger *slog.Logger
	// Registerer receives the HTTP metrics (http_requests_total,
	// http_request_duration_seconds, http_requests_in_flight). Optional: when nil they are
	// kept on a private registry that nobody scrapes.
	Registerer prometheus.Registerer
	// MetricsHandler, when not nil, is mounted at GET /metrics (open, like health).
	MetricsHandler http.Handler
	// TracerProvider, when not nil, starts an OpenTelemetry server span for every request
	// (except /metrics and /health*), continuing the trace of an incoming traceparent. The
	// span is in the request context, so the access log and every log line of the request
	// made by a logger that reads it (telemetry.NewLogger) carry trace_id and span_id, and
	// the tasks the request enqueues carry its trace context. nil: no HTTP spans.
	TracerProvider trace.TracerProvider
	// Propagator reads the trace context of incoming requests (nil: W3C trace context).
	Propagator propagation.TextMapPropagator
	// Monitoring, when not nil, is the asynqmon dashboard, mounted under /monitoring/ behind
	// HTTP Basic auth with MonitoringUser and MonitoringPassword. Without both credentials
	// the dashboard is not mounted at all: off rather than open.
	Monitoring         http.Handler
	MonitoringUser     string
	MonitoringPassword string
}

// Deps are the features the handlers call. All are required.
type Deps struct {
	// Predictor answers POST /api/v1/predict and /api/v1/predict/batch.
	Predictor Predictor
	// Models answers GET /api/v1/models and /api/v1/models/{version}.
	Models ModelCatalog
	// Auth checks the API key of every /api/v1 request.
	Auth Authenticator
	// Readiness answers GET /health/ready.
	Readiness ReadinessChecker
	// Promoter answers POST /api/v1/models/{version}/promote (nil: the route answers 404).
	Promoter ModelPromoter
	// Predictions answers GET /api/v1/predictions and /api/v1/predictions/{id} (nil: the
	// routes answer 404).
	Predictions PredictionReader
	// Jobs answers the /api/v1/jobs routes.
	Jobs JobService
	// Replays answers POST /api/v1/jobs/{id}/replay and GET /api/v1/jobs/{id}/comparison
	// (nil: the routes answer 404).
	Replays JobReplayer
	// Idempotency keeps Idempotency-Key answers of job submissions (nil: the header is
	// ignored).
	Idempotency IdempotencyStore
	// OIP answers the Open Inference Protocol's /v2 routes (nil: they are not served).
	OIP *oip.Service
}

// Server is the api process's HTTP handler: routes, middleware and error mapping.
type Server struct {
	e        *echo.Echo
	cfg      Config
	deps     Deps
	log      *slog.Logger
	metrics  *httpMetrics
	limiter  *keyLimiter     // nil when rate limiting is off
	shared   *sharedLimiter  // nil unless rate limits are held in Redis
	authFail *addrLimiter    // nil when the failed-authentication limit is off
	origins  originSet       // empty when CORS is off
	openapi  []byte          // the rendered OpenAPI document
	routeSet map[string]bool // "METHOD /path/:param" of every registered route
}

// New builds the server from its configuration and dependencies. It returns an error naming
// every missing dependency or invalid setting.
func New(cfg Config, deps Deps) (*Server, error) {
	var errs []error
	if deps.Predictor == nil {
		errs = append(errs, errors.New("httpapi: Deps.Predictor is required"))
	}
	if deps.Models == nil {
		errs = append(errs, errors.New("httpapi: Deps.Models is required"))
	}
	if deps.Auth == nil {
		errs = append(errs, errors.New("httpapi: Deps.Auth is required"))
	}
	if deps.Readiness == nil {
		errs = append(errs, errors.New("httpapi: Deps.Readiness is required"))
	}
	if deps.Jobs == nil {
		errs = append(errs, errors.New("httpapi: Deps.Jobs is required"))
	}
	if cfg.BodyLimit < 0 {
		errs = append(errs, fmt.Errorf("httpapi: BodyLimit must not be negative, got %d", cfg.BodyLimit))
	}
	if cfg.MaxBatchSize < 0 {
		errs = append(errs, fmt.Errorf("httpapi: MaxBatchSize must not be negative, got %d", cfg.MaxBatchSize))
	}
	if cfg.OIPAsyncBodyLimit < 0 {
		errs = append(errs, fmt.Errorf("httpapi: OIPAsyncBodyLimit must not be negative, got %d", cfg.OIPAsyncBodyLimit))
	}
	if cfg.MaxJobSamples < 0 {
		errs = append(errs, fmt.Errorf("httpapi: MaxJobSamples must not be negative, got %d", cfg.MaxJobSamples))
	}
	if cfg.RateLimit < 0 || math.IsNaN(cfg.RateLimit) || math.IsInf(cfg.RateLimit, 0) {
		errs = append(errs, fmt.Errorf("httpapi: RateLimit must be a finite number ≥ 0, got %g", cfg.RateLimit))
	}
	if cfg.AuthFailRate < 0 || math.IsNaN(cfg.AuthFailRate) || math.IsInf(cfg.AuthFailRate, 0) {
		errs = append(errs, fmt.Errorf("httpapi: AuthFailRate must be a finite number ≥ 0, got %g", cfg.AuthFailRate))
	}
	if cfg.AuthFailBurst < 0 {
		errs = append(errs, fmt.Errorf("httpapi: AuthFailBurst must not be negative, got %d", cfg.AuthFailBurst))
	}
	if cfg.RateBurst < 0 {
		errs = append(errs, fmt.Errorf("httpapi: RateBurst must not be negative, got %d", cfg.RateBurst))
	}
	origins, err := parseOrigins(cfg.AllowedOrigins)
	if err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	cfg.Version = cmp.Or(strings.TrimSpace(cfg.Version), "dev")
	cfg.BodyLimit = cmp.Or(cfg.BodyLimit, DefaultBodyLimit)
	cfg.MaxBatchSize = cmp.Or(cfg.MaxBatchSize, DefaultMaxBatchSize)
	cfg.MaxJobSamples = cmp.Or(cfg.MaxJobSamples, job.DefaultMaxSamples)
	cfg.JobBodyLimit = cmp.Or(cfg.JobBodyLimit, DefaultJobBodyLimit)
	cfg.OIPAsyncBodyLimit = cmp.Or(cfg.OIPAsyncBodyLimit, DefaultOIPAsyncBodyLimit)
	if cfg.RateLimit > 0 {
		cfg.RateBurst = cmp.Or(cfg.RateBurst, max(1, int(math.Ceil(cfg.RateLimit))))
	}
	if cfg.AuthFailRate > 0 {
		cfg.AuthFailBurst = cmp.Or(cfg.AuthFailBurst, max(1, int(math.Ceil(cfg.AuthFailRate))))
	}
	cfg.RateRedisTimeout = cmp.Or(cfg.RateRedisTimeout, defaultRateRedisTimeout)
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	reg := cfg.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	metrics, err := newHTTPMetrics(reg)
	if err != nil {
		return nil, err
	}

	s := &Server{
		cfg:     cfg,
		deps:    deps,
		log:     log,
		metrics: metrics,
		origins: origins,
	}
	rateM, err := newRateMetrics(reg)
	if err != nil {
		return nil, err
	}
	if cfg.RateLimit > 0 {
		s.limiter = newKeyLimiter(cfg.RateLimit, cfg.RateBurst, defaultMaxLimitedKeys, time.Now)
		if cfg.RateRedis != nil {
			s.shared = newSharedLimiter(cfg.RateRedis, cfg.RateLimit, cfg.RateBurst, cfg.RateRedisTimeout, s.limiter, log, rateM)
		}
	}
	if cfg.AuthFailRate > 0 {
		s.authFail = newAddrLimiter(cfg.AuthFailRate, cfg.AuthFailBurst, defaultMaxLimitedKeys, time.Now)
	}

	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	// The process listens directly (or behind a proxy we do not trust yet): the client IP is
	// the connection's peer, never X-Forwarded-For / X-Real-IP. A TRUSTED_PROXIES option can
	// later switch to echo.ExtractIPFromXFFHeader(echo.TrustIPRange(...)).
	e.IPExtractor = echo.ExtractIPDirect()
	e.HTTPErrorHandler = s.handleError
	s.e = e

	s.openapi, err = renderOpenAPI(s.openAPIDocument())
	if err != nil {
		return nil, fmt.Errorf("httpapi: render OpenAPI document: %w", err)
	}
	s.routes()
	s.routeSet = make(map[string]bool)
	for _, r := range e.Routes() {
		if r.Method != echo.RouteNotFound {
			s.routeSet[r.Method+" "+r.Path] = true
		}
	}
	return s, nil
}

// Handler returns the server as an http.Handler, to be served by NewHTTPServer.
func (s *Server) Handler() http.Handler {
	return s.e
}

// Timeouts and limits of NewHTTPServer.
const (
	ReadHeaderTimeout = 5 * time.Second
	ReadTimeout       = 30 * time.Second
	WriteTimeout      = 60 * time.Second
	IdleTimeout       = 120 * time.Second
	MaxHeaderBytes    = 64 << 10
)

// NewHTTPServer returns an *http.Server for h on addr with the timeouts that Echo leaves
// unset: a slow or stalled client cannot hold a connection or a goroutine forever.
//
// WriteTimeout bounds a whole response. Long-lived responses (the Server-Sent Events of
// GET /api/v1/jobs/{id}/events, NDJSON result streams) must lift it for their own request
// with http.NewResponseController(w).SetWriteDeadline(time.Time{}) (or push it forward as
// they write), not by changing it here.
func NewHTTPServer(addr string, h http.Handler) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		ReadHeaderTimeout: ReadHeaderTimeout,
		ReadTimeout:       ReadTimeout,
		WriteTimeout:      WriteTimeout,
		IdleTimeout:       IdleTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
	}
}
