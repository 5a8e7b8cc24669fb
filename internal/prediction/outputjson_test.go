package prediction

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestOutputAppendJSON checks AppendJSON against encoding/json, byte for byte, on outputs
// with floats across every magnitude and format boundary, strings that need escaping and
// timestamps with and without fractions and zones.
func TestOutputAppendJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	floats := []float64{0, math.Copysign(0, -1), 1, 0.5, 1e-6, 9.999999999999999e-7, 1e-7, 1.5e-10, 1e21,
		9.99999999999999e20, 1e-300, 5e-324, math.MaxFloat64, -1e-7, 0.1 + 0.2, 123456789.125, 1e20}
	for range 2000 {
		floats = append(floats, math.Float64frombits(rng.Uint64()&^(0x7ff<<52)|uint64(rng.IntN(2047))<<52), rng.Float64(),
			rng.Float64()*math.Pow(10, float64(rng.IntN(60)-30)))
	}
	strs := []string{"", "v2.0.0", "positive", "req-1", `a"b`, `a\b`, "<script>&", "é", "\u2028", "tab\tx", "\x7f", "\xff", "ok~_-.:/"}
	times := []time.Time{
		time.Date(2026, 11, 26, 13, 1, 2, 0, time.UTC),
		time.Date(2026, 11, 26, 13, 1, 2, 123456789, time.UTC),
		time.Date(2026, 11, 26, 13, 1, 2, 120000000, time.FixedZone("x", 3600)),
		time.Date(9999, 12, 31, 23, 59, 59, 1, time.UTC),
		{},
	}
	n := 0
	for i, f := range floats {
		if math.IsNaN(f) || math.IsInf(f, 0) {
			continue
		}
		o := Output{
			Prediction: f, Confidence: floats[(i+1)%len(floats)], LatencyMS: floats[(i+2)%len(floats)],
			ModelVersion: strs[i%len(strs)], PredictionClass: strs[(i+3)%len(strs)], RequestID: strs[(i+5)%len(strs)],
			Timestamp: times[i%len(times)], Cached: i%2 == 0,
		}
		if c := o.Confidence; math.IsNaN(c) || math.IsInf(c, 0) || math.IsNaN(o.LatencyMS) || math.IsInf(o.LatencyMS, 0) {
			continue
		}
		want, err := json.Marshal(o)
		require.NoError(t, err)
		require.Equal(t, string(want), string(o.AppendJSON(nil)), "output %+v", o)
		n++
	}
	require.Greater(t, n, 5000)
}

func BenchmarkOutputJSON(b *testing.B) {
	o := Output{Prediction: 0.9731234567, Confidence: 0.9731234567, ModelVersion: "v2.0.0", LatencyMS: 0.123,
		Timestamp: time.Now().UTC(), PredictionClass: ClassPositive, RequestID: "0b6c6f4e-8c0a-4a43-9d7f-1f0a5e1d2c3b"}
	b.Run("encoding-json", func(b *testing.B) {
		for b.Loop() {
			if _, err := json.Marshal(o); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("AppendJSON", func(b *testing.B) {
		buf := make([]byte, 0, 512)
		for b.Loop() {
			buf = o.AppendJSON(buf[:0])
		}
	})
}
