/*
** sequential.c -- nn.Sequential: a container whose forward feeds its input
** through its children in registration order, each through ln_module_call
** so that the children's hooks and lazy initialisation run. The children's
** names ("1", "2", ... in lunet) are the caller's choice.
*/
#include "module.h"

/* One input in, a new reference out; an empty Sequential returns its input. */
static ln_tensor *sequential_forward(ln_module *m, ln_tensor *const *inputs, int n) {
  if (n != 1 || !inputs[0]) {
    ln_error(LN_EINVAL, "Sequential expects exactly one tensor input, got %d", n);
    return NULL;
  }
  ln_tensor *x = inputs[0];
  ln_tensor_retain(x);
  for (int i = 0; x && i < ln_module_slot_count(m); i++) {
    ln_module *child = ln_module_slot_module(m, i);
    if (!child) continue;
    ln_tensor *y = ln_module_call(child, &x, 1);
    ln_tensor_release(x);
    x = y;
  }
  return x;
}

const ln_module_type ln_sequential_type = {
  .name = "Sequential",
  .version = 1,
  .forward = sequential_forward,
};
