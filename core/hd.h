/*
** hd.h -- LN_HD marks a static inline function shared by C files and CUDA
** kernels (index math, Philox, per-element updates): `__host__ __device__`
** when nvcc compiles it, nothing in C.
*/
#ifndef LN_HD_H
#define LN_HD_H

#ifdef __CUDACC__
#define LN_HD __host__ __device__
#else
#define LN_HD
#endif

#endif
