/*
** autograd.c -- the graph of ln_node and the backward engine.
** Ownership: a tensor retains its grad_fn; a node retains the nodes its
** edges point to, its saved tensors and (accumulate nodes) its leaf. The
** graph therefore lives while any tensor it produced lives, and releasing
** the last one frees it. Both the release and the engine walk the graph
** with explicit worklists, never by C recursion, so chains of any length
** are safe.
*/
#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "ops.h"
#include "tensor_impl.h"

#define SHAPE_BUF 200

static const char *const freed_graph_msg =
  "Trying to backward through the graph a second time (or directly access "
  "saved tensors after they have already been freed). Saved intermediate "
  "values of the graph are freed when you call .backward() or "
  "autograd.grad(). Specify retain_graph=True if you need to backward "
  "through the graph a second time or if you need to access saved tensors "
  "after calling backward.";

/* "{2, 3}" into buf. */
static const char *shape_str(const int64_t *sizes, int ndim, char *buf) {
  size_t len = (size_t)snprintf(buf, SHAPE_BUF, "{");
  for (int i = 0; i < ndim && len < SHAPE_BUF; i++)
    len += (size_t)snprintf(buf + len, SHAPE_BUF - len, i ? ", %lld" : "%lld",
                            (long long)sizes[i]);
  if (len < SHAPE_BUF) snprintf(buf + len, SHAPE_BUF - len, "}");
  return buf;
}

/* The status of a callee that returned NULL (its message is already set). */
static ln_status failed(void) {
  ln_status st = ln_last_status();
  return st != LN_OK ? st : LN_ERUNTIME;
}

/* ---- nodes ---- */

static ln_node *node_alloc(const char *name, ln_backward_fn backward,
                           int n_inputs, int n_outputs) {
  ln_node *n = calloc(1, sizeof *n + (size_t)n_inputs * sizeof n->next[0]);
  if (!n) {
    ln_error(LN_ENOMEM, "out of memory creating autograd node %s", name);
    return NULL;
  }
  n->refcount = 1;
  n->name = name;
  n->backward = backward;
  n->n_inputs = n_inputs;
  n->n_outputs = n_outputs;
  return n;
}

/* AccumulateGrad: add the incoming gradient into leaf->grad. The sum is a
** new tensor, so that a .grad the user holds is never modified. A first
** gradient that nobody else can see (sole reference to its tensor and its
** storage, laid out like the leaf) is kept as is; otherwise it is copied. */
static ln_status accumulate_backward(ln_node *node, ln_tensor **grad_out,
                                     ln_tensor **grad_in) {
  ln_tensor *leaf = node->leaf, *g = grad_out[0], *cast = NULL, *acc = NULL;
  ln_memory_format fmt = ln_tensor_suggest_format(leaf);
  char a[SHAPE_BUF], b[SHAPE_BUF];
  (void)grad_in;
  if (!ln_tensor_same_shape(g, leaf))
    return ln_error(LN_ERUNTIME, "Function AccumulateGrad returned an invalid "
                    "gradient at index 0 - got %s but expected shape "
                    "compatible with %s", shape_str(g->sizes, g->ndim, a),
                    shape_str(leaf->sizes, leaf->ndim, b));
  if (!ln_device_eq(ln_tensor_device(g), ln_tensor_device(leaf)))
    return ln_error(LN_ERUNTIME, "Function AccumulateGrad returned an invalid "
                    "gradient at index 0 - expected device %s but got %s",
                    ln_device_str(ln_tensor_device(leaf), a, sizeof a),
                    ln_device_str(ln_tensor_device(g), b, sizeof b));
  if (!leaf->grad && g->dtype == leaf->dtype && ln_tensor_refcount(g) == 1 &&
      ln_storage_refcount(g->storage) == 1 && !g->requires_grad &&
      ln_tensor_is_contiguous(g, fmt)) {
    ln_tensor_retain(g);
    acc = g;
  } else {
    if (!(cast = ln_to_dtype(g, leaf->dtype))) return failed();
    acc = leaf->grad ? ln_add(leaf->grad, cast) : ln_clone(cast, fmt);
    ln_tensor_release(cast);
    if (!acc) return failed();
  }
  ln_tensor_release(leaf->grad);
  leaf->grad = acc;
  return LN_OK;
}

/* The accumulate node of leaf t, shared while any graph holds it, so that
** a leaf used twice gets its gradients summed before one accumulation.
** New reference. */
static ln_node *grad_accumulator(ln_tensor *t) {
  ln_node *acc = t->grad_acc;
  if (acc) {
    ln_node_retain(acc);
    return acc;
  }
  if (!(acc = node_alloc("AccumulateGrad", accumulate_backward, 0, 1)))
    return NULL;
  ln_tensor_retain(t);
  acc->leaf = t;
  t->grad_acc = acc;
  return acc;
}

/* Edges: to the input's grad_fn, to the accumulate node of a leaf that
** requires grad, NULL otherwise (also for a NULL input). */
ln_node *ln_node_new(const char *name, ln_backward_fn backward,
                     ln_tensor *const *inputs, int n_inputs, int n_outputs) {
  ln_node *node = node_alloc(name, backward, n_inputs, n_outputs);
  if (!node) return NULL;
  for (int i = 0; i < n_inputs; i++) {
    ln_tensor *t = inputs[i];
    if (!t || !t->requires_grad) continue;
    if (t->grad_fn) {
      ln_node_retain(t->grad_fn);
      node->next[i] = (ln_edge){ t->grad_fn, t->output_nr };
      continue;
    }
    ln_node *acc = grad_accumulator(t);
    if (!acc) {
      ln_node_release(node);
      return NULL;
    }
    node->next[i] = (ln_edge){ acc, 0 };
  }
  return node;
}

void ln_node_save(ln_node *node, ln_tensor *t) {
  assert(node->n_saved < LN_NODE_MAX_SAVED);
  if (t) ln_tensor_retain(t);
  node->saved[node->n_saved++] = t;
}

ln_tensor *ln_node_saved(ln_node *node, int i) {
  if (node->saved_freed) {
    ln_error(LN_ERUNTIME, "%s", freed_graph_msg);
    return NULL;
  }
  assert(i >= 0 && i < node->n_saved);
  return node->saved[i];
}

static void node_free_saved(ln_node *node) {
  for (int i = 0; i < node->n_saved; i++) {
    ln_tensor_release(node->saved[i]);
    node->saved[i] = NULL;
  }
  node->saved_freed = true;
}

void ln_set_history(ln_tensor *out, ln_node *node, int output_nr) {
  assert(output_nr >= 0 && output_nr < node->n_outputs);
  ln_node_retain(node);
  ln_node_release(out->grad_fn);
  out->grad_fn = node;
  out->output_nr = output_nr;
  out->requires_grad = true;
}

void ln_node_retain(ln_node *n) { n->refcount++; }

/* Nodes whose count reached zero wait here while the outermost release
** frees them; releasing a node's edges or saved tensors only queues more. */
static _Thread_local struct {
  ln_node **items;
  size_t n, cap;
  bool draining;
} dead;

static bool dead_push(ln_node *n) {
  if (dead.n == dead.cap) {
    size_t cap = dead.cap ? 2 * dead.cap : 64;
    ln_node **items = realloc(dead.items, cap * sizeof *items);
    if (!items) return false;
    dead.items = items;
    dead.cap = cap;
  }
  dead.items[dead.n++] = n;
  return true;
}

static void node_destroy(ln_node *n) {
  for (int i = 0; i < n->n_saved; i++) ln_tensor_release(n->saved[i]);
  for (int i = 0; i < n->n_inputs; i++) ln_node_release(n->next[i].node);
  if (n->extra && n->free_extra) n->free_extra(n->extra);
  if (n->leaf && n->leaf->grad_acc == n) n->leaf->grad_acc = NULL;
  ln_tensor_release(n->leaf);
  free(n);
}

void ln_node_release(ln_node *n) {
  if (!n) return;
  assert(n->refcount > 0);
  if (--n->refcount > 0) return;
  if (!dead_push(n)) {       /* out of memory: free this one by recursion */
    node_destroy(n);
    return;
  }
  if (dead.draining) return;
  dead.draining = true;
  while (dead.n > 0) node_destroy(dead.items[--dead.n]);
  free(dead.items);
  dead.items = NULL;
  dead.cap = 0;
  dead.draining = false;
}

/* ---- the engine ---- */

/* The nodes reachable from the start node, each with the number of edges
** from other reached nodes that still have to deliver their gradient and
** a slot per output for the gradient summed so far (owned). */
typedef struct graph {
  ln_node **nodes;
  int *deps;
  size_t *first;      /* node i's slots are bufs[first[i] .. + n_outputs) */
  int n, cap;
  ln_node **keys;     /* open-addressing map node -> index */
  int *vals;
  size_t mask;
  ln_tensor **bufs;
  size_t nbufs;
  int max_inputs;
} graph;

static size_t hash_ptr(const void *p) {
  uint64_t x = (uint64_t)(uintptr_t)p;
  x ^= x >> 33;
  x *= 0x9E3779B97F4A7C15ull;
  return (size_t)(x ^ (x >> 29));
}

static int graph_find(const graph *g, const ln_node *node) {
  for (size_t h = hash_ptr(node) & g->mask;; h = (h + 1) & g->mask) {
    if (g->keys[h] == node) return g->vals[h];
    if (!g->keys[h]) return -1;
  }
}

static void map_put(ln_node **keys, int *vals, size_t mask, ln_node *node, int v) {
  size_t h = hash_ptr(node) & mask;
  while (keys[h]) h = (h + 1) & mask;
  keys[h] = node;
  vals[h] = v;
}

/* Append node (not yet present); its index, or -1 out of memory. */
static int graph_add(graph *g, ln_node *node) {
  if (g->n == g->cap) {
    int cap = g->cap ? 2 * g->cap : 64;
    size_t size = 4 * (size_t)cap, mask = size - 1;
    ln_node **nodes = realloc(g->nodes, (size_t)cap * sizeof *nodes);
    if (nodes) g->nodes = nodes;
    int *deps = nodes ? realloc(g->deps, (size_t)cap * sizeof *deps) : NULL;
    if (deps) g->deps = deps;
    ln_node **keys = calloc(size, sizeof *keys);
    int *vals = malloc(size * sizeof *vals);
    if (!nodes || !deps || !keys || !vals) {
      free(keys);
      free(vals);
      ln_error(LN_ENOMEM, "out of memory in backward");
      return -1;
    }
    for (int i = 0; i < g->n; i++) map_put(keys, vals, mask, g->nodes[i], i);
    free(g->keys);
    free(g->vals);
    g->keys = keys;
    g->vals = vals;
    g->mask = mask;
    g->cap = cap;
  }
  g->nodes[g->n] = node;
  g->deps[g->n] = 0;
  map_put(g->keys, g->vals, g->mask, node, g->n);
  if (node->n_inputs > g->max_inputs) g->max_inputs = node->n_inputs;
  return g->n++;
}

/* Reach every node from `start` (index 0) by an iterative DFS, count the
** dependencies and allocate the gradient slots. */
static ln_status graph_build(graph *g, ln_node *start) {
  ln_status st = LN_ENOMEM;
  int *todo = NULL, ntodo = 0, todo_cap = 0;
  int i = graph_add(g, start);
  if (i < 0) return LN_ENOMEM;
  for (;;) {
    ln_node *node = g->nodes[i];
    for (int j = 0; j < node->n_inputs; j++) {
      ln_node *next = node->next[j].node;
      if (!next) continue;
      assert(node->next[j].input_nr < next->n_outputs);
      int k = graph_find(g, next);
      if (k < 0) {
        if ((k = graph_add(g, next)) < 0) goto fail;
        if (ntodo == todo_cap) {
          int cap = todo_cap ? 2 * todo_cap : 64;
          int *t = realloc(todo, (size_t)cap * sizeof *t);
          if (!t) goto nomem;
          todo = t;
          todo_cap = cap;
        }
        todo[ntodo++] = k;
      }
      g->deps[k]++;
    }
    if (ntodo == 0) break;
    i = todo[--ntodo];
  }
  if (!(g->first = malloc((size_t)g->n * sizeof *g->first))) goto nomem;
  for (int k = 0; k < g->n; k++) {
    g->first[k] = g->nbufs;
    g->nbufs += (size_t)g->nodes[k]->n_outputs;
  }
  if (!(g->bufs = calloc(g->nbufs, sizeof *g->bufs))) goto nomem;
  free(todo);
  return LN_OK;
nomem:
  ln_error(LN_ENOMEM, "out of memory in backward");
fail:
  free(todo);
  return st;
}

static void graph_free(graph *g) {
  for (size_t i = 0; i < g->nbufs; i++) ln_tensor_release(g->bufs[i]);
  free(g->bufs);
  free(g->first);
  free(g->nodes);
  free(g->deps);
  free(g->keys);
  free(g->vals);
}

/* Add g (taken over) into a gradient slot. */
static ln_status slot_add(ln_tensor **slot, ln_tensor *g) {
  if (!*slot) {
    *slot = g;
    return LN_OK;
  }
  ln_tensor *sum = ln_add(*slot, g);
  ln_tensor_release(g);
  if (!sum) return failed();
  ln_tensor_release(*slot);
  *slot = sum;
  return LN_OK;
}

static ln_status graph_root_backward(ln_node *node, ln_tensor **grad_out,
                                     ln_tensor **grad_in) {
  (void)node;
  ln_tensor_retain(grad_out[0]);
  grad_in[0] = grad_out[0];
  return LN_OK;
}

/* The gradient that starts the walk: implicit ones for a one-element root,
** else `grad` checked against the root and cast to its dtype. New ref. */
static ln_status root_grad(ln_tensor *root, ln_tensor *grad, ln_tensor **out) {
  char a[SHAPE_BUF], b[SHAPE_BUF];
  if (!grad) {
    if (ln_tensor_numel(root) != 1)
      return ln_error(LN_ERUNTIME, "grad can be implicitly created only for "
                      "scalar outputs");
    *out = ln_ones(root->sizes, root->ndim, root->dtype, ln_tensor_device(root));
    return *out ? LN_OK : failed();
  }
  if (!ln_tensor_same_shape(grad, root))
    return ln_error(LN_ERUNTIME, "Mismatch in shape: grad_output[0] has a "
                    "shape of %s and output[0] has a shape of %s.",
                    shape_str(grad->sizes, grad->ndim, a),
                    shape_str(root->sizes, root->ndim, b));
  if (!ln_device_eq(ln_tensor_device(grad), ln_tensor_device(root)))
    return ln_error(LN_ERUNTIME, "invalid gradient at index 0 - expected "
                    "device %s but got %s",
                    ln_device_str(ln_tensor_device(root), a, sizeof a),
                    ln_device_str(ln_tensor_device(grad), b, sizeof b));
  *out = ln_to_dtype(grad, root->dtype);
  return *out ? LN_OK : failed();
}

/* Run one node: its backward on its summed output gradients (skipped when
** none arrived), then hand each input gradient along its edge, queueing
** the nodes whose last dependency this was. grad_in has room for
** node->n_inputs entries; whatever is left in it on failure is owned by
** the caller. */
static ln_status run_node(graph *g, int i, ln_tensor **grad_in, int *ready,
                          int *nready, bool retain_graph) {
  ln_node *node = g->nodes[i];
  ln_tensor **outs = g->bufs + g->first[i];
  bool any = false;
  if (node->saved_freed && node->n_saved > 0)
    return ln_error(LN_ERUNTIME, "%s", freed_graph_msg);
  for (int k = 0; k < node->n_outputs; k++) any = any || outs[k];
  if (any) {
    ln_status st = node->backward(node, outs, grad_in);
    if (st != LN_OK) return st;
  }
  for (int k = 0; k < node->n_outputs; k++) {
    ln_tensor_release(outs[k]);
    outs[k] = NULL;
  }
  if (!retain_graph) node_free_saved(node);
  for (int j = 0; j < node->n_inputs; j++) {
    ln_edge e = node->next[j];
    ln_tensor *gj = grad_in[j];
    grad_in[j] = NULL;
    if (!e.node) {
      ln_tensor_release(gj);
      continue;
    }
    int k = graph_find(g, e.node);
    if (gj) {
      ln_status st = slot_add(g->bufs + g->first[k] + e.input_nr, gj);
      if (st != LN_OK) return st;
    }
    if (--g->deps[k] == 0) ready[(*nready)++] = k;
  }
  return LN_OK;
}

/* The walk starts at a "GraphRoot" node whose one edge leads to the root's
** grad_fn (or to an accumulate node when the root is a leaf), and runs the
** nodes in dependency order with grad mode off. */
ln_status ln_backward(ln_tensor *root, ln_tensor *grad, bool retain_graph) {
  graph g = { 0 };
  ln_tensor *g0 = NULL, **grad_in = NULL;
  ln_node *start = NULL;
  int *ready = NULL, nready = 0;
  ln_status st;
  if (!root->requires_grad)
    return ln_error(LN_ERUNTIME, "element 0 of tensors does not require grad "
                    "and does not have a grad_fn");
  bool prev = ln_set_grad_enabled(false);
  if ((st = root_grad(root, grad, &g0)) != LN_OK) goto done;
  if (!(start = ln_node_new("GraphRoot", graph_root_backward, &root, 1, 1))) {
    st = failed();
    goto done;
  }
  if ((st = graph_build(&g, start)) != LN_OK) goto done;
  g.bufs[0] = g0;
  g0 = NULL;
  ready = malloc((size_t)g.n * sizeof *ready);
  grad_in = calloc((size_t)g.max_inputs, sizeof *grad_in);
  if (!ready || !grad_in) {
    st = ln_error(LN_ENOMEM, "out of memory in backward");
    goto done;
  }
  ready[nready++] = 0;
  while (nready > 0) {
    int i = ready[--nready];
    if ((st = run_node(&g, i, grad_in, ready, &nready, retain_graph)) != LN_OK)
      goto done;
  }
done:
  for (int j = 0; grad_in && j < g.max_inputs; j++) ln_tensor_release(grad_in[j]);
  free(grad_in);
  free(ready);
  graph_free(&g);
  ln_tensor_release(g0);
  ln_node_release(start);
  ln_set_grad_enabled(prev);
  return st;
}

/* ---- gradient helpers ---- */

/* Undo broadcasting: sum the leading extra dims of g and, with keepdim,
** the dims where sizes[i] == 1 but g is larger; then drop the leading ones. */
ln_tensor *ln_sum_to_size(ln_tensor *g, const int64_t *sizes, int ndim) {
  int lead = g->ndim - ndim, dims[LN_MAX_DIMS], nd = 0;
  char a[SHAPE_BUF], b[SHAPE_BUF];
  bool ok = lead >= 0;
  for (int i = 0; ok && i < lead; i++) dims[nd++] = i;
  for (int i = 0; ok && i < ndim; i++) {
    if (g->sizes[lead + i] == sizes[i]) continue;
    if (sizes[i] == 1) dims[nd++] = lead + i;
    else ok = false;
  }
  if (!ok) {
    ln_error(LN_EINVAL, "size %s is not expandable to size %s.",
             shape_str(sizes, ndim, a), shape_str(g->sizes, g->ndim, b));
    return NULL;
  }
  if (nd == 0) {
    ln_tensor_retain(g);
    return g;
  }
  ln_tensor *s = ln_sum(g, dims, nd, true);
  if (!s) return NULL;
  ln_tensor *out = ln_reshape(s, sizes, ndim);
  ln_tensor_release(s);
  return out;
}
