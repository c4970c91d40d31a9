/*
** tensor.c -- tensor creation, reference counts, properties and geometry.
** Views live in view.c, copies and conversions in copy.c, autograd fields
** in autograd.c.
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blas.h"
#include "ops.h"
#include "tensor_impl.h"

static int64_t live_tensors;

void ln_init(void) {
  static int done;
  if (__atomic_exchange_n(&done, 1, __ATOMIC_ACQ_REL)) return;
  ln_backends_init();
  ln_blas_init();
}

int64_t ln_tensor_live_count(void) {
  return __atomic_load_n(&live_tensors, __ATOMIC_RELAXED);
}

/* Format sizes as "[2, 3]" into buf, for messages. */
static const char *sizes_str(const int64_t *sizes, int ndim, char *buf, size_t n) {
  size_t len = 0;
  len += (size_t)snprintf(buf, n, "[");
  for (int i = 0; i < ndim && len < n; i++)
    len += (size_t)snprintf(buf + len, n - len, "%s%lld", i ? ", " : "",
                            (long long)sizes[i]);
  if (len < n) snprintf(buf + len, n - len, "]");
  return buf;
}

int64_t ln_checked_numel(const int64_t *sizes, int ndim) {
  char buf[160];
  if (ndim < 0 || ndim > LN_MAX_DIMS) {
    ln_error(LN_EINVAL, "tensors have at most %d dimensions, got %d", LN_MAX_DIMS, ndim);
    return -1;
  }
  int64_t numel = 1;
  for (int i = 0; i < ndim; i++) {
    if (sizes[i] < 0) {
      ln_error(LN_EINVAL, "Trying to create tensor with negative dimension %lld: %s",
               (long long)sizes[i], sizes_str(sizes, ndim, buf, sizeof buf));
      return -1;
    }
    if (sizes[i] && numel > INT64_MAX / 16 / sizes[i]) {
      ln_error(LN_EINVAL, "tensor of size %s is too large",
               sizes_str(sizes, ndim, buf, sizeof buf));
      return -1;
    }
    numel *= sizes[i];
  }
  return numel;
}

void ln_contiguous_strides(const int64_t *sizes, int ndim, ln_memory_format fmt,
                           int64_t *strides) {
  if (fmt == LN_CHANNELS_LAST && (ndim == 4 || ndim == 5)) {
    /* channels innermost, then the spatial dims, then the batch */
    int64_t s = 1;
    strides[1] = s;
    s *= sizes[1] > 1 ? sizes[1] : 1;
    for (int d = ndim - 1; d >= 2; d--) {
      strides[d] = s;
      s *= sizes[d] > 1 ? sizes[d] : 1;
    }
    strides[0] = s;
    return;
  }
  int64_t s = 1;
  for (int d = ndim - 1; d >= 0; d--) {
    strides[d] = s;
    s *= sizes[d] > 1 ? sizes[d] : 1;
  }
}

/* A tensor struct with no storage yet, refcount 1. */
static ln_tensor *tensor_struct(ln_dtype dtype, const int64_t *sizes,
                                const int64_t *strides, int ndim, int64_t offset) {
  ln_tensor *t = calloc(1, sizeof *t);
  if (!t) { ln_error(LN_ENOMEM, "out of memory allocating a tensor"); return NULL; }
  t->refcount = 1;
  t->dtype = dtype;
  t->ndim = ndim;
  if (ndim) {
    memcpy(t->sizes, sizes, (size_t)ndim * sizeof *sizes);
    memcpy(t->strides, strides, (size_t)ndim * sizeof *strides);
  }
  t->offset = offset;
  __atomic_add_fetch(&live_tensors, 1, __ATOMIC_RELAXED);
  return t;
}

ln_tensor *ln_empty_format(const int64_t *sizes, int ndim, ln_dtype dtype,
                           ln_device dev, ln_memory_format fmt) {
  if ((unsigned)dtype >= LN_DTYPE_COUNT) {
    ln_error(LN_EINVAL, "invalid dtype %d", (int)dtype);
    return NULL;
  }
  int64_t numel = ln_checked_numel(sizes, ndim);
  if (numel < 0) return NULL;
  if (fmt == LN_CHANNELS_LAST && ndim != 4 && ndim != 5) {
    ln_error(LN_EINVAL, "required rank 4 or 5 tensor to use channels_last format "
             "(got %dD)", ndim);
    return NULL;
  }
  int64_t strides[LN_MAX_DIMS];
  ln_contiguous_strides(sizes, ndim, fmt, strides);
  ln_storage *s = ln_storage_new(dev, (size_t)numel * ln_dtype_size(dtype));
  if (!s) return NULL;
  ln_tensor *t = tensor_struct(dtype, sizes, strides, ndim, 0);
  if (!t) { ln_storage_release(s); return NULL; }
  t->storage = s;
  return t;
}

ln_tensor *ln_empty(const int64_t *sizes, int ndim, ln_dtype dtype, ln_device dev) {
  return ln_empty_format(sizes, ndim, dtype, dev, LN_CONTIGUOUS);
}

ln_tensor *ln_full(const int64_t *sizes, int ndim, double value, ln_dtype dtype,
                   ln_device dev) {
  ln_tensor *t = ln_empty(sizes, ndim, dtype, dev);
  if (t && ln_fill_(t, value) != LN_OK) { ln_tensor_release(t); return NULL; }
  return t;
}

ln_tensor *ln_zeros(const int64_t *sizes, int ndim, ln_dtype dtype, ln_device dev) {
  return ln_full(sizes, ndim, 0.0, dtype, dev);
}

ln_tensor *ln_ones(const int64_t *sizes, int ndim, ln_dtype dtype, ln_device dev) {
  return ln_full(sizes, ndim, 1.0, dtype, dev);
}

ln_tensor *ln_scalar(double value, ln_dtype dtype) {
  return ln_full(NULL, 0, value, dtype, LN_DEVICE_CPU);
}

ln_tensor *ln_arange(double start, double end, double step, ln_dtype dtype) {
  if (step == 0 || isnan(step) || isnan(start) || isnan(end)) {
    ln_error(LN_EINVAL, "step must be nonzero");
    return NULL;
  }
  if ((step > 0 && start > end) || (step < 0 && start < end)) {
    ln_error(LN_EINVAL, "upper bound and larger bound inconsistent with step sign");
    return NULL;
  }
  double count = ceil((end - start) / step);
  if (!(count < 1e15)) {
    ln_error(LN_EINVAL, "arange: too many elements (%g)", count);
    return NULL;
  }
  int64_t n = (int64_t)count;
  if (dtype == LN_I64 && n > 0 &&   /* the ends, as PyTorch converts them */
      (!ln_dtype_fits(start, dtype) || !ln_dtype_fits(start + (double)(n - 1) * step, dtype))) {
    ln_error(LN_EINVAL, "value cannot be converted to type int64_t without overflow");
    return NULL;
  }
  ln_tensor *t = ln_empty(&n, 1, dtype, LN_DEVICE_CPU);
  if (!t) return NULL;
  char *p = ln_tensor_data(t);
  size_t es = ln_dtype_size(dtype);
  for (int64_t i = 0; i < n; i++) ln_store_double(p + i * es, dtype, start + i * step);
  return t;
}

ln_tensor *ln_arange_int(int64_t start, int64_t end, int64_t step) {
  if (step == 0) {
    ln_error(LN_EINVAL, "step must be nonzero");
    return NULL;
  }
  if ((step > 0 && start > end) || (step < 0 && start < end)) {
    ln_error(LN_EINVAL, "upper bound and larger bound inconsistent with step sign");
    return NULL;
  }
  /* |end - start| and |step| in uint64_t, where neither can overflow */
  uint64_t span = step > 0 ? (uint64_t)end - (uint64_t)start : (uint64_t)start - (uint64_t)end;
  uint64_t mag = step > 0 ? (uint64_t)step : 0 - (uint64_t)step;
  uint64_t count = span / mag + (span % mag != 0);
  if (count >= 1000000000000000u) {   /* 1e15, as ln_arange */
    ln_error(LN_EINVAL, "arange: too many elements (%g)", (double)count);
    return NULL;
  }
  int64_t n = (int64_t)count;
  ln_tensor *t = ln_empty(&n, 1, LN_I64, LN_DEVICE_CPU);
  if (!t) return NULL;
  int64_t *p = ln_tensor_data(t);
  uint64_t v = (uint64_t)start;   /* every value lies in [start, end): no wrap */
  for (int64_t i = 0; i < n; i++, v += (uint64_t)step) p[i] = (int64_t)v;
  return t;
}

/* The furthest element offsets reachable through the geometry, in
** elements relative to `offset`; false when a stride is negative. */
static bool extent(const int64_t *sizes, const int64_t *strides, int ndim,
                   int64_t *last) {
  *last = 0;
  for (int d = 0; d < ndim; d++) {
    if (sizes[d] == 0) { *last = -1; return true; }
    if (strides[d] < 0) return false;
    *last += (sizes[d] - 1) * strides[d];
  }
  return true;
}

ln_tensor *ln_from_storage(ln_storage *s, ln_dtype dtype, const int64_t *sizes,
                           const int64_t *strides, int ndim, int64_t offset) {
  int64_t last;
  if (ln_checked_numel(sizes, ndim) < 0) return NULL;
  if (offset < 0 || !extent(sizes, strides, ndim, &last)) {
    ln_error(LN_EINVAL, "offset and strides must be non-negative");
    return NULL;
  }
  size_t es = ln_dtype_size(dtype);
  if (last >= 0 && (size_t)(offset + last + 1) * es > ln_storage_nbytes(s)) {
    ln_error(LN_EINVAL, "setStorage: sizes, strides and offset reach element %lld, "
             "out of bounds for storage of size %zu bytes",
             (long long)(offset + last), ln_storage_nbytes(s));
    return NULL;
  }
  ln_tensor *t = tensor_struct(dtype, sizes, strides, ndim, offset);
  if (!t) return NULL;
  ln_storage_retain(s);
  t->storage = s;
  return t;
}

ln_tensor *ln_tensor_alias(ln_tensor *t, const int64_t *sizes,
                           const int64_t *strides, int ndim, int64_t offset) {
  if (ln_checked_numel(sizes, ndim) < 0) return NULL;   /* expand can ask for too many */
  ln_tensor *v = tensor_struct(t->dtype, sizes, strides, ndim, offset);
  if (!v) return NULL;
  ln_storage_retain(t->storage);
  v->storage = t->storage;
  return v;
}

ln_tensor *ln_empty_like(const ln_tensor *t, ln_memory_format fmt) {
  if (fmt == LN_PRESERVE) fmt = ln_tensor_suggest_format(t);
  return ln_empty_format(t->sizes, t->ndim, t->dtype, ln_storage_device(t->storage), fmt);
}

void ln_tensor_retain(ln_tensor *t) {
  __atomic_add_fetch(&t->refcount, 1, __ATOMIC_RELAXED);
}

void ln_tensor_release(ln_tensor *t) {
  if (!t || __atomic_sub_fetch(&t->refcount, 1, __ATOMIC_ACQ_REL) > 0) return;
  ln_storage_release(t->storage);
  ln_tensor_release(t->grad);
  ln_node_release(t->grad_fn);
  __atomic_sub_fetch(&live_tensors, 1, __ATOMIC_RELAXED);
  free(t);
}

int ln_tensor_refcount(const ln_tensor *t) {
  return __atomic_load_n(&t->refcount, __ATOMIC_RELAXED);
}

int ln_tensor_dim(const ln_tensor *t) { return t->ndim; }
int64_t ln_tensor_size(const ln_tensor *t, int dim) { return t->sizes[dim]; }
int64_t ln_tensor_stride(const ln_tensor *t, int dim) { return t->strides[dim]; }
const int64_t *ln_tensor_sizes(const ln_tensor *t) { return t->sizes; }
const int64_t *ln_tensor_strides(const ln_tensor *t) { return t->strides; }
int64_t ln_tensor_offset(const ln_tensor *t) { return t->offset; }
ln_dtype ln_tensor_dtype(const ln_tensor *t) { return t->dtype; }
ln_device ln_tensor_device(const ln_tensor *t) { return ln_storage_device(t->storage); }
ln_storage *ln_tensor_storage(const ln_tensor *t) { return t->storage; }

int64_t ln_tensor_numel(const ln_tensor *t) {
  int64_t n = 1;
  for (int d = 0; d < t->ndim; d++) n *= t->sizes[d];
  return n;
}

void *ln_tensor_data(const ln_tensor *t) {
  return (char *)ln_storage_data(t->storage) + t->offset * (int64_t)ln_dtype_size(t->dtype);
}

/* Dims of size 1 may have any stride, as in PyTorch. */
bool ln_tensor_is_contiguous(const ln_tensor *t, ln_memory_format fmt) {
  if (fmt == LN_PRESERVE) fmt = ln_tensor_suggest_format(t);
  if (fmt == LN_CHANNELS_LAST && t->ndim != 4 && t->ndim != 5) return false;
  int64_t expect[LN_MAX_DIMS];
  ln_contiguous_strides(t->sizes, t->ndim, fmt, expect);
  for (int d = 0; d < t->ndim; d++) {
    if (t->sizes[d] == 0) return true;
    if (t->sizes[d] != 1 && t->strides[d] != expect[d]) return false;
  }
  return true;
}

ln_memory_format ln_tensor_suggest_format(const ln_tensor *t) {
  if ((t->ndim == 4 || t->ndim == 5) && !ln_tensor_is_contiguous(t, LN_CONTIGUOUS) &&
      ln_tensor_is_contiguous(t, LN_CHANNELS_LAST))
    return LN_CHANNELS_LAST;
  return LN_CONTIGUOUS;
}

bool ln_tensor_same_shape(const ln_tensor *a, const ln_tensor *b) {
  if (a->ndim != b->ndim) return false;
  for (int d = 0; d < a->ndim; d++)
    if (a->sizes[d] != b->sizes[d]) return false;
  return true;
}

ln_status ln_wrap_dim(int dim, int ndim, int *out) {
  int n = ndim > 0 ? ndim : 1;  /* a 0-dim tensor accepts dims 0 and -1 */
  if (dim < -n || dim >= n)
    return ln_error(LN_EINVAL, "Dimension out of range (expected to be in range of "
                    "[%d, %d], but got %d)", -n, n - 1, dim);
  *out = dim < 0 ? dim + n : dim;
  return LN_OK;
}

double ln_tensor_get(const ln_tensor *t, const int64_t *index) {
  int64_t off = 0;
  for (int d = 0; d < t->ndim; d++) off += index[d] * t->strides[d];
  return ln_load_double((const char *)ln_tensor_data(t) +
                        off * (int64_t)ln_dtype_size(t->dtype), t->dtype);
}

ln_status ln_tensor_item(const ln_tensor *t, double *out) {
  int64_t n = ln_tensor_numel(t);
  if (n != 1)
    return ln_error(LN_EINVAL, "a Tensor with %lld elements cannot be converted to "
                    "Scalar", (long long)n);
  ln_tensor *c = ln_to_device((ln_tensor *)t, LN_DEVICE_CPU);
  if (!c) return ln_last_status();
  *out = ln_load_double(ln_tensor_data(c), c->dtype);
  ln_tensor_release(c);
  return LN_OK;
}

ln_status ln_tensor_set_data(ln_tensor *t, ln_tensor *src) {
  if (t == src) return LN_OK;
  ln_storage_retain(src->storage);
  ln_storage_release(t->storage);
  t->storage = src->storage;
  t->dtype = src->dtype;
  t->ndim = src->ndim;
  memcpy(t->sizes, src->sizes, sizeof t->sizes);
  memcpy(t->strides, src->strides, sizeof t->strides);
  t->offset = src->offset;
  return LN_OK;
}

bool ln_tensor_is_parameter(const ln_tensor *t) { return t->is_parameter; }
void ln_tensor_set_parameter(ln_tensor *t, bool flag) { t->is_parameter = flag; }
