/*
** view.c -- views: new tensor structs over the same storage, no copy.
** Each records autograd history so that gradients flow back to the base.
*/
#include <stdio.h>
#include <string.h>

#include "ops.h"
#include "tensor_impl.h"

/* ---- backward functions ---- */

/* node->ints holds the input's ndim followed by its sizes. */
static void save_input_shape(ln_node *node, const ln_tensor *t) {
  node->ints[0] = t->ndim;
  memcpy(node->ints + 1, t->sizes, (size_t)t->ndim * sizeof t->sizes[0]);
}

/* view, reshape, squeeze, unsqueeze, flatten: reshape the gradient back. */
static ln_status reshape_backward(ln_node *node, ln_tensor **gout, ln_tensor **gin) {
  gin[0] = ln_reshape(gout[0], node->ints + 1, (int)node->ints[0]);
  return gin[0] ? LN_OK : ln_last_status();
}

/* permute: apply the inverse permutation (ints: ndim, dims). */
static ln_status permute_backward(ln_node *node, ln_tensor **gout, ln_tensor **gin) {
  int n = (int)node->ints[0], inverse[LN_MAX_DIMS];
  for (int i = 0; i < n; i++) inverse[node->ints[1 + i]] = i;
  gin[0] = ln_permute(gout[0], inverse, n);
  return gin[0] ? LN_OK : ln_last_status();
}

/* expand: sum over the broadcast dims (ints: ndim, sizes). */
static ln_status expand_backward(ln_node *node, ln_tensor **gout, ln_tensor **gin) {
  gin[0] = ln_sum_to_size(gout[0], node->ints + 1, (int)node->ints[0]);
  return gin[0] ? LN_OK : ln_last_status();
}

/* narrow and select: zeros of the input's shape with the gradient copied
** into the selected part. ints: ndim, sizes, then dim, start, length
** (length -1 for select). */
static ln_status slice_backward(ln_node *node, ln_tensor **gout, ln_tensor **gin) {
  int n = (int)node->ints[0];
  const int64_t *tail = node->ints + 1 + n;
  ln_tensor *g = gout[0], *part = NULL;
  ln_tensor *z = ln_zeros(node->ints + 1, n, g->dtype, ln_tensor_device(g));
  if (!z) return ln_last_status();
  part = tail[2] < 0 ? ln_select(z, (int)tail[0], tail[1])
                     : ln_narrow(z, (int)tail[0], tail[1], tail[2]);
  if (!part || ln_copy_(part, g) != LN_OK) {
    ln_tensor_release(part);
    ln_tensor_release(z);
    return ln_last_status();
  }
  ln_tensor_release(part);
  gin[0] = z;
  return LN_OK;
}

/* Make `v` (a fresh view of t) a differentiable function of t when needed.
** Returns v, or NULL (v released) on failure. */
static ln_tensor *record(ln_tensor *v, ln_tensor *t, const char *name,
                         ln_backward_fn fn, const int64_t *extra, int n_extra) {
  if (!v || !ln_any_requires_grad(&t, 1)) return v;
  ln_node *node = ln_node_new(name, fn, &t, 1, 1);
  if (!node) { ln_tensor_release(v); return NULL; }
  save_input_shape(node, t);
  if (n_extra) memcpy(node->ints + 1 + t->ndim, extra, (size_t)n_extra * sizeof *extra);
  ln_set_history(v, node, 0);
  ln_node_release(node);
  return v;
}

/* ---- shape inference ---- */

static const char *shape_str(const int64_t *sizes, int ndim, char *buf, size_t n) {
  size_t len = (size_t)snprintf(buf, n, "[");
  for (int i = 0; i < ndim && len < n; i++)
    len += (size_t)snprintf(buf + len, n - len, "%s%lld", i ? ", " : "",
                            (long long)sizes[i]);
  if (len < n) snprintf(buf + len, n - len, "]");
  return buf;
}

/* Resolve one -1 in sizes against numel, as PyTorch's infer_size. The
** product of the given sizes is taken by ln_checked_numel: one too large
** for any tensor (it would overflow) is an invalid shape, not a wrap. */
static ln_status infer_size(const int64_t *in, int ndim, int64_t numel, int64_t *out) {
  char buf[160];
  int infer = -1;
  if (ndim > LN_MAX_DIMS)
    return ln_error(LN_EINVAL, "tensors have at most %d dimensions, got %d",
                    LN_MAX_DIMS, ndim);
  for (int i = 0; i < ndim; i++) {
    out[i] = in[i];
    if (in[i] == -1) {
      if (infer >= 0) return ln_error(LN_EINVAL, "only one dimension can be inferred");
      infer = i;
      out[i] = 1;   /* out of the product below */
    } else if (in[i] < 0) {
      return ln_error(LN_EINVAL, "invalid shape dimension %lld", (long long)in[i]);
    }
  }
  int64_t known = ln_checked_numel(out, ndim);   /* -1 when too large */
  if (infer >= 0 && known > 0 && numel % known == 0) {
    out[infer] = numel / known;
    return LN_OK;
  }
  if (infer < 0 && known == numel) return LN_OK;
  return ln_error(LN_EINVAL, "shape '%s' is invalid for input of size %lld",
                  shape_str(in, ndim, buf, sizeof buf), (long long)numel);
}

/* Strides for viewing t with `sizes` without a copy, PyTorch's
** computeStride: each run of merged old dims must map onto new dims.
** Returns false when no such strides exist. */
static bool view_strides(const ln_tensor *t, const int64_t *sizes, int ndim,
                         int64_t *strides) {
  int64_t numel = ln_tensor_numel(t);
  if (numel == 0 || t->ndim == 0) {
    ln_contiguous_strides(sizes, ndim, LN_CONTIGUOUS, strides);
    return true;
  }
  int view_d = ndim - 1;
  int64_t chunk_base_stride = t->strides[t->ndim - 1];
  int64_t tensor_numel = 1, view_numel = 1;
  for (int d = t->ndim - 1; d >= 0; d--) {
    tensor_numel *= t->sizes[d];
    if (d == 0 || (t->sizes[d - 1] != 1 &&
                   t->strides[d - 1] != tensor_numel * chunk_base_stride)) {
      while (view_d >= 0 && (view_numel < tensor_numel || sizes[view_d] == 1)) {
        strides[view_d] = view_numel * chunk_base_stride;
        view_numel *= sizes[view_d];
        view_d--;
      }
      if (view_numel != tensor_numel) return false;
      if (d > 0) {
        chunk_base_stride = t->strides[d - 1];
        tensor_numel = 1;
        view_numel = 1;
      }
    }
  }
  return view_d == -1;
}

/* ---- views ---- */

ln_tensor *ln_view(ln_tensor *t, const int64_t *sizes, int ndim) {
  int64_t shape[LN_MAX_DIMS], strides[LN_MAX_DIMS];
  if (infer_size(sizes, ndim, ln_tensor_numel(t), shape) != LN_OK) return NULL;
  if (!view_strides(t, shape, ndim, strides)) {
    ln_error(LN_EINVAL, "view size is not compatible with input tensor's size and "
             "stride (at least one dimension spans across two contiguous subspaces). "
             "Use .reshape(...) instead.");
    return NULL;
  }
  ln_tensor *v = ln_tensor_alias(t, shape, strides, ndim, t->offset);
  return record(v, t, "ViewBackward0", reshape_backward, NULL, 0);
}

ln_tensor *ln_reshape(ln_tensor *t, const int64_t *sizes, int ndim) {
  int64_t shape[LN_MAX_DIMS], strides[LN_MAX_DIMS];
  if (infer_size(sizes, ndim, ln_tensor_numel(t), shape) != LN_OK) return NULL;
  if (view_strides(t, shape, ndim, strides)) return ln_view(t, shape, ndim);
  ln_tensor *c = ln_contiguous(t, LN_CONTIGUOUS);
  if (!c) return NULL;
  ln_tensor *v = ln_view(c, shape, ndim);
  ln_tensor_release(c);
  return v;
}

ln_tensor *ln_permute(ln_tensor *t, const int *dims, int ndim) {
  int64_t sizes[LN_MAX_DIMS], strides[LN_MAX_DIMS], order[LN_MAX_DIMS];
  bool seen[LN_MAX_DIMS] = { false };
  if (ndim != t->ndim) {
    ln_error(LN_EINVAL, "permute(sparse_coo): number of dimensions in the tensor "
             "input does not match the length of the desired ordering of dimensions "
             "i.e. input.dim() = %d is not equal to len(dims) = %d", t->ndim, ndim);
    return NULL;
  }
  for (int i = 0; i < ndim; i++) {
    int d;
    if (ln_wrap_dim(dims[i], ndim, &d) != LN_OK) return NULL;
    if (seen[d]) { ln_error(LN_EINVAL, "permute(): duplicate dims are not allowed."); return NULL; }
    seen[d] = true;
    order[i] = d;
    sizes[i] = t->sizes[d];
    strides[i] = t->strides[d];
  }
  ln_tensor *v = ln_tensor_alias(t, sizes, strides, ndim, t->offset);
  if (!v || !ln_any_requires_grad(&t, 1)) return v;
  /* permute_backward reads the permutation from ints[1..] */
  ln_node *node = ln_node_new("PermuteBackward0", permute_backward, &t, 1, 1);
  if (!node) { ln_tensor_release(v); return NULL; }
  node->ints[0] = ndim;
  memcpy(node->ints + 1, order, (size_t)ndim * sizeof *order);
  ln_set_history(v, node, 0);
  ln_node_release(node);
  return v;
}

ln_tensor *ln_transpose(ln_tensor *t, int d0, int d1) {
  int a, b, dims[LN_MAX_DIMS];
  if (t->ndim == 0) {  /* PyTorch allows transpose(0, 0) etc. of a scalar */
    if (ln_wrap_dim(d0, 0, &a) != LN_OK || ln_wrap_dim(d1, 0, &b) != LN_OK) return NULL;
    return ln_permute(t, dims, 0);
  }
  if (ln_wrap_dim(d0, t->ndim, &a) != LN_OK || ln_wrap_dim(d1, t->ndim, &b) != LN_OK)
    return NULL;
  for (int i = 0; i < t->ndim; i++) dims[i] = i;
  dims[a] = b;
  dims[b] = a;
  return ln_permute(t, dims, t->ndim);
}

ln_tensor *ln_narrow(ln_tensor *t, int dim, int64_t start, int64_t length) {
  int d;
  if (t->ndim == 0) {
    ln_error(LN_EINVAL, "narrow() cannot be applied to a 0-dim tensor.");
    return NULL;
  }
  if (ln_wrap_dim(dim, t->ndim, &d) != LN_OK) return NULL;
  int64_t size = t->sizes[d];
  if (start < -size || start > size) {
    ln_error(LN_EINVAL, "start out of range (expected to be in range of [%lld, %lld], "
             "but got %lld)", (long long)-size, (long long)size, (long long)start);
    return NULL;
  }
  if (start < 0) start += size;
  if (length < 0 || start > size - length) {
    ln_error(LN_EINVAL, "start (%lld) + length (%lld) exceeds dimension size (%lld).",
             (long long)start, (long long)length, (long long)size);
    return NULL;
  }
  int64_t sizes[LN_MAX_DIMS];
  memcpy(sizes, t->sizes, sizeof sizes);
  sizes[d] = length;
  ln_tensor *v = ln_tensor_alias(t, sizes, t->strides, t->ndim,
                                 t->offset + start * t->strides[d]);
  int64_t extra[3] = { d, start, length };
  return record(v, t, "SliceBackward0", slice_backward, extra, 3);
}

ln_tensor *ln_select(ln_tensor *t, int dim, int64_t index) {
  int d;
  if (t->ndim == 0) {
    ln_error(LN_EINVAL, "select() cannot be applied to a 0-dim tensor.");
    return NULL;
  }
  if (ln_wrap_dim(dim, t->ndim, &d) != LN_OK) return NULL;
  int64_t size = t->sizes[d];
  if (index < -size || index >= size) {
    ln_error(LN_EINVAL, "index %lld is out of bounds for dimension %d with size %lld",
             (long long)index, d, (long long)size);
    return NULL;
  }
  if (index < 0) index += size;
  int64_t sizes[LN_MAX_DIMS], strides[LN_MAX_DIMS];
  int n = 0;
  for (int i = 0; i < t->ndim; i++) {
    if (i == d) continue;
    sizes[n] = t->sizes[i];
    strides[n++] = t->strides[i];
  }
  ln_tensor *v = ln_tensor_alias(t, sizes, strides, n, t->offset + index * t->strides[d]);
  int64_t extra[3] = { d, index, -1 };
  return record(v, t, "SelectBackward0", slice_backward, extra, 3);
}

ln_tensor *ln_expand(ln_tensor *t, const int64_t *sizes, int ndim) {
  char want[160], have[160];
  if (ndim < t->ndim || ndim > LN_MAX_DIMS) {
    ln_error(LN_EINVAL, "expand: the number of sizes provided (%d) must be greater or "
             "equal to the number of dimensions in the tensor (%d)", ndim, t->ndim);
    return NULL;
  }
  int64_t out[LN_MAX_DIMS], strides[LN_MAX_DIMS];
  int lead = ndim - t->ndim;
  for (int i = ndim - 1; i >= 0; i--) {
    int j = i - lead;  /* matching dim of t, or < 0 for a new leading dim */
    int64_t have_size = j >= 0 ? t->sizes[j] : 1;
    int64_t want_size = sizes[i] == -1 ? have_size : sizes[i];
    if (j < 0 && sizes[i] == -1) {
      ln_error(LN_EINVAL, "The expanded size of the tensor (-1) isn't allowed in a "
               "leading, non-existing dimension %d", i);
      return NULL;
    }
    if (have_size == want_size) {
      out[i] = want_size;
      strides[i] = j >= 0 ? t->strides[j] : 0;
    } else if (have_size == 1 && want_size >= 0) {
      out[i] = want_size;
      strides[i] = 0;
    } else {
      ln_error(LN_EINVAL, "The expanded size of the tensor (%lld) must match the "
               "existing size (%lld) at non-singleton dimension %d.  Target sizes: %s."
               "  Tensor sizes: %s", (long long)want_size, (long long)have_size, i,
               shape_str(sizes, ndim, want, sizeof want),
               shape_str(t->sizes, t->ndim, have, sizeof have));
      return NULL;
    }
  }
  ln_tensor *v = ln_tensor_alias(t, out, strides, ndim, t->offset);
  return record(v, t, "ExpandBackward0", expand_backward, NULL, 0);
}

ln_tensor *ln_squeeze(ln_tensor *t, int dim) {
  int d;
  if (ln_wrap_dim(dim, t->ndim, &d) != LN_OK) return NULL;
  if (t->ndim == 0 || t->sizes[d] != 1) { ln_tensor_retain(t); return t; }
  int64_t sizes[LN_MAX_DIMS];
  int n = 0;
  for (int i = 0; i < t->ndim; i++)
    if (i != d) sizes[n++] = t->sizes[i];
  return ln_view(t, sizes, n);
}

ln_tensor *ln_unsqueeze(ln_tensor *t, int dim) {
  int d;
  if (ln_wrap_dim(dim, t->ndim + 1, &d) != LN_OK) return NULL;
  if (t->ndim >= LN_MAX_DIMS) {
    ln_error(LN_EINVAL, "tensors have at most %d dimensions", LN_MAX_DIMS);
    return NULL;
  }
  int64_t sizes[LN_MAX_DIMS];
  for (int i = 0, j = 0; i <= t->ndim; i++)
    sizes[i] = i == d ? 1 : t->sizes[j++];
  return ln_view(t, sizes, t->ndim + 1);
}

ln_tensor *ln_flatten(ln_tensor *t, int start_dim, int end_dim) {
  int s, e;
  if (t->ndim == 0) return ln_reshape(t, (int64_t[]){ 1 }, 1);
  if (ln_wrap_dim(start_dim, t->ndim, &s) != LN_OK ||
      ln_wrap_dim(end_dim, t->ndim, &e) != LN_OK)
    return NULL;
  if (s > e) {
    ln_error(LN_EINVAL, "flatten() has invalid args: start_dim cannot come after end_dim");
    return NULL;
  }
  int64_t sizes[LN_MAX_DIMS];
  int n = 0;
  for (int i = 0; i < s; i++) sizes[n++] = t->sizes[i];
  int64_t merged = 1;
  for (int i = s; i <= e; i++) merged *= t->sizes[i];
  sizes[n++] = merged;
  for (int i = e + 1; i < t->ndim; i++) sizes[n++] = t->sizes[i];
  return ln_reshape(t, sizes, n);
}

ln_tensor *ln_detach(ln_tensor *t) {
  ln_tensor *v = ln_tensor_alias(t, t->sizes, t->strides, t->ndim, t->offset);
  if (v) v->is_parameter = false;
  return v;
}
