package tasks

import (
	"fmt"
	"testing"

	jsonv2 "github.com/go-json-experiment/json"

	"github.com/predq/predq/internal/prediction"
)

// BenchmarkPersistPayload encodes and decodes the payload of a 50-record batch of sonar-like
// records (60 features of 4 decimals), features as numbers (the encoding before) and as
// binary (features.go):
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
	forms := []struct {
		name   string
		encode func(any) ([]byte, error)
		decode func([]byte, any) error
	}{
		{"numbers", func(v any) ([]byte, error) { return jsonv2.Marshal(v) }, func(p []byte, v any) error { return jsonv2.Unmarshal(p, v) }},
		{"binary", marshalPersist, unmarshalPersist},
	}
	for _, f := range forms {
		p, err := f.encode(recs)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(f.name+"/encode", func(b *testing.B) {
			for b.Loop() {
				if _, err := f.encode(recs); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(p)), "payload-bytes")
		})
		b.Run(f.name+"/decode", func(b *testing.B) {
			for b.Loop() {
				var out []prediction.Record
				if err := f.decode(p, &out); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
