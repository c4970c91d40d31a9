/*
** backend.c -- the "cuda" backend table: device memory through the CUDA
** runtime, copies between host and device, and fill. Kernels for ops come
** later; `supports` says so. Without a GPU or a driver the device count is
** 0, and core refuses CUDA devices before any of the rest is called.
*/
#include <pthread.h>

#include <cuda_runtime_api.h>

#include "core/device.h"
#include "cuda/cuda.h"
#include "cuda/kernels.h"

/* A failed CUDA call as LN_EDEVICE with CUDA's own message. Non-sticky
** errors are cleared so that the next call starts clean. */
static ln_status check(cudaError_t err, const char *what) {
  if (err == cudaSuccess) return LN_OK;
  cudaGetLastError();
  return ln_error(LN_EDEVICE, "CUDA error during %s: %s", what,
                  cudaGetErrorString(err));
}

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

/* cudaMalloc gives NULL for 0 bytes; empty tensors still get a real pointer. */
static void *cuda_alloc(int index, size_t nbytes) {
  void *p = NULL;
  if (cudaSetDevice(index) != cudaSuccess ||
      cudaMalloc(&p, nbytes ? nbytes : 1) != cudaSuccess) {
    cudaGetLastError();
    return NULL;
  }
  return p;
}

/* Nothing can be reported from a free; an error is cleared and dropped. */
static void cuda_free(int index, void *ptr, size_t nbytes) {
  (void)nbytes;
  if (cudaSetDevice(index) != cudaSuccess || cudaFree(ptr) != cudaSuccess)
    cudaGetLastError();
}

/* Host<->device and device<->device copies; synchronous, so the host side
** may be reused or read as soon as this returns. */
static ln_status cuda_copy(void *dst, ln_device dst_dev, const void *src,
                           ln_device src_dev, size_t nbytes) {
  if (nbytes == 0) return LN_OK;
  bool to_gpu = dst_dev.type == LN_CUDA, from_gpu = src_dev.type == LN_CUDA;
  if (to_gpu && from_gpu && dst_dev.index != src_dev.index)
    return check(cudaMemcpyPeer(dst, dst_dev.index, src, src_dev.index, nbytes),
                 "a copy between devices");
  enum cudaMemcpyKind kind =
    to_gpu ? (from_gpu ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
           : (from_gpu ? cudaMemcpyDeviceToHost : cudaMemcpyHostToHost);
  ln_status st = check(cudaSetDevice(to_gpu ? dst_dev.index : src_dev.index),
                       "a copy");
  if (st != LN_OK) return st;
  return check(cudaMemcpy(dst, src, nbytes, kind), "a copy");
}

static ln_status cuda_fill(int index, void *ptr, size_t n, size_t elem_size,
                           const void *elem) {
  ln_status st = check(cudaSetDevice(index), "fill");
  if (st != LN_OK) return st;
  return check(ln_cuda_fill_bits(ptr, n, elem_size, elem), "fill");
}

static bool cuda_supports(ln_backend_op op, ln_dtype dtype) {
  (void)dtype;
  return op == LN_OP_FILL;
}

static const ln_backend cuda_backend = {
  .name = "cuda",
  .device_count = cuda_device_count,
  .alloc = cuda_alloc,
  .free = cuda_free,
  .copy = cuda_copy,
  .fill = cuda_fill,
  .supports = cuda_supports,
};

void ln_cuda_register(void) {
  ln_backend_register(LN_CUDA, &cuda_backend);
}
