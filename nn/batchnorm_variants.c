/*
** batchnorm_variants.c -- the modules FusedBatchNorm2d (OneFlow's: relu(
** bn(x) + addend)) and BatchRenorm1d/2d/3d (Ioffe 2017, tensorpack's
** BatchRenorm). Both are built by ln_bn_module_new, so they have
** BatchNorm's slots, attributes, options (virtual_batch_size, ema_update
** included), printing, state dict and version-1 migration, and their
** forwards are BatchNorm's (ln_bn_prepare, ln_bn_forward, ln_bn_finish)
** with the fused or renormalizing flags. BatchRenorm's rmax and dmax are
** attributes, read at each forward as eps and momentum are.
*/
#include <math.h>
#include <stdio.h>

#include "batchnorm_module_impl.h"

static ln_tensor *fused_forward(ln_module *m, ln_tensor *const *inputs, int n);
static ln_tensor *renorm_forward(ln_module *m, ln_tensor *const *inputs, int n);

#define VARIANT_TYPE(NAME, FORWARD) { .name = NAME, .version = 2, .forward = FORWARD, \
  .extra_repr = ln_bn_extra_repr, .load_hook = ln_bn_load_hook, .free_priv = ln_bn_free_priv }

static const ln_module_type fused_type = VARIANT_TYPE("FusedBatchNorm2d", fused_forward);

static const ln_module_type renorm_types[3] = {
  VARIANT_TYPE("BatchRenorm1d", renorm_forward), VARIANT_TYPE("BatchRenorm2d", renorm_forward),
  VARIANT_TYPE("BatchRenorm3d", renorm_forward)
};

ln_module *ln_fused_batchnorm2d_new(int64_t num_features, const ln_batchnorm_options *opts) {
  return ln_bn_module_new(&fused_type, 2, num_features, opts, false);
}

/* x, or x and an addend (nil for none): relu(bn(x) + addend). */
static ln_tensor *fused_forward(ln_module *m, ln_tensor *const *inputs, int n) {
  if (n < 1 || n > 2) {
    ln_error(LN_EINVAL, "%s.forward expects 1 or 2 inputs (x, addend), got %d",
             ln_module_type_name(m), n);
    return NULL;
  }
  ln_bn_call c;
  if (ln_bn_prepare(m, inputs[0], &c) != LN_OK) return NULL;
  ln_bn_args a = ln_bn_call_args(&c, inputs[0]);
  a.relu = true;
  a.addend = n > 1 ? inputs[1] : NULL;
  return ln_bn_finish(m, &c, ln_bn_forward(&a));
}

/* rmax >= 1 and dmax >= 0 (NaN fails both). */
static ln_status check_clips(const char *name, double rmax, double dmax) {
  if (!(rmax >= 1))
    return ln_error(LN_EINVAL, "%s: rmax must be at least 1, got %g", name, rmax);
  if (!(dmax >= 0))
    return ln_error(LN_EINVAL, "%s: dmax must be at least 0, got %g", name, dmax);
  return LN_OK;
}

static const char *const needs_stats =
  "%s needs track_running_stats=true: r and d compare the batch statistics with the "
  "running ones";

ln_module *ln_batchrenorm_new(int spatial_dims, int64_t num_features,
                              const ln_batchnorm_options *opts, double rmax, double dmax) {
  ln_batchnorm_options o = opts ? *opts : ln_batchnorm_defaults();
  if (spatial_dims < 1 || spatial_dims > 3) {
    ln_error(LN_EINVAL, "BatchRenorm: spatial_dims must be 1, 2 or 3, got %d", spatial_dims);
    return NULL;
  }
  const char *name = renorm_types[spatial_dims - 1].name;
  if (check_clips(name, rmax, dmax) != LN_OK) return NULL;
  if (!o.track_running_stats) {
    ln_error(LN_EINVAL, needs_stats, name);
    return NULL;
  }
  ln_module *m = ln_bn_module_new(&renorm_types[spatial_dims - 1], spatial_dims,
                                  num_features, &o, false);
  ln_attr r = { .kind = LN_ATTR_NUMBER, .u.d = rmax }, d = { .kind = LN_ATTR_NUMBER, .u.d = dmax };
  if (m && (ln_module_set_attr(m, "rmax", r) != LN_OK ||
            ln_module_set_attr(m, "dmax", d) != LN_OK)) {
    ln_module_release(m);
    return NULL;
  }
  return m;
}

/* A number attribute, NaN when it is not one (so that the checks fail). */
static double number_attr(ln_module *m, const char *name) {
  const ln_attr *a = ln_module_get_attr(m, name);
  return !a ? NAN : a->kind == LN_ATTR_NUMBER ? a->u.d
         : a->kind == LN_ATTR_INT ? (double)a->u.i : NAN;
}

/* BatchNorm's forward with r and d from the running statistics, which it
** reads even when ema_update="skip" leaves them alone. */
static ln_tensor *renorm_forward(ln_module *m, ln_tensor *const *inputs, int n) {
  const char *name = ln_module_type_name(m);
  if (n != 1) {
    ln_error(LN_EINVAL, "%s.forward expects 1 input, got %d", name, n);
    return NULL;
  }
  double rmax = number_attr(m, "rmax"), dmax = number_attr(m, "dmax");
  if (check_clips(name, rmax, dmax) != LN_OK) return NULL;
  if (!ln_module_attr_bool(m, "track_running_stats", false)) {
    ln_error(LN_EINVAL, needs_stats, name);
    return NULL;
  }
  ln_bn_call c;
  if (ln_bn_prepare(m, inputs[0], &c) != LN_OK) return NULL;
  ln_bn_args a = ln_bn_call_args(&c, inputs[0]);
  a.renorm = true;
  a.rmax = rmax;
  a.dmax = dmax;
  if (c.training && !c.running_mean) {  /* ema_update="skip" */
    a.running_mean = ln_module_get_tensor(m, "running_mean");
    a.running_var = ln_module_get_tensor(m, "running_var");
    a.update = false;
  }
  return ln_bn_finish(m, &c, ln_bn_forward(&a));
}
