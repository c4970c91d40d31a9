/*
** module_walk.c -- walking a module tree in PyTorch's named_modules order:
** a module, then each child's subtree in registration order, dotted
** prefixes, each module once (memo by pointer), and the parameters and
** buffers of that walk with each tensor once.
**
** Visitors may change the tree (a host's apply(fn) registers modules): the
** walk re-reads the slot count at every step and holds a reference on the
** module it is inside, so nothing it touches is freed under it.
*/
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "module.h"

/* A set of pointers (open addressing, grows at half load). */
typedef struct ptr_set {
  const void **slots;
  size_t cap, n;
} ptr_set;

static size_t ptr_hash(const void *p, size_t mask) {
  uintptr_t x = (uintptr_t)p;
  x ^= x >> 17;
  x *= (uintptr_t)0x9E3779B97F4A7C15ull;
  return (size_t)(x ^ (x >> 29)) & mask;
}

/* Insert p; 1 if it was new, 0 if already there, -1 on no memory. */
static int ptr_set_add(ptr_set *s, const void *p) {
  if (2 * (s->n + 1) > s->cap) {
    size_t cap = s->cap ? 2 * s->cap : 64;
    const void **slots = calloc(cap, sizeof *slots);
    if (!slots) return -1;
    for (size_t i = 0; i < s->cap; i++) {
      if (!s->slots[i]) continue;
      size_t j = ptr_hash(s->slots[i], cap - 1);
      while (slots[j]) j = (j + 1) & (cap - 1);
      slots[j] = s->slots[i];
    }
    free(s->slots);
    s->slots = slots;
    s->cap = cap;
  }
  size_t j = ptr_hash(p, s->cap - 1);
  while (s->slots[j]) {
    if (s->slots[j] == p) return 0;
    j = (j + 1) & (s->cap - 1);
  }
  s->slots[j] = p;
  s->n++;
  return 1;
}

/* A growing string holding the current dotted prefix. */
typedef struct walk_state {
  ptr_set seen;
  char *prefix;
  size_t len, cap;
  ln_module_visit_fn fn;
  void *ud;
} walk_state;

/* Append ".name" (or "name" at the root) to the prefix. */
static bool push_name(walk_state *w, const char *name) {
  size_t need = w->len + strlen(name) + 2;
  if (need > w->cap) {
    size_t cap = w->cap ? w->cap : 64;
    while (cap < need) cap *= 2;
    char *p = realloc(w->prefix, cap);
    if (!p) return false;
    w->prefix = p;
    w->cap = cap;
  }
  if (w->len) w->prefix[w->len++] = '.';
  strcpy(w->prefix + w->len, name);
  w->len += strlen(name);
  return true;
}

static ln_status walk_rec(walk_state *w, ln_module *m) {
  int added = ptr_set_add(&w->seen, m);
  if (added < 0) return ln_error(LN_ENOMEM, "out of memory walking modules");
  if (added == 0) return LN_OK;
  ln_module_retain(m);
  ln_status st = w->fn(w->prefix, m, w->ud);
  for (int i = 0; st == LN_OK && i < ln_module_slot_count(m); i++) {
    ln_module *child = ln_module_slot_module(m, i);
    if (!child) continue;
    size_t len = w->len;
    if (!push_name(w, ln_module_slot_name(m, i))) {
      st = ln_error(LN_ENOMEM, "out of memory walking modules");
      break;
    }
    st = walk_rec(w, child);
    w->len = len;
    w->prefix[len] = '\0';
  }
  ln_module_release(m);
  return st;
}

ln_status ln_module_walk(ln_module *m, ln_module_visit_fn fn, void *ud) {
  if (!m || !fn) return ln_error(LN_EINVAL, "walk: %s expected, got NULL",
                                 m ? "visitor" : "module");
  walk_state w = { .fn = fn, .ud = ud, .prefix = malloc(64), .cap = 64 };
  if (!w.prefix) return ln_error(LN_ENOMEM, "out of memory walking modules");
  w.prefix[0] = '\0';
  ln_status st = walk_rec(&w, m);
  free(w.prefix);
  free(w.seen.slots);
  return st;
}

/* ---- tensors of the walk ---- */

typedef struct members {
  ln_slot_kind kind;
  ptr_set seen;             /* tensors already visited */
  ln_tensor_visit_fn fn;
  void *ud;
} members;

/* Visit the module's own tensors of one kind under "prefix.name". */
static ln_status visit_members(const char *prefix, ln_module *m, void *ud) {
  members *mb = ud;
  size_t plen = strlen(prefix);
  for (int i = 0; i < ln_module_slot_count(m); i++) {
    ln_tensor *t = ln_module_slot_tensor(m, i);
    if (!t || ln_module_slot_kind(m, i) != mb->kind) continue;
    int added = ptr_set_add(&mb->seen, t);
    if (added < 0) return ln_error(LN_ENOMEM, "out of memory walking modules");
    if (added == 0) continue;
    const char *name = ln_module_slot_name(m, i);
    char *full = malloc(plen + strlen(name) + 2);
    if (!full) return ln_error(LN_ENOMEM, "out of memory walking modules");
    strcpy(full, prefix);
    if (plen) strcat(full, ".");
    strcat(full, name);
    ln_tensor_retain(t);
    ln_status st = mb->fn(full, t, mb->ud);
    ln_tensor_release(t);
    free(full);
    if (st != LN_OK) return st;
  }
  return LN_OK;
}

static ln_status walk_members(ln_module *m, ln_slot_kind kind, ln_tensor_visit_fn fn,
                              void *ud) {
  if (!m || !fn) return ln_error(LN_EINVAL, "named_%s: %s expected, got NULL",
                                 kind == LN_SLOT_PARAM ? "parameters" : "buffers",
                                 m ? "visitor" : "module");
  members mb = { .kind = kind, .fn = fn, .ud = ud };
  ln_status st = ln_module_walk(m, visit_members, &mb);
  free(mb.seen.slots);
  return st;
}

ln_status ln_module_named_parameters(ln_module *m, ln_tensor_visit_fn fn, void *ud) {
  return walk_members(m, LN_SLOT_PARAM, fn, ud);
}

ln_status ln_module_named_buffers(ln_module *m, ln_tensor_visit_fn fn, void *ud) {
  return walk_members(m, LN_SLOT_BUFFER, fn, ud);
}
