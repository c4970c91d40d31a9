/*
** test_batchnorm_module.c -- the BatchNorm modules from C, without Lua
** (nn/batchnorm.h): construction and slots, PyTorch's forward logic
** (counter, cumulative factor, which statistics), a failed forward that
** changes nothing, printing (Python's float repr), the version-1 load
** hook, lazy modules through a call and through a state dict, resets,
** bad arguments, and no leaked tensors. The numerics are
** test_batchnorm.c's and the Lua spec's (against PyTorch).
*/
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "module_check.h"
#include "core/autograd.h"
#include "core/ops.h"
#include "core/tensor.h"
#include "nn/batchnorm.h"

static double at(ln_tensor *t, int64_t i) { return ln_tensor_get(t, &i); }

static double item(ln_tensor *t) {
  double v = NAN;
  ln_tensor_item(t, &v);
  return v;
}

/* (n, c, 2) float64 with values a*i + b*channel, distinct per batch. */
static ln_tensor *input(int64_t n, int64_t c, double shift) {
  int64_t sizes[3] = { n, c, 2 };
  ln_tensor *x = ln_empty(sizes, 3, LN_F64, LN_DEVICE_CPU);
  double *p = ln_tensor_data(x);
  for (int64_t i = 0; i < n * c * 2; i++) p[i] = (double)((i * 7) % 11) + shift * (double)(i % c);
  return x;
}

static ln_tensor *call(ln_module *m, ln_tensor *x) { return ln_module_call(m, &x, 1); }

static void test_construction(void) {
  ln_module *bn = ln_batchnorm_new(2, 3, NULL);
  CHECK(bn && ln_is_batchnorm(bn));
  static const char *const names[] = { "weight", "bias", "running_mean", "running_var",
                                       "num_batches_tracked" };
  CHECK(ln_module_slot_count(bn) == 5);
  for (int i = 0; i < 5 && i < ln_module_slot_count(bn); i++) {
    CHECK(strcmp(ln_module_slot_name(bn, i), names[i]) == 0);
    CHECK(ln_module_slot_kind(bn, i) == (i < 2 ? LN_SLOT_PARAM : LN_SLOT_BUFFER));
  }
  ln_tensor *w = ln_module_get_tensor(bn, "weight");
  CHECK(ln_tensor_requires_grad(w) && ln_tensor_is_parameter(w));
  CHECK(at(w, 2) == 1 && at(ln_module_get_tensor(bn, "bias"), 2) == 0);
  CHECK(at(ln_module_get_tensor(bn, "running_var"), 0) == 1);
  ln_tensor *nbt = ln_module_get_tensor(bn, "num_batches_tracked");
  CHECK(ln_tensor_dtype(nbt) == LN_I64 && ln_tensor_dim(nbt) == 0 && item(nbt) == 0);
  CHECK(ln_module_get_attr(bn, "num_features")->u.i == 3);
  CHECK(ln_module_get_attr(bn, "momentum")->kind == LN_ATTR_NUMBER);
  CHECK(repr_is(bn, "BatchNorm2d(3, eps=1e-05, momentum=0.1, affine=true, "
                    "track_running_stats=true)"));
  ln_module_release(bn);

  ln_batchnorm_options o = ln_batchnorm_defaults();
  o.affine = o.track_running_stats = false;
  o.cumulative = true;
  o.dtype = LN_F64;
  bn = ln_batchnorm_new(1, 4, &o);
  CHECK(ln_module_slot_count(bn) == 5 && !ln_module_get_tensor(bn, "weight") &&
        !ln_module_get_tensor(bn, "num_batches_tracked"));
  CHECK(ln_module_get_attr(bn, "momentum")->kind == LN_ATTR_NIL);
  CHECK(repr_is(bn, "BatchNorm1d(4, eps=1e-05, momentum=false, affine=false, "
                    "track_running_stats=false)"));
  ln_module_release(bn);

  CHECK(ln_batchnorm_new(4, 3, NULL) == NULL);
  CHECK_MSG("spatial_dims must be 1, 2 or 3");
  CHECK(ln_batchnorm_new(2, -1, NULL) == NULL);
  CHECK_MSG("Trying to create tensor with negative dimension -1: [-1]");
  o = ln_batchnorm_defaults();
  o.dtype = LN_I64;
  CHECK(ln_batchnorm_new(2, 3, &o) == NULL);
  CHECK_MSG("dtype must be a floating point type, got int64");
}

/* Python's float repr through extra_repr's eps and momentum. */
static void test_printing(void) {
  static const struct { double eps, momentum; const char *text; } cases[] = {
    { 1e-5, 0.1, "eps=1e-05, momentum=0.1" },
    { 1e-3, 1.0, "eps=0.001, momentum=1.0" },
    { 1e-4, 1e16, "eps=0.0001, momentum=1e+16" },
    { 1.5e-7, 1e15, "eps=1.5e-07, momentum=1000000000000000.0" },
    { 0.0, 123.25, "eps=0.0, momentum=123.25" },
    { -0.5, 5e-324, "eps=-0.5, momentum=5e-324" },
    { 1.0 / 3.0, 1e100, "eps=0.3333333333333333, momentum=1e+100" },
    { NAN, -INFINITY, "eps=nan, momentum=-inf" },
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    ln_batchnorm_options o = ln_batchnorm_defaults();
    o.eps = cases[i].eps;
    o.momentum = cases[i].momentum;
    ln_module *bn = ln_batchnorm_new(3, 2, &o);
    char want[200];
    snprintf(want, sizeof want, "BatchNorm3d(2, %s, affine=true, track_running_stats=true)",
             cases[i].text);
    CHECK(repr_is(bn, want));
    ln_module_release(bn);
  }
}

/* _BatchNorm.forward: count, factor, statistics; a failure counts nothing. */
static void test_forward(void) {
  ln_batchnorm_options o = ln_batchnorm_defaults();
  o.dtype = LN_F64;
  o.cumulative = true;
  ln_module *bn = ln_batchnorm_new(1, 2, &o);
  ln_tensor *nbt = ln_module_get_tensor(bn, "num_batches_tracked");
  double sum0 = 0;
  for (int step = 0; step < 3; step++) {
    ln_tensor *x = input(4, 2, step);
    ln_tensor *y = call(bn, x);
    CHECK(y != NULL);
    int dims[2] = { 0, 2 };
    ln_tensor *mean = ln_mean(x, dims, 2, false);
    sum0 += at(mean, 0);
    ln_tensor_release(mean);
    ln_tensor_release(y);
    ln_tensor_release(x);
  }
  CHECK(item(nbt) == 3);
  CHECK_NEAR(at(ln_module_get_tensor(bn, "running_mean"), 0), sum0 / 3, 1e-12);

  /* one value per channel: an error, and the counter is put back */
  ln_tensor *one = input(1, 2, 0);
  ln_tensor *v = ln_select(one, 2, 0);
  CHECK(call(bn, v) == NULL);
  CHECK_MSG("Expected more than 1 value per channel when training, got input size {1, 2}");
  CHECK(item(nbt) == 3);
  ln_tensor *four = ln_unsqueeze(one, 3);
  CHECK(call(bn, four) == NULL);
  CHECK_MSG("expected 2D or 3D input (got 4D input)");
  CHECK(ln_module_call(bn, NULL, 0) == NULL);
  CHECK_MSG("expects 1 input, got 0");
  ln_tensor_release(four);

  /* eval: running statistics, nothing counted */
  ln_module_train(bn, false);
  ln_tensor *y = call(bn, v);
  CHECK(y != NULL && item(nbt) == 3);
  ln_tensor_release(y);
  ln_tensor_release(v);
  ln_tensor_release(one);

  /* a channel count that differs: the functional form's message */
  ln_tensor *x3 = input(4, 3, 0);
  CHECK(call(bn, x3) == NULL);
  CHECK_MSG("running_mean should contain 3 elements not 2");
  CHECK(item(nbt) == 3);
  ln_module_release(bn);

  /* no per-channel tensors: batch statistics in eval, any channel count */
  o.affine = o.track_running_stats = false;
  bn = ln_batchnorm_new(1, 2, &o);
  ln_module_train(bn, false);
  y = call(bn, x3);
  CHECK(y != NULL);
  ln_tensor_release(y);
  ln_module_release(bn);
  ln_tensor_release(x3);
}

static void test_resets(void) {
  ln_module *bn = ln_batchnorm_new(1, 2, NULL);
  ln_tensor *x = input(3, 2, 1);
  ln_tensor *xf = ln_to_dtype(x, LN_F32);
  ln_tensor *y = call(bn, xf);
  bool grad = ln_set_grad_enabled(false);
  ln_fill_(ln_module_get_tensor(bn, "weight"), 3);
  ln_set_grad_enabled(grad);
  CHECK_OK(ln_batchnorm_reset_running_stats(bn));
  CHECK(at(ln_module_get_tensor(bn, "running_mean"), 1) == 0);
  CHECK(item(ln_module_get_tensor(bn, "num_batches_tracked")) == 0);
  CHECK(at(ln_module_get_tensor(bn, "weight"), 1) == 3);
  CHECK_OK(ln_batchnorm_reset_parameters(bn));
  CHECK(at(ln_module_get_tensor(bn, "weight"), 1) == 1);
  ln_module *seq = ln_module_new(&ln_sequential_type, NULL);
  CHECK(ln_batchnorm_reset_parameters(seq) != LN_OK);
  CHECK_MSG("reset_parameters: BatchNorm module expected, got Sequential");
  CHECK(!ln_is_batchnorm(seq));
  ln_module_release(seq);
  ln_tensor_release(y);
  ln_tensor_release(xf);
  ln_tensor_release(x);
  ln_module_release(bn);
}

/* A state dict of bn's values under prefix "bn.", without the counter. */
static ln_state_dict *old_dict(ln_module *bn, int version) {
  ln_state_dict *sd = ln_state_dict_new();
  static const char *const names[] = { "weight", "bias", "running_mean", "running_var" };
  for (int i = 0; i < 4; i++) {
    char key[64];
    snprintf(key, sizeof key, "bn.%s", names[i]);
    ln_state_dict_set(sd, key, ln_module_get_tensor(bn, names[i]));
  }
  if (version > 0) ln_state_dict_set_version(sd, "bn", version);
  return sd;
}

static void test_state_dicts(void) {
  ln_module *src = ln_batchnorm_new(2, 3, NULL);
  ln_fill_(ln_module_get_tensor(src, "running_var"), 5);
  ln_module *net = ln_module_new(&ln_sequential_type, NULL);
  ln_module *bn = ln_batchnorm_new(2, 3, NULL);
  ln_module_register_module(net, "bn", bn);
  for (int version = -1; version <= 2; version++) {
    if (version == 0) continue;
    ln_state_dict *sd = old_dict(src, version);
    ln_fill_(ln_module_get_tensor(bn, "num_batches_tracked"), 7);
    ln_status st = ln_module_load_state_dict(net, sd, true, NULL);
    if (version == 2) {
      CHECK(st != LN_OK);
      CHECK_MSG("Missing key(s) in state_dict: \"bn.num_batches_tracked\"");
    } else {
      CHECK_OK(st);
      CHECK(at(ln_module_get_tensor(bn, "running_var"), 2) == 5);
      CHECK(item(ln_module_get_tensor(bn, "num_batches_tracked")) == 7);
    }
    ln_state_dict_free(sd);
  }
  ln_state_dict *sd = ln_module_state_dict(net);
  int v = 0;
  CHECK(ln_state_dict_get_version(sd, "bn", &v) && v == 2);
  CHECK(ln_state_dict_get(sd, "bn.num_batches_tracked") != NULL);
  ln_state_dict_free(sd);

  /* a lazy module takes its shapes, num_features and type from the dict */
  ln_module *lazy = ln_lazy_batchnorm_new(2, NULL);
  ln_module_register_module(net, "bn", lazy);
  CHECK(repr_is(lazy, "LazyBatchNorm2d(0, eps=1e-05, momentum=0.1, affine=true, "
                      "track_running_stats=true)"));
  sd = old_dict(src, 1);
  CHECK_OK(ln_module_load_state_dict(net, sd, true, NULL));
  CHECK(strcmp(ln_module_type_name(lazy), "BatchNorm2d") == 0 && ln_is_batchnorm(lazy));
  CHECK(ln_module_get_attr(lazy, "num_features")->u.i == 3);
  CHECK(at(ln_module_get_tensor(lazy, "running_var"), 1) == 5);
  ln_state_dict_free(sd);
  ln_module_release(lazy);
  ln_module_release(bn);
  ln_module_release(net);
  ln_module_release(src);
}

static void test_lazy_call(void) {
  ln_module *lazy = ln_lazy_batchnorm_new(1, NULL);
  CHECK(!ln_is_batchnorm(lazy));
  CHECK_OK(ln_batchnorm_reset_parameters(lazy));   /* nothing to reset yet */
  int64_t sizes[4] = { 2, 5, 2, 2 };
  ln_tensor *bad = ln_zeros(sizes, 4, LN_F32, LN_DEVICE_CPU);
  CHECK(call(lazy, bad) == NULL);
  CHECK_MSG("expected 2D or 3D input (got 4D input)");
  CHECK(ln_module_has_uninitialized(lazy));
  ln_tensor *x = ln_zeros(sizes, 2, LN_F32, LN_DEVICE_CPU);
  ln_tensor *y = call(lazy, x);
  CHECK(y != NULL);
  CHECK(strcmp(ln_module_type_name(lazy), "BatchNorm1d") == 0);
  CHECK(ln_module_get_attr(lazy, "num_features")->u.i == 5);
  CHECK(at(ln_module_get_tensor(lazy, "weight"), 4) == 1);
  CHECK_NEAR(at(ln_module_get_tensor(lazy, "running_var"), 4), 0.9, 1e-6);   /* one step from 1 */
  CHECK(item(ln_module_get_tensor(lazy, "num_batches_tracked")) == 1);
  ln_tensor_release(y);
  ln_tensor_release(x);
  ln_tensor_release(bad);
  ln_module_release(lazy);
}

int main(void) {
  ln_init();
  int64_t live = ln_tensor_live_count();
  test_construction();
  test_printing();
  test_forward();
  test_resets();
  test_state_dicts();
  test_lazy_call();
  CHECK(ln_tensor_live_count() == live);
  return check_done("test_batchnorm_module");
}
