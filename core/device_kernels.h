/*
** device_kernels.h -- the kernels a non-CPU backend gives core's generic
** ops. core/ does the checks, dtype promotion, broadcasting, allocation and
** autograd, exactly as for the CPU, and hands a backend only plain
** descriptions of memory: device pointers, dtypes, sizes and strides. A
** NULL entry means "not provided": the op then fails with "<op> is not
** implemented for cuda tensors yet".
**
** Every entry runs on the device's current stream and may return before
** the work is done; errors it can see (a launch failure) come back as an
** ln_status with a message. Results read back to the host go through the
** backend's copy, which waits for the stream.
*/
#ifndef LN_DEVICE_KERNELS_H
#define LN_DEVICE_KERNELS_H

#include <stdbool.h>
#include <stdint.h>

#include "dtype.h"
#include "hd.h"
#include "ops.h"
#include "status.h"
#include "tensor.h"

#define LN_EW_MAX_OPS 4

/* One operand of an elementwise or reduction kernel: its first element and
** its strides in elements over the iteration shape (0 where it is
** broadcast, or for the output of a reduction, reduced). */
typedef struct ln_ew_operand {
  void *data;
  ln_dtype dtype;
  int64_t strides[LN_MAX_DIMS];
} ln_ew_operand;

/* An iteration shape (outermost dim first, as tensors store it) and its
** operands; operand 0 is the one written. Size-1 dims are already dropped
** and dims contiguous for every operand merged (ln_ew_desc_for), so a
** kernel can test ndim == 1 with unit strides for its fast path. */
typedef struct ln_ew_desc {
  int device;                 /* the device index */
  int ndim, nops;
  int64_t numel;
  int64_t sizes[LN_MAX_DIMS];
  ln_ew_operand ops[LN_EW_MAX_OPS];
} ln_ew_desc;

/* Reductions: operand 0 (the output, in its dtype) has stride 0 along the
** reduced dims; every output element is written once (not accumulated). */
typedef enum ln_reduce_kind {
  LN_RK_SUM,
  LN_RK_MAX,
  LN_RK_MIN,
  LN_RK_SQDEV,  /* sum of (x - m)^2, m operand 2 (laid out as operand 0) */
  LN_RK_COUNT
} ln_reduce_kind;

/* binary's op beyond ln_binary_op: out = a + alpha * b. */
#define LN_BINARY_AXPY LN_BINARY_COUNT

/* The selects of pow's, maximum's and minimum's backward: operand 0 =
** f(g, a, b) of operands 1..3 (the gradient and the inputs), as
** core/ops_binary.c's CPU kernels compute it. */
typedef enum ln_grad_select {
  LN_GRAD_POW_A, LN_GRAD_POW_B, LN_GRAD_MAX_A, LN_GRAD_MAX_B, LN_GRAD_MIN_A, LN_GRAD_MIN_B,
  LN_GRAD_SELECT_COUNT
} ln_grad_select;

/* Integer power by squaring, wrapping on overflow like PyTorch; negative
** exponents give what integer arithmetic gives (0 unless |x| == 1). The CPU's
** and the device's kernels share it. */
LN_HD static inline int64_t ln_ipow(int64_t x, int64_t y) {
  if (y < 0) return x == 1 ? 1 : x == -1 ? ((y & 1) ? -1 : 1) : 0;
  uint64_t r = 1, b = (uint64_t)x;
  for (; y; y >>= 1, b *= b)
    if (y & 1) r *= b;
  return (int64_t)r;
}

typedef struct ln_device_kernels {
  /* ---- elementwise (operands converted on load to `compute`, the
  ** ln_kernel_dtype of the result, and on store to operand 0's dtype) ---- */
  ln_status (*unary)(ln_unary_op op, ln_dtype compute, const ln_ew_desc *d);
  ln_status (*binary)(int op, double alpha, ln_dtype compute, const ln_ew_desc *d);
  ln_status (*compare)(ln_compare_op op, ln_dtype compute, const ln_ew_desc *d);
  ln_status (*grad_select)(ln_grad_select kind, ln_dtype compute, const ln_ew_desc *d);
  /* operand 0 = operand 1, converted between their dtypes (PyTorch's
  ** casts: float -> int truncates, nonzero -> bool is true). */
  ln_status (*convert)(const ln_ew_desc *d);

  /* ---- reductions (accumulated in float for float16/bfloat16/float32,
  ** double for float64, int64 for int64 and bool) ---- */
  ln_status (*reduce)(ln_reduce_kind kind, const ln_ew_desc *d);
  /* operand 0 (int64, stride 0 along dim) = index of the first maximum of
  ** operand 1 along `dim` of the iteration shape (NaN counts as maximum). */
  ln_status (*argmax)(int dim, const ln_ew_desc *d);

  /* ---- linear algebra: ln_gemm's contract (row-major, float32/float64,
  ** float16/bfloat16 with float32 accumulation) over `batch` products
  ** whose operands lie sa, sb, sc elements apart ---- */
  ln_status (*gemm)(int device, ln_dtype dt, bool ta, bool tb, int64_t m, int64_t n,
                    int64_t k, double alpha, const void *a, int64_t lda, const void *b,
                    int64_t ldb, double beta, void *c, int64_t ldc, int64_t batch,
                    int64_t sa, int64_t sb, int64_t sc);

  /* ---- random: n contiguous values of dt from Philox counters
  ** counter, counter+1, ... under seed, the same values core/random.c
  ** draws on the CPU; normal when `normal`, else uniform in [a, b) ---- */
  ln_status (*philox_fill)(int device, void *data, ln_dtype dt, int64_t n, bool normal,
                           double a, double b, uint64_t seed, uint64_t counter);
} ln_device_kernels;

/* The kernels of dev's backend (NULL for the CPU or when none are given). */
const ln_device_kernels *ln_device_kernels_get(ln_device dev);

#endif
