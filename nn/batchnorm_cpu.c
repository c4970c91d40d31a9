/*
** batchnorm_cpu.c -- the BatchNorm CPU kernels (batchnorm_kernels.h):
** cutting the work into blocks and units, merging the partial results in
** a fixed order, and the choice of typed loops (batchnorm_cpu.inc) by
** dtype and instruction set.
**
** A block (a few thousand values of each channel: a piece of a run, whole
** runs or a group of rows) is summed in the compute type; blocks depend
** on the shape only. A unit, the work one thread takes at a time, is a
** range of blocks for a range of channels, walked in memory order; it
** merges its blocks in double into one partial per channel. There are
** up to 64 block ranges, and the channels are split too when that leaves
** fewer than 64 units. Partials merge per channel in block-range order
** afterwards, so the thread count changes nothing.
*/
#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

#include "batchnorm_cpu.h"
#include "scratch.h"

#define BN_ISA base
#include "batchnorm_cpu_isa.inc"

/* ---- per-channel arithmetic ---- */

/* v rounded to the compute type of dt: x - k is then exact for x near k. */
static inline double bn_round(ln_dtype dt, double v) {
  return dt == LN_F64 ? v : (double)(float)v;
}

static int64_t clamp64(int64_t v, int64_t lo, int64_t hi) {
  return v < lo ? lo : v > hi ? hi : v;
}

/* Tensors of this many bytes or more do not stay in the caches: their
** maps stream the output, their rows reductions walk rows in order. */
static size_t bn_stream_bytes = LN_BN_STREAM_BYTES;

/* Rows blocks take 128 rows or more, and rows units 64 channels or more
** (four 64-byte vectors of float32, a register block): a block's
** per-channel work (the shift, the merge in double) and a unit's walk
** down the rows then cover enough values. With blocks of 32 rows and
** units of a few channels, the statistics of a channels-last
** (8,2048,7,7) input took 1.5-2x as long, and of a (16,96) input 5-8x;
** with units of 16 channels rather than 64, the statistics of (256,1024)
** and (64,512) inputs took 1.2-1.5x as long (AVX2 and AVX-512 builds).
**
** Rows of 1 KB or more in an input that does not stay in the caches (as
** large as a streamed output) are summed in memory order, row by row
** (rows_seq): a register block's walk down the rows reads a slice of
** each, a stride apart. Against the walk, 2 threads, float32
** channels-last: the backward's sums of (16,512,28,28), (32,256,28,28)
** and (16,256,56,56) 0.62-0.68x the time, the statistics 0.74-0.94x; for
** rows of 512 bytes (C = 128) the sums took 1.03-1.43x, in the caches
** (12.8 MB and less) 1.3-2.4x, and with fewer blocks than units, each
** unit a range of channels ((1024,4096): 8 blocks), 1.5x: there the
** walk stays. */
static bn_part bn_partition(ln_dtype dt, const ln_bn_geom *g) {
  bn_part p = { .per_run = 1, .runs_per = 1, .rows_per = 1 };
  int64_t c_units = g->C ? g->C : 1;   /* channel ranges: at most */
  if (g->rows) {
    size_t row = (size_t)g->C * ln_dtype_size(dt);
    p.rows_per = clamp64(BN_ROWS_VALUES / c_units, 128, 256);
    p.nblk = (g->outer * g->inner + p.rows_per - 1) / p.rows_per;
    p.rows_seq = row >= BN_SEQ_ROW && row * (size_t)(g->outer * g->inner) >= bn_stream_bytes &&
                 p.nblk >= BN_UNITS;
    c_units = g->C / BN_ROWS_CHANNELS > 1 ? g->C / BN_ROWS_CHANNELS : 1;
  } else if (g->inner >= BN_BLOCK) {
    p.per_run = (g->inner + BN_BLOCK - 1) / BN_BLOCK;
    p.nblk = g->outer * p.per_run;
  } else {
    p.runs_per = BN_BLOCK / (g->inner ? g->inner : 1);
    p.nblk = (g->outer + p.runs_per - 1) / p.runs_per;
  }
  p.units_b = clamp64(p.nblk, 1, BN_UNITS);
  p.units_c = clamp64((BN_UNITS + p.units_b - 1) / p.units_b, 1, c_units);
  return p;
}

static int bn_max_isa = LN_BN_ISA_AVX512;

int ln_bn_cpu_max_isa(int isa) {
  int old = bn_max_isa;
  bn_max_isa = isa;
  return old;
}

static const bn_kernels *bn_kernels_for(ln_dtype dt) {
#ifdef LN_BN_HAVE_X86
  if (bn_max_isa >= LN_BN_ISA_AVX512 && __builtin_cpu_supports("avx512f") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq"))
    return ln_bn_kernels_avx512(dt);
  if (bn_max_isa >= LN_BN_ISA_AVX2 && __builtin_cpu_supports("avx2") &&
      __builtin_cpu_supports("fma"))
    return ln_bn_kernels_avx2(dt);
#endif
  return ln_bn_kernels_base(dt);
}

void ln_bn_cpu_invstd(const double *var, double eps, const double *w, double *invstd,
                      double *a, int64_t C) {
  bn_kernels_for(LN_F64)->invstd(var, eps, w, invstd, a, C);
}

/* ---- streaming stores ---- */

size_t ln_bn_cpu_stream_threshold(size_t bytes) {
  size_t old = bn_stream_bytes;
  bn_stream_bytes = bytes;
  return old;
}

#if defined(__SSE2__)
/* Streaming stores of the whole `width`-byte pieces of n bytes at d (d
** aligned to width); returns the bytes stored. */
static size_t bn_stream_16(char *d, const char *s, size_t n) {
  size_t i = 0;
  for (; n - i >= 16; i += 16)
    _mm_stream_si128((__m128i *)(d + i), _mm_loadu_si128((const __m128i *)(s + i)));
  return i;
}

#ifdef LN_BN_HAVE_X86
__attribute__((target("avx"))) static size_t bn_stream_32(char *d, const char *s, size_t n) {
  size_t i = 0;
  for (; n - i >= 32; i += 32)
    _mm256_stream_si256((__m256i *)(d + i), _mm256_loadu_si256((const __m256i *)(s + i)));
  return i;
}

__attribute__((target("avx512f"))) static size_t bn_stream_64(char *d, const char *s, size_t n) {
  size_t i = 0;
  for (; n - i >= 64; i += 64) _mm512_stream_si512((void *)(d + i), _mm512_loadu_si512(s + i));
  return i;
}
#endif

/* The widest streaming store the CPU has: a line in one store moved
** the NCHW maps' output 1.2-1.3x faster than in 16-byte pieces. */
static size_t bn_stream_width(void) {
#ifdef LN_BN_HAVE_X86
  if (__builtin_cpu_supports("avx512f")) return 64;
  if (__builtin_cpu_supports("avx")) return 32;
#endif
  return 16;
}
#endif

/* Streaming stores from dst's first boundary of the store's width on;
** plain copies for the ends and on CPUs without them. */
void bn_stream_copy(void *restrict dst, const void *restrict src, size_t bytes) {
  char *d = dst;
  const char *s = src;
#if defined(__SSE2__)
  size_t width = bn_stream_width(), head = (size_t)(-(uintptr_t)d & (width - 1)), done;
  if (head > bytes) head = bytes;
  memcpy(d, s, head);
  d += head, s += head, bytes -= head;
#ifdef LN_BN_HAVE_X86
  done = width == 64 ? bn_stream_64(d, s, bytes)
       : width == 32 ? bn_stream_32(d, s, bytes) : bn_stream_16(d, s, bytes);
#else
  done = bn_stream_16(d, s, bytes);
#endif
  d += done, s += done, bytes -= done;
#endif
  memcpy(d, s, bytes);
}

void bn_stream_fence(void) {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

/* ---- drivers ---- */

static bool bn_parallel(const ln_bn_geom *g) {
  return g->C * g->outer * g->inner >= BN_GRAIN && omp_get_max_threads() > 1 &&
         !omp_in_parallel();
}

static ln_status bn_nomem(void) {
  return ln_error(LN_ENOMEM, "out of memory in batch_norm");
}

/* fn over pieces [0, n) of t: in contiguous ranges on the OpenMP threads
** when par, else on the calling thread without entering a parallel
** region (which costs a futex call even when it runs one thread). */
static void bn_run(bool par, int64_t n, bn_range_fn fn, const bn_task *t) {
  if (!par) {
    fn(t, 0, n);
    return;
  }
  #pragma omp parallel
  {
    int64_t nt = omp_get_num_threads(), id = omp_get_thread_num();
    fn(t, n * id / nt, n * (id + 1) / nt);
  }
}

/* Run a reduction (over dy when given, masked with a mask); the partials
** (n: units_b, a and b: units_b * C doubles) are returned in *out, from
** the calling thread's scratch (nn/scratch.h), followed there by the
** threads' block sums: the caller gives them back with
** ln_scratch_free(out->n). */
static ln_status bn_reduce(ln_dtype dt, const ln_bn_geom *g, const ln_bn_view *x,
                           const ln_bn_view *dy, const ln_bn_mask *mask, const double *kvec,
                           bn_part *pt, bn_partials *out) {
  bn_task t = { .g = g, .x = x, .dy = dy, .mask = mask, .pt = bn_partition(dt, g),
                .kvec = kvec };
  int64_t np = t.pt.units_b * g->C;
  bool par = bn_parallel(g);
  int nt = par ? omp_get_max_threads() : 1;
  int64_t parts = (t.pt.units_b + 2 * np + 7) / 8 * 8;   /* the sums 64-byte aligned */
  int64_t n = parts + bn_scratch_stride(g->C) * nt;
  double *space = ln_scratch_alloc(sizeof(double) * (size_t)n);
  if (!space) return bn_nomem();
  t.out.n = space;
  t.out.a = t.out.n + t.pt.units_b;
  t.out.b = t.out.a + np;
  t.scratch = space + parts;
  bn_run(par, t.pt.units_b * t.pt.units_c, bn_kernels_for(dt)->reduce, &t);
  *pt = t.pt;
  *out = t.out;
  return LN_OK;
}

/* Mean and biased variance from a statistics reduction's partials: Chan's
** merge of the block ranges in order, all channels at once. */
static void bn_stats_finish(const bn_part *pt, const bn_partials *p, int64_t C, double *mean,
                            double *var) {
  double n = 0;
  for (int64_t u = 0; u < pt->units_b; u++) {
    const double *mu = p->a + u * C, *m2u = p->b + u * C;
    double nu = p->n[u], nt = n + nu, f = nu / nt, w = n * nu / nt;
    for (int64_t c = 0; c < C; c++) bn_merge(n == 0, &mean[c], &var[c], mu[c], m2u[c], f, w);
    n = nt;
  }
  for (int64_t c = 0; c < C; c++) var[c] /= n;
}

ln_status ln_bn_cpu_stats(ln_dtype dt, const ln_bn_geom *g, const ln_bn_view *x,
                          double *mean, double *var) {
  bn_part pt;
  bn_partials p;
  ln_status st = bn_reduce(dt, g, x, NULL, NULL, NULL, &pt, &p);
  if (st != LN_OK) return st;
  bn_stats_finish(&pt, &p, g->C, mean, var);
  ln_scratch_free(p.n);
  return LN_OK;
}

/* The backward's sums from their reduction's partials (the block ranges
** in order), taken about k and moved to be about the mean. */
static void bn_sums_finish(const bn_part *pt, const bn_partials *p, int64_t C,
                           const double *mean, const double *k, double *sum_dy,
                           double *sum_dyx) {
  for (int64_t c = 0; c < C; c++) sum_dy[c] = sum_dyx[c] = 0;
  for (int64_t u = 0; u < pt->units_b; u++)
    for (int64_t c = 0; c < C; c++) {
      sum_dy[c] += p->a[u * C + c];
      sum_dyx[c] += p->b[u * C + c];
    }
  for (int64_t c = 0; c < C; c++)
    sum_dyx[c] -= (mean[c] - k[c]) * sum_dy[c];  /* from x - k to x - mean */
}

/* The backward's sums over dy, or over dy masked. */
static ln_status bn_grad_sums(ln_dtype dt, const ln_bn_geom *g, const ln_bn_view *x,
                              const ln_bn_view *dy, const ln_bn_mask *mask,
                              const double *mean, double *sum_dy, double *sum_dyx) {
  bn_part pt;
  bn_partials p;
  double *k = ln_scratch_alloc(sizeof(double) * (size_t)(g->C + 1));
  if (!k) return bn_nomem();
  for (int64_t c = 0; c < g->C; c++) k[c] = bn_round(dt, mean[c]);
  ln_status st = bn_reduce(dt, g, x, dy, mask, k, &pt, &p);
  if (st == LN_OK) bn_sums_finish(&pt, &p, g->C, mean, k, sum_dy, sum_dyx);
  ln_scratch_free(k);   /* and the partials after it */
  return st;
}

ln_status ln_bn_cpu_grad_sums(ln_dtype dt, const ln_bn_geom *g, const ln_bn_view *x,
                              const ln_bn_view *dy, const double *mean,
                              double *sum_dy, double *sum_dyx) {
  return bn_grad_sums(dt, g, x, dy, NULL, mean, sum_dy, sum_dyx);
}

/* A channel's coefficients of a map (see bn_map) in the kernels' form:
** k the rounded mean, b2 and d2 the shift's term folded into d. */
static void bn_coef_at(ln_dtype dt, unsigned mode, double mean, double b, double d, double *k,
                       double *b2, double *d2) {
  *k = mode & BN_X ? bn_round(dt, mean) : 0;
  *b2 = mode & BN_X ? b : 0;
  *d2 = mode & BN_X ? d - (mean - *k) * b : d;
}

/* A channel's coefficients of the backward's map, dx = dz * a + (x -
** mean) * b + d, over M values (see ln_bn_cpu_backward); without dx, dz
** alone goes out. */
static void bn_dx_coef_at(bool dx, bool training, double w, double invstd, double sum_dy,
                          double sum_dyx, double M, double *a, double *b, double *d) {
  *a = dx ? w * invstd : 1;
  *b = training && dx ? -*a * invstd * invstd * sum_dyx / M : 0;
  *d = training && dx ? -*a * sum_dy / M : 0;
}

/* The operands of a map (see the BN_* flags); unused ones are NULL. */
typedef struct bn_operands {
  const ln_bn_view *x, *dy, *add, *o, *dz;
  const ln_bn_mask *mask;
} bn_operands;

/* out = d + (x - mean) * b (+ dy * a, + add; the mode's flags): with k the
** rounded mean, the kernels compute (x - k) * b + (d - (mean - k) * b).
** reread: the map reads again what a
** reduction has just read, and streams a large output. */
static ln_status bn_map(ln_dtype dt, const ln_bn_geom *g, unsigned mode,
                        const bn_operands *op, const double *mean, const double *a,
                        const double *b, const double *d, bool reread) {
  const bn_kernels *kn = bn_kernels_for(dt);
  int64_t C = g->C, rows = g->outer * g->inner, R = bn_rows_repeat(g);
  int64_t cb = g->rows ? bn_rows_coef_bytes(C * R, kn->acc_size) : 0;
  double *k = ln_scratch_alloc(sizeof(double) * (size_t)(3 * C + 1) +
                               (size_t)(cb ? 4 * cb + BN_PAGE : 0));
  if (!k) return bn_nomem();
  double *d2 = k + C, *b2 = d2 + C;
  if (mode & BN_X) {   /* bn_coef_at in loops the compiler vectorizes */
    for (int64_t c = 0; c < C; c++) k[c] = mean[c];
    if (dt != LN_F64)
      for (int64_t c = 0; c < C; c++) k[c] = (float)k[c];
    for (int64_t c = 0; c < C; c++) d2[c] = d[c] - (mean[c] - k[c]) * b[c];
  } else {   /* mean and b are not read */
    for (int64_t c = 0; c < C; c++) bn_coef_at(dt, 0, 0, 0, d[c], &k[c], &b2[c], &d2[c]);
  }
  bn_task t = { .g = g, .x = op->x, .dy = op->dy, .o = op->o, .add = op->add, .dz = op->dz,
                .mask = op->mask, .mode = mode,
                .cf = { .k = k, .a = a, .b = mode & BN_X ? b : b2, .d = d2 },
                .stream = reread && (size_t)(C * rows) * ln_dtype_size(dt) >= bn_stream_bytes };
  bool par = bn_parallel(g);
  if (g->rows) {
    t.per = BN_MAP_CHUNK / C > R ? BN_MAP_CHUNK / C / R * R : R;
    t.scratch = (void *)(((uintptr_t)(b2 + C) + BN_PAGE - 1) & ~(uintptr_t)(BN_PAGE - 1));
    t.coef_bytes = cb;
    kn->prepare_rows(&t);
    bn_run(par, (rows + t.per - 1) / t.per, kn->map_rows, &t);
  } else {
    bn_run(par, C * g->outer * bn_plane_pieces(g), kn->map_plane, &t);
  }
  ln_scratch_free(k);
  return LN_OK;
}

ln_status ln_bn_cpu_affine(ln_dtype dt, const ln_bn_geom *g, const ln_bn_view *x,
                           const ln_bn_view *y, const double *mean, const double *a,
                           const double *b, bool after_stats) {
  bn_operands op = { .x = x, .o = y };
  return bn_map(dt, g, BN_X, &op, mean, NULL, a, b, after_stats);
}

/* ---- training passes channel by channel ---- */

static size_t bn_channel_min = LN_BN_CHANNEL_MIN;

size_t ln_bn_cpu_channel_threshold(size_t bytes) {
  size_t old = bn_channel_min;
  bn_channel_min = bytes;
  return old;
}

/* Does a training pass go channel by channel: each thread takes whole
** channels and maps each right after its sums, from the L2, so x (and
** dy) come from memory once instead of twice. Only for plane channels
** that fit (BN_CHANNEL_BYTES each) with runs of BN_CHANNEL_RUN values or
** more: short runs lie a whole image apart, and read a channel at a time
** they ran slower than in memory order ((32,64,56,56) float32, runs of
** 3136: 1.16-1.24x the time). Interleaved A/B, 2 threads, float32, by
** channel against two passes: (8,32,16,28,28) forward 0.82x the time,
** backward 0.70x; (2,32,224,224) 0.77x and 0.67x. */
static bool bn_by_channel(ln_dtype dt, const ln_bn_geom *g) {
  size_t channel = (size_t)(g->outer * g->inner) * ln_dtype_size(dt);
  return !g->rows && g->inner >= BN_CHANNEL_RUN && g->C >= 2 * omp_get_max_threads() &&
         channel <= BN_CHANNEL_BYTES && channel * (size_t)g->C >= bn_channel_min;
}

/* A training pass channel by channel: the forward (dy NULL: the
** statistics into mean_out, var, invstd_out, then y = (x - mean) * w *
** invstd + b) or the backward (the sums over dy about mean, then dx). */
typedef struct bn_channel_job {
  ln_dtype dt;
  const ln_bn_geom *g;
  const ln_bn_view *x, *dy, *o;          /* o: y or dx */
  const double *w, *b, *mean, *invstd;   /* b: the forward's; mean, invstd: the backward's */
  double eps;
  double *mean_out, *var, *invstd_out;   /* the forward's */
  double *sum_dy, *sum_dyx;              /* the backward's */
} bn_channel_job;

/* Channel c's sums from the blocks and units that the two passes give
** it, merged in the same order (the same bits), then its map, streamed: a
** cached output pushed the channel's x out of the L2, and lost what going
** by channel gains ((8,32,16,28,28) float32, 2 threads: the forward by
** channel 0.74-1.07x the time of two passes streamed, 0.90-1.08x cached). */
static void bn_channel(const bn_channel_job *j, const bn_kernels *kn, const ln_bn_geom *g1,
                       const bn_part *pt, double *space, double *part, int64_t c) {
  const ln_bn_view *v[3] = { j->x, j->dy, j->o };
  ln_bn_view at[3];
  for (int i = 0; i < 3; i++) {
    if (!v[i]) continue;
    at[i] = *v[i];
    at[i].data = (char *)v[i]->data + c * v[i]->s_c * (int64_t)ln_dtype_size(j->dt);
  }
  double mean = j->dy ? j->mean[c] : 0, kr = bn_round(j->dt, mean), a = 0, b, d, k, b2, d2;
  bn_task r = { .g = g1, .x = &at[0], .dy = j->dy ? &at[1] : NULL, .pt = *pt, .kvec = &kr,
                .scratch = space, .out = { part, part + pt->units_b, part + 2 * pt->units_b } };
  kn->reduce(&r, 0, pt->units_b);
  if (j->dy) {
    bn_sums_finish(pt, &r.out, 1, &mean, &kr, &j->sum_dy[c], &j->sum_dyx[c]);
    bn_dx_coef_at(true, true, j->w[c], j->invstd[c], j->sum_dy[c], j->sum_dyx[c],
                  (double)(g1->outer * g1->inner), &a, &b, &d);
  } else {
    bn_stats_finish(pt, &r.out, 1, &mean, &j->var[c]);
    j->mean_out[c] = mean;
    j->invstd_out[c] = 1.0 / sqrt(j->var[c] + j->eps);
    b = j->w[c] * j->invstd_out[c];
    d = j->b[c];
  }
  unsigned mode = j->dy ? BN_X | BN_DY : BN_X;
  bn_coef_at(j->dt, mode, mean, b, d, &k, &b2, &d2);
  bn_task m = { .g = g1, .x = &at[0], .dy = j->dy ? &at[1] : NULL, .o = &at[2], .mode = mode,
                .cf = { &k, &a, &b2, &d2 }, .stream = true };
  kn->map_plane(&m, 0, g1->outer * bn_plane_pieces(g1));
}

/* A training pass channel by channel (bn_by_channel), each thread taking
** whole channels. */
static ln_status bn_by_channel_run(const bn_channel_job *j) {
  const bn_kernels *kn = bn_kernels_for(j->dt);
  const ln_bn_geom g1 = { .C = 1, .outer = j->g->outer, .inner = j->g->inner, .rows = false };
  const bn_part pt = bn_partition(j->dt, &g1);
  bool par = bn_parallel(j->g);
  int nt = par ? omp_get_max_threads() : 1;
  /* each thread's reduce scratch, then its partials (n, a, b), 64 bytes apart */
  int64_t scratch = bn_scratch_stride(1) * nt, per = 3 * pt.units_b + 8;
  double *space = ln_scratch_alloc(sizeof(double) * (size_t)(scratch + per * nt));
  if (!space) return bn_nomem();
  #pragma omp parallel for if (par) schedule(static)
  for (int64_t c = 0; c < j->g->C; c++)
    bn_channel(j, kn, &g1, &pt, space, space + scratch + per * omp_get_thread_num(), c);
  ln_scratch_free(space);
  return LN_OK;
}

ln_status ln_bn_cpu_train_forward(ln_dtype dt, const ln_bn_geom *g, const ln_bn_view *x,
                                  const ln_bn_view *y, const double *w, const double *b,
                                  double eps, double *mean, double *var, double *invstd) {
  if (bn_by_channel(dt, g)) {
    bn_channel_job j = { .dt = dt, .g = g, .x = x, .o = y, .w = w, .b = b, .eps = eps,
                         .mean_out = mean, .var = var, .invstd_out = invstd };
    return bn_by_channel_run(&j);
  }
  ln_status st = ln_bn_cpu_stats(dt, g, x, mean, var);
  double *a = st == LN_OK ? ln_scratch_alloc(sizeof(double) * (size_t)(g->C + 1)) : NULL;
  if (st != LN_OK || !a) return st != LN_OK ? st : bn_nomem();
  ln_bn_cpu_invstd(var, eps, w, invstd, a, g->C);
  st = ln_bn_cpu_affine(dt, g, x, y, mean, a, b, true);
  ln_scratch_free(a);
  return st;
}

ln_status ln_bn_cpu_fused_forward(ln_dtype dt, const ln_bn_geom *g, const ln_bn_view *x,
                                  const ln_bn_view *add, const ln_bn_view *y,
                                  const ln_bn_mask *mask, const double *mean,
                                  const double *a, const double *b, bool after_stats) {
  bn_operands op = { .x = x, .add = add, .o = y, .mask = mask };
  return bn_map(dt, g, BN_X | BN_RELU | (add ? BN_ADD : 0), &op, mean, NULL, a, b,
                after_stats);
}

/* The backward's map (see ln_bn_cpu_backward), the sums being over M
** values per channel. */
static ln_status bn_backward_map(ln_dtype dt, const ln_bn_geom *g, const ln_bn_view *x,
                                 const ln_bn_view *dy, const ln_bn_mask *mask,
                                 const ln_bn_view *dx, const ln_bn_view *dz_out,
                                 const double *mean, const double *invstd, const double *w,
                                 bool training, const double *sum_dy, const double *sum_dyx,
                                 double M) {
  int64_t C = g->C;
  double *a = ln_scratch_alloc(sizeof(double) * (size_t)(3 * C + 1)), *b = a + C, *d = b + C;
  if (!a) return bn_nomem();
  for (int64_t c = 0; c < C; c++)
    bn_dx_coef_at(dx, training, dx ? w[c] : 1, dx ? invstd[c] : 1,
                  training && dx ? sum_dy[c] : 0, training && dx ? sum_dyx[c] : 0, M, &a[c],
                  &b[c], &d[c]);
  bn_operands op = { .x = x, .dy = dy, .o = dx ? dx : dz_out, .mask = mask };
  unsigned mode = training && dx ? BN_X | BN_DY : BN_DY;
  /* In training the sums have just read x and dy: a streamed dx made the
  ** backward up to 1.2x faster in both layouts ((32,64,56,56) float32, 2
  ** threads, interleaved A/B; the rows map gained once its coefficients
  ** stopped colliding with its stores, see bn_rows_coef_bytes). */
  bool reread = training;
  ln_status st;
  if (!mask && !training) {  /* dx = (dy - 0) * a + 0: BatchNorm's eval map on dy */
    op.x = dy;
    op.dy = NULL;
    st = bn_map(dt, g, BN_X, &op, d, NULL, a, d, false);
  } else {
    if (mask) mode |= BN_MASKED;
    if (mask && dx && dz_out) {
      mode |= BN_DZ;
      op.dz = dz_out;
    }
    st = bn_map(dt, g, mode, &op, mean, a, b, d, reread);
  }
  ln_scratch_free(a);
  return st;
}

ln_status ln_bn_cpu_backward(ln_dtype dt, const ln_bn_geom *g, const ln_bn_view *x,
                             const ln_bn_view *dy, const ln_bn_mask *mask,
                             const ln_bn_view *dx, const ln_bn_view *dz_out,
                             const double *mean, const double *invstd, const double *w,
                             bool training, double *sum_dy, double *sum_dyx) {
  if (training && sum_dy && dx && !dz_out && !mask && bn_by_channel(dt, g)) {
    bn_channel_job j = { .dt = dt, .g = g, .x = x, .dy = dy, .o = dx, .w = w, .mean = mean,
                         .invstd = invstd, .sum_dy = sum_dy, .sum_dyx = sum_dyx };
    return bn_by_channel_run(&j);
  }
  ln_status st = LN_OK;
  if (sum_dy) st = bn_grad_sums(dt, g, x, dy, mask, mean, sum_dy, sum_dyx);
  if (st != LN_OK || (!dx && !dz_out)) return st;
  return bn_backward_map(dt, g, x, dy, mask, dx, dz_out, mean, invstd, w, training, sum_dy,
                         sum_dyx, (double)(g->outer * g->inner));
}

ln_status ln_bn_cpu_train_dx(ln_dtype dt, const ln_bn_geom *g, const ln_bn_view *x,
                             const ln_bn_view *dy, const ln_bn_view *dx, const double *mean,
                             const double *invstd, const double *w, const double *sum_dy,
                             const double *sum_dyx, double count) {
  return bn_backward_map(dt, g, x, dy, NULL, dx, NULL, mean, invstd, w, true, sum_dy, sum_dyx,
                         count);
}

ln_status ln_bn_cpu_train_backward(ln_dtype dt, const ln_bn_geom *g, const ln_bn_view *x,
                                   const ln_bn_view *dy, const ln_bn_view *dx,
                                   const double *mean, const double *invstd,
                                   const double *w, double *sum_dy, double *sum_dyx) {
  return ln_bn_cpu_backward(dt, g, x, dy, NULL, dx, NULL, mean, invstd, w, true, sum_dy,
                            sum_dyx);
}
