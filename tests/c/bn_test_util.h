/*
** bn_test_util.h -- what the BatchNorm C tests share: a seeded generator,
** tensors in the layouts the kernels meet (row-major, channels-last,
** narrowed channels, a narrowed last dim that no kernel reads), their
** values in logical order as doubles, tolerances per dtype and
** comparisons. Static inline, so that each test takes what it uses.
*/
#ifndef LN_BN_TEST_UTIL_H
#define LN_BN_TEST_UTIL_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/tensor.h"

#define CPU LN_DEVICE_CPU


static uint64_t rng = 88172645463325252ull;

static inline double uniform(double lo, double hi) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return lo + (hi - lo) * (double)(rng >> 11) / 9007199254740992.0;
}

static inline double gauss(void) {
  double u = uniform(1e-12, 1), v = uniform(0, 1);
  return sqrt(-2 * log(u)) * cos(6.283185307179586 * v);
}

static inline bool next_index(int64_t *idx, const int64_t *sizes, int nd) {
  for (int d = nd - 1; d >= 0; d--) {
    if (++idx[d] < sizes[d]) return true;
    idx[d] = 0;
  }
  return false;
}

/* Every element of t in row-major order of its logical shape, as doubles. */
static inline double *values(const ln_tensor *t) {
  int nd = ln_tensor_dim(t);
  int64_t n = ln_tensor_numel(t), idx[LN_MAX_DIMS] = { 0 }, k = 0;
  double *v = malloc(sizeof(double) * (size_t)(n + 1));
  if (n == 0) return v;
  do v[k++] = ln_tensor_get(t, idx);
  while (next_index(idx, ln_tensor_sizes(t), nd));
  return v;
}

/* Write v (row-major logical order) into t, rounding to t's dtype. */
static inline void set_values(ln_tensor *t, const double *v) {
  int nd = ln_tensor_dim(t);
  const int64_t *st = ln_tensor_strides(t);
  int64_t idx[LN_MAX_DIMS] = { 0 }, k = 0;
  size_t es = ln_dtype_size(ln_tensor_dtype(t));
  if (ln_tensor_numel(t) == 0) return;
  do {
    int64_t off = 0;
    for (int d = 0; d < nd; d++) off += idx[d] * st[d];
    ln_store_double((char *)ln_tensor_data(t) + off * (int64_t)es, ln_tensor_dtype(t), v[k++]);
  } while (next_index(idx, ln_tensor_sizes(t), nd));
}

static inline void fill_uniform(ln_tensor *t, double lo, double hi) {
  int64_t n = ln_tensor_numel(t);
  double *v = malloc(sizeof(double) * (size_t)(n + 1));
  for (int64_t i = 0; i < n; i++) v[i] = uniform(lo, hi);
  set_values(t, v);
  free(v);
}

typedef enum layout {
  L_CONTIG,       /* row-major (NCHW) */
  L_CL,           /* channels-last: a permuted (N, *, C) tensor */
  L_NARROW_C,     /* row-major, channels narrowed from a wider tensor */
  L_CL_NARROW_C,  /* channels-last, channels narrowed */
  L_NARROW_LAST,  /* last dim narrowed: no kernel layout, copied first */
  L_C_MAJOR,      /* a transposed (C, N, *) tensor: channel planes outermost */
  L_LAYOUT_COUNT
} layout;

static const char *const layout_names[] = { "contig", "cl", "narrow_c", "cl_narrow_c",
                                            "narrow_last", "c_major" };

/* A tensor of logical shape sizes in the given layout (a view of a larger
** or permuted base that it keeps alive). */
static inline ln_tensor *make(const int64_t *sizes, int nd, ln_dtype dt, layout L) {
  int64_t base[LN_MAX_DIMS];
  memcpy(base, sizes, sizeof(int64_t) * (size_t)nd);
  if (L == L_NARROW_C || L == L_CL_NARROW_C) base[1] += 2;
  if (L == L_NARROW_LAST) base[nd - 1] += 3;
  if (L == L_CONTIG) return ln_empty(sizes, nd, dt, CPU);
  if (L == L_C_MAJOR) {
    base[0] = sizes[1];
    base[1] = sizes[0];
    ln_tensor *p = ln_empty(base, nd, dt, CPU), *t = ln_transpose(p, 0, 1);
    ln_tensor_release(p);
    return t;
  }
  if (L == L_CL || L == L_CL_NARROW_C) {
    int64_t phys[LN_MAX_DIMS];
    int perm[LN_MAX_DIMS];
    phys[0] = base[0];
    for (int d = 2; d < nd; d++) phys[d - 1] = base[d];
    phys[nd - 1] = base[1];
    perm[0] = 0;
    perm[1] = nd - 1;
    for (int d = 2; d < nd; d++) perm[d] = d - 1;
    ln_tensor *p = ln_empty(phys, nd, dt, CPU), *v = ln_permute(p, perm, nd);
    ln_tensor_release(p);
    if (L == L_CL) return v;
    ln_tensor *n = ln_narrow(v, 1, 1, sizes[1]);
    ln_tensor_release(v);
    return n;
  }
  ln_tensor *p = ln_empty(base, nd, dt, CPU);
  int dim = L == L_NARROW_C ? 1 : nd - 1;
  ln_tensor *n = ln_narrow(p, dim, 1, sizes[dim]);
  ln_tensor_release(p);
  return n;
}

static inline ln_tensor *vec(int64_t C, ln_dtype dt, double lo, double hi) {
  ln_tensor *t = ln_empty(&C, 1, dt, CPU);
  fill_uniform(t, lo, hi);
  return t;
}

/* Machine epsilon of a dtype, for tolerances. */
static inline double dt_eps(ln_dtype dt) {
  switch (dt) {
  case LN_F64: return 1e-13;
  case LN_F32: return 2e-6;
  case LN_F16: return 1e-3;
  default: return 8e-3;
  }
}

/* max |got - want| <= tol * max(1, max |want|); NaN must match NaN. */
static inline bool close_all(const double *got, const double *want, int64_t n, double tol,
                      const char *what) {
  double scale = 1;
  for (int64_t i = 0; i < n; i++)
    if (fabs(want[i]) > scale) scale = fabs(want[i]);
  for (int64_t i = 0; i < n; i++) {
    if (isnan(want[i]) && isnan(got[i])) continue;
    if (!(fabs(got[i] - want[i]) <= tol * scale)) {
      fprintf(stderr, "  %s[%lld]: got %.10g want %.10g (tol %.3g)\n", what, (long long)i,
              got[i], want[i], tol * scale);
      return false;
    }
  }
  return true;
}

/* Same dim order (by stride, over dims of size > 1) and y dense. */
static inline bool same_layout(const ln_tensor *x, const ln_tensor *y) {
  int nd = ln_tensor_dim(x);
  const int64_t *sz = ln_tensor_sizes(x), *sx = ln_tensor_strides(x), *sy = ln_tensor_strides(y);
  for (int a = 0; a < nd; a++)
    for (int b = 0; b < nd; b++)
      if (sz[a] > 1 && sz[b] > 1 && (sx[a] < sx[b]) != (sy[a] < sy[b])) return false;
  int64_t expect = 1;
  for (int k = 0; k < nd; k++) {  /* dims by increasing y stride */
    int best = -1;
    for (int d = 0; d < nd; d++)
      if (sz[d] > 1 && sy[d] >= expect && (best < 0 || sy[d] < sy[best])) best = d;
    if (best < 0) break;
    if (sy[best] != expect) return false;
    expect *= sz[best];
  }
  return true;
}

#endif
