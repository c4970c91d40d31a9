/*
** dist_collective.c -- the collectives of dist.h: the checks made before
** anything is sent (so that an error found on every rank leaves no rank
** waiting), the staging of tensors into the contiguous buffers an engine
** takes (its dtype, its device: CUDA tensors go through host memory for
** MPI), one engine call per collective, and writing the results back.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist_impl.h"
#include "ops_impl.h"
#include "tensor_impl.h"

/* ---- what every collective does first ---- */

/* The host engine (MPI), which also carries barriers and checks. */
static const ln_dist_engine *host(void) { return ln_dist_engine_of(LN_DEVICE_CPU); }

/* The engine for tensors on dev and its state in g; a device engine's
** state is made here on first use (a collective over g's members). */
static ln_status engine_for(ln_dist_group *g, ln_device dev, const ln_dist_engine **e,
                            void **state) {
  *e = ln_dist_engine_of(dev);
  int slot = *e == host() ? LN_DIST_HOST : LN_DIST_DEVICE;
  if (g->state[slot] == NULL) {
    ln_status st = (*e)->group_new(g, dev, &g->state[slot]);
    if (st != LN_OK) return st;
  }
  *state = g->state[slot];
  return LN_OK;
}

/* A tensor a collective writes into needs one memory location per element
** (no expanded dims). */
static ln_status check_tensor(const ln_tensor *t, const char *fn) {
  if (t == NULL) return ln_error(LN_EINVAL, "%s: expected a tensor, got NULL", fn);
  return ln_check_no_internal_overlap(t);
}

static int64_t nbytes(const ln_tensor *t) {
  return ln_tensor_numel(t) * (int64_t)ln_dtype_size(t->dtype);
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
  ln_dist_count(LN_DIST_ALL_REDUCE, nbytes(buf));
  st = e->all_reduce(state, ln_tensor_data(buf), (size_t)ln_tensor_numel(buf), buf->dtype,
                     op, ln_tensor_device(buf));
  if (st == LN_OK) st = unpack(buf, ts, k);
  ln_tensor_release(buf);
  return st;
}

static size_t wire_bytes(const ln_tensor *t) {
  ln_dtype wire = ln_dist_engine_of(ln_tensor_device(t))->wire_dtype(t->dtype);
  return (size_t)ln_tensor_numel(t) * ln_dtype_size(wire);
}

/* all_reduce and all_reduce_coalesced (fn names the caller in messages).
** Every tensor is checked before the first bucket is sent, so a bad list
** fails on every rank without a collective. */
static ln_status reduce_many(ln_dist_group *g, ln_tensor *const *ts, int n, ln_reduce_op op,
                             size_t bucket_bytes, int *nbuckets, const char *fn) {
  ln_status st = ln_dist_enter(&g, fn);
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
  ln_status st = ln_dist_enter(&g, "all_gather");
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
  ln_dist_count(LN_DIST_ALL_GATHER, nbytes(in));
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
  ln_status st = ln_dist_enter(&g, "all_gather");
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
  ln_status st = ln_dist_enter(&g, "broadcast");
  if (st == LN_OK) st = check_tensor(t, "broadcast");
  int root = st == LN_OK ? ln_dist_group_rank_of(g, src) : -1;
  if (st == LN_OK && root < 0) {
    char buf[128];
    st = ln_error(LN_EINVAL, "broadcast: src rank %d is not in the process group (ranks %s)",
                  src, ln_dist_ranks_str(g, buf, sizeof buf));
  }
  if (st == LN_OK) st = engine_for(g, ln_tensor_device(t), &e, &state);
  if (st != LN_OK) return st;
  ln_tensor *buf = pack(e, &t, 1);
  if (!buf) return ln_last_status();
  ln_dist_count(LN_DIST_BROADCAST, nbytes(buf));
  st = e->broadcast(state, ln_tensor_data(buf), (size_t)ln_tensor_numel(buf), buf->dtype,
                    root, ln_tensor_device(buf));
  if (st == LN_OK) st = unpack(buf, &t, 1);
  ln_tensor_release(buf);
  return st;
}

ln_status ln_dist_barrier(ln_dist_group *g) {
  ln_status st = ln_dist_enter(&g, "barrier");
  if (st != LN_OK) return st;
  ln_dist_count(LN_DIST_BARRIER, 0);
  return host()->barrier(g->state[LN_DIST_HOST]);
}

ln_status ln_dist_host_broadcast(const ln_dist_group *g, void *buf, size_t nbytes, int root) {
  /* bool is one byte: the host engine moves bytes as LN_BOOL */
  return host()->broadcast(g->state[LN_DIST_HOST], buf, nbytes, LN_BOOL, root, LN_DEVICE_CPU);
}

ln_status ln_dist_check_same(ln_dist_group *g, int64_t value, const char *what) {
  ln_status st = ln_dist_enter(&g, "check_same");
  if (st != LN_OK) return st;
  int64_t *all = malloc((size_t)g->size * sizeof *all);
  if (!all) return ln_error(LN_ENOMEM, "check_same: out of memory");
  ln_dist_count(LN_DIST_CHECK, (int64_t)sizeof value);
  st = host()->all_gather(g->state[LN_DIST_HOST], &value, all, 1, LN_I64, LN_DEVICE_CPU);
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

