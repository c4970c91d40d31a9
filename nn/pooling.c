/*
** pooling.c -- ln_max_pool2d and ln_adaptive_avg_pool2d (PyTorch's
** functional forms, checks and messages), their autograd nodes
** (MaxPool2DWithIndicesBackward0, AdaptiveAvgPool2DBackward0), and the
** MaxPool2d and AdaptiveAvgPool2d modules.
**
** Kernels take float32 or float64 (16-bit inputs go through float32) and
** read and write through strides, one (sample, channel) plane per
** iteration of an OpenMP loop, so that any layout works and no two
** threads write the same element. The output keeps the input's memory
** format. The max-pool node keeps, for each output, the plane offset
** (ih * W + iw) of its maximum.
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/autograd.h"
#include "layers_impl.h"

#define POOL_PAR_MIN (1 << 14)   /* outputs below which loops stay serial */

/* The geometry both pools share: input (N, C, H, W), output (OH, OW). */
typedef struct pool_geom {
  int64_t N, C, H, W, OH, OW;
  int64_t kh, kw, sh, sw, ph, pw, dh, dw;   /* max pool only */
  ln_memory_format fmt;
} pool_geom;

static inline double ld(const void *p, int64_t i, bool f64) {
  return f64 ? ((const double *)p)[i] : (double)((const float *)p)[i];
}

static inline void st(void *p, int64_t i, bool f64, double v) {
  if (f64) ((double *)p)[i] = v;
  else ((float *)p)[i] = (float)v;
}

/* Element (n, c, h, w) of a 4-D tensor with strides s. */
static inline int64_t at(const int64_t *s, int64_t n, int64_t c, int64_t h, int64_t w) {
  return n * s[0] + c * s[1] + h * s[2] + w * s[3];
}

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

/* A zeroed gradient for an input of g's sizes, in g's format. */
static ln_tensor *zeros_for(const pool_geom *g, ln_dtype dt) {
  int64_t sizes[4] = { g->N, g->C, g->H, g->W };
  ln_tensor *t = ln_empty_format(sizes, 4, dt, LN_DEVICE_CPU, g->fmt);
  if (t && ln_zero_(t) != LN_OK) {
    ln_tensor_release(t);
    return NULL;
  }
  return t;
}

/* The (N, C, OH, OW) output for x of geometry g, in g's format. When x
** needs a graph, also *node, a new node named name whose extra (freed with
** it) holds g followed by extra_bytes more for the op's use; else *node is
** NULL. On failure returns NULL with the error set and nothing held. */
static ln_tensor *pool_output(ln_tensor *x, const pool_geom *g, const char *name,
                              ln_backward_fn backward, size_t extra_bytes, const char *op,
                              ln_node **node) {
  ln_dtype dt = ln_tensor_dtype(x);
  int64_t sizes[4] = { g->N, g->C, g->OH, g->OW };
  ln_tensor *y = ln_empty_format(sizes, 4, dt, LN_DEVICE_CPU, g->fmt);
  bool grad = ln_any_requires_grad(&x, 1);
  pool_geom *s = grad ? malloc(sizeof *s + extra_bytes) : NULL;
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

/* Records node (from pool_output, or NULL) as y's history and drops it. */
static void pool_finish(ln_tensor *y, ln_node *node) {
  if (!node) return;
  ln_set_history(y, node, 0);
  ln_node_release(node);
}

/* ---- max_pool2d ---- */

typedef struct maxpool_saved {
  pool_geom g;
  int64_t idx[];   /* N * C * OH * OW plane offsets, plane by plane */
} maxpool_saved;
_Static_assert(offsetof(maxpool_saved, idx) == sizeof(pool_geom),
               "pool_output allocates the indices right after the geometry");

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
  return ln_layer_check_float("max_pool2d", x);
}

static void max_pool_kernel(const pool_geom *g, const void *x, const int64_t *xs, void *y,
                            const int64_t *ys, int64_t *idx, bool f64) {
  int64_t planes = g->N * g->C;
#pragma omp parallel for schedule(static) if (planes * g->OH * g->OW > POOL_PAR_MIN)
  for (int64_t q = 0; q < planes; q++) {
    int64_t n = q / g->C, c = q % g->C;
    int64_t *ip = idx ? idx + q * g->OH * g->OW : NULL;
    for (int64_t oh = 0; oh < g->OH; oh++) {
      for (int64_t ow = 0; ow < g->OW; ow++) {
        double best = -INFINITY;
        int64_t arg = -1;
        for (int64_t i = 0; i < g->kh; i++) {
          int64_t ih = oh * g->sh - g->ph + i * g->dh;
          if (ih < 0 || ih >= g->H) continue;
          for (int64_t j = 0; j < g->kw; j++) {
            int64_t iw = ow * g->sw - g->pw + j * g->dw;
            if (iw < 0 || iw >= g->W) continue;
            double v = ld(x, at(xs, n, c, ih, iw), f64);
            if (arg < 0 || v > best || isnan(v)) {
              best = v;
              arg = ih * g->W + iw;
            }
          }
        }
        st(y, at(ys, n, c, oh, ow), f64, best);
        if (ip) *ip++ = arg;
      }
    }
  }
}

static ln_status max_pool_backward(ln_node *node, ln_tensor **grad_out, ln_tensor **grad_in) {
  const maxpool_saved *s = node->extra;
  const pool_geom *g = &s->g;
  if (!grad_out[0]) return LN_OK;
  ln_dtype dt = (ln_dtype)node->ints[0];
  ln_tensor *gy = ln_to_dtype(grad_out[0], dt), *dx = gy ? zeros_for(g, dt) : NULL;
  if (!dx) {
    ln_tensor_release(gy);
    return ln_last_status();
  }
  const int64_t *gs = ln_tensor_strides(gy), *ds = ln_tensor_strides(dx);
  const void *gp = ln_tensor_data(gy);
  void *dp = ln_tensor_data(dx);
  bool f64 = dt == LN_F64;
  int64_t planes = g->N * g->C;
#pragma omp parallel for schedule(static) if (planes * g->OH * g->OW > POOL_PAR_MIN)
  for (int64_t q = 0; q < planes; q++) {
    int64_t n = q / g->C, c = q % g->C;
    const int64_t *ip = s->idx + q * g->OH * g->OW;
    for (int64_t oh = 0; oh < g->OH; oh++)
      for (int64_t ow = 0; ow < g->OW; ow++, ip++) {
        if (*ip < 0) continue;
        int64_t k = at(ds, n, c, *ip / g->W, *ip % g->W);
        st(dp, k, f64, ld(dp, k, f64) + ld(gp, at(gs, n, c, oh, ow), f64));
      }
  }
  ln_tensor_release(gy);
  grad_in[0] = dx;
  return LN_OK;
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
  size_t nout = (size_t)(g.N * g.C * g.OH * g.OW);
  ln_node *node;
  ln_tensor *y = pool_output(x, &g, "MaxPool2DWithIndicesBackward0", max_pool_backward,
                             sizeof(int64_t) * nout, "max_pool2d", &node);
  if (!y) return NULL;
  maxpool_saved *s = node ? node->extra : NULL;
  max_pool_kernel(&g, ln_tensor_data(x), ln_tensor_strides(x), ln_tensor_data(y),
                  ln_tensor_strides(y), s ? s->idx : NULL, ln_tensor_dtype(x) == LN_F64);
  pool_finish(y, node);
  return y;
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

static inline int64_t start_index(int64_t i, int64_t out, int64_t in) {
  return i * in / out;
}

static inline int64_t end_index(int64_t i, int64_t out, int64_t in) {
  return ((i + 1) * in + out - 1) / out;
}

/* y = window means of x (forward), or dx += gy / window size (backward:
** x is gy, y is dx). */
static void adaptive_kernel(const pool_geom *g, const void *x, const int64_t *xs, void *y,
                            const int64_t *ys, bool f64, bool backward) {
  int64_t planes = g->N * g->C;
#pragma omp parallel for schedule(static) if (planes * g->OH * g->OW > POOL_PAR_MIN)
  for (int64_t q = 0; q < planes; q++) {
    int64_t n = q / g->C, c = q % g->C;
    for (int64_t oh = 0; oh < g->OH; oh++) {
      int64_t h0 = start_index(oh, g->OH, g->H), h1 = end_index(oh, g->OH, g->H);
      for (int64_t ow = 0; ow < g->OW; ow++) {
        int64_t w0 = start_index(ow, g->OW, g->W), w1 = end_index(ow, g->OW, g->W);
        double count = (double)((h1 - h0) * (w1 - w0));
        if (backward) {
          double v = ld(x, at(xs, n, c, oh, ow), f64) / count;
          for (int64_t ih = h0; ih < h1; ih++)
            for (int64_t iw = w0; iw < w1; iw++) {
              int64_t k = at(ys, n, c, ih, iw);
              st(y, k, f64, ld(y, k, f64) + v);
            }
        } else {
          double sum = 0;
          for (int64_t ih = h0; ih < h1; ih++)
            for (int64_t iw = w0; iw < w1; iw++) sum += ld(x, at(xs, n, c, ih, iw), f64);
          st(y, at(ys, n, c, oh, ow), f64, sum / count);
        }
      }
    }
  }
}

static ln_status adaptive_backward(ln_node *node, ln_tensor **grad_out, ln_tensor **grad_in) {
  const pool_geom *g = node->extra;
  if (!grad_out[0]) return LN_OK;
  ln_dtype dt = (ln_dtype)node->ints[0];
  ln_tensor *gy = ln_to_dtype(grad_out[0], dt), *dx = gy ? zeros_for(g, dt) : NULL;
  if (!dx) {
    ln_tensor_release(gy);
    return ln_last_status();
  }
  adaptive_kernel(g, ln_tensor_data(gy), ln_tensor_strides(gy), ln_tensor_data(dx),
                  ln_tensor_strides(dx), dt == LN_F64, true);
  ln_tensor_release(gy);
  grad_in[0] = dx;
  return LN_OK;
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
  ln_tensor *y = pool_output(x, &g, "AdaptiveAvgPool2DBackward0", adaptive_backward, 0,
                             "adaptive_avg_pool2d", &node);
  if (!y) return NULL;
  adaptive_kernel(&g, ln_tensor_data(x), ln_tensor_strides(x), ln_tensor_data(y),
                  ln_tensor_strides(y), ln_tensor_dtype(x) == LN_F64, false);
  pool_finish(y, node);
  return y;
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
  if (ln_layer_check_float("adaptive_avg_pool2d", x) != LN_OK) return NULL;
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
