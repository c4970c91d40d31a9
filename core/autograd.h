/*
** autograd.h -- reverse-mode automatic differentiation.
** An op that records history creates an ln_node holding what its backward
** needs, links it to the nodes of its inputs (edges), and sets itself as
** the grad_fn of its output. Leaves that require grad are reached through
** an accumulate node that adds into their .grad. ln_backward walks the
** graph once in reverse topological order and, unless asked to retain it,
** frees every node's saved tensors.
*/
#ifndef LN_AUTOGRAD_H
#define LN_AUTOGRAD_H

#include <stdbool.h>

#include "tensor.h"

typedef struct ln_node ln_node;

#define LN_NODE_MAX_SAVED 6

/* Backward function: given the gradient of each output (grad_out[i], may
** be NULL for an output that received none) fill grad_in[j] with a NEW
** reference for each input j that needs one (leave NULL otherwise). */
typedef ln_status (*ln_backward_fn)(ln_node *node, ln_tensor **grad_out,
                                    ln_tensor **grad_in);

typedef struct ln_edge {
  ln_node *node;   /* retained; NULL when that input needs no gradient */
  int input_nr;    /* which output of `node` this edge feeds */
} ln_edge;

struct ln_node {
  int refcount;
  const char *name;               /* "AddBackward0", as PyTorch names them */
  ln_backward_fn backward;
  int n_inputs;                   /* edges, one per differentiable input */
  int n_outputs;
  /* Saved tensors (retained); freed after a backward without retain_graph.
  ** Save outputs through ln_detach so that no cycle forms. */
  ln_tensor *saved[LN_NODE_MAX_SAVED];
  int n_saved;
  bool saved_freed;               /* a backward ran without retain_graph */
  /* Shapes or scalars the backward needs, owned by the node. */
  int64_t ints[2 * LN_MAX_DIMS + 4];
  double scalars[4];
  void *extra;                    /* freed with free_extra if set */
  void (*free_extra)(void *extra);
  ln_tensor *leaf;                /* accumulate nodes only: the leaf (retained) */
  ln_edge next[];                 /* n_inputs edges, allocated with the node */
};

/* ---- grad mode ---- */
bool ln_grad_enabled(void);
/* Set grad mode for this thread; returns the previous mode. */
bool ln_set_grad_enabled(bool enabled);

/* ---- recording, for op implementations ---- */
/* True when grad mode is on and any of the n inputs requires grad. */
bool ln_any_requires_grad(ln_tensor *const *inputs, int n);
/* A node with one edge per input (edges to inputs that need no grad are
** NULL). New reference, or NULL with a message. */
ln_node *ln_node_new(const char *name, ln_backward_fn backward,
                     ln_tensor *const *inputs, int n_inputs, int n_outputs);
/* Retain t in node->saved[node->n_saved++]. */
void ln_node_save(ln_node *node, ln_tensor *t);
/* Make `node` the grad_fn of `out` as its output number `output_nr`; out
** then requires grad. */
void ln_set_history(ln_tensor *out, ln_node *node, int output_nr);
/* The saved tensor i, or NULL after the graph was freed (with the error
** "Trying to backward through the graph a second time ..."). */
ln_tensor *ln_node_saved(ln_node *node, int i);

void ln_node_retain(ln_node *n);
void ln_node_release(ln_node *n);   /* NULL is fine */

/* The grad_fn of t (borrowed, NULL for leaves), and its output number. */
ln_node *ln_tensor_grad_fn(const ln_tensor *t);
int ln_tensor_output_nr(const ln_tensor *t);

/* ---- the engine ---- */
/* Backpropagate from `root`. grad may be NULL only for a one-element root
** (implicit 1). Gradients accumulate into the .grad of leaves. */
ln_status ln_backward(ln_tensor *root, ln_tensor *grad, bool retain_graph);

/* ---- gradient helpers shared by backward functions ---- */
/* Sum g down to `sizes` (undo broadcasting). New reference. */
ln_tensor *ln_sum_to_size(ln_tensor *g, const int64_t *sizes, int ndim);

#endif
