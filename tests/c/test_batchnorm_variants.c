/*
** test_batchnorm_variants.c -- the BatchNorm variants (ln_bn_forward with
** virtual_batch, relu and an addend, renorm; the FusedBatchNorm2d and
** BatchRenorm modules) against a naive double-precision reference: every
** layout and dtype, odd sizes, inputs large enough to run on several
** threads with mask words shared between them; the mask's bit layout
** (the input's memory order); ghost BN equal to BatchNorm on each block;
** results independent of the thread count; empty batches, errors, modules
** from C and leaks.
*/
#include <omp.h>

#include "bn_test_util.h"
#include "check.h"
#include "core/autograd.h"
#include "core/ops.h"
#include "nn/batchnorm_functional.h"
#include "nn/module.h"

#define EPS 1e-5
#define MOMENTUM 0.1

/* ---- the reference: x (N, C, S) row-major in double ---- */

typedef struct vcase {
  int64_t sizes[6];
  int nd;
  ln_dtype dt;
  layout L, grad_layout;
  bool training, relu, addend, renorm;
  int64_t V;                /* virtual batch, 0: none */
} vcase;

typedef struct vref {
  double *y, *dx, *da, *dw, *db, *rm, *rv;
} vref;

static void vref_free(vref *r) {
  free(r->y); free(r->dx); free(r->da); free(r->dw); free(r->db); free(r->rm); free(r->rv);
}

static double clampd(double v, double lo, double hi) { return v < lo ? lo : v > hi ? hi : v; }

/* Forward (y, running stats) and, given the kernels' output ygot (whose
** stored values decide which ReLU outputs pass the gradient, as the mask
** does), backward. rm, rv: the running statistics before the call. */
static void reference(const vcase *k, const double *x, const double *a, const double *dy,
                      const double *ygot, const double *w, const double *b, const double *rm,
                      const double *rv, double rmax, double dmax, vref *r) {
  int64_t N = k->sizes[0], C = k->sizes[1], S = 1;
  for (int d = 2; d < k->nd; d++) S *= k->sizes[d];
  int64_t G = k->training && k->V ? N / k->V : 1, Vb = N / G, M = Vb * S, n = N * C * S;
  r->y = calloc((size_t)n + 1, sizeof(double));
  r->dx = calloc((size_t)n + 1, sizeof(double));
  r->da = calloc((size_t)n + 1, sizeof(double));
  r->dw = calloc((size_t)C + 1, sizeof(double));
  r->db = calloc((size_t)C + 1, sizeof(double));
  r->rm = calloc((size_t)C + 1, sizeof(double));
  r->rv = calloc((size_t)C + 1, sizeof(double));
  for (int64_t c = 0; c < C; c++) {
    double smean = 0, svar = 0;
    for (int64_t g = 0; g < G; g++) {
#define IDX(nn, s) (((g * Vb + (nn)) * C + c) * S + (s))
#define EACH for (int64_t nn = 0; nn < Vb; nn++) for (int64_t s = 0; s < S; s++)
      double mu = 0, var = 0;
      EACH mu += x[IDX(nn, s)];
      mu /= (double)M;
      EACH var += pow(x[IDX(nn, s)] - mu, 2);
      var /= (double)M;
      smean += mu;
      svar += var * (double)M / (double)(M - 1);
      if (!k->training) {
        mu = rm[c];
        var = rv[c];
      }
      double is = 1 / sqrt(var + EPS), rr = 1, dd = 0;
      if (k->renorm && k->training) {
        double sigma = sqrt(rv[c] + EPS);
        rr = clampd(sqrt(var + EPS) / sigma, 1 / rmax, rmax);
        dd = clampd((mu - rm[c]) / sigma, -dmax, dmax);
      }
      double sdz = 0, sdzx = 0;
      EACH {
        int64_t i = IDX(nn, s);
        double xh = (x[i] - mu) * is, v = (xh * rr + dd) * w[c] + b[c];
        if (k->relu) {
          v += a ? a[i] : 0;
          v = v < 0 ? 0 : v;
        }
        r->y[i] = v;
        if (!ygot) continue;
        double dz = !k->relu || !(ygot[i] <= 0) ? dy[i] : 0;
        r->da[i] = dz;
        sdz += dz;
        sdzx += dz * xh;
      }
      r->dw[c] += sdzx * rr + dd * sdz;
      r->db[c] += sdz;
      EACH {
        int64_t i = IDX(nn, s);
        double xh = (x[i] - mu) * is;
        r->dx[i] = k->training ? w[c] * rr * is * (r->da[i] - sdz / M - xh * sdzx / M)
                               : w[c] * is * r->da[i];
      }
#undef EACH
#undef IDX
    }
    r->rm[c] = k->training ? (1 - MOMENTUM) * rm[c] + MOMENTUM * smean / G : rm[c];
    r->rv[c] = k->training ? (1 - MOMENTUM) * rv[c] + MOMENTUM * svar / G : rv[c];
  }
}

/* ---- cases ---- */

static void describe(const vcase *k, char *buf, size_t n) {
  snprintf(buf, n, "%dD %s %s%s%s%s%s V=%lld %s", k->nd, ln_dtype_name(k->dt),
           layout_names[k->L], k->relu ? " relu" : "", k->addend ? "+addend" : "",
           k->renorm ? " renorm" : "", k->training ? " train" : " eval", (long long)k->V,
           layout_names[k->grad_layout]);
}

static bool check_values(ln_tensor *t, const double *want, double tol, const char *name,
                         const char *what) {
  double *v = values(t);
  bool ok = close_all(v, want, ln_tensor_numel(t), tol, name);
  if (!ok) fprintf(stderr, "  in %s\n", what);
  free(v);
  return ok;
}

static void run_case(const vcase *k) {
  const int64_t *sz = k->sizes;
  int nd = k->nd;
  int64_t C = sz[1];
  int64_t live = ln_tensor_live_count();
  double rmax = 1.5, dmax = 0.4;
  char what[200];
  describe(k, what, sizeof what);
  ln_tensor *x = make(sz, nd, k->dt, k->L), *a = NULL;
  fill_uniform(x, -1.5, 2.5);
  ln_tensor_set_requires_grad(x, true);
  if (k->addend) {
    a = make(sz, nd, k->dt, k->grad_layout);
    fill_uniform(a, -1, 1);
    ln_tensor_set_requires_grad(a, true);
  }
  ln_tensor *w = vec(C, k->dt, 0.5, 2), *b = vec(C, k->dt, -1, 1);
  ln_tensor *rm = vec(C, k->dt, -0.5, 0.5), *rv = vec(C, k->dt, 0.5, 2);
  ln_tensor_set_requires_grad(w, true);
  ln_tensor_set_requires_grad(b, true);
  double *xv = values(x), *av = a ? values(a) : NULL, *wv = values(w), *bv = values(b);
  double *rmv = values(rm), *rvv = values(rv);
  ln_bn_args args = { .input = x, .running_mean = rm, .running_var = rv, .weight = w,
                      .bias = b, .addend = a, .training = k->training, .update = true,
                      .momentum = MOMENTUM, .eps = EPS, .virtual_batch = k->V,
                      .relu = k->relu, .renorm = k->renorm, .rmax = rmax, .dmax = dmax };
  /* without autograd (no mask is kept) first, leaving the running stats alone */
  bool grad_mode = ln_set_grad_enabled(false);
  args.update = false;
  ln_tensor *y0 = ln_bn_forward(&args);
  ln_set_grad_enabled(grad_mode);
  args.update = true;
  ln_tensor *y = ln_bn_forward(&args), *dy = NULL;
  CHECK(y != NULL && y0 != NULL);
  if (!y || !y0) {
    fprintf(stderr, "  %s: %s\n", what, ln_last_error());
    goto done;
  }
  CHECK(!memcmp(ln_tensor_strides(y), ln_tensor_strides(y0), sizeof(int64_t) * (size_t)nd) &&
        !memcmp(ln_tensor_data(y), ln_tensor_data(y0),
                (size_t)ln_tensor_numel(y) * ln_dtype_size(k->dt)));
  if (k->L != L_NARROW_LAST) CHECK(same_layout(x, y));
  dy = make(sz, nd, k->dt, k->grad_layout);
  fill_uniform(dy, -1, 1);
  double *dyv = values(dy), *yv = values(y);
  vref r;
  reference(k, xv, av, dyv, yv, wv, bv, rmv, rvv, rmax, dmax, &r);
  double tol = 10 * dt_eps(k->dt);
  CHECK(close_all(yv, r.y, ln_tensor_numel(y), tol, "y") || (fprintf(stderr, "  in %s\n", what), 0));
  CHECK(check_values(rm, r.rm, 10 * dt_eps(k->dt) + 1e-6, "running_mean", what));
  CHECK(check_values(rv, r.rv, 10 * dt_eps(k->dt) + 1e-6, "running_var", what));
  CHECK_OK(ln_backward(y, dy, false));
  ln_tensor *gx = ln_tensor_grad(x), *ga = a ? ln_tensor_grad(a) : NULL;
  ln_tensor *gw = ln_tensor_grad(w), *gb = ln_tensor_grad(b);
  CHECK(gx && gw && gb && (!a || ga));
  if (gx) CHECK(check_values(gx, r.dx, 20 * dt_eps(k->dt), "dx", what));
  if (ga) CHECK(check_values(ga, r.da, 0, "daddend", what));
  if (gw) CHECK(check_values(gw, r.dw, 40 * dt_eps(k->dt), "dweight", what));
  if (gb) CHECK(check_values(gb, r.db, 40 * dt_eps(k->dt), "dbias", what));
  free(dyv);
  free(yv);
  vref_free(&r);
done:
  free(xv); free(av); free(wv); free(bv); free(rmv); free(rvv);
  ln_tensor_release(y);
  ln_tensor_release(y0);
  ln_tensor_release(dy);
  ln_tensor_release(x);
  ln_tensor_release(a);
  ln_tensor_release(w);
  ln_tensor_release(b);
  ln_tensor_release(rm);
  ln_tensor_release(rv);
  CHECK(ln_tensor_live_count() == live);
}

static void test_reference(void) {
  static const struct { int nd; int64_t sizes[6]; } shapes[] = {
    { 2, { 8, 5 } },                /* (N, C) */
    { 3, { 6, 3, 7 } },             /* (N, C, L) */
    { 4, { 4, 3, 5, 7 } },          /* odd sizes: mask words cross runs */
    { 4, { 4, 16, 9, 11 } },
    { 5, { 4, 3, 3, 5, 7 } },
    { 4, { 6, 24, 17, 19 } },       /* 46512 values: several threads */
  };
  static const ln_dtype dts[] = { LN_F32, LN_F64, LN_F16, LN_BF16 };
  /* mode: relu+addend, relu, renorm, ghost, relu+addend+ghost, renorm+ghost */
  for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
    for (int L = 0; L < L_LAYOUT_COUNT; L++)
      for (size_t t = 0; t < 4; t++)
        for (int mode = 0; mode < 6; mode++)
          for (int training = 0; training < 2; training++) {
            if (shapes[s].nd == 2 && (L == L_CL || L == L_CL_NARROW_C)) continue;
            if (s == 5 && t > 1) continue;   /* the large shape: float32 and float64 */
            vcase k = { .nd = shapes[s].nd, .dt = dts[t], .L = (layout)L,
                        .grad_layout = (layout)((L + mode + 1) % L_LAYOUT_COUNT),
                        .training = training, .relu = mode == 0 || mode == 1 || mode == 4,
                        .addend = mode == 0 || mode == 4, .renorm = mode == 2 || mode == 5,
                        .V = mode >= 3 ? 2 : 0 };
            memcpy(k.sizes, shapes[s].sizes, sizeof k.sizes);
            run_case(&k);
          }
}

/* Channels-last FusedBatchNorm2d on inputs whose channels fill vectors:
** the AVX-512 build's register blocks for the masked backward sums and
** the maps, whose mask bits go a word at a time when C fills words. */
static void test_rows_blocks(void) {
  static const int64_t shapes[][4] = {
    { 8, 64, 32, 32 },   /* whole blocks of 64 float32 channels; 2 mask words a row */
    { 4, 48, 32, 32 },   /* maps of 3 float32 / 6 float64 vectors; mask bits not whole words */
    { 2, 32, 32, 32 },   /* a mask word a row from 2 float32 / 4 float64 vectors */
    { 1, 2080, 1, 5 },   /* rows of 8 KB: mask words from a block, 4 rows at a time */
  };
  static const ln_dtype dts[] = { LN_F32, LN_F64 };
  for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
    for (size_t t = 0; t < 2; t++)
      for (int mode = 0; mode < 8; mode++) {
        vcase k = { .nd = 4, .dt = dts[t], .L = mode & 1 ? L_CL_NARROW_C : L_CL,
                    .grad_layout = L_CL, .training = mode & 2, .relu = true,
                    .addend = mode & 4 };
        memcpy(k.sizes, shapes[s], sizeof shapes[s]);
        run_case(&k);
      }
}

/* ---- the mask ---- */

/* The kernels' mask for y = relu(x) on a dense x (NCHW or channels-last):
** bit e is for the element at offset e of x, whatever C, on several threads. */
static void test_mask_layout(void) {
  const int64_t sizes[] = { 5, 7, 31, 37 };   /* 40145 values */
  for (int L = 0; L < 2; L++) {
    ln_tensor *x = make(sizes, 4, LN_F32, L ? L_CL : L_CONTIG);
    fill_uniform(x, -1, 1);
    float *xd = ln_tensor_data(x);
    int64_t n = ln_tensor_numel(x);
    xd[3] = 0.0f;
    xd[4] = -0.0f;
    xd[5] = NAN;
    ln_bn_plan plan;
    ln_bn_view xv, ov;
    ln_bn_mask m;
    CHECK(ln_bn_plan_for(x, &plan) && plan.g.rows == (L == 1));
    ln_tensor *y = ln_bn_empty(&plan, x, LN_F32);
    uint32_t *bits = calloc((size_t)(n + 31) / 32 + 1, sizeof(uint32_t));   /* + padding */
    ln_bn_view_for(&plan, x, &xv);
    ln_bn_view_for(&plan, y, &ov);
    CHECK(ln_bn_mask_for(&plan, y, y, bits, &m));
    double zero[7] = { 0 }, one[7] = { 1, 1, 1, 1, 1, 1, 1 };
    CHECK_OK(ln_bn_cpu_fused_forward(LN_F32, &plan.g, &xv, NULL, &ov, &m, zero, one, zero, false));
    const float *yd = ln_tensor_data(y);
    int64_t bad = 0;
    for (int64_t e = 0; e < n; e++) {
      bool bit = (bits[e / 32] >> (e % 32)) & 1, pass = !(xd[e] <= 0);
      bool relu_ok = isnan(xd[e]) ? isnan(yd[e]) : yd[e] == (xd[e] < 0 ? 0 : xd[e]);
      bad += bit != pass || !relu_ok;
    }
    CHECK(bad == 0);
    CHECK(!memcmp(ln_tensor_strides(x), ln_tensor_strides(y), 4 * sizeof(int64_t)));
    free(bits);
    ln_tensor_release(y);
    ln_tensor_release(x);
  }
}

/* ---- ghost BN is BatchNorm on each block ---- */

static void test_ghost_blocks(void) {
  int64_t live = ln_tensor_live_count();
  const int64_t sizes[] = { 6, 5, 7, 9 };
  for (int L = 0; L < 2; L++) {
    ln_tensor *x = make(sizes, 4, LN_F32, L ? L_CL : L_CONTIG);
    fill_uniform(x, -2, 3);
    ln_tensor *dy = make(sizes, 4, LN_F32, L ? L_CL : L_CONTIG);
    fill_uniform(dy, -1, 1);
    ln_tensor_set_requires_grad(x, true);
    ln_bn_args a = { .input = x, .training = true, .update = true, .momentum = MOMENTUM,
                     .eps = EPS, .virtual_batch = 2 };
    ln_tensor *y = ln_bn_forward(&a);
    CHECK_OK(ln_backward(y, dy, false));
    for (int64_t g = 0; g < 3; g++) {
      ln_tensor *xb = ln_narrow(x, 0, 2 * g, 2), *xd = ln_detach(xb);
      ln_tensor_set_requires_grad(xd, true);
      ln_tensor *yb = ln_batch_norm(xd, NULL, NULL, NULL, NULL, true, MOMENTUM, EPS);
      ln_tensor *want = ln_narrow(y, 0, 2 * g, 2), *dyb = ln_narrow(dy, 0, 2 * g, 2);
      ln_tensor *gx = ln_narrow(ln_tensor_grad(x), 0, 2 * g, 2);
      CHECK_OK(ln_backward(yb, dyb, false));
      double *u = values(yb), *v = values(want), *p = values(ln_tensor_grad(xd)), *q = values(gx);
      int64_t n = ln_tensor_numel(yb), diff = 0;
      for (int64_t i = 0; i < n; i++) diff += u[i] != v[i] || p[i] != q[i];
      CHECK(diff == 0);   /* the same kernels on the same block: the same bits */
      free(u); free(v); free(p); free(q);
      ln_tensor_release(xb); ln_tensor_release(xd); ln_tensor_release(yb);
      ln_tensor_release(want); ln_tensor_release(dyb); ln_tensor_release(gx);
    }
    ln_tensor_release(y);
    ln_tensor_release(dy);
    ln_tensor_release(x);
  }
  CHECK(ln_tensor_live_count() == live);
}

/* Equal bytes (dense tensors of the same layout). */
static bool same_bits(const ln_tensor *a, const ln_tensor *b) {
  return a && b && ln_tensor_numel(a) == ln_tensor_numel(b) &&
         !memcmp(ln_tensor_data(a), ln_tensor_data(b),
                 (size_t)ln_tensor_numel(a) * ln_dtype_size(ln_tensor_dtype(a)));
}

/* ---- the backward's map with sums made elsewhere ---- */

/* ln_bn_cpu_train_dx with the sums of ln_bn_cpu_grad_sums and M as the
** count is ln_bn_cpu_train_backward to the bit (NCHW and channels-last). */
static void test_train_dx(void) {
  const int64_t sizes[] = { 3, 5, 6, 7 };
  for (int L = 0; L < 2; L++) {
    ln_tensor *x = make(sizes, 4, LN_F32, L ? L_CL : L_CONTIG);
    ln_tensor *dy = make(sizes, 4, LN_F32, L ? L_CL : L_CONTIG);
    fill_uniform(x, -1, 2);
    fill_uniform(dy, -1, 1);
    ln_bn_plan p;
    ln_bn_view xv, gv, av, bv;
    ln_bn_plan_for(x, &p);
    ln_tensor *a = ln_bn_empty(&p, x, LN_F32), *b = ln_bn_empty(&p, x, LN_F32);
    ln_bn_view_for(&p, x, &xv);
    ln_bn_view_for(&p, dy, &gv);
    ln_bn_view_for(&p, a, &av);
    ln_bn_view_for(&p, b, &bv);
    double mean[5], var[5], is[5], w[5] = { 1, 2, 0.5, -1, 3 }, s1[5], s2[5], t1[5], t2[5];
    CHECK_OK(ln_bn_cpu_stats(LN_F32, &p.g, &xv, mean, var));
    for (int c = 0; c < 5; c++) is[c] = 1 / sqrt(var[c] + EPS);
    CHECK_OK(ln_bn_cpu_train_backward(LN_F32, &p.g, &xv, &gv, &av, mean, is, w, s1, s2));
    CHECK_OK(ln_bn_cpu_grad_sums(LN_F32, &p.g, &xv, &gv, mean, t1, t2));
    CHECK_OK(ln_bn_cpu_train_dx(LN_F32, &p.g, &xv, &gv, &bv, mean, is, w, t1, t2,
                                (double)(3 * 6 * 7)));
    CHECK(same_bits(a, b));
    ln_tensor_release(a);
    ln_tensor_release(b);
    ln_tensor_release(x);
    ln_tensor_release(dy);
  }
}

/* ---- threads ---- */

/* A fused training step with ghost blocks: y, dx, daddend, dweight, dbias. */
static void fused_step(const int64_t *sizes, layout L, int threads, ln_tensor **out) {
  rng = 12345;
  omp_set_num_threads(threads);
  ln_tensor *x = make(sizes, 4, LN_F32, L), *a = make(sizes, 4, LN_F32, L);
  ln_tensor *dy = make(sizes, 4, LN_F32, L), *w = vec(sizes[1], LN_F32, 0.5, 2);
  ln_tensor *b = vec(sizes[1], LN_F32, -1, 1);
  fill_uniform(x, -1, 2);
  fill_uniform(a, -1, 1);
  fill_uniform(dy, -1, 1);
  ln_tensor *in[4] = { x, a, w, b };
  for (int i = 0; i < 4; i++) ln_tensor_set_requires_grad(in[i], true);
  ln_bn_args args = { .input = x, .weight = w, .bias = b, .addend = a, .training = true,
                      .momentum = MOMENTUM, .eps = EPS, .virtual_batch = sizes[0] / 2,
                      .relu = true };
  out[0] = ln_bn_forward(&args);
  CHECK_OK(ln_backward(out[0], dy, false));
  for (int i = 0; i < 4; i++) {
    out[i + 1] = ln_tensor_grad(in[i]);
    ln_tensor_retain(out[i + 1]);
    ln_tensor_release(in[i]);
  }
  ln_tensor_release(dy);
}

/* The same bits on one thread, on four, and on four with every map that
** may stream its output doing so (threshold 0: the ReLU's mask bits are
** then made from the staged pieces). */
static void test_threads(void) {
  static const int64_t shapes[][4] = {
    { 4, 13, 33, 35 },   /* 60060 values */
    { 4, 32, 21, 23 },   /* AVX-512: maps in registers (see test_rows_blocks) */
    { 8, 263, 32, 64 },  /* rows of 1 KB, 64 blocks a ghost batch: streamed, the
                            masked sums in memory order (rows_seq), 7 channels
                            after the vectors */
  };
  int saved = omp_get_max_threads();
  for (int e = 0; e < 2 * (int)(sizeof shapes / sizeof shapes[0]); e++) {
    const int64_t *sizes = shapes[e / 2];
    int L = e % 2;
    ln_tensor *one[5], *many[5], *streamed[5];
    fused_step(sizes, L ? L_CL : L_CONTIG, 1, one);
    fused_step(sizes, L ? L_CL : L_CONTIG, 4, many);
    size_t threshold = ln_bn_cpu_stream_threshold(0);
    fused_step(sizes, L ? L_CL : L_CONTIG, 4, streamed);
    ln_bn_cpu_stream_threshold(threshold);
    for (int i = 0; i < 5; i++) {
      CHECK(same_bits(one[i], many[i]));
      CHECK(same_bits(one[i], streamed[i]));
      ln_tensor_release(one[i]);
      ln_tensor_release(many[i]);
      ln_tensor_release(streamed[i]);
    }
  }
  omp_set_num_threads(saved);
}

/* ---- corners and errors ---- */

static void test_empty(void) {
  int64_t live = ln_tensor_live_count();
  const int64_t sizes[] = { 0, 3, 2, 2 }, three = 3;
  ln_tensor *x = ln_zeros(sizes, 4, LN_F32, CPU), *a = ln_zeros(sizes, 4, LN_F32, CPU);
  ln_tensor *w = ln_full(&three, 1, 1.0, LN_F32, CPU);
  ln_tensor_set_requires_grad(x, true);
  ln_tensor_set_requires_grad(a, true);
  ln_tensor_set_requires_grad(w, true);
  ln_bn_args args = { .input = x, .weight = w, .addend = a, .training = true, .eps = EPS,
                      .virtual_batch = 2, .relu = true };
  ln_tensor *y = ln_bn_forward(&args), *s = y ? ln_sum(y, NULL, 0, false) : NULL;
  CHECK(y && ln_tensor_numel(y) == 0);
  CHECK_OK(ln_backward(s, NULL, false));
  CHECK(ln_tensor_grad(a) && ln_tensor_numel(ln_tensor_grad(a)) == 0);
  CHECK(ln_tensor_grad(w) && ln_tensor_get(ln_tensor_grad(w), (int64_t[]){ 1 }) == 0);
  ln_tensor_release(s);
  ln_tensor_release(y);
  ln_tensor_release(x);
  ln_tensor_release(a);
  ln_tensor_release(w);
  CHECK(ln_tensor_live_count() == live);
}

static void expect_error(const ln_bn_args *a, const char *fragment) {
  ln_tensor *y = ln_bn_forward(a);
  CHECK(y == NULL);
  CHECK_MSG(fragment);
  if (!strstr(ln_last_error(), fragment))
    fprintf(stderr, "  got \"%s\", expected \"%s\"\n", ln_last_error(), fragment);
  ln_tensor_release(y);
}

static void test_errors(void) {
  int64_t live = ln_tensor_live_count();
  const int64_t sizes[] = { 4, 3, 2, 2 }, other[] = { 4, 3, 2, 1 };
  ln_tensor *x = ln_zeros(sizes, 4, LN_F32, CPU), *bad = ln_zeros(other, 4, LN_F32, CPU);
  ln_tensor *x64 = ln_zeros(sizes, 4, LN_F64, CPU);
  ln_bn_args a = { .input = x, .training = true, .eps = EPS, .virtual_batch = 3 };
  expect_error(&a, "virtual_batch_size 3 does not divide the batch size 4 (input size "
                   "{4, 3, 2, 2})");
  a.virtual_batch = 0;
  a.renorm = true;
  a.rmax = 3;
  expect_error(&a, "running_mean and running_var must be defined in training");
  a.renorm = false;
  a.relu = true;
  a.addend = bad;
  expect_error(&a, "addend must have the input's shape {4, 3, 2, 2}, got {4, 3, 2, 1}");
  a.addend = x64;
  expect_error(&a, "addend must have the input's dtype float32, got float64");
  const int64_t small[] = { 2, 3 };
  ln_tensor *x2 = ln_zeros(small, 2, LN_F32, CPU);
  ln_bn_args b = { .input = x2, .training = true, .eps = EPS, .virtual_batch = 1 };
  expect_error(&b, "Expected more than 1 value per channel when training, got input size "
                   "{2, 3} with virtual_batch_size 1");
  ln_tensor_release(x2);
  ln_tensor_release(x);
  ln_tensor_release(bad);
  ln_tensor_release(x64);
  CHECK(ln_tensor_live_count() == live);
}

/* ---- the modules from C ---- */

static void test_modules(void) {
  int64_t live = ln_tensor_live_count();
  ln_batchnorm_options o = ln_batchnorm_defaults();
  ln_module *f = ln_fused_batchnorm2d_new(3, &o);
  CHECK(f && !strcmp(ln_module_type_name(f), "FusedBatchNorm2d"));
  const int64_t sizes[] = { 4, 3, 2, 2 };
  ln_tensor *x = ln_zeros(sizes, 4, LN_F32, CPU), *a = ln_zeros(sizes, 4, LN_F32, CPU);
  fill_uniform(x, -1, 1);
  fill_uniform(a, -1, 1);
  ln_tensor *in[3] = { x, a, x };
  ln_tensor *y = ln_module_call(f, in, 2), *y1 = ln_module_call(f, in, 1);
  CHECK(y && y1);
  CHECK(ln_module_call(f, in, 3) == NULL);
  CHECK_MSG("FusedBatchNorm2d.forward expects 1 or 2 inputs (x, addend), got 3");
  double v;
  CHECK_OK(ln_tensor_item(ln_module_get_tensor(f, "num_batches_tracked"), &v));
  CHECK(v == 2);
  o.ema_update = LN_BN_EMA_SKIP;
  o.virtual_batch_size = 2;
  ln_module *r = ln_batchrenorm_new(2, 3, &o, 2, 1);
  CHECK(r && !strcmp(ln_module_type_name(r), "BatchRenorm2d"));
  ln_tensor *yr = r ? ln_module_call(r, in, 1) : NULL;
  CHECK(yr != NULL);
  CHECK_OK(ln_tensor_item(ln_module_get_tensor(r, "num_batches_tracked"), &v));
  CHECK(v == 0);   /* ema_update skip */
  char *text = r ? ln_module_to_string(r) : NULL;
  CHECK(text && !strcmp(text, "BatchRenorm2d(3, eps=1e-05, momentum=0.1, affine=true, "
                              "track_running_stats=true, rmax=2.0, dmax=1.0, "
                              "virtual_batch_size=2, ema_update=skip)"));
  free(text);
  CHECK(ln_batchrenorm_new(4, 3, &o, 2, 1) == NULL);
  CHECK_MSG("spatial_dims must be 1, 2 or 3, got 4");
  CHECK(ln_batchrenorm_new(1, 3, &o, 0.5, 1) == NULL);
  CHECK_MSG("BatchRenorm1d: rmax must be at least 1, got 0.5");
  o.track_running_stats = false;
  CHECK(ln_batchrenorm_new(1, 3, &o, 2, 1) == NULL);
  CHECK_MSG("BatchRenorm1d needs track_running_stats=true");
  o = ln_batchnorm_defaults();
  o.virtual_batch_size = -2;
  CHECK(ln_batchnorm_new(2, 3, &o) == NULL);
  CHECK_MSG("BatchNorm2d: virtual_batch_size must be a positive integer, got -2");
  ln_tensor_release(y);
  ln_tensor_release(y1);
  ln_tensor_release(yr);
  ln_tensor_release(x);
  ln_tensor_release(a);
  ln_module_release(f);
  ln_module_release(r);
  CHECK(ln_tensor_live_count() == live);
}

int main(void) {
  ln_init();
  for (int isa = LN_BN_ISA_AVX512; isa >= LN_BN_ISA_BASE; isa--) {
    ln_bn_cpu_max_isa(isa);
    test_reference();
    test_mask_layout();
  }
  ln_bn_cpu_max_isa(LN_BN_ISA_AVX512);
  test_rows_blocks();
  test_ghost_blocks();
  test_train_dx();
  test_threads();
  test_empty();
  test_errors();
  test_modules();
  return check_done("test_batchnorm_variants");
}
