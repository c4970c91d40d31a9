/*
** module_call.c -- forward hooks and calling a module: pre-hooks, lazy
** initialisation, the type's forward, hooks.
**
** Hooks are kept in one list in handle order. A hook may add or remove
** hooks while it runs: the call loop looks up "the next hook after the
** handle just run" at each step instead of holding an index or a pointer.
*/
#include <stdlib.h>

#include "module_impl.h"

static int add_hook(ln_module *m, ln_hook h) {
  if (!m || (!h.pre_fn && !h.fn)) {
    ln_error(LN_EINVAL, "add_forward%s_hook: %s expected, got NULL", h.pre ? "_pre" : "",
             m ? "hook function" : "module");
    return -1;
  }
  if (m->n_hooks == m->cap_hooks) {
    int cap = m->cap_hooks ? 2 * m->cap_hooks : 4;
    ln_hook *p = realloc(m->hooks, (size_t)cap * sizeof *p);
    if (!p) {
      ln_error(LN_ENOMEM, "out of memory adding a hook");
      return -1;
    }
    m->hooks = p;
    m->cap_hooks = cap;
  }
  h.handle = m->next_handle++;
  m->hooks[m->n_hooks++] = h;
  return h.handle;
}

/* Handles are positive; -1 with a message when the hook cannot be added
** (free_ud is then not called: the caller still owns ud). */
int ln_module_add_forward_pre_hook(ln_module *m, ln_forward_pre_hook fn, void *ud,
                                   void (*free_ud)(void *)) {
  return add_hook(m, (ln_hook){ .pre = true, .pre_fn = fn, .ud = ud, .free_ud = free_ud });
}

int ln_module_add_forward_hook(ln_module *m, ln_forward_hook fn, void *ud,
                               void (*free_ud)(void *)) {
  return add_hook(m, (ln_hook){ .pre = false, .fn = fn, .ud = ud, .free_ud = free_ud });
}

bool ln_module_remove_hook(ln_module *m, int handle) {
  if (!m) return false;
  for (int i = 0; i < m->n_hooks; i++) {
    if (m->hooks[i].handle != handle) continue;
    ln_hook h = m->hooks[i];
    m->n_hooks--;
    for (int j = i; j < m->n_hooks; j++) m->hooks[j] = m->hooks[j + 1];
    if (h.free_ud) h.free_ud(h.ud);
    return true;
  }
  return false;
}

void ln_module_free_hooks(ln_module *m) {
  for (int i = 0; i < m->n_hooks; i++)
    if (m->hooks[i].free_ud) m->hooks[i].free_ud(m->hooks[i].ud);
  free(m->hooks);
  m->hooks = NULL;
  m->n_hooks = m->cap_hooks = 0;
}

/* The first hook of the given kind with a handle above `after`, copied out
** (the list may change while it runs); false when none is left. */
static bool next_hook(const ln_module *m, bool pre, int after, ln_hook *out) {
  for (int i = 0; i < m->n_hooks; i++)
    if (m->hooks[i].pre == pre && m->hooks[i].handle > after) {
      *out = m->hooks[i];
      return true;
    }
  return false;
}

ln_status ln_module_lazy_init(ln_module *m, ln_tensor *const *inputs, int n) {
  if (!m) return ln_error(LN_EINVAL, "lazy init: module expected, got NULL");
  if (!ln_module_has_uninitialized(m)) return LN_OK;
  const ln_module_type *type = m->type;
  if (!type->initialize_from_input)
    return ln_error(LN_ERUNTIME, "module '%s' has uninitialized parameters and cannot "
                    "infer them from its input", type->name);
  ln_status st = type->initialize_from_input(m, inputs, n);
  if (st != LN_OK) return st;
  if (ln_module_has_uninitialized(m))
    return ln_error(LN_ERUNTIME, "module %s has not been fully initialized", type->name);
  /* ln_module_materialize switched type already unless the slots were
  ** filled some other way. */
  if (m->type == type && type->becomes) m->type = type->becomes;
  return LN_OK;
}

/* inputs are borrowed; the hooks work on a retained copy that pre-hooks
** may replace. Returns a new reference. */
ln_tensor *ln_module_call(ln_module *m, ln_tensor *const *inputs, int n) {
  if (!m || n < 0 || (n > 0 && !inputs)) {
    ln_error(LN_EINVAL, "call: %s", m ? "bad inputs" : "module expected, got NULL");
    return NULL;
  }
  ln_tensor *out = NULL;
  ln_tensor **args = calloc(n > 0 ? (size_t)n : 1, sizeof *args);
  if (!args) {
    ln_error(LN_ENOMEM, "out of memory calling %s", m->type->name);
    return NULL;
  }
  for (int i = 0; i < n; i++)
    if ((args[i] = inputs[i])) ln_tensor_retain(args[i]);
  ln_module_retain(m);
  ln_status st = LN_OK;
  ln_hook h;
  for (int after = 0; st == LN_OK && next_hook(m, true, after, &h); after = h.handle)
    st = h.pre_fn(m, args, n, h.ud);
  if (st == LN_OK) st = ln_module_lazy_init(m, args, n);
  if (st != LN_OK) goto done;
  if (!m->type->forward) {
    ln_error(LN_ERUNTIME, "module '%s' has no forward", m->type->name);
    goto done;
  }
  out = m->type->forward(m, args, n);
  if (!out) goto done;
  for (int after = 0; st == LN_OK && next_hook(m, false, after, &h); after = h.handle)
    st = h.fn(m, args, n, &out, h.ud);
  if (st != LN_OK || !out) {
    if (st == LN_OK) ln_error(LN_ERUNTIME, "a forward hook of %s cleared the output",
                              m->type->name);
    ln_tensor_release(out);
    out = NULL;
  }
done:
  for (int i = 0; i < n; i++) ln_tensor_release(args[i]);
  free(args);
  ln_module_release(m);
  return out;
}
