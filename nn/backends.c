/*
** backends.c -- the cuDNN switch (nn/backends.h). The flag is an atomic so
** that a thread may flip it while another runs BatchNorm; a forward reads
** it once and keeps its choice.
*/
#include <stdatomic.h>

#include "core/device.h"
#include "nn/backends.h"
#ifdef LN_HAVE_CUDNN
#include "cuda/cudnn_bn.h"
#endif

static atomic_bool cudnn_enabled = true;

bool ln_cudnn_available(void) {
#ifdef LN_HAVE_CUDNN
  const ln_backend *cuda = ln_backend_get(LN_CUDA);
  return cuda != NULL && cuda->device_count() > 0;
#else
  return false;
#endif
}

bool ln_cudnn_enabled(void) {
  return atomic_load(&cudnn_enabled);
}

void ln_cudnn_set_enabled(bool enabled) {
  atomic_store(&cudnn_enabled, enabled);
}

int ln_cudnn_version(void) {
#ifdef LN_HAVE_CUDNN
  return ln_cudnn_bn_version();
#else
  return 0;
#endif
}
