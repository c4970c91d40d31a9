/*
** ops_common.c -- rules every generic op shares: result dtypes, devices,
** broadcasting, output memory formats, dtype conversion loops, the
** elementwise driver and autograd recording helpers.
*/
#include <stdio.h>
#include <string.h>

#include "device_kernels.h"
#include "ops_impl.h"

const char *ln_torch_type_name(ln_dtype t) {
  static const char *const names[LN_DTYPE_COUNT] = {
    [LN_F32] = "Float", [LN_F64] = "Double", [LN_F16] = "Half",
    [LN_BF16] = "BFloat16", [LN_I64] = "Long", [LN_BOOL] = "Bool",
  };
  return names[t];
}

/* ---- result dtype ---- */

static int category(ln_dtype t) {
  return t == LN_BOOL ? 0 : (t == LN_I64 ? 1 : 2);
}

/* PyTorch's combine_categories: `higher` (from tensors with dims) wins
** unless `lower` (from 0-dim tensors) is of a higher category. */
static ln_dtype combine(bool have_higher, ln_dtype higher, ln_dtype lower) {
  if (!have_higher) return lower;
  if (category(higher) == 2) return higher;
  if (higher == LN_BOOL || category(lower) == 2) return ln_dtype_promote(higher, lower);
  return higher;
}

ln_dtype ln_result_type(ln_tensor *const *ts, int n) {
  bool have_dim = false, have_zero = false;
  ln_dtype dim_t = LN_BOOL, zero_t = LN_BOOL;
  for (int i = 0; i < n; i++) {
    ln_dtype t = ts[i]->dtype;
    if (ts[i]->ndim > 0) {
      dim_t = have_dim ? ln_dtype_promote(dim_t, t) : t;
      have_dim = true;
    } else {
      zero_t = have_zero ? ln_dtype_promote(zero_t, t) : t;
      have_zero = true;
    }
  }
  if (!have_zero) return dim_t;
  return combine(have_dim, dim_t, zero_t);
}

/* ---- conversion ---- */

#define LN_CONVERT_BLOCK 256

/* Load n elements of dtype st into doubles. */
static void load_block(double *v, const char *src, int64_t stride, ln_dtype st, int64_t n) {
  switch (st) {
  case LN_F32: for (int64_t i = 0; i < n; i++) v[i] = *(const float *)(src + i * stride); break;
  case LN_F64: for (int64_t i = 0; i < n; i++) v[i] = *(const double *)(src + i * stride); break;
  case LN_F16:
    for (int64_t i = 0; i < n; i++) v[i] = ln_half_to_float(*(const uint16_t *)(src + i * stride));
    break;
  case LN_BF16:
    for (int64_t i = 0; i < n; i++) v[i] = ln_bf16_to_float(*(const uint16_t *)(src + i * stride));
    break;
  case LN_I64: for (int64_t i = 0; i < n; i++) v[i] = (double)*(const int64_t *)(src + i * stride); break;
  case LN_BOOL: for (int64_t i = 0; i < n; i++) v[i] = *(const uint8_t *)(src + i * stride) != 0; break;
  default: break;
  }
}

/* Store n doubles as dtype dt (float16/bfloat16 through float, as PyTorch
** rounds a double; int64 by ln_double_to_i64: NaN becomes 0 and out-of-range
** values saturate). */
static void store_block(char *dst, int64_t stride, ln_dtype dt, const double *v, int64_t n) {
  switch (dt) {
  case LN_F32: for (int64_t i = 0; i < n; i++) *(float *)(dst + i * stride) = (float)v[i]; break;
  case LN_F64: for (int64_t i = 0; i < n; i++) *(double *)(dst + i * stride) = v[i]; break;
  case LN_F16:
    for (int64_t i = 0; i < n; i++) *(uint16_t *)(dst + i * stride) = ln_float_to_half((float)v[i]);
    break;
  case LN_BF16:
    for (int64_t i = 0; i < n; i++) *(uint16_t *)(dst + i * stride) = ln_float_to_bf16((float)v[i]);
    break;
  case LN_I64:
    for (int64_t i = 0; i < n; i++) *(int64_t *)(dst + i * stride) = ln_double_to_i64(v[i]);
    break;
  case LN_BOOL: for (int64_t i = 0; i < n; i++) *(uint8_t *)(dst + i * stride) = v[i] != 0.0; break;
  default: break;
  }
}

/* Same-dtype strided copy, by element size. */
static void copy_elems(char *dst, int64_t ds, const char *src, int64_t ss, size_t es, int64_t n) {
  if (ds == (int64_t)es && ss == (int64_t)es) { memcpy(dst, src, (size_t)n * es); return; }
  switch (es) {
  case 1: for (int64_t i = 0; i < n; i++) dst[i * ds] = src[i * ss]; break;
  case 2: for (int64_t i = 0; i < n; i++) *(uint16_t *)(dst + i * ds) = *(const uint16_t *)(src + i * ss); break;
  case 4: for (int64_t i = 0; i < n; i++) *(uint32_t *)(dst + i * ds) = *(const uint32_t *)(src + i * ss); break;
  default: for (int64_t i = 0; i < n; i++) *(uint64_t *)(dst + i * ds) = *(const uint64_t *)(src + i * ss); break;
  }
}

void ln_convert(char *dst, int64_t dst_stride, ln_dtype dt, const char *src,
                int64_t src_stride, ln_dtype st, int64_t n) {
  if (dt == st) { copy_elems(dst, dst_stride, src, src_stride, ln_dtype_size(dt), n); return; }
  if (dt == LN_I64 && st == LN_BOOL) {  /* exact for any int64: no double */
    for (int64_t i = 0; i < n; i++)
      *(int64_t *)(dst + i * dst_stride) = *(const uint8_t *)(src + i * src_stride) != 0;
    return;
  }
  if (dt == LN_BOOL && st == LN_I64) {
    for (int64_t i = 0; i < n; i++)
      *(uint8_t *)(dst + i * dst_stride) = *(const int64_t *)(src + i * src_stride) != 0;
    return;
  }
  /* the float pairs kernels convert all the time, without a double block */
#define CONVERT_LOOP(DT, ST, EXPR) \
  for (int64_t i = 0; i < n; i++) { \
    ST x = *(const ST *)(src + i * src_stride); \
    *(DT *)(dst + i * dst_stride) = (EXPR); \
  } \
  return
  if (dt == LN_F32 && st == LN_F16) { CONVERT_LOOP(float, uint16_t, ln_half_to_float(x)); }
  if (dt == LN_F32 && st == LN_BF16) { CONVERT_LOOP(float, uint16_t, ln_bf16_to_float(x)); }
  if (dt == LN_F16 && st == LN_F32) { CONVERT_LOOP(uint16_t, float, ln_float_to_half(x)); }
  if (dt == LN_BF16 && st == LN_F32) { CONVERT_LOOP(uint16_t, float, ln_float_to_bf16(x)); }
  if (dt == LN_F32 && st == LN_F64) { CONVERT_LOOP(float, double, (float)x); }
  if (dt == LN_F64 && st == LN_F32) { CONVERT_LOOP(double, float, (double)x); }
#undef CONVERT_LOOP
  double v[LN_CONVERT_BLOCK];
  for (int64_t i = 0; i < n; i += LN_CONVERT_BLOCK) {
    int64_t m = n - i < LN_CONVERT_BLOCK ? n - i : LN_CONVERT_BLOCK;
    load_block(v, src + i * src_stride, src_stride, st, m);
    store_block(dst + i * dst_stride, dst_stride, dt, v, m);
  }
}

void ln_cast_loop(char **data, const int64_t *strides, int64_t n, void *vctx) {
  const ln_cast_ctx *c = vctx;
  _Alignas(64) char buf[LN_STRIDED_MAX_OPS][LN_CONVERT_BLOCK * 8];
  char *d[LN_STRIDED_MAX_OPS];
  int64_t s[LN_STRIDED_MAX_OPS];
  for (int64_t i = 0; i < n; i += LN_CONVERT_BLOCK) {
    int64_t m = n - i < LN_CONVERT_BLOCK ? n - i : LN_CONVERT_BLOCK;
    for (int op = 0; op < c->nops; op++) {
      char *p = data[op] + i * strides[op];
      if (c->have[op] == c->want[op]) {
        d[op] = p;
        s[op] = strides[op];
        continue;
      }
      d[op] = buf[op];
      if (op < c->n_out) {  /* written by the kernel, converted back below */
        s[op] = (int64_t)ln_dtype_size(c->want[op]);
        continue;
      }
      /* a broadcast input is converted once and stays broadcast */
      bool bcast = strides[op] == 0;
      s[op] = bcast ? 0 : (int64_t)ln_dtype_size(c->want[op]);
      ln_convert(buf[op], s[op], c->want[op], p, strides[op], c->have[op], bcast ? 1 : m);
    }
    c->kernel(d, s, m, c->ctx);
    for (int op = 0; op < c->n_out; op++)
      if (c->have[op] != c->want[op])
        ln_convert(data[op] + i * strides[op], strides[op], c->have[op], buf[op], s[op],
                   c->want[op], m);
  }
}

/* ---- devices ---- */

ln_status ln_common_device(ln_tensor *const *ts, int n, ln_device *dev) {
  int first = -1;
  for (int i = 0; i < n; i++) {
    ln_device d = ln_tensor_device(ts[i]);
    if (first < 0) { first = i; continue; }
    ln_device f = ln_tensor_device(ts[first]);
    if (ln_device_eq(d, f)) continue;
    /* a 0-dim CPU tensor goes with any device, like a Python number */
    if (d.type == LN_CPU && ts[i]->ndim == 0) continue;
    if (f.type == LN_CPU && ts[first]->ndim == 0) { first = i; continue; }
    char b1[32], b2[32];
    return ln_error(LN_EINVAL, "Expected all tensors to be on the same device, but found "
                    "at least two devices, %s and %s!", ln_device_str(f, b1, sizeof b1),
                    ln_device_str(d, b2, sizeof b2));
  }
  *dev = first >= 0 ? ln_tensor_device(ts[first]) : LN_DEVICE_CPU;
  return LN_OK;
}

ln_status ln_cpu_only(const char *op, ln_device dev) {
  if (dev.type == LN_CPU) return LN_OK;
  const ln_backend *b = ln_backend_get(dev.type);
  return ln_error(LN_ERUNTIME, "%s is not implemented for %s tensors yet", op,
                  b ? b->name : "non-cpu");
}

/* ---- shapes ---- */

ln_status ln_broadcast_shape(ln_tensor *const *ts, int n, int64_t *sizes, int *ndim) {
  int nd = 0;
  for (int i = 0; i < n; i++) if (ts[i]->ndim > nd) nd = ts[i]->ndim;
  for (int d = 0; d < nd; d++) sizes[d] = 1;
  for (int i = 0; i < n; i++) {
    const ln_tensor *t = ts[i];
    for (int k = 0; k < t->ndim; k++) {
      int d = nd - t->ndim + k;
      int64_t s = t->sizes[k];
      if (s == sizes[d] || s == 1) continue;
      if (sizes[d] != 1) {
        int64_t prev = sizes[d];
        return ln_error(LN_EINVAL, "The size of tensor a (%lld) must match the size of "
                        "tensor b (%lld) at non-singleton dimension %d", (long long)prev,
                        (long long)s, d);
      }
      sizes[d] = s;
    }
  }
  *ndim = nd;
  return LN_OK;
}

void ln_broadcast_strides(const ln_tensor *t, const int64_t *sizes, int ndim,
                          int64_t *strides) {
  for (int d = 0; d < ndim; d++) {
    int k = d - (ndim - t->ndim);
    strides[d] = (k >= 0 && t->sizes[k] == sizes[d]) ? t->strides[k] : 0;
  }
}

ln_memory_format ln_elementwise_format(const int64_t *sizes, int ndim,
                                       ln_tensor *const *ts, int n) {
  if (ndim != 4 && ndim != 5) return LN_CONTIGUOUS;
  bool any = false;
  for (int i = 0; i < n; i++) {
    if (ts[i]->ndim != ndim || memcmp(ts[i]->sizes, sizes, sizeof(int64_t) * ndim)) continue;
    if (!ln_tensor_is_contiguous(ts[i], LN_CHANNELS_LAST)) return LN_CONTIGUOUS;
    if (ln_tensor_suggest_format(ts[i]) == LN_CHANNELS_LAST) any = true;
  }
  return any ? LN_CHANNELS_LAST : LN_CONTIGUOUS;
}

void ln_shape_str(const int64_t *sizes, int ndim, char *buf, size_t n) {
  size_t len = (size_t)snprintf(buf, n, "[");
  for (int d = 0; d < ndim && len < n; d++)
    len += (size_t)snprintf(buf + len, n - len, d ? ", %lld" : "%lld", (long long)sizes[d]);
  if (len < n) snprintf(buf + len, n - len, "]");
}

ln_status ln_check_no_internal_overlap(const ln_tensor *t) {
  for (int d = 0; d < t->ndim; d++)
    if (t->strides[d] == 0 && t->sizes[d] > 1)
      return ln_error(LN_EINVAL, "unsupported operation: more than one element of the "
                      "written-to tensor refers to a single memory location. Please clone() "
                      "the tensor before performing the operation.");
  return LN_OK;
}

bool ln_tensors_share_storage(const ln_tensor *a, const ln_tensor *b) {
  return ln_storage_data(a->storage) == ln_storage_data(b->storage);
}

/* ---- the elementwise driver ---- */

/* An iteration over out and in broadcast to its shape, strides scaled by
** each operand's element size (bytes) or left in elements (elem_bytes
** false), prepared with out as the primary operand. */
static void ew_iteration(ln_strided *it, ln_tensor *out, ln_tensor *const *in, int nin,
                         bool elem_bytes) {
  int64_t st[LN_MAX_DIMS];
  ln_strided_init(it, out->sizes, out->ndim);
  ln_strided_add(it, ln_tensor_data(out), out->strides,
                 elem_bytes ? ln_dtype_size(out->dtype) : 1);
  for (int i = 0; i < nin; i++) {
    ln_broadcast_strides(in[i], out->sizes, out->ndim, st);
    ln_strided_add(it, ln_tensor_data(in[i]), st, elem_bytes ? ln_dtype_size(in[i]->dtype) : 1);
  }
  ln_strided_prepare(it, 0);
}

void ln_elementwise_run(ln_tensor *out, ln_tensor *const *in, int nin,
                        const ln_dtype *want, ln_loop_fn kernel, void *ctx) {
  ln_strided it;
  ln_cast_ctx cast = { .kernel = kernel, .ctx = ctx, .nops = nin + 1, .n_out = 1 };
  bool convert = false;
  cast.have[0] = out->dtype;
  cast.want[0] = want[0];
  for (int i = 0; i < nin; i++) {
    cast.have[i + 1] = in[i]->dtype;
    cast.want[i + 1] = want[i + 1];
  }
  for (int op = 0; op <= nin; op++) convert |= cast.have[op] != cast.want[op];
  ew_iteration(&it, out, in, nin, true);
  if (convert) ln_strided_run(&it, ln_cast_loop, &cast);
  else ln_strided_run(&it, kernel, ctx);
}

/* ---- device kernels ---- */

void ln_ew_desc_for(ln_ew_desc *d, ln_tensor *out, ln_tensor *const *in, int nin) {
  ln_strided it;
  ew_iteration(&it, out, in, nin, false);
  memset(d, 0, sizeof *d);
  d->device = ln_tensor_device(out).index;
  d->ndim = it.ndim;
  d->nops = it.nops;
  d->numel = it.numel;
  for (int op = 0; op < it.nops; op++) {
    d->ops[op].data = it.data[op];
    d->ops[op].dtype = op == 0 ? out->dtype : in[op - 1]->dtype;
  }
  for (int k = 0; k < it.ndim; k++) {  /* ln_strided is innermost first */
    int dim = it.ndim - 1 - k;
    d->sizes[dim] = it.sizes[k];
    for (int op = 0; op < it.nops; op++) d->ops[op].strides[dim] = it.strides[k][op];
  }
}

static bool has_entry(const ln_device_kernels *k, ln_ew_family f) {
  if (!k) return false;
  switch (f) {
  case LN_EW_UNARY: return k->unary != NULL;
  case LN_EW_BINARY: return k->binary != NULL;
  case LN_EW_COMPARE: return k->compare != NULL;
  case LN_EW_GRAD_SELECT: return k->grad_select != NULL;
  case LN_EW_CONVERT: return k->convert != NULL;
  }
  return false;
}

ln_status ln_device_elementwise(const char *name, const ln_ew_call *call, ln_tensor *out,
                                ln_tensor *const *in, int nin) {
  ln_device dev = ln_tensor_device(out);
  const ln_device_kernels *k = ln_device_kernels_get(dev);
  ln_tensor *use[LN_EW_MAX_OPS] = { NULL }, *moved[LN_EW_MAX_OPS] = { NULL };
  ln_ew_desc d;
  ln_status st = LN_OK;
  if (dev.type == LN_CPU)
    return ln_error(LN_ERUNTIME, "%s: cpu tensors have no device kernels", name);
  if (!has_entry(k, call->family)) return ln_cpu_only(name, dev);
  /* An operand on another device is a 0-dim CPU tensor (ln_common_device
  ** allows no other): it goes over as the argument of a fill kernel, bits
  ** unchanged. A copy from pageable host memory would wait for the
  ** device's stream, making every `x * 2` a synchronization. */
  for (int i = 0; i < nin; i++) {
    use[i] = in[i];
    if (ln_device_eq(ln_tensor_device(in[i]), dev)) continue;
    moved[i] = ln_empty(in[i]->sizes, in[i]->ndim, in[i]->dtype, dev);
    if (!moved[i]) { st = ln_last_status(); goto fail; }
    st = in[i]->ndim == 0
           ? ln_backend_get(dev.type)->fill(dev.index, ln_tensor_data(moved[i]), 1,
                                            ln_dtype_size(in[i]->dtype), ln_tensor_data(in[i]))
           : ln_copy_(moved[i], in[i]);
    if (st != LN_OK) goto fail;
    use[i] = moved[i];
  }
  ln_ew_desc_for(&d, out, use, nin);
  if (d.numel == 0) goto fail;
  switch (call->family) {
  case LN_EW_UNARY: st = k->unary((ln_unary_op)call->op, call->compute, &d); break;
  case LN_EW_BINARY: st = k->binary(call->op, call->alpha, call->compute, &d); break;
  case LN_EW_COMPARE: st = k->compare((ln_compare_op)call->op, call->compute, &d); break;
  case LN_EW_GRAD_SELECT:
    st = k->grad_select((ln_grad_select)call->op, call->compute, &d);
    break;
  case LN_EW_CONVERT: st = k->convert(&d); break;
  }
fail:
  for (int i = 0; i < nin; i++) ln_tensor_release(moved[i]);
  return st;
}

/* ---- autograd helpers ---- */

ln_status ln_check_inplace(const ln_tensor *t) {
  if (ln_grad_enabled() && t->requires_grad && t->grad_fn == NULL)
    return ln_error(LN_ERUNTIME, "a leaf Variable that requires grad is being used in an "
                    "in-place operation.");
  return LN_OK;
}

ln_node *ln_record(const char *name, ln_backward_fn fn, ln_tensor *out,
                   ln_tensor *const *inputs, int n) {
  ln_node *node = ln_node_new(name, fn, inputs, n, 1);
  if (!node) return NULL;
  ln_set_history(out, node, 0);  /* out holds the node now */
  ln_node_release(node);
  return node;
}

ln_tensor *ln_grad_fit(ln_tensor *g, const int64_t *sizes, int ndim, ln_dtype dtype) {
  ln_tensor *s = ln_sum_to_size(g, sizes, ndim);
  if (!s || s->dtype == dtype) return s;
  ln_tensor *c = ln_to_dtype(s, dtype);
  ln_tensor_release(s);
  return c;
}
