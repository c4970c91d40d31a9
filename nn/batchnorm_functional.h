/*
** batchnorm_functional.h -- the one BatchNorm forward that ln_batch_norm,
** ghost BN (virtual_batch_size), FusedBatchNorm2d and BatchRenorm share,
** and what its two halves share: batchnorm_functional.c (checks, the
** forward) and batchnorm_backward.c (the autograd node). Private to nn/.
*/
#ifndef LN_BATCHNORM_FUNCTIONAL_H
#define LN_BATCHNORM_FUNCTIONAL_H

#include "batchnorm.h"
#include "batchnorm_device.h"
#include "batchnorm_kernels.h"

/* One call. Tensors are borrowed and may be NULL (weight/bias: 1 and 0;
** running statistics: none). */
typedef struct ln_bn_args {
  ln_tensor *input, *running_mean, *running_var, *weight, *bias;
  ln_tensor *addend;        /* relu only: added before the ReLU (same shape as input) */
  bool training;            /* normalize with batch statistics */
  bool update;              /* training: update the running statistics when given */
  double momentum, eps;
  int64_t virtual_batch;    /* training: blocks of this many samples, each
                            ** normalized on its own (ghost BN); 0: one block */
  bool relu;                /* FusedBatchNorm2d: relu(bn(x) + addend) */
  bool renorm;              /* BatchRenorm: training corrects the batch
                            ** statistics towards the running ones */
  double rmax, dmax;        /* renorm: r in [1/rmax, rmax], d in [-dmax, dmax] */
} ln_bn_args;

/* The forward of every BatchNorm form (see batchnorm.h for ln_batch_norm's
** contract, which this extends). Ghost BN: the running statistics get,
** per channel, the mean over the blocks of their means and of their
** unbiased variances. BatchRenorm in training, with sigma = sqrt(running_var
** + eps), r = clip(sqrt(var_B + eps) / sigma, 1/rmax, rmax) and d =
** clip((mean_B - running_mean) / sigma, -dmax, dmax), both constants for
** autograd: y = ((x - mean_B) / sqrt(var_B + eps) * r + d) * w + b; r and d
** come from the running statistics before this call updates them.
** New reference or NULL. */
ln_tensor *ln_bn_forward(const ln_bn_args *a);

/* ---- between the forward and its node ---- */

/* Ghost BN cuts dim 0 into G blocks of V samples (G = 1: the whole tensor);
** `plan` is the plan of one block. */
typedef struct ln_bn_blocks {
  int64_t G, V;
  ln_bn_plan plan;
} ln_bn_blocks;

/* The blocks of x, the tensor the kernels read; false when a block's
** strides fit no kernel (x must then be made contiguous first). */
bool ln_bn_blocks_for(ln_tensor *x, int64_t G, ln_bn_blocks *b);
/* The view of block g of t (x's shape), or the mask view of block g of the
** dense output `dense` (bits at `bits`); false when it does not fit. */
bool ln_bn_block_view(const ln_bn_blocks *b, ln_tensor *t, int64_t g, ln_bn_view *v);
bool ln_bn_block_mask(const ln_bn_blocks *b, ln_tensor *dense, int64_t g, uint32_t *bits,
                      ln_bn_mask *m);
/* t (x's shape) as a tensor whose whole and blocks the kernels can read
** alongside x: t itself, or a copy laid out like x's output. New
** reference or NULL. */
ln_tensor *ln_bn_laid_out(const ln_bn_plan *plan, const ln_bn_blocks *b, ln_tensor *x,
                          ln_tensor *t);

/* A dtype as PyTorch's messages name it: "Float", "Long", ... */
const char *ln_bn_torch_type_name(ln_dtype t);
/* PyTorch's dtype checks of an input and p: running_mean, running_var,
** weight, bias (each may be NULL), with its messages. */
ln_status ln_bn_check_dtypes(ln_tensor *x, ln_tensor *const *p);

/* C-length vectors of any shape and dtype, read and written in double;
** out[c] = fill when t is NULL. */
void ln_bn_vec_load(const ln_tensor *t, int64_t C, double fill, double *out);
void ln_bn_vec_store(ln_tensor *t, const double *v);
/* t[c] = keep * t[c] + f * v[c], computed in double. */
void ln_bn_vec_blend(ln_tensor *t, double keep, double f, const double *v);

/* What the backward needs besides the saved tensors, in one allocation:
** per block and channel the mean and inverse std used (the batch's in
** training, the running statistics' in eval), BatchRenorm's r and d, and
** the blocks' mask views (bits set by the backward). On a device the
** statistics stay there, in dev_stats (batchnorm_device.h's rows), and
** only masks[0] is set, mask_step apart from block to block. */
typedef struct ln_bn_saved {
  int64_t C;
  ln_bn_blocks blocks;
  bool training, relu, renorm;
  double eps;                      /* the forward's */
  double *mean, *invstd, *r, *d;   /* G*C each; r, d NULL without renorm */
  ln_bn_mask *masks;               /* G, relu only */
  ln_tensor *dev_stats;            /* owned; NULL on the CPU */
  int64_t mask_step;
} ln_bn_saved;

/* Zeroed, for C channels and b's blocks; free with ln_bn_saved_free. */
ln_bn_saved *ln_bn_saved_new(int64_t C, const ln_bn_blocks *b, bool renorm, bool relu);
void ln_bn_saved_free(void *s);

/* ---- the device path (batchnorm_device.h) ---- */

/* t (x's shape) as a device operand of b's blocks; false when a block of
** it fits no kernel. */
bool ln_bn_dview_for(const ln_bn_blocks *b, ln_tensor *t, ln_bn_dview *v);
/* The C-length vector t (NULL: absent) as a device vector, in *held a new
** reference to the tensor described: t, or a dense copy when no single
** stride walks t (the caller copies a written copy back), NULL when t is. */
ln_status ln_bn_dvec_for(ln_tensor *t, ln_bn_dvec *v, ln_tensor **held);

/* Make out the result of the call's autograd node (inputs: input, weight,
** bias and, with relu, addend), saving x (what the kernels read), weight,
** bias and the mask tensor (relu). Takes s over, also on failure. */
ln_status ln_bn_record(ln_tensor *out, const ln_bn_args *a, ln_tensor *x, ln_tensor *mask,
                       ln_bn_saved *s);

#endif
