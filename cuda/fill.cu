/*
** fill.cu -- fill device memory with one element's bit pattern. Filling by
** bit pattern makes one kernel per element size serve every dtype.
*/
#include <stdint.h>
#include <string.h>

#include "cuda/kernels.h"

template <typename T>
__global__ void fill_kernel(T *p, size_t n, T v) {
  size_t stride = (size_t)blockDim.x * gridDim.x;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
    p[i] = v;
}

template <typename T>
static cudaError_t launch(cudaStream_t stream, void *ptr, size_t n, const void *elem) {
  const unsigned threads = 256;
  const size_t max_blocks = 4096;  /* the loop strides over the rest */
  size_t blocks = (n + threads - 1) / threads;
  if (blocks > max_blocks) blocks = max_blocks;
  T v;
  memcpy(&v, elem, sizeof v);
  fill_kernel<T><<<(unsigned)blocks, threads, 0, stream>>>((T *)ptr, n, v);
  return cudaGetLastError();
}

extern "C" cudaError_t ln_cuda_fill_bits(cudaStream_t stream, void *ptr, size_t n,
                                         size_t elem_size, const void *elem) {
  if (n == 0) return cudaSuccess;
  switch (elem_size) {
  case 1: return launch<uint8_t>(stream, ptr, n, elem);
  case 2: return launch<uint16_t>(stream, ptr, n, elem);
  case 4: return launch<uint32_t>(stream, ptr, n, elem);
  case 8: return launch<uint64_t>(stream, ptr, n, elem);
  default: return cudaErrorInvalidValue;
  }
}
