/*
** dist.h -- process groups and collectives over tensors (distributed
** training). Processes are started by mpirun; ranks are 0-based, as in MPI.
**
** Engines: MPI carries CPU tensors (and, staged through host memory, CUDA
** tensors when NCCL is not in use); NCCL carries CUDA tensors after
** ln_dist_init("nccl"), bootstrapping its communicators over MPI. A build
** without MPI fails at ln_dist_init with "lunet was built without MPI
** support". See docs/DISTRIBUTED.md.
**
** Every collective must be called by every member of its group, in the same
** order, with the same sizes and dtypes (as in MPI and PyTorch). Whatever
** can be checked locally (an unknown op, a src outside the group, a list of
** the wrong length, a group this process is not in) fails before anything
** is sent, so a program that catches the error on every rank goes on.
** Sizes that differ across ranks are NOT checked (that would cost a second
** collective): MPI may then fail, truncate or hang. ln_dist_check_same is
** the explicit check for callers that need one.
**
** Group arguments may be NULL for the whole world. Tensor arguments are
** borrowed; results are written in place unless a function says otherwise.
*/
#ifndef LN_DIST_H
#define LN_DIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"
#include "tensor.h"

typedef enum ln_reduce_op {
  LN_REDUCE_SUM = 0,
  LN_REDUCE_AVG,   /* sum / group size; int64 divides truncating, as NCCL */
  LN_REDUCE_MAX,
  LN_REDUCE_MIN,
  LN_REDUCE_OP_COUNT
} ln_reduce_op;

/* "sum", "avg", "max", "min"; LN_EINVAL with the list otherwise. */
ln_status ln_reduce_op_from_name(const char *name, ln_reduce_op *out);
const char *ln_reduce_op_name(ln_reduce_op op);

/* ---- the process ---- */

/* True when lunet was built with MPI (ln_dist_init can work). */
bool ln_dist_is_available(void);
/* True when built with NCCL (the CUDA backend found nccl.h and libnccl). */
bool ln_dist_is_nccl_available(void);

/* Start the default process group over every process of the job.
** backend: "mpi" or "nccl" (NULL means "mpi"). Calls MPI_Init_thread
** unless MPI is already initialized (an application that initialized MPI
** itself also finalizes it). Fails, doing nothing, when called twice, after
** ln_dist_finalize (MPI cannot start again), without MPI, or for "nccl"
** without NCCL or without a CUDA device. */
ln_status ln_dist_init(const char *backend);
bool ln_dist_is_initialized(void);
/* LN_OK after init, else PyTorch's "Default process group has not been
** initialized, ..." (or that finalize destroyed it). */
ln_status ln_dist_check_initialized(void);
/* "mpi" or "nccl"; NULL before init. */
const char *ln_dist_backend(void);

/* This process's rank, the number of processes and the rank among the
** processes on the same machine (to pick a GPU); -1 before init. */
int ln_dist_rank(void);
int ln_dist_world_size(void);
int ln_dist_local_rank(void);

/* Destroy every group (in creation order, on every rank) and finalize MPI
** if ln_dist_init started it. Collective: every process must call it.
** Group handles stay valid memory but fail when used. */
ln_status ln_dist_finalize(void);

/* ---- groups ---- */

typedef struct ln_dist_group ln_dist_group;

/* The group of all processes (borrowed); NULL before init. */
ln_dist_group *ln_dist_world(void);

/* A new group of the given global ranks (0-based, any order, no
** duplicates; sorted, so group rank i is the i-th smallest). Every process
** of the world must call it with the same list, members or not (as in
** PyTorch); a non-member gets a group that refuses collectives. Returns a
** NEW reference (ln_dist_group_release), or NULL with a message. */
ln_dist_group *ln_dist_new_group(const int *ranks, int n);
void ln_dist_group_retain(ln_dist_group *g);
void ln_dist_group_release(ln_dist_group *g);   /* NULL is fine */

bool ln_dist_group_is_member(const ln_dist_group *g);
/* This process's rank in g, or -1 when not a member (PyTorch's get_rank). */
int ln_dist_group_rank(const ln_dist_group *g);
int ln_dist_group_size(const ln_dist_group *g);
/* The sorted global ranks of g (borrowed, ln_dist_group_size entries). */
const int *ln_dist_group_ranks(const ln_dist_group *g);
/* Group rank -> global rank, and back; -1 when out of the group. */
int ln_dist_global_rank(const ln_dist_group *g, int group_rank);
int ln_dist_group_rank_of(const ln_dist_group *g, int global_rank);

/* ---- collectives (g NULL: the world) ----
** Tensors may be of any layout (non-contiguous ones are staged through a
** contiguous copy) and dtype float32/64, float16, bfloat16, int64 or bool.
** MPI has no 16-bit float types: float16/bfloat16 travel and are reduced
** in float32, then rounded once. bool reduces as logical or (sum, max) and
** logical and (min); avg of bool is refused. The tensor must be writable
** (no expanded dims); autograd does not see the write (as PyTorch). */

/* t = op over the group of every member's t, in place. */
ln_status ln_dist_all_reduce(ln_dist_group *g, ln_tensor *t, ln_reduce_op op);

/* Reduce many tensors with few collectives (data-parallel gradients):
** consecutive tensors of the same dtype and device are packed into buckets
** of at most bucket_bytes (a larger tensor is a bucket of its own), one
** all-reduce per bucket. The buckets depend only on the list, so every
** member must pass tensors of the same sizes in the same order. *nbuckets
** (may be NULL) receives the number of collectives issued. */
ln_status ln_dist_all_reduce_coalesced(ln_dist_group *g, ln_tensor *const *ts, int n,
                                       ln_reduce_op op, size_t bucket_bytes,
                                       int *nbuckets);

/* Every member's t stacked along a new first dim: a NEW tensor of shape
** {group size, t's sizes...}, t's dtype and device, row i from group rank i.
** One collective: the form to use when gathering packed statistics. */
ln_tensor *ln_dist_all_gather_stack(ln_dist_group *g, ln_tensor *t);

/* PyTorch's all_gather: outs[i] = group rank i's t. n must be the group
** size and each out must have t's shape and dtype. */
ln_status ln_dist_all_gather(ln_dist_group *g, ln_tensor *const *outs, int n,
                             ln_tensor *t);

/* t = the t of global rank src (PyTorch's convention: src is a global rank,
** which must belong to g). */
ln_status ln_dist_broadcast(ln_dist_group *g, ln_tensor *t, int src);

ln_status ln_dist_barrier(ln_dist_group *g);

/* A cross-rank consistency check at the cost of one small collective:
** every member passes its value; if they are not all equal, every member
** fails with the same message, "<what> differs across ranks: rank 0 has 3,
** rank 1 has 4" (global ranks), so no rank goes on to a mismatched
** collective that could hang. */
ln_status ln_dist_check_same(ln_dist_group *g, int64_t value, const char *what);

/* ---- statistics: collectives this process issued ----
** One count per call (one per bucket for all_reduce_coalesced); calls that
** fail before sending anything are not counted, nor are group creation and
** NCCL's bootstrap. bytes: the sizes of the local buffers handed to the
** engines (in the dtype they travel in). */
typedef enum ln_dist_kind {
  LN_DIST_ALL_REDUCE = 0,
  LN_DIST_ALL_GATHER,
  LN_DIST_BROADCAST,
  LN_DIST_BARRIER,
  LN_DIST_CHECK,      /* ln_dist_check_same */
  LN_DIST_KIND_COUNT
} ln_dist_kind;

typedef struct ln_dist_stats {
  int64_t count[LN_DIST_KIND_COUNT];
  int64_t total;
  int64_t bytes;
} ln_dist_stats;

/* "all_reduce", "all_gather", "broadcast", "barrier", "check". */
const char *ln_dist_kind_name(ln_dist_kind k);
ln_dist_stats ln_dist_stats_get(void);
void ln_dist_stats_reset(void);

#endif
