package prediction_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/predq/predq/internal/inference"
	"github.com/predq/predq/internal/prediction"
	"github.com/predq/predq/internal/redistest"
)

// BenchmarkServicePredictHit is one cache hit through the Service: validation, the key, the
// lookup in a real Redis (a pipeline of one), the answer and its metrics.
func BenchmarkServicePredictHit(b *testing.B) {
	art, err := os.ReadFile("../../models/v2.0.0.json")
	if err != nil {
		b.Fatal(err)
	}
	m, err := inference.DecodeArtifact(art)
	if err != nil {
		b.Fatal(err)
	}
	srv := redistest.New(b)
	cache := prediction.NewCache(srv.Client(b), time.Hour, time.Second, nil, nil)
	svc, err := prediction.NewService(prediction.ServiceConfig{Models: oneModel{m}, Cache: cache})
	if err != nil {
		b.Fatal(err)
	}
	features := make([]float64, m.InputSize)
	for i := range features {
		features[i] = 0.01 * float64(i)
	}
	in := prediction.Input{Features: features, ConfidenceThreshold: 0.5}
	ctx := context.Background()
	if out, err := svc.Predict(ctx, in, prediction.Meta{RequestID: "warm"}); err != nil || out.Cached {
		b.Fatal("the first answer is computed", err)
	}
	b.ReportAllocs()
	for b.Loop() {
		out, err := svc.Predict(ctx, in, prediction.Meta{RequestID: "r"})
		if err != nil || !out.Cached {
			b.Fatal("not a cache hit", err)
		}
	}
}
