/*
** batchnorm_functional.c -- ln_batch_norm (torch.nn.functional.batch_norm
** with native_batch_norm's semantics) and its autograd node,
** NativeBatchNormBackward0.
**
** The input is normalized in its own layout when the kernels have one for
** it (batchnorm_kernels.h), else after a contiguous copy; the output is
** laid out like what the kernels ran on (so also a 3D (N, C, L) input with
** C innermost keeps its layout, where PyTorch returns a contiguous one).
** Parameters and running statistics, of any dtype the checks allow, are
** read and updated here as double C-length vectors. The node saves the
** input the kernels read (an alias),
** the weight and bias (for their shape and dtype) and, in `extra`, the
** per-channel mean and inverse std used -- the batch's in training, a copy
** of the running stats' in eval -- and nothing of the input's size.
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/autograd.h"
#include "batchnorm.h"
#include "batchnorm_kernels.h"

/* What the backward needs besides the saved tensors. */
typedef struct bn_saved {
  int64_t C;
  bool training;
  double v[];          /* mean[C], then invstd[C] */
} bn_saved;

/* ---- messages ---- */

static const char *torch_type_name(ln_dtype t) {
  switch (t) {
  case LN_F32: return "Float";
  case LN_F64: return "Double";
  case LN_F16: return "Half";
  case LN_BF16: return "BFloat16";
  case LN_I64: return "Long";
  default: return "Bool";
  }
}

/* "{1, 4}" as PyTorch prints sizes in this message (torch.Size([1, 4])). */
static const char *shape_str(const ln_tensor *t, char *buf, size_t n) {
  size_t len = (size_t)snprintf(buf, n, "{");
  for (int d = 0; d < ln_tensor_dim(t) && len < n; d++)
    len += (size_t)snprintf(buf + len, n - len, d ? ", %lld" : "%lld",
                            (long long)ln_tensor_size(t, d));
  if (len < n) snprintf(buf + len, n - len, "}");
  return buf;
}

/* A double as Python's repr writes it: 0.0, 1e-05, -0.001. */
static const char *py_float(double v, char *buf, size_t n) {
  if (v == floor(v) && fabs(v) < 1e16) {
    snprintf(buf, n, "%.1f", v);
    return buf;
  }
  for (int p = 1; p <= 17; p++) {
    snprintf(buf, n, "%.*g", p, v);
    if (strtod(buf, NULL) == v) break;
  }
  return buf;
}

/* ---- C-length vectors of any shape, read and written in double ---- */

/* The stride that walks t's elements in row-major order, or 0 when no
** single stride does (then elements are located one by one). */
static int64_t vec_stride(const ln_tensor *t) {
  int64_t stride = 0, expect = 0;
  for (int d = ln_tensor_dim(t) - 1; d >= 0; d--) {
    int64_t n = ln_tensor_size(t, d), s = ln_tensor_stride(t, d);
    if (n == 1) continue;
    if (stride && s != expect) return 0;
    if (!stride) stride = s;
    expect = s * n;
  }
  return stride ? stride : 1;
}

static void *vec_elem(const ln_tensor *t, int64_t i) {
  int64_t off = 0;
  for (int d = ln_tensor_dim(t) - 1; d >= 0; d--) {
    int64_t s = ln_tensor_size(t, d);
    off += i % s * ln_tensor_stride(t, d);
    i /= s;
  }
  return (char *)ln_tensor_data(t) + off * (int64_t)ln_dtype_size(ln_tensor_dtype(t));
}

/* out[c] = t[c], or `fill` for every c when t is NULL. */
static void vec_load(const ln_tensor *t, int64_t C, double fill, double *out) {
  int64_t s = t ? vec_stride(t) : 0;
  if (!t) {
    for (int64_t c = 0; c < C; c++) out[c] = fill;
  } else if (s && ln_tensor_dtype(t) == LN_F32) {
    const float *p = ln_tensor_data(t);
    for (int64_t c = 0; c < C; c++) out[c] = p[c * s];
  } else if (s && ln_tensor_dtype(t) == LN_F64) {
    const double *p = ln_tensor_data(t);
    for (int64_t c = 0; c < C; c++) out[c] = p[c * s];
  } else {
    for (int64_t c = 0; c < C; c++)
      out[c] = ln_load_double(vec_elem(t, c), ln_tensor_dtype(t));
  }
}

static void vec_store(ln_tensor *t, const double *v) {
  int64_t s = vec_stride(t), C = ln_tensor_numel(t);
  if (s && ln_tensor_dtype(t) == LN_F32) {
    float *p = ln_tensor_data(t);
    for (int64_t c = 0; c < C; c++) p[c * s] = (float)v[c];
  } else if (s && ln_tensor_dtype(t) == LN_F64) {
    double *p = ln_tensor_data(t);
    for (int64_t c = 0; c < C; c++) p[c * s] = v[c];
  } else {
    for (int64_t c = 0; c < C; c++)
      ln_store_double(vec_elem(t, c), ln_tensor_dtype(t), v[c]);
  }
}

/* ---- argument checks, in PyTorch's order ---- */

static ln_status check_numel(const char *name, const ln_tensor *t, int64_t C) {
  if (t && ln_tensor_numel(t) != C)
    return ln_error(LN_EINVAL, "%s should contain %lld elements not %lld", name,
                    (long long)C, (long long)ln_tensor_numel(t));
  return LN_OK;
}

/* Input rank and dtype class, batch size, eps, devices: what PyTorch checks
** before its empty-input shortcut. */
static ln_status check_input(ln_tensor *x, ln_tensor *const *params, bool training,
                             double eps) {
  char buf[200];
  if (!x) return ln_error(LN_EINVAL, "batch_norm: input expected, got NULL");
  int nd = ln_tensor_dim(x);
  if (nd < 2) return ln_error(LN_EINVAL, "expected at least 2D input (got %dD input)", nd);
  int64_t per_channel = ln_tensor_size(x, 0);
  for (int d = 2; d < nd; d++) per_channel *= ln_tensor_size(x, d);
  if (training && per_channel == 1)
    return ln_error(LN_EINVAL, "Expected more than 1 value per channel when training, "
                    "got input size %s", shape_str(x, buf, sizeof buf));
  if (training && !(eps > 0))
    return ln_error(LN_EINVAL, "batch_norm eps must be positive during training, but "
                    "got %s", py_float(eps, buf, sizeof buf));
  if (!training && !(eps >= 0))
    return ln_error(LN_EINVAL, "batch_norm eps must be non-negative, but got %s",
                    py_float(eps, buf, sizeof buf));
  ln_device dev = ln_tensor_device(x);
  for (int i = 0; i < 4; i++) {
    if (!params[i] || ln_device_eq(ln_tensor_device(params[i]), dev)) continue;
    char b2[32];
    return ln_error(LN_EINVAL, "Expected all tensors to be on the same device, but found "
                    "at least two devices, %s and %s!", ln_device_str(dev, buf, sizeof buf),
                    ln_device_str(ln_tensor_device(params[i]), b2, sizeof b2));
  }
  if (dev.type != LN_CPU)
    return ln_error(LN_ERUNTIME, "batch_norm is not implemented for %s tensors yet",
                    ln_device_str(dev, buf, sizeof buf));
  return LN_OK;
}

/* params: running_mean, running_var, weight, bias. Sizes, running stats,
** then dtypes: weight/bias/running stats share the input's dtype, or are
** all float32 with a float16/bfloat16 input. */
static ln_status check_params(ln_tensor *x, ln_tensor *const *params, bool training) {
  static const char *const names[4] = { "running_mean", "running_var", "weight", "bias" };
  int64_t C = ln_tensor_size(x, 1);
  for (int i = 0; i < 4; i++) {
    if (i < 2 && !params[i] && !training)
      return ln_error(LN_EINVAL, "%s must be defined in evaluation mode", names[i]);
    if (check_numel(names[i], params[i], C) != LN_OK) return LN_EINVAL;
  }
  if (!params[0] != !params[1])
    return ln_error(LN_EINVAL, "running_mean and running_var must either both be None "
                    "or neither be None");
  ln_dtype xt = ln_tensor_dtype(x);
  if (!ln_dtype_is_float(xt))
    return ln_error(LN_EINVAL, "\"batch_norm\" not implemented for '%s'",
                    torch_type_name(xt));
  /* the first given of weight, bias, running_mean, running_var decides */
  static const int order[4] = { 2, 3, 0, 1 };
  ln_tensor *first = NULL;
  for (int k = 0; k < 4 && !first; k++) first = params[order[k]];
  bool mixed = first && ln_tensor_dtype(first) != xt;
  if (mixed && xt != LN_F16 && xt != LN_BF16)
    return ln_error(LN_EINVAL, "mixed dtype (CPU): all inputs must share same datatype.");
  for (int i = 0; i < 4; i++) {
    if (!params[i]) continue;
    ln_dtype pt = ln_tensor_dtype(params[i]);
    if (mixed && pt != LN_F32)
      return ln_error(LN_EINVAL, "mixed dtype (CPU): expect parameter to have scalar "
                      "type of Float");
    if (!mixed && pt != xt)
      return ln_error(LN_EINVAL, "expected scalar type %s but found %s",
                      torch_type_name(xt), torch_type_name(pt));
  }
  return LN_OK;
}

/* ---- backward ---- */

static ln_tensor *zeros_like_param(ln_tensor *p) {
  return ln_zeros(ln_tensor_sizes(p), ln_tensor_dim(p), ln_tensor_dtype(p),
                  ln_tensor_device(p));
}

/* A new tensor holding v, shaped and typed like the parameter p. */
static ln_tensor *param_grad(ln_tensor *p, const double *v) {
  ln_tensor *g = ln_empty(ln_tensor_sizes(p), ln_tensor_dim(p), ln_tensor_dtype(p),
                          ln_tensor_device(p));
  if (g) vec_store(g, v);
  return g;
}

/* dy in x's layout and dtype: dy itself, or a copy. New reference. */
static ln_tensor *grad_like(const ln_bn_plan *plan, ln_tensor *x, ln_tensor *dy,
                            ln_bn_view *v) {
  if (ln_tensor_dtype(dy) == ln_tensor_dtype(x) && ln_bn_view_for(plan, dy, v)) {
    ln_tensor_retain(dy);
    return dy;
  }
  ln_tensor *c = ln_bn_empty(plan, x, ln_tensor_dtype(x));
  if (c && ln_copy_(c, dy) != LN_OK) {
    ln_tensor_release(c);
    return NULL;
  }
  if (c) ln_bn_view_for(plan, c, v);
  return c;
}

/* With M values per channel, w = weight * invstd, mdy = mean(dy) and
** mdyx = mean(dy * (x - mean)):
**   training: dx = w * (dy - mdy - (x - mean) * invstd^2 * mdyx)
**   eval:     dx = w * dy  (the running statistics are constants)
**   dweight = sum(dy * (x - mean)) * invstd,  dbias = sum(dy). */
static ln_status bn_backward(ln_node *node, ln_tensor **grad_out, ln_tensor **grad_in) {
  const bn_saved *s = node->extra;
  ln_tensor *g = grad_out[0], *x = ln_node_saved(node, 0), *dy = NULL, *dx = NULL;
  if (!g) return LN_OK;
  if (!x) return ln_last_status();
  ln_tensor *w = ln_node_saved(node, 1), *b = ln_node_saved(node, 2);
  bool need_x = node->next[0].node, need_w = node->next[1].node, need_b = node->next[2].node;
  int64_t C = s->C, M = C ? ln_tensor_numel(x) / C : 0;
  const double *mean = s->v, *invstd = s->v + C;
  ln_dtype dt = ln_tensor_dtype(x);
  ln_status st = LN_OK;
  double *buf = calloc((size_t)(5 * C + 1), sizeof(double));
  if (!buf) return ln_error(LN_ENOMEM, "out of memory in batch_norm backward");
  double *wv = buf, *sdy = wv + C, *sdyx = sdy + C, *ca = sdyx + C, *zero = ca + C;
  ln_bn_plan plan;
  ln_bn_view xv, gv, dv;
  if (M == 0) {  /* empty input: zero gradients */
    if ((need_x && !(grad_in[0] = ln_zeros(ln_tensor_sizes(x), ln_tensor_dim(x), dt,
                                            ln_tensor_device(x)))) ||
        (need_w && !(grad_in[1] = zeros_like_param(w))) ||
        (need_b && !(grad_in[2] = zeros_like_param(b))))
      goto fail;
    free(buf);
    return LN_OK;
  }
  ln_bn_plan_for(x, &plan);  /* x is what the forward's kernels ran on */
  ln_bn_view_for(&plan, x, &xv);
  if (!(dy = grad_like(&plan, x, g, &gv))) goto fail;
  vec_load(w, C, 1.0, wv);
  if (need_x) {
    if (!(dx = ln_bn_empty(&plan, x, dt))) goto fail;
    ln_bn_view_for(&plan, dx, &dv);
  }
  if (s->training) {
    st = ln_bn_cpu_train_backward(dt, &plan.g, &xv, &gv, need_x ? &dv : NULL, mean, invstd,
                                  wv, sdy, sdyx);
  } else {
    if (need_w || need_b) st = ln_bn_cpu_grad_sums(dt, &plan.g, &xv, &gv, mean, sdy, sdyx);
    for (int64_t c = 0; c < C; c++) ca[c] = wv[c] * invstd[c];
    if (st == LN_OK && need_x) st = ln_bn_cpu_affine(dt, &plan.g, &gv, &dv, zero, ca, zero);
  }
  if (st != LN_OK) goto done;
  for (int64_t c = 0; c < C; c++) sdyx[c] *= invstd[c];
  if ((need_w && !(grad_in[1] = param_grad(w, sdyx))) ||
      (need_b && !(grad_in[2] = param_grad(b, sdy))))
    goto fail;
  grad_in[0] = dx;
  dx = NULL;
  goto done;
fail:
  st = ln_last_status() != LN_OK ? ln_last_status() : LN_ENOMEM;
  for (int i = 0; i < 3; i++) {
    ln_tensor_release(grad_in[i]);
    grad_in[i] = NULL;
  }
done:
  ln_tensor_release(dy);
  ln_tensor_release(dx);
  free(buf);
  return st;
}

/* Make out the result of a NativeBatchNormBackward0 node. x: the tensor
** the kernels read; mean/invstd: C each. */
static ln_status record(ln_tensor *out, ln_tensor *input, ln_tensor *x, ln_tensor *weight,
                        ln_tensor *bias, bool training, const double *mean,
                        const double *invstd) {
  int64_t C = ln_tensor_size(input, 1);
  ln_tensor *inputs[3] = { input, weight, bias };
  bn_saved *s = malloc(sizeof *s + sizeof(double) * (size_t)(2 * C));
  ln_node *node = s ? ln_node_new("NativeBatchNormBackward0", bn_backward, inputs, 3, 1)
                    : NULL;
  if (!node) goto fail;
  s->C = C;
  s->training = training;
  memcpy(s->v, mean, sizeof(double) * (size_t)C);
  memcpy(s->v + C, invstd, sizeof(double) * (size_t)C);
  node->extra = s;
  node->free_extra = free;
  s = NULL;
  ln_tensor *src[3] = { x, weight, bias };
  for (int i = 0; i < 3; i++) {  /* aliases without history: no cycles */
    ln_tensor *alias = src[i] ? ln_detach(src[i]) : NULL;
    if (src[i] && !alias) goto fail;
    ln_node_save(node, alias);
    ln_tensor_release(alias);
  }
  ln_set_history(out, node, 0);
  ln_node_release(node);
  return LN_OK;
fail:
  free(s);
  ln_node_release(node);
  return ln_last_status() != LN_OK ? ln_last_status()
                                   : ln_error(LN_ENOMEM, "out of memory in batch_norm");
}

/* ---- forward ---- */

/* Running stats r = (1 - momentum) * r + momentum * batch, with the
** unbiased variance of M values. */
static void update_running(ln_tensor *rm, ln_tensor *rv, int64_t C, int64_t M,
                           double momentum, const double *mean, const double *var,
                           double *tmp) {
  vec_load(rm, C, 0, tmp);
  for (int64_t c = 0; c < C; c++) tmp[c] = (1 - momentum) * tmp[c] + momentum * mean[c];
  vec_store(rm, tmp);
  vec_load(rv, C, 0, tmp);
  for (int64_t c = 0; c < C; c++)
    tmp[c] = (1 - momentum) * tmp[c] + momentum * var[c] * (double)M / (double)(M - 1);
  vec_store(rv, tmp);
}

ln_tensor *ln_batch_norm(ln_tensor *input, ln_tensor *running_mean,
                         ln_tensor *running_var, ln_tensor *weight,
                         ln_tensor *bias, bool training, double momentum,
                         double eps) {
  ln_tensor *params[4] = { running_mean, running_var, weight, bias };
  ln_tensor *x = NULL, *out = NULL;
  double *buf = NULL;
  ln_tensor *grad_inputs[3] = { input, weight, bias };
  if (check_input(input, params, training, eps) != LN_OK) return NULL;
  int64_t C = ln_tensor_size(input, 1), M = C ? ln_tensor_numel(input) / C : 0;
  bool grad = ln_dtype_is_float(ln_tensor_dtype(input)) &&
              ln_any_requires_grad(grad_inputs, 3);
  if (!(buf = calloc((size_t)(5 * C + 1), sizeof(double)))) {
    ln_error(LN_ENOMEM, "out of memory in batch_norm");
    return NULL;
  }
  double *mean = buf, *var = mean + C, *invstd = var + C, *a = invstd + C, *b = a + C;
  if (ln_tensor_numel(input) == 0) {
    /* as PyTorch: no further checks, running stats untouched */
    if (!(out = ln_empty_like(input, LN_PRESERVE))) goto fail;
    if (grad && record(out, input, input, weight, bias, training, mean, invstd) != LN_OK)
      goto fail;
    free(buf);
    return out;
  }
  if (check_params(input, params, training) != LN_OK) goto fail;

  ln_bn_plan plan;
  ln_bn_view xv, ov;
  ln_dtype dt = ln_tensor_dtype(input);
  x = input;
  ln_tensor_retain(x);
  if (!ln_bn_plan_for(x, &plan)) {  /* no kernel for this layout: copy */
    ln_tensor_release(x);
    if (!(x = ln_contiguous(input, LN_CONTIGUOUS))) goto fail;
    ln_bn_plan_for(x, &plan);
  }
  ln_bn_view_for(&plan, x, &xv);
  if (!(out = ln_bn_empty(&plan, x, dt))) goto fail;
  ln_bn_view_for(&plan, out, &ov);

  vec_load(weight, C, 1.0, a);
  vec_load(bias, C, 0.0, b);
  if (training) {
    if (ln_bn_cpu_train_forward(dt, &plan.g, &xv, &ov, a, b, eps, mean, var) != LN_OK)
      goto fail;
    if (running_mean)
      update_running(running_mean, running_var, C, M, momentum, mean, var, invstd);
  } else {
    vec_load(running_mean, C, 0, mean);
    vec_load(running_var, C, 0, var);
    for (int64_t c = 0; c < C; c++) a[c] *= 1.0 / sqrt(var[c] + eps);
    if (ln_bn_cpu_affine(dt, &plan.g, &xv, &ov, mean, a, b) != LN_OK) goto fail;
  }
  for (int64_t c = 0; c < C; c++) invstd[c] = 1.0 / sqrt(var[c] + eps);
  if (grad && record(out, input, x, weight, bias, training, mean, invstd) != LN_OK)
    goto fail;
  ln_tensor_release(x);
  free(buf);
  return out;
fail:
  ln_tensor_release(x);
  ln_tensor_release(out);
  free(buf);
  return NULL;
}
