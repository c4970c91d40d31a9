/*
** ew_index.h -- where the operands of an ln_ew_desc (core/device_kernels.h)
** lie for a linear index of its iteration shape. Plain C usable from CUDA
** (LN_HD marks the functions __host__ __device__ under nvcc), so the CPU
** tests prove the index math the kernels use (tests/c/test_ew_index.c).
**
** A linear index i in [0, numel) walks the iteration shape in row-major
** order (sizes outermost first, the last dim fastest). Offsets are in
** elements from each operand's data pointer, 64-bit, and may be anything
** the strides give (0 along broadcast dims; permuted or channels-last
** strides).
*/
#ifndef LN_CUDA_EW_INDEX_H
#define LN_CUDA_EW_INDEX_H

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif
#include "core/device_kernels.h"
#include "core/hd.h"
#ifdef __cplusplus
}
#endif

/* off[k] = offset of operand k (k < d->nops) for linear index i. */
LN_HD static inline void ln_ew_offsets(const ln_ew_desc *d, int64_t i, int64_t *off) {
  for (int k = 0; k < d->nops; k++) off[k] = 0;
  for (int dim = d->ndim - 1; dim >= 0; dim--) {
    int64_t size = d->sizes[dim];
    int64_t idx = i % size;
    i /= size;
    for (int k = 0; k < d->nops; k++) off[k] += idx * d->ops[k].strides[dim];
  }
}

/* Is every operand one run of unit stride (offset == linear index)? */
LN_HD static inline bool ln_ew_is_flat(const ln_ew_desc *d) {
  if (d->ndim > 1) return false;
  for (int k = 0; k < d->nops; k++)
    if (d->ndim == 1 && d->sizes[0] > 1 && d->ops[k].strides[0] != 1) return false;
  return true;
}

#endif
