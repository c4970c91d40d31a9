/*
** backends.h -- switches between implementations of the same module:
** torch.backends.cudnn's `enabled` for the cuDNN BatchNorm path. Present in
** every build; without cuDNN the flag can still be read and set, and
** nothing uses it.
*/
#ifndef LN_BACKENDS_H
#define LN_BACKENDS_H

#include <stdbool.h>

/* Whether lunet was built with cuDNN and a CUDA device is there. */
bool ln_cudnn_available(void);

/* Whether BatchNorm may take the cuDNN path where it supports the case
** (true by default, as torch.backends.cudnn.enabled). Setting it only
** matters where ln_cudnn_available(); any thread may read or set it. */
bool ln_cudnn_enabled(void);
void ln_cudnn_set_enabled(bool enabled);

/* cuDNN's version as one number (9.19.0 is 91900), read from the library
** lunet runs with, or 0 when lunet was built without cuDNN. */
int ln_cudnn_version(void);

#endif
