/*
** strbuf.h -- a growing string for nn/'s text (module reprs, state dict
** keys and load error messages). Private to nn/.
** An allocation failure sets `oom` and turns later appends into no-ops, so
** callers check once, in ln_strbuf_finish.
*/
#ifndef LN_STRBUF_H
#define LN_STRBUF_H

#include <stdbool.h>
#include <stddef.h>

typedef struct ln_strbuf {
  char *p;      /* NUL-terminated once anything was added; owned */
  size_t len, cap;
  bool oom;
} ln_strbuf;

void ln_strbuf_add(ln_strbuf *b, const char *s, size_t n);
void ln_strbuf_puts(ln_strbuf *b, const char *s);
void ln_strbuf_printf(ln_strbuf *b, const char *fmt, ...)
#if defined(__GNUC__)
  __attribute__((format(printf, 2, 3)))
#endif
  ;
/* The string (malloc'd, caller frees; "" when empty), or NULL with an
** out-of-memory message. The buffer is reset either way. */
char *ln_strbuf_finish(ln_strbuf *b);

#endif
