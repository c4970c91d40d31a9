/*
** layers_device.h -- the kernels a non-CPU backend gives the layers,
** losses and optimizers whose arithmetic is their own rather than core's
** ops (conv2d's im2col, the pools, softmax, cross entropy, dropout's mask,
** the optimizers' fused updates). Same pattern as core/device_kernels.h:
** nn/ does the checks, allocation and autograd exactly as for the CPU and
** hands a backend plain descriptions of device memory; a backend registers
** its table with ln_layer_kernels_register (cuda/layers_register.c); a NULL
** entry (or no table) makes the op fail with "<op> is not implemented for
** cuda:0 tensors yet".
**
** Every entry runs on the device's stream and may return before the work
** is done, except where it says it reads results back. Tensors are float32
** or float64 (16-bit inputs reach the kernels converted to float32, as on
** the CPU) unless an entry says otherwise; the optimizers take every
** floating dtype. Sizes and offsets are 64-bit element counts.
**
** C and C++ (.cu files include it inside extern "C").
*/
#ifndef LN_LAYERS_DEVICE_H
#define LN_LAYERS_DEVICE_H

#include <stdbool.h>
#include <stdint.h>

#include "../core/tensor.h"
#include "layers.h"

/* conv2d's geometry: input (N, C, H, W), output (N, OC, OH, OW). */
typedef struct ln_conv_geom {
  int64_t N, C, H, W;        /* input sizes */
  int64_t OC, OH, OW;        /* output channels and spatial size */
  int64_t kh, kw;
  int64_t sh, sw;            /* strides */
  int64_t ph, pw;            /* zero padding at the top and on the left */
  int64_t dh, dw;            /* dilations */
  int64_t groups;
} ln_conv_geom;

/* The pools' geometry: input (N, C, H, W), output (N, C, OH, OW); the
** window fields are max pooling's. fmt is the output's memory format. */
typedef struct ln_pool_geom {
  int64_t N, C, H, W, OH, OW;
  int64_t kh, kw, sh, sw, ph, pw, dh, dw;
  ln_memory_format fmt;
} ln_pool_geom;

/* softmax along D of a contiguous (outer, D, inner) tensor. */
typedef struct ln_softmax_shape { int64_t outer, D, inner; } ln_softmax_shape;

/* cross entropy: contiguous logits (N, C, S) (rows r = (n, s), class c at
** r / S * C * S + c * S + r % S), int64 targets (N * S). */
typedef struct ln_ce_geom {
  int64_t N, C, S;
  ln_reduction reduction;
  int64_t ignore_index, base;
  double total_weight;        /* sum of weight[t] over the counted rows */
} ln_ce_geom;

/* What cross_entropy_forward reads back to the host. */
typedef struct ln_ce_result {
  int64_t bad_row;            /* first row whose target is not a class, or N * S */
  int64_t bad_target;         /* its target value */
  double total;               /* sum of the rows' weighted losses */
  double total_weight;
} ln_ce_result;

/* One SGD or Adam update (lua/l_optim.c fills them from a param group). */
typedef struct ln_sgd_args {
  double lr, momentum, dampening, weight_decay;
  bool nesterov, maximize, first;
} ln_sgd_args;

typedef struct ln_adam_args {
  double lr, beta1, beta2, eps, weight_decay, step_size, bias_correction2_sqrt;
  bool maximize, decoupled;
} ln_adam_args;

typedef struct ln_layer_kernels {
  /* ---- conv2d: ln_conv2d_cpu_forward / _backward's contract
  ** (nn/conv2d_impl.h) on device memory; the gemms are the device's
  ** (core/device_kernels.h) ---- */
  ln_status (*conv2d_forward)(int device, ln_dtype dt, const ln_conv_geom *g, const void *x,
                              const int64_t xs[4], const void *w, const void *b, void *out,
                              const int64_t os[4]);
  ln_status (*conv2d_backward)(int device, ln_dtype dt, const ln_conv_geom *g, const void *x,
                               const int64_t xs[4], const void *w, const void *gy,
                               const int64_t gs[4], void *dx, const int64_t dxs[4], void *dw,
                               void *db);

  /* ---- pools (x, y, gy, dx through NCHW-ordered strides) ---- */
  /* y = window maxima (NaN wins, first maximum among ties); idx (int64,
  ** N * C * OH * OW, plane by plane) = the plane offset ih * W + iw of
  ** each, or NULL when not wanted. */
  ln_status (*max_pool2d_forward)(int device, ln_dtype dt, const ln_pool_geom *g,
                                  const void *x, const int64_t xs[4], void *y,
                                  const int64_t ys[4], int64_t *idx);
  /* dx = the sum of the gy whose idx is the element (dx written whole). */
  ln_status (*max_pool2d_backward)(int device, ln_dtype dt, const ln_pool_geom *g,
                                   const int64_t *idx, const void *gy, const int64_t gs[4],
                                   void *dx, const int64_t dxs[4]);
  /* forward: y = window means of x; backward: y (dx, written whole) = the
  ** sum over the windows holding the element of x (gy) / window size. */
  ln_status (*adaptive_avg_pool2d)(int device, ln_dtype dt, const ln_pool_geom *g,
                                   const void *x, const int64_t xs[4], void *y,
                                   const int64_t ys[4], bool backward);

  /* ---- softmax / log_softmax of contiguous tensors ---- */
  ln_status (*softmax_forward)(int device, ln_dtype dt, ln_softmax_shape s, const void *x,
                               void *y, bool take_log);
  ln_status (*softmax_backward)(int device, ln_dtype dt, ln_softmax_shape s, const void *y,
                                const void *g, void *dx, bool take_log);

  /* ---- cross entropy (x contiguous of dt, t int64, w (C) or NULL) ---- */
  /* lse (float64, rows) = each row's log-sum-exp; loss (dt, rows, or
  ** NULL) = each row's weighted loss; *res (host) read back, which waits
  ** for the stream. */
  ln_status (*cross_entropy_forward)(int device, ln_dtype dt, const ln_ce_geom *g,
                                     const void *x, const int64_t *t, const void *w,
                                     double *lse, void *loss, ln_ce_result *res);
  /* dx (contiguous like x) = (softmax - onehot) * weight[t] * scale * gv,
  ** gv float64: one value (mean, sum) or one per row (none). */
  ln_status (*cross_entropy_backward)(int device, ln_dtype dt, const ln_ce_geom *g,
                                      const void *x, const int64_t *t, const void *w,
                                      const double *lse, const double *gv, void *dx);

  /* ---- dropout: n dense uniform draws u of dt become the mask, in
  ** place: scale where u < keep, else 0 ---- */
  ln_status (*dropout_mask)(int device, ln_dtype dt, void *u, int64_t n, double keep,
                            double scale);

  /* ---- optimizers: lua/l_optim_kernels.inc's updates over n dense
  ** elements sharing one layout (any floating dt; buf, vmax may be NULL) ---- */
  ln_status (*sgd_step)(int device, ln_dtype dt, void *p, const void *g, void *buf,
                        int64_t n, const ln_sgd_args *a);
  ln_status (*adam_step)(int device, ln_dtype dt, void *p, const void *g, void *m, void *v,
                         void *vmax, int64_t n, const ln_adam_args *a);
} ln_layer_kernels;

/* Register k (static storage) for a device type; replaces any earlier. */
void ln_layer_kernels_register(ln_device_type type, const ln_layer_kernels *k);

/* The table of t's device, or NULL for the CPU or when none is registered. */
const ln_layer_kernels *ln_layer_kernels_of(const ln_tensor *t);

/* Does t's device have the entry? (False on the CPU, which needs none.) */
#define LN_LAYER_HAS(t, entry) \
  (ln_layer_kernels_of(t) != NULL && ln_layer_kernels_of(t)->entry != NULL)

#endif
