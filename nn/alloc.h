/*
** alloc.h -- the two allocation helpers nn/'s arrays and names share.
** Private to nn/. Both report failure by result (false or NULL) and set no
** error message: the caller says what it was doing.
*/
#ifndef LN_NN_ALLOC_H
#define LN_NN_ALLOC_H

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* Make room for one more element in a growing array (*arr holds n of *cap
** elements of elem bytes), doubling it; on failure *arr is unchanged. */
static inline bool ln_grow(void **arr, int *cap, int n, size_t elem) {
  if (n < *cap) return true;
  int c = *cap ? 2 * *cap : 8;
  void *p = realloc(*arr, (size_t)c * elem);
  if (!p) return false;
  *arr = p;
  *cap = c;
  return true;
}

/* A malloc'd copy of s (strdup is not C11). */
static inline char *ln_dup_str(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d) memcpy(d, s, n);
  return d;
}

#endif
