package inference

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"
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
// agree within 1e-12 (see also TestShippedModelsOneMatchesBatch).
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
			requireOneMatchesBatch(t, m, prep, rows, 1e-12)
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
			require.Equal(t, one, batch[i], "%s %s row %d", m.Version, prep, i)
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
