package inference

import (
	"math"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

// The tests of sigmoidInPlaceAVX2 (the assembly loop, exp_amd64.s) against sigmoidInPlaceGo
// (the Go loop), which must agree bit for bit, with the same finiteness report. On a CPU
// without AVX2, and on other architectures, they are skipped (sigmoidInPlace then is
// sigmoidInPlaceGo, which the other tests check).

func skipWithoutAVX2(t testing.TB) {
	t.Helper()
	if !useSigmoidAVX2 {
		t.Skip("no AVX2 assembly on this CPU or architecture")
	}
}

// requireSigmoidAVX2MatchesGo runs both loops on copies of z with bias b and fails unless
// every result has the same bits and both report the same.
func requireSigmoidAVX2MatchesGo(t *testing.T, z []float64, b float64, what string) {
	t.Helper()
	want, got := slices.Clone(z), slices.Clone(z)
	wantOK := sigmoidInPlaceGo(want, b)
	gotOK := sigmoidInPlaceAVX2(got, b)
	for i := range z {
		if math.Float64bits(got[i]) != math.Float64bits(want[i]) {
			t.Fatalf("%s: len %d, bias %v: sigmoid(%v) = %v (%#x), Go loop %v (%#x) at %d",
				what, len(z), b, z[i], got[i], math.Float64bits(got[i]), want[i], math.Float64bits(want[i]), i)
		}
	}
	if gotOK != wantOK {
		t.Fatalf("%s: len %d, bias %v: reported %v, Go loop %v", what, len(z), b, gotOK, wantOK)
	}
}

// kernelEdges returns, for each end of the kernel's range (k = ±expMaxK, the last k it
// takes), the arguments v of the sigmoid next to the rounding boundaries of -v·N/ln2 on
// either side of it: the last values the kernel takes and the first it leaves to
// math.Exp, found by stepping float by float.
func kernelEdges() []float64 {
	var out []float64
	for _, k := range []float64{expMaxK + 0.5, -expMaxK - 0.5} {
		v := -k * math.Ln2 / expN // sigmoid argument whose exponent argument has k·N/ln2 ≈ k
		for range 64 {
			v = math.Nextafter(v, 0)
		}
		for range 128 {
			out = append(out, v)
			v = math.Nextafter(v, math.Inf(int(math.Copysign(1, v))))
		}
	}
	return out
}

func TestKernelEdges(t *testing.T) {
	t.Parallel()
	// The edges straddle the range check: both sides are represented.
	in, out := 0, 0
	for _, v := range kernelEdges() {
		if expKernelRange(-v) {
			in++
		} else {
			out++
		}
	}
	require.Positive(t, in)
	require.Positive(t, out)
}

// TestSigmoidAVX2MatchesGo compares the two loops on millions of pseudo-random arguments
// over the kernel's range, past it, and at its edges, with several biases.
func TestSigmoidAVX2MatchesGo(t *testing.T) {
	t.Parallel()
	skipWithoutAVX2(t)
	rng := newRand(21, 22)
	n := 1 << 20
	if testing.Short() {
		n = 1 << 16
	}
	edges := kernelEdges()
	z := make([]float64, n)
	for round := range 6 {
		for i := range z {
			switch round {
			case 0: // the sigmoid's working range
				z[i] = rng.uniform(40)
			case 1: // the kernel's whole range and past it, now and then out of it
				z[i] = rng.uniform(705)
			case 2: // near 0, where e^-z ≈ 1
				z[i] = rng.uniform(1e-3)
			case 3: // |z| log-uniform from 1e-20 to 720
				z[i] = math.Copysign(math.Exp(-46+rng.float64()*52.6), rng.float64()-0.5)
			case 4: // next to the table entries' boundaries, k + 1/2 for every k in range
				k := float64(rng.intn(2*expMaxK+1) - expMaxK)
				z[i] = -(k + 0.5) * math.Ln2 / expN
				for range rng.intn(3) {
					z[i] = math.Nextafter(z[i], math.Inf(rng.intn(2)*2-1))
				}
			case 5: // in range, with the kernel's edges mixed in (one group in eight or so)
				z[i] = rng.uniform(700)
				if rng.intn(32) == 0 {
					z[i] = edges[rng.intn(len(edges))]
				}
			}
		}
		for _, b := range []float64{0, 0.37, -2.5} {
			requireSigmoidAVX2MatchesGo(t, z, b, "random")
		}
	}
	requireSigmoidAVX2MatchesGo(t, edges, 0, "edges")
	for i := range 4 { // the edges at every offset within a group
		requireSigmoidAVX2MatchesGo(t, edges[i:], 0, "edges")
	}
}

// sigmoidSpecials are the arguments that exercise the edges of the loops: non-finite,
// signed zeros, the kernel's range and math.Exp's overflow and underflow, subnormals.
var sigmoidSpecials = []float64{
	math.NaN(), math.Inf(1), math.Inf(-1), 0, math.Copysign(0, -1),
	700, -700, 700.0003, -700.0003, 700.001, -700.001, 710, -710, 745.2, -745.2,
	5e-324, -5e-324, 0x1p-1022, -0x1p-1022, 0x1p-1030, -0x1p-1030,
	1e300, -1e300, math.MaxFloat64, -math.MaxFloat64, 36.7368005696771, 37, -37,
}

// TestSigmoidAVX2Specials compares the two loops on every length from 0 to 17 with a
// special value at every position (and with two, at every pair of positions, up to
// length 9), amid ordinary values, with ordinary and non-finite biases.
func TestSigmoidAVX2Specials(t *testing.T) {
	t.Parallel()
	skipWithoutAVX2(t)
	rng := newRand(23, 24)
	fill := func(n int) []float64 {
		z := make([]float64, n)
		for i := range z {
			z[i] = rng.uniform(30)
		}
		return z
	}
	for n := 0; n <= 17; n++ {
		for _, b := range []float64{0, 0.5, -3, math.NaN(), math.Inf(1), math.Inf(-1)} {
			requireSigmoidAVX2MatchesGo(t, fill(n), b, "ordinary")
		}
		for at := range n {
			for _, x := range sigmoidSpecials {
				z := fill(n)
				z[at] = x
				requireSigmoidAVX2MatchesGo(t, z, 0.5, "one special")
				requireSigmoidAVX2MatchesGo(t, z, 0, "one special")
				for i := range z { // all special
					z[i] = x
				}
				requireSigmoidAVX2MatchesGo(t, z, 0, "all special")
			}
			if n > 9 {
				continue
			}
			for at2 := range n {
				for _, x := range sigmoidSpecials {
					for _, y := range []float64{math.NaN(), 710, math.Copysign(0, -1)} {
						z := fill(n)
						z[at], z[at2] = x, y
						requireSigmoidAVX2MatchesGo(t, z, 0, "two specials")
					}
				}
			}
		}
	}
	// The report itself, on both loops, and where it comes from the bias.
	for _, impl := range []struct {
		name string
		f    func([]float64, float64) bool
	}{{"Go", sigmoidInPlaceGo}, {"AVX2", sigmoidInPlaceAVX2}, {"dispatch", sigmoidInPlace}} {
		for n := 1; n <= 17; n++ {
			for at := range n {
				for _, x := range sigmoidSpecials {
					z := fill(n)
					z[at] = x
					wantOK := !math.IsNaN(x) && !math.IsInf(x, 0)
					require.Equal(t, wantOK, impl.f(z, 0.25), "%s: n %d, at %d, %v", impl.name, n, at, x)
				}
			}
			for _, b := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
				require.False(t, impl.f(fill(n), b), "%s: n %d, bias %v", impl.name, n, b)
			}
			require.True(t, impl.f(fill(n), -1e300), "%s: n %d", impl.name, n) // finite sums
		}
		require.True(t, impl.f(nil, math.NaN()), impl.name) // nothing to report on
	}
}

// TestSigmoidAVX2Groups checks the assembly's contract directly: whole groups of four from
// the start, stopping before the first group with an element outside the kernel's range,
// which it leaves untouched like the last len%4 elements.
func TestSigmoidAVX2Groups(t *testing.T) {
	t.Parallel()
	skipWithoutAVX2(t)
	rng := newRand(25, 26)
	for n := 0; n <= 40; n++ {
		for bad := -1; bad < n; bad++ {
			z := make([]float64, n)
			for i := range z {
				z[i] = rng.uniform(30)
			}
			if bad >= 0 {
				z[bad] = math.NaN()
			}
			got := slices.Clone(z)
			done := sigmoidAVX2(got, 0.5)
			want := n &^ 3
			if bad >= 0 && bad < want {
				want = bad &^ 3
			}
			require.Equal(t, want, done, "n %d, bad %d", n, bad)
			for i := range z {
				if i < done {
					require.Equal(t, 1/(1+expKernel(-(z[i]+0.5))), got[i], "n %d, bad %d, element %d", n, bad, i)
				} else {
					require.Equal(t, math.Float64bits(z[i]), math.Float64bits(got[i]), "n %d, bad %d, element %d untouched", n, bad, i)
				}
			}
		}
	}
	// It reads and writes nothing outside its slice: a subslice of a larger array with
	// sentinels on both sides.
	buf := make([]float64, 32)
	for i := range buf {
		buf[i] = 3
	}
	require.Equal(t, 20, sigmoidAVX2(buf[5:27], 0))
	for i, v := range buf {
		if i >= 5 && i < 25 {
			require.Equal(t, 1/(1+expKernel(-3)), v, "element %d", i)
		} else {
			require.Equal(t, 3.0, v, "element %d", i)
		}
	}
}

// BenchmarkSigmoid compares the loops on 1000 arguments in [-10, 10) (as
// BenchmarkActivations), in ns per element.
func BenchmarkSigmoid(b *testing.B) {
	src := randomRows(1, 1000, 9)[0]
	for i := range src {
		src[i] = src[i]*20 - 10
	}
	z := make([]float64, len(src))
	for _, impl := range []struct {
		name string
		f    func([]float64, float64) bool
	}{{"Go", sigmoidInPlaceGo}, {"AVX2", sigmoidInPlaceAVX2}} {
		b.Run(impl.name, func(b *testing.B) {
			if impl.name == "AVX2" {
				skipWithoutAVX2(b)
			}
			for b.Loop() {
				copy(z, src)
				impl.f(z, 0)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(z)), "ns/elem")
		})
	}
}
