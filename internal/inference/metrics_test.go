package inference

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestROCAUC(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name string
		y, p []float64
		want float64
	}{
		{"Perfect", []float64{0, 0, 1, 1}, []float64{0.1, 0.2, 0.8, 0.9}, 1},
		{"Reversed", []float64{0, 0, 1, 1}, []float64{0.9, 0.8, 0.2, 0.1}, 0},
		{"ScikitLearnExample", []float64{0, 0, 1, 1}, []float64{0.1, 0.4, 0.35, 0.8}, 0.75},
		{"AllTied", []float64{0, 1, 0, 1}, []float64{0.5, 0.5, 0.5, 0.5}, 0.5},
		// Pairs (pos, neg): 0.6>0.2, 0.6=0.6 (half), 0.9>0.2, 0.9>0.6, 0.1<0.2, 0.1<0.6.
		{"TiesAcrossClasses", []float64{0, 0, 1, 1, 1}, []float64{0.2, 0.6, 0.6, 0.9, 0.1}, 3.5 / 6},
		{"UnsortedInput", []float64{1, 0, 1, 0, 0}, []float64{0.7, 0.3, 0.2, 0.1, 0.5}, 4.0 / 6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := ROCAUC(tt.y, tt.p)
			require.NoError(t, err)
			require.InDelta(t, tt.want, got, 1e-12)
		})
	}

	t.Run("OneClass", func(t *testing.T) {
		t.Parallel()
		_, err := ROCAUC([]float64{1, 1}, []float64{0.2, 0.3})
		require.ErrorIs(t, err, ErrInvalidData)
	})
	t.Run("LengthMismatch", func(t *testing.T) {
		t.Parallel()
		_, err := ROCAUC([]float64{1, 0}, []float64{0.2})
		require.ErrorIs(t, err, ErrInvalidData)
	})
}

func TestAccuracy(t *testing.T) {
	t.Parallel()

	// 0.5 counts as positive.
	got := Accuracy([]float64{1, 0, 1, 0}, []float64{0.5, 0.49, 0.2, 0.9})
	require.Equal(t, 0.5, got)
	require.True(t, math.IsNaN(Accuracy(nil, nil)))
}

func TestLogLoss(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name string
		y, p []float64
		want float64
	}{
		{"Confident", []float64{1, 0}, []float64{0.9, 0.1}, -math.Log(0.9)},
		{"Coin", []float64{1, 0, 1}, []float64{0.5, 0.5, 0.5}, math.Ln2},
		{"ClippedMistake", []float64{1}, []float64{0}, -math.Log(LogLossEpsilon)},
		{"ClippedHit", []float64{0}, []float64{0}, -math.Log1p(-LogLossEpsilon)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.InDelta(t, tt.want, LogLoss(tt.y, tt.p), 1e-12)
		})
	}
}
