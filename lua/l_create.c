/*
** l_create.c -- creating tensors from Lua: lunet.tensor from nested
** tables, zeros/ones/empty/full/rand/randn/arange (sizes as integers or one
** table, then an options table {dtype=, device=, requires_grad=}), the
** *_like variants, the RNG's seed and state, and x:uniform_/x:normal_.
**
** Every new C tensor is pushed (handed to the collector) before anything
** that can raise, so an error never leaks one.
*/
#include <string.h>

#include "core/ops.h"
#include "core/random.h"
#include "lua/l_common.h"

static const char *const create_fields[] = { "dtype", "device", "requires_grad", NULL };

/* Move the tensor on top of the stack to `dev` (replacing it there) and
** apply requires_grad from the options at opts. */
static void finish(lua_State *L, int opts, ln_device dev) {
  ln_tensor *t = ln_lua_check_tensor(L, -1);
  if (!ln_device_eq(ln_tensor_device(t), dev)) {
    ln_lua_push_tensor(L, ln_to_device(t, dev));
    lua_remove(L, -2);
    t = ln_lua_check_tensor(L, -1);
  }
  ln_lua_apply_requires_grad(L, opts, t);
}

/* ---- lunet.tensor(data, opts) ---- */

/* Element kinds in promotion order. */
enum { KIND_NONE, KIND_BOOL, KIND_INT, KIND_FLOAT };

typedef struct nested {
  int ndim;
  int64_t sizes[LN_MAX_DIMS];
  int kind;
} nested;

/* Sizes from following [1] down from the value at idx. */
static void nested_shape(lua_State *L, int idx, nested *s) {
  lua_pushvalue(L, idx);
  while (lua_istable(L, -1)) {
    if (s->ndim == LN_MAX_DIMS)
      luaL_error(L, "too many dimensions (at most %d)", LN_MAX_DIMS);
    int64_t n = (int64_t)lua_rawlen(L, -1);
    s->sizes[s->ndim++] = n;
    if (n == 0) break;
    lua_rawgeti(L, -1, 1);
    lua_remove(L, -2);
  }
  lua_pop(L, 1);
}

/* Check that the value on top is a sequence of the shape from dim d on,
** and record the widest element kind. Dims in messages are 1-based. */
static void nested_check(lua_State *L, nested *s, int d) {
  if (d == s->ndim) {
    int k = lua_isboolean(L, -1) ? KIND_BOOL
          : lua_isinteger(L, -1) ? KIND_INT
          : lua_type(L, -1) == LUA_TNUMBER ? KIND_FLOAT : KIND_NONE;
    if (k == KIND_NONE)
      luaL_error(L, "expected a number or boolean at dim %d (got %s)", d,
                 luaL_typename(L, -1));
    if (k > s->kind) s->kind = k;
    return;
  }
  if (!lua_istable(L, -1))
    luaL_error(L, "expected sequence of length %d at dim %d (got %s)",
               (int)s->sizes[d], d + 1, luaL_typename(L, -1));
  int64_t n = (int64_t)lua_rawlen(L, -1);
  if (n != s->sizes[d])
    luaL_error(L, "expected sequence of length %d at dim %d (got %d)",
               (int)s->sizes[d], d + 1, (int)n);
  luaL_checkstack(L, 2, "tensor too deep");
  for (int64_t i = 1; i <= n; i++) {
    lua_rawgeti(L, -1, (lua_Integer)i);
    nested_check(L, s, d + 1);
    lua_pop(L, 1);
  }
}

/* Write the elements of the (checked) value on top, row-major, at *p. */
static void nested_fill(lua_State *L, const nested *s, int d, char **p,
                        ln_dtype dt) {
  if (d == s->ndim) {
    if (dt == LN_I64 && lua_isinteger(L, -1)) {
      int64_t v = (int64_t)lua_tointeger(L, -1);
      memcpy(*p, &v, sizeof v);
    } else if (dt == LN_I64 && !lua_isboolean(L, -1) &&
               !ln_dtype_fits(lua_tonumber(L, -1), LN_I64)) {   /* NaN, inf, 1e300 */
      luaL_error(L, "value cannot be converted to type int64 without overflow");
    } else {
      ln_store_double(*p, dt, lua_isboolean(L, -1) ? lua_toboolean(L, -1)
                                                    : lua_tonumber(L, -1));
    }
    *p += ln_dtype_size(dt);
    return;
  }
  for (int64_t i = 1; i <= s->sizes[d]; i++) {
    lua_rawgeti(L, -1, (lua_Integer)i);
    nested_fill(L, s, d + 1, p, dt);
    lua_pop(L, 1);
  }
}

/* lunet.tensor(data, opts): data is a number, a boolean, nested tables of
** them, or a tensor (copied, without history). The dtype is inferred as
** bool (all booleans), int64 (all integers) or float32. */
static int l_tensor(lua_State *L) {
  ln_lua_check_fields(L, 2, create_fields);
  ln_device dev = ln_lua_opt_device(L, 2, LN_DEVICE_CPU);
  ln_tensor *src = ln_lua_to_tensor(L, 1);
  if (src) {
    ln_dtype dt = ln_lua_opt_dtype(L, 2, ln_tensor_dtype(src));
    ln_tensor *d = ln_lua_check(L, ln_detach(ln_lua_check_tensor(L, 1)));
    ln_lua_push_tensor(L, d);
    ln_lua_push_tensor(L, ln_clone(d, LN_CONTIGUOUS));
    if (ln_tensor_dtype(d) != dt) ln_lua_push_tensor(L, ln_to_dtype(ln_lua_check_tensor(L, -1), dt));
    finish(L, 2, dev);
    return 1;
  }
  int ty = lua_type(L, 1);
  luaL_argexpected(L, ty == LUA_TTABLE || ty == LUA_TNUMBER || ty == LUA_TBOOLEAN,
                   1, "table, number, boolean or tensor");
  nested s = { 0 };
  lua_settop(L, 2);
  nested_shape(L, 1, &s);
  lua_pushvalue(L, 1);
  nested_check(L, &s, 0);
  static const ln_dtype inferred[] = {
    [KIND_NONE] = LN_F32, [KIND_BOOL] = LN_BOOL, [KIND_INT] = LN_I64, [KIND_FLOAT] = LN_F32
  };
  ln_dtype dt = ln_lua_opt_dtype(L, 2, inferred[s.kind]);
  ln_lua_push_tensor(L, ln_empty(s.sizes, s.ndim, dt, LN_DEVICE_CPU));
  ln_tensor *t = ln_lua_check_tensor(L, -1);
  char *p = ln_tensor_data(t);
  lua_pushvalue(L, 1);
  nested_fill(L, &s, 0, &p, dt);
  lua_pop(L, 1);
  finish(L, 2, dev);
  return 1;
}

/* ---- sized creation ---- */

typedef enum fill_kind { FILL_EMPTY, FILL_ZEROS, FILL_ONES, FILL_VALUE,
                         FILL_RAND, FILL_RANDN } fill_kind;

/* full's value: an integer stays exact in an int64 tensor. */
typedef struct fill_value { double d; lua_Integer i; bool integer; } fill_value;

/* A new tensor of `sizes` in memory format `fmt`, filled as k says. */
static ln_tensor *create(fill_kind k, const int64_t *sizes, int nd, fill_value v,
                         ln_dtype dt, ln_device dev, ln_memory_format fmt) {
  ln_tensor *t = ln_empty_format(sizes, nd, dt, dev, fmt);
  ln_status st = LN_OK;
  if (!t) return NULL;
  switch (k) {
  case FILL_EMPTY: break;
  case FILL_ZEROS: st = ln_fill_(t, 0.0); break;
  case FILL_ONES: st = ln_fill_(t, 1.0); break;
  case FILL_VALUE: st = v.integer ? ln_fill_int_(t, v.i) : ln_fill_(t, v.d); break;
  case FILL_RAND: st = ln_uniform_(t, 0.0, 1.0); break;
  case FILL_RANDN: st = ln_normal_(t, 0.0, 1.0); break;
  }
  if (st == LN_OK) return t;
  ln_tensor_release(t);
  return NULL;
}

/* The dtype PyTorch's full() infers from its fill value. */
static ln_dtype value_dtype(lua_State *L, int idx) {
  if (lua_isboolean(L, idx)) return LN_BOOL;
  return lua_isinteger(L, idx) ? LN_I64 : LN_F32;
}

static fill_value check_value(lua_State *L, int idx) {
  if (lua_isboolean(L, idx)) return (fill_value){ .d = lua_toboolean(L, idx) };
  fill_value v = { .d = luaL_checknumber(L, idx), .integer = lua_isinteger(L, idx) };
  if (v.integer) v.i = lua_tointeger(L, idx);
  return v;
}

/* f(sizes..., opts) and full(sizes, value, opts). */
static int create_sized(lua_State *L, fill_kind k) {
  int64_t sizes[LN_MAX_DIMS];
  int next;
  int nd = ln_lua_check_sizes(L, 1, sizes, &next, false);
  fill_value v = { 0 };
  ln_dtype dt = LN_F32;
  if (k == FILL_VALUE) {
    v = check_value(L, next);
    dt = value_dtype(L, next);
    next++;
  }
  ln_lua_check_fields(L, next, create_fields);
  dt = ln_lua_opt_dtype(L, next, dt);
  ln_device dev = ln_lua_opt_device(L, next, LN_DEVICE_CPU);
  luaL_argcheck(L, lua_gettop(L) <= next, next + 1, "no more arguments expected");
  lua_settop(L, next);   /* the result goes above the options */
  ln_lua_push_tensor(L, create(k, sizes, nd, v, dt, dev, LN_CONTIGUOUS));
  ln_lua_apply_requires_grad(L, next, ln_lua_check_tensor(L, -1));
  return 1;
}

static int l_empty(lua_State *L) { return create_sized(L, FILL_EMPTY); }
static int l_zeros(lua_State *L) { return create_sized(L, FILL_ZEROS); }
static int l_ones(lua_State *L) { return create_sized(L, FILL_ONES); }
static int l_full(lua_State *L) { return create_sized(L, FILL_VALUE); }
static int l_rand(lua_State *L) { return create_sized(L, FILL_RAND); }
static int l_randn(lua_State *L) { return create_sized(L, FILL_RANDN); }

/* f_like(t, opts) and full_like(t, value, opts): t's sizes, dtype, device
** and memory format (channels-last stays channels-last, as PyTorch's
** preserve_format). */
static int create_like(lua_State *L, fill_kind k) {
  ln_tensor *t = ln_lua_check_tensor(L, 1);
  int opts = 2;
  fill_value v = { 0 };
  if (k == FILL_VALUE) v = check_value(L, opts++);
  ln_lua_check_fields(L, opts, create_fields);
  ln_dtype dt = ln_lua_opt_dtype(L, opts, ln_tensor_dtype(t));
  ln_device dev = ln_lua_opt_device(L, opts, ln_tensor_device(t));
  lua_settop(L, opts);
  ln_lua_push_tensor(L, create(k, ln_tensor_sizes(t), ln_tensor_dim(t), v, dt, dev,
                            ln_tensor_suggest_format(t)));
  ln_lua_apply_requires_grad(L, opts, ln_lua_check_tensor(L, -1));
  return 1;
}

static int l_empty_like(lua_State *L) { return create_like(L, FILL_EMPTY); }
static int l_zeros_like(lua_State *L) { return create_like(L, FILL_ZEROS); }
static int l_ones_like(lua_State *L) { return create_like(L, FILL_ONES); }
static int l_full_like(lua_State *L) { return create_like(L, FILL_VALUE); }
static int l_rand_like(lua_State *L) { return create_like(L, FILL_RAND); }
static int l_randn_like(lua_State *L) { return create_like(L, FILL_RANDN); }

/* arange(n) / arange(a, b) / arange(a, b, step), opts last: int64 when
** every bound is an integer, float32 otherwise (as PyTorch). */
static int l_arange(lua_State *L) {
  double v[3] = { 0, 0, 1 };
  lua_Integer iv[3] = { 0, 0, 1 };   /* exact, for int64 */
  int n = 0;
  bool integral = true;
  while (n < 3 && lua_type(L, n + 1) == LUA_TNUMBER) {
    v[n] = lua_tonumber(L, n + 1);
    integral = integral && lua_isinteger(L, n + 1);
    if (integral) iv[n] = lua_tointeger(L, n + 1);
    n++;
  }
  luaL_argexpected(L, n > 0, 1, "number");
  if (n == 1) { v[1] = v[0]; v[0] = 0; iv[1] = iv[0]; iv[0] = 0; }
  int opts = n + 1;
  ln_lua_check_fields(L, opts, create_fields);
  ln_dtype dt = ln_lua_opt_dtype(L, opts, integral ? LN_I64 : LN_F32);
  ln_device dev = ln_lua_opt_device(L, opts, LN_DEVICE_CPU);
  lua_settop(L, opts);
  ln_lua_push_tensor(L, integral && dt == LN_I64 ? ln_arange_int(iv[0], iv[1], iv[2])
                                                 : ln_arange(v[0], v[1], v[2], dt));
  finish(L, opts, dev);
  return 1;
}

/* lunet.randperm(n): a random permutation of 1..n (int64), 1-based as
** every index tensor given to Lua. */
static int l_randperm(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  luaL_argcheck(L, n >= 0, 1, "n must be non-negative");
  ln_lua_push_tensor(L, ln_randperm(n));
  ln_tensor *one = ln_lua_check(L, ln_scalar(1, LN_I64));   /* 1-based */
  ln_status st = ln_binary_(LN_ADD, ln_lua_check_tensor(L, -1), one);
  ln_tensor_release(one);
  ln_lua_check_status(L, st);
  return 1;
}

/* ---- the generator ---- */

static int l_manual_seed(lua_State *L) {
  ln_manual_seed((uint64_t)luaL_checkinteger(L, 1));
  return 0;
}

static int l_initial_seed(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)ln_initial_seed());
  return 1;
}

/* get_rng_state() -> {seed=, offset=}; set_rng_state(that table). */
static int l_get_rng_state(lua_State *L) {
  ln_rng_state s = ln_rng_get_state();
  lua_createtable(L, 0, 2);
  ln_lua_set_integer(L, "seed", s.seed);
  ln_lua_set_integer(L, "offset", s.offset);
  return 1;
}

static int l_set_rng_state(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  ln_rng_state s;
  lua_getfield(L, 1, "seed");
  lua_getfield(L, 1, "offset");
  s.seed = (uint64_t)luaL_checkinteger(L, -2);
  s.offset = (uint64_t)luaL_checkinteger(L, -1);
  ln_rng_set_state(s);
  return 0;
}

/* x:uniform_(from=0, to=1), x:normal_(mean=0, std=1): fill in place from
** the generator; return x. */
static int fill_random(lua_State *L, ln_status (*fill)(ln_tensor *, double, double)) {
  ln_tensor *t = ln_lua_check_tensor(L, 1);
  double a = luaL_optnumber(L, 2, 0), b = luaL_optnumber(L, 3, 1);
  ln_lua_check_status(L, fill(t, a, b));
  lua_settop(L, 1);
  return 1;
}

static int t_uniform_(lua_State *L) { return fill_random(L, ln_uniform_); }
static int t_normal_(lua_State *L) { return fill_random(L, ln_normal_); }

static const luaL_Reg methods[] = {
  { "uniform_", t_uniform_ }, { "normal_", t_normal_ },
  { NULL, NULL }
};

static const luaL_Reg funcs[] = {
  { "tensor", l_tensor }, { "empty", l_empty }, { "zeros", l_zeros },
  { "ones", l_ones }, { "full", l_full }, { "rand", l_rand }, { "randn", l_randn },
  { "empty_like", l_empty_like }, { "zeros_like", l_zeros_like },
  { "ones_like", l_ones_like }, { "full_like", l_full_like },
  { "rand_like", l_rand_like }, { "randn_like", l_randn_like },
  { "arange", l_arange }, { "randperm", l_randperm },
  { "manual_seed", l_manual_seed }, { "initial_seed", l_initial_seed },
  { "get_rng_state", l_get_rng_state }, { "set_rng_state", l_set_rng_state },
  { NULL, NULL }
};

void ln_lua_open_create(lua_State *L) {
  luaL_setfuncs(L, funcs, 0);
  ln_lua_push_tensor_table(L, "methods");
  luaL_setfuncs(L, methods, 0);
  lua_pop(L, 1);
}
