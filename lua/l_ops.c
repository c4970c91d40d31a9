/*
** l_ops.c -- arithmetic on tensors from Lua: the operators (+ - * / ^ and
** unary minus, with a number on either side), elementwise methods,
** comparisons, matmul, add/sub and in-place add_/sub_ with {alpha=},
** mul_/div_/pow_, lunet.cat and lunet.allclose. The same functions are
** also lunet.add(a, b), lunet.exp(x)...
** `==` stays identity (see l_tensor.c): use x:eq(y).
** Reductions live in l_reduce.c.
*/
#include <math.h>

#include "core/ops.h"
#include "lua/l_common.h"

/* ---- operands ---- */

/* The tensor at idx (borrowed), or NULL for a number or boolean; anything
** else raises. Raises before any C temporary exists. */
static ln_tensor *operand(lua_State *L, int idx) {
  int ty = lua_type(L, idx);
  if (ty == LUA_TNUMBER || ty == LUA_TBOOLEAN) return NULL;
  if (luaL_testudata(L, idx, LN_TENSOR_MT) == NULL) luaL_typeerror(L, idx, "tensor or number");
  return ln_lua_check_tensor(L, idx);
}

/* A new reference: the tensor t, or the scalar at idx shaped for `like`. */
static ln_tensor *make_operand(lua_State *L, int idx, ln_tensor *t, ln_tensor *like) {
  if (t) {
    ln_tensor_retain(t);
    return t;
  }
  if (lua_isboolean(L, idx)) return ln_scalar(lua_toboolean(L, idx), LN_BOOL);
  if (lua_isinteger(L, idx)) return ln_scalar_like_int(like, lua_tointeger(L, idx));
  return ln_scalar_like(like, lua_tonumber(L, idx), false);
}

/* Both operands at 1 and 2 as new references (at least one is a tensor).
** Returns false with the error set when one could not be made. */
static bool operands(lua_State *L, ln_tensor **a, ln_tensor **b) {
  ln_tensor *ta = operand(L, 1), *tb = operand(L, 2);
  if (!ta && !tb) luaL_typeerror(L, 1, "tensor");
  *a = make_operand(L, 1, ta, ta ? ta : tb);
  *b = *a ? make_operand(L, 2, tb, ta ? ta : tb) : NULL;
  if (*b) return true;
  ln_tensor_release(*a);
  return false;
}

typedef ln_tensor *(*pair_fn)(int op, ln_tensor *a, ln_tensor *b);

static ln_tensor *do_binary(int op, ln_tensor *a, ln_tensor *b) {
  return ln_binary((ln_binary_op)op, a, b);
}

static ln_tensor *do_compare(int op, ln_tensor *a, ln_tensor *b) {
  return ln_compare((ln_compare_op)op, a, b);
}

static int pair(lua_State *L, pair_fn fn, int op) {
  ln_tensor *a, *b;
  if (!operands(L, &a, &b)) return ln_lua_error(L);
  ln_tensor *r = fn(op, a, b);
  ln_tensor_release(a);
  ln_tensor_release(b);
  ln_lua_push_tensor(L, r);
  return 1;
}

static int t_mul(lua_State *L) { return pair(L, do_binary, LN_MUL); }
static int t_div(lua_State *L) { return pair(L, do_binary, LN_DIV); }
/* An integral tensor (int64, bool) to a negative integer given as a number
** is refused, as PyTorch's pow(Tensor, Scalar); with a tensor exponent it
** gives what integer arithmetic gives (0 unless the base is 1 or -1). */
static void check_int_pow(lua_State *L) {
  ln_tensor *base = ln_lua_to_tensor(L, 1);
  if (base && !ln_dtype_is_float(ln_tensor_dtype(base)) && lua_isinteger(L, 2) &&
      lua_tointeger(L, 2) < 0)
    luaL_error(L, "Integers to negative integer powers are not allowed.");
}

static int t_pow(lua_State *L) {
  check_int_pow(L);
  return pair(L, do_binary, LN_POW);
}
static int t_maximum(lua_State *L) { return pair(L, do_binary, LN_MAXIMUM); }
static int t_minimum(lua_State *L) { return pair(L, do_binary, LN_MINIMUM); }
static int t_eq(lua_State *L) { return pair(L, do_compare, LN_EQ); }
static int t_ne(lua_State *L) { return pair(L, do_compare, LN_NE); }
static int t_lt(lua_State *L) { return pair(L, do_compare, LN_LT); }
static int t_le(lua_State *L) { return pair(L, do_compare, LN_LE); }
static int t_gt(lua_State *L) { return pair(L, do_compare, LN_GT); }
static int t_ge(lua_State *L) { return pair(L, do_compare, LN_GE); }

/* ---- unary ---- */

static int unary(lua_State *L, ln_unary_op op) {
  ln_lua_push_tensor(L, ln_unary(op, ln_lua_check_tensor(L, 1)));
  return 1;
}

static int t_neg(lua_State *L) { return unary(L, LN_NEG); }
static int t_abs(lua_State *L) { return unary(L, LN_ABS); }
static int t_sqrt(lua_State *L) { return unary(L, LN_SQRT); }
static int t_exp(lua_State *L) { return unary(L, LN_EXP); }
static int t_log(lua_State *L) { return unary(L, LN_LOG); }
static int t_relu(lua_State *L) { return unary(L, LN_RELU); }
static int t_sign(lua_State *L) { return unary(L, LN_SIGN); }

/* ---- alpha: x:add(y, {alpha=2}), x:sub_(y, {alpha=2}) ---- */

static const char *const alpha_fields[] = { "alpha", NULL };

/* alpha: a float, or an integer (kept exact, and keeping int64 operands
** int64). */
typedef struct alpha_arg { double d; lua_Integer i; bool is_int; } alpha_arg;

/* The alpha of the options at idx (the integer 1 when absent). */
static alpha_arg check_alpha(lua_State *L, int idx) {
  alpha_arg a = { .d = 1, .i = 1, .is_int = true };
  ln_lua_check_fields(L, idx, alpha_fields);
  a.d = ln_lua_opt_number(L, idx, "alpha", 1);
  if (lua_istable(L, idx)) {
    if (lua_getfield(L, idx, "alpha") != LUA_TNIL) {
      a.is_int = lua_isinteger(L, -1);
      a.i = a.is_int ? lua_tointeger(L, -1) : 0;
    }
    lua_pop(L, 1);
  }
  return a;
}

/* Is the operand at idx (tensor t, or a number when t is NULL) integral? */
static bool integral(lua_State *L, int idx, ln_tensor *t) {
  if (t) return !ln_dtype_is_float(ln_tensor_dtype(t));
  return lua_isboolean(L, idx) || lua_isinteger(L, idx);
}

/* PyTorch refuses a float alpha when both operands are integral, rather than
** truncating it. Raises before any C temporary exists. */
static void check_float_alpha(lua_State *L, alpha_arg alpha, ln_tensor *a, ln_tensor *b) {
  if (!alpha.is_int && integral(L, 1, a) && integral(L, 2, b))
    luaL_error(L, "For integral input tensors, argument alpha must not be a floating point "
               "number.");
}

/* alpha times the operand at 2 (tensor t, or a number when t is NULL), a
** new reference shaped for `like`; NULL with the error set. Integers
** multiply exactly, wrapping as int64 does. */
static ln_tensor *scaled_operand(lua_State *L, ln_tensor *t, ln_tensor *like, alpha_arg alpha) {
  if (t == NULL) {   /* a number: scale it here */
    if (lua_isboolean(L, 2)) return ln_scalar(lua_toboolean(L, 2), LN_BOOL);
    if (lua_isinteger(L, 2) && alpha.is_int)
      return ln_scalar_like_int(like, (int64_t)((uint64_t)alpha.i *
                                                (uint64_t)lua_tointeger(L, 2)));
    return ln_scalar_like(like, alpha.d * lua_tonumber(L, 2), false);
  }
  if (alpha.is_int ? alpha.i == 1 : alpha.d == 1) {
    ln_tensor_retain(t);
    return t;
  }
  ln_tensor *s = alpha.is_int ? ln_scalar_like_int(t, alpha.i) : ln_scalar_like(t, alpha.d, false);
  ln_tensor *b = s ? ln_mul(t, s) : NULL;
  ln_tensor_release(s);
  return b;
}

/* x:add(y, {alpha=}) and x:sub(y, {alpha=}): x + alpha * y, x - alpha * y
** (also lunet.add(a, b, opts); the operators have no options). */
static int scaled_pair(lua_State *L, ln_binary_op op) {
  if (lua_isnone(L, 3)) return pair(L, do_binary, op);
  alpha_arg alpha = check_alpha(L, 3);
  luaL_argcheck(L, lua_gettop(L) <= 3, 4, "no more arguments expected");
  ln_tensor *ta = operand(L, 1), *tb = operand(L, 2);
  if (!ta && !tb) luaL_typeerror(L, 1, "tensor");
  check_float_alpha(L, alpha, ta, tb);
  ln_tensor *a = make_operand(L, 1, ta, ta ? ta : tb);
  ln_tensor *b = a ? scaled_operand(L, tb, ta ? ta : tb, alpha) : NULL;
  ln_tensor *r = b ? ln_binary(op, a, b) : NULL;
  ln_tensor_release(a);
  ln_tensor_release(b);
  ln_lua_push_tensor(L, r);
  return 1;
}

/* ---- in place: x:add_(y, {alpha=1}) etc., returning x ---- */

static int inplace(lua_State *L, ln_binary_op op) {
  ln_tensor *self = ln_lua_check_tensor(L, 1);
  ln_tensor *other = operand(L, 2);
  alpha_arg alpha = { .d = 1, .i = 1, .is_int = true };
  if (op == LN_ADD || op == LN_SUB) {
    alpha = check_alpha(L, 3);
    check_float_alpha(L, alpha, self, other);
  } else {
    luaL_argcheck(L, lua_isnone(L, 3), 3, "no more arguments expected");
  }
  ln_tensor *b = scaled_operand(L, other, self, alpha);
  if (b == NULL) return ln_lua_error(L);
  ln_status st = ln_binary_(op, self, b);
  ln_tensor_release(b);
  ln_lua_check_status(L, st);
  lua_settop(L, 1);
  return 1;
}

static int t_add(lua_State *L) { return scaled_pair(L, LN_ADD); }
static int t_sub(lua_State *L) { return scaled_pair(L, LN_SUB); }
static int t_add_(lua_State *L) { return inplace(L, LN_ADD); }
static int t_sub_(lua_State *L) { return inplace(L, LN_SUB); }
static int t_mul_(lua_State *L) { return inplace(L, LN_MUL); }
static int t_div_(lua_State *L) { return inplace(L, LN_DIV); }
static int t_pow_(lua_State *L) {
  check_int_pow(L);
  return inplace(L, LN_POW);
}

/* ---- linear algebra and joining ---- */

static int t_matmul(lua_State *L) {
  ln_tensor *a = ln_lua_check_tensor(L, 1), *b = ln_lua_check_tensor(L, 2);
  ln_lua_push_tensor(L, ln_matmul(a, b));
  return 1;
}

/* lunet.cat({a, b, ...}, dim=1). */
static int l_cat(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 2);
  lua_Integer n = (lua_Integer)lua_rawlen(L, 1);
  luaL_argcheck(L, n > 0, 1, "expected a non-empty list of Tensors");
  luaL_argcheck(L, n <= 1 << 20, 1, "too many tensors");
  ln_tensor **ts = lua_newuserdatauv(L, (size_t)n * sizeof *ts, 0);  /* scratch */
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, 1, i);
    ts[i - 1] = ln_lua_to_tensor(L, -1);
    if (ts[i - 1] == NULL) {
      if (luaL_testudata(L, -1, LN_TENSOR_MT)) ln_lua_check_tensor(L, -1);
      luaL_argerror(L, 1, lua_pushfstring(L, "tensor expected at index %I, got %s",
                                          i, luaL_typename(L, -1)));
    }
    lua_pop(L, 1);
  }
  int d = ln_lua_wrap_dim(L, luaL_optinteger(L, 2, 1), ln_tensor_dim(ts[0]));
  ln_lua_push_tensor(L, ln_cat(ts, (int)n, d));
  return 1;
}

/* ---- allclose ---- */

/* The broadcast shape of a and b; raises PyTorch's message (1-based dim). */
static int broadcast_shape(lua_State *L, ln_tensor *a, ln_tensor *b, int64_t *out) {
  int na = ln_tensor_dim(a), nb = ln_tensor_dim(b), n = na > nb ? na : nb;
  for (int i = 0; i < n; i++) {
    int ia = i - (n - na), ib = i - (n - nb);
    int64_t sa = ia >= 0 ? ln_tensor_size(a, ia) : 1;
    int64_t sb = ib >= 0 ? ln_tensor_size(b, ib) : 1;
    if (sa != sb && sa != 1 && sb != 1)
      luaL_error(L, "The size of tensor a (%I) must match the size of tensor b (%I) "
                 "at non-singleton dimension %d", (lua_Integer)sa, (lua_Integer)sb, i + 1);
    out[i] = sa == 1 ? sb : sa;
  }
  return n;
}

/* t expanded to sizes, as float64 contiguous on the CPU; every step is
** pushed so that the collector owns it. Returns the data. */
static const double *as_f64(lua_State *L, ln_tensor *t, const int64_t *sizes, int n) {
  ln_lua_push_tensor(L, ln_expand(t, sizes, n));
  ln_lua_push_tensor(L, ln_to_device(ln_lua_check_tensor(L, -1), LN_DEVICE_CPU));
  ln_lua_push_tensor(L, ln_to_dtype(ln_lua_check_tensor(L, -1), LN_F64));
  ln_lua_push_tensor(L, ln_contiguous(ln_lua_check_tensor(L, -1), LN_CONTIGUOUS));
  return ln_tensor_data(ln_lua_check_tensor(L, -1));
}

/* lunet.allclose(a, b, {rtol=1e-5, atol=1e-8, equal_nan=false}):
** |a - b| <= atol + rtol * |b| everywhere (broadcasting), as PyTorch. */
static int l_allclose(lua_State *L) {
  static const char *const fields[] = { "rtol", "atol", "equal_nan", NULL };
  ln_tensor *a = ln_lua_check_tensor(L, 1), *b = ln_lua_check_tensor(L, 2);
  ln_lua_check_fields(L, 3, fields);
  double rtol = ln_lua_opt_number(L, 3, "rtol", 1e-5);
  double atol = ln_lua_opt_number(L, 3, "atol", 1e-8);
  bool equal_nan = ln_lua_opt_bool(L, 3, "equal_nan", false);
  int64_t sizes[LN_MAX_DIMS];
  int n = broadcast_shape(L, a, b, sizes);
  const double *x = as_f64(L, a, sizes, n), *y = as_f64(L, b, sizes, n);
  int64_t numel = 1;
  for (int i = 0; i < n; i++) numel *= sizes[i];
  bool close = true;
  for (int64_t i = 0; i < numel && close; i++) {
    if (x[i] == y[i]) continue;
    if (isnan(x[i]) || isnan(y[i])) close = equal_nan && isnan(x[i]) && isnan(y[i]);
    else close = isfinite(x[i]) && isfinite(y[i]) &&
                 fabs(x[i] - y[i]) <= atol + rtol * fabs(y[i]);
  }
  lua_pushboolean(L, close);
  return 1;
}

/* ---- registration ---- */

/* Methods that are also functions of the lunet table. */
static const luaL_Reg funcs[] = {
  { "add", t_add }, { "sub", t_sub }, { "mul", t_mul }, { "div", t_div },
  { "pow", t_pow }, { "maximum", t_maximum }, { "minimum", t_minimum },
  { "eq", t_eq }, { "ne", t_ne }, { "lt", t_lt }, { "le", t_le },
  { "gt", t_gt }, { "ge", t_ge },
  { "neg", t_neg }, { "abs", t_abs }, { "sqrt", t_sqrt }, { "exp", t_exp },
  { "log", t_log }, { "relu", t_relu }, { "sign", t_sign },
  { "matmul", t_matmul },
  { NULL, NULL }
};

static const luaL_Reg methods[] = {
  { "add_", t_add_ }, { "sub_", t_sub_ }, { "mul_", t_mul_ }, { "div_", t_div_ },
  { "pow_", t_pow_ },
  { NULL, NULL }
};

static const luaL_Reg metamethods[] = {
  { "__add", t_add }, { "__sub", t_sub }, { "__mul", t_mul }, { "__div", t_div },
  { "__pow", t_pow }, { "__unm", t_neg },
  { NULL, NULL }
};

static const luaL_Reg lunet_only[] = {
  { "cat", l_cat }, { "allclose", l_allclose },
  { NULL, NULL }
};

void ln_lua_open_ops(lua_State *L) {
  luaL_setfuncs(L, funcs, 0);
  luaL_setfuncs(L, lunet_only, 0);
  ln_lua_push_tensor_table(L, "methods");
  luaL_setfuncs(L, funcs, 0);
  luaL_setfuncs(L, methods, 0);
  lua_pop(L, 1);
  luaL_getmetatable(L, LN_TENSOR_MT);
  luaL_setfuncs(L, metamethods, 0);
  lua_pop(L, 1);
  ln_lua_open_reduce(L);
}
