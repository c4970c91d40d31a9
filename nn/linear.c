/*
** linear.c -- ln_linear (torch.nn.functional.linear) over ln_matmul and
** ln_add, whose nodes give the gradients; the Linear module; and the
** initialisation Linear and Conv2d share (PyTorch's reset_parameters:
** kaiming_uniform_ with a = sqrt(5), which is uniform in +-1/sqrt(fan_in),
** and the bias uniform in the same bound).
*/
#include <math.h>
#include <stdio.h>

#include "../core/autograd.h"
#include "../core/ops.h"
#include "../core/random.h"
#include "layers_impl.h"

ln_tensor *ln_linear(ln_tensor *x, ln_tensor *weight, ln_tensor *bias) {
  if (!x || !weight) {
    ln_error(LN_EINVAL, "linear: input and weight expected, got NULL");
    return NULL;
  }
  if (ln_tensor_dim(weight) != 2 || (bias && ln_tensor_dim(bias) > 1)) {
    char b1[64], b2[64] = "";
    if (bias) ln_layer_sizes_str(bias, b2, sizeof b2);
    ln_error(LN_EINVAL, "linear: expected a 2-D weight and a 1-D bias, got weight of "
             "size %s%s%s", ln_layer_sizes_str(weight, b1, sizeof b1),
             bias ? " and bias of size " : "", b2);
    return NULL;
  }
  ln_dtype xt = ln_tensor_dtype(x), wt = ln_tensor_dtype(weight);
  if (xt != wt || (bias && ln_tensor_dtype(bias) != xt)) {
    ln_error(LN_EINVAL, "expected m1 and m2 to have the same dtype, but got: %s != %s",
             ln_dtype_name(xt), ln_dtype_name(bias && xt == wt ? ln_tensor_dtype(bias) : wt));
    return NULL;
  }
  ln_tensor *wt_view = ln_transpose(weight, 0, 1);
  ln_tensor *y = wt_view ? ln_matmul(x, wt_view) : NULL;
  ln_tensor_release(wt_view);
  if (!y || !bias) return y;
  ln_tensor *out = ln_add(y, bias);
  ln_tensor_release(y);
  return out;
}

/* ---- initialisation shared with Conv2d ---- */

ln_status ln_layer_reset_parameters(ln_module *m) {
  ln_tensor *w = m ? ln_module_get_tensor(m, "weight") : NULL;
  if (!w || ln_tensor_dim(w) < 2)
    return ln_error(LN_EINVAL, "reset_parameters: Linear or Conv2d module expected, got %s",
                    m ? ln_module_type_name(m) : "NULL");
  int64_t fan_in = ln_tensor_size(w, 1);
  for (int d = 2; d < ln_tensor_dim(w); d++) fan_in *= ln_tensor_size(w, d);
  double bound = fan_in > 0 ? 1.0 / sqrt((double)fan_in) : 0.0;
  bool grad_mode = ln_set_grad_enabled(false);
  ln_status st = ln_tensor_numel(w) ? ln_uniform_(w, -bound, bound) : LN_OK;
  ln_tensor *b = ln_module_get_tensor(m, "bias");
  if (st == LN_OK && b) st = ln_uniform_(b, -bound, bound);
  ln_set_grad_enabled(grad_mode);
  return st;
}

/* ---- the module ---- */

static ln_tensor *linear_forward(ln_module *m, ln_tensor *const *in, int n) {
  if (ln_layer_check_inputs(m, in, n, 1) != LN_OK) return NULL;
  return ln_linear(in[0], ln_module_get_tensor(m, "weight"), ln_module_get_tensor(m, "bias"));
}

/* "in_features=2, out_features=3, bias=true" */
static void linear_repr(ln_module *m, char *buf, size_t size) {
  snprintf(buf, size, "in_features=%lld, out_features=%lld, bias=%s",
           (long long)ln_module_attr_number(m, "in_features", 0),
           (long long)ln_module_attr_number(m, "out_features", 0),
           ln_module_get_tensor(m, "bias") ? "true" : "false");
}

static const ln_module_type linear_type = {
  .name = "Linear", .version = 1, .forward = linear_forward, .extra_repr = linear_repr,
};

ln_module *ln_linear_new(int64_t in_features, int64_t out_features, bool bias,
                         ln_dtype dtype, ln_device device) {
  if ((int)dtype < 0 || dtype >= LN_DTYPE_COUNT || !ln_dtype_is_float(dtype)) {
    ln_error(LN_EINVAL, "Linear: dtype must be a floating point type");
    return NULL;
  }
  ln_module *m = ln_layer_module_new(&linear_type, NULL, 0);
  if (!m) return NULL;
  ln_layer_attr attrs[2] = {
    { "in_features", { .kind = LN_ATTR_INT, .u.i = in_features } },
    { "out_features", { .kind = LN_ATTR_INT, .u.i = out_features } },
  };
  int64_t ws[2] = { out_features, in_features };
  ln_status st = ln_layer_set_attrs(m, attrs, 2);
  if (st == LN_OK) st = ln_layer_add_weight_bias(m, ws, 2, bias, dtype, device);
  if (st != LN_OK) {
    ln_module_release(m);
    return NULL;
  }
  return m;
}
