/*
** batchnorm.h -- the BatchNorm family on CPU (other devices through their
** backend later): the functional form with its autograd node, and the
** BatchNorm1d/2d/3d modules and their lazy variants, with PyTorch's exact
** semantics (seeds 000 and 004: torch.nn.modules.batchnorm), and the
** variants FusedBatchNorm2d and BatchRenorm1d/2d/3d; every module takes
** the options virtual_batch_size (ghost BN) and ema_update.
**
** One implementation serves 1d, 2d and 3d: an input of shape (N, C, *)
** is normalized per channel over N and the trailing dims.
*/
#ifndef LN_BATCHNORM_H
#define LN_BATCHNORM_H

#include "../core/tensor.h"
#include "module.h"

/* ---- functional: torch.nn.functional.batch_norm ----
** input (N, C, *) with at least 2 dims; running_mean/running_var/weight/
** bias are (C) or NULL. With training, the batch statistics normalize
** (biased variance) and, when the running stats are given, they are
** updated in place: r = (1 - momentum) * r + momentum * batch, with the
** unbiased variance. Without training, the running stats normalize (they
** must then be given). The output keeps the input's memory format
** (contiguous or channels-last). Records one autograd node
** ("NativeBatchNormBackward0") with gradients for input, weight and bias.
** Errors use PyTorch's wording, e.g. "Expected more than 1 value per
** channel when training, got input size {1, 4}" and "running_mean should
** contain 4 elements not 3". New reference or NULL. */
ln_tensor *ln_batch_norm(ln_tensor *input, ln_tensor *running_mean,
                         ln_tensor *running_var, ln_tensor *weight,
                         ln_tensor *bias, bool training, double momentum,
                         double eps);

/* ---- modules ---- */

/* When training updates the running statistics (tensorpack's ema_update):
** in the forward, as PyTorch, or never ("skip": batch statistics without
** touching the running statistics or the counter, for a layer run
** several times per step). */
typedef enum ln_bn_ema { LN_BN_EMA_INTERNAL, LN_BN_EMA_SKIP } ln_bn_ema;

typedef struct ln_batchnorm_options {
  double eps;                 /* 1e-5 */
  double momentum;            /* 0.1; ignored when cumulative */
  bool cumulative;            /* PyTorch's momentum=None: factor 1/num_batches_tracked */
  bool affine;                /* true: weight (ones) and bias (zeros) */
  bool track_running_stats;   /* true: running_mean, running_var, num_batches_tracked */
  ln_dtype dtype;             /* float32 */
  ln_device device;           /* cpu */
  int64_t virtual_batch_size; /* 0; V > 0: ghost BN, training normalizes each
                              ** block of V samples with its own statistics */
  ln_bn_ema ema_update;       /* LN_BN_EMA_INTERNAL */
} ln_batchnorm_options;

ln_batchnorm_options ln_batchnorm_defaults(void);

/* nn.BatchNorm1d/2d/3d for spatial_dims 1, 2, 3 (1d accepts 2D or 3D input).
** New reference or NULL. Attributes: num_features, eps, momentum (nil when
** cumulative), affine, track_running_stats, virtual_batch_size (nil when
** 0), ema_update ("internal" or "skip"). State dict version 2. */
ln_module *ln_batchnorm_new(int spatial_dims, int64_t num_features,
                            const ln_batchnorm_options *opts);
/* nn.LazyBatchNorm1d/2d/3d: num_features comes from the first input's
** size(1) or from a loaded state dict; the module then becomes a
** BatchNorm1d/2d/3d. */
ln_module *ln_lazy_batchnorm_new(int spatial_dims, const ln_batchnorm_options *opts);

/* nn.FusedBatchNorm2d (OneFlow's): relu(bn(x) + addend) on (N, C, H, W)
** input, with BatchNorm2d's options, slots, state dict and version. Its
** forward takes x and an optional addend (same shape and dtype; NULL for
** none); one kernel each way, the backward from a saved bit mask. */
ln_module *ln_fused_batchnorm2d_new(int64_t num_features, const ln_batchnorm_options *opts);

/* nn.BatchRenorm1d/2d/3d (Ioffe 2017, tensorpack's BatchRenorm): training
** corrects the batch statistics towards the running ones by r and d
** clipped to [1/rmax, rmax] and [-dmax, dmax] (attributes rmax, dmax;
** rmax >= 1, dmax >= 0; rmax = 1, dmax = 0 is BatchNorm); eval is
** BatchNorm's. Needs track_running_stats. State dict as BatchNorm's. */
ln_module *ln_batchrenorm_new(int spatial_dims, int64_t num_features,
                              const ln_batchnorm_options *opts, double rmax, double dmax);

/* How many forwards of ln_batch_norm and of the modules over it ran their
** kernels on each layout since the program started, for tests (a
** channels-last input, or x:permute(0, 3, 1, 2) of an (N, H, W, C)
** tensor, runs the rows kernels in place): plane (NCHW-like), rows
** (channels-last-like), and copied (a layout no kernel reads, made
** contiguous first; also counted as plane). */
typedef struct ln_bn_kernel_counts { int64_t plane, rows, copied; } ln_bn_kernel_counts;
ln_bn_kernel_counts ln_bn_kernel_counts_now(void);

/* True for the BatchNorm types (not the lazy ones before they materialize). */
bool ln_is_batchnorm(const ln_module *m);
ln_status ln_batchnorm_reset_running_stats(ln_module *m);
ln_status ln_batchnorm_reset_parameters(ln_module *m);

#endif
