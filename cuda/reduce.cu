/*
** reduce.cu -- reductions (sum, max, min, sum of squared deviations) and
** argmax over an ln_ew_desc whose operand 0, the output, has stride 0
** along the reduced dims (core/device_kernels.h).
**
** cuda/reduce_plan.h splits the dims into kept and reduced ones and picks
** the strategy: one thread or one block (tree in shared memory) per
** output, the extent cut into chunks whose partials a second launch
** combines when there are few outputs. One templated body per launch
** serves every reduction through a reducer R: R::Acc is the accumulator
** (float for float32/float16/bfloat16 input, double for float64, int64 for
** int64 and bool; a (value, index) pair for argmax), make turns one
** loaded element into an accumulator, join merges two, store writes the
** result in the output's dtype. max/min propagate NaN and argmax takes
** the first index of the maximum with NaN as the maximum, as the CPU
** kernels (core/ops_reduce.c) do.
**
** The partials of a split reduction live in a device tensor from the
** caching allocator (counted by memory_stats, retried after a GC on
** out-of-memory), released once both launches are queued: the block goes
** back to the pool, and its next user's work runs after them on the
** device's stream.
*/
#include <math.h>
#include <stdint.h>

#include "cuda/dtype.cuh"
#include "cuda/kernels.h"
#include "cuda/reduce_plan.h"
#include "cuda/runtime.h"

/* ---- arithmetic of the accumulators ---- */

LN_CU_INLINE bool is_nan(float x) { return isnan(x); }
LN_CU_INLINE bool is_nan(double x) { return isnan(x); }
LN_CU_INLINE bool is_nan(int64_t) { return false; }

LN_CU_INLINE float add(float a, float b) { return a + b; }
LN_CU_INLINE double add(double a, double b) { return a + b; }
/* int64 sums wrap (as two's complement), without signed overflow */
LN_CU_INLINE int64_t add(int64_t a, int64_t b) { return (int64_t)((uint64_t)a + (uint64_t)b); }

template <typename C> LN_CU_INLINE C lowest();
template <> LN_CU_INLINE float lowest<float>() { return -INFINITY; }
template <> LN_CU_INLINE double lowest<double>() { return -(double)INFINITY; }
template <> LN_CU_INLINE int64_t lowest<int64_t>() { return INT64_MIN; }

template <typename C> LN_CU_INLINE C highest();
template <> LN_CU_INLINE float highest<float>() { return INFINITY; }
template <> LN_CU_INLINE double highest<double>() { return (double)INFINITY; }
template <> LN_CU_INLINE int64_t highest<int64_t>() { return INT64_MAX; }

/* ---- reducers: C the compute type of the input ---- */

template <typename C> struct SumR {
  typedef C Acc;
  static LN_CU_INLINE Acc identity() { return C(0); }
  static LN_CU_INLINE Acc make(C x, int64_t, C) { return x; }
  static LN_CU_INLINE Acc join(Acc a, Acc b) { return add(a, b); }
  static LN_CU_INLINE void store(void *out, ln_dtype dt, int64_t i, Acc a) {
    ln_cu_store(out, dt, i, a);
  }
};

/* sum of (x - m)^2, m the mean of the output's line */
template <typename C> struct SqdevR : SumR<C> {
  static LN_CU_INLINE C make(C x, int64_t, C m) { return (x - m) * (x - m); }
};

/* NaN wins, as core/ops_reduce.c's MAX_STEP / MIN_STEP */
template <typename C> struct MaxR : SumR<C> {
  static LN_CU_INLINE C identity() { return lowest<C>(); }
  static LN_CU_INLINE C join(C a, C b) { return b > a || is_nan(b) ? b : a; }
};

template <typename C> struct MinR : SumR<C> {
  static LN_CU_INLINE C identity() { return highest<C>(); }
  static LN_CU_INLINE C join(C a, C b) { return b < a || is_nan(b) ? b : a; }
};

template <typename C> struct ArgPair {
  C v;
  int64_t i;  /* -1: no element yet */
};

/* The first maximum; NaN counts as the maximum. Ties go to the smaller
** index, so the order in which partial results meet does not matter. */
template <typename C> struct ArgmaxR {
  typedef ArgPair<C> Acc;
  static LN_CU_INLINE Acc identity() { return Acc{ C(0), -1 }; }
  static LN_CU_INLINE Acc make(C x, int64_t r, C) { return Acc{ x, r }; }
  static LN_CU_INLINE Acc join(Acc a, Acc b) {
    if (a.i < 0) return b;
    if (b.i < 0) return a;
    bool an = is_nan(a.v), bn = is_nan(b.v);
    if (an != bn) return an ? a : b;
    if (!an && a.v != b.v) return a.v > b.v ? a : b;
    return a.i < b.i ? a : b;
  }
  static LN_CU_INLINE void store(void *out, ln_dtype dt, int64_t i, Acc a) {
    ln_cu_store_i(out, dt, i, a.i);
  }
};

/* ---- kernels ---- */

/* Where a reduction reads and writes. */
typedef struct red_io {
  const void *in;
  ln_dtype in_dt;
  const void *mean;  /* SQDEV: laid out as the output (operand 2) */
  ln_dtype mean_dt;
  void *out;
  ln_dtype out_dt;
  void *partials;    /* R::Acc[chunks * outputs] when chunks > 1 */
} red_io;

/* Chunk c of output o, over the reduced indices first, first + step, ...
** of the chunk. */
template <class R, typename C>
__device__ typename R::Acc chunk_acc(const ln_reduce_plan &p, const red_io &io, int64_t o,
                                     int64_t c, int64_t first, int64_t step) {
  int64_t base = ln_reduce_offset(&p.kept, 1, o);
  C m = p.nops > 2 ? ln_cu_load<C>(io.mean, io.mean_dt, ln_reduce_offset(&p.kept, 2, o)) : C(0);
  int64_t r0 = c * p.chunk_len, r1 = r0 + p.chunk_len < p.extent ? r0 + p.chunk_len : p.extent;
  typename R::Acc a = R::identity();
  for (int64_t r = r0 + first; r < r1; r += step) {
    C x = ln_cu_load<C>(io.in, io.in_dt, base + ln_reduce_offset(&p.red, 1, r));
    a = R::join(a, R::make(x, r, m));
  }
  return a;
}

/* Virtual output v's result: the output itself, or its partial. */
template <class R>
__device__ void put(const ln_reduce_plan &p, const red_io &io, int64_t v, typename R::Acc a) {
  if (p.chunks == 1) R::store(io.out, io.out_dt, ln_reduce_offset(&p.kept, 0, v), a);
  else ((typename R::Acc *)io.partials)[v] = a;
}

/* Join the block's values (blockDim.x a power of two) into the one all
** threads return; s holds blockDim.x accumulators. */
template <class R>
__device__ typename R::Acc block_join(typename R::Acc *s, typename R::Acc a) {
  unsigned t = threadIdx.x;
  s[t] = a;
  __syncthreads();
  for (unsigned w = blockDim.x / 2; w > 0; w /= 2) {
    if (t < w) s[t] = R::join(s[t], s[t + w]);
    __syncthreads();
  }
  a = s[0];
  __syncthreads();  /* s is reused for the block's next output */
  return a;
}

template <class R, typename C>
__global__ void reduce_thread(const __grid_constant__ ln_reduce_plan p, const red_io io) {
  int64_t n = p.outputs * p.chunks, step = (int64_t)gridDim.x * blockDim.x;
  for (int64_t v = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; v < n; v += step)
    put<R>(p, io, v, chunk_acc<R, C>(p, io, v % p.outputs, v / p.outputs, 0, 1));
}

template <class R, typename C>
__global__ void reduce_block(const __grid_constant__ ln_reduce_plan p, const red_io io) {
  extern __shared__ __align__(16) unsigned char smem[];
  typename R::Acc *s = (typename R::Acc *)smem;
  int64_t n = p.outputs * p.chunks;
  for (int64_t v = blockIdx.x; v < n; v += gridDim.x) {
    typename R::Acc a =
      block_join<R>(s, chunk_acc<R, C>(p, io, v % p.outputs, v / p.outputs, threadIdx.x,
                                       blockDim.x));
    if (threadIdx.x == 0) put<R>(p, io, v, a);
  }
}

/* The second launch of a split reduction: one block per output joins its
** chunks' partials. */
template <class R>
__global__ void reduce_combine(const __grid_constant__ ln_reduce_plan p, const red_io io) {
  extern __shared__ __align__(16) unsigned char smem[];
  typename R::Acc *s = (typename R::Acc *)smem;
  const typename R::Acc *part = (const typename R::Acc *)io.partials;
  for (int64_t o = blockIdx.x; o < p.outputs; o += gridDim.x) {
    typename R::Acc a = R::identity();
    for (int64_t c = threadIdx.x; c < p.chunks; c += blockDim.x)
      a = R::join(a, part[c * p.outputs + o]);
    a = block_join<R>(s, a);
    if (threadIdx.x == 0) R::store(io.out, io.out_dt, ln_reduce_offset(&p.kept, 0, o), a);
  }
}

/* ---- launchers ---- */

template <class R, typename C>
static ln_status run(const ln_reduce_plan &p, red_io io, int device, cudaStream_t s) {
  typedef typename R::Acc Acc;
  if (p.outputs == 0) return LN_OK;
  ln_tensor *partials = NULL;
  if (p.chunks > 1) {  /* int64 elements: 8-byte aligned, as every Acc needs */
    int64_t n = (int64_t)((sizeof(Acc) * (size_t)(p.outputs * p.chunks) + 7) / 8);
    if (!(partials = ln_empty(&n, 1, LN_I64, ln_device{ LN_CUDA, device })))
      return ln_last_status();
    io.partials = ln_tensor_data(partials);
  }
  cudaError_t err;
  if (p.mapping == LN_RP_BLOCK)
    reduce_block<R, C><<<(unsigned)p.blocks, p.threads, p.threads * sizeof(Acc), s>>>(p, io);
  else
    reduce_thread<R, C><<<(unsigned)p.blocks, p.threads, 0, s>>>(p, io);
  err = cudaGetLastError();
  if (err == cudaSuccess && p.chunks > 1) {
    reduce_combine<R><<<(unsigned)p.blocks2, p.threads2, p.threads2 * sizeof(Acc), s>>>(p, io);
    err = cudaGetLastError();
  }
  ln_tensor_release(partials);
  return ln_cuda_check(err, "a reduction");
}

/* R instantiated for the compute type of the input's dtype. */
template <template <typename> class R>
static ln_status run_typed(const ln_reduce_plan &p, const red_io &io, int device,
                           cudaStream_t s) {
  switch (io.in_dt) {
  case LN_F64: return run<R<double>, double>(p, io, device, s);
  case LN_I64:
  case LN_BOOL: return run<R<int64_t>, int64_t>(p, io, device, s);
  default: return run<R<float>, float>(p, io, device, s);
  }
}

/* The device's stream and plan for d (reducing red_dim, or the dims where
** operand 0's stride is 0 when red_dim < 0). */
static ln_status prepare(const ln_ew_desc *d, int red_dim, const char *what,
                         ln_reduce_plan *p, red_io *io, cudaStream_t *s) {
  int sms = 0;
  if (!(*s = ln_cuda_stream(d->device))) return ln_last_status();
  ln_status st = ln_cuda_check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount,
                                                      d->device), "a device query");
  if (st != LN_OK) return st;
  if (ln_reduce_plan_make(p, d, red_dim, sms) != 0)
    return ln_error(LN_EINVAL, "%s: not a reduction the CUDA kernels can run", what);
  *io = red_io{ d->ops[1].data, d->ops[1].dtype, d->nops > 2 ? d->ops[2].data : NULL,
                d->nops > 2 ? d->ops[2].dtype : d->ops[1].dtype, d->ops[0].data,
                d->ops[0].dtype, NULL };
  return LN_OK;
}

static ln_status cuda_reduce(ln_reduce_kind kind, const ln_ew_desc *d) {
  ln_reduce_plan p;
  red_io io;
  cudaStream_t s;
  if ((unsigned)kind >= LN_RK_COUNT || d->nops != (kind == LN_RK_SQDEV ? 3 : 2))
    return ln_error(LN_EINVAL, "reduce: bad kind %d for %d operands", (int)kind, d->nops);
  ln_status st = prepare(d, -1, "reduce", &p, &io, &s);
  if (st != LN_OK) return st;
  switch (kind) {
  case LN_RK_SUM: return run_typed<SumR>(p, io, d->device, s);
  case LN_RK_MAX: return run_typed<MaxR>(p, io, d->device, s);
  case LN_RK_MIN: return run_typed<MinR>(p, io, d->device, s);
  default: return run_typed<SqdevR>(p, io, d->device, s);
  }
}

static ln_status cuda_argmax(int dim, const ln_ew_desc *d) {
  ln_reduce_plan p;
  red_io io;
  cudaStream_t s;
  if (d->nops != 2 || dim < 0)
    return ln_error(LN_EINVAL, "argmax: bad description (%d operands, dim %d)", d->nops, dim);
  ln_status st = prepare(d, dim, "argmax", &p, &io, &s);
  return st == LN_OK ? run_typed<ArgmaxR>(p, io, d->device, s) : st;
}

extern "C" void ln_cuda_install_reduce(ln_device_kernels *k) {
  k->reduce = cuda_reduce;
  k->argmax = cuda_argmax;
}
