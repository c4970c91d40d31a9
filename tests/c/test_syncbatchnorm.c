/*
** test_syncbatchnorm.c -- nn.SyncBatchNorm from C in a plain process
** (nn/syncbatchnorm.h): construction, the module's group and its freeing,
** ln_sync_batchnorm_from (shared tensors, attributes, mode), the fallback
** to BatchNorm without dist (same values as ln_batch_norm, also for 5D
** input), errors, and no leaked tensors. It runs in the ASan build too,
** which has no MPI. The synchronized path needs mpirun: tests/dist/.
*/
#include <string.h>

#include "check.h"
#include "core/dist.h"
#include "core/ops.h"
#include "core/tensor.h"
#include "nn/syncbatchnorm.h"

static ln_tensor *ramp(const int64_t *sizes, int ndim) {
  ln_tensor *x = ln_empty(sizes, ndim, LN_F64, LN_DEVICE_CPU);
  double *p = ln_tensor_data(x);
  for (int64_t i = 0; i < ln_tensor_numel(x); i++) p[i] = (double)((i * 7) % 13) - 0.5 * (double)(i % 3);
  return x;
}

static double max_diff(ln_tensor *a, ln_tensor *b) {
  ln_tensor *d = ln_sub(a, b), *ad = d ? ln_unary(LN_ABS, d) : NULL, *m = ad ? ln_max(ad, NULL, 0, false) : NULL;
  double v = 1e300;
  if (m) ln_tensor_item(m, &v);
  ln_tensor_release(d);
  ln_tensor_release(ad);
  ln_tensor_release(m);
  return v;
}

static void test_module(void) {
  ln_batchnorm_options o = ln_batchnorm_defaults();
  o.dtype = LN_F64;
  ln_module *m = ln_sync_batchnorm_new(3, &o, NULL);
  CHECK(m && ln_is_sync_batchnorm(m) && !ln_is_batchnorm(m));
  CHECK(strcmp(ln_module_type_name(m), "SyncBatchNorm") == 0);
  CHECK(ln_sync_batchnorm_group(m) == NULL);
  CHECK(ln_module_slot_count(m) == 5);
  CHECK_OK(ln_sync_batchnorm_set_group(m, NULL));

  /* without dist it is BatchNorm: any rank from 2 dims */
  int64_t sizes[5] = { 2, 3, 2, 3, 2 };
  ln_tensor *x = ramp(sizes, 5);
  ln_tensor *rm = ln_zeros(&sizes[1], 1, LN_F64, LN_DEVICE_CPU);
  ln_tensor *rv = ln_ones(&sizes[1], 1, LN_F64, LN_DEVICE_CPU);
  ln_tensor *y = ln_module_call(m, &x, 1);
  ln_tensor *ref = ln_batch_norm(x, rm, rv, NULL, NULL, true, 0.1, 1e-5);
  CHECK(y && ref && max_diff(y, ref) < 1e-12);
  CHECK(max_diff(ln_module_get_tensor(m, "running_var"), rv) < 1e-15);
  ln_tensor_release(y);
  ln_tensor_release(ref);

  /* errors leave the counter as it was */
  ln_tensor *one = ln_zeros(sizes, 1, LN_F64, LN_DEVICE_CPU);
  CHECK(ln_module_call(m, &one, 1) == NULL);
  CHECK_MSG("expected at least 2D input (got 1D input)");
  int64_t wrong[2] = { 2, 4 };
  ln_tensor *w4 = ln_zeros(wrong, 2, LN_F64, LN_DEVICE_CPU);
  CHECK(ln_module_call(m, &w4, 1) == NULL);
  CHECK_MSG("SyncBatchNorm expected input with 3 channels (num_features), got 4");
  double count = -1;
  CHECK_OK(ln_tensor_item(ln_module_get_tensor(m, "num_batches_tracked"), &count));
  CHECK(count == 1);

  /* the functional form needs dist */
  CHECK(ln_sync_batch_norm(x, NULL, NULL, NULL, NULL, 0.1, 1e-5, NULL, 3) == NULL);
  CHECK_MSG("Default process group has not been initialized");
  ln_tensor_release(one);
  ln_tensor_release(w4);
  ln_tensor_release(x);
  ln_tensor_release(rm);
  ln_tensor_release(rv);
  ln_module_release(m);
}

static void test_from(void) {
  ln_batchnorm_options o = ln_batchnorm_defaults();
  o.cumulative = true;
  o.eps = 1e-3;
  ln_module *bn = ln_batchnorm_new(2, 4, &o);
  ln_module_train(bn, false);
  ln_module *m = ln_sync_batchnorm_from(bn, NULL);
  CHECK(m && ln_is_sync_batchnorm(m));
  static const char *const slots[5] = { "weight", "bias", "running_mean", "running_var",
                                        "num_batches_tracked" };
  for (int i = 0; m && i < 5; i++)
    CHECK(ln_module_get_tensor(m, slots[i]) == ln_module_get_tensor(bn, slots[i]));
  CHECK(m && !ln_module_training(m));
  CHECK(m && ln_module_get_attr(m, "momentum")->kind == LN_ATTR_NIL);
  CHECK(m && ln_module_attr_number(m, "eps", 0) == 1e-3);
  ln_module *again = ln_sync_batchnorm_from(m, NULL);   /* a SyncBatchNorm converts too */
  CHECK(again && ln_module_get_tensor(again, "weight") == ln_module_get_tensor(bn, "weight"));
  ln_module_release(again);
  ln_module_release(m);

  ln_module *seq = ln_module_new(&ln_sequential_type, NULL);
  CHECK(ln_sync_batchnorm_from(seq, NULL) == NULL);
  CHECK_MSG("convert_sync_batchnorm: BatchNorm module expected, got Sequential");
  CHECK(ln_sync_batchnorm_set_group(bn, NULL) != LN_OK);
  CHECK_MSG("SyncBatchNorm module expected, got BatchNorm2d");
  ln_module_release(seq);
  ln_module_release(bn);
}

int main(void) {
  ln_init();
  int64_t live = ln_tensor_live_count();
  test_module();
  test_from();
  CHECK(ln_tensor_live_count() == live);
  return check_done("test_syncbatchnorm");
}
