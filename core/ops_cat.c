/*
** ops_cat.c -- torch.cat along any dim, with PyTorch's checks and dtype
** promotion over all inputs, and its backward (slices of the gradient).
** Each input is copied into a narrowed view of the output (on any device:
** ln_copy_ runs the device's copies); legacy 1D empty tensors (shape [0])
** are skipped as PyTorch does.
*/
#include <stdlib.h>
#include <string.h>

#include "ops_impl.h"

/* What the backward needs per input: its size along dim and dtype. */
typedef struct cat_extra {
  int n, dim;
  int64_t *len;
  ln_dtype *dtype;
} cat_extra;

static void free_extra(void *p) {
  cat_extra *e = p;
  free(e->len);
  free(e->dtype);
  free(e);
}

static bool skipped(const ln_tensor *t) { return t->ndim == 1 && t->sizes[0] == 0; }

static ln_status cat_backward(ln_node *node, ln_tensor **gout, ln_tensor **gin) {
  const cat_extra *e = node->extra;
  int64_t off = 0;
  for (int i = 0; i < e->n; i++) {
    int64_t len = e->len[i];
    if (len < 0 || !ln_needs_grad(node, i)) {  /* skipped, or no grad wanted */
      off += len > 0 ? len : 0;
      continue;
    }
    ln_tensor *v = ln_narrow(gout[0], e->dim, off, len);
    gin[i] = v ? ln_to_dtype(v, e->dtype[i]) : NULL;
    ln_tensor_release(v);
    if (!gin[i]) return ln_last_status();
    off += len;
  }
  return LN_OK;
}

static ln_status record_cat(ln_tensor *out, ln_tensor *const *ts, int n, int dim) {
  cat_extra *e = calloc(1, sizeof *e);
  if (e) {
    e->len = malloc(sizeof(int64_t) * (size_t)n);
    e->dtype = malloc(sizeof(ln_dtype) * (size_t)n);
  }
  if (!e || !e->len || !e->dtype) {
    if (e) free_extra(e);
    return ln_error(LN_ENOMEM, "out of memory in cat");
  }
  e->n = n;
  e->dim = dim;
  for (int i = 0; i < n; i++) {
    e->len[i] = skipped(ts[i]) ? -1 : ts[i]->sizes[dim];
    e->dtype[i] = ts[i]->dtype;
  }
  ln_node *node = ln_record("CatBackward0", cat_backward, out, ts, n);
  if (!node) {
    free_extra(e);
    return ln_last_status();
  }
  node->extra = e;
  node->free_extra = free_extra;
  return LN_OK;
}

/* Check shapes (inputs have dims); the first non-skipped input (the
** reference), or -1 if all are skipped. */
static ln_status check_cat(ln_tensor *const *ts, int n, int dim, int *ref) {
  *ref = -1;
  for (int i = 0; i < n; i++) {
    if (skipped(ts[i])) continue;
    if (*ref < 0) { *ref = i; continue; }
    const ln_tensor *r = ts[*ref], *t = ts[i];
    if (t->ndim != r->ndim)
      return ln_error(LN_EINVAL, "Tensors must have same number of dimensions: got %d and %d",
                      r->ndim, t->ndim);
    for (int d = 0; d < t->ndim; d++)
      if (d != dim && t->sizes[d] != r->sizes[d])
        return ln_error(LN_EINVAL, "Sizes of tensors must match except in dimension %d. "
                        "Expected size %lld but got size %lld for tensor number %d in the list.",
                        dim, (long long)r->sizes[d], (long long)t->sizes[d], i);
  }
  return LN_OK;
}

ln_tensor *ln_cat(ln_tensor *const *ts, int n, int dim) {
  ln_device dev;
  int ref, w;
  if (n <= 0) {
    ln_error(LN_EINVAL, "torch.cat(): expected a non-empty list of Tensors");
    return NULL;
  }
  if (ln_common_device(ts, n, &dev) != LN_OK) return NULL;
  for (int i = 0; i < n; i++)
    if (ts[i]->ndim == 0) {
      ln_error(LN_EINVAL, "zero-dimensional tensor (at position %d) cannot be concatenated", i);
      return NULL;
    }
  int first = 0;  /* dims wrap against the first input that is not skipped */
  while (first < n - 1 && skipped(ts[first])) first++;
  if (ln_wrap_dim(dim, ts[first]->ndim, &w) != LN_OK || check_cat(ts, n, w, &ref) != LN_OK)
    return NULL;
  ln_dtype dt = ts[0]->dtype;
  for (int i = 1; i < n; i++) dt = ln_dtype_promote(dt, ts[i]->dtype);
  int64_t sizes[LN_MAX_DIMS];
  int nd = 1;
  bool channels_last = ref >= 0;
  sizes[0] = 0;
  if (ref >= 0) {
    nd = ts[ref]->ndim;
    memcpy(sizes, ts[ref]->sizes, sizeof(int64_t) * (size_t)nd);
    sizes[w] = 0;
    for (int i = 0; i < n; i++) {
      if (skipped(ts[i])) continue;
      sizes[w] += ts[i]->sizes[w];
      channels_last &= ln_tensor_suggest_format(ts[i]) == LN_CHANNELS_LAST;
    }
  }
  ln_tensor *out = ln_empty_format(sizes, nd, dt, dev,
                                   channels_last ? LN_CHANNELS_LAST : LN_CONTIGUOUS);
  if (!out) return NULL;
  int64_t off = 0;
  for (int i = 0; i < n; i++) {
    if (skipped(ts[i])) continue;
    int64_t len = ts[i]->sizes[w];
    ln_tensor *v = ln_narrow(out, w, off, len);
    ln_status st = v ? ln_copy_(v, ts[i]) : ln_last_status();
    ln_tensor_release(v);
    if (st != LN_OK) goto fail;
    off += len;
  }
  if (ln_dtype_is_float(dt) && ln_any_requires_grad(ts, n) &&
      record_cat(out, ts, n, w) != LN_OK)
    goto fail;
  return out;
fail:
  ln_tensor_release(out);
  return NULL;
}
