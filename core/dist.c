/*
** dist.c -- process groups and collectives (dist.h): the default group,
** the registry of groups, the checks made before anything is sent, the
** staging of tensors into the buffers an engine takes, and the statistics.
**
** The bytes move in an engine (dist_engine.h). CUDA tensors go to the
** device engine when ln_dist_init("nccl") set one; everything else goes to
** the host engine (MPI), staged through host memory. Every group made is
** kept (retained) in a registry until ln_dist_finalize frees the engines'
** states in creation order, so that no engine state is ever freed by a
** garbage collector at a moment that differs between ranks.
** Not thread-safe: collectives are issued from one thread, as MPI is
** started with MPI_THREAD_FUNNELED.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist.h"
#include "dist_engine.h"
#include "ops_impl.h"
#include "tensor_impl.h"

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

enum { HOST, DEVICE, SLOTS };   /* an engine's slot in a group */

struct ln_dist_group {
  int refcount;
  int size, rank;               /* rank: -1 outside the group */
  int *ranks;                   /* sorted global ranks */
  void *state[SLOTS];           /* DEVICE is made on first use */
  bool destroyed;               /* by ln_dist_finalize */
  ln_dist_group *next;          /* the registry, in creation order */
};

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

/* "{0, 1, 2}" into buf (at least 16 bytes) for messages; a list too long
** for buf ends in ", ...}". */
static const char *ranks_str(const int *ranks, int n, char *buf, size_t size) {
  size_t len = 1;
  buf[0] = '{';
  for (int i = 0; i < n; i++) {   /* keeps room for ", ...}" after each */
    char item[24];
    size_t m = (size_t)snprintf(item, sizeof item, "%s%d", i ? ", " : "", ranks[i]);
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
  ln_status st = host_engine->group_new(g, LN_DEVICE_CPU, &g->state[HOST]);
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
    if (g->state[DEVICE]) D.device->group_free(g->state[DEVICE]);
    if (g->state[HOST]) host_engine->group_free(g->state[HOST]);
    g->state[DEVICE] = g->state[HOST] = NULL;
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

/* ---- what every collective does first ---- */

/* The group a collective runs on (NULL: the world), checked locally:
** initialized, not destroyed, and this process one of its members. */
static ln_status enter(ln_dist_group **g, const char *fn) {
  if (*g && (*g)->destroyed)
    return ln_error(LN_ERUNTIME, "%s: the process group was destroyed by dist.finalize()", fn);
  if (!D.initialized) return not_initialized();
  if (*g == NULL) *g = D.world;
  if ((*g)->rank < 0) {
    char buf[128];
    return ln_error(LN_EINVAL, "%s: this process (rank %d) is not a member of the process "
                    "group (ranks %s)", fn, D.env.rank,
                    ranks_str((*g)->ranks, (*g)->size, buf, sizeof buf));
  }
  return LN_OK;
}

/* The engine that carries tensors on dev. */
static const ln_dist_engine *engine_of(ln_device dev) {
  return D.device && dev.type == D.device->device ? D.device : host_engine;
}

/* The engine for tensors on dev and its state in g; a device engine's
** state is made here on first use (a collective over g's members). */
static ln_status engine_for(ln_dist_group *g, ln_device dev, const ln_dist_engine **e,
                            void **state) {
  *e = engine_of(dev);
  int slot = *e == host_engine ? HOST : DEVICE;
  if (g->state[slot] == NULL) {
    ln_status st = (*e)->group_new(g, dev, &g->state[slot]);
    if (st != LN_OK) return st;
  }
  *state = g->state[slot];
  return LN_OK;
}

/* Tensors a collective writes into must have one element per location and
** a dtype it can carry. */
static ln_status check_tensor(const ln_tensor *t, const char *fn) {
  if (t == NULL) return ln_error(LN_EINVAL, "%s: expected a tensor, got NULL", fn);
  return ln_check_no_internal_overlap(t);
}

static int64_t nbytes(const ln_tensor *t) {
  return ln_tensor_numel(t) * (int64_t)ln_dtype_size(t->dtype);
}

static void count(ln_dist_kind k, int64_t bytes) {
  D.stats.count[k]++;
  D.stats.total++;
  D.stats.bytes += bytes;
}

/* ---- staging: tensors <-> the flat buffers engines take ---- */

/* The contiguous view of `like`'s shape at element `offset` of flat. */
static ln_tensor *piece(ln_tensor *flat, int64_t offset, const ln_tensor *like) {
  int64_t strides[LN_MAX_DIMS];
  ln_contiguous_strides(like->sizes, like->ndim, LN_CONTIGUOUS, strides);
  return ln_from_storage(flat->storage, flat->dtype, like->sizes, strides, like->ndim,
                         flat->offset + offset);
}

/* t = src without autograd seeing it (collectives write into parameters
** and gradients alike, as PyTorch's do). */
static ln_status write_into(ln_tensor *t, ln_tensor *src) {
  ln_tensor *d = ln_detach(t);
  ln_status st = d ? ln_copy_(d, src) : ln_last_status();
  ln_tensor_release(d);
  return st;
}

/* The buffer engine e works on for ts[0..k) (same dtype and device): ts[0]
** itself, retained, when it already is one (contiguous, in the engine's
** dtype, on its device); else a new flat buffer holding every tensor,
** converted, one after another. NULL with a message on failure. */
static ln_tensor *pack(const ln_dist_engine *e, ln_tensor *const *ts, int k) {
  ln_tensor *t = ts[0];
  ln_dtype wire = e->wire_dtype(t->dtype);
  ln_device dev = ln_tensor_device(t);
  if (dev.type != e->device) dev = LN_DEVICE_CPU;
  if (k == 1 && t->dtype == wire && ln_device_eq(dev, ln_tensor_device(t)) &&
      ln_tensor_is_contiguous(t, LN_CONTIGUOUS)) {
    ln_tensor_retain(t);
    return t;
  }
  int64_t total = 0;
  for (int i = 0; i < k; i++) total += ln_tensor_numel(ts[i]);
  ln_tensor *buf = ln_empty(&total, 1, wire, dev);
  for (int64_t i = 0, off = 0; buf && i < k; off += ln_tensor_numel(ts[i++])) {
    ln_tensor *p = piece(buf, off, ts[i]);
    ln_status st = p ? ln_copy_(p, ts[i]) : ln_last_status();
    ln_tensor_release(p);
    if (st != LN_OK) {
      ln_tensor_release(buf);
      buf = NULL;
    }
  }
  return buf;
}

/* Copy buf back into ts[0..k) (nothing to do when buf is ts[0]). */
static ln_status unpack(ln_tensor *buf, ln_tensor *const *ts, int k) {
  if (buf == ts[0]) return LN_OK;
  ln_status st = LN_OK;
  for (int64_t i = 0, off = 0; st == LN_OK && i < k; off += ln_tensor_numel(ts[i++])) {
    ln_tensor *p = piece(buf, off, ts[i]);
    st = p ? write_into(ts[i], p) : ln_last_status();
    ln_tensor_release(p);
  }
  return st;
}

/* ---- collectives ---- */

static ln_status check_op(ln_dtype dt, ln_reduce_op op, const char *fn) {
  if ((unsigned)op >= LN_REDUCE_OP_COUNT)
    return ln_error(LN_EINVAL, "%s: invalid reduce op %d", fn, (int)op);
  if (dt == LN_BOOL && op == LN_REDUCE_AVG)
    return ln_error(LN_EINVAL, "%s: op 'avg' is not supported for bool tensors", fn);
  return LN_OK;
}

/* The op an engine gets for dtype dt: a bool sum is a logical or (max). */
static ln_reduce_op engine_op(ln_dtype dt, ln_reduce_op op) {
  return dt == LN_BOOL && op == LN_REDUCE_SUM ? LN_REDUCE_MAX : op;
}

/* One all-reduce over ts[0..k), which share dtype and device. */
static ln_status reduce_bucket(ln_dist_group *g, ln_tensor *const *ts, int k,
                               ln_reduce_op op) {
  const ln_dist_engine *e;
  void *state;
  ln_status st = engine_for(g, ln_tensor_device(ts[0]), &e, &state);
  if (st != LN_OK) return st;
  ln_tensor *buf = pack(e, ts, k);
  if (!buf) return ln_last_status();
  count(LN_DIST_ALL_REDUCE, nbytes(buf));
  st = e->all_reduce(state, ln_tensor_data(buf), (size_t)ln_tensor_numel(buf), buf->dtype,
                     op, ln_tensor_device(buf));
  if (st == LN_OK) st = unpack(buf, ts, k);
  ln_tensor_release(buf);
  return st;
}

static size_t wire_bytes(const ln_tensor *t) {
  ln_dtype wire = engine_of(ln_tensor_device(t))->wire_dtype(t->dtype);
  return (size_t)ln_tensor_numel(t) * ln_dtype_size(wire);
}

/* all_reduce and all_reduce_coalesced (fn names the caller in messages).
** Every tensor is checked before the first bucket is sent, so a bad list
** fails on every rank without a collective. */
static ln_status reduce_many(ln_dist_group *g, ln_tensor *const *ts, int n, ln_reduce_op op,
                             size_t bucket_bytes, int *nbuckets, const char *fn) {
  ln_status st = enter(&g, fn);
  for (int i = 0; st == LN_OK && i < n; i++) {
    st = check_tensor(ts[i], fn);
    if (st == LN_OK) st = check_op(ts[i]->dtype, op, fn);
  }
  int buckets = 0;
  for (int i = 0, j; st == LN_OK && i < n; i = j, buckets++) {
    size_t bytes = wire_bytes(ts[i]);
    for (j = i + 1; j < n && ts[j]->dtype == ts[i]->dtype &&
                    ln_device_eq(ln_tensor_device(ts[j]), ln_tensor_device(ts[i])) &&
                    bytes + wire_bytes(ts[j]) <= bucket_bytes; j++)
      bytes += wire_bytes(ts[j]);
    st = reduce_bucket(g, ts + i, j - i, engine_op(ts[i]->dtype, op));
  }
  if (nbuckets) *nbuckets = buckets;
  return st;
}

ln_status ln_dist_all_reduce_coalesced(ln_dist_group *g, ln_tensor *const *ts, int n,
                                       ln_reduce_op op, size_t bucket_bytes,
                                       int *nbuckets) {
  return reduce_many(g, ts, n, op, bucket_bytes, nbuckets, "all_reduce_coalesced");
}

ln_status ln_dist_all_reduce(ln_dist_group *g, ln_tensor *t, ln_reduce_op op) {
  return reduce_many(g, &t, 1, op, SIZE_MAX, NULL, "all_reduce");
}

ln_tensor *ln_dist_all_gather_stack(ln_dist_group *g, ln_tensor *t) {
  const ln_dist_engine *e;
  void *state;
  ln_tensor *in = NULL, *out = NULL, *res = NULL;
  ln_status st = enter(&g, "all_gather");
  if (st == LN_OK && t == NULL) st = ln_error(LN_EINVAL, "all_gather: expected a tensor, got NULL");
  if (st == LN_OK && t->ndim == LN_MAX_DIMS)
    st = ln_error(LN_EINVAL, "all_gather: a tensor of %d dims cannot be stacked (at most %d)",
                  t->ndim, LN_MAX_DIMS - 1);
  if (st == LN_OK) st = engine_for(g, ln_tensor_device(t), &e, &state);
  if (st != LN_OK) return NULL;
  if (!(in = pack(e, &t, 1))) return NULL;
  int64_t sizes[LN_MAX_DIMS] = { g->size };
  memcpy(sizes + 1, t->sizes, (size_t)t->ndim * sizeof *sizes);
  if (!(out = ln_empty(sizes, t->ndim + 1, in->dtype, ln_tensor_device(in)))) goto done;
  count(LN_DIST_ALL_GATHER, nbytes(in));
  st = e->all_gather(state, ln_tensor_data(in), ln_tensor_data(out),
                     (size_t)ln_tensor_numel(in), in->dtype, ln_tensor_device(in));
  if (st == LN_OK && (res = ln_to_dtype(out, t->dtype))) {
    ln_tensor *moved = ln_to_device(res, ln_tensor_device(t));
    ln_tensor_release(res);
    res = moved;
  }
done:
  ln_tensor_release(in);
  ln_tensor_release(out);
  return res;
}

ln_status ln_dist_all_gather(ln_dist_group *g, ln_tensor *const *outs, int n, ln_tensor *t) {
  ln_status st = enter(&g, "all_gather");
  if (st == LN_OK && t == NULL) st = ln_error(LN_EINVAL, "all_gather: expected a tensor, got NULL");
  if (st == LN_OK && n != g->size)
    st = ln_error(LN_EINVAL, "all_gather: expected a list of %d tensors (one per rank of "
                  "the group), got %d", g->size, n);
  for (int i = 0; st == LN_OK && i < n; i++) {
    if ((st = check_tensor(outs[i], "all_gather")) != LN_OK) break;
    if (!ln_tensor_same_shape(outs[i], t) || outs[i]->dtype != t->dtype) {
      char a[64], b[64];
      ln_shape_str(outs[i]->sizes, outs[i]->ndim, a, sizeof a);
      ln_shape_str(t->sizes, t->ndim, b, sizeof b);
      st = ln_error(LN_EINVAL, "all_gather: output %d is %s %s, expected %s %s like the input",
                    i, ln_dtype_name(outs[i]->dtype), a, ln_dtype_name(t->dtype), b);
    }
  }
  if (st != LN_OK) return st;
  ln_tensor *stack = ln_dist_all_gather_stack(g, t);
  if (!stack) return ln_last_status();
  for (int i = 0; st == LN_OK && i < n; i++) {
    ln_tensor *row = ln_select(stack, 0, i);
    st = row ? write_into(outs[i], row) : ln_last_status();
    ln_tensor_release(row);
  }
  ln_tensor_release(stack);
  return st;
}

ln_status ln_dist_broadcast(ln_dist_group *g, ln_tensor *t, int src) {
  const ln_dist_engine *e;
  void *state;
  ln_status st = enter(&g, "broadcast");
  if (st == LN_OK) st = check_tensor(t, "broadcast");
  int root = st == LN_OK ? ln_dist_group_rank_of(g, src) : -1;
  if (st == LN_OK && root < 0) {
    char buf[128];
    st = ln_error(LN_EINVAL, "broadcast: src rank %d is not in the process group (ranks %s)",
                  src, ranks_str(g->ranks, g->size, buf, sizeof buf));
  }
  if (st == LN_OK) st = engine_for(g, ln_tensor_device(t), &e, &state);
  if (st != LN_OK) return st;
  ln_tensor *buf = pack(e, &t, 1);
  if (!buf) return ln_last_status();
  count(LN_DIST_BROADCAST, nbytes(buf));
  st = e->broadcast(state, ln_tensor_data(buf), (size_t)ln_tensor_numel(buf), buf->dtype,
                    root, ln_tensor_device(buf));
  if (st == LN_OK) st = unpack(buf, &t, 1);
  ln_tensor_release(buf);
  return st;
}

ln_status ln_dist_barrier(ln_dist_group *g) {
  ln_status st = enter(&g, "barrier");
  if (st != LN_OK) return st;
  count(LN_DIST_BARRIER, 0);
  return host_engine->barrier(g->state[HOST]);
}

ln_status ln_dist_host_broadcast(const ln_dist_group *g, void *buf, size_t nbytes, int root) {
  /* bool is one byte: the host engine moves bytes as LN_BOOL */
  return host_engine->broadcast(g->state[HOST], buf, nbytes, LN_BOOL, root, LN_DEVICE_CPU);
}

ln_status ln_dist_check_same(ln_dist_group *g, int64_t value, const char *what) {
  ln_status st = enter(&g, "check_same");
  if (st != LN_OK) return st;
  int64_t *all = malloc((size_t)g->size * sizeof *all);
  if (!all) return ln_error(LN_ENOMEM, "check_same: out of memory");
  count(LN_DIST_CHECK, (int64_t)sizeof value);
  st = host_engine->all_gather(g->state[HOST], &value, all, 1, LN_I64, LN_DEVICE_CPU);
  int differ = 0;
  for (int i = 1; st == LN_OK && i < g->size; i++) differ |= all[i] != all[0];
  if (differ) {
    char msg[512];
    size_t len = 0;
    for (int i = 0; i < g->size && len < sizeof msg; i++)
      len += (size_t)snprintf(msg + len, sizeof msg - len, "%srank %d has %lld",
                              i ? ", " : "", g->ranks[i], (long long)all[i]);
    st = ln_error(LN_EINVAL, "%s differs across ranks: %s", what ? what : "a value", msg);
  }
  free(all);
  return st;
}

/* ---- statistics ---- */

ln_dist_stats ln_dist_stats_get(void) { return D.stats; }
void ln_dist_stats_reset(void) { memset(&D.stats, 0, sizeof D.stats); }
