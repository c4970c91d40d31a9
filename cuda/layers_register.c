/*
** layers_register.c -- the CUDA backend's table of layer kernels
** (nn/layers_device.h), registered for LN_CUDA by ln_cuda_register
** (cuda/backend.c). The kernels are in conv2d.cu, pooling.cu, loss.cu,
** dropout.cu and optim.cu.
*/
#include "cuda/kernels.h"
#include "nn/layers_device.h"

ln_status ln_cuda_conv2d_forward(int device, ln_dtype dt, const ln_conv_geom *g, const void *x,
                                 const int64_t xs[4], const void *w, const void *b, void *out,
                                 const int64_t os[4]);
ln_status ln_cuda_conv2d_backward(int device, ln_dtype dt, const ln_conv_geom *g, const void *x,
                                  const int64_t xs[4], const void *w, const void *gy,
                                  const int64_t gs[4], void *dx, const int64_t dxs[4], void *dw,
                                  void *db);
ln_status ln_cuda_max_pool2d_forward(int device, ln_dtype dt, const ln_pool_geom *g,
                                     const void *x, const int64_t xs[4], void *y,
                                     const int64_t ys[4], int64_t *idx);
ln_status ln_cuda_max_pool2d_backward(int device, ln_dtype dt, const ln_pool_geom *g,
                                      const int64_t *idx, const void *gy, const int64_t gs[4],
                                      void *dx, const int64_t dxs[4]);
ln_status ln_cuda_adaptive_avg_pool2d(int device, ln_dtype dt, const ln_pool_geom *g,
                                      const void *x, const int64_t xs[4], void *y,
                                      const int64_t ys[4], bool backward);
ln_status ln_cuda_softmax_forward(int device, ln_dtype dt, ln_softmax_shape s, const void *x,
                                  void *y, bool take_log);
ln_status ln_cuda_softmax_backward(int device, ln_dtype dt, ln_softmax_shape s, const void *y,
                                   const void *g, void *dx, bool take_log);
ln_status ln_cuda_cross_entropy_forward(int device, ln_dtype dt, const ln_ce_geom *g,
                                        const void *x, const int64_t *t, const void *w,
                                        double *lse, void *loss, ln_ce_result *res);
ln_status ln_cuda_cross_entropy_backward(int device, ln_dtype dt, const ln_ce_geom *g,
                                         const void *x, const int64_t *t, const void *w,
                                         const double *lse, const double *gv, void *dx);
ln_status ln_cuda_dropout_mask(int device, ln_dtype dt, void *u, int64_t n, double keep,
                               double scale);
ln_status ln_cuda_sgd_step(int device, ln_dtype dt, void *p, const void *g, void *buf,
                           int64_t n, const ln_sgd_args *a);
ln_status ln_cuda_adam_step(int device, ln_dtype dt, void *p, const void *g, void *m, void *v,
                            void *vmax, int64_t n, const ln_adam_args *a);

static const ln_layer_kernels cuda_layer_kernels = {
  .conv2d_forward = ln_cuda_conv2d_forward,
  .conv2d_backward = ln_cuda_conv2d_backward,
  .max_pool2d_forward = ln_cuda_max_pool2d_forward,
  .max_pool2d_backward = ln_cuda_max_pool2d_backward,
  .adaptive_avg_pool2d = ln_cuda_adaptive_avg_pool2d,
  .softmax_forward = ln_cuda_softmax_forward,
  .softmax_backward = ln_cuda_softmax_backward,
  .cross_entropy_forward = ln_cuda_cross_entropy_forward,
  .cross_entropy_backward = ln_cuda_cross_entropy_backward,
  .dropout_mask = ln_cuda_dropout_mask,
  .sgd_step = ln_cuda_sgd_step,
  .adam_step = ln_cuda_adam_step,
};

void ln_cuda_install_layers(void) {
  ln_layer_kernels_register(LN_CUDA, &cuda_layer_kernels);
}
