/*
** blas.c -- matrix products through cuBLAS: the kernel table's gemm
** (core/device_kernels.h), ln_gemm's row-major contract over a batch of
** equally spaced products.
**
** cuBLAS is column-major: a row-major m x n matrix with leading dimension
** ld is, to cuBLAS, its n x m transpose with the same ld. So row-major
** C = op(A) op(B) is computed as the column-major C^T = op(B)^T op(A)^T:
** B goes first, A second, and m and n swap places.
**
** float32 computes in full float32 (CUBLAS_COMPUTE_32F under the default
** math mode, which never uses TF32), so results agree with the CPU to
** float32 rounding; float16 and bfloat16 are stored as such and computed
** in float32; float64 in float64. One handle per device, created on first
** use and kept for the process, runs on the device's stream.
*/
#include <limits.h>
#include <pthread.h>

#include <cublas_v2.h>

#include "cuda/kernels.h"
#include "cuda/runtime.h"

#define MAX_DEVICES 64

static cublasHandle_t handles[MAX_DEVICES];
static pthread_mutex_t handles_lock = PTHREAD_MUTEX_INITIALIZER;

static ln_status cublas_check(cublasStatus_t st, const char *what) {
  if (st == CUBLAS_STATUS_SUCCESS) return LN_OK;
  return ln_error(LN_EDEVICE, "cuBLAS error during %s: %s", what, cublasGetStatusString(st));
}

/* The device's handle, bound to its stream (the device made current), or
** NULL with a message. */
static cublasHandle_t handle_for(int device) {
  cudaStream_t s = ln_cuda_stream(device);  /* checks the range, sets the device */
  if (!s) return NULL;
  pthread_mutex_lock(&handles_lock);
  cublasHandle_t h = handles[device];
  if (!h) {  /* a failed cublasCreate leaves no handle to use */
    if (cublas_check(cublasCreate(&h), "handle creation") == LN_OK) handles[device] = h;
    else h = NULL;
  }
  pthread_mutex_unlock(&handles_lock);
  if (h && cublas_check(cublasSetStream(h, s), "cublasSetStream") != LN_OK) return NULL;
  return h;
}

static bool fits_int(int64_t v) { return v >= 0 && v <= INT_MAX; }

static ln_status cuda_gemm(int device, ln_dtype dt, bool ta, bool tb, int64_t m, int64_t n,
                           int64_t k, double alpha, const void *a, int64_t lda, const void *b,
                           int64_t ldb, double beta, void *c, int64_t ldc, int64_t batch,
                           int64_t sa, int64_t sb, int64_t sc) {
  cudaDataType_t type;
  cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
  switch (dt) {
  case LN_F32: type = CUDA_R_32F; break;
  case LN_F64: type = CUDA_R_64F; compute = CUBLAS_COMPUTE_64F; break;
  case LN_F16: type = CUDA_R_16F; break;
  case LN_BF16: type = CUDA_R_16BF; break;
  default: return ln_error(LN_EINVAL, "gemm: unsupported dtype %s", ln_dtype_name(dt));
  }
  if (!fits_int(m) || !fits_int(n) || !fits_int(k) || !fits_int(lda) || !fits_int(ldb) ||
      !fits_int(ldc) || !fits_int(batch))
    return ln_error(LN_EINVAL, "gemm: sizes beyond %d are not supported on CUDA", INT_MAX);
  if (m == 0 || n == 0 || batch == 0) return LN_OK;
  cublasHandle_t h = handle_for(device);
  if (!h) return ln_last_status();
  float alpha_f = (float)alpha, beta_f = (float)beta;
  const void *pa = compute == CUBLAS_COMPUTE_64F ? (const void *)&alpha : &alpha_f;
  const void *pb = compute == CUBLAS_COMPUTE_64F ? (const void *)&beta : &beta_f;
  return cublas_check(
    cublasGemmStridedBatchedEx(h, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N,
                               (int)n, (int)m, (int)k, pa, b, type, (int)ldb, sb, a, type,
                               (int)lda, sa, pb, c, type, (int)ldc, sc, (int)batch, compute,
                               CUBLAS_GEMM_DEFAULT),
    "a matrix product");
}

void ln_cuda_install_blas(ln_device_kernels *k) { k->gemm = cuda_gemm; }
