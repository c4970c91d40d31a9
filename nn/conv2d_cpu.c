/*
** conv2d_cpu.c -- conv2d on CPU (conv2d_impl.h): the chunk size, then the
** typed kernels of conv2d_cpu.inc for float32 and float64, chosen by dtype.
** Planar inputs (NCHW) use the column form of the im2col matrix and
** channels-last inputs the row form (conv2d_cpu.inc), so that the copies
** read and write along unit strides; any other strides work in either.
** The gemms run outside OpenMP regions so that OpenBLAS uses its own
** threads; im2col, col2im and the row copies split their loops with OpenMP.
** Every element is computed by one thread in a fixed order, and OpenBLAS
** splits its products along M and N, so results do not depend on the
** thread count.
*/
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "../core/blas.h"
#include "conv2d_impl.h"
#include "layers_shared.h"   /* ln_conv_chunk_of */

/* Loops below this many elements stay on one thread. */
#define LN_CONV_PAR_MIN (1 << 16)
/* Bytes an im2col chunk may take: a few samples of a large input, the
** whole batch of a small one (one gemm per group then covers it all). */
#define LN_CONV_CHUNK_BYTES ((int64_t)32 << 20)

/* Samples per chunk (at least 1). */
static int64_t ln_conv_chunk(const ln_conv_geom *g, size_t elem) {
  return ln_conv_chunk_of(g, (int64_t)elem, LN_CONV_CHUNK_BYTES);
}

/* The outputs o in [0, n) whose input position start + o * step lies in
** [0, limit): [*lo, *hi). */
static inline void ln_conv_range(int64_t start, int64_t step, int64_t n, int64_t limit,
                                 int64_t *lo, int64_t *hi) {
  int64_t a = start >= 0 ? 0 : (-start + step - 1) / step;
  int64_t b = limit - start > 0 ? (limit - start - 1) / step + 1 : 0;
  *lo = a < n ? a : n;
  *hi = b < *lo ? *lo : b < n ? b : n;
}

/* The row form for inputs whose channels are closer in memory than their
** columns (channels-last); the column form otherwise (NCHW, views). */
static inline bool ln_conv_rows_form(const ln_conv_geom *g, const int64_t *xs) {
  return g->C / g->groups > 1 && xs[1] < xs[3];
}

#define T float
#define SFX f32
#define DT LN_F32
#include "conv2d_cpu.inc"
#undef T
#undef SFX
#undef DT

#define T double
#define SFX f64
#define DT LN_F64
#include "conv2d_cpu.inc"
#undef T
#undef SFX
#undef DT

ln_status ln_conv2d_cpu_forward(ln_dtype dt, const ln_conv_geom *g, const void *x,
                                const int64_t xs[4], const void *w, const void *b,
                                void *out, const int64_t os[4]) {
  if (dt == LN_F32) return forward_f32(g, x, xs, w, b, out, os);
  if (dt == LN_F64) return forward_f64(g, x, xs, w, b, out, os);
  return ln_error(LN_EINVAL, "conv2d kernels take float32 or float64, got %s",
                  ln_dtype_name(dt));
}

ln_status ln_conv2d_cpu_backward(ln_dtype dt, const ln_conv_geom *g, const void *x,
                                 const int64_t xs[4], const void *w, const void *gy,
                                 const int64_t gs[4], void *dx, const int64_t dxs[4],
                                 void *dw, void *db) {
  if (dt == LN_F32) return backward_f32(g, x, xs, w, gy, gs, dx, dxs, dw, db);
  if (dt == LN_F64) return backward_f64(g, x, xs, w, gy, gs, dx, dxs, dw, db);
  return ln_error(LN_EINVAL, "conv2d kernels take float32 or float64, got %s",
                  ln_dtype_name(dt));
}
