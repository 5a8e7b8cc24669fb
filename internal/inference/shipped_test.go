package inference

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// modelsDir holds the shipped artifacts that cmd/train writes.
const modelsDir = "../../models"

// shippedModel is a decoded artifact of modelsDir.
type shippedModel struct {
	file  string
	model *Model
}

// loadShippedModels decodes every artifact of modelsDir, in file name order.
func loadShippedModels(tb testing.TB) []shippedModel {
	tb.Helper()
	files, err := filepath.Glob(filepath.Join(modelsDir, "*.json"))
	require.NoError(tb, err)
	require.NotEmpty(tb, files, "no artifacts in %s: run go run ./cmd/train", modelsDir)
	var out []shippedModel
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(tb, err)
		m, err := DecodeArtifact(b)
		require.NoError(tb, err, f)
		out = append(out, shippedModel{file: filepath.Base(f), model: m})
	}
	return out
}

type goldenInput struct {
	Name     string    `json:"name"`
	Features []float64 `json:"features"`
}

func loadGoldenInputs(tb testing.TB) []goldenInput {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "inputs.json"))
	require.NoError(tb, err)
	var in struct {
		Inputs []goldenInput `json:"inputs"`
	}
	require.NoError(tb, json.Unmarshal(b, &in))
	return in.Inputs
}

// TestShippedModels checks the committed artifacts: what they contain and that their
// cross-validated accuracy meets the targets.
func TestShippedModels(t *testing.T) {
	t.Parallel()

	type want struct {
		kind           string
		preprocessings []string
		minAccuracy    float64
	}
	wants := map[string]want{
		"v1.0.0.json": {KindLogistic, []string{"standard", "minmax"}, 0.75},
		"v2.0.0.json": {KindMLP, []string{"standard", "minmax", "robust"}, 0.82},
	}
	models := loadShippedModels(t)
	require.Len(t, models, len(wants))
	for _, m := range models {
		require.Equal(t, "sonar", m.model.Name, "%s: the artifacts carry the model's name", m.file)
	}
	for _, sm := range models {
		t.Run(sm.file, func(t *testing.T) {
			t.Parallel()
			w, ok := wants[sm.file]
			require.True(t, ok, "unexpected artifact %s", sm.file)
			m := sm.model
			require.Equal(t, sm.file, m.Version+".json")
			require.Equal(t, w.kind, m.Kind)
			require.Equal(t, w.preprocessings, m.Preprocessings())
			require.Equal(t, 60, m.InputSize)
			require.Len(t, m.FeatureNames, 60)
			require.Equal(t, "band_00", m.FeatureNames[0])
			require.Equal(t, "band_59", m.FeatureNames[59])
			require.Equal(t, "M", m.PositiveClass)
			require.Equal(t, "e90434cdbf00fcf93ffa911fe447ae25606979658e60f1d32e155c3b5240234d", m.DatasetSHA256)
			for _, prep := range w.preprocessings {
				metrics, ok := m.Metrics(prep)
				require.True(t, ok)
				require.GreaterOrEqual(t, metrics.Accuracy, w.minAccuracy, prep)
				require.Equal(t, 10, metrics.Folds)
				require.Positive(t, metrics.Repeats)
			}
		})
	}
}

// TestShippedModelsOneMatchesBatch checks PredictOne against PredictBatch for every shipped
// variant, on the golden inputs and 2000 random rows (enough for PredictBatch to split the
// batch between goroutines, given two or more CPUs; TestPredictBatchSplits forces splits).
// Both compute each row with the same functions, so the results are bit-identical; the API
// promises only 1e-12.
func TestShippedModelsOneMatchesBatch(t *testing.T) {
	t.Parallel()

	rows := randomRows(2000, 60, 3)
	for _, in := range loadGoldenInputs(t) {
		rows = append(rows, in.Features)
	}
	for _, sm := range loadShippedModels(t) {
		for _, prep := range sm.model.Preprocessings() {
			requireOneMatchesBatch(t, sm.model, prep, rows, 0)
		}
	}
}

// goldenModel holds a shipped model's predictions (PredictOne) for the golden inputs, per
// preprocessing and input name.
type goldenModel struct {
	File        string                        `json:"file"`
	Checksum    string                        `json:"checksum"`
	Predictions map[string]map[string]float64 `json:"predictions"`
}

// TestGoldenPredictions compares every shipped variant's predictions for
// testdata/inputs.json with testdata/golden_predictions.json (within 1e-12). After
// retraining the models, rewrite it with: go test ./internal/inference/ -run Golden -update
func TestGoldenPredictions(t *testing.T) {
	t.Parallel()

	inputs := loadGoldenInputs(t)
	var got []goldenModel
	for _, sm := range loadShippedModels(t) {
		g := goldenModel{File: sm.file, Checksum: sm.model.Checksum, Predictions: map[string]map[string]float64{}}
		for _, prep := range sm.model.Preprocessings() {
			g.Predictions[prep] = map[string]float64{}
			for _, in := range inputs {
				p, err := sm.model.PredictOne(in.Features, prep)
				require.NoError(t, err)
				g.Predictions[prep][in.Name] = p
			}
		}
		got = append(got, g)
	}

	path := filepath.Join("testdata", "golden_predictions.json")
	if *update {
		b, err := json.MarshalIndent(got, "", "  ")
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(path, append(b, '\n'), 0o644))
		t.Logf("wrote %s", path)
	}
	b, err := os.ReadFile(path)
	require.NoError(t, err, "run with -update to create it")
	var want []goldenModel
	require.NoError(t, json.Unmarshal(b, &want))
	if diff := cmp.Diff(want, got, cmpopts.EquateApprox(0, 1e-12)); diff != "" {
		t.Errorf("predictions differ from %s (-want +got); if the models were retrained on purpose, run with -update:\n%s", path, diff)
	}
}

// randomRows returns n rows of d features drawn uniformly from [0, 1) by PCG(seed, 0).
func randomRows(n, d int, seed uint64) [][]float64 {
	rng := newRand(seed, 0)
	rows := make([][]float64, n)
	for i := range rows {
		rows[i] = make([]float64, d)
		for j := range rows[i] {
			rows[i][j] = rng.float64()
		}
	}
	return rows
}

func BenchmarkPredictOne(b *testing.B) {
	rows := randomRows(1000, 60, 4)
	for _, sm := range loadShippedModels(b) {
		b.Run(fmt.Sprintf("%s/%s", sm.model.Kind, Standard), func(b *testing.B) {
			var i int
			for b.Loop() {
				if _, err := sm.model.PredictOne(rows[i%len(rows)], string(Standard)); err != nil {
					b.Fatal(err)
				}
				i++
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/row")
		})
	}
}

// BenchmarkPredictBatch1000 runs PredictBatch on 1000 rows laid out as a decoded job chunk
// has them (flat: one buffer, which the logistic regression computes as one matrix) and as
// separate allocations (computed one row at a time).
func BenchmarkPredictBatch1000(b *testing.B) {
	src := randomRows(1000, 60, 4)
	flat := make([]float64, len(src)*60)
	rows := make([][]float64, len(src))
	for i := range rows {
		rows[i] = flat[i*60 : (i+1)*60]
		copy(rows[i], src[i])
	}
	out := make([]float64, len(src))
	for _, sm := range loadShippedModels(b) {
		for _, l := range []struct {
			name string
			rows [][]float64
		}{{"flat", rows}, {"separate", src}} {
			b.Run(fmt.Sprintf("%s/%s/%s", sm.model.Kind, Standard, l.name), func(b *testing.B) {
				for b.Loop() {
					if err := sm.model.PredictBatch(l.rows, string(Standard), out); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(l.rows)), "ns/row")
			})
		}
	}
}
