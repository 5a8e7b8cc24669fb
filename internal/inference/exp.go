package inference

import (
	"math"
	"math/big"
)

// The exponential of the prediction path's activations. math.Exp costs about 5 ns, as much
// as the whole raw kernel's row of a 60-feature logistic regression, and is a call per
// element. sigmoidInPlace computes it in a tight loop over a slice with the table-driven
// method of Arm's optimized-routines exp (math/exp.c, exp_data.c; also glibc's and musl's
// exp), with a table of N = 128 entries and a degree-5 polynomial:
//
//	x = k·ln2/N + r, |r| ≤ ln2/2N, k = round(x·N/ln2) = m·N + j, 0 ≤ j < N
//	e^x = 2^m · 2^(j/N) · e^r
//
// k comes from the shift trick (adding 1.5·2^52 rounds x·N/ln2 to an integer held in the
// low bits of the sum), ln2/N is split in two so that r is nearly exact, 2^(j/N) is a table
// entry H_j with its rounding error T_j (2^(j/N) = H_j·(1 + T_j)), 2^m goes straight into
// the entry's exponent bits, and e^r - 1 ≈ r + C2 r² + C3 r³ + C4 r⁴ + C5 r⁵:
//
//	e^x ≈ s + s·p, s = 2^m·H_j, p = T_j + r + C2 r² + ... + C5 r⁵
//
// Arm bounds the error at 0.511 ulp without fused multiply-adds; TestExpAccuracy measures it
// against a 400-bit reference and against math.Exp. Every product is converted to float64
// explicitly, which forbids the compiler to fuse it with an addition (Go fuses x*y + z on
// arm64, and on amd64 from GOAMD64=v3), so that the result is the same on every platform.
//
// The kernel applies for |x| up to about 700 (see expMaxK), where s and the result are
// normal numbers. Larger |x|, infinities and NaN go to math.Exp, whose overflow to +Inf and
// underflow through the subnormals to 0 the sigmoid's saturation relies on: the results
// there are exactly sigmoid's.
//
// On amd64 CPUs with AVX2, sigmoidInPlace runs its loop in assembly (exp_amd64.s), four
// elements at a time, with the same IEEE operations in the same order (no fused
// multiply-add either): its results are bit-identical to the Go loop's, which runs
// elsewhere (and which the tests run on amd64 too, comparing the two on millions of
// arguments).
const (
	expTableBits = 7
	expN         = 1 << expTableBits
)

// expConst holds the kernel's constants as variables, which sigmoidInPlaceGo copies into
// locals: they then stay in registers across its loop, where constants are reloaded from
// memory at every use (Go rematerializes them). The assembly loop (sigmoidAVX2) broadcasts
// them into vector registers.
var expConst = [...]float64{
	-0x1.71547652b82fep0 * expN, // -N/ln2 (the sigmoid takes e^-z)
	0x1.8p52,                    // the shift, 1.5·2^52
	-0x1.62e42fefa0000p-8,       // -ln2/N, high part (36 bits: k times it is exact for |k| < 2^17)
	-0x1.cf79abc9e3b3ap-47,      // -ln2/N, the rest
	// Arm's coefficients of r², ..., r⁵ (abs error 1.555·2^-66 for |r| < ln2/256+ε).
	0x1.ffffffffffdbdp-2,
	0x1.555555555543cp-3,
	0x1.55555cf172b91p-5,
	0x1.1111167a4d017p-7,
}

const (
	// expShiftBits are the bits of the shift: kd = x·N/ln2 + shift has the bits
	// expShiftBits + k for |k| < 2^51.
	expShiftBits = 0x4338000000000000
	// expMaxK bounds k on the kernel's range: the kernel takes |k| ≤ expMaxK, that is |x|
	// up to about 700.0003 (expMaxK = round(700·N/ln2)), and the rest goes to math.Exp.
	// Then m lies in [-1010, 1009]: s is a normal number, and e^x ≥ 2^-1010, so that s·p,
	// when subnormal, errs by at most 2^-1075, below 2^-13 of the result's ulp. (Further
	// out, s stays normal up to |x| ≈ 708, but that error grows to a quarter of an ulp.)
	expMaxK = 129_265
)

// expTable holds, for j in [0, N), T_j and the bits of H_j minus j << (52 - expTableBits),
// so that adding k shifted likewise (whose low expTableBits bits are j) gives s = 2^m·H_j.
var expTable [expN]expEntry

// expEntry is an entry of expTable (a named type, so that the assembly gets its layout from
// go_asm.h).
type expEntry struct {
	tail  float64
	sbits uint64
}

// The table is computed rather than written out: 2^(1/N) is 2 square-rooted expTableBits
// times and 2^(j/N) its j-th power, in 256-bit arithmetic, whose error (a few 2^-250) is
// far below the rounding to float64. TestExpTable checks every entry.
func init() {
	const prec = 256
	root := new(big.Float).SetPrec(prec).SetInt64(2)
	for range expTableBits {
		root.Sqrt(root)
	}
	p := new(big.Float).SetPrec(prec).SetInt64(1)
	h := new(big.Float).SetPrec(prec)
	t := new(big.Float).SetPrec(prec)
	for j := range expN {
		hj, _ := p.Float64() // H_j: 2^(j/N) rounded to nearest even
		h.SetFloat64(hj)
		t.Sub(p, h).Quo(t, h)
		expTable[j].tail, _ = t.Float64()
		expTable[j].sbits = math.Float64bits(hj) - uint64(j)<<(52-expTableBits)
		p.Mul(p, root)
	}
}

// sigmoidInPlace replaces every z[i] by the logistic function of z[i] + b,
// 1/(1 + e^-(z[i]+b)), and reports whether every z[i] + b was finite (b is finite). Like
// sigmoid (math.Exp), the result saturates to exactly 1 once e^-z drops to 2^-53 (z above
// about 36.7) and to exactly 0 once e^-z overflows (z below about -709.78, where math.Exp
// computes it).
//
// It runs sigmoidInPlaceAVX2, the loop in assembly, where the CPU has AVX2, and
// sigmoidInPlaceGo otherwise: the two give the same bits and the same report
// (TestSigmoidAVX2MatchesGo, TestSigmoidAVX2Specials).
func sigmoidInPlace(z []float64, b float64) (ok bool) {
	if useSigmoidAVX2 {
		return sigmoidInPlaceAVX2(z, b)
	}
	return sigmoidInPlaceGo(z, b)
}

// sigmoidInPlaceGo is sigmoidInPlace in Go, on every architecture.
//
// The exponential is the kernel above, written out in the loop (it is too large for the
// compiler to inline), so that nothing is called per element but math.Exp outside the
// kernel's range; expKernel is the same kernel as a function of its own, which the tests
// measure and check this function against bit for bit. It takes two elements at a time,
// as two independent copies of expKernel's body (some 7% faster than one: less loop
// control and branching per element); a pair with an element outside the kernel's range,
// and an odd last element, go to sigmoidOneByOne.
func sigmoidInPlaceGo(z []float64, b float64) (ok bool) {
	c := &expConst
	negInvLn2N, shift, negLn2HiN, negLn2LoN := c[0], c[1], c[2], c[3]
	c2, c3, c4, c5 := c[4], c[5], c[6], c[7]
	ok = true
	i := 0
	for ; i+1 < len(z); i += 2 {
		v0, v1 := z[i]+b, z[i+1]+b
		kd0, kd1 := float64(negInvLn2N*v0)+shift, float64(negInvLn2N*v1)+shift
		ki0, ki1 := math.Float64bits(kd0), math.Float64bits(kd1)
		if ki0-(expShiftBits-expMaxK) > 2*expMaxK || ki1-(expShiftBits-expMaxK) > 2*expMaxK {
			ok = sigmoidOneByOne(z[i:i+2], b) && ok
			continue
		}
		kd0, kd1 = kd0-shift, kd1-shift
		r0 := (float64(kd0*negLn2HiN) - v0) + float64(kd0*negLn2LoN)
		r1 := (float64(kd1*negLn2HiN) - v1) + float64(kd1*negLn2LoN)
		t0, t1 := &expTable[ki0%expN], &expTable[ki1%expN]
		s0 := math.Float64frombits(t0.sbits + ki0<<(52-expTableBits))
		s1 := math.Float64frombits(t1.sbits + ki1<<(52-expTableBits))
		r20, r21 := float64(r0*r0), float64(r1*r1)
		p0 := t0.tail + r0 + float64(r20*(c2+float64(r0*c3))) + float64(float64(r20*r20)*(c4+float64(r0*c5)))
		p1 := t1.tail + r1 + float64(r21*(c2+float64(r1*c3))) + float64(float64(r21*r21)*(c4+float64(r1*c5)))
		z[i] = 1 / (1 + (s0 + float64(s0*p0)))
		z[i+1] = 1 / (1 + (s1 + float64(s1*p1)))
	}
	if i < len(z) {
		ok = sigmoidOneByOne(z[i:], b) && ok
	}
	return ok
}

// sigmoidInPlaceAVX2 is sigmoidInPlace with sigmoidInPlaceGo's loop in amd64 assembly
// (sigmoidAVX2, exp_amd64.s): four elements at a time in AVX2's 256-bit registers, the
// same IEEE operations in the same order (each product rounded, then added: no fused
// multiply-add), so that every result is bit-identical to sigmoidInPlaceGo's. A group of
// four with an element outside the kernel's range (NaN and ±Inf included), and the last
// len(z)%4 elements, go to sigmoidOneByOne, as the Go loop's pairs do: the report is the
// same too. It is some 2.5 times as fast as the Go loop: about 1.5 ns per element against
// 3.9 on a 2-core AMD EPYC (Zen 4) VM (BenchmarkSigmoid, medians of 30 runs).
//
// On amd64 it must run only where useSigmoidAVX2 is true. Where there is no assembly
// (exp_noasm.go), sigmoidAVX2 does nothing and this is sigmoidOneByOne: correct, but slow.
func sigmoidInPlaceAVX2(z []float64, b float64) (ok bool) {
	ok = true
	for len(z) >= 4 {
		z = z[sigmoidAVX2(z, b):]
		if len(z) < 4 {
			break
		}
		ok = sigmoidOneByOne(z[:4], b) && ok
		z = z[4:]
	}
	if len(z) > 0 {
		ok = sigmoidOneByOne(z, b) && ok
	}
	return ok
}

// sigmoidOneByOne is sigmoidInPlace one element at a time, for the elements the loops leave:
// the Go loop's odd last element and pairs with an element outside the kernel's range, the
// assembly loop's last len%4 elements and groups of four with one outside it.
func sigmoidOneByOne(z []float64, b float64) (ok bool) {
	ok = true
	for i, v := range z {
		v += b
		ok = ok && v-v == 0 // false for NaN and ±Inf
		z[i] = 1 / (1 + expKernel(-v))
	}
	return ok
}

// expKernel is e^x by the kernel above, math.Exp outside its range: sigmoidInPlace's loop
// body for one element (with x = -(z+b)), which TestSigmoidInPlaceUsesExpKernel checks bit
// for bit and TestExpAccuracy measures.
func expKernel(x float64) float64 {
	c := &expConst
	invLn2N, shift, negLn2HiN, negLn2LoN := -c[0], c[1], c[2], c[3]
	c2, c3, c4, c5 := c[4], c[5], c[6], c[7]
	// kd = x·N/ln2 + shift, whose low bits are k = round(x·N/ln2).
	kd := float64(invLn2N*x) + shift
	ki := math.Float64bits(kd)
	if ki-(expShiftBits-expMaxK) > 2*expMaxK { // |k| > expMaxK; also NaN and ±Inf
		return math.Exp(x)
	}
	kd -= shift
	r := x + float64(kd*negLn2HiN) + float64(kd*negLn2LoN) // x - k·ln2/N
	t := &expTable[ki%expN]
	s := math.Float64frombits(t.sbits + ki<<(52-expTableBits))
	r2 := float64(r * r)
	p := t.tail + r + float64(r2*(c2+float64(r*c3))) + float64(float64(r2*r2)*(c4+float64(r*c5)))
	return s + float64(s*p)
}

// tanhOfDoubledInPlace replaces every y[i] = 2a by tanh(a) = 2·sigmoid(2a) - 1 (tanh of
// half y[i]): one exponential, in sigmoidInPlace's loop. 2·sigmoid is exact, and so is the
// subtraction where sigmoid(2a) ≥ 1/4 (Sterbenz); the result is within 1e-15 of math.Tanh
// and saturates to exactly ±1 (from |a| above about 18.4 and 19.1).
func tanhOfDoubledInPlace(y []float64) {
	sigmoidInPlace(y, 0)
	for i, s := range y {
		y[i] = 2*s - 1
	}
}
