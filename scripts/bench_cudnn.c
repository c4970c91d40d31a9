/*
** bench_cudnn.c -- cuDNN's BatchNorm alone, timed: the peer scripts/bench
** compares lunet's CUDA kernels with. A standalone program (no lunet
** library) calling cuDNN 9's batch normalization directly, with the same
** descriptors and modes as lunet's cuDNN path (cuda/cudnn_bn_plan.h).
**
** Build, from the repository root, with CUDA_HOME the toolkit (such as
** /usr/local/cuda) and cuDNN installed into it (else add -I and -L for
** cuDNN's include and lib folders):
**
**   gcc -O2 -std=c11 -Wall -Wextra -I"$CUDA_HOME/include" \
**       scripts/bench_cudnn.c -o build/bench_cudnn \
**       -L"$CUDA_HOME/lib64" -L"$CUDA_HOME/lib" \
**       -Wl,-rpath,"$CUDA_HOME/lib64:$CUDA_HOME/lib" -lcudnn -lcudart -lm
**
** (nvcc -x cu compiles it too: the file is C and C++ alike, and its
** includes are relative to it).
**
** Run (scripts/bench_cuda.lua does, once per case):
**
**   build/bench_cudnn --shape 32,256,56,56 --dtype float16 --layout nhwc
**       [--cases train,train_backward,eval] [--ops bn|relu|add_relu]
**       [--mode auto|per_activation|spatial|persistent] [--runs 50]
**       [--warmup 10] [--eps 1e-5] [--momentum 0.1] [--device 0]
**
** A (N, C) shape is given to cuDNN as lunet's cuDNN path gives it, as
** channels-last (1, C, N, 1) (per-channel statistics over N either way);
** with --mode per_activation it stays (N, C), cuDNN's per-activation form.
** Cases: `train` is the training forward (batch statistics, running
** statistics updated), `train_backward` a training forward followed by
** its backward, `eval` the inference forward. Each case runs `warmup`
** times, then `runs` times, each run between two CUDA events on one
** stream; the median, minimum and maximum of the runs are printed in one
** line per case, as space-separated key=value pairs:
**
**   bench_cudnn case=train shape=32,256,56,56 dtype=float16 layout=nhwc ops=bn
**     mode=persistent numel=25690112 elem_bytes=2 runs=50 median_ms=0.1234
**     min_ms=0.1200 max_ms=0.1301
**
** (on one line). A case cuDNN refuses prints error="<cuDNN's message>" in
** place of the times, and the program exits with 1 after the other cases.
** A first line starting with '#' names the device and cuDNN's version.
** Inputs are k/64 for pseudo-random integers k in [-128, 128], exact in
** every dtype; the L2 cache is not flushed between runs (as PyTorch's and
** lunet's timings in scripts/bench).
*/
#define _POSIX_C_SOURCE 200809L

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>
#include <cudnn.h>

#include "../cuda/cudnn_bn_plan.h"

/* ---- options ---- */

typedef struct options {
  ln_cudnn_bn_desc d;
  const char *cases, *mode;
  int runs, warmup;
  double momentum;
} options;

static void usage(void) {
  fprintf(stderr,
          "usage: bench_cudnn --shape N,C[,D],H,W --dtype float32|float16|bfloat16|float64\n"
          "       --layout nchw|nhwc [--cases train,train_backward,eval]\n"
          "       [--ops bn|relu|add_relu] [--mode auto|per_activation|spatial|persistent]\n"
          "       [--runs 50] [--warmup 10] [--eps 1e-5] [--momentum 0.1] [--device 0]\n");
  exit(2);
}

/* By ln_dtype: LN_F32, LN_F64, LN_F16, LN_BF16. */
static const char *const dtype_names[] = { "float32", "float64", "float16", "bfloat16" };
static const char *const layout_names[] = { "nchw", "nhwc" };
static const char *const ops_names[] = { "bn", "relu", "add_relu" };
static const char *const mode_names[] = { "per_activation", "spatial", "persistent" };

static int find(const char *const *names, int n, const char *s) {
  for (int i = 0; i < n; i++)
    if (names[i] && strcmp(names[i], s) == 0) return i;
  fprintf(stderr, "bench_cudnn: unknown value '%s'\n", s);
  usage();
  return -1;
}

static long positive(const char *s) {
  char *end;
  long v = strtol(s, &end, 10);
  if (end == s || *end || v < 1) {
    fprintf(stderr, "bench_cudnn: '%s' is not a positive integer\n", s);
    usage();
  }
  return v;
}

static void parse_shape(const char *s, ln_cudnn_bn_desc *d) {
  d->ndim = 0;
  while (*s) {
    char *end;
    long long v = strtoll(s, &end, 10);
    if (end == s || v < 1 || d->ndim == 5) {
      fprintf(stderr, "bench_cudnn: --shape wants 2 to 5 positive sizes\n");
      usage();
    }
    d->sizes[d->ndim++] = v;
    s = *end == ',' ? end + 1 : end;
    if (*end && *end != ',') usage();
  }
  if (d->ndim < 2) usage();
}

static options defaults(void) {
  options o;
  memset(&o, 0, sizeof o);
  o.d.dtype = LN_F32;
  o.d.ops = LN_CUDNN_BN_OPS_BN;
  o.d.eps = 1e-5;
  o.cases = "train,train_backward,eval";
  o.mode = "auto";
  o.runs = 50;
  o.warmup = 10;
  o.momentum = 0.1;
  return o;
}

static options parse(int argc, char **argv) {
  options o = defaults();
  bool have_shape = false;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!v) usage();
    i++;
    if (!strcmp(a, "--shape")) parse_shape(v, &o.d), have_shape = true;
    else if (!strcmp(a, "--dtype")) o.d.dtype = (ln_dtype)find(dtype_names, 4, v);
    else if (!strcmp(a, "--layout")) o.d.channels_last = find(layout_names, 2, v) == 1;
    else if (!strcmp(a, "--ops")) o.d.ops = (ln_cudnn_bn_ops)find(ops_names, 3, v);
    else if (!strcmp(a, "--mode")) o.mode = v;
    else if (!strcmp(a, "--cases")) o.cases = v;
    else if (!strcmp(a, "--runs")) o.runs = (int)positive(v);
    else if (!strcmp(a, "--warmup")) o.warmup = (int)positive(v);
    else if (!strcmp(a, "--device")) o.d.device = (int)strtol(v, NULL, 10);
    else if (!strcmp(a, "--eps")) o.d.eps = strtod(v, NULL);
    else if (!strcmp(a, "--momentum")) o.momentum = strtod(v, NULL);
    else usage();
  }
  if (!have_shape) usage();
  if (strcmp(o.mode, "auto") != 0) find(mode_names, 3, o.mode);
  if (o.d.ndim == 2 && strcmp(o.mode, "per_activation") != 0) {
    int64_t n = o.d.sizes[0], c = o.d.sizes[1];
    o.d.ndim = 4;
    o.d.sizes[0] = 1, o.d.sizes[1] = c, o.d.sizes[2] = n, o.d.sizes[3] = 1;
    o.d.channels_last = true;
  }
  return o;
}

/* ---- failures: one message, printed in the case's line ---- */

static char failure[512];

static bool cuda_ok(cudaError_t e, const char *what) {
  if (e == cudaSuccess) return true;
  snprintf(failure, sizeof failure, "CUDA error during %s: %s", what, cudaGetErrorString(e));
  return false;
}

static bool cudnn_ok(cudnnStatus_t s, const char *what) {
  if (s == CUDNN_STATUS_SUCCESS) return true;
  snprintf(failure, sizeof failure, "cuDNN error during %s: %s", what, cudnnGetErrorString(s));
  return false;
}

/* ---- device buffers ---- */

/* Everything a case touches; per-channel vectors in float (double for
** float64 data). */
typedef struct buffers {
  void *x, *z, *y, *dy, *dx, *dz;
  void *weight, *bias, *rmean, *rvar, *smean, *sinv, *dw, *db;
  void *ws;
  size_t ws_bytes;
  void *reserve;
  size_t reserve_bytes;
} buffers;

/* k/64 as the dtype's bits; exact for |k| <= 128 in every dtype here. */
static void encode(ln_dtype t, double v, unsigned char *out) {
  float f = (float)v;
  uint32_t b;
  memcpy(&b, &f, 4);
  if (t == LN_F64) {
    memcpy(out, &v, 8);
  } else if (t == LN_F32) {
    memcpy(out, &f, 4);
  } else if (t == LN_BF16) {
    uint16_t h = (uint16_t)(b >> 16);
    memcpy(out, &h, 2);
  } else {  /* float16: exact normal numbers (|v| >= 2^-6) and zero */
    uint16_t h = (uint16_t)((b >> 16) & 0x8000);
    if (f != 0.0f) h |= (uint16_t)((((b >> 23) & 0xff) - 127 + 15) << 10 | ((b >> 13) & 0x3ff));
    memcpy(out, &h, 2);
  }
}

static size_t elem_bytes(ln_dtype t) {
  return t == LN_F64 ? 8 : t == LN_F32 ? 4 : 2;
}

/* A device buffer of n elements of dtype t, filled with k/64 values
** (seeded) or with `fill` when seed is 0. */
static bool upload(void **p, size_t n, ln_dtype t, uint32_t seed, double fill) {
  size_t es = elem_bytes(t);
  unsigned char *host = (unsigned char *)malloc(n * es);
  if (!host) {
    snprintf(failure, sizeof failure, "out of host memory");
    return false;
  }
  uint32_t s = seed;
  for (size_t i = 0; i < n; i++) {
    double v = fill;
    if (seed) {
      s = s * 1664525u + 1013904223u;
      v = (double)((int)(s >> 23) % 257 - 128) / 64.0;
    }
    encode(t, v, host + i * es);
  }
  bool ok = cuda_ok(cudaMalloc(p, n * es), "cudaMalloc") &&
            cuda_ok(cudaMemcpy(*p, host, n * es, cudaMemcpyHostToDevice), "an upload");
  free(host);
  return ok;
}

static void buffers_free(buffers *b) {
  void **all[] = { &b->x, &b->z, &b->y, &b->dy, &b->dx, &b->dz, &b->weight, &b->bias,
                   &b->rmean, &b->rvar, &b->smean, &b->sinv, &b->dw, &b->db, &b->ws,
                   &b->reserve };
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
    if (*all[i]) cudaFree(*all[i]);
    *all[i] = NULL;
  }
}

static bool buffers_make(const ln_cudnn_bn_desc *d, buffers *b) {
  size_t n = (size_t)ln_cudnn_bn_numel(d), c = (size_t)d->sizes[1];
  ln_dtype st = d->dtype == LN_F64 ? LN_F64 : LN_F32;
  return upload(&b->x, n, d->dtype, 1, 0) && upload(&b->z, n, d->dtype, 2, 0) &&
         upload(&b->y, n, d->dtype, 0, 0) && upload(&b->dy, n, d->dtype, 3, 0) &&
         upload(&b->dx, n, d->dtype, 0, 0) && upload(&b->dz, n, d->dtype, 0, 0) &&
         upload(&b->weight, c, st, 4, 0) && upload(&b->bias, c, st, 5, 0) &&
         upload(&b->rmean, c, st, 0, 0) && upload(&b->rvar, c, st, 0, 1) &&
         upload(&b->smean, c, st, 0, 0) && upload(&b->sinv, c, st, 0, 0) &&
         upload(&b->dw, c, st, 0, 0) && upload(&b->db, c, st, 0, 0);
}

/* ---- cuDNN ---- */

typedef struct bench {
  cudnnHandle_t h;
  cudnnTensorDescriptor_t x, bn;
  cudnnActivationDescriptor_t act;
  cudnnBatchNormMode_t mode;
  cudnnBatchNormOps_t ops;
  const ln_cudnn_bn_desc *d;
  double momentum;
  buffers b;
} bench;

static cudnnDataType_t data_type(ln_dtype t) {
  return t == LN_F64 ? CUDNN_DATA_DOUBLE : t == LN_F16 ? CUDNN_DATA_HALF
         : t == LN_BF16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT;
}

/* The descriptors for a case: the plan's, or a forced mode. */
static bool bench_setup(bench *s, const options *o, bool training) {
  ln_cudnn_bn_plan p;
  if (!ln_cudnn_bn_plan_for(&o->d, training, &p)) {
    snprintf(failure, sizeof failure, "the shape cannot be described to cuDNN");
    return false;
  }
  s->mode = strcmp(o->mode, "auto") == 0 ? (cudnnBatchNormMode_t)p.mode
            : (cudnnBatchNormMode_t)find(mode_names, 3, o->mode);
  s->ops = (cudnnBatchNormOps_t)o->d.ops;
  if (!training && o->d.ops != LN_CUDNN_BN_OPS_BN) {
    snprintf(failure, sizeof failure, "cuDNN's inference has no fused form");
    return false;
  }
  if (!cudnn_ok(cudnnSetTensorNdDescriptor(s->x, data_type(o->d.dtype), p.nd, p.dims,
                                           p.strides), "the input's descriptor") ||
      !cudnn_ok(cudnnDeriveBNTensorDescriptor(s->bn, s->x, s->mode),
                "the per-channel descriptor"))
    return false;
  cudnnActivationDescriptor_t act = o->d.ops == LN_CUDNN_BN_OPS_BN ? NULL : s->act;
  cudnnTensorDescriptor_t z = o->d.ops == LN_CUDNN_BN_OPS_ADD_RELU ? s->x : NULL;
  size_t fwd = 0, bwd = 0, res = 0;
  if (training &&
      (!cudnn_ok(cudnnGetBatchNormalizationForwardTrainingExWorkspaceSize(
                   s->h, s->mode, s->ops, s->x, z, s->x, s->bn, act, &fwd), "a size query") ||
       !cudnn_ok(cudnnGetBatchNormalizationBackwardExWorkspaceSize(
                   s->h, s->mode, s->ops, s->x, act ? s->x : NULL, s->x, z, s->x, s->bn, act,
                   &bwd), "a size query") ||
       !cudnn_ok(cudnnGetBatchNormalizationTrainingExReserveSpaceSize(s->h, s->mode, s->ops,
                                                                      act, s->x, &res),
                 "a size query")))
    return false;
  buffers *b = &s->b;
  if (b->ws) cudaFree(b->ws);
  if (b->reserve) cudaFree(b->reserve);
  b->ws = b->reserve = NULL;
  b->ws_bytes = fwd > bwd ? fwd : bwd;
  b->reserve_bytes = res;
  return (!b->ws_bytes || cuda_ok(cudaMalloc(&b->ws, b->ws_bytes), "cudaMalloc")) &&
         (!res || cuda_ok(cudaMalloc(&b->reserve, res), "cudaMalloc"));
}

/* cuDNN's alpha and beta: double for double data, float otherwise. */
static const float f_scalars[2] = { 0, 1 };
static const double d_scalars[2] = { 0, 1 };

static const void *scalar(const ln_cudnn_bn_desc *d, int v) {
  return d->dtype == LN_F64 ? (const void *)&d_scalars[v] : (const void *)&f_scalars[v];
}

static bool forward_train(bench *s) {
  const ln_cudnn_bn_desc *d = s->d;
  const void *one = scalar(d, 1), *zero = scalar(d, 0);
  bool add = d->ops == LN_CUDNN_BN_OPS_ADD_RELU;
  buffers *b = &s->b;
  return cudnn_ok(cudnnBatchNormalizationForwardTrainingEx(
                    s->h, s->mode, s->ops, one, zero, s->x, b->x, add ? s->x : NULL,
                    add ? b->z : NULL, s->x, b->y, s->bn, b->weight, b->bias, s->momentum,
                    b->rmean, b->rvar, d->eps, b->smean, b->sinv,
                    d->ops == LN_CUDNN_BN_OPS_BN ? NULL : s->act, b->ws, b->ws_bytes,
                    b->reserve, b->reserve_bytes),
                  "the training forward");
}

static bool backward(bench *s) {
  const ln_cudnn_bn_desc *d = s->d;
  const void *one = scalar(d, 1), *zero = scalar(d, 0);
  bool fused = d->ops != LN_CUDNN_BN_OPS_BN, add = d->ops == LN_CUDNN_BN_OPS_ADD_RELU;
  buffers *b = &s->b;
  return forward_train(s) &&
         cudnn_ok(cudnnBatchNormalizationBackwardEx(
                    s->h, s->mode, s->ops, one, zero, one, zero, s->x, b->x,
                    fused ? s->x : NULL, fused ? b->y : NULL, s->x, b->dy,
                    add ? s->x : NULL, add ? b->dz : NULL, s->x, b->dx, s->bn, b->weight,
                    fused ? b->bias : NULL, b->dw, b->db, d->eps, b->smean, b->sinv,
                    fused ? s->act : NULL, b->ws, b->ws_bytes, b->reserve, b->reserve_bytes),
                  "the backward");
}

static bool forward_eval(bench *s) {
  const ln_cudnn_bn_desc *d = s->d;
  const void *one = scalar(d, 1), *zero = scalar(d, 0);
  buffers *b = &s->b;
  return cudnn_ok(cudnnBatchNormalizationForwardInference(
                    s->h, s->mode, one, zero, s->x, b->x, s->x, b->y, s->bn, b->weight,
                    b->bias, b->rmean, b->rvar, d->eps),
                  "the eval forward");
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Time one case: warmup runs, then each run between two events. Times in
** milliseconds into t[0..2] (median, min, max). */
static bool time_case(bench *s, const options *o, cudaStream_t stream, bool (*run)(bench *),
                      double t[3]) {
  cudaEvent_t ev[2] = { NULL, NULL };
  double *ms = (double *)calloc((size_t)o->runs, sizeof *ms);
  bool ok = ms != NULL && cuda_ok(cudaEventCreate(&ev[0]), "cudaEventCreate") &&
            cuda_ok(cudaEventCreate(&ev[1]), "cudaEventCreate");
  for (int i = 0; ok && i < o->warmup; i++) ok = run(s);
  ok = ok && cuda_ok(cudaStreamSynchronize(stream), "the warm-up");
  for (int i = 0; ok && i < o->runs; i++) {
    float e = 0;
    ok = cuda_ok(cudaEventRecord(ev[0], stream), "cudaEventRecord") && run(s) &&
         cuda_ok(cudaEventRecord(ev[1], stream), "cudaEventRecord") &&
         cuda_ok(cudaEventSynchronize(ev[1]), "a timed run") &&
         cuda_ok(cudaEventElapsedTime(&e, ev[0], ev[1]), "cudaEventElapsedTime");
    if (ok) ms[i] = e;
  }
  if (ok) {
    qsort(ms, (size_t)o->runs, sizeof *ms, cmp_double);
    int r = o->runs;
    t[0] = r % 2 ? ms[r / 2] : 0.5 * (ms[r / 2 - 1] + ms[r / 2]);
    t[1] = ms[0];
    t[2] = ms[r - 1];
  }
  if (!ms && !failure[0]) snprintf(failure, sizeof failure, "out of host memory");
  for (int i = 0; i < 2; i++)
    if (ev[i]) cudaEventDestroy(ev[i]);
  free(ms);
  return ok;
}

/* The cases by name. */
typedef struct case_fn {
  const char *name;
  bool (*run)(bench *);
  bool training;
} case_fn;

static const case_fn case_fns[] = {
  { "train", forward_train, true },
  { "train_backward", backward, true },
  { "eval", forward_eval, false },
};

static const case_fn *case_named(const char *name) {
  for (size_t i = 0; i < sizeof case_fns / sizeof case_fns[0]; i++)
    if (!strcmp(case_fns[i].name, name)) return &case_fns[i];
  snprintf(failure, sizeof failure, "unknown case '%s'", name);
  return NULL;
}

/* The command line's cases, one result line each; the number that failed. */
static int run_cases(bench *s, const options *o, cudaStream_t stream) {
  char shape[96] = "";
  for (int i = 0, n = 0; i < o->d.ndim; i++)
    n += snprintf(shape + n, sizeof shape - (size_t)n, "%s%lld", i ? "," : "",
                  (long long)o->d.sizes[i]);
  int failed = 0;
  char *cases = strdup(o->cases), *save = NULL;
  for (char *c = cases ? strtok_r(cases, ",", &save) : NULL; c; c = strtok_r(NULL, ",", &save)) {
    double t[3];
    failure[0] = '\0';
    const case_fn *f = case_named(c);
    bool ok = f && bench_setup(s, o, f->training) && time_case(s, o, stream, f->run, t);
    printf("bench_cudnn case=%s shape=%s dtype=%s layout=%s ops=%s mode=%s numel=%lld "
           "elem_bytes=%zu runs=%d",
           c, shape, dtype_names[o->d.dtype], layout_names[o->d.channels_last],
           ops_names[o->d.ops], mode_names[s->mode], (long long)ln_cudnn_bn_numel(&o->d),
           elem_bytes(o->d.dtype), o->runs);
    if (ok) printf(" median_ms=%.6f min_ms=%.6f max_ms=%.6f\n", t[0], t[1], t[2]);
    else printf(" error=\"%s\"\n", failure);
    fflush(stdout);
    failed += !ok;
  }
  free(cases);
  return failed;
}

int main(int argc, char **argv) {
  options o = parse(argc, argv);
  bench s;
  memset(&s, 0, sizeof s);
  s.d = &o.d;
  s.momentum = o.momentum;
  cudaStream_t stream = NULL;
  struct cudaDeviceProp prop;
  if (!cuda_ok(cudaSetDevice(o.d.device), "cudaSetDevice") ||
      !cuda_ok(cudaGetDeviceProperties(&prop, o.d.device), "cudaGetDeviceProperties") ||
      !cuda_ok(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "stream creation") ||
      !cudnn_ok(cudnnCreate(&s.h), "handle creation") ||
      !cudnn_ok(cudnnSetStream(s.h, stream), "cudnnSetStream") ||
      !cudnn_ok(cudnnCreateTensorDescriptor(&s.x), "descriptor creation") ||
      !cudnn_ok(cudnnCreateTensorDescriptor(&s.bn), "descriptor creation") ||
      !cudnn_ok(cudnnCreateActivationDescriptor(&s.act), "descriptor creation") ||
      !cudnn_ok(cudnnSetActivationDescriptor(s.act, CUDNN_ACTIVATION_RELU, CUDNN_PROPAGATE_NAN,
                                             0.0), "the ReLU's descriptor") ||
      !buffers_make(&o.d, &s.b) ||
      /* a pageable upload may return before its copy lands, and the
      ** non-blocking stream does not wait for the legacy one */
      !cuda_ok(cudaDeviceSynchronize(), "the uploads")) {
    fprintf(stderr, "bench_cudnn: %s\n", failure);
    return 1;
  }
  printf("# device=\"%s\" cudnn=%zu\n", prop.name, cudnnGetVersion());
  int failed = run_cases(&s, &o, stream);
  buffers_free(&s.b);
  cudnnDestroyActivationDescriptor(s.act);
  cudnnDestroyTensorDescriptor(s.bn);
  cudnnDestroyTensorDescriptor(s.x);
  cudnnDestroy(s.h);
  cudaStreamDestroy(stream);
  return failed ? 1 : 0;
}
