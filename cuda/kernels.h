/*
** kernels.h -- launchers of the CUDA kernels, callable from C. Each
** launches on the current device's default stream and returns the launch
** status; the backend turns a failure into an ln_status and a message.
*/
#ifndef LN_CUDA_KERNELS_H
#define LN_CUDA_KERNELS_H

#include <stddef.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Set n contiguous elements of elem_size bytes (1, 2, 4 or 8; ptr aligned
** to it) to the bit pattern at elem (host memory). cudaErrorInvalidValue
** for other sizes. */
cudaError_t ln_cuda_fill_bits(void *ptr, size_t n, size_t elem_size, const void *elem);

#ifdef __cplusplus
}
#endif

#endif
