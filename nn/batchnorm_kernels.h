/*
** batchnorm_kernels.h -- the BatchNorm CPU kernels and the layout plan
** they run on. Private to nn/batchnorm_*.c.
**
** A (N, C, *) tensor is seen per channel as `outer` runs of `inner`
** elements: the non-channel dims, sorted by stride and coalesced, form at
** most two runs (the inner one first). Two layouts have kernels:
**   plane (NCHW-like): the inner run is contiguous; element (c, j, i) is at
**       c*s_c + j*s_outer + i;
**   rows (channels-last-like): channels are contiguous; element (c, j, i)
**       is at j*s_outer + i*s_inner + c, each (j, i) a row of C values.
** Any other layout is copied to a contiguous tensor first.
**
** Kernels take per-channel vectors in double and compute in float for
** float32/16/bf16 (storage types loaded as float) and in double for float64.
** They are deterministic: work is cut into blocks by the shape alone,
** partial results are merged in a fixed order in double, so the results do
** not depend on the thread count. Statistics are accurate far from zero:
** each block sums x - K and (x - K)^2 with K its first element, and blocks
** merge by Chan's formula; elementwise passes subtract the channel's mean
** rounded to the compute type (exact near the mean) and fold the rest of
** the mean into the shift.
**
** Variants reuse them: statistics over a narrowed batch (ghost BN) are the
** stats kernel on a narrowed view; a backward that is BatchNorm's with
** other per-channel scalars is ln_bn_cpu_backward (BatchRenorm: w*r for
** w); the fused ReLU (FusedBatchNorm2d) adds an addend and a bit mask to
** the same passes (fused_forward, and backward with a mask).
*/
#ifndef LN_BATCHNORM_KERNELS_H
#define LN_BATCHNORM_KERNELS_H

#include <stdbool.h>
#include <stdint.h>

#include "../core/tensor.h"

typedef struct ln_bn_geom {
  int64_t C, outer, inner;  /* channels; runs per channel; elements per run */
  bool rows;                /* channels-last kernels (else plane kernels) */
} ln_bn_geom;

/* One operand laid out for a geom: first element and strides in elements
** (plane: inner stride 1; rows: channel stride 1). */
typedef struct ln_bn_view {
  void *data;
  int64_t s_c, s_outer, s_inner;
} ln_bn_view;

/* Which dims of a tensor form the runs, so that other tensors of the same
** shape (the output, the incoming gradient) can be laid out alike. */
typedef struct ln_bn_plan {
  ln_bn_geom g;
  int ndim;
  int n_inner, n_outer;
  int inner_dims[LN_MAX_DIMS], outer_dims[LN_MAX_DIMS]; /* innermost first */
  bool c_inner_to_outer;    /* plane: channel stride below the outer run's */
} ln_bn_plan;

/* The fused ReLU's mask: one bit per element, set where the stored
** output passes the gradient: where it is not <= 0, so > 0 or NaN (PyTorch's
** threshold_backward, grad where not output <= 0: relu(NaN) = NaN passes
** it). Bit e is bit e % 32 of bits[e / 32], and an element's e is
** its offset in the output, a dense tensor from ln_bn_empty (so the bits
** follow the input's memory order, whatever C is). A mask view locates
** bits as a tensor view locates elements: e = off + c*s_c + j*s_outer +
** i*s_inner. The bits of n elements take (n + 31) / 32 words and one more
** of padding (the kernels read 32 bits from any position). */
typedef struct ln_bn_mask {
  uint32_t *bits;
  int64_t off, s_c, s_outer, s_inner;
} ln_bn_mask;

/* ---- layout (batchnorm_layout.c) ---- */
/* The plan for t (at least 2 dims, no empty dim); false when t's strides
** fit neither kernel and t must be made contiguous first. */
bool ln_bn_plan_for(const ln_tensor *t, ln_bn_plan *p);
/* t (same shape as the planned tensor) as a view for p's kernels; false
** when its strides do not coalesce into p's runs. */
bool ln_bn_view_for(const ln_bn_plan *p, const ln_tensor *t, ln_bn_view *v);
/* A new dense tensor of like's shape in `dtype`, laid out for p (the
** planned tensor's dim order). New reference or NULL. */
ln_tensor *ln_bn_empty(const ln_bn_plan *p, const ln_tensor *like, ln_dtype dtype);
/* The mask view of the elements of t (a view of the dense output `dense`,
** such as a narrowed block of it), bits at `bits`; false when t's strides
** do not coalesce into p's runs. */
bool ln_bn_mask_for(const ln_bn_plan *p, const ln_tensor *dense, const ln_tensor *t,
                    uint32_t *bits, ln_bn_mask *m);

/* ---- kernels (batchnorm_cpu.c); dt is the operands' dtype ---- */
/* The widest instruction set the kernels may use (the default: the
** widest the CPU has), for tests of each build of the loops; returns the
** previous limit. */
enum { LN_BN_ISA_BASE, LN_BN_ISA_AVX2, LN_BN_ISA_AVX512 };
int ln_bn_cpu_max_isa(int isa);
/* A map that reads again what a reduction has just read (the training
** forward's x, the training backward's x and dy) stores an output of at
** least `bytes` bytes past the caches (streaming stores), which then keep
** more of the inputs for it; returns the previous threshold. The default,
** LN_BN_STREAM_BYTES, leaves outputs that the caches could keep for the
** next layer in them; tests lower it to run the streaming path. */
#define LN_BN_STREAM_BYTES ((size_t)16 << 20)
size_t ln_bn_cpu_stream_threshold(size_t bytes);

/* invstd[c] = 1 / sqrt(var[c] + eps) and a[c] = w[c] * invstd[c], in
** double (the same bits whatever the instruction set). */
void ln_bn_cpu_invstd(const double *var, double eps, const double *w, double *invstd,
                      double *a, int64_t C);
/* Per-channel mean and biased variance of x over its outer*inner values
** (at least one). */
ln_status ln_bn_cpu_stats(ln_dtype dt, const ln_bn_geom *g, const ln_bn_view *x,
                          double *mean, double *var);
/* y = (x - mean[c]) * a[c] + b[c]; after_stats: x has just been read by
** ln_bn_cpu_stats (training; see ln_bn_cpu_stream_threshold). */
ln_status ln_bn_cpu_affine(ln_dtype dt, const ln_bn_geom *g, const ln_bn_view *x,
                           const ln_bn_view *y, const double *mean, const double *a,
                           const double *b, bool after_stats);
/* A training forward (ln_bn_cpu_train_forward) or backward
** (ln_bn_cpu_backward without mask or dz_out) of an input of at least
** `bytes` bytes goes a channel at a time, sums then map, where the layout
** allows (NCHW-like, long runs, channels that fit the L2): x and dy then
** come from memory once, not twice, and the output is streamed. Same bits
** either way. Returns the previous threshold; tests set 0 to take that
** path on small inputs, SIZE_MAX to compare with the two passes. */
#define LN_BN_CHANNEL_MIN ((size_t)4 << 20)
size_t ln_bn_cpu_channel_threshold(size_t bytes);
/* Training forward: the batch mean, biased variance and 1 / sqrt(var +
** eps) into mean, var, invstd, and y = (x - mean[c]) * w[c] * invstd[c]
** + b[c]. */
ln_status ln_bn_cpu_train_forward(ln_dtype dt, const ln_bn_geom *g, const ln_bn_view *x,
                                  const ln_bn_view *y, const double *w, const double *b,
                                  double eps, double *mean, double *var, double *invstd);
/* sum_dy[c] = sum of dy, sum_dyx[c] = sum of dy * (x - mean[c]). */
ln_status ln_bn_cpu_grad_sums(ln_dtype dt, const ln_bn_geom *g, const ln_bn_view *x,
                              const ln_bn_view *dy, const double *mean,
                              double *sum_dy, double *sum_dyx);
/* Training backward through the batch statistics (mean, invstd): the sums
** as above and, when dx is not NULL, with M = outer*inner values,
**   dx = w*invstd * (dy - sum_dy/M - (x - mean) * invstd^2 * sum_dyx/M).
** BatchRenorm's backward is this one with w*r for w. */
ln_status ln_bn_cpu_train_backward(ln_dtype dt, const ln_bn_geom *g, const ln_bn_view *x,
                                   const ln_bn_view *dy, const ln_bn_view *dx,
                                   const double *mean, const double *invstd,
                                   const double *w, double *sum_dy, double *sum_dyx);

/* The training backward's map alone, for sums made elsewhere over `count`
** values per channel (SyncBatchNorm: the group's sums and global count):
**   dx = w*invstd * (dy - sum_dy/count - (x - mean) * invstd^2 * sum_dyx/count),
** one pass, as the map of ln_bn_cpu_train_backward. */
ln_status ln_bn_cpu_train_dx(ln_dtype dt, const ln_bn_geom *g, const ln_bn_view *x,
                             const ln_bn_view *dy, const ln_bn_view *dx, const double *mean,
                             const double *invstd, const double *w, const double *sum_dy,
                             const double *sum_dyx, double count);

/* FusedBatchNorm2d's forward map: y = relu((x - mean[c]) * a[c] + b[c]
** (+ add)), NaN kept (relu(NaN) = NaN), and the mask bits, which must be
** zero on entry (bits on the edges of a thread's range are or-ed in).
** add may be NULL, and mask (no bits are then written); after_stats as
** for ln_bn_cpu_affine. */
ln_status ln_bn_cpu_fused_forward(ln_dtype dt, const ln_bn_geom *g, const ln_bn_view *x,
                                  const ln_bn_view *add, const ln_bn_view *y,
                                  const ln_bn_mask *mask, const double *mean,
                                  const double *a, const double *b, bool after_stats);
/* The backward of every BatchNorm form, in at most two passes. With dz the
** incoming gradient dy, or with a mask dy where the mask bit is set and 0
** elsewhere (NaN in dy stays out):
**   sums (sum_dy not NULL): sum_dy[c] = sum of dz,
**                           sum_dyx[c] = sum of dz * (x - mean[c]);
**   training (needs the sums): dx = w*invstd * (dz - sum_dy/M
**                                   - (x - mean) * invstd^2 * sum_dyx/M);
**   eval (running statistics are constants): dx = w*invstd * dz;
**   dz itself into dz_out (the addend's gradient) when not NULL.
** dx and dz_out may each be NULL; x may be NULL in eval without sums. */
ln_status ln_bn_cpu_backward(ln_dtype dt, const ln_bn_geom *g, const ln_bn_view *x,
                             const ln_bn_view *dy, const ln_bn_mask *mask,
                             const ln_bn_view *dx, const ln_bn_view *dz_out,
                             const double *mean, const double *invstd, const double *w,
                             bool training, double *sum_dy, double *sum_dyx);

#endif
