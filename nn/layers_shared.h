/*
** layers_shared.h -- the per-element, per-line and per-row arithmetic of
** the layers that the CPU loops (in nn/) and the CUDA kernels (in cuda/)
** both run, so that the two compute the same thing in the same order and
** the index math is proven by the CPU tests (tests/c/test_layers_shared.c).
** Plain C usable from CUDA: LN_HD marks the functions __host__ __device__
** under nvcc. Values are float32 or float64 (`f64`), computed in double and
** rounded to the storage type where the CPU loops round.
**
** The gather forms (ln_conv_col2im_at, ln_max_pool_grad_at,
** ln_adaptive_grad_at) give one input gradient element from everything
** that reaches it, in the order the CPU's scatter loops add them, so a
** device kernel can write each element once from one thread.
*/
#ifndef LN_LAYERS_SHARED_H
#define LN_LAYERS_SHARED_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>

#include "../core/hd.h"
#include "layers_device.h"


/* ---- loads and stores by a float64 flag ---- */

LN_HD static inline double ln_sh_ld(const void *p, int64_t i, bool f64) {
  return f64 ? ((const double *)p)[i] : (double)((const float *)p)[i];
}

LN_HD static inline void ln_sh_st(void *p, int64_t i, bool f64, double v) {
  if (f64) ((double *)p)[i] = v;
  else ((float *)p)[i] = (float)v;
}

/* v rounded to the storage type (a float32 sum of two floats equals the
** double sum rounded once). */
LN_HD static inline double ln_sh_round(double v, bool f64) {
  return f64 ? v : (double)(float)v;
}

/* Element (n, c, h, w) of a 4-D tensor with NCHW-ordered strides s. */
LN_HD static inline int64_t ln_sh_at(const int64_t *s, int64_t n, int64_t c, int64_t h,
                                     int64_t w) {
  return n * s[0] + c * s[1] + h * s[2] + w * s[3];
}

/* ---- conv2d (the column form of conv2d_cpu.inc: colT[k][r], k = (c, i,
** j) over one group's channels, r = (n, oh, ow) over the chunk's rows) ---- */

/* Samples per chunk (at least 1): as many as keep the larger of a chunk's
** im2col matrix and its output rows within budget bytes (planning, host). */
static inline int64_t ln_conv_chunk_of(const ln_conv_geom *g, int64_t elem, int64_t budget) {
  int64_t Kg = g->C / g->groups * g->kh * g->kw;
  int64_t width = Kg > g->OC ? Kg : g->OC;
  int64_t per_sample = g->OH * g->OW * (width ? width : 1) * elem;
  int64_t n = per_sample ? budget / per_sample : g->N;
  if (n > g->N) n = g->N;
  return n > 0 ? n : 1;
}

/* The input position that output o reads through tap k along one dim
** (outside [0, size) in the padding). */
LN_HD static inline int64_t ln_conv_in_pos(int64_t o, int64_t k, int64_t stride, int64_t pad,
                                           int64_t dil) {
  return o * stride - pad + k * dil;
}

/* The output along one dim whose tap k reads input position i, or -1. */
LN_HD static inline int64_t ln_conv_out_pos(int64_t i, int64_t k, int64_t stride, int64_t pad,
                                            int64_t dil, int64_t out) {
  int64_t t = i + pad - k * dil;
  if (t < 0 || t % stride) return -1;
  t /= stride;
  return t < out ? t : -1;
}

/* Offset in x of colT[k][r] for the chunk from sample n0, group grp; -1
** where it is padding (zero). */
LN_HD static inline int64_t ln_conv_col_src(const ln_conv_geom *g, const int64_t *xs,
                                            int64_t n0, int64_t grp, int64_t k, int64_t r) {
  int64_t P = g->OH * g->OW, KK = g->kh * g->kw, Cg = g->C / g->groups;
  int64_t n = r / P, oh = r % P / g->OW, ow = r % g->OW;
  int64_t c = k / KK, i = k / g->kw % g->kh, j = k % g->kw;
  int64_t ih = ln_conv_in_pos(oh, i, g->sh, g->ph, g->dh);
  int64_t iw = ln_conv_in_pos(ow, j, g->sw, g->pw, g->dw);
  if (ih < 0 || ih >= g->H || iw < 0 || iw >= g->W) return -1;
  return ln_sh_at(xs, n0 + n, grp * Cg + c, ih, iw);
}

/* The gradient of input element (n, c, ih, iw) (n within the chunk, c
** within the group) from colT (rows = nb * OH * OW): the sum over the taps
** that read it, in tap order, rounded as the CPU's dx += col does. */
LN_HD static inline double ln_conv_col2im_at(const ln_conv_geom *g, const void *colT,
                                             int64_t rows, bool f64, double acc, int64_t n,
                                             int64_t c, int64_t ih, int64_t iw) {
  int64_t P = g->OH * g->OW;
  for (int64_t i = 0; i < g->kh; i++) {
    int64_t oh = ln_conv_out_pos(ih, i, g->sh, g->ph, g->dh, g->OH);
    if (oh < 0) continue;
    for (int64_t j = 0; j < g->kw; j++) {
      int64_t ow = ln_conv_out_pos(iw, j, g->sw, g->pw, g->dw, g->OW);
      if (ow < 0) continue;
      int64_t k = (c * g->kh + i) * g->kw + j;
      acc = ln_sh_round(acc + ln_sh_ld(colT, k * rows + n * P + oh * g->OW + ow, f64), f64);
    }
  }
  return acc;
}

/* ---- pools ---- */

/* The outputs [*lo, *hi) along one dim whose max-pool window (size k)
** may hold input position i. */
LN_HD static inline void ln_pool_window_outputs(int64_t i, int64_t k, int64_t stride,
                                                int64_t pad, int64_t dil, int64_t out,
                                                int64_t *lo, int64_t *hi) {
  int64_t first = i + pad - (k - 1) * dil;   /* o * stride >= first */
  int64_t a = first <= 0 ? 0 : (first + stride - 1) / stride;
  int64_t b = (i + pad) / stride + 1;        /* o * stride <= i + pad */
  *lo = a < out ? a : out;
  *hi = b < *lo ? *lo : b < out ? b : out;
}

/* Max over the window of output (n, c, oh, ow); *arg = the plane offset
** ih * W + iw of the first maximum (NaN wins), -1 for an empty window. */
LN_HD static inline double ln_max_pool_at(const ln_pool_geom *g, const void *x,
                                          const int64_t *xs, bool f64, int64_t n, int64_t c,
                                          int64_t oh, int64_t ow, int64_t *arg) {
  double best = -INFINITY;
  *arg = -1;
  for (int64_t i = 0; i < g->kh; i++) {
    int64_t ih = ln_conv_in_pos(oh, i, g->sh, g->ph, g->dh);
    if (ih < 0 || ih >= g->H) continue;
    for (int64_t j = 0; j < g->kw; j++) {
      int64_t iw = ln_conv_in_pos(ow, j, g->sw, g->pw, g->dw);
      if (iw < 0 || iw >= g->W) continue;
      double v = ln_sh_ld(x, ln_sh_at(xs, n, c, ih, iw), f64);
      if (*arg < 0 || v > best || isnan(v)) {
        best = v;
        *arg = ih * g->W + iw;
      }
    }
  }
  return best;
}

/* The gradient of input element (n, c, ih, iw): the output gradients
** whose maximum it was, in output order. idx as ln_max_pool_at's args,
** plane by plane. */
LN_HD static inline double ln_max_pool_grad_at(const ln_pool_geom *g, const int64_t *idx,
                                               const void *gy, const int64_t *gs, bool f64,
                                               int64_t n, int64_t c, int64_t ih, int64_t iw) {
  int64_t hlo, hhi, wlo, whi, pos = ih * g->W + iw;
  const int64_t *ip = idx + (n * g->C + c) * g->OH * g->OW;
  ln_pool_window_outputs(ih, g->kh, g->sh, g->ph, g->dh, g->OH, &hlo, &hhi);
  ln_pool_window_outputs(iw, g->kw, g->sw, g->pw, g->dw, g->OW, &wlo, &whi);
  double acc = 0;
  for (int64_t oh = hlo; oh < hhi; oh++)
    for (int64_t ow = wlo; ow < whi; ow++)
      if (ip[oh * g->OW + ow] == pos)
        acc = ln_sh_round(acc + ln_sh_ld(gy, ln_sh_at(gs, n, c, oh, ow), f64), f64);
  return acc;
}

/* Adaptive pooling: output i of `out` along a dim averages the input range
** [ln_adaptive_start, ln_adaptive_end). */
LN_HD static inline int64_t ln_adaptive_start(int64_t i, int64_t out, int64_t in) {
  return i * in / out;
}

LN_HD static inline int64_t ln_adaptive_end(int64_t i, int64_t out, int64_t in) {
  return ((i + 1) * in + out - 1) / out;
}

/* The outputs [*lo, *hi) whose range holds input position i. */
LN_HD static inline void ln_adaptive_outputs(int64_t i, int64_t out, int64_t in, int64_t *lo,
                                             int64_t *hi) {
  int64_t b = ((i + 1) * out + in - 1) / in;
  *lo = i * out / in;
  *hi = b < out ? b : out;
}

/* The mean of output (n, c, oh, ow)'s window. */
LN_HD static inline double ln_adaptive_avg_at(const ln_pool_geom *g, const void *x,
                                              const int64_t *xs, bool f64, int64_t n,
                                              int64_t c, int64_t oh, int64_t ow) {
  int64_t h0 = ln_adaptive_start(oh, g->OH, g->H), h1 = ln_adaptive_end(oh, g->OH, g->H);
  int64_t w0 = ln_adaptive_start(ow, g->OW, g->W), w1 = ln_adaptive_end(ow, g->OW, g->W);
  double sum = 0;
  for (int64_t ih = h0; ih < h1; ih++)
    for (int64_t iw = w0; iw < w1; iw++) sum += ln_sh_ld(x, ln_sh_at(xs, n, c, ih, iw), f64);
  return sum / (double)((h1 - h0) * (w1 - w0));
}

/* The gradient of input element (n, c, ih, iw): gy / window size over the
** windows holding it, in output order (the CPU adds each in double and
** rounds to the storage type). */
LN_HD static inline double ln_adaptive_grad_at(const ln_pool_geom *g, const void *gy,
                                               const int64_t *gs, bool f64, int64_t n,
                                               int64_t c, int64_t ih, int64_t iw) {
  int64_t hlo, hhi, wlo, whi;
  ln_adaptive_outputs(ih, g->OH, g->H, &hlo, &hhi);
  ln_adaptive_outputs(iw, g->OW, g->W, &wlo, &whi);
  double acc = 0;
  for (int64_t oh = hlo; oh < hhi; oh++) {
    int64_t h0 = ln_adaptive_start(oh, g->OH, g->H), h1 = ln_adaptive_end(oh, g->OH, g->H);
    if (ih < h0 || ih >= h1) continue;
    for (int64_t ow = wlo; ow < whi; ow++) {
      int64_t w0 = ln_adaptive_start(ow, g->OW, g->W), w1 = ln_adaptive_end(ow, g->OW, g->W);
      if (iw < w0 || iw >= w1) continue;
      double v = ln_sh_ld(gy, ln_sh_at(gs, n, c, oh, ow), f64) / (double)((h1 - h0) * (w1 - w0));
      acc = ln_sh_round(acc + v, f64);
    }
  }
  return acc;
}

/* ---- softmax: line l of (outer, D, inner) starts at the returned offset
** and steps by inner ---- */

LN_HD static inline int64_t ln_softmax_line_start(ln_softmax_shape s, int64_t l) {
  return l / s.inner * s.D * s.inner + l % s.inner;
}

/* y = softmax or log_softmax of line l of x (max subtracted, sums in double). */
LN_HD static inline void ln_softmax_line(ln_softmax_shape s, const void *x, void *y, bool f64,
                                         bool take_log, int64_t l) {
  int64_t base = ln_softmax_line_start(s, l);
  double mx = -INFINITY, sum = 0;
  for (int64_t k = 0; k < s.D; k++) mx = fmax(mx, ln_sh_ld(x, base + k * s.inner, f64));
  for (int64_t k = 0; k < s.D; k++) sum += exp(ln_sh_ld(x, base + k * s.inner, f64) - mx);
  double lse = mx + log(sum);
  for (int64_t k = 0; k < s.D; k++) {
    double v = ln_sh_ld(x, base + k * s.inner, f64);
    ln_sh_st(y, base + k * s.inner, f64, take_log ? v - lse : exp(v - lse));
  }
}

/* softmax: dx = y * (g - sum(g * y)); log_softmax: dx = g - exp(y) * sum(g). */
LN_HD static inline void ln_softmax_line_backward(ln_softmax_shape s, const void *y,
                                                  const void *g, void *dx, bool f64,
                                                  bool take_log, int64_t l) {
  int64_t base = ln_softmax_line_start(s, l);
  double sum = 0;
  for (int64_t k = 0; k < s.D; k++) {
    int64_t i = base + k * s.inner;
    sum += take_log ? ln_sh_ld(g, i, f64) : ln_sh_ld(g, i, f64) * ln_sh_ld(y, i, f64);
  }
  for (int64_t k = 0; k < s.D; k++) {
    int64_t i = base + k * s.inner;
    double gi = ln_sh_ld(g, i, f64), yi = ln_sh_ld(y, i, f64);
    ln_sh_st(dx, i, f64, take_log ? gi - exp(yi) * sum : yi * (gi - sum));
  }
}

/* ---- cross entropy: rows r = (n, s) of C classes strided by S ---- */

LN_HD static inline int64_t ln_ce_row_start(const ln_ce_geom *g, int64_t r) {
  return r / g->S * g->C * g->S + r % g->S;
}

/* Is target value v neither ignored nor a class? */
LN_HD static inline bool ln_ce_bad_target(const ln_ce_geom *g, int64_t v) {
  return v != g->ignore_index && (v - g->base < 0 || v - g->base >= g->C);
}

/* Class of row r's target, or -1 when it is ignored. Targets are valid. */
LN_HD static inline int64_t ln_ce_class(const ln_ce_geom *g, const int64_t *t, int64_t r) {
  return t[r] == g->ignore_index ? -1 : t[r] - g->base;
}

/* weight[c] (1 without weights). */
LN_HD static inline double ln_ce_weight(const void *w, int64_t c, bool f64) {
  return w ? ln_sh_ld(w, c, f64) : 1.0;
}

/* Row r's log-sum-exp (*lse) and weighted loss (returned; 0 when ignored). */
LN_HD static inline double ln_ce_row(const ln_ce_geom *g, const void *x, const int64_t *t,
                                     const void *w, bool f64, int64_t r, double *lse) {
  int64_t c0 = ln_ce_class(g, t, r), b = ln_ce_row_start(g, r);
  double mx = -INFINITY, sum = 0;
  for (int64_t c = 0; c < g->C; c++) mx = fmax(mx, ln_sh_ld(x, b + c * g->S, f64));
  for (int64_t c = 0; c < g->C; c++) sum += exp(ln_sh_ld(x, b + c * g->S, f64) - mx);
  *lse = mx + log(sum);
  return c0 < 0 ? 0.0 : ln_ce_weight(w, c0, f64) * (*lse - ln_sh_ld(x, b + c0 * g->S, f64));
}

/* Row r of dx = coef * (softmax - onehot), coef = weight[t] * the
** reduction's scale * the output gradient gv (one value, or one per row
** for reduction none); zeros for an ignored row. */
LN_HD static inline void ln_ce_row_backward(const ln_ce_geom *g, const void *x,
                                            const int64_t *t, const void *w, double lse,
                                            const double *gv, bool f64, int64_t r, void *dx) {
  int64_t c0 = ln_ce_class(g, t, r), b = ln_ce_row_start(g, r);
  double scale = g->reduction == LN_REDUCTION_MEAN ? 1.0 / g->total_weight : 1.0, coef = 0;
  if (c0 >= 0)
    coef = ln_ce_weight(w, c0, f64) * scale *
           (g->reduction == LN_REDUCTION_NONE ? gv[r] : gv[0]);
  for (int64_t c = 0; c < g->C; c++) {
    int64_t i = b + c * g->S;
    ln_sh_st(dx, i, f64, c0 < 0 ? 0.0 : coef * (exp(ln_sh_ld(x, i, f64) - lse) - (c == c0)));
  }
}

#endif
