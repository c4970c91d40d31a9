/*
** module_impl.h -- the module struct, shared by nn/module.c (slots,
** attributes, life cycle) and nn/module_call.c (hooks, calling, lazy
** init). Everything else, in nn/ too, goes through module.h.
*/
#ifndef LN_MODULE_IMPL_H
#define LN_MODULE_IMPL_H

#include "module.h"

typedef struct ln_slot {
  char *name;             /* owned */
  ln_slot_kind kind;
  bool persistent;        /* buffers only; parameters are always saved */
  bool uninitialized;     /* lazy: no tensor yet, created by materialize */
  ln_dtype dtype;         /* what materialize creates (uninitialized only) */
  ln_device dev;
  ln_tensor *tensor;      /* retained, NULL for nil (or uninitialized) */
  ln_module *child;       /* retained, NULL for nil */
} ln_slot;

typedef struct ln_named_attr {
  char *name;             /* owned */
  ln_attr value;          /* value.u.s owned when kind == LN_ATTR_STRING */
} ln_named_attr;

typedef struct ln_hook {
  int handle;             /* increasing within a module: list order = run order */
  bool pre;
  ln_forward_pre_hook pre_fn;
  ln_forward_hook fn;
  void *ud;
  void (*free_ud)(void *);
} ln_hook;

struct ln_module {
  int refcount;
  const ln_module_type *type;
  void *priv;             /* owned, freed by type->free_priv */
  void *host;             /* not owned */
  bool training;
  ln_slot *slots;
  int n_slots, cap_slots;
  ln_named_attr *attrs;
  int n_attrs, cap_attrs;
  ln_hook *hooks;
  int n_hooks, cap_hooks;
  int next_handle;
};

/* Free every hook's user data and the hook list (module teardown). */
void ln_module_free_hooks(ln_module *m);

#endif
