package prediction_test

import (
	"context"
	"os"
	"testing"

	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/predq/predq/internal/inference"
	"github.com/predq/predq/internal/prediction"
)

// countingTracer counts the spans started through it.
type countingTracer struct {
	trace.Tracer
	started *int
}

func (c countingTracer) Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	*c.started++
	return c.Tracer.Start(ctx, name, opts...)
}

// oneModel resolves every name to the shipped logistic regression.
type oneModel struct{ m *inference.Model }

func (o oneModel) Resolve(string) (*inference.Model, error) { return o.m, nil }

// TestInferenceSpanFollowsTheRequestSpan: the inference span is a child of a recording
// request span, and is not started at all under a span that does not record (a request
// the sampler left out), whose trace id still reaches the logs through its context.
func TestInferenceSpanFollowsTheRequestSpan(t *testing.T) {
	b, err := os.ReadFile("../../models/v1.0.0.json")
	require.NoError(t, err)
	m, err := inference.DecodeArtifact(b)
	require.NoError(t, err)
	features := make([]float64, m.InputSize)
	for i := range features {
		features[i] = 0.01 * float64(i)
	}

	for _, sampled := range []bool{true, false} {
		rec := tracetest.NewSpanRecorder()
		sampler := sdktrace.NeverSample()
		if sampled {
			sampler = sdktrace.AlwaysSample()
		}
		tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sampler), sdktrace.WithSpanProcessor(rec))
		started := 0
		svc, err := prediction.NewService(prediction.ServiceConfig{Models: oneModel{m},
			Tracer: countingTracer{Tracer: tp.Tracer("test"), started: &started}})
		require.NoError(t, err)

		ctx, parent := tp.Tracer("test").Start(context.Background(), "request")
		require.Equal(t, sampled, parent.IsRecording())
		out, err := svc.Predict(ctx, prediction.Input{Features: features, ConfidenceThreshold: 0.5}, prediction.Meta{RequestID: "r"})
		require.NoError(t, err)
		require.Equal(t, m.Version, out.ModelVersion)
		parent.End()

		var inf []sdktrace.ReadOnlySpan
		for _, s := range rec.Ended() {
			if s.Name() == "inference" {
				inf = append(inf, s)
			}
		}
		if !sampled {
			require.Zero(t, started, "no span is started under a span that does not record")
			continue
		}
		require.Equal(t, 1, started)
		require.Len(t, inf, 1)
		require.Equal(t, parent.SpanContext().SpanID(), inf[0].Parent().SpanID())
		require.Equal(t, parent.SpanContext().TraceID(), inf[0].SpanContext().TraceID())
	}
}
