/*
** module_check.h -- helpers the C tests of modules share (with check.h).
** repr_is(m, want): m's text (ln_module_to_string) is want; on a mismatch
** prints both to stderr. The module is borrowed.
*/
#ifndef LN_MODULE_CHECK_H
#define LN_MODULE_CHECK_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/module.h"

static inline bool repr_is(ln_module *m, const char *want) {
  char *s = ln_module_to_string(m);
  bool ok = s && strcmp(s, want) == 0;
  if (!ok) fprintf(stderr, "repr: got \"%s\"\n  want \"%s\"\n", s ? s : "(null)", want);
  free(s);
  return ok;
}

#endif
