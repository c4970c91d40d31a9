/*
** optim.cu -- the optimizers' fused updates on a CUDA device
** (nn/layers_device.h's sgd_step and adam_step): one thread per element
** running nn/optim_update.inc's update, the CPU loops' arithmetic, in
** float for float32/float16/bfloat16 and double for float64; each value
** is loaded and stored in its dtype (cuda/dtype.cuh), rounding once when
** it is stored as on the CPU. nvcc may contract a * b + c into one fused
** multiply-add, so float results can differ from the CPU's in the last bit.
*/
#include "cuda/dtype.cuh"
#include "cuda/layers_common.cuh"

#define KNAME(x) x##_f
#define CT float
#define SQRT sqrtf
#include "nn/optim_update.inc"
#undef KNAME
#undef CT
#undef SQRT

#define KNAME(x) x##_d
#define CT double
#define SQRT sqrt
#include "nn/optim_update.inc"
#undef KNAME
#undef CT
#undef SQRT

/* The update of each compute type, chosen by overloading on its constants. */
__device__ static inline float sgd_update(const sgd_consts_f *k, float p, float g, float *b,
                                          bool has_buf) {
  return sgd_update_f(k, p, g, b, has_buf);
}
__device__ static inline double sgd_update(const sgd_consts_d *k, double p, double g,
                                           double *b, bool has_buf) {
  return sgd_update_d(k, p, g, b, has_buf);
}
__device__ static inline void adam_moments(const adam_consts_f *k, float *p, float g, float *m,
                                           float *v) {
  adam_moments_f(k, p, g, m, v);
}
__device__ static inline void adam_moments(const adam_consts_d *k, double *p, double g,
                                           double *m, double *v) {
  adam_moments_d(k, p, g, m, v);
}
__device__ static inline float adam_param(const adam_consts_f *k, float p, float m, float s) {
  return adam_param_f(k, p, m, s);
}
__device__ static inline double adam_param(const adam_consts_d *k, double p, double m,
                                           double s) {
  return adam_param_d(k, p, m, s);
}
__device__ static inline float adam_max(float v, float mx) { return adam_max_f(v, mx); }
__device__ static inline double adam_max(double v, double mx) { return adam_max_d(v, mx); }

template <typename CT, typename K>
__global__ void sgd_kernel(K k, ln_dtype dt, void *p, const void *g, void *buf, int64_t n) {
  LN_CU_FOR(i, n) {
    CT b = buf && !k.first ? ln_cu_load<CT>(buf, dt, i) : (CT)0;
    CT pi = sgd_update(&k, ln_cu_load<CT>(p, dt, i), ln_cu_load<CT>(g, dt, i), &b, buf != NULL);
    if (buf) ln_cu_store(buf, dt, i, b);
    ln_cu_store(p, dt, i, pi);
  }
}

template <typename CT, typename K>
__global__ void adam_kernel(K k, ln_dtype dt, void *p, const void *g, void *m, void *v,
                            void *vmax, int64_t n) {
  LN_CU_FOR(i, n) {
    CT pi = ln_cu_load<CT>(p, dt, i), mi = ln_cu_load<CT>(m, dt, i);
    CT vi = ln_cu_load<CT>(v, dt, i);
    adam_moments(&k, &pi, ln_cu_load<CT>(g, dt, i), &mi, &vi);
    CT second = vi;
    if (vmax) {
      second = adam_max(vi, ln_cu_load<CT>(vmax, dt, i));
      ln_cu_store(vmax, dt, i, second);
    }
    ln_cu_store(p, dt, i, adam_param(&k, pi, mi, second));
    ln_cu_store(m, dt, i, mi);
    ln_cu_store(v, dt, i, vi);
  }
}

extern "C" ln_status ln_cuda_sgd_step(int device, ln_dtype dt, void *p, const void *g,
                                      void *buf, int64_t n, const ln_sgd_args *a) {
  cudaStream_t s = ln_cuda_stream(device);
  if (!s) return ln_last_status();
  if (dt == LN_F64)
    return ln_cu_launch("SGD's update", s, n, sgd_kernel<double, sgd_consts_d>,
                        sgd_consts_of_d(a), dt, p, g, buf, n);
  return ln_cu_launch("SGD's update", s, n, sgd_kernel<float, sgd_consts_f>,
                      sgd_consts_of_f(a), dt, p, g, buf, n);
}

extern "C" ln_status ln_cuda_adam_step(int device, ln_dtype dt, void *p, const void *g, void *m,
                                       void *v, void *vmax, int64_t n, const ln_adam_args *a) {
  cudaStream_t s = ln_cuda_stream(device);
  if (!s) return ln_last_status();
  if (dt == LN_F64)
    return ln_cu_launch("Adam's update", s, n, adam_kernel<double, adam_consts_d>,
                        adam_consts_of_d(a), dt, p, g, m, v, vmax, n);
  return ln_cu_launch("Adam's update", s, n, adam_kernel<float, adam_consts_f>,
                      adam_consts_of_f(a), dt, p, g, m, v, vmax, n);
}
