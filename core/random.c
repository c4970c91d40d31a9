/*
** random.c -- the global random generator: Philox4x32-10 (Salmon et al.,
** "Parallel random numbers: as easy as 1, 2, 3", SC'11), keyed by the seed.
** A draw of n elements reserves a range of counters [offset, offset + k)
** and element i takes lane i % L of block offset + i / L, where one block
** yields L values (4 in float arithmetic, 2 in double). Every element is
** therefore a pure function of (seed, counter, lane): the values do not
** depend on how OpenMP splits the loop. Elements are numbered in row-major
** order of the tensor's shape, whatever its strides or device.
*/
#include <math.h>
#include <string.h>

#include "autograd.h"
#include "random.h"

#define LN_TWO_PI 6.283185307179586476925
#define LN_DEFAULT_SEED UINT64_C(67280421310721)   /* PyTorch's default */

static ln_rng_state rng = { LN_DEFAULT_SEED, 0 };

void ln_manual_seed(uint64_t seed) {
#pragma omp critical(ln_rng)
  rng = (ln_rng_state){ seed, 0 };
}

uint64_t ln_initial_seed(void) {
  uint64_t s;
#pragma omp critical(ln_rng)
  s = rng.seed;
  return s;
}

ln_rng_state ln_rng_get_state(void) {
  ln_rng_state s;
#pragma omp critical(ln_rng)
  s = rng;
  return s;
}

void ln_rng_set_state(ln_rng_state s) {
#pragma omp critical(ln_rng)
  rng = s;
}

/* Reserve `blocks` counters; returns the state to draw them from. */
static ln_rng_state reserve(uint64_t blocks) {
  ln_rng_state s;
#pragma omp critical(ln_rng)
  {
    s = rng;
    rng.offset += blocks;
  }
  return s;
}

/* ---- Philox4x32-10 ---- */

typedef struct { uint32_t v[4]; } philox_out;

static inline philox_out philox(uint64_t seed, uint64_t counter) {
  uint32_t c0 = (uint32_t)counter, c1 = (uint32_t)(counter >> 32), c2 = 0, c3 = 0;
  uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
  for (int r = 0; r < 10; r++) {
    uint64_t p0 = (uint64_t)0xD2511F53u * c0, p1 = (uint64_t)0xCD9E8D57u * c2;
    uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
    c0 = n0; c1 = (uint32_t)p1; c2 = n2; c3 = (uint32_t)p0;
    k0 += 0x9E3779B9u; k1 += 0xBB67AE85u;
  }
  return (philox_out){ { c0, c1, c2, c3 } };
}

/* Uniform in [0, 1) from 24 bits (float) or 53 bits (double). */
static inline float unit_f(uint32_t a) { return (float)(a >> 8) * 0x1p-24f; }
static inline double unit_d(uint32_t a, uint32_t b) {
  return (double)((((uint64_t)a << 32) | b) >> 11) * 0x1p-53;
}

/* ---- filling a contiguous buffer ---- */

typedef enum { DRAW_UNIFORM, DRAW_NORMAL } draw_kind;

/* A draw: its kind, parameters and the storage dtype of the values. For
** uniform draws a value that rounds up to `to` in the storage type is
** replaced by `below`, the largest storable value under `to`. */
typedef struct {
  draw_kind kind;
  ln_dtype dtype;
  double a, b;        /* from, to  or  mean, std */
  double below;
} draw_spec;

static inline void put(void *data, ln_dtype t, int64_t i, double v) {
  switch (t) {
  case LN_F64: ((double *)data)[i] = v; break;
  case LN_F32: ((float *)data)[i] = (float)v; break;
  case LN_F16: ((uint16_t *)data)[i] = ln_float_to_half((float)v); break;
  default: ((uint16_t *)data)[i] = ln_float_to_bf16((float)v); break;
  }
}

static inline double get(const void *data, ln_dtype t, int64_t i) {
  switch (t) {
  case LN_F64: return ((const double *)data)[i];
  case LN_F32: return ((const float *)data)[i];
  case LN_F16: return ln_half_to_float(((const uint16_t *)data)[i]);
  default: return ln_bf16_to_float(((const uint16_t *)data)[i]);
  }
}

/* The largest value of float dtype t below `to`: step the bit pattern of
** `to` rounded to t towards -inf until it is below (a step or two). */
static double storable_below(ln_dtype t, double to) {
  uint64_t bits = 0, sign = (uint64_t)1 << (8 * ln_dtype_size(t) - 1);
  put(&bits, t, 0, to);   /* little-endian: the pattern lands in the low bytes */
  while (get(&bits, t, 0) >= to)
    bits = (bits & sign) ? bits + 1 : (bits == 0 ? sign | 1 : bits - 1);
  return get(&bits, t, 0);
}

static inline void store(void *data, int64_t i, const draw_spec *d, double v) {
  put(data, d->dtype, i, v);
  if (d->kind == DRAW_UNIFORM && get(data, d->dtype, i) >= d->b)
    put(data, d->dtype, i, d->below);
}

/* Values of block `c` in the compute type of d->dtype; returns the count. */
static inline int block_values(const draw_spec *d, uint64_t seed, uint64_t c,
                               double out[4]) {
  philox_out r = philox(seed, c);
  if (d->dtype == LN_F64) {
    double u0 = unit_d(r.v[0], r.v[1]), u1 = unit_d(r.v[2], r.v[3]);
    if (d->kind == DRAW_UNIFORM) {
      out[0] = d->a + u0 * (d->b - d->a);
      out[1] = d->a + u1 * (d->b - d->a);
    } else {  /* Box-Muller; 1 - u0 lies in (0, 1] */
      double rad = sqrt(-2.0 * log(1.0 - u0)), th = LN_TWO_PI * u1;
      out[0] = d->a + d->b * rad * cos(th);
      out[1] = d->a + d->b * rad * sin(th);
    }
    return 2;
  }
  float from = (float)d->a, to = (float)d->b;
  for (int p = 0; p < 4; p += 2) {
    float u0 = unit_f(r.v[p]), u1 = unit_f(r.v[p + 1]);
    if (d->kind == DRAW_UNIFORM) {
      out[p] = from + u0 * (to - from);
      out[p + 1] = from + u1 * (to - from);
    } else {
      float rad = sqrtf(-2.0f * logf(1.0f - u0)), th = (float)LN_TWO_PI * u1;
      out[p] = (float)d->a + (float)d->b * rad * cosf(th);
      out[p + 1] = (float)d->a + (float)d->b * rad * sinf(th);
    }
  }
  return 4;
}

/* Fill n contiguous elements at data, reserving the counters they use. */
static void fill_contiguous(void *data, int64_t n, const draw_spec *d) {
  int64_t lanes = d->dtype == LN_F64 ? 2 : 4;
  int64_t blocks = (n + lanes - 1) / lanes;
  ln_rng_state s = reserve((uint64_t)blocks);
#pragma omp parallel for schedule(static) if (blocks > 4096)
  for (int64_t c = 0; c < blocks; c++) {
    double v[4];
    int k = block_values(d, s.seed, s.offset + (uint64_t)c, v);
    for (int l = 0; l < k && c * k + l < n; l++) store(data, c * k + l, d, v[l]);
  }
}

/* Fill t (any strides, any device) through a contiguous CPU buffer when t
** is not itself a contiguous CPU tensor. */
static ln_status fill(ln_tensor *t, const draw_spec *d) {
  if (ln_tensor_device(t).type == LN_CPU && ln_tensor_is_contiguous(t, LN_CONTIGUOUS)) {
    fill_contiguous(ln_tensor_data(t), ln_tensor_numel(t), d);
    return LN_OK;
  }
  ln_tensor *tmp = ln_empty(ln_tensor_sizes(t), ln_tensor_dim(t), ln_tensor_dtype(t), LN_DEVICE_CPU);
  if (!tmp) return ln_last_status();
  fill_contiguous(ln_tensor_data(tmp), ln_tensor_numel(tmp), d);
  bool prev = ln_set_grad_enabled(false);   /* an in-place fill records no history */
  ln_status st = ln_copy_(t, tmp);
  ln_set_grad_enabled(prev);
  ln_tensor_release(tmp);
  return st;
}

static ln_status check_float(const ln_tensor *t, const char *what) {
  if (ln_dtype_is_float(ln_tensor_dtype(t))) return LN_OK;
  return ln_error(LN_EINVAL, "%s expects a floating point tensor, got %s", what,
                  ln_dtype_name(ln_tensor_dtype(t)));
}

ln_status ln_uniform_(ln_tensor *t, double from, double to) {
  ln_status st = check_float(t, "uniform_");
  if (st != LN_OK) return st;
  if (!isfinite(from) || !isfinite(to))
    return ln_error(LN_EINVAL, "uniform_ expects finite bounds, got from=%g to=%g", from, to);
  if (from > to)
    return ln_error(LN_EINVAL, "uniform_ expects to return a [from, to) range, but "
                    "found from=%g > to=%g", from, to);
  draw_spec d = { DRAW_UNIFORM, ln_tensor_dtype(t), from, to, from };
  if (from < to) d.below = storable_below(ln_tensor_dtype(t), to);
  return fill(t, &d);
}

ln_status ln_normal_(ln_tensor *t, double mean, double std) {
  ln_status st = check_float(t, "normal_");
  if (st != LN_OK) return st;
  if (!(std >= 0.0))
    return ln_error(LN_EINVAL, "normal expects std >= 0.0, but found std %g", std);
  draw_spec d = { DRAW_NORMAL, ln_tensor_dtype(t), mean, std, 0 };
  return fill(t, &d);
}

/* Create on the CPU, fill, then move to `dev`. */
static ln_tensor *create_filled(const int64_t *sizes, int ndim, ln_dtype dtype,
                                ln_device dev, draw_kind kind) {
  ln_tensor *cpu = ln_empty(sizes, ndim, dtype, LN_DEVICE_CPU), *out = NULL;
  if (!cpu) return NULL;
  ln_status st = kind == DRAW_UNIFORM ? ln_uniform_(cpu, 0.0, 1.0) : ln_normal_(cpu, 0.0, 1.0);
  if (st == LN_OK) out = ln_to_device(cpu, dev);
  ln_tensor_release(cpu);
  return out;
}

ln_tensor *ln_rand(const int64_t *sizes, int ndim, ln_dtype dtype, ln_device dev) {
  return create_filled(sizes, ndim, dtype, dev, DRAW_UNIFORM);
}

ln_tensor *ln_randn(const int64_t *sizes, int ndim, ln_dtype dtype, ln_device dev) {
  return create_filled(sizes, ndim, dtype, dev, DRAW_NORMAL);
}

/* Fisher-Yates: step k (swapping position n-1-k with a position drawn in
** [0, n-1-k]) uses 64 random bits, lane k % 2 of block offset + k / 2. */
ln_tensor *ln_randperm(int64_t n) {
  if (n < 0) {
    ln_error(LN_EINVAL, "randperm: n must be non-negative, got %lld", (long long)n);
    return NULL;
  }
  int64_t size[1] = { n };
  ln_tensor *t = ln_empty(size, 1, LN_I64, LN_DEVICE_CPU);
  if (!t) return NULL;
  int64_t *p = ln_tensor_data(t);
  for (int64_t i = 0; i < n; i++) p[i] = i;
  int64_t steps = n > 1 ? n - 1 : 0;
  ln_rng_state s = reserve((uint64_t)(steps + 1) / 2);
  for (int64_t k = 0; k < steps; k++) {
    philox_out r = philox(s.seed, s.offset + (uint64_t)(k / 2));
    int l = (int)(k % 2) * 2;
    uint64_t bits = ((uint64_t)r.v[l] << 32) | r.v[l + 1];
    int64_t i = n - 1 - k;
    int64_t j = (int64_t)(((unsigned __int128)bits * (uint64_t)(i + 1)) >> 64);
    int64_t tmp = p[i]; p[i] = p[j]; p[j] = tmp;
  }
  return t;
}
