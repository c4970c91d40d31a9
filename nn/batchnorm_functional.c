/*
** batchnorm_functional.c -- ln_batch_norm (torch.nn.functional.batch_norm
** with native_batch_norm's semantics) and ln_bn_forward, the forward that
** it shares with ghost BN, FusedBatchNorm2d and BatchRenorm: argument
** checks with PyTorch's messages, layouts, blocks, statistics and running
** statistics. The autograd node is in batchnorm_backward.c.
**
** The input is normalized in its own layout when the kernels have one for
** it (batchnorm_kernels.h), else after a contiguous copy; the output is
** laid out like what the kernels ran on (so also a 3D (N, C, L) input with
** C innermost keeps its layout, where PyTorch returns a contiguous one).
** Parameters and running statistics, of any dtype the checks allow, are
** read and updated here as double C-length vectors. A device tensor takes
** the same checks, layouts and blocks, then the device's BatchNorm
** implementation (batchnorm_device.h, registered here) does the rest on
** the device: statistics, running statistics and the saved rows stay there.
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/autograd.h"
#include "backends.h"
#include "batchnorm_functional.h"
#include "pyrepr.h"
#include "scratch.h"

/* ---- messages ---- */

const char *ln_bn_torch_type_name(ln_dtype t) {
  switch (t) {
  case LN_F32: return "Float";
  case LN_F64: return "Double";
  case LN_F16: return "Half";
  case LN_BF16: return "BFloat16";
  case LN_I64: return "Long";
  default: return "Bool";
  }
}

/* "{1, 4}" as PyTorch prints sizes in this message (torch.Size([1, 4])). */
static const char *shape_str(const ln_tensor *t, char *buf, size_t n) {
  size_t len = (size_t)snprintf(buf, n, "{");
  for (int d = 0; d < ln_tensor_dim(t) && len < n; d++)
    len += (size_t)snprintf(buf + len, n - len, d ? ", %lld" : "%lld",
                            (long long)ln_tensor_size(t, d));
  if (len < n) snprintf(buf + len, n - len, "}");
  return buf;
}

/* ---- C-length vectors of any shape, read and written in double ---- */

/* Does one stride (into *stride; 0 for an expanded vector) walk t's
** elements in row-major order? When none does, elements are located one
** by one. */
static bool vec_stride(const ln_tensor *t, int64_t *stride) {
  bool found = false;
  int64_t expect = 0;
  *stride = 1;
  for (int d = ln_tensor_dim(t) - 1; d >= 0; d--) {
    int64_t n = ln_tensor_size(t, d), s = ln_tensor_stride(t, d);
    if (n == 1) continue;
    if (found && s != expect) return false;
    if (!found) *stride = s;
    found = true;
    expect = s * n;
  }
  return true;
}

static void *vec_elem(const ln_tensor *t, int64_t i) {
  int64_t off = 0;
  for (int d = ln_tensor_dim(t) - 1; d >= 0; d--) {
    int64_t s = ln_tensor_size(t, d);
    off += i % s * ln_tensor_stride(t, d);
    i /= s;
  }
  return (char *)ln_tensor_data(t) + off * (int64_t)ln_dtype_size(ln_tensor_dtype(t));
}

/* out[c] = t[c], or `fill` for every c when t is NULL. */
void ln_bn_vec_load(const ln_tensor *t, int64_t C, double fill, double *out) {
  int64_t s;
  bool one = t && vec_stride(t, &s);
  if (!t) {
    for (int64_t c = 0; c < C; c++) out[c] = fill;
  } else if (one && ln_tensor_dtype(t) == LN_F32) {
    const float *p = ln_tensor_data(t);
    for (int64_t c = 0; c < C; c++) out[c] = p[c * s];
  } else if (one && ln_tensor_dtype(t) == LN_F64) {
    const double *p = ln_tensor_data(t);
    for (int64_t c = 0; c < C; c++) out[c] = p[c * s];
  } else {
    for (int64_t c = 0; c < C; c++)
      out[c] = ln_load_double(vec_elem(t, c), ln_tensor_dtype(t));
  }
}

/* t[c] = v[c] when set, whatever t held; else keep * t[c] + f * v[c]. */
static void vec_write(ln_tensor *t, bool set, double keep, double f, const double *v) {
  int64_t s, C = ln_tensor_numel(t);
  bool one = vec_stride(t, &s);
  if (one && ln_tensor_dtype(t) == LN_F32) {
    float *p = ln_tensor_data(t);
    if (set) for (int64_t c = 0; c < C; c++) p[c * s] = (float)v[c];
    else for (int64_t c = 0; c < C; c++) p[c * s] = (float)(keep * p[c * s] + f * v[c]);
  } else if (one && ln_tensor_dtype(t) == LN_F64) {
    double *p = ln_tensor_data(t);
    if (set) for (int64_t c = 0; c < C; c++) p[c * s] = v[c];
    else for (int64_t c = 0; c < C; c++) p[c * s] = keep * p[c * s] + f * v[c];
  } else {
    ln_dtype dt = ln_tensor_dtype(t);
    for (int64_t c = 0; c < C; c++) {
      void *e = vec_elem(t, c);
      ln_store_double(e, dt, set ? v[c] : keep * ln_load_double(e, dt) + f * v[c]);
    }
  }
}

void ln_bn_vec_store(ln_tensor *t, const double *v) { vec_write(t, true, 0, 1, v); }

/* As PyTorch, a NaN or infinite t[c] stays in the sum even with keep 0
** (momentum 1, or a cumulative average's first step). */
void ln_bn_vec_blend(ln_tensor *t, double keep, double f, const double *v) {
  vec_write(t, false, keep, f, v);
}

/* ---- argument checks, in PyTorch's order ---- */

static ln_status check_numel(const char *name, const ln_tensor *t, int64_t C) {
  if (t && ln_tensor_numel(t) != C)
    return ln_error(LN_EINVAL, "%s should contain %lld elements not %lld", name,
                    (long long)C, (long long)ln_tensor_numel(t));
  return LN_OK;
}

/* Input rank and dtype class, batch size (of a virtual batch with ghost
** BN), eps, devices: what PyTorch checks before its empty-input shortcut.
** params: running_mean, running_var, weight, bias, addend. */
static ln_status check_input(const ln_bn_args *a, ln_tensor *const *params) {
  char buf[200];
  ln_tensor *x = a->input;
  bool training = a->training;
  double eps = a->eps;
  if (!x) return ln_error(LN_EINVAL, "batch_norm: input expected, got NULL");
  int nd = ln_tensor_dim(x);
  if (nd < 2) return ln_error(LN_EINVAL, "expected at least 2D input (got %dD input)", nd);
  int64_t N = ln_tensor_size(x, 0), V = a->virtual_batch, per_channel = V ? V : N;
  if (V < 0 || (V && N % V))
    return ln_error(LN_EINVAL, "virtual_batch_size %lld does not divide the batch size "
                    "%lld (input size %s)", (long long)V, (long long)N,
                    shape_str(x, buf, sizeof buf));
  for (int d = 2; d < nd; d++)   /* V may exceed an empty batch: saturate, only 1 matters */
    if (__builtin_mul_overflow(per_channel, ln_tensor_size(x, d), &per_channel))
      per_channel = INT64_MAX;
  if (training && per_channel == 1)
    return ln_error(LN_EINVAL, "Expected more than 1 value per channel when training, "
                    "got input size %s%s", shape_str(x, buf, sizeof buf),
                    V ? " with virtual_batch_size 1" : "");
  if (training && !(eps > 0))
    return ln_error(LN_EINVAL, "batch_norm eps must be positive during training, but "
                    "got %s", ln_py_float(eps, buf, sizeof buf));
  if (!training && !(eps >= 0))
    return ln_error(LN_EINVAL, "batch_norm eps must be non-negative, but got %s",
                    ln_py_float(eps, buf, sizeof buf));
  ln_device dev = ln_tensor_device(x);
  for (int i = 0; i < 5; i++) {
    if (!params[i] || ln_device_eq(ln_tensor_device(params[i]), dev)) continue;
    char b2[32];
    return ln_error(LN_EINVAL, "Expected all tensors to be on the same device, but found "
                    "at least two devices, %s and %s!", ln_device_str(dev, buf, sizeof buf),
                    ln_device_str(ln_tensor_device(params[i]), b2, sizeof b2));
  }
  if (dev.type != LN_CPU && !ln_bn_device_available(dev.type))
    return ln_error(LN_ERUNTIME, "batch_norm is not implemented for %s tensors yet",
                    ln_device_str(dev, buf, sizeof buf));
  return LN_OK;
}

/* The addend of the fused form: the input's shape and dtype. */
static ln_status check_addend(const ln_tensor *x, const ln_tensor *add) {
  char b1[200], b2[200];
  if (!add) return LN_OK;
  if (!ln_tensor_same_shape(x, add))
    return ln_error(LN_EINVAL, "addend must have the input's shape %s, got %s",
                    shape_str(x, b1, sizeof b1), shape_str(add, b2, sizeof b2));
  if (ln_tensor_dtype(add) != ln_tensor_dtype(x))
    return ln_error(LN_EINVAL, "addend must have the input's dtype %s, got %s",
                    ln_dtype_name(ln_tensor_dtype(x)), ln_dtype_name(ln_tensor_dtype(add)));
  return LN_OK;
}

/* PyTorch's dtype checks: a floating input; weight, bias and running
** stats (p: running_mean, running_var, weight, bias; each may be NULL) of
** its dtype, or, when the first given of weight, bias, running_mean,
** running_var differs from it (mixed), all float32 with a float16 or
** bfloat16 input -- the parameters checked before the input. */
ln_status ln_bn_check_dtypes(ln_tensor *x, ln_tensor *const *p) {
  ln_dtype xt = ln_tensor_dtype(x);
  if (!ln_dtype_is_float(xt))
    return ln_error(LN_EINVAL, "\"batch_norm\" not implemented for '%s'",
                    ln_bn_torch_type_name(xt));
  static const int order[4] = { 2, 3, 0, 1 };
  ln_tensor *first = NULL;
  for (int k = 0; k < 4 && !first; k++) first = p[order[k]];
  bool mixed = first && ln_tensor_dtype(first) != xt;
  for (int i = 0; i < 4; i++) {
    if (!p[i]) continue;
    ln_dtype pt = ln_tensor_dtype(p[i]);
    if (mixed && pt != LN_F32)
      return ln_error(LN_EINVAL, "mixed dtype (CPU): expect parameter to have scalar "
                      "type of Float");
    if (!mixed && pt != xt)
      return ln_error(LN_EINVAL, "expected scalar type %s but found %s",
                      ln_bn_torch_type_name(xt), ln_bn_torch_type_name(pt));
  }
  if (mixed && xt != LN_F16 && xt != LN_BF16)
    return ln_error(LN_EINVAL, "mixed dtype (CPU): all inputs must share same datatype.");
  return LN_OK;
}

/* params: running_mean, running_var, weight, bias. Sizes, running stats,
** then dtypes (ln_bn_check_dtypes). */
static ln_status check_params(ln_tensor *x, ln_tensor *const *params, bool training) {
  static const char *const names[4] = { "running_mean", "running_var", "weight", "bias" };
  int64_t C = ln_tensor_size(x, 1);
  for (int i = 0; i < 4; i++) {
    if (i < 2 && !params[i] && !training)
      return ln_error(LN_EINVAL, "%s must be defined in evaluation mode", names[i]);
    if (check_numel(names[i], params[i], C) != LN_OK) return LN_EINVAL;
  }
  if (!params[0] != !params[1])
    return ln_error(LN_EINVAL, "running_mean and running_var must either both be None "
                    "or neither be None");
  return ln_bn_check_dtypes(x, params);
}

/* ---- device implementations (batchnorm_device.h) ---- */

#define LN_BN_MAX_IMPLS 4

static const ln_bn_device_impl *impls[LN_DEVICE_TYPE_COUNT][LN_BN_MAX_IMPLS];
static int n_impls[LN_DEVICE_TYPE_COUNT];

/* Called while backends register (ln_backends_init), before any forward. */
ln_status ln_bn_device_register(ln_device_type type, const ln_bn_device_impl *impl) {
  if ((int)type <= LN_CPU || type >= LN_DEVICE_TYPE_COUNT || !impl)
    return ln_error(LN_EINVAL, "ln_bn_device_register: a device type and a table expected");
  for (int i = 0; i < n_impls[type]; i++)
    if (impls[type][i] == impl) return LN_OK;
  if (n_impls[type] == LN_BN_MAX_IMPLS)
    return ln_error(LN_ERUNTIME, "ln_bn_device_register: at most %d implementations per "
                    "device type", LN_BN_MAX_IMPLS);
  impls[type][n_impls[type]++] = impl;
  return LN_OK;
}

bool ln_bn_device_available(ln_device_type type) {
  return (int)type > LN_CPU && type < LN_DEVICE_TYPE_COUNT && n_impls[type] > 0;
}

/* cuDNN's only while lunet.backends.cudnn.enabled. */
static bool usable(const ln_bn_device_impl *impl) {
  return impl->kind != LN_BN_IMPL_CUDNN || ln_cudnn_enabled();
}

static void none_takes(ln_device_type type) {
  const ln_backend *b = ln_backend_get(type);
  ln_error(LN_ERUNTIME, "batch_norm: no %s implementation takes this call",
           b ? b->name : "device");
}

static int count_of(ln_device_type type) {
  return ln_bn_device_available(type) ? n_impls[type] : 0;
}

/* Of type's implementations, the usable one that takes the call (ok[i])
** with the highest rank (rank[i]), the first on ties; NULL with a message
** when none takes it. */
static const ln_bn_device_impl *pick(ln_device_type type, const bool *ok, const int *rank) {
  int best = -1;
  for (int i = 0; i < count_of(type); i++)
    if (ok[i] && usable(impls[type][i]) && (best < 0 || rank[i] > rank[best])) best = i;
  if (best < 0) none_takes(type);
  return best < 0 ? NULL : impls[type][best];
}

const ln_bn_device_impl *ln_bn_device_for_forward(ln_device_type type, const ln_bn_dev_fwd *f) {
  bool ok[LN_BN_MAX_IMPLS];
  int rank[LN_BN_MAX_IMPLS];
  for (int i = 0; i < count_of(type); i++) {
    const ln_bn_device_impl *m = impls[type][i];
    ok[i] = m->forward && (!m->supports_forward || m->supports_forward(f));
    rank[i] = ok[i] && m->rank_forward ? m->rank_forward(f) : 0;
  }
  return pick(type, ok, rank);
}

const ln_bn_device_impl *ln_bn_device_for_backward(ln_device_type type,
                                                   const ln_bn_dev_bwd *b) {
  bool ok[LN_BN_MAX_IMPLS];
  int rank[LN_BN_MAX_IMPLS];
  for (int i = 0; i < count_of(type); i++) {
    const ln_bn_device_impl *m = impls[type][i];
    ok[i] = m->backward && (!m->supports_backward || m->supports_backward(b));
    rank[i] = ok[i] && m->rank_backward ? m->rank_backward(b) : 0;
  }
  return pick(type, ok, rank);
}

const ln_bn_device_impl *ln_bn_device_for_sync(ln_device_type type) {
  for (int i = 0; i < count_of(type); i++)
    if (usable(impls[type][i]) && impls[type][i]->sync_pack && impls[type][i]->sync_merge &&
        impls[type][i]->sync_grad_sums)
      return impls[type][i];
  none_takes(type);
  return NULL;
}

bool ln_bn_dview_for(const ln_bn_blocks *b, ln_tensor *t, ln_bn_dview *v) {
  v->s_block = b->G > 1 ? b->V * ln_tensor_stride(t, 0) : 0;
  return ln_bn_block_view(b, t, 0, &v->v);
}

ln_status ln_bn_dvec_for(ln_tensor *t, ln_bn_dvec *v, ln_tensor **held) {
  *held = NULL;
  *v = (ln_bn_dvec){ .data = NULL };
  if (!t) return LN_OK;
  int64_t s;
  if (vec_stride(t, &s)) ln_tensor_retain(t);
  else if (!(t = ln_contiguous(t, LN_CONTIGUOUS))) return ln_last_status();
  else s = 1;
  *held = t;
  *v = (ln_bn_dvec){ .data = ln_tensor_data(t), .dtype = ln_tensor_dtype(t), .stride = s };
  return LN_OK;
}

/* ---- forward ---- */

ln_bn_saved *ln_bn_saved_new(int64_t C, const ln_bn_blocks *b, bool renorm, bool relu) {
  int64_t GC = b->G * C, nv = (renorm ? 4 : 2) * GC;
  ln_bn_saved *s = calloc(1, sizeof *s + sizeof(double) * (size_t)nv +
                                 (relu ? sizeof(ln_bn_mask) * (size_t)b->G : 0));
  if (!s) {
    ln_error(LN_ENOMEM, "out of memory in batch_norm");
    return NULL;
  }
  s->C = C;
  s->blocks = *b;
  s->renorm = renorm;
  s->relu = relu;
  s->mean = (double *)(s + 1);
  s->invstd = s->mean + GC;
  if (renorm) {
    s->r = s->invstd + GC;
    s->d = s->r + GC;
  }
  if (relu) s->masks = (ln_bn_mask *)(s->mean + nv);
  return s;
}

void ln_bn_saved_free(void *p) {
  ln_bn_saved *s = p;
  if (s) ln_tensor_release(s->dev_stats);
  free(s);
}

/* Running stats r = (1 - momentum) * r + momentum * batch, the batch's
** statistics being the means over the G blocks of their means and of
** their unbiased variances (M values each). tmp: C doubles. */
static void update_running(const ln_bn_args *a, int64_t C, int64_t G, int64_t M,
                           const double *mean, const double *var, double *tmp) {
  /* the factors outside the loops: a division per channel took a tenth
  ** of a (2,1024) train forward */
  double m = a->momentum, fm = m / (double)G;
  const double *batch[2] = { mean, var };
  ln_tensor *run[2] = { a->running_mean, a->running_var };
  double f[2] = { fm, fm * (double)M / (double)(M - 1) };
  for (int i = 0; i < 2; i++) {
    const double *v = batch[i];
    if (G > 1) {   /* the blocks' sum, in block order */
      memcpy(tmp, v, sizeof(double) * (size_t)C);
      for (int64_t g = 1; g < G; g++)
        for (int64_t c = 0; c < C; c++) tmp[c] += v[g * C + c];
      v = tmp;
    }
    ln_bn_vec_blend(run[i], 1 - m, f[i], v);
  }
}

static double clip(double v, double lo, double hi) { return v < lo ? lo : v > hi ? hi : v; }

/* Block g's inverse std and map y = (x - mean) * ca + cb, from its mean
** and var (the batch's or the running ones); BatchRenorm's r and d from
** the running statistics rm, rv in training. w, b: weight and bias. */
static void block_coefs(const ln_bn_args *a, ln_bn_saved *s, int64_t g, const double *var,
                        const double *w, const double *b, const double *rm,
                        const double *rv, double *ca, double *cb) {
  int64_t C = s->C;
  double *invstd = s->invstd + g * C, eps = a->eps;
  /* loops of few arrays, without renorm's branches, so that the
  ** compiler vectorizes them: a (2,1024) eval forward spent a third of
  ** its time in one scalar loop */
  ln_bn_cpu_invstd(var, eps, w, invstd, ca, C);
  memcpy(cb, b, sizeof(double) * (size_t)C);
  if (!s->renorm || !a->training) return;
  for (int64_t c = 0, i = g * C; c < C; c++, i++) {
    double sigma = sqrt(rv[c] + eps);
    double r = clip(sqrt(var[c] + eps) / sigma, 1 / a->rmax, a->rmax);
    double d = clip((s->mean[i] - rm[c]) / sigma, -a->dmax, a->dmax);
    s->r[i] = r;
    s->d[i] = d;
    ca[c] = w[c] * r * invstd[c];
    cb[c] = b[c] + w[c] * d;
  }
}

/* Normalize block g of x into out (add: the addend, or NULL; mask: the
** fused ReLU's bits, or NULL when no gradient is recorded), leaving its
** statistics in s and var. */
static ln_status run_block(const ln_bn_args *a, ln_bn_saved *s, int64_t g, ln_tensor *x,
                           ln_tensor *out, ln_tensor *add, ln_tensor *mask,
                           const double *wbr, double *var, double *ca, double *cb) {
  const ln_bn_blocks *bl = &s->blocks;
  int64_t C = s->C;
  const double *w = wbr, *b = w + C, *rm = b + C, *rv = rm + C;
  double *mean = s->mean + g * C;
  ln_bn_view xv, ov, av;
  ln_bn_mask *mv = mask ? &s->masks[g] : NULL;
  if (!ln_bn_block_view(bl, x, g, &xv) || !ln_bn_block_view(bl, out, g, &ov) ||
      (add && !ln_bn_block_view(bl, add, g, &av)) ||
      (mask && !ln_bn_block_mask(bl, out, g, ln_tensor_data(mask), mv)))
    return ln_error(LN_ERUNTIME, "batch_norm: no kernel layout for a block of the input");
  ln_dtype dt = ln_tensor_dtype(x);
  if (a->training && !a->relu && !s->renorm)   /* statistics and map in one call */
    return ln_bn_cpu_train_forward(dt, &bl->plan.g, &xv, &ov, w, b, a->eps, mean, var,
                                   s->invstd + g * C);
  if (a->training) {
    ln_status st = ln_bn_cpu_stats(dt, &bl->plan.g, &xv, mean, var);
    if (st != LN_OK) return st;
  } else {
    memcpy(mean, rm, sizeof(double) * (size_t)C);
    memcpy(var, rv, sizeof(double) * (size_t)C);
  }
  block_coefs(a, s, g, var, w, b, rm, rv, ca, cb);
  if (a->relu)
    return ln_bn_cpu_fused_forward(dt, &bl->plan.g, &xv, add ? &av : NULL, &ov, mv, mean,
                                   ca, cb, a->training);
  return ln_bn_cpu_affine(dt, &bl->plan.g, &xv, &ov, mean, ca, cb, a->training);
}

static ln_bn_kernel_counts counts;

ln_bn_kernel_counts ln_bn_kernel_counts_now(void) {
  ln_bn_kernel_counts c;
  c.plane = __atomic_load_n(&counts.plane, __ATOMIC_RELAXED);
  c.rows = __atomic_load_n(&counts.rows, __ATOMIC_RELAXED);
  c.copied = __atomic_load_n(&counts.copied, __ATOMIC_RELAXED);
  return c;
}

static void count_layout(const ln_bn_plan *plan, bool copied) {
  __atomic_fetch_add(plan->g.rows ? &counts.rows : &counts.plane, 1, __ATOMIC_RELAXED);
  if (copied) __atomic_fetch_add(&counts.copied, 1, __ATOMIC_RELAXED);
}

/* x (the input, or a contiguous copy when no kernel reads its layout or
** its blocks), its plan and blocks, and its output. */
static ln_status lay_out(ln_tensor *input, int64_t G, ln_tensor **x, ln_bn_plan *plan,
                         ln_bn_blocks *bl, ln_tensor **out) {
  ln_bn_view v;
  *x = input;
  ln_tensor_retain(input);
  for (int tries = 0; tries < 2; tries++) {
    if (ln_bn_plan_for(*x, plan) && ln_bn_blocks_for(*x, G, bl)) {
      if (!(*out = ln_bn_empty(plan, *x, ln_tensor_dtype(*x)))) return ln_last_status();
      if (ln_bn_block_view(bl, *out, 0, &v)) {
        count_layout(plan, tries > 0);
        return LN_OK;
      }
      ln_tensor_release(*out);
      *out = NULL;
    }
    ln_tensor_release(*x);
    if (!(*x = ln_contiguous(input, LN_CONTIGUOUS))) return ln_last_status();
  }
  return ln_error(LN_ERUNTIME, "batch_norm: no kernel layout for the input");
}

/* The blocks on the CPU: statistics, coefficients and the map per block,
** then the running statistics. M: values per channel in the whole batch. */
static ln_status cpu_forward(const ln_bn_args *a, ln_bn_saved *s, ln_tensor *x, ln_tensor *out,
                             ln_tensor *add, ln_tensor *mask, int64_t M) {
  int64_t C = s->C, G = s->blocks.G;
  /* w, b, rm, rv, then var (G*C), ca, cb: each written before it is read
  ** (rm and rv only where the blocks read them) */
  double *buf = ln_scratch_alloc(sizeof(double) * (size_t)((6 + G) * C + 1));
  if (!buf) return ln_error(LN_ENOMEM, "out of memory in batch_norm");
  double *w = buf, *b = w + C, *rm = b + C, *rv = rm + C, *var = rv + C;
  double *ca = var + G * C, *cb = ca + C;
  ln_status st = LN_OK;
  ln_bn_vec_load(a->weight, C, 1.0, w);
  ln_bn_vec_load(a->bias, C, 0.0, b);
  if (!a->training || s->renorm) {   /* what the blocks read of them */
    ln_bn_vec_load(a->running_mean, C, 0.0, rm);
    ln_bn_vec_load(a->running_var, C, 1.0, rv);
  }
  for (int64_t g = 0; g < G && st == LN_OK; g++)
    st = run_block(a, s, g, x, out, add, mask, buf, var + g * C, ca, cb);
  if (st == LN_OK && a->training && a->update && a->running_mean)
    update_running(a, C, G, M / G, s->mean, var, ca);
  ln_scratch_free(buf);
  return st;
}

/* The blocks on x's device, by the implementation that takes the call; the
** saved rows in s->dev_stats. Running statistics without a single stride
** are updated in a dense copy, then copied back. */
static ln_status device_forward(const ln_bn_args *a, ln_bn_saved *s, ln_tensor *x,
                                ln_tensor *out, ln_tensor *add, ln_tensor *mask) {
  const ln_bn_blocks *bl = &s->blocks;
  ln_device dev = ln_tensor_device(x);
  ln_dtype dt = ln_tensor_dtype(x);
  ln_bn_dev_fwd f = { .device = dev.index, .dt = dt, .g = bl->plan.g, .G = bl->G,
                      .training = a->training, .update = a->update, .relu = a->relu,
                      .renorm = a->renorm, .momentum = a->momentum, .eps = a->eps,
                      .rmax = a->rmax, .dmax = a->dmax };
  ln_tensor *vecs[4] = { a->weight, a->bias, a->running_mean, a->running_var };
  ln_bn_dvec *dv[4] = { &f.weight, &f.bias, &f.running_mean, &f.running_var };
  ln_tensor *held[4] = { NULL, NULL, NULL, NULL };
  int64_t n = LN_BN_NSTATS * bl->G * s->C;
  if (!ln_bn_dview_for(bl, x, &f.x) || !ln_bn_dview_for(bl, out, &f.y) ||
      (add && !ln_bn_dview_for(bl, add, &f.add)) ||
      (mask && !ln_bn_block_mask(bl, out, 0, ln_tensor_data(mask), &f.mask.m)))
    return ln_error(LN_ERUNTIME, "batch_norm: no kernel layout for a block of the input");
  if (mask) {
    f.mask.s_block = bl->G > 1 ? bl->V * ln_tensor_stride(out, 0) : 0;
    s->masks[0] = f.mask.m;
    s->mask_step = f.mask.s_block;
  }
  if (!(s->dev_stats = ln_empty(&n, 1, ln_bn_acc_dtype(dt), dev))) return ln_last_status();
  f.stats = ln_tensor_data(s->dev_stats);
  ln_status st = LN_OK;
  for (int i = 0; i < 4 && st == LN_OK; i++) st = ln_bn_dvec_for(vecs[i], dv[i], &held[i]);
  const ln_bn_device_impl *impl = st == LN_OK ? ln_bn_device_for_forward(dev.type, &f) : NULL;
  if (st == LN_OK) st = impl ? impl->forward(&f) : ln_last_status();
  for (int i = 2; i < 4 && st == LN_OK; i++)
    if (held[i] != vecs[i]) st = ln_copy_(vecs[i], held[i]);
  for (int i = 0; i < 4; i++) ln_tensor_release(held[i]);
  return st;
}

ln_tensor *ln_bn_forward(const ln_bn_args *a) {
  ln_tensor *params[5] = { a->running_mean, a->running_var, a->weight, a->bias, a->addend };
  ln_tensor *input = a->input, *x = NULL, *out = NULL, *add = NULL, *mask = NULL;
  ln_tensor *grad_inputs[4] = { input, a->weight, a->bias, a->addend };
  ln_bn_saved *s = NULL;
  if (check_input(a, params) != LN_OK || (a->relu && check_addend(input, a->addend) != LN_OK))
    return NULL;
  int64_t C = ln_tensor_size(input, 1), N = ln_tensor_size(input, 0);
  int64_t numel = ln_tensor_numel(input), M = C ? numel / C : 0;
  int64_t G = a->training && a->virtual_batch && N ? N / a->virtual_batch : 1;
  bool grad = ln_any_requires_grad(grad_inputs, a->relu ? 4 : 3);
  ln_bn_blocks bl = { .G = 1, .V = N };
  if (numel == 0) {  /* as PyTorch: no further checks, running stats untouched */
    if (!(out = ln_empty_like(input, LN_PRESERVE))) return NULL;
    if (grad && (!(s = ln_bn_saved_new(C, &bl, a->renorm, a->relu)) ||
                 ln_bn_record(out, a, input, NULL, s) != LN_OK)) {
      ln_tensor_release(out);
      return NULL;
    }
    return out;
  }
  if (check_params(input, params, a->training) != LN_OK) return NULL;
  for (int i = 0; i < 2 && a->training && a->update; i++)   /* written: each value once */
    if (params[i] && ln_check_no_internal_overlap(params[i]) != LN_OK) return NULL;
  if (a->renorm && a->training && !a->running_mean) {
    ln_error(LN_EINVAL, "batch_renorm: running_mean and running_var must be defined in "
             "training (r and d compare the batch's statistics with them)");
    return NULL;
  }
  ln_bn_plan plan;
  if (lay_out(input, G, &x, &plan, &bl, &out) != LN_OK) goto fail;
  if (a->addend && !(add = ln_bn_laid_out(&plan, &bl, x, a->addend))) goto fail;
  int64_t words = (numel + 63) / 64 + 1;   /* the bits and a padding word, as int64 */
  if (a->relu && grad && !(mask = ln_zeros(&words, 1, LN_I64, ln_tensor_device(input))))
    goto fail;
  if (!(s = ln_bn_saved_new(C, &bl, a->renorm, a->relu))) goto fail;
  s->training = a->training;
  s->eps = a->eps;
  if ((ln_tensor_device(x).type == LN_CPU ? cpu_forward(a, s, x, out, add, mask, M)
                                          : device_forward(a, s, x, out, add, mask)) != LN_OK)
    goto fail;
  if (grad) {
    ln_bn_saved *owned = s;
    s = NULL;
    if (ln_bn_record(out, a, x, mask, owned) != LN_OK) goto fail;
  }
  goto done;
fail:
  ln_tensor_release(out);
  out = NULL;
done:
  ln_bn_saved_free(s);
  ln_tensor_release(x);
  ln_tensor_release(add);
  ln_tensor_release(mask);
  return out;
}

ln_tensor *ln_batch_norm(ln_tensor *input, ln_tensor *running_mean,
                         ln_tensor *running_var, ln_tensor *weight,
                         ln_tensor *bias, bool training, double momentum,
                         double eps) {
  ln_bn_args a = { .input = input, .running_mean = running_mean, .running_var = running_var,
                   .weight = weight, .bias = bias, .training = training, .update = true,
                   .momentum = momentum, .eps = eps };
  return ln_bn_forward(&a);
}
