/*
** random.cu -- Philox draws on the device: the kernel table's philox_fill.
** One thread per Philox counter computes that counter's values with
** core/philox.h, as core/random.c's fill_contiguous does on the CPU, and
** stores them as its store() does: a uniform value that rounds up to `to`
** in the storage type takes the largest value below it. The values are
** therefore the CPU's: uniform ones bit for bit, normal ones up to the
** last place of the device's logf/sinf/cosf (log/sin/cos for float64).
*/
#include <stdint.h>

#include "core/philox.h"
#include "cuda/dtype.cuh"
#include "cuda/kernels.h"
#include "cuda/runtime.h"

/* Counters counter .. counter + blocks - 1 (wrapping as on the CPU); the
** values of counter + c are elements c * lanes .. of the n. */
__global__ void philox_fill_kernel(void *data, ln_dtype dt, int64_t n, int64_t blocks,
                                   ln_philox_draw d, double below, uint64_t seed,
                                   uint64_t counter) {
  int64_t stride = (int64_t)blockDim.x * gridDim.x;
  for (int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; c < blocks; c += stride) {
    double v[4];
    int k = ln_philox_block(&d, seed, counter + (uint64_t)c, v);
    for (int l = 0; l < k && c * k + l < n; l++) {
      int64_t i = c * k + l;
      ln_cu_store_d(data, dt, i, v[l]);
      if (!d.normal && ln_cu_load_d(data, dt, i) >= d.b) ln_cu_store_d(data, dt, i, below);
    }
  }
}

/* The kernel table's contract (core/device_kernels.h): n contiguous
** values of a float dtype at data, on the device's stream. */
static ln_status philox_fill(int device, void *data, ln_dtype dt, int64_t n, bool normal,
                             double a, double b, uint64_t seed, uint64_t counter) {
  if (!ln_dtype_is_float(dt))
    return ln_error(LN_EINVAL, "philox_fill expects a floating point dtype, got %s",
                    ln_dtype_name(dt));
  if (n <= 0) return LN_OK;
  cudaStream_t s = ln_cuda_stream(device);
  if (!s) return ln_last_status();
  ln_philox_draw d = { normal, dt == LN_F64, a, b };
  double below = normal ? 0.0 : ln_philox_uniform_below(dt, a, b);
  int64_t lanes = ln_philox_lanes(&d), blocks = (n + lanes - 1) / lanes;
  const int threads = 256;
  const int64_t max_grid = 8192;  /* the loop strides over the rest */
  int64_t grid = (blocks + threads - 1) / threads;
  if (grid > max_grid) grid = max_grid;
  philox_fill_kernel<<<(unsigned)grid, threads, 0, s>>>(data, dt, n, blocks, d, below, seed,
                                                        counter);
  return ln_cuda_check(cudaGetLastError(), "the philox_fill launch");
}

extern "C" void ln_cuda_install_random(ln_device_kernels *k) { k->philox_fill = philox_fill; }
