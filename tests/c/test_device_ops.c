/*
** test_device_ops.c -- core's device paths for reductions, argmax, matmul
** and cat, run on the CPU: a stand-in "cuda" backend keeps its memory on
** the host and implements the kernel table with plain loops (reductions
** walk cuda/reduce_plan.h's plan, as cuda/reduce.cu does), so what core
** does for a device tensor (descriptions, keepdim views, mean and var's
** divisions, argmax's dim, batch strides and layouts of the gemm,
** backward, random draws' counters) is checked against the same ops on
** the CPU. The CUDA kernels
** themselves run only on a GPU (tests/spec/cuda_ops_spec.lua).
*/
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/autograd.h"
#include "core/blas.h"
#include "core/device.h"
#include "core/ops.h"
#include "core/philox.h"
#include "core/random.h"
#include "core/tensor.h"
#include "cuda/reduce_plan.h"

#define CPU LN_DEVICE_CPU
static const ln_device DEV = { LN_CUDA, 0 };

/* ---- the stand-in backend ---- */

static int one_device(void) { return 1; }
static void *host_alloc(int index, size_t n) { (void)index; return malloc(n ? n : 1); }
static void host_free(int index, void *p, size_t n) { (void)index; (void)n; free(p); }

static ln_status host_copy(void *dst, ln_device dd, const void *src, ln_device sd, size_t n) {
  (void)dd;
  (void)sd;
  memmove(dst, src, n);
  return LN_OK;
}

static ln_status host_fill(int index, void *p, size_t n, size_t es, const void *elem) {
  (void)index;
  for (size_t i = 0; i < n; i++) memcpy((char *)p + i * es, elem, es);
  return LN_OK;
}

static bool all_ops(ln_backend_op op, ln_dtype dt) { (void)op; (void)dt; return true; }

static double load(const ln_ew_operand *o, int64_t off) {
  return ln_load_double((const char *)o->data + off * (int64_t)ln_dtype_size(o->dtype), o->dtype);
}

static void store(const ln_ew_operand *o, int64_t off, double v) {
  ln_store_double((char *)o->data + off * (int64_t)ln_dtype_size(o->dtype), o->dtype, v);
}

/* A value as the kernels compute it: rounded to float for float32. */
static double in_compute(ln_dtype c, double v) { return c == LN_F32 ? (double)(float)v : v; }

static ln_status host_binary(int op, double alpha, ln_dtype compute, const ln_ew_desc *d) {
  for (int64_t i = 0; i < d->numel; i++) {
    int64_t off[LN_EW_MAX_OPS];
    ln_ew_offsets(d, i, off);
    double a = load(&d->ops[1], off[1]), b = load(&d->ops[2], off[2]), r;
    switch (op) {
    case LN_ADD: r = a + b; break;
    case LN_SUB: r = a - b; break;
    case LN_MUL: r = a * b; break;
    case LN_DIV: r = a / b; break;
    case LN_BINARY_AXPY: r = a + alpha * b; break;
    default: return ln_error(LN_ERUNTIME, "stand-in: binary op %d", op);
    }
    store(&d->ops[0], off[0], in_compute(compute, r));
  }
  return LN_OK;
}

static ln_status host_compare(ln_compare_op op, ln_dtype compute, const ln_ew_desc *d) {
  (void)compute;
  for (int64_t i = 0; i < d->numel; i++) {
    int64_t off[LN_EW_MAX_OPS];
    ln_ew_offsets(d, i, off);
    double a = load(&d->ops[1], off[1]), b = load(&d->ops[2], off[2]);
    bool r = op == LN_EQ ? a == b : op == LN_NE ? a != b : op == LN_LT ? a < b
           : op == LN_LE ? a <= b : op == LN_GT ? a > b : a >= b;
    store(&d->ops[0], off[0], r);
  }
  return LN_OK;
}

static ln_status host_convert(const ln_ew_desc *d) {
  for (int64_t i = 0; i < d->numel; i++) {
    int64_t off[LN_EW_MAX_OPS];
    ln_ew_offsets(d, i, off);
    store(&d->ops[0], off[0], load(&d->ops[1], off[1]));
  }
  return LN_OK;
}

/* The reduction walked as cuda/reduce.cu walks it: output by output,
** chunk by chunk, through the plan's offsets. */
static ln_status host_reduce(ln_reduce_kind kind, const ln_ew_desc *d) {
  ln_reduce_plan p;
  if (ln_reduce_plan_make(&p, d, -1, 132) != 0)
    return ln_error(LN_EINVAL, "stand-in: not a reduction");
  for (int64_t o = 0; o < p.outputs; o++) {
    int64_t base = ln_reduce_offset(&p.kept, 1, o);
    double acc = kind == LN_RK_MAX ? -INFINITY : kind == LN_RK_MIN ? INFINITY : 0;
    double m = kind == LN_RK_SQDEV ? load(&d->ops[2], ln_reduce_offset(&p.kept, 2, o)) : 0;
    for (int64_t c = 0; c < p.chunks; c++)
      for (int64_t r = c * p.chunk_len; r < (c + 1) * p.chunk_len && r < p.extent; r++) {
        double x = load(&d->ops[1], base + ln_reduce_offset(&p.red, 1, r));
        if (kind == LN_RK_MAX) acc = x > acc || x != x ? x : acc;
        else if (kind == LN_RK_MIN) acc = x < acc || x != x ? x : acc;
        else if (kind == LN_RK_SQDEV) acc += (x - m) * (x - m);
        else acc += x;
      }
    store(&d->ops[0], ln_reduce_offset(&p.kept, 0, o), acc);
  }
  return LN_OK;
}

static ln_status host_argmax(int dim, const ln_ew_desc *d) {
  ln_reduce_plan p;
  if (ln_reduce_plan_make(&p, d, dim, 132) != 0 || p.red.ndim != 1)
    return ln_error(LN_EINVAL, "stand-in: argmax over dim %d is not a reduction", dim);
  for (int64_t o = 0; o < p.outputs; o++) {
    int64_t base = ln_reduce_offset(&p.kept, 1, o), arg = 0;
    double best = load(&d->ops[1], base);
    for (int64_t r = 1; r < p.extent && best == best; r++) {
      double x = load(&d->ops[1], base + ln_reduce_offset(&p.red, 1, r));
      if (x > best || x != x) { best = x; arg = r; }
    }
    store(&d->ops[0], ln_reduce_offset(&p.kept, 0, o), (double)arg);
  }
  return LN_OK;
}

static int gemm_calls;

static ln_status host_gemm(int device, ln_dtype dt, bool ta, bool tb, int64_t m, int64_t n,
                           int64_t k, double alpha, const void *a, int64_t lda, const void *b,
                           int64_t ldb, double beta, void *c, int64_t ldc, int64_t batch,
                           int64_t sa, int64_t sb, int64_t sc) {
  (void)device;
  if (dt != LN_F32 && dt != LN_F64) return ln_error(LN_EINVAL, "stand-in: gemm in %d", dt);
  int64_t es = (int64_t)ln_dtype_size(dt);
  gemm_calls++;
  for (int64_t i = 0; i < batch; i++)
    ln_gemm(dt, ta, tb, m, n, k, alpha, (const char *)a + i * sa * es, lda,
            (const char *)b + i * sb * es, ldb, beta, (char *)c + i * sc * es, ldc);
  return LN_OK;
}

/* cuda/random.cu's kernel as a loop: counter + c gives elements c * lanes
** .., stored in dt, a uniform value that reached b replaced by the value
** below it. */
static ln_status host_philox_fill(int device, void *data, ln_dtype dt, int64_t n, bool normal,
                                  double a, double b, uint64_t seed, uint64_t counter) {
  (void)device;
  ln_philox_draw d = { normal, dt == LN_F64, a, b };
  double below = normal ? 0.0 : ln_philox_uniform_below(dt, a, b);
  int64_t lanes = ln_philox_lanes(&d), es = (int64_t)ln_dtype_size(dt);
  for (int64_t c = 0; c * lanes < n; c++) {
    double v[4];
    int k = ln_philox_block(&d, seed, counter + (uint64_t)c, v);
    for (int l = 0; l < k && c * k + l < n; l++) {
      char *p = (char *)data + (c * k + l) * es;
      ln_store_double(p, dt, v[l]);
      if (!normal && ln_load_double(p, dt) >= b) ln_store_double(p, dt, below);
    }
  }
  return LN_OK;
}

static const ln_device_kernels host_kernels = {
  .binary = host_binary,
  .compare = host_compare,
  .convert = host_convert,
  .reduce = host_reduce,
  .argmax = host_argmax,
  .gemm = host_gemm,
  .philox_fill = host_philox_fill,
};

static const ln_backend host_backend = {
  .name = "cuda",
  .device_count = one_device,
  .alloc = host_alloc,
  .free = host_free,
  .copy = host_copy,
  .fill = host_fill,
  .supports = all_ops,
  .kernels = &host_kernels,
};

/* ---- helpers ---- */

static uint32_t rng = 777;

static double uniform(double lo, double hi) {
  rng = rng * 1664525u + 1013904223u;
  return lo + (hi - lo) * (double)(rng >> 8) / 16777216.0;
}

/* A contiguous CPU tensor of random values (whole numbers for int64). */
static ln_tensor *rand_cpu(const int64_t *sizes, int nd, ln_dtype dt) {
  ln_tensor *t = ln_empty(sizes, nd, dt, CPU);
  for (int64_t i = 0; i < ln_tensor_numel(t); i++) {
    double v = uniform(-3, 3);
    if (!ln_dtype_is_float(dt)) v = floor(v);
    ln_store_double((char *)ln_tensor_data(t) + i * (int64_t)ln_dtype_size(dt), dt, v);
  }
  return t;
}

/* Do a CPU result and a device result agree (shapes, dtypes, values)? */
static bool agree(ln_tensor *want, ln_tensor *got_dev, double tol) {
  if (!want || !got_dev) return want == NULL && got_dev == NULL;
  ln_tensor *got = ln_to_device(got_dev, CPU);
  bool ok = got && ln_tensor_same_shape(want, got) &&
            ln_tensor_dtype(want) == ln_tensor_dtype(got);
  ln_tensor *w = ok ? ln_contiguous(want, LN_CONTIGUOUS) : NULL;
  ln_tensor *g = ok ? ln_contiguous(got, LN_CONTIGUOUS) : NULL;
  for (int64_t i = 0; ok && i < ln_tensor_numel(w); i++) {
    size_t es = ln_dtype_size(ln_tensor_dtype(w));
    double a = ln_load_double((char *)ln_tensor_data(w) + i * es, ln_tensor_dtype(w));
    double b = ln_load_double((char *)ln_tensor_data(g) + i * es, ln_tensor_dtype(g));
    ok = isnan(a) ? isnan(b) : fabs(a - b) <= tol * (1 + fabs(a));
  }
  ln_tensor_release(got);
  ln_tensor_release(w);
  ln_tensor_release(g);
  return ok;
}

/* agree(), saying why not; releases both. */
static bool agree_release(ln_tensor *want, ln_tensor *got_dev, double tol) {
  bool ok = agree(want, got_dev, tol);
  if (!ok) fprintf(stderr, "  %s\n", got_dev ? "the results differ" : ln_last_error());
  ln_tensor_release(want);
  ln_tensor_release(got_dev);
  return ok;
}

/* Each pair (CPU result, device result) agrees; releases them. */
static void check_pairs(ln_tensor *(*pairs)[2], size_t n, double tol) {
  for (size_t i = 0; i < n; i++) CHECK(agree_release(pairs[i][0], pairs[i][1], tol));
}

/* The three views the tests reduce: t itself, dims 0 and last swapped,
** and the last dim narrowed (t is 3-D). */
static ln_tensor *view_of(ln_tensor *t, int which) {
  if (which == 1) return ln_transpose(t, 0, 2);
  if (which == 2) return ln_narrow(t, 2, 2, ln_tensor_size(t, 2) - 5);
  ln_tensor_retain(t);
  return t;
}

/* ---- reductions ---- */

typedef ln_tensor *(*reduce_fn)(ln_tensor *, const int *, int, bool);

static ln_tensor *var1(ln_tensor *t, const int *d, int n, bool k) { return ln_var(t, d, n, 1, k); }
static ln_tensor *var0(ln_tensor *t, const int *d, int n, bool k) { return ln_var(t, d, n, 0, k); }

static void test_reductions(ln_dtype dt, double tol) {
  static const int dimsets[][3] = { { 0 }, { 1 }, { 2 }, { 0, 2 }, { 1, 2 }, { 0, 1, 2 } };
  static const int ndims[] = { 1, 1, 1, 2, 2, 3 };
  reduce_fn fns[] = { ln_sum, ln_mean, var1, var0, ln_max, ln_min };
  int nfn = ln_dtype_is_float(dt) ? 6 : 1;
  int64_t sizes[] = { 6, 7, 33 };
  ln_tensor *xc = rand_cpu(sizes, 3, dt), *xd = ln_to_device(xc, DEV);
  int bad = 0;
  for (int v = 0; v < 3; v++) {
    ln_tensor *vc = view_of(xc, v), *vd = view_of(xd, v);
    for (int f = 0; f < nfn; f++)
      for (int s = -1; s < 6; s++)  /* -1: all dims */
        for (int keep = 0; keep < 2; keep++) {
          const int *dims = s < 0 ? NULL : dimsets[s];
          int nd = s < 0 ? 0 : ndims[s];
          if (agree_release(fns[f](vc, dims, nd, keep), fns[f](vd, dims, nd, keep), tol))
            continue;
          bad++;
          fprintf(stderr, "%s: view %d, op %d, dims %d, keepdim %d\n", ln_dtype_name(dt), v, f,
                  s, keep);
        }
    ln_tensor_release(vc);
    ln_tensor_release(vd);
  }
  CHECK(bad == 0);
  ln_tensor_release(xc);
  ln_tensor_release(xd);
}

/* A long reduction: the plan splits it in chunks. */
static void test_long_reduction(void) {
  int64_t n = 1 << 20, rows[] = { 1 << 16, 3 };
  ln_tensor *xc = rand_cpu(&n, 1, LN_F32), *xd = ln_to_device(xc, DEV);
  ln_tensor *rc = rand_cpu(rows, 2, LN_F32), *rd = ln_to_device(rc, DEV);
  int d0 = 0, d1 = 1;
  ln_tensor *pairs[][2] = {
    { ln_sum(xc, NULL, 0, false), ln_sum(xd, NULL, 0, false) },
    { ln_var(xc, NULL, 0, 1, false), ln_var(xd, NULL, 0, 1, false) },
    { ln_max(xc, NULL, 0, false), ln_max(xd, NULL, 0, false) },
    { ln_argmax(xc, 0, false), ln_argmax(xd, 0, false) },
    { ln_sum(rc, &d0, 1, false), ln_sum(rd, &d0, 1, false) },
    { ln_mean(rc, &d1, 1, true), ln_mean(rd, &d1, 1, true) },
  };
  check_pairs(pairs, sizeof pairs / sizeof pairs[0], 1e-6);
  ln_tensor_release(xc);
  ln_tensor_release(xd);
  ln_tensor_release(rc);
  ln_tensor_release(rd);
}

static void test_argmax(ln_dtype dt) {
  int64_t sizes[] = { 4, 5, 6 };
  ln_tensor *xc = rand_cpu(sizes, 3, dt);
  if (ln_dtype_is_float(dt)) {  /* a NaN, and a tie, in some lines */
    ln_store_double((char *)ln_tensor_data(xc) + 7 * ln_dtype_size(dt), dt, NAN);
    ln_store_double((char *)ln_tensor_data(xc) + 40 * ln_dtype_size(dt), dt, 9);
    ln_store_double((char *)ln_tensor_data(xc) + 42 * ln_dtype_size(dt), dt, 9);
  }
  ln_tensor *xd = ln_to_device(xc, DEV);
  int bad = 0;
  for (int v = 0; v < 3; v++) {
    ln_tensor *vc = view_of(xc, v), *vd = view_of(xd, v);
    for (int dim = -1; dim < 3; dim++)
      for (int keep = 0; keep < 2; keep++)
        bad += !agree_release(ln_argmax(vc, dim, keep), ln_argmax(vd, dim, keep), 0);
    ln_tensor_release(vc);
    ln_tensor_release(vd);
  }
  CHECK(bad == 0);
  ln_tensor_release(xc);
  ln_tensor_release(xd);
}

static void test_empty_and_small(void) {
  int64_t sizes[] = { 0, 4 }, one[] = { 1, 1 };
  ln_tensor *ec = ln_zeros(sizes, 2, LN_F32, CPU), *ed = ln_to_device(ec, DEV);
  ln_tensor *oc = rand_cpu(one, 2, LN_F64), *od = ln_to_device(oc, DEV);
  ln_tensor *zc = ln_scalar(2.5, LN_F32), *zd = ln_to_device(zc, DEV);  /* 0-dim */
  int d0 = 0, d1 = 1;
  ln_tensor *pairs[][2] = {
    { ln_sum(ec, NULL, 0, false), ln_sum(ed, NULL, 0, false) },
    { ln_sum(ec, &d0, 1, false), ln_sum(ed, &d0, 1, false) },
    { ln_mean(ec, &d0, 1, true), ln_mean(ed, &d0, 1, true) },
    { ln_var(ec, &d0, 1, 1, false), ln_var(ed, &d0, 1, 1, false) },
    { ln_sum(ec, &d1, 1, false), ln_sum(ed, &d1, 1, false) },
    { ln_var(oc, NULL, 0, 1, false), ln_var(od, NULL, 0, 1, false) },
    { ln_argmax(oc, 1, true), ln_argmax(od, 1, true) },
    { ln_argmax(ec, 1, false), ln_argmax(ed, 1, false) },
    { ln_mean(zc, NULL, 0, false), ln_mean(zd, NULL, 0, false) },
    { ln_max(zc, &d0, 1, true), ln_max(zd, &d0, 1, true) },
    { ln_argmax(zc, 0, false), ln_argmax(zd, 0, false) },
  };
  check_pairs(pairs, sizeof pairs / sizeof pairs[0], 0);
  ln_tensor *m = ln_max(ed, NULL, 0, false);
  CHECK(m == NULL);
  CHECK_MSG("Expected reduction dim to be specified");
  ln_tensor_release(ec);
  ln_tensor_release(ed);
  ln_tensor_release(oc);
  ln_tensor_release(od);
  ln_tensor_release(zc);
  ln_tensor_release(zd);
}

/* fill_ on a view no single fill covers (a narrowed last dim): the value
** goes over as a 0-dim operand of the convert kernel; the rest is kept. */
static void test_fill_view(void) {
  int64_t sizes[] = { 3, 4, 9 };
  ln_tensor *xc = rand_cpu(sizes, 3, LN_F32), *xd = ln_to_device(xc, DEV);
  ln_tensor *vc = view_of(xc, 2), *vd = view_of(xd, 2);
  CHECK_OK(ln_fill_(vc, -1.25));
  CHECK_OK(ln_fill_(vd, -1.25));
  CHECK(agree(xc, xd, 0));
  ln_tensor_release(vc);
  ln_tensor_release(vd);
  ln_tensor_release(xc);
  ln_tensor_release(xd);
}

static void test_integers(void) {
  test_reductions(LN_I64, 0);
  int64_t sizes[] = { 3, 4, 5 };
  ln_tensor *xc = rand_cpu(sizes, 3, LN_I64), *zero = ln_scalar(0, LN_I64);
  ln_tensor *bc = ln_compare(LN_GT, xc, zero), *bd = ln_to_device(bc, DEV);
  ln_tensor *xd = ln_to_device(xc, DEV);
  int d2 = 2;
  ln_tensor *pairs[][2] = {
    { ln_sum(bc, NULL, 0, false), ln_sum(bd, NULL, 0, false) },
    { ln_sum(bc, &d2, 1, true), ln_sum(bd, &d2, 1, true) },
    { ln_max(xc, &d2, 1, false), ln_max(xd, &d2, 1, false) },
    { ln_argmax(bc, 1, false), ln_argmax(bd, 1, false) },
  };
  check_pairs(pairs, sizeof pairs / sizeof pairs[0], 0);
  ln_tensor_release(xc);
  ln_tensor_release(xd);
  ln_tensor_release(zero);
  ln_tensor_release(bc);
  ln_tensor_release(bd);
}

/* float16 output: mean and var reduce in float32 and convert. */
static void test_half(void) {
  int64_t sizes[] = { 5, 300 };
  ln_tensor *xc = rand_cpu(sizes, 2, LN_F16), *xd = ln_to_device(xc, DEV);
  int d1 = 1;
  ln_tensor *pairs[][2] = {
    { ln_sum(xc, &d1, 1, false), ln_sum(xd, &d1, 1, false) },
    { ln_mean(xc, &d1, 1, false), ln_mean(xd, &d1, 1, false) },
    { ln_var(xc, &d1, 1, 1, true), ln_var(xd, &d1, 1, 1, true) },
  };
  check_pairs(pairs, sizeof pairs / sizeof pairs[0], 2e-3);
  ln_tensor_release(xc);
  ln_tensor_release(xd);
}

/* ---- backward of reductions and matmul on the device ---- */

/* A leaf on dev with t's values that requires grad (t is left alone). */
static ln_tensor *leaf(ln_tensor *t, ln_device dev) {
  ln_tensor *moved = ln_to_device(t, dev), *x = moved ? ln_detach(moved) : NULL;
  ln_tensor_release(moved);
  if (x) ln_tensor_set_requires_grad(x, true);
  return x;
}

/* d(sum(f(x)))/dx on dev for a leaf copy of xc. New reference. */
static ln_tensor *grad_of(ln_tensor *xc, ln_device dev, int op) {
  ln_tensor *x = leaf(xc, dev), *y = NULL, *s = NULL, *g = NULL;
  int d1 = 1;
  switch (op) {
  case 0: y = ln_sum(x, &d1, 1, false); break;
  case 1: y = ln_mean(x, &d1, 1, true); break;
  case 2: y = ln_var(x, &d1, 1, 1, false); break;
  default: y = ln_max(x, &d1, 1, false); break;
  }
  if (y && (s = ln_sum(y, NULL, 0, false)) && ln_backward(s, NULL, false) == LN_OK &&
      (g = ln_tensor_grad(x)))
    ln_tensor_retain(g);
  ln_tensor_release(x);
  ln_tensor_release(y);
  ln_tensor_release(s);
  return g;
}

static void test_reduce_backward(void) {
  int64_t sizes[] = { 4, 9 };
  ln_tensor *xc = rand_cpu(sizes, 2, LN_F32);
  for (int op = 0; op < 4; op++) {
    ln_tensor *want = grad_of(xc, CPU, op);
    CHECK(want && agree_release(want, grad_of(xc, DEV, op), 1e-6));
  }
  ln_tensor_release(xc);
}

/* ---- matmul ---- */

static void test_matmul(ln_dtype dt) {
  static const int64_t shapes[][2][4] = {
    { { 7 }, { 7 } }, { { 5, 7 }, { 7 } }, { { 7 }, { 7, 3 } }, { { 5, 7 }, { 7, 3 } },
    { { 4, 5, 7 }, { 4, 7, 3 } }, { { 4, 5, 7 }, { 7, 3 } }, { { 5, 7 }, { 4, 7, 3 } },
    { { 2, 1, 5, 7 }, { 3, 7, 2 } }, { { 0, 7 }, { 7, 3 } }, { { 5, 0 }, { 0, 3 } },
  };
  static const int nds[][2] = {
    { 1, 1 }, { 2, 1 }, { 1, 2 }, { 2, 2 }, { 3, 3 }, { 3, 2 }, { 2, 3 }, { 4, 3 }, { 2, 2 },
    { 2, 2 },
  };
  int bad = 0;
  for (size_t i = 0; i < sizeof nds / sizeof nds[0]; i++) {
    ln_tensor *ac = rand_cpu(shapes[i][0], nds[i][0], dt), *bc = rand_cpu(shapes[i][1], nds[i][1], dt);
    ln_tensor *ad = ln_to_device(ac, DEV), *bd = ln_to_device(bc, DEV);
    if (!agree_release(ln_matmul(ac, bc), ln_matmul(ad, bd), 1e-5)) {
      bad++;
      fprintf(stderr, "matmul case %zu\n", i);
    }
    /* transposed operands (when 2-D): the gemm's op flags */
    if (nds[i][0] == 2 && nds[i][1] == 2) {
      ln_tensor *at = ln_transpose(ac, 0, 1), *atc = ln_contiguous(at, LN_CONTIGUOUS);
      ln_tensor *t2 = ln_transpose(atc, 0, 1), *t2d = ln_to_device(atc, DEV);
      ln_tensor *t2dv = ln_transpose(t2d, 0, 1);
      bad += !agree_release(ln_matmul(t2, bc), ln_matmul(t2dv, bd), 1e-5);
      ln_tensor_release(at);
      ln_tensor_release(atc);
      ln_tensor_release(t2);
      ln_tensor_release(t2d);
      ln_tensor_release(t2dv);
    }
    ln_tensor_release(ac);
    ln_tensor_release(bc);
    ln_tensor_release(ad);
    ln_tensor_release(bd);
  }
  CHECK(bad == 0);
}

/* A batched product is one gemm call; its backward agrees with the CPU. */
static void test_matmul_batched_backward(void) {
  int64_t as[] = { 3, 5, 7 }, bs[] = { 7, 4 };
  ln_tensor *ac = rand_cpu(as, 3, LN_F64), *bc = rand_cpu(bs, 2, LN_F64);
  ln_tensor *grads[2][2] = { { NULL } };
  for (int side = 0; side < 2; side++) {
    ln_device dev = side ? DEV : CPU;
    ln_tensor *a = leaf(ac, dev), *b = leaf(bc, dev);
    int before = gemm_calls;
    ln_tensor *y = ln_matmul(a, b), *s = y ? ln_sum(y, NULL, 0, false) : NULL;
    if (side) CHECK(gemm_calls == before + 1);
    CHECK(s && ln_backward(s, NULL, false) == LN_OK);
    for (int i = 0; i < 2; i++)
      if ((grads[side][i] = ln_tensor_grad(i ? b : a))) ln_tensor_retain(grads[side][i]);
    ln_tensor_release(a);
    ln_tensor_release(b);
    ln_tensor_release(y);
    ln_tensor_release(s);
  }
  CHECK(agree(grads[0][0], grads[1][0], 1e-12));
  CHECK(agree(grads[0][1], grads[1][1], 1e-12));
  for (int i = 0; i < 4; i++) ln_tensor_release(grads[i / 2][i % 2]);
  ln_tensor_release(ac);
  ln_tensor_release(bc);
  /* int64 has no device gemm: PyTorch's CUDA message */
  int64_t n = 3;
  ln_tensor *ic = ln_zeros(&n, 1, LN_I64, CPU), *id = ln_to_device(ic, DEV);
  CHECK(ln_matmul(id, id) == NULL);
  CHECK_MSG("\"addmm_cuda\" not implemented for 'Long'");
  ln_tensor_release(ic);
  ln_tensor_release(id);
}

/* ---- cat ---- */

static void test_cat(void) {
  int64_t s1[] = { 2, 3, 4 }, s2[] = { 2, 5, 4 };
  ln_tensor *ac = rand_cpu(s1, 3, LN_F32), *bc = rand_cpu(s2, 3, LN_F64);
  ln_tensor *ad = ln_to_device(ac, DEV), *bd = ln_to_device(bc, DEV);
  ln_tensor *atc = ln_transpose(ac, 0, 2), *atd = ln_transpose(ad, 0, 2);
  ln_tensor *in_c[] = { ac, bc, ac }, *in_d[] = { ad, bd, ad };
  ln_tensor *tt_c[] = { atc, atc }, *tt_d[] = { atd, atd };
  ln_tensor *pairs[][2] = {
    { ln_cat(in_c, 3, 1), ln_cat(in_d, 3, 1) },
    { ln_cat(tt_c, 2, 0), ln_cat(tt_d, 2, 0) },
    { ln_cat(tt_c, 2, -1), ln_cat(tt_d, 2, -1) },
  };
  check_pairs(pairs, sizeof pairs / sizeof pairs[0], 0);
  ln_tensor *tensors[] = { ac, bc, atc, ad, bd, atd };
  for (int i = 0; i < 6; i++) ln_tensor_release(tensors[i]);
}

/* ---- random draws ---- */

/* Draws on the device take the CPU's values and move the generator on by
** as much: contiguous tensors through philox_fill (the counters core
** reserves), strided ones through a CPU buffer. */
static void test_random(void) {
  static const ln_dtype dts[] = { LN_F32, LN_F64, LN_F16, LN_BF16 };
  int64_t sizes[] = { 5, 7 };  /* 35: not a multiple of either lane count */
  int bad = 0;
  for (int i = 0; i < 4; i++) {
    ln_tensor *r[2][4] = { { NULL } };
    ln_rng_state after[2];
    for (int side = 0; side < 2; side++) {
      ln_device dev = side ? DEV : CPU;
      ln_manual_seed(1234);
      r[side][0] = ln_rand(sizes, 2, dts[i], dev);
      r[side][1] = ln_randn(sizes, 2, dts[i], dev);
      r[side][2] = ln_empty(sizes, 2, dts[i], dev);
      r[side][3] = ln_empty(sizes, 2, dts[i], dev);
      ln_tensor *t = ln_transpose(r[side][3], 0, 1);
      bad += ln_uniform_(r[side][2], -1.0, 1.0 + 1e-9) != LN_OK;  /* 'below' clamps */
      bad += ln_normal_(t, 2.0, 0.5) != LN_OK;
      ln_tensor_release(t);
      after[side] = ln_rng_get_state();
    }
    for (int j = 0; j < 4; j++) bad += !agree_release(r[0][j], r[1][j], 0);
    bad += after[0].seed != after[1].seed || after[0].offset != after[1].offset;
  }
  CHECK(bad == 0);
}

int main(void) {
  ln_init();
  ln_backend_register(LN_CUDA, &host_backend);
  int64_t live = ln_tensor_live_count();
  test_reductions(LN_F32, 1e-6);
  test_reductions(LN_F64, 1e-12);
  test_long_reduction();
  test_argmax(LN_F32);
  test_argmax(LN_I64);
  test_empty_and_small();
  test_fill_view();
  test_integers();
  test_half();
  test_reduce_backward();
  test_matmul(LN_F32);
  test_matmul(LN_F64);
  test_matmul_batched_backward();
  test_cat();
  test_random();
  CHECK(ln_tensor_live_count() == live);
  return check_done("test_device_ops");
}
