/*
** batchnorm_backward.cu -- the backward of every BatchNorm form on CUDA
** tensors: one launch for the sums of dz and dz * (x - mean) of every
** (block, channel) (bn_reduce_kernel with BnGradOp; its last CTA per
** channel tile computes the dx coefficients and the parameters'
** gradients), or the coefficients alone where no sums are needed (eval,
** SyncBatchNorm's given sums); then one map, dx = ca * dz + cb * (x -
** mean_hi) + cd and the addend's gradient dz. dz is dy, or with the fused
** ReLU dy where the mask bit is set and 0 elsewhere (a select: NaN in dy
** stays out).
*/
#include "cuda/batchnorm_common.cuh"

template <typename T> struct BnGradOp {
  typedef typename BnAcc<T>::type A;
  typedef BnGradPart Part;
  struct Lane {
    int64_t xb, gb, mb;
    A mean[4], s1[4], s2[4];
  };
  const T *x, *dy;
  int64_t xs[4], gs[4];
  BnBits mask;                 /* bits NULL: none */
  const A *mean;               /* the saved MEAN row */
  BnBwdCoef<A> k;

  template <int VEC, bool ROWS>
  __device__ Lane start(int64_t blk, int64_t c, bool active) const {
    Lane l = {};
    if (!active) return l;
    l.xb = bn_lane_base<ROWS, VEC>(xs, blk, c);
    l.gb = bn_lane_base<ROWS, VEC>(gs, blk, c);
    if (mask.bits) l.mb = mask.off + bn_lane_base<ROWS, VEC>(mask.s, blk, c);
    for (int v = 0; v < (ROWS ? VEC : 1); v++) l.mean[v] = mean[blk * k.C + c + v];
    return l;
  }

  template <int VEC, bool ROWS> __device__ void add(Lane &l, int64_t u2, int64_t u3) const {
    BnVec<T, VEC> xv = bn_load<T, VEC>(x, l.xb + bn_unit_off<ROWS>(xs, u2, u3));
    BnVec<T, VEC> gv = bn_load<T, VEC>(dy, l.gb + bn_unit_off<ROWS>(gs, u2, u3));
    uint32_t bits = mask.bits ? bn_bits_get<VEC>(mask.bits, l.mb + bn_unit_off<ROWS>(mask.s, u2, u3))
                              : ~0u;
    for (int v = 0; v < VEC; v++) {
      const int j = ROWS ? v : 0;
      A dz = (bits >> v) & 1 ? bn_to_acc(gv.v[v]) : (A)0;
      l.s1[j] += dz;
      l.s2[j] += dz * (bn_to_acc(xv.v[v]) - l.mean[j]);
    }
  }

  __device__ Part part(const Lane &l, int v) const {
    return Part{ (double)l.s1[v], (double)l.s2[v] };
  }
  __device__ void pair_done(int64_t g, int64_t c, const Part &p) const { k.sums(g, c, p.s1, p.s2); }
  __device__ void channel_done(int64_t c) const {
    if (k.sdy) k.param_grads(c);
  }
};

template <typename T>
static ln_status sums_launch(const ln_bn_dev_bwd *b, cudaStream_t s, BnWork &w,
                             const BnBwdCoef<typename BnAcc<T>::type> &k) {
  typedef typename BnAcc<T>::type A;
  const ln_bn_geom *g = &b->g;
  const ln_bn_dview *ops[2] = { &b->x, &b->dy };
  int vec = bn_vec_for(g, (int)sizeof(T), g->rows ? 4 : 8, ops, 2, &b->mask);
  BnGradOp<T> op = {};
  op.x = (const T *)b->x.v.data;
  op.dy = (const T *)b->dy.v.data;
  bn_lv_of(g, vec, b->x, op.xs);
  bn_lv_of(g, vec, b->dy, op.gs);
  if (b->mask.m.bits) {
    op.mask.bits = b->mask.m.bits;
    op.mask.off = b->mask.m.off;
    bn_lv_of_mask(g, vec, b->mask, op.mask.s);
  }
  op.mean = (const A *)b->stats + LN_BN_MEAN * b->G * g->C;
  op.k = k;
  return bn_reduce_run<T>(op, g, b->G, vec, b->device, s, w, "the batch_norm gradient sums");
}

/* Coefficients without sums of this call's own: the given float64
** sum_dy[C], sum_dyx[C] (G = 1), or none (eval: dx = w * invstd * dz). */
template <typename A>
__global__ void bn_bwd_coef_kernel(const BnBwdCoef<A> k, const double *given) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < k.G * k.C;
       i += (int64_t)gridDim.x * blockDim.x) {
    int64_t c = i % k.C;
    k.coef(i / k.C, c, given ? given[c] : 0.0, given ? given[k.C + c] : 0.0);
  }
}

template <typename T> struct BnBwdMap {
  typedef typename BnAcc<T>::type A;
  BnOpnd<const T> x, dy;       /* x.p NULL: eval, dx = ca * dz */
  BnOpnd<T> dx, dz;            /* each may be NULL */
  BnBits mask;
  const A *mean, *ca, *cb, *cd;
  ln_bn_lv lv;
  int64_t C, total, step[4];
};

template <typename T, int VEC> __global__ void bn_backward_map_kernel(const BnBwdMap<T> a) {
  typedef typename BnAcc<T>::type A;
  int64_t q = blockIdx.x * (int64_t)blockDim.x + threadIdx.x, d[4];
  const int64_t S = (int64_t)gridDim.x * blockDim.x;
  const bool rows = a.lv.chan == 3;
  ln_bn_digits(q, a.lv.n, d);
  for (; q < a.total; q += S, ln_bn_digits_add(d, a.step, a.lv.n)) {
    int64_t gc = d[0] * a.C + (rows ? d[3] * VEC : d[1]);
    BnVec<T, VEC> gv = bn_load<T, VEC>(a.dy.p, ln_bn_offset(d, a.dy.s)), xv, ov, zv;
    if (a.x.p) xv = bn_load<T, VEC>(a.x.p, ln_bn_offset(d, a.x.s));
    uint32_t bits = a.mask.bits ? bn_bits_get<VEC>(a.mask.bits, a.mask.off + ln_bn_offset(d, a.mask.s))
                                : ~0u;
    for (int v = 0; v < VEC; v++) {
      int64_t i = rows ? gc + v : gc;
      A dz = (bits >> v) & 1 ? bn_to_acc(gv.v[v]) : (A)0;
      A o = dz * a.ca[i];
      if (a.x.p) o += (bn_to_acc(xv.v[v]) - a.mean[i]) * a.cb[i] + a.cd[i];
      ov.v[v] = bn_from_acc<T>(o);
      zv.v[v] = bn_from_acc<T>(dz);
    }
    if (a.dx.p) bn_store<T, VEC>(a.dx.p, ln_bn_offset(d, a.dx.s), ov);
    if (a.dz.p) bn_store<T, VEC>(a.dz.p, ln_bn_offset(d, a.dz.s), zv);
  }
}

template <typename T>
static ln_status backward_map(const ln_bn_dev_bwd *b, cudaStream_t s, const void *ca,
                              const void *cb, const void *cd) {
  typedef typename BnAcc<T>::type A;
  const ln_bn_geom *g = &b->g;
  bool use_x = b->training && b->dx.v.data;
  ln_bn_dview none = {};
  const ln_bn_dview *ops[4] = { use_x ? &b->x : &none, &b->dy, &b->dx, &b->dz };
  int vec = bn_vec_for(g, (int)sizeof(T), 8, ops, 4, &b->mask);
  BnBwdMap<T> a = {};
  ln_bn_lv_for(g, b->G, vec, &a.lv);
  ln_bn_map_plan mp;
  ln_bn_map_plan_for(&a.lv, &mp);
  a.x.p = use_x ? (const T *)b->x.v.data : NULL;
  a.dy.p = (const T *)b->dy.v.data;
  a.dx.p = (T *)b->dx.v.data;
  a.dz.p = (T *)b->dz.v.data;
  if (a.x.p) bn_lv_of(g, vec, b->x, a.x.s);
  bn_lv_of(g, vec, b->dy, a.dy.s);
  if (a.dx.p) bn_lv_of(g, vec, b->dx, a.dx.s);
  if (a.dz.p) bn_lv_of(g, vec, b->dz, a.dz.s);
  if (b->mask.m.bits) {
    a.mask.bits = b->mask.m.bits;
    a.mask.off = b->mask.m.off;
    bn_lv_of_mask(g, vec, b->mask, a.mask.s);
  }
  a.mean = (const A *)b->stats + LN_BN_MEAN * b->G * g->C;
  a.ca = (const A *)ca, a.cb = (const A *)cb, a.cd = (const A *)cd;
  a.C = g->C, a.total = mp.total;
  ln_bn_digits(mp.ctas * mp.threads, a.lv.n, a.step);
  bool ran = bn_with_vec<T>(vec, [&](auto V) {
    bn_backward_map_kernel<T, decltype(V)::value><<<(unsigned)mp.ctas, mp.threads, 0, s>>>(a);
  });
  return bn_launched_vec(ran, vec, "the batch_norm backward kernel");
}

/* row: SyncBatchNorm's local sums (no dx), or NULL. */
template <typename T>
static ln_status backward_t(const ln_bn_dev_bwd *b, cudaStream_t s, double *row) {
  typedef typename BnAcc<T>::type A;
  BnWork w(b->device);
  int64_t GC = b->G * b->g.C;
  BnBwdCoef<A> k = {};
  k.w = b->weight, k.gw = b->grad_weight, k.gb = b->grad_bias;
  k.stats = (const A *)b->stats;
  k.C = b->g.C, k.G = b->G;
  k.M = b->given_sums ? b->count : (double)(b->g.outer * b->g.inner);
  k.training = b->training, k.renorm = b->renorm && b->training;
  k.row = row;
  k.ca = (A *)w.take(sizeof(A) * (size_t)GC);
  k.cb = (A *)w.take(sizeof(A) * (size_t)GC);
  k.cd = (A *)w.take(sizeof(A) * (size_t)GC);
  if (!k.ca || !k.cb || !k.cd) return ln_last_status();
  bool params = b->grad_weight.data || b->grad_bias.data;
  bool sums = !b->given_sums && (row || params || (b->training && b->dx.v.data));
  ln_status st;
  if (sums) {
    if (params) {
      k.sdy = (double *)w.take(sizeof(double) * (size_t)GC);
      k.sdyx = (double *)w.take(sizeof(double) * (size_t)GC);
      if (!k.sdy || !k.sdyx) return ln_last_status();
    }
    st = sums_launch<T>(b, s, w, k);
  } else {
    bn_bwd_coef_kernel<A><<<bn_blocks_for(GC, 256), 256, 0, s>>>(k, b->given_sums);
    st = bn_launched("the batch_norm backward coefficient kernel");
  }
  if (st != LN_OK || row || (!b->dx.v.data && !b->dz.v.data)) return st;
  return backward_map<T>(b, s, k.ca, k.cb, k.cd);
}

static ln_status backward_any(const ln_bn_dev_bwd *b, double *row) {
  cudaStream_t s = ln_cuda_stream(b->device);
  if (!s) return ln_last_status();
  ln_status st = bn_check_dtype(b->dt);
  if (st == LN_OK) LN_CU_DISPATCH_FLOAT(b->dt, T, st = backward_t<T>(b, s, row));
  return st;
}

extern "C" ln_status ln_cuda_bn_backward(const ln_bn_dev_bwd *b) { return backward_any(b, NULL); }

extern "C" ln_status ln_cuda_bn_sync_grad_sums(const ln_bn_dev_bwd *b, double *row) {
  return backward_any(b, row);
}
