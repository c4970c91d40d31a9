/*
** test_ew_index.c -- the index math of CUDA's elementwise kernels
** (cuda/ew_index.h) and core's descriptions of tensors for them
** (ln_ew_desc_for), run on the CPU: offsets against a naive odometer walk
** over hand-made descriptions, and descriptions of CPU tensors (permuted,
** broadcast, narrowed, channels-last) walked as a kernel would walk them,
** against the same op done by core's CPU kernels.
*/
#include <string.h>

#include "check.h"
#include "core/ops_impl.h"
#include "core/tensor.h"
#include "cuda/ew_index.h"

/* Walk sizes row-major with an odometer and compare each operand's offset
** with ln_ew_offsets. */
static void check_desc(const ln_ew_desc *d) {
  int64_t idx[LN_MAX_DIMS] = { 0 };
  int bad = 0;
  for (int64_t i = 0; i < d->numel; i++) {
    int64_t off[LN_EW_MAX_OPS];
    ln_ew_offsets(d, i, off);
    for (int k = 0; k < d->nops; k++) {
      int64_t want = 0;
      for (int dim = 0; dim < d->ndim; dim++) want += idx[dim] * d->ops[k].strides[dim];
      if (off[k] != want) bad++;
    }
    for (int dim = d->ndim - 1; dim >= 0; dim--) {
      if (++idx[dim] < d->sizes[dim]) break;
      idx[dim] = 0;
    }
  }
  CHECK(bad == 0);
}

/* A description over sizes with nops operands whose strides are given
** row by row (ndim per operand). */
static ln_ew_desc make(int ndim, const int64_t *sizes, int nops, const int64_t *strides) {
  ln_ew_desc d;
  memset(&d, 0, sizeof d);
  d.ndim = ndim;
  d.nops = nops;
  d.numel = 1;
  for (int i = 0; i < ndim; i++) {
    d.sizes[i] = sizes[i];
    d.numel *= sizes[i];
  }
  for (int k = 0; k < nops; k++)
    for (int i = 0; i < ndim; i++) d.ops[k].strides[i] = strides[k * ndim + i];
  return d;
}

/* What a kernel does with ln_ew_desc_for(out, {a, b}): out = 1000 a + b,
** every element found through ln_ew_offsets. */
static void emulate(const ln_ew_desc *d) {
  for (int64_t i = 0; i < d->numel; i++) {
    int64_t off[LN_EW_MAX_OPS];
    ln_ew_offsets(d, i, off);
    double v = 0;
    for (int k = 1; k < d->nops; k++) {
      const ln_ew_operand *o = &d->ops[k];
      v = v * 1000 + ln_load_double((char *)o->data + off[k] * (int64_t)ln_dtype_size(o->dtype),
                                    o->dtype);
    }
    ln_store_double((char *)d->ops[0].data + off[0] * (int64_t)ln_dtype_size(d->ops[0].dtype),
                    d->ops[0].dtype, v);
  }
}

/* 0, 1, 2, ... of the given shape (contiguous float64). */
static ln_tensor *iota(const int64_t *sizes, int ndim) {
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) n *= sizes[i];
  ln_tensor *r = ln_arange(0, (double)n, 1, LN_F64);
  ln_tensor *v = ln_view(r, sizes, ndim);
  ln_tensor_release(r);
  return v;
}

/* Emulate over out (filled) and a, b; compare with b + 1000 a by core.
** want_ndim: the merged rank expected (0 to skip the check). */
static void check_tensors(ln_tensor *out, ln_tensor *a, ln_tensor *b, int want_ndim) {
  ln_tensor *in[2] = { a, b };
  ln_ew_desc d;
  ln_ew_desc_for(&d, out, in, 2);
  CHECK(d.nops == 3 && d.numel == ln_tensor_numel(out));
  if (want_ndim) CHECK(d.ndim == want_ndim);
  if (want_ndim == 1) CHECK(ln_ew_is_flat(&d) || ln_tensor_numel(b) == 1);
  emulate(&d);
  ln_tensor *ref = ln_add_scaled(b, a, 1000);
  ln_tensor *diff = ref ? ln_sub(out, ref) : NULL;
  ln_tensor *mx = diff ? ln_unary(LN_ABS, diff) : NULL;
  ln_tensor *m = mx ? ln_max(mx, NULL, 0, false) : NULL;
  double worst = 1;
  CHECK(m && ln_tensor_item(m, &worst) == LN_OK);
  CHECK(worst == 0);
  ln_tensor_release(ref);
  ln_tensor_release(diff);
  ln_tensor_release(mx);
  ln_tensor_release(m);
}

static void desc_for_tests(void) {
  int64_t s234[] = { 2, 3, 4 }, s423[] = { 4, 2, 3 }, s31[] = { 3, 1 };
  int64_t nchw[] = { 2, 3, 4, 5 }, big[] = { 2, 3, 4, 9 };
  ln_tensor *out = ln_empty(s234, 3, LN_F64, LN_DEVICE_CPU);
  ln_tensor *a = iota(s234, 3), *b = iota(s234, 3);
  /* all contiguous: one flat run */
  check_tensors(out, a, b, 1);
  /* permuted input (a (4, 2, 3) tensor seen as (2, 3, 4)) and broadcast (3, 1) */
  ln_tensor *p0 = iota(s423, 3);
  int perm[] = { 1, 2, 0 };
  ln_tensor *p = ln_permute(p0, perm, 3), *c = iota(s31, 2);
  check_tensors(out, p, c, 0);
  /* a 0-dim input */
  ln_tensor *z = ln_scalar(7, LN_F64);
  check_tensors(out, p, z, 0);
  /* permuted output */
  ln_tensor *o0 = ln_empty(s423, 3, LN_F64, LN_DEVICE_CPU);
  ln_tensor *po = ln_permute(o0, perm, 3);
  check_tensors(po, p, p, 1);  /* one layout: merged in memory order */
  check_tensors(po, a, p, 0);
  /* channels-last everywhere: one flat run; mixed with NCHW: not */
  ln_tensor *cl_out = ln_empty_format(nchw, 4, LN_F64, LN_DEVICE_CPU, LN_CHANNELS_LAST);
  ln_tensor *x = iota(nchw, 4), *y = iota(nchw, 4);
  ln_tensor *xc = ln_contiguous(x, LN_CHANNELS_LAST), *yc = ln_contiguous(y, LN_CHANNELS_LAST);
  check_tensors(cl_out, xc, yc, 1);
  check_tensors(cl_out, x, yc, 0);
  /* a narrowed input (gaps between rows) and an expanded one */
  ln_tensor *w = iota(big, 4), *wn = ln_narrow(w, 3, 2, 5);
  int64_t e1[] = { 1, 3, 1, 1 }, eto[] = { 2, 3, 4, 5 };
  ln_tensor *e = iota(e1, 4), *ee = ln_expand(e, eto, 4);
  check_tensors(cl_out, wn, ee, 0);
  ln_tensor *ts[] = { out, a, b, p0, p, c, z, o0, po, cl_out, x, y, xc, yc, w, wn, e, ee };
  for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) ln_tensor_release(ts[i]);
}

int main(void) {
  ln_init();
  int64_t live = ln_tensor_live_count();
  desc_for_tests();
  CHECK(ln_tensor_live_count() == live);
  check_desc(&(ln_ew_desc){ 0 });  /* empty: nothing to walk */
  /* contiguous 1-d: offsets are the index */
  {
    int64_t sz[] = { 7 }, st[] = { 1, 1 };
    ln_ew_desc d = make(1, sz, 2, st);
    CHECK(ln_ew_is_flat(&d));
    int64_t off[2];
    ln_ew_offsets(&d, 5, off);
    CHECK(off[0] == 5 && off[1] == 5);
    check_desc(&d);
  }
  /* 2-d with a broadcast row and column (stride 0) */
  {
    int64_t sz[] = { 3, 5 }, st[] = { 5, 1, 0, 1, 1, 0 };
    ln_ew_desc d = make(2, sz, 3, st);
    CHECK(!ln_ew_is_flat(&d));
    check_desc(&d);
  }
  /* a transposed (permuted) input and a scalar-like input */
  {
    int64_t sz[] = { 4, 6 }, st[] = { 6, 1, 1, 4, 0, 0 };
    ln_ew_desc d = make(2, sz, 3, st);
    check_desc(&d);
  }
  /* NCHW output, channels-last input (N=2, C=3, H=4, W=5) */
  {
    int64_t sz[] = { 2, 3, 4, 5 };
    int64_t st[] = { 60, 20, 5, 1, 60, 1, 15, 3 };
    ln_ew_desc d = make(4, sz, 2, st);
    check_desc(&d);
    int64_t off[2];
    ln_ew_offsets(&d, 1 * 60 + 2 * 20 + 3 * 5 + 4, off);  /* (1, 2, 3, 4) */
    CHECK(off[0] == 119 && off[1] == 60 + 2 + 45 + 12);
  }
  /* 5-d, four operands, odd sizes, a narrowed input (gaps) */
  {
    int64_t sz[] = { 3, 1, 2, 5, 3 };
    int64_t st[] = { 30, 30, 15, 3, 1,   /* contiguous */
                     0, 0, 1, 0, 2,      /* broadcast over dims 0 and 3 */
                     1, 7, 3, 21, 105,   /* reversed order (Fortran) */
                     200, 9, 90, 12, 2 }; /* narrowed */
    ln_ew_desc d = make(5, sz, 4, st);
    check_desc(&d);
  }
  /* offsets beyond 2^31 stay exact */
  {
    int64_t sz[] = { 3, 1 << 20, 4 }, st[] = { (int64_t)1 << 40, 4, 1, 0, 1, 0 };
    ln_ew_desc d = make(3, sz, 2, st);
    int64_t off[2];
    ln_ew_offsets(&d, d.numel - 1, off);
    CHECK(off[0] == ((int64_t)2 << 40) + ((int64_t)((1 << 20) - 1)) * 4 + 3);
    CHECK(off[1] == (1 << 20) - 1);
  }
  return check_done("test_ew_index");
}
