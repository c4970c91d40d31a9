/*
** batchnorm_cpu.h -- what the BatchNorm CPU kernel files share: how work
** is cut into blocks and units, and the table of typed loops that
** batchnorm_cpu_isa.inc builds once per instruction set. Private to
** nn/batchnorm_cpu*.c.
*/
#ifndef LN_BATCHNORM_CPU_H
#define LN_BATCHNORM_CPU_H

#include <math.h>
#include <omp.h>
#include <string.h>

#include "batchnorm_kernels.h"

/* The typed helpers take a constant `grad` and must be inlined to be
** specialised on it (one copy of the loops per mode); the exception is
** the simd sums, kept out of line so that every caller adds in the same
** order (see run_sums_body). */
#if defined(__GNUC__)
#define BN_INLINE static inline __attribute__((always_inline))
#define BN_NOINLINE __attribute__((noinline))
#else
#define BN_INLINE static inline
#define BN_NOINLINE
#endif

#define BN_BLOCK 4096        /* values per plane block */
#define BN_SHORT_RUN 1024    /* plane runs this short share lane sums, */
#define BN_LANE_GROUP 16     /* this many channels at a time */
#define BN_ROWS_VALUES 8192  /* about this many values per rows block, */
                             /* and 128 to 256 rows */
#define BN_ROWS_CHANNELS 64  /* channels per unit of a rows reduction, at least */
#define BN_UNITS 64          /* units to aim for */
#define BN_MAP_CHUNK 16384   /* values per task of the elementwise passes */
#define BN_GRAIN 32768       /* fewer values run on one thread */
#define BN_STAGE 2048        /* values per staged piece of a streamed map */
#define BN_PAGE 4096         /* bytes between a rows map's coefficient arrays */
#define BN_SEQ_ROW 1024      /* bytes of a row from which rows reductions */
                             /* from memory go in memory order */
#define BN_WIDE_ROW 8192     /* bytes of a row from which rows maps keep */
#define BN_MAP_TILE 4        /* coefficients in registers this many rows */
#define BN_CHANNEL_RUN 8192  /* a forward by channel: values per run, at least, */
#define BN_CHANNEL_BYTES ((size_t)512 << 10)   /* and bytes per channel, at most */

typedef struct bn_part {
  int64_t nblk;      /* blocks (each covering every channel) */
  int64_t per_run;   /* plane: blocks per run (runs longer than a block) */
  int64_t runs_per;  /* plane: runs per block (shorter runs) */
  int64_t rows_per;  /* rows: rows per block */
  int64_t units_b, units_c;  /* block ranges; channel ranges per block range */
  bool rows_seq;     /* rows: whole rows in memory order, the sums in memory */
} bn_part;

/* The first channel of unit uc of n channel ranges (n: the end). Rows
** units start on 16 channels, a 64-byte vector of float32: cut anywhere,
** a (16,1024,14,14) channels-last input's units of 341 channels had
** unaligned register blocks and a remainder each, and its backward sums
** took 1.1x as long. */
static inline int64_t bn_unit_c(const ln_bn_geom *g, int64_t n, int64_t uc) {
  if (uc == n) return g->C;
  return g->rows ? uc * (g->C / 16) / n * 16 : uc * g->C / n;
}

typedef struct bn_rect { int64_t j0, j1, i0, i1; } bn_rect;  /* runs x values */

typedef struct bn_partials { double *n, *a, *b; } bn_partials;

/* Per-channel coefficients of a map: out = (x - k) * b + d (+ dy * a). */
typedef struct bn_coef { const double *k, *a, *b, *d; } bn_coef;

/* What a map computes, as flags (each combination used is a loop of its
** own, see FN(map_mode) in batchnorm_cpu.inc):
**   v = d; with BN_X v += (x - k) * b (then x's term comes first);
**   BN_DY: v += g * a, g = dy, or with BN_MASKED dy where the mask bit is
**   set, else 0; BN_ADD: v += add; BN_RELU: v = relu(v) (NaN stays),
**   mask bits set where the stored v passes a gradient (> 0 or NaN);
**   BN_DZ: g stored into dz. */
enum {
  BN_X = 1, BN_DY = 2, BN_ADD = 4, BN_RELU = 8, BN_MASKED = 16, BN_DZ = 32
};

/* What a reduction sums per channel: statistics of x, or the backward's
** sums over dy (or over dy masked). */
enum { BN_SUM_X, BN_SUM_DY, BN_SUM_DZ };

/* One kernel call: what the typed loops read and write. */
typedef struct bn_task {
  const ln_bn_geom *g;
  const ln_bn_view *x, *dy, *o;  /* dy: the backward's gradient, else NULL;
                                 ** o: a map's output */
  const ln_bn_view *add, *dz;    /* maps: the addend; the masked gradient out */
  const ln_bn_mask *mask;        /* the fused ReLU's bits, else NULL */
  unsigned mode;                 /* maps: BN_* flags */
  bn_part pt;                    /* reductions: blocks and units */
  const double *kvec;            /* reductions over dy: per-channel shifts */
  bn_partials out;               /* reductions: the partials */
  bn_coef cf;                    /* maps: the coefficients */
  void *scratch;                 /* reductions: bn_scratch_stride ACC per thread;
                                 ** rows maps: prepare_rows' coefficients */
  int64_t coef_bytes;            /* rows maps: from one coefficient array to the
                                 ** next (bn_rows_coef_bytes) */
  int64_t per;                   /* rows maps: rows per chunk */
  bool stream;                   /* maps: store the output past the caches */
} bn_task;

/* Run pieces [begin, end) of a task (units, map pieces or row chunks). */
typedef void (*bn_range_fn)(const bn_task *t, int64_t begin, int64_t end);

/* The typed loops for one dtype (see batchnorm_cpu.inc). */
typedef struct bn_kernels {
  bn_range_fn reduce, map_plane, map_rows;
  void (*prepare_rows)(const bn_task *t);
  void (*invstd)(const double *var, double eps, const double *w, double *invstd, double *a,
                 int64_t C);     /* the same in every dtype's table */
  size_t acc_size;               /* bytes of the compute type */
} bn_kernels;

/* A reduction thread's scratch (k, s1, s2: 3*C ACC) and a gap of 64
** bytes or more: the rows kernels store s1 and s2 every few rows, and a
** cache line shared with the next thread's k made the two threads take
** turns owning it (two threads ran the channels-last statistics no faster
** than one). */
static inline int64_t bn_scratch_stride(int64_t C) { return 3 * C + 16; }

/* Pieces per run of a plane map (each at most BN_MAP_CHUNK values). */
static inline int64_t bn_plane_pieces(const ln_bn_geom *g) {
  return (g->inner + BN_MAP_CHUNK - 1) / BN_MAP_CHUNK;
}

/* Block b of a plane channel: a piece of one run, or whole runs. */
static inline bn_rect bn_plane_block(const bn_part *p, const ln_bn_geom *g, int64_t b) {
  bn_rect r;
  if (p->per_run > 1) {
    int64_t piece = b % p->per_run;
    r.j0 = b / p->per_run;
    r.j1 = r.j0 + 1;
    r.i0 = piece * g->inner / p->per_run;
    r.i1 = (piece + 1) * g->inner / p->per_run;
  } else {
    r.j0 = b * p->runs_per;
    r.j1 = r.j0 + p->runs_per < g->outer ? r.j0 + p->runs_per : g->outer;
    r.i0 = 0;
    r.i1 = g->inner;
  }
  return r;
}

/* Walking rows r = j * inner + i of a rows geom. */
typedef struct bn_row_walk { int64_t j, i; } bn_row_walk;

static inline bn_row_walk bn_row_walk_at(const ln_bn_geom *g, int64_t r) {
  return (bn_row_walk){ r / g->inner, r % g->inner };
}

static inline void bn_row_next(bn_row_walk *w, const ln_bn_geom *g) {
  if (++w->i == g->inner) {
    w->i = 0;
    w->j++;
  }
}

static inline int64_t bn_row_offset(const bn_row_walk *w, const ln_bn_view *v) {
  return w->j * v->s_outer + w->i * v->s_inner;
}

/* Rows in a group of a flat channels-last map: about 128 values (short
** rows cost a call each), and no more rows than there are. */
static inline int64_t bn_rows_repeat(const ln_bn_geom *g) {
  int64_t r = g->C < 128 ? 128 / g->C : 1, rows = g->outer * g->inner;
  return r < rows ? r : rows > 0 ? rows : 1;
}

/* Bytes from one of a rows map's coefficient arrays (W values of size
** acc) to the next: whole pages, so the four share their addresses' low
** 12 bits. A load whose low 12 bits match a store still in flight waits
** for it (4K aliasing), and a map's output sweeps every page offset: the
** fewer offsets the coefficients cover, the fewer rows collide. Groups
** of 1024 values in adjacent arrays (which cover them all) ran the
** channels-last training forward and backward 13-20% slower on
** (32,64,56,56) float32 (the eval map within 5-10% either way). */
static inline int64_t bn_rows_coef_bytes(int64_t W, size_t acc) {
  return ((W * (int64_t)acc + BN_PAGE - 1) / BN_PAGE) * BN_PAGE;
}

/* Do rows with these strides lie C apart, row r at r * C? */
static inline bool bn_rows_flat_strides(const ln_bn_geom *g, int64_t s_outer,
                                        int64_t s_inner) {
  return (g->inner == 1 || s_inner == g->C) && (g->outer == 1 || s_outer == g->inner * g->C);
}

static inline bool bn_rows_flat(const ln_bn_geom *g, const ln_bn_view *v) {
  return !v || bn_rows_flat_strides(g, v->s_outer, v->s_inner);
}

/* 32 mask bits from bit pos on, bit 0 of the result the bit at pos (the
** mask has a word of padding, so the last word can be read past). */
static inline uint32_t bn_bits32(const uint32_t *bits, int64_t pos) {
  uint64_t w = bits[pos >> 5] | (uint64_t)bits[(pos >> 5) + 1] << 32;
  return (uint32_t)(w >> (pos & 31));
}

/* The mask bit of element (c, j, i). */
static inline int64_t bn_mask_bit(const ln_bn_mask *m, int64_t c, int64_t j, int64_t i) {
  return m->off + c * m->s_c + j * m->s_outer + i * m->s_inner;
}

/* Values per channel in block b. */
static inline int64_t bn_block_count(const bn_part *p, const ln_bn_geom *g, int64_t b) {
  if (g->rows) {
    int64_t rows = g->outer * g->inner, r0 = b * p->rows_per;
    return r0 + p->rows_per < rows ? p->rows_per : rows - r0;
  }
  bn_rect r = bn_plane_block(p, g, b);
  return (r.j1 - r.j0) * (r.i1 - r.i0);
}

/* Chan's merge of a partial (mean mu, sum of squared deviations m2u, over
** nu values) into (mean, m2) over n values: f = nu / (n + nu) and
** w = n * nu / (n + nu); `first` when n is 0. Blocks merge into units and
** units into the result through it. A mean that is not finite adds as a
** sum would (inf and a finite mean make inf, inf and -inf NaN). */
static inline void bn_merge(bool first, double *mean, double *m2, double mu, double m2u,
                            double f, double w) {
  double delta = mu - *mean;
  *mean = first ? mu : isfinite(delta) ? *mean + delta * f : *mean + mu;
  *m2 = first ? m2u : *m2 + m2u + delta * delta * w;
}

/* Streaming stores: `bytes` from src to dst, past the caches where the
** CPU can (the output's lines are not read first, and do not push the
** inputs out); a thread fences its streamed stores before its part of a
** map ends, so that they are seen by the thread that goes on. */
void bn_stream_copy(void *restrict dst, const void *restrict src, size_t bytes);
void bn_stream_fence(void);

/* The loop tables: baseline, and AVX2+FMA and AVX-512 where the compiler
** can target them (x86-64 GCC); NULL for non-float dtypes. */
const bn_kernels *ln_bn_kernels_base(ln_dtype dt);
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define LN_BN_HAVE_X86 1
const bn_kernels *ln_bn_kernels_avx2(ln_dtype dt);
const bn_kernels *ln_bn_kernels_avx512(ln_dtype dt);
#endif

#endif
