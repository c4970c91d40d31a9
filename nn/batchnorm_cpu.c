/*
** batchnorm_cpu.c -- the BatchNorm CPU kernels (batchnorm_kernels.h):
** cutting the work into blocks and units, merging the partial results in
** a fixed order, and the dtype dispatch to the typed loops of
** batchnorm_cpu.inc.
**
** Blocks (a few thousand values, summed in the compute type) depend on the
** shape only; a unit is a run of consecutive blocks whose results are
** merged in double, the work one thread takes at a time. Plane kernels
** give each channel ceil(64 / C) units (so a few channels still keep every
** thread busy), rows kernels cut all rows into up to 64 units, each with
** C-wide partials. Units merge in index order afterwards, so the thread
** count changes nothing.
*/
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "batchnorm_kernels.h"

#define BN_BLOCK 4096        /* values per plane block */
#define BN_ROWS_VALUES 8192  /* about this many values per rows block */
#define BN_UNITS 64          /* units to aim for */
#define BN_MAP_CHUNK 16384   /* values per task of the elementwise passes */
#define BN_GRAIN 32768       /* fewer values run on one thread */

typedef struct bn_part {
  int64_t nblk;      /* blocks per channel (plane) or in all (rows) */
  int64_t per_run;   /* plane: blocks per run (runs longer than a block) */
  int64_t runs_per;  /* plane: runs per block (shorter runs) */
  int64_t rows_per;  /* rows: rows per block */
  int64_t units;     /* per channel (plane) or in all (rows) */
} bn_part;

typedef struct bn_rect { int64_t j0, j1, i0, i1; } bn_rect;  /* runs x values */

typedef struct bn_partials { double *n, *a, *b; } bn_partials;

/* Per-channel coefficients of a map: out = (x - k) * b + d (+ dy * a). */
typedef struct bn_coef { const double *k, *a, *b, *d; } bn_coef;

typedef struct bn_kernels {
  void (*reduce_plane)(const ln_bn_geom *, const bn_part *, const ln_bn_view *,
                       const ln_bn_view *, const double *, bn_partials *, bool, bool);
  void (*reduce_rows)(const ln_bn_geom *, const bn_part *, const ln_bn_view *,
                      const ln_bn_view *, const double *, bn_partials *, bool, bool,
                      void *);
  void (*map_plane)(const ln_bn_geom *, const ln_bn_view *, const ln_bn_view *,
                    const ln_bn_view *, const bn_coef *, bool, bool);
  void (*map_rows)(const ln_bn_geom *, const ln_bn_view *, const ln_bn_view *,
                   const ln_bn_view *, const bn_coef *, bool, bool, void *);
} bn_kernels;

static int64_t clamp64(int64_t v, int64_t lo, int64_t hi) {
  return v < lo ? lo : v > hi ? hi : v;
}

static bn_part bn_partition(const ln_bn_geom *g) {
  bn_part p = { .per_run = 1, .runs_per = 1, .rows_per = 1 };
  if (g->rows) {
    int64_t rows = g->outer * g->inner;
    p.rows_per = clamp64(BN_ROWS_VALUES / (g->C ? g->C : 1), 32, 256);
    p.nblk = (rows + p.rows_per - 1) / p.rows_per;
    p.units = clamp64(p.nblk, 1, BN_UNITS);
    return p;
  }
  if (g->inner >= BN_BLOCK) {
    p.per_run = (g->inner + BN_BLOCK - 1) / BN_BLOCK;
    p.nblk = g->outer * p.per_run;
  } else {
    p.runs_per = BN_BLOCK / (g->inner ? g->inner : 1);
    p.nblk = (g->outer + p.runs_per - 1) / p.runs_per;
  }
  p.units = clamp64((BN_UNITS + g->C - 1) / (g->C ? g->C : 1), 1, p.nblk);
  return p;
}

/* Block b of a plane channel: a piece of one run, or whole runs. */
static inline bn_rect bn_plane_block(const bn_part *p, const ln_bn_geom *g, int64_t b) {
  bn_rect r;
  if (p->per_run > 1) {
    int64_t piece = b % p->per_run;
    r.j0 = b / p->per_run;
    r.j1 = r.j0 + 1;
    r.i0 = piece * g->inner / p->per_run;
    r.i1 = (piece + 1) * g->inner / p->per_run;
  } else {
    r.j0 = b * p->runs_per;
    r.j1 = r.j0 + p->runs_per < g->outer ? r.j0 + p->runs_per : g->outer;
    r.i0 = 0;
    r.i1 = g->inner;
  }
  return r;
}

/* Merge (nb, mb, m2b) -- count, mean, sum of squared deviations -- into
** (n, mean, m2) by Chan's formula. */
static inline void bn_chan_merge(double *n, double *mean, double *m2, double nb,
                                 double mb, double m2b) {
  if (nb == 0) return;
  if (*n == 0) {
    *n = nb;
    *mean = mb;
    *m2 = m2b;
    return;
  }
  double nt = *n + nb, delta = mb - *mean;
  *mean += delta * (nb / nt);
  *m2 += m2b + delta * delta * (*n * nb / nt);
  *n = nt;
}

/* ---- the typed loops ---- */

#define T float
#define ACC float
#define LOAD(v) (v)
#define STORE(v) (v)
#define SUF f32
#include "batchnorm_cpu.inc"
#undef T
#undef ACC
#undef LOAD
#undef STORE
#undef SUF

#define T double
#define ACC double
#define LOAD(v) (v)
#define STORE(v) (v)
#define SUF f64
#include "batchnorm_cpu.inc"
#undef T
#undef ACC
#undef LOAD
#undef STORE
#undef SUF

#define T uint16_t
#define ACC float
#define LOAD(v) ln_half_to_float(v)
#define STORE(v) ln_float_to_half(v)
#define SUF f16
#include "batchnorm_cpu.inc"
#undef T
#undef ACC
#undef LOAD
#undef STORE
#undef SUF

#define T uint16_t
#define ACC float
#define LOAD(v) ln_bf16_to_float(v)
#define STORE(v) ln_float_to_bf16(v)
#define SUF bf16
#include "batchnorm_cpu.inc"
#undef T
#undef ACC
#undef LOAD
#undef STORE
#undef SUF

static const bn_kernels *bn_kernels_for(ln_dtype dt) {
  switch (dt) {
  case LN_F32: return &bn_kernels_f32;
  case LN_F64: return &bn_kernels_f64;
  case LN_F16: return &bn_kernels_f16;
  case LN_BF16: return &bn_kernels_bf16;
  default: return NULL;
  }
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

/* Run a reduction; partials (3 arrays of C * units doubles) are returned
** in *out, to be freed with free(out->n). */
static ln_status bn_reduce(ln_dtype dt, const ln_bn_geom *g, const bn_part *pt,
                           const ln_bn_view *x, const ln_bn_view *dy, const double *kvec,
                           bool grad, bn_partials *out) {
  const bn_kernels *kn = bn_kernels_for(dt);
  int64_t np = g->C * pt->units;
  bool par = bn_parallel(g);
  void *scratch = NULL;
  if (!(out->n = malloc(sizeof(double) * (size_t)(3 * np + 1)))) return bn_nomem();
  out->a = out->n + np;
  out->b = out->a + np;
  if (!g->rows) {
    kn->reduce_plane(g, pt, x, dy, kvec, out, grad, par);
    return LN_OK;
  }
  int nt = par ? omp_get_max_threads() : 1;
  if (!(scratch = malloc(sizeof(double) * (size_t)(3 * g->C * nt)))) {
    free(out->n);
    return bn_nomem();
  }
  kn->reduce_rows(g, pt, x, dy, kvec, out, grad, par, scratch);
  free(scratch);
  return LN_OK;
}

/* Partial u of channel c in a reduction's layout. */
static inline int64_t bn_pidx(const ln_bn_geom *g, const bn_part *pt, int64_t c,
                              int64_t u) {
  return g->rows ? u * g->C + c : c * pt->units + u;
}

ln_status ln_bn_cpu_stats(ln_dtype dt, const ln_bn_geom *g, const ln_bn_view *x,
                          double *mean, double *var) {
  bn_part pt = bn_partition(g);
  bn_partials p;
  ln_status st = bn_reduce(dt, g, &pt, x, NULL, NULL, false, &p);
  if (st != LN_OK) return st;
  for (int64_t c = 0; c < g->C; c++) {
    double n = 0, m = 0, m2 = 0;
    for (int64_t u = 0; u < pt.units; u++) {
      int64_t i = bn_pidx(g, &pt, c, u);
      bn_chan_merge(&n, &m, &m2, g->rows ? p.n[u] : p.n[i], p.a[i], p.b[i]);
    }
    mean[c] = m;
    var[c] = m2 / n;
  }
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
    for (int64_t c = 0; c < g->C; c++) {
      double s1 = 0, s2 = 0;
      for (int64_t u = 0; u < pt.units; u++) {
        s1 += p.a[bn_pidx(g, &pt, c, u)];
        s2 += p.b[bn_pidx(g, &pt, c, u)];
      }
      sum_dy[c] = s1;
      sum_dyx[c] = s2 - (mean[c] - k[c]) * s1;  /* from x - k to x - mean */
    }
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
  double *k = malloc(sizeof(double) * (size_t)(6 * C + 1)), *d2 = k + C;
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
