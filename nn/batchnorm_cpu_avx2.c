/*
** batchnorm_cpu_avx2.c -- the BatchNorm loops compiled for AVX2 and FMA
** (chosen at run time by batchnorm_cpu.c when the CPU has them).
*/
#include "batchnorm_cpu.h"

#ifdef LN_BN_HAVE_X86
#pragma GCC target("avx2,fma")
#define BN_ISA avx2
#include "batchnorm_cpu_isa.inc"
#endif
