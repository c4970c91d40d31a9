/*
** kernels.h -- the CUDA kernel families, callable from C. Each family
** fills its entries of the backend's kernel table (core/device_kernels.h);
** launchers return the launch status, which the caller turns into an
** ln_status with ln_cuda_check. Everything runs on the device's stream
** (cuda/runtime.h).
*/
#ifndef LN_CUDA_KERNELS_H
#define LN_CUDA_KERNELS_H

#include <stddef.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif
#include "core/device_kernels.h"

void ln_cuda_install_elementwise(ln_device_kernels *k); /* elementwise.cu */
void ln_cuda_install_reduce(ln_device_kernels *k);      /* reduce.cu */
void ln_cuda_install_blas(ln_device_kernels *k);        /* blas.c (cuBLAS) */
void ln_cuda_install_random(ln_device_kernels *k);      /* random.cu */
void ln_cuda_install_layers(void);  /* layers_register.c: nn/layers_device.h's table */

/* Set n contiguous elements of elem_size bytes (1, 2, 4 or 8; ptr aligned
** to it) to the bit pattern at elem (host memory). cudaErrorInvalidValue
** for other sizes. */
cudaError_t ln_cuda_fill_bits(cudaStream_t stream, void *ptr, size_t n, size_t elem_size,
                              const void *elem);

#ifdef __cplusplus
}
#endif

#endif
