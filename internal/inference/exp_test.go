package inference

import (
	"math"
	"math/big"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

// expKernelRange reports whether expKernel computes e^x itself rather than math.Exp.
func expKernelRange(x float64) bool {
	ki := math.Float64bits(float64(-expConst[0]*x) + expConst[1])
	return ki-(expShiftBits-expMaxK) <= 2*expMaxK
}

// refPrec is the precision of the reference functions, far above float64's 53 bits.
const refPrec = 400

// refExp returns e^x to about 370 bits: e^(x/2^20) by its Taylor series, squared 20 times
// (each squaring doubles the relative error, which starts near 2^-400). It shares nothing
// with the kernel (no table, no ln2).
func refExp(x float64) *big.Float {
	y := new(big.Float).SetPrec(refPrec).SetFloat64(x)
	y.SetMantExp(y, -20)
	sum := new(big.Float).SetPrec(refPrec).SetInt64(1)
	term := new(big.Float).SetPrec(refPrec).SetInt64(1)
	eps := new(big.Float).SetPrec(refPrec).SetMantExp(big.NewFloat(1), -refPrec)
	for k := int64(1); ; k++ {
		term.Mul(term, y)
		term.Quo(term, new(big.Float).SetPrec(refPrec).SetInt64(k))
		sum.Add(sum, term)
		if new(big.Float).Abs(term).Cmp(eps) < 0 {
			break
		}
	}
	for range 20 {
		sum.Mul(sum, sum)
	}
	return sum
}

// ulpErr returns |got - want| in ulps of want: of 2^(e-52) where 2^e ≤ |want| < 2^(e+1),
// or of the subnormals' spacing 2^-1074 below the normal range.
func ulpErr(got float64, want *big.Float) float64 {
	exp := want.MantExp(nil) // |want| = mant·2^exp, mant in [0.5, 1)
	ulp := new(big.Float).SetMantExp(big.NewFloat(1), max(exp-53, -1074))
	d := new(big.Float).SetPrec(refPrec).SetFloat64(got)
	d.Sub(d, want).Abs(d)
	e, _ := d.Quo(d, ulp).Float64()
	return e
}

// ulpDist is the number of float64s between a and b (same sign, finite).
func ulpDist(a, b float64) uint64 {
	x, y := math.Float64bits(a), math.Float64bits(b)
	return max(x, y) - min(x, y)
}

// TestExpTable checks every entry against 2^(j/N) computed another way: (H_j·(1+T_j))^N,
// by repeated squaring, must be 2^j to far better than float64 precision, and H_j must be
// 2^(j/N) rounded (|T_j| at most half an ulp of H_j, relative).
func TestExpTable(t *testing.T) {
	t.Parallel()
	for j, e := range expTable {
		h := math.Float64frombits(e.sbits + uint64(j)<<(52-expTableBits))
		require.True(t, h >= 1 && h < 2, "H_%d = %v", j, h)
		require.LessOrEqual(t, math.Abs(e.tail), 0x1p-53, "T_%d = %v", j, e.tail)
		v := new(big.Float).SetPrec(refPrec).SetFloat64(e.tail)
		v.Add(v, big.NewFloat(1)).Mul(v, new(big.Float).SetFloat64(h))
		for range expTableBits {
			v.Mul(v, v)
		}
		want := new(big.Float).SetPrec(refPrec).SetMantExp(big.NewFloat(1), j)
		rel, _ := v.Sub(v, want).Quo(v, want).Float64()
		require.Less(t, math.Abs(rel), 0x1p-95, "entry %d: (H(1+T))^N = 2^j·(1%+g)", j, rel)
	}
}

// TestExpAccuracy measures the kernel's exponential against refExp (its error in ulps of the
// exact result; Arm documents 0.511 without fused multiply-adds) and against math.Exp (at
// most two float64s apart, math.Exp erring by up to 1.7 ulp itself), over the whole range,
// and checks the edges.
func TestExpAccuracy(t *testing.T) {
	t.Parallel()
	rng := newRand(11, 12)

	// Against the reference: uniform over the kernel's range, uniform near 0, log-uniform
	// magnitudes, points next to the boundaries between table entries (x = (k + 1/2)·ln2/N)
	// and the ends of the kernel's range.
	var xs []float64
	for range 6000 {
		xs = append(xs, rng.uniform(700))
	}
	for range 2000 {
		xs = append(xs, rng.uniform(1))
	}
	for range 3000 { // |x| from 1e-20 to 700
		xs = append(xs, math.Copysign(math.Exp(-46+rng.float64()*52.5), rng.float64()-0.5))
	}
	for range 3000 {
		k := float64(rng.intn(2*expMaxK) - expMaxK)
		x := (k + 0.5) * math.Ln2 / expN
		for range rng.intn(4) {
			x = math.Nextafter(x, math.Inf(int(rng.intn(2)*2-1)))
		}
		xs = append(xs, x)
	}
	for _, end := range []float64{700, -700} {
		for x, n := end-0.01, 0; n < 200; n++ {
			xs = append(xs, x)
			x += 0.0001
		}
	}
	worst, worstX, worstMath, inKernel := 0.0, 0.0, 0.0, 0
	for _, x := range xs {
		if !expKernelRange(x) {
			continue
		}
		inKernel++
		ref := refExp(x)
		if e := ulpErr(expKernel(x), ref); e > worst {
			worst, worstX = e, x
		}
		worstMath = max(worstMath, ulpErr(math.Exp(x), ref))
	}
	t.Logf("expKernel: max error %.4f ulp (at %v) over %d arguments; math.Exp: %.4f ulp", worst, worstX, inKernel, worstMath)
	require.Greater(t, inKernel, 14000)
	require.LessOrEqual(t, worst, 0.52, "at x = %v", worstX)

	// The kernel's range: |x| up to 700 at least, and not past 700.001.
	require.True(t, expKernelRange(700) && expKernelRange(-700) && expKernelRange(0) && expKernelRange(5e-324))
	for _, x := range []float64{700.001, -700.001, 708, -708, 1e300, math.Inf(1), math.Inf(-1), math.NaN()} {
		require.False(t, expKernelRange(x), "%v", x)
	}

	// Against math.Exp: millions of arguments over the whole float64 range of interest,
	// past the kernel's range into math.Exp's overflow and subnormal underflow, where
	// expKernel is math.Exp.
	z := make([]float64, 1<<20)
	for round := range 4 {
		for i := range z {
			switch round {
			case 0:
				z[i] = rng.uniform(750)
			case 1:
				z[i] = rng.uniform(40)
			case 2: // |x| from 690 to 750
				z[i] = math.Copysign(690+rng.float64()*60, rng.float64()-0.5)
			case 3: // |x| from 1e-20 to 745
				z[i] = math.Copysign(math.Exp(-46+rng.float64()*52.6), rng.float64()-0.5)
			}
		}
		for _, x := range z {
			got, want := expKernel(x), math.Exp(x)
			if !expKernelRange(x) {
				if math.Float64bits(want) != math.Float64bits(got) {
					t.Fatalf("exp(%v) = %v, want math.Exp's %v beyond the kernel's range", x, got, want)
				}
			} else if ulpDist(got, want) > 2 {
				t.Fatalf("exp(%v) = %v, math.Exp %v", x, got, want)
			}
		}
	}

	// Edges: exactly math.Exp's result where that is exact (e^0, and 1 for |x| ≤ 2^-53) or
	// where math.Exp computes it; elsewhere within two float64s of it.
	for _, x := range []float64{
		0, math.Copysign(0, -1), 5e-324, -5e-324, 1e-300, -1e-300, 0x1p-54, -0x1p-54, 0x1p-53, -0x1p-53,
		700, -700, math.Nextafter(700, 0), math.Nextafter(-700, 0), 700.0003, -700.0003, 708, -708, 709, -709,
		709.782712893384, 709.7827128933841, 710, -709.78, -720,
		-745.1332191019411, -745.1332191019412, -745, -746, -1000, 1000,
		math.MaxFloat64, -math.MaxFloat64, math.Inf(1), math.Inf(-1),
	} {
		got, want := expKernel(x), math.Exp(x)
		if !expKernelRange(x) || x == 0 || math.Abs(x) <= 0x1p-53 {
			require.Equal(t, math.Float64bits(want), math.Float64bits(got), "exp(%v) = %v, want %v", x, got, want)
		} else {
			require.LessOrEqual(t, ulpDist(got, want), uint64(2), "exp(%v) = %v, math.Exp %v", x, got, want)
		}
	}
	require.Equal(t, 1.0, expKernel(0))
	require.Equal(t, 1.0, expKernel(math.Copysign(0, -1)))
	require.Equal(t, math.Inf(1), expKernel(710))
	require.Equal(t, 0.0, expKernel(-746))
	require.Equal(t, 5e-324, expKernel(-745.1332191019411)) // the smallest subnormal
	require.Equal(t, math.Inf(1), expKernel(math.Inf(1)))
	require.Equal(t, 0.0, expKernel(math.Inf(-1)))
	require.True(t, math.IsNaN(expKernel(math.NaN())))
}

// sigmoidLoops are the implementations of sigmoidInPlace that run here: the Go loop, and
// the assembly loop where the CPU has AVX2.
func sigmoidLoops() []struct {
	name string
	f    func([]float64, float64) bool
} {
	loops := []struct {
		name string
		f    func([]float64, float64) bool
	}{{"sigmoidInPlace", sigmoidInPlace}, {"sigmoidInPlaceGo", sigmoidInPlaceGo}}
	if useSigmoidAVX2 {
		loops = append(loops, struct {
			name string
			f    func([]float64, float64) bool
		}{"sigmoidInPlaceAVX2", sigmoidInPlaceAVX2})
	}
	return loops
}

// TestSigmoidInPlaceUsesExpKernel checks that sigmoidInPlace's loops (Go and assembly)
// compute 1/(1 + expKernel(-(z+b))) bit for bit, so that TestExpAccuracy measures their
// exponential: on every table entry, over the kernel's range and past it, with and without
// a bias.
func TestSigmoidInPlaceUsesExpKernel(t *testing.T) {
	t.Parallel()
	for _, loop := range sigmoidLoops() {
		t.Run(loop.name, func(t *testing.T) {
			t.Parallel()
			testSigmoidUsesExpKernel(t, loop.f)
		})
	}
}

func testSigmoidUsesExpKernel(t *testing.T, loop func([]float64, float64) bool) {
	rng := newRand(17, 18)
	z := make([]float64, 0, 300000)
	for range 100000 {
		z = append(z, rng.uniform(40), rng.uniform(720), rng.uniform(1e-3))
	}
	for k := -expMaxK - 300; k <= expMaxK+300; k += 97 { // every table entry, both ends
		z = append(z, (float64(k)+rng.uniform(0.5))*math.Ln2/expN)
	}
	z = append(z, 0, math.Copysign(0, -1), 700, -700, 1e300, -1e300, math.Inf(1), math.Inf(-1))
	for _, b := range []float64{0, 0.37, -2.5} {
		got := slices.Clone(z)
		require.False(t, loop(got, b)) // ±Inf
		for i, v := range z {
			want := 1 / (1 + expKernel(-(v + b)))
			if math.Float64bits(got[i]) != math.Float64bits(want) {
				t.Fatalf("sigmoid(%v + %v) = %v, want 1/(1+expKernel) = %v", v, b, got[i], want)
			}
		}
	}

	// Every length up to 9 and every position of an element outside the kernel's range, so
	// that pairs and groups of four of both kinds and the elements left after them are
	// covered, with the finiteness report.
	for n := 1; n <= 9; n++ {
		for at := range n {
			for _, x := range []float64{800, -800, math.NaN(), math.Inf(1), math.Inf(-1)} {
				z := make([]float64, n)
				for i := range z {
					z[i] = rng.uniform(30)
				}
				z[at] = x
				got := slices.Clone(z)
				require.Equal(t, !math.IsNaN(x) && !math.IsInf(x, 0), loop(got, 0.5), "n %d, at %d, %v", n, at, x)
				for i, v := range z {
					want := 1 / (1 + expKernel(-(v + 0.5)))
					if math.Float64bits(got[i]) != math.Float64bits(want) && !(math.IsNaN(got[i]) && math.IsNaN(want)) {
						t.Fatalf("n %d, at %d, %v: element %d: %v, want %v", n, at, x, i, got[i], want)
					}
				}
			}
		}
	}
	for _, x := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		require.False(t, loop([]float64{1, 2}, x), "bias %v", x)
	}
	require.True(t, loop([]float64{1, 800, -800, math.MaxFloat64, -math.MaxFloat64}, 0))
	require.True(t, loop(nil, 0))
}

// refSigmoid returns 1/(1+e^-z) to about 370 bits.
func refSigmoid(z float64) *big.Float {
	e := refExp(-z)
	e.Add(e, big.NewFloat(1))
	return new(big.Float).SetPrec(refPrec).Quo(big.NewFloat(1), e)
}

// TestSigmoidInPlace compares sigmoidInPlace with a 370-bit sigmoid (its error, and the
// error of sigmoid, which uses math.Exp, for comparison) and checks that it saturates to
// exactly 0 and 1 where sigmoid does.
func TestSigmoidInPlace(t *testing.T) {
	t.Parallel()
	rng := newRand(13, 14)

	var zs []float64
	for range 4000 {
		zs = append(zs, rng.uniform(40))
	}
	for range 2000 {
		zs = append(zs, rng.uniform(700))
	}
	for range 1000 {
		zs = append(zs, rng.uniform(1e-3))
	}
	got := slices.Clone(zs)
	require.True(t, sigmoidInPlace(got, 0))
	worst, worstOld, worstZ := 0.0, 0.0, 0.0
	for i, z := range zs {
		ref := refSigmoid(z)
		if e := ulpErr(got[i], ref); e > worst {
			worst, worstZ = e, z
		}
		worstOld = max(worstOld, ulpErr(sigmoid(z), ref))
	}
	// Three roundings (e, 1+e, the division) of at most 2^-53 each, relative: at most three
	// ulps, and in fact as accurate as sigmoid with math.Exp.
	t.Logf("sigmoidInPlace: max error %.3f ulp (at %v); sigmoid with math.Exp: %.3f ulp", worst, worstZ, worstOld)
	require.LessOrEqual(t, worst, 3.0, "at z = %v", worstZ)
	require.LessOrEqual(t, worst, worstOld+0.25, "at z = %v", worstZ)

	// Saturation: wherever sigmoid is exactly 0 or 1, so is sigmoidInPlace, and the other
	// way round, on dense scans across both thresholds (53·ln2 ≈ 36.7368 and -709.7827)
	// and beyond; past the kernel's range the two are the same function.
	check := func(z float64) {
		t.Helper()
		s := []float64{z}
		sigmoidInPlace(s, 0)
		old := sigmoid(z)
		if (old == 1) != (s[0] == 1) || (old == 0) != (s[0] == 0) {
			t.Fatalf("z = %v: %v, sigmoid %v", z, s[0], old)
		}
		if !expKernelRange(-z) && math.Float64bits(old) != math.Float64bits(s[0]) {
			t.Fatalf("z = %v: %v, sigmoid %v", z, s[0], old)
		}
	}
	for z := 36.0; z < 38; z += 1.0 / 4096 {
		check(z)
	}
	for z, n := 53*math.Ln2, 0; n < 2000; n++ {
		check(z)
		check(math.Nextafter(z, 0))
		check(math.Nextafter(z, 40))
		z = math.Nextafter(z, float64(n%2*80))
	}
	for z := -695.0; z > -750; z -= 1.0 / 1024 {
		check(z)
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
