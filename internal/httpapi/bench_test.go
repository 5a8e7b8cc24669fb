package httpapi

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/propagation"

	"github.com/predq/predq/internal/telemetry"
)

// BenchmarkPredictChain runs one POST /api/v1/predict through the api's whole middleware
// chain and handler, configured as cmd/api runs it without an exporter (spans with ids only,
// access log at warn), on the fake predictor: what the api spends on a request besides
// net/http's serving and the prediction service. The body is a sonar-like row of 60
// features written at full precision.
func BenchmarkPredictChain(b *testing.B) {
	benchChain(b, "/api/v1/predict", benchSample())
}

// BenchmarkPredictBatchChain is BenchmarkPredictChain for one POST /api/v1/predict/batch of
// 1,000 such samples (the default limit), answered by the fake predictor.
func BenchmarkPredictBatchChain(b *testing.B) {
	body := `{"samples":[` + strings.TrimSuffix(strings.Repeat(benchSample()+",", 1000), ",") + `]}`
	benchChain(b, "/api/v1/predict/batch", body)
}

// benchSample is a predict body of 60 features written at full precision.
func benchSample() string {
	var sb strings.Builder
	sb.WriteString(`{"features":[`)
	for i := range 60 {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString("0.0123456789012345")
	}
	sb.WriteString(`]}`)
	return sb.String()
}

// benchChain posts body to path on a server configured as BenchmarkPredictChain says.
func benchChain(b *testing.B, path, body string) {
	tp, shutdown, err := telemetry.TracerProvider(context.Background(), "bench", "test", "")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = shutdown(context.Background()) })
	s, _ := setup(b, func(c *Config) {
		// The api as it runs at LOG_LEVEL=warn: a JSON handler whose lines are built and dropped.
		c.Logger = slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn})) //nolint:sloglint // a real handler, not DiscardHandler, is what is measured
		c.TracerProvider = tp
		c.Propagator = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	})
	h := s.Handler()
	rec := httptest.NewRecorder()
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+testKey)
		rec.Body.Reset()
		clear(rec.Header())
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	}
}
