/*
** batchnorm_cpu_avx512.c -- the BatchNorm loops compiled for AVX-512
** (chosen at run time by batchnorm_cpu.c when the CPU has it). Its 32
** vector registers hold a rows block's per-channel state for 64 float32
** channels, so the channels-last loops keep it there (BN_REG_ROWS in
** batchnorm_cpu.inc). The loops the compiler vectorizes itself stay 256
** bits wide: 512-bit ones ran the NCHW maps 1.14-1.19x slower here.
*/
#include "batchnorm_cpu.h"

#ifdef LN_BN_HAVE_X86
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,prefer-vector-width=256")
#include <immintrin.h>

/* A streaming store of the 64 bytes at p (64-byte aligned), for the
** register blocks' maps: one row per call of bn_stream_copy cost more
** than the row. */
static inline void bn_stream64(void *p, __m512i v) { _mm512_stream_si512(p, v); }

/* The lanes of v that pass a ReLU's gradient (not <= 0: > 0 or NaN), as
** bits, for float32 and float64 lanes. */
static inline uint32_t bn_pass16(__m512 v) {
  return _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_NLE_UQ);
}

static inline uint32_t bn_pass8(__m512d v) {
  return _mm512_cmp_pd_mask(v, _mm512_setzero_pd(), _CMP_NLE_UQ);
}

#define BN_ISA avx512
#define BN_REG 1
#include "batchnorm_cpu_isa.inc"
#endif
