/*
** philox.h -- Philox4x32-10 and the mapping of its output to uniform and
** normal values, shared by the CPU (core/random.c) and the CUDA backend
** (cuda/random.cu), so that both devices draw the same values from the
** same (seed, counter) by construction. C11 and CUDA C++.
**
** One counter gives a block of 4 values for float32/float16/bfloat16
** (computed in float) or 2 for float64 (computed in double). On the device
** the arithmetic goes through ln_philox_{f,d}{add,mul}, which stop nvcc
** from fusing a multiply and an add into one FMA (a different rounding
** than the CPU's); the host compiler does not fuse on the x86-64 baseline.
** Uniform values are therefore identical on both devices; normal values
** go through logf/sinf/cosf (log/sin/cos for float64), whose CUDA and glibc
** versions may differ in the last place.
**
** C++ (.cu) files include this header as it is, outside extern "C".
*/
#ifndef LN_PHILOX_H
#define LN_PHILOX_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif
#include "dtype.h"
#include "hd.h"

/* What a uniform draw of dtype t in [from, to) stores in place of a value
** that rounds up to `to` in t: the largest value of t below `to`, or from
** when from == to. Host code; defined in core/random.c. */
double ln_philox_uniform_below(ln_dtype t, double from, double to);
#ifdef __cplusplus
}
#endif


#define LN_PHILOX_TWO_PI 6.283185307179586476925

typedef struct ln_philox4 { uint32_t v[4]; } ln_philox4;

static inline LN_HD ln_philox4 ln_philox(uint64_t seed, uint64_t counter) {
  uint32_t c0 = (uint32_t)counter, c1 = (uint32_t)(counter >> 32), c2 = 0, c3 = 0;
  uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
  for (int r = 0; r < 10; r++) {
    uint64_t p0 = (uint64_t)0xD2511F53u * c0, p1 = (uint64_t)0xCD9E8D57u * c2;
    uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
    c0 = n0; c1 = (uint32_t)p1; c2 = n2; c3 = (uint32_t)p0;
    k0 += 0x9E3779B9u; k1 += 0xBB67AE85u;
  }
  ln_philox4 out = { { c0, c1, c2, c3 } };
  return out;
}

/* Rounded arithmetic, never fused (see the top). */
#ifdef __CUDA_ARCH__
static inline __device__ float ln_philox_fadd(float a, float b) { return __fadd_rn(a, b); }
static inline __device__ float ln_philox_fmul(float a, float b) { return __fmul_rn(a, b); }
static inline __device__ double ln_philox_dadd(double a, double b) { return __dadd_rn(a, b); }
static inline __device__ double ln_philox_dmul(double a, double b) { return __dmul_rn(a, b); }
#else
static inline float ln_philox_fadd(float a, float b) { return a + b; }
static inline float ln_philox_fmul(float a, float b) { return a * b; }
static inline double ln_philox_dadd(double a, double b) { return a + b; }
static inline double ln_philox_dmul(double a, double b) { return a * b; }
#endif

/* Uniform in [0, 1) from 24 bits (float) or 53 bits (double). */
static inline LN_HD float ln_philox_unit_f(uint32_t a) { return (float)(a >> 8) * 0x1p-24f; }
static inline LN_HD double ln_philox_unit_d(uint32_t a, uint32_t b) {
  return (double)((((uint64_t)a << 32) | b) >> 11) * 0x1p-53;
}

/* A draw: uniform in [a, b) or normal with mean a and standard deviation
** b, in double (float64) or float (the other float dtypes). */
typedef struct ln_philox_draw {
  bool normal;
  bool f64;
  double a, b;
} ln_philox_draw;

/* Values per counter: 2 in double, 4 in float. */
static inline LN_HD int ln_philox_lanes(const ln_philox_draw *d) { return d->f64 ? 2 : 4; }

/* The values of counter c under seed, in draw order; returns how many
** (ln_philox_lanes). Element i of a draw starting at counter c0 is value
** i % lanes of counter c0 + i / lanes. Box-Muller takes log(1 - u0),
** 1 - u0 being in (0, 1]. */
static inline LN_HD int ln_philox_block(const ln_philox_draw *d, uint64_t seed, uint64_t c,
                                        double out[4]) {
  ln_philox4 r = ln_philox(seed, c);
  if (d->f64) {
    double u0 = ln_philox_unit_d(r.v[0], r.v[1]), u1 = ln_philox_unit_d(r.v[2], r.v[3]);
    if (!d->normal) {
      out[0] = ln_philox_dadd(d->a, ln_philox_dmul(u0, d->b - d->a));
      out[1] = ln_philox_dadd(d->a, ln_philox_dmul(u1, d->b - d->a));
    } else {
      double rad = sqrt(-2.0 * log(1.0 - u0)), th = LN_PHILOX_TWO_PI * u1;
      out[0] = ln_philox_dadd(d->a, ln_philox_dmul(ln_philox_dmul(d->b, rad), cos(th)));
      out[1] = ln_philox_dadd(d->a, ln_philox_dmul(ln_philox_dmul(d->b, rad), sin(th)));
    }
    return 2;
  }
  float from = (float)d->a, to = (float)d->b;
  for (int p = 0; p < 4; p += 2) {
    float u0 = ln_philox_unit_f(r.v[p]), u1 = ln_philox_unit_f(r.v[p + 1]);
    if (!d->normal) {
      out[p] = ln_philox_fadd(from, ln_philox_fmul(u0, to - from));
      out[p + 1] = ln_philox_fadd(from, ln_philox_fmul(u1, to - from));
    } else {
      float rad = sqrtf(-2.0f * logf(1.0f - u0)), th = (float)LN_PHILOX_TWO_PI * u1;
      out[p] = ln_philox_fadd(from, ln_philox_fmul(ln_philox_fmul(to, rad), cosf(th)));
      out[p + 1] = ln_philox_fadd(from, ln_philox_fmul(ln_philox_fmul(to, rad), sinf(th)));
    }
  }
  return 4;
}

#endif
