/*
** batchnorm_device.h -- the seam between nn's BatchNorm family and a
** device's BatchNorm kernels. nn/ does everything it does for the CPU
** (checks and messages, layouts and plans, ghost blocks, autograd) and
** hands an implementation only descriptions of device memory; the
** implementation runs the whole forward or backward on the device's
** stream, without copying anything to the host and without waiting.
**
** An implementation is a table of functions (ln_bn_device_impl). A device
** type may register several (lunet's own kernels, cuda/batchnorm_*.cu;
** cuDNN's, cuda/cudnn_bn.c); for each call nn/ picks the supporting one
** with the highest `rank` for that call, skipping cuDNN's when
** ln_cudnn_enabled() (nn/backends.h) is false. The rank of a case is to
** come from scripts/bench on a GPU (the faster implementation per case);
** until that is measured, lunet's kernels rank above cuDNN's everywhere.
**
** Memory: per-channel statistics live on the device, in the statistics
** dtype (float32 for float32/float16/bfloat16 input, float64 for float64;
** ln_bn_acc_dtype). The forward writes, for the backward, LN_BN_NSTATS rows
** of G*C values (ln_bn_stat_row), each row indexed g*C + c. Work space is
** allocated by the implementation as device tensors (ln_empty), so the
** device's caching allocator serves it; freeing it before the stream has
** run is safe because all work of a device is ordered on its one stream.
**
** Operands of all G ghost blocks at once (G = 1 without ghost BN): the
** view of block 0 (batchnorm_kernels.h: plane or rows layout of `g`) and
** the distance in elements from one block to the next.
*/
#ifndef LN_BATCHNORM_DEVICE_H
#define LN_BATCHNORM_DEVICE_H

#include <stdbool.h>
#include <stdint.h>

#include "batchnorm_kernels.h"

/* An operand of the G blocks; v.data NULL: absent. */
typedef struct ln_bn_dview {
  ln_bn_view v;         /* block 0 */
  int64_t s_block;      /* elements from block g to block g + 1 */
} ln_bn_dview;

/* The fused ReLU's mask bits of the G blocks (ln_bn_mask's bit layout);
** m.bits NULL: no mask. The forward ors bits into words that are zero on
** entry; the backward reads them. */
typedef struct ln_bn_dmask {
  ln_bn_mask m;         /* block 0 */
  int64_t s_block;      /* bit positions from block g to block g + 1 */
} ln_bn_dmask;

/* A per-channel vector on the device: C values of `dtype`, `stride`
** elements apart; data NULL: absent (weight 1, bias 0). Running
** statistics are read and written in place. */
typedef struct ln_bn_dvec {
  void *data;
  ln_dtype dtype;
  int64_t stride;
} ln_bn_dvec;

/* The rows of the saved statistics (each G*C values of the statistics
** dtype). mean_lo = mean - (stats dtype)mean (0 for float64): elementwise
** passes compute (x - mean) - mean_lo, exact for data far from zero. r and
** d are BatchRenorm's in training; 1 and 0 otherwise. */
enum { LN_BN_MEAN, LN_BN_MEAN_LO, LN_BN_INVSTD, LN_BN_R, LN_BN_D, LN_BN_NSTATS };

static inline ln_dtype ln_bn_acc_dtype(ln_dtype dt) { return dt == LN_F64 ? LN_F64 : LN_F32; }

/* A forward of every BatchNorm form (batchnorm_functional.h's semantics).
** Training: per block and channel the batch mean and biased variance
** (Welford/Chan), coefficients, y, and, when `update` and the running
** statistics are given, their update with `momentum` (the factor, the
** cumulative average's 1/count included), the means over the blocks of
** the blocks' means and unbiased variances. Eval: the running statistics
** normalize. SyncBatchNorm: `given` holds the statistics to use, and x
** is absent on a rank with no values (coefficients and running update
** only). */
typedef struct ln_bn_dev_fwd {
  int device;
  ln_dtype dt;                      /* x, y, add */
  ln_bn_geom g;                     /* one block */
  int64_t G;                        /* blocks (ghost BN); 1 otherwise */
  ln_bn_dview x, y, add;            /* add: relu only, may be absent */
  ln_bn_dmask mask;                 /* relu only, may be absent */
  ln_bn_dvec weight, bias, running_mean, running_var;
  bool training, update, relu, renorm;
  double momentum, eps, rmax, dmax;
  /* SyncBatchNorm (G = 1): float64 mean[C] then biased var[C] of the
  ** global batch of `count` values per channel, on the device; NULL
  ** otherwise. The running statistics are updated with them (var made
  ** unbiased with count) when `update`. */
  const double *given;
  double count;
  void *stats;                      /* out: the saved rows (statistics dtype) */
} ln_bn_dev_fwd;

/* A backward of every BatchNorm form (batchnorm_kernels.h's
** ln_bn_cpu_backward for each block, with w*r for w), then
**   grad_weight[c] = sum over blocks of (sum(dz * (x - mean)) * invstd * r
**                                        + d * sum(dz)),
**   grad_bias[c] = sum over blocks of sum(dz),
** dz being dy, or dy where the mask bit is set and 0 elsewhere. */
typedef struct ln_bn_dev_bwd {
  int device;
  ln_dtype dt;
  ln_bn_geom g;
  int64_t G;
  ln_bn_dview x, dy;                /* x may be absent in eval without sums */
  ln_bn_dview dx, dz;               /* out, each may be absent */
  ln_bn_dmask mask;                 /* relu only */
  ln_bn_dvec weight;                /* absent: 1 */
  const void *stats;                /* the forward's saved rows */
  bool training, renorm;            /* renorm: the r and d rows apply */
  double eps;                       /* the forward's: cuDNN's backward takes it
                                    ** (lunet's kernels read the saved invstd);
                                    ** 0 in SyncBatchNorm's (lunet's only) */
  ln_bn_dvec grad_weight, grad_bias; /* out (dense), each may be absent */
  /* SyncBatchNorm (G = 1, training): float64 sum_dy[C] then sum_dyx[C]
  ** of the global batch of `count` values per channel, for dx alone;
  ** NULL otherwise (the sums are this call's own, over the block). */
  const double *given_sums;
  double count;
} ln_bn_dev_bwd;

typedef enum ln_bn_impl_kind { LN_BN_IMPL_LUNET, LN_BN_IMPL_CUDNN } ln_bn_impl_kind;

typedef struct ln_bn_device_impl {
  const char *name;                 /* "lunet", "cudnn" */
  ln_bn_impl_kind kind;
  /* Whether this implementation takes the call (NULL: every call), and its
  ** preference for it (higher wins; NULL: 0). */
  bool (*supports_forward)(const ln_bn_dev_fwd *f);
  bool (*supports_backward)(const ln_bn_dev_bwd *b);
  int (*rank_forward)(const ln_bn_dev_fwd *f);
  int (*rank_backward)(const ln_bn_dev_bwd *b);
  ln_status (*forward)(const ln_bn_dev_fwd *f);
  ln_status (*backward)(const ln_bn_dev_bwd *b);

  /* ---- SyncBatchNorm (nn/syncbatchnorm.c's float64 wire format); NULL
  ** when not provided. ---- */
  /* This rank's row: header[0..2] (count, channel count, failed flag), then
  ** mean[C] and M2[C] = count * biased variance of f's x (G = 1; x absent
  ** for no values: zeros). */
  ln_status (*sync_pack)(const ln_bn_dev_fwd *f, const double header[3], double *row);
  /* The global mean[C] then biased var[C] (out) from P gathered rows of
  ** 3 + 2C values, by Chan's formula, ranks in order; count is their
  ** total count (known to the host from the headers), at least 1. */
  ln_status (*sync_merge)(int device, const double *rows, int P, int64_t C, double count,
                          double *out);
  /* This rank's sum_dy[C] then sum_dyx[C] into row (float64), and the
  ** local grad_weight and grad_bias when wanted (b: G = 1, no dx). */
  ln_status (*sync_grad_sums)(const ln_bn_dev_bwd *b, double *row);
} ln_bn_device_impl;

/* Register impl (static storage) for a device type; at most 4 per type. */
ln_status ln_bn_device_register(ln_device_type type, const ln_bn_device_impl *impl);

/* The implementations chosen for a call (NULL with a message when none
** takes it), and the one providing SyncBatchNorm's entries. */
const ln_bn_device_impl *ln_bn_device_for_forward(ln_device_type type, const ln_bn_dev_fwd *f);
const ln_bn_device_impl *ln_bn_device_for_backward(ln_device_type type,
                                                   const ln_bn_dev_bwd *b);
const ln_bn_device_impl *ln_bn_device_for_sync(ln_device_type type);
/* Whether any implementation is registered for the device type. */
bool ln_bn_device_available(ln_device_type type);

#endif
