/*
** dropout.cu -- dropout's mask on a CUDA device (nn/layers_device.h's
** dropout_mask): uniform draws, made by core's generator with the same
** values on every device (so CPU and CUDA drop the same elements for the
** same seed), become scale where u < keep and 0 elsewhere, in place, as
** nn/dropout.c does on the CPU. float32 (the compute type of the 16-bit
** dtypes) and float64.
*/
#include "cuda/layers_common.cuh"

__global__ void dropout_mask_kernel(void *u, int64_t n, double keep, double scale, bool f64) {
  LN_CU_FOR(i, n) ln_sh_st(u, i, f64, ln_sh_ld(u, i, f64) < keep ? scale : 0.0);
}

extern "C" ln_status ln_cuda_dropout_mask(int device, ln_dtype dt, void *u, int64_t n,
                                          double keep, double scale) {
  if (dt != LN_F32 && dt != LN_F64)
    return ln_error(LN_EINVAL, "dropout's mask takes float32 or float64, got %s",
                    ln_dtype_name(dt));
  cudaStream_t s = ln_cuda_stream(device);
  if (!s) return ln_last_status();
  return ln_cu_launch("dropout", s, n, dropout_mask_kernel, u, n, keep, scale, dt == LN_F64);
}
