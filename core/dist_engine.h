/*
** dist_engine.h -- the seam between core/dist.c and the engines that move
** bytes between processes: core/dist_mpi.c (built with MPI) and
** cuda/dist_nccl.c (built with the CUDA backend and NCCL).
**
** core/dist.c checks arguments, stages tensors and keeps the statistics;
** an engine only sees contiguous buffers of n elements in the dtype it
** asked for (wire_dtype) on a device of its type, and its own per-group
** state. Engines return a status with the library's own message (MPI's or
** NCCL's error string) and never abort.
*/
#ifndef LN_DIST_ENGINE_H
#define LN_DIST_ENGINE_H

#include <stddef.h>

#include "device.h"
#include "dist.h"

typedef struct ln_dist_env {
  int rank, size, local_rank;   /* of this process in the whole job */
} ln_dist_env;

typedef struct ln_dist_engine {
  const char *name;               /* "mpi", "nccl" */
  ln_device_type device;          /* where its buffers must be */
  /* The dtype a tensor of dtype t travels and is reduced in. */
  ln_dtype (*wire_dtype)(ln_dtype t);
  /* Process setup and teardown. The host engine (MPI) starts the job and
  ** fills env; a device engine only checks that it can run (env is NULL). */
  ln_status (*init)(ln_dist_env *env);
  ln_status (*finalize)(void);    /* may be NULL */
  /* Per-group state, or NULL for a process outside g. The host engine's is
  ** made when the group is, by every process of the world (a collective
  ** over the world); a device engine's when a member first uses g with a
  ** tensor on dev, by every member (a collective over g). */
  ln_status (*group_new)(const ln_dist_group *g, ln_device dev, void **state);
  void (*group_free)(void *state);
  /* The collectives, on a member's state. `op` is never LN_REDUCE_SUM or
  ** LN_REDUCE_AVG for LN_BOOL (core turns bool sum into max). root is a
  ** group rank. */
  ln_status (*all_reduce)(void *state, void *buf, size_t n, ln_dtype dtype,
                          ln_reduce_op op, ln_device dev);
  ln_status (*all_gather)(void *state, const void *send, void *recv, size_t n,
                          ln_dtype dtype, ln_device dev);
  ln_status (*broadcast)(void *state, void *buf, size_t n, ln_dtype dtype,
                         int root, ln_device dev);
  ln_status (*barrier)(void *state);   /* used only from the host engine */
} ln_dist_engine;

extern const ln_dist_engine ln_dist_mpi_engine;    /* core/dist_mpi.c */
extern const ln_dist_engine ln_dist_nccl_engine;   /* cuda/dist_nccl.c */

/* Broadcast nbytes of host memory from group rank `root` to the members of
** g through the host engine (NCCL's bootstrap). Not counted in the stats. */
ln_status ln_dist_host_broadcast(const ln_dist_group *g, void *buf, size_t nbytes,
                                 int root);

#endif
