/*
** test_layers.c -- the layers and losses from C (nn/layers.h) against naive
** loops in double: conv2d forward and all three gradients (stride, padding,
** "same" with an even kernel, dilation, groups, channels-last and strided
** inputs), linear, max and adaptive pooling (ceil mode, padding,
** dilation), cross entropy (weights, ignored targets, every reduction,
** spatial targets) and mse; the modules' slots, forwards and text; errors;
** and no leaked tensors. The PyTorch comparisons are in
** tests/spec/layers_spec.lua.
*/
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "module_check.h"
#include "core/autograd.h"
#include "core/ops.h"
#include "core/random.h"
#include "core/tensor.h"
#include "nn/layers.h"

/* ---- helpers ---- */

static double get4(ln_tensor *t, int64_t a, int64_t b, int64_t c, int64_t d) {
  int64_t i[4] = { a, b, c, d };
  return ln_tensor_get(t, i);
}

static double flat(ln_tensor *t, int64_t k) {   /* row-major element k */
  int64_t idx[LN_MAX_DIMS];
  for (int d = ln_tensor_dim(t) - 1; d >= 0; d--) {
    idx[d] = k % ln_tensor_size(t, d);
    k /= ln_tensor_size(t, d);
  }
  return ln_tensor_get(t, idx);
}

static ln_tensor *randn(ln_dtype dt, int ndim, int64_t a, int64_t b, int64_t c, int64_t d) {
  int64_t s[4] = { a, b, c, d };
  return ln_randn(s, ndim, dt, LN_DEVICE_CPU);
}

static ln_tensor *leaf(ln_tensor *t) {
  ln_tensor_set_requires_grad(t, true);
  return t;
}

/* Largest |t[k] - want[k]| over t's elements in row-major order. */
static double max_err(ln_tensor *t, const double *want) {
  double e = 0;
  for (int64_t k = 0; k < ln_tensor_numel(t); k++) {
    double d = fabs(flat(t, k) - want[k]);
    if (d > e || isnan(d)) e = isnan(d) ? INFINITY : d;
  }
  return e;
}

/* ---- conv2d ---- */

typedef struct conv_case {
  int64_t N, C, H, W, OC, kh, kw;
  ln_conv2d_params p;
  bool bias, channels_last, strided;
} conv_case;

/* Naive conv2d and the gradients of sum(y * gy) in double, with the
** padding at the top/left `ph`/`pw` and the output size given. */
static void naive_conv(const conv_case *c, ln_tensor *x, ln_tensor *w, ln_tensor *b,
                       ln_tensor *gy, int64_t ph, int64_t pw, int64_t OH, int64_t OW,
                       double *y, double *gx, double *gw, double *gb) {
  int64_t G = c->p.groups, Cg = c->C / G, OCg = c->OC / G;
  memset(gx, 0, sizeof(double) * (size_t)(c->N * c->C * c->H * c->W));
  memset(gw, 0, sizeof(double) * (size_t)(c->OC * Cg * c->kh * c->kw));
  memset(gb, 0, sizeof(double) * (size_t)c->OC);
  for (int64_t n = 0; n < c->N; n++)
    for (int64_t o = 0; o < c->OC; o++)
      for (int64_t oh = 0; oh < OH; oh++)
        for (int64_t ow = 0; ow < OW; ow++) {
          double acc = b ? flat(b, o) : 0, g = get4(gy, n, o, oh, ow);
          gb[o] += g;
          for (int64_t ci = 0; ci < Cg; ci++)
            for (int64_t i = 0; i < c->kh; i++)
              for (int64_t j = 0; j < c->kw; j++) {
                int64_t ih = oh * c->p.stride[0] - ph + i * c->p.dilation[0];
                int64_t iw = ow * c->p.stride[1] - pw + j * c->p.dilation[1];
                if (ih < 0 || ih >= c->H || iw < 0 || iw >= c->W) continue;
                int64_t ch = o / OCg * Cg + ci;
                double xv = get4(x, n, ch, ih, iw), wv = get4(w, o, ci, i, j);
                acc += xv * wv;
                gx[((n * c->C + ch) * c->H + ih) * c->W + iw] += g * wv;
                gw[((o * Cg + ci) * c->kh + i) * c->kw + j] += g * xv;
              }
          y[((n * c->OC + o) * OH + oh) * OW + ow] = acc;
        }
}

static void check_conv(const conv_case *c, ln_dtype dt, double tol) {
  int64_t Cg = c->C / c->p.groups;
  ln_tensor *base = randn(dt, 4, c->N, c->C + (c->strided ? 2 : 0), c->H, c->W + 1);
  ln_tensor *x = NULL;
  if (c->strided) {
    ln_tensor *v = ln_narrow(base, 1, 1, c->C);
    x = ln_narrow(v, 3, 1, c->W);
    ln_tensor_release(v);
  } else {
    ln_tensor *v = ln_narrow(base, 3, 0, c->W);
    x = ln_contiguous(v, c->channels_last ? LN_CHANNELS_LAST : LN_CONTIGUOUS);
    ln_tensor_release(v);
  }
  ln_tensor_release(base);
  leaf(x);
  ln_tensor *w = leaf(randn(dt, 4, c->OC, Cg, c->kh, c->kw));
  ln_tensor *b = c->bias ? leaf(randn(dt, 1, c->OC, 0, 0, 0)) : NULL;
  ln_tensor *y = ln_conv2d(x, w, b, &c->p);
  CHECK(y != NULL);
  if (!y) {
    fprintf(stderr, "conv2d: %s\n", ln_last_error());
    goto done;
  }
  int64_t OH = ln_tensor_size(y, 2), OW = ln_tensor_size(y, 3), ph = c->p.padding[0],
          pw = c->p.padding[1];
  if (c->p.padding_kind == LN_PAD_SAME) {
    ph = c->p.dilation[0] * (c->kh - 1) / 2;
    pw = c->p.dilation[1] * (c->kw - 1) / 2;
    CHECK(OH == c->H && OW == c->W);
  } else if (c->p.padding_kind == LN_PAD_VALID) {
    ph = pw = 0;
  }
  CHECK(ln_tensor_is_contiguous(y, c->channels_last ? LN_CHANNELS_LAST : LN_CONTIGUOUS));
  ln_tensor *gy = randn(dt, 4, c->N, c->OC, OH, OW);
  size_t ny = (size_t)(c->N * c->OC * OH * OW), nx = (size_t)(c->N * c->C * c->H * c->W);
  double *buf = malloc(sizeof(double) * (ny + nx + (size_t)(c->OC * Cg * c->kh * c->kw) +
                                         (size_t)c->OC));
  double *ry = buf, *gx = ry + ny, *gw = gx + nx, *gb = gw + c->OC * Cg * c->kh * c->kw;
  naive_conv(c, x, w, b, gy, ph, pw, OH, OW, ry, gx, gw, gb);
  CHECK(max_err(y, ry) < tol);
  CHECK_OK(ln_backward(y, gy, false));
  CHECK(ln_tensor_grad(x) && max_err(ln_tensor_grad(x), gx) < tol);
  CHECK(ln_tensor_grad(w) && max_err(ln_tensor_grad(w), gw) < tol);
  if (b) CHECK(ln_tensor_grad(b) && max_err(ln_tensor_grad(b), gb) < tol);
  free(buf);
  ln_tensor_release(gy);
done:
  ln_tensor_release(y);
  ln_tensor_release(x);
  ln_tensor_release(w);
  ln_tensor_release(b);
}

static ln_conv2d_params params(int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh,
                               int64_t dw, int64_t groups) {
  ln_conv2d_params p = ln_conv2d_defaults();
  p.stride[0] = sh, p.stride[1] = sw, p.padding[0] = ph, p.padding[1] = pw;
  p.dilation[0] = dh, p.dilation[1] = dw, p.groups = groups;
  return p;
}

static void test_conv2d(void) {
  ln_conv2d_params same = ln_conv2d_defaults(), valid = ln_conv2d_defaults();
  same.padding_kind = LN_PAD_SAME;
  same.dilation[1] = 2;
  valid.padding_kind = LN_PAD_VALID;
  const conv_case cases[] = {
    { 2, 3, 6, 6, 4, 3, 3, params(1, 1, 0, 0, 1, 1, 1), true, false, false },
    { 2, 3, 7, 6, 5, 3, 3, params(2, 2, 1, 1, 1, 1, 1), true, false, false },
    { 2, 2, 8, 7, 3, 3, 2, params(2, 1, 1, 0, 1, 1, 1), false, false, false },
    { 1, 3, 9, 9, 4, 3, 3, params(1, 2, 2, 1, 2, 3, 1), true, false, false },
    { 2, 4, 5, 6, 6, 3, 3, params(1, 1, 1, 1, 1, 1, 2), true, false, false },
    { 3, 3, 5, 5, 6, 3, 3, params(2, 2, 1, 1, 1, 1, 3), true, false, false },
    { 2, 3, 6, 5, 4, 3, 3, params(1, 1, 1, 1, 1, 1, 1), true, true, false },
    { 2, 4, 6, 7, 4, 2, 3, params(2, 1, 0, 1, 1, 2, 2), true, true, false },
    { 2, 3, 5, 5, 6, 3, 3, params(1, 1, 1, 1, 1, 1, 3), true, true, false },
    { 2, 3, 5, 6, 4, 3, 3, params(1, 2, 1, 0, 1, 1, 1), true, false, true },
    { 2, 2, 5, 6, 3, 4, 2, same, true, false, false },
    { 2, 3, 5, 6, 2, 3, 3, valid, true, false, false },
    { 0, 3, 5, 5, 2, 3, 3, params(1, 1, 0, 0, 1, 1, 1), true, false, false },
    { 2, 5, 4, 3, 3, 1, 1, params(1, 1, 0, 0, 1, 1, 1), true, false, false },
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    check_conv(&cases[i], LN_F64, 1e-10);
    check_conv(&cases[i], LN_F32, 1e-4);
  }
}

static void test_conv2d_errors(void) {
  ln_tensor *w = randn(LN_F32, 4, 8, 3, 3, 3), *x = randn(LN_F32, 4, 2, 4, 5, 5);
  ln_tensor *small = randn(LN_F32, 4, 2, 3, 2, 2);
  CHECK(ln_conv2d(x, w, NULL, NULL) == NULL);
  CHECK_MSG("Given groups=1, weight of size [8, 3, 3, 3], expected input[2, 4, 5, 5] to "
            "have 3 channels, but got 4 channels instead");
  CHECK(ln_conv2d(small, w, NULL, NULL) == NULL);
  CHECK_MSG("Calculated padded input size per channel: (2 x 2). Kernel size: (3 x 3). "
            "Kernel size can't be greater than actual input size");
  ln_conv2d_params p = ln_conv2d_defaults();
  p.stride[1] = 0;
  CHECK(ln_conv2d(small, w, NULL, &p) == NULL);
  CHECK_MSG("non-positive stride is not supported");
  ln_tensor_release(w);
  ln_tensor_release(x);
  ln_tensor_release(small);
}

/* ---- linear ---- */

static void test_linear(void) {
  ln_tensor *x = leaf(randn(LN_F64, 2, 4, 3, 0, 0)), *w = leaf(randn(LN_F64, 2, 5, 3, 0, 0));
  ln_tensor *b = leaf(randn(LN_F64, 1, 5, 0, 0, 0)), *y = ln_linear(x, w, b);
  double want[20], gx[12] = { 0 }, gw[15] = { 0 }, gb[5] = { 0 };
  for (int n = 0; n < 4; n++)
    for (int o = 0; o < 5; o++) {
      want[n * 5 + o] = flat(b, o);
      for (int i = 0; i < 3; i++) {
        want[n * 5 + o] += flat(x, n * 3 + i) * flat(w, o * 3 + i);
        gx[n * 3 + i] += flat(w, o * 3 + i);
        gw[o * 3 + i] += flat(x, n * 3 + i);
      }
      gb[o] += 1;
    }
  CHECK(y && max_err(y, want) < 1e-12);
  ln_tensor *s = ln_sum(y, NULL, 0, false);
  CHECK_OK(ln_backward(s, NULL, false));
  CHECK(max_err(ln_tensor_grad(x), gx) < 1e-12 && max_err(ln_tensor_grad(w), gw) < 1e-12 &&
        max_err(ln_tensor_grad(b), gb) < 1e-12);
  ln_tensor_release(s);
  ln_tensor_release(y);

  ln_module *m = ln_linear_new(3, 5, true, LN_F64, LN_DEVICE_CPU);
  CHECK(m && repr_is(m, "Linear(in_features=3, out_features=5, bias=true)"));
  CHECK(ln_module_slot_count(m) == 2 && strcmp(ln_module_slot_name(m, 0), "weight") == 0 &&
        strcmp(ln_module_slot_name(m, 1), "bias") == 0);
  ln_tensor *mw = ln_module_get_tensor(m, "weight");
  CHECK(ln_tensor_size(mw, 0) == 5 && ln_tensor_size(mw, 1) == 3 && ln_tensor_requires_grad(mw));
  double bound = 1 / sqrt(3.0), mx = 0;
  for (int k = 0; k < 15; k++) mx = fmax(mx, fabs(flat(mw, k)));
  CHECK(mx <= bound && mx > 0);
  ln_tensor *my = ln_module_call(m, &x, 1);
  CHECK(my && ln_tensor_size(my, 1) == 5);
  ln_tensor_release(my);
  ln_module_release(m);
  m = ln_linear_new(3, 5, false, LN_F32, LN_DEVICE_CPU);
  CHECK(m && repr_is(m, "Linear(in_features=3, out_features=5, bias=false)") &&
        !ln_module_get_tensor(m, "bias"));
  ln_module_release(m);
  CHECK(ln_linear(x, b, NULL) == NULL);
  ln_tensor_release(x);
  ln_tensor_release(w);
  ln_tensor_release(b);
}

/* ---- pooling ---- */

static int64_t out_size(int64_t in, int64_t k, int64_t p, int64_t s, int64_t d, bool ceil) {
  int64_t span = in + 2 * p - d * (k - 1) - 1;
  int64_t o = (ceil ? (span + s - 1) / s : span / s) + 1;
  if (ceil && (o - 1) * s >= in + p) o--;
  return o;
}

static void check_max_pool(ln_pool2d_params p, bool channels_last) {
  ln_tensor *x0 = randn(LN_F64, 4, 2, 3, 7, 8);
  ln_tensor *x = leaf(ln_contiguous(x0, channels_last ? LN_CHANNELS_LAST : LN_CONTIGUOUS));
  ln_tensor_release(x0);
  ln_tensor *y = ln_max_pool2d(x, &p);
  int64_t sh = p.stride[0] ? p.stride[0] : p.kernel[0], sw = p.stride[1] ? p.stride[1] : p.kernel[1];
  int64_t OH = out_size(7, p.kernel[0], p.padding[0], sh, p.dilation[0], p.ceil_mode);
  int64_t OW = out_size(8, p.kernel[1], p.padding[1], sw, p.dilation[1], p.ceil_mode);
  CHECK(y && ln_tensor_size(y, 2) == OH && ln_tensor_size(y, 3) == OW);
  if (!y) return;
  CHECK(ln_tensor_is_contiguous(y, channels_last ? LN_CHANNELS_LAST : LN_CONTIGUOUS));
  double *want = malloc(sizeof(double) * (size_t)(6 * OH * OW)), gx[2 * 3 * 7 * 8] = { 0 };
  for (int64_t q = 0; q < 6; q++)
    for (int64_t oh = 0; oh < OH; oh++)
      for (int64_t ow = 0; ow < OW; ow++) {
        double best = -INFINITY;
        int64_t arg = -1;
        for (int64_t i = 0; i < p.kernel[0]; i++)
          for (int64_t j = 0; j < p.kernel[1]; j++) {
            int64_t ih = oh * sh - p.padding[0] + i * p.dilation[0];
            int64_t iw = ow * sw - p.padding[1] + j * p.dilation[1];
            if (ih < 0 || ih >= 7 || iw < 0 || iw >= 8) continue;
            double v = get4(x, q / 3, q % 3, ih, iw);
            if (v > best) best = v, arg = (q * 7 + ih) * 8 + iw;
          }
        want[(q * OH + oh) * OW + ow] = best;
        gx[arg] += 1;
      }
  CHECK(max_err(y, want) == 0);
  ln_tensor *s = ln_sum(y, NULL, 0, false);
  CHECK_OK(ln_backward(s, NULL, false));
  CHECK(max_err(ln_tensor_grad(x), gx) == 0);
  free(want);
  ln_tensor_release(s);
  ln_tensor_release(y);
  ln_tensor_release(x);
}

static void test_pooling(void) {
  ln_pool2d_params p = { .kernel = { 2, 2 }, .dilation = { 1, 1 } };
  check_max_pool(p, false);
  check_max_pool(p, true);
  ln_pool2d_params q = { .kernel = { 3, 2 }, .stride = { 2, 3 }, .padding = { 1, 1 },
                         .dilation = { 1, 2 }, .ceil_mode = true };
  check_max_pool(q, false);
  check_max_pool(q, true);

  /* adaptive: window means, and the gradient spread back over windows */
  ln_tensor *x = leaf(randn(LN_F64, 4, 1, 2, 5, 7));
  int64_t size[2] = { 3, 4 };
  ln_tensor *y = ln_adaptive_avg_pool2d(x, size);
  double want[24], gx[70] = { 0 };
  for (int c = 0; c < 2; c++)
    for (int oh = 0; oh < 3; oh++)
      for (int ow = 0; ow < 4; ow++) {
        int h0 = oh * 5 / 3, h1 = ((oh + 1) * 5 + 2) / 3, w0 = ow * 7 / 4, w1 = ((ow + 1) * 7 + 3) / 4;
        double s = 0, cnt = (h1 - h0) * (w1 - w0);
        for (int h = h0; h < h1; h++)
          for (int w = w0; w < w1; w++) {
            s += get4(x, 0, c, h, w);
            gx[(c * 5 + h) * 7 + w] += 1 / cnt;
          }
        want[(c * 3 + oh) * 4 + ow] = s / cnt;
      }
  CHECK(y && max_err(y, want) < 1e-12);
  ln_tensor *s = ln_sum(y, NULL, 0, false);
  CHECK_OK(ln_backward(s, NULL, false));
  CHECK(max_err(ln_tensor_grad(x), gx) < 1e-12);
  ln_tensor_release(s);
  ln_tensor_release(y);

  ln_module *m = ln_max_pool2d_new(&p, 0);
  CHECK(m && repr_is(m, "MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, "
                        "ceil_mode=false)"));
  ln_module_release(m);
  m = ln_adaptive_avg_pool2d_new((int64_t[]){ -1, 7 }, true);
  CHECK(m && repr_is(m, "AdaptiveAvgPool2d(output_size=(false, 7))"));
  int64_t osz[2];
  bool pair = false;
  CHECK(ln_adaptive_avg_pool2d_module_size(m, osz, &pair) && osz[0] == -1 && osz[1] == 7 && pair);
  y = ln_module_call(m, &x, 1);
  CHECK(y && ln_tensor_size(y, 2) == 5 && ln_tensor_size(y, 3) == 7);
  ln_tensor_release(y);
  ln_module_release(m);
  ln_tensor_release(x);

  ln_tensor *tiny = randn(LN_F32, 4, 2, 3, 2, 2);
  ln_pool2d_params big = { .kernel = { 3, 3 }, .dilation = { 1, 1 } };
  CHECK(ln_max_pool2d(tiny, &big) == NULL);
  CHECK_MSG("Given input size: (3x2x2). Calculated output size: (3x0x0). Output size is too small");
  ln_tensor_release(tiny);
}

/* ---- losses ---- */

static void check_ce(ln_reduction r, bool weighted, int64_t ignore) {
  int64_t N = 5, C = 4, S = 3;
  ln_tensor *x = leaf(randn(LN_F64, 3, N, C, S, 0));
  int64_t ts[2] = { N, S };
  ln_tensor *t = ln_empty(ts, 2, LN_I64, LN_DEVICE_CPU);
  int64_t *tv = ln_tensor_data(t);
  for (int64_t k = 0; k < N * S; k++) tv[k] = (k * 7 + 1) % C;
  ln_tensor *w = weighted ? ln_rand((int64_t[]){ C }, 1, LN_F64, LN_DEVICE_CPU) : NULL;
  ln_cross_entropy_options o = ln_cross_entropy_defaults();
  o.reduction = r;
  o.weight = w;
  o.ignore_index = ignore;
  ln_tensor *y = ln_cross_entropy(x, t, &o);
  CHECK(y != NULL);
  double loss[15], total = 0, wsum = 0, gx[60] = { 0 };
  for (int64_t n = 0; n < N; n++)
    for (int64_t s = 0; s < S; s++) {
      int64_t tc = tv[n * S + s];
      double lse = 0, wt = tc == ignore ? 0 : w ? flat(w, tc) : 1;
      for (int64_t c = 0; c < C; c++) lse += exp(flat(x, (n * C + c) * S + s));
      lse = log(lse);
      loss[n * S + s] = tc == ignore ? 0 : wt * (lse - flat(x, (n * C + tc) * S + s));
      total += loss[n * S + s];
      wsum += wt;
      for (int64_t c = 0; c < C; c++)
        gx[(n * C + c) * S + s] = wt * (exp(flat(x, (n * C + c) * S + s) - lse) - (c == tc));
    }
  double scale = r == LN_REDUCTION_MEAN ? 1 / wsum : 1;
  for (int k = 0; k < 60; k++) gx[k] *= scale;
  if (r == LN_REDUCTION_NONE) CHECK(y && max_err(y, loss) < 1e-12);
  else CHECK(y && fabs(flat(y, 0) - total * scale) < 1e-12);
  ln_tensor *s = y ? ln_sum(y, NULL, 0, false) : NULL;
  CHECK_OK(ln_backward(s, NULL, false));
  CHECK(max_err(ln_tensor_grad(x), gx) < 1e-12);
  ln_tensor_release(s);
  ln_tensor_release(y);
  ln_tensor_release(x);
  ln_tensor_release(t);
  ln_tensor_release(w);
}

static void test_losses(void) {
  for (int r = 0; r < 3; r++) {
    check_ce((ln_reduction)r, false, -100);
    check_ce((ln_reduction)r, true, 2);
  }
  ln_tensor *x = randn(LN_F32, 2, 3, 10, 0, 0);
  ln_tensor *t = ln_full((int64_t[]){ 3 }, 1, 10, LN_I64, LN_DEVICE_CPU);
  CHECK(ln_cross_entropy(x, t, NULL) == NULL);
  CHECK_MSG("Target 10 is out of bounds.");
  ln_cross_entropy_options one = ln_cross_entropy_defaults();
  one.index_base = 1;
  ln_tensor *y = ln_cross_entropy(x, t, &one);   /* class 10 of 10 counting from 1 */
  CHECK(y != NULL);
  ln_tensor_release(y);
  ln_reduction red;
  CHECK(ln_reduction_parse("foo", &red) == LN_EINVAL);
  CHECK_MSG("foo is not a valid value for reduction");

  ln_tensor *a = leaf(randn(LN_F64, 2, 3, 4, 0, 0)), *b = randn(LN_F64, 2, 3, 4, 0, 0);
  ln_tensor *mse = ln_mse_loss(a, b, LN_REDUCTION_MEAN);
  double want = 0, ga[12];
  for (int k = 0; k < 12; k++) {
    double d = flat(a, k) - flat(b, k);
    want += d * d / 12;
    ga[k] = 2 * d / 12;
  }
  CHECK(mse && fabs(flat(mse, 0) - want) < 1e-12);
  CHECK_OK(ln_backward(mse, NULL, false));
  CHECK(max_err(ln_tensor_grad(a), ga) < 1e-12);

  ln_module *m = ln_cross_entropy_loss_new(NULL);
  ln_tensor *in[2] = { x, t };
  CHECK(m && repr_is(m, "CrossEntropyLoss()"));
  CHECK(ln_module_call(m, in, 2) == NULL);   /* index base 0: 10 is out of bounds */
  ln_module_release(m);
  ln_tensor_release(mse);
  ln_tensor_release(a);
  ln_tensor_release(b);
  ln_tensor_release(x);
  ln_tensor_release(t);
}

/* ---- the other modules ---- */

static void test_modules(void) {
  int64_t k[2] = { 3, 3 };
  ln_conv2d_params p = ln_conv2d_defaults();
  p.padding[0] = p.padding[1] = 1;
  ln_module *conv = ln_conv2d_new(2, 4, k, &p, true, LN_F32, LN_DEVICE_CPU);
  CHECK(conv && repr_is(conv, "Conv2d(2, 4, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))"));
  ln_tensor *cw = ln_module_get_tensor(conv, "weight");
  CHECK(ln_tensor_dim(cw) == 4 && ln_tensor_size(cw, 0) == 4 && ln_tensor_size(cw, 1) == 2);
  int64_t kk[2];
  CHECK(ln_conv2d_module_params(conv, kk)->padding[0] == 1 && kk[1] == 3);
  CHECK(ln_conv2d_new(3, 4, k, &(ln_conv2d_params){ .stride = { 1, 1 }, .dilation = { 1, 1 },
                                                    .groups = 2 }, true, LN_F32,
                      LN_DEVICE_CPU) == NULL);
  CHECK_MSG("in_channels must be divisible by groups");

  ln_module *relu = ln_relu_new(false), *flat_m = ln_flatten_new(1, -1);
  ln_module *drop = ln_dropout_new(0.25, false);
  CHECK(repr_is(relu, "ReLU()") && repr_is(flat_m, "Flatten(start_dim=2, end_dim=-1)") &&
        repr_is(drop, "Dropout(p=0.25, inplace=false)"));
  int sd, ed;
  CHECK(ln_flatten_module_dims(flat_m, &sd, &ed) && sd == 1 && ed == -1);
  CHECK(!ln_flatten_module_dims(relu, &sd, &ed));
  CHECK(ln_dropout_new(1.5, false) == NULL);
  CHECK_MSG("dropout probability has to be between 0 and 1, but got 1.5");

  ln_tensor *x = randn(LN_F32, 4, 2, 2, 4, 4);
  ln_tensor *h1 = ln_module_call(conv, &x, 1), *h2 = h1 ? ln_module_call(relu, &h1, 1) : NULL;
  ln_tensor *h3 = h2 ? ln_module_call(flat_m, &h2, 1) : NULL;
  CHECK(h3 && ln_tensor_dim(h3) == 2 && ln_tensor_size(h3, 1) == 64);
  ln_module_train(drop, false);
  ln_tensor *h4 = h3 ? ln_module_call(drop, &h3, 1) : NULL;
  CHECK(h4 == h3);   /* eval: the input itself */
  ln_tensor_release(h4);
  ln_tensor_release(h3);
  ln_tensor_release(h2);
  ln_tensor_release(h1);
  ln_tensor_release(x);
  ln_module_release(conv);
  ln_module_release(relu);
  ln_module_release(flat_m);
  ln_module_release(drop);
}

int main(void) {
  ln_init();
  ln_manual_seed(0);
  int64_t live = ln_tensor_live_count();
  test_conv2d();
  test_conv2d_errors();
  test_linear();
  test_pooling();
  test_losses();
  test_modules();
  CHECK(ln_tensor_live_count() == live);
  return check_done("test_layers");
}
