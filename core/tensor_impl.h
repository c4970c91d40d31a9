/*
** tensor_impl.h -- the tensor struct, for core/ kernels only.
** Everything outside core/ goes through tensor.h's accessors.
*/
#ifndef LN_TENSOR_IMPL_H
#define LN_TENSOR_IMPL_H

#include "autograd.h"
#include "tensor.h"

struct ln_tensor {
  int refcount;
  ln_storage *storage;          /* retained */
  ln_dtype dtype;
  int ndim;
  int64_t sizes[LN_MAX_DIMS];
  int64_t strides[LN_MAX_DIMS]; /* in elements; may be 0 (expand) */
  int64_t offset;               /* in elements */
  bool requires_grad;
  ln_tensor *grad;              /* retained, NULL until a backward */
  ln_node *grad_fn;             /* retained, NULL for leaves */
  int output_nr;
  /* A leaf's accumulate node while some graph holds it (not retained: the
  ** node retains the leaf and clears this when it dies). Every graph that
  ** reaches the leaf shares it, as PyTorch's grad_accumulator. */
  ln_node *grad_acc;
  bool is_parameter;
};

/* Check sizes (at most LN_MAX_DIMS, none negative, at most INT64_MAX / 16
** elements, so that a byte count fits) and return the element count, or -1
** with a message. Never overflows. */
int64_t ln_checked_numel(const int64_t *sizes, int ndim);

/* A new tensor struct over t's storage with t's dtype; geometry given. */
ln_tensor *ln_tensor_alias(ln_tensor *t, const int64_t *sizes,
                           const int64_t *strides, int ndim, int64_t offset);

/* Row-major strides for sizes, or channels-last strides for 4D/5D. */
void ln_contiguous_strides(const int64_t *sizes, int ndim, ln_memory_format fmt,
                           int64_t *strides);

#endif
