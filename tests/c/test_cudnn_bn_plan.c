/*
** test_cudnn_bn_plan.c -- how the cuDNN BatchNorm path describes a case
** to cuDNN and which cases it takes (cuda/cudnn_bn_plan.h), on the CPU in
** every build: the descriptor's strides against lunet's own contiguous
** and channels-last tensors of the same shape, the mode per layout, and
** the limits of ln_cudnn_bn_supported.
*/
#include <stdio.h>

#include "check.h"
#include "core/tensor.h"
#include "cuda/cudnn_bn_plan.h"

static ln_cudnn_bn_desc desc(int ndim, const int64_t *sizes, bool channels_last, ln_dtype dt) {
  ln_cudnn_bn_desc d = { .device = 0, .ndim = ndim, .channels_last = channels_last,
                         .dtype = dt, .ops = LN_CUDNN_BN_OPS_BN, .eps = 1e-5 };
  for (int i = 0; i < ndim; i++) d.sizes[i] = sizes[i];
  return d;
}

/* The plan of a shape agrees with a lunet CPU tensor of that shape and
** layout: same sizes and strides on the input's dims, size 1 beyond. */
static void check_strides(int ndim, const int64_t *sizes, bool channels_last) {
  ln_cudnn_bn_desc d = desc(ndim, sizes, channels_last, LN_F32);
  ln_cudnn_bn_plan p;
  CHECK(ln_cudnn_bn_plan_for(&d, true, &p));
  CHECK(p.nd == (ndim == 5 ? 5 : 4));
  ln_tensor *t = ln_empty_format(sizes, ndim, LN_F32, LN_DEVICE_CPU,
                                 channels_last ? LN_CHANNELS_LAST : LN_CONTIGUOUS);
  CHECK(t != NULL);
  if (!t) return;
  for (int i = 0; i < ndim; i++) {
    CHECK(p.dims[i] == sizes[i]);
    /* a dim of size 1 may have any stride; lunet's and cuDNN's agree anyway */
    CHECK(p.strides[i] == ln_tensor_stride(t, i));
  }
  for (int i = ndim; i < p.nd; i++) {
    CHECK(p.dims[i] == 1);
    CHECK(p.strides[i] == 1);
  }
  ln_tensor_release(t);
}

static void test_strides(void) {
  check_strides(4, (int64_t[]){ 3, 5, 4, 7 }, false);
  check_strides(4, (int64_t[]){ 3, 5, 4, 7 }, true);
  check_strides(5, (int64_t[]){ 2, 3, 4, 5, 6 }, false);
  check_strides(5, (int64_t[]){ 2, 3, 4, 5, 6 }, true);
  check_strides(4, (int64_t[]){ 1, 1, 1, 1 }, true);
  check_strides(3, (int64_t[]){ 6, 3, 10 }, false);
  check_strides(2, (int64_t[]){ 100000, 32 }, false);
}

static ln_cudnn_bn_mode mode_of(int ndim, const int64_t *sizes, bool cl, ln_cudnn_bn_ops ops,
                                bool training) {
  ln_cudnn_bn_desc d = desc(ndim, sizes, cl, LN_F16);
  d.ops = ops;
  ln_cudnn_bn_plan p = { 0 };
  CHECK(ln_cudnn_bn_plan_for(&d, training, &p));
  return p.mode;
}

static void test_modes(void) {
  const int64_t s4[] = { 8, 16, 5, 5 }, s2[] = { 8, 16 }, s5[] = { 2, 4, 3, 3, 3 };
  CHECK(mode_of(2, s2, false, LN_CUDNN_BN_OPS_BN, true) == LN_CUDNN_BN_PER_ACTIVATION);
  CHECK(mode_of(2, s2, false, LN_CUDNN_BN_OPS_BN, false) == LN_CUDNN_BN_PER_ACTIVATION);
  CHECK(mode_of(4, s4, false, LN_CUDNN_BN_OPS_BN, true) == LN_CUDNN_BN_SPATIAL);
  CHECK(mode_of(4, s4, false, LN_CUDNN_BN_OPS_BN, false) == LN_CUDNN_BN_SPATIAL);
  CHECK(mode_of(4, s4, true, LN_CUDNN_BN_OPS_BN, true) == LN_CUDNN_BN_SPATIAL_PERSISTENT);
  CHECK(mode_of(4, s4, true, LN_CUDNN_BN_OPS_BN, false) == LN_CUDNN_BN_SPATIAL);
  CHECK(mode_of(5, s5, true, LN_CUDNN_BN_OPS_BN, true) == LN_CUDNN_BN_SPATIAL_PERSISTENT);
  CHECK(mode_of(4, s4, true, LN_CUDNN_BN_OPS_ADD_RELU, true) == LN_CUDNN_BN_SPATIAL_PERSISTENT);
  CHECK(mode_of(4, s4, true, LN_CUDNN_BN_OPS_RELU, true) == LN_CUDNN_BN_SPATIAL_PERSISTENT);
}

static void test_refused_shapes(void) {
  ln_cudnn_bn_plan p;
  ln_cudnn_bn_desc d = desc(1, (int64_t[]){ 4 }, false, LN_F32);
  CHECK(!ln_cudnn_bn_plan_for(&d, true, &p));
  d = desc(3, (int64_t[]){ 4, 3, 5 }, true, LN_F32);      /* channels-last needs 4D/5D */
  CHECK(!ln_cudnn_bn_plan_for(&d, true, &p));
  d = desc(4, (int64_t[]){ 0, 3, 5, 5 }, false, LN_F32);  /* empty batch */
  CHECK(!ln_cudnn_bn_plan_for(&d, true, &p));
  CHECK(!ln_cudnn_bn_supported(&d, true));
  d = desc(4, (int64_t[]){ 2, 3, 0, 5 }, false, LN_F32);
  CHECK(!ln_cudnn_bn_plan_for(&d, false, &p));
  d = desc(2, (int64_t[]){ 2, (int64_t)INT32_MAX + 1 }, false, LN_F32);
  CHECK(!ln_cudnn_bn_plan_for(&d, true, &p));
  d = desc(4, (int64_t[]){ 1024, 1024, 64, 64 }, false, LN_F32);  /* 2^32 elements */
  CHECK(!ln_cudnn_bn_plan_for(&d, true, &p));
  d.ndim = 6;
  CHECK(!ln_cudnn_bn_plan_for(&d, true, &p));
}

static void test_supported(void) {
  const int64_t s4[] = { 32, 256, 56, 56 };
  ln_cudnn_bn_desc d = desc(4, s4, true, LN_F16);
  CHECK(ln_cudnn_bn_supported(&d, true));
  CHECK(ln_cudnn_bn_supported(&d, false));
  for (ln_dtype t = LN_F32; t < LN_DTYPE_COUNT; t++) {
    d.dtype = t;
    CHECK(ln_cudnn_bn_supported(&d, true) ==
          (t == LN_F32 || t == LN_F64 || t == LN_F16 || t == LN_BF16));
  }
  d.dtype = LN_F32;
  d.eps = -1e-5;
  CHECK(!ln_cudnn_bn_supported(&d, true));
  d.eps = 0.0 / 0.0;
  CHECK(!ln_cudnn_bn_supported(&d, true));
  d.eps = 0.0;
  CHECK(ln_cudnn_bn_supported(&d, true));

  /* N limits: spatial 880801 in training, 65535 in eval; (N, C) 131070 and 262136 */
  d = desc(4, (int64_t[]){ 65535, 2, 1, 1 }, false, LN_F32);
  CHECK(ln_cudnn_bn_supported(&d, false));
  d.sizes[0] = 65536;
  CHECK(!ln_cudnn_bn_supported(&d, false));
  CHECK(ln_cudnn_bn_supported(&d, true));
  d.sizes[0] = 880802;
  CHECK(!ln_cudnn_bn_supported(&d, true));
  d = desc(2, (int64_t[]){ 100000, 32 }, false, LN_F32);
  CHECK(ln_cudnn_bn_supported(&d, true));
  CHECK(ln_cudnn_bn_supported(&d, false));
  d.sizes[0] = 131071;
  CHECK(!ln_cudnn_bn_supported(&d, true));
  CHECK(ln_cudnn_bn_supported(&d, false));
  d.sizes[0] = 262137;
  CHECK(!ln_cudnn_bn_supported(&d, false));

  /* just under and at 2^31 - 1 elements */
  d = desc(3, (int64_t[]){ 1, 1, (int64_t)INT32_MAX - 1 }, false, LN_F32);
  CHECK(ln_cudnn_bn_supported(&d, true));
  d.sizes[2] = INT32_MAX;
  CHECK(!ln_cudnn_bn_supported(&d, true));
}

static void test_fused(void) {
  ln_cudnn_bn_desc d = desc(4, (int64_t[]){ 8, 64, 14, 14 }, true, LN_F16);
  for (int ops = LN_CUDNN_BN_OPS_RELU; ops <= LN_CUDNN_BN_OPS_ADD_RELU; ops++) {
    d.ops = (ln_cudnn_bn_ops)ops;
    d.dtype = LN_F16;
    d.channels_last = true;
    d.sizes[1] = 64;
    CHECK(ln_cudnn_bn_supported(&d, true));
    CHECK(!ln_cudnn_bn_supported(&d, false));   /* no fused inference */
    d.sizes[1] = 66;                             /* C a multiple of 4 */
    CHECK(!ln_cudnn_bn_supported(&d, true));
    d.sizes[1] = 64;
    d.channels_last = false;                     /* NHWC only */
    CHECK(!ln_cudnn_bn_supported(&d, true));
    d.channels_last = true;
    d.dtype = LN_F32;                            /* half only */
    CHECK(!ln_cudnn_bn_supported(&d, true));
    d.dtype = LN_BF16;
    CHECK(!ln_cudnn_bn_supported(&d, true));
  }
  d = desc(5, (int64_t[]){ 2, 8, 3, 3, 3 }, true, LN_F16);
  d.ops = LN_CUDNN_BN_OPS_ADD_RELU;
  CHECK(!ln_cudnn_bn_supported(&d, true));       /* 4D only */
}

int main(void) {
  ln_init();
  test_strides();
  test_modes();
  test_refused_shapes();
  test_supported();
  test_fused();
  return check_done("test_cudnn_bn_plan");
}
