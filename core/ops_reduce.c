/*
** ops_reduce.c -- reductions over a set of dims: sum, mean, var, max,
** min (with keepdim), argmax, and their backward functions.
**
** Every reduction accumulates into a contiguous buffer over the kept dims:
** double for floating inputs (so float32/16/bf16 sums of millions of
** elements stay accurate), int64 for int64 and bool. The input is walked
** in memory order by the strided helper with the buffer as operand 0
** (stride 0 along reduced dims), so reducing inner dims runs a scalar
** loop and reducing outer dims a vector one. Large inputs are split
** between threads either with a private buffer per thread (few outputs)
** or along a kept dim (many outputs). var is two-pass: the mean, then the
** sum of squared deviations from it.
**
** Tensors on a device go to its kernel table's reduce and argmax
** (core/device_kernels.h), which accumulate in float for float16/bfloat16/
** float32 and double for float64; mean and var divide on the device. The
** backward functions are made of generic ops and run on any device.
*/
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "device_kernels.h"
#include "ops_impl.h"

typedef enum red_kind { R_SUM, R_MAX, R_MIN, R_SQDEV, R_KIND_COUNT } red_kind;

/* ---- kernels: operand 0 the accumulator (A), 1 the input (T), 2 the
** mean for R_SQDEV (double, laid out like the accumulator) ---- */

/* Sum with four partial sums when the accumulator is a scalar. */
#define DEFINE_SUM(SUF, T, A) \
  static void sum_##SUF(char **d, const int64_t *s, int64_t n, void *ctx) { \
    (void)ctx; \
    if (s[0] == 0) { \
      A p0 = 0, p1 = 0, p2 = 0, p3 = 0; \
      int64_t i = 0; \
      if (s[1] == (int64_t)sizeof(T)) { \
        const T *x = (const T *)d[1]; \
        for (; i + 4 <= n; i += 4) { p0 += x[i]; p1 += x[i + 1]; p2 += x[i + 2]; p3 += x[i + 3]; } \
      } \
      for (; i < n; i++) p0 += *(const T *)(d[1] + i * s[1]); \
      *(A *)d[0] += (p0 + p1) + (p2 + p3); \
    } else if (s[0] == (int64_t)sizeof(A) && s[1] == (int64_t)sizeof(T)) { \
      A *a = (A *)d[0]; const T *x = (const T *)d[1]; \
      for (int64_t i = 0; i < n; i++) a[i] += x[i]; \
    } else { \
      for (int64_t i = 0; i < n; i++) *(A *)(d[0] + i * s[0]) += *(const T *)(d[1] + i * s[1]); \
    } \
  }

/* acc = STEP(acc, x) over n elements; a scalar accumulator is split in
** four for instruction-level parallelism (STEP must be associative). */
#define RED_LOOP(T, A, STEP) do { \
    if (s[0] == 0) { \
      A a0 = *(A *)d[0], a1 = a0, a2 = a0, a3 = a0; \
      int64_t i = 0; \
      for (; i + 4 <= n; i += 4) { \
        a0 = STEP(a0, (A)*(const T *)(d[1] + i * s[1])); \
        a1 = STEP(a1, (A)*(const T *)(d[1] + (i + 1) * s[1])); \
        a2 = STEP(a2, (A)*(const T *)(d[1] + (i + 2) * s[1])); \
        a3 = STEP(a3, (A)*(const T *)(d[1] + (i + 3) * s[1])); \
      } \
      for (; i < n; i++) a0 = STEP(a0, (A)*(const T *)(d[1] + i * s[1])); \
      *(A *)d[0] = STEP(STEP(a0, a1), STEP(a2, a3)); \
    } else { \
      for (int64_t i = 0; i < n; i++) { \
        A *a = (A *)(d[0] + i * s[0]); \
        T x = *(const T *)(d[1] + i * s[1]); \
        *a = STEP(*a, x); \
      } \
    } \
  } while (0)

/* NaN wins (x != x only for NaN). */
#define MAX_STEP(acc, x) ((x) > (acc) || (x) != (x) ? (x) : (acc))
#define MIN_STEP(acc, x) ((x) < (acc) || (x) != (x) ? (x) : (acc))

#define DEFINE_MINMAX(SUF, T, A) \
  static void max_##SUF(char **d, const int64_t *s, int64_t n, void *ctx) { \
    (void)ctx; RED_LOOP(T, A, MAX_STEP); \
  } \
  static void min_##SUF(char **d, const int64_t *s, int64_t n, void *ctx) { \
    (void)ctx; RED_LOOP(T, A, MIN_STEP); \
  }

#define DEFINE_SQDEV(SUF, T) \
  static void sqdev_##SUF(char **d, const int64_t *s, int64_t n, void *ctx) { \
    (void)ctx; \
    if (s[0] == 0) { \
      double acc = 0, m = *(const double *)d[2]; \
      for (int64_t i = 0; i < n; i++) { \
        double v = (double)*(const T *)(d[1] + i * s[1]) - m; \
        acc += v * v; \
      } \
      *(double *)d[0] += acc; \
    } else { \
      for (int64_t i = 0; i < n; i++) { \
        double v = (double)*(const T *)(d[1] + i * s[1]) - *(const double *)(d[2] + i * s[2]); \
        *(double *)(d[0] + i * s[0]) += v * v; \
      } \
    } \
  }

DEFINE_SUM(f32, float, double)
DEFINE_SUM(f64, double, double)
DEFINE_SUM(i64, int64_t, uint64_t)  /* wraps as PyTorch's sum (signed overflow is UB) */
DEFINE_MINMAX(f32, float, double)
DEFINE_MINMAX(f64, double, double)
DEFINE_MINMAX(i64, int64_t, int64_t)
DEFINE_SQDEV(f32, float)
DEFINE_SQDEV(f64, double)

static const ln_loop_fn red_kernels[R_KIND_COUNT][LN_DTYPE_COUNT] = {
  [R_SUM] = { [LN_F32] = sum_f32, [LN_F64] = sum_f64, [LN_I64] = sum_i64 },
  [R_MAX] = { [LN_F32] = max_f32, [LN_F64] = max_f64, [LN_I64] = max_i64 },
  [R_MIN] = { [LN_F32] = min_f32, [LN_F64] = min_f64, [LN_I64] = min_i64 },
  [R_SQDEV] = { [LN_F32] = sqdev_f32, [LN_F64] = sqdev_f64 },
};

/* ---- the driver ---- */

/* The accumulator: double, or int64 for integral inputs. */
typedef union acc { double f; int64_t i; } acc;

static acc identity(red_kind kind, bool is_int) {
  acc a;
  if (kind == R_MAX) { if (is_int) a.i = INT64_MIN; else a.f = -INFINITY; }
  else if (kind == R_MIN) { if (is_int) a.i = INT64_MAX; else a.f = INFINITY; }
  else if (is_int) a.i = 0;
  else a.f = 0;
  return a;
}

static void combine(acc *into, const acc *from, int64_t n, red_kind kind, bool is_int) {
  for (int64_t k = 0; k < n; k++) {
    if (kind == R_MAX) {
      if (is_int) into[k].i = MAX_STEP(into[k].i, from[k].i);
      else into[k].f = MAX_STEP(into[k].f, from[k].f);
    } else if (kind == R_MIN) {
      if (is_int) into[k].i = MIN_STEP(into[k].i, from[k].i);
      else into[k].f = MIN_STEP(into[k].f, from[k].f);
    } else if (is_int) {  /* wrapping, as the kernels */
      into[k].i = (int64_t)((uint64_t)into[k].i + (uint64_t)from[k].i);
    } else {
      into[k].f += from[k].f;
    }
  }
}

/* Reduce x over the dims flagged in red into out_acc (out_numel entries,
** contiguous over the kept dims). mean: R_SQDEV's means, laid out alike. */
static ln_status reduce_run(ln_tensor *x, const bool *red, red_kind kind, acc *out_acc,
                            int64_t out_numel, const acc *mean) {
  int nd = x->ndim;
  ln_dtype kx = ln_kernel_dtype(x->dtype);
  bool is_int = kx == LN_I64;
  int64_t astr[LN_MAX_DIMS], step = 1;
  for (int d = nd - 1; d >= 0; d--) {
    astr[d] = red[d] ? 0 : step;
    if (!red[d]) step *= x->sizes[d];
  }
  acc id = identity(kind, is_int);
  for (int64_t k = 0; k < out_numel; k++) out_acc[k] = id;

  ln_strided it;
  ln_strided_init(&it, x->sizes, nd);
  ln_strided_add(&it, out_acc, astr, sizeof(acc));
  ln_strided_add(&it, ln_tensor_data(x), x->strides, ln_dtype_size(x->dtype));
  if (mean) ln_strided_add(&it, (void *)mean, astr, sizeof(acc));
  ln_strided_prepare(&it, 1);  /* memory order of the input */
  ln_loop_fn kernel = red_kernels[kind][kx];
  ln_cast_ctx cast = {
    .kernel = kernel, .nops = it.nops, .n_out = 0,
    .have = { is_int ? LN_I64 : LN_F64, x->dtype, LN_F64 },
    .want = { is_int ? LN_I64 : LN_F64, kx, LN_F64 },
  };
  ln_loop_fn fn = x->dtype != kx ? ln_cast_loop : kernel;
  void *ctx = x->dtype != kx ? &cast : NULL;
  if (it.numel == 0) return LN_OK;
  if (!ln_strided_parallel(it.numel)) {
    ln_strided_run_range(&it, 0, it.numel, fn, ctx);
    return LN_OK;
  }
  int nt = omp_get_max_threads();
  if (out_numel * nt * 16 <= it.numel) {
    /* few outputs: a private accumulator per thread, combined in order */
    acc *bufs = malloc(sizeof(acc) * (size_t)(out_numel * nt));
    if (!bufs) return ln_error(LN_ENOMEM, "out of memory in a reduction");
    int used = nt;
    #pragma omp parallel num_threads(nt)
    {
      int t = omp_get_thread_num(), n = omp_get_num_threads();
      acc *mine = bufs + (int64_t)t * out_numel;
      for (int64_t k = 0; k < out_numel; k++) mine[k] = id;
      ln_strided sub = it;
      sub.data[0] = (char *)mine;
      ln_strided_run_range(&sub, it.numel * t / n, it.numel * (t + 1) / n, fn, ctx);
      #pragma omp single
      used = n;
    }
    for (int t = 0; t < used; t++) combine(out_acc, bufs + (int64_t)t * out_numel, out_numel,
                                           kind, is_int);
    free(bufs);
    return LN_OK;
  }
  /* many outputs: threads take disjoint ranges of the largest kept dim */
  int dim = -1;
  for (int d = 0; d < it.ndim; d++)
    if (it.strides[d][0] != 0 && (dim < 0 || it.sizes[d] > it.sizes[dim])) dim = d;
  if (dim < 0) {
    ln_strided_run_range(&it, 0, it.numel, fn, ctx);
    return LN_OK;
  }
  #pragma omp parallel num_threads(nt)
  {
    int64_t t = omp_get_thread_num(), n = omp_get_num_threads(), size = it.sizes[dim];
    int64_t lo = size * t / n, hi = size * (t + 1) / n;
    if (lo < hi) {
      ln_strided sub = ln_strided_slice(&it, dim, lo, hi);
      ln_strided_run_range(&sub, 0, sub.numel, fn, ctx);
    }
  }
  return LN_OK;
}

/* ---- dims and shapes ---- */

/* red[d] for each dim of t; ndims == 0 means all. A 0-dim tensor accepts
** dim 0 or -1. */
static ln_status parse_dims(ln_tensor *t, const int *dims, int ndims, bool *red) {
  for (int d = 0; d < t->ndim; d++) red[d] = ndims == 0;
  for (int i = 0; i < ndims; i++) {
    int w;
    if (ln_wrap_dim(dims[i], t->ndim, &w) != LN_OK) return ln_last_status();
    if (t->ndim == 0) continue;
    if (red[w]) return ln_error(LN_EINVAL, "dim %d appears multiple times in the list of dims", w);
    red[w] = true;
  }
  return LN_OK;
}

/* Output sizes of a reduction, and the number of elements reduced into
** each output. */
static int out_shape(const ln_tensor *t, const bool *red, bool keepdim, int64_t *sizes,
                     int64_t *count) {
  int n = 0;
  *count = 1;
  for (int d = 0; d < t->ndim; d++) {
    if (red[d]) *count *= t->sizes[d];
    if (!red[d]) sizes[n++] = t->sizes[d];
    else if (keepdim) sizes[n++] = 1;
  }
  return n;
}

/* ---- backward ---- */

/* ints: [0, 8) input sizes, [8] ndim, [9] reduced dims (bit mask),
** [10] keepdim, [11] correction, [12] the op, [13] number of reduced
** elements per output, [14] input dtype. */
enum { OP_SUM, OP_MEAN, OP_VAR, OP_MAX, OP_MIN };

static int mask_dims(const ln_node *node, int *dims) {
  int n = 0;
  for (int d = 0; d < node->ints[8]; d++)
    if (node->ints[9] >> d & 1) dims[n++] = d;
  return n;
}

/* g with the reduced dims put back as size 1 (new reference). */
static ln_tensor *keepdim_view(const ln_node *node, ln_tensor *g) {
  ln_tensor_retain(g);
  if (node->ints[10]) return g;
  for (int d = 0; g && d < node->ints[8]; d++) {
    if (!(node->ints[9] >> d & 1)) continue;
    ln_tensor *u = ln_unsqueeze(g, d);
    ln_tensor_release(g);
    g = u;
  }
  return g;
}

/* g broadcast back to the input's shape (a view, new reference). */
static ln_tensor *expand_back(const ln_node *node, ln_tensor *g) {
  ln_tensor *k = keepdim_view(node, g);
  ln_tensor *e = k ? ln_expand(k, node->ints, (int)node->ints[8]) : NULL;
  ln_tensor_release(k);
  return e;
}

/* saved: x (var, max, min), the detached output (max, min). */
static ln_status reduce_backward(ln_node *node, ln_tensor **gout, ln_tensor **gin) {
  int op = (int)node->ints[12], dims[LN_MAX_DIMS], nd = mask_dims(node, dims);
  ln_tensor *x = NULL, *out = NULL, *ge = NULL, *t1 = NULL, *t2 = NULL, *r = NULL;
  if (op >= OP_VAR && !(x = ln_node_saved(node, 0))) return ln_last_status();
  if (op >= OP_MAX && !(out = ln_node_saved(node, 1))) return ln_last_status();
  if (!(ge = expand_back(node, gout[0]))) return ln_last_status();
  double count = (double)node->ints[13];
  switch (op) {
  case OP_SUM: ln_tensor_retain(ge); r = ge; break;
  case OP_MEAN:
    if ((t1 = ln_scalar_like(ge, count, false))) r = ln_div(ge, t1);
    break;
  case OP_VAR: {  /* g * 2 (x - mean) / (N - correction) */
    double dof = count - (double)node->ints[11];
    if ((t1 = ln_mean(x, dims, nd, true)) && (t2 = ln_sub(x, t1))) {
      ln_tensor_release(t1);
      if ((t1 = ln_scalar_like(t2, 2.0 / (dof > 0 ? dof : 0.0), false))) {
        ln_tensor *m = ln_mul(t2, t1);
        r = m ? ln_mul(ge, m) : NULL;
        ln_tensor_release(m);
      }
    }
    break;
  }
  default: {  /* max/min: split evenly between the elements equal to the result */
    ln_tensor *ok = keepdim_view(node, out), *mask = ok ? ln_compare(LN_EQ, x, ok) : NULL;
    ln_tensor_release(ok);
    if (mask && (t1 = ln_sum(mask, dims, nd, true)) && (t2 = ln_mul(ge, mask)))
      r = ln_div(t2, t1);
    ln_tensor_release(mask);
    break;
  }
  }
  ln_tensor_release(ge);
  ln_tensor_release(t1);
  ln_tensor_release(t2);
  if (r && r->dtype != (ln_dtype)node->ints[14]) {
    ln_tensor *c = ln_to_dtype(r, (ln_dtype)node->ints[14]);
    ln_tensor_release(r);
    r = c;
  }
  gin[0] = r;
  return r ? LN_OK : ln_last_status();
}

static ln_status record_reduce(int op, ln_tensor *out, ln_tensor *x, const bool *red,
                               bool all, bool keepdim, int correction, int64_t count) {
  static const char *const names[][2] = {
    [OP_SUM] = { "SumBackward1", "SumBackward0" },
    [OP_MEAN] = { "MeanBackward1", "MeanBackward0" },
    [OP_VAR] = { "VarBackward0", "VarBackward0" },
    [OP_MAX] = { "AmaxBackward0", "MaxBackward1" },
    [OP_MIN] = { "AminBackward0", "MinBackward1" },
  };
  ln_node *node = ln_record(names[op][all], reduce_backward, out, &x, 1);
  if (!node) return ln_last_status();
  memcpy(node->ints, x->sizes, sizeof(int64_t) * (size_t)x->ndim);
  node->ints[8] = x->ndim;
  node->ints[9] = 0;
  for (int d = 0; d < x->ndim; d++) node->ints[9] |= (int64_t)red[d] << d;
  node->ints[10] = keepdim || x->ndim == 0;
  node->ints[11] = correction;
  node->ints[12] = op;
  node->ints[13] = count;
  node->ints[14] = x->dtype;
  if (op >= OP_VAR) ln_node_save(node, x);
  if (op >= OP_MAX) {
    ln_tensor *o = ln_detach(out);
    if (!o) return ln_last_status();
    ln_node_save(node, o);
    ln_tensor_release(o);
  }
  return LN_OK;
}

/* ---- the ops ---- */

static const char *const op_names[] = {
  [OP_SUM] = "sum", [OP_MEAN] = "mean", [OP_VAR] = "var", [OP_MAX] = "max", [OP_MIN] = "min",
};

/* Check dtypes and emptiness; the output dtype. */
static ln_status reduce_dtype(int op, ln_tensor *t, const bool *red, bool all, int64_t count,
                              ln_dtype *out) {
  ln_dtype dt = t->dtype;
  if (op == OP_MEAN && !ln_dtype_is_float(dt))
    return ln_error(LN_EINVAL, "mean(): could not infer output dtype. Input dtype must be "
                    "either a floating point or complex dtype. Got: %s", ln_torch_type_name(dt));
  if (op == OP_VAR && !ln_dtype_is_float(dt))
    return ln_error(LN_EINVAL, "std and var only support floating point and complex dtypes");
  if ((op == OP_MAX || op == OP_MIN) && count == 0) {
    if (all)
      return ln_error(LN_EINVAL, "%s(): Expected reduction dim to be specified for "
                      "input.numel() == 0. Specify the reduction dim with the 'dim' argument.",
                      op_names[op]);
    for (int d = 0; d < t->ndim; d++)
      if (red[d] && t->sizes[d] == 0)
        return ln_error(LN_EINVAL, "%s(): Expected reduction dim %d to have non-zero size.",
                        op_names[op], d);
  }
  *out = op == OP_SUM && !ln_dtype_is_float(dt) ? LN_I64 : dt;
  return LN_OK;
}

/* out = the reduction of t over red, on the CPU. */
static ln_status reduce_cpu(int op, ln_tensor *t, const bool *red, int64_t count,
                            int correction, ln_tensor *out) {
  int64_t n = ln_tensor_numel(out);
  bool is_int = ln_kernel_dtype(t->dtype) == LN_I64;
  acc *buf = NULL, *mean = NULL;
  ln_status st = LN_OK;
  if (!(buf = malloc(sizeof(acc) * (size_t)(n ? n : 1)))) {
    st = ln_error(LN_ENOMEM, "out of memory in %s()", op_names[op]);
    goto done;
  }
  red_kind kind = op == OP_MAX ? R_MAX : op == OP_MIN ? R_MIN : R_SUM;
  if ((st = reduce_run(t, red, kind, buf, n, NULL)) != LN_OK) goto done;
  if (op == OP_MEAN || op == OP_VAR)
    for (int64_t k = 0; k < n; k++) buf[k].f /= (double)count;
  if (op == OP_VAR) {  /* second pass: squared deviations from the mean */
    mean = buf;
    if (!(buf = malloc(sizeof(acc) * (size_t)(n ? n : 1)))) {
      st = ln_error(LN_ENOMEM, "out of memory in var()");
      goto done;
    }
    if ((st = reduce_run(t, red, R_SQDEV, buf, n, mean)) != LN_OK) goto done;
    double dof = (double)count - correction;
    for (int64_t k = 0; k < n; k++) buf[k].f /= dof > 0 ? dof : 0.0;  /* NaN/inf as PyTorch */
  }
  ln_convert(ln_tensor_data(out), (int64_t)ln_dtype_size(out->dtype), out->dtype,
             (const char *)buf, sizeof(acc), is_int ? LN_I64 : LN_F64, n);
done:
  free(buf);
  free(mean);
  return st;
}

/* ---- on a device: the backend's kernels (core/device_kernels.h) ---- */

/* keep (t's shape with 1 at the reduced dims) = t reduced by kind; mean
** (SQDEV's, laid out as keep) or NULL. */
static ln_status device_reduce_into(const ln_device_kernels *k, ln_reduce_kind kind,
                                    ln_tensor *keep, ln_tensor *t, ln_tensor *mean) {
  ln_tensor *e = ln_expand(keep, t->sizes, t->ndim), *in[2] = { t, mean };
  if (!e) return ln_last_status();
  ln_ew_desc d;
  ln_ew_desc_for(&d, e, in, mean ? 2 : 1);
  ln_status st = k->reduce(kind, &d);
  ln_tensor_release(e);
  return st;
}

/* t /= v on t's device. */
static ln_status div_scalar_(ln_tensor *t, double v) {
  ln_tensor *s = ln_scalar(v, t->dtype);
  ln_status st = s ? ln_binary_(LN_DIV, t, s) : ln_last_status();
  ln_tensor_release(s);
  return st;
}

/* out = the reduction of t on its device; ksizes is t's shape with 1 at
** the reduced dims. sum, max and min write out directly; mean and var
** reduce into the compute dtype (float32 or float64), divide there and
** convert to out: mean = sum / count, var two-pass (the mean, then the
** squared deviations from it) as on the CPU. */
static ln_status reduce_device(int op, ln_tensor *t, const int64_t *ksizes, int64_t count,
                               int correction, ln_tensor *out) {
  ln_device dev = ln_tensor_device(t);
  const ln_device_kernels *k = ln_device_kernels_get(dev);
  if (!k || !k->reduce) return ln_cpu_only(op_names[op], dev);
  if (ln_tensor_numel(out) == 0) return LN_OK;
  if (count == 0) return ln_fill_(out, op == OP_SUM ? 0.0 : NAN);  /* 0 / 0 as the CPU */
  ln_tensor *keep = ln_view(out, ksizes, t->ndim), *acc = NULL, *mean = NULL;
  if (!keep) return ln_last_status();
  ln_status st = LN_OK;
  if (op == OP_SUM || op == OP_MAX || op == OP_MIN) {
    ln_reduce_kind kind = op == OP_MAX ? LN_RK_MAX : op == OP_MIN ? LN_RK_MIN
                                                                       : LN_RK_SUM;
    st = device_reduce_into(k, kind, keep, t, NULL);
    ln_tensor_release(keep);
    return st;
  }
  ln_dtype ct = ln_kernel_dtype(t->dtype);
  acc = ct == out->dtype ? keep : ln_empty(ksizes, t->ndim, ct, dev);
  mean = op == OP_VAR ? ln_empty(ksizes, t->ndim, ct, dev) : NULL;
  if (!acc || (op == OP_VAR && !mean)) {
    st = ln_last_status();
    goto done;
  }
  ln_tensor *m = mean ? mean : acc;  /* var's first pass, or mean's result */
  st = device_reduce_into(k, LN_RK_SUM, m, t, NULL);
  if (st == LN_OK) st = div_scalar_(m, (double)count);
  if (st == LN_OK && op == OP_VAR) {
    double dof = (double)count - correction;
    st = device_reduce_into(k, LN_RK_SQDEV, acc, t, mean);
    if (st == LN_OK) st = div_scalar_(acc, dof > 0 ? dof : 0.0);  /* NaN/inf as PyTorch */
  }
  if (st == LN_OK && acc != keep) st = ln_copy_(keep, acc);
done:
  if (acc != keep) ln_tensor_release(acc);
  ln_tensor_release(keep);
  ln_tensor_release(mean);
  return st;
}

static ln_tensor *reduce(int op, ln_tensor *t, const int *dims, int ndims, bool keepdim,
                         int correction) {
  bool red[LN_MAX_DIMS];
  int64_t sizes[LN_MAX_DIMS], ksizes[LN_MAX_DIMS], count;
  ln_dtype odt = LN_F32;
  if (ndims < 0 || ndims > LN_MAX_DIMS) {
    ln_error(LN_EINVAL, "%s(): too many dims (%d)", op_names[op], ndims);
    return NULL;
  }
  if (parse_dims(t, dims, ndims, red) != LN_OK) return NULL;
  int ond = out_shape(t, red, keepdim, sizes, &count);
  if (reduce_dtype(op, t, red, ndims == 0, count, &odt) != LN_OK) return NULL;
  ln_tensor *out = ln_empty(sizes, ond, odt, ln_tensor_device(t));
  if (!out) return NULL;
  for (int d = 0; d < t->ndim; d++) ksizes[d] = red[d] ? 1 : t->sizes[d];
  ln_status st = ln_tensor_device(t).type == LN_CPU
                   ? reduce_cpu(op, t, red, count, correction, out)
                   : reduce_device(op, t, ksizes, count, correction, out);
  if (st != LN_OK ||
      (ln_dtype_is_float(odt) && ln_any_requires_grad(&t, 1) &&
       record_reduce(op, out, t, red, ndims == 0, keepdim, correction, count) != LN_OK)) {
    ln_tensor_release(out);
    return NULL;
  }
  return out;
}

ln_tensor *ln_sum(ln_tensor *t, const int *dims, int ndims, bool keepdim) {
  return reduce(OP_SUM, t, dims, ndims, keepdim, 0);
}

ln_tensor *ln_mean(ln_tensor *t, const int *dims, int ndims, bool keepdim) {
  return reduce(OP_MEAN, t, dims, ndims, keepdim, 0);
}

ln_tensor *ln_var(ln_tensor *t, const int *dims, int ndims, int correction, bool keepdim) {
  return reduce(OP_VAR, t, dims, ndims, keepdim, correction);
}

ln_tensor *ln_max(ln_tensor *t, const int *dims, int ndims, bool keepdim) {
  return reduce(OP_MAX, t, dims, ndims, keepdim, 0);
}

ln_tensor *ln_min(ln_tensor *t, const int *dims, int ndims, bool keepdim) {
  return reduce(OP_MIN, t, dims, ndims, keepdim, 0);
}

/* ---- argmax ---- */

typedef struct argmax_ctx { int64_t len, stride; ln_dtype dtype; } argmax_ctx;

/* Operand 0: the int64 index, 1: the first element of the reduced line.
** The first maximum wins; NaN counts as the maximum. Elements are read as
** double (exact except for int64 beyond 2^53). */
static void argmax_loop(char **d, const int64_t *s, int64_t n, void *vctx) {
  const argmax_ctx *c = vctx;
  for (int64_t i = 0; i < n; i++) {
    const char *p = d[1] + i * s[1];
    double best = ln_load_double(p, c->dtype);
    int64_t arg = 0;
    for (int64_t j = 1; j < c->len && best == best; j++) {
      double v = ln_load_double(p + j * c->stride, c->dtype);
      if (v > best || v != v) { best = v; arg = j; }
    }
    *(int64_t *)(d[0] + i * s[0]) = arg;
  }
}

/* out (t's shape with 1 at the reduced dim, of size len) = argmax of t on
** its device. */
static ln_status argmax_device(ln_tensor *t, ln_tensor *out, int64_t len) {
  ln_device dev = ln_tensor_device(t);
  const ln_device_kernels *k = ln_device_kernels_get(dev);
  if (!k || !k->argmax) return ln_cpu_only("argmax", dev);
  if (len == 1 || ln_tensor_numel(out) == 0) return ln_zero_(out);
  ln_tensor *e = ln_expand(out, t->sizes, t->ndim);
  if (!e) return ln_last_status();
  ln_ew_desc d;
  ln_ew_desc_for(&d, e, &t, 1);
  int red = 0;  /* the reduced dim, where out has stride 0 (kept: its size is len > 1) */
  while (red < d.ndim && d.ops[0].strides[red] != 0) red++;
  ln_status st = k->argmax(red, &d);
  ln_tensor_release(e);
  return st;
}

ln_tensor *ln_argmax(ln_tensor *t, int dim, bool keepdim) {
  int w;
  if (ln_wrap_dim(dim, t->ndim, &w) != LN_OK) return NULL;
  int64_t sizes[LN_MAX_DIMS];
  memcpy(sizes, t->sizes, sizeof(int64_t) * (size_t)t->ndim);
  argmax_ctx c = { 1, 0, t->dtype };
  if (t->ndim > 0) {
    c.len = t->sizes[w];
    c.stride = t->strides[w] * (int64_t)ln_dtype_size(t->dtype);
    sizes[w] = 1;
  }
  if (c.len == 0) {
    ln_error(LN_EINVAL, "argmax(): Expected reduction dim %d to have non-zero size.", w);
    return NULL;
  }
  ln_tensor *out = ln_empty(sizes, t->ndim, LN_I64, ln_tensor_device(t));
  if (!out) return NULL;
  if (ln_tensor_device(t).type != LN_CPU) {
    if (argmax_device(t, out, c.len) != LN_OK) {
      ln_tensor_release(out);
      return NULL;
    }
  } else {
    ln_strided it;
    ln_strided_init(&it, sizes, t->ndim);
    ln_strided_add(&it, ln_tensor_data(out), out->strides, sizeof(int64_t));
    ln_strided_add(&it, ln_tensor_data(t), t->strides, ln_dtype_size(t->dtype));
    ln_strided_prepare(&it, 1);
    ln_strided_run(&it, argmax_loop, &c);
  }
  if (keepdim || t->ndim == 0) return out;
  ln_tensor *v = ln_squeeze(out, w);
  ln_tensor_release(out);
  return v;
}
