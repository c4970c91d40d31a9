/*
** dropout.c -- ln_dropout (torch.nn.functional.dropout) and the Dropout
** module. The mask is drawn from lunet's RNG (uniform u, kept where
** u < 1 - p, in the input's memory format) and holds 0 or 1 / (1 - p);
** the output is input * mask, so core's MulBackward0 gives the gradient
** (PyTorch records the same node). The draws are core's (ln_uniform_),
** which give the same values on every device for the same seed, so CPU
** and CUDA drop the same elements; on a device the table's dropout_mask
** turns them into the mask (nn/layers_device.h).
*/
#include <math.h>
#include <stdio.h>

#include "../core/ops.h"
#include "../core/random.h"
#include "layers_device.h"
#include "layers_impl.h"

static ln_status check_p(double p) {
  char buf[40];
  if (!(p >= 0 && p <= 1))
    return ln_error(LN_EINVAL, "dropout probability has to be between 0 and 1, but got %s",
                    ln_py_float(p, buf, sizeof buf));
  return LN_OK;
}

/* 0 or scale per element of a dense tensor of uniform draws (its memory
** is walked in order, whatever the layout). */
static ln_status mask_from_uniform(ln_tensor *u, double keep, double scale) {
  int64_t n = ln_tensor_numel(u);
  const ln_layer_kernels *lk = ln_layer_kernels_of(u);
  if (lk)
    return lk->dropout_mask(ln_tensor_device(u).index, ln_tensor_dtype(u), ln_tensor_data(u), n,
                            keep, scale);
  if (ln_tensor_dtype(u) == LN_F64) {
    double *d = ln_tensor_data(u);
    for (int64_t i = 0; i < n; i++) d[i] = d[i] < keep ? scale : 0.0;
  } else {
    float *f = ln_tensor_data(u);
    for (int64_t i = 0; i < n; i++) f[i] = f[i] < keep ? (float)scale : 0.0f;
  }
  return LN_OK;
}

ln_tensor *ln_dropout(ln_tensor *x, double p, bool training, bool inplace) {
  if (!x) {
    ln_error(LN_EINVAL, "dropout: input expected, got NULL");
    return NULL;
  }
  if (check_p(p) != LN_OK) return NULL;
  if (!training) {
    ln_tensor_retain(x);
    return x;
  }
  if (ln_layer_check_float("dropout", x, LN_LAYER_HAS(x, dropout_mask)) != LN_OK ||
      (inplace && ln_layer_check_inplace(x) != LN_OK))
    return NULL;
  ln_dtype dt = ln_tensor_dtype(x);
  ln_tensor *mask = ln_empty_format(ln_tensor_sizes(x), ln_tensor_dim(x),
                                    ln_dtype_compute(dt), ln_tensor_device(x),
                                    ln_tensor_suggest_format(x));
  if (!mask || ln_uniform_(mask, 0.0, 1.0) != LN_OK ||
      mask_from_uniform(mask, 1.0 - p, p == 1 ? 0.0 : 1.0 / (1.0 - p)) != LN_OK) {
    ln_tensor_release(mask);
    return NULL;
  }
  ln_tensor *typed = ln_to_dtype(mask, dt);
  ln_tensor_release(mask);
  ln_tensor *y = typed ? ln_mul(x, typed) : NULL;
  ln_tensor_release(typed);
  return inplace ? ln_layer_finish_inplace(x, y) : y;
}

/* ---- the module ---- */

static ln_tensor *dropout_forward(ln_module *m, ln_tensor *const *in, int n) {
  double p;
  bool inplace;
  if (ln_layer_check_inputs(m, in, n, 1) != LN_OK ||
      ln_layer_attr_number(m, "p", &p) != LN_OK ||
      ln_layer_attr_bool(m, "inplace", &inplace) != LN_OK)
    return NULL;
  return ln_dropout(in[0], p, ln_module_training(m), inplace);
}

/* "p=0.5, inplace=false" */
static void dropout_repr(ln_module *m, char *buf, size_t size) {
  char p[40];
  snprintf(buf, size, "p=%s, inplace=%s",
           ln_py_float(ln_module_attr_number(m, "p", 0), p, sizeof p),
           ln_module_attr_bool(m, "inplace", false) ? "true" : "false");
}

static const ln_module_type dropout_type = {
  .name = "Dropout", .version = 1, .forward = dropout_forward, .extra_repr = dropout_repr,
};

ln_module *ln_dropout_new(double p, bool inplace) {
  if (check_p(p) != LN_OK) return NULL;
  ln_module *m = ln_layer_module_new(&dropout_type, NULL, 0);
  ln_layer_attr attrs[2] = {
    { "p", { .kind = LN_ATTR_NUMBER, .u.d = p } },
    { "inplace", { .kind = LN_ATTR_BOOL, .u.b = inplace } },
  };
  if (m && ln_layer_set_attrs(m, attrs, 2) != LN_OK) {
    ln_module_release(m);
    return NULL;
  }
  return m;
}
