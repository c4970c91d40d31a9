/*
** elementwise.cu -- unary, binary, compare, the backward selects and
** convert over an ln_ew_desc (core/device_kernels.h).
**
** Every operand is loaded into the compute type C (float for float32,
** float16 and bfloat16 results, double for float64, int64_t for int64 and
** bool) and the result stored in operand 0's dtype (cuda/dtype.cuh); the
** arithmetic is core/ops_unary.c's and core/ops_binary.c's CPU kernels'.
** An op's code is a kernel argument (one uniform branch per element)
** rather than a template parameter, to keep the instantiations few.
**
** Two paths: operands that all run with unit stride (ln_ew_is_flat) in the
** storage type natural to C take a typed kernel; anything else (mixed
** dtypes, broadcast, permuted, channels-last) the general one, which finds
** each element through cuda/ew_index.h. Both are grid-stride loops over
** 64-bit indices, launched on the device's stream.
*/
#include <math.h>
#include <stdint.h>

#include <type_traits>

#include "cuda/dtype.cuh"
#include "cuda/ew_index.h"
#include "cuda/kernels.h"
#include "cuda/runtime.h"

#define EW_THREADS 256
#define EW_MAX_BLOCKS 8192 /* the loops stride over the rest */

/* ---- the ops, on compute values ---- */

template <typename C> using is_int = std::is_same<C, int64_t>;

/* int64 arithmetic wraps (as the CPU's does in practice) without signed
** overflow in C++. */
__device__ __forceinline__ int64_t wrap_add(int64_t x, int64_t y) {
  return (int64_t)((uint64_t)x + (uint64_t)y);
}
__device__ __forceinline__ int64_t wrap_mul(int64_t x, int64_t y) {
  return (int64_t)((uint64_t)x * (uint64_t)y);
}

__device__ __forceinline__ float cu_pow(float x, float y) { return powf(x, y); }
__device__ __forceinline__ double cu_pow(double x, double y) { return pow(x, y); }
__device__ __forceinline__ float cu_log(float x) { return logf(x); }
__device__ __forceinline__ double cu_log(double x) { return log(x); }
__device__ __forceinline__ float cu_exp(float x) { return expf(x); }
__device__ __forceinline__ double cu_exp(double x) { return exp(x); }
__device__ __forceinline__ float cu_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double cu_sqrt(double x) { return sqrt(x); }
/* x + a * y rounded twice, as the CPU computes it (no contraction to fma) */
__device__ __forceinline__ float cu_axpy(float x, float a, float y) {
  return __fadd_rn(x, __fmul_rn(a, y));
}
__device__ __forceinline__ double cu_axpy(double x, double a, double y) {
  return __dadd_rn(x, __dmul_rn(a, y));
}

/* sqrt, exp and log never run on int64 (the launcher refuses them). */
template <typename C> struct unary_op {
  int op;
  __device__ C operator()(const C *v) const {
    C x = v[0];
    if constexpr (is_int<C>::value) {
      switch (op) {
      case LN_NEG: return (int64_t)(0 - (uint64_t)x);
      case LN_ABS: return x < 0 ? (int64_t)(0 - (uint64_t)x) : x;
      case LN_RELU: return x > 0 ? x : 0;
      case LN_SIGN: return (C)((x > 0) - (x < 0));
      default: return 0;
      }
    } else {
      switch (op) {
      case LN_NEG: return -x;
      case LN_ABS: return fabs(x);
      case LN_SQRT: return cu_sqrt(x);
      case LN_EXP: return cu_exp(x);
      case LN_LOG: return cu_log(x);
      case LN_RELU: return x > 0 || x != x ? x : (C)0;  /* keeps NaN */
      case LN_SIGN: return (C)((x > 0) - (x < 0));       /* sign(NaN) = 0 */
      default: return 0;
      }
    }
  }
};

/* max/min propagate NaN (x != x only for NaN). Division never runs on
** int64 (it promotes; the launcher refuses it). */
template <typename C> struct binary_op {
  int op;
  C alpha;  /* LN_BINARY_AXPY */
  __device__ C operator()(const C *v) const {
    C x = v[0], y = v[1];
    switch (op) {
    case LN_MAXIMUM: return x > y || x != x ? x : y;
    case LN_MINIMUM: return x < y || x != x ? x : y;
    default: break;
    }
    if constexpr (is_int<C>::value) {
      switch (op) {
      case LN_ADD: return wrap_add(x, y);
      case LN_SUB: return (int64_t)((uint64_t)x - (uint64_t)y);
      case LN_MUL: return wrap_mul(x, y);
      case LN_POW: return ln_ipow(x, y);
      case LN_BINARY_AXPY: return wrap_add(x, wrap_mul(alpha, y));
      default: return 0;
      }
    } else {
      switch (op) {
      case LN_ADD: return x + y;
      case LN_SUB: return x - y;
      case LN_MUL: return x * y;
      case LN_DIV: return x / y;
      case LN_POW: return cu_pow(x, y);
      case LN_BINARY_AXPY: return cu_axpy(x, alpha, y);
      default: return 0;
      }
    }
  }
};

template <typename C> struct compare_op {
  int op;
  __device__ C operator()(const C *v) const {
    C x = v[0], y = v[1];
    switch (op) {
    case LN_EQ: return x == y;
    case LN_NE: return x != y;
    case LN_LT: return x < y;
    case LN_LE: return x <= y;
    case LN_GT: return x > y;
    default: return x >= y;  /* LN_GE */
    }
  }
};

/* r = f(g, x, y): pow's gradient is 0 where the exponent is 0 (d/da) or
** where x == 0 and y >= 0 (d/db) instead of 0 * inf; max/min ties share
** it. Float compute types only. */
template <typename C> struct grad_op {
  int op;
  __device__ C operator()(const C *v) const {
    C g = v[0], x = v[1], y = v[2];
    switch (op) {
    case LN_GRAD_POW_A: return y == 0 ? (C)0 : g * y * cu_pow(x, y - 1);
    case LN_GRAD_POW_B: return x == 0 && y >= 0 ? (C)0 : g * cu_pow(x, y) * cu_log(x);
    case LN_GRAD_MAX_A: return x > y ? g : x == y ? g / 2 : (C)0;
    case LN_GRAD_MAX_B: return y > x ? g : x == y ? g / 2 : (C)0;
    case LN_GRAD_MIN_A: return x < y ? g : x == y ? g / 2 : (C)0;
    default: return y < x ? g : x == y ? g / 2 : (C)0;  /* LN_GRAD_MIN_B */
    }
  }
};

/* ---- storage <-> compute, for the typed path ---- */

template <typename C> struct cvt;
template <> struct cvt<float> {
  template <typename T> static __device__ float in(T x) { return ln_cu_to_float(x); }
  template <typename T> static __device__ T out(float v) { return ln_cu_from_float<T>(v); }
};
template <> struct cvt<double> {
  static __device__ double in(double x) { return x; }
  template <typename T> static __device__ T out(double v) { return (T)v; }
};
template <> struct cvt<int64_t> {
  static __device__ int64_t in(int64_t x) { return x; }
  static __device__ int64_t in(uint8_t x) { return x != 0; }
  template <typename T> static __device__ T out(int64_t v) {
    return std::is_same<T, uint8_t>::value ? (T)(v != 0) : (T)v;
  }
};

/* ---- kernels ---- */

template <typename TI, int NIN> struct flat_inputs { const TI *p[NIN]; };

/* All operands unit-stride, inputs of storage type TI, output TO. */
template <typename C, typename TO, typename TI, int NIN, typename F>
__global__ void ew_flat(int64_t n, TO *out, flat_inputs<TI, NIN> in, F f) {
  int64_t stride = (int64_t)blockDim.x * gridDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
    C v[NIN];
#pragma unroll
    for (int k = 0; k < NIN; k++) v[k] = cvt<C>::in(in.p[k][i]);
    out[i] = cvt<C>::template out<TO>(f(v));
  }
}

/* Any dtypes and strides. The description is read where the launch put it
** (__grid_constant__): its address goes to ln_ew_offsets without a copy of
** its few hundred bytes per thread. */
template <typename C, int NIN, typename F>
__global__ void ew_strided(const __grid_constant__ ln_ew_desc d, F f) {
  int64_t stride = (int64_t)blockDim.x * gridDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < d.numel; i += stride) {
    int64_t off[LN_EW_MAX_OPS];
    ln_ew_offsets(&d, i, off);
    C v[NIN];
#pragma unroll
    for (int k = 0; k < NIN; k++)
      v[k] = ln_cu_load<C>(d.ops[k + 1].data, d.ops[k + 1].dtype, off[k + 1]);
    ln_cu_store(d.ops[0].data, d.ops[0].dtype, off[0], f(v));
  }
}

/* Same dtype on both sides: the bits of an element of size sizeof(T). */
template <typename T>
__global__ void copy_strided(const __grid_constant__ ln_ew_desc d) {
  int64_t stride = (int64_t)blockDim.x * gridDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < d.numel; i += stride) {
    int64_t off[LN_EW_MAX_OPS];
    ln_ew_offsets(&d, i, off);
    ((T *)d.ops[0].data)[off[0]] = ((const T *)d.ops[1].data)[off[1]];
  }
}

/* ln_convert's casts: exact between int64 and bool, through double else. */
__global__ void convert_strided(const __grid_constant__ ln_ew_desc d) {
  bool ints = (d.ops[0].dtype == LN_I64 || d.ops[0].dtype == LN_BOOL) &&
              (d.ops[1].dtype == LN_I64 || d.ops[1].dtype == LN_BOOL);
  int64_t stride = (int64_t)blockDim.x * gridDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < d.numel; i += stride) {
    int64_t off[LN_EW_MAX_OPS];
    ln_ew_offsets(&d, i, off);
    if (ints)
      ln_cu_store_i(d.ops[0].data, d.ops[0].dtype, off[0],
                    ln_cu_load_i(d.ops[1].data, d.ops[1].dtype, off[1]));
    else
      ln_cu_store_d(d.ops[0].data, d.ops[0].dtype, off[0],
                    ln_cu_load_d(d.ops[1].data, d.ops[1].dtype, off[1]));
  }
}

/* ---- launchers ---- */

static unsigned grid_for(int64_t n) {
  int64_t blocks = (n + EW_THREADS - 1) / EW_THREADS;
  return (unsigned)(blocks < EW_MAX_BLOCKS ? blocks : EW_MAX_BLOCKS);
}

/* Call fn with a value of the storage type of dt when it is one C
** computes in directly (the typed path), else return false. */
template <typename C, typename Fn> static bool with_storage(ln_dtype dt, Fn fn) {
  if constexpr (std::is_same<C, float>::value) {
    if (dt == LN_F32) { fn(float()); return true; }
    if (dt == LN_F16) { fn(__half()); return true; }
    if (dt == LN_BF16) { fn(__nv_bfloat16()); return true; }
  } else if constexpr (std::is_same<C, double>::value) {
    if (dt == LN_F64) { fn(double()); return true; }
  } else {
    if (dt == LN_I64) { fn(int64_t()); return true; }
    if (dt == LN_BOOL) { fn(uint8_t()); return true; }
  }
  return false;
}

/* Launch f over d (NIN inputs) on stream s: the typed flat kernel when all
** inputs share a storage type natural to C and the output has it too (or
** is bool, for bool_out), else the strided one. */
template <typename C, int NIN, typename F>
static cudaError_t launch(const ln_ew_desc *d, F f, bool bool_out, cudaStream_t s) {
  unsigned grid = grid_for(d->numel);
  ln_dtype dt = d->ops[1].dtype;
  bool typed = ln_ew_is_flat(d) && d->ops[0].dtype == (bool_out ? LN_BOOL : dt);
  for (int k = 2; k <= NIN; k++) typed = typed && d->ops[k].dtype == dt;
  bool done = typed && with_storage<C>(dt, [&](auto tag) {
    typedef decltype(tag) T;
    flat_inputs<T, NIN> in;
    for (int k = 0; k < NIN; k++) in.p[k] = (const T *)d->ops[k + 1].data;
    void *out = d->ops[0].data;
    if (bool_out)
      ew_flat<C, uint8_t, T, NIN><<<grid, EW_THREADS, 0, s>>>(d->numel, (uint8_t *)out, in, f);
    else
      ew_flat<C, T, T, NIN><<<grid, EW_THREADS, 0, s>>>(d->numel, (T *)out, in, f);
  });
  if (!done) ew_strided<C, NIN><<<grid, EW_THREADS, 0, s>>>(*d, f);
  return cudaGetLastError();
}

/* The checks every entry makes: operand count, ranks, a compute type. */
static ln_status check_desc(const ln_ew_desc *d, int nops, ln_dtype compute, const char *what) {
  if (d->nops != nops || d->ndim < 0 || d->ndim > LN_MAX_DIMS || d->numel < 0)
    return ln_error(LN_EINVAL, "%s: bad elementwise description (%d operands, %d dims)", what,
                    d->nops, d->ndim);
  for (int k = 0; k < nops; k++)
    if ((unsigned)d->ops[k].dtype >= LN_DTYPE_COUNT)
      return ln_error(LN_EINVAL, "%s: bad dtype %d", what, (int)d->ops[k].dtype);
  if (compute != LN_F32 && compute != LN_F64 && compute != LN_I64)
    return ln_error(LN_EINVAL, "%s: bad compute dtype %s", what, ln_dtype_name(compute));
  return LN_OK;
}

/* Launch make(C()), the functor for compute type C, over d; INTS: the
** family has an int64 kernel (the caller refused int64 otherwise). */
template <int NIN, bool INTS, typename Make>
static ln_status run(const ln_ew_desc *d, ln_dtype compute, bool bool_out, const char *what,
                     Make make) {
  ln_status st = check_desc(d, NIN + 1, compute, what);
  if (st != LN_OK || d->numel == 0) return st;
  cudaStream_t s = ln_cuda_stream(d->device);
  if (!s) return ln_last_status();
  cudaError_t err = cudaErrorInvalidValue;
  if (compute == LN_F32) err = launch<float, NIN>(d, make(float()), bool_out, s);
  else if (compute == LN_F64) err = launch<double, NIN>(d, make(double()), bool_out, s);
  else if constexpr (INTS) err = launch<int64_t, NIN>(d, make(int64_t()), bool_out, s);
  return ln_cuda_check(err, what);
}

static ln_status ew_unary(ln_unary_op op, ln_dtype compute, const ln_ew_desc *d) {
  if ((unsigned)op >= LN_UNARY_COUNT) return ln_error(LN_EINVAL, "invalid unary op %d", (int)op);
  if (compute == LN_I64 && (op == LN_SQRT || op == LN_EXP || op == LN_LOG))
    return ln_error(LN_EINVAL, "unary op %d has no int64 kernel", (int)op);
  return run<1, true>(d, compute, false, "a unary kernel", [&](auto c) {
    return unary_op<decltype(c)>{ (int)op };
  });
}

static ln_status ew_binary(int op, double alpha, ln_dtype compute, const ln_ew_desc *d) {
  if (op < 0 || op > LN_BINARY_AXPY || (compute == LN_I64 && op == LN_DIV))
    return ln_error(LN_EINVAL, "binary op %d has no %s kernel", op, ln_dtype_name(compute));
  return run<2, true>(d, compute, false, "a binary kernel", [&](auto c) {
    typedef decltype(c) C;
    C a = is_int<C>::value ? (C)ln_cu_double_to_i64(alpha) : (C)alpha;  /* as (T)alpha */
    return binary_op<C>{ op, a };
  });
}

static ln_status ew_compare(ln_compare_op op, ln_dtype compute, const ln_ew_desc *d) {
  if ((unsigned)op >= LN_COMPARE_COUNT)
    return ln_error(LN_EINVAL, "invalid comparison %d", (int)op);
  return run<2, true>(d, compute, true, "a comparison kernel", [&](auto c) {
    return compare_op<decltype(c)>{ (int)op };
  });
}

static ln_status ew_grad_select(ln_grad_select kind, ln_dtype compute, const ln_ew_desc *d) {
  if ((unsigned)kind >= LN_GRAD_SELECT_COUNT || compute == LN_I64)
    return ln_error(LN_EINVAL, "gradient select %d has no %s kernel", (int)kind,
                    ln_dtype_name(compute));
  return run<3, false>(d, compute, false, "a gradient kernel", [&](auto c) {
    return grad_op<decltype(c)>{ (int)kind };
  });
}

static ln_status ew_convert(const ln_ew_desc *d) {
  ln_status st = check_desc(d, 2, LN_F32, "a copy kernel");
  if (st != LN_OK || d->numel == 0) return st;
  cudaStream_t s = ln_cuda_stream(d->device);
  if (!s) return ln_last_status();
  unsigned grid = grid_for(d->numel);
  if (d->ops[0].dtype != d->ops[1].dtype) {
    convert_strided<<<grid, EW_THREADS, 0, s>>>(*d);
  } else {
    switch (ln_dtype_size(d->ops[0].dtype)) {
    case 1: copy_strided<uint8_t><<<grid, EW_THREADS, 0, s>>>(*d); break;
    case 2: copy_strided<uint16_t><<<grid, EW_THREADS, 0, s>>>(*d); break;
    case 4: copy_strided<uint32_t><<<grid, EW_THREADS, 0, s>>>(*d); break;
    default: copy_strided<uint64_t><<<grid, EW_THREADS, 0, s>>>(*d); break;
    }
  }
  return ln_cuda_check(cudaGetLastError(), "a copy kernel");
}

extern "C" void ln_cuda_install_elementwise(ln_device_kernels *k) {
  k->unary = ew_unary;
  k->binary = ew_binary;
  k->compare = ew_compare;
  k->grad_select = ew_grad_select;
  k->convert = ew_convert;
}
