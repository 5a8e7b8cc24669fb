package grpcapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"strings"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/predq/predq/internal/auth"
	"github.com/predq/predq/internal/telemetry"
)

// Metadata keys read and written.
const (
	mdAuthorization = "authorization"
	mdAPIKey        = "x-api-key"
	mdRequestID     = "x-request-id"
	mdRetryAfter    = "retry-after"
)

// maxAPIKeyLen bounds a key read from metadata, as on HTTP.
const maxAPIKeyLen = 256

// openMethods answer without an API key: the protocol's liveness and readiness (as the REST
// binding's /v2/health paths), the health service and reflection.
func openMethod(full string) bool {
	switch full {
	case "/inference.GRPCInferenceService/ServerLive", "/inference.GRPCInferenceService/ServerReady":
		return true
	}
	return isHealth(full) || strings.HasPrefix(full, "/grpc.reflection.")
}

func isHealth(full string) bool { return strings.HasPrefix(full, "/grpc.health.v1.Health/") }

// splitMethod splits "/pkg.Service/Method" into its service and method.
func splitMethod(full string) (service, method string) {
	full = strings.TrimPrefix(full, "/")
	if i := strings.LastIndexByte(full, '/'); i >= 0 {
		return full[:i], full[i+1:]
	}
	return "unknown", full
}

// observeUnary is the outermost interceptor of a unary call: it gives the call its request
// id (x-request-id from the client when it is sane, else a UUIDv7; sent back as a header),
// recovers a panic as INTERNAL, records the metrics and writes one access-log line, which
// holds no metadata: API keys never reach it.
func (s *Server) observeUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	start := time.Now()
	svc, method := splitMethod(info.FullMethod)
	s.metrics.inFlight.Inc()
	defer s.metrics.inFlight.Dec()
	id := requestIDOf(ctx)
	ctx = telemetry.WithRequestID(ctx, id)
	_ = grpc.SetHeader(ctx, metadata.Pairs(mdRequestID, id)) // fails only once headers are sent
	defer func() {
		if r := recover(); r != nil {
			s.log.ErrorContext(ctx, "grpc: panic", "method", info.FullMethod, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			resp, err = nil, status.Error(codes.Internal, "internal error")
		}
		s.finish(ctx, "unary", svc, method, err, start)
	}()
	return handler(ctx, req)
}

// observeStream is observeUnary for the streaming calls (health Watch, reflection).
func (s *Server) observeStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
	start := time.Now()
	svc, method := splitMethod(info.FullMethod)
	s.metrics.inFlight.Inc()
	defer s.metrics.inFlight.Dec()
	defer func() {
		if r := recover(); r != nil {
			s.log.ErrorContext(ss.Context(), "grpc: panic", "method", info.FullMethod, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			err = status.Error(codes.Internal, "internal error")
		}
		s.finish(ss.Context(), methodType(info.IsClientStream, info.IsServerStream), svc, method, err, start)
	}()
	return handler(srv, ss)
}

// finish records a call's metrics and logs it: INTERNAL at ERROR with its cause (the client
// read only "internal error"), other codes at INFO.
func (s *Server) finish(ctx context.Context, typ, svc, method string, err error, start time.Time) {
	elapsed := time.Since(start)
	code := status.Code(err)
	s.metrics.observe(typ, svc, method, code, elapsed)
	level := slog.LevelInfo
	if code == codes.Internal || code == codes.Unknown {
		level = slog.LevelError
	}
	if !s.log.Enabled(ctx, level) {
		return
	}
	attrs := []slog.Attr{
		slog.String("service", svc), slog.String("method", method), slog.String("code", code.String()),
		slog.Float64("latency_ms", float64(elapsed.Microseconds())/1000),
	}
	if err != nil {
		cause := err
		var ce *causeError
		if errors.As(err, &ce) {
			cause = ce.cause
		}
		attrs = append(attrs, slog.String("error", cause.Error()))
	}
	s.log.LogAttrs(ctx, level, "grpc call", attrs...)
}

// requestIDOf returns the client's x-request-id when it is sane, else a new UUIDv7.
func requestIDOf(ctx context.Context) string {
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get(mdRequestID); len(v) > 0 && saneRequestID(v[0]) {
			return v[0]
		}
	}
	if u, err := uuid.NewV7(); err == nil {
		return u.String()
	}
	return uuid.NewString()
}

// saneRequestID reports whether a client's request id may be kept: 1 to 128 characters of
// [A-Za-z0-9._:-] (the HTTP front door's rule), safe in logs, metadata and database keys.
func saneRequestID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		switch c := id[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			c == '.', c == '_', c == ':', c == '-':
		default:
			return false
		}
	}
	return true
}

type ctxKey int

const ctxKeyPrincipal ctxKey = iota

// principalFrom returns the principal that authenticate put in ctx.
func principalFrom(ctx context.Context) (auth.Principal, bool) {
	p, ok := ctx.Value(ctxKeyPrincipal).(auth.Principal)
	return p, ok
}

// apiKeyOf reads the key of a call: "authorization: Bearer KEY", else "x-api-key: KEY".
func apiKeyOf(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, a := range md.Get(mdAuthorization) {
		if scheme, key, ok := strings.Cut(a, " "); ok && strings.EqualFold(scheme, "Bearer") {
			return strings.TrimSpace(key)
		}
	}
	if v := md.Get(mdAPIKey); len(v) > 0 {
		return strings.TrimSpace(v[0])
	}
	return ""
}

// peerAddr is the client's IP address, the key of the failed-authentication limit.
func peerAddr(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return ""
	}
	if host, _, err := net.SplitHostPort(p.Addr.String()); err == nil {
		return host
	}
	return p.Addr.String()
}

// authenticate requires an API key with the predict scope on every call but the open ones,
// then applies the key's rate limit. Its principal goes into the context.
func (s *Server) authenticate(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if openMethod(info.FullMethod) {
		return handler(ctx, req)
	}
	lim := s.cfg.Limits
	addr := peerAddr(ctx)
	if lim != nil {
		if wait := lim.TakeAuthAttempt(addr); wait > 0 {
			return nil, exhausted(ctx, wait, "too many failed authentications from this address; retry after the retry-after delay")
		}
	}
	key := apiKeyOf(ctx)
	if key == "" || len(key) > maxAPIKeyLen {
		return nil, status.Error(codes.Unauthenticated, `an API key is required: metadata "authorization: Bearer KEY" or "x-api-key: KEY"`)
	}
	p, err := s.cfg.Auth.Authenticate(ctx, key)
	switch {
	case errors.Is(err, auth.ErrUnauthorized):
		return nil, status.Error(codes.Unauthenticated, "the API key is unknown or revoked")
	case err != nil:
		if lim != nil {
			lim.RefundAuthAttempt(addr) // not the client's failure: the key store is down
		}
		return nil, &causeError{status.New(codes.Unavailable, "the API keys cannot be checked now; retry later"), err}
	case p.KeyID == "": // no tenant: nothing it made could be told from another key's
		return nil, status.Error(codes.Unauthenticated, "the API key is unknown or revoked")
	}
	if lim != nil {
		lim.RefundAuthAttempt(addr)
	}
	if !p.Can(auth.ScopePredict) {
		return nil, status.Error(codes.PermissionDenied, "the API key lacks the scope this call needs: predict")
	}
	if lim != nil {
		if ok, wait := lim.TakeKeyRate(ctx, p.KeyID); !ok {
			return nil, exhausted(ctx, wait, "the API key's request rate limit is exceeded; retry after the retry-after delay")
		}
	}
	return handler(context.WithValue(ctx, ctxKeyPrincipal, p), req)
}

// exhausted is RESOURCE_EXHAUSTED with the wait, in whole seconds, in the retry-after
// trailer (as HTTP's Retry-After).
func exhausted(ctx context.Context, wait time.Duration, msg string) error {
	secs := max(1, int64((wait+time.Second-1)/time.Second))
	_ = grpc.SetTrailer(ctx, metadata.Pairs(mdRetryAfter, fmt.Sprint(secs)))
	return status.Error(codes.ResourceExhausted, msg)
}

// causeError is a status for the client with its cause kept for the log.
type causeError struct {
	st    *status.Status
	cause error
}

func (e *causeError) Error() string { return e.st.Message() + ": " + e.cause.Error() }

// GRPCStatus is what gRPC sends: the status alone.
func (e *causeError) GRPCStatus() *status.Status { return e.st }

func (e *causeError) Unwrap() error { return e.cause }
