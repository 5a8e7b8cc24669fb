package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

func TestLoggerAddsRequestIDOnce(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	l := NewLogger(&buf, "info", "test")
	ctx := WithRequestID(context.Background(), "req-1")
	l.InfoContext(ctx, "from the context")
	l.InfoContext(ctx, "already named", slog.String("request_id", "req-1"))
	l.DebugContext(ctx, "below the level")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	require.Len(t, lines, 2)
	for _, line := range lines {
		require.Equal(t, 1, strings.Count(line, `"request_id"`), line)
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &m))
		require.Equal(t, "req-1", m["request_id"])
		require.Equal(t, "test", m["service"])
	}
}

// Without an exporter nothing reads a span, so spans are not recorded, yet each keeps valid
// ids for logs and task headers; an extra processor, or OTEL_TRACES_SAMPLER, records them.
func TestTracerProviderRecordsOnlyWhenSomethingReads(t *testing.T) {
	// start returns an ended span and whether it was recording before it ended (every
	// span stops recording when it ends).
	var nothing bool // RecordsNothing of the last provider
	start := func(t *testing.T, extra ...sdktrace.SpanProcessor) (trace.Span, bool) {
		t.Helper()
		tp, shutdown, err := TracerProvider(context.Background(), "test", "v0", "", extra...)
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, shutdown(context.Background())) })
		nothing = RecordsNothing(tp)
		_, span := tp.Tracer("t").Start(context.Background(), "op")
		recording := span.IsRecording()
		span.End()
		return span, recording
	}
	t.Setenv("OTEL_TRACES_SAMPLER", "")

	span, recording := start(t)
	require.True(t, nothing, "RecordsNothing")
	require.False(t, recording)
	require.False(t, span.SpanContext().IsSampled())
	require.True(t, span.SpanContext().HasTraceID())
	require.True(t, span.SpanContext().HasSpanID())

	spans := tracetest.NewSpanRecorder()
	span, recording = start(t, spans)
	require.False(t, nothing)
	require.True(t, recording)
	require.True(t, span.SpanContext().IsSampled())
	require.Len(t, spans.Ended(), 1)

	t.Setenv("OTEL_TRACES_SAMPLER", "always_on")
	span, recording = start(t)
	require.False(t, nothing)
	require.True(t, recording)
	require.False(t, RecordsNothing(sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.NeverSample()))),
		"only the providers made here say so")
	require.True(t, span.SpanContext().IsSampled())
}
