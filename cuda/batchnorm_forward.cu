/*
** batchnorm_forward.cu -- the forward of every BatchNorm form on CUDA
** tensors: the per-channel coefficients (batchnorm_stats.cu), then one map
** over the G blocks, y = (x - mean_hi) * ca + cb (a subtraction and an
** FMA per element; the mean's rounding to the compute type is folded into
** cb, so data far from zero keep their precision), and for the fused form
** relu(... + addend) with the mask bits of the stored output (> 0 or NaN,
** as nn/batchnorm_kernels.h's ln_bn_mask).
*/
#include "cuda/batchnorm_common.cuh"

template <typename T> struct BnFwdMap {
  typedef typename BnAcc<T>::type A;
  BnOpnd<const T> x, add;     /* add.p NULL: none */
  BnOpnd<T> y;
  BnBits mask;                /* bits NULL: none */
  const A *mean, *ca, *cb;    /* G*C each */
  ln_bn_lv lv;
  int64_t C, total, step[4];
  bool relu;
};

/* A grid-stride loop over vectors of VEC elements; with a mask, whole
** warps stay in the loop (the bits of a warp are or-ed together). */
template <typename T, int VEC> __global__ void bn_forward_map_kernel(const BnFwdMap<T> a) {
  typedef typename BnAcc<T>::type A;
  int64_t q = blockIdx.x * (int64_t)blockDim.x + threadIdx.x, d[4];
  const int64_t S = (int64_t)gridDim.x * blockDim.x;
  const bool rows = a.lv.chan == 3;
  ln_bn_digits(q, a.lv.n, d);
  for (;; q += S, ln_bn_digits_add(d, a.step, a.lv.n)) {
    const bool valid = q < a.total;
    if (a.mask.bits ? !__any_sync(BN_FULL, valid) : !valid) break;
    uint32_t bits = 0;
    if (valid) {
      int64_t gc = d[0] * a.C + (rows ? d[3] * VEC : d[1]);
      BnVec<T, VEC> xv = bn_load<T, VEC>(a.x.p, ln_bn_offset(d, a.x.s)), yv, av;
      if (a.add.p) av = bn_load<T, VEC>(a.add.p, ln_bn_offset(d, a.add.s));
      for (int v = 0; v < VEC; v++) {
        int64_t i = rows ? gc + v : gc;
        A o = (bn_to_acc(xv.v[v]) - a.mean[i]) * a.ca[i] + a.cb[i];
        if (a.add.p) o += bn_to_acc(av.v[v]);
        if (a.relu) o = o < 0 ? (A)0 : o;   /* relu(NaN) is NaN */
        yv.v[v] = bn_from_acc<T>(o);
        if (a.mask.bits) bits |= (uint32_t)!(bn_to_acc(yv.v[v]) <= 0) << v;
      }
      bn_store<T, VEC>(a.y.p, ln_bn_offset(d, a.y.s), yv);
    }
    if (a.mask.bits) {
      int64_t e = valid ? a.mask.off + ln_bn_offset(d, a.mask.s) : -1;
      bn_bits_or(a.mask.bits, valid ? e >> 5 : -1, valid ? bits << (e & 31) : 0);
    }
  }
}

template <typename T>
static ln_status forward_map(const ln_bn_dev_fwd *f, cudaStream_t s, const void *ca,
                             const void *cb) {
  typedef typename BnAcc<T>::type A;
  const ln_bn_geom *g = &f->g;
  const ln_bn_dview *ops[3] = { &f->x, &f->y, &f->add };
  int vec = bn_vec_for(g, (int)sizeof(T), 8, ops, 3, f->relu ? &f->mask : NULL);
  BnFwdMap<T> a = {};
  ln_bn_lv_for(g, f->G, vec, &a.lv);
  ln_bn_map_plan mp;
  ln_bn_map_plan_for(&a.lv, &mp);
  a.x.p = (const T *)f->x.v.data;
  a.add.p = f->relu ? (const T *)f->add.v.data : NULL;
  a.y.p = (T *)f->y.v.data;
  bn_lv_of(g, vec, f->x, a.x.s);
  bn_lv_of(g, vec, f->y, a.y.s);
  if (a.add.p) bn_lv_of(g, vec, f->add, a.add.s);
  if (f->relu && f->mask.m.bits) {
    a.mask.bits = f->mask.m.bits;
    a.mask.off = f->mask.m.off;
    bn_lv_of_mask(g, vec, f->mask, a.mask.s);
  }
  a.mean = (const A *)f->stats + LN_BN_MEAN * f->G * g->C;
  a.ca = (const A *)ca, a.cb = (const A *)cb;
  a.C = g->C, a.total = mp.total, a.relu = f->relu;
  ln_bn_digits(mp.ctas * mp.threads, a.lv.n, a.step);
  bool ran = bn_with_vec<T>(vec, [&](auto V) {
    bn_forward_map_kernel<T, decltype(V)::value><<<(unsigned)mp.ctas, mp.threads, 0, s>>>(a);
  });
  return bn_launched_vec(ran, vec, "the batch_norm forward kernel");
}

template <typename T> static ln_status forward_t(const ln_bn_dev_fwd *f, cudaStream_t s) {
  typedef typename BnAcc<T>::type A;
  BnWork w(f->device);
  size_t GC = (size_t)(f->G * f->g.C);
  void *ca = w.take(sizeof(A) * GC), *cb = w.take(sizeof(A) * GC);
  if (!ca || !cb) return ln_last_status();
  ln_status st = bn_forward_coefs(f, s, w, ca, cb);
  return st != LN_OK || !f->x.v.data ? st : forward_map<T>(f, s, ca, cb);
}

extern "C" ln_status ln_cuda_bn_forward(const ln_bn_dev_fwd *f) {
  cudaStream_t s = ln_cuda_stream(f->device);
  if (!s) return ln_last_status();
  ln_status st = bn_check_dtype(f->dt);
  if (st == LN_OK) LN_CU_DISPATCH_FLOAT(f->dt, T, st = forward_t<T>(f, s));
  return st;
}
