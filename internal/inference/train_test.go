package inference

import (
	"context"
	"math"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
	"gonum.org/v1/gonum/mat"
)

// xorData returns n rows of d features uniform in [-1, 1) whose label is 1 when the first
// two features have the same sign: a problem no linear model solves.
func xorData(n, d int, seed uint64) (*mat.Dense, []float64) {
	rng := newRand(seed, 0)
	x := mat.NewDense(n, d, nil)
	y := make([]float64, n)
	for i := range n {
		for j := range d {
			x.Set(i, j, rng.uniform(1))
		}
		if x.At(i, 0)*x.At(i, 1) > 0 {
			y[i] = 1
		}
	}
	return x, y
}

func testSpec(kind string) TrainSpec {
	spec := TrainSpec{
		Kind:          kind,
		Version:       "v0.0.1",
		FeatureNames:  []string{"f0", "f1", "f2"},
		PositiveClass: "yes",
		NegativeClass: "no",
		DatasetSHA256: "test",
		CreatedBy:     "train_test.go",
		CV:            CVConfig{Folds: 4, Repeats: 2, Seed: 1},
	}
	hp := Hyperparams{L2: 0.1, MaxIterations: 100}
	if kind == KindMLP {
		hp = Hyperparams{L2: 0.1, L2Output: 0.1, HiddenUnits: 6, MaxIterations: 200, Seed: 3}
	}
	for _, prep := range []Preprocessing{Standard, MinMax, Robust} {
		spec.Variants = append(spec.Variants, VariantSpec{Preprocessing: prep, Hyperparams: hp})
	}
	return spec
}

func TestTrain(t *testing.T) {
	t.Parallel()

	x, y := xorData(160, 3, 11)
	accuracy := map[string]float64{}
	for _, kind := range []string{KindLogistic, KindMLP} {
		t.Run(kind, func(t *testing.T) {
			spec := testSpec(kind)
			spec.Workers = 1
			a, err := Train(context.Background(), x, y, spec)
			require.NoError(t, err)
			b, err := EncodeArtifact(a)
			require.NoError(t, err)

			t.Run("Deterministic", func(t *testing.T) {
				spec := testSpec(kind)
				spec.Workers = 3 // the result must not depend on the parallelism
				again, err := Train(context.Background(), x, y, spec)
				require.NoError(t, err)
				b2, err := EncodeArtifact(again)
				require.NoError(t, err)
				require.Equal(t, string(b), string(b2))
			})

			m, err := DecodeArtifact(b)
			require.NoError(t, err)
			require.Equal(t, []string{"standard", "minmax", "robust"}, m.Preprocessings())
			for _, prep := range m.Preprocessings() {
				metrics, ok := m.Metrics(prep)
				require.True(t, ok)
				require.Equal(t, 4, metrics.Folds)
				require.Equal(t, 2, metrics.Repeats)
				require.True(t, metrics.ROCAUC >= 0 && metrics.ROCAUC <= 1)
				require.Positive(t, metrics.LogLoss)
				accuracy[kind+"/"+prep] = metrics.Accuracy
			}
		})
	}
	// The MLP learns XOR; logistic regression cannot.
	for _, prep := range []string{"standard", "minmax", "robust"} {
		require.Less(t, accuracy[KindLogistic+"/"+prep], 0.7, prep)
		require.Greater(t, accuracy[KindMLP+"/"+prep], 0.85, prep)
	}
}

func TestTrainErrors(t *testing.T) {
	t.Parallel()

	x, y := xorData(40, 3, 5)
	tests := []struct {
		name   string
		mutate func(*TrainSpec, *[]float64)
		want   error
	}{
		{"BadLabel", func(_ *TrainSpec, y *[]float64) { (*y)[3] = 2 }, ErrInvalidData},
		{"TooManyFolds", func(s *TrainSpec, _ *[]float64) { s.CV.Folds = 30 }, ErrInvalidData},
		{"OneFold", func(s *TrainSpec, _ *[]float64) { s.CV.Folds = 1 }, ErrInvalidData},
		{"NoHiddenUnits", func(s *TrainSpec, _ *[]float64) { s.Variants[0].Hyperparams.HiddenUnits = 0 }, ErrInvalidData},
		{"NegativeL2", func(s *TrainSpec, _ *[]float64) { s.Variants[0].Hyperparams.L2Output = -1 }, ErrInvalidData},
		{"UnknownPreprocessing", func(s *TrainSpec, _ *[]float64) { s.Variants[0].Preprocessing = "log" }, ErrUnsupportedPreprocessing},
		{"UnknownKind", func(s *TrainSpec, _ *[]float64) { s.Kind = "svm" }, ErrInvalidData},
		{"BadVersion", func(s *TrainSpec, _ *[]float64) { s.Version = "latest" }, ErrInvalidArtifact},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			spec := testSpec(KindMLP)
			yy := slices.Clone(y)
			tt.mutate(&spec, &yy)
			_, err := Train(context.Background(), x, yy, spec)
			require.ErrorIs(t, err, tt.want)
		})
	}

	t.Run("Cancelled", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := Train(ctx, x, y, testSpec(KindMLP))
		require.ErrorIs(t, err, context.Canceled)
	})
}

func TestStratifiedKFold(t *testing.T) {
	t.Parallel()

	y := make([]float64, 53)
	for i := range 23 {
		y[i*2] = 1 // 23 positives, 30 negatives
	}
	folds, err := StratifiedKFold(y, 5, 42, 0)
	require.NoError(t, err)
	require.Len(t, folds, 5)

	var all []int
	for _, f := range folds {
		require.True(t, slices.IsSorted(f))
		require.InDelta(t, 53.0/5, len(f), 1)
		var pos int
		for _, i := range f {
			pos += int(y[i])
		}
		require.InDelta(t, 23.0/5, pos, 1)
		all = append(all, f...)
	}
	slices.Sort(all)
	for i, v := range all {
		require.Equal(t, i, v, "every row in exactly one fold")
	}

	again, err := StratifiedKFold(y, 5, 42, 0)
	require.NoError(t, err)
	require.Equal(t, folds, again, "same seed and stream, same folds")
	other, err := StratifiedKFold(y, 5, 42, 1)
	require.NoError(t, err)
	require.NotEqual(t, folds, other, "another stream shuffles differently")
}

// TestFitLogisticOptimal checks the first-order optimality of the Newton solution: the
// penalised objective's gradient vanishes.
func TestFitLogisticOptimal(t *testing.T) {
	t.Parallel()

	x, y := xorData(120, 4, 9)
	for i := range 120 { // make it learnable: label follows feature 2 most of the time
		if i%5 != 0 {
			y[i] = math.Round((x.At(i, 2) + 1) / 2)
		}
	}
	hp := Hyperparams{L2: 0.5, MaxIterations: 100}
	w, err := fitLogistic(x, y, hp)
	require.NoError(t, err)

	n, d := x.Dims()
	grad := make([]float64, d+1)
	for i := range n {
		z := w.Bias
		for j := range d {
			z += w.Weights[j] * x.At(i, j)
		}
		r := (sigmoid(z) - y[i]) / float64(n)
		for j := range d {
			grad[j] += r * x.At(i, j)
		}
		grad[d] += r
	}
	for j := range d {
		grad[j] += hp.L2 / float64(n) * w.Weights[j]
	}
	for j, g := range grad {
		require.InDelta(t, 0, g, 1e-9, "gradient[%d]", j)
	}
}

// TestMLPGradient compares the analytic gradient of the MLP objective with central finite
// differences.
func TestMLPGradient(t *testing.T) {
	t.Parallel()

	x, y := xorData(30, 4, 13)
	obj := newMLPObjective(x, y, 5, 0.7, 0.3)
	rng := newRand(5, 5)
	theta := make([]float64, obj.size())
	for i := range theta {
		theta[i] = rng.uniform(0.8)
	}
	grad := make([]float64, len(theta))
	obj.eval(theta, grad)

	const h = 1e-6
	for i := range theta {
		plus, minus := slices.Clone(theta), slices.Clone(theta)
		plus[i] += h
		minus[i] -= h
		numeric := (obj.eval(plus, nil) - obj.eval(minus, nil)) / (2 * h)
		require.InDelta(t, numeric, grad[i], 1e-7, "d/dθ[%d]", i)
	}
}
