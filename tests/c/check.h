/*
** check.h -- a tiny test harness for the C unit tests.
** CHECK(cond) records a failure with its location and goes on;
** CHECK_OK(status) also prints ln_last_error(); check_done() prints
** "N passed, N failed" and returns the process exit code.
*/
#ifndef LN_CHECK_H
#define LN_CHECK_H

#include <math.h>
#include <stdio.h>

#include "core/status.h"

static int check_passed, check_failed;

#define CHECK(cond) \
  do { \
    if (cond) check_passed++; \
    else { check_failed++; \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); } \
  } while (0)

#define CHECK_OK(expr) \
  do { \
    ln_status st_ = (expr); \
    if (st_ == LN_OK) check_passed++; \
    else { check_failed++; \
      fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #expr, \
              ln_last_error()); } \
  } while (0)

#define CHECK_NEAR(a, b, tol) \
  do { \
    double a_ = (a), b_ = (b); \
    if (fabs(a_ - b_) <= (tol) || (isnan(a_) && isnan(b_))) check_passed++; \
    else { check_failed++; \
      fprintf(stderr, "%s:%d: %s = %.9g, expected %.9g\n", __FILE__, __LINE__, \
              #a, a_, b_); } \
  } while (0)

/* Check that a message contains a fragment. */
#define CHECK_MSG(fragment) CHECK(strstr(ln_last_error(), (fragment)) != NULL)

static inline int check_done(const char *name) {
  printf("%s: %d passed, %d failed\n", name, check_passed, check_failed);
  return check_failed ? 1 : 0;
}

#endif
