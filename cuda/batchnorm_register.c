/*
** batchnorm_register.c -- lunet's BatchNorm kernels (cuda/batchnorm.h) as
** the "lunet" implementation of nn/batchnorm_device.h for CUDA tensors.
** They take every call the seam describes (all layouts, dtypes and forms)
** and rank 1: above cuDNN's until scripts/bench on a GPU says otherwise
** case by case.
*/
#include "cuda/batchnorm.h"

static int rank_forward(const ln_bn_dev_fwd *f) {
  (void)f;
  return 1;
}

static int rank_backward(const ln_bn_dev_bwd *b) {
  (void)b;
  return 1;
}

static const ln_bn_device_impl lunet_impl = {
  .name = "lunet",
  .kind = LN_BN_IMPL_LUNET,
  .rank_forward = rank_forward,
  .rank_backward = rank_backward,
  .forward = ln_cuda_bn_forward,
  .backward = ln_cuda_bn_backward,
  .sync_pack = ln_cuda_bn_sync_pack,
  .sync_merge = ln_cuda_bn_sync_merge,
  .sync_grad_sums = ln_cuda_bn_sync_grad_sums,
};

void ln_cuda_install_batchnorm(void) { ln_bn_device_register(LN_CUDA, &lunet_impl); }
