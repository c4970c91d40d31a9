/*
** batchnorm_module_impl.h -- the parts of the BatchNorm modules that modules
** built like them share (for nn/ files only; users go through batchnorm.h).
** A variant (a fused or renormalizing BatchNorm) is a module type of its
** own whose module is built by ln_bn_module_new, so that it has the same
** slots, attributes, printing, state-dict keys and version-1 migration as
** BatchNorm1d/2d/3d, and whose forward calls ln_bn_prepare, its own
** functional form, then ln_bn_finish.
*/
#ifndef LN_BATCHNORM_MODULE_IMPL_H
#define LN_BATCHNORM_MODULE_IMPL_H

#include "batchnorm.h"
#include "batchnorm_functional.h"

/* A module of `type` with PyTorch's _NormBase slots, in its order: weight,
** bias (parameters, nil without affine), running_mean, running_var,
** num_batches_tracked (buffers, nil without track_running_stats), and the
** attributes num_features, eps, momentum, affine, track_running_stats.
** With `lazy` the four per-channel slots are uninitialized and
** num_features is 0. `spatial_dims` (1, 2 or 3) fixes the accepted input
** ranks; 0 accepts any input of at least 2 dims (SyncBatchNorm's
** _check_input_dim). New reference or NULL. */
ln_module *ln_bn_module_new(const ln_module_type *type, int spatial_dims,
                            int64_t num_features, const ln_batchnorm_options *opts,
                            bool lazy);

/* A variant's own state (a process group, ...), kept with a module built
** by ln_bn_module_new and freed with free_ext (may be NULL) when the
** module is freed or the state replaced. ln_bn_ext is NULL until set, and
** for modules not built by ln_bn_module_new. */
void *ln_bn_ext(const ln_module *m);
void ln_bn_set_ext(ln_module *m, void *ext, void (*free_ext)(void *));

/* What _BatchNorm.forward hands to F.batch_norm: borrowed tensors (NULL
** for None), the mode and the factor. `counted` records that the counter
** was advanced, so that ln_bn_finish can take it back. With ema_update
** "skip" a training call has no running statistics (nothing to update). */
typedef struct ln_bn_call {
  ln_tensor *running_mean, *running_var, *weight, *bias;
  bool training;           /* bn_training: normalize with batch statistics */
  double momentum;         /* exponential_average_factor */
  double eps;
  bool counted;
  int64_t virtual_batch;   /* the module's virtual_batch_size in training, else 0 */
} ln_bn_call;

/* Check x's rank for the module ("expected 4D input (got 3D input)"), then
** run _BatchNorm.forward's logic up to the F.batch_norm call: count the
** training step and pick the factor and the statistics. Also checks the
** attributes virtual_batch_size (a positive integer or nil; only modules
** of spatial_dims 1 to 3 take one) and ema_update. */
ln_status ln_bn_prepare(ln_module *m, ln_tensor *x, ln_bn_call *call);
/* The forward's arguments for a prepared call on x (batchnorm_functional.h). */
ln_bn_args ln_bn_call_args(const ln_bn_call *call, ln_tensor *x);
/* After the functional call: when it failed (out == NULL) put the counter
** back, so that a failed forward leaves the module as it was. Returns out. */
ln_tensor *ln_bn_finish(ln_module *m, const ln_bn_call *call, ln_tensor *out);

/* The type functions every BatchNorm-like type uses. */
void ln_bn_extra_repr(ln_module *m, char *buf, size_t size);
ln_status ln_bn_load_hook(ln_module *m, ln_state_dict *sd, const char *prefix,
                          int version);
ln_status ln_bn_initialize_from_input(ln_module *m, ln_tensor *const *inputs, int n);
ln_status ln_bn_on_materialized(ln_module *m);
void ln_bn_free_priv(void *priv);

#endif
