/*
** batchnorm_common.cuh -- what the BatchNorm kernel families share
** (include from cuda/batchnorm_*.cu only): typed vector loads, the
** per-channel vectors, partial records and their merges, the one-launch
** reduction skeleton (per-CTA partials, the last CTA of a channel tile
** merges them in a fixed order), the mask's bit helpers, the per-channel
** coefficient formulas of the forward and the backward, and work space.
**
** Compute types: A = float for float32/float16/bfloat16, double for
** float64 (the statistics dtype). Partials and merges are float64.
*/
#ifndef LN_CUDA_BATCHNORM_COMMON_CUH
#define LN_CUDA_BATCHNORM_COMMON_CUH

#include <stdint.h>

#include <type_traits>

#include <cuda_runtime_api.h>

#include "cuda/dtype.cuh"
#include "cuda/runtime.h"

extern "C" {
#include "core/tensor.h"
#include "cuda/batchnorm.h"
#include "cuda/batchnorm_plan.h"
}

#define BN_FULL 0xffffffffu

/* ---- types ---- */

template <typename T> struct BnAcc { typedef float type; };
template <> struct BnAcc<double> { typedef double type; };

__device__ __forceinline__ float bn_to_acc(float x) { return x; }
__device__ __forceinline__ double bn_to_acc(double x) { return x; }
__device__ __forceinline__ float bn_to_acc(__half x) { return __half2float(x); }
__device__ __forceinline__ float bn_to_acc(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T bn_from_acc(float v) {
  return ln_cu_from_float<T>(v);
}
template <typename T> __device__ __forceinline__ T bn_from_acc(double v);
template <> __device__ __forceinline__ double bn_from_acc<double>(double v) { return v; }

/* VEC elements of T read or written at once (VEC * sizeof(T) <= 16). */
template <typename T, int VEC> struct alignas(sizeof(T) * VEC) BnVec {
  T v[VEC];
};

template <typename T, int VEC>
__device__ __forceinline__ BnVec<T, VEC> bn_load(const T *p, int64_t off) {
  return *reinterpret_cast<const BnVec<T, VEC> *>(p + off);
}
template <typename T, int VEC>
__device__ __forceinline__ void bn_store(T *p, int64_t off, const BnVec<T, VEC> &v) {
  *reinterpret_cast<BnVec<T, VEC> *>(p + off) = v;
}

/* Per-channel vectors (nn/batchnorm_device.h's ln_bn_dvec), in double. */
__device__ __forceinline__ double bn_vec_get(const ln_bn_dvec &v, int64_t c, double fill) {
  return v.data ? ln_cu_load_d(v.data, v.dtype, c * v.stride) : fill;
}
__device__ __forceinline__ void bn_vec_set(const ln_bn_dvec &v, int64_t c, double x) {
  ln_cu_store_d(v.data, v.dtype, c * v.stride, x);
}

/* An operand's first element and level strides (batchnorm_plan.h). */
template <typename T> struct BnOpnd {
  T *p;
  int64_t s[4];
};

/* The fused ReLU's mask: bit positions as an operand's elements. */
struct BnBits {
  uint32_t *bits;
  int64_t off;
  int64_t s[4];
};

/* Reductions walk units: plane (block, channel, outer, inner vector),
** rows (block, outer, inner, channel vector). A lane's first element and
** a unit's offset from it. */
template <bool ROWS, int VEC>
__device__ __forceinline__ int64_t bn_lane_base(const int64_t s[4], int64_t blk, int64_t c) {
  return blk * s[0] + (ROWS ? (c / VEC) * s[3] : c * s[1]);
}
template <bool ROWS>
__device__ __forceinline__ int64_t bn_unit_off(const int64_t s[4], int64_t u2, int64_t u3) {
  return ROWS ? u2 * s[1] + u3 * s[2] : u2 * s[2] + u3 * s[3];
}

/* VEC consecutive mask bits from bit e (e % VEC == 0: in one word). */
template <int VEC>
__device__ __forceinline__ uint32_t bn_bits_get(const uint32_t *bits, int64_t e) {
  return (__ldg(bits + (e >> 5)) >> (e & 31)) & ((VEC == 32 ? 0u : 1u << VEC) - 1u);
}

/* Or the bits m into word `word` (-1: none) for every lane of the warp
** (all 32 lanes call it). Lanes of one word are usually neighbours: a
** segmented or down the warp leaves each run's bits with its first lane,
** which stores them with one atomic (a word shared by lanes that are not
** neighbours is or-ed more than once: harmless). */
__device__ __forceinline__ void bn_bits_or(uint32_t *bits, int64_t word, uint32_t m) {
  const unsigned lane = threadIdx.x & 31;
  for (int o = 1; o < 32; o <<= 1) {
    uint32_t om = __shfl_down_sync(BN_FULL, m, o);
    long long ow = __shfl_down_sync(BN_FULL, (long long)word, o);
    if (lane + o < 32 && ow == word) m |= om;
  }
  long long prev = __shfl_up_sync(BN_FULL, (long long)word, 1);
  if (word >= 0 && m && (lane == 0 || prev != word)) atomicOr(bits + word, m);
}

/* ---- partial records ---- */

struct BnStatPart {   /* count, mean, sum of squared deviations */
  double n, mean, m2;
};
struct BnGradPart {   /* sum dz, sum dz * (x - mean_hi) */
  double s1, s2;
};

/* Chan's formula; an empty side adds nothing. */
__device__ __forceinline__ void bn_merge(BnStatPart &a, const BnStatPart &b) {
  if (b.n == 0) return;
  if (a.n == 0) {
    a = b;
    return;
  }
  double n = a.n + b.n, delta = b.mean - a.mean;
  a.mean += delta * (b.n / n);
  a.m2 += b.m2 + delta * delta * (a.n * b.n / n);
  a.n = n;
}
__device__ __forceinline__ void bn_merge(BnGradPart &a, const BnGradPart &b) {
  a.s1 += b.s1;
  a.s2 += b.s2;
}

/* A partial another CTA wrote: read from L2, past this SM's L1. */
__device__ __forceinline__ BnStatPart bn_load_part(const BnStatPart *p) {
  return BnStatPart{ __ldcg(&p->n), __ldcg(&p->mean), __ldcg(&p->m2) };
}
__device__ __forceinline__ BnGradPart bn_load_part(const BnGradPart *p) {
  return BnGradPart{ __ldcg(&p->s1), __ldcg(&p->s2) };
}

__device__ __forceinline__ BnStatPart bn_shfl_down(unsigned mask, const BnStatPart &p,
                                                   int o, int width) {
  return BnStatPart{ __shfl_down_sync(mask, p.n, o, width),
                     __shfl_down_sync(mask, p.mean, o, width),
                     __shfl_down_sync(mask, p.m2, o, width) };
}
__device__ __forceinline__ BnGradPart bn_shfl_down(unsigned mask, const BnGradPart &p, int o,
                                                   int width) {
  return BnGradPart{ __shfl_down_sync(mask, p.s1, o, width),
                     __shfl_down_sync(mask, p.s2, o, width) };
}

/* ---- the one-launch reduction ----
** Op supplies:
**   typedef Part; struct Lane (a lane's running sums over NV channels);
**   template <VEC, ROWS> Lane start(blk, c, active)  c: the lane's first channel
**   template <VEC, ROWS> void add(Lane&, u2, u3)  one unit
**   Part part(const Lane&, v)                  channel c + v's partial
**   void pair_done(g, c, const Part&)          (block, channel) merged
**   void channel_done(c)                       after every pair of the tile
** Partials: parts[(blk * C + c) * splits + split]; counters[tile] counts
** the CTAs done (zero before the launch). Rows: VEC <= 4 (shared memory
** holds threads * VEC partials). */
template <class Op, int VEC, bool ROWS>
__global__ void __launch_bounds__(LN_BN_RED_THREADS)
bn_reduce_kernel(const Op op, const ln_bn_red_plan p, const ln_bn_geom g, unsigned *counters,
                 typename Op::Part *parts) {
  typedef typename Op::Part Part;
  constexpr int NV = ROWS ? VEC : 1;      /* channels per lane */
  __shared__ Part sm[LN_BN_RED_SLOTS];
  __shared__ bool last;
  const int tid = threadIdx.x, col = tid % p.ct, lane = tid / p.ct;
  int64_t blk, tile, split, c0, c1;
  ln_bn_red_cta(&p, blockIdx.x, &blk, &tile, &split);
  ln_bn_red_tile(&p, tile, &c0, &c1);
  const int64_t c = ROWS ? c0 + (int64_t)col * VEC : c0;
  const bool active = c < c1;
  typename Op::Lane st = op.template start<VEC, ROWS>(blk, c, active);
  if (active) {
    int64_t q, end, n[4], step[4], u[4];
    ln_bn_red_units(&p, &g, split, lane, &q, &end, n, step);
    ln_bn_digits(q, n, u);
    for (; q < end; q += p.rt) {
      op.template add<VEC, ROWS>(st, u[2], u[3]);
      ln_bn_digits_add(u, step, n);
    }
  }
  for (int v = 0; v < NV; v++) sm[(lane * p.ct + col) * NV + v] = op.part(st, v);
  __syncthreads();
  for (int s = p.rt / 2; s > 0; s >>= 1) {
    if (lane < s)
      for (int v = 0; v < NV; v++)
        bn_merge(sm[(lane * p.ct + col) * NV + v], sm[((lane + s) * p.ct + col) * NV + v]);
    __syncthreads();
  }
  if (lane == 0 && active)
    for (int v = 0; v < NV; v++)
      parts[((blk * p.C + c + v) * p.splits) + split] = sm[col * NV + v];
  __threadfence();
  __syncthreads();
  if (tid == 0) last = atomicAdd(&counters[tile], 1u) == (unsigned)(p.G * p.splits - 1);
  __syncthreads();
  if (!last) return;
  __threadfence();
  /* the tile's last CTA: teams of p.team lanes merge each (block,
  ** channel)'s splits, in split order, then a tree within the team */
  const int64_t nch = c1 - c0, pairs = p.G * nch;
  const int team = p.team, lanes = ln_bn_merge_lanes(&p), member = tid % team;
  const unsigned mask = ln_bn_team_mask(team, tid);
  for (int64_t pair = tid / team; tid < lanes && pair < pairs; pair += lanes / team) {
    int64_t gb = pair / nch, ch = c0 + pair % nch;
    const Part *pp = parts + (gb * p.C + ch) * p.splits;
    Part acc = Part();
    for (int64_t s = member; s < p.splits; s += team) bn_merge(acc, bn_load_part(pp + s));
    for (int o = team / 2; o > 0; o >>= 1) bn_merge(acc, bn_shfl_down(mask, acc, o, team));
    if (member == 0) op.pair_done(gb, ch, acc);
  }
  __syncthreads();
  for (int64_t ch = c0 + tid; ch < c1; ch += blockDim.x) op.channel_done(ch);
}

/* ---- per-channel coefficients ---- */

__device__ __forceinline__ double bn_clip(double v, double lo, double hi) {
  return v < lo ? lo : v > hi ? hi : v;
}

/* The forward's per-(block, channel) work after the statistics. */
template <typename A> struct BnFwdCoef {
  ln_bn_dvec w, b, rm, rv;
  A *stats;                 /* LN_BN_NSTATS rows of G*C */
  A *ca, *cb;               /* the map: y = (x - mean_hi) * ca + cb */
  double *meand, *vard;     /* G*C each, for the running update; NULL: none */
  int64_t C, G;
  double M;                 /* values per (block, channel) */
  double eps, momentum, rmax, dmax;
  bool renorm;              /* BatchRenorm in training */
  double *row;              /* SyncBatchNorm's packed row: mean, M2 instead */

  /* block_coefs of nn/batchnorm_functional.c, with the mean's rounding
  ** to A folded into the shift. */
  __device__ void coef(int64_t g, int64_t c, double mean, double var) const {
    int64_t i = g * C + c, GC = G * C;
    double wc = bn_vec_get(w, c, 1.0), bc = bn_vec_get(b, c, 0.0);
    double invstd = 1.0 / sqrt(var + eps), r = 1, d = 0;
    if (renorm) {
      double sigma = sqrt(bn_vec_get(rv, c, 1.0) + eps);
      r = bn_clip(sqrt(var + eps) / sigma, 1 / rmax, rmax);
      d = bn_clip((mean - bn_vec_get(rm, c, 0.0)) / sigma, -dmax, dmax);
    }
    double a = wc * r * invstd, sh = renorm ? bc + wc * d : bc;
    A hi = (A)mean;
    double lo = mean - (double)hi;
    stats[LN_BN_MEAN * GC + i] = hi;
    stats[LN_BN_MEAN_LO * GC + i] = (A)lo;
    stats[LN_BN_INVSTD * GC + i] = (A)invstd;
    stats[LN_BN_R * GC + i] = (A)r;
    stats[LN_BN_D * GC + i] = (A)d;
    ca[i] = (A)a;
    cb[i] = (A)(sh - lo * a);
    if (meand) {
      meand[i] = mean;
      vard[i] = var;
    }
  }

  /* running = (1 - m) * running + m * batch, batch the means over the
  ** blocks (sums given) of the means and of the unbiased variances. */
  __device__ void update(int64_t c, double sum_mean, double sum_uvar) const {
    double m = momentum;
    bn_vec_set(rm, c, (1 - m) * bn_vec_get(rm, c, 0.0) + m * (sum_mean / (double)G));
    bn_vec_set(rv, c, (1 - m) * bn_vec_get(rv, c, 0.0) + m * (sum_uvar / (double)G));
  }

  /* The update from the blocks' statistics kept by coef. */
  __device__ void update_from_blocks(int64_t c) const {
    double sm = 0, sv = 0;
    for (int64_t g = 0; g < G; g++) sm += meand[g * C + c];
    for (int64_t g = 0; g < G; g++) sv += vard[g * C + c] * M / (M - 1);
    update(c, sm, sv);
  }
};

/* The backward's per-(block, channel) coefficients from the sums of dz and
** dz * (x - mean): dx = ca * dz + cb * (x - mean_hi) + cd (batchnorm_kernels.h's
** ln_bn_cpu_backward, with w * r for w); in eval dx = ca * dz. */
template <typename A> struct BnBwdCoef {
  ln_bn_dvec w, gw, gb;
  const A *stats;
  A *ca, *cb, *cd;
  double *sdy, *sdyx;       /* G*C each, for the parameters' gradients; NULL: none */
  int64_t C, G;
  double M;
  bool training, renorm;
  double *row;              /* SyncBatchNorm: the sums go here, no coefficients */

  __device__ void coef(int64_t g, int64_t c, double s1, double s2) const {
    int64_t i = g * C + c, GC = G * C;
    double invstd = (double)stats[LN_BN_INVSTD * GC + i];
    double r = renorm ? (double)stats[LN_BN_R * GC + i] : 1.0;
    double a = bn_vec_get(w, c, 1.0) * r * invstd, b = 0, d = 0;
    if (training) {
      b = -a * invstd * invstd * s2 / M;
      d = -a * s1 / M - b * (double)stats[LN_BN_MEAN_LO * GC + i];
    }
    ca[i] = (A)a;
    cb[i] = (A)b;
    cd[i] = (A)d;
  }

  /* Sums over a block: s2 is over dz * (x - mean_hi); the true one is
  ** s2 - mean_lo * s1. */
  __device__ void sums(int64_t g, int64_t c, double s1, double s2) const {
    int64_t i = g * C + c, GC = G * C;
    s2 -= (double)stats[LN_BN_MEAN_LO * GC + i] * s1;
    if (row) {
      row[c] = s1;
      row[C + c] = s2;
    } else {
      coef(g, c, s1, s2);
    }
    if (sdy) {
      sdy[i] = s1;
      sdyx[i] = s2;
    }
  }

  /* grad_weight and grad_bias: the blocks' shares, in block order. */
  __device__ void param_grads(int64_t c) const {
    double w_ = 0, b_ = 0;
    for (int64_t g = 0; g < G; g++) {
      int64_t i = g * C + c, GC = G * C;
      double v = sdyx[i] * (double)stats[LN_BN_INVSTD * GC + i];
      if (renorm && training)
        v = v * (double)stats[LN_BN_R * GC + i] + (double)stats[LN_BN_D * GC + i] * sdy[i];
      w_ = g ? w_ + v : v;
      b_ = g ? b_ + sdy[i] : sdy[i];
    }
    if (gw.data) bn_vec_set(gw, c, w_);
    if (gb.data) bn_vec_set(gb, c, b_);
  }
};

/* ---- host side ---- */

/* Device work space as lunet tensors (the caching allocator serves them);
** released when the launches are enqueued (one stream per device). */
struct BnWork {
  int device;
  int n = 0;
  ln_tensor *t[8];
  explicit BnWork(int dev) : device(dev) {}
  ~BnWork() {
    for (int i = 0; i < n; i++) ln_tensor_release(t[i]);
  }
  BnWork(const BnWork &) = delete;
  BnWork &operator=(const BnWork &) = delete;
  /* bytes of device memory (8-byte aligned at least), or NULL with a message */
  void *take(size_t bytes) {
    if (n == 8) {
      ln_error(LN_ERUNTIME, "batch_norm: too many work buffers");
      return NULL;
    }
    int64_t words = (int64_t)((bytes + 7) / 8);
    ln_device dev = { LN_CUDA, device };
    if (!(t[n] = ln_empty(&words, 1, LN_I64, dev))) return NULL;
    return ln_tensor_data(t[n++]);
  }
};

/* About how many CTAs fill the device: 8 per SM (2048 threads). */
static inline int64_t bn_target_ctas(int device) {
  int sms = 0;
  if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) {
    cudaGetLastError();
    sms = 132;
  }
  return (int64_t)sms * 8;
}

static inline void bn_lv_of(const ln_bn_geom *g, int vec, const ln_bn_dview &v, int64_t s[4]) {
  ln_bn_lv_strides(g->rows, vec, v.s_block, v.v.s_c, v.v.s_outer, v.v.s_inner, s);
}
static inline void bn_lv_of_mask(const ln_bn_geom *g, int vec, const ln_bn_dmask &m,
                                 int64_t s[4]) {
  ln_bn_lv_strides(g->rows, vec, m.s_block, m.m.s_c, m.m.s_outer, m.m.s_inner, s);
}

/* The widest vector every given operand (and mask) takes, at most
** max_vec. ops: views whose v.data may be NULL (skipped). */
static inline int bn_vec_for(const ln_bn_geom *g, int esize, int max_vec,
                             const ln_bn_dview *const *ops, int nops, const ln_bn_dmask *mask) {
  uintptr_t addrs[6];
  int64_t s[6][4];
  int k = 0;
  for (int i = 0; i < nops; i++) {
    if (!ops[i]->v.data) continue;
    addrs[k] = (uintptr_t)ops[i]->v.data;
    bn_lv_of(g, 1, *ops[i], s[k++]);
  }
  int64_t n3 = g->rows ? g->C : g->inner;
  int vec = ln_bn_pick_vec(n3, esize, max_vec, k, addrs, (const int64_t(*)[4])s);
  if (mask && mask->m.bits) {
    int64_t ms[4];
    bn_lv_of_mask(g, 1, *mask, ms);
    while (vec > 1 && !ln_bn_vec_fits((uintptr_t)mask->m.off, 1, ms, vec)) vec /= 2;
  }
  return vec;
}

/* Run f(std::integral_constant<int, VEC>) for vec in {1, 2, 4, 8} with at
** most 16 bytes of T; false (nothing run) for any other vec, which the
** caller reports: a launch skipped silently would leave outputs unset. */
template <typename T, typename F> static inline bool bn_with_vec(int vec, F f) {
  switch (vec) {
  case 1: f(std::integral_constant<int, 1>()); return true;
  case 2: f(std::integral_constant<int, 2>()); return true;
  case 4:
    if constexpr (sizeof(T) <= 4) {
      f(std::integral_constant<int, 4>());
      return true;
    } else {
      return false;
    }
  case 8:
    if constexpr (sizeof(T) <= 2) {
      f(std::integral_constant<int, 8>());
      return true;
    } else {
      return false;
    }
  default: return false;
  }
}

/* LN_OK for the dtypes the kernels take (LN_CU_DISPATCH_FLOAT's). */
static inline ln_status bn_check_dtype(ln_dtype dt) {
  if (dt == LN_F32 || dt == LN_F64 || dt == LN_F16 || dt == LN_BF16) return LN_OK;
  return ln_error(LN_EINVAL, "batch_norm: no CUDA kernel for dtype %s", ln_dtype_name(dt));
}

static inline ln_status bn_launched(const char *what) {
  return ln_cuda_check(cudaGetLastError(), what);
}

/* The status of a launch of vec-wide kernels (bn_with_vec's result). */
static inline ln_status bn_launched_vec(bool ran, int vec, const char *what) {
  if (!ran) return ln_error(LN_ERUNTIME, "%s: no kernel for vectors of %d elements", what, vec);
  return bn_launched(what);
}

/* CTAs for a grid-stride loop over n per-channel items. */
static inline unsigned bn_blocks_for(int64_t n, int threads) {
  int64_t b = ln_bn_ceil_div(n, threads);
  return (unsigned)(b < 1 ? 1 : b > 4096 ? 4096 : b);
}

/* A reduction of Op over the G blocks of g read in vectors of vec (rows:
** at most 4): its plan, partials and counters (zeroed), and its one
** launch. what: "the batch_norm statistics", for messages. */
template <typename T, class Op>
static ln_status bn_reduce_run(const Op &op, const ln_bn_geom *g, int64_t G, int vec,
                               int device, cudaStream_t s, BnWork &w, const char *what) {
  typedef typename Op::Part Part;
  ln_bn_red_plan p;
  if (!ln_bn_red_plan_for(g, G, vec, bn_target_ctas(device), &p))
    return ln_error(LN_ERUNTIME, "%s: no launch plan for %lld blocks of %lld channels", what,
                    (long long)G, (long long)g->C);
  Part *parts = (Part *)w.take(sizeof(Part) * (size_t)(p.G * p.C * p.splits));
  unsigned *counters = (unsigned *)w.take(sizeof(unsigned) * (size_t)p.tiles);
  if (!parts || !counters) return ln_last_status();
  ln_status st = ln_cuda_check(
    cudaMemsetAsync(counters, 0, sizeof(unsigned) * (size_t)p.tiles, s), what);
  if (st != LN_OK) return st;
  bool ran = !g->rows || vec <= 4;
  ran = ran && bn_with_vec<T>(vec, [&](auto V) {
    constexpr int VEC = decltype(V)::value;
    if (!g->rows) {
      bn_reduce_kernel<Op, VEC, false><<<(unsigned)p.ctas, p.threads, 0, s>>>(op, p, *g,
                                                                              counters, parts);
    } else if constexpr (VEC <= 4) {
      bn_reduce_kernel<Op, VEC, true><<<(unsigned)p.ctas, p.threads, 0, s>>>(op, p, *g,
                                                                             counters, parts);
    }
  });
  return bn_launched_vec(ran, vec, what);
}

/* ---- between the families ---- */

/* The forward's coefficients ca, cb (G*C of the statistics dtype) and the
** saved rows: from the batch in training (one reduction launch, running
** statistics updated), else from the running or given statistics
** (batchnorm_stats.cu). */
ln_status bn_forward_coefs(const ln_bn_dev_fwd *f, cudaStream_t s, BnWork &work, void *ca,
                           void *cb);

#endif
