/*
** dist.c -- the process and its groups (dist.h): init and finalize, the
** default group, the registry of groups, group membership and rank
** translation, the checks every collective starts with, and statistics.
** The collectives are in dist_collective.c; the bytes move in an engine
** (dist_engine.h).
**
** Every group made is kept (retained) in a registry until
** ln_dist_finalize frees the engines' states in creation order, so that no
** engine state is ever freed by a garbage collector at a moment that
** differs between ranks. Not thread-safe: collectives are issued from one
** thread, as MPI is started with MPI_THREAD_FUNNELED.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist_impl.h"

/* The engines of this build: the one place that knows which exist. */
#ifdef LN_HAVE_MPI
static const ln_dist_engine *const host_engine = &ln_dist_mpi_engine;
#else
static const ln_dist_engine *const host_engine = NULL;
#endif
#ifdef LN_HAVE_NCCL
static const ln_dist_engine *const nccl_engine = &ln_dist_nccl_engine;
#else
static const ln_dist_engine *const nccl_engine = NULL;
#endif

static struct {
  bool initialized, finalized;
  const ln_dist_engine *device; /* NCCL after init("nccl"), else NULL */
  ln_dist_env env;
  ln_dist_group *world;         /* borrowed from the registry */
  ln_dist_group *first, *last;  /* every group made, each retained */
  ln_dist_stats stats;
} D = { .env = { -1, -1, -1 } };

/* ---- names ---- */

static const char *const op_names[LN_REDUCE_OP_COUNT] = {
  [LN_REDUCE_SUM] = "sum", [LN_REDUCE_AVG] = "avg",
  [LN_REDUCE_MAX] = "max", [LN_REDUCE_MIN] = "min",
};

static const char *const kind_names[LN_DIST_KIND_COUNT] = {
  [LN_DIST_ALL_REDUCE] = "all_reduce", [LN_DIST_ALL_GATHER] = "all_gather",
  [LN_DIST_BROADCAST] = "broadcast", [LN_DIST_BARRIER] = "barrier",
  [LN_DIST_CHECK] = "check",
};

ln_status ln_reduce_op_from_name(const char *name, ln_reduce_op *out) {
  for (int i = 0; i < LN_REDUCE_OP_COUNT; i++)
    if (strcmp(name, op_names[i]) == 0) {
      *out = (ln_reduce_op)i;
      return LN_OK;
    }
  return ln_error(LN_EINVAL, "unknown reduce op '%s' (expected 'sum', 'avg', 'max' or "
                  "'min')", name);
}

const char *ln_reduce_op_name(ln_reduce_op op) {
  return (unsigned)op < LN_REDUCE_OP_COUNT ? op_names[op] : "?";
}

const char *ln_dist_kind_name(ln_dist_kind k) {
  return (unsigned)k < LN_DIST_KIND_COUNT ? kind_names[k] : "?";
}

const char *ln_dist_ranks_str(const ln_dist_group *g, char *buf, size_t size) {
  size_t len = 1;
  buf[0] = '{';
  for (int i = 0; i < g->size; i++) {   /* keeps room for ", ...}" after each */
    char item[24];
    size_t m = (size_t)snprintf(item, sizeof item, "%s%d", i ? ", " : "", g->ranks[i]);
    if (len + m + 7 > size) {
      memcpy(buf + len, ", ...", 5);
      len += 5;
      break;
    }
    memcpy(buf + len, item, m);
    len += m;
  }
  buf[len++] = '}';
  buf[len] = '\0';
  return buf;
}

/* ---- the process ---- */

bool ln_dist_is_available(void) { return host_engine != NULL; }
bool ln_dist_is_nccl_available(void) { return nccl_engine != NULL; }
bool ln_dist_is_initialized(void) { return D.initialized; }
const char *ln_dist_backend(void) {
  return !D.initialized ? NULL : D.device ? D.device->name : host_engine->name;
}
int ln_dist_rank(void) { return D.env.rank; }
int ln_dist_world_size(void) { return D.env.size; }
int ln_dist_local_rank(void) { return D.env.local_rank; }
ln_dist_group *ln_dist_world(void) { return D.world; }

static ln_status not_initialized(void) {
  if (D.finalized)
    return ln_error(LN_ERUNTIME, "the default process group was destroyed by dist.finalize()");
  return ln_error(LN_ERUNTIME, "Default process group has not been initialized, please "
                  "make sure to call dist.init.");
}

ln_status ln_dist_check_initialized(void) {
  return D.initialized ? LN_OK : not_initialized();
}

static int cmp_int(const void *a, const void *b) {
  int x = *(const int *)a, y = *(const int *)b;
  return (x > y) - (x < y);
}

/* A group of the given ranks, sorted, with this process's place in it;
** no engine state yet. Refcount 1. */
static ln_dist_group *group_alloc(const int *ranks, int n) {
  ln_dist_group *g = calloc(1, sizeof *g);
  int *sorted = malloc((size_t)n * sizeof *sorted);
  if (!g || !sorted) {
    free(g);
    free(sorted);
    ln_error(LN_ENOMEM, "out of memory creating a process group");
    return NULL;
  }
  memcpy(sorted, ranks, (size_t)n * sizeof *sorted);
  qsort(sorted, (size_t)n, sizeof *sorted, cmp_int);
  g->refcount = 1;
  g->size = n;
  g->ranks = sorted;
  g->rank = -1;
  for (int i = 0; i < n; i++)
    if (sorted[i] == D.env.rank) g->rank = i;
  return g;
}

/* Make g's host state (a collective over the world) and keep g in the
** registry (one more reference) until ln_dist_finalize. */
static ln_status group_register(ln_dist_group *g) {
  ln_status st = host_engine->group_new(g, LN_DEVICE_CPU, &g->state[LN_DIST_HOST]);
  if (st != LN_OK) return st;
  g->refcount++;
  if (D.last) D.last->next = g;
  else D.first = g;
  D.last = g;
  return LN_OK;
}

/* Free the engines' states of every group, in creation order (the same on
** every rank), and empty the registry. */
static void destroy_groups(void) {
  ln_dist_group *next;
  for (ln_dist_group *g = D.first; g; g = next) {
    next = g->next;
    if (g->state[LN_DIST_DEVICE]) D.device->group_free(g->state[LN_DIST_DEVICE]);
    if (g->state[LN_DIST_HOST]) host_engine->group_free(g->state[LN_DIST_HOST]);
    g->state[LN_DIST_DEVICE] = g->state[LN_DIST_HOST] = NULL;
    g->destroyed = true;
    g->next = NULL;
    ln_dist_group_release(g);
  }
  D.first = D.last = D.world = NULL;
}

/* Checks everything that can be checked before starting MPI, so that a
** refused init leaves the process as it was. */
ln_status ln_dist_init(const char *backend) {
  if (backend == NULL) backend = "mpi";
  bool nccl = strcmp(backend, "nccl") == 0;
  if (!nccl && strcmp(backend, "mpi") != 0)
    return ln_error(LN_EINVAL, "Invalid backend: '%s' (expected 'mpi' or 'nccl')", backend);
  if (D.initialized)
    return ln_error(LN_ERUNTIME, "trying to initialize the default process group twice!");
  if (D.finalized)
    return ln_error(LN_ERUNTIME, "MPI cannot be initialized again after dist.finalize()");
  if (host_engine == NULL) return ln_error(LN_ERUNTIME, "lunet was built without MPI support");
  if (nccl && nccl_engine == NULL)
    return ln_error(LN_ERUNTIME, "lunet was built without NCCL support (backend 'nccl' needs "
                    "the CUDA backend built with NCCL; use backend 'mpi')");
  ln_status st = nccl ? nccl_engine->init(NULL) : LN_OK;
  if (st != LN_OK) return st;

  ln_dist_env env;
  if ((st = host_engine->init(&env)) != LN_OK) return st;
  D.env = env;
  D.device = nccl ? nccl_engine : NULL;
  D.initialized = true;
  int *all = malloc((size_t)env.size * sizeof *all);
  ln_dist_group *world = NULL;
  if (!all) {
    st = ln_error(LN_ENOMEM, "out of memory creating the default process group");
    goto fail;
  }
  for (int i = 0; i < env.size; i++) all[i] = i;
  if (!(world = group_alloc(all, env.size))) {
    st = ln_last_status();
    goto fail;
  }
  if ((st = group_register(world)) != LN_OK) goto fail;
  ln_dist_group_release(world);   /* the registry holds it */
  D.world = world;
  free(all);
  return LN_OK;
fail:  /* MPI is started and cannot start again: finalize and say why */
  free(all);
  ln_dist_group_release(world);
  ln_dist_finalize();
  return st;
}

ln_status ln_dist_finalize(void) {
  if (!D.initialized) return not_initialized();
  destroy_groups();
  ln_status st = host_engine->finalize ? host_engine->finalize() : LN_OK;
  D.initialized = false;
  D.finalized = true;
  D.device = NULL;
  D.env = (ln_dist_env){ -1, -1, -1 };
  return st;
}

/* ---- groups ---- */

ln_dist_group *ln_dist_new_group(const int *ranks, int n) {
  if (!D.initialized) {
    not_initialized();
    return NULL;
  }
  if (n < 1) {
    ln_error(LN_EINVAL, "new_group: expected at least one rank");
    return NULL;
  }
  ln_dist_group *g = group_alloc(ranks, n);
  if (!g) return NULL;
  for (int i = 0; i < n; i++) {
    int r = g->ranks[i];
    if (r < 0 || r >= D.env.size) {
      ln_error(LN_EINVAL, "new_group: rank %d is out of range (the world has ranks 0 to %d)",
               r, D.env.size - 1);
      goto fail;
    }
    if (i > 0 && r == g->ranks[i - 1]) {
      ln_error(LN_EINVAL, "new_group: rank %d appears more than once", r);
      goto fail;
    }
  }
  if (group_register(g) == LN_OK) return g;
fail:
  ln_dist_group_release(g);
  return NULL;
}

void ln_dist_group_retain(ln_dist_group *g) { g->refcount++; }

/* The registry holds a reference until finalize, so a group reaching zero
** has no engine state left. */
void ln_dist_group_release(ln_dist_group *g) {
  if (g == NULL || --g->refcount > 0) return;
  free(g->ranks);
  free(g);
}

bool ln_dist_group_is_member(const ln_dist_group *g) { return g->rank >= 0; }
int ln_dist_group_rank(const ln_dist_group *g) { return g->rank; }
int ln_dist_group_size(const ln_dist_group *g) { return g->size; }
const int *ln_dist_group_ranks(const ln_dist_group *g) { return g->ranks; }

int ln_dist_global_rank(const ln_dist_group *g, int group_rank) {
  return group_rank >= 0 && group_rank < g->size ? g->ranks[group_rank] : -1;
}

int ln_dist_group_rank_of(const ln_dist_group *g, int global_rank) {
  const int *p = bsearch(&global_rank, g->ranks, (size_t)g->size, sizeof *p, cmp_int);
  return p ? (int)(p - g->ranks) : -1;
}

/* ---- what every collective starts with ---- */

ln_status ln_dist_enter(ln_dist_group **g, const char *fn) {
  if (*g && (*g)->destroyed)
    return ln_error(LN_ERUNTIME, "%s: the process group was destroyed by dist.finalize()", fn);
  if (!D.initialized) return not_initialized();
  if (*g == NULL) *g = D.world;
  if ((*g)->rank < 0) {
    char buf[128];
    return ln_error(LN_EINVAL, "%s: this process (rank %d) is not a member of the process "
                    "group (ranks %s)", fn, D.env.rank,
                    ln_dist_ranks_str(*g, buf, sizeof buf));
  }
  return LN_OK;
}

const ln_dist_engine *ln_dist_engine_of(ln_device dev) {
  return D.device && dev.type == D.device->device ? D.device : host_engine;
}

/* ---- statistics ---- */

void ln_dist_count(ln_dist_kind k, int64_t bytes) {
  D.stats.count[k]++;
  D.stats.total++;
  D.stats.bytes += bytes;
}

ln_dist_stats ln_dist_stats_get(void) { return D.stats; }
void ln_dist_stats_reset(void) { memset(&D.stats, 0, sizeof D.stats); }
