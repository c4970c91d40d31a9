/*
** batchnorm_plan.h -- how the BatchNorm kernels (cuda/batchnorm_*.cu) lay
** their work out on the GPU, in plain C (LN_BN_HD functions, for C and
** CUDA), so that tests/c/test_cuda_bn_plan.c proves the index math and the
** limits on the CPU.
**
** Levels. The G ghost blocks of a (plane or rows) geometry are walked as
** four nested levels, outermost first, the last one in vectors of `vec`
** elements:
**   plane: (block, channel, outer run, inner run / vec)
**   rows:  (block, outer run, inner run, channel / vec)
** An operand's element at digits d is at sum d[k] * s[k] (ln_bn_lv_strides;
** the last stride counts vectors). A thread walks linear indices q, q + S,
** q + 2S, ... keeping the digits of q and adding those of S
** (ln_bn_digits_add): no division per element.
**
** Reductions (statistics, gradient sums; ln_bn_red_plan_for). A CTA is ct
** channel columns by rt lanes (plane: one channel, ct = 1; rows: ct
** columns of vec channels, lanes over rows), and reduces one split of the
** values of one (block, channel tile): `units` values per (block, channel)
** (plane: vectors of the outer*inner values) or rows per block (rows),
** cut into `splits` splits of `per_split`. Splits are chosen so that
** about `target` CTAs run (few channels with many values: many splits;
** many channels: one), each lane doing at least LN_BN_MIN_UNITS units and,
** so that its float sums stay short, at most LN_BN_MAX_LANE_UNITS (more
** splits than LN_BN_MAX_SPLITS only for that).
** Each CTA writes one partial per channel; the last CTA of a tile (an
** atomic counter) merges the tile's partials in a fixed order, so results
** do not depend on scheduling. In that merge, `team` lanes (a power of two,
** at most a warp) merge the splits of one (block, channel).
**
** Elementwise maps (ln_bn_map_plan_for): a grid-stride loop over the
** vectors of all blocks, LN_BN_MAP_THREADS per CTA.
*/
#ifndef LN_CUDA_BATCHNORM_PLAN_H
#define LN_CUDA_BATCHNORM_PLAN_H

#include <stdbool.h>
#include <stdint.h>

#include "nn/batchnorm_kernels.h"

#ifdef __CUDACC__
#define LN_BN_HD static inline __host__ __device__
#else
#define LN_BN_HD static inline
#endif

#define LN_BN_RED_THREADS 256        /* threads per reduction CTA at most */
#define LN_BN_RED_SLOTS 1024         /* partials a CTA holds in shared memory */
#define LN_BN_MIN_UNITS 8            /* units a lane reduces at least */
#define LN_BN_MAX_SPLITS 1024        /* splits per (block, channel), unless... */
#define LN_BN_MAX_LANE_UNITS 2048    /* ...a lane would sum more units (in float) */
#define LN_BN_MAX_GRID 2147483647LL  /* gridDim.x */
#define LN_BN_MAP_THREADS 256
#define LN_BN_MAP_MAX_CTAS 65536     /* grid-stride loops beyond */
#define LN_BN_LOAD_BYTES 16          /* widest vector load */

/* ---- levels and digits ---- */

typedef struct ln_bn_lv {
  int64_t n[4];      /* sizes; n[3] counts vectors */
  int chan;          /* the channel's level: 1 (plane) or 3 (rows) */
  int vec;
} ln_bn_lv;

LN_BN_HD void ln_bn_lv_for(const ln_bn_geom *g, int64_t G, int vec, ln_bn_lv *lv) {
  lv->vec = vec;
  lv->n[0] = G;
  if (g->rows) {
    lv->n[1] = g->outer, lv->n[2] = g->inner, lv->n[3] = g->C / vec;
    lv->chan = 3;
  } else {
    lv->n[1] = g->C, lv->n[2] = g->outer, lv->n[3] = g->inner / vec;
    lv->chan = 1;
  }
}

/* An operand's strides by level from its view strides (elements) and the
** distance between blocks. */
LN_BN_HD void ln_bn_lv_strides(bool rows, int vec, int64_t s_block, int64_t s_c,
                               int64_t s_outer, int64_t s_inner, int64_t s[4]) {
  s[0] = s_block;
  if (rows) {
    s[1] = s_outer, s[2] = s_inner, s[3] = s_c * vec;
  } else {
    s[1] = s_c, s[2] = s_outer, s[3] = s_inner * vec;
  }
}

LN_BN_HD int64_t ln_bn_lv_total(const ln_bn_lv *lv) {
  return lv->n[0] * lv->n[1] * lv->n[2] * lv->n[3];
}

/* The digits of q (d[0] may exceed n[0]-1: past the end). */
LN_BN_HD void ln_bn_digits(int64_t q, const int64_t n[4], int64_t d[4]) {
  for (int k = 3; k > 0; k--) {
    d[k] = q % n[k];
    q /= n[k];
  }
  d[0] = q;
}

/* d += s, both digit vectors of the radices n (s from ln_bn_digits). */
LN_BN_HD void ln_bn_digits_add(int64_t d[4], const int64_t s[4], const int64_t n[4]) {
  int64_t carry = 0;
  for (int k = 3; k > 0; k--) {
    d[k] += s[k] + carry;
    carry = d[k] >= n[k];
    if (carry) d[k] -= n[k];
  }
  d[0] += s[0] + carry;
}

LN_BN_HD int64_t ln_bn_offset(const int64_t d[4], const int64_t s[4]) {
  return d[0] * s[0] + d[1] * s[1] + d[2] * s[2] + d[3] * s[3];
}

/* ---- vector width ---- */

/* Whether an operand (first element at byte address addr, level strides s
** in elements, s[3] counting single elements here) can be read in vectors
** of vec elements of esize bytes. */
LN_BN_HD bool ln_bn_vec_fits(uintptr_t addr, int esize, const int64_t s[4], int vec) {
  if (vec == 1) return true;
  if (s[3] != 1 || addr % ((uintptr_t)vec * (uintptr_t)esize) != 0) return false;
  for (int k = 0; k < 3; k++)
    if (s[k] % vec != 0) return false;
  return true;
}

/* The widest vec in {8, 4, 2, 1}, at most max_vec and LN_BN_LOAD_BYTES
** bytes, that divides n3 (the last level's size in elements) and fits
** every operand (addrs, strides: nops of them). */
LN_BN_HD int ln_bn_pick_vec(int64_t n3, int esize, int max_vec, int nops,
                            const uintptr_t *addrs, const int64_t (*strides)[4]) {
  for (int vec = 8; vec > 1; vec /= 2) {
    if (vec > max_vec || vec * esize > LN_BN_LOAD_BYTES || n3 % vec != 0) continue;
    bool ok = true;
    for (int i = 0; i < nops && ok; i++) ok = ln_bn_vec_fits(addrs[i], esize, strides[i], vec);
    if (ok) return vec;
  }
  return 1;
}

/* ---- reductions ---- */

typedef struct ln_bn_red_plan {
  bool rows;
  int vec;
  int ct, rt, threads;     /* threads = ct * rt */
  int64_t C, G, tiles;     /* tiles: plane C; rows ceil(C / vec / ct) */
  int64_t units;           /* per (block, channel) (plane) or per block (rows) */
  int64_t splits, per_split;
  int64_t ctas;            /* G * tiles * splits */
  int team;                /* lanes merging the splits of one (block, channel) */
} ln_bn_red_plan;

LN_BN_HD int64_t ln_bn_ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

LN_BN_HD int ln_bn_pow2_floor(int64_t v) {
  int p = 1;
  while ((int64_t)p * 2 <= v && p < (1 << 30)) p *= 2;
  return p;
}

/* The plan of a reduction over G blocks of geometry g read in vectors of
** vec (rows: vec <= 4) channels or values; false for no values or more
** blocks and channel tiles than one grid holds. target: about how many
** CTAs fill the device. */
LN_BN_HD bool ln_bn_red_plan_for(const ln_bn_geom *g, int64_t G, int vec, int64_t target,
                                 ln_bn_red_plan *p) {
  if (g->C <= 0 || g->outer <= 0 || g->inner <= 0 || G <= 0 || vec < 1) return false;
  p->rows = g->rows;
  p->vec = vec;
  p->C = g->C;
  p->G = G;
  if (g->rows) {
    int64_t cols = g->C / vec, max_ct = LN_BN_RED_SLOTS / vec;
    if (max_ct > LN_BN_RED_THREADS) max_ct = LN_BN_RED_THREADS;
    if (g->C % vec != 0) return false;
    p->tiles = ln_bn_ceil_div(cols, max_ct);
    p->ct = (int)ln_bn_ceil_div(cols, p->tiles);
    p->rt = ln_bn_pow2_floor(LN_BN_RED_THREADS / p->ct);
    p->units = g->outer * g->inner;
  } else {
    if (g->inner % vec != 0) return false;
    p->tiles = g->C;
    p->ct = 1;
    p->rt = LN_BN_RED_THREADS;
    p->units = g->outer * (g->inner / vec);
  }
  p->threads = p->ct * p->rt;
  if (G > LN_BN_MAX_GRID / p->tiles) return false;
  int64_t blocks = G * p->tiles;
  int64_t splits = ln_bn_ceil_div(target > blocks ? target : blocks, blocks);
  int64_t by_work = p->units / ((int64_t)p->rt * LN_BN_MIN_UNITS);
  if (splits > by_work) splits = by_work;
  if (splits > LN_BN_MAX_SPLITS) splits = LN_BN_MAX_SPLITS;
  int64_t short_sums = ln_bn_ceil_div(p->units, (int64_t)p->rt * LN_BN_MAX_LANE_UNITS);
  if (splits < short_sums) splits = short_sums;
  if (splits > LN_BN_MAX_GRID / blocks) splits = LN_BN_MAX_GRID / blocks;
  if (splits < 1) splits = 1;
  p->per_split = ln_bn_ceil_div(p->units, splits);
  p->splits = ln_bn_ceil_div(p->units, p->per_split);
  p->ctas = blocks * p->splits;
  p->team = 1;
  while (p->team < 32 && p->team < p->splits) p->team *= 2;
  return true;
}

/* Which (block, tile, split) CTA number b is. */
LN_BN_HD void ln_bn_red_cta(const ln_bn_red_plan *p, int64_t b, int64_t *blk, int64_t *tile,
                            int64_t *split) {
  *split = b % p->splits;
  b /= p->splits;
  *tile = b % p->tiles;
  *blk = b / p->tiles;
}

/* The channels of tile t: [*c0, *c1). */
LN_BN_HD void ln_bn_red_tile(const ln_bn_red_plan *p, int64_t t, int64_t *c0, int64_t *c1) {
  int64_t width = p->rows ? (int64_t)p->ct * p->vec : 1;
  *c0 = t * width;
  *c1 = *c0 + width < p->C ? *c0 + width : p->C;
}

/* The units lane `lane` (0..rt-1) of split `split` reduces: q = *first,
** *first + rt, ... while q < *end, with digits over the radices n (outer
** run, then inner run or its vectors) and the step's digits `step`. */
LN_BN_HD void ln_bn_red_units(const ln_bn_red_plan *p, const ln_bn_geom *g, int64_t split,
                              int lane, int64_t *first, int64_t *end, int64_t n[4],
                              int64_t step[4]) {
  n[0] = 1, n[1] = 1, n[2] = g->outer, n[3] = p->rows ? g->inner : g->inner / p->vec;
  *first = split * p->per_split + lane;
  *end = *first - lane + p->per_split < p->units ? *first - lane + p->per_split : p->units;
  ln_bn_digits(p->rt, n, step);
}

/* The last CTA's merge: teams of p->team lanes, the first `lanes`
** threads (whole teams; a partial last warp sits out when a team is a
** whole warp). The shuffle mask of thread tid's team: its team's lanes of
** its warp (a team never straddles two warps: team divides 32). */
LN_BN_HD int ln_bn_merge_lanes(const ln_bn_red_plan *p) {
  return p->threads / p->team * p->team;
}
LN_BN_HD unsigned ln_bn_team_mask(int team, int tid) {
  unsigned wl = (unsigned)tid & 31u;
  return (team == 32 ? 0xffffffffu : ((1u << team) - 1u)) << (wl & ~(unsigned)(team - 1));
}

/* ---- elementwise maps ---- */

typedef struct ln_bn_map_plan {
  int vec, threads;
  int64_t total;    /* vectors */
  int64_t ctas;
} ln_bn_map_plan;

LN_BN_HD void ln_bn_map_plan_for(const ln_bn_lv *lv, ln_bn_map_plan *p) {
  p->vec = lv->vec;
  p->threads = LN_BN_MAP_THREADS;
  p->total = ln_bn_lv_total(lv);
  p->ctas = ln_bn_ceil_div(p->total, p->threads);
  if (p->ctas > LN_BN_MAP_MAX_CTAS) p->ctas = LN_BN_MAP_MAX_CTAS;
  if (p->ctas < 1) p->ctas = 1;
}

#endif
