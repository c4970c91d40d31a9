/*
** test_autograd.c -- the autograd engine: grad mode, leaves, diamonds,
** accumulation, retain_graph and the freed-graph error, root checks,
** multi-output nodes, failing backwards, 100k-node chains (backward and
** release without deep recursion), gradcheck, and no leaked tensors.
** The first ops here are written by hand on float64 1-D tensors, so that
** the engine is tested on its own; then ln_sum_to_size, a broadcast graph,
** and gradcheck of every differentiable library op.
*/
#include <string.h>

#include "check.h"
#include "core/autograd.h"
#include "core/gradcheck.h"
#include "core/ops.h"
#include "core/random.h"
#include "core/tensor.h"

/* ---- hand-written float64 ops ---- */

static ln_tensor *vec(const double *v, int64_t n) {
  ln_tensor *t = ln_empty(&n, 1, LN_F64, LN_DEVICE_CPU);
  memcpy(ln_tensor_data(t), v, (size_t)n * sizeof *v);
  return t;
}

static double *data(ln_tensor *t) { return ln_tensor_data(t); }

static ln_tensor *like(ln_tensor *t) { return ln_empty_like(t, LN_CONTIGUOUS); }

/* Record `node` (taken over) as the history of out when any input needs it. */
static void record(ln_tensor *out, const char *name, ln_backward_fn bw,
                   ln_tensor **inputs, int n, ln_tensor **saved, int nsaved,
                   double scalar) {
  if (!ln_any_requires_grad(inputs, n)) return;
  ln_node *node = ln_node_new(name, bw, inputs, n, 1);
  for (int i = 0; i < nsaved; i++) ln_node_save(node, saved[i]);
  node->scalars[0] = scalar;
  ln_set_history(out, node, 0);
  ln_node_release(node);
}

static ln_tensor *scaled(ln_tensor *g, double c) {
  ln_tensor *r = like(g);
  for (int64_t i = 0; i < ln_tensor_numel(g); i++) data(r)[i] = c * data(g)[i];
  return r;
}

static ln_status scale_bw(ln_node *node, ln_tensor **go, ln_tensor **gi) {
  gi[0] = scaled(go[0], node->scalars[0]);
  return LN_OK;
}

static ln_tensor *scale(ln_tensor *x, double c) {
  ln_tensor *y = scaled(x, c);
  record(y, "ScaleBackward", scale_bw, &x, 1, NULL, 0, c);
  return y;
}

static ln_status mul_bw(ln_node *node, ln_tensor **go, ln_tensor **gi) {
  ln_tensor *a = ln_node_saved(node, 0), *b = ln_node_saved(node, 1);
  if (!a || !b) return LN_ERUNTIME;
  for (int k = 0; k < 2; k++) {
    if (!node->next[k].node) continue;
    gi[k] = like(go[0]);
    for (int64_t i = 0; i < ln_tensor_numel(a); i++)
      data(gi[k])[i] = data(go[0])[i] * data(k == 0 ? b : a)[i];
  }
  return LN_OK;
}

static ln_tensor *mul(ln_tensor *a, ln_tensor *b) {
  ln_tensor *y = like(a), *in[2] = { a, b };
  for (int64_t i = 0; i < ln_tensor_numel(a); i++) data(y)[i] = data(a)[i] * data(b)[i];
  record(y, "MulBackward0", mul_bw, in, 2, in, 2, 0);
  return y;
}

static ln_status sum_bw(ln_node *node, ln_tensor **go, ln_tensor **gi) {
  int64_t n = (int64_t)node->scalars[0];
  gi[0] = ln_full(&n, 1, data(go[0])[0], LN_F64, LN_DEVICE_CPU);
  return LN_OK;
}

/* 0-dim sum of a vector. */
static ln_tensor *sum(ln_tensor *x) {
  double s = 0;
  for (int64_t i = 0; i < ln_tensor_numel(x); i++) s += data(x)[i];
  ln_tensor *y = ln_scalar(s, LN_F64);
  record(y, "SumBackward0", sum_bw, &x, 1, NULL, 0, (double)ln_tensor_numel(x));
  return y;
}

static ln_status fail_bw(ln_node *node, ln_tensor **go, ln_tensor **gi) {
  (void)node; (void)go; (void)gi;
  return ln_error(LN_ERUNTIME, "backward of FailBackward failed on purpose");
}

/* Two outputs: the first and the second half of x. */
static ln_status split_bw(ln_node *node, ln_tensor **go, ln_tensor **gi) {
  int64_t h = (int64_t)node->scalars[0];
  gi[0] = ln_zeros((int64_t[]){ 2 * h }, 1, LN_F64, LN_DEVICE_CPU);
  for (int k = 0; k < 2; k++)
    if (go[k]) memcpy(data(gi[0]) + k * h, data(go[k]), (size_t)h * sizeof(double));
  return LN_OK;
}

static void split(ln_tensor *x, ln_tensor **out) {
  int64_t h = ln_tensor_numel(x) / 2;
  out[0] = vec(data(x), h);
  out[1] = vec(data(x) + h, h);
  if (!ln_any_requires_grad(&x, 1)) return;
  ln_node *node = ln_node_new("SplitBackward", split_bw, &x, 1, 2);
  node->scalars[0] = (double)h;
  ln_set_history(out[0], node, 0);
  ln_set_history(out[1], node, 1);
  ln_node_release(node);
}

static ln_tensor *leaf(const double *v, int64_t n) {
  ln_tensor *x = vec(v, n);
  ln_tensor_set_requires_grad(x, true);
  return x;
}

static double grad_at(ln_tensor *x, int i) {
  ln_tensor *g = ln_tensor_grad(x);
  return g ? data(g)[i] : NAN;
}

/* ---- tests ---- */

static void test_grad_mode_and_flags(void) {
  CHECK(ln_grad_enabled());
  CHECK(ln_set_grad_enabled(false) == true);
  CHECK(!ln_grad_enabled());
  CHECK(ln_set_grad_enabled(true) == false);

  ln_tensor *x = leaf((double[]){ 1, 2 }, 2);
  CHECK(ln_tensor_requires_grad(x) && ln_tensor_is_leaf(x));
  CHECK(ln_tensor_grad(x) == NULL && ln_tensor_grad_fn(x) == NULL);

  bool prev = ln_set_grad_enabled(false);
  ln_tensor *y = scale(x, 2);
  CHECK(!ln_tensor_requires_grad(y) && ln_tensor_grad_fn(y) == NULL);
  ln_set_grad_enabled(prev);
  ln_tensor_release(y);

  y = scale(x, 2);
  CHECK(ln_tensor_requires_grad(y) && !ln_tensor_is_leaf(y));
  CHECK(strcmp(ln_tensor_grad_fn(y)->name, "ScaleBackward") == 0);
  CHECK(ln_tensor_output_nr(y) == 0);
  CHECK(ln_tensor_set_requires_grad(y, true) == LN_OK);
  CHECK(ln_tensor_set_requires_grad(y, false) == LN_ERUNTIME);
  CHECK_MSG("you can only change requires_grad flags of leaf variables");

  ln_tensor *i = ln_zeros((int64_t[]){ 2 }, 1, LN_I64, LN_DEVICE_CPU);
  CHECK(ln_tensor_set_requires_grad(i, true) == LN_ERUNTIME);
  CHECK_MSG("only Tensors of floating point dtype can require gradients");
  CHECK(ln_tensor_set_requires_grad(i, false) == LN_OK);

  ln_tensor *g = vec((double[]){ 5, 6 }, 2);
  ln_tensor_set_grad(x, g);
  CHECK(ln_tensor_grad(x) == g && ln_tensor_refcount(g) == 2);
  ln_tensor_set_grad(x, NULL);
  CHECK(ln_tensor_grad(x) == NULL && ln_tensor_refcount(g) == 1);
  ln_tensor_release(g);
  ln_tensor_release(i);
  ln_tensor_release(y);
  ln_tensor_release(x);
}

/* s = sum((2x) * (2x)): y is used twice, ds/dx = 8x. */
static ln_tensor *diamond(ln_tensor *x) {
  ln_tensor *y = scale(x, 2), *z = mul(y, y), *s = sum(z);
  ln_tensor_release(y);
  ln_tensor_release(z);
  return s;
}

static void test_diamond_and_accumulation(void) {
  ln_tensor *x = leaf((double[]){ 1, -2, 3 }, 3);
  ln_tensor *s = diamond(x);
  CHECK_NEAR(data(s)[0], 4 * (1 + 4 + 9), 0);
  CHECK_OK(ln_backward(s, NULL, false));
  CHECK_NEAR(grad_at(x, 0), 8, 1e-12);
  CHECK_NEAR(grad_at(x, 1), -16, 1e-12);
  CHECK_NEAR(grad_at(x, 2), 24, 1e-12);
  CHECK(!ln_tensor_requires_grad(ln_tensor_grad(x)));
  ln_tensor_release(s);

  /* a second graph accumulates into a new tensor; the old one is intact */
  ln_tensor *held = ln_tensor_grad(x);
  ln_tensor_retain(held);
  s = diamond(x);
  CHECK_OK(ln_backward(s, NULL, false));
  CHECK(ln_tensor_grad(x) != held);
  CHECK_NEAR(grad_at(x, 2), 48, 1e-12);
  CHECK_NEAR(data(held)[2], 24, 1e-12);
  ln_tensor_release(held);
  ln_tensor_release(s);
  ln_tensor_release(x);
}

static void test_retain_graph_and_freed_graph(void) {
  ln_tensor *x = leaf((double[]){ 1, 2 }, 2);
  ln_tensor *s = diamond(x);
  CHECK_OK(ln_backward(s, NULL, true));
  CHECK_OK(ln_backward(s, NULL, true));
  CHECK_OK(ln_backward(s, NULL, false));
  CHECK_NEAR(grad_at(x, 1), 3 * 16, 1e-12);
  CHECK(ln_backward(s, NULL, false) == LN_ERUNTIME);
  CHECK_MSG("Trying to backward through the graph a second time");
  CHECK_MSG("Specify retain_graph=True");
  CHECK_NEAR(grad_at(x, 1), 3 * 16, 1e-12);   /* nothing accumulated */

  /* the saved tensors of MulBackward0 are gone */
  ln_node *sum_node = ln_tensor_grad_fn(s);
  ln_node *mul_node = sum_node->next[0].node;
  CHECK(strcmp(mul_node->name, "MulBackward0") == 0);
  CHECK(mul_node->saved_freed && mul_node->saved[0] == NULL);
  ln_clear_error();
  CHECK(ln_node_saved(mul_node, 0) == NULL);
  CHECK_MSG("after they have already been freed");
  ln_tensor_release(s);

  /* a graph that saved nothing can run again */
  ln_tensor *y = scale(x, 3), *t = sum(y);
  CHECK_OK(ln_backward(t, NULL, false));
  CHECK_OK(ln_backward(t, NULL, false));
  CHECK_NEAR(grad_at(x, 0), 3 * 8 + 6, 1e-12);
  ln_tensor_release(t);
  ln_tensor_release(y);
  ln_tensor_release(x);
}

static void test_roots(void) {
  ln_tensor *x = leaf((double[]){ 1, 2, 3 }, 3);
  ln_tensor *c = vec((double[]){ 1, 2, 3 }, 3);
  CHECK(ln_backward(c, NULL, false) == LN_ERUNTIME);
  CHECK_MSG("element 0 of tensors does not require grad and does not have a grad_fn");

  ln_tensor *y = scale(x, 2);
  CHECK(ln_backward(y, NULL, false) == LN_ERUNTIME);
  CHECK_MSG("grad can be implicitly created only for scalar outputs");
  ln_tensor *bad = vec((double[]){ 1, 2 }, 2);
  CHECK(ln_backward(y, bad, false) == LN_ERUNTIME);
  CHECK_MSG("Mismatch in shape: grad_output[0] has a shape of {2} and output[0] "
            "has a shape of {3}.");
  CHECK(ln_tensor_grad(x) == NULL);

  /* an explicit grad gives the vector-Jacobian product; the grad the
  ** caller passed is not aliased into .grad */
  ln_tensor *w = vec((double[]){ 1, 10, 100 }, 3);
  CHECK_OK(ln_backward(y, w, false));
  CHECK_NEAR(grad_at(x, 2), 200, 1e-12);

  /* a leaf root accumulates directly, and copies the caller's grad */
  ln_tensor_set_grad(x, NULL);
  CHECK_OK(ln_backward(x, w, false));
  CHECK(ln_tensor_grad(x) != w);
  CHECK_NEAR(grad_at(x, 1), 10, 0);
  data(w)[1] = -1;
  CHECK_NEAR(grad_at(x, 1), 10, 0);

  /* a float32 grad for a float64 root is cast */
  ln_tensor *w32 = ln_ones((int64_t[]){ 3 }, 1, LN_F32, LN_DEVICE_CPU);
  ln_tensor_set_grad(x, NULL);
  CHECK_OK(ln_backward(x, w32, false));
  CHECK(ln_tensor_dtype(ln_tensor_grad(x)) == LN_F64);
  CHECK_NEAR(grad_at(x, 0), 1, 0);

  /* a one-element non-0-dim root takes the implicit 1 */
  ln_tensor *x1 = leaf((double[]){ 4 }, 1), *y1 = scale(x1, 5);
  CHECK_OK(ln_backward(y1, NULL, false));
  CHECK_NEAR(grad_at(x1, 0), 5, 0);

  ln_tensor_release(y1);
  ln_tensor_release(x1);
  ln_tensor_release(w32);
  ln_tensor_release(w);
  ln_tensor_release(bad);
  ln_tensor_release(y);
  ln_tensor_release(c);
  ln_tensor_release(x);
}

static void test_partial_inputs_and_multi_output(void) {
  /* only b requires grad: a gets no gradient, no accumulate node */
  ln_tensor *a = vec((double[]){ 2, 3 }, 2), *b = leaf((double[]){ 5, 7 }, 2);
  ln_tensor *p = mul(a, b), *s = sum(p);
  CHECK(ln_tensor_grad_fn(p)->next[0].node == NULL);
  CHECK_OK(ln_backward(s, NULL, false));
  CHECK(ln_tensor_grad(a) == NULL);
  CHECK_NEAR(grad_at(b, 1), 3, 0);
  ln_tensor_release(s);
  ln_tensor_release(p);

  /* a two-output node of which only the second output is used */
  ln_tensor *x = leaf((double[]){ 1, 2, 3, 4 }, 4), *halves[2];
  split(x, halves);
  CHECK(ln_tensor_output_nr(halves[1]) == 1);
  CHECK(ln_tensor_grad_fn(halves[0]) == ln_tensor_grad_fn(halves[1]));
  ln_tensor *t = scale(halves[1], 3), *u = sum(t);
  CHECK_OK(ln_backward(u, NULL, false));
  CHECK_NEAR(grad_at(x, 0), 0, 0);
  CHECK_NEAR(grad_at(x, 1), 0, 0);
  CHECK_NEAR(grad_at(x, 2), 3, 0);
  CHECK_NEAR(grad_at(x, 3), 3, 0);
  ln_tensor_release(u);
  ln_tensor_release(t);
  ln_tensor_release(halves[0]);
  ln_tensor_release(halves[1]);
  ln_tensor_release(x);
  ln_tensor_release(b);
  ln_tensor_release(a);
}

static void test_failing_backward(void) {
  ln_tensor *x = leaf((double[]){ 1, 2 }, 2), *y = scale(x, 2);
  ln_tensor *z = like(y);
  ln_node *node = ln_node_new("FailBackward", fail_bw, &y, 1, 1);
  ln_set_history(z, node, 0);
  ln_node_release(node);
  ln_tensor *s = sum(z);
  CHECK(ln_backward(s, NULL, false) == LN_ERUNTIME);
  CHECK_MSG("failed on purpose");
  CHECK(ln_tensor_grad(x) == NULL);
  CHECK(ln_grad_enabled());   /* grad mode is restored */
  ln_tensor_release(s);
  ln_tensor_release(z);
  ln_tensor_release(y);
  ln_tensor_release(x);
}

#define CHAIN 100000

/* y = x * 1 * 1 * ... with MulBackward0 saving its inputs, so that each
** saved tensor holds the previous node: releasing the chain goes
** tensor -> node -> tensor 100k deep unless the release is iterative. */
static void test_long_chain(void) {
  ln_tensor *x = leaf((double[]){ 2 }, 1), *one = vec((double[]){ 1 }, 1);
  ln_tensor *y = x;
  ln_tensor_retain(y);
  for (int i = 0; i < CHAIN; i++) {
    ln_tensor *next = (i % 2) ? mul(y, one) : scale(y, 1);
    ln_tensor_release(y);
    y = next;
  }
  CHECK_OK(ln_backward(y, NULL, true));
  CHECK_NEAR(grad_at(x, 0), 1, 0);
  ln_tensor_release(y);    /* frees the whole chain, saved tensors included */

  /* the same, released without a backward */
  y = x;
  ln_tensor_retain(y);
  for (int i = 0; i < CHAIN; i++) {
    ln_tensor *next = mul(y, one);
    ln_tensor_release(y);
    y = next;
  }
  ln_tensor_release(y);
  ln_tensor_release(one);
  ln_tensor_release(x);
}

/* ---- gradcheck on the hand-written ops ---- */

static ln_tensor *f_good(ln_tensor *const *in, int n, void *ud) {
  (void)n; (void)ud;
  ln_tensor *y = scale(in[0], 3), *z = mul(y, in[1]);
  ln_tensor_release(y);
  return z;
}

static ln_status wrong_bw(ln_node *node, ln_tensor **go, ln_tensor **gi) {
  (void)node;
  gi[0] = scaled(go[0], 2.5);   /* should be 2 */
  return LN_OK;
}

static ln_tensor *f_wrong(ln_tensor *const *in, int n, void *ud) {
  (void)n; (void)ud;
  ln_tensor *y = scaled(in[0], 2), *x = in[0];
  record(y, "WrongBackward", wrong_bw, &x, 1, NULL, 0, 0);
  return y;
}

static ln_tensor *f_null(ln_tensor *const *in, int n, void *ud) {
  (void)in; (void)n; (void)ud;
  ln_error(LN_EINVAL, "callback failed");
  return NULL;
}

static void test_gradcheck(void) {
  ln_tensor *a = leaf((double[]){ 0.5, -1.5, 2 }, 3), *b = leaf((double[]){ 3, 1, -2 }, 3);
  ln_tensor *in[2] = { a, b };
  char report[512] = "x";
  CHECK_OK(ln_gradcheck(f_good, NULL, in, 2, 1e-6, 1e-5, 1e-3, report, sizeof report));
  CHECK(report[0] == '\0');
  CHECK(ln_tensor_grad(a) == NULL && ln_tensor_grad(b) == NULL);
  CHECK_NEAR(data(a)[1], -1.5, 0);   /* perturbations undone */

  CHECK(ln_gradcheck(f_wrong, NULL, in, 1, 1e-6, 1e-5, 1e-3, report,
                     sizeof report) == LN_ERUNTIME);
  CHECK(strstr(report, "Jacobian mismatch for output 0 with respect to input 0, "
                       "element 0") != NULL);
  /* the values are those of the weighted sum: their ratio is 2 / 2.5 */
  double num = 0, ana = 0;
  CHECK(sscanf(strstr(report, "numerical"), "numerical %lf, analytical %lf",
               &num, &ana) == 2);
  CHECK_NEAR(num / ana, 0.8, 1e-6);

  CHECK(ln_gradcheck(f_null, NULL, in, 1, 1e-6, 1e-5, 1e-3, NULL, 0) == LN_EINVAL);
  CHECK_MSG("callback failed");

  ln_tensor *f = ln_zeros((int64_t[]){ 2 }, 1, LN_F32, LN_DEVICE_CPU);
  ln_tensor_set_requires_grad(f, true);
  CHECK(ln_gradcheck(f_good, NULL, &f, 1, 1e-6, 1e-5, 1e-3, NULL, 0) == LN_EINVAL);
  CHECK_MSG("gradcheck needs float64 inputs");
  ln_tensor_set_requires_grad(a, false);
  CHECK(ln_gradcheck(f_wrong, NULL, in, 1, 1e-6, 1e-5, 1e-3, NULL, 0) == LN_EINVAL);
  CHECK_MSG("expects at least one input tensor to require gradient");
  ln_tensor_release(f);
  ln_tensor_release(b);
  ln_tensor_release(a);
}

/* ---- with the library's ops ---- */

static void test_sum_to_size(void) {
  ln_tensor *a = ln_arange(0, 24, 1, LN_F64);
  ln_tensor *g = ln_view(a, (int64_t[]){ 2, 3, 4 }, 3);
  ln_tensor *r = ln_sum_to_size(g, (int64_t[]){ 2, 3, 4 }, 3);
  CHECK(r == g);
  ln_tensor_release(r);

  r = ln_sum_to_size(g, (int64_t[]){ 3, 1 }, 2);
  CHECK(r && ln_tensor_dim(r) == 2 && ln_tensor_size(r, 0) == 3 &&
        ln_tensor_size(r, 1) == 1);
  for (int j = 0; r && j < 3; j++) {
    double want = 0;
    for (int i = 0; i < 2; i++)
      for (int k = 0; k < 4; k++) want += 12 * i + 4 * j + k;
    CHECK_NEAR(ln_tensor_get(r, (int64_t[]){ j, 0 }), want, 0);
  }
  ln_tensor_release(r);

  r = ln_sum_to_size(g, (int64_t[]){ 1, 3, 1 }, 3);
  CHECK(r && ln_tensor_dim(r) == 3 && ln_tensor_size(r, 1) == 3);
  CHECK_NEAR(ln_tensor_get(r, (int64_t[]){ 0, 2, 0 }), 8 + 9 + 10 + 11 + 20 + 21 + 22 + 23, 0);
  ln_tensor_release(r);

  r = ln_sum_to_size(g, NULL, 0);
  CHECK(r && ln_tensor_dim(r) == 0);
  CHECK_NEAR(r ? data(r)[0] : 0, 23 * 24 / 2, 0);
  ln_tensor_release(r);

  CHECK(ln_sum_to_size(g, (int64_t[]){ 5 }, 1) == NULL);
  CHECK_MSG("size {5} is not expandable to size {2, 3, 4}.");
  CHECK(ln_sum_to_size(g, (int64_t[]){ 1, 2, 3, 4 }, 4) == NULL);
  ln_tensor_release(g);
  ln_tensor_release(a);
}

/* A random float64 leaf that requires grad: normal, or uniform in
** [0.5, 1.5) when positive; transposed (dims 0 and 1 of `sizes` swapped,
** non-contiguous) when asked. */
static ln_tensor *randn_leaf(const int64_t *sizes, int ndim, bool positive,
                             bool transposed) {
  ln_tensor *t = positive ? ln_rand(sizes, ndim, LN_F64, LN_DEVICE_CPU)
                          : ln_randn(sizes, ndim, LN_F64, LN_DEVICE_CPU);
  if (positive)
    for (int64_t i = 0; i < ln_tensor_numel(t); i++) data(t)[i] += 0.5;
  if (transposed) {
    ln_tensor *v = ln_transpose(t, 0, 1);   /* no history: t needs no grad */
    ln_tensor_release(t);
    t = v;
  }
  ln_tensor_set_requires_grad(t, true);
  return t;
}

/* y = x * b + x with b broadcast over rows: dx = b + 1, db = column sums. */
static void test_broadcast_graph(void) {
  ln_tensor *x = randn_leaf((int64_t[]){ 2, 3 }, 2, false, false);
  ln_tensor *b = randn_leaf((int64_t[]){ 3 }, 1, false, false);
  ln_tensor *xb = ln_mul(x, b), *y = ln_add(xb, x), *s = ln_sum(y, NULL, 0, false);
  CHECK(strcmp(ln_tensor_grad_fn(y)->name, "AddBackward0") == 0);
  CHECK_OK(ln_backward(s, NULL, false));
  for (int j = 0; j < 3; j++) {
    CHECK_NEAR(ln_tensor_get(ln_tensor_grad(x), (int64_t[]){ 1, j }), data(b)[j] + 1, 1e-12);
    CHECK_NEAR(data(ln_tensor_grad(b))[j], data(x)[j] + data(x)[3 + j], 1e-12);
  }
  ln_tensor_release(s);
  ln_tensor_release(y);
  ln_tensor_release(xb);
  ln_tensor_release(b);
  ln_tensor_release(x);
}

/* Functions for gradcheck, one per op (or short composition). */
#define GC_FN(name, expr) \
  static ln_tensor *name(ln_tensor *const *x, int n, void *ud) { \
    (void)x; (void)n; (void)ud; \
    return (expr); \
  }
GC_FN(g_add, ln_add(x[0], x[1]))
GC_FN(g_sub, ln_sub(x[0], x[1]))
GC_FN(g_mul, ln_mul(x[0], x[1]))
GC_FN(g_div, ln_div(x[0], x[1]))
GC_FN(g_pow, ln_pow(x[0], x[1]))
GC_FN(g_maximum, ln_binary(LN_MAXIMUM, x[0], x[1]))
GC_FN(g_minimum, ln_binary(LN_MINIMUM, x[0], x[1]))
GC_FN(g_add_scaled, ln_add_scaled(x[0], x[1], -2.5))
GC_FN(g_neg, ln_neg(x[0]))
GC_FN(g_abs, ln_unary(LN_ABS, x[0]))
GC_FN(g_sqrt, ln_unary(LN_SQRT, x[0]))
GC_FN(g_exp, ln_unary(LN_EXP, x[0]))
GC_FN(g_log, ln_unary(LN_LOG, x[0]))
GC_FN(g_relu, ln_unary(LN_RELU, x[0]))
GC_FN(g_sum_all, ln_sum(x[0], NULL, 0, false))
GC_FN(g_sum_dims, ln_sum(x[0], (int[]){ 0, 2 }, 2, false))
GC_FN(g_sum_keep, ln_sum(x[0], (int[]){ -1 }, 1, true))
GC_FN(g_mean_all, ln_mean(x[0], NULL, 0, false))
GC_FN(g_mean_dim, ln_mean(x[0], (int[]){ 1 }, 1, true))
GC_FN(g_var_unbiased, ln_var(x[0], (int[]){ 1 }, 1, 1, false))
GC_FN(g_var_biased, ln_var(x[0], (int[]){ 0, 2 }, 2, 0, true))
GC_FN(g_var_all, ln_var(x[0], NULL, 0, 1, false))
GC_FN(g_max_dim, ln_max(x[0], (int[]){ 1 }, 1, false))
GC_FN(g_min_all, ln_min(x[0], NULL, 0, false))
GC_FN(g_matmul, ln_matmul(x[0], x[1]))
GC_FN(g_clone, ln_clone(x[0], LN_CHANNELS_LAST))
GC_FN(g_transpose, ln_transpose(x[0], 0, 1))
GC_FN(g_permute, ln_permute(x[0], (int[]){ 2, 0, 1 }, 3))
GC_FN(g_narrow, ln_narrow(x[0], 1, 1, 2))
GC_FN(g_select, ln_select(x[0], 0, 1))
GC_FN(g_expand, ln_expand(x[0], (int64_t[]){ 2, -1, 3 }, 3))
GC_FN(g_reshape, ln_reshape(x[0], (int64_t[]){ 3, -1 }, 2))
GC_FN(g_unsqueeze, ln_unsqueeze(x[0], 1))
GC_FN(g_squeeze, ln_squeeze(x[0], 1))
GC_FN(g_flatten, ln_flatten(x[0], 0, 1))
GC_FN(g_cat, ln_cat(x, 2, 1))

/* x * x + exp(x): a leaf used three times through real ops. */
static ln_tensor *g_diamond(ln_tensor *const *x, int n, void *ud) {
  (void)n; (void)ud;
  ln_tensor *sq = ln_mul(x[0], x[0]), *e = ln_unary(LN_EXP, x[0]);
  ln_tensor *r = sq && e ? ln_add(sq, e) : NULL;
  ln_tensor_release(sq);
  ln_tensor_release(e);
  return r;
}

/* contiguous() of a transposed input followed by a product with it. */
static ln_tensor *g_contig(ln_tensor *const *x, int n, void *ud) {
  (void)n; (void)ud;
  ln_tensor *t = ln_transpose(x[0], 0, 1), *c = t ? ln_contiguous(t, LN_CONTIGUOUS) : NULL;
  ln_tensor *r = c ? ln_mul(c, t) : NULL;
  ln_tensor_release(c);
  ln_tensor_release(t);
  return r;
}

typedef struct gc_case {
  const char *name;
  ln_gradcheck_fn fn;
  int n;
  int ndim[2];
  int64_t sizes[2][4];
  bool positive;       /* inputs in [0.5, 1.5) */
  bool transposed;     /* the first input is the transpose of sizes[0] */
} gc_case;

static const gc_case gc_cases[] = {
  { "add", g_add, 2, { 2, 1 }, { { 2, 3 }, { 3 } }, false, false },
  { "add (non-contiguous)", g_add, 2, { 2, 2 }, { { 3, 2 }, { 2, 3 } }, false, true },
  { "sub", g_sub, 2, { 2, 2 }, { { 2, 3 }, { 2, 1 } }, false, false },
  { "mul", g_mul, 2, { 3, 2 }, { { 2, 1, 3 }, { 4, 1 } }, false, false },
  { "div", g_div, 2, { 2, 1 }, { { 2, 3 }, { 3 } }, true, false },
  { "pow", g_pow, 2, { 2, 2 }, { { 2, 3 }, { 2, 3 } }, true, false },
  { "maximum", g_maximum, 2, { 2, 2 }, { { 2, 3 }, { 2, 3 } }, false, false },
  { "minimum", g_minimum, 2, { 2, 1 }, { { 2, 3 }, { 3 } }, false, false },
  { "add_scaled", g_add_scaled, 2, { 2, 1 }, { { 2, 3 }, { 3 } }, false, false },
  { "neg", g_neg, 1, { 2 }, { { 2, 3 } }, false, false },
  { "abs", g_abs, 1, { 2 }, { { 2, 3 } }, false, false },
  { "sqrt", g_sqrt, 1, { 2 }, { { 2, 3 } }, true, false },
  { "exp", g_exp, 1, { 2 }, { { 2, 3 } }, false, true },
  { "log", g_log, 1, { 2 }, { { 2, 3 } }, true, false },
  { "relu", g_relu, 1, { 2 }, { { 2, 3 } }, false, false },
  { "sum all", g_sum_all, 1, { 2 }, { { 2, 3 } }, false, true },
  { "sum dims", g_sum_dims, 1, { 3 }, { { 2, 3, 4 } }, false, false },
  { "sum keepdim", g_sum_keep, 1, { 3 }, { { 2, 3, 4 } }, false, false },
  { "mean all", g_mean_all, 1, { 2 }, { { 2, 3 } }, false, false },
  { "mean dim", g_mean_dim, 1, { 3 }, { { 2, 3, 4 } }, false, false },
  { "var unbiased", g_var_unbiased, 1, { 2 }, { { 3, 4 } }, false, true },
  { "var biased", g_var_biased, 1, { 3 }, { { 2, 3, 4 } }, false, false },
  { "var all", g_var_all, 1, { 2 }, { { 3, 4 } }, false, false },
  { "max dim", g_max_dim, 1, { 2 }, { { 3, 4 } }, false, false },
  { "min all", g_min_all, 1, { 2 }, { { 3, 4 } }, false, false },
  { "matmul mm", g_matmul, 2, { 2, 2 }, { { 3, 2 }, { 3, 4 } }, false, true },
  { "matmul mv", g_matmul, 2, { 2, 1 }, { { 2, 3 }, { 3 } }, false, false },
  { "matmul dot", g_matmul, 2, { 1, 1 }, { { 3 }, { 3 } }, false, false },
  { "matmul bmm", g_matmul, 2, { 3, 3 }, { { 2, 2, 3 }, { 2, 3, 2 } }, false, false },
  { "matmul broadcast", g_matmul, 2, { 3, 2 }, { { 2, 2, 3 }, { 3, 2 } }, false, false },
  { "clone", g_clone, 1, { 4 }, { { 2, 3, 2, 2 } }, false, false },
  { "transpose", g_transpose, 1, { 2 }, { { 2, 3 } }, false, false },
  { "permute", g_permute, 1, { 3 }, { { 2, 3, 4 } }, false, false },
  { "narrow", g_narrow, 1, { 2 }, { { 2, 4 } }, false, false },
  { "select", g_select, 1, { 2 }, { { 2, 3 } }, false, false },
  { "expand", g_expand, 1, { 3 }, { { 1, 4, 3 } }, false, false },
  { "reshape", g_reshape, 1, { 2 }, { { 2, 3 } }, false, true },
  { "unsqueeze", g_unsqueeze, 1, { 2 }, { { 2, 3 } }, false, false },
  { "squeeze", g_squeeze, 1, { 3 }, { { 2, 1, 3 } }, false, false },
  { "flatten", g_flatten, 1, { 3 }, { { 2, 3, 2 } }, false, false },
  { "cat", g_cat, 2, { 2, 2 }, { { 3, 2 }, { 2, 1 } }, false, true },
  { "diamond", g_diamond, 1, { 2 }, { { 2, 3 } }, false, false },
  { "contiguous", g_contig, 1, { 2 }, { { 2, 3 } }, false, false },
};

/* Every differentiable op against central differences, on inputs that
** include broadcasting and non-contiguous (transposed) leaves. */
static void test_gradcheck_ops(void) {
  ln_manual_seed(0);
  for (size_t c = 0; c < sizeof gc_cases / sizeof gc_cases[0]; c++) {
    const gc_case *tc = &gc_cases[c];
    ln_tensor *in[2] = { NULL, NULL };
    for (int i = 0; i < tc->n; i++)
      in[i] = randn_leaf(tc->sizes[i], tc->ndim[i], tc->positive,
                         i == 0 && tc->transposed);
    char report[512];
    ln_status st = ln_gradcheck(tc->fn, NULL, in, tc->n, 1e-6, 1e-5, 1e-4,
                                report, sizeof report);
    CHECK(st == LN_OK);
    if (st != LN_OK) fprintf(stderr, "  gradcheck %s: %s\n", tc->name, report);
    for (int i = 0; i < tc->n; i++) ln_tensor_release(in[i]);
  }
}

int main(void) {
  ln_init();
  int64_t live = ln_tensor_live_count();
  test_grad_mode_and_flags();
  test_diamond_and_accumulation();
  test_retain_graph_and_freed_graph();
  test_roots();
  test_partial_inputs_and_multi_output();
  test_failing_backward();
  test_long_chain();
  test_gradcheck();
  test_sum_to_size();
  test_broadcast_graph();
  test_gradcheck_ops();
  CHECK(ln_tensor_live_count() == live);
  return check_done("test_autograd");
}
