package inference

import (
	"math"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/stretchr/testify/require"
	"gonum.org/v1/gonum/mat"
)

func TestFitScaler(t *testing.T) {
	t.Parallel()

	// Column 0 varies; column 1 is constant (zero spread); column 2 varies by less than
	// MinSpread, which counts as zero spread too.
	x := mat.NewDense(4, 3, []float64{
		1, 2, 0.5,
		3, 2, 0.5 + 1e-13,
		5, 2, 0.5,
		7, 2, 0.5,
	})
	tests := []struct {
		kind Preprocessing
		want Scaler
	}{
		{
			kind: Standard, // population standard deviation: sqrt(((-3)²+(-1)²+1²+3²)/4) = sqrt(5)
			want: Scaler{Center: []float64{4, 2, 0.5}, Scale: []float64{math.Sqrt(5), 1, 1}},
		},
		{
			kind: MinMax,
			want: Scaler{Center: []float64{1, 2, 0.5}, Scale: []float64{6, 1, 1}},
		},
		{
			kind: Robust, // median 4; Q1 = 2.5, Q3 = 5.5 by linear interpolation
			want: Scaler{Center: []float64{4, 2, 0.5}, Scale: []float64{3, 1, 1}},
		},
	}
	for _, tt := range tests {
		t.Run(string(tt.kind), func(t *testing.T) {
			t.Parallel()
			got, err := FitScaler(tt.kind, x)
			require.NoError(t, err)
			if diff := cmp.Diff(tt.want, got, cmpopts.EquateApprox(0, 1e-12)); diff != "" {
				t.Errorf("FitScaler(%s) mismatch (-want +got):\n%s", tt.kind, diff)
			}

			// Constant features are centred, never divided by ~0.
			dst := make([]float64, 3)
			got.Transform(dst, []float64{1, 2, 0.75})
			require.False(t, math.IsNaN(dst[0]) || math.IsInf(dst[0], 0))
			require.Equal(t, 0.0, dst[1])
			require.InDelta(t, 0.25, dst[2], 1e-12)
		})
	}
}

func TestFitScalerTransformsTrainingRows(t *testing.T) {
	t.Parallel()

	x := mat.NewDense(5, 1, []float64{0, 1, 2, 3, 10})
	tests := []struct {
		kind Preprocessing
		want []float64
	}{
		// mean 3.2, population variance 62.8/5 = 12.56
		{Standard, []float64{-3.2 / math.Sqrt(12.56), -2.2 / math.Sqrt(12.56), -1.2 / math.Sqrt(12.56), -0.2 / math.Sqrt(12.56), 6.8 / math.Sqrt(12.56)}},
		{MinMax, []float64{0, 0.1, 0.2, 0.3, 1}},
		{Robust, []float64{-1, -0.5, 0, 0.5, 4}}, // median 2, IQR 3 - 1 = 2
	}
	for _, tt := range tests {
		t.Run(string(tt.kind), func(t *testing.T) {
			t.Parallel()
			s, err := FitScaler(tt.kind, x)
			require.NoError(t, err)
			xs := mat.DenseCopyOf(x)
			s.TransformDense(xs)
			if diff := cmp.Diff(tt.want, mat.Col(nil, 0, xs), cmpopts.EquateApprox(0, 1e-12)); diff != "" {
				t.Errorf("transformed column mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFitScalerErrors(t *testing.T) {
	t.Parallel()

	t.Run("UnknownKind", func(t *testing.T) {
		t.Parallel()
		_, err := FitScaler("zscore", mat.NewDense(2, 1, []float64{1, 2}))
		require.ErrorIs(t, err, ErrUnsupportedPreprocessing)
		require.ErrorIs(t, err, ErrInvalidData)
	})
	t.Run("NonFinite", func(t *testing.T) {
		t.Parallel()
		_, err := FitScaler(Standard, mat.NewDense(2, 1, []float64{1, math.NaN()}))
		require.ErrorIs(t, err, ErrInvalidData)
	})
}

func TestQuantile(t *testing.T) {
	t.Parallel()

	// Expected values are numpy.quantile's (method="linear", the default).
	tests := []struct {
		name   string
		sorted []float64
		q      float64
		want   float64
	}{
		{"Q1OfFour", []float64{1, 2, 3, 4}, 0.25, 1.75},
		{"MedianOfFour", []float64{1, 2, 3, 4}, 0.5, 2.5},
		{"Q3OfFour", []float64{1, 2, 3, 4}, 0.75, 3.25},
		{"MedianOfOdd", []float64{1, 3, 10}, 0.5, 3},
		{"Decile", []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 0.1, 1.9},
		{"Min", []float64{-2, 0, 5}, 0, -2},
		{"Max", []float64{-2, 0, 5}, 1, 5},
		{"Single", []float64{7}, 0.3, 7},
		{"Ties", []float64{1, 1, 1, 2}, 0.75, 1.25},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.InDelta(t, tt.want, Quantile(tt.sorted, tt.q), 1e-12)
		})
	}

	t.Run("Undefined", func(t *testing.T) {
		t.Parallel()
		require.True(t, math.IsNaN(Quantile(nil, 0.5)))
		require.True(t, math.IsNaN(Quantile([]float64{1}, -0.1)))
		require.True(t, math.IsNaN(Quantile([]float64{1}, 1.5)))
		require.True(t, math.IsNaN(Quantile([]float64{1}, math.NaN())))
	})
}
