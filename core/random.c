/*
** random.c -- the global random generator: Philox4x32-10 (Salmon et al.,
** "Parallel random numbers: as easy as 1, 2, 3", SC'11), keyed by the seed;
** the generator and its values are in core/philox.h, shared with CUDA.
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
#include "device_kernels.h"
#include "philox.h"
#include "random.h"

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

/* ---- filling a contiguous buffer ---- */

/* A draw (core/philox.h) and the storage dtype of its values. For uniform
** draws a value that rounds up to `to` in the storage type is replaced by
** `below` (ln_philox_uniform_below). */
typedef struct {
  ln_philox_draw draw;
  ln_dtype dtype;
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

double ln_philox_uniform_below(ln_dtype t, double from, double to) {
  return from < to ? storable_below(t, to) : from;
}

static inline void store(void *data, int64_t i, const draw_spec *d, double v) {
  put(data, d->dtype, i, v);
  if (!d->draw.normal && get(data, d->dtype, i) >= d->draw.b)
    put(data, d->dtype, i, d->below);
}

/* The counters an n-element draw uses. Both devices reserve this many, so
** the generator moves on by the same amount wherever a tensor lives. */
static int64_t draw_blocks(int64_t n, const draw_spec *d) {
  int64_t lanes = ln_philox_lanes(&d->draw);
  return (n + lanes - 1) / lanes;
}

/* Fill n contiguous elements at data, reserving the counters they use. */
static void fill_contiguous(void *data, int64_t n, const draw_spec *d) {
  int64_t blocks = draw_blocks(n, d);
  ln_rng_state s = reserve((uint64_t)blocks);
#pragma omp parallel for schedule(static) if (blocks > 4096)
  for (int64_t c = 0; c < blocks; c++) {
    double v[4];
    int k = ln_philox_block(&d->draw, s.seed, s.offset + (uint64_t)c, v);
    for (int l = 0; l < k && c * k + l < n; l++) store(data, c * k + l, d, v[l]);
  }
}

/* Fill t (any strides, any device): a contiguous CPU tensor directly, a
** contiguous device tensor with its backend's philox_fill, anything else
** through a contiguous CPU buffer and a copy. */
static ln_status fill(ln_tensor *t, const draw_spec *d) {
  ln_device dev = ln_tensor_device(t);
  bool contiguous = ln_tensor_is_contiguous(t, LN_CONTIGUOUS);
  if (dev.type == LN_CPU && contiguous) {
    fill_contiguous(ln_tensor_data(t), ln_tensor_numel(t), d);
    return LN_OK;
  }
  const ln_device_kernels *k = ln_device_kernels_get(dev);
  if (contiguous && k && k->philox_fill) {
    int64_t n = ln_tensor_numel(t);
    ln_rng_state s = reserve((uint64_t)draw_blocks(n, d));
    return k->philox_fill(dev.index, ln_tensor_data(t), d->dtype, n, d->draw.normal,
                          d->draw.a, d->draw.b, s.seed, s.offset);
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
  ln_dtype dt = ln_tensor_dtype(t);
  draw_spec d = { { false, dt == LN_F64, from, to }, dt,
                  ln_philox_uniform_below(dt, from, to) };
  return fill(t, &d);
}

ln_status ln_normal_(ln_tensor *t, double mean, double std) {
  ln_status st = check_float(t, "normal_");
  if (st != LN_OK) return st;
  if (!(std >= 0.0))
    return ln_error(LN_EINVAL, "normal expects std >= 0.0, but found std %g", std);
  ln_dtype dt = ln_tensor_dtype(t);
  draw_spec d = { { true, dt == LN_F64, mean, std }, dt, 0 };
  return fill(t, &d);
}

/* Create on `dev` and fill there (fill() picks the device's way). */
static ln_tensor *create_filled(const int64_t *sizes, int ndim, ln_dtype dtype,
                                ln_device dev, bool normal) {
  ln_tensor *t = ln_empty(sizes, ndim, dtype, dev);
  if (!t) return NULL;
  ln_status st = normal ? ln_normal_(t, 0.0, 1.0) : ln_uniform_(t, 0.0, 1.0);
  if (st == LN_OK) return t;
  ln_tensor_release(t);
  return NULL;
}

ln_tensor *ln_rand(const int64_t *sizes, int ndim, ln_dtype dtype, ln_device dev) {
  return create_filled(sizes, ndim, dtype, dev, false);
}

ln_tensor *ln_randn(const int64_t *sizes, int ndim, ln_dtype dtype, ln_device dev) {
  return create_filled(sizes, ndim, dtype, dev, true);
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
    ln_philox4 r = ln_philox(s.seed, s.offset + (uint64_t)(k / 2));
    int l = (int)(k % 2) * 2;
    uint64_t bits = ((uint64_t)r.v[l] << 32) | r.v[l + 1];
    int64_t i = n - 1 - k;
    int64_t j = (int64_t)(((unsigned __int128)bits * (uint64_t)(i + 1)) >> 64);
    int64_t tmp = p[i]; p[i] = p[j]; p[j] = tmp;
  }
  return t;
}
