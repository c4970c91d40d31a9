/*
** softmax.c -- ln_softmax and ln_log_softmax along one dim, with their
** nodes SoftmaxBackward0 and LogSoftmaxBackward0 (which save the output).
** The input is viewed as (outer, D, inner) after a contiguous copy when
** needed; each (outer, inner) line is one unit of OpenMP work: its max is
** subtracted and its sums are taken in double. 16-bit inputs go through
** float32.
**   softmax:     dx = y * (g - sum(g * y))
**   log_softmax: dx = g - exp(y) * sum(g)
*/
#include <math.h>
#include <stdlib.h>

#include "../core/autograd.h"
#include "layers_impl.h"

#define SOFTMAX_PAR_MIN (1 << 14)

typedef struct sm_shape { int64_t outer, D, inner; } sm_shape;

static inline double ld(const void *p, int64_t i, bool f64) {
  return f64 ? ((const double *)p)[i] : (double)((const float *)p)[i];
}

static inline void st(void *p, int64_t i, bool f64, double v) {
  if (f64) ((double *)p)[i] = v;
  else ((float *)p)[i] = (float)v;
}

static sm_shape shape_of(const ln_tensor *t, int dim) {
  sm_shape s = { 1, 1, 1 };
  for (int d = 0; d < ln_tensor_dim(t); d++) {
    int64_t n = ln_tensor_size(t, d);
    if (d < dim) s.outer *= n;
    else if (d == dim) s.D = n;
    else s.inner *= n;
  }
  return s;
}

/* y = softmax or log_softmax of contiguous x along D. */
static void forward_kernel(sm_shape s, const void *x, void *y, bool f64, bool take_log) {
  int64_t lines = s.outer * s.inner;
#pragma omp parallel for schedule(static) if (lines * s.D > SOFTMAX_PAR_MIN)
  for (int64_t l = 0; l < lines; l++) {
    int64_t base = l / s.inner * s.D * s.inner + l % s.inner;
    double mx = -INFINITY, sum = 0;
    for (int64_t k = 0; k < s.D; k++) mx = fmax(mx, ld(x, base + k * s.inner, f64));
    for (int64_t k = 0; k < s.D; k++) sum += exp(ld(x, base + k * s.inner, f64) - mx);
    double lse = mx + log(sum);
    for (int64_t k = 0; k < s.D; k++) {
      double v = ld(x, base + k * s.inner, f64);
      st(y, base + k * s.inner, f64, take_log ? v - lse : exp(v - lse));
    }
  }
}

static void backward_kernel(sm_shape s, const void *y, const void *g, void *dx, bool f64,
                            bool take_log) {
  int64_t lines = s.outer * s.inner;
#pragma omp parallel for schedule(static) if (lines * s.D > SOFTMAX_PAR_MIN)
  for (int64_t l = 0; l < lines; l++) {
    int64_t base = l / s.inner * s.D * s.inner + l % s.inner;
    double sum = 0;
    for (int64_t k = 0; k < s.D; k++) {
      int64_t i = base + k * s.inner;
      sum += take_log ? ld(g, i, f64) : ld(g, i, f64) * ld(y, i, f64);
    }
    for (int64_t k = 0; k < s.D; k++) {
      int64_t i = base + k * s.inner;
      double gi = ld(g, i, f64), yi = ld(y, i, f64);
      st(dx, i, f64, take_log ? gi - exp(yi) * sum : yi * (gi - sum));
    }
  }
}

static ln_status softmax_backward(ln_node *node, ln_tensor **grad_out, ln_tensor **grad_in) {
  ln_tensor *y = ln_node_saved(node, 0);
  if (!grad_out[0]) return LN_OK;
  if (!y) return ln_last_status();
  ln_dtype dt = ln_tensor_dtype(y);
  ln_tensor *g = ln_to_dtype(grad_out[0], dt);
  ln_tensor *gc = g ? ln_contiguous(g, LN_CONTIGUOUS) : NULL;
  ln_tensor *dx = gc ? ln_empty(ln_tensor_sizes(y), ln_tensor_dim(y), dt, LN_DEVICE_CPU) : NULL;
  ln_tensor_release(g);
  if (!dx) {
    ln_tensor_release(gc);
    return ln_last_status();
  }
  sm_shape s = { node->ints[0], node->ints[1], node->ints[2] };
  backward_kernel(s, ln_tensor_data(y), ln_tensor_data(gc), ln_tensor_data(dx),
                  dt == LN_F64, node->ints[3]);
  ln_tensor_release(gc);
  grad_in[0] = dx;
  return LN_OK;
}

typedef struct sm_call { int dim; bool take_log; } sm_call;

static ln_tensor *softmax_run(ln_tensor *x, void *ud) {
  const sm_call *c = ud;
  sm_shape s = shape_of(x, c->dim);
  ln_dtype dt = ln_tensor_dtype(x);
  ln_tensor *xc = ln_contiguous(x, LN_CONTIGUOUS);
  ln_tensor *y = xc ? ln_empty(ln_tensor_sizes(x), ln_tensor_dim(x), dt, LN_DEVICE_CPU) : NULL;
  if (!y) {
    ln_tensor_release(xc);
    return NULL;
  }
  forward_kernel(s, ln_tensor_data(xc), ln_tensor_data(y), dt == LN_F64, c->take_log);
  ln_tensor_release(xc);
  if (!ln_any_requires_grad(&x, 1)) return y;
  ln_node *node = ln_node_new(c->take_log ? "LogSoftmaxBackward0" : "SoftmaxBackward0",
                              softmax_backward, &x, 1, 1);
  ln_tensor *saved = node ? ln_detach(y) : NULL;
  if (!saved) {
    ln_node_release(node);
    ln_tensor_release(y);
    return NULL;
  }
  node->ints[0] = s.outer;
  node->ints[1] = s.D;
  node->ints[2] = s.inner;
  node->ints[3] = c->take_log;
  ln_node_save(node, saved);
  ln_tensor_release(saved);
  ln_set_history(y, node, 0);
  ln_node_release(node);
  return y;
}

static ln_tensor *softmax_common(ln_tensor *x, int dim, bool take_log) {
  if (!x) {
    ln_error(LN_EINVAL, "%s: input expected, got NULL", take_log ? "log_softmax" : "softmax");
    return NULL;
  }
  sm_call c = { 0, take_log };
  int nd = ln_tensor_dim(x);
  if (ln_wrap_dim(dim, nd ? nd : 1, &c.dim) != LN_OK ||
      ln_layer_check_float(take_log ? "log_softmax" : "softmax", x) != LN_OK)
    return NULL;
  ln_dtype dt = ln_tensor_dtype(x);
  return dt == LN_F16 || dt == LN_BF16 ? ln_layer_via_float32(x, softmax_run, &c)
                                       : softmax_run(x, &c);
}

ln_tensor *ln_log_softmax(ln_tensor *x, int dim) { return softmax_common(x, dim, true); }
ln_tensor *ln_softmax(ln_tensor *x, int dim) { return softmax_common(x, dim, false); }
