/*
** runtime.c -- one stream per device, created on first use, and CUDA
** errors as ln_status. The streams are non-blocking (they do not wait for
** the legacy default stream) and live as long as the process. Also the
** device-wide synchronize and the device's name, for lunet.cuda.
*/
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>

#include "cuda/runtime.h"

#define MAX_DEVICES 64

static cudaStream_t streams[MAX_DEVICES];
static pthread_mutex_t streams_lock = PTHREAD_MUTEX_INITIALIZER;

ln_status ln_cuda_check(cudaError_t err, const char *what) {
  if (err == cudaSuccess) return LN_OK;
  cudaGetLastError();
  return ln_error(LN_EDEVICE, "CUDA error during %s: %s", what, cudaGetErrorString(err));
}

cudaStream_t ln_cuda_stream(int device) {
  if (device < 0 || device >= MAX_DEVICES) {
    ln_error(LN_EDEVICE, "CUDA device %d is out of range", device);
    return NULL;
  }
  if (ln_cuda_check(cudaSetDevice(device), "cudaSetDevice") != LN_OK) return NULL;
  pthread_mutex_lock(&streams_lock);
  cudaStream_t s = streams[device];
  if (!s && ln_cuda_check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking),
                          "stream creation") == LN_OK)
    streams[device] = s;
  pthread_mutex_unlock(&streams_lock);
  return s;
}

ln_status ln_cuda_synchronize(int device) {
  cudaStream_t s = ln_cuda_stream(device);
  if (!s) return ln_last_status();
  return ln_cuda_check(cudaStreamSynchronize(s), "synchronize");
}

/* A device lunet never made a stream on has none of lunet's work: it is
** not touched (cudaSetDevice would create a context there). */
ln_status ln_cuda_device_synchronize(int device) {
  if (device < 0 || device >= MAX_DEVICES)
    return ln_error(LN_EDEVICE, "CUDA device %d is out of range", device);
  pthread_mutex_lock(&streams_lock);
  bool used = streams[device] != NULL;
  pthread_mutex_unlock(&streams_lock);
  if (!used) return LN_OK;
  ln_status st = ln_cuda_check(cudaSetDevice(device), "cudaSetDevice");
  if (st != LN_OK) return st;
  return ln_cuda_check(cudaDeviceSynchronize(), "synchronize");
}

ln_status ln_cuda_device_name(int device, char *buf, size_t n) {
  struct cudaDeviceProp prop;
  ln_status st = ln_cuda_check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
  if (st == LN_OK) snprintf(buf, n, "%s", prop.name);
  return st;
}
