/*
** activation.c -- ln_relu (with PyTorch's inplace variant) and the ReLU
** and Flatten modules. The arithmetic and the gradients are core's
** (LN_RELU, ln_flatten's reshape); in place, the result is copied back
** into the input, which takes over its history.
*/
#include <stdio.h>

#include "../core/ops.h"
#include "layers_impl.h"

ln_tensor *ln_relu(ln_tensor *x, bool inplace) {
  if (!x) {
    ln_error(LN_EINVAL, "relu: input expected, got NULL");
    return NULL;
  }
  if (inplace && ln_layer_check_inplace(x) != LN_OK) return NULL;
  ln_tensor *y = ln_unary(LN_RELU, x);
  return inplace ? ln_layer_finish_inplace(x, y) : y;
}

/* ---- ReLU ---- */

static ln_tensor *relu_forward(ln_module *m, ln_tensor *const *in, int n) {
  bool inplace;
  if (ln_layer_check_inputs(m, in, n, 1) != LN_OK ||
      ln_layer_attr_bool(m, "inplace", &inplace) != LN_OK)
    return NULL;
  return ln_relu(in[0], inplace);
}

/* "" or "inplace=true", as ReLU.extra_repr */
static void relu_repr(ln_module *m, char *buf, size_t size) {
  snprintf(buf, size, "%s", ln_module_attr_bool(m, "inplace", false) ? "inplace=true" : "");
}

static const ln_module_type relu_type = {
  .name = "ReLU", .version = 1, .forward = relu_forward, .extra_repr = relu_repr,
};

ln_module *ln_relu_new(bool inplace) {
  ln_module *m = ln_layer_module_new(&relu_type, NULL, 0);
  ln_attr a = { .kind = LN_ATTR_BOOL, .u.b = inplace };
  if (m && ln_module_set_attr(m, "inplace", a) != LN_OK) {
    ln_module_release(m);
    return NULL;
  }
  return m;
}

/* ---- Flatten ---- */

typedef struct flatten_priv { int start_dim, end_dim; } flatten_priv;

static ln_tensor *flatten_forward(ln_module *m, ln_tensor *const *in, int n);
static void flatten_repr(ln_module *m, char *buf, size_t size);

static const ln_module_type flatten_type = {
  .name = "Flatten", .version = 1, .forward = flatten_forward, .extra_repr = flatten_repr,
  .free_priv = ln_layer_free_priv,
};

/* input.flatten(start_dim, end_dim); a 0-dim input counts as 1-dim for
** the dims' range, as PyTorch's dim wrapping. */
static ln_tensor *flatten_forward(ln_module *m, ln_tensor *const *in, int n) {
  const flatten_priv *p = ln_module_priv(m);
  if (ln_layer_check_inputs(m, in, n, 1) != LN_OK) return NULL;
  int nd = ln_tensor_dim(in[0]) ? ln_tensor_dim(in[0]) : 1, d;
  if (ln_wrap_dim(p->start_dim, nd, &d) != LN_OK || ln_wrap_dim(p->end_dim, nd, &d) != LN_OK)
    return NULL;
  return ln_flatten(in[0], p->start_dim, p->end_dim);
}

/* Dims in Lua's numbering (1-based; negative ones count from the end in
** both), so that the text is what one writes to get the same module. */
static void flatten_repr(ln_module *m, char *buf, size_t size) {
  const flatten_priv *p = ln_module_priv(m);
  snprintf(buf, size, "start_dim=%d, end_dim=%d", p->start_dim + (p->start_dim >= 0),
           p->end_dim + (p->end_dim >= 0));
}

ln_module *ln_flatten_new(int start_dim, int end_dim) {
  flatten_priv p = { start_dim, end_dim };
  return ln_layer_module_new(&flatten_type, &p, sizeof p);
}

bool ln_flatten_module_dims(const ln_module *m, int *start_dim, int *end_dim) {
  if (!m || ln_module_get_type(m) != &flatten_type) return false;
  const flatten_priv *p = ln_module_priv(m);
  *start_dim = p->start_dim;
  *end_dim = p->end_dim;
  return true;
}
