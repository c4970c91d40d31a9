/*
** module_state.c -- state_dict() and load_state_dict() with PyTorch's
** semantics.
**
** Keys: for each module (parent before children, children in registration
** order, a module registered twice appears under both names as in
** PyTorch), its non-nil parameters, then its non-nil persistent buffers,
** then its children's keys under "name.". Metadata: a version for each
** module prefix ("" for the root, "layer1.0" for a grandchild).
**
** Loading works in two phases on a shallow copy of the caller's map (the
** load hooks may add or rewrite entries there):
**   1. walk the tree, run each type's load_hook, and match keys against
**      slots, collecting missing keys, unexpected keys, size mismatches and
**      a plan of (module, slot, source) copies;
**   2. only when nothing failed: materialize lazy slots to the incoming
**      shapes (all of them first, so that on_materialized cannot overwrite
**      a value already copied), then copy every value under no-grad.
** So a failing load changes nothing; only a copy error in phase 2 (no
** memory, a device failure) can leave a partial load behind.
*/
#include <stdlib.h>
#include <string.h>

#include "../core/autograd.h"
#include "alloc.h"
#include "module.h"
#include "strbuf.h"

static int type_version(const ln_module *m) {
  int v = ln_module_get_type(m)->version;
  return v > 0 ? v : 1;
}

/* `prefix` with its trailing dot removed: the metadata key of a module. */
static char *meta_key(const char *prefix) {
  ln_strbuf b = { 0 };
  size_t n = strlen(prefix);
  ln_strbuf_add(&b, prefix, n ? n - 1 : 0);
  return ln_strbuf_finish(&b);
}

static char *join(const char *prefix, const char *name, const char *suffix) {
  ln_strbuf b = { 0 };
  ln_strbuf_printf(&b, "%s%s%s", prefix, name, suffix);
  return ln_strbuf_finish(&b);
}

/* Whether slot i is read and written by state dicts. An uninitialized
** slot counts: it expects a key, and has no value to save. */
static bool slot_saved(const ln_module *m, int i, ln_slot_kind kind) {
  return ln_module_slot_kind(m, i) == kind && ln_module_slot_persistent(m, i) &&
         (ln_module_slot_tensor(m, i) || ln_module_slot_uninitialized(m, i));
}

typedef ln_status (*visit_fn)(void *ctx, ln_module *m, const char *prefix);

/* Call visit on m under prefix (ending with a dot, "" at the root), then
** on its subtree, children in registration order under "prefix.name.";
** stops at the first failure. */
static ln_status walk(ln_module *m, const char *prefix, visit_fn visit, void *ctx) {
  ln_status st = visit(ctx, m, prefix);
  for (int i = 0; i < ln_module_slot_count(m) && st == LN_OK; i++) {
    ln_module *child = ln_module_slot_module(m, i);
    if (!child) continue;
    char *cp = join(prefix, ln_module_slot_name(m, i), ".");
    st = cp ? walk(child, cp, visit, ctx) : LN_ENOMEM;
    free(cp);
  }
  return st;
}

/* ---- saving ---- */

/* Add m's version and saved tensors (detached) to the state dict ctx. */
static ln_status save_one(void *ctx, ln_module *m, const char *prefix) {
  ln_state_dict *sd = ctx;
  char *meta = meta_key(prefix);
  if (!meta) return LN_ENOMEM;
  ln_status st = ln_state_dict_set_version(sd, meta, type_version(m));
  free(meta);
  static const ln_slot_kind kinds[2] = { LN_SLOT_PARAM, LN_SLOT_BUFFER };
  for (int k = 0; k < 2 && st == LN_OK; k++)
    for (int i = 0; i < ln_module_slot_count(m) && st == LN_OK; i++) {
      ln_tensor *t = ln_module_slot_tensor(m, i);
      if (!t || !slot_saved(m, i, kinds[k])) continue;
      char *key = join(prefix, ln_module_slot_name(m, i), "");
      ln_tensor *d = key ? ln_detach(t) : NULL;
      st = d ? ln_state_dict_set(sd, key, d) : ln_last_status();
      ln_tensor_release(d);
      free(key);
    }
  return st;
}

ln_state_dict *ln_module_state_dict(ln_module *m) {
  if (!m) {
    ln_error(LN_EINVAL, "state_dict: module expected, got NULL");
    return NULL;
  }
  ln_state_dict *sd = ln_state_dict_new();
  if (sd && walk(m, "", save_one, sd) != LN_OK) {
    ln_state_dict_free(sd);
    return NULL;
  }
  return sd;
}

/* ---- loading ---- */

typedef struct str_list {
  char **v;
  int n, cap;
} str_list;

/* Takes ownership of s (NULL means an allocation already failed). */
static ln_status str_list_push(str_list *l, char *s) {
  if (!s || !ln_grow((void **)&l->v, &l->cap, l->n, sizeof *l->v)) {
    free(s);
    return ln_error(LN_ENOMEM, "out of memory loading a state dict");
  }
  l->v[l->n++] = s;
  return LN_OK;
}

static void str_list_free(str_list *l) {
  for (int i = 0; i < l->n; i++) free(l->v[i]);
  free(l->v);
  *l = (str_list){ 0 };
}

/* One planned copy: src into slot `name` of m (materialized first when the
** slot is lazy). Holds references on m and src. */
typedef struct load_item {
  ln_module *m;
  char *name;
  ln_tensor *src;
  bool materialize;
} load_item;

typedef struct loader {
  ln_state_dict *sd;        /* the working copy */
  load_item *items;
  int n, cap;
  str_list missing, unexpected, mismatch;
} loader;

static ln_status plan_copy(loader *L, ln_module *m, const char *name, ln_tensor *src,
                           bool materialize) {
  if (!ln_grow((void **)&L->items, &L->cap, L->n, sizeof *L->items))
    return ln_error(LN_ENOMEM, "out of memory loading a state dict");
  char *n = ln_dup_str(name);
  if (!n) return ln_error(LN_ENOMEM, "out of memory loading a state dict");
  ln_module_retain(m);
  ln_tensor_retain(src);
  L->items[L->n++] = (load_item){ m, n, src, materialize };
  return LN_OK;
}

static void shape_str(ln_strbuf *b, const ln_tensor *t) {
  ln_strbuf_puts(b, "{");
  for (int d = 0; d < ln_tensor_dim(t); d++)
    ln_strbuf_printf(b, "%s%lld", d ? ", " : "", (long long)ln_tensor_size(t, d));
  ln_strbuf_puts(b, "}");
}

/* Match the value for `key` against slot `name` of m: plan the copy, or
** record PyTorch's size mismatch. As PyTorch, a one-element 1-D value
** loads into a 0-dim slot (checkpoints from before 0-dim tensors). */
static ln_status match_slot(loader *L, ln_module *m, int i, const char *key,
                            ln_tensor *src) {
  const char *name = ln_module_slot_name(m, i);
  if (ln_module_slot_uninitialized(m, i)) return plan_copy(L, m, name, src, true);
  ln_tensor *dst = ln_module_slot_tensor(m, i);
  if (ln_tensor_dim(dst) == 0 && ln_tensor_dim(src) == 1 && ln_tensor_size(src, 0) == 1) {
    ln_tensor *s = ln_select(src, 0, 0);
    if (!s) return ln_last_status();
    ln_status st = plan_copy(L, m, name, s, false);
    ln_tensor_release(s);
    return st;
  }
  if (ln_tensor_same_shape(dst, src)) return plan_copy(L, m, name, src, false);
  ln_strbuf b = { 0 };
  ln_strbuf_printf(&b, "size mismatch for %s: copying a param with shape ", key);
  shape_str(&b, src);
  ln_strbuf_puts(&b, " from checkpoint, the shape in current model is ");
  shape_str(&b, dst);
  ln_strbuf_puts(&b, ".");
  return str_list_push(&L->mismatch, ln_strbuf_finish(&b));
}

/* Whether `key` (under m's prefix, `rest` being the part after it) names
** something of m: a saved slot, or anything under a child's name. */
static bool key_expected(const ln_module *m, const char *rest) {
  const char *dot = strchr(rest, '.');
  size_t n = dot ? (size_t)(dot - rest) : strlen(rest);
  for (int i = 0; i < ln_module_slot_count(m); i++) {
    const char *name = ln_module_slot_name(m, i);
    if (strlen(name) != n || strncmp(name, rest, n) != 0) continue;
    if (dot) return ln_module_slot_kind(m, i) == LN_SLOT_CHILD;
    return slot_saved(m, i, LN_SLOT_PARAM) || slot_saved(m, i, LN_SLOT_BUFFER);
  }
  return false;
}

/* Phase 1 for m alone (walk does its subtree), ctx being the loader.
** Returns a non-OK status only for real failures (a hook's error, no
** memory); key problems are collected in the loader. */
static ln_status load_one(void *ctx, ln_module *m, const char *prefix) {
  loader *L = ctx;
  const ln_module_type *type = ln_module_get_type(m);
  ln_status st = LN_OK;
  if (type->load_hook) {
    char *meta = meta_key(prefix);
    if (!meta) return LN_ENOMEM;
    int version;
    if (!ln_state_dict_get_version(L->sd, meta, &version)) version = -1;
    free(meta);
    st = type->load_hook(m, L->sd, prefix, version);
    if (st != LN_OK) return st;
  }
  static const ln_slot_kind kinds[2] = { LN_SLOT_PARAM, LN_SLOT_BUFFER };
  for (int k = 0; k < 2 && st == LN_OK; k++)
    for (int i = 0; i < ln_module_slot_count(m) && st == LN_OK; i++) {
      if (!slot_saved(m, i, kinds[k])) continue;
      char *key = join(prefix, ln_module_slot_name(m, i), "");
      if (!key) return LN_ENOMEM;
      ln_tensor *src = ln_state_dict_get(L->sd, key);
      if (src) {
        st = match_slot(L, m, i, key, src);
        free(key);
      } else {
        st = str_list_push(&L->missing, key);
      }
    }
  size_t plen = strlen(prefix);
  for (int k = 0; k < ln_state_dict_count(L->sd) && st == LN_OK; k++) {
    const char *key = ln_state_dict_key(L->sd, k);
    if (strncmp(key, prefix, plen) == 0 && !key_expected(m, key + plen))
      st = str_list_push(&L->unexpected, ln_dup_str(key));
  }
  return st;
}

/* `"a", "b"` as PyTorch joins key lists. */
static void quoted_list(ln_strbuf *b, const str_list *l) {
  for (int i = 0; i < l->n; i++) ln_strbuf_printf(b, "%s\"%s\"", i ? ", " : "", l->v[i]);
}

/* PyTorch's RuntimeError text for a failed load. */
static ln_status load_error(const ln_module *m, const loader *L, bool strict) {
  ln_strbuf b = { 0 };
  ln_strbuf_printf(&b, "Error(s) in loading state_dict for %s:", ln_module_type_name(m));
  if (strict && L->missing.n) {
    ln_strbuf_puts(&b, "\n\tMissing key(s) in state_dict: ");
    quoted_list(&b, &L->missing);
    ln_strbuf_puts(&b, ". ");
  }
  if (strict && L->unexpected.n) {
    ln_strbuf_puts(&b, "\n\tUnexpected key(s) in state_dict: ");
    quoted_list(&b, &L->unexpected);
    ln_strbuf_puts(&b, ". ");
  }
  for (int i = 0; i < L->mismatch.n; i++) ln_strbuf_printf(&b, "\n\t%s", L->mismatch.v[i]);
  char *msg = ln_strbuf_finish(&b);
  if (!msg) return LN_ENOMEM;
  ln_error(LN_EFORMAT, "%s", msg);
  free(msg);
  return LN_EFORMAT;
}

/* Phase 2: everything validated. */
static ln_status apply_plan(loader *L) {
  for (int i = 0; i < L->n; i++) {
    load_item *it = &L->items[i];
    int s = ln_module_find_slot(it->m, it->name);
    if (!it->materialize || !ln_module_slot_uninitialized(it->m, s)) continue;
    ln_status st = ln_module_materialize(it->m, it->name, ln_tensor_sizes(it->src),
                                         ln_tensor_dim(it->src));
    if (st != LN_OK) return st;
  }
  bool grad_mode = ln_set_grad_enabled(false);
  ln_status st = LN_OK;
  for (int i = 0; i < L->n && st == LN_OK; i++) {
    load_item *it = &L->items[i];
    ln_tensor *dst = ln_module_get_tensor(it->m, it->name);
    if (!dst) st = ln_error(LN_ERUNTIME, "slot '%s' of %s vanished during load",
                            it->name, ln_module_type_name(it->m));
    else if (dst != it->src) st = ln_copy_(dst, it->src);
  }
  ln_set_grad_enabled(grad_mode);
  return st;
}

void ln_load_result_free(ln_load_result *r) {
  if (!r) return;
  for (int i = 0; i < r->n_missing; i++) free(r->missing_keys[i]);
  for (int i = 0; i < r->n_unexpected; i++) free(r->unexpected_keys[i]);
  free(r->missing_keys);
  free(r->unexpected_keys);
  *r = (ln_load_result){ 0 };
}

/* `result`, when given, is zeroed on entry and filled only on success
** (the caller frees it with ln_load_result_free). */
ln_status ln_module_load_state_dict(ln_module *m, const ln_state_dict *sd, bool strict,
                                    ln_load_result *result) {
  if (result) *result = (ln_load_result){ 0 };
  if (!m || !sd)
    return ln_error(LN_EINVAL, "load_state_dict: %s expected, got NULL",
                    m ? "state dict" : "module");
  loader L = { .sd = ln_state_dict_copy(sd) };
  if (!L.sd) return ln_last_status();
  ln_module_retain(m);
  ln_status st = walk(m, "", load_one, &L);
  if (st == LN_OK && (L.mismatch.n || (strict && (L.missing.n || L.unexpected.n))))
    st = load_error(m, &L, strict);
  if (st == LN_OK) st = apply_plan(&L);
  if (st == LN_OK && result) {
    result->missing_keys = L.missing.v;
    result->n_missing = L.missing.n;
    result->unexpected_keys = L.unexpected.v;
    result->n_unexpected = L.unexpected.n;
    L.missing = L.unexpected = (str_list){ 0 };
  }
  for (int i = 0; i < L.n; i++) {
    ln_module_release(L.items[i].m);
    free(L.items[i].name);
    ln_tensor_release(L.items[i].src);
  }
  free(L.items);
  str_list_free(&L.missing);
  str_list_free(&L.unexpected);
  str_list_free(&L.mismatch);
  ln_state_dict_free(L.sd);
  ln_module_release(m);
  return st;
}
