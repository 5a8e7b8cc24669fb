package inference

import (
	"math"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestSigmoidInPlace checks that sigmoidInPlace is sigmoid(z + b) bit for bit, that it
// saturates to exactly 0 and 1, and its finiteness report at every position of a bad value.
func TestSigmoidInPlace(t *testing.T) {
	t.Parallel()
	rng := newRand(13, 14)
	var zs []float64
	for range 4000 {
		zs = append(zs, rng.uniform(40), rng.uniform(720), rng.uniform(1e-3))
	}
	zs = append(zs, 0, math.Copysign(0, -1), 36.7368, 36.7369, 700, -700, -709.78, -709.79, 1e300, -1e300,
		math.MaxFloat64, -math.MaxFloat64)
	for _, b := range []float64{0, 0.37, -2.5} {
		got := slices.Clone(zs)
		require.True(t, sigmoidInPlace(got, b))
		for i, z := range zs {
			if want := sigmoid(z + b); math.Float64bits(got[i]) != math.Float64bits(want) {
				t.Fatalf("sigmoidInPlace(%v + %v) = %v, want sigmoid %v", z, b, got[i], want)
			}
		}
	}

	for _, z := range []float64{37, 40, 100, 700, 708, 1e10, math.MaxFloat64, math.Inf(1)} {
		s := []float64{z}
		sigmoidInPlace(s, 0)
		require.Equal(t, 1.0, s[0], "z = %v", z)
	}
	for _, z := range []float64{-709.79, -745.2, -1e10, -math.MaxFloat64, math.Inf(-1)} {
		s := []float64{z}
		sigmoidInPlace(s, 0)
		require.Equal(t, 0.0, s[0], "z = %v", z)
	}

	// The report is false exactly when some z + b is NaN or infinite, wherever it is.
	for n := 1; n <= 9; n++ {
		for at := range n {
			for _, x := range []float64{800, -800, math.NaN(), math.Inf(1), math.Inf(-1)} {
				z := make([]float64, n)
				for i := range z {
					z[i] = rng.uniform(30)
				}
				z[at] = x
				got := slices.Clone(z)
				require.Equal(t, !math.IsNaN(x) && !math.IsInf(x, 0), sigmoidInPlace(got, 0.5), "n %d, at %d, %v", n, at, x)
				require.Equal(t, math.IsNaN(x), math.IsNaN(got[at]), "n %d, at %d, %v", n, at, x)
			}
		}
	}
	for _, x := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		require.False(t, sigmoidInPlace([]float64{1, 2}, x), "bias %v", x)
	}
	require.True(t, sigmoidInPlace(nil, 0))
	s := []float64{math.NaN(), 0}
	require.False(t, sigmoidInPlace(s, 0))
	require.True(t, math.IsNaN(s[0]))
	require.Equal(t, 0.5, s[1])
}

// TestTanhOfDoubled checks the MLP's hidden activation against math.Tanh and tanh (the
// training's), as TestTanh checks tanh, and its saturation.
func TestTanhOfDoubled(t *testing.T) {
	t.Parallel()
	var xs []float64
	for x := -25.0; x <= 25; x += 0.0137 {
		xs = append(xs, x)
	}
	rng := newRand(15, 16)
	for range 100000 {
		xs = append(xs, rng.uniform(4), rng.uniform(1e-6))
	}
	xs = append(xs, 0, math.Copysign(0, -1), 1e-300, -1e-10, 1e-8, 18.3, 18.4, 19, -19, -19.1, 20, -20,
		20.0001, 350, -350, 351, -351, 355, -355, 700, -700, 1e300, -1e300, math.Inf(1), math.Inf(-1))
	y := make([]float64, len(xs))
	for i, x := range xs {
		y[i] = 2 * x
	}
	tanhOfDoubledInPlace(y)
	worst := 0.0
	for i, x := range xs {
		if math.Abs(y[i]-math.Tanh(x)) > 1e-15 || math.Abs(y[i]-tanh(x)) > 1e-15 {
			t.Fatalf("x = %v: %v, math.Tanh %v, tanh %v", x, y[i], math.Tanh(x), tanh(x))
		}
		worst = max(worst, math.Abs(y[i]-math.Tanh(x)))
		if (x >= 18.4 && y[i] != 1) || (x <= -19.1 && y[i] != -1) {
			t.Fatalf("x = %v: %v, want ±1", x, y[i])
		}
	}
	t.Logf("max |tanhOfDoubled - math.Tanh| = %.3g", worst)
	nan := []float64{math.NaN()}
	tanhOfDoubledInPlace(nan)
	require.True(t, math.IsNaN(nan[0]))
}

func BenchmarkActivations(b *testing.B) {
	src := randomRows(1, 1000, 9)[0]
	for i := range src {
		src[i] = src[i]*20 - 10
	}
	z := make([]float64, len(src))
	perElem := func(b *testing.B) {
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(z)), "ns/elem")
	}
	b.Run("sigmoid/math.Exp", func(b *testing.B) {
		for b.Loop() {
			copy(z, src)
			for i, v := range z {
				z[i] = sigmoid(v)
			}
		}
		perElem(b)
	})
	b.Run("sigmoid/sigmoidInPlace", func(b *testing.B) {
		for b.Loop() {
			copy(z, src)
			sigmoidInPlace(z, 0)
		}
		perElem(b)
	})
	b.Run("tanh/tanh", func(b *testing.B) {
		for b.Loop() {
			copy(z, src)
			for i, v := range z {
				z[i] = tanh(v)
			}
		}
		perElem(b)
	})
	b.Run("tanh/tanhOfDoubledInPlace", func(b *testing.B) {
		for b.Loop() {
			copy(z, src)
			tanhOfDoubledInPlace(z)
		}
		perElem(b)
	})
}
