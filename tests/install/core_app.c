/*
** core_app.c -- a C program that uses an installed liblunet without Lua
** (built by tests/install/run.sh with `pkg-config --cflags --libs lunet`):
** a BatchNorm1d module in training mode must give each column mean 0,
** and its repr must be PyTorch's.
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ops.h"
#include "core/tensor.h"
#include "nn/batchnorm.h"
#include "nn/module.h"

int main(void) {
  ln_init();
  int rc = 1;
  ln_batchnorm_options o = ln_batchnorm_defaults();
  ln_module *bn = ln_batchnorm_new(1, 3, &o);
  ln_tensor *x = ln_arange(0, 12, 1, LN_F32), *x2 = NULL, *y = NULL, *m = NULL;
  char *repr = NULL;
  if (!bn || !x) goto fail;
  x2 = ln_view(x, (int64_t[]){ 4, 3 }, 2);
  if (!x2) goto fail;
  y = ln_module_call(bn, &x2, 1);
  m = y ? ln_mean(y, (int[]){ 0 }, 1, false) : NULL;
  if (!m) goto fail;
  for (int64_t c = 0; c < 3; c++) {
    double v = ln_tensor_get(m, &c);
    if (fabs(v) > 1e-6) {
      fprintf(stderr, "core_app: column %d has mean %g\n", (int)c, v);
      goto done;
    }
  }
  repr = ln_module_to_string(bn);
  if (!repr) goto fail;
  if (strncmp(repr, "BatchNorm1d(3, eps=1e-05, momentum=0.1", 38) != 0) {
    fprintf(stderr, "core_app: unexpected repr %s\n", repr);
    goto done;
  }
  printf("core_app: %s normalises as it should\n", repr);
  rc = 0;
  goto done;
fail:
  fprintf(stderr, "core_app: %s\n", ln_last_error());
done:
  free(repr);
  ln_tensor_release(m);
  ln_tensor_release(y);
  ln_tensor_release(x2);
  ln_tensor_release(x);
  ln_module_release(bn);
  return rc;
}
