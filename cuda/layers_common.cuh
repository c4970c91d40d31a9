/*
** layers_common.cuh -- what the layer kernels (cuda/conv2d.cu, pooling.cu,
** loss.cu, dropout.cu, optim.cu) share: the nn/ headers included the way
** C++ needs them, a grid for n elements walked by a grid-stride loop with
** 64-bit indices, and a checked launch on the device's stream. Include
** from .cu files only.
*/
#ifndef LN_CUDA_LAYERS_COMMON_CUH
#define LN_CUDA_LAYERS_COMMON_CUH

#include <math.h>     /* before the extern "C" block: C++'s math.h has templates */
#include <stdint.h>

#include "cuda/kernels.h"
#include "cuda/runtime.h"

extern "C" {
#include "core/device_kernels.h"
#include "nn/layers_device.h"
#include "nn/layers_shared.h"
}

#define LN_CU_THREADS 256
#define LN_CU_MAX_BLOCKS ((int64_t)1 << 20)   /* the grid-stride loops cover the rest */

/* Thread i of the grid and every grid-size step after it, up to n. */
#define LN_CU_FOR(i, n) \
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
       i += (int64_t)blockDim.x * gridDim.x)

static inline unsigned ln_cu_blocks(int64_t n) {
  int64_t b = (n + LN_CU_THREADS - 1) / LN_CU_THREADS;
  return (unsigned)(b < LN_CU_MAX_BLOCKS ? b : LN_CU_MAX_BLOCKS);
}

/* Launch kernel k over n elements (nothing for n <= 0) on stream s; the
** launch error as an ln_status naming `what`. */
template <typename... A, typename... P>
static ln_status ln_cu_launch(const char *what, cudaStream_t s, int64_t n, void (*k)(A...),
                              P... args) {
  if (n <= 0) return LN_OK;
  k<<<ln_cu_blocks(n), LN_CU_THREADS, 0, s>>>(args...);
  return ln_cuda_check(cudaGetLastError(), what);
}

/* Four strides by value, for kernel arguments. */
typedef struct ln_cu_strides { int64_t s[4]; } ln_cu_strides;

static inline ln_cu_strides ln_cu_strides_of(const int64_t *s) {
  ln_cu_strides r = { { 0, 0, 0, 0 } };
  if (s)
    for (int d = 0; d < 4; d++) r.s[d] = s[d];
  return r;
}

#endif
