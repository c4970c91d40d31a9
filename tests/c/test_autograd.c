/*
** test_autograd.c -- the autograd engine: grad mode, leaves, diamonds,
** accumulation, retain_graph and the freed-graph error, root checks,
** multi-output nodes, failing backwards, 100k-node chains (backward and
** release without deep recursion), gradcheck, and no leaked tensors.
** The ops here are written by hand on float64 1-D tensors, so that the
** engine is tested on its own; tests with the library's ops come after.
*/
#include <string.h>

#include "check.h"
#include "core/autograd.h"
#include "core/gradcheck.h"
#include "core/ops.h"
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
  CHECK(ln_tensor_live_count() == live);
  return check_done("test_autograd");
}
