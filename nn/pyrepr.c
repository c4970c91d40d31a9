/*
** pyrepr.c -- a double as Python's repr writes it, for PyTorch's text in
** module reprs and messages (nn/pyrepr.h).
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pyrepr.h"

/* The shortest digits that read back as v; fixed notation for exponents
** in [-4, 16), as Python's repr ("0.0001", "1e-05", "1e+16"). */
const char *ln_py_float(double v, char *buf, size_t n) {
  if (isnan(v) || isinf(v)) {
    snprintf(buf, n, "%s", isnan(v) ? "nan" : v < 0 ? "-inf" : "inf");
    return buf;
  }
  char e[40];
  int p = 0;
  for (; p < 17; p++) {
    snprintf(e, sizeof e, "%.*e", p, v);
    if (strtod(e, NULL) == v) break;
  }
  int exp10 = atoi(strchr(e, 'e') + 1);
  if (exp10 < -4 || exp10 >= 16) {
    /* Python writes 1e-05 with a two-digit exponent and no ".0" */
    char mant[32];
    snprintf(mant, sizeof mant, "%.*s", (int)(strchr(e, 'e') - e), e);
    snprintf(buf, n, "%se%c%02d", mant, exp10 < 0 ? '-' : '+', abs(exp10));
    return buf;
  }
  int decimals = p - exp10 > 0 ? p - exp10 : 1;
  snprintf(buf, n, "%.*f", decimals, v);
  return buf;
}
