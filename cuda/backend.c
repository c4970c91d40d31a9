/*
** backend.c -- the "cuda" backend table: device memory from the caching
** allocator (cuda/allocator.h), copies between host and device, fill,
** synchronize, device names, and the kernel table the kernel families
** fill (cuda/kernels.h). Without a GPU or a driver the
** device count is 0, and core refuses CUDA devices before any of the rest
** is called.
*/
#include <pthread.h>

#include <cuda_runtime_api.h>

#include "core/device.h"
#include "cuda/allocator.h"
#include "cuda/batchnorm.h"
#include "cuda/cuda.h"
#ifdef LN_HAVE_CUDNN
#include "cuda/cudnn_bn.h"
#endif
#include "cuda/kernels.h"
#include "cuda/runtime.h"

#define check ln_cuda_check

static int device_count_value;
static pthread_once_t device_count_once = PTHREAD_ONCE_INIT;

/* Any failure (no driver, no device, driver too old) counts as 0 devices. */
static void count_devices(void) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    n = 0;
  }
  device_count_value = n;
}

static int cuda_device_count(void) {
  pthread_once(&device_count_once, count_devices);
  return device_count_value;
}

static void cuda_free(int index, void *ptr, size_t nbytes) {
  (void)nbytes;
  ln_cuda_free(index, ptr);
}

/* Host<->device and device<->device copies, in order on the devices'
** streams. A copy involving the host waits for it, so the host side may be
** reused or read as soon as this returns. A copy between devices waits for
** the source's work before and for itself after: the source's block may
** be freed and reused on the source's stream as soon as this returns. */
static ln_status cuda_copy(void *dst, ln_device dst_dev, const void *src,
                           ln_device src_dev, size_t nbytes) {
  if (nbytes == 0) return LN_OK;
  bool to_gpu = dst_dev.type == LN_CUDA, from_gpu = src_dev.type == LN_CUDA;
  if (to_gpu && from_gpu && dst_dev.index != src_dev.index) {
    ln_status st = ln_cuda_synchronize(src_dev.index);
    cudaStream_t s = st == LN_OK ? ln_cuda_stream(dst_dev.index) : NULL;
    if (!s) return ln_last_status();
    st = check(cudaMemcpyPeerAsync(dst, dst_dev.index, src, src_dev.index, nbytes, s),
               "a copy between devices");
    return st == LN_OK ? check(cudaStreamSynchronize(s), "a copy between devices") : st;
  }
  enum cudaMemcpyKind kind =
    to_gpu ? (from_gpu ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
           : (from_gpu ? cudaMemcpyDeviceToHost : cudaMemcpyHostToHost);
  int index = to_gpu ? dst_dev.index : src_dev.index;
  cudaStream_t s = ln_cuda_stream(index);
  if (!s) return ln_last_status();
  ln_status st = check(cudaMemcpyAsync(dst, src, nbytes, kind, s), "a copy");
  if (st == LN_OK && !(to_gpu && from_gpu)) st = check(cudaStreamSynchronize(s), "a copy");
  return st;
}

static ln_status cuda_fill(int index, void *ptr, size_t n, size_t elem_size,
                           const void *elem) {
  cudaStream_t s = ln_cuda_stream(index);
  if (!s) return ln_last_status();
  return check(ln_cuda_fill_bits(s, ptr, n, elem_size, elem), "fill");
}

static bool cuda_supports(ln_backend_op op, ln_dtype dtype) {
  (void)dtype;
  return op == LN_OP_FILL;
}

static ln_device_kernels cuda_kernels;

static const ln_backend cuda_backend = {
  .name = "cuda",
  .device_count = cuda_device_count,
  .alloc = ln_cuda_alloc,
  .free = cuda_free,
  .copy = cuda_copy,
  .fill = cuda_fill,
  .supports = cuda_supports,
  .empty_cache = ln_cuda_empty_cache,
  .synchronize = ln_cuda_device_synchronize,
  .device_name = ln_cuda_device_name,
  .kernels = &cuda_kernels,
};

void ln_cuda_register(void) {
  ln_cuda_install_elementwise(&cuda_kernels);
  ln_cuda_install_reduce(&cuda_kernels);
  ln_cuda_install_blas(&cuda_kernels);
  ln_cuda_install_random(&cuda_kernels);
  ln_cuda_install_layers();
  ln_cuda_install_batchnorm();
#ifdef LN_HAVE_CUDNN
  ln_cudnn_bn_install();
#endif
  ln_backend_register(LN_CUDA, &cuda_backend);
}
