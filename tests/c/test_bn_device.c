/*
** test_bn_device.c -- the CPU side of nn/batchnorm_device.h, the seam
** between BatchNorm and a device's kernels: how nn/ describes the ghost
** blocks of a tensor to a device (block 0's view and a constant step must
** locate every block exactly as ln_bn_block_view and ln_bn_block_mask do),
** per-channel vectors, and the choice of an implementation per call
** (support, rank, cuDNN skipped when lunet.backends.cudnn.enabled is off)
** with fake implementations registered for CUDA tensors. No device runs.
*/
#include <string.h>

#include "check.h"
#include "core/tensor.h"
#include "nn/backends.h"
#include "nn/batchnorm_functional.h"

static ln_tensor *dense(int64_t N, int64_t C, int64_t H, int64_t W, bool channels_last) {
  int64_t sz[4] = { N, C, H, W };
  return ln_empty_format(sz, 4, LN_F32, LN_DEVICE_CPU,
                         channels_last ? LN_CHANNELS_LAST : LN_CONTIGUOUS);
}

/* Block g located from block 0 and the step equals ln_bn_block_view's. */
static void test_blocks(bool channels_last, int64_t G) {
  ln_tensor *x = dense(12, 5, 3, 4, channels_last);
  ln_bn_blocks bl;
  CHECK(ln_bn_blocks_for(x, G, &bl));
  ln_bn_dview dv;
  CHECK(ln_bn_dview_for(&bl, x, &dv));
  CHECK(bl.plan.g.rows == channels_last && (G == 1 || dv.s_block != 0));
  uint32_t bits[64] = { 0 };
  ln_bn_mask m0;
  CHECK(ln_bn_block_mask(&bl, x, 0, bits, &m0));
  int64_t mask_step = G > 1 ? bl.V * ln_tensor_stride(x, 0) : 0;
  for (int64_t g = 0; g < G; g++) {
    ln_bn_view v;
    ln_bn_mask m;
    CHECK(ln_bn_block_view(&bl, x, g, &v) && ln_bn_block_mask(&bl, x, g, bits, &m));
    CHECK((char *)v.data == (char *)dv.v.data + g * dv.s_block * 4);
    CHECK(v.s_c == dv.v.s_c && v.s_outer == dv.v.s_outer && v.s_inner == dv.v.s_inner);
    CHECK(m.off == m0.off + g * mask_step && m.s_c == m0.s_c && m.s_outer == m0.s_outer &&
          m.s_inner == m0.s_inner);
  }
  ln_tensor_release(x);
}

static void test_vectors(void) {
  int64_t n = 8, sz2[2] = { 2, 4 };
  ln_tensor *v = ln_zeros(&n, 1, LN_F32, LN_DEVICE_CPU), *held = NULL;
  ln_tensor *strided = ln_narrow(v, 0, 1, 4);
  ln_bn_dvec d;
  CHECK_OK(ln_bn_dvec_for(NULL, &d, &held));
  CHECK(!d.data && !held);
  CHECK_OK(ln_bn_dvec_for(v, &d, &held));
  CHECK(held == v && d.data == ln_tensor_data(v) && d.stride == 1 && d.dtype == LN_F32);
  ln_tensor_release(held);
  /* every other element: one stride of 2 */
  ln_tensor *two = ln_view(v, sz2, 2), *col = two ? ln_select(two, 1, 1) : NULL;
  CHECK_OK(ln_bn_dvec_for(col, &d, &held));
  CHECK(held == col && d.stride == 4 && d.data == (float *)ln_tensor_data(v) + 1);
  ln_tensor_release(held);
  /* no single stride: a dense copy */
  int64_t perm_sz[2] = { 2, 2 };
  ln_tensor *sq = ln_view(strided, perm_sz, 2), *t = sq ? ln_transpose(sq, 0, 1) : NULL;
  CHECK_OK(ln_bn_dvec_for(t, &d, &held));
  CHECK(held && held != t && d.stride == 1);
  ln_tensor_release(held);
  ln_tensor_release(t);
  ln_tensor_release(sq);
  ln_tensor_release(col);
  ln_tensor_release(two);
  ln_tensor_release(strided);
  ln_tensor_release(v);
}

/* ---- choosing an implementation ---- */

static bool only_ghost(const ln_bn_dev_fwd *f) { return f->G == 2; }
static int rank5(const ln_bn_dev_fwd *f) {
  (void)f;
  return 5;
}
static int rank9(const ln_bn_dev_fwd *f) {
  (void)f;
  return 9;
}
static ln_status fake_forward(const ln_bn_dev_fwd *f) {
  (void)f;
  return LN_OK;
}

static const ln_bn_device_impl ghost_impl = {
  .name = "ghost", .kind = LN_BN_IMPL_LUNET, .supports_forward = only_ghost,
  .rank_forward = rank5, .forward = fake_forward
};
static const ln_bn_device_impl fast_cudnn = {
  .name = "fake cudnn", .kind = LN_BN_IMPL_CUDNN, .rank_forward = rank9,
  .forward = fake_forward
};

static void test_choice(void) {
  bool had = ln_bn_device_available(LN_CUDA);
  const ln_bn_device_impl *before = had ? ln_bn_device_for_forward(LN_CUDA, &(ln_bn_dev_fwd){
                                            .G = 1 }) : NULL;
  CHECK(!ln_bn_device_available(LN_CPU));
  CHECK(ln_bn_device_register(LN_CPU, &ghost_impl) != LN_OK);
  CHECK_OK(ln_bn_device_register(LN_CUDA, &ghost_impl));
  CHECK_OK(ln_bn_device_register(LN_CUDA, &ghost_impl));   /* once only */
  CHECK_OK(ln_bn_device_register(LN_CUDA, &fast_cudnn));
  CHECK(ln_bn_device_available(LN_CUDA));
  ln_bn_dev_fwd one = { .G = 1 }, ghost = { .G = 2 };
  bool enabled = ln_cudnn_enabled();
  ln_cudnn_set_enabled(true);
  CHECK(ln_bn_device_for_forward(LN_CUDA, &ghost) == &fast_cudnn);  /* highest rank */
  CHECK(ln_bn_device_for_forward(LN_CUDA, &one) == &fast_cudnn);
  ln_cudnn_set_enabled(false);
  CHECK(ln_bn_device_for_forward(LN_CUDA, &ghost) == &ghost_impl);  /* cuDNN skipped */
  CHECK(ln_bn_device_for_forward(LN_CUDA, &one) == before);         /* ghost refuses */
  if (!before) CHECK(strstr(ln_last_error(), "takes this call") != NULL);
  ln_cudnn_set_enabled(enabled);
  CHECK(ln_bn_device_for_backward(LN_CUDA, &(ln_bn_dev_bwd){ .G = 1 }) != &ghost_impl);
  CHECK(ln_bn_device_for_sync(LN_CUDA) != &ghost_impl);
}

int main(void) {
  ln_init();
  for (int cl = 0; cl < 2; cl++) {
    test_blocks(cl, 1);
    test_blocks(cl, 3);
    test_blocks(cl, 4);
  }
  test_vectors();
  test_choice();
  return check_done("bn_device");
}
