/*
** syncbatchnorm.c -- nn.SyncBatchNorm (syncbatchnorm.h): the synchronized
** training forward and its node, SyncBatchNormBackward, on the BatchNorm
** kernels (batchnorm_kernels.h); and the module type, built like
** BatchNorm's (batchnorm_module_impl.h) with its process group kept as the
** module's extra state.
**
** Forward: each member packs a header (count, channel count, failed) and
** its per-channel mean and M2 = count * biased variance (the stats kernel)
** into one float64 row; the rows are all-gathered and every member
** combines the same rows in the same order, so all get the same bits.
** Backward: the local sums of dy and dy * (x - mean) and a failure flag in
** one float64 row, all-reduced. Errors found locally travel in those rows,
** so a rank with a bad argument still joins the collective and every rank
** fails instead of some waiting. Per-channel work is done here in double.
**
** On a device with BatchNorm kernels (batchnorm_device.h), the rows live
** on the device (the NCCL engine gathers and reduces them there): the
** implementation packs this rank's row and merges the gathered ones, and
** only the headers (count, channels, failed) and the backward's failure
** flag come to the host, for the decisions every rank must take alike.
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/autograd.h"
#include "../core/ops.h"
#include "batchnorm_functional.h"
#include "batchnorm_module_impl.h"
#include "scratch.h"
#include "syncbatchnorm.h"

/* The forward's row: this header, then mean[K] and M2[K]. */
enum { ROW_COUNT, ROW_CHANNELS, ROW_FAILED, ROW_HEADER };

/* What the backward needs besides the saved tensors. */
typedef struct sbn_saved {
  ln_dist_group *g;   /* retained */
  int64_t C;
  double count;       /* values per channel in the global batch */
  ln_tensor *dev;     /* on a device: the forward's saved rows (owned); else NULL */
  double v[];         /* on the CPU: mean[C], then invstd[C] */
} sbn_saved;

static void free_saved(void *p) {
  sbn_saved *s = p;
  ln_dist_group_release(s->g);
  ln_tensor_release(s->dev);
  free(s);
}

/* ---- a local failure, kept while this rank joins the collective ---- */

typedef struct pending {
  ln_status st;
  char msg[1024];
} pending;

static void keep(pending *p, ln_status st) {
  p->st = st;
  if (st != LN_OK) snprintf(p->msg, sizeof p->msg, "%s", ln_last_error());
}

static ln_status raise(const pending *p) { return ln_error(p->st, "%s", p->msg); }

/* A new tensor shaped and typed like the parameter p, holding v. */
static ln_tensor *param_grad(ln_tensor *p, const double *v) {
  ln_tensor *g = ln_empty(ln_tensor_sizes(p), ln_tensor_dim(p), ln_tensor_dtype(p),
                          ln_tensor_device(p));
  if (g) ln_bn_vec_store(g, v);
  return g;
}

/* ---- the local checks ---- */

static const char *const param_names[4] = { "running_mean", "running_var", "weight", "bias" };

/* The channel count of x (at least 2 dims) against num_features K: the
** exchanged buffers are sized by K, so also a module without per-channel
** tensors needs it (checked with and without synchronization, so that a
** script behaves alike on one process and on many). */
static ln_status check_channels(const ln_tensor *x, int64_t K) {
  int64_t C = ln_tensor_size(x, 1);
  if (C == 0)
    return ln_error(LN_EINVAL, "SyncBatchNorm number of input channels should be non-zero");
  if (C != K)
    return ln_error(LN_EINVAL, "SyncBatchNorm expected input with %lld channels "
                    "(num_features), got %lld", (long long)K, (long long)C);
  return LN_OK;
}

/* ln_batch_norm's checks in training, with its messages, but for the batch
** size: only the global batch must hold more than 1 value per channel.
** p: running_mean, running_var, weight, bias (each may be NULL). */
static ln_status check_args(ln_tensor *x, ln_tensor *const *p, double eps, int64_t K) {
  char a[32], b[32];
  if (!x) return ln_error(LN_EINVAL, "sync_batch_norm: input expected, got NULL");
  int nd = ln_tensor_dim(x);
  if (nd < 2) return ln_error(LN_EINVAL, "expected at least 2D input (got %dD input)", nd);
  ln_status st = check_channels(x, K);
  if (st != LN_OK) return st;
  if (!(eps > 0))
    return ln_error(LN_EINVAL, "batch_norm eps must be positive during training, but got %g",
                    eps);
  ln_device dev = ln_tensor_device(x);
  for (int i = 0; i < 4; i++) {
    if (!p[i]) continue;
    if (ln_tensor_numel(p[i]) != K)
      return ln_error(LN_EINVAL, "%s should contain %lld elements not %lld", param_names[i],
                      (long long)K, (long long)ln_tensor_numel(p[i]));
    if (!ln_device_eq(ln_tensor_device(p[i]), dev))
      return ln_error(LN_EINVAL, "Expected all tensors to be on the same device, but found "
                      "at least two devices, %s and %s!", ln_device_str(dev, a, sizeof a),
                      ln_device_str(ln_tensor_device(p[i]), b, sizeof b));
  }
  if (dev.type != LN_CPU && !ln_bn_device_for_sync(dev.type))
    return ln_error(LN_ERUNTIME, "SyncBatchNorm is not implemented for %s tensors yet",
                    ln_device_str(dev, a, sizeof a));
  if (!p[0] != !p[1])
    return ln_error(LN_EINVAL, "running_mean and running_var must either both be None "
                    "or neither be None");
  for (int i = 0; i < 2; i++)   /* written: each value once */
    if (p[i] && (st = ln_check_no_internal_overlap(p[i])) != LN_OK) return st;
  return ln_bn_check_dtypes(x, p);
}

/* ---- forward ---- */

/* *x: the tensor the kernels read for input (itself, or a contiguous copy
** when no kernel takes its layout), planned in *plan; left NULL for a
** batch of no values. */
static ln_status kernel_input(ln_tensor *input, int64_t K, ln_tensor **x, ln_bn_plan *plan) {
  if (ln_tensor_numel(input) / K == 0) return LN_OK;
  if (ln_bn_plan_for(input, plan)) {
    ln_tensor_retain(input);
    *x = input;
  } else if ((*x = ln_contiguous(input, LN_CONTIGUOUS))) {
    ln_bn_plan_for(*x, plan);
  } else {
    return ln_last_status();
  }
  return LN_OK;
}

/* This rank's count, mean[K] and M2[K] into row, x and its plan as
** kernel_input's (row stays 0 for no values). */
static ln_status local_stats(ln_tensor *input, int64_t K, ln_tensor **x, ln_bn_plan *plan,
                             double *row) {
  int64_t n = ln_tensor_numel(input) / K;
  ln_status st = kernel_input(input, K, x, plan);
  if (st != LN_OK || !*x) return st;
  ln_bn_view xv;
  ln_bn_view_for(plan, *x, &xv);
  double *mean = row + ROW_HEADER, *m2 = mean + K;
  st = ln_bn_cpu_stats(ln_tensor_dtype(*x), &plan->g, &xv, mean, m2);
  for (int64_t c = 0; c < K; c++) m2[c] *= (double)n;
  row[ROW_COUNT] = (double)n;
  return st;
}

/* "<what> differs across ranks: rank 0 has 3, rank 1 has 4" for the ranks
** whose row has a channel count. */
static ln_status channels_differ(const double *rows, int P, int64_t len, ln_dist_group *g) {
  char msg[512];
  size_t n = 0;
  for (int r = 0; r < P && n < sizeof msg; r++) {
    double c = rows[r * len + ROW_CHANNELS];
    if (c >= 0)
      n += (size_t)snprintf(msg + n, sizeof msg - n, "%srank %d has %.0f", n ? ", " : "",
                            ln_dist_global_rank(g, r), c);
  }
  return ln_error(LN_EINVAL, "SyncBatchNorm input channel count differs across ranks: %s", msg);
}

/* The decisions on the gathered rows, from their headers (P of them,
** `stride` doubles apart), that every member takes alike, so that all
** fail or none: on differing channel counts, then on a local failure
** (`mine`, or another rank's), then on a global batch of 1 per channel.
** *count: the global count. */
static ln_status check_rows(const double *heads, int64_t stride, int P, ln_dist_group *g,
                            const pending *mine, double *count) {
  int first = -1, failed = -1;
  for (int r = 0; r < P; r++) {
    const double *row = heads + r * stride;
    if (row[ROW_FAILED] != 0 && failed < 0) failed = r;
    if (row[ROW_CHANNELS] < 0) continue;
    if (first < 0) first = r;
    else if (row[ROW_CHANNELS] != heads[first * stride + ROW_CHANNELS])
      return channels_differ(heads, P, stride, g);
  }
  if (mine->st != LN_OK) return raise(mine);
  if (failed >= 0)
    return ln_error(LN_EINVAL, "SyncBatchNorm: rank %d failed before sharing its statistics "
                    "(its error says why)", ln_dist_global_rank(g, failed));
  double n = 0;
  for (int r = 0; r < P; r++) n += heads[r * stride + ROW_COUNT];
  *count = n;
  if (n == 1)
    return ln_error(LN_EINVAL, "Expected more than 1 value per channel when training, got 1 "
                    "value per channel over the process group");
  return LN_OK;
}

/* The global mean and biased var from P gathered rows of ROW_HEADER + 2K
** and their total count n. Chan's formula for combining partitions:
** mean = sum n_r mean_r / n, M2 = sum (M2_r + n_r (mean_r - mean)^2);
** ranks with no values add nothing. */
static void merge_rows(const double *rows, int P, int64_t K, double n, double *mean,
                       double *var) {
  int64_t len = ROW_HEADER + 2 * K;
  memset(mean, 0, (size_t)K * sizeof *mean);
  memset(var, 0, (size_t)K * sizeof *var);
  for (int r = 0; r < P; r++) {
    const double *row = rows + r * len;
    for (int64_t c = 0; n > 0 && c < K; c++)
      mean[c] += row[ROW_COUNT] / n * row[ROW_HEADER + c];
  }
  for (int r = 0; r < P; r++) {
    const double *row = rows + r * len;
    if (row[ROW_COUNT] == 0) continue;
    for (int64_t c = 0; c < K; c++) {
      double d = row[ROW_HEADER + c] - mean[c];
      var[c] += row[ROW_HEADER + K + c] + row[ROW_COUNT] * d * d;
    }
  }
  for (int64_t c = 0; n > 0 && c < K; c++) var[c] /= n;
}

/* r = (1 - momentum) * r + momentum * batch, the variance made unbiased
** with the global count n (at least 2). */
static void update_running(ln_tensor *rm, ln_tensor *rv, double momentum, const double *mean,
                           const double *var, double n) {
  ln_bn_vec_blend(rm, 1 - momentum, momentum, mean);
  ln_bn_vec_blend(rv, 1 - momentum, momentum * n / (n - 1), var);
}

static ln_status sbn_backward(ln_node *node, ln_tensor **grad_out, ln_tensor **grad_in);

/* Make out the result of a SyncBatchNormBackward node. x: the tensor the
** kernels read (the input itself for an empty batch); mean/invstd: C each
** on the CPU; dev: on a device, the forward's saved rows (retained)
** instead. */
static ln_status record(ln_tensor *out, ln_tensor *input, ln_tensor *x, ln_tensor *weight,
                        ln_tensor *bias, ln_dist_group *g, int64_t C, double count,
                        const double *mean, const double *invstd, ln_tensor *dev) {
  ln_tensor *inputs[3] = { input, weight, bias }, *src[3] = { x, weight, bias };
  sbn_saved *s = malloc(sizeof *s + sizeof(double) * (size_t)(dev ? 0 : 2 * C));
  ln_node *node = s ? ln_node_new("SyncBatchNormBackward", sbn_backward, inputs, 3, 1) : NULL;
  if (!node) {
    free(s);
    return ln_last_status() != LN_OK ? ln_last_status()
                                     : ln_error(LN_ENOMEM, "out of memory in SyncBatchNorm");
  }
  ln_dist_group_retain(g);
  if (dev) ln_tensor_retain(dev);
  *s = (sbn_saved){ .g = g, .C = C, .count = count, .dev = dev };
  if (!dev) {
    memcpy(s->v, mean, sizeof(double) * (size_t)C);
    memcpy(s->v + C, invstd, sizeof(double) * (size_t)C);
  }
  node->extra = s;
  node->free_extra = free_saved;
  ln_status st = LN_OK;
  for (int i = 0; i < 3; i++) {
    ln_tensor *d = src[i] ? ln_detach(src[i]) : NULL;
    if (src[i] && !d) st = ln_last_status();
    ln_node_save(node, d);
    ln_tensor_release(d);
  }
  if (st == LN_OK) ln_set_history(out, node, 0);
  ln_node_release(node);
  return st;
}

/* ---- the device path ---- */

/* The device implementation for input's device, or NULL for the CPU (also
** for no input: a rank that failed its checks joins with a CPU row). */
static const ln_bn_device_impl *device_impl(const ln_tensor *input) {
  if (!input || ln_tensor_device(input).type == LN_CPU) return NULL;
  return ln_bn_device_for_sync(ln_tensor_device(input).type);
}

/* f's geometry and x for the input (f: G = 1, training, C = K): *x the
** tensor the kernels read (the input or a contiguous copy); nothing for no
** values. */
static ln_status device_plan(ln_tensor *input, int64_t K, ln_tensor **x, ln_bn_plan *plan,
                             ln_bn_blocks *bl, ln_bn_dev_fwd *f) {
  ln_status st = kernel_input(input, K, x, plan);
  if (st != LN_OK || !*x) return st;
  ln_bn_blocks_for(*x, 1, bl);
  f->g = plan->g;
  ln_bn_dview_for(bl, *x, &f->x);
  return LN_OK;
}

/* The host copy of the gathered rows' headers: P rows of ROW_HEADER.
** New reference or NULL. */
static ln_tensor *host_headers(ln_tensor *rows) {
  ln_tensor *h = ln_narrow(rows, 1, 0, ROW_HEADER);
  ln_tensor *c = h ? ln_to_device(h, LN_DEVICE_CPU) : NULL;
  ln_tensor *d = c ? ln_contiguous(c, LN_CONTIGUOUS) : NULL;
  ln_tensor_release(h);
  ln_tensor_release(c);
  return d;
}

/* The device's forward with the global statistics of the gathered rows:
** merged on the device, running statistics updated (count > 0), x
** normalized into *out (x NULL: this rank has no values, *out empty).
** *saved: the rows for the backward. p: running_mean, running_var,
** weight, bias. */
static ln_status device_normalize(const ln_bn_device_impl *impl, ln_bn_dev_fwd *f,
                                  ln_tensor *input, ln_tensor *x, const ln_bn_plan *plan,
                                  ln_tensor *rows, double count, ln_tensor *const *p,
                                  double momentum, double eps, ln_tensor **out,
                                  ln_tensor **saved) {
  ln_device dev = ln_tensor_device(input);
  int64_t K = f->g.C, two = 2 * K, n = LN_BN_NSTATS * K;
  ln_tensor *given = ln_empty(&two, 1, LN_F64, dev), *held[4] = { NULL, NULL, NULL, NULL };
  ln_tensor *vecs[4] = { p[2], p[3], p[0], p[1] };
  ln_bn_dvec *dv[4] = { &f->weight, &f->bias, &f->running_mean, &f->running_var };
  ln_status st = given ? LN_OK : ln_last_status();
  if (st == LN_OK)
    st = impl->sync_merge(dev.index, ln_tensor_data(rows), (int)ln_tensor_size(rows, 0), K,
                          count, ln_tensor_data(given));
  if (st == LN_OK && !(*saved = ln_empty(&n, 1, ln_bn_acc_dtype(f->dt), dev)))
    st = ln_last_status();
  if (st == LN_OK)
    *out = x ? ln_bn_empty(plan, x, f->dt) : ln_empty_like(input, LN_PRESERVE);
  if (st == LN_OK && !*out) st = ln_last_status();
  for (int i = 0; i < 4 && st == LN_OK; i++) st = ln_bn_dvec_for(vecs[i], dv[i], &held[i]);
  if (st == LN_OK) {
    ln_bn_blocks bl = { .G = 1 };
    f->given = ln_tensor_data(given);
    f->count = count;
    f->update = p[0] && count > 0;
    f->momentum = momentum;
    f->eps = eps;
    f->stats = ln_tensor_data(*saved);
    if (x) {
      ln_bn_blocks_for(x, 1, &bl);
      ln_bn_dview_for(&bl, *out, &f->y);
    }
    const ln_bn_device_impl *fwd = ln_bn_device_for_forward(dev.type, f);
    st = fwd ? fwd->forward(f) : ln_last_status();
  }
  for (int i = 2; i < 4 && st == LN_OK; i++)
    if (held[i] != vecs[i]) st = ln_copy_(vecs[i], held[i]);
  for (int i = 0; i < 4; i++) ln_tensor_release(held[i]);
  ln_tensor_release(given);
  return st;
}

/* ---- the synchronized forward ---- */

/* The synchronized forward. `pre` is a failure the caller found first (the
** module's checks): this rank still joins the all_gather, then reports it.
** p: running_mean, running_var, weight, bias. */
static ln_tensor *sync_forward(ln_tensor *input, ln_tensor *const *p, double momentum,
                               double eps, ln_dist_group *g, int64_t K, ln_status pre) {
  ln_tensor *x = NULL, *row = NULL, *rows = NULL, *heads = NULL, *out = NULL, *saved = NULL;
  pending mine;
  ln_bn_plan plan;
  ln_bn_blocks bl;
  ln_bn_dev_fwd f;
  keep(&mine, pre);
  if (mine.st == LN_OK && K < 0)
    keep(&mine, ln_error(LN_EINVAL, "SyncBatchNorm: num_features must be >= 0"));
  if (K < 0) K = 0;
  if (mine.st == LN_OK) keep(&mine, check_args(input, p, eps, K));
  if (!g) g = ln_dist_world();
  const ln_bn_device_impl *impl = device_impl(input);
  int64_t len = ROW_HEADER + 2 * K;
  double *buf = ln_scratch_zeroed(sizeof(double) * (size_t)(6 * K + 1));
  if (!buf || !(row = ln_zeros(&len, 1, LN_F64, impl ? ln_tensor_device(input)
                                                     : LN_DEVICE_CPU))) {
    if (!buf) ln_error(LN_ENOMEM, "out of memory in SyncBatchNorm");
    goto fail;
  }
  double *mean = buf, *var = mean + K, *invstd = var + K, *a = invstd + K, *b = a + K;
  double *w = b + K;
  double count = 0, channels =
    input && ln_tensor_dim(input) >= 2 ? (double)ln_tensor_size(input, 1) : -1;
  if (impl) {
    f = (ln_bn_dev_fwd){ .device = ln_tensor_device(input).index,
                         .dt = ln_tensor_dtype(input), .G = 1, .training = true };
    f.g.C = K;
    if (mine.st == LN_OK) keep(&mine, device_plan(input, K, &x, &plan, &bl, &f));
    double head[ROW_HEADER] = { [ROW_CHANNELS] = channels };
    head[ROW_COUNT] = mine.st == LN_OK && x ? (double)(ln_tensor_numel(input) / K) : 0;
    head[ROW_FAILED] = mine.st != LN_OK;
    if (mine.st != LN_OK) f.x.v.data = NULL;
    ln_status st = impl->sync_pack(&f, head, ln_tensor_data(row));
    if (mine.st == LN_OK) keep(&mine, st);
  } else {
    double *r = ln_tensor_data(row);
    r[ROW_CHANNELS] = channels;
    if (mine.st == LN_OK) keep(&mine, local_stats(input, K, &x, &plan, r));
    r[ROW_FAILED] = mine.st != LN_OK;
  }

  if (!(rows = ln_dist_all_gather_stack(g, row))) {
    if (mine.st != LN_OK) raise(&mine);
    goto fail;
  }
  if (impl && !(heads = host_headers(rows))) goto fail;
  if (check_rows(ln_tensor_data(heads ? heads : rows), heads ? ROW_HEADER : len,
                 (int)ln_tensor_size(rows, 0), g, &mine, &count) != LN_OK)
    goto fail;
  if (impl) {
    if (device_normalize(impl, &f, input, x, &plan, rows, count, p, momentum, eps, &out,
                         &saved) != LN_OK)
      goto fail;
  } else {
    merge_rows(ln_tensor_data(rows), (int)ln_tensor_size(rows, 0), K, count, mean, var);
    if (p[0] && count > 0) update_running(p[0], p[1], momentum, mean, var, count);
    ln_bn_vec_load(p[2], K, 1.0, w);
    ln_bn_vec_load(p[3], K, 0.0, b);
    ln_bn_cpu_invstd(var, eps, w, invstd, a, K);
    if (x) {
      ln_bn_view xv, ov;
      ln_dtype dt = ln_tensor_dtype(x);
      if (!(out = ln_bn_empty(&plan, x, dt))) goto fail;
      ln_bn_view_for(&plan, x, &xv);
      ln_bn_view_for(&plan, out, &ov);
      if (ln_bn_cpu_affine(dt, &plan.g, &xv, &ov, mean, a, b, true) != LN_OK) goto fail;
    } else if (!(out = ln_empty_like(input, LN_PRESERVE))) {
      goto fail;
    }
  }
  ln_tensor *grad_inputs[3] = { input, p[2], p[3] };
  if (ln_any_requires_grad(grad_inputs, 3) &&
      record(out, input, x ? x : input, p[2], p[3], g, K, count, mean, invstd, saved) != LN_OK)
    goto fail;
  goto done;
fail:
  ln_tensor_release(out);
  out = NULL;
done:
  ln_tensor_release(x);
  ln_tensor_release(row);
  ln_tensor_release(rows);
  ln_tensor_release(heads);
  ln_tensor_release(saved);
  ln_scratch_free(buf);
  return out;
}

ln_tensor *ln_sync_batch_norm(ln_tensor *input, ln_tensor *running_mean,
                              ln_tensor *running_var, ln_tensor *weight, ln_tensor *bias,
                              double momentum, double eps, ln_dist_group *g,
                              int64_t num_features) {
  ln_tensor *p[4] = { running_mean, running_var, weight, bias };
  return sync_forward(input, p, momentum, eps, g, num_features, LN_OK);
}

/* ---- backward ---- */

/* The incoming gradient g laid out like x for the kernels (ln_bn_laid_out),
** or zeros when g is NULL (an output that received no gradient: this rank
** still joins the all_reduce). New reference, its view in *v. */
static ln_tensor *grad_like_x(const ln_bn_blocks *bl, ln_tensor *x, ln_tensor *g,
                              ln_bn_view *v) {
  ln_tensor *t = g ? ln_bn_laid_out(&bl->plan, bl, x, g) : ln_bn_empty(&bl->plan, x,
                                                                         ln_tensor_dtype(x));
  if (t && !g && ln_zero_(t) != LN_OK) {
    ln_tensor_release(t);
    return NULL;
  }
  if (t) ln_bn_view_for(&bl->plan, t, v);
  return t;
}

/* A backward's end: on success the input's gradient *dx is handed over
** to grad_in[0], else the gradients made so far are released. */
static void hand_over(ln_status st, ln_tensor **dx, ln_tensor **grad_in) {
  if (st == LN_OK) {
    grad_in[0] = *dx;
    *dx = NULL;
    return;
  }
  for (int i = 0; i < 3; i++) {
    ln_tensor_release(grad_in[i]);
    grad_in[i] = NULL;
  }
}

/* A new tensor of p's shape, dtype and device: zeros, or uninitialized. */
static ln_tensor *like_param(ln_tensor *p, bool zero) {
  return (zero ? ln_zeros : ln_empty)(ln_tensor_sizes(p), ln_tensor_dim(p), ln_tensor_dtype(p),
                                      ln_tensor_device(p));
}

/* sbn_backward on a device: this rank's sums of dy and dy * (x - mean)
** and the parameters' gradients by the device implementation, the sums
** all-reduced on the device with the failure flag (read back: every rank
** must agree to fail), then dx from the global sums. */
static ln_status sbn_backward_device(ln_node *node, ln_tensor **grad_out,
                                     ln_tensor **grad_in) {
  const sbn_saved *s = node->extra;
  ln_tensor *x = ln_node_saved(node, 0);
  if (!x) return ln_last_status();
  ln_tensor *w = ln_node_saved(node, 1), *dy = NULL, *dx = NULL, *row = NULL, *flag = NULL;
  ln_tensor *held[3] = { NULL, NULL, NULL };
  bool need_x = node->next[0].node, need_w = node->next[1].node, need_b = node->next[2].node;
  int64_t C = s->C, M = ln_tensor_numel(x) / C, len = 2 * C + 1;
  ln_device dev = ln_tensor_device(x);
  const ln_bn_device_impl *impl = ln_bn_device_for_sync(dev.type);
  ln_bn_dev_bwd d = { .device = dev.index, .dt = ln_tensor_dtype(x), .G = 1,
                      .training = true, .stats = ln_tensor_data(s->dev) };
  pending mine = { .st = LN_OK };
  ln_status st = LN_OK;
  ln_bn_blocks bl;
  ln_bn_view gv;
  double failed = 0;
  if (!impl || !(row = ln_zeros(&len, 1, LN_F64, dev)) ||
      !(flag = ln_narrow(row, 0, 2 * C, 1))) {
    st = ln_last_status();
    goto done;
  }
  if (need_w && !(grad_in[1] = like_param(ln_node_saved(node, 1), M == 0)))
    keep(&mine, ln_last_status());
  if (mine.st == LN_OK && need_b && !(grad_in[2] = like_param(ln_node_saved(node, 2), M == 0)))
    keep(&mine, ln_last_status());
  if (mine.st == LN_OK && M > 0) {
    ln_bn_blocks_for(x, 1, &bl);  /* x is what the forward's kernels ran on */
    d.g = bl.plan.g;
    ln_bn_dview_for(&bl, x, &d.x);
    keep(&mine, (dy = grad_like_x(&bl, x, grad_out[0], &gv)) ? LN_OK : ln_last_status());
    if (mine.st == LN_OK) {
      ln_bn_dview_for(&bl, dy, &d.dy);
      keep(&mine, ln_bn_dvec_for(need_w ? grad_in[1] : NULL, &d.grad_weight, &held[1]));
    }
    if (mine.st == LN_OK)
      keep(&mine, ln_bn_dvec_for(need_b ? grad_in[2] : NULL, &d.grad_bias, &held[2]));
    if (mine.st == LN_OK) keep(&mine, impl->sync_grad_sums(&d, ln_tensor_data(row)));
  }
  if (need_x) {
    if (mine.st != LN_OK && (st = ln_fill_(flag, 1.0)) != LN_OK) goto done;
    if ((st = ln_dist_all_reduce(s->g, row, LN_REDUCE_SUM)) != LN_OK) goto done;
  }
  if (mine.st != LN_OK) {
    st = raise(&mine);
    goto done;
  }
  if (!need_x) goto done;
  if ((st = ln_tensor_item(flag, &failed)) != LN_OK) goto done;
  if (failed != 0) {
    st = ln_error(LN_ERUNTIME, "SyncBatchNorm: the backward failed on another rank (its "
                  "error says why)");
    goto done;
  }
  if (M == 0) {
    if (!(dx = ln_zeros(ln_tensor_sizes(x), ln_tensor_dim(x), d.dt, dev))) st = ln_last_status();
    goto done;
  }
  if (!(dx = ln_bn_empty(&bl.plan, x, d.dt))) {
    st = ln_last_status();
    goto done;
  }
  ln_bn_dview_for(&bl, dx, &d.dx);
  d.given_sums = ln_tensor_data(row);
  d.count = s->count;
  d.grad_weight = d.grad_bias = (ln_bn_dvec){ .data = NULL };
  if ((st = ln_bn_dvec_for(w, &d.weight, &held[0])) == LN_OK) {
    const ln_bn_device_impl *bwd = ln_bn_device_for_backward(dev.type, &d);
    st = bwd ? bwd->backward(&d) : ln_last_status();
  }
done:
  hand_over(st, &dx, grad_in);
  for (int i = 0; i < 3; i++) ln_tensor_release(held[i]);
  ln_tensor_release(dx);
  ln_tensor_release(dy);
  ln_tensor_release(flag);
  ln_tensor_release(row);
  return st;
}

/* With N values per channel in the global batch, w = weight * invstd and
** the global sums S1 = sum(dy), S2 = sum(dy * (x - mean)):
**   dx = w * (dy - S1 / N - (x - mean) * invstd^2 * S2 / N)
** and this rank's dweight = sum(dy * (x - mean)) * invstd, dbias = sum(dy)
** over its own values. The all_reduce runs only when dx is needed, as in
** PyTorch; every rank of a data-parallel model agrees on that. dx is then
** one pass of the kernels' map from the global sums and count
** (ln_bn_cpu_train_dx). */
static ln_status sbn_backward(ln_node *node, ln_tensor **grad_out, ln_tensor **grad_in) {
  const sbn_saved *s = node->extra;
  if (s->dev) return sbn_backward_device(node, grad_out, grad_in);
  ln_tensor *x = ln_node_saved(node, 0);
  if (!x) return ln_last_status();
  ln_tensor *w = ln_node_saved(node, 1), *b = ln_node_saved(node, 2);
  ln_tensor *dy = NULL, *dx = NULL, *row = NULL;
  bool need_x = node->next[0].node, need_w = node->next[1].node, need_b = node->next[2].node;
  int64_t C = s->C, M = ln_tensor_numel(x) / C, len = 2 * C + 1;
  const double *mean = s->v, *invstd = s->v + C;
  ln_dtype dt = ln_tensor_dtype(x);
  pending mine = { .st = LN_OK };
  ln_status st = LN_OK;
  ln_bn_blocks bl;
  ln_bn_view xv, gv, dv;
  double *buf = ln_scratch_zeroed(sizeof(double) * (size_t)(2 * C + 1));
  if (!buf || !(row = ln_zeros(&len, 1, LN_F64, LN_DEVICE_CPU))) {
    st = buf ? ln_last_status() : ln_error(LN_ENOMEM, "out of memory in SyncBatchNorm backward");
    goto done;
  }
  double *wv = buf, *tmp = wv + C;
  double *sdy = ln_tensor_data(row), *sdyx = sdy + C;
  if (M > 0) {
    ln_bn_blocks_for(x, 1, &bl);  /* x is what the forward's kernels ran on */
    ln_bn_view_for(&bl.plan, x, &xv);
    keep(&mine, (dy = grad_like_x(&bl, x, grad_out[0], &gv)) ? LN_OK : ln_last_status());
    if (mine.st == LN_OK)
      keep(&mine, ln_bn_cpu_grad_sums(dt, &bl.plan.g, &xv, &gv, mean, sdy, sdyx));
  }
  for (int64_t c = 0; c < C; c++) tmp[c] = sdyx[c] * invstd[c];
  if (mine.st == LN_OK && need_w && !(grad_in[1] = param_grad(w, tmp)))
    keep(&mine, ln_last_status());
  if (mine.st == LN_OK && need_b && !(grad_in[2] = param_grad(b, sdy)))
    keep(&mine, ln_last_status());
  if (need_x) {
    sdy[2 * C] = mine.st != LN_OK;
    if ((st = ln_dist_all_reduce(s->g, row, LN_REDUCE_SUM)) != LN_OK) goto done;
  }
  if (mine.st != LN_OK) {
    st = raise(&mine);
    goto done;
  }
  if (!need_x) goto done;
  if (sdy[2 * C] != 0) {
    st = ln_error(LN_ERUNTIME, "SyncBatchNorm: the backward failed on another rank (its "
                  "error says why)");
    goto done;
  }
  if (M == 0) {
    if (!(dx = ln_zeros(ln_tensor_sizes(x), ln_tensor_dim(x), dt, ln_tensor_device(x))))
      st = ln_last_status();
    goto done;
  }
  ln_bn_vec_load(w, C, 1.0, wv);
  if (!(dx = ln_bn_empty(&bl.plan, x, dt))) {
    st = ln_last_status();
    goto done;
  }
  ln_bn_view_for(&bl.plan, dx, &dv);
  st = ln_bn_cpu_train_dx(dt, &bl.plan.g, &xv, &gv, &dv, mean, invstd, wv, sdy, sdyx,
                          s->count);
done:
  hand_over(st, &dx, grad_in);
  ln_tensor_release(dx);
  ln_tensor_release(dy);
  ln_tensor_release(row);
  ln_scratch_free(buf);
  return st;
}

/* ---- the module ---- */

/* The module's extra state (ln_bn_ext). */
typedef struct sbn_state {
  ln_dist_group *group;       /* retained; NULL: the world at each forward */
  ln_dist_group *checked_on;  /* retained; where num_features was last checked */
  int64_t checked;            /* that num_features; -1 before the first check */
} sbn_state;

static void free_state(void *p) {
  sbn_state *s = p;
  ln_dist_group_release(s->group);
  ln_dist_group_release(s->checked_on);
  free(s);
}

static ln_tensor *sbn_forward(ln_module *m, ln_tensor *const *inputs, int n);

static const ln_module_type sync_type = {
  .name = "SyncBatchNorm", .version = 2, .forward = sbn_forward,
  .extra_repr = ln_bn_extra_repr, .load_hook = ln_bn_load_hook, .free_priv = ln_bn_free_priv
};

bool ln_is_sync_batchnorm(const ln_module *m) {
  return m && ln_module_get_type(m) == &sync_type;
}

static sbn_state *state_of(const ln_module *m) {
  return ln_is_sync_batchnorm(m) ? ln_bn_ext(m) : NULL;
}

ln_dist_group *ln_sync_batchnorm_group(const ln_module *m) {
  sbn_state *s = state_of(m);
  return s ? s->group : NULL;
}

ln_status ln_sync_batchnorm_set_group(ln_module *m, ln_dist_group *group) {
  sbn_state *s = state_of(m);
  if (!s)
    return ln_error(LN_EINVAL, "SyncBatchNorm module expected, got %s",
                    m ? ln_module_type_name(m) : "NULL");
  if (group) ln_dist_group_retain(group);
  ln_dist_group_release(s->group);
  s->group = group;
  return LN_OK;
}

ln_module *ln_sync_batchnorm_new(int64_t num_features, const ln_batchnorm_options *opts,
                                 ln_dist_group *group) {
  sbn_state *s = calloc(1, sizeof *s);
  if (!s) {
    ln_error(LN_ENOMEM, "out of memory creating a SyncBatchNorm module");
    return NULL;
  }
  ln_module *m = ln_bn_module_new(&sync_type, 0, num_features, opts, false);
  if (!m) {
    free(s);
    return NULL;
  }
  s->checked = -1;
  ln_bn_set_ext(m, s, free_state);
  ln_sync_batchnorm_set_group(m, group);
  return m;
}

/* The slots convert_sync_batchnorm shares, in _NormBase's order. */
static const char *const shared_slots[5] = { "weight", "bias", "running_mean", "running_var",
                                             "num_batches_tracked" };

ln_module *ln_sync_batchnorm_from(ln_module *bn, ln_dist_group *group) {
  if (!ln_is_batchnorm(bn) && !ln_is_sync_batchnorm(bn)) {
    ln_error(LN_EINVAL, "convert_sync_batchnorm: BatchNorm module expected, got %s",
             bn ? ln_module_type_name(bn) : "NULL");
    return NULL;
  }
  ln_batchnorm_options o = ln_batchnorm_defaults();
  o.affine = ln_module_attr_bool(bn, "affine", true);
  o.track_running_stats = ln_module_attr_bool(bn, "track_running_stats", true);
  const ln_attr *nf = ln_module_get_attr(bn, "num_features");
  ln_module *m = ln_sync_batchnorm_new(nf && nf->kind == LN_ATTR_INT ? nf->u.i : 0, &o, group);
  if (!m) return NULL;
  ln_status st = LN_OK;
  for (int i = 0; i < ln_module_attr_count(bn) && st == LN_OK; i++) {
    const char *name = ln_module_attr_name(bn, i);
    st = ln_module_set_attr(m, name, *ln_module_get_attr(bn, name));
  }
  for (int i = 0; i < 5 && st == LN_OK; i++) {
    ln_tensor *t = ln_module_get_tensor(bn, shared_slots[i]);
    st = i < 2 ? ln_module_register_parameter(m, shared_slots[i], t)
               : ln_module_register_buffer(m, shared_slots[i], t, true);
  }
  if (st != LN_OK) {
    ln_module_release(m);
    return NULL;
  }
  ln_module_train(m, ln_module_training(bn));
  return m;
}

/* _BatchNorm.forward's logic (ln_bn_prepare), then ln_batch_norm, or the
** synchronized forward when training on a group of more than one process
** that this process belongs to (PyTorch's need_sync: a process outside
** the group normalizes its own batch). */
static ln_tensor *sbn_forward(ln_module *m, ln_tensor *const *inputs, int n) {
  if (n != 1) {
    ln_error(LN_EINVAL, "SyncBatchNorm.forward expects 1 input, got %d", n);
    return NULL;
  }
  ln_tensor *x = inputs[0];
  sbn_state *s = state_of(m);
  ln_dist_group *g = s->group ? s->group : ln_dist_world();
  bool sync = ln_module_training(m) && ln_dist_is_initialized() && g &&
              ln_dist_group_is_member(g) && ln_dist_group_size(g) > 1;
  const ln_attr *nf = ln_module_get_attr(m, "num_features");
  int64_t K = nf && nf->kind == LN_ATTR_INT ? nf->u.i : 0;
  ln_bn_call c;
  if (!sync) {
    if (ln_bn_prepare(m, x, &c) != LN_OK) return NULL;
    if (check_channels(x, K) != LN_OK) return ln_bn_finish(m, &c, NULL);
    ln_bn_args a = ln_bn_call_args(&c, x);
    return ln_bn_finish(m, &c, ln_bn_forward(&a));
  }
  if (s->checked != K || s->checked_on != g) {
    if (ln_dist_check_same(g, K, "SyncBatchNorm channel count") != LN_OK) return NULL;
    ln_dist_group_retain(g);
    ln_dist_group_release(s->checked_on);
    s->checked_on = g;
    s->checked = K;
  }
  ln_status pre = ln_bn_prepare(m, x, &c);
  ln_tensor *p[4] = { c.running_mean, c.running_var, c.weight, c.bias };
  return ln_bn_finish(m, &c, sync_forward(x, p, c.momentum, c.eps, g, K, pre));
}
