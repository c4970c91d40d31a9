/*
** ops_unary.c -- elementwise unary ops (neg, abs, sqrt, exp, log, relu,
** sign) and their backward functions. int64 keeps its dtype for neg, abs,
** relu and sign and gives float32 for sqrt, exp and log, as PyTorch does.
*/
#include <math.h>
#include <string.h>

#include "ops_impl.h"

/* o = EXPR(x) over n elements, with a contiguous loop that vectorizes. */
#define UNARY_LOOP(T, EXPR) do { \
    if (s[0] == (int64_t)sizeof(T) && s[1] == (int64_t)sizeof(T)) { \
      T *o_ = (T *)d[0]; const T *a_ = (const T *)d[1]; \
      for (int64_t i = 0; i < n; i++) { T x = a_[i]; o_[i] = (EXPR); } \
    } else { \
      for (int64_t i = 0; i < n; i++) { \
        T x = *(const T *)(d[1] + i * s[1]); \
        *(T *)(d[0] + i * s[0]) = (EXPR); \
      } \
    } \
  } while (0)

/* relu keeps NaN (PyTorch's clamp_min); sign(NaN) is 0. */
#define RELU(T, x) ((x) > 0 || (x) != (x) ? (x) : (T)0)
#define SIGN(T, x) ((T)(((x) > 0) - ((x) < 0)))

#define DEFINE_UNARY_FLOAT(SUF, T, SQRT, EXP, LOG, FABS) \
  static void unary_##SUF(char **d, const int64_t *s, int64_t n, void *ctx) { \
    switch (*(const ln_unary_op *)ctx) { \
    case LN_NEG: UNARY_LOOP(T, -x); break; \
    case LN_ABS: UNARY_LOOP(T, FABS(x)); break; \
    case LN_SQRT: UNARY_LOOP(T, SQRT(x)); break; \
    case LN_EXP: UNARY_LOOP(T, EXP(x)); break; \
    case LN_LOG: UNARY_LOOP(T, LOG(x)); break; \
    case LN_RELU: UNARY_LOOP(T, RELU(T, x)); break; \
    case LN_SIGN: UNARY_LOOP(T, SIGN(T, x)); break; \
    default: break; \
    } \
  }

DEFINE_UNARY_FLOAT(f32, float, sqrtf, expf, logf, fabsf)
DEFINE_UNARY_FLOAT(f64, double, sqrt, exp, log, fabs)

/* sqrt, exp and log never run on int64: they compute in float32. */
static void unary_i64(char **d, const int64_t *s, int64_t n, void *ctx) {
  switch (*(const ln_unary_op *)ctx) {
  case LN_NEG: UNARY_LOOP(int64_t, (int64_t)(0 - (uint64_t)x)); break;
  case LN_ABS: UNARY_LOOP(int64_t, x < 0 ? (int64_t)(0 - (uint64_t)x) : x); break;
  case LN_RELU: UNARY_LOOP(int64_t, x > 0 ? x : 0); break;
  case LN_SIGN: UNARY_LOOP(int64_t, SIGN(int64_t, x)); break;
  default: break;
  }
}

static const ln_loop_fn unary_kernels[LN_DTYPE_COUNT] = {
  [LN_F32] = unary_f32, [LN_F64] = unary_f64, [LN_I64] = unary_i64,
};

static const char *const op_names[LN_UNARY_COUNT] = {
  [LN_NEG] = "neg", [LN_ABS] = "abs", [LN_SQRT] = "sqrt", [LN_EXP] = "exp",
  [LN_LOG] = "log", [LN_RELU] = "relu", [LN_SIGN] = "sign",
};

/* ---- backward ---- */

/* ints[0]: op, ints[1]: ndim, ints[2]: dtype, ints[4..]: input sizes;
** saved[0]: the input (abs, log) or the detached output (sqrt, exp, relu). */
static ln_status unary_backward(ln_node *node, ln_tensor **gout, ln_tensor **gin) {
  ln_unary_op op = (ln_unary_op)node->ints[0];
  ln_tensor *g = gout[0], *v = NULL, *s = NULL, *r = NULL;
  if (op == LN_SIGN) {
    gin[0] = ln_zeros(node->ints + 4, (int)node->ints[1], (ln_dtype)node->ints[2],
                      ln_tensor_device(g));
    return gin[0] ? LN_OK : ln_last_status();
  }
  if (op != LN_NEG && !(v = ln_node_saved(node, 0))) return ln_last_status();
  switch (op) {
  case LN_NEG: r = ln_neg(g); break;
  case LN_ABS: s = ln_unary(LN_SIGN, v); r = s ? ln_mul(g, s) : NULL; break;
  case LN_SQRT:  /* g / (2 sqrt(x)) */
    s = ln_add(v, v);
    r = s ? ln_div(g, s) : NULL;
    break;
  case LN_EXP: r = ln_mul(g, v); break;
  case LN_LOG: r = ln_div(g, v); break;
  case LN_RELU: {
    ln_tensor *zero = ln_scalar(0, v->dtype);
    s = zero ? ln_compare(LN_GT, v, zero) : NULL;
    ln_tensor_release(zero);
    r = s ? ln_mul(g, s) : NULL;
    break;
  }
  default: break;
  }
  ln_tensor_release(s);
  gin[0] = r;
  return r ? LN_OK : ln_last_status();
}

static ln_status record_unary(ln_unary_op op, ln_tensor *out, ln_tensor *a) {
  static const char *const names[LN_UNARY_COUNT] = {
    [LN_NEG] = "NegBackward0", [LN_ABS] = "AbsBackward0", [LN_SQRT] = "SqrtBackward0",
    [LN_EXP] = "ExpBackward0", [LN_LOG] = "LogBackward0", [LN_RELU] = "ReluBackward0",
    [LN_SIGN] = "SignBackward0",
  };
  ln_node *node = ln_record(names[op], unary_backward, out, &a, 1);
  if (!node) return ln_last_status();
  node->ints[0] = op;
  node->ints[1] = a->ndim;
  node->ints[2] = a->dtype;
  memcpy(node->ints + 4, a->sizes, sizeof(int64_t) * (size_t)a->ndim);
  if (op == LN_ABS || op == LN_LOG) {
    ln_node_save(node, a);
  } else if (op == LN_SQRT || op == LN_EXP || op == LN_RELU) {
    ln_tensor *o = ln_detach(out);
    if (!o) return ln_last_status();
    ln_node_save(node, o);
    ln_tensor_release(o);
  }
  return LN_OK;
}

/* ---- forward ---- */

ln_tensor *ln_unary(ln_unary_op op, ln_tensor *a) {
  if ((unsigned)op >= LN_UNARY_COUNT) {
    ln_error(LN_EINVAL, "invalid unary op %d", (int)op);
    return NULL;
  }
  if (op == LN_NEG && a->dtype == LN_BOOL) {
    ln_error(LN_EINVAL, "Negation, the `-` operator, on a bool tensor is not supported. If "
             "you are trying to invert a mask, use the `~` or `logical_not()` operator "
             "instead.");
    return NULL;
  }
  ln_device dev = ln_tensor_device(a);
  bool to_float = op == LN_SQRT || op == LN_EXP || op == LN_LOG;
  ln_dtype rt = to_float && !ln_dtype_is_float(a->dtype) ? LN_F32 : a->dtype;
  ln_tensor *out = ln_empty_format(a->sizes, a->ndim, rt, dev,
                                   ln_elementwise_format(a->sizes, a->ndim, &a, 1));
  if (!out) return NULL;
  ln_dtype k = ln_kernel_dtype(rt);
  if (dev.type == LN_CPU) {
    ln_dtype want[2] = { k, k };
    ln_elementwise_run(out, &a, 1, want, unary_kernels[k], &op);
  } else {
    ln_ew_call call = { LN_EW_UNARY, op, 0.0, k };
    if (ln_device_elementwise(op_names[op], &call, out, &a, 1) != LN_OK) goto fail;
  }
  if (ln_any_requires_grad(&a, 1) && record_unary(op, out, a) != LN_OK) goto fail;
  return out;
fail:
  ln_tensor_release(out);
  return NULL;
}

ln_tensor *ln_neg(ln_tensor *a) { return ln_unary(LN_NEG, a); }
