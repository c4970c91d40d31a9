/*
** copy.c -- copies and conversions: copy_, fill_, zero_, clone,
** contiguous, to(dtype), to(device).
**
** On the CPU a copy is one strided iteration that converts dtypes on the
** fly; on another device it is the backend's convert kernel (or a plain
** copy of bytes). Between devices data moves through the backend's copy
** between dense (contiguous or channels-last) buffers, staged on one side
** when a conversion, a broadcast or a layout change is needed.
*/
#include <string.h>

#include "ops_impl.h"

/* ---- CPU copies ---- */

typedef struct copy_ctx { ln_dtype dst, src; } copy_ctx;

static void copy_loop(char **d, const int64_t *s, int64_t n, void *ctx) {
  const copy_ctx *c = ctx;
  ln_convert(d[0], s[0], c->dst, d[1], s[1], c->src, n);
}

/* Can src be broadcast to dst's shape? (PyTorch's expand rules.) */
static ln_status check_copy_shape(const ln_tensor *dst, const ln_tensor *src) {
  int lead = src->ndim - dst->ndim;
  char a[128], b[128];
  for (int k = 0; k < src->ndim; k++) {
    int d = k - lead;
    int64_t want = d >= 0 ? dst->sizes[d] : 1;
    if (src->sizes[k] == want || src->sizes[k] == 1) continue;
    ln_shape_str(dst->sizes, dst->ndim, a, sizeof a);
    ln_shape_str(src->sizes, src->ndim, b, sizeof b);
    return ln_error(LN_EINVAL, "The expanded size of the tensor (%lld) must match the "
                    "existing size (%lld) at non-singleton dimension %d.  Target sizes: "
                    "%s.  Tensor sizes: %s", (long long)want, (long long)src->sizes[k],
                    d >= 0 ? d : k, a, b);
  }
  return LN_OK;
}

static bool same_geometry(const ln_tensor *a, const ln_tensor *b) {
  return a->storage == b->storage && a->offset == b->offset && a->ndim == b->ndim &&
         !memcmp(a->sizes, b->sizes, sizeof(int64_t) * (size_t)a->ndim) &&
         !memcmp(a->strides, b->strides, sizeof(int64_t) * (size_t)a->ndim);
}

ln_status ln_copy_cpu(ln_tensor *dst, ln_tensor *src) {
  ln_status st = check_copy_shape(dst, src);
  if (st != LN_OK) return st;
  if (same_geometry(dst, src) && dst->dtype == src->dtype) return LN_OK;
  ln_tensor *tmp = NULL;
  if (ln_tensors_share_storage(dst, src)) {  /* read everything before writing */
    if (!(tmp = ln_empty_like(src, LN_CONTIGUOUS))) return ln_last_status();
    if ((st = ln_copy_cpu(tmp, src)) != LN_OK) goto fail;
    src = tmp;
  }
  copy_ctx c = { dst->dtype, src->dtype };
  ln_dtype want[2] = { dst->dtype, src->dtype };
  ln_elementwise_run(dst, &src, 1, want, copy_loop, &c);
fail:
  ln_tensor_release(tmp);
  return st;
}

/* ---- copies on and between devices ---- */

/* Is t one dense block, and in which format? */
static bool dense_format(const ln_tensor *t, ln_memory_format *fmt) {
  if (ln_tensor_is_contiguous(t, LN_CONTIGUOUS)) *fmt = LN_CONTIGUOUS;
  else if ((t->ndim == 4 || t->ndim == 5) && ln_tensor_is_contiguous(t, LN_CHANNELS_LAST))
    *fmt = LN_CHANNELS_LAST;
  else return false;
  return true;
}

/* Bytes of src into dst: same sizes, dtype and dense layout. */
static ln_status raw_copy(ln_tensor *dst, ln_tensor *src) {
  ln_device dd = ln_tensor_device(dst), sd = ln_tensor_device(src);
  size_t nbytes = (size_t)ln_tensor_numel(dst) * ln_dtype_size(dst->dtype);
  if (nbytes == 0) return LN_OK;
  const ln_backend *b = ln_backend_get(dd.type != LN_CPU ? dd.type : sd.type);
  if (!b) return ln_error(LN_EDEVICE, "no backend for this device");
  return b->copy(ln_tensor_data(dst), dd, ln_tensor_data(src), sd, nbytes);
}

static bool same_dense_layout(const ln_tensor *a, const ln_tensor *b) {
  if (!ln_tensor_same_shape(a, b)) return false;
  return (ln_tensor_is_contiguous(a, LN_CONTIGUOUS) && ln_tensor_is_contiguous(b, LN_CONTIGUOUS)) ||
         (ln_tensor_is_contiguous(a, LN_CHANNELS_LAST) &&
          ln_tensor_is_contiguous(b, LN_CHANNELS_LAST));
}

static const ln_ew_call convert = { LN_EW_CONVERT, 0, 0.0, LN_F32 };

/* dst = src on one non-CPU device, by its convert kernel (any strides,
** dtypes and broadcast); through a dense copy of src when they overlap. */
static ln_status copy_on_device(ln_tensor *dst, ln_tensor *src) {
  if (same_geometry(dst, src) && dst->dtype == src->dtype) return LN_OK;
  if (!ln_tensors_share_storage(dst, src)) {
    if (dst->dtype == src->dtype && same_dense_layout(dst, src)) return raw_copy(dst, src);
    return ln_device_elementwise("copy_", &convert, dst, &src, 1);
  }
  ln_tensor *tmp = ln_empty_like(src, LN_CONTIGUOUS);  /* read everything first */
  if (!tmp) return ln_last_status();
  ln_status st = ln_device_elementwise("copy_", &convert, tmp, &src, 1);
  if (st == LN_OK) st = ln_device_elementwise("copy_", &convert, dst, &tmp, 1);
  ln_tensor_release(tmp);
  return st;
}

/* dst = src on one device (shapes already checked). */
static ln_status copy_same_device(ln_tensor *dst, ln_tensor *src) {
  if (ln_tensor_device(dst).type == LN_CPU) return ln_copy_cpu(dst, src);
  return copy_on_device(dst, src);
}

/* A copy between devices, with one transfer of bytes between dense
** buffers: into a dense dst from a src as large, src is first laid out as
** dst (dtype, layout) on its own device; otherwise a dense src (itself, or
** a contiguous copy) is moved to dst's device and copied into dst there
** (converted, broadcast). */
static ln_status copy_across(ln_tensor *dst, ln_tensor *src) {
  ln_tensor *stage = NULL, *moved = NULL;
  ln_memory_format fmt;
  ln_status st;
  if (dst->dtype == src->dtype && same_dense_layout(dst, src)) return raw_copy(dst, src);
  if (ln_tensor_numel(src) == ln_tensor_numel(dst) && dense_format(dst, &fmt)) {
    stage = ln_empty_format(dst->sizes, dst->ndim, dst->dtype, ln_tensor_device(src), fmt);
    if (!stage) return ln_last_status();
    if ((st = copy_same_device(stage, src)) == LN_OK) st = raw_copy(dst, stage);
    goto done;
  }
  if (dense_format(src, &fmt)) {
    ln_tensor_retain(src);
    stage = src;
  } else {
    fmt = LN_CONTIGUOUS;
    stage = ln_empty_format(src->sizes, src->ndim, src->dtype, ln_tensor_device(src), fmt);
    if (!stage) return ln_last_status();
    if ((st = copy_same_device(stage, src)) != LN_OK) goto done;
  }
  moved = ln_empty_format(src->sizes, src->ndim, src->dtype, ln_tensor_device(dst), fmt);
  if (!moved) { st = ln_last_status(); goto done; }
  if ((st = raw_copy(moved, stage)) == LN_OK) st = copy_same_device(dst, moved);
done:
  ln_tensor_release(stage);
  ln_tensor_release(moved);
  return st;
}

/* dst = src on any devices, no autograd. */
static ln_status copy_any(ln_tensor *dst, ln_tensor *src) {
  ln_status st = check_copy_shape(dst, src);
  if (st != LN_OK) return st;
  if (ln_device_eq(ln_tensor_device(dst), ln_tensor_device(src)))
    return copy_same_device(dst, src);
  return copy_across(dst, src);
}

/* Limitation: copy_ records no history; a leaf that requires grad is
** refused, and copying into a non-leaf (or from a tensor that requires
** grad) is invisible to autograd. */
ln_status ln_copy_(ln_tensor *dst, ln_tensor *src) {
  ln_status st = ln_check_inplace(dst);
  if (st == LN_OK) st = ln_check_no_internal_overlap(dst);
  if (st == LN_OK) st = copy_any(dst, src);
  return st;
}

/* ---- fill ---- */

typedef struct fill_ctx { unsigned char elem[8]; size_t size; } fill_ctx;

#define FILL_LOOP(T) do { \
    T v_; memcpy(&v_, c->elem, sizeof v_); \
    if (s[0] == (int64_t)sizeof(T)) for (int64_t i = 0; i < n; i++) ((T *)d[0])[i] = v_; \
    else for (int64_t i = 0; i < n; i++) *(T *)(d[0] + i * s[0]) = v_; \
  } while (0)

static void fill_loop(char **d, const int64_t *s, int64_t n, void *ctx) {
  const fill_ctx *c = ctx;
  switch (c->size) {
  case 1: FILL_LOOP(uint8_t); break;
  case 2: FILL_LOOP(uint16_t); break;
  case 4: FILL_LOOP(uint32_t); break;
  default: FILL_LOOP(uint64_t); break;
  }
}

/* A device tensor: one backend fill when it is dense, else the convert
** kernel broadcasting a 0-dim CPU tensor of the value (which the device
** dispatcher sends over as a fill kernel's argument). */
static ln_status fill_device(ln_tensor *t, const fill_ctx *c) {
  ln_device dev = ln_tensor_device(t);
  ln_memory_format fmt;
  if (dense_format(t, &fmt)) {
    const ln_backend *b = ln_backend_get(dev.type);
    if (!b) return ln_error(LN_EDEVICE, "no backend for this device");
    return b->fill(dev.index, ln_tensor_data(t), (size_t)ln_tensor_numel(t), c->size, c->elem);
  }
  ln_tensor *v = ln_empty(NULL, 0, t->dtype, LN_DEVICE_CPU);
  if (!v) return ln_last_status();
  memcpy(ln_tensor_data(v), c->elem, c->size);
  ln_status st = ln_device_elementwise("fill_", &convert, t, &v, 1);
  ln_tensor_release(v);
  return st;
}

/* Every element of t set to the bytes in c. Limitation as copy_: no
** history recorded. */
static ln_status fill_with(ln_tensor *t, const fill_ctx *c0) {
  ln_status st = ln_check_inplace(t);
  if (st != LN_OK) return st;
  fill_ctx c = *c0;
  ln_device dev = ln_tensor_device(t);
  if (dev.type != LN_CPU) return fill_device(t, &c);
  ln_strided it;
  ln_strided_init(&it, t->sizes, t->ndim);
  ln_strided_add(&it, ln_tensor_data(t), t->strides, c.size);
  ln_strided_prepare(&it, 0);
  ln_strided_run(&it, fill_loop, &c);
  return LN_OK;
}

/* A value t's dtype cannot hold is refused, as PyTorch's fill_ and full
** do (with its C++ type names), rather than cast: NaN or 1e300 into int64
** has no meaning, and 1e300 into float32 would be inf. */
ln_status ln_fill_(ln_tensor *t, double value) {
  static const char *const cpp_names[LN_DTYPE_COUNT] = {
    [LN_F32] = "float", [LN_F64] = "double", [LN_F16] = "c10::Half",
    [LN_BF16] = "c10::BFloat16", [LN_I64] = "int64_t", [LN_BOOL] = "bool",
  };
  if (!ln_dtype_fits(value, t->dtype))
    return ln_error(LN_EINVAL, "value cannot be converted to type %s without overflow",
                    cpp_names[t->dtype]);
  fill_ctx c = { .size = ln_dtype_size(t->dtype) };
  ln_store_double(c.elem, t->dtype, value);
  return fill_with(t, &c);
}

ln_status ln_fill_int_(ln_tensor *t, int64_t value) {
  if (t->dtype != LN_I64) return ln_fill_(t, (double)value);
  fill_ctx c = { .size = sizeof value };
  memcpy(c.elem, &value, sizeof value);
  return fill_with(t, &c);
}

ln_status ln_zero_(ln_tensor *t) { return ln_fill_(t, 0.0); }

/* ---- copies as new tensors, with autograd ---- */

static ln_status clone_backward(ln_node *node, ln_tensor **gout, ln_tensor **gin) {
  (void)node;
  ln_tensor_retain(gout[0]);
  gin[0] = gout[0];
  return LN_OK;
}

/* ints[0]: input dtype, ints[1..2]: input device type and index. */
static ln_status tocopy_backward(ln_node *node, ln_tensor **gout, ln_tensor **gin) {
  ln_device dev = { (ln_device_type)node->ints[1], (int)node->ints[2] };
  ln_tensor *g = ln_to_device(gout[0], dev);
  gin[0] = g ? ln_to_dtype(g, (ln_dtype)node->ints[0]) : NULL;
  ln_tensor_release(g);
  return gin[0] ? LN_OK : ln_last_status();
}

/* out = copy of t (new tensor), with history when t requires grad and
** out is floating. */
static ln_tensor *copy_new(ln_tensor *t, ln_tensor *out, bool is_clone) {
  if (!out) return NULL;
  if (copy_any(out, t) != LN_OK) goto fail;
  if (ln_dtype_is_float(out->dtype) && ln_any_requires_grad(&t, 1)) {
    ln_node *node = is_clone ? ln_record("CloneBackward0", clone_backward, out, &t, 1)
                             : ln_record("ToCopyBackward0", tocopy_backward, out, &t, 1);
    if (!node) goto fail;
    ln_device dev = ln_tensor_device(t);
    node->ints[0] = t->dtype;
    node->ints[1] = dev.type;
    node->ints[2] = dev.index;
  }
  return out;
fail:
  ln_tensor_release(out);
  return NULL;
}

ln_tensor *ln_clone(ln_tensor *t, ln_memory_format fmt) {
  return copy_new(t, ln_empty_like(t, fmt), true);
}

ln_tensor *ln_contiguous(ln_tensor *t, ln_memory_format fmt) {
  if (fmt == LN_PRESERVE) {
    ln_error(LN_EINVAL, "preserve memory format is unsupported by the contiguous operator");
    return NULL;
  }
  if (ln_tensor_is_contiguous(t, fmt)) {
    ln_tensor_retain(t);
    return t;
  }
  return ln_clone(t, fmt);
}

ln_tensor *ln_to_dtype(ln_tensor *t, ln_dtype dtype) {
  if ((unsigned)dtype >= LN_DTYPE_COUNT) {
    ln_error(LN_EINVAL, "invalid dtype %d", (int)dtype);
    return NULL;
  }
  if (t->dtype == dtype) {
    ln_tensor_retain(t);
    return t;
  }
  return copy_new(t, ln_empty_format(t->sizes, t->ndim, dtype, ln_tensor_device(t),
                                     ln_tensor_suggest_format(t)), false);
}

ln_tensor *ln_to_device(ln_tensor *t, ln_device dev) {
  if (ln_device_eq(dev, ln_tensor_device(t))) {
    ln_tensor_retain(t);
    return t;
  }
  if (ln_device_check(dev) != LN_OK) return NULL;
  return copy_new(t, ln_empty_format(t->sizes, t->ndim, t->dtype, dev,
                                     ln_tensor_suggest_format(t)), false);
}
