/*
** loss.c -- ln_cross_entropy (class-index targets, one fused node whose
** backward is softmax - onehot), ln_mse_loss (core ops), reductions by
** name, and the CrossEntropyLoss and MSELoss modules.
**
** Cross entropy views the logits as rows r = (n, s) of C classes strided
** by S (the product of the dims after the class dim) in a contiguous copy.
** On the CPU, targets are checked first in one serial pass, so that the
** first bad one is reported; the rows are then independent (OpenMP), and
** the reduction sums their losses in row order in double, so the result
** does not depend on the thread count. On another device the table's
** kernels (nn/layers_device.h) do the rows, find the first bad target and
** sum in double, and the sums come back to the host. The row arithmetic is
** nn/layers_shared.h's. The node saves each row's log-sum-exp (a float64
** tensor on the input's device).
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/autograd.h"
#include "../core/ops.h"
#include "layers_device.h"
#include "layers_impl.h"
#include "layers_shared.h"

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

typedef ln_ce_geom ce_geom;

/* Saved: the contiguous logits, the targets, the log-sum-exps, the weight
** (when given). */
static ln_status ce_backward(ln_node *node, ln_tensor **grad_out, ln_tensor **grad_in) {
  const ce_geom *g = node->extra;
  if (!grad_out[0]) return LN_OK;
  ln_tensor *x = ln_node_saved(node, 0), *t = ln_node_saved(node, 1);
  ln_tensor *lse = ln_node_saved(node, 2);
  ln_tensor *w = node->n_saved > 3 ? ln_node_saved(node, 3) : NULL;
  if (!x || !t || !lse || (node->n_saved > 3 && !w)) return ln_last_status();
  ln_dtype dt = ln_tensor_dtype(x);
  bool f64 = dt == LN_F64;
  ln_tensor *g64 = ln_to_dtype(grad_out[0], LN_F64);
  ln_tensor *gc = g64 ? ln_contiguous(g64, LN_CONTIGUOUS) : NULL;
  ln_tensor *dx = gc ? ln_empty(ln_tensor_sizes(x), ln_tensor_dim(x), dt, ln_tensor_device(x))
                     : NULL;
  ln_tensor_release(g64);
  if (!dx) {
    ln_tensor_release(gc);
    return ln_last_status();
  }
  const double *gv = ln_tensor_data(gc), *lv = ln_tensor_data(lse);
  const int64_t *tv = ln_tensor_data(t);
  const void *xv = ln_tensor_data(x), *wv = w ? ln_tensor_data(w) : NULL;
  void *dv = ln_tensor_data(dx);
  const ln_layer_kernels *lk = ln_layer_kernels_of(x);
  ln_status st = LN_OK;
  if (lk) {
    st = lk->cross_entropy_backward(ln_tensor_device(x).index, dt, g, xv, tv, wv, lv, gv, dv);
  } else {
    int64_t rows = g->N * g->S;
#pragma omp parallel for schedule(static) if (rows * g->C > CE_PAR_MIN)
    for (int64_t r = 0; r < rows; r++) ln_ce_row_backward(g, xv, tv, wv, lv[r], gv, f64, r, dv);
  }
  return ln_layer_grad_result(st, gc, dx, grad_in);
}

static ln_status bad_target(int64_t v) {
  return ln_error(LN_EINVAL, "Target %lld is out of bounds.", (long long)v);
}

/* The first target that is neither ignored nor a class, as PyTorch's
** "Target 11 is out of bounds." (the value as given). */
static ln_status check_targets(const ce_geom *g, const int64_t *t) {
  for (int64_t r = 0; r < g->N * g->S; r++)
    if (ln_ce_bad_target(g, t[r])) return bad_target(t[r]);
  return LN_OK;
}

static ln_status ce_record(ln_tensor *out, ln_tensor *input, ln_tensor *xc, ln_tensor *tc,
                           ln_tensor *lse, ln_tensor *wc, const ce_geom *g) {
  ln_node *node = ln_node_new("CrossEntropyLossBackward0", ce_backward, &input, 1, 1);
  ce_geom *s = node ? malloc(sizeof *s) : NULL;
  if (!s) {
    ln_node_release(node);
    return node ? ln_error(LN_ENOMEM, "out of memory in cross_entropy") : ln_last_status();
  }
  *s = *g;
  node->extra = s;
  node->free_extra = free;
  ln_tensor *src[4] = { xc, tc, lse, wc };
  for (int i = 0; i < 4 && src[i]; i++) {
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

/* The rows on the CPU: lse and loss per row (loss in double), targets
** checked first, the sums in row order. */
static ln_status ce_rows_cpu(ce_geom *g, const void *xv, const int64_t *tv, const void *wv,
                             bool f64, double *lse, double *loss, ln_ce_result *res) {
  int64_t rows = g->N * g->S;
  ln_status st = check_targets(g, tv);
  if (st != LN_OK) return st;
#pragma omp parallel for schedule(static) if (rows * g->C > CE_PAR_MIN)
  for (int64_t r = 0; r < rows; r++) loss[r] = ln_ce_row(g, xv, tv, wv, f64, r, &lse[r]);
  *res = (ln_ce_result){ .bad_row = rows };
  for (int64_t r = 0; r < rows; r++) {
    int64_t c0 = ln_ce_class(g, tv, r);
    res->total += loss[r];
    if (c0 >= 0) res->total_weight += ln_ce_weight(wv, c0, f64);
  }
  return LN_OK;
}

/* Losses per row (weighted), the reduction, and the node. Input float32
** or float64, shapes checked. */
static ln_tensor *ce_run(ln_tensor *input, ln_tensor *target, ln_tensor *weight, ce_geom *g) {
  ln_dtype dt = ln_tensor_dtype(input);
  ln_device dev = ln_tensor_device(input);
  bool f64 = dt == LN_F64;
  int64_t rows = g->N * g->S;
  const ln_layer_kernels *lk = ln_layer_kernels_of(input);
  bool none = g->reduction == LN_REDUCTION_NONE;
  ln_ce_result res;
  ln_status st;
  ln_tensor *xc = ln_contiguous(input, LN_CONTIGUOUS), *out = NULL, *lse = NULL, *loss = NULL;
  ln_tensor *tc = xc ? ln_contiguous(target, LN_CONTIGUOUS) : NULL;
  ln_tensor *wc = tc && weight ? ln_contiguous(weight, LN_CONTIGUOUS) : NULL;
  if (!tc || (weight && !wc)) goto done;
  /* per row: lse (float64, kept by the node) and the loss (float64 on the
  ** CPU; on a device in dt, written only for reduction none) */
  if (!(lse = ln_empty(&rows, 1, LN_F64, dev))) goto done;
  if (!lk) loss = ln_empty(&rows, 1, LN_F64, LN_DEVICE_CPU);
  else if (none) loss = ln_empty(ln_tensor_sizes(target), ln_tensor_dim(target), dt, dev);
  if ((!lk || none) && !loss) goto done;
  const int64_t *tv = ln_tensor_data(tc);
  const void *xv = ln_tensor_data(xc), *wv = wc ? ln_tensor_data(wc) : NULL;
  if (lk)
    st = lk->cross_entropy_forward(dev.index, dt, g, xv, tv, wv, ln_tensor_data(lse),
                                   loss ? ln_tensor_data(loss) : NULL, &res);
  else
    st = ce_rows_cpu(g, xv, tv, wv, f64, ln_tensor_data(lse), ln_tensor_data(loss), &res);
  if (st == LN_OK && res.bad_row < rows) st = bad_target(res.bad_target);
  if (st != LN_OK) goto done;
  g->total_weight = res.total_weight;
  if (none && lk) {
    out = loss;
    loss = NULL;
  } else if (none) {
    if (!(out = ln_empty(ln_tensor_sizes(target), ln_tensor_dim(target), dt, dev))) goto done;
    const double *lv = ln_tensor_data(loss);
    for (int64_t r = 0; r < rows; r++) ln_sh_st(ln_tensor_data(out), r, f64, lv[r]);
  } else {
    double v = g->reduction == LN_REDUCTION_SUM ? res.total : res.total / res.total_weight;
    if (!f64) v = (float)v;   /* a sum past float32's range is inf, which full takes */
    if (!(out = ln_full(NULL, 0, v, dt, dev))) goto done;
  }
  if (ln_any_requires_grad(&input, 1) && ce_record(out, input, xc, tc, lse, wc, g) != LN_OK) {
    ln_tensor_release(out);
    out = NULL;
  }
done:
  ln_tensor_release(xc);
  ln_tensor_release(tc);
  ln_tensor_release(wc);
  ln_tensor_release(lse);
  ln_tensor_release(loss);
  return out;
}

/* Shapes, dtypes and devices as PyTorch checks them; fills g's sizes. */
static ln_status check_ce(ln_tensor *x, ln_tensor *t, ln_tensor *w, ce_geom *g) {
  char b1[96], b2[96];
  int nd = ln_tensor_dim(x), td = ln_tensor_dim(t);
  ln_status st = ln_layer_check_float("cross_entropy", x, LN_LAYER_HAS(x, cross_entropy_forward));
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
