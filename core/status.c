/*
** status.c -- thread-local error message.
*/
#include <stdarg.h>
#include <stdio.h>

#include "status.h"

#define LN_ERRMSG_SIZE 16384  /* load errors list many keys */

static _Thread_local char errmsg[LN_ERRMSG_SIZE];
static _Thread_local ln_status errcode;

const char *ln_last_error(void) { return errmsg; }

ln_status ln_last_status(void) { return errcode; }

ln_status ln_error(ln_status code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(errmsg, sizeof errmsg, fmt, ap);
  va_end(ap);
  errcode = code;
  return code;
}

void ln_clear_error(void) {
  errmsg[0] = '\0';
  errcode = LN_OK;
}

const char *ln_status_name(ln_status code) {
  static const char *const names[LN_STATUS_COUNT] = {
    [LN_OK] = "ok",
    [LN_EINVAL] = "invalid argument",
    [LN_ENOMEM] = "out of memory",
    [LN_EIO] = "input/output error",
    [LN_EFORMAT] = "bad format",
    [LN_EDEVICE] = "device error",
    [LN_ERUNTIME] = "runtime error",
  };
  return (code >= 0 && code < LN_STATUS_COUNT) ? names[code] : "unknown";
}
