/*
** l_reduce.c -- reductions from Lua: sum, mean, var, std, max, min, argmax,
** argmin, as Tensor methods and lunet functions.
**
**   x:sum()                  all elements, a 0-dim tensor
**   x:sum(2)  x:sum({2,3})   over dims (1-based, negative from the end)
**   x:sum(2, true)           keepdim; or x:sum(2, {keepdim=true})
**   x:var(dim?, {unbiased=true, correction=1, keepdim=false})
**   x:max(dim) -> values, indices   (x:max() -> the largest element,
**   x:max(y) -> elementwise maximum; a table of dims gives values only)
** Index tensors returned to Lua are 1-based, as Torch7's, so that x[i]
** and x:select(d, i) accept them as they are.
*/
#include "core/autograd.h"
#include "core/ops.h"
#include "lua/l_common.h"

typedef struct reduce_args {
  int dims[LN_MAX_DIMS];
  int ndims;        /* 0: all dims */
  bool single;      /* one dim given as a number */
  bool keepdim;
  int correction;   /* var/std only */
} reduce_args;

/* Dims at 2 (or an options table there), then keepdim/options at 3 (for
** var/std a boolean at 3 is `unbiased` and keepdim comes at 4). */
static void reduce_parse(lua_State *L, ln_tensor *t, reduce_args *r, bool var) {
  static const char *const fields[] = { "keepdim", NULL };
  static const char *const var_fields[] = { "keepdim", "unbiased", "correction", NULL };
  int opt = 3;
  r->correction = 1;
  r->single = lua_type(L, 2) == LUA_TNUMBER;
  if (lua_istable(L, 2) && ln_lua_is_options(L, 2)) {
    r->ndims = 0;
    opt = 2;
  } else {
    r->ndims = ln_lua_check_dims(L, 2, ln_tensor_dim(t), r->dims);
  }
  r->keepdim = false;
  if (var && lua_isboolean(L, opt)) {
    r->correction = lua_toboolean(L, opt);
    opt++;
  }
  if (lua_isboolean(L, opt)) {
    r->keepdim = lua_toboolean(L, opt);
    return;
  }
  ln_lua_check_fields(L, opt, var ? var_fields : fields);
  r->keepdim = ln_lua_opt_bool(L, opt, "keepdim", false);
  if (var) {
    r->correction = ln_lua_opt_bool(L, opt, "unbiased", r->correction);
    r->correction = (int)ln_lua_opt_number(L, opt, "correction", r->correction);
  }
}

typedef ln_tensor *(*reduce_fn)(ln_tensor *t, const int *dims, int ndims, bool keepdim);

static int reduce(lua_State *L, reduce_fn fn) {
  ln_tensor *t = ln_lua_check_tensor(L, 1);
  reduce_args r;
  reduce_parse(L, t, &r, false);
  ln_lua_push_tensor(L, fn(t, r.dims, r.ndims, r.keepdim));
  return 1;
}

static int t_sum(lua_State *L) { return reduce(L, ln_sum); }
static int t_mean(lua_State *L) { return reduce(L, ln_mean); }

static int t_var(lua_State *L) {
  ln_tensor *t = ln_lua_check_tensor(L, 1);
  reduce_args r;
  reduce_parse(L, t, &r, true);
  ln_lua_push_tensor(L, ln_var(t, r.dims, r.ndims, r.correction, r.keepdim));
  return 1;
}

static int t_std(lua_State *L) {
  t_var(L);
  ln_lua_push_tensor(L, ln_unary(LN_SQRT, ln_lua_check_tensor(L, -1)));
  return 1;
}

/* ---- arg-reductions ---- */

/* 1-based indices of the largest (or, negated, smallest) element along d,
** without history. `negate` compares -t (bool promoted to int64 first). */
static ln_tensor *arg_extreme(ln_tensor *t, int d, bool keepdim, bool negate) {
  bool was = ln_set_grad_enabled(false);
  ln_tensor *src = t, *tmp = NULL, *idx = NULL, *one = NULL, *r = NULL;
  ln_tensor_retain(src);
  if (negate) {
    if (ln_tensor_dtype(t) == LN_BOOL) {
      tmp = ln_to_dtype(t, LN_I64);
      if (tmp == NULL) goto done;
      ln_tensor_release(src);
      src = tmp;
    }
    tmp = ln_neg(src);
    if (tmp == NULL) goto done;
    ln_tensor_release(src);
    src = tmp;
  }
  idx = ln_argmax(src, d, keepdim);
  one = idx ? ln_scalar(1, LN_I64) : NULL;
  r = one ? ln_add(idx, one) : NULL;
done:
  ln_set_grad_enabled(was);
  ln_tensor_release(src);
  ln_tensor_release(idx);
  ln_tensor_release(one);
  return r;
}

/* Index tensors over all elements use the flattened tensor. */
static int argfn(lua_State *L, bool negate) {
  ln_tensor *t = ln_lua_check_tensor(L, 1);
  bool keepdim = lua_toboolean(L, 3);
  if (!lua_isnoneornil(L, 2)) {
    int d = ln_lua_check_dim(L, 2, ln_tensor_dim(t));
    ln_lua_push_tensor(L, arg_extreme(t, d, keepdim, negate));
    return 1;
  }
  int64_t all = -1;
  ln_lua_push_tensor(L, ln_reshape(t, &all, 1));
  ln_lua_push_tensor(L, arg_extreme(ln_lua_check_tensor(L, -1), 0, false, negate));
  return 1;
}

static int t_argmax(lua_State *L) { return argfn(L, false); }
static int t_argmin(lua_State *L) { return argfn(L, true); }

/* x:max() / x:max(dim, keepdim?) -> values, indices / x:max({dims}) /
** x:max(y) elementwise. */
static int extreme(lua_State *L, bool is_max) {
  ln_tensor *t = ln_lua_check_tensor(L, 1);
  if (luaL_testudata(L, 2, LN_TENSOR_MT)) {
    ln_tensor *o = ln_lua_check_tensor(L, 2);
    ln_lua_push_tensor(L, ln_binary(is_max ? LN_MAXIMUM : LN_MINIMUM, t, o));
    return 1;
  }
  reduce_args r;
  reduce_parse(L, t, &r, false);
  reduce_fn fn = is_max ? ln_max : ln_min;
  ln_lua_push_tensor(L, fn(t, r.dims, r.ndims, r.keepdim));
  if (!r.single) return 1;
  ln_lua_push_tensor(L, arg_extreme(t, r.dims[0], r.keepdim, !is_max));
  return 2;
}

static int t_max(lua_State *L) { return extreme(L, true); }
static int t_min(lua_State *L) { return extreme(L, false); }

static const luaL_Reg funcs[] = {
  { "sum", t_sum }, { "mean", t_mean }, { "var", t_var }, { "std", t_std },
  { "max", t_max }, { "min", t_min }, { "argmax", t_argmax }, { "argmin", t_argmin },
  { NULL, NULL }
};

/* Registers into the lunet table on top and into the Tensor methods. */
void ln_lua_open_reduce(lua_State *L) {
  luaL_setfuncs(L, funcs, 0);
  ln_lua_push_tensor_table(L, "methods");
  luaL_setfuncs(L, funcs, 0);
  lua_pop(L, 1);
}
