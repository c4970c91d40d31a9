/*
** test_ops.c -- the generic CPU ops against naive loops: broadcasting and
** dtype promotion, every elementwise op on permuted, narrowed, expanded
** and channels-last inputs, reductions over one, several and all dims,
** matmul (transposed operands, 1D and batched cases), cat, copies between
** dtypes, empty tensors, error messages, gradients against finite
** differences, and no leaked tensors.
*/
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "core/autograd.h"
#include "core/gradcheck.h"
#include "core/ops.h"
#include "core/tensor.h"

#define CPU LN_DEVICE_CPU

/* ---- helpers ---- */

static uint32_t rng = 12345;

static double uniform(double lo, double hi) {
  rng = rng * 1664525u + 1013904223u;
  return lo + (hi - lo) * (double)(rng >> 8) / 16777216.0;
}

/* Step a row-major multi-index; false after the last one. */
static bool next_index(int64_t *idx, const int64_t *sizes, int nd) {
  for (int d = nd - 1; d >= 0; d--) {
    if (++idx[d] < sizes[d]) return true;
    idx[d] = 0;
  }
  return false;
}

static int64_t numel_of(const int64_t *sizes, int nd) {
  int64_t n = 1;
  for (int d = 0; d < nd; d++) n *= sizes[d];
  return n;
}

/* Random values in [lo, hi) in every element of t (any strides); integral
** dtypes get rounded values. */
static void fill_rand(ln_tensor *t, double lo, double hi) {
  int nd = ln_tensor_dim(t);
  const int64_t *sizes = ln_tensor_sizes(t), *strides = ln_tensor_strides(t);
  int64_t idx[LN_MAX_DIMS] = { 0 };
  size_t es = ln_dtype_size(ln_tensor_dtype(t));
  if (ln_tensor_numel(t) == 0) return;
  do {
    int64_t off = 0;
    for (int d = 0; d < nd; d++) off += idx[d] * strides[d];
    double v = uniform(lo, hi);
    if (!ln_dtype_is_float(ln_tensor_dtype(t))) v = floor(v);
    ln_store_double((char *)ln_tensor_data(t) + off * (int64_t)es, ln_tensor_dtype(t), v);
  } while (next_index(idx, sizes, nd));
}

static ln_tensor *rand_tensor(const int64_t *sizes, int nd, ln_dtype dt, double lo, double hi) {
  ln_tensor *t = ln_empty(sizes, nd, dt, CPU);
  fill_rand(t, lo, hi);
  return t;
}

/* t at idx, where idx indexes a broadcast shape of nd dims. */
static double get_bcast(const ln_tensor *t, const int64_t *idx, int nd) {
  int64_t ti[LN_MAX_DIMS];
  int tn = ln_tensor_dim(t);
  for (int d = 0; d < tn; d++) {
    int64_t i = idx[nd - tn + d];
    ti[d] = ln_tensor_size(t, d) == 1 ? 0 : i;
  }
  return ln_tensor_get(t, ti);
}

static bool close_to(double got, double want, double rtol, double atol) {
  if (isnan(want)) return isnan(got);
  if (isinf(want)) return got == want;
  return fabs(got - want) <= atol + rtol * fabs(want);
}

/* Every element of out matches f(a, b) computed in double. */
typedef double (*ref2_fn)(double, double);

static int mismatches;

static void expect_elementwise(ln_tensor *out, ln_tensor *a, ln_tensor *b, ref2_fn f,
                               double rtol) {
  int nd = ln_tensor_dim(out);
  const int64_t *sizes = ln_tensor_sizes(out);
  int64_t idx[LN_MAX_DIMS] = { 0 };
  int bad = 0;
  if (ln_tensor_numel(out) > 0) do {
    double want = f(get_bcast(a, idx, nd), b ? get_bcast(b, idx, nd) : 0);
    double got = ln_tensor_get(out, idx);
    if (!close_to(got, want, rtol, 1e-6)) {
      if (bad++ < 3) fprintf(stderr, "  element mismatch: got %.9g want %.9g\n", got, want);
    }
  } while (next_index(idx, sizes, nd));
  mismatches += bad;
  CHECK(bad == 0);
}

static double r_add(double x, double y) { return x + y; }
static double r_sub(double x, double y) { return x - y; }
static double r_mul(double x, double y) { return x * y; }
static double r_div(double x, double y) { return x / y; }
static double r_pow(double x, double y) { return pow(x, y); }
static double r_max(double x, double y) { return x > y ? x : y; }
static double r_min(double x, double y) { return x < y ? x : y; }
static double r_eq(double x, double y) { return x == y; }
static double r_lt(double x, double y) { return x < y; }
static double r_ge(double x, double y) { return x >= y; }
static double r_neg(double x, double y) { (void)y; return -x; }
static double r_abs(double x, double y) { (void)y; return fabs(x); }
static double r_sqrt(double x, double y) { (void)y; return sqrt(x); }
static double r_exp(double x, double y) { (void)y; return exp(x); }
static double r_log(double x, double y) { (void)y; return log(x); }
static double r_relu(double x, double y) { (void)y; return x > 0 ? x : 0; }
static double r_sign(double x, double y) { (void)y; return (x > 0) - (x < 0); }
static double r_id(double x, double y) { (void)y; return x; }

/* Operands of shape [5, 4, 3] in several layouts (new references). */
enum { L_CONTIG, L_PERMUTED, L_NARROWED, L_EXPANDED, L_COUNT };

static ln_tensor *layout(int kind, ln_dtype dt, double lo, double hi) {
  ln_tensor *base = NULL, *v = NULL;
  switch (kind) {
  case L_CONTIG:
    return rand_tensor((int64_t[]){ 5, 4, 3 }, 3, dt, lo, hi);
  case L_PERMUTED:
    base = rand_tensor((int64_t[]){ 4, 3, 5 }, 3, dt, lo, hi);
    v = ln_permute(base, (int[]){ 2, 0, 1 }, 3);
    break;
  case L_NARROWED:
    base = rand_tensor((int64_t[]){ 5, 6, 3 }, 3, dt, lo, hi);
    v = ln_narrow(base, 1, 1, 4);
    break;
  default:
    base = rand_tensor((int64_t[]){ 1, 4, 1 }, 3, dt, lo, hi);
    v = ln_expand(base, (int64_t[]){ 5, 4, 3 }, 3);
    break;
  }
  ln_tensor_release(base);
  return v;
}

/* ---- elementwise ---- */

static void test_broadcasting(void) {
  ln_tensor *a = rand_tensor((int64_t[]){ 2, 3, 1 }, 3, LN_F32, -2, 2);
  ln_tensor *b = rand_tensor((int64_t[]){ 4 }, 1, LN_F32, -2, 2);
  ln_tensor *c = ln_add(a, b);
  CHECK(c && ln_tensor_dim(c) == 3 && ln_tensor_size(c, 0) == 2 && ln_tensor_size(c, 1) == 3 &&
        ln_tensor_size(c, 2) == 4);
  expect_elementwise(c, a, b, r_add, 1e-6);
  ln_tensor_release(c);

  ln_tensor *x = ln_zeros((int64_t[]){ 2, 3 }, 2, LN_F32, CPU);
  ln_tensor *y = ln_zeros((int64_t[]){ 2, 4 }, 2, LN_F32, CPU);
  CHECK(ln_add(x, y) == NULL);
  CHECK_MSG("The size of tensor a (3) must match the size of tensor b (4) at non-singleton "
            "dimension 1");
  /* 0-dim with anything, and an empty dim broadcast against 1 */
  ln_tensor *s = ln_scalar(2, LN_F32);
  c = ln_mul(s, x);
  CHECK(c && ln_tensor_same_shape(c, x));
  ln_tensor_release(c);
  ln_tensor *e = ln_zeros((int64_t[]){ 0, 1 }, 2, LN_F32, CPU);
  c = ln_add(e, b);
  CHECK(c && ln_tensor_size(c, 0) == 0 && ln_tensor_size(c, 1) == 4 && ln_tensor_numel(c) == 0);
  ln_tensor_release(c);
  c = ln_unary(LN_EXP, e);
  CHECK(c && ln_tensor_numel(c) == 0 && ln_tensor_dim(c) == 2);
  ln_tensor_release(c);
  c = ln_compare(LN_EQ, e, b);
  CHECK(c && ln_tensor_numel(c) == 0 && ln_tensor_dtype(c) == LN_BOOL);
  ln_tensor_release(c);
  ln_tensor *tr[] = { a, b, x, y, s, e };
  for (int i = 0; i < 6; i++) ln_tensor_release(tr[i]);
}

static ln_dtype result_of(ln_binary_op op, ln_dtype da, int nda, ln_dtype db, int ndb) {
  ln_tensor *a = ln_zeros((int64_t[]){ 2 }, nda, da, CPU);
  ln_tensor *b = ln_ones((int64_t[]){ 2 }, ndb, db, CPU);
  ln_tensor *c = ln_binary(op, a, b);
  ln_dtype r = c ? ln_tensor_dtype(c) : LN_DTYPE_COUNT;
  ln_tensor_release(a);
  ln_tensor_release(b);
  ln_tensor_release(c);
  return r;
}

static void test_promotion(void) {
  CHECK(result_of(LN_ADD, LN_F32, 1, LN_I64, 1) == LN_F32);
  CHECK(result_of(LN_ADD, LN_I64, 1, LN_I64, 1) == LN_I64);
  CHECK(result_of(LN_DIV, LN_I64, 1, LN_I64, 1) == LN_F32);
  CHECK(result_of(LN_DIV, LN_BOOL, 1, LN_BOOL, 1) == LN_F32);
  CHECK(result_of(LN_ADD, LN_BOOL, 1, LN_BOOL, 1) == LN_BOOL);
  CHECK(result_of(LN_MUL, LN_BOOL, 1, LN_I64, 1) == LN_I64);
  CHECK(result_of(LN_ADD, LN_F16, 1, LN_F32, 1) == LN_F32);
  CHECK(result_of(LN_ADD, LN_F16, 1, LN_BF16, 1) == LN_F32);
  CHECK(result_of(LN_ADD, LN_F64, 1, LN_F32, 1) == LN_F64);
  /* 0-dim tensors only count when of a higher category */
  CHECK(result_of(LN_MUL, LN_F16, 1, LN_F32, 0) == LN_F16);
  CHECK(result_of(LN_MUL, LN_F32, 1, LN_F64, 0) == LN_F32);
  CHECK(result_of(LN_ADD, LN_I64, 1, LN_F64, 0) == LN_F64);
  CHECK(result_of(LN_ADD, LN_BOOL, 1, LN_I64, 0) == LN_I64);
  CHECK(result_of(LN_ADD, LN_F32, 0, LN_F64, 0) == LN_F64);
  CHECK(result_of(LN_SUB, LN_BOOL, 1, LN_BOOL, 1) == LN_DTYPE_COUNT);
  CHECK_MSG("Subtraction, the `-` operator, with two bool tensors is not supported");

  /* scalars follow PyTorch's rules for Python numbers */
  ln_tensor *h = ln_ones((int64_t[]){ 3 }, 1, LN_F16, CPU);
  ln_tensor *i = ln_ones((int64_t[]){ 3 }, 1, LN_I64, CPU);
  ln_tensor *s1 = ln_scalar_like(h, 2.5, false), *s2 = ln_scalar_like(i, 2, true);
  ln_tensor *s3 = ln_scalar_like(i, 2.5, false);
  CHECK(ln_tensor_dtype(s1) == LN_F16 && ln_tensor_dim(s1) == 0);
  CHECK(ln_tensor_dtype(s2) == LN_I64 && ln_tensor_dtype(s3) == LN_F32);
  ln_tensor *r1 = ln_mul(h, s1), *r2 = ln_add(i, s2), *r3 = ln_mul(i, s3);
  CHECK(ln_tensor_dtype(r1) == LN_F16 && ln_tensor_dtype(r2) == LN_I64 &&
        ln_tensor_dtype(r3) == LN_F32);
  CHECK_NEAR(ln_tensor_get(r3, (int64_t[]){ 1 }), 2.5, 0);
  CHECK_NEAR(ln_tensor_get(r2, (int64_t[]){ 1 }), 3, 0);
  /* an integral axpy takes an integral alpha (wrapping); any other is refused */
  ln_tensor *ax = ln_add_scaled(i, s2, -3);   /* 1 - 3 * 2 */
  CHECK(ax && ln_tensor_dtype(ax) == LN_I64 && ln_tensor_get(ax, (int64_t[]){ 0 }) == -5);
  ln_tensor_release(ax);
  CHECK(ln_add_scaled(i, s2, 1e300) == NULL);
  CHECK_MSG("For integral input tensors, argument alpha must not be a floating point number.");
  CHECK(ln_add_scaled(i, s2, 0.5) == NULL);
  /* a number past the dtype's range is cast (inf), not refused as a fill */
  ln_tensor *s4 = ln_scalar_like(h, 1e300, false);
  CHECK(s4 && isinf(ln_tensor_get(s4, NULL)));
  ln_tensor_release(s4);

  /* unary result dtypes */
  ln_tensor *u1 = ln_unary(LN_SQRT, i), *u2 = ln_neg(i), *u3 = ln_unary(LN_EXP, h);
  CHECK(ln_tensor_dtype(u1) == LN_F32 && ln_tensor_dtype(u2) == LN_I64 &&
        ln_tensor_dtype(u3) == LN_F16);
  ln_tensor *bo = ln_ones((int64_t[]){ 3 }, 1, LN_BOOL, CPU);
  CHECK(ln_neg(bo) == NULL);
  CHECK_MSG("Negation, the `-` operator, on a bool tensor is not supported");
  ln_tensor *c = ln_compare(LN_LT, i, s3);
  CHECK(c && ln_tensor_dtype(c) == LN_BOOL && ln_tensor_get(c, (int64_t[]){ 0 }) == 1);
  ln_tensor *tr[] = { h, i, s1, s2, s3, r1, r2, r3, u1, u2, u3, bo, c };
  for (int k = 0; k < 13; k++) ln_tensor_release(tr[k]);
}

typedef struct bin_case { ln_binary_op op; ref2_fn ref; double lo, hi, blo, bhi; } bin_case;

static void test_binary_layouts(void) {
  static const bin_case cases[] = {
    { LN_ADD, r_add, -3, 3, -3, 3 }, { LN_SUB, r_sub, -3, 3, -3, 3 },
    { LN_MUL, r_mul, -3, 3, -3, 3 }, { LN_DIV, r_div, -3, 3, 0.5, 3 },
    { LN_POW, r_pow, 0.5, 2, -2, 2 }, { LN_MAXIMUM, r_max, -3, 3, -3, 3 },
    { LN_MINIMUM, r_min, -3, 3, -3, 3 },
  };
  static const ln_dtype dts[] = { LN_F32, LN_F64, LN_I64, LN_F16 };
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
    for (size_t t = 0; t < sizeof dts / sizeof dts[0]; t++) {
      const bin_case *k = &cases[c];
      ln_dtype dt = dts[t];
      if (dt == LN_I64 && k->op == LN_POW) continue;  /* below: non-negative exponents */
      double tol = dt == LN_F16 ? 2e-3 : dt == LN_F32 ? 2e-6 : 1e-12;
      for (int la = 0; la < L_COUNT; la++)
        for (int lb = 0; lb < L_COUNT; lb++) {
          ln_tensor *a = layout(la, dt, k->lo, k->hi), *b = layout(lb, dt, k->blo, k->bhi);
          ln_tensor *out = ln_binary(k->op, a, b);
          CHECK(out != NULL);
          if (out) expect_elementwise(out, a, b, k->ref, tol);
          ln_tensor_release(out);
          ln_tensor_release(a);
          ln_tensor_release(b);
        }
    }
  /* int64 pow and int64 / int64 */
  ln_tensor *a = layout(L_PERMUTED, LN_I64, -4, 5), *b = layout(L_NARROWED, LN_I64, 0, 4);
  ln_tensor *p = ln_pow(a, b), *q = ln_div(a, b);
  expect_elementwise(p, a, b, r_pow, 0);
  expect_elementwise(q, a, b, r_div, 1e-6);
  ln_tensor *tr[] = { a, b, p, q };
  for (int i = 0; i < 4; i++) ln_tensor_release(tr[i]);
}

static void test_unary_and_compare(void) {
  static const struct { ln_unary_op op; ref2_fn ref; double lo, hi; } ucases[] = {
    { LN_NEG, r_neg, -3, 3 }, { LN_ABS, r_abs, -3, 3 }, { LN_SQRT, r_sqrt, 0.1, 4 },
    { LN_EXP, r_exp, -3, 3 }, { LN_LOG, r_log, 0.1, 4 }, { LN_RELU, r_relu, -3, 3 },
    { LN_SIGN, r_sign, -3, 3 },
  };
  static const ln_dtype dts[] = { LN_F32, LN_F64, LN_I64, LN_BF16 };
  for (size_t c = 0; c < sizeof ucases / sizeof ucases[0]; c++)
    for (size_t t = 0; t < sizeof dts / sizeof dts[0]; t++)
      for (int l = 0; l < L_COUNT; l++) {
        double tol = dts[t] == LN_BF16 ? 1e-2 : dts[t] == LN_F64 ? 1e-12 : 2e-6;
        ln_tensor *a = layout(l, dts[t], ucases[c].lo, ucases[c].hi);
        ln_tensor *out = ln_unary(ucases[c].op, a);
        CHECK(out != NULL);
        if (out) expect_elementwise(out, a, NULL, ucases[c].ref, tol);
        ln_tensor_release(out);
        ln_tensor_release(a);
      }
  static const struct { ln_compare_op op; ref2_fn ref; } ccases[] = {
    { LN_EQ, r_eq }, { LN_LT, r_lt }, { LN_GE, r_ge },
  };
  for (size_t c = 0; c < 3; c++)
    for (int la = 0; la < L_COUNT; la++) {
      ln_tensor *a = layout(la, LN_I64, -2, 2), *b = layout(L_PERMUTED, LN_F32, -2, 2);
      ln_tensor *out = ln_compare(ccases[c].op, a, b);
      CHECK(out && ln_tensor_dtype(out) == LN_BOOL && !ln_tensor_requires_grad(out));
      if (out) expect_elementwise(out, a, b, ccases[c].ref, 0);
      ln_tensor_release(out);
      ln_tensor_release(a);
      ln_tensor_release(b);
    }
  /* NaN propagates through maximum and relu */
  ln_tensor *n = ln_scalar(NAN, LN_F32), *one = ln_scalar(1, LN_F32);
  ln_tensor *m = ln_binary(LN_MAXIMUM, one, n), *r = ln_unary(LN_RELU, n);
  CHECK(isnan(ln_tensor_get(m, NULL)) && isnan(ln_tensor_get(r, NULL)));
  ln_tensor *tr[] = { n, one, m, r };
  for (int i = 0; i < 4; i++) ln_tensor_release(tr[i]);
}

static void test_channels_last_and_large(void) {
  int64_t nchw[4] = { 2, 3, 4, 5 };
  ln_tensor *a = ln_empty_format(nchw, 4, LN_F32, CPU, LN_CHANNELS_LAST);
  ln_tensor *b = ln_empty_format(nchw, 4, LN_F32, CPU, LN_CHANNELS_LAST);
  ln_tensor *c = ln_empty(nchw, 4, LN_F32, CPU);
  ln_tensor *w = rand_tensor((int64_t[]){ 3, 1, 1 }, 3, LN_F32, -1, 1);
  fill_rand(a, -1, 1);
  fill_rand(b, -1, 1);
  fill_rand(c, -1, 1);
  ln_tensor *ab = ln_mul(a, b), *aw = ln_add(a, w), *ac = ln_sub(a, c), *ua = ln_unary(LN_EXP, a);
  CHECK(ln_tensor_suggest_format(ab) == LN_CHANNELS_LAST);
  CHECK(ln_tensor_suggest_format(aw) == LN_CHANNELS_LAST);
  CHECK(ln_tensor_suggest_format(ua) == LN_CHANNELS_LAST);
  CHECK(ln_tensor_is_contiguous(ac, LN_CONTIGUOUS));
  expect_elementwise(ab, a, b, r_mul, 1e-6);
  expect_elementwise(aw, a, w, r_add, 1e-6);
  expect_elementwise(ac, a, c, r_sub, 1e-6);
  expect_elementwise(ua, a, NULL, r_exp, 1e-6);
  ln_tensor *tr[] = { a, b, c, w, ab, aw, ac, ua };
  for (int i = 0; i < 8; i++) ln_tensor_release(tr[i]);

  /* large enough for the threaded path: transposed + broadcast row */
  ln_tensor *big = rand_tensor((int64_t[]){ 301, 257 }, 2, LN_F64, -1, 1);
  ln_tensor *bt = ln_transpose(big, 0, 1);
  ln_tensor *row = rand_tensor((int64_t[]){ 301 }, 1, LN_F32, -1, 1);
  ln_tensor *r = ln_add_scaled(bt, row, -0.5);
  CHECK(r && ln_tensor_dtype(r) == LN_F64);
  int64_t idx[2] = { 0, 0 };
  int bad = 0;
  do {
    double want = ln_tensor_get(bt, idx) - 0.5 * ln_tensor_get(row, idx + 1);
    bad += !close_to(ln_tensor_get(r, idx), want, 1e-12, 1e-12);
  } while (next_index(idx, ln_tensor_sizes(r), 2));
  CHECK(bad == 0);
  /* NCHW <-> NHWC conversions walk in tiles (ragged at the edges) */
  ln_tensor *x4 = rand_tensor((int64_t[]){ 3, 40, 7, 11 }, 4, LN_F32, -1, 1);
  ln_tensor *xcl = ln_contiguous(x4, LN_CHANNELS_LAST);
  ln_tensor *xback = ln_contiguous(xcl, LN_CONTIGUOUS);
  CHECK(ln_tensor_is_contiguous(xcl, LN_CHANNELS_LAST) && ln_tensor_is_contiguous(xback, LN_CONTIGUOUS));
  expect_elementwise(xcl, x4, NULL, r_id, 0);
  expect_elementwise(xback, x4, NULL, r_id, 0);
  ln_tensor *tr2[] = { big, bt, row, r, x4, xcl, xback };
  for (int i = 0; i < 7; i++) ln_tensor_release(tr2[i]);
}

static void test_inplace(void) {
  ln_tensor *a = rand_tensor((int64_t[]){ 3, 4 }, 2, LN_F32, -1, 1);
  ln_tensor *ref = ln_clone(a, LN_CONTIGUOUS);
  ln_tensor *b = rand_tensor((int64_t[]){ 4 }, 1, LN_F64, -1, 1);
  CHECK_OK(ln_binary_(LN_MUL, a, b));
  expect_elementwise(a, ref, b, r_mul, 1e-6);
  CHECK(ln_tensor_dtype(a) == LN_F32);

  /* b = a^T into a: reads must happen before writes */
  ln_tensor *sq = rand_tensor((int64_t[]){ 4, 4 }, 2, LN_F64, -1, 1);
  ln_tensor *sq0 = ln_clone(sq, LN_CONTIGUOUS), *sqt = ln_transpose(sq, 0, 1);
  ln_tensor *sq0t = ln_transpose(sq0, 0, 1);
  CHECK_OK(ln_binary_(LN_ADD, sq, sqt));
  expect_elementwise(sq, sq0, sq0t, r_add, 1e-12);

  ln_tensor *i = ln_ones((int64_t[]){ 4 }, 1, LN_I64, CPU);
  CHECK(ln_binary_(LN_ADD, i, b) == LN_EINVAL);
  CHECK_MSG("result type Double can't be cast to the desired output type Long");
  CHECK(ln_binary_(LN_DIV, i, i) == LN_EINVAL);
  CHECK_MSG("result type Float can't be cast to the desired output type Long");
  CHECK(ln_binary_(LN_ADD, b, a) == LN_EINVAL);
  CHECK_MSG("output with shape [4] doesn't match the broadcast shape [3, 4]");
  ln_tensor *e = ln_expand(b, (int64_t[]){ 3, 4 }, 2);
  CHECK(ln_binary_(LN_ADD, e, a) == LN_EINVAL);
  CHECK_MSG("more than one element of the written-to tensor refers to a single memory");

  CHECK_OK(ln_tensor_set_requires_grad(b, true));
  CHECK(ln_binary_(LN_ADD, b, b) == LN_ERUNTIME);
  CHECK_MSG("a leaf Variable that requires grad is being used in an in-place operation.");
  CHECK(ln_fill_(b, 1) == LN_ERUNTIME && ln_zero_(b) == LN_ERUNTIME);
  CHECK(ln_copy_(b, b) == LN_ERUNTIME);
  bool prev = ln_set_grad_enabled(false);
  CHECK_OK(ln_fill_(b, 2));  /* allowed under no_grad */
  ln_set_grad_enabled(prev);
  CHECK_NEAR(ln_tensor_get(b, (int64_t[]){ 3 }), 2, 0);
  ln_tensor *tr[] = { a, ref, b, sq, sq0, sqt, sq0t, i, e };
  for (int k = 0; k < 9; k++) ln_tensor_release(tr[k]);
}

/* ---- copies and conversions ---- */

static void test_copies(void) {
  /* float16 / bfloat16 rounding (to nearest even), overflow, subnormals */
  static const double in[] = { 1.0 / 3, 65520, 1e-8, 1.00390625, -2.5e-6, 3.0 };
  static const double half[] = { 0.333251953125, INFINITY, 0, 1.00390625, -2.5033950805664062e-06,
                                 3 };
  static const double bf16[] = { 0.333984375, 65536, 1.0011717677116394e-08, 1.0,
                                 -2.5033950805664062e-06, 3 };
  ln_tensor *d = ln_empty((int64_t[]){ 6 }, 1, LN_F64, CPU);
  for (int i = 0; i < 6; i++) ((double *)ln_tensor_data(d))[i] = in[i];
  ln_tensor *h = ln_to_dtype(d, LN_F16), *b = ln_to_dtype(d, LN_BF16);
  for (int i = 0; i < 6; i++) {
    CHECK(close_to(ln_tensor_get(h, (int64_t[]){ i }), half[i], 0, 0));
    CHECK(close_to(ln_tensor_get(b, (int64_t[]){ i }), bf16[i], 0, 0));
  }
  ln_tensor *hi = ln_to_dtype(h, LN_I64), *hb = ln_to_dtype(h, LN_BOOL);
  CHECK(ln_tensor_get(hi, (int64_t[]){ 5 }) == 3 && ln_tensor_get(hb, (int64_t[]){ 2 }) == 0 &&
        ln_tensor_get(hb, (int64_t[]){ 0 }) == 1);

  /* same dtype / already contiguous / same device: the tensor itself */
  ln_tensor *same = ln_to_dtype(d, LN_F64), *cont = ln_contiguous(d, LN_CONTIGUOUS);
  ln_tensor *dev = ln_to_device(d, CPU);
  CHECK(same == d && cont == d && dev == d && ln_tensor_refcount(d) == 4);
  ln_tensor *cl = ln_clone(d, LN_CONTIGUOUS);
  CHECK(cl != d && ln_tensor_storage(cl) != ln_tensor_storage(d));
  CHECK(ln_to_device(d, (ln_device){ LN_CUDA, 0 }) == NULL);

  /* copy_ broadcasts and converts; contiguous("channels_last") */
  ln_tensor *dst = ln_zeros((int64_t[]){ 2, 3, 2, 2 }, 4, LN_F16, CPU);
  ln_tensor *src = rand_tensor((int64_t[]){ 3, 1, 2 }, 3, LN_F32, -1, 1);
  CHECK_OK(ln_copy_(dst, src));
  expect_elementwise(dst, src, NULL, r_id, 1e-3);
  ln_tensor *ncl = ln_contiguous(dst, LN_CHANNELS_LAST);
  CHECK(ncl && ln_tensor_is_contiguous(ncl, LN_CHANNELS_LAST) && ncl != dst);
  expect_elementwise(ncl, dst, NULL, r_id, 0);
  ln_tensor *back = ln_contiguous(ncl, LN_CHANNELS_LAST);
  CHECK(back == ncl);
  ln_tensor *pres = ln_clone(ncl, LN_PRESERVE);
  CHECK(ln_tensor_is_contiguous(pres, LN_CHANNELS_LAST));
  ln_tensor *m23 = ln_zeros((int64_t[]){ 2, 3 }, 2, LN_F32, CPU);
  ln_tensor *m24 = ln_zeros((int64_t[]){ 2, 4 }, 2, LN_F32, CPU);
  CHECK(ln_copy_(m23, m24) == LN_EINVAL);
  CHECK_MSG("The expanded size of the tensor (3) must match the existing size (4) at "
            "non-singleton dimension 1.  Target sizes: [2, 3].  Tensor sizes: [2, 4]");

  /* copy_ from an overlapping view: a square matrix into its transpose */
  ln_tensor *sq = rand_tensor((int64_t[]){ 5, 5 }, 2, LN_F32, -1, 1);
  ln_tensor *sq0 = ln_clone(sq, LN_CONTIGUOUS), *sqt = ln_transpose(sq, 0, 1);
  ln_tensor *sq0t = ln_transpose(sq0, 0, 1);
  CHECK_OK(ln_copy_(sq, sqt));
  expect_elementwise(sq, sq0t, NULL, r_id, 0);

  /* fill_ and zero_ on a non-contiguous view only touch the view */
  ln_tensor *f = ln_zeros((int64_t[]){ 4, 6 }, 2, LN_I64, CPU);
  ln_tensor *fv = ln_narrow(f, 1, 2, 3);
  CHECK_OK(ln_fill_(fv, 7));
  CHECK(ln_tensor_get(f, (int64_t[]){ 3, 4 }) == 7 && ln_tensor_get(f, (int64_t[]){ 3, 5 }) == 0 &&
        ln_tensor_get(f, (int64_t[]){ 0, 1 }) == 0);
  CHECK_OK(ln_zero_(f));
  CHECK(ln_tensor_get(f, (int64_t[]){ 3, 4 }) == 0);

  /* empty tensors */
  ln_tensor *e = ln_empty((int64_t[]){ 0, 3 }, 2, LN_F32, CPU);
  ln_tensor *e2 = ln_to_dtype(e, LN_F16), *e3 = ln_clone(e, LN_CONTIGUOUS);
  CHECK(e2 && e3 && ln_tensor_numel(e2) == 0 && ln_fill_(e, 1) == LN_OK);
  ln_tensor *tr[] = { d, h, b, hi, hb, same, cont, dev, cl, dst, src, ncl, back, pres, m23, m24,
                      sq, sq0, sqt, sq0t, f, fv, e, e2, e3 };
  for (size_t i = 0; i < sizeof tr / sizeof tr[0]; i++) ln_tensor_release(tr[i]);
}

/* ---- reductions ---- */

typedef enum { N_SUM, N_MEAN, N_VAR0, N_VAR1, N_MAX, N_MIN } naive_kind;

/* Naive reduction of t over the dims in mask, as doubles, at output
** index oi (keepdim layout: reduced dims at 0). */
static double naive_reduce(ln_tensor *t, unsigned mask, naive_kind k, const int64_t *oi) {
  int nd = ln_tensor_dim(t);
  const int64_t *sizes = ln_tensor_sizes(t);
  int64_t idx[LN_MAX_DIMS];
  memcpy(idx, oi, sizeof(int64_t) * (size_t)nd);
  double sum = 0, sq = 0, best = k == N_MAX ? -INFINITY : INFINITY;
  int64_t count = 0;
  for (int pass = 0; pass < 2; pass++) {
    double mean = count ? sum / (double)count : 0;
    for (int d = 0; d < nd; d++) if (mask >> d & 1) idx[d] = 0;
    bool go = true;
    for (int d = 0; d < nd; d++) if ((mask >> d & 1) && sizes[d] == 0) go = false;
    while (go) {
      double v = ln_tensor_get(t, idx);
      if (pass == 0) {
        sum += v;
        count++;
        if (k == N_MAX ? v > best : v < best) best = v;
      } else {
        sq += (v - mean) * (v - mean);
      }
      int d = nd - 1;
      for (; d >= 0; d--) {
        if (!(mask >> d & 1)) continue;
        if (++idx[d] < sizes[d]) break;
        idx[d] = 0;
      }
      go = d >= 0;
    }
    if (k != N_VAR0 && k != N_VAR1) break;
  }
  switch (k) {
  case N_SUM: return sum;
  case N_MEAN: return sum / (double)count;
  case N_VAR0: return sq / (double)count;
  case N_VAR1: return sq / (double)(count - 1);
  default: return best;
  }
}

static ln_tensor *run_reduce(naive_kind k, ln_tensor *t, const int *dims, int n, bool keep) {
  switch (k) {
  case N_SUM: return ln_sum(t, dims, n, keep);
  case N_MEAN: return ln_mean(t, dims, n, keep);
  case N_VAR0: return ln_var(t, dims, n, 0, keep);
  case N_VAR1: return ln_var(t, dims, n, 1, keep);
  case N_MAX: return ln_max(t, dims, n, keep);
  default: return ln_min(t, dims, n, keep);
  }
}

/* Check every reduction kind of t over dims against the naive loop. */
static void expect_reductions(ln_tensor *t, const int *dims, int n, double rtol) {
  int nd = ln_tensor_dim(t);
  unsigned mask = 0;
  for (int i = 0; i < n; i++) mask |= 1u << (dims[i] < 0 ? dims[i] + nd : dims[i]);
  if (n == 0) mask = (1u << nd) - 1;
  for (int k = N_SUM; k <= N_MIN; k++)
    for (int keep = 0; keep < 2; keep++) {
      ln_tensor *r = run_reduce(k, t, dims, n, keep);
      CHECK(r != NULL);
      if (!r) continue;
      int64_t osz[LN_MAX_DIMS], oi[LN_MAX_DIMS] = { 0 }, ri[LN_MAX_DIMS];
      for (int d = 0; d < nd; d++) osz[d] = (mask >> d & 1) ? 1 : ln_tensor_size(t, d);
      CHECK(ln_tensor_dim(r) == (keep ? nd : nd - __builtin_popcount(mask)));
      int bad = 0;
      if (numel_of(osz, nd) > 0) do {
        int m = 0;
        for (int d = 0; d < nd; d++)
          if (keep || !(mask >> d & 1)) ri[m++] = oi[d];
        double want = naive_reduce(t, mask, (naive_kind)k, oi), got = ln_tensor_get(r, ri);
        if (!close_to(got, want, rtol, 1e-9) && bad++ < 3)
          fprintf(stderr, "  reduction %d keep %d: got %.9g want %.9g\n", k, keep, got, want);
      } while (next_index(oi, osz, nd));
      CHECK(bad == 0);
      ln_tensor_release(r);
    }
}

static void test_reductions(void) {
  ln_tensor *base = rand_tensor((int64_t[]){ 4, 3, 5, 2 }, 4, LN_F32, -2, 2);
  ln_tensor *perm = ln_permute(base, (int[]){ 2, 0, 3, 1 }, 4);  /* [5, 4, 2, 3] */
  ln_tensor *cl = ln_contiguous(base, LN_CHANNELS_LAST);
  ln_tensor *nar = ln_narrow(base, 2, 1, 3);
  ln_tensor *f64 = rand_tensor((int64_t[]){ 6, 7 }, 2, LN_F64, -2, 2);
  ln_tensor *h = ln_to_dtype(perm, LN_F16);
  ln_tensor *ts[] = { base, perm, cl, nar, h };
  static const int d1[] = { 1 }, d2[] = { 0, 2 }, d3[] = { -1, 1, 0 };
  for (int i = 0; i < 5; i++) {
    double tol = i == 4 ? 2e-3 : 2e-6;
    expect_reductions(ts[i], d1, 1, tol);
    expect_reductions(ts[i], d2, 2, tol);
    expect_reductions(ts[i], d3, 3, tol);
    expect_reductions(ts[i], NULL, 0, tol);
  }
  expect_reductions(f64, (int[]){ 0 }, 1, 1e-12);
  expect_reductions(f64, NULL, 0, 1e-12);

  /* threaded paths: few outputs (private accumulators), many outputs
  ** (split along a kept dim), all dims; inner and outer reduced dims */
  ln_tensor *big = rand_tensor((int64_t[]){ 2000, 40 }, 2, LN_F32, -1, 1);
  ln_tensor *bigt = ln_transpose(big, 0, 1);
  ln_tensor *wide = rand_tensor((int64_t[]){ 3, 20000 }, 2, LN_F64, -1, 1);
  expect_reductions(big, (int[]){ 0 }, 1, 1e-5);
  expect_reductions(bigt, (int[]){ 1 }, 1, 1e-5);
  expect_reductions(big, (int[]){ 1 }, 1, 1e-5);
  expect_reductions(wide, (int[]){ 0 }, 1, 1e-12);
  expect_reductions(wide, NULL, 0, 1e-12);
  ln_tensor *tr[] = { base, perm, cl, nar, f64, h, big, bigt, wide };
  for (int i = 0; i < 9; i++) ln_tensor_release(tr[i]);
}

static void test_reduction_rules(void) {
  /* accurate float32 sums of many elements */
  int64_t n = 1000000;
  ln_tensor *x = ln_full(&n, 1, 0.1, LN_F32, CPU);
  ln_tensor *s = ln_sum(x, NULL, 0, false), *m = ln_mean(x, NULL, 0, false);
  CHECK_NEAR(ln_tensor_get(s, NULL), (double)0.1f * 1e6, 1e-2);
  CHECK_NEAR(ln_tensor_get(m, NULL), (double)0.1f, 1e-8);
  ln_tensor *v = ln_var(x, NULL, 0, 1, false);
  CHECK_NEAR(ln_tensor_get(v, NULL), 0, 1e-12);
  ln_tensor *tr[] = { x, s, m, v };
  for (int i = 0; i < 4; i++) ln_tensor_release(tr[i]);

  /* dtypes */
  ln_tensor *i = ln_arange(0, 6, 1, LN_I64), *b = ln_ones((int64_t[]){ 5 }, 1, LN_BOOL, CPU);
  ln_tensor *si = ln_sum(i, NULL, 0, false), *sb = ln_sum(b, NULL, 0, false);
  CHECK(ln_tensor_dtype(si) == LN_I64 && ln_tensor_get(si, NULL) == 15);
  CHECK(ln_tensor_dtype(sb) == LN_I64 && ln_tensor_get(sb, NULL) == 5);
  ln_tensor *mi = ln_max(i, NULL, 0, false), *mb = ln_min(b, NULL, 0, false);
  CHECK(ln_tensor_dtype(mi) == LN_I64 && ln_tensor_get(mi, NULL) == 5);
  CHECK(ln_tensor_dtype(mb) == LN_BOOL && ln_tensor_get(mb, NULL) == 1);
  CHECK(ln_mean(i, NULL, 0, false) == NULL);
  CHECK_MSG("mean(): could not infer output dtype. Input dtype must be either a floating point "
            "or complex dtype. Got: Long");
  CHECK(ln_var(i, NULL, 0, 1, false) == NULL);
  CHECK(ln_sum(i, (int[]){ 0, -1 }, 2, false) == NULL);
  CHECK_MSG("dim 0 appears multiple times in the list of dims");
  CHECK(ln_sum(i, (int[]){ 1 }, 1, false) == NULL);
  CHECK_MSG("Dimension out of range");

  /* int64 sums wrap around as PyTorch's (two's complement), in the serial
  ** kernel, the threaded one (each thread's part overflows) and the
  ** per-thread combine: 2^20 * INT64_MAX = -2^20 modulo 2^64 */
  int64_t nbig = 1 << 20;
  ln_tensor *big = ln_empty(&nbig, 1, LN_I64, CPU);
  CHECK_OK(ln_fill_int_(big, INT64_MAX));
  ln_tensor *two = ln_narrow(big, 0, 0, 2), *sbig = ln_sum(big, NULL, 0, false);
  ln_tensor *stwo = ln_sum(two, NULL, 0, false);
  CHECK(sbig && *(const int64_t *)ln_tensor_data(sbig) == -(1 << 20));
  CHECK(stwo && *(const int64_t *)ln_tensor_data(stwo) == -2);
  ln_tensor *wrap[] = { big, two, sbig, stwo };
  for (int k = 0; k < 4; k++) ln_tensor_release(wrap[k]);

  /* correction leaving no degrees of freedom, empty inputs */
  ln_tensor *one = ln_ones((int64_t[]){ 1, 3 }, 2, LN_F32, CPU);
  ln_tensor *v1 = ln_var(one, (int[]){ 0 }, 1, 1, false);
  CHECK(isnan(ln_tensor_get(v1, (int64_t[]){ 0 })));
  ln_tensor *e = ln_zeros((int64_t[]){ 0, 3 }, 2, LN_F32, CPU);
  ln_tensor *se = ln_sum(e, (int[]){ 0 }, 1, false), *me = ln_mean(e, NULL, 0, false);
  ln_tensor *se1 = ln_sum(e, (int[]){ 1 }, 1, true);
  CHECK(se && ln_tensor_size(se, 0) == 3 && ln_tensor_get(se, (int64_t[]){ 2 }) == 0);
  CHECK(me && isnan(ln_tensor_get(me, NULL)));
  CHECK(se1 && ln_tensor_numel(se1) == 0 && ln_tensor_size(se1, 1) == 1);
  CHECK(ln_max(e, NULL, 0, false) == NULL);
  CHECK_MSG("max(): Expected reduction dim to be specified for input.numel() == 0.");
  CHECK(ln_min(e, (int[]){ 0 }, 1, false) == NULL);
  CHECK_MSG("min(): Expected reduction dim 0 to have non-zero size.");
  ln_tensor *me1 = ln_max(e, (int[]){ 1 }, 1, false);
  CHECK(me1 && ln_tensor_numel(me1) == 0);

  /* argmax: first maximum, NaN wins, non-contiguous */
  ln_tensor *a = rand_tensor((int64_t[]){ 4, 6 }, 2, LN_F32, -1, 1);
  ln_tensor *at = ln_transpose(a, 0, 1);
  ln_tensor *am = ln_argmax(at, 1, false), *amk = ln_argmax(at, 0, true);
  CHECK(am && ln_tensor_dtype(am) == LN_I64 && ln_tensor_dim(am) == 1 && ln_tensor_size(am, 0) == 6);
  CHECK(amk && ln_tensor_dim(amk) == 2 && ln_tensor_size(amk, 0) == 1);
  int bad = 0;
  for (int64_t r = 0; r < 6; r++) {
    int64_t best = 0;
    for (int64_t c = 1; c < 4; c++)
      if (ln_tensor_get(at, (int64_t[]){ r, c }) > ln_tensor_get(at, (int64_t[]){ r, best })) best = c;
    bad += ln_tensor_get(am, (int64_t[]){ r }) != best;
  }
  CHECK(bad == 0);
  ln_tensor *tie = ln_zeros((int64_t[]){ 5 }, 1, LN_F64, CPU);
  ((double *)ln_tensor_data(tie))[3] = NAN;
  ln_tensor *at0 = ln_argmax(tie, 0, false);
  CHECK(ln_tensor_get(at0, NULL) == 3);
  CHECK(ln_argmax(e, 0, false) == NULL);
  CHECK_MSG("argmax(): Expected reduction dim 0 to have non-zero size.");
  ln_tensor *tr2[] = { i, b, si, sb, mi, mb, one, v1, e, se, me, se1, me1, a, at, am, amk,
                       tie, at0 };
  for (size_t k = 0; k < sizeof tr2 / sizeof tr2[0]; k++) ln_tensor_release(tr2[k]);
}

/* ---- matmul ---- */

/* c = a @ b by the definition, for 1D/2D/batched a and b (broadcast). */
static void expect_matmul(ln_tensor *c, ln_tensor *a, ln_tensor *b, double tol) {
  int na = ln_tensor_dim(a), nb = ln_tensor_dim(b), nc = ln_tensor_dim(c);
  int64_t k = ln_tensor_size(a, na - 1);
  int64_t idx[LN_MAX_DIMS] = { 0 };
  int bad = 0;
  if (ln_tensor_numel(c) > 0) do {
    /* split c's index into batch, row, col */
    int64_t row = 0, col = 0;
    int nbatch = nc - (na > 1) - (nb > 1);
    if (na > 1) row = idx[nbatch];
    if (nb > 1) col = idx[nc - 1];
    double want = 0;
    for (int64_t j = 0; j < k; j++) {
      int64_t ia[LN_MAX_DIMS], ib[LN_MAX_DIMS];
      for (int d = 0; d < na - 2; d++) {
        int64_t i = idx[nbatch - (na - 2) + d];
        ia[d] = ln_tensor_size(a, d) == 1 ? 0 : i;
      }
      for (int d = 0; d < nb - 2; d++) {
        int64_t i = idx[nbatch - (nb - 2) + d];
        ib[d] = ln_tensor_size(b, d) == 1 ? 0 : i;
      }
      if (na == 1) ia[0] = j; else { ia[na - 2] = row; ia[na - 1] = j; }
      if (nb == 1) ib[0] = j; else { ib[nb - 2] = j; ib[nb - 1] = col; }
      want += ln_tensor_get(a, ia) * ln_tensor_get(b, ib);
    }
    if (!close_to(ln_tensor_get(c, idx), want, tol, tol) && bad++ < 3)
      fprintf(stderr, "  matmul: got %.9g want %.9g\n", ln_tensor_get(c, idx), want);
  } while (next_index(idx, ln_tensor_sizes(c), nc));
  CHECK(bad == 0);
}

static void check_mm(const int64_t *sa, int na, const int64_t *sb, int nb, ln_dtype dt,
                     bool ta, bool tb, const int64_t *sc, int nc) {
  double tol = dt == LN_F64 ? 1e-12 : dt == LN_F32 ? 1e-5 : dt == LN_I64 ? 0 : 2e-2;
  ln_tensor *a = rand_tensor(sa, na, dt, -2, 2), *b = rand_tensor(sb, nb, dt, -2, 2);
  ln_tensor *av = ta ? ln_transpose(a, na - 2, na - 1) : a;
  ln_tensor *bv = tb ? ln_transpose(b, nb - 2, nb - 1) : b;
  ln_tensor *c = ln_matmul(av, bv);
  CHECK(c && ln_tensor_dim(c) == nc && ln_tensor_dtype(c) == dt);
  if (!c) fprintf(stderr, "  matmul %s: %s\n", ln_dtype_name(dt), ln_last_error());
  if (c) {
    for (int d = 0; d < nc; d++) CHECK(ln_tensor_size(c, d) == sc[d]);
    expect_matmul(c, av, bv, tol);
  }
  if (ta) ln_tensor_release(av);
  if (tb) ln_tensor_release(bv);
  ln_tensor_release(a);
  ln_tensor_release(b);
  ln_tensor_release(c);
}

static void test_matmul(void) {
  static const ln_dtype dts[] = { LN_F32, LN_F64, LN_F16, LN_BF16, LN_I64 };
  for (int t = 0; t < 5; t++) {
    ln_dtype dt = dts[t];
    check_mm((int64_t[]){ 3, 4 }, 2, (int64_t[]){ 4, 5 }, 2, dt, false, false, (int64_t[]){ 3, 5 }, 2);
    check_mm((int64_t[]){ 4, 3 }, 2, (int64_t[]){ 4, 5 }, 2, dt, true, false, (int64_t[]){ 3, 5 }, 2);
    check_mm((int64_t[]){ 3, 4 }, 2, (int64_t[]){ 5, 4 }, 2, dt, false, true, (int64_t[]){ 3, 5 }, 2);
    check_mm((int64_t[]){ 4, 3 }, 2, (int64_t[]){ 5, 4 }, 2, dt, true, true, (int64_t[]){ 3, 5 }, 2);
    check_mm((int64_t[]){ 7 }, 1, (int64_t[]){ 7 }, 1, dt, false, false, NULL, 0);
    check_mm((int64_t[]){ 3, 4 }, 2, (int64_t[]){ 4 }, 1, dt, false, false, (int64_t[]){ 3 }, 1);
    check_mm((int64_t[]){ 4 }, 1, (int64_t[]){ 4, 5 }, 2, dt, false, false, (int64_t[]){ 5 }, 1);
    check_mm((int64_t[]){ 2, 3, 4 }, 3, (int64_t[]){ 2, 5, 4 }, 3, dt, false, true, (int64_t[]){ 2, 3, 5 }, 3);
    check_mm((int64_t[]){ 2, 1, 4, 3 }, 4, (int64_t[]){ 5, 4, 2 }, 3, dt, true, false,
             (int64_t[]){ 2, 5, 3, 2 }, 4);
    check_mm((int64_t[]){ 2, 3, 4 }, 3, (int64_t[]){ 4 }, 1, dt, false, false, (int64_t[]){ 2, 3 }, 2);
  }
  /* a larger one through BLAS threads, and a non-unit-stride operand */
  check_mm((int64_t[]){ 64, 96 }, 2, (int64_t[]){ 80, 96 }, 2, LN_F32, false, true,
           (int64_t[]){ 64, 80 }, 2);
  ln_tensor *a = rand_tensor((int64_t[]){ 3, 8 }, 2, LN_F64, -1, 1);
  ln_tensor *a1 = ln_narrow(a, 1, 0, 1);
  ln_tensor *as = ln_expand(a1, (int64_t[]){ 3, 4 }, 2);  /* stride 0 */
  ln_tensor *b = rand_tensor((int64_t[]){ 4, 2 }, 2, LN_F64, -1, 1);
  ln_tensor *c = ln_matmul(as, b);
  expect_matmul(c, as, b, 1e-12);
  ln_tensor_release(c);
  /* k = 0 gives zeros; m = 0 gives an empty result */
  ln_tensor *z1 = ln_empty((int64_t[]){ 3, 0 }, 2, LN_F32, CPU);
  ln_tensor *z2 = ln_empty((int64_t[]){ 0, 2 }, 2, LN_F32, CPU);
  ln_tensor *z3 = ln_ones((int64_t[]){ 2, 3 }, 2, LN_F32, CPU);
  ln_tensor *zz = ln_matmul(z1, z2), *ze = ln_matmul(z2, z3);
  CHECK(zz && ln_tensor_size(zz, 0) == 3 && ln_tensor_get(zz, (int64_t[]){ 2, 1 }) == 0);
  CHECK(ze && ln_tensor_size(ze, 0) == 0 && ln_tensor_size(ze, 1) == 3);
  /* int64 products and sums wrap around as PyTorch's: INT64_MAX * 2 * 2 = -4 */
  ln_tensor *im = ln_empty((int64_t[]){ 1, 2 }, 2, LN_I64, CPU);
  ln_tensor *i2 = ln_empty((int64_t[]){ 2, 1 }, 2, LN_I64, CPU);
  CHECK_OK(ln_fill_int_(im, INT64_MAX));
  CHECK_OK(ln_fill_int_(i2, 2));
  ln_tensor *ip = ln_matmul(im, i2);
  CHECK(ip && *(const int64_t *)ln_tensor_data(ip) == -4);
  ln_tensor_release(ip);
  ln_tensor_release(i2);
  ln_tensor_release(im);
  CHECK(ln_matmul(z3, a) == NULL);  /* float32 @ float64 */
  CHECK_MSG("expected m1 and m2 to have the same dtype, but got: float32 != float64");
  ln_tensor *x = ln_zeros((int64_t[]){ 2, 3 }, 2, LN_F32, CPU);
  ln_tensor *y = ln_zeros((int64_t[]){ 4, 5 }, 2, LN_F32, CPU);
  CHECK(ln_matmul(x, y) == NULL);
  CHECK_MSG("mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)");
  ln_tensor *s = ln_scalar(1, LN_F32);
  CHECK(ln_matmul(s, x) == NULL);
  CHECK_MSG("both arguments to matmul need to be at least 1D, but they are 0D and 2D");
  ln_tensor *tr[] = { a, a1, as, b, z1, z2, z3, zz, ze, x, y, s };
  for (int i = 0; i < 12; i++) ln_tensor_release(tr[i]);
}

/* ---- cat ---- */

static void test_cat(void) {
  ln_tensor *a = rand_tensor((int64_t[]){ 2, 3, 4 }, 3, LN_F32, -1, 1);
  ln_tensor *bb = rand_tensor((int64_t[]){ 2, 4, 5 }, 3, LN_I64, -5, 5);
  ln_tensor *b = ln_permute(bb, (int[]){ 0, 2, 1 }, 3);  /* [2, 5, 4] */
  ln_tensor *empty1d = ln_empty((int64_t[]){ 0 }, 1, LN_F64, CPU);
  ln_tensor *ts[] = { a, empty1d, b };
  ln_tensor *c = ln_cat(ts, 3, -2);
  CHECK(c && ln_tensor_dtype(c) == LN_F64 && ln_tensor_size(c, 1) == 8);
  int bad = 0;
  int64_t idx[3] = { 0, 0, 0 };
  if (c) do {
    int64_t src[3] = { idx[0], idx[1], idx[2] };
    ln_tensor *from = a;
    if (idx[1] >= 3) { src[1] -= 3; from = b; }
    bad += ln_tensor_get(c, idx) != (double)(float)ln_tensor_get(from, src);
  } while (next_index(idx, ln_tensor_sizes(c), 3));
  CHECK(bad == 0);

  ln_tensor *x = ln_zeros((int64_t[]){ 2, 3 }, 2, LN_F32, CPU);
  ln_tensor *y = ln_zeros((int64_t[]){ 3, 3 }, 2, LN_F32, CPU);
  ln_tensor *xy[] = { x, y };
  CHECK(ln_cat(xy, 2, 1) == NULL);
  CHECK_MSG("Sizes of tensors must match except in dimension 1. Expected size 2 but got size 3 "
            "for tensor number 1 in the list.");
  ln_tensor *xa[] = { x, a };
  CHECK(ln_cat(xa, 2, 0) == NULL);
  CHECK_MSG("Tensors must have same number of dimensions: got 2 and 3");
  CHECK(ln_cat(xy, 0, 0) == NULL);
  CHECK_MSG("expected a non-empty list of Tensors");
  ln_tensor *s = ln_scalar(1, LN_F32), *xs[] = { x, s };
  CHECK(ln_cat(xs, 2, 0) == NULL);
  CHECK_MSG("zero-dimensional tensor (at position 1) cannot be concatenated");
  CHECK(ln_cat(xy, 2, 2) == NULL);
  CHECK_MSG("Dimension out of range");
  ln_tensor *xy0 = ln_cat(xy, 2, 0);
  CHECK(xy0 && ln_tensor_size(xy0, 0) == 5);
  ln_tensor *x0 = ln_empty((int64_t[]){ 0, 3 }, 2, LN_F32, CPU), *x0y[] = { x0, y, x0 };
  ln_tensor *c0 = ln_cat(x0y, 3, 0);
  CHECK(c0 && ln_tensor_size(c0, 0) == 3 && ln_tensor_size(c0, 1) == 3);
  ln_tensor_release(x0);
  ln_tensor_release(c0);

  /* channels-last inputs give a channels-last result */
  ln_tensor *p = ln_empty_format((int64_t[]){ 2, 3, 2, 2 }, 4, LN_F32, CPU, LN_CHANNELS_LAST);
  ln_tensor *q = ln_empty_format((int64_t[]){ 2, 5, 2, 2 }, 4, LN_F32, CPU, LN_CHANNELS_LAST);
  fill_rand(p, -1, 1);
  fill_rand(q, -1, 1);
  ln_tensor *pq[] = { p, q };
  ln_tensor *r = ln_cat(pq, 2, 1);
  CHECK(r && ln_tensor_suggest_format(r) == LN_CHANNELS_LAST && ln_tensor_size(r, 1) == 8);
  CHECK(ln_tensor_get(r, (int64_t[]){ 1, 4, 1, 0 }) == ln_tensor_get(q, (int64_t[]){ 1, 1, 1, 0 }));
  ln_tensor *tr[] = { a, bb, b, empty1d, c, x, y, s, xy0, p, q, r };
  for (int i = 0; i < 12; i++) ln_tensor_release(tr[i]);
}

/* ---- autograd ---- */

typedef struct fn_case { int kind; int arg; } fn_case;
enum { F_BINARY, F_UNARY, F_SUM, F_MEAN, F_VAR, F_MAX, F_MIN, F_MATMUL, F_MATMUL_T, F_CAT,
       F_CLONE, F_AXPY };

static ln_tensor *f_apply(ln_tensor *const *in, int n, void *ud) {
  const fn_case *c = ud;
  static const int dims[] = { 1, 0 };
  (void)n;
  switch (c->kind) {
  case F_BINARY: return ln_binary((ln_binary_op)c->arg, in[0], in[1]);
  case F_UNARY: return ln_unary((ln_unary_op)c->arg, in[0]);
  case F_SUM: return ln_sum(in[0], dims, c->arg, true);
  case F_MEAN: return ln_mean(in[0], dims, c->arg, false);
  case F_VAR: return ln_var(in[0], dims, 1, c->arg, false);
  case F_MAX: return ln_max(in[0], dims, c->arg, false);
  case F_MIN: return ln_min(in[0], dims, c->arg, true);
  case F_MATMUL: return ln_matmul(in[0], in[1]);
  case F_MATMUL_T: {
    ln_tensor *t = ln_transpose(in[1], 0, 1);
    ln_tensor *r = t ? ln_matmul(in[0], t) : NULL;
    ln_tensor_release(t);
    return r;
  }
  case F_CAT: return ln_cat(in, 2, c->arg);
  case F_CLONE: {
    ln_tensor *t = ln_transpose(in[0], 0, 1);
    ln_tensor *r = t ? ln_contiguous(t, LN_CONTIGUOUS) : NULL;
    ln_tensor_release(t);
    return r;
  }
  default: return ln_add_scaled(in[0], in[1], -2.5);
  }
}

static void gradcheck_case(int kind, int arg, const int64_t *sa, int na, double alo, double ahi,
                           const int64_t *sb, int nb, double blo, double bhi) {
  fn_case c = { kind, arg };
  ln_tensor *in[2] = { rand_tensor(sa, na, LN_F64, alo, ahi), NULL };
  int n = 1;
  if (sb) in[n++] = rand_tensor(sb, nb, LN_F64, blo, bhi);
  for (int i = 0; i < n; i++) ln_tensor_set_requires_grad(in[i], true);
  char report[512];
  ln_status st = ln_gradcheck(f_apply, &c, in, n, 1e-6, 1e-5, 1e-4, report, sizeof report);
  if (st != LN_OK) fprintf(stderr, "  gradcheck kind %d arg %d: %s\n", kind, arg, report);
  CHECK(st == LN_OK);
  for (int i = 0; i < n; i++) ln_tensor_release(in[i]);
}

static void test_gradients(void) {
  const int64_t s34[] = { 3, 4 }, s4[] = { 4 }, s134[] = { 1, 3, 4 }, s45[] = { 4, 5 };
  const int64_t s24[] = { 2, 4 }, s54[] = { 5, 4 };
  /* binary ops with broadcasting on both sides */
  gradcheck_case(F_BINARY, LN_ADD, s34, 2, -1, 1, s4, 1, -1, 1);
  gradcheck_case(F_BINARY, LN_SUB, s4, 1, -1, 1, s134, 3, -1, 1);
  gradcheck_case(F_BINARY, LN_MUL, s34, 2, -1, 1, s4, 1, -1, 1);
  gradcheck_case(F_BINARY, LN_DIV, s34, 2, -1, 1, s4, 1, 0.5, 2);
  gradcheck_case(F_BINARY, LN_POW, s34, 2, 0.5, 2, s4, 1, -1.5, 1.5);
  gradcheck_case(F_BINARY, LN_MAXIMUM, s34, 2, -1, 1, s34, 2, -1, 1);
  gradcheck_case(F_BINARY, LN_MINIMUM, s34, 2, -1, 1, s4, 1, -1, 1);
  gradcheck_case(F_AXPY, 0, s34, 2, -1, 1, s4, 1, -1, 1);
  for (int op = 0; op < LN_UNARY_COUNT; op++) {
    bool pos = op == LN_SQRT || op == LN_LOG;
    /* abs, relu and sign are checked away from their kink at 0 */
    gradcheck_case(F_UNARY, op, s34, 2, pos ? 0.2 : 0.1, 2, NULL, 0, 0, 0);
    if (!pos) gradcheck_case(F_UNARY, op, s34, 2, -2, -0.1, NULL, 0, 0, 0);
  }
  for (int nd = 0; nd <= 2; nd++) {
    gradcheck_case(F_SUM, nd, s134, 3, -1, 1, NULL, 0, 0, 0);
    gradcheck_case(F_MEAN, nd, s134, 3, -1, 1, NULL, 0, 0, 0);
    gradcheck_case(F_MAX, nd, s34, 2, -1, 1, NULL, 0, 0, 0);
    gradcheck_case(F_MIN, nd, s34, 2, -1, 1, NULL, 0, 0, 0);
  }
  gradcheck_case(F_VAR, 0, s34, 2, -1, 1, NULL, 0, 0, 0);
  gradcheck_case(F_VAR, 1, s134, 3, -1, 1, NULL, 0, 0, 0);
  gradcheck_case(F_MATMUL, 0, s34, 2, -1, 1, s45, 2, -1, 1);
  gradcheck_case(F_MATMUL, 0, s4, 1, -1, 1, s4, 1, -1, 1);
  gradcheck_case(F_MATMUL, 0, s34, 2, -1, 1, s4, 1, -1, 1);
  gradcheck_case(F_MATMUL, 0, s4, 1, -1, 1, s45, 2, -1, 1);
  gradcheck_case(F_MATMUL, 0, (int64_t[]){ 2, 3, 4 }, 3, -1, 1, s45, 2, -1, 1);
  gradcheck_case(F_MATMUL, 0, (int64_t[]){ 2, 1, 3, 4 }, 4, -1, 1, (int64_t[]){ 3, 4, 2 }, 3, -1, 1);
  gradcheck_case(F_MATMUL_T, 0, s34, 2, -1, 1, s54, 2, -1, 1);
  gradcheck_case(F_CAT, 0, s34, 2, -1, 1, s24, 2, -1, 1);
  gradcheck_case(F_CAT, 1, s34, 2, -1, 1, (int64_t[]){ 3, 2 }, 2, -1, 1);
  gradcheck_case(F_CLONE, 0, s34, 2, -1, 1, NULL, 0, 0, 0);

  /* ties of an all-dims max share the gradient evenly, as amax */
  ln_tensor *x = ln_ones((int64_t[]){ 4 }, 1, LN_F32, CPU);
  ln_store_double((char *)ln_tensor_data(x) + 4, LN_F32, 0.5);
  ln_tensor_set_requires_grad(x, true);
  ln_tensor *m = ln_max(x, NULL, 0, false);
  CHECK(m && strcmp(ln_tensor_grad_fn(m)->name, "MaxBackward1") == 0);
  CHECK_OK(ln_backward(m, NULL, false));
  ln_tensor *g = ln_tensor_grad(x);
  CHECK(g != NULL);
  CHECK_NEAR(ln_tensor_get(g, (int64_t[]){ 0 }), 1.0 / 3, 1e-7);
  CHECK_NEAR(ln_tensor_get(g, (int64_t[]){ 1 }), 0, 0);
  ln_tensor_release(m);

  /* node names, casts back to the input dtype, no history for comparisons */
  ln_tensor *h = ln_ones((int64_t[]){ 3 }, 1, LN_F16, CPU);
  ln_tensor_set_requires_grad(h, true);
  ln_tensor *hd = ln_to_dtype(h, LN_F64), *w = ln_ones((int64_t[]){ 3 }, 1, LN_F32, CPU);
  ln_tensor *hw = ln_mul(h, w), *s = ln_sum(hw, (int[]){ 0 }, 1, false);
  ln_tensor *cmp = ln_compare(LN_GT, h, w), *cl = ln_clone(h, LN_CONTIGUOUS);
  CHECK(strcmp(ln_tensor_grad_fn(hd)->name, "ToCopyBackward0") == 0);
  CHECK(strcmp(ln_tensor_grad_fn(hw)->name, "MulBackward0") == 0);
  CHECK(strcmp(ln_tensor_grad_fn(s)->name, "SumBackward1") == 0);
  CHECK(strcmp(ln_tensor_grad_fn(cl)->name, "CloneBackward0") == 0);
  CHECK(!ln_tensor_requires_grad(cmp) && ln_tensor_grad_fn(cmp) == NULL);
  CHECK(ln_tensor_dtype(hw) == LN_F32);
  CHECK_OK(ln_backward(s, NULL, false));
  CHECK(ln_tensor_grad(h) && ln_tensor_dtype(ln_tensor_grad(h)) == LN_F16);
  CHECK_NEAR(ln_tensor_get(ln_tensor_grad(h), (int64_t[]){ 2 }), 1, 0);
  ln_tensor *tr[] = { x, h, hd, w, hw, s, cmp, cl };
  for (int i = 0; i < 8; i++) ln_tensor_release(tr[i]);
}

int main(void) {
  ln_init();
  int64_t live = ln_tensor_live_count();
  test_broadcasting();
  test_promotion();
  test_binary_layouts();
  test_unary_and_compare();
  test_channels_last_and_large();
  test_inplace();
  test_copies();
  test_reductions();
  test_reduction_rules();
  test_matmul();
  test_cat();
  test_gradients();
  CHECK(ln_tensor_live_count() == live);
  if (ln_tensor_live_count() != live)
    fprintf(stderr, "leaked %lld tensors\n", (long long)(ln_tensor_live_count() - live));
  return check_done("test_ops");
}
