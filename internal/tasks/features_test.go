package tasks

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	"github.com/stretchr/testify/require"

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
		{"binary", func(v any) ([]byte, error) { return marshalPersistBatch(v.([]prediction.Record)) }, unmarshalPersist},
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

// persistMarshal is the jsonv2 form of the persist payload encoders (jsonv2 with the
// features as appendFeatures writes them), their reference in TestAppendPersistRecordIsJSONv2.
var persistMarshal = jsonv2.WithMarshalers(jsonv2.MarshalToFunc(func(enc *jsontext.Encoder, fs []float64) error {
	out, err := appendFeatures(nil, fs)
	if err != nil {
		return err
	}
	return enc.WriteValue(out)
}))

// TestAppendPersistRecordIsJSONv2: the persist payload encoders write the bytes of
// jsonv2.Marshal with persistMarshal, for records and slices of them, and fail where it
// fails.
func TestAppendPersistRecordIsJSONv2(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(3, 4))
	strs := []string{"", "r-1", "v2.0.0", `q"uote`, `back\\slash`, "<html>&", "é ü", "\u2028\u2029", "tab\t\x01", "\xff\xfe", "日本"}
	floats := []float64{0, math.Copysign(0, -1), 0.5, 1, 1e-7, 1e21, 123.456, 5e-324, math.MaxFloat64, 0.1 + 0.2}
	pick := func(xs []float64) float64 {
		if rng.IntN(3) == 0 {
			return xs[rng.IntN(len(xs))]
		}
		return math.Float64frombits(rng.Uint64())
	}
	var recs []prediction.Record
	for i := range 3000 {
		var fs []float64
		switch i % 4 {
		case 0:
			fs = nil
		case 1:
			fs = []float64{}
		default:
			fs = make([]float64, rng.IntN(101))
			for j := range fs {
				fs[j] = pick(floats)
			}
		}
		recs = append(recs, prediction.Record{
			RequestID: strs[rng.IntN(len(strs))], UserID: strs[rng.IntN(len(strs))], Features: fs,
			Prediction: pick(floats), Confidence: pick(floats), PredictionClass: strs[rng.IntN(len(strs))],
			ModelVersion: strs[rng.IntN(len(strs))], Preprocessing: strs[rng.IntN(len(strs))],
			ConfidenceThreshold: pick(floats), Cached: i%2 == 0, LatencyMS: pick(floats),
			CreatedAt: time.Unix(rng.Int64N(1<<33), rng.Int64N(1e9)).In(time.FixedZone("z", 3600*(rng.IntN(25)-12))),
		})
	}
	recs = append(recs, prediction.Record{RequestID: "far", CreatedAt: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)})
	ok, failed := 0, 0
	check := func(v any) {
		if r, ok := v.(prediction.Record); ok {
			v = []prediction.Record{r}
		}
		want, wantErr := jsonv2.Marshal(v, persistMarshal)
		var got []byte
		var gotErr error
		got, gotErr = marshalPersistBatch(v.([]prediction.Record))
		if wantErr != nil {
			require.Error(t, gotErr, "jsonv2 failed with %v", wantErr)
			failed++
			return
		}
		require.NoError(t, gotErr)
		require.Equal(t, string(want), string(got))
		ok++
	}
	for _, r := range recs {
		check(r)
	}
	for i := 0; i+7 <= len(recs); i += 7 {
		check(recs[i : i+7])
	}
	check([]prediction.Record{})
	require.Greater(t, ok, 500)
	require.Greater(t, failed, 100)
}
