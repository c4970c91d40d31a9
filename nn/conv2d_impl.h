/*
** conv2d_impl.h -- the CPU kernels of ln_conv2d (nn/conv2d_cpu.c), for
** nn/conv2d.c only. They work on raw float32/float64 buffers described by
** a geometry; tensors, checks and autograd stay in conv2d.c.
**
** The batch is cut into chunks of samples whose im2col matrix fits a
** fixed budget. Per chunk and group, im2col lays out one column (or row)
** per output pixel of every sample of the chunk, so that one gemm per
** group covers the whole chunk (conv2d_cpu.inc has the two layouts).
** Inputs and outputs are read and written through their strides, so any
** layout (NCHW, channels-last, views) works without copies.
*/
#ifndef LN_CONV2D_IMPL_H
#define LN_CONV2D_IMPL_H

#include <stdint.h>

#include "../core/tensor.h"
#include "layers_device.h"   /* ln_conv_geom */

/* out = conv(x, w) + b. xs/os: strides (elements) of x and out in NCHW
** dim order; w contiguous (OC, C/groups, kh, kw); b (OC) or NULL. */
ln_status ln_conv2d_cpu_forward(ln_dtype dt, const ln_conv_geom *g, const void *x,
                                const int64_t xs[4], const void *w, const void *b,
                                void *out, const int64_t os[4]);

/* Gradients from gy (strides gs): dx (strides dxs; the caller zeroes it,
** the kernel adds into it), dw (contiguous, written), db (OC, written);
** each NULL when not wanted. */
ln_status ln_conv2d_cpu_backward(ln_dtype dt, const ln_conv_geom *g, const void *x,
                                 const int64_t xs[4], const void *w, const void *gy,
                                 const int64_t gs[4], void *dx, const int64_t dxs[4],
                                 void *dw, void *db);

#endif
