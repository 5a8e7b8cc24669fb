// Package grpcapi is the gRPC front door of the api: the Open Inference Protocol's
// inference.GRPCInferenceService (internal/oip/inferencepb), the standard health service
// (grpc.health.v1) and server reflection, so that grpcurl, grpc-health-probe and any client
// generated from the protocol's proto work unmodified. It is the only package, with cmd and
// the generated code, that imports gRPC.
//
// It maps protobuf messages to the protocol-neutral types of internal/oip and back, and calls
// the same oip.Service as the REST binding: no rule is checked here that the core also checks,
// and an answer equals /api/v1's for the same input to the last bit.
//
// Every call of the inference service but ServerLive and ServerReady needs an API key with
// the predict scope, from the "authorization" metadata ("Bearer KEY") or "x-api-key"; the
// health and reflection services are open. Status codes follow the protocol:
// INVALID_ARGUMENT, NOT_FOUND, UNAVAILABLE, UNAUTHENTICATED, PERMISSION_DENIED for a key
// without the scope, RESOURCE_EXHAUSTED past the key's rate limit (or the failed
// authentications of an address).
package grpcapi

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/stats"

	"github.com/predq/predq/internal/auth"
	"github.com/predq/predq/internal/oip"
	"github.com/predq/predq/internal/oip/inferencepb"
	"github.com/predq/predq/internal/prediction"
	"github.com/predq/predq/internal/telemetry"
)

// Inference is the protocol over the predict feature: *oip.Service.
type Inference interface {
	ServerLive() bool
	ServerReady(ctx context.Context) bool
	ServerMetadata() oip.ServerMetadata
	ModelMetadata(ctx context.Context, name, version string) (oip.ModelMetadata, error)
	ModelReady(ctx context.Context, name, version string) (bool, error)
	Infer(ctx context.Context, meta prediction.Meta, name, version string, req *oip.InferRequest) (oip.InferResponse, error)
}

var _ Inference = (*oip.Service)(nil)

// Authenticator checks API keys: *auth.Keys. Errors: auth.ErrUnauthorized, or one wrapping
// auth.ErrUnavailable when the key store does not answer.
type Authenticator interface {
	Authenticate(ctx context.Context, key string) (auth.Principal, error)
}

var _ Authenticator = (*auth.Keys)(nil)

// Limits are the per-key and per-address limits, shared with the HTTP front door so that a
// key has one allowance whichever door it uses (the api's *httpapi.Server implements it).
type Limits interface {
	// TakeKeyRate takes one request of key's rate limit; when refused it reports how long
	// until one is allowed.
	TakeKeyRate(ctx context.Context, key string) (allowed bool, retryAfter time.Duration)
	// TakeAuthAttempt takes a token of addr's failed-authentication allowance before a key
	// of addr is checked; it returns a positive wait, and takes nothing, when none is left.
	TakeAuthAttempt(addr string) time.Duration
	// RefundAuthAttempt gives back the token of a check that succeeded.
	RefundAuthAttempt(addr string)
}

// Defaults of Config.
const (
	DefaultMaxRecvMsgSize = 4 << 20
	// DefaultHealthInterval is how often the health service's status follows readiness.
	DefaultHealthInterval = 5 * time.Second
	// DefaultStreamWorkers is the size of the pool of goroutines that answer calls.
	DefaultStreamWorkers = 128
)

// Config holds the server's settings and collaborators. Inference and Auth are required.
type Config struct {
	Inference Inference
	Auth      Authenticator
	Limits    Limits // nil: no rate limit, no failed-authentication limit
	// MaxRecvMsgSize bounds a request message in bytes (default DefaultMaxRecvMsgSize);
	// gRPC refuses a larger one with RESOURCE_EXHAUSTED.
	MaxRecvMsgSize int
	// HealthInterval is how often the health service's status is set from
	// Inference.ServerReady (default DefaultHealthInterval).
	HealthInterval time.Duration
	// StreamWorkers is how many long-lived goroutines answer calls (default
	// DefaultStreamWorkers); a call that finds them all busy gets a goroutine of its own.
	// Why: without the pool, gRPC starts a goroutine per call whose stack grows from its
	// minimum on every call (runtime.morestack copying it, a large share of a one-row call's
	// CPU), where a worker keeps the stack it grew. net/http keeps one goroutine per
	// connection for the same reason.
	StreamWorkers  uint32
	Logger         *slog.Logger
	Registerer     prometheus.Registerer // nil: metrics not registered
	TracerProvider trace.TracerProvider  // nil: no spans
	Propagator     propagation.TextMapPropagator
}

// Server is the gRPC server of the api.
type Server struct {
	cfg     Config
	log     *slog.Logger
	grpc    *grpc.Server
	health  *health.Server
	metrics *metrics
	stop    chan struct{} // closed by Shutdown
}

// HealthService is the name under which the health service reports the readiness of the
// inference service: SERVING when the api can answer inferences (the HTTP readiness
// check's verdict), NOT_SERVING otherwise. The empty name reports the server as a whole, its
// liveness: SERVING from start to shutdown. Both say NOT_SERVING once shutdown begins.
const HealthService = "inference.GRPCInferenceService"

// New builds the server: the inference service behind authentication, rate limits, metrics,
// traces and panic recovery; the health service; reflection.
func New(cfg Config) (*Server, error) {
	if cfg.Inference == nil || cfg.Auth == nil {
		return nil, errors.New("grpcapi: Inference and Auth are required")
	}
	cfg.MaxRecvMsgSize = cmp.Or(cfg.MaxRecvMsgSize, DefaultMaxRecvMsgSize)
	cfg.HealthInterval = cmp.Or(cfg.HealthInterval, DefaultHealthInterval)
	cfg.StreamWorkers = cmp.Or(cfg.StreamWorkers, DefaultStreamWorkers)
	s := &Server{cfg: cfg, log: cfg.Logger, health: health.NewServer(),
		stop: make(chan struct{})}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	reg := cfg.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	var err error
	if s.metrics, err = newMetrics(reg); err != nil {
		return nil, err
	}
	unary := []grpc.UnaryServerInterceptor{s.observeUnary, s.authenticate}
	opts := []grpc.ServerOption{grpc.MaxRecvMsgSize(cfg.MaxRecvMsgSize), grpc.NumStreamWorkers(cfg.StreamWorkers)}
	switch tp := cfg.TracerProvider; {
	case tp == nil:
	case telemetry.RecordsNothing(tp):
		// No span is recorded: each call gets its trace context and ids only, as the HTTP
		// door does, without otelgrpc's span names and attributes that nothing keeps.
		unary = append([]grpc.UnaryServerInterceptor{s.traceIDsOnly(tp.Tracer(traceServiceName))}, unary...)
	default:
		opts = append(opts, grpc.StatsHandler(s.tracing()))
	}
	opts = append(opts, grpc.ChainUnaryInterceptor(unary...), grpc.ChainStreamInterceptor(s.observeStream))
	s.grpc = grpc.NewServer(opts...)
	inferencepb.RegisterGRPCInferenceServiceServer(s.grpc, &inferenceServer{inf: cfg.Inference})
	healthpb.RegisterHealthServer(s.grpc, s.health)
	reflection.Register(s.grpc)
	s.metrics.initialize(s.grpc.GetServiceInfo())
	s.setHealth(context.Background())
	return s, nil
}

// tracing is the OpenTelemetry stats handler: a server span per call, continuing the
// caller's trace context; the health service gets none (probes would drown the traces that
// matter).
func (s *Server) tracing() stats.Handler {
	opts := []otelgrpc.Option{
		otelgrpc.WithTracerProvider(s.cfg.TracerProvider),
		otelgrpc.WithFilter(func(info *stats.RPCTagInfo) bool {
			return !isHealth(info.FullMethodName)
		}),
	}
	if s.cfg.Propagator != nil {
		opts = append(opts, otelgrpc.WithPropagators(s.cfg.Propagator))
	}
	return otelgrpc.NewServerHandler(opts...)
}

// traceServiceName is the instrumentation name of the spans of the ids-only path.
const traceServiceName = "predq-api-grpc"

// traceIDsOnly gives each call but the health service's a span that no sampler records,
// continuing the caller's trace context (traceparent metadata): its ids reach the logs and
// the tasks the call enqueues.
func (s *Server) traceIDsOnly(tracer trace.Tracer) grpc.UnaryServerInterceptor {
	prop := s.cfg.Propagator
	if prop == nil {
		prop = propagation.TraceContext{}
	}
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if isHealth(info.FullMethod) {
			return handler(ctx, req)
		}
		md, _ := metadata.FromIncomingContext(ctx)
		ctx = prop.Extract(ctx, mdCarrier(md))
		ctx, span := tracer.Start(ctx, info.FullMethod, serverSpan...)
		defer span.End()
		return handler(ctx, req)
	}
}

// serverSpan are the options of a call's span, made once.
var serverSpan = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindServer)}

// mdCarrier reads a propagator's fields from incoming metadata (whose keys are lower case).
type mdCarrier metadata.MD

func (c mdCarrier) Get(key string) string {
	if v := metadata.MD(c).Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}

func (c mdCarrier) Set(key, value string) { metadata.MD(c).Set(key, value) }

func (c mdCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// setHealth sets the inference service's health status from readiness.
func (s *Server) setHealth(ctx context.Context) {
	status := healthpb.HealthCheckResponse_NOT_SERVING
	if s.cfg.Inference.ServerReady(ctx) {
		status = healthpb.HealthCheckResponse_SERVING
	}
	s.health.SetServingStatus(HealthService, status)
}

// Serve answers calls on ln until Shutdown; it returns nil once stopped.
func (s *Server) Serve(ln net.Listener) error {
	go s.followReadiness()
	err := s.grpc.Serve(ln)
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}

// followReadiness keeps the health status in step with readiness until Shutdown.
func (s *Server) followReadiness() {
	t := time.NewTicker(s.cfg.HealthInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), s.cfg.HealthInterval)
			s.setHealth(ctx)
			cancel()
		}
	}
}

// Shutdown stops taking calls: the health service says NOT_SERVING at once, then the calls
// in flight are answered; when ctx ends first, the remaining ones are cancelled.
func (s *Server) Shutdown(ctx context.Context) {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	s.health.Shutdown()
	done := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		s.log.Warn("grpc: calls still in flight at the shutdown deadline are cancelled")
		s.grpc.Stop()
		<-done
	}
}

// CheckHealth asks the health service at addr (plaintext) for the status of service ("" for
// the server as a whole) and returns nil only for SERVING: the container health check and
// grpc-health-probe's question.
func CheckHealth(ctx context.Context, addr, service string) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("grpc health %s: %w", addr, err)
	}
	defer conn.Close()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		return fmt.Errorf("grpc health %s: %w", addr, err)
	}
	if st := resp.GetStatus(); st != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("grpc health %s: %s", addr, st)
	}
	return nil
}
