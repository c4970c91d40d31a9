/*
** cudnn_bn.c -- BatchNorm through cuDNN (cuda/cudnn_bn.h).
**
** cuDNN 9 marks its batch normalization calls deprecated in favour of the
** graph API but still ships them; the attribute is only applied when
** CUDNN_WARN_DEPRECATED is defined, which lunet does not do, so they
** compile without warnings and nothing needs silencing.
**
** One handle per device, created on first use with the device's stream.
** A handle may not be used by two threads at once, so every call holds
** one lock (recursive: a device allocation may run the out-of-memory
** handler, whose collection could in principle reach BatchNorm again on
** this thread). The calls only queue work, so the lock is held briefly.
*/
#define _XOPEN_SOURCE 700  /* PTHREAD_MUTEX_RECURSIVE */

#include <pthread.h>
#include <stdio.h>

#include <cudnn.h>

#include "cuda/cudnn_bn.h"
#include "cuda/runtime.h"

_Static_assert((int)CUDNN_BATCHNORM_PER_ACTIVATION == LN_CUDNN_BN_PER_ACTIVATION &&
               (int)CUDNN_BATCHNORM_SPATIAL == LN_CUDNN_BN_SPATIAL &&
               (int)CUDNN_BATCHNORM_SPATIAL_PERSISTENT == LN_CUDNN_BN_SPATIAL_PERSISTENT,
               "ln_cudnn_bn_mode must mirror cudnnBatchNormMode_t");
_Static_assert((int)CUDNN_BATCHNORM_OPS_BN == LN_CUDNN_BN_OPS_BN &&
               (int)CUDNN_BATCHNORM_OPS_BN_ACTIVATION == LN_CUDNN_BN_OPS_RELU &&
               (int)CUDNN_BATCHNORM_OPS_BN_ADD_ACTIVATION == LN_CUDNN_BN_OPS_ADD_RELU,
               "ln_cudnn_bn_ops must mirror cudnnBatchNormOps_t");

#define MAX_DEVICES 64

static cudnnHandle_t handles[MAX_DEVICES];
static pthread_mutex_t lock;
static pthread_once_t lock_once = PTHREAD_ONCE_INIT;

static void lock_init(void) {
  pthread_mutexattr_t a;
  pthread_mutexattr_init(&a);
  pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
  pthread_mutex_init(&lock, &a);
  pthread_mutexattr_destroy(&a);
}

static ln_status check(cudnnStatus_t s, const char *what) {
  if (s == CUDNN_STATUS_SUCCESS) return LN_OK;
  return ln_error(LN_EDEVICE, "cuDNN error during %s: %s", what, cudnnGetErrorString(s));
}

int ln_cudnn_bn_version(void) {
  return (int)cudnnGetVersion();
}

/* Take the lock and return the device's handle (made current, its stream
** set), or NULL with a message and the lock not held. */
static cudnnHandle_t acquire(int device) {
  if (device < 0 || device >= MAX_DEVICES) {
    ln_error(LN_EDEVICE, "CUDA device %d is out of range", device);
    return NULL;
  }
  cudaStream_t stream = ln_cuda_stream(device);
  if (!stream) return NULL;
  pthread_once(&lock_once, lock_init);
  pthread_mutex_lock(&lock);
  if (!handles[device]) {
    cudnnHandle_t h = NULL;
    if (check(cudnnCreate(&h), "handle creation") != LN_OK) goto fail;
    if (check(cudnnSetStream(h, stream), "cudnnSetStream") != LN_OK) {
      cudnnDestroy(h);
      goto fail;
    }
    handles[device] = h;
  }
  return handles[device];
fail:
  pthread_mutex_unlock(&lock);
  return NULL;
}

static void release(void) {
  pthread_mutex_unlock(&lock);
}

/* ---- descriptors ---- */

typedef struct descs {
  cudnnTensorDescriptor_t x;          /* x, y, z, dy, dx, dz */
  cudnnTensorDescriptor_t bn;         /* the per-channel vectors */
  cudnnActivationDescriptor_t act;    /* ReLU for the fused forms, else NULL */
  cudnnBatchNormMode_t mode;
  cudnnBatchNormOps_t ops;
} descs;

static cudnnDataType_t data_type(ln_dtype t) {
  switch (t) {
  case LN_F64: return CUDNN_DATA_DOUBLE;
  case LN_F16: return CUDNN_DATA_HALF;
  case LN_BF16: return CUDNN_DATA_BFLOAT16;
  default: return CUDNN_DATA_FLOAT;
  }
}

/* What the raw API refuses before cuDNN sees it: shapes cuDNN cannot be
** told, dtypes it has no kernels for, a fused form outside training. */
static ln_status desc_check(const ln_cudnn_bn_desc *d, bool training, ln_cudnn_bn_plan *p) {
  if (!ln_cudnn_bn_plan_for(d, training, p)) {
    char shape[128] = "";
    int n = 0;
    for (int i = 0; i < d->ndim && i < 5 && n < (int)sizeof shape - 24; i++)
      n += snprintf(shape + n, sizeof shape - (size_t)n, "%s%lld", i ? ", " : "",
                    (long long)d->sizes[i]);
    return ln_error(LN_EINVAL,
                    "cuDNN BatchNorm: cannot describe a %d-dim%s input of shape {%s} to "
                    "cuDNN (2 to 5 dims, 4 or 5 for channels-last, no empty dim, fewer "
                    "than 2^31 elements)",
                    d->ndim, d->channels_last ? " channels-last" : "", shape);
  }
  if (d->dtype != LN_F32 && d->dtype != LN_F16 && d->dtype != LN_BF16 && d->dtype != LN_F64)
    return ln_error(LN_EINVAL, "cuDNN BatchNorm: unsupported dtype %s", ln_dtype_name(d->dtype));
  if (d->ops != LN_CUDNN_BN_OPS_BN && d->ops != LN_CUDNN_BN_OPS_RELU &&
      d->ops != LN_CUDNN_BN_OPS_ADD_RELU)
    return ln_error(LN_EINVAL, "cuDNN BatchNorm: unknown ops %d", (int)d->ops);
  if (d->ops != LN_CUDNN_BN_OPS_BN && !training)
    return ln_error(LN_EINVAL, "cuDNN BatchNorm: the fused ReLU forms exist only in training");
  if (!(d->eps >= CUDNN_BN_MIN_EPSILON))
    return ln_error(LN_EINVAL, "cuDNN BatchNorm: eps %g is below cuDNN's minimum %g", d->eps,
                    (double)CUDNN_BN_MIN_EPSILON);
  return LN_OK;
}

static void descs_free(descs *s) {
  if (s->x) cudnnDestroyTensorDescriptor(s->x);
  if (s->bn) cudnnDestroyTensorDescriptor(s->bn);
  if (s->act) cudnnDestroyActivationDescriptor(s->act);
  *s = (descs){ 0 };
}

/* The descriptors of a checked case (desc_check's plan). */
static ln_status descs_make(const ln_cudnn_bn_desc *d, const ln_cudnn_bn_plan *p, descs *s) {
  ln_status st;
  *s = (descs){ .mode = (cudnnBatchNormMode_t)p->mode, .ops = (cudnnBatchNormOps_t)d->ops };
  if ((st = check(cudnnCreateTensorDescriptor(&s->x), "descriptor creation")) != LN_OK ||
      (st = check(cudnnCreateTensorDescriptor(&s->bn), "descriptor creation")) != LN_OK)
    goto fail;
  st = check(cudnnSetTensorNdDescriptor(s->x, data_type(d->dtype), p->nd, p->dims, p->strides),
             "the input's descriptor");
  if (st == LN_OK)
    st = check(cudnnDeriveBNTensorDescriptor(s->bn, s->x, s->mode),
               "the per-channel descriptor");
  if (st != LN_OK) goto fail;
  if (d->ops != LN_CUDNN_BN_OPS_BN) {
    if ((st = check(cudnnCreateActivationDescriptor(&s->act), "descriptor creation")) != LN_OK)
      goto fail;
    /* NaN passes through, as lunet's relu and mask keep it. */
    st = check(cudnnSetActivationDescriptor(s->act, CUDNN_ACTIVATION_RELU, CUDNN_PROPAGATE_NAN,
                                            0.0),
               "the ReLU's descriptor");
    if (st != LN_OK) goto fail;
  }
  return LN_OK;
fail:
  descs_free(s);
  return st;
}

/* ---- buffers ---- */

/* A new device tensor of at least nbytes (8-byte words), from the
** device's allocator; an empty one for 0 bytes. */
static ln_tensor *buffer(int device, size_t nbytes) {
  int64_t words = (int64_t)((nbytes + 7) / 8);
  return ln_empty(&words, 1, LN_I64, (ln_device){ LN_CUDA, device });
}

static size_t buffer_bytes(const ln_tensor *t) {
  return t ? (size_t)ln_tensor_numel(t) * 8 : 0;
}

static void *buffer_data(const ln_tensor *t) {
  return buffer_bytes(t) ? ln_tensor_data(t) : NULL;
}

/* cuDNN's alpha and beta, in the type its docs ask for: double for
** double data, float otherwise. */
static const float f_one = 1.0f, f_zero = 0.0f;
static const double d_one = 1.0, d_zero = 0.0;

static const void *one(const ln_cudnn_bn_desc *d) {
  return d->dtype == LN_F64 ? (const void *)&d_one : (const void *)&f_one;
}

static const void *zero(const ln_cudnn_bn_desc *d) {
  return d->dtype == LN_F64 ? (const void *)&d_zero : (const void *)&f_zero;
}

/* ---- the calls ---- */

/* With a reserve wanted (always for the fused forms), the Ex call with
** cuDNN's workspace and reserve space; without, the plain call, whose
** backward needs nothing but the saved statistics. */
ln_status ln_cudnn_bn_forward_train(const ln_cudnn_bn_desc *d, const void *x, const void *z,
                                    void *y, const void *weight, const void *bias,
                                    double factor, void *running_mean, void *running_var,
                                    void *save_mean, void *save_invstd, ln_tensor **reserve) {
  ln_cudnn_bn_plan p;
  descs s = { 0 };
  ln_tensor *ws = NULL, *rs = NULL;
  size_t ws_bytes = 0, rs_bytes = 0;
  cudnnTensorDescriptor_t zdesc = NULL;
  if (reserve) *reserve = NULL;
  ln_status st = desc_check(d, true, &p);
  if (st != LN_OK) return st;
  bool add = d->ops == LN_CUDNN_BN_OPS_ADD_RELU;
  if (!x || !y || !weight || !bias || !save_mean || !save_invstd || (add && !z))
    return ln_error(LN_EINVAL, "cuDNN BatchNorm: a required pointer is NULL");
  if (!running_mean != !running_var)
    return ln_error(LN_EINVAL, "cuDNN BatchNorm: running_mean and running_var go together");
  if (!reserve && d->ops != LN_CUDNN_BN_OPS_BN)
    return ln_error(LN_EINVAL, "cuDNN BatchNorm: the fused forms need the reserve space");
  cudnnHandle_t h = acquire(d->device);
  if (!h) return ln_last_status();
  if ((st = descs_make(d, &p, &s)) != LN_OK) goto done;
  if (!reserve) {
    st = check(cudnnBatchNormalizationForwardTraining(
                 h, s.mode, one(d), zero(d), s.x, x, s.x, y, s.bn, weight, bias, factor,
                 running_mean, running_var, d->eps, save_mean, save_invstd),
               "the training forward");
    goto done;
  }
  zdesc = add ? s.x : NULL;
  st = check(cudnnGetBatchNormalizationForwardTrainingExWorkspaceSize(
               h, s.mode, s.ops, s.x, zdesc, s.x, s.bn, s.act, &ws_bytes),
             "the training forward's workspace size query");
  if (st == LN_OK)
    st = check(cudnnGetBatchNormalizationTrainingExReserveSpaceSize(h, s.mode, s.ops, s.act,
                                                                    s.x, &rs_bytes),
               "the training forward's reserve size query");
  if (st != LN_OK) goto done;
  if ((ws_bytes && !(ws = buffer(d->device, ws_bytes))) || !(rs = buffer(d->device, rs_bytes))) {
    st = ln_last_status();
    goto done;
  }
  st = check(cudnnBatchNormalizationForwardTrainingEx(
               h, s.mode, s.ops, one(d), zero(d), s.x, x, zdesc, add ? z : NULL, s.x, y, s.bn,
               weight, bias, factor, running_mean, running_var, d->eps, save_mean, save_invstd,
               s.act, buffer_data(ws), buffer_bytes(ws), buffer_data(rs), buffer_bytes(rs)),
             "the training forward");
  if (st == LN_OK) {
    *reserve = rs;
    rs = NULL;
  }
done:
  release();
  descs_free(&s);
  ln_tensor_release(ws);
  ln_tensor_release(rs);
  return st;
}

ln_status ln_cudnn_bn_forward_eval(const ln_cudnn_bn_desc *d, const void *x, void *y,
                                   const void *weight, const void *bias,
                                   const void *running_mean, const void *running_var) {
  ln_cudnn_bn_plan p;
  descs s = { 0 };
  ln_status st = desc_check(d, false, &p);
  if (st != LN_OK) return st;
  if (!x || !y || !weight || !bias || !running_mean || !running_var)
    return ln_error(LN_EINVAL, "cuDNN BatchNorm: a required pointer is NULL");
  cudnnHandle_t h = acquire(d->device);
  if (!h) return ln_last_status();
  if ((st = descs_make(d, &p, &s)) == LN_OK)
    st = check(cudnnBatchNormalizationForwardInference(h, s.mode, one(d), zero(d), s.x, x, s.x,
                                                       y, s.bn, weight, bias, running_mean,
                                                       running_var, d->eps),
               "the eval forward");
  release();
  descs_free(&s);
  return st;
}

ln_status ln_cudnn_bn_backward(const ln_cudnn_bn_desc *d, const void *x, const void *y,
                               const void *dy, void *dx, void *dz, const void *weight,
                               const void *bias, void *dweight, void *dbias,
                               const void *save_mean, const void *save_invstd,
                               const ln_tensor *reserve) {
  ln_cudnn_bn_plan p;
  descs s = { 0 };
  ln_tensor *ws = NULL, *grads = NULL;
  size_t ws_bytes = 0;
  cudnnTensorDescriptor_t ydesc = NULL, dzdesc = NULL;
  ln_status st = desc_check(d, true, &p);
  if (st != LN_OK) return st;
  bool fused = d->ops != LN_CUDNN_BN_OPS_BN, add = d->ops == LN_CUDNN_BN_OPS_ADD_RELU;
  if (!x || !dy || !dx || !weight || !save_mean || !save_invstd || (fused && (!y || !bias)) ||
      (add && !dz))
    return ln_error(LN_EINVAL, "cuDNN BatchNorm: a required pointer is NULL");
  if (!reserve && fused)
    return ln_error(LN_EINVAL, "cuDNN BatchNorm: the fused forms need the reserve space");
  cudnnHandle_t h = acquire(d->device);
  if (!h) return ln_last_status();
  if ((st = descs_make(d, &p, &s)) != LN_OK) goto done;
  if (!dweight || !dbias) {  /* cuDNN always writes both: scratch for the unwanted */
    size_t c_bytes = (size_t)d->sizes[1] * ln_dtype_size(ln_dtype_compute(d->dtype));
    if (!(grads = buffer(d->device, 2 * c_bytes))) {
      st = ln_last_status();
      goto done;
    }
    if (!dweight) dweight = ln_tensor_data(grads);
    if (!dbias) dbias = (char *)ln_tensor_data(grads) + c_bytes;
  }
  if (!reserve) {
    st = check(cudnnBatchNormalizationBackward(h, s.mode, one(d), zero(d), one(d), zero(d), s.x,
                                               x, s.x, dy, s.x, dx, s.bn, weight, dweight,
                                               dbias, d->eps, save_mean, save_invstd),
               "the backward");
    goto done;
  }
  ydesc = fused ? s.x : NULL;
  dzdesc = add ? s.x : NULL;
  st = check(cudnnGetBatchNormalizationBackwardExWorkspaceSize(
               h, s.mode, s.ops, s.x, ydesc, s.x, dzdesc, s.x, s.bn, s.act, &ws_bytes),
             "the backward's workspace size query");
  if (st != LN_OK) goto done;
  if (ws_bytes && !(ws = buffer(d->device, ws_bytes))) {
    st = ln_last_status();
    goto done;
  }
  st = check(cudnnBatchNormalizationBackwardEx(
               h, s.mode, s.ops, one(d), zero(d), one(d), zero(d), s.x, x, ydesc,
               fused ? y : NULL, s.x, dy, dzdesc, add ? dz : NULL, s.x, dx, s.bn, weight,
               fused ? bias : NULL, dweight, dbias, d->eps, save_mean, save_invstd, s.act,
               buffer_data(ws), buffer_bytes(ws), buffer_data(reserve), buffer_bytes(reserve)),
             "the backward");
done:
  release();
  descs_free(&s);
  ln_tensor_release(ws);
  ln_tensor_release(grads);
  return st;
}
