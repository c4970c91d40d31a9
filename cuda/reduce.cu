/*
** reduce.cu -- reductions and argmax over ln_ew_desc.
*/
#include "cuda/kernels.h"

extern "C" void ln_cuda_install_reduce(ln_device_kernels *k) { (void)k; }
