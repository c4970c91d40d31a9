/*
** status.h -- error reporting for the C core.
** Functions that can fail return an ln_status (LN_OK on success) or NULL,
** and leave a message in a thread-local buffer read by ln_last_error().
** Bad user input never aborts: it becomes a status and a message.
*/
#ifndef LN_STATUS_H
#define LN_STATUS_H

typedef enum ln_status {
  LN_OK = 0,
  LN_EINVAL,    /* bad argument: shape, dtype, index, option */
  LN_ENOMEM,    /* an allocation failed */
  LN_EIO,       /* a file could not be read or written */
  LN_EFORMAT,   /* a file or a state dict has the wrong content */
  LN_EDEVICE,   /* a device is missing or failed */
  LN_ERUNTIME,  /* any other failure (autograd misuse, unsupported op) */
  LN_STATUS_COUNT
} ln_status;

/* The message of the last failure on this thread ("" if none). */
const char *ln_last_error(void);

/* Set the thread's message (printf-style) and return `code`, so that a
** failing path reads `return ln_error(LN_EINVAL, "bad dim %d", d);`. */
ln_status ln_error(ln_status code, const char *fmt, ...)
#if defined(__GNUC__)
  __attribute__((format(printf, 2, 3)))
#endif
  ;

/* The status code of the last failure on this thread (LN_OK if none). */
ln_status ln_last_status(void);

/* Forget the last failure. */
void ln_clear_error(void);

/* Short name of a status code ("invalid argument", ...). */
const char *ln_status_name(ln_status code);

#endif
