/*
** conv2d.c -- ln_conv2d (torch.nn.functional.conv2d) with PyTorch's
** checks and messages, its autograd node ConvolutionBackward0, and the
** Conv2d module. The arithmetic is in conv2d_cpu.c (im2col + gemm) on the
** CPU, and in the device's table (nn/layers_device.h) elsewhere.
**
** float16/bfloat16 inputs go through float32 (recorded conversions); a
** (C, H, W) input through a batch of one. The node saves the input as the
** kernels read it (an alias, any strides) and the contiguous weight.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/autograd.h"
#include "conv2d_impl.h"
#include "layers_device.h"
#include "layers_impl.h"

ln_conv2d_params ln_conv2d_defaults(void) {
  return (ln_conv2d_params){ .stride = { 1, 1 }, .padding = { 0, 0 }, .dilation = { 1, 1 },
                             .groups = 1, .padding_kind = LN_PAD_EXPLICIT };
}

typedef struct conv_saved {
  ln_conv_geom g;
  ln_memory_format fmt;   /* of the output and of the input's gradient */
} conv_saved;

/* ---- checks, with PyTorch's messages ---- */

static ln_status check_params(const ln_conv2d_params *p) {
  for (int d = 0; d < 2; d++) {
    if (p->stride[d] <= 0) return ln_error(LN_EINVAL, "non-positive stride is not supported");
    if (p->padding_kind == LN_PAD_EXPLICIT && p->padding[d] < 0)
      return ln_error(LN_EINVAL, "negative padding is not supported");
    if (p->dilation[d] <= 0)
      return ln_error(LN_EINVAL, "non-positive dilation is not supported");
  }
  if (p->groups <= 0) return ln_error(LN_EINVAL, "non-positive groups is not supported");
  if (p->padding_kind == LN_PAD_SAME && (p->stride[0] != 1 || p->stride[1] != 1))
    return ln_error(LN_EINVAL, "padding='same' is not supported for strided convolutions");
  return LN_OK;
}

/* "torch.FloatTensor" */
static const char *tensor_type(const ln_tensor *t, char *buf, size_t n) {
  snprintf(buf, n, "torch.%sTensor", ln_layer_torch_type(ln_tensor_dtype(t)));
  return buf;
}

/* x is 4-D here. */
static ln_status check_shapes(ln_tensor *x, ln_tensor *w, ln_tensor *b, int64_t groups) {
  char s1[96], s2[96];
  if (ln_tensor_dim(w) != 4)
    return ln_error(LN_EINVAL, "Expected 4-dimensional weight for conv2d, but got "
                    "%d-dimensional weight of size %s instead", ln_tensor_dim(w),
                    ln_layer_sizes_str(w, s1, sizeof s1));
  int64_t OC = ln_tensor_size(w, 0), C = ln_tensor_size(x, 1);
  if (OC % groups)
    return ln_error(LN_EINVAL, "Given groups=%lld, expected weight to be divisible by %lld "
                    "at dimension 0, but got weight of size [%s] instead", (long long)groups,
                    (long long)groups, ln_layer_sizes_str(w, s1, sizeof s1));
  if (C != ln_tensor_size(w, 1) * groups)
    return ln_error(LN_EINVAL, "Given groups=%lld, weight of size %s, expected input%s to "
                    "have %lld channels, but got %lld channels instead", (long long)groups,
                    ln_layer_sizes_str(w, s1, sizeof s1), ln_layer_sizes_str(x, s2, sizeof s2),
                    (long long)(ln_tensor_size(w, 1) * groups), (long long)C);
  if (b && (ln_tensor_dim(b) != 1 || ln_tensor_size(b, 0) != OC))
    return ln_error(LN_EINVAL, "Given weight of size %s, expected bias to be 1-dimensional "
                    "with %lld elements, but got bias of size %s instead",
                    ln_layer_sizes_str(w, s1, sizeof s1), (long long)OC,
                    ln_layer_sizes_str(b, s2, sizeof s2));
  ln_status st = ln_layer_check_float("conv2d", x, LN_LAYER_HAS(x, conv2d_forward));
  if (st != LN_OK) return st;
  ln_tensor *other[2] = { w, b };
  static const char *const names[2] = { "weight", "bias" };
  for (int i = 0; i < 2; i++) {
    if (!other[i]) continue;
    if (ln_tensor_dtype(other[i]) != ln_tensor_dtype(x))
      return ln_error(LN_EINVAL, "Input type (%s) and %s type (%s) should be the same",
                      tensor_type(x, s1, sizeof s1), names[i],
                      tensor_type(other[i], s2, sizeof s2));
    if (!ln_device_eq(ln_tensor_device(other[i]), ln_tensor_device(x)))
      return ln_error(LN_EINVAL, "Expected all tensors to be on the same device, but found "
                      "at least two devices, %s and %s!",
                      ln_device_str(ln_tensor_device(x), s1, sizeof s1),
                      ln_device_str(ln_tensor_device(other[i]), s2, sizeof s2));
  }
  return LN_OK;
}

/* Padding, output size and the "kernel larger than input" check. */
static ln_status geometry(ln_tensor *x, ln_tensor *w, const ln_conv2d_params *p,
                          ln_conv_geom *g) {
  int64_t in[2] = { ln_tensor_size(x, 2), ln_tensor_size(x, 3) };
  int64_t k[2] = { ln_tensor_size(w, 2), ln_tensor_size(w, 3) };
  int64_t lead[2], padded[2], ext[2], out[2];
  for (int d = 0; d < 2; d++) {
    int64_t total = p->padding_kind == LN_PAD_SAME ? p->dilation[d] * (k[d] - 1)
                  : p->padding_kind == LN_PAD_VALID ? 0 : 2 * p->padding[d];
    lead[d] = p->padding_kind == LN_PAD_EXPLICIT ? p->padding[d] : total / 2;
    padded[d] = in[d] + total;
    ext[d] = p->dilation[d] * (k[d] - 1) + 1;
  }
  if (padded[0] < ext[0] || padded[1] < ext[1])
    return ln_error(LN_EINVAL, "Calculated padded input size per channel: (%lld x %lld). "
                    "Kernel size: (%lld x %lld). Kernel size can't be greater than actual "
                    "input size", (long long)padded[0], (long long)padded[1],
                    (long long)ext[0], (long long)ext[1]);
  for (int d = 0; d < 2; d++) out[d] = (padded[d] - ext[d]) / p->stride[d] + 1;
  *g = (ln_conv_geom){
    .N = ln_tensor_size(x, 0), .C = ln_tensor_size(x, 1), .H = in[0], .W = in[1],
    .OC = ln_tensor_size(w, 0), .OH = out[0], .OW = out[1], .kh = k[0], .kw = k[1],
    .sh = p->stride[0], .sw = p->stride[1], .ph = lead[0], .pw = lead[1],
    .dh = p->dilation[0], .dw = p->dilation[1], .groups = p->groups
  };
  return LN_OK;
}

/* ---- backward ---- */

static ln_status conv_backward(ln_node *node, ln_tensor **grad_out, ln_tensor **grad_in) {
  const conv_saved *s = node->extra;
  ln_tensor *g = grad_out[0], *x = ln_node_saved(node, 0), *w = ln_node_saved(node, 1);
  if (!g) return LN_OK;
  if (!x || !w) return ln_last_status();
  ln_dtype dt = ln_tensor_dtype(x);
  bool need_x = node->next[0].node, need_w = node->next[1].node, need_b = node->next[2].node;
  ln_tensor *gy = ln_to_dtype(g, dt), *dx = NULL, *dw = NULL, *db = NULL;
  if (!gy) return ln_last_status();
  ln_device dev = ln_tensor_device(x);
  if ((need_x && (!(dx = ln_empty_format(ln_tensor_sizes(x), 4, dt, dev, s->fmt)) ||
                  ln_zero_(dx) != LN_OK)) ||
      (need_w && !(dw = ln_empty(ln_tensor_sizes(w), 4, dt, dev))) ||
      (need_b && !(db = ln_empty(&s->g.OC, 1, dt, dev))))
    goto fail;
  const ln_layer_kernels *lk = ln_layer_kernels_of(x);
  void *dxp = dx ? ln_tensor_data(dx) : NULL, *dwp = dw ? ln_tensor_data(dw) : NULL;
  void *dbp = db ? ln_tensor_data(db) : NULL;
  const int64_t *dxs = dx ? ln_tensor_strides(dx) : NULL;
  ln_status st =
    lk ? lk->conv2d_backward(dev.index, dt, &s->g, ln_tensor_data(x), ln_tensor_strides(x),
                             ln_tensor_data(w), ln_tensor_data(gy), ln_tensor_strides(gy), dxp,
                             dxs, dwp, dbp)
       : ln_conv2d_cpu_backward(dt, &s->g, ln_tensor_data(x), ln_tensor_strides(x),
                                ln_tensor_data(w), ln_tensor_data(gy), ln_tensor_strides(gy),
                                dxp, dxs, dwp, dbp);
  if (st != LN_OK) goto fail;
  ln_tensor_release(gy);
  grad_in[0] = dx;
  grad_in[1] = dw;
  grad_in[2] = db;
  return LN_OK;
fail:
  ln_tensor_release(gy);
  ln_tensor_release(dx);
  ln_tensor_release(dw);
  ln_tensor_release(db);
  return ln_last_status();
}

static ln_status record(ln_tensor *out, ln_tensor *x, ln_tensor *w, ln_tensor *wc,
                        ln_tensor *b, const conv_saved *geom) {
  ln_tensor *inputs[3] = { x, w, b };
  ln_node *node = ln_node_new("ConvolutionBackward0", conv_backward, inputs, 3, 1);
  conv_saved *s = node ? malloc(sizeof *s) : NULL;
  ln_tensor *sx = s ? ln_detach(x) : NULL, *sw = sx ? ln_detach(wc) : NULL;
  if (!sw) {
    free(s);
    ln_tensor_release(sx);
    ln_node_release(node);
    return ln_last_status() != LN_OK ? ln_last_status()
                                     : ln_error(LN_ENOMEM, "out of memory in conv2d");
  }
  *s = *geom;
  node->extra = s;
  node->free_extra = free;
  ln_node_save(node, sx);
  ln_node_save(node, sw);
  ln_tensor_release(sx);
  ln_tensor_release(sw);
  ln_set_history(out, node, 0);
  ln_node_release(node);
  return LN_OK;
}

/* ---- forward ---- */

/* A 4-D float32/float64 input, checked shapes. */
static ln_tensor *conv_run(ln_tensor *x, ln_tensor *w, ln_tensor *b,
                           const ln_conv2d_params *p) {
  conv_saved s;
  if (geometry(x, w, p, &s.g) != LN_OK) return NULL;
  s.fmt = ln_tensor_suggest_format(x) == LN_CHANNELS_LAST ||
          ln_tensor_suggest_format(w) == LN_CHANNELS_LAST ? LN_CHANNELS_LAST : LN_CONTIGUOUS;
  ln_dtype dt = ln_tensor_dtype(x);
  int64_t sizes[4] = { s.g.N, s.g.OC, s.g.OH, s.g.OW };
  ln_tensor *wc = ln_contiguous(w, LN_CONTIGUOUS), *bc = NULL, *out = NULL;
  if (!wc || (b && !(bc = ln_contiguous(b, LN_CONTIGUOUS)))) goto fail;
  ln_device dev = ln_tensor_device(x);
  if (!(out = ln_empty_format(sizes, 4, dt, dev, s.fmt))) goto fail;
  const ln_layer_kernels *lk = ln_layer_kernels_of(x);
  const void *bp = bc ? ln_tensor_data(bc) : NULL;
  ln_status st =
    lk ? lk->conv2d_forward(dev.index, dt, &s.g, ln_tensor_data(x), ln_tensor_strides(x),
                            ln_tensor_data(wc), bp, ln_tensor_data(out), ln_tensor_strides(out))
       : ln_conv2d_cpu_forward(dt, &s.g, ln_tensor_data(x), ln_tensor_strides(x),
                               ln_tensor_data(wc), bp, ln_tensor_data(out),
                               ln_tensor_strides(out));
  if (st != LN_OK) goto fail;
  ln_tensor *inputs[3] = { x, w, b };
  if (ln_any_requires_grad(inputs, 3) && record(out, x, w, wc, b, &s) != LN_OK) goto fail;
  ln_tensor_release(wc);
  ln_tensor_release(bc);
  return out;
fail:
  ln_tensor_release(wc);
  ln_tensor_release(bc);
  ln_tensor_release(out);
  return NULL;
}

/* float16/bfloat16: the three tensors through float32 and back. */
static ln_tensor *conv_via_float32(ln_tensor *x, ln_tensor *w, ln_tensor *b,
                                   const ln_conv2d_params *p) {
  ln_tensor *x32 = ln_to_dtype(x, LN_F32), *w32 = x32 ? ln_to_dtype(w, LN_F32) : NULL;
  ln_tensor *b32 = w32 && b ? ln_to_dtype(b, LN_F32) : NULL, *y = NULL;
  ln_tensor *y32 = w32 && (b32 || !b) ? conv_run(x32, w32, b32, p) : NULL;
  if (y32) y = ln_to_dtype(y32, ln_tensor_dtype(x));
  ln_tensor_release(x32);
  ln_tensor_release(w32);
  ln_tensor_release(b32);
  ln_tensor_release(y32);
  return y;
}

ln_tensor *ln_conv2d(ln_tensor *x, ln_tensor *weight, ln_tensor *bias,
                     const ln_conv2d_params *params) {
  ln_conv2d_params p = params ? *params : ln_conv2d_defaults();
  char s1[96];
  if (!x || !weight) {
    ln_error(LN_EINVAL, "conv2d: input and weight expected, got NULL");
    return NULL;
  }
  int nd = ln_tensor_dim(x);
  if (nd != 3 && nd != 4) {
    ln_error(LN_EINVAL, "Expected 3D (unbatched) or 4D (batched) input to conv2d, but got "
             "input of size: %s", ln_layer_sizes_str(x, s1, sizeof s1));
    return NULL;
  }
  if (check_params(&p) != LN_OK) return NULL;
  ln_tensor *x4 = nd == 3 ? ln_unsqueeze(x, 0) : x, *y = NULL;
  if (!x4) return NULL;
  if (check_shapes(x4, weight, bias, p.groups) == LN_OK) {
    ln_dtype dt = ln_tensor_dtype(x4);
    y = dt == LN_F16 || dt == LN_BF16 ? conv_via_float32(x4, weight, bias, &p)
                                      : conv_run(x4, weight, bias, &p);
  }
  if (nd == 3) {
    ln_tensor_release(x4);
    ln_tensor *y3 = y ? ln_squeeze(y, 0) : NULL;
    ln_tensor_release(y);
    y = y3;
  }
  return y;
}

/* ---- the module ---- */

typedef struct conv_priv {
  ln_conv2d_params p;
  int64_t kernel[2];
} conv_priv;

static ln_tensor *conv_forward(ln_module *m, ln_tensor *const *in, int n);
static void conv_repr(ln_module *m, char *buf, size_t size);

static const ln_module_type conv2d_type = {
  .name = "Conv2d", .version = 1, .forward = conv_forward, .extra_repr = conv_repr,
  .free_priv = ln_layer_free_priv,
};

const ln_conv2d_params *ln_conv2d_module_params(const ln_module *m, int64_t kernel_size[2]) {
  if (!m || ln_module_get_type(m) != &conv2d_type) return NULL;
  const conv_priv *cp = ln_module_priv(m);
  if (kernel_size) memcpy(kernel_size, cp->kernel, sizeof cp->kernel);
  return &cp->p;
}

/* Conv2d.forward: the geometry fixed at construction, groups and
** padding_mode read from the attributes as PyTorch reads self.groups. */
static ln_tensor *conv_forward(ln_module *m, ln_tensor *const *in, int n) {
  ln_conv2d_params p = ((conv_priv *)ln_module_priv(m))->p;
  const char *mode;
  if (ln_layer_check_inputs(m, in, n, 1) != LN_OK ||
      ln_layer_attr_int(m, "groups", &p.groups) != LN_OK ||
      ln_layer_attr_string(m, "padding_mode", &mode) != LN_OK)
    return NULL;
  if (strcmp(mode, "zeros") != 0) {
    ln_error(LN_EINVAL, "Conv2d: padding_mode '%s' is not supported (only 'zeros')", mode);
    return NULL;
  }
  return ln_conv2d(in[0], ln_module_get_tensor(m, "weight"), ln_module_get_tensor(m, "bias"),
                   &p);
}

/* _ConvNd.extra_repr: "3, 8, kernel_size=(3, 3), stride=(1, 1)" and the
** fields that differ from their defaults. */
static void conv_repr(ln_module *m, char *buf, size_t size) {
  const conv_priv *cp = ln_module_priv(m);
  const ln_conv2d_params *p = &cp->p;
  char a[48], b[48];
  int64_t groups = (int64_t)ln_module_attr_number(m, "groups", 1);
  const ln_attr *mode = ln_module_get_attr(m, "padding_mode");
  size_t k = 0;
  ln_layer_append(buf, size, &k, "%lld, %lld, kernel_size=%s, stride=%s",
                  (long long)ln_module_attr_number(m, "in_channels", 0),
                  (long long)ln_module_attr_number(m, "out_channels", 0),
                  ln_layer_pair_str(cp->kernel, true, a, sizeof a),
                  ln_layer_pair_str(p->stride, true, b, sizeof b));
  if (p->padding_kind != LN_PAD_EXPLICIT)
    ln_layer_append(buf, size, &k, ", padding=%s",
                    p->padding_kind == LN_PAD_SAME ? "same" : "valid");
  else if (p->padding[0] || p->padding[1])
    ln_layer_append(buf, size, &k, ", padding=%s",
                    ln_layer_pair_str(p->padding, true, a, sizeof a));
  if (p->dilation[0] != 1 || p->dilation[1] != 1)
    ln_layer_append(buf, size, &k, ", dilation=%s",
                    ln_layer_pair_str(p->dilation, true, a, sizeof a));
  if (groups != 1) ln_layer_append(buf, size, &k, ", groups=%lld", (long long)groups);
  if (!ln_module_get_tensor(m, "bias")) ln_layer_append(buf, size, &k, ", bias=false");
  if (mode && mode->kind == LN_ATTR_STRING && strcmp(mode->u.s, "zeros") != 0)
    ln_layer_append(buf, size, &k, ", padding_mode=%s", mode->u.s);
}

ln_module *ln_conv2d_new(int64_t in_channels, int64_t out_channels,
                         const int64_t kernel_size[2], const ln_conv2d_params *params,
                         bool bias, ln_dtype dtype, ln_device device) {
  conv_priv cp = { .p = params ? *params : ln_conv2d_defaults() };
  memcpy(cp.kernel, kernel_size, sizeof cp.kernel);
  if (cp.p.groups <= 0) {
    ln_error(LN_EINVAL, "groups must be a positive integer");
    return NULL;
  }
  if (in_channels % cp.p.groups) {
    ln_error(LN_EINVAL, "in_channels must be divisible by groups");
    return NULL;
  }
  if (out_channels % cp.p.groups) {
    ln_error(LN_EINVAL, "out_channels must be divisible by groups");
    return NULL;
  }
  if (cp.p.padding_kind == LN_PAD_SAME && (cp.p.stride[0] != 1 || cp.p.stride[1] != 1)) {
    ln_error(LN_EINVAL, "padding='same' is not supported for strided convolutions");
    return NULL;
  }
  if ((int)dtype < 0 || dtype >= LN_DTYPE_COUNT || !ln_dtype_is_float(dtype)) {
    ln_error(LN_EINVAL, "Conv2d: dtype must be a floating point type");
    return NULL;
  }
  int64_t ws[4] = { out_channels, in_channels / cp.p.groups, kernel_size[0], kernel_size[1] };
  ln_module *m = ln_layer_module_new(&conv2d_type, &cp, sizeof cp);
  if (!m) return NULL;
  ln_layer_attr attrs[4] = {
    { "in_channels", { .kind = LN_ATTR_INT, .u.i = in_channels } },
    { "out_channels", { .kind = LN_ATTR_INT, .u.i = out_channels } },
    { "groups", { .kind = LN_ATTR_INT, .u.i = cp.p.groups } },
    { "padding_mode", { .kind = LN_ATTR_STRING, .u.s = "zeros" } },
  };
  ln_status st = ln_layer_set_attrs(m, attrs, 4);
  if (st == LN_OK) st = ln_layer_add_weight_bias(m, ws, 4, bias, dtype, device);
  if (st != LN_OK) {
    ln_module_release(m);
    return NULL;
  }
  return m;
}
