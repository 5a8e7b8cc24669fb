//go:build !purego

package inference

import (
	"unsafe"

	"golang.org/x/sys/cpu"
)

// useSigmoidAVX2 reports whether sigmoidInPlace runs sigmoidInPlaceAVX2: whether the CPU
// (and the OS, which must save the YMM registers) supports AVX2. It is read once, at init
// (by golang.org/x/sys/cpu's own init, which runs before this package's).
var useSigmoidAVX2 = cpu.X86.HasAVX2

// The range check of sigmoidAVX2: ki - (expShiftBits-expMaxK) > 2·expMaxK, unsigned, is
// the signed comparison (VPCMPGTQ; AVX2 has no unsigned one) of both sides plus 2^63,
// that is ki - avx2RangeBias > avx2RangeLimit (mod 2^64, as int64s).
//
//nolint:unused // read by exp_amd64.s through go_asm.h
const (
	avx2RangeBias  = expShiftBits - expMaxK - 1<<63
	avx2RangeLimit = 2*expMaxK - 1<<63
)

// sigmoidAVX2 is sigmoidInPlaceGo's loop in amd64 assembly (exp_amd64.s), four elements at
// a time in the 256-bit registers of AVX2, with the same IEEE operations in the same order
// (a multiplication, then an addition: no fused multiply-add), so that its results are
// bit-identical. It replaces z[i] by 1/(1 + e^-(z[i]+b)) for the groups of four from the
// start of z, and stops at the first group that has an element outside the kernel's range
// (NaN and ±Inf included), which it leaves untouched, or at the last whole group: it
// returns the number of elements it replaced, a multiple of 4. It must run only where
// useSigmoidAVX2 is true.
//
//go:noescape
func sigmoidAVX2(z []float64, b float64) (n int)

// sigmoidAVX2 loads an entry of expTable as 16 bytes, its tail then its sbits: a compile-time
// check of that layout (a constant index out of range, or negative, does not compile).
func _() {
	var x [1]struct{}
	_ = x[unsafe.Offsetof(expEntry{}.tail)]
	_ = x[unsafe.Offsetof(expEntry{}.sbits)-8]
	_ = x[unsafe.Sizeof(expEntry{})-16]
}
