/*
** batchnorm.h -- lunet's own BatchNorm kernels for CUDA tensors, behind
** nn/batchnorm_device.h's table (registered by cuda/batchnorm_register.c).
** Each entry enqueues its kernels on the device's stream and returns
** without waiting; the descriptions are those of nn/batchnorm_device.h.
**
** Kernels (one .cu per family, shared device code in batchnorm_common.cuh):
**   batchnorm_stats.cu     training statistics in one launch (per-CTA
**                          partials, the last CTA of each channel tile
**                          merges them, computes the coefficients and
**                          updates the running statistics); eval / given
**                          statistics' coefficients; SyncBatchNorm's row
**                          packing and Chan merge of gathered rows
**   batchnorm_forward.cu   the forward map (affine, or add + ReLU + mask)
**   batchnorm_backward.cu  the gradient sums in one launch (with the
**                          parameters' gradients), the backward map
*/
#ifndef LN_CUDA_BATCHNORM_H
#define LN_CUDA_BATCHNORM_H

#ifdef __cplusplus
extern "C" {
#endif
#include "nn/batchnorm_device.h"

ln_status ln_cuda_bn_forward(const ln_bn_dev_fwd *f);                 /* forward.cu */
ln_status ln_cuda_bn_backward(const ln_bn_dev_bwd *b);                /* backward.cu */
ln_status ln_cuda_bn_sync_pack(const ln_bn_dev_fwd *f, const double header[3],
                               double *row);                          /* stats.cu */
ln_status ln_cuda_bn_sync_merge(int device, const double *rows, int P, int64_t C,
                                double count, double *out);           /* stats.cu */
ln_status ln_cuda_bn_sync_grad_sums(const ln_bn_dev_bwd *b, double *row); /* backward.cu */

/* Register these kernels as the "lunet" implementation for CUDA tensors
** (batchnorm_register.c); called by ln_cuda_register. */
void ln_cuda_install_batchnorm(void);

#ifdef __cplusplus
}
#endif

#endif
