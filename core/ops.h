/*
** ops.h -- generic tensor operations (CPU kernels in core/, other devices
** through their backend). Every op records autograd history when grad mode
** is on and an input requires grad, and every differentiable op has a
** backward. Results are NEW references, or NULL with a message set.
** Binary ops broadcast as PyTorch does and promote dtypes with
** ln_dtype_promote; both operands must be on the same device.
*/
#ifndef LN_OPS_H
#define LN_OPS_H

#include "tensor.h"

typedef enum ln_binary_op {
  LN_ADD, LN_SUB, LN_MUL, LN_DIV, LN_POW, LN_MAXIMUM, LN_MINIMUM,
  LN_BINARY_COUNT
} ln_binary_op;

typedef enum ln_unary_op {
  LN_NEG, LN_ABS, LN_SQRT, LN_EXP, LN_LOG, LN_RELU, LN_SIGN,
  LN_UNARY_COUNT
} ln_unary_op;

typedef enum ln_compare_op {
  LN_EQ, LN_NE, LN_LT, LN_LE, LN_GT, LN_GE, LN_COMPARE_COUNT
} ln_compare_op;

/* ---- elementwise ---- */
ln_tensor *ln_binary(ln_binary_op op, ln_tensor *a, ln_tensor *b);
ln_tensor *ln_add(ln_tensor *a, ln_tensor *b);
ln_tensor *ln_sub(ln_tensor *a, ln_tensor *b);
ln_tensor *ln_mul(ln_tensor *a, ln_tensor *b);
ln_tensor *ln_div(ln_tensor *a, ln_tensor *b);   /* int / int gives float32 */
ln_tensor *ln_pow(ln_tensor *a, ln_tensor *b);
ln_tensor *ln_unary(ln_unary_op op, ln_tensor *a);
ln_tensor *ln_neg(ln_tensor *a);
ln_tensor *ln_compare(ln_compare_op op, ln_tensor *a, ln_tensor *b); /* bool, no grad */
/* a op= b in place (b broadcast to a's shape, result cast to a's dtype). */
ln_status ln_binary_(ln_binary_op op, ln_tensor *a, ln_tensor *b);
/* a + alpha * b, one pass (optimizers, gradient accumulation). */
ln_tensor *ln_add_scaled(ln_tensor *a, ln_tensor *b, double alpha);
/* Scalar operand as a tensor: the scalar takes t's dtype when t is floating,
** else int64 for an integral value, float32 otherwise (PyTorch's rules for
** Python numbers). New 0-dim CPU tensor, converted as a cast (1e300 into
** float32 is inf), not refused as ln_scalar refuses it. */
ln_tensor *ln_scalar_like(ln_tensor *t, double value, bool is_integer);
/* An integer operand as ln_scalar_like(t, value, true), exact when it is
** int64 (a double holds 53 bits). */
ln_tensor *ln_scalar_like_int(ln_tensor *t, int64_t value);

/* ---- reductions over dims (ndims == 0 means all dims) ---- */
ln_tensor *ln_sum(ln_tensor *t, const int *dims, int ndims, bool keepdim);
ln_tensor *ln_mean(ln_tensor *t, const int *dims, int ndims, bool keepdim);
/* Variance with `correction` (1 = unbiased, 0 = biased), computed with a
** two-pass (mean, then centered squares) algorithm in the compute dtype. */
ln_tensor *ln_var(ln_tensor *t, const int *dims, int ndims, int correction,
                  bool keepdim);
ln_tensor *ln_max(ln_tensor *t, const int *dims, int ndims, bool keepdim);
ln_tensor *ln_min(ln_tensor *t, const int *dims, int ndims, bool keepdim);
/* Index of the max along one dim (int64), no grad. */
ln_tensor *ln_argmax(ln_tensor *t, int dim, bool keepdim);

/* ---- linear algebra ---- */
/* 1D/2D (and batched 3D) matmul as torch.matmul; float32/float64 through
** OpenBLAS, float16/bfloat16 computed in float32. */
ln_tensor *ln_matmul(ln_tensor *a, ln_tensor *b);

/* ---- joining ---- */
ln_tensor *ln_cat(ln_tensor *const *ts, int n, int dim);

#endif
