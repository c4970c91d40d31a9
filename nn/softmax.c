/*
** softmax.c -- ln_softmax and ln_log_softmax along one dim, with their
** nodes SoftmaxBackward0 and LogSoftmaxBackward0 (which save the output).
** The input is viewed as (outer, D, inner) after a contiguous copy when
** needed; each (outer, inner) line is one unit of OpenMP work (on another
** device, of the table's kernel; the line's arithmetic is
** nn/layers_shared.h's): its max is subtracted and its sums are taken in
** double. 16-bit inputs go through float32.
**   softmax:     dx = y * (g - sum(g * y))
**   log_softmax: dx = g - exp(y) * sum(g)
*/
#include <stdlib.h>

#include "../core/autograd.h"
#include "layers_device.h"
#include "layers_impl.h"
#include "layers_shared.h"

#define SOFTMAX_PAR_MIN (1 << 14)

typedef ln_softmax_shape sm_shape;

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

/* y = softmax or log_softmax of contiguous x along D, on x's device. */
static ln_status forward_kernel(sm_shape s, const ln_tensor *x, ln_tensor *y, bool take_log) {
  const ln_layer_kernels *lk = ln_layer_kernels_of(x);
  ln_dtype dt = ln_tensor_dtype(x);
  if (lk)
    return lk->softmax_forward(ln_tensor_device(x).index, dt, s, ln_tensor_data(x),
                               ln_tensor_data(y), take_log);
  const void *xp = ln_tensor_data(x);
  void *yp = ln_tensor_data(y);
  int64_t lines = s.outer * s.inner;
#pragma omp parallel for schedule(static) if (lines * s.D > SOFTMAX_PAR_MIN)
  for (int64_t l = 0; l < lines; l++) ln_softmax_line(s, xp, yp, dt == LN_F64, take_log, l);
  return LN_OK;
}

/* dx from the saved output y and the contiguous gradient g, on y's device. */
static ln_status backward_kernel(sm_shape s, const ln_tensor *y, const ln_tensor *g,
                                 ln_tensor *dx, bool take_log) {
  const ln_layer_kernels *lk = ln_layer_kernels_of(y);
  ln_dtype dt = ln_tensor_dtype(y);
  if (lk)
    return lk->softmax_backward(ln_tensor_device(y).index, dt, s, ln_tensor_data(y),
                                ln_tensor_data(g), ln_tensor_data(dx), take_log);
  const void *yp = ln_tensor_data(y), *gp = ln_tensor_data(g);
  void *dp = ln_tensor_data(dx);
  int64_t lines = s.outer * s.inner;
#pragma omp parallel for schedule(static) if (lines * s.D > SOFTMAX_PAR_MIN)
  for (int64_t l = 0; l < lines; l++)
    ln_softmax_line_backward(s, yp, gp, dp, dt == LN_F64, take_log, l);
  return LN_OK;
}

static ln_status softmax_backward(ln_node *node, ln_tensor **grad_out, ln_tensor **grad_in) {
  ln_tensor *y = ln_node_saved(node, 0);
  if (!grad_out[0]) return LN_OK;
  if (!y) return ln_last_status();
  ln_dtype dt = ln_tensor_dtype(y);
  ln_tensor *g = ln_to_dtype(grad_out[0], dt);
  ln_tensor *gc = g ? ln_contiguous(g, LN_CONTIGUOUS) : NULL;
  ln_tensor *dx = gc ? ln_empty(ln_tensor_sizes(y), ln_tensor_dim(y), dt, ln_tensor_device(y))
                     : NULL;
  ln_tensor_release(g);
  sm_shape s = { node->ints[0], node->ints[1], node->ints[2] };
  ln_status st = dx ? backward_kernel(s, y, gc, dx, node->ints[3]) : ln_last_status();
  return ln_layer_grad_result(st, gc, dx, grad_in);
}

typedef struct sm_call { int dim; bool take_log; } sm_call;

static ln_tensor *softmax_run(ln_tensor *x, void *ud) {
  const sm_call *c = ud;
  sm_shape s = shape_of(x, c->dim);
  ln_dtype dt = ln_tensor_dtype(x);
  ln_tensor *xc = ln_contiguous(x, LN_CONTIGUOUS);
  ln_tensor *y = xc ? ln_empty(ln_tensor_sizes(x), ln_tensor_dim(x), dt, ln_tensor_device(x))
                    : NULL;
  ln_status st = y ? forward_kernel(s, xc, y, c->take_log) : ln_last_status();
  ln_tensor_release(xc);
  if (st != LN_OK) {
    ln_tensor_release(y);
    return NULL;
  }
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
      ln_layer_check_float(take_log ? "log_softmax" : "softmax", x,
                           LN_LAYER_HAS(x, softmax_forward)) != LN_OK)
    return NULL;
  ln_dtype dt = ln_tensor_dtype(x);
  return dt == LN_F16 || dt == LN_BF16 ? ln_layer_via_float32(x, softmax_run, &c)
                                       : softmax_run(x, &c);
}

ln_tensor *ln_log_softmax(ln_tensor *x, int dim) { return softmax_common(x, dim, true); }
ln_tensor *ln_softmax(ln_tensor *x, int dim) { return softmax_common(x, dim, false); }
