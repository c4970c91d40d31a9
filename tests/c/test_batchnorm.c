/*
** test_batchnorm.c -- ln_batch_norm against a naive double-precision
** reference: NCHW, channels-last, a permuted NHWC view, narrowed and
** copied layouts, 2D to 5D inputs with odd channel counts and sizes that
** are not multiples of the vector width, all four dtypes (and float32
** parameters with 16-bit inputs), training and eval, running stats,
** backward against the analytic formulas and by finite differences,
** accuracy far from zero, NaN isolation, empty batches, every error
** message, output layouts, thread-count independence and leaks. The
** reference cases run with the wider-vector build of the kernels (where
** the CPU has one) and with the baseline one.
*/
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/autograd.h"
#include "core/gradcheck.h"
#include "core/random.h"
#include "core/tensor.h"
#include "bn_test_util.h"
#include "nn/batchnorm.h"
#include "nn/batchnorm_kernels.h"

#define EPS 1e-5
#define MOMENTUM 0.1

/* ---- the reference: x (N, C, S) row-major in double ---- */

typedef struct ref {
  double *y, *mean, *var, *rm, *rv, *dx, *dw, *db;
} ref;

static void ref_free(ref *r) {
  free(r->y); free(r->mean); free(r->var); free(r->rm); free(r->rv);
  free(r->dx); free(r->dw); free(r->db);
}

static void reference(const double *x, const double *dy, int64_t N, int64_t C, int64_t S,
                      const double *w, const double *b, const double *rm, const double *rv,
                      bool training, ref *r) {
  int64_t M = N * S;
  r->y = calloc((size_t)(N * C * S + 1), sizeof(double));
  r->dx = calloc((size_t)(N * C * S + 1), sizeof(double));
  r->mean = calloc((size_t)C + 1, sizeof(double));
  r->var = calloc((size_t)C + 1, sizeof(double));
  r->rm = calloc((size_t)C + 1, sizeof(double));
  r->rv = calloc((size_t)C + 1, sizeof(double));
  r->dw = calloc((size_t)C + 1, sizeof(double));
  r->db = calloc((size_t)C + 1, sizeof(double));
  for (int64_t c = 0; c < C; c++) {
    double m = 0, v = 0;
    for (int64_t n = 0; n < N; n++)
      for (int64_t s = 0; s < S; s++) m += x[(n * C + c) * S + s];
    m /= (double)M;
    for (int64_t n = 0; n < N; n++)
      for (int64_t s = 0; s < S; s++) v += pow(x[(n * C + c) * S + s] - m, 2);
    v /= (double)M;
    r->mean[c] = m;
    r->var[c] = v;
    if (rm) {
      r->rm[c] = training ? (1 - MOMENTUM) * rm[c] + MOMENTUM * m : rm[c];
      r->rv[c] = training ? (1 - MOMENTUM) * rv[c] + MOMENTUM * v * M / (M - 1) : rv[c];
    }
    double mu = training ? m : rm[c], is = 1 / sqrt((training ? v : rv[c]) + EPS);
    double wc = w ? w[c] : 1, bc = b ? b[c] : 0, sdy = 0, sdyx = 0;
    for (int64_t n = 0; n < N; n++)
      for (int64_t s = 0; s < S; s++) {
        int64_t i = (n * C + c) * S + s;
        r->y[i] = (x[i] - mu) * is * wc + bc;
        sdy += dy[i];
        sdyx += dy[i] * (x[i] - mu) * is;
      }
    r->dw[c] = sdyx;
    r->db[c] = sdy;
    for (int64_t n = 0; n < N; n++)
      for (int64_t s = 0; s < S; s++) {
        int64_t i = (n * C + c) * S + s;
        double xhat = (x[i] - mu) * is;
        r->dx[i] = training ? wc * is * (dy[i] - sdy / M - xhat * sdyx / M) : wc * is * dy[i];
      }
  }
}

/* ---- forward and backward against the reference ---- */

typedef struct bn_case {
  int64_t sizes[6];
  int nd;
  ln_dtype dt, pdt;      /* input, parameters */
  layout L;
  bool training, affine, track;
  layout grad_layout;    /* layout of the incoming gradient */
} bn_case;

static void run_case(const bn_case *k) {
  const int64_t *sz = k->sizes;
  int nd = k->nd;
  int64_t N = sz[0], C = sz[1], S = 1;
  for (int d = 2; d < nd; d++) S *= sz[d];
  int64_t live = ln_tensor_live_count();
  ln_tensor *x = make(sz, nd, k->dt, k->L);
  fill_uniform(x, -1.5, 2.5);
  ln_tensor_set_requires_grad(x, true);
  ln_tensor *w = NULL, *b = NULL, *rm = NULL, *rv = NULL;
  if (k->affine) {
    w = vec(C, k->pdt, 0.5, 2);
    b = vec(C, k->pdt, -1, 1);
    ln_tensor_set_requires_grad(w, true);
    ln_tensor_set_requires_grad(b, true);
  }
  if (k->track) {
    rm = vec(C, k->pdt, -0.5, 0.5);
    rv = vec(C, k->pdt, 0.5, 2);
  }
  double *xv = values(x), *wv = w ? values(w) : NULL, *bv = b ? values(b) : NULL;
  double *rmv = rm ? values(rm) : NULL, *rvv = rv ? values(rv) : NULL;
  ln_tensor *y = ln_batch_norm(x, rm, rv, w, b, k->training, MOMENTUM, EPS);
  char what[160];
  snprintf(what, sizeof what, "%dD %s %s %s%s%s", nd, ln_dtype_name(k->dt),
           layout_names[k->L], k->training ? "train" : "eval", k->affine ? " affine" : "",
           k->track ? " track" : "");
  CHECK(y != NULL);
  if (!y) {
    fprintf(stderr, "  %s: %s\n", what, ln_last_error());
    goto done;
  }
  CHECK(ln_tensor_dtype(y) == k->dt && ln_tensor_same_shape(x, y));
  if (k->L == L_NARROW_LAST) CHECK(ln_tensor_is_contiguous(y, LN_CONTIGUOUS));
  else if (!same_layout(x, y)) {
    CHECK(false);
    fprintf(stderr, "  %s: output layout differs from the input's\n", what);
  }
  ln_tensor *dy = make(sz, nd, k->dt, k->grad_layout);
  fill_uniform(dy, -1, 1);
  double *dyv = values(dy), *yv = values(y);
  ref r;
  reference(xv, dyv, N, C, S, wv, bv, rmv, rvv, k->training, &r);
  double tol = 10 * dt_eps(k->dt);
  if (!close_all(yv, r.y, N * C * S, tol, "y")) {
    CHECK(false);
    fprintf(stderr, "  in %s\n", what);
  }
  if (rm) {
    double *got_m = values(rm), *got_v = values(rv), ptol = 10 * dt_eps(k->pdt) + 1e-6;
    CHECK(close_all(got_m, r.rm, C, ptol, "running_mean"));
    CHECK(close_all(got_v, r.rv, C, ptol, "running_var"));
    free(got_m);
    free(got_v);
  }
  CHECK_OK(ln_backward(y, dy, false));
  ln_tensor *gx = ln_tensor_grad(x);
  CHECK(gx != NULL);
  if (gx) {
    double *gxv = values(gx);
    if (!close_all(gxv, r.dx, N * C * S, 20 * dt_eps(k->dt), "dx")) {
      CHECK(false);
      fprintf(stderr, "  in %s\n", what);
    }
    CHECK(ln_tensor_dtype(gx) == k->dt);
    free(gxv);
  }
  if (w) {
    ln_tensor *gw = ln_tensor_grad(w), *gb = ln_tensor_grad(b);
    CHECK(gw && gb && ln_tensor_dtype(gw) == k->pdt && ln_tensor_dtype(gb) == k->pdt);
    if (gw && gb) {
      double *gwv = values(gw), *gbv = values(gb);
      double gtol = 20 * (dt_eps(k->dt) + dt_eps(k->pdt));
      if (!close_all(gwv, r.dw, C, gtol, "dweight") || !close_all(gbv, r.db, C, gtol, "dbias")) {
        CHECK(false);
        fprintf(stderr, "  in %s\n", what);
      }
      free(gwv);
      free(gbv);
    }
  }
  free(dyv);
  free(yv);
  ref_free(&r);
  ln_tensor_release(dy);
done:
  free(xv); free(wv); free(bv); free(rmv); free(rvv);
  ln_tensor_release(y);
  ln_tensor_release(x);
  ln_tensor_release(w);
  ln_tensor_release(b);
  ln_tensor_release(rm);
  ln_tensor_release(rv);
  CHECK(ln_tensor_live_count() == live);
}

static void test_reference(void) {
  static const struct { int nd; int64_t sizes[6]; } shapes[] = {
    { 2, { 5, 7 } },              /* BatchNorm1d (N, C) */
    { 3, { 3, 7, 19 } },          /* (N, C, L) */
    { 4, { 2, 3, 5, 7 } },        /* odd C, N*S = 70 */
    { 4, { 3, 16, 9, 11 } },      /* runs longer than the vector width */
    { 5, { 2, 3, 3, 5, 7 } },     /* BatchNorm3d */
    { 4, { 1, 5, 1, 3 } },        /* size-1 dims */
    { 4, { 4, 150, 7, 7 } },      /* short runs: units of 2-3 channels sharing lane sums */
    { 3, { 2, 1100, 9 } },        /* more than one group of channels a unit */
  };
  static const ln_dtype dts[] = { LN_F32, LN_F64, LN_F16, LN_BF16 };
  for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
    for (int L = 0; L < L_LAYOUT_COUNT; L++)
      for (size_t t = 0; t < 4; t++)
        for (int mode = 0; mode < 4; mode++) {
          bn_case k = { .nd = shapes[s].nd, .dt = dts[t], .pdt = dts[t], .L = (layout)L,
                        .training = mode != 1, .affine = mode != 2, .track = mode != 3,
                        .grad_layout = (layout)((L + mode) % L_LAYOUT_COUNT) };
          memcpy(k.sizes, shapes[s].sizes, sizeof k.sizes);
          if (k.nd == 2 && (L == L_CL || L == L_CL_NARROW_C)) continue;
          run_case(&k);
        }
  /* float32 parameters and running stats with 16-bit inputs */
  for (int t = 0; t < 2; t++)
    for (int mode = 0; mode < 2; mode++) {
      bn_case k = { .nd = 4, .sizes = { 2, 5, 3, 7 }, .dt = t ? LN_BF16 : LN_F16,
                    .pdt = LN_F32, .L = mode ? L_CL : L_CONTIG, .training = mode == 0,
                    .affine = true, .track = true, .grad_layout = L_CONTIG };
      run_case(&k);
    }
}

/* Channels-last inputs whose reductions split their channels into units
** of 64 or more (more than one unit only where C >= 128): the AVX-512
** build's register blocks (64 float32 or 32 float64 channels, then 1-3
** vectors, then the channels that fill no vector) in the statistics and
** the backward sums, from a unit's first channel, and its maps whose
** channels fill 1-4 vectors. */
static void test_rows_blocks(void) {
  static const int64_t shapes[][4] = {
    { 8, 64, 32, 32 },    /* float32 a whole block, float64 two */
    { 8, 128, 32, 32 },   /* float32 two whole blocks */
    { 4, 70, 32, 32 },    /* float32 a block + 6 channels, float64 two blocks + 6 */
    { 4, 80, 32, 32 },    /* float32 a block + 1 vector, float64 two blocks + 2 */
    { 4, 112, 32, 32 },   /* float32 a block + 3 vectors, float64 three blocks + 2 */
    { 2, 56, 32, 32 },    /* float32 3 vectors + 8 channels, float64 a block + 3 */
    { 2, 40, 32, 32 },    /* float32 2 vectors + 8 channels, float64 a block + 1 */
    { 1, 200, 32, 32 },   /* units from channels 0, 66, 133: float32 a block + 2 or 3 */
    { 2, 48, 32, 32 },    /* maps of 3 float32 vectors */
    { 1, 32, 16, 16 },    /* maps of 2 float32 / 4 float64 vectors */
    { 1, 16, 16, 16 },
    { 2, 2048, 2, 3 },    /* rows of 8 KB: maps a block and 4 rows at a time */
    { 1, 2096, 1, 5 },    /* the same, then 3 float32 / 2 float64 vectors */
    { 1, 1040, 2, 3 },    /* float64 rows of 8 KB, then 2 vectors */
  };
  static const ln_dtype dts[] = { LN_F32, LN_F64 };
  for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
    for (size_t t = 0; t < 2; t++)
      for (int mode = 0; mode < 4; mode++) {
        bn_case k = { .nd = 4, .dt = dts[t], .pdt = dts[t], .L = mode & 1 ? L_CL_NARROW_C : L_CL,
                      .training = mode < 2, .affine = true, .track = true,
                      .grad_layout = L_CL };
        memcpy(k.sizes, shapes[s], sizeof shapes[s]);
        run_case(&k);
      }
}

/* (N, H, W, C) data seen as (N, C, H, W) by permute(0, 3, 1, 2): normalized
** in place of its layout, the output laid out alike. */
static void test_permuted_nhwc(void) {
  int64_t live = ln_tensor_live_count();
  const int64_t nhwc[] = { 3, 5, 6, 7 };
  const int perm[] = { 0, 3, 1, 2 };
  ln_tensor *base = ln_empty(nhwc, 4, LN_F32, CPU);
  fill_uniform(base, -1, 1);
  ln_tensor *x = ln_permute(base, perm, 4);
  ln_tensor *y = ln_batch_norm(x, NULL, NULL, NULL, NULL, true, MOMENTUM, EPS);
  CHECK(y && ln_tensor_is_contiguous(y, LN_CHANNELS_LAST));
  CHECK(y && !memcmp(ln_tensor_strides(y), ln_tensor_strides(x), 4 * sizeof(int64_t)));
  double *xv = values(x), *yv = y ? values(y) : NULL, *dy = calloc(3 * 7 * 30, sizeof(double));
  ref r;
  reference(xv, dy, 3, 7, 30, NULL, NULL, NULL, NULL, true, &r);
  CHECK(yv && close_all(yv, r.y, 3 * 7 * 30, 2e-5, "nhwc y"));
  ref_free(&r);
  free(xv); free(yv); free(dy);
  /* 2D (N, C) contiguous: plain contiguous output; 3D with C innermost */
  const int64_t nc[] = { 6, 4 }, nlc[] = { 2, 9, 5 };
  ln_tensor *x2 = ln_empty(nc, 2, LN_F32, CPU), *b3 = ln_empty(nlc, 3, LN_F32, CPU);
  fill_uniform(x2, 0, 1);
  fill_uniform(b3, 0, 1);
  ln_tensor *x3 = ln_transpose(b3, 1, 2);
  ln_tensor *y2 = ln_batch_norm(x2, NULL, NULL, NULL, NULL, true, MOMENTUM, EPS);
  ln_tensor *y3 = ln_batch_norm(x3, NULL, NULL, NULL, NULL, true, MOMENTUM, EPS);
  CHECK(y2 && ln_tensor_is_contiguous(y2, LN_CONTIGUOUS));
  CHECK(y3 && !memcmp(ln_tensor_strides(y3), ln_tensor_strides(x3), 3 * sizeof(int64_t)));
  ln_tensor_release(y2);
  ln_tensor_release(y3);
  ln_tensor_release(x2);
  ln_tensor_release(x3);
  ln_tensor_release(b3);
  ln_tensor_release(y);
  ln_tensor_release(x);
  ln_tensor_release(base);
  CHECK(ln_tensor_live_count() == live);
}

/* An expanded gradient (stride 0, as from y:sum():backward()) is copied
** into x's layout: with dy = 1 everywhere, training dx is 0 and dbias is M. */
static void test_expanded_grad(void) {
  int64_t live = ln_tensor_live_count();
  const int64_t sizes[] = { 3, 5, 4, 6 }, one = 1;
  for (int L = 0; L < 2; L++) {
    ln_tensor *x = make(sizes, 4, LN_F32, (layout)L), *b = vec(5, LN_F32, 0, 1);
    fill_uniform(x, -1, 1);
    ln_tensor_set_requires_grad(x, true);
    ln_tensor_set_requires_grad(b, true);
    ln_tensor *y = ln_batch_norm(x, NULL, NULL, NULL, b, true, MOMENTUM, EPS);
    ln_tensor *o = ln_ones(&one, 1, LN_F32, CPU), *dy = ln_expand(o, sizes, 4);
    CHECK_OK(ln_backward(y, dy, false));
    double *gx = values(ln_tensor_grad(x)), *gb = values(ln_tensor_grad(b)), worst = 0;
    for (int64_t i = 0; i < 3 * 5 * 24; i++) worst = fmax(worst, fabs(gx[i]));
    CHECK(worst < 1e-5);
    CHECK_NEAR(gb[2], 72, 1e-4);
    free(gx);
    free(gb);
    ln_tensor_release(dy);
    ln_tensor_release(o);
    ln_tensor_release(y);
    ln_tensor_release(x);
    ln_tensor_release(b);
  }
  CHECK(ln_tensor_live_count() == live);
}

/* ---- gradients by finite differences (float64) ---- */

typedef struct gc_ud {
  bool training, weight, bias;
  ln_tensor *rm, *rv;
} gc_ud;

static ln_tensor *gc_fn(ln_tensor *const *in, int n, void *ud) {
  const gc_ud *u = ud;
  (void)n;
  int k = 1;
  ln_tensor *w = u->weight ? in[k++] : NULL, *b = u->bias ? in[k++] : NULL;
  return ln_batch_norm(in[0], u->rm, u->rv, w, b, u->training, MOMENTUM, EPS);
}

static void test_gradcheck(void) {
  int64_t live = ln_tensor_live_count();
  const int64_t sizes[] = { 3, 3, 2, 3 };
  for (int L = 0; L < 2; L++)
    for (int training = 0; training < 2; training++)
      for (int aff = 0; aff < 4; aff++) {
        gc_ud u = { .training = training, .weight = aff & 1, .bias = aff & 2 };
        ln_tensor *in[3];
        int n = 0;
        in[n++] = make(sizes, 4, LN_F64, (layout)L);
        fill_uniform(in[0], -1, 2);
        if (u.weight) in[n++] = vec(3, LN_F64, 0.5, 2);
        if (u.bias) in[n++] = vec(3, LN_F64, -1, 1);
        u.rm = vec(3, LN_F64, -0.5, 0.5);
        u.rv = vec(3, LN_F64, 0.5, 2);
        for (int i = 0; i < n; i++) ln_tensor_set_requires_grad(in[i], true);
        char report[512];
        ln_status st = ln_gradcheck(gc_fn, &u, in, n, 1e-6, 1e-5, 1e-4, report, sizeof report);
        if (st != LN_OK)
          fprintf(stderr, "  gradcheck %s %s w%d b%d: %s\n", layout_names[L],
                  training ? "train" : "eval", u.weight, u.bias, report);
        CHECK(st == LN_OK);
        for (int i = 0; i < n; i++) ln_tensor_release(in[i]);
        ln_tensor_release(u.rm);
        ln_tensor_release(u.rv);
      }
  CHECK(ln_tensor_live_count() == live);
}

/* ---- numerics ---- */

/* float32 data around 1e4 with spread 0.01 normalizes within 1e-3 of the
** float64 result on the same values (plane and rows kernels). */
static void test_far_from_zero(void) {
  int64_t live = ln_tensor_live_count();
  const int64_t sizes[] = { 16, 3, 40, 50 };
  for (int L = 0; L < 2; L++) {
    ln_tensor *x = make(sizes, 4, LN_F32, (layout)L);
    int64_t n = ln_tensor_numel(x);
    double *v = malloc(sizeof(double) * (size_t)n);
    for (int64_t i = 0; i < n; i++) v[i] = 1e4 + 0.01 * gauss();
    set_values(x, v);
    free(v);
    ln_tensor *y = ln_batch_norm(x, NULL, NULL, NULL, NULL, true, MOMENTUM, EPS);
    double *xv = values(x), *yv = values(y), *dy = calloc((size_t)n, sizeof(double));
    ref r;
    reference(xv, dy, 16, 3, 2000, NULL, NULL, NULL, NULL, true, &r);
    double worst = 0;
    for (int64_t i = 0; i < n; i++) worst = fmax(worst, fabs(yv[i] - r.y[i]));
    if (!(worst < 1e-3)) fprintf(stderr, "  far from zero (%s): error %g\n", layout_names[L], worst);
    CHECK(worst < 1e-3);
    ref_free(&r);
    free(xv); free(yv); free(dy);
    ln_tensor_release(y);
    ln_tensor_release(x);
  }
  CHECK(ln_tensor_live_count() == live);
}

/* A NaN in channel 1 makes that channel (and its running stats) NaN only. */
static void test_nan(void) {
  int64_t live = ln_tensor_live_count();
  static const int64_t shapes[][4] = {
    { 4, 3, 5, 6 },
    { 8, 64, 32, 32 },   /* AVX-512: a NaN in one lane of a register block */
  };
  for (int e = 0; e < 4; e++) {
    const int64_t *sizes = shapes[e / 2], C = sizes[1], S = sizes[2] * sizes[3];
    int64_t n = sizes[0] * C * S;
    ln_tensor *x = make(sizes, 4, LN_F32, (layout)(e % 2)), *rm = vec(C, LN_F32, 0, 0);
    ln_tensor *rv = vec(C, LN_F32, 1, 1);
    fill_uniform(x, -1, 1);
    double *v = values(x);
    v[(2 * C + 1) * S + 17] = NAN;
    set_values(x, v);
    ln_tensor *y = ln_batch_norm(x, rm, rv, NULL, NULL, true, MOMENTUM, EPS);
    double *yv = values(y), *m = values(rm), *var = values(rv);
    bool ok = true;
    for (int64_t i = 0; i < n; i++) ok &= (i / S % C == 1) == (bool)isnan(yv[i]);
    for (int64_t c = 0; c < C; c++)
      ok &= c == 1 ? isnan(m[c]) && isnan(var[c]) : !isnan(m[c]) && !isnan(var[c]);
    CHECK(ok);
    free(v); free(yv); free(m); free(var);
    ln_tensor_release(y);
    ln_tensor_release(x);
    ln_tensor_release(rm);
    ln_tensor_release(rv);
  }
  CHECK(ln_tensor_live_count() == live);
}

/* N = 0: an empty output, running stats untouched, zero parameter grads. */
static void test_empty(void) {
  int64_t live = ln_tensor_live_count();
  const int64_t sizes[] = { 0, 4, 3 };
  ln_tensor *x = ln_empty(sizes, 3, LN_F32, CPU), *rm = vec(4, LN_F32, 0, 1);
  ln_tensor *rv = vec(4, LN_F32, 1, 2), *w = vec(4, LN_F32, 1, 2), *b = vec(4, LN_F32, 0, 1);
  double *rm0 = values(rm), *rv0 = values(rv);
  ln_tensor_set_requires_grad(x, true);
  ln_tensor_set_requires_grad(w, true);
  ln_tensor_set_requires_grad(b, true);
  for (int training = 0; training < 2; training++) {
    ln_tensor *y = ln_batch_norm(x, rm, rv, w, b, training, MOMENTUM, EPS);
    CHECK(y && ln_tensor_same_shape(x, y) && ln_tensor_numel(y) == 0);
    double *m = values(rm), *v = values(rv);
    CHECK(!memcmp(m, rm0, 4 * sizeof(double)) && !memcmp(v, rv0, 4 * sizeof(double)));
    free(m);
    free(v);
    ln_tensor *dy = ln_empty(sizes, 3, LN_F32, CPU);
    CHECK_OK(ln_backward(y, dy, false));
    double *gw = values(ln_tensor_grad(w)), *gb = values(ln_tensor_grad(b));
    CHECK(gw[0] == 0 && gw[3] == 0 && gb[0] == 0 && gb[3] == 0);
    CHECK(ln_tensor_numel(ln_tensor_grad(x)) == 0);
    free(gw);
    free(gb);
    ln_tensor_release(dy);
    ln_tensor_release(y);
  }
  /* PyTorch skips the remaining checks for empty inputs */
  ln_tensor *y = ln_batch_norm(x, NULL, NULL, NULL, NULL, false, MOMENTUM, EPS);
  CHECK(y != NULL);
  ln_tensor_release(y);
  free(rm0);
  free(rv0);
  ln_tensor_release(x);
  ln_tensor_release(rm);
  ln_tensor_release(rv);
  ln_tensor_release(w);
  ln_tensor_release(b);
  CHECK(ln_tensor_live_count() == live);
}

/* ---- errors ---- */

static void expect_error(ln_tensor *x, ln_tensor *rm, ln_tensor *rv, ln_tensor *w,
                         ln_tensor *b, bool training, double eps, const char *msg) {
  ln_tensor *y = ln_batch_norm(x, rm, rv, w, b, training, MOMENTUM, eps);
  CHECK(y == NULL);
  if (y || strcmp(ln_last_error(), msg) != 0) {
    CHECK(false);
    fprintf(stderr, "  expected \"%s\", got \"%s\"\n", msg, y ? "success" : ln_last_error());
  }
  ln_tensor_release(y);
}

static void test_errors(void) {
  int64_t live = ln_tensor_live_count();
  const int64_t s1[] = { 4 }, s14[] = { 1, 4 }, s1411[] = { 1, 4, 1, 1 }, s243[] = { 2, 4, 3 };
  ln_tensor *x1 = ln_zeros(s1, 1, LN_F32, CPU), *x14 = ln_zeros(s14, 2, LN_F32, CPU);
  ln_tensor *x1411 = ln_zeros(s1411, 4, LN_F32, CPU), *x = ln_zeros(s243, 3, LN_F32, CPU);
  ln_tensor *xl = ln_zeros(s243, 3, LN_I64, CPU), *xh = ln_zeros(s243, 3, LN_F16, CPU);
  ln_tensor *xb = ln_zeros(s243, 3, LN_BF16, CPU), *xd = ln_zeros(s243, 3, LN_F64, CPU);
  ln_tensor *v4 = vec(4, LN_F32, 1, 2), *v3 = vec(3, LN_F32, 1, 2), *d4 = vec(4, LN_F64, 1, 2);
  ln_tensor *h4 = vec(4, LN_F16, 1, 2);
  expect_error(x1, v4, v4, NULL, NULL, false, EPS, "expected at least 2D input (got 1D input)");
  expect_error(x14, NULL, NULL, NULL, NULL, true, EPS,
               "Expected more than 1 value per channel when training, got input size {1, 4}");
  expect_error(x1411, v4, v4, NULL, NULL, true, EPS,
               "Expected more than 1 value per channel when training, got input size "
               "{1, 4, 1, 1}");
  expect_error(x, NULL, NULL, NULL, NULL, true, 0.0,
               "batch_norm eps must be positive during training, but got 0.0");
  expect_error(x, v4, v4, NULL, NULL, false, -1e-5,
               "batch_norm eps must be non-negative, but got -1e-05");
  /* a departure: PyTorch lets NaN through (docs/BATCHNORM.md) */
  expect_error(x, NULL, NULL, NULL, NULL, true, NAN,
               "batch_norm eps must be positive during training, but got nan");
  expect_error(x, v4, v4, NULL, NULL, false, NAN, "batch_norm eps must be non-negative, but got nan");
  expect_error(x, v3, v4, NULL, NULL, true, EPS, "running_mean should contain 4 elements not 3");
  expect_error(x, v4, v3, NULL, NULL, false, EPS, "running_var should contain 4 elements not 3");
  expect_error(x, v4, v4, v3, NULL, true, EPS, "weight should contain 4 elements not 3");
  expect_error(x, NULL, NULL, NULL, v3, true, EPS, "bias should contain 4 elements not 3");
  expect_error(x, NULL, NULL, NULL, NULL, false, EPS,
               "running_mean must be defined in evaluation mode");
  expect_error(x, v4, NULL, NULL, NULL, false, EPS,
               "running_var must be defined in evaluation mode");
  expect_error(x, v4, NULL, NULL, NULL, true, EPS,
               "running_mean and running_var must either both be None or neither be None");
  expect_error(x, NULL, v4, NULL, NULL, true, EPS,
               "running_mean and running_var must either both be None or neither be None");
  expect_error(xl, NULL, NULL, NULL, NULL, true, EPS,
               "\"batch_norm\" not implemented for 'Long'");
  /* mixed: PyTorch checks the parameters first, then the input */
  expect_error(x, d4, d4, NULL, NULL, false, EPS,
               "mixed dtype (CPU): expect parameter to have scalar type of Float");
  expect_error(x, v4, v4, d4, NULL, false, EPS,
               "mixed dtype (CPU): expect parameter to have scalar type of Float");
  expect_error(xd, v4, v4, NULL, NULL, false, EPS,
               "mixed dtype (CPU): all inputs must share same datatype.");
  expect_error(xh, d4, d4, NULL, NULL, false, EPS,
               "mixed dtype (CPU): expect parameter to have scalar type of Float");
  expect_error(xb, h4, h4, NULL, NULL, false, EPS,
               "mixed dtype (CPU): expect parameter to have scalar type of Float");
  expect_error(xh, v4, v4, h4, NULL, true, EPS, "expected scalar type Half but found Float");
  expect_error(xh, h4, v4, NULL, NULL, true, EPS, "expected scalar type Half but found Float");
  /* running stats are untouched by a failed call */
  double *m = values(v4);
  expect_error(x, v4, v4, v3, NULL, true, EPS, "weight should contain 4 elements not 3");
  double *m2 = values(v4);
  CHECK(!memcmp(m, m2, 4 * sizeof(double)));
  free(m);
  free(m2);
  ln_tensor *ok = ln_batch_norm(xh, v4, v4, v4, v4, true, MOMENTUM, EPS);
  CHECK(ok != NULL);
  ln_tensor_release(ok);
  ln_tensor *ts[] = { x1, x14, x1411, x, xl, xh, xb, xd, v4, v3, d4, h4 };
  for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) ln_tensor_release(ts[i]);
  CHECK(ln_tensor_live_count() == live);
}

/* ---- threads ---- */

static bool same_bits(const ln_tensor *a, const ln_tensor *b) {
  return ln_tensor_numel(a) == ln_tensor_numel(b) &&
         !memcmp(ln_tensor_data(a), ln_tensor_data(b),
                 (size_t)ln_tensor_numel(a) * ln_dtype_size(ln_tensor_dtype(a))) &&
         !memcmp(ln_tensor_strides(a), ln_tensor_strides(b),
                 sizeof(int64_t) * (size_t)ln_tensor_dim(a));
}

/* One training forward and backward; the results in out[0..4]. */
static void train_step(const int64_t *sizes, int nd, ln_dtype dt, layout L, int threads,
                       ln_tensor **out) {
  uint64_t seed = rng;
  omp_set_num_threads(threads);
  ln_tensor *x = make(sizes, nd, dt, L), *w = vec(sizes[1], dt, 0.5, 2);
  ln_tensor *rm = vec(sizes[1], dt, 0, 0), *rv = vec(sizes[1], dt, 1, 1);
  fill_uniform(x, -1, 3);
  ln_tensor *dy = make(sizes, nd, dt, L);
  fill_uniform(dy, -1, 1);
  ln_tensor_set_requires_grad(x, true);
  ln_tensor_set_requires_grad(w, true);
  out[0] = ln_batch_norm(x, rm, rv, w, NULL, true, MOMENTUM, EPS);
  CHECK_OK(ln_backward(out[0], dy, false));
  out[1] = ln_tensor_grad(x);
  out[2] = ln_tensor_grad(w);
  ln_tensor_retain(out[1]);
  ln_tensor_retain(out[2]);
  out[3] = rm;
  out[4] = rv;
  ln_tensor_release(x);
  ln_tensor_release(w);
  ln_tensor_release(dy);
  rng = seed;
}

static void test_threads(void) {
  int64_t live = ln_tensor_live_count();
  size_t by_channel = ln_bn_cpu_channel_threshold(0);   /* on inputs this small too */
  static const struct { int nd; int64_t sizes[5]; } shapes[] = {
    { 4, { 4, 3, 61, 53 } },      /* few channels: channels split across units */
    { 4, { 3, 67, 13, 17 } },     /* many channels */
    { 2, { 301, 129 } },
    { 5, { 2, 5, 9, 31, 33 } },
    { 4, { 8, 64, 32, 32 } },     /* AVX-512: register blocks (see test_rows_blocks) */
    { 4, { 2, 8, 96, 96 } },      /* NCHW: the forward by channel (runs of 9216) */
    { 5, { 2, 5, 3, 61, 53 } },   /* the same, C not a multiple of the threads */
    { 2, { 40, 1024 } },          /* AVX-512: streamed, the map in register blocks */
    { 2, { 8192, 263 } },         /* rows of 1 KB in 64 blocks: streamed, sums in */
  };                              /* memory order (rows_seq), 7 channels after */
  for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
    for (int L = 0; L < 2; L++) {
      if (shapes[s].nd == 2 && L == L_CL) continue;
      ln_tensor *one[5], *two[5], *streamed[5], *passes[5];
      train_step(shapes[s].sizes, shapes[s].nd, LN_F32, (layout)L, 1, one);
      train_step(shapes[s].sizes, shapes[s].nd, LN_F32, (layout)L, 2, two);
      size_t threshold = ln_bn_cpu_stream_threshold(0);   /* every map that may */
      train_step(shapes[s].sizes, shapes[s].nd, LN_F32, (layout)L, 2, streamed);
      ln_bn_cpu_stream_threshold(threshold);
      ln_bn_cpu_channel_threshold(SIZE_MAX);   /* statistics, then the map */
      train_step(shapes[s].sizes, shapes[s].nd, LN_F32, (layout)L, 2, passes);
      ln_bn_cpu_channel_threshold(0);
      for (int i = 0; i < 5; i++) {
        if (!same_bits(one[i], two[i]) || !same_bits(one[i], streamed[i]) ||
            !same_bits(one[i], passes[i])) {
          CHECK(false);
          fprintf(stderr, "  threads: shape %zu layout %d result %d differs\n", s, L, i);
        }
        ln_tensor_release(one[i]);
        ln_tensor_release(two[i]);
        ln_tensor_release(streamed[i]);
        ln_tensor_release(passes[i]);
      }
    }
  ln_bn_cpu_channel_threshold(by_channel);
  omp_set_num_threads(2);
  CHECK(ln_tensor_live_count() == live);
}

/* BatchNorm on threads that then exit: each gives the main thread's
** result, and the reductions' per-thread work space goes with its thread
** (the sanitizer build's leak check fails otherwise). */
typedef struct thread_run { ln_tensor *x, *y; } thread_run;

static void *bn_on_thread(void *arg) {
  thread_run *r = arg;
  r->y = ln_batch_norm(r->x, NULL, NULL, NULL, NULL, true, 0.1, 1e-5);
  return NULL;
}

static void test_short_lived_threads(void) {
  int64_t sizes[4] = { 4, 3, 17, 19 };
  ln_tensor *x = ln_randn(sizes, 4, LN_F32, LN_DEVICE_CPU);
  ln_tensor *ref = ln_batch_norm(x, NULL, NULL, NULL, NULL, true, 0.1, 1e-5);
  thread_run runs[3];
  pthread_t th[3];
  for (int i = 0; i < 3; i++) {
    runs[i] = (thread_run){ x, NULL };
    CHECK(pthread_create(&th[i], NULL, bn_on_thread, &runs[i]) == 0);
  }
  for (int i = 0; i < 3; i++) {
    pthread_join(th[i], NULL);
    CHECK(runs[i].y && same_bits(runs[i].y, ref));
    ln_tensor_release(runs[i].y);
  }
  ln_tensor_release(ref);
  ln_tensor_release(x);
}

int main(void) {
  ln_init();
  for (int isa = LN_BN_ISA_AVX512; isa >= LN_BN_ISA_BASE; isa--) {  /* each build of the loops */
    ln_bn_cpu_max_isa(isa);
    test_reference();
    test_far_from_zero();
  }
  ln_bn_cpu_max_isa(LN_BN_ISA_AVX512);
  test_rows_blocks();
  test_permuted_nhwc();
  test_expanded_grad();
  test_gradcheck();
  test_nan();
  test_empty();
  test_errors();
  test_threads();
  test_short_lived_threads();
  return check_done("test_batchnorm");
}
