/*
** blas.h -- matrix products for the CPU kernels, through OpenBLAS.
** lunet runs one thread pool, OpenMP's: ln_init sets OpenBLAS to one
** thread, and ln_gemm splits large products into row (or column) blocks
** across OpenMP threads itself. Two pools on the same cores (OpenMP
** threads spinning after a region while OpenBLAS's pthreads wait for a
** core) made small training steps several times slower.
*/
#ifndef LN_BLAS_H
#define LN_BLAS_H

#include <stdbool.h>
#include <stdint.h>

#include "dtype.h"

/* C (m x n) = alpha * op(A) @ op(B) + beta * C, row-major, float32 or
** float64 (dt); op transposes when ta/tb. k == 0 gives beta * C. Inside
** an OpenMP region it runs on the calling thread only. */
void ln_gemm(ln_dtype dt, bool ta, bool tb, int64_t m, int64_t n, int64_t k,
             double alpha, const void *a, int64_t lda, const void *b, int64_t ldb,
             double beta, void *c, int64_t ldc);

/* Called once by ln_init. */
void ln_blas_init(void);

#endif
