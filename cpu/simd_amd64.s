//go:build amd64 && !purego

#include "textflag.h"

// AVX2 and F16C kernels of QuantizeGroups and Dequantize (simd_amd64.go
// has the wrappers, simd.go the callers). Every floating-point instruction
// here is one IEEE binary32 operation rounded to nearest even, lane by
// lane, the same operation as in the scalar code of package quant (a
// division, a multiply, an add; min and max, which are exact; conversions,
// exact or rounded to nearest even), so the results are the same bits.
// There is no VFMADD anywhere: a fused x*inv+magic would round once
// instead of twice and change codes at near-ties. Go never sets MXCSR's
// FTZ or DAZ, so subnormal inputs and results are kept, as in Go.

// VPERMD indices that undo the lane interleaving of VPACKSSDW+VPACKSSWB:
// after the two packs, dword k of the result holds the codes of floats
// 4(k/4) to 4(k/4)+3 of input vector k mod 4 (the packs work within
// 128-bit lanes); reading dwords 0,4,1,5,2,6,3,7 puts the 32 codes back
// in input order.
DATA packOrder<>+0(SB)/4, $0
DATA packOrder<>+4(SB)/4, $4
DATA packOrder<>+8(SB)/4, $1
DATA packOrder<>+12(SB)/4, $5
DATA packOrder<>+16(SB)/4, $2
DATA packOrder<>+20(SB)/4, $6
DATA packOrder<>+24(SB)/4, $3
DATA packOrder<>+28(SB)/4, $7
GLOBL packOrder<>(SB), RODATA|NOPTR, $32

// func absMaxAVX2(m *uint32, x *float32, ngroups, gs int)
//
// m[k] = max over x[k*gs : (k+1)*gs] of (bits & 0x7fffffff), for k in
// [0, ngroups); ngroups >= 1, gs a positive multiple of 8.
//
// This is absMaxBits on the integer bit patterns, not a float max: for
// non-negative finite floats the unsigned order of the bits is the order
// of the values, so the result is the exact absolute maximum whatever the
// order of the comparisons, and a NaN or ±Inf (all-ones exponent) shows
// as a result >= 0x7f800000, which the caller then locates in Go.
TEXT ·absMaxAVX2(SB), NOSPLIT, $0-32
	MOVQ m+0(FP), DI
	MOVQ x+8(FP), SI
	MOVQ ngroups+16(FP), CX
	MOVQ gs+24(FP), DX
	VPCMPEQD Y15, Y15, Y15
	VPSRLD   $1, Y15, Y15 // 0x7fffffff in every lane

absgroup:
	// Four running maxima hide the latency of VPMAXUD.
	VPXOR Y0, Y0, Y0
	VPXOR Y1, Y1, Y1
	VPXOR Y2, Y2, Y2
	VPXOR Y3, Y3, Y3
	MOVQ  DX, BX
	CMPQ  BX, $32
	JB    abs8

abs32:
	VPAND   (SI), Y15, Y4
	VPAND   32(SI), Y15, Y5
	VPAND   64(SI), Y15, Y6
	VPAND   96(SI), Y15, Y7
	VPMAXUD Y4, Y0, Y0
	VPMAXUD Y5, Y1, Y1
	VPMAXUD Y6, Y2, Y2
	VPMAXUD Y7, Y3, Y3
	ADDQ    $128, SI
	SUBQ    $32, BX
	CMPQ    BX, $32
	JAE     abs32

abs8:
	TESTQ   BX, BX
	JZ      absreduce
	VPAND   (SI), Y15, Y4
	VPMAXUD Y4, Y0, Y0
	ADDQ    $32, SI
	SUBQ    $8, BX
	JMP     abs8

absreduce:
	VPMAXUD      Y1, Y0, Y0
	VPMAXUD      Y3, Y2, Y2
	VPMAXUD      Y2, Y0, Y0
	VEXTRACTI128 $1, Y0, X1
	VPMAXUD      X1, X0, X0
	VPSHUFD      $0x4e, X0, X1
	VPMAXUD      X1, X0, X0
	VPSHUFD      $0xb1, X0, X1
	VPMAXUD      X1, X0, X0
	VMOVD        X0, (DI)
	ADDQ         $4, DI
	DECQ         CX
	JNZ          absgroup
	VZEROUPPER
	RET

// func scalesAVX2(bits *uint16, inv *float32, m *uint32, n int, qmax float32)
//
// For k in [0, n), n a positive multiple of 8, with amax the float32 whose
// bits are m[k] (finite and non-negative, or the result is unused):
//
//	bits[k] = quant.ScaleBits(amax, qmax) (the stored scale, 0x7c00 on overflow)
//	inv[k]  = quant.Reciprocal(bits[k])
//
// step by step as quant does it: s32 = amax / qmax is one IEEE division
// (VDIVPS, like Go's DIVSS); VCVTPS2PH with immediate 0 is the IEEE
// binary32-to-binary16 conversion rounding to nearest even, with
// subnormal results and overflow to +Inf, which is what
// float16.Fromfloat32 computes in software (TestScalesSIMD compares them
// on every binary32 in the range that does not simply give 0 or +Inf);
// a result of 0 for amax > 0 becomes 0x0001; VCVTPH2PS widens exactly and
// 1/s is one IEEE division, replaced by +0 where the scale is 0.
TEXT ·scalesAVX2(SB), NOSPLIT, $0-36
	MOVQ         bits+0(FP), DI
	MOVQ         inv+8(FP), R8
	MOVQ         m+16(FP), SI
	MOVQ         n+24(FP), CX
	VBROADCASTSS qmax+32(FP), Y15
	MOVL         $0x3f800000, AX
	VMOVD        AX, X14
	VPBROADCASTD X14, Y14         // 1.0
	VPCMPEQW     X13, X13, X13
	VPSRLW       $15, X13, X13    // 0x0001 in every word
	VPXOR        Y12, Y12, Y12

scaleloop:
	VMOVDQU      (SI), Y0
	VDIVPS       Y15, Y0, Y1      // s32 = amax / qmax
	VCVTPS2PH    $0, Y1, X2       // s16, round to nearest even
	VPCMPEQW     X12, X2, X3      // s16 == 0
	VPCMPEQD     Y12, Y0, Y4      // amax == 0
	VEXTRACTI128 $1, Y4, X5
	VPACKSSDW    X5, X4, X4       // as words, in order
	VPANDN       X3, X4, X4       // s16 == 0 and amax > 0
	VPAND        X13, X4, X4
	VPOR         X4, X2, X2       // then s16 = 2^-24
	VMOVDQU      X2, (DI)
	VCVTPH2PS    X2, Y5           // s, exact
	VDIVPS       Y5, Y14, Y6      // 1/s
	VPCMPEQW     X12, X2, X7
	VPMOVSXWD    X7, Y7           // s16 == 0, as dwords
	VPANDN       Y6, Y7, Y6       // 0 there (1/s was +Inf)
	VMOVUPS      Y6, (R8)
	ADDQ         $32, SI
	ADDQ         $16, DI
	ADDQ         $32, R8
	SUBQ         $8, CX
	JG           scaleloop
	VZEROUPPER
	RET

// CODE computes the codes of the 8 floats at off(SI) into R as int32:
//
//	R = bits(f32(max(-qmax, min(qmax, f32(x*inv))) + roundMagic)) - magicBits
//
// which is quant.Code lane by lane. Y15 = inv, Y14 = qmax, Y13 = -qmax,
// Y12 = roundMagic (its bits are also magicBits), all broadcast.
//
// Operand order matters for NaN only, but is kept the same as Go's min and
// max anyway: VMINPS returns its second source when either is NaN, so
// with x*inv as the second source a NaN propagates like Go's min(m, v).
#define CODE(off, R) \
	VMULPS off(SI), Y15, R; \
	VMINPS R, Y14, R; \
	VMAXPS R, Y13, R; \
	VADDPS Y12, R, R; \
	VPSUBD Y12, R, R

// CODES32 leaves the int8 codes of the 32 floats at (SI) in Y0, in order
// (Y11 = packOrder). The codes lie in [-qmax, qmax], so the saturating
// packs are exact.
#define CODES32 \
	CODE(0, Y0); \
	CODE(32, Y1); \
	CODE(64, Y2); \
	CODE(96, Y3); \
	VPACKSSDW Y1, Y0, Y0; \
	VPACKSSDW Y3, Y2, Y2; \
	VPACKSSWB Y2, Y0, Y0; \
	VPERMD    Y0, Y11, Y0

// CODES8 leaves the int8 codes of the 8 floats at (SI) in the low 8 bytes
// of X0, in order.
#define CODES8 \
	CODE(0, Y0); \
	VPACKSSDW Y0, Y0, Y0; \
	VPERMQ    $0x08, Y0, Y0; \
	VPACKSSWB X0, X0, X0

// SETUP loads the constants of CODE for the given qmax (float32 bits).
#define SETUP(qmaxBits, negBits) \
	MOVL         $qmaxBits, AX; \
	VMOVD        AX, X14; \
	VPBROADCASTD X14, Y14; \
	MOVL         $negBits, AX; \
	VMOVD        AX, X13; \
	VPBROADCASTD X13, Y13; \
	MOVL         $0x4b400000, AX; \
	VMOVD        AX, X12; \
	VPBROADCASTD X12, Y12; \
	VMOVDQU      packOrder<>(SB), Y11

// func encode8AVX2(dst *byte, x *float32, inv *float32, ngroups, gs int)
//
// dst[i] = byte(int8(quant.Code(x[i], inv[i/gs], 127))) for i in
// [0, ngroups*gs); ngroups >= 1, gs a positive multiple of 8.
TEXT ·encode8AVX2(SB), NOSPLIT, $0-40
	MOVQ dst+0(FP), DI
	MOVQ x+8(FP), SI
	MOVQ inv+16(FP), R8
	MOVQ ngroups+24(FP), CX
	MOVQ gs+32(FP), DX
	SETUP(0x42fe0000, 0xc2fe0000) // ±127.0

enc8group:
	VBROADCASTSS (R8), Y15
	ADDQ         $4, R8
	MOVQ         DX, BX
	CMPQ         BX, $32
	JB           enc8tail

enc8loop:
	CODES32
	VMOVDQU Y0, (DI)
	ADDQ    $128, SI
	ADDQ    $32, DI
	SUBQ    $32, BX
	CMPQ    BX, $32
	JAE     enc8loop

enc8tail:
	TESTQ BX, BX
	JZ    enc8next
	CODES8
	VMOVQ X0, (DI)
	ADDQ  $32, SI
	ADDQ  $8, DI
	SUBQ  $8, BX
	JMP   enc8tail

enc8next:
	DECQ CX
	JNZ  enc8group
	VZEROUPPER
	RET

// func encode4AVX2(dst *byte, x *float32, inv *float32, ngroups, gs int)
//
// With q[i] = quant.Code(x[i], inv[i/gs], 7) for i in [0, ngroups*gs):
// dst[j] = PackNibble(q[2j]) | PackNibble(q[2j+1])<<4; ngroups >= 1, gs a
// positive multiple of 8.
//
// The nibbles are paired with VPMADDUBSW: with the codes masked to their
// low nibble (unsigned, 0..15) and the multipliers 1, 16 in alternate
// bytes, each word is even + 16·odd <= 255, which VPACKUSWB packs exactly.
TEXT ·encode4AVX2(SB), NOSPLIT, $0-40
	MOVQ dst+0(FP), DI
	MOVQ x+8(FP), SI
	MOVQ inv+16(FP), R8
	MOVQ ngroups+24(FP), CX
	MOVQ gs+32(FP), DX
	SETUP(0x40e00000, 0xc0e00000) // ±7.0
	MOVL         $0x0f0f0f0f, AX
	VMOVD        AX, X10
	VPBROADCASTD X10, Y10      // nibble mask
	MOVL         $0x10011001, AX
	VMOVD        AX, X9
	VPBROADCASTD X9, Y9        // bytes 1, 16, 1, 16, ...

enc4group:
	VBROADCASTSS (R8), Y15
	ADDQ         $4, R8
	MOVQ         DX, BX
	CMPQ         BX, $32
	JB           enc4tail

enc4loop:
	CODES32
	VPAND      Y10, Y0, Y0
	VPMADDUBSW Y9, Y0, Y0     // 16 words, in order
	VPACKUSWB  Y0, Y0, Y0     // bytes: lane 0 holds 0-7 (twice), lane 1 holds 8-15
	VPERMQ     $0x08, Y0, Y0
	VMOVDQU    X0, (DI)
	ADDQ       $128, SI
	ADDQ       $16, DI
	SUBQ       $32, BX
	CMPQ       BX, $32
	JAE        enc4loop

enc4tail:
	TESTQ BX, BX
	JZ    enc4next
	CODES8
	VPAND      X10, X0, X0
	VPMADDUBSW X9, X0, X0
	VPACKUSWB  X0, X0, X0
	VMOVD      X0, (DI)
	ADDQ       $32, SI
	ADDQ       $4, DI
	SUBQ       $8, BX
	JMP        enc4tail

enc4next:
	DECQ CX
	JNZ  enc4group
	VZEROUPPER
	RET

// Dequantization: w = f32(q) · s, where VCVTDQ2PS is exact for |q| <= 128
// and VMULPS is the IEEE multiply of quant.Decode (its product is exact
// anyway, see docs/ARITHMETIC.md).

// func decode8AVX2(y *float32, p *byte, sv *float32, ngroups, gs int)
//
// y[i] = quant.Decode(int32(int8(p[i])), sv[i/gs]) for i in
// [0, ngroups*gs); ngroups >= 1, gs a positive multiple of 8.
TEXT ·decode8AVX2(SB), NOSPLIT, $0-40
	MOVQ y+0(FP), DI
	MOVQ p+8(FP), SI
	MOVQ sv+16(FP), R8
	MOVQ ngroups+24(FP), CX
	MOVQ gs+32(FP), DX

dec8group:
	VBROADCASTSS (R8), Y15
	ADDQ         $4, R8
	MOVQ         DX, BX
	CMPQ         BX, $32
	JB           dec8tail

dec8loop:
	VPMOVSXBD (SI), Y0
	VPMOVSXBD 8(SI), Y1
	VPMOVSXBD 16(SI), Y2
	VPMOVSXBD 24(SI), Y3
	VCVTDQ2PS Y0, Y0
	VCVTDQ2PS Y1, Y1
	VCVTDQ2PS Y2, Y2
	VCVTDQ2PS Y3, Y3
	VMULPS    Y15, Y0, Y0
	VMULPS    Y15, Y1, Y1
	VMULPS    Y15, Y2, Y2
	VMULPS    Y15, Y3, Y3
	VMOVUPS   Y0, (DI)
	VMOVUPS   Y1, 32(DI)
	VMOVUPS   Y2, 64(DI)
	VMOVUPS   Y3, 96(DI)
	ADDQ      $32, SI
	ADDQ      $128, DI
	SUBQ      $32, BX
	CMPQ      BX, $32
	JAE       dec8loop

dec8tail:
	TESTQ     BX, BX
	JZ        dec8next
	VPMOVSXBD (SI), Y0
	VCVTDQ2PS Y0, Y0
	VMULPS    Y15, Y0, Y0
	VMOVUPS   Y0, (DI)
	ADDQ      $8, SI
	ADDQ      $32, DI
	SUBQ      $8, BX
	JMP       dec8tail

dec8next:
	DECQ CX
	JNZ  dec8group
	VZEROUPPER
	RET

// Shift counts that bring nibble k of a dword (bits 4k to 4k+3, which is
// element k: the even column in the low nibble of each byte) to the top,
// from where VPSRAD $28 sign-extends it as quant.UnpackNibble does.
DATA nibbleShifts<>+0(SB)/4, $28
DATA nibbleShifts<>+4(SB)/4, $24
DATA nibbleShifts<>+8(SB)/4, $20
DATA nibbleShifts<>+12(SB)/4, $16
DATA nibbleShifts<>+16(SB)/4, $12
DATA nibbleShifts<>+20(SB)/4, $8
DATA nibbleShifts<>+24(SB)/4, $4
DATA nibbleShifts<>+28(SB)/4, $0
GLOBL nibbleShifts<>(SB), RODATA|NOPTR, $32

// NIBBLES8 leaves in R, as float32, the 8 codes packed in the 4 bytes at off(SI).
#define NIBBLES8(off, R) \
	VPBROADCASTD off(SI), R; \
	VPSLLVD      Y14, R, R; \
	VPSRAD       $28, R, R; \
	VCVTDQ2PS    R, R

// func decode4AVX2(y *float32, p *byte, sv *float32, ngroups, gs int)
//
// y[i] = quant.Decode(quant.UnpackNibble(p[i/2] >> (4*(i%2))), sv[i/gs])
// for i in [0, ngroups*gs); ngroups >= 1, gs a positive multiple of 8.
TEXT ·decode4AVX2(SB), NOSPLIT, $0-40
	MOVQ    y+0(FP), DI
	MOVQ    p+8(FP), SI
	MOVQ    sv+16(FP), R8
	MOVQ    ngroups+24(FP), CX
	MOVQ    gs+32(FP), DX
	VMOVDQU nibbleShifts<>(SB), Y14

dec4group:
	VBROADCASTSS (R8), Y15
	ADDQ         $4, R8
	MOVQ         DX, BX
	CMPQ         BX, $32
	JB           dec4tail

dec4loop:
	NIBBLES8(0, Y0)
	NIBBLES8(4, Y1)
	NIBBLES8(8, Y2)
	NIBBLES8(12, Y3)
	VMULPS  Y15, Y0, Y0
	VMULPS  Y15, Y1, Y1
	VMULPS  Y15, Y2, Y2
	VMULPS  Y15, Y3, Y3
	VMOVUPS Y0, (DI)
	VMOVUPS Y1, 32(DI)
	VMOVUPS Y2, 64(DI)
	VMOVUPS Y3, 96(DI)
	ADDQ    $16, SI
	ADDQ    $128, DI
	SUBQ    $32, BX
	CMPQ    BX, $32
	JAE     dec4loop

dec4tail:
	TESTQ   BX, BX
	JZ      dec4next
	NIBBLES8(0, Y0)
	VMULPS  Y15, Y0, Y0
	VMOVUPS Y0, (DI)
	ADDQ    $4, SI
	ADDQ    $32, DI
	SUBQ    $8, BX
	JMP     dec4tail

dec4next:
	DECQ CX
	JNZ  dec4group
	VZEROUPPER
	RET
