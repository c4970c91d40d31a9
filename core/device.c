/*
** device.c -- the backend registry and device names.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device.h"
#include "device_kernels.h"

#ifdef LN_HAVE_CUDA
#include "cuda/cuda.h"
#endif

static const ln_backend *backends[LN_DEVICE_TYPE_COUNT];
static const char *const type_names[LN_DEVICE_TYPE_COUNT] = {
  [LN_CPU] = "cpu", [LN_CUDA] = "cuda",
};

void ln_backend_register(ln_device_type type, const ln_backend *b) {
  backends[type] = b;
}

const ln_backend *ln_backend_get(ln_device_type type) {
  return (type >= 0 && type < LN_DEVICE_TYPE_COUNT) ? backends[type] : NULL;
}

const ln_device_kernels *ln_device_kernels_get(ln_device dev) {
  const ln_backend *b = ln_backend_get(dev.type);
  return b ? b->kernels : NULL;
}

ln_status ln_device_check(ln_device dev) {
  const ln_backend *b = ln_backend_get(dev.type);
  if (dev.type == LN_CUDA && !b)
    return ln_error(LN_EDEVICE, "lunet was built without CUDA support");
  if (!b) return ln_error(LN_EDEVICE, "unknown device type %d", (int)dev.type);
  int count = b->device_count();
  if (dev.type == LN_CUDA && count == 0)
    return ln_error(LN_EDEVICE, "no CUDA device is available "
                    "(lunet.cuda.is_available() is false)");
  if (dev.index < 0 || dev.index >= count)
    return ln_error(LN_EDEVICE, "invalid device ordinal %s:%d (%d device%s available)",
                    type_names[dev.type], dev.index, count, count == 1 ? "" : "s");
  return LN_OK;
}

ln_status ln_device_parse(const char *s, ln_device *out) {
  for (int t = 0; t < LN_DEVICE_TYPE_COUNT; t++) {
    size_t n = strlen(type_names[t]);
    if (strncmp(s, type_names[t], n) != 0) continue;
    if (s[n] == '\0') { *out = (ln_device){ (ln_device_type)t, 0 }; return LN_OK; }
    if (s[n] == ':' && t != LN_CPU) {
      char *end;
      long idx = strtol(s + n + 1, &end, 10);
      if (end != s + n + 1 && *end == '\0' && idx >= 0 && idx < 1024) {
        *out = (ln_device){ (ln_device_type)t, (int)idx };
        return LN_OK;
      }
    }
  }
  return ln_error(LN_EINVAL, "Expected one of cpu, cuda device type at start of "
                  "device string: %s", s);
}

const char *ln_device_str(ln_device dev, char *buf, size_t n) {
  if (dev.type == LN_CPU) snprintf(buf, n, "cpu");
  else snprintf(buf, n, "%s:%d", type_names[dev.type], dev.index);
  return buf;
}

extern const ln_backend ln_cpu_backend;

void ln_backends_init(void) {
  ln_backend_register(LN_CPU, &ln_cpu_backend);
#ifdef LN_HAVE_CUDA
  ln_cuda_register();
#endif
}
