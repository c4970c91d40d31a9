/*
** test_blas.c -- ln_gemm against a naive triple loop: every transposition,
** both float types, alpha/beta, k == 0, and products large enough to be
** split across threads by rows and by columns.
*/
#include <omp.h>
#include <stdlib.h>

#include "check.h"
#include "core/blas.h"
#include "core/tensor.h"

static double rnd(void) { return rand() / (double)RAND_MAX - 0.5; }

/* One product of m x n with inner size k, stored in dtype dt. */
static void check_case(ln_dtype dt, bool ta, bool tb, int64_t m, int64_t n, int64_t k,
                       double alpha, double beta) {
  int64_t lda = ta ? m : k, ldb = tb ? k : n, ldc = n + 3;  /* a padded C */
  double *a = malloc(sizeof(double) * (size_t)(m * k + 1));
  double *b = malloc(sizeof(double) * (size_t)(k * n + 1));
  double *c0 = malloc(sizeof(double) * (size_t)(m * ldc));
  size_t es = ln_dtype_size(dt);
  char *ta_buf = malloc(es * (size_t)(m * k + 1)), *tb_buf = malloc(es * (size_t)(k * n + 1));
  char *tc = malloc(es * (size_t)(m * ldc));
  for (int64_t i = 0; i < m * k; i++) { a[i] = rnd(); ln_store_double(ta_buf + i * es, dt, a[i]); }
  for (int64_t i = 0; i < k * n; i++) { b[i] = rnd(); ln_store_double(tb_buf + i * es, dt, b[i]); }
  for (int64_t i = 0; i < m * ldc; i++) { c0[i] = rnd(); ln_store_double(tc + i * es, dt, c0[i]); }
  ln_gemm(dt, ta, tb, m, n, k, alpha, ta_buf, lda, tb_buf, ldb, beta, tc, ldc);
  double worst = 0, tol = dt == LN_F32 ? 1e-4 * (double)(k + 1) : 1e-12 * (double)(k + 1);
  for (int64_t r = 0; r < m; r++)
    for (int64_t j = 0; j < ldc; j++) {
      double want = c0[r * ldc + j];
      if (j < n) {
        double acc = 0;
        for (int64_t p = 0; p < k; p++)
          acc += (ta ? a[p * lda + r] : a[r * lda + p]) * (tb ? b[j * ldb + p] : b[p * ldb + j]);
        want = alpha * acc + (beta == 0 ? 0 : beta * want);
      }
      double got = ln_load_double(tc + (r * ldc + j) * es, dt), d = fabs(got - want);
      if (d > worst) worst = d;
    }
  CHECK(worst <= tol);
  if (worst > tol)
    fprintf(stderr, "  %s ta=%d tb=%d %lldx%lldx%lld: error %g\n", ln_dtype_name(dt), ta, tb,
            (long long)m, (long long)n, (long long)k, worst);
  free(a); free(b); free(c0); free(ta_buf); free(tb_buf); free(tc);
}

int main(void) {
  ln_init();
  ln_dtype dts[2] = { LN_F32, LN_F64 };
  for (int threads = 1; threads <= 2; threads++) {
    omp_set_num_threads(threads);
    for (int d = 0; d < 2; d++)
      for (int t = 0; t < 4; t++) {
        bool ta = t & 1, tb = t & 2;
        check_case(dts[d], ta, tb, 3, 4, 5, 1.0, 0.0);
        check_case(dts[d], ta, tb, 97, 61, 73, 0.5, 2.0);   /* split by rows */
        check_case(dts[d], ta, tb, 23, 301, 67, 1.0, 1.0);  /* split by columns */
        check_case(dts[d], ta, tb, 5, 7, 0, 1.0, 3.0);      /* k == 0: beta * C */
      }
  }
  return check_done("test_blas");
}
