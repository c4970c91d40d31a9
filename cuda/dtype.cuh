/*
** dtype.cuh -- lunet's dtypes in device code (include from .cu files only).
**
** Storage types: float32 float, float64 double, float16 __half, bfloat16
** __nv_bfloat16, int64 int64_t, bool uint8_t (0 or 1). Kernels compute in
** float (float32, float16, bfloat16), double (float64) or int64_t (int64,
** bool), as core/ does on the CPU.
**
** By runtime dtype (one switch per element; for kernels that take any mix):
**   float   ln_cu_load_f(const void *base, ln_dtype dt, int64_t i)
**   double  ln_cu_load_d(const void *base, ln_dtype dt, int64_t i)
**   int64_t ln_cu_load_i(const void *base, ln_dtype dt, int64_t i)
**   void    ln_cu_store_f(void *base, ln_dtype dt, int64_t i, float v)
**   void    ln_cu_store_d(void *base, ln_dtype dt, int64_t i, double v)
**   void    ln_cu_store_i(void *base, ln_dtype dt, int64_t i, int64_t v)
**   C       ln_cu_load<C>(base, dt, i)      the loads by compute type C
**   void    ln_cu_store(base, dt, i, C v)   the stores, overloaded on C
**             (C is float, double or int64_t)
** i is an element index (base is the storage's first element, not bytes).
**
** By storage type (for kernels templated on it):
**   float   ln_cu_to_float(T x)        T any storage type above
**   T       ln_cu_from_float<T>(float)
**   LN_CU_DISPATCH_FLOAT(dt, T, ...)   runs ... with T the storage type of
**             a float dtype dt (float, double, __half, __nv_bfloat16)
**
** Conversions are core/ops_common.c's (ln_convert) and PyTorch's: float ->
** integer truncates toward zero, NaN -> 0, out of range saturates
** (ln_cu_double_to_i64; undefined in PyTorch); anything nonzero -> bool
** is true (NaN too); float -> float16/bfloat16 rounds to nearest even; an
** int64 becomes a float through double, as on the CPU.
*/
#ifndef LN_CUDA_DTYPE_CUH
#define LN_CUDA_DTYPE_CUH

#include <stdint.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

extern "C" {
#include "core/dtype.h"
}

#define LN_CU_INLINE __device__ __forceinline__

/* double -> int64 as core/ops_common.c's store_block: NaN -> 0, saturating. */
__host__ __device__ __forceinline__ int64_t ln_cu_double_to_i64(double x) {
  return x != x ? 0 : x >= 9.2233720368547758e18 ? INT64_MAX
                    : x < -9.2233720368547758e18 ? INT64_MIN : (int64_t)x;
}

/* ---- by storage type ---- */

LN_CU_INLINE float ln_cu_to_float(float x) { return x; }
LN_CU_INLINE float ln_cu_to_float(double x) { return (float)x; }
LN_CU_INLINE float ln_cu_to_float(__half x) { return __half2float(x); }
LN_CU_INLINE float ln_cu_to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
LN_CU_INLINE float ln_cu_to_float(int64_t x) { return (float)(double)x; }
LN_CU_INLINE float ln_cu_to_float(uint8_t x) { return x ? 1.0f : 0.0f; }

template <typename T> LN_CU_INLINE T ln_cu_from_float(float v);
template <> LN_CU_INLINE float ln_cu_from_float<float>(float v) { return v; }
template <> LN_CU_INLINE double ln_cu_from_float<double>(float v) { return (double)v; }
template <> LN_CU_INLINE __half ln_cu_from_float<__half>(float v) { return __float2half_rn(v); }
template <> LN_CU_INLINE __nv_bfloat16 ln_cu_from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <> LN_CU_INLINE int64_t ln_cu_from_float<int64_t>(float v) {
  return ln_cu_double_to_i64((double)v);
}
template <> LN_CU_INLINE uint8_t ln_cu_from_float<uint8_t>(float v) { return v != 0.0f; }

#define LN_CU_DISPATCH_FLOAT(dt, T, ...) \
  do { \
    switch (dt) { \
    case LN_F32: { typedef float T; __VA_ARGS__; } break; \
    case LN_F64: { typedef double T; __VA_ARGS__; } break; \
    case LN_F16: { typedef __half T; __VA_ARGS__; } break; \
    case LN_BF16: { typedef __nv_bfloat16 T; __VA_ARGS__; } break; \
    default: break; \
    } \
  } while (0)

/* ---- by runtime dtype ---- */

LN_CU_INLINE double ln_cu_load_d(const void *base, ln_dtype dt, int64_t i) {
  switch (dt) {
  case LN_F32: return (double)((const float *)base)[i];
  case LN_F64: return ((const double *)base)[i];
  case LN_F16: return (double)__half2float(((const __half *)base)[i]);
  case LN_BF16: return (double)__bfloat162float(((const __nv_bfloat16 *)base)[i]);
  case LN_I64: return (double)((const int64_t *)base)[i];
  default: return ((const uint8_t *)base)[i] ? 1.0 : 0.0;
  }
}

LN_CU_INLINE float ln_cu_load_f(const void *base, ln_dtype dt, int64_t i) {
  switch (dt) {
  case LN_F32: return ((const float *)base)[i];
  case LN_F16: return __half2float(((const __half *)base)[i]);
  case LN_BF16: return __bfloat162float(((const __nv_bfloat16 *)base)[i]);
  default: return (float)ln_cu_load_d(base, dt, i);
  }
}

LN_CU_INLINE int64_t ln_cu_load_i(const void *base, ln_dtype dt, int64_t i) {
  switch (dt) {
  case LN_I64: return ((const int64_t *)base)[i];
  case LN_BOOL: return ((const uint8_t *)base)[i] != 0;
  default: return ln_cu_double_to_i64(ln_cu_load_d(base, dt, i));
  }
}

LN_CU_INLINE void ln_cu_store_d(void *base, ln_dtype dt, int64_t i, double v) {
  switch (dt) {
  case LN_F32: ((float *)base)[i] = (float)v; break;
  case LN_F64: ((double *)base)[i] = v; break;
  case LN_F16: ((__half *)base)[i] = __float2half_rn((float)v); break;
  case LN_BF16: ((__nv_bfloat16 *)base)[i] = __float2bfloat16_rn((float)v); break;
  case LN_I64: ((int64_t *)base)[i] = ln_cu_double_to_i64(v); break;
  default: ((uint8_t *)base)[i] = v != 0.0; break;
  }
}

LN_CU_INLINE void ln_cu_store_f(void *base, ln_dtype dt, int64_t i, float v) {
  switch (dt) {
  case LN_F32: ((float *)base)[i] = v; break;
  case LN_F16: ((__half *)base)[i] = __float2half_rn(v); break;
  case LN_BF16: ((__nv_bfloat16 *)base)[i] = __float2bfloat16_rn(v); break;
  default: ln_cu_store_d(base, dt, i, (double)v); break;
  }
}

LN_CU_INLINE void ln_cu_store_i(void *base, ln_dtype dt, int64_t i, int64_t v) {
  switch (dt) {
  case LN_I64: ((int64_t *)base)[i] = v; break;
  case LN_BOOL: ((uint8_t *)base)[i] = v != 0; break;
  default: ln_cu_store_d(base, dt, i, (double)v); break;
  }
}

/* ---- by compute type ---- */

template <typename C> LN_CU_INLINE C ln_cu_load(const void *base, ln_dtype dt, int64_t i);
template <> LN_CU_INLINE float ln_cu_load<float>(const void *base, ln_dtype dt, int64_t i) {
  return ln_cu_load_f(base, dt, i);
}
template <> LN_CU_INLINE double ln_cu_load<double>(const void *base, ln_dtype dt, int64_t i) {
  return ln_cu_load_d(base, dt, i);
}
template <> LN_CU_INLINE int64_t ln_cu_load<int64_t>(const void *base, ln_dtype dt, int64_t i) {
  return ln_cu_load_i(base, dt, i);
}

LN_CU_INLINE void ln_cu_store(void *base, ln_dtype dt, int64_t i, float v) {
  ln_cu_store_f(base, dt, i, v);
}
LN_CU_INLINE void ln_cu_store(void *base, ln_dtype dt, int64_t i, double v) {
  ln_cu_store_d(base, dt, i, v);
}
LN_CU_INLINE void ln_cu_store(void *base, ln_dtype dt, int64_t i, int64_t v) {
  ln_cu_store_i(base, dt, i, v);
}

#endif
