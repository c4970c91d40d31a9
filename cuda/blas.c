/*
** blas.c -- matrix products through cuBLAS.
*/
#include "cuda/kernels.h"

void ln_cuda_install_blas(ln_device_kernels *k) { (void)k; }
