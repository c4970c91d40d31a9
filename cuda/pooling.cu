/*
** pooling.cu -- max and adaptive average pooling on a CUDA device (the
** pool entries of nn/layers_device.h). One thread per output in the
** forward passes; one thread per input element in the backward passes,
** gathering the outputs whose windows hold it (no atomics, the CPU's
** order of additions). The arithmetic is nn/layers_shared.h's, the same
** the CPU loops run. float32 and float64, any strides.
*/
#include "cuda/layers_common.cuh"

/* Element i of an (N, C, h, w) iteration in NCHW order. */
struct pos4 { int64_t n, c, h, w; };

__device__ static inline pos4 pos_of(int64_t i, int64_t C, int64_t h, int64_t w) {
  pos4 p;
  p.w = i % w;
  p.h = i / w % h;
  p.c = i / (w * h) % C;
  p.n = i / (w * h * C);
  return p;
}

__global__ void max_pool_kernel(ln_pool_geom g, const void *x, ln_cu_strides xs, void *y,
                                ln_cu_strides ys, int64_t *idx, int64_t total, bool f64) {
  LN_CU_FOR(i, total) {
    pos4 p = pos_of(i, g.C, g.OH, g.OW);
    int64_t arg;
    double best = ln_max_pool_at(&g, x, xs.s, f64, p.n, p.c, p.h, p.w, &arg);
    ln_sh_st(y, ln_sh_at(ys.s, p.n, p.c, p.h, p.w), f64, best);
    if (idx) idx[i] = arg;   /* plane by plane, in output order: i itself */
  }
}

__global__ void max_pool_grad_kernel(ln_pool_geom g, const int64_t *idx, const void *gy,
                                     ln_cu_strides gs, void *dx, ln_cu_strides ds,
                                     int64_t total, bool f64) {
  LN_CU_FOR(i, total) {
    pos4 p = pos_of(i, g.C, g.H, g.W);
    ln_sh_st(dx, ln_sh_at(ds.s, p.n, p.c, p.h, p.w), f64,
             ln_max_pool_grad_at(&g, idx, gy, gs.s, f64, p.n, p.c, p.h, p.w));
  }
}

__global__ void adaptive_kernel(ln_pool_geom g, const void *x, ln_cu_strides xs, void *y,
                                ln_cu_strides ys, int64_t total, bool f64) {
  LN_CU_FOR(i, total) {
    pos4 p = pos_of(i, g.C, g.OH, g.OW);
    ln_sh_st(y, ln_sh_at(ys.s, p.n, p.c, p.h, p.w), f64,
             ln_adaptive_avg_at(&g, x, xs.s, f64, p.n, p.c, p.h, p.w));
  }
}

__global__ void adaptive_grad_kernel(ln_pool_geom g, const void *gy, ln_cu_strides gs,
                                     void *dx, ln_cu_strides ds, int64_t total, bool f64) {
  LN_CU_FOR(i, total) {
    pos4 p = pos_of(i, g.C, g.H, g.W);
    ln_sh_st(dx, ln_sh_at(ds.s, p.n, p.c, p.h, p.w), f64,
             ln_adaptive_grad_at(&g, gy, gs.s, f64, p.n, p.c, p.h, p.w));
  }
}

/* The stream, or NULL with the error set; refuses dtypes other than
** float32 and float64. */
static cudaStream_t pool_stream(int device, ln_dtype dt) {
  if (dt != LN_F32 && dt != LN_F64) {
    ln_error(LN_EINVAL, "pooling kernels take float32 or float64, got %s", ln_dtype_name(dt));
    return NULL;
  }
  return ln_cuda_stream(device);
}

extern "C" ln_status ln_cuda_max_pool2d_forward(int device, ln_dtype dt, const ln_pool_geom *g,
                                                const void *x, const int64_t xs[4], void *y,
                                                const int64_t ys[4], int64_t *idx) {
  cudaStream_t s = pool_stream(device, dt);
  if (!s) return ln_last_status();
  int64_t total = g->N * g->C * g->OH * g->OW;
  return ln_cu_launch("max_pool2d", s, total, max_pool_kernel, *g, x, ln_cu_strides_of(xs), y,
                      ln_cu_strides_of(ys), idx, total, dt == LN_F64);
}

extern "C" ln_status ln_cuda_max_pool2d_backward(int device, ln_dtype dt,
                                                 const ln_pool_geom *g, const int64_t *idx,
                                                 const void *gy, const int64_t gs[4],
                                                 void *dx, const int64_t dxs[4]) {
  cudaStream_t s = pool_stream(device, dt);
  if (!s) return ln_last_status();
  int64_t total = g->N * g->C * g->H * g->W;
  return ln_cu_launch("max_pool2d backward", s, total, max_pool_grad_kernel, *g, idx, gy,
                      ln_cu_strides_of(gs), dx, ln_cu_strides_of(dxs), total, dt == LN_F64);
}

extern "C" ln_status ln_cuda_adaptive_avg_pool2d(int device, ln_dtype dt,
                                                 const ln_pool_geom *g, const void *x,
                                                 const int64_t xs[4], void *y,
                                                 const int64_t ys[4], bool backward) {
  cudaStream_t s = pool_stream(device, dt);
  if (!s) return ln_last_status();
  bool f64 = dt == LN_F64;
  if (backward) {
    int64_t total = g->N * g->C * g->H * g->W;
    return ln_cu_launch("adaptive_avg_pool2d backward", s, total, adaptive_grad_kernel, *g, x,
                        ln_cu_strides_of(xs), y, ln_cu_strides_of(ys), total, f64);
  }
  int64_t total = g->N * g->C * g->OH * g->OW;
  return ln_cu_launch("adaptive_avg_pool2d", s, total, adaptive_kernel, *g, x,
                      ln_cu_strides_of(xs), y, ln_cu_strides_of(ys), total, f64);
}
