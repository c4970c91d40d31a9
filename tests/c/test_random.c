/*
** test_random.c -- the generator: reproducible by seed and state,
** independent of the thread count and of the tensor's strides, with the
** right distributions, and errors for what cannot be drawn.
*/
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/device.h"
#include "core/random.h"

/* Draw n float64 normals (or uniforms) into a malloc'd array. */
static double *draw(int64_t n, ln_dtype dtype, bool normal) {
  int64_t size[1] = { n };
  ln_tensor *t = normal ? ln_randn(size, 1, dtype, LN_DEVICE_CPU)
                        : ln_rand(size, 1, dtype, LN_DEVICE_CPU);
  if (!t) return NULL;
  double *v = malloc((size_t)n * sizeof *v);
  for (int64_t i = 0; i < n; i++) v[i] = ln_tensor_get(t, &i);
  ln_tensor_release(t);
  return v;
}

static bool same(const double *a, const double *b, int64_t n) {
  return a && b && memcmp(a, b, (size_t)n * sizeof *a) == 0;
}

static void test_reproducible(void) {
  const int64_t n = 100003;   /* odd, and large enough to run in parallel */
  for (int dt = 0; dt < 4; dt++) {
    for (int normal = 0; normal < 2; normal++) {
      ln_manual_seed(42);
      double *a = draw(n, (ln_dtype)dt, normal);
      ln_manual_seed(42);
      double *b = draw(n, (ln_dtype)dt, normal);
      ln_manual_seed(43);
      double *c = draw(n, (ln_dtype)dt, normal);
      CHECK(same(a, b, n));
      CHECK(a && c && memcmp(a, c, (size_t)n * sizeof *a) != 0);
      free(a); free(b); free(c);
    }
  }
  /* consecutive draws differ, and the state round-trips */
  ln_manual_seed(7);
  CHECK(ln_initial_seed() == 7);
  double *a = draw(10, LN_F32, true);
  ln_rng_state s = ln_rng_get_state();
  double *b = draw(10, LN_F32, true);
  ln_rng_set_state(s);
  double *c = draw(10, LN_F32, true);
  CHECK(!same(a, b, 10));
  CHECK(same(b, c, 10));
  free(a); free(b); free(c);
}

static void test_thread_independent(void) {
  const int64_t n = 1 << 18;
  for (int dt = 0; dt < 2; dt++) {
    omp_set_num_threads(1);
    ln_manual_seed(3);
    double *a = draw(n, (ln_dtype)dt, true);
    double *ua = draw(n + 1, (ln_dtype)dt, false);
    omp_set_num_threads(2);
    ln_manual_seed(3);
    double *b = draw(n, (ln_dtype)dt, true);
    double *ub = draw(n + 1, (ln_dtype)dt, false);
    CHECK(same(a, b, n));
    CHECK(same(ua, ub, n + 1));
    free(a); free(b); free(ua); free(ub);
  }
}

/* Element i of a draw is element i in row-major order, whatever the
** strides: filling a transposed view gives the transpose of a fill. */
static void test_strided(void) {
  int64_t sizes[2] = { 5, 7 }, tsizes[2] = { 7, 5 };
  ln_manual_seed(11);
  ln_tensor *a = ln_empty(sizes, 2, LN_F32, LN_DEVICE_CPU);
  CHECK_OK(ln_normal_(a, 0, 1));
  ln_tensor *b = ln_empty(tsizes, 2, LN_F32, LN_DEVICE_CPU);
  ln_tensor *bt = ln_transpose(b, 0, 1);
  ln_manual_seed(11);
  CHECK_OK(ln_normal_(bt, 0, 1));
  int ok = 1;
  for (int64_t i = 0; i < 5; i++)
    for (int64_t j = 0; j < 7; j++) {
      int64_t ij[2] = { i, j }, ji[2] = { j, i };
      ok &= ln_tensor_get(a, ij) == ln_tensor_get(b, ji);
    }
  CHECK(ok);
  ln_tensor_release(a); ln_tensor_release(b); ln_tensor_release(bt);
}

static void test_normal_moments(void) {
  const int64_t n = 1000000;
  for (int dt = 0; dt < 4; dt++) {
    ln_manual_seed(0);
    double *v = draw(n, (ln_dtype)dt, true);
    double sum = 0, sq = 0;
    for (int64_t i = 0; i < n; i++) sum += v[i];
    double mean = sum / n;
    for (int64_t i = 0; i < n; i++) sq += (v[i] - mean) * (v[i] - mean);
    double sd = sqrt(sq / (n - 1));
    CHECK_NEAR(mean, 0.0, 0.005);            /* 5 standard errors */
    CHECK_NEAR(sd, 1.0, dt == LN_BF16 ? 0.01 : 0.004);
    free(v);
  }
  /* mean and std are applied */
  int64_t size[1] = { 200000 };
  ln_tensor *t = ln_empty(size, 1, LN_F64, LN_DEVICE_CPU);
  CHECK_OK(ln_normal_(t, 3.0, 0.5));
  double sum = 0;
  for (int64_t i = 0; i < size[0]; i++) sum += ln_tensor_get(t, &i);
  CHECK_NEAR(sum / size[0], 3.0, 0.01);
  ln_tensor_release(t);
}

static void test_uniform_range(void) {
  const int64_t n = 300000;
  for (int dt = 0; dt < 4; dt++) {
    int64_t size[1] = { n };
    ln_tensor *t = ln_empty(size, 1, (ln_dtype)dt, LN_DEVICE_CPU);
    double lo = 1e9, hi = -1e9, sum = 0;
    /* a narrow range right below 1, where 16-bit types round up to `to` */
    CHECK_OK(ln_uniform_(t, 0.99, 1.0));
    int in = 1;
    for (int64_t i = 0; i < n; i++) {
      double x = ln_tensor_get(t, &i);
      in &= x >= 0.98 && x < 1.0;
    }
    CHECK(in);
    CHECK_OK(ln_uniform_(t, -2.0, 3.0));
    for (int64_t i = 0; i < n; i++) {
      double x = ln_tensor_get(t, &i);
      lo = x < lo ? x : lo; hi = x > hi ? x : hi; sum += x;
    }
    CHECK(lo >= -2.0 && lo < -1.99);
    CHECK(hi < 3.0 && hi > 2.98);
    CHECK_NEAR(sum / n, 0.5, 0.02);
    ln_tensor_release(t);
  }
}

static void test_randperm(void) {
  for (int64_t n = 0; n < 40; n += 13) {
    ln_tensor *p = ln_randperm(n);
    CHECK(p && ln_tensor_dtype(p) == LN_I64 && ln_tensor_numel(p) == n);
    char seen[40] = { 0 };
    int ok = 1;
    for (int64_t i = 0; i < n; i++) {
      int64_t v = (int64_t)ln_tensor_get(p, &i);
      ok &= v >= 0 && v < n && !seen[v];
      if (v >= 0 && v < n) seen[v] = 1;
    }
    CHECK(ok);
    ln_tensor_release(p);
  }
  ln_manual_seed(5);
  ln_tensor *a = ln_randperm(1000);
  ln_manual_seed(5);
  ln_tensor *b = ln_randperm(1000);
  ln_tensor *c = ln_randperm(1000);
  int eq = 1, moved = 0;
  for (int64_t i = 0; i < 1000; i++) {
    eq &= ln_tensor_get(a, &i) == ln_tensor_get(b, &i);
    moved += ln_tensor_get(b, &i) != ln_tensor_get(c, &i);
  }
  CHECK(eq);
  CHECK(moved > 900);
  ln_tensor_release(a); ln_tensor_release(b); ln_tensor_release(c);
  CHECK(ln_randperm(-1) == NULL);
  CHECK_MSG("non-negative");
}

/* FNV-1a over a tensor's bytes (contiguous, on the CPU). */
static uint64_t fnv(const ln_tensor *t, uint64_t h) {
  const unsigned char *c = ln_tensor_data(t);
  size_t n = (size_t)ln_tensor_numel(t) * ln_dtype_size(ln_tensor_dtype(t));
  for (size_t i = 0; i < n; i++) { h ^= c[i]; h *= UINT64_C(0x100000001b3); }
  return h;
}

/* Four draws in a row after seeding, as one hash per dtype. */
static uint64_t draws_hash(ln_dtype dt) {
  int64_t size[1] = { 1001 };
  uint64_t h = UINT64_C(0xcbf29ce484222325);
  ln_manual_seed(2024);
  for (int k = 0; k < 4; k++) {
    ln_tensor *t = ln_empty(size, 1, dt, LN_DEVICE_CPU);
    CHECK_OK(k == 0 ? ln_uniform_(t, 0, 1) : k == 1 ? ln_normal_(t, 0.5, 2)
             : k == 2 ? ln_uniform_(t, 0.99, 1.0) : ln_uniform_(t, -3, 5));
    h = fnv(t, h);
    ln_tensor_release(t);
  }
  return h;
}

/* The values of a seed never change: a saved generator state draws again
** what it drew when it was saved. The hashes were taken from the
** generator as first written (before core/philox.h was shared with CUDA). */
static void test_known_values(void) {
  static const uint64_t expected[4] = {
    [LN_F32] = UINT64_C(0x5053da17a5592f5a), [LN_F64] = UINT64_C(0x71117ce76ad75697),
    [LN_F16] = UINT64_C(0x147894a614f210e3), [LN_BF16] = UINT64_C(0x282953aaf2b37dca),
  };
  for (int dt = 0; dt < 4; dt++) CHECK(draws_hash((ln_dtype)dt) == expected[dt]);
}

/* Largest difference between two tensors' values, relative to the
** larger magnitude (at least 1). */
static double max_rel_diff(const ln_tensor *a, const ln_tensor *b) {
  double worst = 0;
  for (int64_t i = 0; i < ln_tensor_numel(a); i++) {
    double x = ln_tensor_get(a, &i), y = ln_tensor_get(b, &i);
    double m = fmax(1.0, fmax(fabs(x), fabs(y))), d = fabs(x - y) / m;
    worst = d > worst ? d : worst;
  }
  return worst;
}

/* A draw on a CUDA device is the CPU's draw: uniform values to the bit,
** normal ones to the last place or so (the devices' logf/sinf/cosf), and
** the generator moves on by as much. Odd sizes leave part of the last
** block unused; the transposed view takes the copy path. */
static void test_cuda_agreement(void) {
  const ln_backend *b = ln_backend_get(LN_CUDA);
  if (!b || b->device_count() == 0) {
    printf("test_random: skipped: no CUDA device (CPU/CUDA agreement is untested)\n");
    return;
  }
  ln_device cuda = { LN_CUDA, 0 };
  static const double normal_tol[4] = {
    [LN_F32] = 1e-5, [LN_F64] = 1e-13, [LN_F16] = 1e-3, [LN_BF16] = 8e-3,
  };
  int64_t sizes[2] = { 77, 131 };
  for (int dt = 0; dt < 4; dt++) {
    for (int k = 0; k < 3; k++) {
      ln_tensor *t[2];
      ln_rng_state after[2];
      for (int on_gpu = 0; on_gpu < 2; on_gpu++) {
        ln_manual_seed(99);
        ln_tensor *e = ln_empty(sizes, 2, (ln_dtype)dt, on_gpu ? cuda : LN_DEVICE_CPU);
        CHECK(e != NULL);
        if (!e) return;
        if (k < 2) {
          CHECK_OK(k == 0 ? ln_uniform_(e, 0.99, 1.0) : ln_normal_(e, 1.5, 3.0));
        } else {  /* a transposed view, filled in row-major order of its shape */
          ln_tensor *v = ln_transpose(e, 0, 1);
          CHECK_OK(ln_uniform_(v, -2, 2));
          ln_tensor_release(v);
        }
        after[on_gpu] = ln_rng_get_state();
        t[on_gpu] = ln_to_device(e, LN_DEVICE_CPU);
        ln_tensor_release(e);
      }
      CHECK(t[0] && t[1]);
      if (!t[0] || !t[1]) return;
      CHECK(after[0].offset == after[1].offset);
      if (k == 1) CHECK(max_rel_diff(t[0], t[1]) <= normal_tol[dt]);
      else CHECK(fnv(t[0], 0) == fnv(t[1], 0));
      ln_tensor_release(t[0]);
      ln_tensor_release(t[1]);
    }
  }
  ln_manual_seed(3);
  ln_tensor *g = ln_randn(sizes, 2, LN_F32, cuda);
  ln_manual_seed(3);
  ln_tensor *c = ln_randn(sizes, 2, LN_F32, LN_DEVICE_CPU), *gc = g ? ln_to_device(g, LN_DEVICE_CPU) : NULL;
  CHECK(gc && max_rel_diff(c, gc) <= normal_tol[LN_F32]);
  ln_tensor_release(g); ln_tensor_release(c); ln_tensor_release(gc);
}

static void test_errors(void) {
  int64_t size[1] = { 4 };
  ln_tensor *i = ln_zeros(size, 1, LN_I64, LN_DEVICE_CPU);
  ln_tensor *f = ln_zeros(size, 1, LN_F32, LN_DEVICE_CPU);
  CHECK(ln_normal_(i, 0, 1) == LN_EINVAL);
  CHECK_MSG("floating point");
  CHECK(ln_uniform_(i, 0, 1) == LN_EINVAL);
  CHECK(ln_randn(size, 1, LN_BOOL, LN_DEVICE_CPU) == NULL);
  CHECK(ln_normal_(f, 0, -1) == LN_EINVAL);
  CHECK_MSG("std >= 0.0");
  CHECK(ln_uniform_(f, 1, 0) == LN_EINVAL);
  CHECK_MSG("from=1 > to=0");
  ln_tensor_release(i); ln_tensor_release(f);
  /* 0-dim and empty tensors */
  ln_tensor *s = ln_randn(NULL, 0, LN_F32, LN_DEVICE_CPU);
  CHECK(s && ln_tensor_numel(s) == 1);
  int64_t zero[2] = { 0, 3 };
  ln_tensor *e = ln_rand(zero, 2, LN_F64, LN_DEVICE_CPU);
  CHECK(e && ln_tensor_numel(e) == 0);
  ln_tensor_release(s); ln_tensor_release(e);
}

int main(void) {
  ln_init();
  int64_t live = ln_tensor_live_count();
  CHECK(ln_initial_seed() == UINT64_C(67280421310721));
  test_reproducible();
  test_thread_independent();
  test_strided();
  test_normal_moments();
  test_uniform_range();
  test_randperm();
  test_errors();
  test_known_values();
  test_cuda_agreement();
  CHECK(ln_tensor_live_count() == live);
  return check_done("test_random");
}
