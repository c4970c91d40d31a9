/*
** test_ew_index.c -- the index math of CUDA's elementwise kernels
** (cuda/ew_index.h), run on the CPU: for hand-made descriptions, every
** linear index's offsets against a naive odometer walk over the shape.
*/
#include <string.h>

#include "check.h"
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

int main(void) {
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
