/*
** strbuf.c -- a growing string (see strbuf.h).
*/
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/status.h"
#include "strbuf.h"

/* Room for n more bytes plus the terminator. */
static bool reserve(ln_strbuf *b, size_t n) {
  if (b->oom) return false;
  if (b->len + n + 1 <= b->cap) return true;
  size_t cap = b->cap ? b->cap : 128;
  while (cap < b->len + n + 1) cap *= 2;
  char *p = realloc(b->p, cap);
  if (!p) {
    b->oom = true;
    return false;
  }
  b->p = p;
  b->cap = cap;
  return true;
}

void ln_strbuf_add(ln_strbuf *b, const char *s, size_t n) {
  if (!reserve(b, n)) return;
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
}

void ln_strbuf_puts(ln_strbuf *b, const char *s) { ln_strbuf_add(b, s, strlen(s)); }

void ln_strbuf_printf(ln_strbuf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0 || !reserve(b, (size_t)n)) return;
  va_start(ap, fmt);
  vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
}

char *ln_strbuf_finish(ln_strbuf *b) {
  if (!b->oom && !b->p) ln_strbuf_add(b, "", 0);
  char *s = b->oom ? NULL : b->p;
  if (!s) {
    free(b->p);
    ln_error(LN_ENOMEM, "out of memory building a string");
  }
  *b = (ln_strbuf){ 0 };
  return s;
}
