/*
** runtime.h -- what every file of the CUDA backend shares: the stream each
** device runs its work on, and CUDA errors as ln_status. C and C++ (.cu).
**
** All of lunet's work on a device goes to that device's one stream, in
** call order, so kernels, cuBLAS and cuDNN calls and copies need no other
** synchronization between themselves; a copy to the host waits for it.
*/
#ifndef LN_CUDA_RUNTIME_H
#define LN_CUDA_RUNTIME_H

#include <stddef.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif
#include "core/status.h"

/* Make `device` current and return its stream (created on first use), or
** NULL with a message when the device cannot be used. Thread-safe. */
cudaStream_t ln_cuda_stream(int device);

/* A failed CUDA call as LN_EDEVICE "CUDA error during <what>: <CUDA's
** message>"; non-sticky errors are cleared so the next call starts clean. */
ln_status ln_cuda_check(cudaError_t err, const char *what);

/* Wait until the device's stream has finished its work. */
ln_status ln_cuda_synchronize(int device);

/* Wait until every stream of the device has finished its work
** (cudaDeviceSynchronize, for lunet.cuda.synchronize); at once for a
** device lunet has queued nothing on. */
ln_status ln_cuda_device_synchronize(int device);

/* The device's product name (cudaGetDeviceProperties) into buf. */
ln_status ln_cuda_device_name(int device, char *buf, size_t n);

#ifdef __cplusplus
}
#endif

#endif
