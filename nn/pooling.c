/*
** pooling.c -- ln_max_pool2d and ln_adaptive_avg_pool2d (PyTorch's
** functional forms, checks and messages), their autograd nodes
** (MaxPool2DWithIndicesBackward0, AdaptiveAvgPool2DBackward0), and the
** MaxPool2d and AdaptiveAvgPool2d modules.
**
** Kernels take float32 or float64 (16-bit inputs go through float32) and
** read and write through strides, so that any layout works. On the CPU one
** (sample, channel) plane is one iteration of an OpenMP loop, so no two
** threads write the same element; on another device the table of
** nn/layers_device.h runs the same per-output arithmetic
** (nn/layers_shared.h). The output keeps the input's memory format. The
** max-pool node saves, for each output, the plane offset (ih * W + iw) of
** its maximum (an int64 tensor on the input's device).
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/autograd.h"
#include "layers_device.h"
#include "layers_impl.h"
#include "layers_shared.h"

#define POOL_PAR_MIN (1 << 14)   /* outputs below which loops stay serial */

typedef ln_pool_geom pool_geom;


/* Run op on a 4-D view of x: (C, H, W) gets a batch of one; 16-bit
** inputs go through float32. */
typedef struct pool_call {
  ln_tensor *(*run)(ln_tensor *x4, const void *params);
  const void *params;
} pool_call;

static ln_tensor *call_f32(ln_tensor *x, void *ud) {
  const pool_call *c = ud;
  return c->run(x, c->params);
}

static ln_tensor *pool_dispatch(ln_tensor *x, const pool_call *c) {
  bool batched = ln_tensor_dim(x) == 4;
  ln_tensor *x4 = batched ? x : ln_unsqueeze(x, 0);
  if (!x4) return NULL;
  ln_dtype dt = ln_tensor_dtype(x4);
  ln_tensor *y = dt == LN_F16 || dt == LN_BF16 ? ln_layer_via_float32(x4, call_f32, (void *)c)
                                               : c->run(x4, c->params);
  if (batched) return y;
  ln_tensor_release(x4);
  ln_tensor *y3 = y ? ln_squeeze(y, 0) : NULL;
  ln_tensor_release(y);
  return y3;
}

/* A gradient for an input of g's sizes, in g's format, on dev: zeroed on
** the CPU, whose loops add into it; uninitialised on a device, whose
** kernels write every element. */
static ln_tensor *grad_for(const pool_geom *g, ln_dtype dt, ln_device dev) {
  int64_t sizes[4] = { g->N, g->C, g->H, g->W };
  ln_tensor *t = ln_empty_format(sizes, 4, dt, dev, g->fmt);
  if (t && dev.type == LN_CPU && ln_zero_(t) != LN_OK) {
    ln_tensor_release(t);
    return NULL;
  }
  return t;
}

/* The (N, C, OH, OW) output for x of geometry g, in g's format, on x's
** device. When x needs a graph, also *node, a new node named name whose
** extra (freed with it) holds g; else *node is NULL. On failure returns
** NULL with the error set and nothing held. */
static ln_tensor *pool_output(ln_tensor *x, const pool_geom *g, const char *name,
                              ln_backward_fn backward, const char *op, ln_node **node) {
  ln_dtype dt = ln_tensor_dtype(x);
  int64_t sizes[4] = { g->N, g->C, g->OH, g->OW };
  ln_tensor *y = ln_empty_format(sizes, 4, dt, ln_tensor_device(x), g->fmt);
  bool grad = ln_any_requires_grad(&x, 1);
  pool_geom *s = grad ? malloc(sizeof *s) : NULL;
  *node = s ? ln_node_new(name, backward, &x, 1, 1) : NULL;
  if (!y || (grad && !*node)) {
    if (grad && !s) ln_error(LN_ENOMEM, "out of memory in %s", op);
    free(s);
    ln_node_release(*node);
    *node = NULL;
    ln_tensor_release(y);
    return NULL;
  }
  if (*node) {
    *s = *g;
    (*node)->extra = s;
    (*node)->free_extra = free;
    (*node)->ints[0] = dt;
  }
  return y;
}

/* Records node (from pool_output, or NULL) as y's history and drops it;
** on a failed status drops both and returns NULL. */
static ln_tensor *pool_finish(ln_tensor *y, ln_node *node, ln_status st) {
  if (st == LN_OK && node) ln_set_history(y, node, 0);
  ln_node_release(node);
  if (st == LN_OK) return y;
  ln_tensor_release(y);
  return NULL;
}

/* ---- max_pool2d ---- */

/* PyTorch's pooling_output_shape: floor (or ceil) division, and in ceil
** mode the last window must start inside the input or its left padding. */
static int64_t pool_out_size(int64_t in, int64_t k, int64_t pad, int64_t stride,
                             int64_t dil, bool ceil_mode) {
  int64_t num = in + 2 * pad - dil * (k - 1) - 1 + (ceil_mode ? stride - 1 : 0);
  int64_t out = (num >= 0 ? num / stride : -((-num + stride - 1) / stride)) + 1;
  if (ceil_mode && (out - 1) * stride >= in + pad) out--;
  return out;
}

static ln_status check_max_pool(const ln_tensor *x, const ln_pool2d_params *p,
                                const int64_t stride[2]) {
  char buf[96];
  int nd = ln_tensor_dim(x);
  if (p->kernel[0] <= 0 || p->kernel[1] <= 0)
    return ln_error(LN_EINVAL, "kernel size should be greater than zero, but got kH: %lld "
                    "kW: %lld", (long long)p->kernel[0], (long long)p->kernel[1]);
  if (stride[0] <= 0 || stride[1] <= 0)
    return ln_error(LN_EINVAL, "stride should not be zero");
  if (p->padding[0] < 0 || p->padding[1] < 0)
    return ln_error(LN_EINVAL, "pad must be non-negative, but got pad: %lld",
                    (long long)(p->padding[0] < 0 ? p->padding[0] : p->padding[1]));
  if (p->dilation[0] <= 0 || p->dilation[1] <= 0)
    return ln_error(LN_EINVAL, "dilation should be greater than zero, but got dilationH: "
                    "%lld dilationW: %lld", (long long)p->dilation[0],
                    (long long)p->dilation[1]);
  for (int d = 0; d < 2; d++)
    if (p->padding[d] > (p->dilation[d] * (p->kernel[d] - 1) + 1) / 2)
      return ln_error(LN_EINVAL, "pad should be at most half of effective kernel size, but "
                      "got pad=%lld, kernel_size=%lld and dilation=%lld",
                      (long long)p->padding[d], (long long)p->kernel[d],
                      (long long)p->dilation[d]);
  if (nd != 3 && nd != 4)
    return ln_error(LN_EINVAL, "non-empty 3D or 4D (batch mode) tensor expected for input");
  for (int d = nd - 3; d < nd; d++)
    if (ln_tensor_size(x, d) == 0)
      return ln_error(LN_EINVAL, "Expected 3D or 4D (batch mode) tensor with optional 0 dim "
                      "batch size for input, but got:%s", ln_layer_sizes_str(x, buf, sizeof buf));
  return ln_layer_check_float("max_pool2d", x, LN_LAYER_HAS(x, max_pool2d_forward));
}

/* y = window maxima; idx (NULL when not wanted) = their plane offsets. */
static void max_pool_kernel(const pool_geom *g, const void *x, const int64_t *xs, void *y,
                            const int64_t *ys, int64_t *idx, bool f64) {
  int64_t planes = g->N * g->C;
#pragma omp parallel for schedule(static) if (planes * g->OH * g->OW > POOL_PAR_MIN)
  for (int64_t q = 0; q < planes; q++) {
    int64_t n = q / g->C, c = q % g->C;
    int64_t *ip = idx ? idx + q * g->OH * g->OW : NULL;
    for (int64_t oh = 0; oh < g->OH; oh++) {
      for (int64_t ow = 0; ow < g->OW; ow++) {
        int64_t arg;
        double best = ln_max_pool_at(g, x, xs, f64, n, c, oh, ow, &arg);
        ln_sh_st(y, ln_sh_at(ys, n, c, oh, ow), f64, best);
        if (ip) *ip++ = arg;
      }
    }
  }
}

/* dx += each gy at the position of its maximum (dx zeroed). */
static void max_pool_backward_kernel(const pool_geom *g, const int64_t *idx, const void *gp,
                                     const int64_t *gs, void *dp, const int64_t *ds,
                                     bool f64) {
  int64_t planes = g->N * g->C;
#pragma omp parallel for schedule(static) if (planes * g->OH * g->OW > POOL_PAR_MIN)
  for (int64_t q = 0; q < planes; q++) {
    int64_t n = q / g->C, c = q % g->C;
    const int64_t *ip = idx + q * g->OH * g->OW;
    for (int64_t oh = 0; oh < g->OH; oh++)
      for (int64_t ow = 0; ow < g->OW; ow++, ip++) {
        if (*ip < 0) continue;
        int64_t k = ln_sh_at(ds, n, c, *ip / g->W, *ip % g->W);
        ln_sh_st(dp, k, f64, ln_sh_ld(dp, k, f64) + ln_sh_ld(gp, ln_sh_at(gs, n, c, oh, ow), f64));
      }
  }
}

/* Saved: the indices of the maxima (int64, on the input's device). */
static ln_status max_pool_backward(ln_node *node, ln_tensor **grad_out, ln_tensor **grad_in) {
  const pool_geom *g = node->extra;
  if (!grad_out[0]) return LN_OK;
  ln_tensor *idx = ln_node_saved(node, 0);
  if (!idx) return ln_last_status();
  ln_dtype dt = (ln_dtype)node->ints[0];
  ln_device dev = ln_tensor_device(idx);
  ln_tensor *gy = ln_to_dtype(grad_out[0], dt), *dx = gy ? grad_for(g, dt, dev) : NULL;
  ln_status st = dx ? LN_OK : ln_last_status();
  const ln_layer_kernels *lk = ln_layer_kernels_of(idx);
  if (dx && lk)
    st = lk->max_pool2d_backward(dev.index, dt, g, ln_tensor_data(idx), ln_tensor_data(gy),
                                 ln_tensor_strides(gy), ln_tensor_data(dx),
                                 ln_tensor_strides(dx));
  else if (dx)
    max_pool_backward_kernel(g, ln_tensor_data(idx), ln_tensor_data(gy), ln_tensor_strides(gy),
                             ln_tensor_data(dx), ln_tensor_strides(dx), dt == LN_F64);
  return ln_layer_grad_result(st, gy, dx, grad_in);
}

static ln_tensor *max_pool_run(ln_tensor *x, const void *params) {
  const ln_pool2d_params *p = params;
  pool_geom g = {
    .N = ln_tensor_size(x, 0), .C = ln_tensor_size(x, 1), .H = ln_tensor_size(x, 2),
    .W = ln_tensor_size(x, 3), .kh = p->kernel[0], .kw = p->kernel[1],
    .sh = p->stride[0], .sw = p->stride[1], .ph = p->padding[0], .pw = p->padding[1],
    .dh = p->dilation[0], .dw = p->dilation[1], .fmt = ln_tensor_suggest_format(x)
  };
  g.OH = pool_out_size(g.H, g.kh, g.ph, g.sh, g.dh, p->ceil_mode);
  g.OW = pool_out_size(g.W, g.kw, g.pw, g.sw, g.dw, p->ceil_mode);
  if (g.OH < 1 || g.OW < 1) {
    ln_error(LN_EINVAL, "Given input size: (%lldx%lldx%lld). Calculated output size: "
             "(%lldx%lldx%lld). Output size is too small", (long long)g.C, (long long)g.H,
             (long long)g.W, (long long)g.C, (long long)g.OH, (long long)g.OW);
    return NULL;
  }
  ln_node *node;
  ln_tensor *y = pool_output(x, &g, "MaxPool2DWithIndicesBackward0", max_pool_backward,
                             "max_pool2d", &node);
  if (!y) return NULL;
  int64_t nout = g.N * g.C * g.OH * g.OW;
  ln_tensor *idx = node ? ln_empty(&nout, 1, LN_I64, ln_tensor_device(x)) : NULL;
  ln_status st = node && !idx ? ln_last_status() : LN_OK;
  int64_t *ip = idx ? ln_tensor_data(idx) : NULL;
  const ln_layer_kernels *lk = ln_layer_kernels_of(x);
  bool f64 = ln_tensor_dtype(x) == LN_F64;
  if (st == LN_OK && lk)
    st = lk->max_pool2d_forward(ln_tensor_device(x).index, ln_tensor_dtype(x), &g,
                                ln_tensor_data(x), ln_tensor_strides(x), ln_tensor_data(y),
                                ln_tensor_strides(y), ip);
  else if (st == LN_OK)
    max_pool_kernel(&g, ln_tensor_data(x), ln_tensor_strides(x), ln_tensor_data(y),
                    ln_tensor_strides(y), ip, f64);
  if (st == LN_OK && node) ln_node_save(node, idx);
  ln_tensor_release(idx);
  return pool_finish(y, node, st);
}

ln_tensor *ln_max_pool2d(ln_tensor *x, const ln_pool2d_params *params) {
  if (!x || !params) {
    ln_error(LN_EINVAL, "max_pool2d: input and parameters expected, got NULL");
    return NULL;
  }
  ln_pool2d_params p = *params;
  if (p.stride[0] == 0 && p.stride[1] == 0) memcpy(p.stride, p.kernel, sizeof p.stride);
  if (check_max_pool(x, &p, p.stride) != LN_OK) return NULL;
  pool_call c = { max_pool_run, &p };
  return pool_dispatch(x, &c);
}

/* ---- adaptive_avg_pool2d ---- */

/* y = window means of x (forward), or dx += gy / window size (backward:
** x is gy, y is dx). */
static void adaptive_kernel(const pool_geom *g, const void *x, const int64_t *xs, void *y,
                            const int64_t *ys, bool f64, bool backward) {
  int64_t planes = g->N * g->C;
#pragma omp parallel for schedule(static) if (planes * g->OH * g->OW > POOL_PAR_MIN)
  for (int64_t q = 0; q < planes; q++) {
    int64_t n = q / g->C, c = q % g->C;
    for (int64_t oh = 0; oh < g->OH; oh++) {
      int64_t h0 = ln_adaptive_start(oh, g->OH, g->H), h1 = ln_adaptive_end(oh, g->OH, g->H);
      for (int64_t ow = 0; ow < g->OW; ow++) {
        if (!backward) {
          ln_sh_st(y, ln_sh_at(ys, n, c, oh, ow), f64,
                   ln_adaptive_avg_at(g, x, xs, f64, n, c, oh, ow));
          continue;
        }
        int64_t w0 = ln_adaptive_start(ow, g->OW, g->W), w1 = ln_adaptive_end(ow, g->OW, g->W);
        double v = ln_sh_ld(x, ln_sh_at(xs, n, c, oh, ow), f64) / (double)((h1 - h0) * (w1 - w0));
        for (int64_t ih = h0; ih < h1; ih++)
          for (int64_t iw = w0; iw < w1; iw++) {
            int64_t k = ln_sh_at(ys, n, c, ih, iw);
            ln_sh_st(y, k, f64, ln_sh_ld(y, k, f64) + v);
          }
      }
    }
  }
}

/* adaptive_kernel on x's device (the table's entry off the CPU). */
static ln_status adaptive_on(const ln_tensor *x, const pool_geom *g, ln_tensor *y,
                             bool backward) {
  const ln_layer_kernels *lk = ln_layer_kernels_of(x);
  ln_dtype dt = ln_tensor_dtype(x);
  if (lk)
    return lk->adaptive_avg_pool2d(ln_tensor_device(x).index, dt, g, ln_tensor_data(x),
                                   ln_tensor_strides(x), ln_tensor_data(y),
                                   ln_tensor_strides(y), backward);
  adaptive_kernel(g, ln_tensor_data(x), ln_tensor_strides(x), ln_tensor_data(y),
                  ln_tensor_strides(y), dt == LN_F64, backward);
  return LN_OK;
}

static ln_status adaptive_backward(ln_node *node, ln_tensor **grad_out, ln_tensor **grad_in) {
  const pool_geom *g = node->extra;
  if (!grad_out[0]) return LN_OK;
  ln_dtype dt = (ln_dtype)node->ints[0];
  ln_tensor *gy = ln_to_dtype(grad_out[0], dt);
  ln_tensor *dx = gy ? grad_for(g, dt, ln_tensor_device(gy)) : NULL;
  ln_status st = dx ? adaptive_on(gy, g, dx, true) : ln_last_status();
  return ln_layer_grad_result(st, gy, dx, grad_in);
}

static ln_tensor *adaptive_run(ln_tensor *x, const void *params) {
  const int64_t *size = params;
  pool_geom g = {
    .N = ln_tensor_size(x, 0), .C = ln_tensor_size(x, 1), .H = ln_tensor_size(x, 2),
    .W = ln_tensor_size(x, 3), .fmt = ln_tensor_suggest_format(x)
  };
  g.OH = size[0] < 0 ? g.H : size[0];
  g.OW = size[1] < 0 ? g.W : size[1];
  ln_node *node;
  ln_tensor *y = pool_output(x, &g, "AdaptiveAvgPool2DBackward0", adaptive_backward,
                             "adaptive_avg_pool2d", &node);
  if (!y) return NULL;
  return pool_finish(y, node, adaptive_on(x, &g, y, false));
}

ln_tensor *ln_adaptive_avg_pool2d(ln_tensor *x, const int64_t output_size[2]) {
  char buf[96];
  if (!x || !output_size) {
    ln_error(LN_EINVAL, "adaptive_avg_pool2d: input and output size expected, got NULL");
    return NULL;
  }
  int nd = ln_tensor_dim(x);
  if (nd != 3 && nd != 4) {
    ln_error(LN_EINVAL, "adaptive_avg_pool2d(): Expected 3D or 4D tensor, but got %s",
             ln_layer_sizes_str(x, buf, sizeof buf));
    return NULL;
  }
  for (int d = nd - 3; d < nd; d++)
    if (ln_tensor_size(x, d) == 0) {
      ln_error(LN_EINVAL, "adaptive_avg_pool2d(): Expected input to have non-zero size for "
               "non-batch dimensions, but input has sizes %s with dimension %d being empty",
               ln_layer_sizes_str(x, buf, sizeof buf), d);
      return NULL;
    }
  if (output_size[0] < -1 || output_size[1] < -1) {
    ln_error(LN_EINVAL, "adaptive_avg_pool2d: elements of output_size must be greater than "
             "or equal to 0 but received {%lld, %lld}", (long long)output_size[0],
             (long long)output_size[1]);
    return NULL;
  }
  if (ln_layer_check_float("adaptive_avg_pool2d", x, LN_LAYER_HAS(x, adaptive_avg_pool2d)) !=
      LN_OK)
    return NULL;
  pool_call c = { adaptive_run, output_size };
  return pool_dispatch(x, &c);
}

/* ---- modules ---- */

typedef struct maxpool_priv {
  ln_pool2d_params p;
  unsigned pairs;
} maxpool_priv;

typedef struct adaptive_priv {
  int64_t size[2];
  bool pair;
} adaptive_priv;

/* MaxPool2d.forward: ceil_mode read from the attribute. */
static ln_tensor *max_pool_forward(ln_module *m, ln_tensor *const *in, int n) {
  ln_pool2d_params p = ((maxpool_priv *)ln_module_priv(m))->p;
  if (ln_layer_check_inputs(m, in, n, 1) != LN_OK ||
      ln_layer_attr_bool(m, "ceil_mode", &p.ceil_mode) != LN_OK)
    return NULL;
  return ln_max_pool2d(in[0], &p);
}

/* "kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=false" */
static void max_pool_repr(ln_module *m, char *buf, size_t size) {
  const maxpool_priv *mp = ln_module_priv(m);
  const int64_t *v[4] = { mp->p.kernel, mp->p.stride, mp->p.padding, mp->p.dilation };
  static const char *const names[4] = { "kernel_size", "stride", "padding", "dilation" };
  size_t k = 0;
  for (int i = 0; i < 4; i++) {
    char s[48];
    ln_layer_append(buf, size, &k, "%s=%s, ", names[i],
                    ln_layer_pair_str(v[i], mp->pairs & (1u << i), s, sizeof s));
  }
  ln_layer_append(buf, size, &k, "ceil_mode=%s",
                  ln_module_attr_bool(m, "ceil_mode", false) ? "true" : "false");
}

static const ln_module_type max_pool_type = {
  .name = "MaxPool2d", .version = 1, .forward = max_pool_forward,
  .extra_repr = max_pool_repr, .free_priv = ln_layer_free_priv,
};

ln_module *ln_max_pool2d_new(const ln_pool2d_params *p, unsigned pairs) {
  maxpool_priv mp = { .p = *p, .pairs = pairs };
  if (mp.p.stride[0] == 0 && mp.p.stride[1] == 0) {
    memcpy(mp.p.stride, mp.p.kernel, sizeof mp.p.stride);
    mp.pairs = (mp.pairs & ~(unsigned)LN_POOL_PAIR_STRIDE) |
               (pairs & LN_POOL_PAIR_KERNEL ? LN_POOL_PAIR_STRIDE : 0);
  }
  ln_module *m = ln_layer_module_new(&max_pool_type, &mp, sizeof mp);
  ln_attr a = { .kind = LN_ATTR_BOOL, .u.b = p->ceil_mode };
  if (m && ln_module_set_attr(m, "ceil_mode", a) != LN_OK) {
    ln_module_release(m);
    return NULL;
  }
  return m;
}

const ln_pool2d_params *ln_max_pool2d_module_params(const ln_module *m, unsigned *pairs) {
  if (!m || ln_module_get_type(m) != &max_pool_type) return NULL;
  const maxpool_priv *mp = ln_module_priv(m);
  if (pairs) *pairs = mp->pairs;
  return &mp->p;
}

static ln_tensor *adaptive_forward(ln_module *m, ln_tensor *const *in, int n) {
  if (ln_layer_check_inputs(m, in, n, 1) != LN_OK) return NULL;
  return ln_adaptive_avg_pool2d(in[0], ((adaptive_priv *)ln_module_priv(m))->size);
}

/* "output_size=5", "output_size=(2, 3)"; None prints as false in Lua's words. */
static void adaptive_repr(ln_module *m, char *buf, size_t size) {
  const adaptive_priv *ap = ln_module_priv(m);
  char s[2][24];
  for (int d = 0; d < 2; d++) {
    if (ap->size[d] < 0) snprintf(s[d], sizeof s[d], "false");
    else snprintf(s[d], sizeof s[d], "%lld", (long long)ap->size[d]);
  }
  if (ap->pair) snprintf(buf, size, "output_size=(%s, %s)", s[0], s[1]);
  else snprintf(buf, size, "output_size=%s", s[0]);
}

static const ln_module_type adaptive_type = {
  .name = "AdaptiveAvgPool2d", .version = 1, .forward = adaptive_forward,
  .extra_repr = adaptive_repr, .free_priv = ln_layer_free_priv,
};

ln_module *ln_adaptive_avg_pool2d_new(const int64_t output_size[2], bool pair) {
  adaptive_priv ap = { .size = { output_size[0], output_size[1] }, .pair = pair };
  return ln_layer_module_new(&adaptive_type, &ap, sizeof ap);
}

bool ln_adaptive_avg_pool2d_module_size(const ln_module *m, int64_t output_size[2],
                                        bool *pair) {
  if (!m || ln_module_get_type(m) != &adaptive_type) return false;
  const adaptive_priv *ap = ln_module_priv(m);
  memcpy(output_size, ap->size, sizeof ap->size);
  if (pair) *pair = ap->pair;
  return true;
}
