/*
** module_repr.c -- tostring(module) as PyTorch's Module.__repr__:
**
**   Name(extra)                      one-line extra_repr, no children
**   Name(\n  extra lines\n  (child): ChildRepr\n)   otherwise
**
** Nested reprs are indented by two spaces after their first line
** (PyTorch's _addindent). A nil child prints as "nil", Lua's name for it.
*/
#include <stdlib.h>
#include <string.h>

#include "module.h"
#include "strbuf.h"

#define LN_EXTRA_REPR_SIZE 4096

/* Append s with two spaces after each newline (_addindent(s, 2)). */
static void add_indented(ln_strbuf *b, const char *s) {
  for (const char *nl; (nl = strchr(s, '\n')); s = nl + 1) {
    ln_strbuf_add(b, s, (size_t)(nl - s));
    ln_strbuf_puts(b, "\n  ");
  }
  ln_strbuf_puts(b, s);
}

static void repr_rec(ln_strbuf *b, ln_module *m) {
  const ln_module_type *type = ln_module_get_type(m);
  char extra[LN_EXTRA_REPR_SIZE] = "";
  if (type->extra_repr) type->extra_repr(m, extra, sizeof extra);
  bool has_children = false;
  for (int i = 0; i < ln_module_slot_count(m); i++)
    has_children |= ln_module_slot_kind(m, i) == LN_SLOT_CHILD;
  ln_strbuf_puts(b, type->name);
  ln_strbuf_puts(b, "(");
  if (extra[0] && !has_children && !strchr(extra, '\n')) {
    ln_strbuf_puts(b, extra);
  } else if (extra[0] || has_children) {
    if (extra[0]) {
      ln_strbuf_puts(b, "\n  ");
      add_indented(b, extra);
    }
    for (int i = 0; i < ln_module_slot_count(m); i++) {
      if (ln_module_slot_kind(m, i) != LN_SLOT_CHILD) continue;
      ln_strbuf_puts(b, "\n  (");
      ln_strbuf_puts(b, ln_module_slot_name(m, i));
      ln_strbuf_puts(b, "): ");
      ln_module *child = ln_module_slot_module(m, i);
      if (!child) {
        ln_strbuf_puts(b, "nil");
        continue;
      }
      ln_strbuf c = { 0 };
      repr_rec(&c, child);
      char *cs = ln_strbuf_finish(&c);
      if (cs) add_indented(b, cs);
      else b->oom = true;
      free(cs);
    }
    ln_strbuf_puts(b, "\n");
  }
  ln_strbuf_puts(b, ")");
}

char *ln_module_to_string(ln_module *m) {
  if (!m) {
    ln_error(LN_EINVAL, "tostring: module expected, got NULL");
    return NULL;
  }
  ln_strbuf b = { 0 };
  repr_rec(&b, m);
  return ln_strbuf_finish(&b);
}
