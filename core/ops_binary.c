/*
** ops_binary.c -- broadcasting binary ops (add, sub, mul, div, pow,
** maximum, minimum, a + alpha * b), comparisons, the in-place form, and
** their backward functions.
**
** Kernels exist for the compute dtypes float32, float64 and int64 (see
** ln_kernel_dtype); float16, bfloat16 and bool operands, and operands of a
** dtype other than the result's, are converted on the fly by the
** elementwise driver.
*/
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "device_kernels.h"
#include "ops_impl.h"

#define OP_AXPY LN_BINARY_AXPY  /* a + alpha * b, beside ln_binary_op */

typedef struct binary_ctx {
  int op;         /* ln_binary_op or OP_AXPY */
  double alpha;   /* OP_AXPY only */
} binary_ctx;

/* NaN-propagating max/min (x != x only for NaN; never true for ints). */
#define MAXV(x, y) ((x) > (y) || (x) != (x) ? (x) : (y))
#define MINV(x, y) ((x) < (y) || (x) != (x) ? (x) : (y))

/* o = EXPR(x, y) for n elements, x and y of type T and o of type O, with
** separate loops for the contiguous and scalar-operand cases so that they
** vectorize, and a generic strided one. Uses d, s, n of the callback. */
#define BINARY_LOOP(T, O, EXPR) do { \
    char *o_ = d[0]; const char *a_ = d[1], *b_ = d[2]; \
    const int64_t so_ = s[0], sa_ = s[1], sb_ = s[2]; \
    const int64_t zo_ = (int64_t)sizeof(O), zt_ = (int64_t)sizeof(T); \
    if (so_ == zo_ && sa_ == zt_ && sb_ == zt_) { \
      O *op_ = (O *)o_; const T *ap_ = (const T *)a_, *bp_ = (const T *)b_; \
      for (int64_t i = 0; i < n; i++) { T x = ap_[i], y = bp_[i]; op_[i] = (O)(EXPR); } \
    } else if (so_ == zo_ && sa_ == zt_ && sb_ == 0) { \
      O *op_ = (O *)o_; const T *ap_ = (const T *)a_; const T y = *(const T *)b_; \
      for (int64_t i = 0; i < n; i++) { T x = ap_[i]; op_[i] = (O)(EXPR); } \
    } else if (so_ == zo_ && sa_ == 0 && sb_ == zt_) { \
      O *op_ = (O *)o_; const T *bp_ = (const T *)b_; const T x = *(const T *)a_; \
      for (int64_t i = 0; i < n; i++) { T y = bp_[i]; op_[i] = (O)(EXPR); } \
    } else { \
      for (int64_t i = 0; i < n; i++) { \
        T x = *(const T *)(a_ + i * sa_), y = *(const T *)(b_ + i * sb_); \
        *(O *)(o_ + i * so_) = (O)(EXPR); \
      } \
    } \
  } while (0)

/* U: the type sums and products are taken in, T itself for floats; for
** int64 its unsigned twin, so that they wrap as PyTorch's do (a signed
** overflow is undefined in C). */
#define DEFINE_BINARY(SUF, T, U, POW) \
  static void binary_##SUF(char **d, const int64_t *s, int64_t n, void *ctx) { \
    const binary_ctx *c = ctx; \
    switch (c->op) { \
    case LN_ADD: BINARY_LOOP(T, T, (U)x + (U)y); break; \
    case LN_SUB: BINARY_LOOP(T, T, (U)x - (U)y); break; \
    case LN_MUL: BINARY_LOOP(T, T, (U)x * (U)y); break; \
    case LN_DIV: BINARY_LOOP(T, T, x / y); break; \
    case LN_POW: BINARY_LOOP(T, T, POW(x, y)); break; \
    case LN_MAXIMUM: BINARY_LOOP(T, T, MAXV(x, y)); break; \
    case LN_MINIMUM: BINARY_LOOP(T, T, MINV(x, y)); break; \
    case OP_AXPY: { const U al = (U)(T)c->alpha; BINARY_LOOP(T, T, (U)x + al * (U)y); break; } \
    default: break; \
    } \
  }

DEFINE_BINARY(f32, float, float, powf)
DEFINE_BINARY(f64, double, double, pow)
DEFINE_BINARY(i64, int64_t, uint64_t, ln_ipow)  /* LN_DIV never runs on int64: it promotes */

#define DEFINE_COMPARE(SUF, T) \
  static void compare_##SUF(char **d, const int64_t *s, int64_t n, void *ctx) { \
    switch (*(const ln_compare_op *)ctx) { \
    case LN_EQ: BINARY_LOOP(T, uint8_t, x == y); break; \
    case LN_NE: BINARY_LOOP(T, uint8_t, x != y); break; \
    case LN_LT: BINARY_LOOP(T, uint8_t, x < y); break; \
    case LN_LE: BINARY_LOOP(T, uint8_t, x <= y); break; \
    case LN_GT: BINARY_LOOP(T, uint8_t, x > y); break; \
    case LN_GE: BINARY_LOOP(T, uint8_t, x >= y); break; \
    default: break; \
    } \
  }

DEFINE_COMPARE(f32, float)
DEFINE_COMPARE(f64, double)
DEFINE_COMPARE(i64, int64_t)

static const ln_loop_fn binary_kernels[LN_DTYPE_COUNT] = {
  [LN_F32] = binary_f32, [LN_F64] = binary_f64, [LN_I64] = binary_i64,
};
static const ln_loop_fn compare_kernels[LN_DTYPE_COUNT] = {
  [LN_F32] = compare_f32, [LN_F64] = compare_f64, [LN_I64] = compare_i64,
};

static const char *const op_names[] = {
  [LN_ADD] = "add", [LN_SUB] = "sub", [LN_MUL] = "mul", [LN_DIV] = "div",
  [LN_POW] = "pow", [LN_MAXIMUM] = "maximum", [LN_MINIMUM] = "minimum",
  [OP_AXPY] = "add",
};

/* The dtype of a op b, or PyTorch's refusal of bool subtraction. */
static ln_status binary_dtype(int op, ln_tensor *a, ln_tensor *b, ln_dtype *out) {
  if (op == LN_SUB && a->dtype == LN_BOOL && b->dtype == LN_BOOL)
    return ln_error(LN_EINVAL, "Subtraction, the `-` operator, with two bool tensors is not "
                    "supported. Use the `^` or `logical_xor()` operator instead.");
  if (op == LN_SUB && (a->dtype == LN_BOOL || b->dtype == LN_BOOL))
    return ln_error(LN_EINVAL, "Subtraction, the `-` operator, with a bool tensor is not "
                    "supported. If you are trying to invert a mask, use the `~` or "
                    "`logical_not()` operator instead.");
  ln_tensor *ts[2] = { a, b };
  ln_dtype r = ln_result_type(ts, 2);
  if (op == LN_DIV && !ln_dtype_is_float(r)) r = LN_F32;  /* true division */
  *out = r;
  return LN_OK;
}

/* ---- backward ---- */

/* node->ints: a's sizes [0, 8), b's sizes [8, 16), ndims [16, 17],
** dtypes [18, 19]; scalars[0]: alpha (add). saved: what each op needs. */
static void save_shapes(ln_node *node, const ln_tensor *a, const ln_tensor *b) {
  memcpy(node->ints, a->sizes, sizeof(int64_t) * (size_t)a->ndim);
  memcpy(node->ints + LN_MAX_DIMS, b->sizes, sizeof(int64_t) * (size_t)b->ndim);
  node->ints[16] = a->ndim;
  node->ints[17] = b->ndim;
  node->ints[18] = a->dtype;
  node->ints[19] = b->dtype;
}

/* Fit g (consumed) to input i's shape and dtype into grad_in[i]. */
static ln_status fit_take(ln_node *node, int i, ln_tensor *g, ln_tensor **grad_in) {
  if (!g) return ln_last_status();
  grad_in[i] = ln_grad_fit(g, node->ints + i * LN_MAX_DIMS, (int)node->ints[16 + i],
                           (ln_dtype)node->ints[18 + i]);
  ln_tensor_release(g);
  return grad_in[i] ? LN_OK : ln_last_status();
}

static ln_tensor *retained(ln_tensor *t) {
  ln_tensor_retain(t);
  return t;
}

static ln_status add_backward(ln_node *node, ln_tensor **gout, ln_tensor **gin) {
  ln_tensor *g = gout[0];
  ln_status st = LN_OK;
  if (ln_needs_grad(node, 0)) st = fit_take(node, 0, retained(g), gin);
  if (st == LN_OK && ln_needs_grad(node, 1)) {
    double alpha = node->scalars[0];
    ln_tensor *gb;
    if (alpha == 1) {
      gb = retained(g);
    } else {
      ln_tensor *s = ln_scalar_like(g, alpha, false);
      gb = s ? ln_mul(g, s) : NULL;
      ln_tensor_release(s);
    }
    st = fit_take(node, 1, gb, gin);
  }
  return st;
}

static ln_status sub_backward(ln_node *node, ln_tensor **gout, ln_tensor **gin) {
  ln_status st = LN_OK;
  if (ln_needs_grad(node, 0)) st = fit_take(node, 0, retained(gout[0]), gin);
  if (st == LN_OK && ln_needs_grad(node, 1)) st = fit_take(node, 1, ln_neg(gout[0]), gin);
  return st;
}

/* saved: a, b */
static ln_status mul_backward(ln_node *node, ln_tensor **gout, ln_tensor **gin) {
  ln_tensor *a = ln_node_saved(node, 0), *b = ln_node_saved(node, 1);
  ln_status st = LN_OK;
  if (!a || !b) return ln_last_status();
  if (ln_needs_grad(node, 0)) st = fit_take(node, 0, ln_mul(gout[0], b), gin);
  if (st == LN_OK && ln_needs_grad(node, 1)) st = fit_take(node, 1, ln_mul(gout[0], a), gin);
  return st;
}

/* saved: b, out. d(a/b)/db = -(a/b)/b = -out/b. */
static ln_status div_backward(ln_node *node, ln_tensor **gout, ln_tensor **gin) {
  ln_tensor *b = ln_node_saved(node, 0), *out = ln_node_saved(node, 1);
  ln_status st = LN_OK;
  if (!b || !out) return ln_last_status();
  ln_tensor *q = ln_div(gout[0], b);
  if (!q) return ln_last_status();
  if (ln_needs_grad(node, 1)) {
    ln_tensor *m = ln_mul(q, out);
    st = fit_take(node, 1, m ? ln_neg(m) : NULL, gin);
    ln_tensor_release(m);
  }
  if (st == LN_OK && ln_needs_grad(node, 0)) st = fit_take(node, 0, retained(q), gin);
  ln_tensor_release(q);
  return st;
}

/* Gradients that need a select (where) rather than plain arithmetic run
** as one 4-operand kernel: r = f(g, x, y) with x = a, y = b broadcast
** (ln_grad_select, core/device_kernels.h). */

#define GRAD_LOOP(T, EXPR) do { \
    for (int64_t i = 0; i < n; i++) { \
      T g = *(const T *)(d[1] + i * s[1]), x = *(const T *)(d[2] + i * s[2]); \
      T y = *(const T *)(d[3] + i * s[3]); \
      *(T *)(d[0] + i * s[0]) = (EXPR); \
    } \
  } while (0)

/* pow: as PyTorch, 0 where the exponent is 0 (d/da) or where a == 0 and
** b >= 0 (d/db), instead of 0 * inf. Ties of max/min share the gradient. */
#define DEFINE_GRAD(SUF, T, POW, LOG) \
  static void grad_##SUF(char **d, const int64_t *s, int64_t n, void *ctx) { \
    switch (*(const ln_grad_select *)ctx) { \
    case LN_GRAD_POW_A: GRAD_LOOP(T, y == 0 ? (T)0 : g * y * POW(x, y - 1)); break; \
    case LN_GRAD_POW_B: GRAD_LOOP(T, x == 0 && y >= 0 ? (T)0 : g * POW(x, y) * LOG(x)); break; \
    case LN_GRAD_MAX_A: GRAD_LOOP(T, x > y ? g : x == y ? g / 2 : (T)0); break; \
    case LN_GRAD_MAX_B: GRAD_LOOP(T, y > x ? g : x == y ? g / 2 : (T)0); break; \
    case LN_GRAD_MIN_A: GRAD_LOOP(T, x < y ? g : x == y ? g / 2 : (T)0); break; \
    case LN_GRAD_MIN_B: GRAD_LOOP(T, y < x ? g : x == y ? g / 2 : (T)0); break; \
    default: break; \
    } \
  }

DEFINE_GRAD(f32, float, powf, logf)
DEFINE_GRAD(f64, double, pow, log)

/* r = kernel(g, a, b) in g's dtype, then fitted to input i. */
static ln_status select_grad(ln_node *node, int i, ln_grad_select kind, ln_tensor *g,
                             ln_tensor *a, ln_tensor *b, ln_tensor **gin) {
  ln_tensor *ts[3] = { g, a, b };
  int64_t sizes[LN_MAX_DIMS];
  int nd;
  if (ln_broadcast_shape(ts, 3, sizes, &nd) != LN_OK) return ln_last_status();
  ln_tensor *r = ln_empty(sizes, nd, g->dtype, ln_tensor_device(g));
  if (!r) return ln_last_status();
  ln_dtype k = ln_kernel_dtype(g->dtype);
  if (ln_tensor_device(r).type == LN_CPU) {
    ln_dtype want[4] = { k, k, k, k };
    ln_elementwise_run(r, ts, 3, want, k == LN_F64 ? grad_f64 : grad_f32, &kind);
  } else {
    ln_ew_call call = { LN_EW_GRAD_SELECT, kind, 0.0, k };
    ln_status st = ln_device_elementwise(node->name, &call, r, ts, 3);
    if (st != LN_OK) {
      ln_tensor_release(r);
      return st;
    }
  }
  return fit_take(node, i, r, gin);
}

/* pow, maximum, minimum. saved: a, b; scalars[1]: the ln_binary_op. */
static ln_status select_backward(ln_node *node, ln_tensor **gout, ln_tensor **gin) {
  ln_tensor *a = ln_node_saved(node, 0), *b = ln_node_saved(node, 1);
  if (!a || !b) return ln_last_status();
  int op = (int)node->scalars[1];
  ln_grad_select ka = op == LN_POW ? LN_GRAD_POW_A : op == LN_MAXIMUM ? LN_GRAD_MAX_A
                                                                      : LN_GRAD_MIN_A;
  ln_status st = LN_OK;
  if (ln_needs_grad(node, 0)) st = select_grad(node, 0, ka, gout[0], a, b, gin);
  if (st == LN_OK && ln_needs_grad(node, 1))
    st = select_grad(node, 1, (ln_grad_select)(ka + 1), gout[0], a, b, gin);
  return st;
}

/* Record the history of out = a op b. */
static ln_status record_binary(int op, ln_tensor *out, ln_tensor *a, ln_tensor *b,
                               double alpha) {
  static const char *const names[] = {
    [LN_ADD] = "AddBackward0", [LN_SUB] = "SubBackward0", [LN_MUL] = "MulBackward0",
    [LN_DIV] = "DivBackward0", [LN_POW] = "PowBackward1",
    [LN_MAXIMUM] = "MaximumBackward0", [LN_MINIMUM] = "MinimumBackward0",
    [OP_AXPY] = "AddBackward0",
  };
  static const ln_backward_fn fns[] = {
    [LN_ADD] = add_backward, [LN_SUB] = sub_backward, [LN_MUL] = mul_backward,
    [LN_DIV] = div_backward, [LN_POW] = select_backward,
    [LN_MAXIMUM] = select_backward, [LN_MINIMUM] = select_backward,
    [OP_AXPY] = add_backward,
  };
  ln_tensor *ts[2] = { a, b };
  ln_node *node = ln_record(names[op], fns[op], out, ts, 2);
  if (!node) return ln_last_status();
  save_shapes(node, a, b);
  node->scalars[0] = op == OP_AXPY ? alpha : 1.0;
  node->scalars[1] = op;
  if (op == LN_DIV) {
    ln_tensor *o = ln_detach(out);
    if (!o) return ln_last_status();
    ln_node_save(node, b);
    ln_node_save(node, o);
    ln_tensor_release(o);
  } else if (op != LN_ADD && op != LN_SUB && op != OP_AXPY) {
    ln_node_save(node, a);
    ln_node_save(node, b);
  }
  return LN_OK;
}

/* ---- forward ---- */

/* out = ts[0] op ts[1] (broadcast to out's shape), computed in rt's kernel
** dtype: the CPU kernels or the device's. */
static ln_status run_binary(int op, double alpha, ln_dtype rt, ln_tensor *out,
                            ln_tensor *const *ts) {
  ln_dtype k = ln_kernel_dtype(rt);
  if (ln_tensor_device(out).type != LN_CPU) {
    ln_ew_call call = { LN_EW_BINARY, op, alpha, k };
    return ln_device_elementwise(op_names[op], &call, out, ts, 2);
  }
  ln_dtype want[3] = { k, k, k };
  binary_ctx c = { op, alpha };
  ln_elementwise_run(out, ts, 2, want, binary_kernels[k], &c);
  return LN_OK;
}

static ln_tensor *binary_forward(int op, ln_tensor *a, ln_tensor *b, double alpha) {
  ln_tensor *ts[2] = { a, b };
  int64_t sizes[LN_MAX_DIMS];
  int nd;
  ln_device dev;
  ln_dtype rt = LN_F32;
  if (ln_common_device(ts, 2, &dev) != LN_OK || binary_dtype(op, a, b, &rt) != LN_OK ||
      ln_broadcast_shape(ts, 2, sizes, &nd) != LN_OK)
    return NULL;
  /* an integral axpy takes alpha as an int64: a fraction, NaN or a value
  ** out of range has no such value (and casting it would be undefined) */
  if (op == OP_AXPY && !ln_dtype_is_float(rt) && !(ln_dtype_fits(alpha, LN_I64) &&
                                                   alpha == trunc(alpha))) {
    ln_error(LN_EINVAL, "For integral input tensors, argument alpha must not be a floating "
             "point number.");
    return NULL;
  }
  ln_tensor *out = ln_empty_format(sizes, nd, rt, dev, ln_elementwise_format(sizes, nd, ts, 2));
  if (!out) return NULL;
  if (run_binary(op, alpha, rt, out, ts) != LN_OK) goto fail;
  if (ln_any_requires_grad(ts, 2) && record_binary(op, out, a, b, alpha) != LN_OK) goto fail;
  return out;
fail:
  ln_tensor_release(out);
  return NULL;
}

ln_tensor *ln_binary(ln_binary_op op, ln_tensor *a, ln_tensor *b) {
  if ((unsigned)op >= LN_BINARY_COUNT) {
    ln_error(LN_EINVAL, "invalid binary op %d", (int)op);
    return NULL;
  }
  return binary_forward(op, a, b, 1.0);
}

ln_tensor *ln_add(ln_tensor *a, ln_tensor *b) { return binary_forward(LN_ADD, a, b, 1.0); }
ln_tensor *ln_sub(ln_tensor *a, ln_tensor *b) { return binary_forward(LN_SUB, a, b, 1.0); }
ln_tensor *ln_mul(ln_tensor *a, ln_tensor *b) { return binary_forward(LN_MUL, a, b, 1.0); }
ln_tensor *ln_div(ln_tensor *a, ln_tensor *b) { return binary_forward(LN_DIV, a, b, 1.0); }
ln_tensor *ln_pow(ln_tensor *a, ln_tensor *b) { return binary_forward(LN_POW, a, b, 1.0); }

ln_tensor *ln_add_scaled(ln_tensor *a, ln_tensor *b, double alpha) {
  return binary_forward(OP_AXPY, a, b, alpha);
}

/* A wrapped number, converted as a cast (a float past the dtype's range is
** inf, as PyTorch's x + 1e300), never refused as ln_scalar's fill would. */
ln_tensor *ln_scalar_like(ln_tensor *t, double value, bool is_integer) {
  ln_dtype dt = ln_dtype_is_float(t->dtype) ? t->dtype : is_integer ? LN_I64 : LN_F32;
  ln_tensor *s = ln_empty(NULL, 0, dt, LN_DEVICE_CPU);
  if (s) ln_store_double(ln_tensor_data(s), dt, value);
  return s;
}

ln_tensor *ln_scalar_like_int(ln_tensor *t, int64_t value) {
  if (ln_dtype_is_float(t->dtype)) return ln_scalar_like(t, (double)value, true);
  ln_tensor *s = ln_empty(NULL, 0, LN_I64, LN_DEVICE_CPU);
  if (s) *(int64_t *)ln_tensor_data(s) = value;
  return s;
}

ln_tensor *ln_compare(ln_compare_op op, ln_tensor *a, ln_tensor *b) {
  ln_tensor *ts[2] = { a, b };
  int64_t sizes[LN_MAX_DIMS];
  int nd;
  ln_device dev;
  if ((unsigned)op >= LN_COMPARE_COUNT) {
    ln_error(LN_EINVAL, "invalid comparison %d", (int)op);
    return NULL;
  }
  static const char *const names[LN_COMPARE_COUNT] = { "eq", "ne", "lt", "le", "gt", "ge" };
  if (ln_common_device(ts, 2, &dev) != LN_OK || ln_broadcast_shape(ts, 2, sizes, &nd) != LN_OK)
    return NULL;
  ln_tensor *out = ln_empty_format(sizes, nd, LN_BOOL, dev,
                                   ln_elementwise_format(sizes, nd, ts, 2));
  if (!out) return NULL;
  ln_dtype k = ln_kernel_dtype(ln_result_type(ts, 2));
  if (dev.type == LN_CPU) {
    ln_dtype want[3] = { LN_BOOL, k, k };
    ln_elementwise_run(out, ts, 2, want, compare_kernels[k], &op);
  } else {
    ln_ew_call call = { LN_EW_COMPARE, op, 0.0, k };
    if (ln_device_elementwise(names[op], &call, out, ts, 2) != LN_OK) {
      ln_tensor_release(out);
      return NULL;
    }
  }
  return out;  /* comparisons are not differentiable: no history */
}

/* PyTorch's can_cast: no float -> integral, no non-bool -> bool. */
static bool can_cast(ln_dtype from, ln_dtype to) {
  if (ln_dtype_is_float(from) && !ln_dtype_is_float(to)) return false;
  if (from != LN_BOOL && to == LN_BOOL) return false;
  return true;
}

/* The device of an in-place op's output must be the op's: a 0-dim CPU
** tensor cannot take the result of an op with a device tensor. */
static ln_status same_device(const ln_tensor *a, ln_device dev) {
  char b1[32], b2[32];
  if (ln_device_eq(ln_tensor_device(a), dev)) return LN_OK;
  return ln_error(LN_EINVAL, "Expected all tensors to be on the same device, but found at "
                  "least two devices, %s and %s!", ln_device_str(dev, b1, sizeof b1),
                  ln_device_str(ln_tensor_device(a), b2, sizeof b2));
}

/* a op= b. Limitation: no history is recorded, so an in-place op on a
** tensor that is part of a graph (a non-leaf, or with b requiring grad)
** is invisible to autograd; leaves that require grad are refused. */
ln_status ln_binary_(ln_binary_op op, ln_tensor *a, ln_tensor *b) {
  ln_tensor *ts[2] = { a, b }, *tmp = NULL;
  int64_t sizes[LN_MAX_DIMS];
  int nd;
  ln_device dev;
  ln_dtype rt = LN_F32;
  if ((unsigned)op >= LN_BINARY_COUNT) return ln_error(LN_EINVAL, "invalid binary op %d", (int)op);
  ln_status st = ln_check_inplace(a);
  if (st == LN_OK) st = ln_common_device(ts, 2, &dev);
  if (st == LN_OK) st = same_device(a, dev);
  if (st == LN_OK) st = binary_dtype(op, a, b, &rt);
  if (st == LN_OK) st = ln_broadcast_shape(ts, 2, sizes, &nd);
  if (st != LN_OK) return st;
  if (!can_cast(rt, a->dtype))
    return ln_error(LN_EINVAL, "result type %s can't be cast to the desired output type %s",
                    ln_torch_type_name(rt), ln_torch_type_name(a->dtype));
  if (nd != a->ndim || memcmp(sizes, a->sizes, sizeof(int64_t) * (size_t)nd)) {
    char s1[128], s2[128];
    ln_shape_str(a->sizes, a->ndim, s1, sizeof s1);
    ln_shape_str(sizes, nd, s2, sizeof s2);
    return ln_error(LN_EINVAL, "output with shape %s doesn't match the broadcast shape %s",
                    s1, s2);
  }
  if ((st = ln_check_no_internal_overlap(a)) != LN_OK) return st;
  /* b overlapping a in another layout would be read after being written */
  if (b != a && ln_tensors_share_storage(a, b)) {
    if (!(tmp = ln_empty_like(b, LN_CONTIGUOUS))) return ln_last_status();
    if ((st = ln_copy_(tmp, b)) != LN_OK) goto fail;
    ts[1] = tmp;
  }
  st = run_binary(op, 1.0, rt, a, ts);
fail:
  ln_tensor_release(tmp);
  return st;
}
