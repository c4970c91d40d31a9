/*
** batchnorm_stats.cu -- the forward's per-channel work: training
** statistics of every (block, channel) in one launch (bn_reduce_kernel
** with BnStatOp; its last CTA per channel tile computes the coefficients
** and updates the running statistics), coefficients from the running
** statistics (eval) or from given ones (SyncBatchNorm), and
** SyncBatchNorm's row packing and Chan merge of the gathered rows.
**
** Each lane sums x - K and (x - K)^2 in the compute type, K its first
** value, and turns them into (count, mean, M2); partials merge by Chan's
** formula in float64 (never E[x^2] - E[x]^2 over the whole channel).
*/
#include "cuda/batchnorm_common.cuh"

template <typename T> struct BnStatOp {
  typedef typename BnAcc<T>::type A;
  typedef BnStatPart Part;
  struct Lane {
    int64_t base, n;
    A k[4], s1[4], s2[4];
  };
  const T *x;
  int64_t s[4];               /* x's level strides */
  BnFwdCoef<A> k;

  template <int VEC, bool ROWS>
  __device__ Lane start(int64_t blk, int64_t c, bool active) const {
    Lane l;
    l.base = active ? bn_lane_base<ROWS, VEC>(s, blk, c) : 0;
    l.n = 0;
    for (int v = 0; v < 4; v++) l.k[v] = l.s1[v] = l.s2[v] = 0;
    return l;
  }

  template <int VEC, bool ROWS> __device__ void add(Lane &l, int64_t u2, int64_t u3) const {
    BnVec<T, VEC> xv = bn_load<T, VEC>(x, l.base + bn_unit_off<ROWS>(s, u2, u3));
    if (l.n == 0)
      for (int v = 0; v < VEC; v++) l.k[ROWS ? v : 0] = bn_to_acc(xv.v[ROWS ? v : 0]);
    for (int v = 0; v < VEC; v++) {
      const int j = ROWS ? v : 0;
      A d = bn_to_acc(xv.v[v]) - l.k[j];
      l.s1[j] += d;
      l.s2[j] += d * d;
    }
    l.n += ROWS ? 1 : VEC;
  }

  /* M2 clamped at 0 against rounding, NaN kept (fmax would turn a NaN
  ** into 0: a finite variance for data with NaN, unlike the CPU). */
  __device__ Part part(const Lane &l, int v) const {
    if (l.n == 0) return Part{ 0, 0, 0 };
    double n = (double)l.n, s1 = (double)l.s1[v], s2 = (double)l.s2[v];
    double m2 = s2 - s1 * s1 / n;
    return Part{ n, (double)l.k[v] + s1 / n, m2 < 0 ? 0.0 : m2 };
  }

  __device__ void pair_done(int64_t g, int64_t c, const Part &p) const {
    if (k.row) {
      k.row[c] = p.mean;
      k.row[k.C + c] = p.m2;
    } else {
      k.coef(g, c, p.mean, p.m2 / p.n);
    }
  }

  __device__ void channel_done(int64_t c) const {
    if (!k.row && k.meand) k.update_from_blocks(c);
  }
};

/* The statistics of f's x over its G blocks, then k's per-channel work. */
template <typename T>
static ln_status stats_launch(const ln_bn_dev_fwd *f, cudaStream_t s, BnWork &w,
                              const BnFwdCoef<typename BnAcc<T>::type> &k) {
  const ln_bn_geom *g = &f->g;
  const ln_bn_dview *ops[1] = { &f->x };
  int vec = bn_vec_for(g, (int)sizeof(T), g->rows ? 4 : 8, ops, 1, NULL);
  BnStatOp<T> op;
  op.x = (const T *)f->x.v.data;
  bn_lv_of(g, vec, f->x, op.s);
  op.k = k;
  return bn_reduce_run<T>(op, g, f->G, vec, f->device, s, w, "the batch_norm statistics");
}

/* One (block 0) coefficient per channel from the running statistics or
** the given float64 mean[C], var[C]; with `update`, the running update by
** the given ones (the variance made unbiased with k.M values). */
template <typename A>
__global__ void bn_coef_kernel(const BnFwdCoef<A> k, const double *given, bool update) {
  for (int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; c < k.C;
       c += (int64_t)gridDim.x * blockDim.x) {
    double mean = given ? given[c] : bn_vec_get(k.rm, c, 0.0);
    double var = given ? given[k.C + c] : bn_vec_get(k.rv, c, 1.0);
    k.coef(0, c, mean, var);
    if (update) k.update(c, mean, var * k.M / (k.M - 1));
  }
}

template <typename T>
static ln_status forward_coefs_t(const ln_bn_dev_fwd *f, cudaStream_t s, BnWork &w, void *ca,
                                 void *cb) {
  typedef typename BnAcc<T>::type A;
  int64_t C = f->g.C, GC = f->G * C;
  BnFwdCoef<A> k = {};
  k.w = f->weight, k.b = f->bias, k.rm = f->running_mean, k.rv = f->running_var;
  k.stats = (A *)f->stats, k.ca = (A *)ca, k.cb = (A *)cb;
  k.C = C, k.G = f->G;
  k.M = f->given ? f->count : (double)(f->g.outer * f->g.inner);
  k.eps = f->eps, k.momentum = f->momentum, k.rmax = f->rmax, k.dmax = f->dmax;
  k.renorm = f->renorm && f->training;
  bool update = f->training && f->update && f->running_mean.data && f->running_var.data;
  if (f->training && !f->given) {
    if (update) {
      k.meand = (double *)w.take(sizeof(double) * (size_t)GC);
      k.vard = (double *)w.take(sizeof(double) * (size_t)GC);
      if (!k.meand || !k.vard) return ln_last_status();
    }
    return stats_launch<T>(f, s, w, k);
  }
  bn_coef_kernel<A><<<bn_blocks_for(C, 256), 256, 0, s>>>(k, f->given, update);
  return bn_launched("the batch_norm coefficient kernel");
}

ln_status bn_forward_coefs(const ln_bn_dev_fwd *f, cudaStream_t s, BnWork &w, void *ca,
                           void *cb) {
  ln_status st = bn_check_dtype(f->dt);
  if (st == LN_OK) LN_CU_DISPATCH_FLOAT(f->dt, T, st = forward_coefs_t<T>(f, s, w, ca, cb));
  return st;
}

/* ---- SyncBatchNorm ---- */

__global__ void bn_row_header_kernel(double *row, double h0, double h1, double h2) {
  row[0] = h0;
  row[1] = h1;
  row[2] = h2;
}

template <typename T>
static ln_status pack_t(const ln_bn_dev_fwd *f, cudaStream_t s, BnWork &w, double *row) {
  BnFwdCoef<typename BnAcc<T>::type> k = {};
  k.C = f->g.C, k.G = 1;
  k.row = row;
  return stats_launch<T>(f, s, w, k);
}

extern "C" ln_status ln_cuda_bn_sync_pack(const ln_bn_dev_fwd *f, const double header[3],
                                          double *row) {
  cudaStream_t s = ln_cuda_stream(f->device);
  if (!s) return ln_last_status();
  bn_row_header_kernel<<<1, 1, 0, s>>>(row, header[0], header[1], header[2]);
  ln_status st = bn_launched("SyncBatchNorm's row header");
  if (st != LN_OK || !f->x.v.data) return st;
  BnWork w(f->device);
  if ((st = bn_check_dtype(f->dt)) == LN_OK)
    LN_CU_DISPATCH_FLOAT(f->dt, T, st = pack_t<T>(f, s, w, row + 3));
  return st;
}

/* nn/syncbatchnorm.c's combine on the device: the global mean, then M2
** over the rows with values, ranks in order; out = mean[C], var[C]. */
__global__ void bn_sync_merge_kernel(const double *rows, int P, int64_t C, double n,
                                     double *out) {
  const int64_t len = 3 + 2 * C;
  for (int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; c < C;
       c += (int64_t)gridDim.x * blockDim.x) {
    double mean = 0, var = 0;
    for (int r = 0; r < P && n > 0; r++) mean += rows[r * len] / n * rows[r * len + 3 + c];
    for (int r = 0; r < P; r++) {
      const double *row = rows + r * len;
      if (row[0] == 0) continue;
      double d = row[3 + c] - mean;
      var += row[3 + C + c] + row[0] * d * d;
    }
    out[c] = mean;
    out[C + c] = n > 0 ? var / n : 0;
  }
}

extern "C" ln_status ln_cuda_bn_sync_merge(int device, const double *rows, int P, int64_t C,
                                           double count, double *out) {
  cudaStream_t s = ln_cuda_stream(device);
  if (!s) return ln_last_status();
  bn_sync_merge_kernel<<<bn_blocks_for(C, 128), 128, 0, s>>>(rows, P, C, count, out);
  return bn_launched("SyncBatchNorm's merge kernel");
}
