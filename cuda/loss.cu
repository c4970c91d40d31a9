/*
** loss.cu -- softmax, log_softmax and cross entropy on a CUDA device (the
** entries of nn/layers_device.h): one thread per line (softmax) or row
** (cross entropy) running the CPU's line arithmetic (nn/layers_shared.h:
** max subtracted, sums in double). Cross entropy's forward marks the first
** row whose target is not a class (atomicMin on its index), sums the
** rows' losses and weights in double in one block (a fixed tree: the same
** result every run), and reads the sums back with the bad target, if any.
** float32 and float64 contiguous inputs.
*/
#include "cuda/layers_common.cuh"

static_assert(sizeof(ln_ce_result) == 4 * sizeof(int64_t), "ln_ce_result is read back whole");

__global__ void softmax_kernel(ln_softmax_shape s, const void *x, void *y, bool f64,
                               bool take_log, int64_t lines) {
  LN_CU_FOR(l, lines) ln_softmax_line(s, x, y, f64, take_log, l);
}

__global__ void softmax_grad_kernel(ln_softmax_shape s, const void *y, const void *g, void *dx,
                                    bool f64, bool take_log, int64_t lines) {
  LN_CU_FOR(l, lines) ln_softmax_line_backward(s, y, g, dx, f64, take_log, l);
}

/* res = { rows, 0, 0, 0 } before the rows mark bad targets. */
__global__ void ce_init_kernel(ln_ce_result *res, int64_t rows) {
  res->bad_row = rows;
  res->bad_target = 0;
  res->total = 0;
  res->total_weight = 0;
}

/* Per row: lse, the loss in double (loss64) and, when given, in dt. */
__global__ void ce_rows_kernel(ln_ce_geom g, const void *x, const int64_t *t, const void *w,
                               bool f64, double *lse, double *loss64, void *loss,
                               ln_ce_result *res, int64_t rows) {
  LN_CU_FOR(r, rows) {
    double v = 0;
    if (ln_ce_bad_target(&g, t[r])) {
      atomicMin((long long *)&res->bad_row, (long long)r);
      lse[r] = 0;
    } else {
      v = ln_ce_row(&g, x, t, w, f64, r, &lse[r]);
    }
    loss64[r] = v;
    if (loss) ln_sh_st(loss, r, f64, v);
  }
}

/* One block: the sums of the losses and of the counted rows' weights. */
__global__ void ce_sum_kernel(ln_ce_geom g, const int64_t *t, const void *w, bool f64,
                              const double *loss64, ln_ce_result *res, int64_t rows) {
  __shared__ double tot[LN_CU_THREADS], wt[LN_CU_THREADS];
  double a = 0, b = 0;
  for (int64_t r = threadIdx.x; r < rows; r += blockDim.x) {
    a += loss64[r];
    if (!ln_ce_bad_target(&g, t[r]) && t[r] != g.ignore_index)
      b += ln_ce_weight(w, t[r] - g.base, f64);
  }
  tot[threadIdx.x] = a;
  wt[threadIdx.x] = b;
  __syncthreads();
  for (unsigned half = blockDim.x / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) {
      tot[threadIdx.x] += tot[threadIdx.x + half];
      wt[threadIdx.x] += wt[threadIdx.x + half];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    res->total = tot[0];
    res->total_weight = wt[0];
    if (res->bad_row < rows) res->bad_target = t[res->bad_row];
  }
}

__global__ void ce_grad_kernel(ln_ce_geom g, const void *x, const int64_t *t, const void *w,
                               const double *lse, const double *gv, bool f64, void *dx,
                               int64_t rows) {
  LN_CU_FOR(r, rows) ln_ce_row_backward(&g, x, t, w, lse[r], gv, f64, r, dx);
}

/* The stream, or NULL with the error set; refuses dtypes other than
** float32 and float64. */
static cudaStream_t loss_stream(int device, ln_dtype dt, const char *op) {
  if (dt != LN_F32 && dt != LN_F64) {
    ln_error(LN_EINVAL, "%s kernels take float32 or float64, got %s", op, ln_dtype_name(dt));
    return NULL;
  }
  return ln_cuda_stream(device);
}

extern "C" ln_status ln_cuda_softmax_forward(int device, ln_dtype dt, ln_softmax_shape s,
                                             const void *x, void *y, bool take_log) {
  cudaStream_t st = loss_stream(device, dt, "softmax");
  if (!st) return ln_last_status();
  int64_t lines = s.outer * s.inner;
  return ln_cu_launch("softmax", st, lines, softmax_kernel, s, x, y, dt == LN_F64, take_log,
                      lines);
}

extern "C" ln_status ln_cuda_softmax_backward(int device, ln_dtype dt, ln_softmax_shape s,
                                              const void *y, const void *g, void *dx,
                                              bool take_log) {
  cudaStream_t st = loss_stream(device, dt, "softmax");
  if (!st) return ln_last_status();
  int64_t lines = s.outer * s.inner;
  return ln_cu_launch("softmax backward", st, lines, softmax_grad_kernel, s, y, g, dx,
                      dt == LN_F64, take_log, lines);
}

extern "C" ln_status ln_cuda_cross_entropy_forward(int device, ln_dtype dt,
                                                   const ln_ce_geom *g, const void *x,
                                                   const int64_t *t, const void *w,
                                                   double *lse, void *loss,
                                                   ln_ce_result *res) {
  cudaStream_t s = loss_stream(device, dt, "cross_entropy");
  if (!s) return ln_last_status();
  int64_t rows = g->N * g->S, nres = 4;
  bool f64 = dt == LN_F64;
  ln_device dev = { LN_CUDA, device };
  ln_tensor *loss64 = ln_empty(&rows, 1, LN_F64, dev);
  ln_tensor *dres = loss64 ? ln_empty(&nres, 1, LN_I64, dev) : NULL;
  if (!dres) {
    ln_tensor_release(loss64);
    return ln_last_status();
  }
  ln_ce_result *rp = (ln_ce_result *)ln_tensor_data(dres);
  double *lp = (double *)ln_tensor_data(loss64);
  ce_init_kernel<<<1, 1, 0, s>>>(rp, rows);
  ln_status st = ln_cuda_check(cudaGetLastError(), "cross_entropy");
  if (st == LN_OK)
    st = ln_cu_launch("cross_entropy", s, rows, ce_rows_kernel, *g, x, t, w, f64, lse, lp, loss,
                      rp, rows);
  if (st == LN_OK) {
    ce_sum_kernel<<<1, LN_CU_THREADS, 0, s>>>(*g, t, w, f64, lp, rp, rows);
    st = ln_cuda_check(cudaGetLastError(), "cross_entropy's sums");
  }
  if (st == LN_OK)
    st = ln_cuda_check(cudaMemcpyAsync(res, rp, sizeof *res, cudaMemcpyDeviceToHost, s),
                       "cross_entropy's read back");
  if (st == LN_OK) st = ln_cuda_check(cudaStreamSynchronize(s), "cross_entropy's read back");
  ln_tensor_release(loss64);
  ln_tensor_release(dres);
  return st;
}

extern "C" ln_status ln_cuda_cross_entropy_backward(int device, ln_dtype dt,
                                                    const ln_ce_geom *g, const void *x,
                                                    const int64_t *t, const void *w,
                                                    const double *lse, const double *gv,
                                                    void *dx) {
  cudaStream_t s = loss_stream(device, dt, "cross_entropy");
  if (!s) return ln_last_status();
  int64_t rows = g->N * g->S;
  return ln_cu_launch("cross_entropy backward", s, rows, ce_grad_kernel, *g, x, t, w, lse, gv,
                      dt == LN_F64, dx, rows);
}
