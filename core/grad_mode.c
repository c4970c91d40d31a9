/*
** grad_mode.c -- the thread's grad mode and the autograd fields of a tensor
** (requires_grad, grad, grad_fn). The graph itself lives in autograd.c.
*/
#include "tensor_impl.h"

static _Thread_local bool grad_enabled = true;

bool ln_grad_enabled(void) { return grad_enabled; }

bool ln_set_grad_enabled(bool enabled) {
  bool prev = grad_enabled;
  grad_enabled = enabled;
  return prev;
}

bool ln_any_requires_grad(ln_tensor *const *inputs, int n) {
  if (!grad_enabled) return false;
  for (int i = 0; i < n; i++)
    if (inputs[i] && inputs[i]->requires_grad) return true;
  return false;
}

bool ln_tensor_requires_grad(const ln_tensor *t) { return t->requires_grad; }

bool ln_tensor_is_leaf(const ln_tensor *t) { return t->grad_fn == NULL; }

/* As PyTorch's requires_grad_(): a non-leaf already requires grad, so only
** turning it off is an error there. */
ln_status ln_tensor_set_requires_grad(ln_tensor *t, bool flag) {
  if (t->grad_fn) {
    if (flag) return LN_OK;
    return ln_error(LN_ERUNTIME,
                    "you can only change requires_grad flags of leaf variables. "
                    "If you want to use a computed variable in a subgraph that "
                    "doesn't require differentiation use var_no_grad = var.detach().");
  }
  if (flag && !ln_dtype_is_float(t->dtype))
    return ln_error(LN_ERUNTIME,
                    "only Tensors of floating point dtype can require gradients "
                    "(got %s)", ln_dtype_name(t->dtype));
  t->requires_grad = flag;
  return LN_OK;
}

ln_tensor *ln_tensor_grad(const ln_tensor *t) { return t->grad; }

void ln_tensor_set_grad(ln_tensor *t, ln_tensor *grad) {
  if (grad) ln_tensor_retain(grad);
  ln_tensor_release(t->grad);
  t->grad = grad;
}

ln_node *ln_tensor_grad_fn(const ln_tensor *t) { return t->grad_fn; }

int ln_tensor_output_nr(const ln_tensor *t) { return t->output_nr; }
