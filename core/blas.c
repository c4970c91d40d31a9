/*
** blas.c -- ln_gemm: OpenBLAS on one thread per block, OpenMP across blocks.
*/
#include <cblas.h>
#include <omp.h>

#include "blas.h"

/* Below this many multiply-adds a product runs on one thread. */
#define LN_GEMM_PAR_MIN (1 << 18)

void ln_blas_init(void) { openblas_set_num_threads(1); }

/* One block: rows [r0, r1) and columns [c0, c1) of C. */
static void gemm_block(ln_dtype dt, bool ta, bool tb, int64_t r0, int64_t r1,
                       int64_t c0, int64_t c1, int64_t k, double alpha,
                       const char *a, int64_t lda, const char *b, int64_t ldb,
                       double beta, char *c, int64_t ldc) {
  size_t es = ln_dtype_size(dt);
  a += (size_t)(ta ? r0 : r0 * lda) * es;  /* rows of op(A) */
  b += (size_t)(tb ? c0 * ldb : c0) * es;  /* columns of op(B) */
  c += (size_t)(r0 * ldc + c0) * es;
  int m = (int)(r1 - r0), n = (int)(c1 - c0);
  enum CBLAS_TRANSPOSE oa = ta ? CblasTrans : CblasNoTrans;
  enum CBLAS_TRANSPOSE ob = tb ? CblasTrans : CblasNoTrans;
  if (dt == LN_F32)
    cblas_sgemm(CblasRowMajor, oa, ob, m, n, (int)k, (float)alpha, (const float *)a,
                (int)lda, (const float *)b, (int)ldb, (float)beta, (float *)c, (int)ldc);
  else
    cblas_dgemm(CblasRowMajor, oa, ob, m, n, (int)k, alpha, (const double *)a,
                (int)lda, (const double *)b, (int)ldb, beta, (double *)c, (int)ldc);
}

/* BLAS leaves C alone when k == 0 only if beta is 1; do it by hand. */
static void scale_c(ln_dtype dt, int64_t m, int64_t n, double beta, void *c, int64_t ldc) {
  for (int64_t r = 0; r < m; r++)
    for (int64_t j = 0; j < n; j++) {
      if (dt == LN_F32) {
        float *p = (float *)c + r * ldc + j;
        *p = beta == 0 ? 0.0f : (float)beta * *p;
      } else {
        double *p = (double *)c + r * ldc + j;
        *p = beta == 0 ? 0.0 : beta * *p;
      }
    }
}

void ln_gemm(ln_dtype dt, bool ta, bool tb, int64_t m, int64_t n, int64_t k,
             double alpha, const void *a, int64_t lda, const void *b, int64_t ldb,
             double beta, void *c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (k == 0) { scale_c(dt, m, n, beta, c, ldc); return; }
  int threads = omp_in_parallel() || (double)m * n * k < LN_GEMM_PAR_MIN
                  ? 1 : omp_get_max_threads();
  /* split the longer side of C into one block per thread */
  bool by_rows = m >= n;
  int64_t len = by_rows ? m : n;
  if (threads > len) threads = (int)len;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
  for (int t = 0; t < threads; t++) {
    int64_t lo = len * t / threads, hi = len * (t + 1) / threads;
    if (by_rows)
      gemm_block(dt, ta, tb, lo, hi, 0, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    else
      gemm_block(dt, ta, tb, 0, m, lo, hi, k, alpha, a, lda, b, ldb, beta, c, ldc);
  }
}
