/*
** reduce_plan.h -- how cuda/reduce.cu lays a reduction out on the GPU, in
** plain C (LN_HD functions, for C and CUDA) so tests/c/test_reduce_plan.c
** proves the index math and the strategy choice on the CPU.
**
** A reduction arrives as an ln_ew_desc whose operand 0 (the output) has
** stride 0 along the reduced dims. The plan splits the dims into two
** groups, kept and reduced, each ordered outermost first by the input's
** (operand 1's) strides, so that consecutive indices of a group walk the
** input's smallest stride. An output index o in [0, outputs) and a
** reduced index r in [0, extent) locate an element of operand k at
** ln_reduce_offset(&kept, k, o) + ln_reduce_offset(&red, k, r).
**
** Strategies (ln_reduce_choose): each output's reduced extent is cut into
** `chunks` chunks of `chunk_len`; a "virtual output" v = c * outputs + o
** is chunk c of output o. One thread (LN_RP_THREAD) or one block with a
** block-wide tree (LN_RP_BLOCK) reduces each virtual output. With one
** chunk the result goes straight to the output; with more, to partials
** that a second launch (one block per output) combines.
*/
#ifndef LN_CUDA_REDUCE_PLAN_H
#define LN_CUDA_REDUCE_PLAN_H

#include <stdbool.h>
#include <stdint.h>

#include "cuda/ew_index.h"

#define LN_RP_MAX_OPS 3              /* output, input, SQDEV's mean */
#define LN_RP_THREADS 256            /* threads per block, a power of two */
#define LN_RP_BLOCK_MIN_EXTENT 128   /* a block per output from this extent */
#define LN_RP_THREAD_MIN_CHUNK 64    /* elements a thread reduces at least */
#define LN_RP_BLOCK_MIN_CHUNK 2048   /* elements a block reduces at least */
#define LN_RP_MAX_CHUNKS 1024        /* partials per output */
#define LN_RP_THREADS_PER_SM 2048    /* resident threads that fill an SM */
#define LN_RP_MAX_BLOCKS (1 << 20)   /* grids loop beyond this */

typedef enum ln_reduce_mapping {
  LN_RP_THREAD,  /* one thread per virtual output, looping over its chunk */
  LN_RP_BLOCK,   /* one block per virtual output, a block-wide tree */
} ln_reduce_mapping;

/* One group of dims (kept or reduced), outermost first. */
typedef struct ln_reduce_dims {
  int ndim;
  int64_t sizes[LN_MAX_DIMS];
  int64_t strides[LN_RP_MAX_OPS][LN_MAX_DIMS];  /* elements, per operand */
} ln_reduce_dims;

typedef struct ln_reduce_plan {
  int nops;
  ln_reduce_dims kept, red;
  int64_t outputs, extent;      /* products of the kept and reduced sizes */
  bool inner_reduced;           /* the input's smallest stride is reduced */
  ln_reduce_mapping mapping;
  int64_t chunks, chunk_len;    /* chunks * chunk_len >= extent */
  unsigned threads;             /* per block of the first launch */
  int64_t blocks;               /* of the first launch */
  unsigned threads2;            /* per block of the combining launch */
  int64_t blocks2;              /* of the combining launch (0 when none) */
} ln_reduce_plan;

/* Offset in elements of operand k at index i of group g (row-major over
** g's sizes; i < the product of the sizes). */
LN_HD static inline int64_t ln_reduce_offset(const ln_reduce_dims *g, int k, int64_t i) {
  int64_t off = 0;
  for (int d = g->ndim - 1; d > 0; d--) {
    int64_t size = g->sizes[d];
    off += (i % size) * g->strides[k][d];
    i /= size;
  }
  return g->ndim > 0 ? off + i * g->strides[k][0] : 0;
}

static inline int64_t ln_rp_abs(int64_t v) { return v < 0 ? -v : v; }

static inline unsigned ln_rp_pow2_threads(int64_t n) {
  unsigned t = 32;
  while (t < LN_RP_THREADS && (int64_t)t < n) t *= 2;
  return t;
}

static inline int64_t ln_rp_min(int64_t a, int64_t b) { return a < b ? a : b; }

/* The strategy for `outputs` outputs of `extent` elements each on a device
** with `sms` multiprocessors (p->inner_reduced set): the mapping follows
** the input's unit stride (along reduced dims a block's threads read
** neighbours, along kept dims neighbouring threads do), and the extent is
** cut into chunks until the device has about a full wave of threads, no
** chunk shorter than the mapping's minimum. */
static inline void ln_reduce_choose(ln_reduce_plan *p, int64_t outputs, int64_t extent,
                                    int sms) {
  if (sms < 1) sms = 1;
  p->outputs = outputs;
  p->extent = extent;
  bool block = p->inner_reduced && extent >= LN_RP_BLOCK_MIN_EXTENT;
  p->mapping = block ? LN_RP_BLOCK : LN_RP_THREAD;
  int64_t want = (int64_t)sms * LN_RP_THREADS_PER_SM;   /* threads */
  if (block) want /= LN_RP_THREADS;                     /* blocks */
  int64_t min_chunk = block ? LN_RP_BLOCK_MIN_CHUNK : LN_RP_THREAD_MIN_CHUNK;
  int64_t chunks = 1;
  if (outputs > 0 && outputs < want) {
    chunks = ln_rp_min((want + outputs - 1) / outputs, extent / min_chunk);
    chunks = ln_rp_min(chunks, LN_RP_MAX_CHUNKS);
    if (chunks < 1) chunks = 1;
  }
  p->chunk_len = chunks > 1 ? (extent + chunks - 1) / chunks : extent;
  p->chunks = chunks > 1 ? (extent + p->chunk_len - 1) / p->chunk_len : 1;
  int64_t virt = outputs * p->chunks;
  if (block) {
    p->threads = ln_rp_pow2_threads(p->chunk_len);
    p->blocks = ln_rp_min(virt, LN_RP_MAX_BLOCKS);
  } else {
    p->threads = LN_RP_THREADS;
    p->blocks = ln_rp_min((virt + LN_RP_THREADS - 1) / LN_RP_THREADS, LN_RP_MAX_BLOCKS);
  }
  p->threads2 = ln_rp_pow2_threads(p->chunks);
  p->blocks2 = p->chunks > 1 ? ln_rp_min(outputs, LN_RP_MAX_BLOCKS) : 0;
}

/* Append dim d of desc to group g, keeping g ordered by descending input
** stride (stable: ties keep the desc's order). */
static inline void ln_rp_add_dim(ln_reduce_dims *g, const ln_ew_desc *desc, int nops, int d) {
  int at = g->ndim++;
  int64_t s = ln_rp_abs(desc->ops[1].strides[d]);
  while (at > 0 && ln_rp_abs(g->strides[1][at - 1]) < s) {
    g->sizes[at] = g->sizes[at - 1];
    for (int k = 0; k < nops; k++) g->strides[k][at] = g->strides[k][at - 1];
    at--;
  }
  g->sizes[at] = desc->sizes[d];
  for (int k = 0; k < nops; k++) g->strides[k][at] = desc->ops[k].strides[d];
}

/* Plan the reduction desc describes: the dims where operand 0's stride is
** 0 are reduced, or only red_dim when it is >= 0 (argmax). 0, or -1 when
** desc is not a reduction this can plan (2 or 3 operands; red_dim within
** the dims with operand 0's stride 0 there). */
static inline int ln_reduce_plan_make(ln_reduce_plan *p, const ln_ew_desc *desc, int red_dim,
                                      int sms) {
  int nops = desc->nops;
  if (nops < 2 || nops > LN_RP_MAX_OPS || desc->ndim < 0 || desc->ndim > LN_MAX_DIMS ||
      red_dim >= desc->ndim || (red_dim >= 0 && desc->ops[0].strides[red_dim] != 0))
    return -1;
  p->nops = nops;
  p->kept.ndim = p->red.ndim = 0;
  int64_t outputs = 1, extent = 1, inner = -1;
  int inner_dim = -1;
  for (int d = 0; d < desc->ndim; d++) {
    bool red = red_dim >= 0 ? d == red_dim : desc->ops[0].strides[d] == 0;
    ln_rp_add_dim(red ? &p->red : &p->kept, desc, nops, d);
    if (red) extent *= desc->sizes[d];
    else outputs *= desc->sizes[d];
    int64_t s = ln_rp_abs(desc->ops[1].strides[d]);
    if (s != 0 && desc->sizes[d] > 1 && (inner < 0 || s < inner)) {
      inner = s;
      inner_dim = d;
    }
  }
  p->inner_reduced = inner_dim >= 0 && (red_dim >= 0 ? inner_dim == red_dim
                                                     : desc->ops[0].strides[inner_dim] == 0);
  ln_reduce_choose(p, outputs, extent, sms);
  return 0;
}

#endif
