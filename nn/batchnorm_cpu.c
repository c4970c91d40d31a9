/*
** batchnorm_cpu.c -- the BatchNorm CPU kernels (batchnorm_kernels.h):
** cutting the work into blocks and units, merging the partial results in
** a fixed order, and the choice of typed loops (batchnorm_cpu.inc) by
** dtype and instruction set.
**
** A block (a few thousand values of each channel: a piece of a run, whole
** runs or a group of rows) is summed in the compute type; blocks depend
** on the shape only. A unit, the work one thread takes at a time, is a
** range of blocks for a range of channels, walked in memory order; it
** merges its blocks in double into one partial per channel. There are
** up to 64 block ranges, and the channels are split too when that leaves
** fewer than 64 units. Partials merge per channel in block-range order
** afterwards, so the thread count changes nothing.
*/
#include <stdlib.h>
#include <string.h>

#include "batchnorm_cpu.h"

#define BN_ISA base
#include "batchnorm_cpu_isa.inc"

static int64_t clamp64(int64_t v, int64_t lo, int64_t hi) {
  return v < lo ? lo : v > hi ? hi : v;
}

static bn_part bn_partition(const ln_bn_geom *g) {
  bn_part p = { .per_run = 1, .runs_per = 1, .rows_per = 1 };
  if (g->rows) {
    p.rows_per = clamp64(BN_ROWS_VALUES / (g->C ? g->C : 1), 32, 256);
    p.nblk = (g->outer * g->inner + p.rows_per - 1) / p.rows_per;
  } else if (g->inner >= BN_BLOCK) {
    p.per_run = (g->inner + BN_BLOCK - 1) / BN_BLOCK;
    p.nblk = g->outer * p.per_run;
  } else {
    p.runs_per = BN_BLOCK / (g->inner ? g->inner : 1);
    p.nblk = (g->outer + p.runs_per - 1) / p.runs_per;
  }
  p.units_b = clamp64(p.nblk, 1, BN_UNITS);
  p.units_c = clamp64((BN_UNITS + p.units_b - 1) / p.units_b, 1, g->C ? g->C : 1);
  return p;
}

static bool bn_allow_avx2 = true;

void ln_bn_cpu_allow_simd(bool allow) { bn_allow_avx2 = allow; }

static const bn_kernels *bn_kernels_for(ln_dtype dt) {
#ifdef LN_BN_HAVE_AVX2
  if (bn_allow_avx2 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    return ln_bn_kernels_avx2(dt);
#endif
  return ln_bn_kernels_base(dt);
}

/* ---- drivers ---- */

static bool bn_parallel(const ln_bn_geom *g) {
  return g->C * g->outer * g->inner >= BN_GRAIN && omp_get_max_threads() > 1 &&
         !omp_in_parallel();
}

/* v rounded to the compute type of dt: x - k is then exact for x near k. */
static double bn_round(ln_dtype dt, double v) {
  return dt == LN_F64 ? v : (double)(float)v;
}

static ln_status bn_nomem(void) {
  return ln_error(LN_ENOMEM, "out of memory in batch_norm");
}

/* Run a reduction; the partials (n: units_b, a and b: units_b * C
** doubles) are returned in *out, to be freed with free(out->n). */
static ln_status bn_reduce(ln_dtype dt, const ln_bn_geom *g, const bn_part *pt,
                           const ln_bn_view *x, const ln_bn_view *dy, const double *kvec,
                           bool grad, bn_partials *out) {
  int64_t np = pt->units_b * g->C;
  bool par = bn_parallel(g);
  int nt = par ? omp_get_max_threads() : 1;
  void *scratch = malloc(sizeof(double) * (size_t)(3 * g->C * nt));
  out->n = malloc(sizeof(double) * (size_t)(2 * np + pt->units_b));
  if (!scratch || !out->n) {
    free(scratch);
    free(out->n);
    return bn_nomem();
  }
  out->a = out->n + pt->units_b;
  out->b = out->a + np;
  bn_kernels_for(dt)->reduce(g, pt, x, dy, kvec, out, grad, par, scratch);
  free(scratch);
  return LN_OK;
}

ln_status ln_bn_cpu_stats(ln_dtype dt, const ln_bn_geom *g, const ln_bn_view *x,
                          double *mean, double *var) {
  bn_part pt = bn_partition(g);
  bn_partials p;
  int64_t C = g->C;
  ln_status st = bn_reduce(dt, g, &pt, x, NULL, NULL, false, &p);
  if (st != LN_OK) return st;
  /* Chan's merge of the block ranges in order, all channels at once */
  double n = 0;
  for (int64_t u = 0; u < pt.units_b; u++) {
    const double *mu = p.a + u * C, *m2u = p.b + u * C;
    double nu = p.n[u], nt = n + nu, f = nu / nt, w = n * nu / nt;
    for (int64_t c = 0; c < C; c++) {
      double delta = mu[c] - mean[c];
      mean[c] = n == 0 ? mu[c] : mean[c] + delta * f;
      var[c] = n == 0 ? m2u[c] : var[c] + m2u[c] + delta * delta * w;
    }
    n = nt;
  }
  for (int64_t c = 0; c < C; c++) var[c] /= n;
  free(p.n);
  return LN_OK;
}

ln_status ln_bn_cpu_grad_sums(ln_dtype dt, const ln_bn_geom *g, const ln_bn_view *x,
                              const ln_bn_view *dy, const double *mean,
                              double *sum_dy, double *sum_dyx) {
  bn_part pt = bn_partition(g);
  bn_partials p;
  double *k = malloc(sizeof(double) * (size_t)(g->C + 1));
  if (!k) return bn_nomem();
  for (int64_t c = 0; c < g->C; c++) k[c] = bn_round(dt, mean[c]);
  ln_status st = bn_reduce(dt, g, &pt, x, dy, k, true, &p);
  if (st == LN_OK) {
    int64_t C = g->C;
    for (int64_t c = 0; c < C; c++) sum_dy[c] = sum_dyx[c] = 0;
    for (int64_t u = 0; u < pt.units_b; u++)
      for (int64_t c = 0; c < C; c++) {
        sum_dy[c] += p.a[u * C + c];
        sum_dyx[c] += p.b[u * C + c];
      }
    for (int64_t c = 0; c < C; c++)
      sum_dyx[c] -= (mean[c] - k[c]) * sum_dy[c];  /* from x - k to x - mean */
    free(p.n);
  }
  free(k);
  return st;
}

/* out = (x - mean) * b + d (+ dy * a): with k the rounded mean, the
** kernels compute (x - k) * b + (d - (mean - k) * b). */
static ln_status bn_map(ln_dtype dt, const ln_bn_geom *g, const ln_bn_view *x,
                        const ln_bn_view *dy, const ln_bn_view *o, const double *mean,
                        const double *a, const double *b, const double *d) {
  const bn_kernels *kn = bn_kernels_for(dt);
  int64_t C = g->C;
  int64_t W = C * bn_rows_repeat(C);
  double *k = malloc(sizeof(double) * (size_t)(2 * C + 4 * W + 1)), *d2 = k + C;
  if (!k) return bn_nomem();
  for (int64_t c = 0; c < C; c++) {
    k[c] = bn_round(dt, mean[c]);
    d2[c] = d[c] - (mean[c] - k[c]) * b[c];
  }
  bn_coef cf = { .k = k, .a = a, .b = b, .d = d2 };
  bool par = bn_parallel(g);
  if (g->rows) kn->map_rows(g, x, dy, o, &cf, dy != NULL, par, d2 + C);
  else kn->map_plane(g, x, dy, o, &cf, dy != NULL, par);
  free(k);
  return LN_OK;
}

ln_status ln_bn_cpu_affine(ln_dtype dt, const ln_bn_geom *g, const ln_bn_view *x,
                           const ln_bn_view *y, const double *mean, const double *a,
                           const double *b) {
  return bn_map(dt, g, x, NULL, y, mean, NULL, a, b);
}

ln_status ln_bn_cpu_grad_input(ln_dtype dt, const ln_bn_geom *g, const ln_bn_view *x,
                               const ln_bn_view *dy, const ln_bn_view *dx,
                               const double *mean, const double *a, const double *b,
                               const double *d) {
  return bn_map(dt, g, x, dy, dx, mean, a, b, d);
}
