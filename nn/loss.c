/*
** loss.c -- ln_cross_entropy (class-index targets, one fused node whose
** backward is softmax - onehot), ln_mse_loss (core ops), reductions by
** name, and the CrossEntropyLoss and MSELoss modules.
**
** Cross entropy views the logits as rows r = (n, s) of C classes strided
** by S (the product of the dims after the class dim) in a contiguous copy.
** Targets are checked first in one serial pass, so that the first bad one
** is reported; the rows are then independent (OpenMP), and the reduction
** sums their losses in row order in double, so the result does not depend
** on the thread count. The node keeps each row's log-sum-exp.
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/autograd.h"
#include "../core/ops.h"
#include "layers_impl.h"

#define CE_PAR_MIN (1 << 14)

static const char *const reduction_names[] = { "mean", "sum", "none" };

ln_status ln_reduction_parse(const char *name, ln_reduction *out) {
  for (int i = 0; i < 3; i++)
    if (name && strcmp(name, reduction_names[i]) == 0) {
      *out = (ln_reduction)i;
      return LN_OK;
    }
  return ln_error(LN_EINVAL, "%s is not a valid value for reduction", name ? name : "None");
}

const char *ln_reduction_name(ln_reduction r) {
  return (unsigned)r < 3 ? reduction_names[r] : "?";
}

ln_cross_entropy_options ln_cross_entropy_defaults(void) {
  return (ln_cross_entropy_options){ .reduction = LN_REDUCTION_MEAN, .weight = NULL,
                                     .ignore_index = -100, .index_base = 0 };
}

/* ---- cross entropy ---- */

typedef struct ce_geom {
  int64_t N, C, S;            /* rows = N * S */
  ln_reduction reduction;
  int64_t ignore_index, base;
  double total_weight;        /* sum of weight[t] over the counted rows */
} ce_geom;

typedef struct ce_saved {
  ce_geom g;
  double lse[];               /* per row */
} ce_saved;

static inline double ld(const void *p, int64_t i, bool f64) {
  return f64 ? ((const double *)p)[i] : (double)((const float *)p)[i];
}

/* Class of row r's target, or -1 when it is ignored. Targets are valid. */
static inline int64_t class_of(const ce_geom *g, const int64_t *t, int64_t r) {
  return t[r] == g->ignore_index ? -1 : t[r] - g->base;
}

/* Rows (n, s) start at n * C * S + s; class c is c * S further. */
static inline int64_t row_start(const ce_geom *g, int64_t r) {
  return r / g->S * g->C * g->S + r % g->S;
}

static ln_status ce_backward(ln_node *node, ln_tensor **grad_out, ln_tensor **grad_in) {
  const ce_saved *s = node->extra;
  const ce_geom *g = &s->g;
  ln_tensor *x = ln_node_saved(node, 0), *t = ln_node_saved(node, 1);
  ln_tensor *w = node->n_saved > 2 ? ln_node_saved(node, 2) : NULL;
  if (!grad_out[0]) return LN_OK;
  if (!x || !t || (node->n_saved > 2 && !w)) return ln_last_status();
  ln_dtype dt = ln_tensor_dtype(x);
  bool f64 = dt == LN_F64;
  ln_tensor *g64 = ln_to_dtype(grad_out[0], LN_F64);
  ln_tensor *gc = g64 ? ln_contiguous(g64, LN_CONTIGUOUS) : NULL;
  ln_tensor *dx = gc ? ln_empty(ln_tensor_sizes(x), ln_tensor_dim(x), dt, LN_DEVICE_CPU) : NULL;
  ln_tensor_release(g64);
  if (!dx) {
    ln_tensor_release(gc);
    return ln_last_status();
  }
  const double *gv = ln_tensor_data(gc);
  const int64_t *tv = ln_tensor_data(t);
  const void *xv = ln_tensor_data(x), *wv = w ? ln_tensor_data(w) : NULL;
  void *dv = ln_tensor_data(dx);
  int64_t rows = g->N * g->S;
  double scale = g->reduction == LN_REDUCTION_MEAN ? 1.0 / g->total_weight : 1.0;
#pragma omp parallel for schedule(static) if (rows * g->C > CE_PAR_MIN)
  for (int64_t r = 0; r < rows; r++) {
    int64_t c0 = class_of(g, tv, r), b = row_start(g, r);
    double coef = 0;
    if (c0 >= 0)
      coef = (wv ? ld(wv, c0, f64) : 1.0) * scale *
             (g->reduction == LN_REDUCTION_NONE ? gv[r] : gv[0]);
    for (int64_t c = 0; c < g->C; c++) {
      int64_t i = b + c * g->S;
      double v = c0 < 0 ? 0.0 : coef * (exp(ld(xv, i, f64) - s->lse[r]) - (c == c0));
      if (f64) ((double *)dv)[i] = v;
      else ((float *)dv)[i] = (float)v;
    }
  }
  ln_tensor_release(gc);
  grad_in[0] = dx;
  return LN_OK;
}

/* The first target that is neither ignored nor a class, as PyTorch's
** "Target 11 is out of bounds." (the value as given). */
static ln_status check_targets(const ce_geom *g, const int64_t *t) {
  for (int64_t r = 0; r < g->N * g->S; r++)
    if (t[r] != g->ignore_index && (t[r] - g->base < 0 || t[r] - g->base >= g->C))
      return ln_error(LN_EINVAL, "Target %lld is out of bounds.", (long long)t[r]);
  return LN_OK;
}

static ln_status ce_record(ln_tensor *out, ln_tensor *input, ln_tensor *xc, ln_tensor *tc,
                           ln_tensor *wc, const ce_geom *g, double *lse) {
  int64_t rows = g->N * g->S;
  ln_node *node = ln_node_new("CrossEntropyLossBackward0", ce_backward, &input, 1, 1);
  ce_saved *s = node ? malloc(sizeof *s + sizeof(double) * (size_t)rows) : NULL;
  if (!s) {
    ln_node_release(node);
    return node ? ln_error(LN_ENOMEM, "out of memory in cross_entropy") : ln_last_status();
  }
  s->g = *g;
  memcpy(s->lse, lse, sizeof(double) * (size_t)rows);
  node->extra = s;
  node->free_extra = free;
  ln_tensor *src[3] = { xc, tc, wc };
  for (int i = 0; i < 3 && src[i]; i++) {
    ln_tensor *d = ln_detach(src[i]);
    if (!d) {
      ln_node_release(node);
      return ln_last_status();
    }
    ln_node_save(node, d);
    ln_tensor_release(d);
  }
  ln_set_history(out, node, 0);
  ln_node_release(node);
  return LN_OK;
}

/* Losses per row (weighted), the reduction, and the node. Input float32
** or float64, shapes checked. */
static ln_tensor *ce_run(ln_tensor *input, ln_tensor *target, ln_tensor *weight, ce_geom *g) {
  ln_dtype dt = ln_tensor_dtype(input);
  bool f64 = dt == LN_F64;
  int64_t rows = g->N * g->S;
  ln_tensor *xc = ln_contiguous(input, LN_CONTIGUOUS), *out = NULL;
  ln_tensor *tc = xc ? ln_contiguous(target, LN_CONTIGUOUS) : NULL;
  ln_tensor *wc = tc && weight ? ln_contiguous(weight, LN_CONTIGUOUS) : NULL;
  double *buf = malloc(sizeof(double) * (size_t)(2 * rows + 1));
  if (!tc || (weight && !wc) || !buf) {
    if (!buf) ln_error(LN_ENOMEM, "out of memory in cross_entropy");
    goto done;
  }
  double *loss = buf, *lse = buf + rows;
  const int64_t *tv = ln_tensor_data(tc);
  const void *xv = ln_tensor_data(xc), *wv = wc ? ln_tensor_data(wc) : NULL;
  if (check_targets(g, tv) != LN_OK) goto done;
#pragma omp parallel for schedule(static) if (rows * g->C > CE_PAR_MIN)
  for (int64_t r = 0; r < rows; r++) {
    int64_t c0 = class_of(g, tv, r), b = row_start(g, r);
    double mx = -INFINITY, sum = 0;
    for (int64_t c = 0; c < g->C; c++) mx = fmax(mx, ld(xv, b + c * g->S, f64));
    for (int64_t c = 0; c < g->C; c++) sum += exp(ld(xv, b + c * g->S, f64) - mx);
    lse[r] = mx + log(sum);
    loss[r] = c0 < 0 ? 0.0 : (wv ? ld(wv, c0, f64) : 1.0) * (lse[r] - ld(xv, b + c0 * g->S, f64));
  }
  double total = 0;
  g->total_weight = 0;
  for (int64_t r = 0; r < rows; r++) {
    int64_t c0 = class_of(g, tv, r);
    total += loss[r];
    if (c0 >= 0) g->total_weight += wv ? ld(wv, c0, f64) : 1.0;
  }
  if (g->reduction == LN_REDUCTION_NONE) {
    if (!(out = ln_empty(ln_tensor_sizes(target), ln_tensor_dim(target), dt, LN_DEVICE_CPU)))
      goto done;
    for (int64_t r = 0; r < rows; r++) {
      if (f64) ((double *)ln_tensor_data(out))[r] = loss[r];
      else ((float *)ln_tensor_data(out))[r] = (float)loss[r];
    }
  } else {
    double v = g->reduction == LN_REDUCTION_SUM ? total : total / g->total_weight;
    if (!(out = ln_full(NULL, 0, v, dt, LN_DEVICE_CPU))) goto done;
  }
  if (ln_any_requires_grad(&input, 1) &&
      ce_record(out, input, xc, tc, wc, g, lse) != LN_OK) {
    ln_tensor_release(out);
    out = NULL;
  }
done:
  ln_tensor_release(xc);
  ln_tensor_release(tc);
  ln_tensor_release(wc);
  free(buf);
  return out;
}

/* Shapes, dtypes and devices as PyTorch checks them; fills g's sizes. */
static ln_status check_ce(ln_tensor *x, ln_tensor *t, ln_tensor *w, ce_geom *g) {
  char b1[96], b2[96];
  int nd = ln_tensor_dim(x), td = ln_tensor_dim(t);
  ln_status st = ln_layer_check_float("cross_entropy", x);
  if (st != LN_OK) return st;
  if (nd == 0)
    return ln_error(LN_EINVAL, "cross_entropy: expected input of 1 or more dims (got 0)");
  if (ln_tensor_dtype(t) != LN_I64)
    return ln_error(LN_EINVAL, "expected target dtype to be Long, but got %s",
                    ln_layer_torch_type(ln_tensor_dtype(t)));
  g->N = nd == 1 ? 1 : ln_tensor_size(x, 0);
  g->C = ln_tensor_size(x, nd == 1 ? 0 : 1);
  g->S = 1;
  for (int d = 2; d < nd; d++) g->S *= ln_tensor_size(x, d);
  if (nd <= 2 && td > 1)
    return ln_error(LN_EINVAL, "0D or 1D target tensor expected, multi-target not supported");
  int64_t tn = nd == 1 ? ln_tensor_numel(t) : td ? ln_tensor_size(t, 0) : 0;
  if (tn != g->N)
    return ln_error(LN_EINVAL, "Expected input batch_size (%lld) to match target batch_size "
                    "(%lld).", (long long)g->N, (long long)tn);
  if (nd > 2) {
    bool same = td == nd - 1;
    for (int d = 1; same && d < td; d++) same = ln_tensor_size(t, d) == ln_tensor_size(x, d + 1);
    if (!same) {
      int64_t want[LN_MAX_DIMS];
      want[0] = g->N;
      for (int d = 2; d < nd; d++) want[d - 1] = ln_tensor_size(x, d);
      size_t k = 0;
      ln_layer_append(b1, sizeof b1, &k, "[");
      for (int d = 0; d < nd - 1; d++)
        ln_layer_append(b1, sizeof b1, &k, d ? ", %lld" : "%lld", (long long)want[d]);
      ln_layer_append(b1, sizeof b1, &k, "]");
      return ln_error(LN_EINVAL, "Expected target size %s, got %s", b1,
                      ln_layer_sizes_str(t, b2, sizeof b2));
    }
  }
  if (w && (ln_tensor_dim(w) != 1 || ln_tensor_numel(w) != g->C))
    return ln_error(LN_EINVAL, "weight tensor should be defined either for all %lld classes or "
                    "no classes but got weight tensor of shape: %s", (long long)g->C,
                    ln_layer_sizes_str(w, b1, sizeof b1));
  if (w && ln_tensor_dtype(w) != ln_tensor_dtype(x))
    return ln_error(LN_EINVAL, "expected scalar type %s but found %s",
                    ln_layer_torch_type(ln_tensor_dtype(x)),
                    ln_layer_torch_type(ln_tensor_dtype(w)));
  ln_tensor *others[2] = { t, w };
  for (int i = 0; i < 2; i++)
    if (others[i] && !ln_device_eq(ln_tensor_device(others[i]), ln_tensor_device(x)))
      return ln_error(LN_EINVAL, "Expected all tensors to be on the same device, but found "
                      "at least two devices, %s and %s!",
                      ln_device_str(ln_tensor_device(x), b1, sizeof b1),
                      ln_device_str(ln_tensor_device(others[i]), b2, sizeof b2));
  return LN_OK;
}

ln_tensor *ln_cross_entropy(ln_tensor *input, ln_tensor *target,
                            const ln_cross_entropy_options *o) {
  ln_cross_entropy_options opt = o ? *o : ln_cross_entropy_defaults();
  if (!input || !target) {
    ln_error(LN_EINVAL, "cross_entropy: input and target expected, got NULL");
    return NULL;
  }
  if ((unsigned)opt.reduction > LN_REDUCTION_NONE) {
    ln_error(LN_EINVAL, "cross_entropy: unknown reduction %d", (int)opt.reduction);
    return NULL;
  }
  ce_geom g = { .reduction = opt.reduction, .ignore_index = opt.ignore_index,
                .base = opt.index_base };
  if (check_ce(input, target, opt.weight, &g) != LN_OK) return NULL;
  ln_dtype dt = ln_tensor_dtype(input);
  if (dt != LN_F16 && dt != LN_BF16) return ce_run(input, target, opt.weight, &g);
  ln_tensor *x32 = ln_to_dtype(input, LN_F32);
  ln_tensor *w32 = x32 && opt.weight ? ln_to_dtype(opt.weight, LN_F32) : NULL;
  ln_tensor *y32 = x32 && (w32 || !opt.weight) ? ce_run(x32, target, w32, &g) : NULL;
  ln_tensor *y = y32 ? ln_to_dtype(y32, dt) : NULL;
  ln_tensor_release(x32);
  ln_tensor_release(w32);
  ln_tensor_release(y32);
  return y;
}

/* ---- mean squared error ---- */

static ln_tensor *reduce(ln_tensor *t, ln_reduction r) {
  if (!t || r == LN_REDUCTION_NONE) return t;
  ln_tensor *out = r == LN_REDUCTION_SUM ? ln_sum(t, NULL, 0, false) : ln_mean(t, NULL, 0, false);
  ln_tensor_release(t);
  return out;
}

ln_tensor *ln_mse_loss(ln_tensor *input, ln_tensor *target, ln_reduction reduction) {
  if (!input || !target) {
    ln_error(LN_EINVAL, "mse_loss: input and target expected, got NULL");
    return NULL;
  }
  if ((unsigned)reduction > LN_REDUCTION_NONE) {
    ln_error(LN_EINVAL, "mse_loss: unknown reduction %d", (int)reduction);
    return NULL;
  }
  ln_tensor *d = ln_sub(input, target);
  ln_tensor *sq = d ? ln_mul(d, d) : NULL;
  ln_tensor_release(d);
  return reduce(sq, reduction);
}

/* ---- modules ---- */

static ln_status module_reduction(ln_module *m, ln_reduction *r) {
  const char *name;
  ln_status st = ln_layer_attr_string(m, "reduction", &name);
  return st == LN_OK ? ln_reduction_parse(name, r) : st;
}

typedef struct ce_priv { int64_t index_base; } ce_priv;

static ln_tensor *ce_forward(ln_module *m, ln_tensor *const *in, int n) {
  ln_cross_entropy_options o = ln_cross_entropy_defaults();
  o.index_base = ((ce_priv *)ln_module_priv(m))->index_base;
  o.weight = ln_module_get_tensor(m, "weight");
  if (ln_layer_check_inputs(m, in, n, 2) != LN_OK || module_reduction(m, &o.reduction) != LN_OK ||
      ln_layer_attr_int(m, "ignore_index", &o.ignore_index) != LN_OK)
    return NULL;
  return ln_cross_entropy(in[0], in[1], &o);
}

static ln_tensor *mse_forward(ln_module *m, ln_tensor *const *in, int n) {
  ln_reduction r;
  if (ln_layer_check_inputs(m, in, n, 2) != LN_OK || module_reduction(m, &r) != LN_OK)
    return NULL;
  return ln_mse_loss(in[0], in[1], r);
}

static const ln_module_type ce_type = {
  .name = "CrossEntropyLoss", .version = 1, .forward = ce_forward,
  .free_priv = ln_layer_free_priv,
};

static const ln_module_type mse_type = {
  .name = "MSELoss", .version = 1, .forward = mse_forward,
};

ln_module *ln_cross_entropy_loss_new(const ln_cross_entropy_options *o) {
  ln_cross_entropy_options opt = o ? *o : ln_cross_entropy_defaults();
  ce_priv p = { opt.index_base };
  if ((unsigned)opt.reduction > LN_REDUCTION_NONE) {
    ln_error(LN_EINVAL, "CrossEntropyLoss: unknown reduction %d", (int)opt.reduction);
    return NULL;
  }
  ln_module *m = ln_layer_module_new(&ce_type, &p, sizeof p);
  if (!m) return NULL;
  ln_layer_attr attrs[2] = {
    { "ignore_index", { .kind = LN_ATTR_INT, .u.i = opt.ignore_index } },
    { "reduction", { .kind = LN_ATTR_STRING, .u.s = ln_reduction_name(opt.reduction) } },
  };
  ln_status st = ln_module_register_buffer(m, "weight", opt.weight, true);
  if (st == LN_OK) st = ln_layer_set_attrs(m, attrs, 2);
  if (st != LN_OK) {
    ln_module_release(m);
    return NULL;
  }
  return m;
}

ln_module *ln_mse_loss_new(ln_reduction reduction) {
  if ((unsigned)reduction > LN_REDUCTION_NONE) {
    ln_error(LN_EINVAL, "MSELoss: unknown reduction %d", (int)reduction);
    return NULL;
  }
  ln_module *m = ln_layer_module_new(&mse_type, NULL, 0);
  ln_attr a = { .kind = LN_ATTR_STRING, .u.s = ln_reduction_name(reduction) };
  if (m && ln_module_set_attr(m, "reduction", a) != LN_OK) {
    ln_module_release(m);
    return NULL;
  }
  return m;
}
