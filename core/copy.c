/*
** copy.c -- copies and conversions: copy_, fill_, zero_, clone,
** contiguous, to(dtype), to(device).
**
** On the CPU a copy is one strided iteration that converts dtypes on the
** fly. Between devices (or on a device without kernels) data moves through
** the backend's copy between dense (contiguous or channels-last) buffers,
** staging through host memory when a conversion, a broadcast or a layout
** change is needed.
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

/* ---- copies through a backend ---- */

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

/* A copy where a side is not on the CPU: one backend copy when nothing
** changes but the device, else src to host, convert there, host to dst. */
static ln_status copy_across(ln_tensor *dst, ln_tensor *src) {
  ln_tensor *host_src = NULL, *host_dst = NULL;
  ln_memory_format fs, fd;
  char buf[32];
  ln_status st = LN_OK;
  if (dst->dtype == src->dtype && same_dense_layout(dst, src)) return raw_copy(dst, src);
  if (ln_tensor_device(src).type == LN_CPU) {
    ln_tensor_retain(src);
    host_src = src;
  } else {
    if (!dense_format(src, &fs)) {
      return ln_error(LN_ERUNTIME, "copying from a non-contiguous %s tensor is not "
                      "implemented yet", ln_device_str(ln_tensor_device(src), buf, sizeof buf));
    }
    host_src = ln_empty_format(src->sizes, src->ndim, src->dtype, LN_DEVICE_CPU, fs);
    if (!host_src) return ln_last_status();
    if ((st = raw_copy(host_src, src)) != LN_OK) goto fail;
  }
  if (ln_tensor_device(dst).type == LN_CPU) {
    st = ln_copy_cpu(dst, host_src);
    goto fail;
  }
  if (!dense_format(dst, &fd)) {
    st = ln_error(LN_ERUNTIME, "copying into a non-contiguous %s tensor is not implemented "
                  "yet", ln_device_str(ln_tensor_device(dst), buf, sizeof buf));
    goto fail;
  }
  host_dst = ln_empty_format(dst->sizes, dst->ndim, dst->dtype, LN_DEVICE_CPU, fd);
  if (!host_dst) { st = ln_last_status(); goto fail; }
  if ((st = ln_copy_cpu(host_dst, host_src)) == LN_OK) st = raw_copy(dst, host_dst);
fail:
  ln_tensor_release(host_src);
  ln_tensor_release(host_dst);
  return st;
}

/* dst = src on any devices, no autograd. */
static ln_status copy_any(ln_tensor *dst, ln_tensor *src) {
  ln_status st = check_copy_shape(dst, src);
  if (st != LN_OK) return st;
  if (ln_tensor_device(dst).type == LN_CPU && ln_tensor_device(src).type == LN_CPU)
    return ln_copy_cpu(dst, src);
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

/* Limitation as copy_: no history recorded. */
ln_status ln_fill_(ln_tensor *t, double value) {
  ln_status st = ln_check_inplace(t);
  if (st != LN_OK) return st;
  fill_ctx c = { .size = ln_dtype_size(t->dtype) };
  ln_store_double(c.elem, t->dtype, value);
  ln_device dev = ln_tensor_device(t);
  if (dev.type != LN_CPU) {
    ln_memory_format fmt;
    char buf[32];
    if (!dense_format(t, &fmt))
      return ln_error(LN_ERUNTIME, "fill_ of a non-contiguous %s tensor is not implemented "
                      "yet", ln_device_str(dev, buf, sizeof buf));
    const ln_backend *b = ln_backend_get(dev.type);
    if (!b) return ln_error(LN_EDEVICE, "no backend for this device");
    return b->fill(dev.index, ln_tensor_data(t), (size_t)ln_tensor_numel(t), c.size, c.elem);
  }
  ln_strided it;
  ln_strided_init(&it, t->sizes, t->ndim);
  ln_strided_add(&it, ln_tensor_data(t), t->strides, c.size);
  ln_strided_prepare(&it, 0);
  ln_strided_run(&it, fill_loop, &c);
  return LN_OK;
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
