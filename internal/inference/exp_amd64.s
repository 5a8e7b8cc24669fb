//go:build !purego

#include "go_asm.h"
#include "textflag.h"

// The range check's constants (see avx2RangeBias), 1.0 and the table index's mask, as
// vectors of four.
DATA sigmoidRangeBias<>+0(SB)/8, $const_avx2RangeBias
DATA sigmoidRangeBias<>+8(SB)/8, $const_avx2RangeBias
DATA sigmoidRangeBias<>+16(SB)/8, $const_avx2RangeBias
DATA sigmoidRangeBias<>+24(SB)/8, $const_avx2RangeBias
GLOBL sigmoidRangeBias<>(SB), RODATA|NOPTR, $32

DATA sigmoidRangeLimit<>+0(SB)/8, $const_avx2RangeLimit
DATA sigmoidRangeLimit<>+8(SB)/8, $const_avx2RangeLimit
DATA sigmoidRangeLimit<>+16(SB)/8, $const_avx2RangeLimit
DATA sigmoidRangeLimit<>+24(SB)/8, $const_avx2RangeLimit
GLOBL sigmoidRangeLimit<>(SB), RODATA|NOPTR, $32

DATA sigmoidIndexMask<>+0(SB)/8, $(const_expN-1)
DATA sigmoidIndexMask<>+8(SB)/8, $(const_expN-1)
DATA sigmoidIndexMask<>+16(SB)/8, $(const_expN-1)
DATA sigmoidIndexMask<>+24(SB)/8, $(const_expN-1)
GLOBL sigmoidIndexMask<>(SB), RODATA|NOPTR, $32

DATA sigmoidOne<>+0(SB)/8, $0x3ff0000000000000
GLOBL sigmoidOne<>(SB), RODATA|NOPTR, $8

// func sigmoidAVX2(z []float64, b float64) (n int)
//
// Go's operand order: sources first, destination last; VSUBPD Y1, Y0, Y2 is Y2 = Y0 - Y1.
// Each line names the Go expression of sigmoidInPlaceGo it computes. The additions and
// multiplications whose operands appear swapped are commutative in IEEE arithmetic (the
// operands are finite here).
TEXT ·sigmoidAVX2(SB), NOSPLIT, $0-40
	MOVQ z_base+0(FP), SI
	MOVQ z_len+8(FP), CX
	XORQ AX, AX                  // n
	SUBQ $4, CX                  // the last group starts at or before len-4
	JL   done
	VBROADCASTSD b+24(FP), Y15
	LEAQ ·expConst(SB), DX
	VBROADCASTSD 0(DX), Y14      // negInvLn2N
	VBROADCASTSD 8(DX), Y13      // shift
	VBROADCASTSD 16(DX), Y12     // negLn2HiN
	VBROADCASTSD 24(DX), Y11     // negLn2LoN
	VBROADCASTSD 32(DX), Y10     // c2
	VBROADCASTSD 40(DX), Y9      // c3
	VBROADCASTSD 48(DX), Y8      // c4
	VBROADCASTSD 56(DX), Y7      // c5
	VBROADCASTSD sigmoidOne<>(SB), Y6
	LEAQ ·expTable(SB), DI

loop:
	VADDPD (SI)(AX*8), Y15, Y0   // v = z[i] + b
	VMULPD Y14, Y0, Y1           // negInvLn2N*v
	VADDPD Y13, Y1, Y1           // kd = negInvLn2N*v + shift, whose bits are ki

	// ki-(expShiftBits-expMaxK) > 2*expMaxK (unsigned) for any of the four: leave the group.
	VPSUBQ   sigmoidRangeBias<>(SB), Y1, Y2
	VPCMPGTQ sigmoidRangeLimit<>(SB), Y2, Y2
	VPTEST   Y2, Y2
	JNZ      done

	VSUBPD Y13, Y1, Y2           // kd -= shift
	VMULPD Y12, Y2, Y3           // kd*negLn2HiN
	VSUBPD Y0, Y3, Y3            // kd*negLn2HiN - v
	VMULPD Y11, Y2, Y2           // kd*negLn2LoN
	VADDPD Y2, Y3, Y3            // r = (kd*negLn2HiN - v) + kd*negLn2LoN

	// t = &expTable[ki%expN]: the entries' byte offsets (ki%expN)·16 go to R8-R11, the entries
	// (t.tail, t.sbits) are loaded 16 bytes at a time, two to a register, and unpacked into
	// the four tails and the four sbits. (Two VPGATHERQQs instead measured 1% to 40%
	// slower, 20% in the median, on an AMD EPYC, Zen 4.)
	VPAND        sigmoidIndexMask<>(SB), Y1, Y4
	VPSLLQ       $4, Y4, Y4
	VMOVQ        X4, R8
	VPEXTRQ      $1, X4, R9
	VEXTRACTI128 $1, Y4, X5
	VMOVQ        X5, R10
	VPEXTRQ      $1, X5, R11
	VMOVUPD      (DI)(R8*1), X0            // entries 0 and 2
	VINSERTF128  $1, (DI)(R10*1), Y0, Y0
	VMOVUPD      (DI)(R9*1), X5            // entries 1 and 3
	VINSERTF128  $1, (DI)(R11*1), Y5, Y5
	VUNPCKHPD    Y5, Y0, Y2                // t.sbits (the second word of each entry)
	VUNPCKLPD    Y5, Y0, Y0                // t.tail (the first)
	VPSLLQ       $(52-const_expTableBits), Y1, Y1
	VPADDQ       Y1, Y2, Y2                // s = Float64frombits(t.sbits + ki<<(52-expTableBits))

	VMULPD Y3, Y3, Y1            // r2 = r*r
	VADDPD Y3, Y0, Y0            // t.tail + r
	VMULPD Y9, Y3, Y4            // r*c3
	VADDPD Y4, Y10, Y4           // c2 + r*c3
	VMULPD Y4, Y1, Y4            // r2*(c2 + r*c3)
	VADDPD Y4, Y0, Y0            // t.tail + r + r2*(c2 + r*c3)
	VMULPD Y7, Y3, Y4            // r*c5
	VADDPD Y4, Y8, Y4            // c4 + r*c5
	VMULPD Y1, Y1, Y5            // r2*r2
	VMULPD Y4, Y5, Y4            // (r2*r2)*(c4 + r*c5)
	VADDPD Y4, Y0, Y0            // p = t.tail + r + r2*(c2 + r*c3) + (r2*r2)*(c4 + r*c5)
	VMULPD Y0, Y2, Y0            // s*p
	VADDPD Y0, Y2, Y0            // s + s*p
	VADDPD Y0, Y6, Y0            // 1 + (s + s*p)
	VDIVPD Y0, Y6, Y0            // 1 / (1 + (s + s*p))
	VMOVUPD Y0, (SI)(AX*8)

	ADDQ $4, AX
	CMPQ AX, CX
	JLE  loop

done:
	MOVQ AX, n+32(FP)
	VZEROUPPER
	RET
