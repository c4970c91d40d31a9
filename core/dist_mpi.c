/*
** dist_mpi.c -- the MPI engine (dist_engine.h): host buffers, one
** communicator per group, errors returned (MPI_ERRORS_RETURN) and turned
** into statuses with MPI's own message. Compiled only when CMake found MPI.
**
** MPI has no 16-bit float types, so float16/bfloat16 travel as float32
** (core/dist.c converts); avg is a sum divided by the group size here.
** Counts are C ints in MPI: a buffer of more than INT_MAX elements is
** refused before anything is sent.
*/
#include <limits.h>
#include <stdlib.h>

#include <mpi.h>

#include "dist_engine.h"

typedef struct mpi_group {
  MPI_Comm comm;
  int size;
} mpi_group;

static bool started_mpi;   /* we called MPI_Init_thread, so we finalize */

static ln_status check(int rc, const char *what) {
  if (rc == MPI_SUCCESS) return LN_OK;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS) len = 0;
  return ln_error(LN_ERUNTIME, "MPI error in %s: %.*s", what, len, msg);
}

static ln_dtype mpi_wire_dtype(ln_dtype t) {
  return t == LN_F16 || t == LN_BF16 ? LN_F32 : t;
}

static MPI_Datatype mpi_type(ln_dtype t) {
  switch (t) {
  case LN_F32: return MPI_FLOAT;
  case LN_F64: return MPI_DOUBLE;
  case LN_I64: return MPI_INT64_T;
  default: return MPI_UNSIGNED_CHAR;   /* bool, and raw bytes */
  }
}

static MPI_Op mpi_op(ln_reduce_op op) {
  switch (op) {
  case LN_REDUCE_MAX: return MPI_MAX;
  case LN_REDUCE_MIN: return MPI_MIN;
  default: return MPI_SUM;   /* sum, and avg before the division */
  }
}

static ln_status check_count(size_t n, const char *what) {
  if (n <= INT_MAX) return LN_OK;
  return ln_error(LN_EINVAL, "%s: MPI moves at most %d elements per call, got %zu", what,
                  INT_MAX, n);
}

/* Start MPI unless the application did, and say where this process is. */
static ln_status mpi_init(ln_dist_env *env) {
  int inited = 0, finalized = 0, provided;
  MPI_Initialized(&inited);
  MPI_Finalized(&finalized);
  if (finalized) return ln_error(LN_ERUNTIME, "MPI was already finalized");
  if (!inited) {
    int rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
    if (rc != MPI_SUCCESS) return check(rc, "MPI_Init_thread");
    started_mpi = true;
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  }
  MPI_Comm node;
  ln_status st = check(MPI_Comm_rank(MPI_COMM_WORLD, &env->rank), "MPI_Comm_rank");
  if (st == LN_OK) st = check(MPI_Comm_size(MPI_COMM_WORLD, &env->size), "MPI_Comm_size");
  if (st == LN_OK)
    st = check(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, env->rank,
                                   MPI_INFO_NULL, &node), "MPI_Comm_split_type");
  if (st == LN_OK) {
    st = check(MPI_Comm_rank(node, &env->local_rank), "MPI_Comm_rank");
    MPI_Comm_free(&node);
  }
  return st;
}

static ln_status mpi_finalize(void) {
  if (!started_mpi) return LN_OK;
  started_mpi = false;
  return check(MPI_Finalize(), "MPI_Finalize");
}

/* A communicator for g split from the world (every process calls it;
** ordered by global rank, which is g's order). Non-members get NULL. */
static ln_status mpi_group_new(const ln_dist_group *g, ln_device dev, void **state) {
  (void)dev;
  int rank;
  MPI_Comm comm;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  int color = ln_dist_group_is_member(g) ? 0 : MPI_UNDEFINED;
  ln_status st = check(MPI_Comm_split(MPI_COMM_WORLD, color, rank, &comm), "new_group");
  *state = NULL;
  if (st != LN_OK || comm == MPI_COMM_NULL) return st;
  mpi_group *m = malloc(sizeof *m);
  if (!m) {
    MPI_Comm_free(&comm);
    return ln_error(LN_ENOMEM, "out of memory creating a process group");
  }
  MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN);
  m->comm = comm;
  m->size = ln_dist_group_size(g);
  *state = m;
  return LN_OK;
}

static void mpi_group_free(void *state) {
  mpi_group *m = state;
  MPI_Comm_free(&m->comm);
  free(m);
}

/* buf /= size, in the dtype the sum was made in. */
static void divide(void *buf, size_t n, ln_dtype t, int size) {
  switch (t) {
  case LN_F32: for (size_t i = 0; i < n; i++) ((float *)buf)[i] /= (float)size; break;
  case LN_F64: for (size_t i = 0; i < n; i++) ((double *)buf)[i] /= size; break;
  case LN_I64: for (size_t i = 0; i < n; i++) ((int64_t *)buf)[i] /= size; break;
  default: break;   /* core refuses avg for bool */
  }
}

static ln_status mpi_all_reduce(void *state, void *buf, size_t n, ln_dtype dtype,
                                ln_reduce_op op, ln_device dev) {
  (void)dev;
  mpi_group *m = state;
  ln_status st = check_count(n, "all_reduce");
  if (st == LN_OK)
    st = check(MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, mpi_type(dtype), mpi_op(op),
                             m->comm), "all_reduce");
  if (st == LN_OK && op == LN_REDUCE_AVG) divide(buf, n, dtype, m->size);
  return st;
}

static ln_status mpi_all_gather(void *state, const void *send, void *recv, size_t n,
                                ln_dtype dtype, ln_device dev) {
  (void)dev;
  mpi_group *m = state;
  MPI_Datatype t = mpi_type(dtype);
  ln_status st = check_count(n, "all_gather");
  if (st == LN_OK)
    st = check(MPI_Allgather(send, (int)n, t, recv, (int)n, t, m->comm), "all_gather");
  return st;
}

static ln_status mpi_broadcast(void *state, void *buf, size_t n, ln_dtype dtype, int root,
                               ln_device dev) {
  (void)dev;
  mpi_group *m = state;
  ln_status st = check_count(n, "broadcast");
  if (st == LN_OK)
    st = check(MPI_Bcast(buf, (int)n, mpi_type(dtype), root, m->comm), "broadcast");
  return st;
}

static ln_status mpi_barrier(void *state) {
  return check(MPI_Barrier(((mpi_group *)state)->comm), "barrier");
}

const ln_dist_engine ln_dist_mpi_engine = {
  .name = "mpi",
  .device = LN_CPU,
  .wire_dtype = mpi_wire_dtype,
  .init = mpi_init,
  .finalize = mpi_finalize,
  .group_new = mpi_group_new,
  .group_free = mpi_group_free,
  .all_reduce = mpi_all_reduce,
  .all_gather = mpi_all_gather,
  .broadcast = mpi_broadcast,
  .barrier = mpi_barrier,
};
