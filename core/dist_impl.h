/*
** dist_impl.h -- what core/dist.c (the process, its groups, statistics) and
** core/dist_collective.c (the collectives) share. Private to core/.
*/
#ifndef LN_DIST_IMPL_H
#define LN_DIST_IMPL_H

#include "dist_engine.h"

enum { LN_DIST_HOST, LN_DIST_DEVICE, LN_DIST_SLOTS };   /* an engine's slot in a group */

struct ln_dist_group {
  int refcount;
  int size, rank;                /* rank: -1 outside the group */
  int *ranks;                    /* sorted global ranks */
  void *state[LN_DIST_SLOTS];    /* engines' states; DEVICE is made on first use */
  bool destroyed;                /* by ln_dist_finalize */
  ln_dist_group *next;           /* the registry, in creation order */
};

/* The group a collective runs on (NULL: the world), checked locally:
** initialized, not destroyed, and this process one of its members. */
ln_status ln_dist_enter(ln_dist_group **g, const char *fn);

/* The engine that carries tensors on dev: the device engine (NCCL) for its
** device type after init("nccl"), else the host engine (MPI), which is
** ln_dist_engine_of(LN_DEVICE_CPU). NULL without MPI. */
const ln_dist_engine *ln_dist_engine_of(ln_device dev);

/* One more collective of kind k handing `bytes` to an engine. */
void ln_dist_count(ln_dist_kind k, int64_t bytes);

/* "{0, 1, 2}" into buf (at least 16 bytes) for messages; a list too long
** for buf ends in ", ...}". */
const char *ln_dist_ranks_str(const ln_dist_group *g, char *buf, size_t size);

#endif
