/*
** module.h -- the module system: named parameters, buffers and children
** in registration order, train/eval, attributes, hooks, state dicts and
** lazy initialisation. Usable from C without Lua.
**
** A module has a type (a table of functions shared by all modules of that
** kind) and slots. A slot may hold nil, as PyTorch's
** register_parameter(name, None), or be "uninitialized" (a lazy module's
** parameter whose shape comes from the first input or a loaded state dict).
** Modules are reference counted; a parent retains its children.
*/
#ifndef LN_MODULE_H
#define LN_MODULE_H

#include <stdbool.h>
#include <stddef.h>

#include "../core/tensor.h"
#include "state_dict.h"

typedef struct ln_module ln_module;

typedef enum ln_slot_kind { LN_SLOT_PARAM, LN_SLOT_BUFFER, LN_SLOT_CHILD } ln_slot_kind;

/* Scalar attributes a module exposes by name (eps, momentum, affine, ...). */
typedef enum ln_attr_kind {
  LN_ATTR_NIL, LN_ATTR_BOOL, LN_ATTR_INT, LN_ATTR_NUMBER, LN_ATTR_STRING
} ln_attr_kind;

typedef struct ln_attr {
  ln_attr_kind kind;
  union { bool b; int64_t i; double d; const char *s; } u;  /* s owned by the module */
} ln_attr;

typedef struct ln_module_type {
  const char *name;   /* "BatchNorm2d" */
  int version;        /* state dict version (PyTorch's _version), 1 if unset */
  /* Forward on n tensor inputs (a NULL input is an omitted optional one);
  ** returns a new reference or NULL with a message. NULL for containers
  ** and for types whose forward lives in a host language. */
  ln_tensor *(*forward)(ln_module *m, ln_tensor *const *inputs, int n);
  /* Write the text inside the parentheses of tostring(m), "" if NULL. */
  void (*extra_repr)(ln_module *m, char *buf, size_t size);
  /* Before this module's own keys are read from a state dict: may add or
  ** rewrite entries under `prefix` (migrating older versions). `prefix` is
  ** the key prefix with its trailing dot, as PyTorch's ("" for the root,
  ** "layer1." for a child), so a key reads prefix + "num_batches_tracked".
  ** `version` is the version found in the state dict's metadata, or -1
  ** when it has none. */
  ln_status (*load_hook)(ln_module *m, ln_state_dict *sd, const char *prefix,
                         int version);
  /* Lazy modules: create the uninitialized slots from the first input. */
  ln_status (*initialize_from_input)(ln_module *m, ln_tensor *const *inputs, int n);
  /* Lazy modules: the last uninitialized slot was just filled (from an input
  ** or a state dict); set whatever attributes follow from the shapes. Runs
  ** with grad mode off (it may initialise parameters in place). */
  ln_status (*on_materialized)(ln_module *m);
  /* Lazy modules: the type to become once nothing is uninitialized. */
  const struct ln_module_type *becomes;
  /* Free the type's private data (ln_module_priv), if any. */
  void (*free_priv)(void *priv);
} ln_module_type;

/* ---- life cycle ---- */
/* A new module of `type` in training mode with no slots. `priv` (owned,
** freed with type->free_priv) holds type-specific state. New reference. */
ln_module *ln_module_new(const ln_module_type *type, void *priv);
void ln_module_retain(ln_module *m);
void ln_module_release(ln_module *m);   /* NULL is fine */
const ln_module_type *ln_module_get_type(const ln_module *m);
void ln_module_set_type(ln_module *m, const ln_module_type *type);
const char *ln_module_type_name(const ln_module *m);
void *ln_module_priv(const ln_module *m);
/* Opaque pointer for a host (the Lua bindings); not owned. */
void *ln_module_host(const ln_module *m);
void ln_module_set_host(ln_module *m, void *host);

/* ---- slots ---- */
/* Register (or replace) a slot. t/child may be NULL (a nil slot). A name
** is unique across all kinds: registering a parameter named like an
** existing buffer is an error ("attribute 'x' already exists"). Names may
** not be empty or contain '.'. The module retains what it is given. */
ln_status ln_module_register_parameter(ln_module *m, const char *name, ln_tensor *t);
ln_status ln_module_register_buffer(ln_module *m, const char *name, ln_tensor *t,
                                    bool persistent);
ln_status ln_module_register_module(ln_module *m, const char *name, ln_module *child);
/* An uninitialized parameter or buffer, to be created by
** ln_module_materialize with the given dtype and device. */
ln_status ln_module_register_uninitialized(ln_module *m, const char *name,
                                           ln_slot_kind kind, ln_dtype dtype,
                                           ln_device dev);
/* Fill an uninitialized slot with a new tensor of `sizes` (contents
** unspecified); calls type->on_materialized and switches to type->becomes
** when it was the last one. */
ln_status ln_module_materialize(ln_module *m, const char *name,
                                const int64_t *sizes, int ndim);
bool ln_module_has_uninitialized(const ln_module *m);
bool ln_module_remove_slot(ln_module *m, const char *name);

int ln_module_slot_count(const ln_module *m);
const char *ln_module_slot_name(const ln_module *m, int i);
ln_slot_kind ln_module_slot_kind(const ln_module *m, int i);
bool ln_module_slot_persistent(const ln_module *m, int i);
bool ln_module_slot_uninitialized(const ln_module *m, int i);
ln_tensor *ln_module_slot_tensor(const ln_module *m, int i);   /* borrowed, may be NULL */
ln_module *ln_module_slot_module(const ln_module *m, int i);   /* borrowed, may be NULL */
/* Index of the slot called name, or -1. */
int ln_module_find_slot(const ln_module *m, const char *name);
/* Borrowed lookups by name; NULL when absent or nil. */
ln_tensor *ln_module_get_tensor(const ln_module *m, const char *name);
ln_module *ln_module_get_child(const ln_module *m, const char *name);

/* ---- walking the tree (prefix-ordered, each module once) ---- */
/* Calls fn(prefix, module, ud) for m and every descendant, prefixes dotted
** ("" for m itself). Stops and returns the first non-OK status. */
typedef ln_status (*ln_module_visit_fn)(const char *prefix, ln_module *m, void *ud);
ln_status ln_module_walk(ln_module *m, ln_module_visit_fn fn, void *ud);
/* Calls fn(name, tensor, ud) for every non-nil parameter (or buffer) of
** the tree with its dotted name; a tensor shared by two slots comes once. */
typedef ln_status (*ln_tensor_visit_fn)(const char *name, ln_tensor *t, void *ud);
ln_status ln_module_named_parameters(ln_module *m, ln_tensor_visit_fn fn, void *ud);
ln_status ln_module_named_buffers(ln_module *m, ln_tensor_visit_fn fn, void *ud);

/* ---- modes and conversions ---- */
bool ln_module_training(const ln_module *m);
void ln_module_train(ln_module *m, bool mode);     /* recursive */
/* Convert floating parameters and buffers (dtype applies to floating
** tensors only, as PyTorch) in place of their identity; grads follow. */
ln_status ln_module_to(ln_module *m, const ln_device *dev, const ln_dtype *dtype);
void ln_module_zero_grad(ln_module *m);           /* sets grads to NULL */

/* ---- attributes ---- */
ln_status ln_module_set_attr(ln_module *m, const char *name, ln_attr value);
/* NULL when the module has no such attribute. */
const ln_attr *ln_module_get_attr(const ln_module *m, const char *name);
int ln_module_attr_count(const ln_module *m);
const char *ln_module_attr_name(const ln_module *m, int i);
double ln_module_attr_number(const ln_module *m, const char *name, double dflt);
bool ln_module_attr_bool(const ln_module *m, const char *name, bool dflt);

/* ---- calling ---- */
/* Forward pre-hooks may replace inputs (set inputs[i] to a new reference
** after releasing the old one); forward hooks may replace *output. */
typedef ln_status (*ln_forward_pre_hook)(ln_module *m, ln_tensor **inputs, int n,
                                         void *ud);
typedef ln_status (*ln_forward_hook)(ln_module *m, ln_tensor *const *inputs, int n,
                                     ln_tensor **output, void *ud);
/* Hooks return a handle id for removal; `free_ud` (may be NULL) runs on removal
** and when the module is freed. */
int ln_module_add_forward_pre_hook(ln_module *m, ln_forward_pre_hook fn, void *ud,
                                   void (*free_ud)(void *));
int ln_module_add_forward_hook(ln_module *m, ln_forward_hook fn, void *ud,
                               void (*free_ud)(void *));
bool ln_module_remove_hook(ln_module *m, int handle);
/* Run pre-hooks, lazy initialisation, type->forward, hooks. New reference. */
ln_tensor *ln_module_call(ln_module *m, ln_tensor *const *inputs, int n);
/* Just the lazy step of ln_module_call, for hosts that run their own forward. */
ln_status ln_module_lazy_init(ln_module *m, ln_tensor *const *inputs, int n);

/* ---- text ---- */
/* PyTorch's nested repr; malloc'd, caller frees. */
char *ln_module_to_string(ln_module *m);

/* ---- state dicts ---- */
/* Every persistent parameter and buffer (nil ones skipped) under dotted
** names, as detached aliases, with _metadata versions for every module. */
ln_state_dict *ln_module_state_dict(ln_module *m);

typedef struct ln_load_result {
  char **missing_keys;     /* owned strings */
  int n_missing;
  char **unexpected_keys;
  int n_unexpected;
} ln_load_result;
void ln_load_result_free(ln_load_result *r);

/* Load values (copied into the existing tensors, converting dtype and
** device). Shape mismatches always fail; with strict, missing or unexpected
** keys fail too, with PyTorch's message:
**   Error(s) in loading state_dict for Net:
**   \tMissing key(s) in state_dict: "running_mean".
** A failing load copies nothing. `sd` is not modified (hooks work on a copy).
** `result` may be NULL. */
ln_status ln_module_load_state_dict(ln_module *m, const ln_state_dict *sd,
                                    bool strict, ln_load_result *result);

/* The container type of nn.Sequential (forward chains children in order). */
extern const ln_module_type ln_sequential_type;

#endif
