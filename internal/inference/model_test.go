package inference

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
	"gonum.org/v1/gonum/mat"
)

func TestPredictOneKnownValues(t *testing.T) {
	t.Parallel()

	// Standard variant of testArtifact: scaled x = ((x0-0.5)/2, x1/1, (x2+1)/0.25).
	x := []float64{2.5, 0.5, -0.75} // scaled: (1, 0.5, 1)
	tests := []struct {
		kind string
		want float64
	}{
		// z = 1·1 - 2·0.5 + 0.125·1 + 0.25 = 0.375
		{KindLogistic, 1 / (1 + math.Exp(-0.375))},
		// h0 = tanh(1 - 0.5 + 0.5 + 0.1) = tanh(1.1); h1 = tanh(-0.25 + 1 + 0 - 0.2) = tanh(0.55)
		{KindMLP, 1 / (1 + math.Exp(-(1.5*tanh(1.1) - 0.75*tanh(0.55) + 0.05)))},
	}
	for _, tt := range tests {
		t.Run(tt.kind, func(t *testing.T) {
			t.Parallel()
			m, err := NewModel(testArtifact(tt.kind))
			require.NoError(t, err)
			got, err := m.PredictOne(x, "standard")
			require.NoError(t, err)
			require.InDelta(t, tt.want, got, 1e-15)

			out := make([]float64, 1)
			require.NoError(t, m.PredictBatch([][]float64{x}, "standard", out))
			require.InDelta(t, tt.want, out[0], 1e-15)
		})
	}
}

func TestPredictErrors(t *testing.T) {
	t.Parallel()

	for _, kind := range []string{KindLogistic, KindMLP} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			m, err := NewModel(testArtifact(kind))
			require.NoError(t, err)
			good := []float64{1, 2, 3}

			tests := []struct {
				name  string
				rows  [][]float64
				prep  string
				nOut  int
				want  error
				batch bool // only PredictBatch
			}{
				{name: "TooShort", rows: [][]float64{{1, 2}}, prep: "standard", nOut: 1, want: ErrInputSize},
				{name: "TooLong", rows: [][]float64{{1, 2, 3, 4}}, prep: "standard", nOut: 1, want: ErrInputSize},
				{name: "Empty", rows: [][]float64{{}}, prep: "standard", nOut: 1, want: ErrInputSize},
				{name: "NaN", rows: [][]float64{{1, math.NaN(), 3}}, prep: "minmax", nOut: 1, want: ErrInvalidInput},
				{name: "Inf", rows: [][]float64{{1, 2, math.Inf(-1)}}, prep: "minmax", nOut: 1, want: ErrInvalidInput},
				{name: "UnknownPreprocessing", rows: [][]float64{good}, prep: "robust", nOut: 1, want: ErrUnsupportedPreprocessing},
				{name: "CaseMatters", rows: [][]float64{good}, prep: "Standard", nOut: 1, want: ErrUnsupportedPreprocessing},
				{name: "SecondRowBad", rows: [][]float64{good, {1}}, prep: "standard", nOut: 2, want: ErrInputSize, batch: true},
				{name: "OutTooShort", rows: [][]float64{good, good}, prep: "standard", nOut: 1, want: ErrInvalidInput, batch: true},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					if !tt.batch {
						_, err := m.PredictOne(tt.rows[0], tt.prep)
						require.ErrorIs(t, err, tt.want)
					}
					err := m.PredictBatch(tt.rows, tt.prep, make([]float64, tt.nOut))
					require.ErrorIs(t, err, tt.want)
				})
			}

			t.Run("EmptyBatch", func(t *testing.T) {
				require.NoError(t, m.PredictBatch(nil, "standard", nil))
			})
		})
	}
}

func TestModelAccessors(t *testing.T) {
	t.Parallel()

	a := testArtifact(KindMLP)
	m, err := NewModel(a)
	require.NoError(t, err)

	require.Equal(t, "v0.1.0", m.Version)
	require.Equal(t, KindMLP, m.Kind)
	require.Equal(t, 3, m.InputSize)
	require.Equal(t, []string{"a", "b", "c"}, m.FeatureNames)
	require.Equal(t, []string{"standard", "minmax"}, m.Preprocessings())
	require.True(t, m.Supports("minmax"))
	require.False(t, m.Supports("robust"))

	got, ok := m.Metrics("standard")
	require.True(t, ok)
	require.Equal(t, a.Variants[0].Metrics, got)
	_, ok = m.Metrics("robust")
	require.False(t, ok)

	// The model copied the artifact: changing it afterwards changes no prediction.
	x := []float64{0.3, 0.2, 0.1}
	before, err := m.PredictOne(x, "standard")
	require.NoError(t, err)
	a.Variants[0].MLP.HiddenWeights[0][0] = 100
	a.Variants[0].Scaler.Center[0] = 100
	after, err := m.PredictOne(x, "standard")
	require.NoError(t, err)
	require.Equal(t, before, after)
}

// TestPredictOneMatchesBatch checks, on hand-made models, that PredictOne and PredictBatch
// agree bit for bit (see also TestShippedModelsOneMatchesBatch).
func TestPredictOneMatchesBatch(t *testing.T) {
	t.Parallel()

	rng := newRand(1, 2)
	rows := make([][]float64, 300) // > 192 rows: the BLAS multiply goes parallel
	for i := range rows {
		rows[i] = []float64{rng.uniform(3), rng.uniform(3), rng.uniform(3)}
	}
	for _, kind := range []string{KindLogistic, KindMLP} {
		m, err := NewModel(testArtifact(kind))
		require.NoError(t, err)
		for _, prep := range m.Preprocessings() {
			requireOneMatchesBatch(t, m, prep, rows, 0)
		}
	}
}

// requireOneMatchesBatch checks that PredictBatch(rows) agrees with PredictOne on each row
// within delta (0: bit for bit), and returns the batch predictions.
func requireOneMatchesBatch(t *testing.T, m *Model, prep string, rows [][]float64, delta float64) []float64 {
	t.Helper()
	batch := make([]float64, len(rows))
	require.NoError(t, m.PredictBatch(rows, prep, batch))
	for i, r := range rows {
		one, err := m.PredictOne(r, prep)
		require.NoError(t, err)
		if delta == 0 {
			require.Equal(t, math.Float64bits(one), math.Float64bits(batch[i]), "%s %s row %d: %v != %v", m.Version, prep, i, one, batch[i])
		} else {
			require.InDelta(t, one, batch[i], delta, "%s %s row %d", m.Version, prep, i)
		}
		require.True(t, one >= 0 && one <= 1)
	}
	return batch
}

func TestPredictOneAllocations(t *testing.T) {
	for _, kind := range []string{KindLogistic, KindMLP} {
		m, err := NewModel(testArtifact(kind))
		require.NoError(t, err)
		x := []float64{1, 2, 3}
		allocs := testing.AllocsPerRun(100, func() {
			if _, err := m.PredictOne(x, "minmax"); err != nil {
				t.Fatal(err)
			}
		})
		require.Zero(t, allocs, kind)
	}
}

func TestTanh(t *testing.T) {
	t.Parallel()

	for x := -25.0; x <= 25; x += 0.0137 {
		require.InDelta(t, math.Tanh(x), tanh(x), 1e-15, "x = %v", x)
	}
	for _, x := range []float64{0, 1e-300, -1e-10, 1e-8, 20, -20, 20.0001, 700, -700, math.Inf(1), math.Inf(-1)} {
		require.InDelta(t, math.Tanh(x), tanh(x), 1e-15, "x = %v", x)
	}
}

// badFeatureArtifact is testArtifact with a zero weight on feature 1 (in the MLP, in the
// first hidden unit, whose pre-activation PredictOne and PredictBatch check): a NaN or
// infinite feature must be caught even where it meets a zero weight (0·Inf is NaN).
func badFeatureArtifact(kind string) *Artifact {
	a := testArtifact(kind)
	for _, v := range a.Variants {
		switch kind {
		case KindLogistic:
			v.Logistic.Weights[1] = 0
		case KindMLP:
			v.MLP.HiddenWeights[0][1] = 0
		}
	}
	return a
}

// TestPredictNonFiniteFeature checks the errors for a NaN or infinite feature at every
// position, of PredictOne and of PredictBatch (the first bad row, whichever range of the
// batch it falls in), on hand-made models with a zero weight and on the shipped models.
func TestPredictNonFiniteFeature(t *testing.T) {
	t.Parallel()

	models := []*Model{}
	for _, kind := range []string{KindLogistic, KindMLP} {
		m, err := NewModel(badFeatureArtifact(kind))
		require.NoError(t, err)
		models = append(models, m)
	}
	for _, sm := range loadShippedModels(t) {
		models = append(models, sm.model)
	}
	for _, m := range models {
		t.Run(m.Kind+"/"+m.Version, func(t *testing.T) {
			t.Parallel()
			good := randomRows(40, m.InputSize, 8)
			for _, prep := range m.Preprocessings() {
				for j := range m.InputSize {
					for _, bad := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
						x := slices.Clone(good[0])
						x[j] = bad
						want := fmt.Sprintf("model %s: %s: feature %d is %v", m.Version, ErrInvalidInput, j, bad)
						_, err := m.PredictOne(x, prep)
						require.ErrorIs(t, err, ErrInvalidInput)
						require.EqualError(t, err, want)

						// Bad rows at 29 and 35 (and a second bad feature in row 29): row
						// 29 is reported, whatever the split.
						rows := slices.Clone(good)
						rows[29], rows[35] = x, x
						if j+1 < m.InputSize {
							rows[29] = slices.Clone(x)
							rows[29][j+1] = math.Inf(1)
						}
						v := m.variant(prep)
						flat := flatOf(t, m, rows)
						for _, workers := range []int{1, 2, 3, 7} {
							for _, size := range []int{1, 5, 8, 40} {
								err := m.predictBatch(v, rows, flat, make([]float64, len(rows)), workers, size)
								require.EqualError(t, err, "row 29: "+want, "%d workers, blocks of %d", workers, size)
							}
						}
						err = m.PredictBatch(rows, prep, make([]float64, len(rows)))
						require.ErrorIs(t, err, ErrInvalidInput)
						require.EqualError(t, err, "row 29: "+want)
					}
				}
			}
		})
	}

	t.Run("FirstBadRowWins", func(t *testing.T) {
		t.Parallel()
		m, err := NewModel(badFeatureArtifact(KindMLP))
		require.NoError(t, err)
		nan := []float64{1, math.NaN(), 3}
		short := []float64{1, 2}
		err = m.PredictBatch([][]float64{{1, 2, 3}, nan, short}, "standard", make([]float64, 3))
		require.EqualError(t, err, "row 1: model v0.1.0: invalid input: feature 1 is NaN")
		err = m.PredictBatch([][]float64{{1, 2, 3}, short, nan}, "standard", make([]float64, 3))
		require.ErrorIs(t, err, ErrInputSize)
		require.EqualError(t, err, "row 1: model v0.1.0: wrong number of features: got 2, want 3")
	})
}

// TestPredictHugeFiniteFeatures: features too large for the products overflow them, which
// is not an input error (the features are finite); PredictOne and PredictBatch agree.
func TestPredictHugeFiniteFeatures(t *testing.T) {
	t.Parallel()

	for _, kind := range []string{KindLogistic, KindMLP} {
		m, err := NewModel(testArtifact(kind))
		require.NoError(t, err)
		rows := [][]float64{{1e308, -1e308, 1e308}, {1e308, 1, 1}, {-1e308, 1, 1}, {1, 2, 3}}
		for _, prep := range m.Preprocessings() {
			batch := make([]float64, len(rows))
			require.NoError(t, m.PredictBatch(rows, prep, batch))
			for i, r := range rows {
				one, err := m.PredictOne(r, prep)
				require.NoError(t, err)
				require.Equal(t, math.Float64bits(one), math.Float64bits(batch[i]), "%s %s row %d", kind, prep, i)
			}
		}
	}
}

// TestPredictBatchSplits checks that a batch gives the same bits however it is split
// between goroutines.
func TestPredictBatchSplits(t *testing.T) {
	t.Parallel()

	rows := randomRows(1001, 60, 6)
	for _, sm := range loadShippedModels(t) {
		for _, prep := range sm.model.Preprocessings() {
			v := sm.model.variant(prep)
			want := make([]float64, len(rows))
			flat := flatOf(t, sm.model, rows)
			require.NoError(t, sm.model.predictBatch(v, rows, flat, want, 1, len(rows)))
			for _, workers := range []int{2, 3, 8, 2000} {
				for _, size := range []int{1, 8, 100} {
					got := make([]float64, len(rows))
					require.NoError(t, sm.model.predictBatch(v, rows, flat, got, workers, size))
					require.Equal(t, want, got, "%s %s, %d workers, blocks of %d", sm.file, prep, workers, size)
				}
			}
		}
	}
}

// TestFoldedModelMatchesScaled compares Model, whose first layer has the scaler folded in,
// with the arithmetic of training (scale the rows, then the products; forwardScaled) on
// the shipped models and hand-made ones: the two differ only by rounding, observed below
// 4e-15 on the shipped models' probabilities.
func TestFoldedModelMatchesScaled(t *testing.T) {
	t.Parallel()

	type tc struct {
		name string
		a    *Artifact
		rows [][]float64
	}
	var cases []tc
	for _, kind := range []string{KindLogistic, KindMLP} {
		rng := newRand(3, 4)
		rows := make([][]float64, 200)
		for i := range rows {
			rows[i] = []float64{rng.uniform(3), rng.uniform(3), rng.uniform(3)}
		}
		cases = append(cases, tc{kind, testArtifact(kind), rows})
	}
	files, err := filepath.Glob(filepath.Join(modelsDir, "*.json"))
	require.NoError(t, err)
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		a, err := ParseArtifact(b)
		require.NoError(t, err)
		rows := randomRows(2000, a.InputSize, 5)
		for _, in := range loadGoldenInputs(t) {
			rows = append(rows, in.Features)
		}
		cases = append(cases, tc{filepath.Base(f), a, rows})
	}
	for _, c := range cases {
		m, err := NewModel(c.a)
		require.NoError(t, err)
		for _, av := range c.a.Variants {
			got := make([]float64, len(c.rows))
			require.NoError(t, m.PredictBatch(c.rows, string(av.Preprocessing), got))
			x := mat.NewDense(len(c.rows), c.a.InputSize, nil)
			for i, r := range c.rows {
				x.SetRow(i, r)
			}
			av.Scaler.TransformDense(x)
			want := make([]float64, len(c.rows))
			forwardScaled(c.a.Kind, av, x, want)
			var worst float64
			for i := range want {
				worst = max(worst, math.Abs(got[i]-want[i]))
			}
			t.Logf("%s %s: max |folded - scaled| = %.3g", c.name, av.Preprocessing, worst)
			require.Less(t, worst, 1e-13, "%s %s", c.name, av.Preprocessing)
		}
	}
}

func TestNewModelRejectsFoldOverflow(t *testing.T) {
	t.Parallel()

	for _, kind := range []string{KindLogistic, KindMLP} {
		a := testArtifact(kind)
		a.Variants[1].Scaler.Scale[0] = 1e-310 // valid (finite, > 0), but w/s overflows
		_, err := NewModel(a)
		require.ErrorIs(t, err, ErrInvalidArtifact, kind)
	}
}
