/*
** layers_common.c -- the helpers nn/layers_impl.h declares: PyTorch's
** text for messages and reprs, in-place results, the float16 round trip,
** small module-building steps the layer modules share, and the registry
** of device kernel tables (nn/layers_device.h).
*/
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/autograd.h"
#include "layers_device.h"
#include "layers_impl.h"

/* ---- text ---- */

const char *ln_layer_sizes_str(const ln_tensor *t, char *buf, size_t n) {
  size_t len = (size_t)snprintf(buf, n, "[");
  for (int d = 0; d < ln_tensor_dim(t) && len < n; d++)
    len += (size_t)snprintf(buf + len, n - len, d ? ", %lld" : "%lld",
                            (long long)ln_tensor_size(t, d));
  if (len < n) snprintf(buf + len, n - len, "]");
  return buf;
}

const char *ln_layer_torch_type(ln_dtype t) {
  static const char *const names[LN_DTYPE_COUNT] = {
    [LN_F32] = "Float", [LN_F64] = "Double", [LN_F16] = "Half",
    [LN_BF16] = "BFloat16", [LN_I64] = "Long", [LN_BOOL] = "Bool"
  };
  return (int)t >= 0 && t < LN_DTYPE_COUNT ? names[t] : "?";
}

void ln_layer_append(char *buf, size_t size, size_t *k, const char *fmt, ...) {
  if (*k >= size) return;
  va_list ap;
  va_start(ap, fmt);
  int w = vsnprintf(buf + *k, size - *k, fmt, ap);
  va_end(ap);
  if (w > 0) *k += (size_t)w;
}

const char *ln_layer_pair_str(const int64_t v[2], bool pair, char *buf, size_t n) {
  if (pair) snprintf(buf, n, "(%lld, %lld)", (long long)v[0], (long long)v[1]);
  else snprintf(buf, n, "%lld", (long long)v[0]);
  return buf;
}

/* ---- device kernels ---- */

static const ln_layer_kernels *device_tables[LN_DEVICE_TYPE_COUNT];

void ln_layer_kernels_register(ln_device_type type, const ln_layer_kernels *k) {
  if ((int)type > LN_CPU && type < LN_DEVICE_TYPE_COUNT) device_tables[type] = k;
}

const ln_layer_kernels *ln_layer_kernels_of(const ln_tensor *t) {
  ln_device_type type = ln_tensor_device(t).type;
  return (int)type > LN_CPU && type < LN_DEVICE_TYPE_COUNT ? device_tables[type] : NULL;
}

/* ---- ops ---- */

ln_status ln_layer_check_float(const char *op, const ln_tensor *t, bool device_ok) {
  char buf[32];
  if (!ln_dtype_is_float(ln_tensor_dtype(t)))
    return ln_error(LN_EINVAL, "\"%s\" not implemented for '%s'", op,
                    ln_layer_torch_type(ln_tensor_dtype(t)));
  if (ln_tensor_device(t).type != LN_CPU && !device_ok)
    return ln_error(LN_ERUNTIME, "%s is not implemented for %s tensors yet", op,
                    ln_device_str(ln_tensor_device(t), buf, sizeof buf));
  return LN_OK;
}

ln_status ln_layer_check_inplace(ln_tensor *x) {
  if (ln_grad_enabled() && ln_tensor_requires_grad(x) && ln_tensor_is_leaf(x))
    return ln_error(LN_ERUNTIME, "a leaf Variable that requires grad is being used in an "
                    "in-place operation.");
  return LN_OK;
}

ln_tensor *ln_layer_finish_inplace(ln_tensor *x, ln_tensor *y) {
  if (!y) return NULL;
  bool grad_mode = ln_set_grad_enabled(false);
  ln_status st = ln_copy_(x, y);
  ln_set_grad_enabled(grad_mode);
  ln_node *fn = ln_tensor_grad_fn(y);
  if (st == LN_OK && fn) ln_set_history(x, fn, ln_tensor_output_nr(y));
  ln_tensor_release(y);
  if (st != LN_OK) return NULL;
  ln_tensor_retain(x);
  return x;
}

ln_tensor *ln_layer_via_float32(ln_tensor *x, ln_layer_op_fn op, void *ud) {
  ln_tensor *x32 = ln_to_dtype(x, LN_F32);
  if (!x32) return NULL;
  ln_tensor *y32 = op(x32, ud);
  ln_tensor_release(x32);
  if (!y32) return NULL;
  ln_tensor *y = ln_to_dtype(y32, ln_tensor_dtype(x));
  ln_tensor_release(y32);
  return y;
}

/* ---- modules ---- */

/* A parameter of `sizes` (contents unspecified) registered under name. */
static ln_status add_param(ln_module *m, const char *name, const int64_t *sizes,
                           int ndim, ln_dtype dtype, ln_device dev) {
  ln_tensor *t = ln_empty(sizes, ndim, dtype, dev);
  if (!t) return ln_last_status();
  ln_tensor_set_parameter(t, true);
  ln_status st = ln_tensor_set_requires_grad(t, true);
  if (st == LN_OK) st = ln_module_register_parameter(m, name, t);
  ln_tensor_release(t);
  return st;
}

ln_status ln_layer_add_weight_bias(ln_module *m, const int64_t *sizes, int ndim,
                                   bool bias, ln_dtype dtype, ln_device dev) {
  ln_status st = add_param(m, "weight", sizes, ndim, dtype, dev);
  if (st == LN_OK)
    st = bias ? add_param(m, "bias", sizes, 1, dtype, dev)
              : ln_module_register_parameter(m, "bias", NULL);
  return st == LN_OK ? ln_layer_reset_parameters(m) : st;
}

ln_status ln_layer_check_inputs(ln_module *m, ln_tensor *const *inputs, int n, int want) {
  if (n != want)
    return ln_error(LN_EINVAL, "%s.forward expects %d input%s, got %d",
                    ln_module_type_name(m), want, want == 1 ? "" : "s", n);
  for (int i = 0; i < n; i++)
    if (!inputs[i])
      return ln_error(LN_EINVAL, "%s.forward: input %d is nil (tensor expected)",
                      ln_module_type_name(m), i + 1);
  return LN_OK;
}

/* The attribute `name` when it has `kind` (an int passes for a number),
** else NULL with a message naming the module. */
static const ln_attr *attr_of(ln_module *m, const char *name, ln_attr_kind kind,
                              const char *what) {
  const ln_attr *a = ln_module_get_attr(m, name);
  if (a && (a->kind == kind || (kind == LN_ATTR_NUMBER && a->kind == LN_ATTR_INT))) return a;
  ln_error(LN_EINVAL, "%s: attribute '%s' must be %s", ln_module_type_name(m), name, what);
  return NULL;
}

ln_status ln_layer_attr_int(ln_module *m, const char *name, int64_t *out) {
  const ln_attr *a = attr_of(m, name, LN_ATTR_INT, "an integer");
  if (!a) return LN_EINVAL;
  *out = a->u.i;
  return LN_OK;
}

ln_status ln_layer_attr_number(ln_module *m, const char *name, double *out) {
  const ln_attr *a = attr_of(m, name, LN_ATTR_NUMBER, "a number");
  if (!a) return LN_EINVAL;
  *out = a->kind == LN_ATTR_INT ? (double)a->u.i : a->u.d;
  return LN_OK;
}

ln_status ln_layer_attr_bool(ln_module *m, const char *name, bool *out) {
  const ln_attr *a = attr_of(m, name, LN_ATTR_BOOL, "a boolean");
  if (!a) return LN_EINVAL;
  *out = a->u.b;
  return LN_OK;
}

ln_status ln_layer_attr_string(ln_module *m, const char *name, const char **out) {
  const ln_attr *a = attr_of(m, name, LN_ATTR_STRING, "a string");
  if (!a) return LN_EINVAL;
  *out = a->u.s;
  return LN_OK;
}

ln_status ln_layer_set_attrs(ln_module *m, const ln_layer_attr *a, int n) {
  ln_status st = LN_OK;
  for (int i = 0; i < n && st == LN_OK; i++) st = ln_module_set_attr(m, a[i].name, a[i].value);
  return st;
}

void ln_layer_free_priv(void *priv) { free(priv); }

ln_module *ln_layer_module_new(const ln_module_type *type, const void *priv, size_t size) {
  void *p = NULL;
  if (priv) {
    if (!(p = malloc(size))) {
      ln_error(LN_ENOMEM, "out of memory creating a %s module", type->name);
      return NULL;
    }
    memcpy(p, priv, size);
  }
  ln_module *m = ln_module_new(type, p);
  if (!m) free(p);
  return m;
}

ln_status ln_layer_grad_result(ln_status st, ln_tensor *tmp, ln_tensor *dx,
                               ln_tensor **grad_in) {
  ln_tensor_release(tmp);
  if (st != LN_OK) {
    ln_tensor_release(dx);
    return st;
  }
  grad_in[0] = dx;
  return LN_OK;
}
