package inference

import "math/rand/v2"

// pcg is the package's only source of randomness: a math/rand/v2 PCG generator whose
// output, for a given seed and stream, is fixed by its specification. The derived values
// (uniform floats, shuffles) are computed here rather than by rand.Rand's helpers so that
// they cannot change with the Go release.
type pcg struct{ src *rand.PCG }

func newRand(seed, stream uint64) pcg { return pcg{src: rand.NewPCG(seed, stream)} }

// float64 returns a uniform value in [0, 1) with 53 random bits.
func (r pcg) float64() float64 {
	return float64(r.src.Uint64()>>11) / (1 << 53)
}

// uniform returns a uniform value in [-a, a).
func (r pcg) uniform(a float64) float64 {
	return a * (2*r.float64() - 1)
}

// intn returns a value in [0, n) for 0 < n < 2^32 by multiply-shift on 32 random bits
// (bias below 2^-22 for the small n used here).
func (r pcg) intn(n int) int {
	return int((r.src.Uint64() >> 32) * uint64(n) >> 32)
}

// shuffle permutes s in place (Fisher-Yates).
func (r pcg) shuffle(s []int) {
	for i := len(s) - 1; i > 0; i-- {
		j := r.intn(i + 1)
		s[i], s[j] = s[j], s[i]
	}
}
