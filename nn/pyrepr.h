/*
** pyrepr.h -- Python's text for numbers, so that lunet prints what
** PyTorch prints ("eps=1e-05", "p=0.5").
*/
#ifndef LN_PYREPR_H
#define LN_PYREPR_H

#include <stddef.h>

/* A double as Python's repr writes it into buf (n bytes): the shortest
** digits that read back as v, "0.5", "1.0", "0.0001", "1e-05", "1e+16",
** "nan", "-inf". Returns buf. */
const char *ln_py_float(double v, char *buf, size_t n);

#endif
