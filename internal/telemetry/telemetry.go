// Package telemetry sets up what every process reports: slog JSON logs carrying request and
// trace ids, a Prometheus registry (no globals), and the OpenTelemetry tracer provider.
package telemetry

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
)

type ctxKey int

const requestIDKey ctxKey = 1

// WithRequestID returns a context carrying the request id, which every log line made with
// that context shows.
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey, id)
}

// RequestID returns the request id of ctx, or "".
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey).(string)
	return id
}

// NewLogger returns a JSON slog logger at level ("debug", "info", "warn", "error") whose
// records carry request_id, trace_id and span_id from the context.
func NewLogger(w io.Writer, level, service string) *slog.Logger {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(strings.ToUpper(level))); err != nil {
		lv = slog.LevelInfo
	}
	h := slog.NewJSONHandler(w, &slog.HandlerOptions{Level: lv})
	return slog.New(contextHandler{h}).With("service", service)
}

type contextHandler struct{ slog.Handler }

func (h contextHandler) Handle(ctx context.Context, r slog.Record) error {
	if id := RequestID(ctx); id != "" && !hasAttr(r, "request_id") {
		r.AddAttrs(slog.String("request_id", id))
	}
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return h.Handler.Handle(ctx, r)
}

func hasAttr(r slog.Record, key string) bool {
	found := false
	r.Attrs(func(a slog.Attr) bool {
		found = a.Key == key
		return !found
	})
	return found
}

func (h contextHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return contextHandler{h.Handler.WithAttrs(as)}
}

func (h contextHandler) WithGroup(name string) slog.Handler {
	return contextHandler{h.Handler.WithGroup(name)}
}

// NewRegistry returns a Prometheus registry with the Go runtime and process collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// MetricsHandler serves reg in the Prometheus text format.
func MetricsHandler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg, EnableOpenMetrics: false})
}

// TracerProvider sets up tracing for a process. With an endpoint it exports spans over
// OTLP/HTTP. Without one, and without extra span processors (tests' in-memory exporters),
// nothing would read a span: spans are then not recorded (sampler AlwaysOff, unless
// OTEL_TRACES_SAMPLER names another), but each still has its trace and span ids, which reach
// logs and task headers. Recording spans that nobody exports cost the api some 8% of its
// CPU per prediction. The returned shutdown flushes pending spans.
func TracerProvider(ctx context.Context, service, version, endpoint string, extra ...sdktrace.SpanProcessor) (trace.TracerProvider, func(context.Context) error, error) {
	res := resource.NewWithAttributes(semconv.SchemaURL,
		semconv.ServiceName(service), semconv.ServiceVersion(version))
	opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
	if endpoint != "" {
		exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(strings.TrimRight(endpoint, "/")+"/v1/traces"))
		if err != nil {
			return nil, nil, fmt.Errorf("otlp exporter: %w", err)
		}
		opts = append(opts, sdktrace.WithBatcher(exp, sdktrace.WithBatchTimeout(2*time.Second)))
	}
	for _, p := range extra {
		opts = append(opts, sdktrace.WithSpanProcessor(p))
	}
	if endpoint == "" && len(extra) == 0 && os.Getenv("OTEL_TRACES_SAMPLER") == "" {
		tp := sdktrace.NewTracerProvider(append(opts, sdktrace.WithSampler(sdktrace.NeverSample()))...)
		return idsOnly{tp}, tp.Shutdown, nil
	}
	tp := sdktrace.NewTracerProvider(opts...)
	return tp, tp.Shutdown, nil
}

// idsOnly is a TracerProvider whose spans are never recorded: they carry ids, nothing else.
type idsOnly struct{ *sdktrace.TracerProvider }

func (idsOnly) recordsNothing() {}

// RecordsNothing reports whether tp is one that TracerProvider returned to record no span
// at all. Instrumentation may then skip the attributes and names that only a recorded span
// keeps, and give each request just its trace context.
func RecordsNothing(tp trace.TracerProvider) bool {
	_, ok := tp.(interface{ recordsNothing() })
	return ok
}

// SetGlobal installs tp and the W3C trace-context propagator as the process-wide defaults,
// which contrib instrumentation (otelecho, redisotel, otelpgx) reads.
func SetGlobal(tp trace.TracerProvider) {
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
}
