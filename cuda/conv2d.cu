/*
** conv2d.cu -- conv2d on a CUDA device (the conv2d entries of
** nn/layers_device.h): the column form of nn/conv2d_cpu.inc, chunk by
** chunk of samples and group by group, with the device's gemm
** (core/device_kernels.h: cuBLAS) for the products.
**   forward:  colT = im2col(x); out_g = W_g colT (into buf); out = buf + b
**   backward: db = sum of gy per channel (one reduction over all of gy);
**             per chunk buf = gy; dW_g += gy_g colT^T; dcol = W_g^T gy_g,
**             which col2im adds into dx, one thread per input element
**             gathering the taps that read it (no atomics, deterministic).
** float32 and float64; x, out, gy, dx through their strides; w, dw
** contiguous. The index math is nn/layers_shared.h's, tested on the CPU.
*/
#include <string.h>

#include "cuda/layers_common.cuh"

#define CHUNK_BYTES ((int64_t)256 << 20)   /* an im2col chunk's budget */

/* colT[k][r] for the chunk from n0, group grp (Kg * rows elements). */
__global__ void im2col_kernel(ln_conv_geom g, const void *x, ln_cu_strides xs, int64_t n0,
                              int64_t grp, int64_t rows, int64_t total, void *colT, bool f64) {
  LN_CU_FOR(i, total) {
    int64_t src = ln_conv_col_src(&g, xs.s, n0, grp, i / rows, i % rows);
    ln_sh_st(colT, i, f64, src < 0 ? 0.0 : ln_sh_ld(x, src, f64));
  }
}

/* dx (of the chunk's samples, group grp's channels) += col2im(colT). */
__global__ void col2im_kernel(ln_conv_geom g, const void *colT, int64_t rows, int64_t n0,
                              int64_t grp, int64_t total, void *dx, ln_cu_strides ds,
                              bool f64) {
  int64_t Cg = g.C / g.groups;
  LN_CU_FOR(i, total) {
    int64_t iw = i % g.W, ih = i / g.W % g.H, c = i / (g.W * g.H) % Cg;
    int64_t n = i / (g.W * g.H * Cg);
    int64_t off = ln_sh_at(ds.s, n0 + n, grp * Cg + c, ih, iw);
    ln_sh_st(dx, off, f64,
             ln_conv_col2im_at(&g, colT, rows, f64, ln_sh_ld(dx, off, f64), n, c, ih, iw));
  }
}

/* Between the tensor t (strides ts) and buf[oc][r] for the chunk's rows:
** gather reads t; otherwise t = buf + b (b may be NULL). */
__global__ void rows_copy_kernel(ln_conv_geom g, int64_t n0, int64_t rows, int64_t total,
                                 void *buf, void *t, ln_cu_strides ts, const void *b,
                                 bool gather, bool f64) {
  int64_t P = g.OH * g.OW;
  LN_CU_FOR(i, total) {
    int64_t oc = i / rows, r = i % rows;
    int64_t off = ln_sh_at(ts.s, n0 + r / P, oc, r % P / g.OW, r % g.OW);
    if (gather) {
      ln_sh_st(buf, i, f64, ln_sh_ld(t, off, f64));
    } else {
      double add = b ? ln_sh_ld(b, oc, f64) : 0.0;   /* + 0 as the CPU: -0 becomes 0 */
      ln_sh_st(t, off, f64, ln_sh_round(ln_sh_ld(buf, i, f64) + add, f64));
    }
  }
}

/* db[oc] = the sum of gy over (n, oh, ow), in double: one block per
** channel, a fixed tree, so the result does not vary between runs. */
__global__ void bias_grad_kernel(ln_conv_geom g, const void *gy, ln_cu_strides gs, void *db,
                                 bool f64) {
  __shared__ double part[LN_CU_THREADS];
  int64_t P = g.OH * g.OW, count = g.N * P;
  for (int64_t oc = blockIdx.x; oc < g.OC; oc += gridDim.x) {
    double acc = 0;
    for (int64_t r = threadIdx.x; r < count; r += blockDim.x)
      acc += ln_sh_ld(gy, ln_sh_at(gs.s, r / P, oc, r % P / g.OW, r % g.OW), f64);
    part[threadIdx.x] = acc;
    __syncthreads();
    for (unsigned half = blockDim.x / 2; half > 0; half /= 2) {
      if (threadIdx.x < half) part[threadIdx.x] += part[threadIdx.x + half];
      __syncthreads();
    }
    if (threadIdx.x == 0) ln_sh_st(db, oc, f64, part[0]);
    __syncthreads();
  }
}

/* ---- the host side ---- */

/* What one call holds: the stream, the gemm, the chunk buffers. */
typedef struct conv_run {
  int device;
  ln_dtype dt;
  bool f64;
  int64_t elem, chunk, P, OCg, Kg;
  cudaStream_t stream;
  const ln_device_kernels *dk;
  ln_tensor *col, *buf;   /* chunk * P * Kg, chunk * P * OC */
} conv_run;

static ln_status run_open(conv_run *r, int device, ln_dtype dt, const ln_conv_geom *g) {
  ln_device dev = { LN_CUDA, device };
  memset(r, 0, sizeof *r);
  r->device = device;
  r->dt = dt;
  r->f64 = dt == LN_F64;
  if (dt != LN_F32 && dt != LN_F64)
    return ln_error(LN_EINVAL, "conv2d kernels take float32 or float64, got %s",
                    ln_dtype_name(dt));
  r->dk = ln_device_kernels_get(dev);
  if (!r->dk || !r->dk->gemm)
    return ln_error(LN_ERUNTIME, "conv2d needs matmul, which is not implemented for cuda "
                    "tensors yet");
  if (!(r->stream = ln_cuda_stream(device))) return ln_last_status();
  r->elem = (int64_t)ln_dtype_size(dt);
  r->chunk = ln_conv_chunk_of(g, r->elem, CHUNK_BYTES);
  r->P = g->OH * g->OW;
  r->OCg = g->OC / g->groups;
  r->Kg = g->C / g->groups * g->kh * g->kw;
  int64_t ncol = r->chunk * r->P * r->Kg, nbuf = r->chunk * r->P * g->OC;
  r->col = ln_empty(&ncol, 1, dt, dev);
  r->buf = r->col ? ln_empty(&nbuf, 1, dt, dev) : NULL;
  return r->buf ? LN_OK : ln_last_status();
}

static void run_close(conv_run *r) {
  ln_tensor_release(r->col);
  ln_tensor_release(r->buf);
}

/* C[M, N] = op(A) op(B) + beta C, row-major, on the device. An empty
** product (K = 0: no input channels per group, or no output channels in
** the backward) is beta C here, beta being 0 or 1: cuBLAS refuses its
** leading dimension 0. */
static ln_status gemm(const conv_run *r, bool ta, bool tb, int64_t M, int64_t N, int64_t K,
                      const void *A, int64_t lda, const void *B, int64_t ldb, double beta,
                      void *C, int64_t ldc) {
  if (K == 0)
    return beta != 0 || M == 0 || N == 0
             ? LN_OK
             : ln_cuda_check(cudaMemset2DAsync(C, (size_t)(ldc * r->elem), 0,
                                               (size_t)(N * r->elem), (size_t)M, r->stream),
                             "conv2d's empty product");
  return r->dk->gemm(r->device, r->dt, ta, tb, M, N, K, 1.0, A, lda, B, ldb, beta, C, ldc, 1,
                     0, 0, 0);
}

/* Element offset e of a typed device buffer. */
static inline void *at_elem(const conv_run *r, const void *p, int64_t e) {
  return (char *)p + e * r->elem;
}

static ln_status im2col(const conv_run *r, const ln_conv_geom *g, const void *x,
                        const int64_t *xs, int64_t n0, int64_t grp, int64_t rows) {
  return ln_cu_launch("conv2d's im2col", r->stream, r->Kg * rows, im2col_kernel, *g, x,
                      ln_cu_strides_of(xs), n0, grp, rows, r->Kg * rows,
                      ln_tensor_data(r->col), r->f64);
}

static ln_status rows_copy(const conv_run *r, const ln_conv_geom *g, int64_t n0, int64_t rows,
                           const void *t, const int64_t *ts, const void *b, bool gather) {
  int64_t total = g->OC * rows;
  return ln_cu_launch("conv2d's output copy", r->stream, total, rows_copy_kernel, *g, n0, rows,
                      total, ln_tensor_data(r->buf), (void *)t, ln_cu_strides_of(ts), b, gather,
                      r->f64);
}

extern "C" ln_status ln_cuda_conv2d_forward(int device, ln_dtype dt, const ln_conv_geom *g,
                                            const void *x, const int64_t xs[4], const void *w,
                                            const void *b, void *out, const int64_t os[4]) {
  conv_run r;
  ln_status st = run_open(&r, device, dt, g);
  for (int64_t n0 = 0; st == LN_OK && n0 < g->N; n0 += r.chunk) {
    int64_t nb = g->N - n0 < r.chunk ? g->N - n0 : r.chunk, rows = nb * r.P;
    for (int64_t grp = 0; st == LN_OK && grp < g->groups; grp++) {
      st = im2col(&r, g, x, xs, n0, grp, rows);
      if (st == LN_OK)
        st = gemm(&r, false, false, r.OCg, rows, r.Kg, at_elem(&r, w, grp * r.OCg * r.Kg), r.Kg,
                  ln_tensor_data(r.col), rows, 0,
                  at_elem(&r, ln_tensor_data(r.buf), grp * r.OCg * rows), rows);
    }
    if (st == LN_OK) st = rows_copy(&r, g, n0, rows, out, os, b, false);
  }
  run_close(&r);
  return st;
}

extern "C" ln_status ln_cuda_conv2d_backward(int device, ln_dtype dt, const ln_conv_geom *g,
                                             const void *x, const int64_t xs[4], const void *w,
                                             const void *gy, const int64_t gs[4], void *dx,
                                             const int64_t dxs[4], void *dw, void *db) {
  conv_run r;
  ln_status st = run_open(&r, device, dt, g);
  if (st == LN_OK && dw)
    st = ln_cuda_check(cudaMemsetAsync(dw, 0, (size_t)(g->OC * r.Kg * r.elem), r.stream),
                       "conv2d's weight gradient");
  if (st == LN_OK && db && g->OC > 0) {
    int64_t blocks = g->OC < 65535 ? g->OC : 65535;
    bias_grad_kernel<<<(unsigned)blocks, LN_CU_THREADS, 0, r.stream>>>(*g, gy,
                                                                      ln_cu_strides_of(gs), db,
                                                                      r.f64);
    st = ln_cuda_check(cudaGetLastError(), "conv2d's bias gradient");
  }
  for (int64_t n0 = 0; st == LN_OK && (dx || dw) && n0 < g->N; n0 += r.chunk) {
    int64_t nb = g->N - n0 < r.chunk ? g->N - n0 : r.chunk, rows = nb * r.P;
    st = rows_copy(&r, g, n0, rows, gy, gs, NULL, true);
    for (int64_t grp = 0; st == LN_OK && grp < g->groups; grp++) {
      const void *gg = at_elem(&r, ln_tensor_data(r.buf), grp * r.OCg * rows);
      if (dw) {
        st = im2col(&r, g, x, xs, n0, grp, rows);
        if (st == LN_OK)
          st = gemm(&r, false, true, r.OCg, r.Kg, rows, gg, rows, ln_tensor_data(r.col), rows, 1,
                    at_elem(&r, dw, grp * r.OCg * r.Kg), r.Kg);
      }
      if (st == LN_OK && dx) {
        int64_t total = nb * (g->C / g->groups) * g->H * g->W;
        st = gemm(&r, true, false, r.Kg, rows, r.OCg, at_elem(&r, w, grp * r.OCg * r.Kg), r.Kg,
                  gg, rows, 0, ln_tensor_data(r.col), rows);
        if (st == LN_OK)
          st = ln_cu_launch("conv2d's col2im", r.stream, total, col2im_kernel, *g,
                            (const void *)ln_tensor_data(r.col), rows, n0, grp, total, dx,
                            ln_cu_strides_of(dxs), r.f64);
      }
    }
  }
  run_close(&r);
  return st;
}
