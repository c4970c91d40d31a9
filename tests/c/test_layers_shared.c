/*
** test_layers_shared.c -- the index math the CUDA layer kernels run
** (nn/layers_shared.h), proven on the CPU: conv2d through
** ln_conv_col_src's im2col and a naive product equals ln_conv2d; the
** gather col2im (ln_conv_col2im_at) equals both a scatter over
** ln_conv_col_src and conv2d's input gradient; the pools' gathered input
** gradients (ln_max_pool_grad_at, ln_adaptive_grad_at) equal the CPU
** backward's to the bit, over overlapping windows, padding, dilation, ceil
** mode, strides, groups and channels-last inputs; cuda/conv2d.cu's chunks
** of samples (ln_conv_chunk_of, the chunk offsets of both gathers) read
** and sum what the whole batch does.
*/
#include <stdlib.h>

#include "check.h"
#include "core/autograd.h"
#include "core/random.h"
#include "core/tensor.h"
#include "nn/layers.h"
#include "nn/layers_shared.h"

static ln_tensor *randn4(int64_t a, int64_t b, int64_t c, int64_t d) {
  int64_t s[4] = { a, b, c, d };
  return ln_randn(s, 4, LN_F64, LN_DEVICE_CPU);
}

static double at4(ln_tensor *t, int64_t n, int64_t c, int64_t h, int64_t w) {
  const double *p = ln_tensor_data(t);
  return p[ln_sh_at(ln_tensor_strides(t), n, c, h, w)];
}

/* ---- conv2d ---- */

typedef struct conv_case {
  int64_t N, C, H, W, OC, kh, kw, sh, sw, ph, pw, dh, dw, groups;
  bool channels_last;
} conv_case;

/* cuda/conv2d.cu walks the batch in chunks of samples: the chunk from n0
** of nb samples reads the im2col entries and gathers the col2im sums that
** the whole batch has at rows n0 * P on. dcol is the whole batch's (of the
** last group). Returns the number of entries that differ. */
static int64_t chunk_mismatches(const ln_conv_geom *g, const int64_t *xs, const double *dcol) {
  int64_t P = g->OH * g->OW, rows = g->N * P, Cg = g->C / g->groups;
  int64_t Kg = Cg * g->kh * g->kw, grp = g->groups - 1, bad = 0;
  double *part = malloc(sizeof(double) * (size_t)(Kg * rows + 1));
  for (int64_t chunk = 1; chunk < g->N; chunk++)
    for (int64_t n0 = 0; n0 < g->N; n0 += chunk) {
      int64_t nb = g->N - n0 < chunk ? g->N - n0 : chunk, crows = nb * P;
      for (int64_t kk = 0; kk < Kg; kk++)
        for (int64_t r = 0; r < crows; r++) {
          bad += ln_conv_col_src(g, xs, n0, grp, kk, r) !=
                 ln_conv_col_src(g, xs, 0, grp, kk, n0 * P + r);
          part[kk * crows + r] = dcol[kk * rows + n0 * P + r];
        }
      for (int64_t n = 0; n < nb; n++)
        for (int64_t c = 0; c < Cg; c++)
          for (int64_t ih = 0; ih < g->H; ih++)
            for (int64_t iw = 0; iw < g->W; iw++)
              bad += ln_conv_col2im_at(g, part, crows, true, 0.0, n, c, ih, iw) !=
                     ln_conv_col2im_at(g, dcol, rows, true, 0.0, n0 + n, c, ih, iw);
    }
  free(part);
  return bad;
}

static void check_conv(const conv_case *k) {
  ln_conv2d_params p = ln_conv2d_defaults();
  p.stride[0] = k->sh, p.stride[1] = k->sw, p.padding[0] = k->ph, p.padding[1] = k->pw;
  p.dilation[0] = k->dh, p.dilation[1] = k->dw, p.groups = k->groups;
  ln_tensor *x0 = randn4(k->N, k->C, k->H, k->W);
  ln_tensor *x = k->channels_last ? ln_contiguous(x0, LN_CHANNELS_LAST) : x0;
  if (x != x0) ln_tensor_release(x0);
  ln_tensor *w = randn4(k->OC, k->C / k->groups, k->kh, k->kw);
  ln_tensor_set_requires_grad(x, true);
  ln_tensor *y = ln_conv2d(x, w, NULL, &p);
  CHECK(y != NULL);
  if (!y) return;
  ln_conv_geom g = { .N = k->N, .C = k->C, .H = k->H, .W = k->W, .OC = k->OC,
                     .OH = ln_tensor_size(y, 2), .OW = ln_tensor_size(y, 3), .kh = k->kh,
                     .kw = k->kw, .sh = k->sh, .sw = k->sw, .ph = k->ph, .pw = k->pw,
                     .dh = k->dh, .dw = k->dw, .groups = k->groups };
  ln_tensor *gy = randn4(k->N, k->OC, g.OH, g.OW);
  CHECK_OK(ln_backward(y, gy, false));
  int64_t P = g.OH * g.OW, rows = g.N * P, Cg = g.C / g.groups, OCg = g.OC / g.groups;
  int64_t Kg = Cg * g.kh * g.kw, nx = ln_tensor_numel(x);
  const double *xv = ln_tensor_data(x), *wv = ln_tensor_data(w);
  const int64_t *xs = ln_tensor_strides(x);
  double *col = malloc(sizeof(double) * (size_t)(Kg * rows + 1));
  double *dcol = malloc(sizeof(double) * (size_t)(Kg * rows + 1));
  double *scatter = calloc((size_t)nx + 1, sizeof(double));
  double ferr = 0, gerr = 0, serr = 0;
  for (int64_t grp = 0; grp < g.groups; grp++) {
    for (int64_t kk = 0; kk < Kg; kk++)
      for (int64_t r = 0; r < rows; r++) {
        int64_t src = ln_conv_col_src(&g, xs, 0, grp, kk, r);
        col[kk * rows + r] = src < 0 ? 0 : xv[src];
      }
    for (int64_t oc = 0; oc < OCg; oc++)   /* forward: out = W_g colT */
      for (int64_t r = 0; r < rows; r++) {
        double s = 0;
        for (int64_t kk = 0; kk < Kg; kk++)
          s += wv[(grp * OCg + oc) * Kg + kk] * col[kk * rows + r];
        double want = at4(y, r / P, grp * OCg + oc, r % P / g.OW, r % g.OW);
        ferr = fmax(ferr, fabs(s - want));
      }
    for (int64_t kk = 0; kk < Kg; kk++)    /* dcol = W_g^T gy_g */
      for (int64_t r = 0; r < rows; r++) {
        double s = 0;
        for (int64_t oc = 0; oc < OCg; oc++)
          s += wv[(grp * OCg + oc) * Kg + kk] * at4(gy, r / P, grp * OCg + oc, r % P / g.OW,
                                                   r % g.OW);
        dcol[kk * rows + r] = s;
        int64_t src = ln_conv_col_src(&g, xs, 0, grp, kk, r);
        if (src >= 0) scatter[src] += s;
      }
    for (int64_t n = 0; n < g.N; n++)
      for (int64_t c = 0; c < Cg; c++)
        for (int64_t ih = 0; ih < g.H; ih++)
          for (int64_t iw = 0; iw < g.W; iw++) {
            double v = ln_conv_col2im_at(&g, dcol, rows, true, 0.0, n, c, ih, iw);
            int64_t off = ln_sh_at(xs, n, grp * Cg + c, ih, iw);
            serr = fmax(serr, fabs(v - scatter[off]));
            gerr = fmax(gerr, fabs(v - at4(ln_tensor_grad(x), n, grp * Cg + c, ih, iw)));
          }
  }
  CHECK(ferr < 1e-12);
  CHECK(serr == 0);   /* same additions in the same order */
  CHECK(gerr < 1e-12);
  CHECK(chunk_mismatches(&g, xs, dcol) == 0);
  if (ferr >= 1e-12 || serr != 0 || gerr >= 1e-12)
    fprintf(stderr, "  conv case N%lld C%lld %lldx%lld k%lldx%lld s%lld p%lld d%lld g%lld: "
            "forward %g scatter %g grad %g\n", (long long)k->N, (long long)k->C,
            (long long)k->H, (long long)k->W, (long long)k->kh, (long long)k->kw,
            (long long)k->sh, (long long)k->ph, (long long)k->dh, (long long)k->groups, ferr,
            serr, gerr);
  free(col);
  free(dcol);
  free(scatter);
  ln_tensor_release(gy);
  ln_tensor_release(y);
  ln_tensor_release(w);
  ln_tensor_release(x);
}

static void test_conv(void) {
  static const conv_case cases[] = {
    { 2, 3, 5, 6, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, false },
    { 2, 3, 7, 5, 2, 3, 2, 2, 1, 1, 0, 1, 1, 1, false },
    { 1, 4, 9, 8, 6, 3, 3, 2, 3, 2, 1, 2, 1, 2, false },
    { 3, 6, 6, 7, 6, 2, 3, 1, 2, 0, 2, 1, 2, 3, true },
    { 2, 2, 4, 4, 3, 1, 1, 3, 2, 0, 0, 1, 1, 1, true },
    { 1, 1, 3, 3, 1, 3, 3, 1, 1, 2, 2, 2, 2, 1, false },
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_conv(&cases[i]);
}

/* ln_conv_chunk_of: the most samples (1 at least, N at most) whose larger
** buffer (im2col or output rows) fits the budget. */
static void test_conv_chunk(void) {
  ln_conv_geom g = { .N = 10, .C = 6, .OC = 4, .OH = 5, .OW = 4, .kh = 3, .kw = 2,
                     .groups = 2 };
  int64_t per = 5 * 4 * (6 / 2 * 3 * 2) * 8;   /* one sample's im2col, float64 */
  CHECK(ln_conv_chunk_of(&g, 8, per) == 1);
  CHECK(ln_conv_chunk_of(&g, 8, 3 * per + per - 1) == 3);
  CHECK(ln_conv_chunk_of(&g, 8, 100 * per) == 10);
  CHECK(ln_conv_chunk_of(&g, 8, per / 2) == 1);
  g.OC = 40;                                     /* the output rows are larger */
  CHECK(ln_conv_chunk_of(&g, 4, 2 * 5 * 4 * 40 * 4) == 2);
  g.C = 0;                                       /* no input channels */
  CHECK(ln_conv_chunk_of(&g, 4, 5 * 4 * 40 * 4) == 1);
  g.OC = 0;
  CHECK(ln_conv_chunk_of(&g, 4, 5 * 4 * 4) == 1);
}

/* ---- pools ---- */

/* Every input gradient element gathered equals the CPU backward's. */
static void check_max_pool(int64_t H, int64_t W, const ln_pool2d_params *p) {
  ln_tensor *x = randn4(2, 3, H, W);
  ln_tensor_set_requires_grad(x, true);
  ln_tensor *y = ln_max_pool2d(x, p);
  CHECK(y != NULL);
  if (!y) {
    ln_tensor_release(x);
    return;
  }
  ln_pool_geom g = { .N = 2, .C = 3, .H = H, .W = W, .OH = ln_tensor_size(y, 2),
                     .OW = ln_tensor_size(y, 3), .kh = p->kernel[0], .kw = p->kernel[1],
                     .sh = p->stride[0] ? p->stride[0] : p->kernel[0],
                     .sw = p->stride[1] ? p->stride[1] : p->kernel[1], .ph = p->padding[0],
                     .pw = p->padding[1], .dh = p->dilation[0], .dw = p->dilation[1] };
  ln_tensor *gy = randn4(2, 3, g.OH, g.OW);
  CHECK_OK(ln_backward(y, gy, false));
  int64_t nout = ln_tensor_numel(y), k = 0;
  int64_t *idx = malloc(sizeof(int64_t) * (size_t)nout);
  double err = 0;
  for (int64_t n = 0; n < 2; n++)
    for (int64_t c = 0; c < 3; c++)
      for (int64_t oh = 0; oh < g.OH; oh++)
        for (int64_t ow = 0; ow < g.OW; ow++) {
          double v = ln_max_pool_at(&g, ln_tensor_data(x), ln_tensor_strides(x), true, n, c,
                                    oh, ow, &idx[k++]);
          err = fmax(err, fabs(v - at4(y, n, c, oh, ow)));
        }
  for (int64_t n = 0; n < 2; n++)
    for (int64_t c = 0; c < 3; c++)
      for (int64_t ih = 0; ih < H; ih++)
        for (int64_t iw = 0; iw < W; iw++) {
          double v = ln_max_pool_grad_at(&g, idx, ln_tensor_data(gy), ln_tensor_strides(gy),
                                         true, n, c, ih, iw);
          err = fmax(err, fabs(v - at4(ln_tensor_grad(x), n, c, ih, iw)));
        }
  CHECK(err == 0);
  free(idx);
  ln_tensor_release(gy);
  ln_tensor_release(y);
  ln_tensor_release(x);
}

static void check_adaptive(int64_t H, int64_t W, int64_t OH, int64_t OW) {
  ln_tensor *x = randn4(2, 3, H, W);
  ln_tensor_set_requires_grad(x, true);
  int64_t size[2] = { OH, OW };
  ln_tensor *y = ln_adaptive_avg_pool2d(x, size);
  ln_tensor *gy = randn4(2, 3, OH, OW);
  CHECK(y != NULL);
  CHECK_OK(ln_backward(y, gy, false));
  ln_pool_geom g = { .N = 2, .C = 3, .H = H, .W = W, .OH = OH, .OW = OW };
  double err = 0;
  for (int64_t n = 0; n < 2; n++)
    for (int64_t c = 0; c < 3; c++) {
      for (int64_t oh = 0; oh < OH; oh++)
        for (int64_t ow = 0; ow < OW; ow++)
          err = fmax(err, fabs(ln_adaptive_avg_at(&g, ln_tensor_data(x), ln_tensor_strides(x),
                                                  true, n, c, oh, ow) - at4(y, n, c, oh, ow)));
      for (int64_t ih = 0; ih < H; ih++)
        for (int64_t iw = 0; iw < W; iw++) {
          double v = ln_adaptive_grad_at(&g, ln_tensor_data(gy), ln_tensor_strides(gy), true,
                                         n, c, ih, iw);
          err = fmax(err, fabs(v - at4(ln_tensor_grad(x), n, c, ih, iw)));
        }
    }
  CHECK(err == 0);
  ln_tensor_release(gy);
  ln_tensor_release(y);
  ln_tensor_release(x);
}

/* The gather ranges hold every output whose window holds the input. */
static void test_ranges(void) {
  int64_t missed = 0;
  for (int64_t in = 1; in <= 9; in++)
    for (int64_t k = 1; k <= 4; k++)
      for (int64_t s = 1; s <= 3; s++)
        for (int64_t d = 1; d <= 2; d++)
          for (int64_t pad = 0; pad <= (d * (k - 1) + 1) / 2; pad++) {
            int64_t out = (in + 2 * pad - d * (k - 1) - 1) / s + 1;
            if (out < 1) continue;
            for (int64_t i = 0; i < in; i++) {
              int64_t lo, hi;
              ln_pool_window_outputs(i, k, s, pad, d, out, &lo, &hi);
              for (int64_t o = 0; o < out; o++)
                for (int64_t t = 0; t < k; t++)
                  if (ln_conv_in_pos(o, t, s, pad, d) == i && (o < lo || o >= hi)) missed++;
            }
          }
  for (int64_t in = 1; in <= 12; in++)
    for (int64_t out = 1; out <= 12; out++)
      for (int64_t i = 0; i < in; i++) {
        int64_t lo, hi;
        ln_adaptive_outputs(i, out, in, &lo, &hi);
        for (int64_t o = 0; o < out; o++)
          if (i >= ln_adaptive_start(o, out, in) && i < ln_adaptive_end(o, out, in) &&
              (o < lo || o >= hi))
            missed++;
      }
  CHECK(missed == 0);
}

static void test_pools(void) {
  ln_pool2d_params p = { .kernel = { 3, 3 }, .stride = { 1, 2 }, .padding = { 1, 1 },
                         .dilation = { 1, 1 } };
  check_max_pool(6, 7, &p);
  p = (ln_pool2d_params){ .kernel = { 3, 2 }, .stride = { 2, 1 }, .padding = { 1, 0 },
                          .dilation = { 2, 2 }, .ceil_mode = true };
  check_max_pool(9, 6, &p);
  p = (ln_pool2d_params){ .kernel = { 2, 2 }, .dilation = { 1, 1 } };
  check_max_pool(8, 8, &p);
  check_adaptive(7, 5, 3, 2);
  check_adaptive(5, 4, 7, 6);
  check_adaptive(6, 6, 4, 5);
}

int main(void) {
  ln_init();
  ln_manual_seed(0);
  int64_t live = ln_tensor_live_count();
  test_conv();
  test_conv_chunk();
  test_ranges();
  test_pools();
  CHECK(ln_tensor_live_count() == live);
  return check_done("test_layers_shared");
}
