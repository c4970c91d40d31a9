/*
** dist_nccl.c -- the NCCL engine (core/dist_engine.h) for CUDA tensors
** after dist.init{backend="nccl"}. Compiled with the CUDA backend when
** CMake finds NCCL.
**
** A group's communicator is made when a member first uses the group with
** a CUDA tensor: group rank 0 makes the unique id and the host engine (MPI)
** broadcasts it; the communicator stays on that tensor's device. Collectives
** run on the device's stream (cuda/runtime.h), after the kernels that made
** their inputs, and are waited for before returning, so that their errors (and NCCL's own message)
** come back as a status and the result can be read at once.
*/
#include <stdbool.h>
#include <stdlib.h>

#include <cuda_runtime_api.h>
#include <nccl.h>

#include "core/dist_engine.h"
#include "cuda/runtime.h"

typedef struct nccl_group {
  ncclComm_t comm;
  int device;
  cudaStream_t stream;  /* the device's stream */
} nccl_group;

static ln_status check_nccl(ncclResult_t r, ncclComm_t comm, const char *what) {
  if (r == ncclSuccess) return LN_OK;
  const char *detail = ncclGetLastError(comm);
  return ln_error(LN_EDEVICE, "NCCL error in %s: %s%s%s", what, ncclGetErrorString(r),
                  detail && *detail ? ": " : "", detail ? detail : "");
}

static ln_dtype nccl_wire_dtype(ln_dtype t) { return t; }

static ncclDataType_t nccl_type(ln_dtype t) {
  switch (t) {
  case LN_F32: return ncclFloat32;
  case LN_F64: return ncclFloat64;
  case LN_F16: return ncclFloat16;
  case LN_BF16: return ncclBfloat16;
  case LN_I64: return ncclInt64;
  default: return ncclUint8;   /* bool */
  }
}

static ncclRedOp_t nccl_op(ln_reduce_op op) {
  switch (op) {
  case LN_REDUCE_AVG: return ncclAvg;
  case LN_REDUCE_MAX: return ncclMax;
  case LN_REDUCE_MIN: return ncclMin;
  default: return ncclSum;
  }
}

static ln_status nccl_init(ln_dist_env *env) {
  (void)env;
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    n = 0;
  }
  if (n == 0)
    return ln_error(LN_EDEVICE, "backend 'nccl' needs a CUDA device, but none is available "
                    "(use backend 'mpi')");
  return LN_OK;
}

/* Collective over g's members. Rank 0's id travels with a flag, so that a
** failure to make it fails every member instead of leaving them waiting. */
static ln_status nccl_group_new(const ln_dist_group *g, ln_device dev, void **state) {
  struct { ncclUniqueId id; int ok; } boot = { .ok = 1 };
  ln_status st = LN_OK;
  if (ln_dist_group_rank(g) == 0)
    boot.ok = (st = check_nccl(ncclGetUniqueId(&boot.id), NULL, "ncclGetUniqueId")) == LN_OK;
  ln_status bst = ln_dist_host_broadcast(g, &boot, sizeof boot, 0);
  if (st != LN_OK || bst != LN_OK) return st != LN_OK ? st : bst;
  if (!boot.ok) return ln_error(LN_EDEVICE, "NCCL: group rank 0 could not make a unique id");

  nccl_group *s = malloc(sizeof *s);
  if (!s) return ln_error(LN_ENOMEM, "out of memory creating an NCCL communicator");
  s->device = dev.index;
  s->stream = ln_cuda_stream(dev.index);
  st = s->stream ? LN_OK : ln_last_status();
  if (st == LN_OK)
    st = check_nccl(ncclCommInitRank(&s->comm, ln_dist_group_size(g), boot.id,
                                     ln_dist_group_rank(g)), NULL, "ncclCommInitRank");
  if (st != LN_OK) {
    free(s);
    return st;
  }
  *state = s;
  return LN_OK;
}

static void nccl_group_free(void *state) {
  nccl_group *s = state;
  ncclCommDestroy(s->comm);
  free(s);
}

/* Before a collective: the communicator's device must be the tensor's. */
static ln_status enter(nccl_group *s, ln_device dev, const char *what) {
  if (dev.index != s->device)
    return ln_error(LN_EINVAL, "%s: this group's NCCL communicator is on cuda:%d, the tensor "
                    "is on cuda:%d", what, s->device, dev.index);
  return ln_cuda_check(cudaSetDevice(s->device), "cudaSetDevice");
}

/* After a collective was enqueued (r): wait for it and report. */
static ln_status finish(nccl_group *s, ncclResult_t r, const char *what) {
  ln_status st = check_nccl(r, s->comm, what);
  if (st == LN_OK) st = ln_cuda_check(cudaStreamSynchronize(s->stream), what);
  ncclResult_t async = ncclSuccess;
  if (st == LN_OK && ncclCommGetAsyncError(s->comm, &async) == ncclSuccess)
    st = check_nccl(async, s->comm, what);
  return st;
}

static ln_status nccl_all_reduce(void *state, void *buf, size_t n, ln_dtype dtype,
                                 ln_reduce_op op, ln_device dev) {
  nccl_group *s = state;
  ln_status st = enter(s, dev, "all_reduce");
  if (st != LN_OK) return st;
  return finish(s, ncclAllReduce(buf, buf, n, nccl_type(dtype), nccl_op(op), s->comm, s->stream),
                "all_reduce");
}

static ln_status nccl_all_gather(void *state, const void *send, void *recv, size_t n,
                                 ln_dtype dtype, ln_device dev) {
  nccl_group *s = state;
  ln_status st = enter(s, dev, "all_gather");
  if (st != LN_OK) return st;
  return finish(s, ncclAllGather(send, recv, n, nccl_type(dtype), s->comm, s->stream), "all_gather");
}

static ln_status nccl_broadcast(void *state, void *buf, size_t n, ln_dtype dtype, int root,
                                ln_device dev) {
  nccl_group *s = state;
  ln_status st = enter(s, dev, "broadcast");
  if (st != LN_OK) return st;
  return finish(s, ncclBroadcast(buf, buf, n, nccl_type(dtype), root, s->comm, s->stream),
                "broadcast");
}

const ln_dist_engine ln_dist_nccl_engine = {
  .name = "nccl",
  .device = LN_CUDA,
  .wire_dtype = nccl_wire_dtype,
  .init = nccl_init,
  .group_new = nccl_group_new,
  .group_free = nccl_group_free,
  .all_reduce = nccl_all_reduce,
  .all_gather = nccl_all_gather,
  .broadcast = nccl_broadcast,
};
