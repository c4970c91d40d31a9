/*
** batchnorm_layout.c -- how a (N, C, *) tensor maps onto the BatchNorm
** kernels (see batchnorm_kernels.h): the plan of runs, views of other
** tensors through it, outputs laid out like the planned input, and the
** fused ReLU mask's bits located like an output's elements; ghost BN's
** blocks of the batch dim.
*/
#include "batchnorm_functional.h"

/* Coalesce dims (innermost first) of t into one run: its length and the
** stride of its first dim; false when they are not one strided run. */
static bool run_of(const ln_tensor *t, const int *dims, int n, int64_t *len,
                   int64_t *stride) {
  const int64_t *sz = ln_tensor_sizes(t), *st = ln_tensor_strides(t);
  *len = 1;
  *stride = n ? st[dims[0]] : 0;
  for (int k = 0; k < n; k++) {
    if (k && st[dims[k]] != st[dims[k - 1]] * sz[dims[k - 1]]) return false;
    *len *= sz[dims[k]];
  }
  return true;
}

bool ln_bn_plan_for(const ln_tensor *t, ln_bn_plan *p) {
  int nd = ln_tensor_dim(t), order[LN_MAX_DIMS], n = 0;
  const int64_t *sz = ln_tensor_sizes(t), *st = ln_tensor_strides(t);
  /* non-channel dims of size > 1 by increasing stride, later dims first on ties */
  for (int d = nd - 1; d >= 0; d--) {
    if (d == 1 || sz[d] == 1) continue;
    int k = n++;
    for (; k > 0 && st[order[k - 1]] > st[d]; k--) order[k] = order[k - 1];
    order[k] = d;
  }
  /* split into runs: a new run where the strides stop chaining */
  int cut = n;
  for (int k = 1; k < n; k++) {
    if (st[order[k]] == st[order[k - 1]] * sz[order[k - 1]]) continue;
    if (cut != n) return false;  /* a third run */
    cut = k;
  }
  *p = (ln_bn_plan){ .ndim = nd, .n_inner = cut, .n_outer = n - cut };
  for (int k = 0; k < n; k++) {
    if (k < cut) p->inner_dims[k] = order[k];
    else p->outer_dims[k - cut] = order[k];
  }
  int64_t C = sz[1], s_in = n ? st[order[0]] : 1, s_out = 0, len;
  if (p->n_outer) s_out = st[p->outer_dims[0]];
  if (s_in == 1) {
    p->g.rows = false;
  } else if (st[1] == 1 && C > 1) {
    p->g.rows = true;
  } else if (n == 0) {
    p->g.rows = st[1] == 1;      /* one value per channel */
  } else {
    return false;
  }
  p->g.C = C;
  run_of(t, p->inner_dims, p->n_inner, &p->g.inner, &len);
  run_of(t, p->outer_dims, p->n_outer, &p->g.outer, &len);
  p->c_inner_to_outer = p->n_outer > 0 && st[1] < s_out;
  return true;
}

bool ln_bn_view_for(const ln_bn_plan *p, const ln_tensor *t, ln_bn_view *v) {
  int64_t len;
  v->data = ln_tensor_data(t);
  v->s_c = ln_tensor_stride(t, 1);
  if (!run_of(t, p->inner_dims, p->n_inner, &len, &v->s_inner) ||
      !run_of(t, p->outer_dims, p->n_outer, &len, &v->s_outer))
    return false;
  if (p->g.rows) return p->g.C == 1 || v->s_c == 1;
  return p->g.inner == 1 || v->s_inner == 1;
}

ln_tensor *ln_bn_empty(const ln_bn_plan *p, const ln_tensor *like, ln_dtype dtype) {
  const int64_t *sz = ln_tensor_sizes(like);
  int64_t strides[LN_MAX_DIMS], step = 1, numel = ln_tensor_numel(like);
  bool set[LN_MAX_DIMS] = { false };
  int nd = p->ndim;
  /* dims innermost first: the channel, then the runs (rows); the inner
  ** run, then the channel and outer run in the planned order (plane) */
  int seq[LN_MAX_DIMS + 1], n = 0;
  if (p->g.rows) seq[n++] = 1;
  for (int k = 0; k < p->n_inner; k++) seq[n++] = p->inner_dims[k];
  if (!p->g.rows && p->c_inner_to_outer) seq[n++] = 1;
  for (int k = 0; k < p->n_outer; k++) seq[n++] = p->outer_dims[k];
  if (!p->g.rows && !p->c_inner_to_outer) seq[n++] = 1;
  for (int k = 0; k < n; k++) {
    strides[seq[k]] = step;
    set[seq[k]] = true;
    step *= sz[seq[k]];
  }
  /* size-1 dims: the stride a row-major neighbour gives them */
  for (int d = nd - 1; d >= 0; d--)
    if (!set[d]) strides[d] = d == nd - 1 ? 1 : strides[d + 1] * sz[d + 1];
  ln_tensor *flat = ln_empty(&numel, 1, dtype, ln_tensor_device(like));
  if (!flat) return NULL;
  ln_tensor *out = ln_from_storage(ln_tensor_storage(flat), dtype, sz, strides, nd, 0);
  ln_tensor_release(flat);
  return out;
}

bool ln_bn_mask_for(const ln_bn_plan *p, const ln_tensor *dense, const ln_tensor *t,
                    uint32_t *bits, ln_bn_mask *m) {
  ln_bn_view v;
  if (!ln_bn_view_for(p, t, &v)) return false;
  *m = (ln_bn_mask){ .bits = bits, .off = ln_tensor_offset(t) - ln_tensor_offset(dense),
                     .s_c = v.s_c, .s_outer = v.s_outer, .s_inner = v.s_inner };
  return true;
}

/* ---- ghost BN's blocks (batchnorm_functional.h) ---- */

bool ln_bn_blocks_for(ln_tensor *x, int64_t G, ln_bn_blocks *b) {
  b->G = G > 1 ? G : 1;
  b->V = ln_tensor_size(x, 0) / b->G;
  if (b->G == 1) return ln_bn_plan_for(x, &b->plan);
  ln_tensor *x0 = ln_narrow(x, 0, 0, b->V);
  bool ok = x0 && ln_bn_plan_for(x0, &b->plan);
  ln_tensor_release(x0);
  return ok;
}

bool ln_bn_block_view(const ln_bn_blocks *b, ln_tensor *t, int64_t g, ln_bn_view *v) {
  if (b->G == 1) return ln_bn_view_for(&b->plan, t, v);
  ln_tensor *tb = ln_narrow(t, 0, g * b->V, b->V);
  bool ok = tb && ln_bn_view_for(&b->plan, tb, v);   /* tb's storage lives on in t */
  ln_tensor_release(tb);
  return ok;
}

bool ln_bn_block_mask(const ln_bn_blocks *b, ln_tensor *dense, int64_t g, uint32_t *bits,
                      ln_bn_mask *m) {
  ln_tensor *tb = b->G == 1 ? dense : ln_narrow(dense, 0, g * b->V, b->V);
  bool ok = tb && ln_bn_mask_for(&b->plan, dense, tb, bits, m);
  if (tb != dense) ln_tensor_release(tb);
  return ok;
}

ln_tensor *ln_bn_laid_out(const ln_bn_plan *plan, const ln_bn_blocks *b, ln_tensor *x,
                          ln_tensor *t) {
  ln_bn_view v;
  if (ln_tensor_dtype(t) == ln_tensor_dtype(x) && ln_bn_view_for(plan, t, &v) &&
      ln_bn_block_view(b, t, 0, &v)) {
    ln_tensor_retain(t);
    return t;
  }
  ln_tensor *c = ln_bn_empty(plan, x, ln_tensor_dtype(x));
  if (c && ln_copy_(c, t) != LN_OK) {
    ln_tensor_release(c);
    return NULL;
  }
  return c;
}
