/*
** cudnn_bn_seam.c -- cuDNN's BatchNorm (cuda/cudnn_bn.h) as the "cudnn"
** implementation of nn/batchnorm_device.h for CUDA tensors, registered by
** ln_cudnn_bn_install. nn/ skips it when lunet.backends.cudnn.enabled is
** false, and ranks it below lunet's kernels (rank 0 against their 1) until
** scripts/bench on a GPU says which is faster per case.
**
** What it takes: plain BatchNorm (no ghost blocks, BatchRenorm,
** SyncBatchNorm statistics or fused ReLU) with weight and bias, on x, y,
** dy and dx laid out alike as dense NCHW-like planes or dense
** channels-last rows, per-channel vectors dense in the statistics dtype,
** within ln_cudnn_bn_supported; the backward in training only (cuDNN has
** no eval backward). Forward and backward are chosen independently, so
** each speaks the seam's saved rows: the forward writes MEAN and INVSTD
** (cuDNN's saved mean and inverse std), MEAN_LO = 0, R = 1, D = 0; the
** backward reads MEAN and INVSTD only (cuDNN's plain backward takes the
** saved statistics and nothing else; a lunet forward's MEAN_LO, the part
** of the mean below float precision, is dropped, which is cuDNN's own
** precision). The fused ReLU is not taken: the seam carries lunet's one-bit
** mask, which cuDNN neither writes nor reads (its fused backward needs its
** own reserve space and the forward's output instead).
*/
#include <cuda_runtime_api.h>

#include "core/device.h"
#include "cuda/cudnn_bn.h"
#include "cuda/runtime.h"
#include "nn/batchnorm_device.h"

/* The cuDNN description of a block of geom g laid out as v: dense planes
** (NCHW-like: (outer, C, inner) with the inner run contiguous) or dense
** rows (channels-last: (outer, C, inner, 1) with channels contiguous);
** false for anything else. Sizes of 1 may have any stride. */
static bool desc_for(const ln_bn_geom *g, const ln_bn_view *v, ln_cudnn_bn_desc *d) {
  int64_t C = g->C, M = g->outer, I = g->inner;
  int64_t s_inner = g->rows ? v->s_inner : 1;
  bool planes = (C == 1 || v->s_c == I) && (M == 1 || v->s_outer == C * I) &&
                (I == 1 || s_inner == 1);
  bool rows = (C == 1 || v->s_c == 1) && (I == 1 || s_inner == C) &&
              (M == 1 || v->s_outer == I * C);
  if (!planes && !rows) return false;
  d->channels_last = g->rows ? rows : !planes;
  d->ndim = 4;
  d->sizes[0] = M;
  d->sizes[1] = C;
  d->sizes[2] = I;
  d->sizes[3] = 1;
  return true;
}

/* Whether every present view of a call is laid out as the first. */
static bool same_layout(const ln_bn_geom *g, const ln_cudnn_bn_desc *d, const ln_bn_dview *v) {
  ln_cudnn_bn_desc e;
  return !v->v.data || (desc_for(g, &v->v, &e) && e.channels_last == d->channels_last);
}

static bool dense_stats(const ln_bn_dvec *v, ln_dtype dt) {
  return !v->data || (v->dtype == ln_bn_acc_dtype(dt) && v->stride == 1);
}

/* The desc of a forward that this implementation takes, or false. */
static bool forward_desc(const ln_bn_dev_fwd *f, ln_cudnn_bn_desc *d) {
  if (f->G != 1 || f->relu || f->renorm || f->given || f->mask.m.bits || f->add.v.data)
    return false;
  if (!f->weight.data || !f->bias.data || !dense_stats(&f->weight, f->dt) ||
      !dense_stats(&f->bias, f->dt) || !dense_stats(&f->running_mean, f->dt) ||
      !dense_stats(&f->running_var, f->dt))
    return false;
  if (!f->training && (!f->running_mean.data || !f->running_var.data)) return false;
  *d = (ln_cudnn_bn_desc){ .device = f->device, .dtype = f->dt, .ops = LN_CUDNN_BN_OPS_BN,
                           .eps = f->eps };
  return desc_for(&f->g, &f->x.v, d) && same_layout(&f->g, d, &f->y) &&
         ln_cudnn_bn_supported(d, f->training);
}

static bool backward_desc(const ln_bn_dev_bwd *b, ln_cudnn_bn_desc *d) {
  if (b->G != 1 || !b->training || b->renorm || b->given_sums || b->mask.m.bits ||
      b->dz.v.data || !b->x.v.data || !b->dx.v.data || !b->weight.data)
    return false;
  if (!dense_stats(&b->weight, b->dt) || !dense_stats(&b->grad_weight, b->dt) ||
      !dense_stats(&b->grad_bias, b->dt))
    return false;
  /* cuDNN wants the forward's eps in the backward too (its docs), even
  ** with the saved invstd given; SyncBatchNorm's backward (eps 0) never
  ** comes here. */
  if (!(b->eps > 0)) return false;
  *d = (ln_cudnn_bn_desc){ .device = b->device, .dtype = b->dt, .ops = LN_CUDNN_BN_OPS_BN,
                           .eps = b->eps };
  return desc_for(&b->g, &b->x.v, d) && same_layout(&b->g, d, &b->dy) &&
         same_layout(&b->g, d, &b->dx) && ln_cudnn_bn_supported(d, true);
}

static bool supports_forward(const ln_bn_dev_fwd *f) {
  ln_cudnn_bn_desc d;
  return forward_desc(f, &d);
}

static bool supports_backward(const ln_bn_dev_bwd *b) {
  ln_cudnn_bn_desc d;
  return backward_desc(b, &d);
}

static int rank_forward(const ln_bn_dev_fwd *f) {
  (void)f;
  return 0;
}

static int rank_backward(const ln_bn_dev_bwd *b) {
  (void)b;
  return 0;
}

/* Row r of the saved statistics (G = 1: rows of C values). */
static void *stat_row(const void *stats, ln_dtype acc, int64_t C, int r) {
  return (char *)stats + (size_t)r * (size_t)C * ln_dtype_size(acc);
}

/* MEAN_LO = 0, R = 1, D = 0, on the device's stream. */
static ln_status fill_constant_rows(int device, void *stats, ln_dtype acc, int64_t C) {
  const ln_backend *cuda = ln_backend_get(LN_CUDA);
  size_t es = ln_dtype_size(acc);
  float f1 = 1.0f, f0 = 0.0f;
  double d1 = 1.0, d0 = 0.0;
  const void *one = acc == LN_F64 ? (const void *)&d1 : (const void *)&f1;
  const void *zero = acc == LN_F64 ? (const void *)&d0 : (const void *)&f0;
  ln_status st = cuda->fill(device, stat_row(stats, acc, C, LN_BN_MEAN_LO), (size_t)C, es, zero);
  if (st == LN_OK) st = cuda->fill(device, stat_row(stats, acc, C, LN_BN_R), (size_t)C, es, one);
  if (st == LN_OK) st = cuda->fill(device, stat_row(stats, acc, C, LN_BN_D), (size_t)C, es, zero);
  return st;
}

/* The eval forward's saved rows: MEAN = running_mean (a copy on the
** stream) and INVSTD = 1 / sqrt(running_var + eps), which cuDNN's
** inference computes when asked to normalize x = 1 with mean 0, weight 1
** and bias 0 (the R, D and MEAN_LO rows, already filled) as one sample of
** C features. */
static ln_status eval_rows(const ln_bn_dev_fwd *f, ln_dtype acc) {
  int64_t C = f->g.C;
  cudaStream_t s = ln_cuda_stream(f->device);
  if (!s) return ln_last_status();
  ln_status st = ln_cuda_check(
    cudaMemcpyAsync(stat_row(f->stats, acc, C, LN_BN_MEAN), f->running_mean.data,
                    (size_t)C * ln_dtype_size(acc), cudaMemcpyDeviceToDevice, s),
    "a copy of the running mean");
  if (st != LN_OK) return st;
  ln_cudnn_bn_desc one_sample = { .device = f->device, .ndim = 2, .sizes = { 1, C },
                                  .dtype = acc, .ops = LN_CUDNN_BN_OPS_BN, .eps = f->eps };
  void *ones = stat_row(f->stats, acc, C, LN_BN_R), *zeros = stat_row(f->stats, acc, C, LN_BN_D);
  return ln_cudnn_bn_forward_eval(&one_sample, ones, stat_row(f->stats, acc, C, LN_BN_INVSTD),
                                  ones, zeros, zeros, f->running_var.data);
}

static ln_status forward(const ln_bn_dev_fwd *f) {
  ln_cudnn_bn_desc d;
  if (!forward_desc(f, &d))
    return ln_error(LN_ERUNTIME, "cuDNN BatchNorm: this forward is not supported");
  ln_dtype acc = ln_bn_acc_dtype(f->dt);
  int64_t C = f->g.C;
  ln_status st = LN_OK;
  if (f->stats) st = fill_constant_rows(f->device, f->stats, acc, C);
  if (st != LN_OK) return st;
  if (!f->training) {
    st = ln_cudnn_bn_forward_eval(&d, f->x.v.data, f->y.v.data, f->weight.data, f->bias.data,
                                  f->running_mean.data, f->running_var.data);
    return st == LN_OK && f->stats ? eval_rows(f, acc) : st;
  }
  /* cuDNN writes the saved statistics wherever they go: a scratch pair
  ** when the seam keeps none. */
  ln_tensor *scratch = NULL;
  void *mean, *invstd;
  if (f->stats) {
    mean = stat_row(f->stats, acc, C, LN_BN_MEAN);
    invstd = stat_row(f->stats, acc, C, LN_BN_INVSTD);
  } else {
    int64_t n = 2 * C;
    if (!(scratch = ln_empty(&n, 1, acc, (ln_device){ LN_CUDA, f->device })))
      return ln_last_status();
    mean = ln_tensor_data(scratch);
    invstd = (char *)mean + (size_t)C * ln_dtype_size(acc);
  }
  bool update = f->update && f->running_mean.data && f->running_var.data;
  st = ln_cudnn_bn_forward_train(&d, f->x.v.data, NULL, f->y.v.data, f->weight.data,
                                 f->bias.data, f->momentum,
                                 update ? f->running_mean.data : NULL,
                                 update ? f->running_var.data : NULL, mean, invstd, NULL);
  ln_tensor_release(scratch);
  return st;
}

static ln_status backward(const ln_bn_dev_bwd *b) {
  ln_cudnn_bn_desc d;
  if (!backward_desc(b, &d))
    return ln_error(LN_ERUNTIME, "cuDNN BatchNorm: this backward is not supported");
  ln_dtype acc = ln_bn_acc_dtype(b->dt);
  const void *stats = b->stats;
  return ln_cudnn_bn_backward(&d, b->x.v.data, NULL, b->dy.v.data, b->dx.v.data, NULL,
                              b->weight.data, NULL, b->grad_weight.data, b->grad_bias.data,
                              stat_row(stats, acc, b->g.C, LN_BN_MEAN),
                              stat_row(stats, acc, b->g.C, LN_BN_INVSTD), NULL);
}

static const ln_bn_device_impl cudnn_impl = {
  .name = "cudnn",
  .kind = LN_BN_IMPL_CUDNN,
  .supports_forward = supports_forward,
  .supports_backward = supports_backward,
  .rank_forward = rank_forward,
  .rank_backward = rank_backward,
  .forward = forward,
  .backward = backward,
};

void ln_cudnn_bn_install(void) {
  ln_bn_device_register(LN_CUDA, &cudnn_impl);
}
