package tasks

import (
	"fmt"
	"testing"

	"github.com/predq/predq/internal/prediction"
)

// BenchmarkPersistPayload encodes and decodes the payload of a 50-record batch of sonar-like
// records (60 features of 4 decimals):
//
//	go test -run '^$' -bench PersistPayload -benchmem ./internal/tasks/
func BenchmarkPersistPayload(b *testing.B) {
	recs := make([]prediction.Record, 50)
	for i := range recs {
		f := make([]float64, 60)
		for j := range f {
			f[j] = float64((i*61+j*17)%10000) / 10000
		}
		recs[i] = prediction.Record{RequestID: fmt.Sprintf("r-%d", i), Features: f, Prediction: 0.75, Confidence: 0.75,
			PredictionClass: prediction.ClassPositive, ModelVersion: "v1.0.0", Preprocessing: "standard", ConfidenceThreshold: 0.5}
	}
	p, err := marshalPersistBatch(recs)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("encode", func(b *testing.B) {
		for b.Loop() {
			if _, err := marshalPersistBatch(recs); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(len(p)), "payload-bytes")
	})
	b.Run("decode", func(b *testing.B) {
		for b.Loop() {
			var out []prediction.Record
			if err := unmarshalPersist(p, &out); err != nil {
				b.Fatal(err)
			}
		}
	})
}
