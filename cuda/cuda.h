/*
** cuda.h -- the one thing core/ sees of the CUDA backend. Compiled only
** when CUDA is found (LN_HAVE_CUDA); core/device.c calls it from
** ln_backends_init().
*/
#ifndef LN_CUDA_H
#define LN_CUDA_H

/* Register the "cuda" backend table for LN_CUDA. Safe without a GPU or a
** driver: the backend then reports a device count of 0. */
void ln_cuda_register(void);

#endif
