/*
** strided.h -- the one walker of N-d strided tensors used by every generic
** CPU kernel (elementwise, copies, reductions).
**
** An ln_strided holds one iteration shape and up to LN_STRIDED_MAX_OPS
** operands, each with its own byte strides over that shape (0 for a
** broadcast or reduced dim, anything for permuted, narrowed or
** channels-last views). ln_strided_prepare drops size-1 dims, orders the
** dims innermost-first by the strides of a primary operand and merges dims
** that are contiguous for every operand, so the loop callback receives the
** longest possible 1-d runs: `fn(data, strides, n, ctx)` handles n elements
** where operand i starts at data[i] and steps strides[i] bytes. Callbacks
** test for the contiguous and stride-0 cases to get tight vectorizable
** loops.
**
** ln_strided_run splits the elements between OpenMP threads when there are
** more than LN_PARALLEL_GRAIN of them, so a callback must only write through
** its data pointers (and must not set errors). Nothing here allocates.
*/
#ifndef LN_STRIDED_H
#define LN_STRIDED_H

#include <stdint.h>
#include <stdlib.h>

#include <omp.h>

#include "tensor.h"

#define LN_STRIDED_MAX_OPS 4
#define LN_PARALLEL_GRAIN 32768

typedef void (*ln_loop_fn)(char **data, const int64_t *strides, int64_t n,
                           void *ctx);

typedef struct ln_strided {
  int nops, ndim;
  int64_t numel;
  int64_t sizes[LN_MAX_DIMS];                       /* [0] is innermost */
  int64_t strides[LN_MAX_DIMS][LN_STRIDED_MAX_OPS]; /* bytes */
  char *data[LN_STRIDED_MAX_OPS];                   /* first elements */
} ln_strided;

/* Start an iteration over `sizes` (outermost first, as tensors store them). */
static inline void ln_strided_init(ln_strided *it, const int64_t *sizes, int ndim) {
  it->nops = 0;
  it->ndim = ndim;
  it->numel = 1;
  for (int d = 0; d < ndim; d++) {
    it->sizes[d] = sizes[ndim - 1 - d];
    it->numel *= sizes[ndim - 1 - d];
  }
}

/* Add an operand: `data` is its first element, `strides` (in elements, one
** per dim of the iteration, outermost first) may hold zeros. */
static inline void ln_strided_add(ln_strided *it, void *data,
                                  const int64_t *strides, size_t elem_size) {
  int op = it->nops++;
  it->data[op] = (char *)data;
  for (int d = 0; d < it->ndim; d++)
    it->strides[d][op] = strides[it->ndim - 1 - d] * (int64_t)elem_size;
}

/* Should dim a be inner to dim b? Compare the strides of the operands,
** the primary one first, skipping an operand for which either is 0
** (broadcast); equal strides keep the current order. */
static inline int ln_strided_cmp_(const ln_strided *it, int a, int b, int primary) {
  for (int k = 0; k < it->nops; k++) {
    int op = (primary + k) % it->nops;
    int64_t sa = llabs(it->strides[a][op]), sb = llabs(it->strides[b][op]);
    if (sa == 0 || sb == 0) continue;
    if (sa != sb) return sa < sb ? -1 : 1;
  }
  return 0;
}

static inline void ln_strided_swap_(ln_strided *it, int a, int b) {
  int64_t s = it->sizes[a];
  it->sizes[a] = it->sizes[b];
  it->sizes[b] = s;
  for (int op = 0; op < it->nops; op++) {
    int64_t t = it->strides[a][op];
    it->strides[a][op] = it->strides[b][op];
    it->strides[b][op] = t;
  }
}

/* Drop size-1 dims, sort dims innermost-first by the strides of operand
** `primary` (then the others), and merge dims contiguous for all operands.
** Leaves at least one dim (of size 1 for a single element). */
static inline void ln_strided_prepare(ln_strided *it, int primary) {
  int nd = 0;
  for (int d = 0; d < it->ndim; d++) {
    if (it->sizes[d] == 1) continue;
    if (nd != d) {
      it->sizes[nd] = it->sizes[d];
      for (int op = 0; op < it->nops; op++) it->strides[nd][op] = it->strides[d][op];
    }
    nd++;
  }
  it->ndim = nd;
  /* insertion sort: stable, so ties keep the logical (row-major) order */
  for (int i = 1; i < nd; i++)
    for (int j = i; j > 0 && ln_strided_cmp_(it, j, j - 1, primary) < 0; j--)
      ln_strided_swap_(it, j, j - 1);
  int m = 0;
  for (int d = 1; d < nd; d++) {
    int mergeable = 1;
    for (int op = 0; op < it->nops; op++)
      if (it->strides[d][op] != it->strides[m][op] * it->sizes[m]) mergeable = 0;
    if (mergeable) {
      it->sizes[m] *= it->sizes[d];
    } else {
      m++;
      it->sizes[m] = it->sizes[d];
      for (int op = 0; op < it->nops; op++) it->strides[m][op] = it->strides[d][op];
    }
  }
  if (nd == 0) {
    it->sizes[0] = it->numel;  /* 1, or 0 for an empty shape of size-1 dims */
    for (int op = 0; op < it->nops; op++) it->strides[0][op] = 0;
    m = 0;
  }
  it->ndim = m + 1;
}

/* Elements [begin, end) in iteration order, on the calling thread. */
static inline void ln_strided_run_range(const ln_strided *it, int64_t begin,
                                        int64_t end, ln_loop_fn fn, void *ctx) {
  int64_t idx[LN_MAX_DIMS];
  char *ptr[LN_STRIDED_MAX_OPS];
  int64_t rest = begin;
  for (int op = 0; op < it->nops; op++) ptr[op] = it->data[op];
  for (int d = 0; d < it->ndim; d++) {
    idx[d] = rest % it->sizes[d];
    rest /= it->sizes[d];
    for (int op = 0; op < it->nops; op++) ptr[op] += idx[d] * it->strides[d][op];
  }
  for (int64_t pos = begin; pos < end;) {
    int64_t n = it->sizes[0] - idx[0];
    if (n > end - pos) n = end - pos;
    fn(ptr, it->strides[0], n, ctx);
    pos += n;
    idx[0] += n;
    for (int op = 0; op < it->nops; op++) ptr[op] += n * it->strides[0][op];
    for (int d = 0; d + 1 < it->ndim && idx[d] == it->sizes[d]; d++) {
      idx[d] = 0;
      idx[d + 1]++;
      for (int op = 0; op < it->nops; op++)
        ptr[op] += it->strides[d + 1][op] - it->sizes[d] * it->strides[d][op];
    }
  }
}

/* Should this many elements be split between threads? */
static inline int ln_strided_parallel(int64_t numel) {
  return numel >= LN_PARALLEL_GRAIN && omp_get_max_threads() > 1 && !omp_in_parallel();
}

#define LN_STRIDED_TILE 64

/* Does an operand step through memory faster along dim 1 than along dim 0
** (a transposed or channels-last vs. contiguous pair)? Then dims 0 and 1
** are walked in square tiles, so that both operands stay in cache. */
static inline int ln_strided_tiled_(const ln_strided *it) {
  if (it->ndim < 2 || it->sizes[0] < LN_STRIDED_TILE / 2 ||
      it->sizes[1] < LN_STRIDED_TILE / 2)
    return 0;
  for (int op = 0; op < it->nops; op++) {
    int64_t s0 = llabs(it->strides[0][op]), s1 = llabs(it->strides[1][op]);
    if (s1 != 0 && s1 < s0) return 1;
  }
  return 0;
}

/* Tile unit u: one index of the dims above 1, one block of TILE indices
** of dim 1, all of dim 0 (in TILE-long runs). nblk: blocks per dim 1. */
static inline void ln_strided_run_tile_(const ln_strided *it, int64_t u, int64_t nblk,
                                        ln_loop_fn fn, void *ctx) {
  char *base[LN_STRIDED_MAX_OPS], *p[LN_STRIDED_MAX_OPS];
  int64_t o = u / nblk, r0 = u % nblk * LN_STRIDED_TILE;
  int64_t r1 = r0 + LN_STRIDED_TILE < it->sizes[1] ? r0 + LN_STRIDED_TILE : it->sizes[1];
  for (int op = 0; op < it->nops; op++) base[op] = it->data[op];
  for (int d = 2; d < it->ndim; d++) {
    int64_t i = o % it->sizes[d];
    o /= it->sizes[d];
    for (int op = 0; op < it->nops; op++) base[op] += i * it->strides[d][op];
  }
  for (int64_t c = 0; c < it->sizes[0]; c += LN_STRIDED_TILE) {
    int64_t n = it->sizes[0] - c < LN_STRIDED_TILE ? it->sizes[0] - c : LN_STRIDED_TILE;
    for (int64_t r = r0; r < r1; r++) {
      for (int op = 0; op < it->nops; op++)
        p[op] = base[op] + r * it->strides[1][op] + c * it->strides[0][op];
      fn(p, it->strides[0], n, ctx);
    }
  }
}

/* All elements, split between threads when large: in contiguous ranges
** of the iteration order, or by tiles (see ln_strided_tiled_). Every
** operand element is visited once, so callbacks may write outputs without
** synchronisation if no two output elements alias (stride 0 outputs need
** ln_strided_slice instead). */
static inline void ln_strided_run(const ln_strided *it, ln_loop_fn fn, void *ctx) {
  if (it->numel == 0) return;
  if (ln_strided_tiled_(it)) {
    int64_t nblk = (it->sizes[1] + LN_STRIDED_TILE - 1) / LN_STRIDED_TILE;
    int64_t units = it->numel / (it->sizes[0] * it->sizes[1]) * nblk;
    int par = ln_strided_parallel(it->numel);
    #pragma omp parallel for schedule(static) if (par)
    for (int64_t u = 0; u < units; u++) ln_strided_run_tile_(it, u, nblk, fn, ctx);
    return;
  }
  if (!ln_strided_parallel(it->numel)) {
    ln_strided_run_range(it, 0, it->numel, fn, ctx);
    return;
  }
  #pragma omp parallel
  {
    int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
    int64_t b = it->numel * t / nt, e = it->numel * (t + 1) / nt;
    if (b < e) ln_strided_run_range(it, b, e, fn, ctx);
  }
}

/* The part of `it` where (prepared) dim d lies in [lo, hi): same order,
** fewer elements. Threads that take disjoint slices along a dim in which
** an output has a non-zero stride write disjoint output elements. */
static inline ln_strided ln_strided_slice(const ln_strided *it, int d,
                                          int64_t lo, int64_t hi) {
  ln_strided s = *it;
  s.numel = it->sizes[d] ? it->numel / it->sizes[d] * (hi - lo) : 0;
  s.sizes[d] = hi - lo;
  for (int op = 0; op < it->nops; op++) s.data[op] += lo * it->strides[d][op];
  return s;
}

#endif
