/*
** syncbatchnorm.h -- nn.SyncBatchNorm: BatchNorm whose training statistics
** are those of the global batch of a process group (core/dist.h), with
** PyTorch's semantics (seed 004: torch.nn.SyncBatchNorm and
** convert_sync_batchnorm) and mmcv's and tensorpack's lessons (seeds 003,
** 002): explicit collectives, exact statistics also for uneven and empty
** per-rank batches.
**
** In training, with dist initialized and a group of more than one process
** that this process belongs to, a forward costs one all_gather (each
** member's packed count, mean and M2 per channel, combined in float64 with
** Chan's formula) and a backward that needs the input's gradient one
** all_reduce (the packed sums of dy and dy * (x - mean)). Otherwise (eval,
** a group of one, dist not initialized, not a member) it is BatchNorm: the
** same checks, kernels and autograd node as ln_batch_norm.
*/
#ifndef LN_SYNCBATCHNORM_H
#define LN_SYNCBATCHNORM_H

#include "../core/dist.h"
#include "batchnorm.h"

/* ---- functional: the synchronized training forward ----
** input (N, C, *), on every member of g (NULL: the world), also with
** N = 0: every member must call it. The output is normalized with the
** mean and biased variance of all members' inputs together; running_mean
** and running_var (both or neither) are updated in place with the global
** mean and the variance made unbiased with the global count, unless that
** count is 0. weight/bias/running stats are (C) or NULL; dtypes as
** ln_batch_norm's. The gradient of the input is that of the global batch
** (its backward costs one all_reduce); those of weight and bias are this
** process's sums, as PyTorch's, for data-parallel averaging.
**
** num_features is the channel count every member agreed on (a module's
** num_features, checked once with ln_dist_check_same): it sizes the
** exchanged buffer. Each member's channel count and any error found
** locally (a bad argument on one rank) travel in the same collective, so
** that every member fails, none waits: "SyncBatchNorm input channel count
** differs across ranks: rank 0 has 3, rank 1 has 4", or the local message
** on the rank that made the mistake and "SyncBatchNorm: rank 1 failed
** before sharing its statistics (its error says why)" on the others.
** Records "SyncBatchNormBackward". New reference or NULL. */
ln_tensor *ln_sync_batch_norm(ln_tensor *input, ln_tensor *running_mean,
                              ln_tensor *running_var, ln_tensor *weight, ln_tensor *bias,
                              double momentum, double eps, ln_dist_group *g,
                              int64_t num_features);

/* ---- the module ----
** nn.SyncBatchNorm(C, {process_group=g, ...}): BatchNorm's slots,
** attributes, printing and state dict (version 2), any input of at least
** 2 dims. `group` (retained; NULL: the world at each forward) may change
** between forwards. The first synchronized forward on a group checks
** num_features across it (ln_dist_check_same, counted as a `check`), and
** again if num_features or the group changes. New reference or NULL. */
ln_module *ln_sync_batchnorm_new(int64_t num_features, const ln_batchnorm_options *opts,
                                 ln_dist_group *group);
/* convert_sync_batchnorm for one module: a new SyncBatchNorm with all of
** bn's attributes, sharing its parameters and buffers (the same tensors), in
** bn's training mode. bn: a BatchNorm1d/2d/3d or a SyncBatchNorm. */
ln_module *ln_sync_batchnorm_from(ln_module *bn, ln_dist_group *group);

bool ln_is_sync_batchnorm(const ln_module *m);
/* The module's group (borrowed; NULL: the world). */
ln_dist_group *ln_sync_batchnorm_group(const ln_module *m);
ln_status ln_sync_batchnorm_set_group(ln_module *m, ln_dist_group *group);

#endif
