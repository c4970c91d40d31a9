/*
** cudnn_bn.h -- BatchNorm through cuDNN 9's batch normalization calls
** (cudnnBatchNormalizationForwardTrainingEx, ...ForwardInference,
** ...BackwardEx), over device pointers. Built only with cuDNN
** (LN_HAVE_CUDNN); callable from C without cuDNN's headers.
**
** A case is an ln_cudnn_bn_desc (cuda/cudnn_bn_plan.h, which also says
** what is supported). x, y, z (the addend), dy, dx and dz are dense
** tensors of the desc's shape, layout and dtype on its device; the
** per-channel vectors are dense (C) in ln_dtype_compute(dtype) (float32,
** or float64 for float64 input). Work goes to the device's stream
** (cuda/runtime.h) through one cuDNN handle per device; nothing waits for
** it. Workspace comes from lunet tensors on the device, so the device's
** allocator serves it; it is released once the call is queued, which is
** safe as every later use of that memory is queued on the same stream.
** cuDNN's failures are LN_EDEVICE "cuDNN error during <what>: <cuDNN's
** message>".
*/
#ifndef LN_CUDNN_BN_H
#define LN_CUDNN_BN_H

#include "core/tensor.h"
#include "cuda/cudnn_bn_plan.h"

/* cudnnGetVersion() of the library lunet runs with (91900 for 9.19.0). */
int ln_cudnn_bn_version(void);

/* Register the "cudnn" implementation of nn/batchnorm_device.h for CUDA
** tensors (cuda/cudnn_bn_seam.c); called by ln_cuda_register. */
void ln_cudnn_bn_install(void);

/* Training forward: with the batch mean and biased variance of each
** channel, y = (x - mean) / sqrt(var + eps) * weight + bias, then + z and
** ReLU as d->ops says (z is read only with LN_CUDNN_BN_OPS_ADD_RELU).
** weight and bias are required (ones and zeros for a module without
** affine parameters). running_mean and running_var (both or neither) are
** updated as r = (1 - factor) * r + factor * batch, with the unbiased
** variance for running_var, as PyTorch: factor is the momentum, or
** 1 / num_batches_tracked (counted on the host, after this step's
** increment) for a cumulative average. save_mean and save_invstd get the
** mean and 1 / sqrt(var + eps) for the backward. With reserve not NULL
** (required for the fused forms), *reserve gets a new reference to
** cuDNN's reserve space (a tensor on the device, empty when cuDNN needs
** none), which the backward of this step must then be given; with
** reserve NULL the plain call runs, whose backward needs only the saved
** statistics (whoever computed them). */
ln_status ln_cudnn_bn_forward_train(const ln_cudnn_bn_desc *d, const void *x, const void *z,
                                    void *y, const void *weight, const void *bias,
                                    double factor, void *running_mean, void *running_var,
                                    void *save_mean, void *save_invstd, ln_tensor **reserve);

/* Eval forward with the running statistics: y = (x - running_mean) /
** sqrt(running_var + eps) * weight + bias. d->ops must be
** LN_CUDNN_BN_OPS_BN (cuDNN's inference has no fused form). */
ln_status ln_cudnn_bn_forward_eval(const ln_cudnn_bn_desc *d, const void *x, void *y,
                                   const void *weight, const void *bias,
                                   const void *running_mean, const void *running_var);

/* Backward of a training forward with the same desc, given its saved
** mean and invstd and its reserve space (NULL when the forward kept none:
** then the plain call, which reads only the saved statistics): dx, and
** dweight / dbias (the sums of dy * xhat and of dy; NULL when not
** wanted). With the fused forms, the gradient goes through the ReLU
** first: y is the forward's output and bias its bias; dz (ADD_RELU only)
** gets the addend's gradient. y, bias and dz are ignored otherwise. */
ln_status ln_cudnn_bn_backward(const ln_cudnn_bn_desc *d, const void *x, const void *y,
                               const void *dy, void *dx, void *dz, const void *weight,
                               const void *bias, void *dweight, void *dbias,
                               const void *save_mean, const void *save_invstd,
                               const ln_tensor *reserve);

#endif
