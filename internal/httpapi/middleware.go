package httpapi

import (
	"context"
	"errors"
	"fmt"
	oteltrace "go.opentelemetry.io/otel/trace"
	"log/slog"
	"net/http"
	"net/url"
	"runtime/debug"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"go.opentelemetry.io/contrib/instrumentation/github.com/labstack/echo/otelecho"
	"go.opentelemetry.io/otel/propagation"

	"github.com/predq/predq/internal/auth"
	"github.com/predq/predq/internal/telemetry"
)

// headerRequestID carries the request id both ways (X-Request-ID: header names are
// case-insensitive). It is spelled in Go's canonical form, which net/http writes on the wire
// anyway, so that reading and setting it does not build the canonical key each time (two
// allocations a request).
const headerRequestID = "X-Request-Id"

type ctxKey int

const ctxKeyPrincipal ctxKey = iota

// requestIDFrom returns the request id that the requestID middleware put in ctx (in
// telemetry's key, which the logs read too).
func requestIDFrom(ctx context.Context) string { return telemetry.RequestID(ctx) }

// principalFrom returns the principal that the authenticate middleware put in ctx.
func principalFrom(ctx context.Context) (auth.Principal, bool) {
	p, ok := ctx.Value(ctxKeyPrincipal).(auth.Principal)
	return p, ok
}

// saneRequestID reports whether a client's X-Request-ID may be kept: 1 to 128 characters of
// [A-Za-z0-9._:-], so that it is safe in logs, headers and database keys.
func saneRequestID(id string) bool {
	if len(id) == 0 || len(id) > 128 {
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

// requestID takes X-Request-ID from the request when it is sane, else makes a UUIDv7; puts
// it in the request context and on the response. A UUIDv7 starts with its time in
// milliseconds, so the ids the api makes sort by time and each tenant's part of the index on
// predictions (user_id, request_id, …) grows at its right edge: with random (v4) ids every
// insert lands on a random leaf page, which costs Postgres more CPU per row (README
// Benchmarks). The request id is a correlation field; the stored key is the prediction's own
// id (prediction.NewID).
func (s *Server) requestID(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		req := c.Request()
		id := req.Header.Get(headerRequestID)
		if !saneRequestID(id) {
			id = newRequestID()
		}
		c.Response().Header().Set(headerRequestID, id)
		// In telemetry's key, so that every log line made with this context, in any package,
		// carries request_id.
		ctx := telemetry.WithRequestID(req.Context(), id)
		c.SetRequest(req.WithContext(ctx))
		return next(c)
	}
}

// newRequestID returns a UUIDv7, or a UUIDv4 in the unlikely case that the clock or the
// random source fails it.
func newRequestID() string {
	if u, err := uuid.NewV7(); err == nil {
		return u.String()
	}
	return uuid.NewString()
}

// traceServiceName is the server name that the HTTP spans report (server.address when the
// request has no Host).
const traceServiceName = "predq-api"

// trace returns the middleware that starts the server span of each request, or nil when no
// TracerProvider is configured. /metrics and the health probes get no span: they are
// scraped every few seconds and would drown the traces that matter.
func (s *Server) trace() echo.MiddlewareFunc {
	if s.cfg.TracerProvider == nil {
		return nil
	}
	prop := s.cfg.Propagator
	if prop == nil {
		prop = propagation.TraceContext{}
	}
	if telemetry.RecordsNothing(s.cfg.TracerProvider) {
		return traceIDsOnly(s.cfg.TracerProvider.Tracer(traceServiceName), prop)
	}
	return otelecho.Middleware(traceServiceName,
		otelecho.WithTracerProvider(s.cfg.TracerProvider),
		otelecho.WithPropagators(prop),
		otelecho.WithSkipper(skipTracing))
}

// serverSpan are the options of a request's span, made once rather than for each request.
var serverSpan = []oteltrace.SpanStartOption{oteltrace.WithSpanKind(oteltrace.SpanKindServer)}

// traceIDsOnly gives each request a span that no sampler records, continuing the caller's
// trace context when it sends one: its ids reach the access log and the tasks the request
// enqueues, as with otelecho. otelecho would also build the span's name and its
// semantic-convention attributes for every request, which a span that is not recorded drops
// (README Benchmarks).
func traceIDsOnly(tracer oteltrace.Tracer, prop propagation.TextMapPropagator) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if skipTracing(c) {
				return next(c)
			}
			req := c.Request()
			ctx := prop.Extract(req.Context(), canonicalCarrier(req.Header))
			ctx, span := tracer.Start(ctx, "request", serverSpan...)
			defer span.End()
			c.SetRequest(req.WithContext(ctx))
			return next(c)
		}
	}
}

// canonicalCarrier reads the trace headers of a request for a propagator, which asks for them
// in lower case ("traceparent", "tracestate", "baggage"): the canonical spelling of those three
// is known, so the lookup does not build it for each request (three allocations) as
// propagation.HeaderCarrier does. Other names go through http.Header.Get.
type canonicalCarrier http.Header

func (h canonicalCarrier) Get(key string) string {
	var v []string
	switch key {
	case "traceparent":
		v = h["Traceparent"]
	case "tracestate":
		v = h["Tracestate"]
	case "baggage":
		v = h["Baggage"]
	default:
		return http.Header(h).Get(key)
	}
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

func (h canonicalCarrier) Set(key, value string) { http.Header(h).Set(key, value) }

func (h canonicalCarrier) Keys() []string { return propagation.HeaderCarrier(h).Keys() }

// skipTracing names the requests that get no span: /metrics, /health and /health/*.
func skipTracing(c echo.Context) bool {
	p := c.Request().URL.Path
	return p == "/metrics" || p == "/health" || strings.HasPrefix(p, "/health/")
}

// observe calls the error handler for an error returned by the chain (so that the status is
// known here), then writes one access-log line and records the HTTP metrics. The log line
// holds no header and no query string: API keys never reach it. It is written with the
// request context, inside the server span, so a context-aware logger (telemetry.NewLogger)
// adds trace_id and span_id.
func (s *Server) observe(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		s.metrics.inFlight.Inc()
		defer s.metrics.inFlight.Dec()

		if err := next(c); err != nil {
			c.Error(err)
		}

		req, res := c.Request(), c.Response()
		elapsed := time.Since(start)
		route := c.Path()
		if !s.routeSet[req.Method+" "+route] {
			route = "unmatched" // 404, 405: keep the label's values bounded and honest
		}
		status := res.Status
		s.metrics.observe(req.Method, route, status, elapsed)

		level := slog.LevelInfo
		if status >= 500 {
			level = slog.LevelWarn // the error itself is logged once, at ERROR, by handleError
		}
		// Asked first, so that at LOG_LEVEL=warn the attributes (the client IP parsed from
		// the headers, the request id looked up in the context) are not built for a line
		// that is dropped.
		if ctx := req.Context(); s.log.Enabled(ctx, level) {
			s.log.LogAttrs(ctx, level, "http request",
				slog.String("method", req.Method),
				slog.String("path", req.URL.Path),
				slog.String("route", route),
				slog.Int("status", status),
				slog.Float64("latency_ms", float64(elapsed.Microseconds())/1000),
				slog.Int64("bytes", res.Size),
				slog.String("request_id", requestIDFrom(ctx)),
				slog.String("remote_ip", c.RealIP()),
			)
		}
		return nil
	}
}

// panicError is a handler panic turned into an error; the error handler logs its stack.
type panicError struct {
	value any
	stack string
}

func (e *panicError) Error() string { return fmt.Sprintf("panic: %v", e.value) }

// recoverPanics turns a panic in a handler into a 500 problem. http.ErrAbortHandler keeps
// its meaning (abort the response silently).
func (s *Server) recoverPanics(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) (err error) {
		defer func() {
			if r := recover(); r != nil {
				if e, ok := r.(error); ok && errors.Is(e, http.ErrAbortHandler) {
					panic(r)
				}
				err = &panicError{value: r, stack: string(debug.Stack())}
			}
		}()
		return next(c)
	}
}

// bodyLimit refuses request bodies larger than limit bytes with 413: at once when
// Content-Length says so, else when the handler reads past the limit (*http.MaxBytesError,
// which also makes the server close the connection instead of draining it).
func bodyLimit(limit int64, skip func(echo.Context) bool) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if skip(c) {
				return next(c) // the route applies its own limit
			}
			req := c.Request()
			if req.ContentLength > limit {
				return &http.MaxBytesError{Limit: limit}
			}
			if req.Body != nil && req.Body != http.NoBody {
				req.Body = http.MaxBytesReader(c.Response().Writer, req.Body, limit)
			}
			return next(c)
		}
	}
}

// maxCompressing bounds the responses compressed at once; past it responses go out
// uncompressed. Echo's gzip writer takes a flate compressor (about a megabyte) for every
// response to a client that accepts gzip, even one too short to compress, and keeps it
// pooled: without a bound a burst of concurrent requests holds one compressor each.
const maxCompressing = 16

// gzip compresses responses for clients that accept it, except short ones, those that
// skipCompression names, and those past maxCompressing at once.
func gzip() echo.MiddlewareFunc {
	gz := middleware.GzipWithConfig(middleware.GzipConfig{MinLength: 1024})
	slots := make(chan struct{}, maxCompressing)
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		compressed := gz(next)
		return func(c echo.Context) error {
			if skipCompression(c) || !strings.Contains(c.Request().Header.Get(echo.HeaderAcceptEncoding), "gzip") {
				return next(c)
			}
			select {
			case slots <- struct{}{}:
				defer func() { <-slots }()
				return compressed(c)
			default:
				return next(c)
			}
		}
	}
}

// skipCompression names the responses gzip must leave alone: /metrics (the Prometheus
// handler negotiates its own compression) and streams, which must reach the client as they
// are written — any path ending in /events, and any request that asks for text/event-stream
// or application/x-ndjson.
func skipCompression(c echo.Context) bool {
	req := c.Request()
	p := req.URL.Path
	if strings.HasSuffix(p, "/events") || p == "/metrics" {
		return true
	}
	accept := req.Header.Get(echo.HeaderAccept)
	return strings.Contains(accept, "text/event-stream") || strings.Contains(accept, "application/x-ndjson")
}

// originSet holds the CORS origins, normalized ("https://app.example.com"); any means "*".
type originSet struct {
	any     bool
	origins map[string]bool
}

func (o originSet) empty() bool { return !o.any && len(o.origins) == 0 }

func (o originSet) allows(origin string) bool {
	if o.any {
		return true
	}
	n, ok := normalizeOrigin(origin)
	return ok && o.origins[n]
}

// parseOrigins checks and normalizes the configured CORS origins.
func parseOrigins(list []string) (originSet, error) {
	set := originSet{origins: map[string]bool{}}
	for _, raw := range list {
		raw = strings.TrimSpace(raw)
		if raw == "" {
			continue
		}
		if raw == "*" {
			set.any = true
			continue
		}
		n, ok := normalizeOrigin(raw)
		if !ok {
			return originSet{}, fmt.Errorf("httpapi: AllowedOrigins: %q is not an origin like https://app.example.com", raw)
		}
		set.origins[n] = true
	}
	return set, nil
}

// normalizeOrigin returns scheme://host[:port] in lower case, or false when s is not an
// http(s) origin.
func normalizeOrigin(s string) (string, bool) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", false
	}
	return strings.ToLower(u.Scheme + "://" + u.Host), true
}

// cors returns the CORS middleware for the configured origins, or nil when none are. The
// allowed origin is echoed back (never "*" with credentials: credentials are not allowed at
// all, API keys travel in headers that the preflight allows).
func (s *Server) cors() echo.MiddlewareFunc {
	if s.origins.empty() {
		return nil
	}
	origins := s.origins
	return middleware.CORSWithConfig(middleware.CORSConfig{
		AllowOriginFunc: func(origin string) (bool, error) { return origins.allows(origin), nil },
		AllowMethods:    []string{http.MethodGet, http.MethodHead, http.MethodPost},
		AllowHeaders: []string{echo.HeaderAuthorization, "X-API-Key", echo.HeaderContentType,
			"X-Request-ID", "Idempotency-Key"},
		ExposeHeaders: []string{"X-Request-ID", "Retry-After", echo.HeaderLocation, echo.HeaderWWWAuthenticate,
			"RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "RateLimit-Policy"},
		AllowCredentials: false,
		MaxAge:           600,
	})
}

// maxAPIKeyLen bounds the key handed to the Authenticator.
const maxAPIKeyLen = 512

// apiKeyFrom returns the API key of a request: Authorization: Bearer <key>, else
// X-API-Key: <key>.
func apiKeyFrom(h http.Header) string {
	if a := h.Get(echo.HeaderAuthorization); a != "" {
		scheme, key, ok := strings.Cut(a, " ")
		if ok && strings.EqualFold(scheme, "Bearer") {
			return strings.TrimSpace(key)
		}
	}
	return strings.TrimSpace(h.Get("X-API-Key"))
}

// authenticate requires an API key and puts its principal in the request context.
func (s *Server) authenticate(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		req := c.Request()
		addr := c.RealIP()
		if err := s.authAllowed(addr); err != nil {
			return err
		}
		key := apiKeyFrom(req.Header)
		if key == "" || len(key) > maxAPIKeyLen {
			return auth.ErrUnauthorized
		}
		p, err := s.deps.Auth.Authenticate(req.Context(), key)
		if err != nil {
			if !errors.Is(err, auth.ErrUnauthorized) {
				s.authSucceeded(addr) // not the client's failure: the store is down
			}
			return fmt.Errorf("authenticate: %w", err)
		}
		if p.KeyID == "" { // no tenant: nothing it made could be told from another key's
			return auth.ErrUnauthorized
		}
		s.authSucceeded(addr)
		c.SetRequest(req.WithContext(context.WithValue(req.Context(), ctxKeyPrincipal, p)))
		return next(c)
	}
}

// authAllowed takes a token of the failed-authentication allowance of addr before its
// credentials are checked, and refuses the address with 429 when none is left: it is not
// checked at all, so that guessing keys costs neither a lookup nor memory. A check that
// succeeds gives its token back (authSucceeded).
func (s *Server) authAllowed(addr string) error {
	if s.authFail == nil {
		return nil
	}
	if wait := s.authFail.take(addr); wait > 0 {
		return &problemError{
			status: http.StatusTooManyRequests,
			slug:   slugRateLimited,
			title:  "Too many requests",
			detail: "Too many failed authentications from this address; retry after the Retry-After delay.",
			header: retryAfter(wait),
		}
	}
	return nil
}

// authSucceeded gives back the token that authAllowed took for addr.
func (s *Server) authSucceeded(addr string) {
	if s.authFail != nil {
		s.authFail.refund(addr)
	}
}

// tenantOf returns the tenant of the request: its key's KeyID, under which every resource
// the key makes is stored and by which every read is filtered.
func tenantOf(c echo.Context) string {
	p, _ := principalFrom(c.Request().Context())
	return p.KeyID
}

// requireScope refuses, with 403 naming the scope, a key that lacks scope. It runs after
// authenticate.
func requireScope(scope auth.Scope) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if p, _ := principalFrom(c.Request().Context()); !p.Can(scope) {
				return forbidden(scope)
			}
			return next(c)
		}
	}
}

// forbidden is the problem of a key without scope.
func forbidden(scope auth.Scope) *problemError {
	return &problemError{
		status: http.StatusForbidden,
		slug:   slugForbidden,
		title:  "Forbidden",
		detail: "The API key lacks the scope this route needs: " + string(scope) + ".",
	}
}

// rateLimit applies the per-key limit (a no-op when rate limiting is off): in Redis, shared
// by every replica, when Config.RateRedis is set, else per process. It runs after
// authenticate, so it limits keys, not addresses. Every answer of a limited route carries
// the RateLimit-* headers; a refusal is 429 with Retry-After.
func (s *Server) rateLimit(next echo.HandlerFunc) echo.HandlerFunc {
	if s.limiter == nil {
		return next
	}
	return func(c echo.Context) error {
		key := tenantOf(c)
		var d rateDecision
		if s.shared != nil {
			d = s.shared.take(c.Request().Context(), key)
		} else {
			d = s.limiter.take(key)
		}
		d.header(c.Response().Header(), s.cfg.RateBurst, s.cfg.RateLimit)
		if !d.allowed {
			return &problemError{
				status: http.StatusTooManyRequests,
				slug:   slugRateLimited,
				title:  "Too many requests",
				detail: "The API key's request rate limit is exceeded; retry after the Retry-After delay.",
				header: retryAfter(d.retryAfter),
			}
		}
		return next(c)
	}
}
