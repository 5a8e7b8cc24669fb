package httpapi

import (
	"bufio"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/predq/predq/internal/telemetry"
)

// setupTraced builds a Server whose spans land in the returned recorder and whose log is
// telemetry's context-aware JSON logger (as in cmd/api).
func setupTraced(t *testing.T) (*Server, *testBundle, *tracetest.SpanRecorder) {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(t.Context()) })
	logs := &syncBuffer{}
	s, b := setup(t, func(c *Config) {
		c.TracerProvider = tp
		c.Logger = telemetry.NewLogger(logs, "debug", "api")
		c.MetricsHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("up 1\n")) })
	})
	b.logs = logs
	return s, b, rec
}

// accessLine returns the one access-log line of the request id.
func accessLine(t *testing.T, logs, requestID string) map[string]any {
	t.Helper()
	var line map[string]any
	sc := bufio.NewScanner(strings.NewReader(logs))
	for sc.Scan() {
		var m map[string]any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &m), sc.Text())
		if m["msg"] == "http request" && m["request_id"] == requestID {
			require.Nil(t, line, "one access-log line per request")
			line = m
		}
	}
	require.NotNil(t, line, "no access-log line for %s in:\n%s", requestID, logs)
	return line
}

func TestTraceServerSpans(t *testing.T) {
	t.Parallel()

	t.Run("a request gets a server span that continues the caller's trace", func(t *testing.T) {
		t.Parallel()
		s, b, spans := setupTraced(t)
		const parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
		rec := do(t, s, request{method: http.MethodPost, path: "/api/v1/predict", body: `{"features":[1]}`,
			header: map[string]string{"X-Request-ID": "trace-req-1", "traceparent": parent}})
		require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())

		ended := spans.Ended()
		require.Len(t, ended, 1)
		span := ended[0]
		require.Equal(t, "POST /api/v1/predict", span.Name())
		require.Equal(t, trace.SpanKindServer, span.SpanKind())
		require.Equal(t, "4bf92f3577b34da6a3ce929d0e0e4736", span.SpanContext().TraceID().String())
		require.Equal(t, "00f067aa0ba902b7", span.Parent().SpanID().String())
		require.True(t, span.Parent().IsRemote())

		// The feature is called inside the span: what it enqueues carries the trace.
		b.predictor.mu.Lock()
		got := trace.SpanContextFromContext(b.predictor.ctx)
		b.predictor.mu.Unlock()
		require.Equal(t, span.SpanContext().SpanID(), got.SpanID())

		// The access log names the span.
		line := accessLine(t, b.logs.String(), "trace-req-1")
		require.Equal(t, span.SpanContext().TraceID().String(), line["trace_id"])
		require.Equal(t, span.SpanContext().SpanID().String(), line["span_id"])
	})

	t.Run("a request without traceparent starts a new trace", func(t *testing.T) {
		t.Parallel()
		s, b, spans := setupTraced(t)
		rec := do(t, s, request{path: "/api/v1/models", header: map[string]string{"X-Request-ID": "trace-req-2"}})
		require.Equal(t, http.StatusOK, rec.Code)
		ended := spans.Ended()
		require.Len(t, ended, 1)
		require.Equal(t, "GET /api/v1/models", ended[0].Name())
		require.False(t, ended[0].Parent().IsValid())
		require.Equal(t, ended[0].SpanContext().TraceID().String(), accessLine(t, b.logs.String(), "trace-req-2")["trace_id"])
	})

	t.Run("a 5xx marks the span as an error", func(t *testing.T) {
		t.Parallel()
		s, b, spans := setupTraced(t)
		b.predictor.panic = "boom"
		rec := do(t, s, request{method: http.MethodPost, path: "/api/v1/predict", body: `{"features":[1]}`})
		require.Equal(t, http.StatusInternalServerError, rec.Code)
		ended := spans.Ended()
		require.Len(t, ended, 1)
		require.Equal(t, codes.Error, ended[0].Status().Code)
	})

	t.Run("metrics and health probes get no span", func(t *testing.T) {
		t.Parallel()
		s, _, spans := setupTraced(t)
		for _, p := range []string{"/health", "/health/live", "/health/ready", "/metrics"} {
			require.Equal(t, http.StatusOK, do(t, s, request{path: p}).Code, p)
		}
		require.Empty(t, spans.Ended())
	})

	t.Run("without a tracer provider there is no span and no trace id", func(t *testing.T) {
		t.Parallel()
		logs := &syncBuffer{}
		s, b := setup(t, func(c *Config) { c.Logger = telemetry.NewLogger(logs, "debug", "api") })
		rec := do(t, s, request{method: http.MethodPost, path: "/api/v1/predict", body: `{"features":[1]}`,
			header: map[string]string{"X-Request-ID": "trace-req-3"}})
		require.Equal(t, http.StatusOK, rec.Code)
		b.predictor.mu.Lock()
		require.False(t, trace.SpanContextFromContext(b.predictor.ctx).IsValid())
		b.predictor.mu.Unlock()
		require.NotContains(t, accessLine(t, logs.String(), "trace-req-3"), "trace_id")
	})
}

// TestTraceIDsOnlyWhenNothingRecords: with the provider that records no span (no exporter),
// a request still continues the caller's trace, or starts one, and its ids reach the
// handler's context and the access log. (Not parallel: it sets OTEL_TRACES_SAMPLER.)
func TestTraceIDsOnlyWhenNothingRecords(t *testing.T) {
	t.Setenv("OTEL_TRACES_SAMPLER", "")
	tp, shutdown, err := telemetry.TracerProvider(t.Context(), "api", "test", "")
	require.NoError(t, err)
	t.Cleanup(func() { _ = shutdown(t.Context()) })
	require.True(t, telemetry.RecordsNothing(tp))
	logs := &syncBuffer{}
	s, b := setup(t, func(c *Config) {
		c.TracerProvider = tp
		c.Logger = telemetry.NewLogger(logs, "debug", "api")
	})
	const parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	rec := do(t, s, request{method: http.MethodPost, path: "/api/v1/predict", body: `{"features":[1]}`,
		header: map[string]string{"X-Request-ID": "trace-req-4", "traceparent": parent}})
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	b.predictor.mu.Lock()
	got := trace.SpanFromContext(b.predictor.ctx)
	b.predictor.mu.Unlock()
	require.False(t, got.IsRecording())
	sc := got.SpanContext()
	require.Equal(t, "4bf92f3577b34da6a3ce929d0e0e4736", sc.TraceID().String(), "the caller's trace")
	require.True(t, sc.HasSpanID())
	require.NotEqual(t, "00f067aa0ba902b7", sc.SpanID().String(), "a span of its own")
	line := accessLine(t, logs.String(), "trace-req-4")
	require.Equal(t, sc.TraceID().String(), line["trace_id"])
	require.Equal(t, sc.SpanID().String(), line["span_id"])

	// Without traceparent: a new trace, in the log too.
	rec = do(t, s, request{method: http.MethodPost, path: "/api/v1/predict", body: `{"features":[1]}`,
		header: map[string]string{"X-Request-ID": "trace-req-5"}})
	require.Equal(t, http.StatusOK, rec.Code)
	b.predictor.mu.Lock()
	sc = trace.SpanContextFromContext(b.predictor.ctx)
	b.predictor.mu.Unlock()
	require.True(t, sc.IsValid())
	require.NotEqual(t, "4bf92f3577b34da6a3ce929d0e0e4736", sc.TraceID().String())
	require.Equal(t, sc.TraceID().String(), accessLine(t, logs.String(), "trace-req-5")["trace_id"])
}

// canonicalCarrier answers what propagation.HeaderCarrier answers, for the propagators'
// lower-case names and any other, and the trace context, its state and the baggage reach the
// request's context through it.
func TestCanonicalCarrierReadsWhatHeaderCarrierReads(t *testing.T) {
	h := http.Header{}
	h.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	h.Set("tracestate", "vendor=opaque")
	h.Set("baggage", "tenant=acme")
	h.Set("X-Other", "x")
	for _, k := range []string{"traceparent", "tracestate", "baggage", "x-other", "X-Other", "absent"} {
		require.Equal(t, propagation.HeaderCarrier(h).Get(k), canonicalCarrier(h).Get(k), k)
	}
	require.ElementsMatch(t, propagation.HeaderCarrier(h).Keys(), canonicalCarrier(h).Keys())
	require.Empty(t, canonicalCarrier(http.Header{}).Get("traceparent"))

	prop := propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	ctx := prop.Extract(t.Context(), canonicalCarrier(h))
	sc := trace.SpanContextFromContext(ctx)
	require.Equal(t, "4bf92f3577b34da6a3ce929d0e0e4736", sc.TraceID().String())
	require.Equal(t, "vendor=opaque", sc.TraceState().String())
	require.Equal(t, "acme", baggage.FromContext(ctx).Member("tenant").Value())
}
