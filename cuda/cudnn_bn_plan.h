/*
** cudnn_bn_plan.h -- what the cuDNN BatchNorm path can do and how a case
** is described to cuDNN, as plain C without cuDNN's headers: included by
** cuda/cudnn_bn.c, by scripts/bench_cudnn.c (which times cuDNN alone) and
** by tests/c/test_cudnn_bn_plan.c, which checks it on any machine.
**
** A case is an input of shape (N, C, spatial...) with 2 to 5 dims, dense
** in row-major order or channels-last (NHWC for 4D, NDHWC for 5D). cuDNN
** sees it as a 4D or 5D tensor: trailing dims of size 1 are added, and the
** strides say the layout. The per-channel vectors (weight, bias, running
** and saved statistics) are float32 for float32/16/bfloat16 input and
** float64 for float64 input, as lunet's own kernels keep them.
*/
#ifndef LN_CUDNN_BN_PLAN_H
#define LN_CUDNN_BN_PLAN_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>

#include "../core/dtype.h"

/* cudnnBatchNormMode_t's values (cuda/cudnn_bn.c checks that they agree). */
typedef enum ln_cudnn_bn_mode {
  LN_CUDNN_BN_PER_ACTIVATION = 0,  /* (N, C): statistics per element of a sample */
  LN_CUDNN_BN_SPATIAL = 1,         /* per channel over N and the spatial dims */
  LN_CUDNN_BN_SPATIAL_PERSISTENT = 2
} ln_cudnn_bn_mode;

/* cudnnBatchNormOps_t's values: BatchNorm alone, relu(bn(x)), and
** relu(bn(x) + z) (FusedBatchNorm2d without and with an addend). */
typedef enum ln_cudnn_bn_ops {
  LN_CUDNN_BN_OPS_BN = 0,
  LN_CUDNN_BN_OPS_RELU = 1,
  LN_CUDNN_BN_OPS_ADD_RELU = 2
} ln_cudnn_bn_ops;

/* cuDNN 9's CUDNN_BN_MIN_EPSILON: eps may be as small as this. */
#define LN_CUDNN_BN_MIN_EPS 0.0

/* One BatchNorm call's shape, as the raw API (cuda/cudnn_bn.h) takes it. */
typedef struct ln_cudnn_bn_desc {
  int device;              /* CUDA device index */
  int ndim;                /* 2..5: (N, C, spatial...) */
  int64_t sizes[5];
  bool channels_last;      /* NHWC / NDHWC (4D and 5D only); else row-major */
  ln_dtype dtype;          /* x, y, z and their gradients: F32, F16, BF16, F64 */
  ln_cudnn_bn_ops ops;     /* the same in a training forward and its backward */
  double eps;
} ln_cudnn_bn_desc;

/* The tensor descriptor cuDNN gets and the mode for a call. */
typedef struct ln_cudnn_bn_plan {
  int nd;                  /* 4 or 5 */
  int dims[5], strides[5]; /* in elements, cuDNN's (N, C, D?, H, W) order */
  ln_cudnn_bn_mode mode;
} ln_cudnn_bn_plan;

static inline int64_t ln_cudnn_bn_numel(const ln_cudnn_bn_desc *d) {
  int64_t n = 1;
  for (int i = 0; i < d->ndim; i++) n *= d->sizes[i];
  return n;
}

/* The descriptor and mode for a case; false when it has not 2 to 5 dims
** (4 or 5 for channels-last), has an empty dim, or does not fit cuDNN's
** int dims. The mode is PyTorch's: per activation for (N, C); the
** persistent spatial kernels for channels-last training and for the
** fused forms (which cuDNN has only there); the plain spatial ones
** otherwise, since the persistent ones lose accuracy on NCHW models
** (PyTorch's note on ResNeXt-101). The backward of a training forward
** uses the training plan: the reserve space belongs to the mode. */
static inline bool ln_cudnn_bn_plan_for(const ln_cudnn_bn_desc *d, bool training,
                                        ln_cudnn_bn_plan *p) {
  if (d->ndim < 2 || d->ndim > 5 || (d->channels_last && d->ndim < 4)) return false;
  int64_t numel = 1;
  for (int i = 0; i < d->ndim; i++) {
    if (d->sizes[i] < 1 || d->sizes[i] > INT_MAX) return false;
    numel *= d->sizes[i];
    if (numel > INT_MAX) return false;
  }
  p->nd = d->ndim == 5 ? 5 : 4;
  for (int i = 0; i < p->nd; i++) p->dims[i] = i < d->ndim ? (int)d->sizes[i] : 1;
  if (d->channels_last) {        /* C innermost, then W, H (, D), then N */
    int s = p->dims[1];
    p->strides[1] = 1;
    for (int i = p->nd - 1; i >= 2; i--) {
      p->strides[i] = s;
      s *= p->dims[i];
    }
    p->strides[0] = s;
  } else {
    int s = 1;
    for (int i = p->nd - 1; i >= 0; i--) {
      p->strides[i] = s;
      s *= p->dims[i];
    }
  }
  if (d->ndim == 2)
    p->mode = LN_CUDNN_BN_PER_ACTIVATION;
  else if (d->ops != LN_CUDNN_BN_OPS_BN || (training && d->channels_last))
    p->mode = LN_CUDNN_BN_SPATIAL_PERSISTENT;
  else
    p->mode = LN_CUDNN_BN_SPATIAL;
  return true;
}

/* Whether the cuDNN path can run this case, in training (forward and
** backward) or eval (forward; an eval backward is lunet's own). As
** PyTorch's choice of cuDNN (aten/src/ATen/native/Normalization.cpp): a
** case ln_cudnn_bn_plan_for describes, fewer than 2^31 - 1 elements
** (cuDNN indexes with 32 bits), N within the limits PyTorch found for
** cuDNN's grids, eps not below cuDNN's minimum; the fused ReLU forms only
** in training, on float16 NHWC input with C a multiple of 4 (cuDNN's
** documented support for them). The caller keeps variants cuDNN has not
** (ghost BN, BatchRenorm) away from it. */
static inline bool ln_cudnn_bn_supported(const ln_cudnn_bn_desc *d, bool training) {
  ln_cudnn_bn_plan p;
  if (!ln_cudnn_bn_plan_for(d, training, &p)) return false;
  if (d->dtype != LN_F32 && d->dtype != LN_F16 && d->dtype != LN_BF16 && d->dtype != LN_F64)
    return false;
  if (!(d->eps >= LN_CUDNN_BN_MIN_EPS)) return false;  /* NaN too */
  if (ln_cudnn_bn_numel(d) >= INT32_MAX) return false;
  int64_t n = d->sizes[0];
  if (d->ndim == 2 ? n > (training ? 131070 : 262136) : n > (training ? 880801 : 65535))
    return false;
  if (d->ops != LN_CUDNN_BN_OPS_BN)
    return training && d->dtype == LN_F16 && d->channels_last && d->ndim == 4 &&
           d->sizes[1] % 4 == 0;
  return true;
}

#endif
