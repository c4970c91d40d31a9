/*
** test_dist.c -- the process-group API without starting MPI (ctest runs it
** as a plain process): availability follows the build, every call before
** ln_dist_init fails with PyTorch's message, a refused init starts nothing,
** and op names. In a build without MPI, ln_dist_init says so. The
** collectives themselves run under mpirun in tests/dist/.
*/
#include <string.h>

#include "check.h"
#include "core/dist.h"

static const char *const not_init =
  "Default process group has not been initialized, please make sure to call dist.init.";

static void test_availability(void) {
#ifdef LN_HAVE_MPI
  CHECK(ln_dist_is_available());
#else
  CHECK(!ln_dist_is_available());
  CHECK(ln_dist_init("mpi") == LN_ERUNTIME);
  CHECK_MSG("lunet was built without MPI support");
  CHECK(ln_dist_init(NULL) == LN_ERUNTIME);
  CHECK_MSG("lunet was built without MPI support");
#endif
#ifdef LN_HAVE_NCCL
  CHECK(ln_dist_is_nccl_available());
#else
  CHECK(!ln_dist_is_nccl_available());
#endif
  CHECK(!ln_dist_is_initialized());
}

static void test_before_init(void) {
  int64_t size[1] = { 3 };
  ln_tensor *t = ln_ones(size, 1, LN_F32, LN_DEVICE_CPU);
  int ranks[1] = { 0 };
  CHECK(ln_dist_rank() == -1 && ln_dist_world_size() == -1 && ln_dist_local_rank() == -1);
  CHECK(ln_dist_world() == NULL);
  CHECK(ln_dist_backend() == NULL);
  CHECK(ln_dist_check_initialized() == LN_ERUNTIME);
  CHECK_MSG(not_init);
  CHECK(ln_dist_new_group(ranks, 1) == NULL);
  CHECK_MSG(not_init);
  CHECK(ln_dist_all_reduce(NULL, t, LN_REDUCE_SUM) == LN_ERUNTIME);
  CHECK_MSG(not_init);
  CHECK(ln_dist_all_reduce_coalesced(NULL, &t, 1, LN_REDUCE_AVG, 1024, NULL) == LN_ERUNTIME);
  CHECK_MSG(not_init);
  CHECK(ln_dist_all_gather_stack(NULL, t) == NULL);
  CHECK_MSG(not_init);
  CHECK(ln_dist_all_gather(NULL, &t, 1, t) == LN_ERUNTIME);
  CHECK_MSG(not_init);
  CHECK(ln_dist_broadcast(NULL, t, 0) == LN_ERUNTIME);
  CHECK_MSG(not_init);
  CHECK(ln_dist_barrier(NULL) == LN_ERUNTIME);
  CHECK_MSG(not_init);
  CHECK(ln_dist_check_same(NULL, 1, "x") == LN_ERUNTIME);
  CHECK_MSG(not_init);
  CHECK(ln_dist_finalize() == LN_ERUNTIME);
  CHECK_MSG(not_init);
  ln_dist_stats s = ln_dist_stats_get();
  CHECK(s.total == 0 && s.bytes == 0);   /* nothing refused was counted */
  ln_tensor_release(t);
}

/* These are refused before MPI would start, in any build. */
static void test_refused_init(void) {
  CHECK(ln_dist_init("gloo") == LN_EINVAL);
  CHECK_MSG("Invalid backend: 'gloo' (expected 'mpi' or 'nccl')");
#ifndef LN_HAVE_NCCL
  CHECK(ln_dist_init("nccl") == LN_ERUNTIME);
  CHECK_MSG(ln_dist_is_available() ? "lunet was built without NCCL support"
                                   : "lunet was built without MPI support");
#endif
  CHECK(!ln_dist_is_initialized());
}

static void test_names(void) {
  ln_reduce_op op;
  const char *names[] = { "sum", "avg", "max", "min" };
  for (int i = 0; i < LN_REDUCE_OP_COUNT; i++) {
    CHECK_OK(ln_reduce_op_from_name(names[i], &op));
    CHECK(op == (ln_reduce_op)i && strcmp(ln_reduce_op_name(op), names[i]) == 0);
  }
  CHECK(ln_reduce_op_from_name("prod", &op) == LN_EINVAL);
  CHECK_MSG("unknown reduce op 'prod' (expected 'sum', 'avg', 'max' or 'min')");
  CHECK(strcmp(ln_dist_kind_name(LN_DIST_ALL_REDUCE), "all_reduce") == 0);
  CHECK(strcmp(ln_dist_kind_name(LN_DIST_CHECK), "check") == 0);
}

int main(void) {
  ln_init();
  test_availability();
  test_before_init();
  test_refused_init();
  test_names();
  return check_done("test_dist");
}
