/*
** l_batchnorm.c -- the BatchNorm family from Lua: the table lunet._batchnorm
** that lua/lunet/nn/batchnorm.lua turns into nn.BatchNorm1d/2d/3d,
** nn.LazyBatchNorm1d/2d/3d, nn.FusedBatchNorm2d, nn.BatchRenorm1d/2d/3d
** and nn.functional.batch_norm.
**   constructor(dims [, kind]) -> the __call of a class: (cls, [C,] opts) -> module;
**       kind "batchnorm" (the default), "lazy", "fused" or "renorm"
**   reset_parameters(m), reset_running_stats(m) -> m
**   batch_norm(x, running_mean, running_var, weight, bias, training,
**              momentum, eps) -> tensor
**   is_batchnorm(v) -> boolean
**   kernel_counts() -> {plane=, rows=, copied=} (forwards per kernel layout)
** Options tables are checked for unknown keys, so that a misspelt option
** is an error rather than a silently ignored field.
*/
#include <string.h>

#include "lua/l_common.h"
#include "nn/batchnorm.h"

/* BatchNorm's options; BatchRenorm's add rmax and dmax (the last two). */
static const char *const option_fields[] = {
  "eps", "momentum", "affine", "track_running_stats", "dtype", "device",
  "virtual_batch_size", "ema_update", "rmax", "dmax", NULL
};
#define N_BN_OPTIONS 8

enum kind { K_BN, K_LAZY, K_FUSED, K_RENORM };

/* The options table at idx (absent: defaults). momentum=false is
** PyTorch's momentum=None (cumulative moving average); virtual_batch_size
** false or absent is none. */
static ln_batchnorm_options check_options(lua_State *L, int idx, enum kind kind) {
  ln_batchnorm_options o = ln_batchnorm_defaults();
  if (lua_isnoneornil(L, idx)) return o;
  luaL_argexpected(L, lua_istable(L, idx), idx, "options table");
  const char *fields[N_BN_OPTIONS + 3];
  int nf = kind == K_RENORM ? N_BN_OPTIONS + 2 : N_BN_OPTIONS;
  memcpy(fields, option_fields, sizeof(char *) * (size_t)nf);
  fields[nf] = NULL;
  ln_lua_check_fields(L, idx, fields);
  o.eps = ln_lua_opt_number(L, idx, "eps", o.eps);
  int t = lua_getfield(L, idx, "momentum");
  if (t == LUA_TNUMBER) {
    o.momentum = lua_tonumber(L, -1);
  } else if (t == LUA_TBOOLEAN && !lua_toboolean(L, -1)) {
    o.cumulative = true;
  } else if (t != LUA_TNIL) {
    luaL_argerror(L, idx, lua_pushfstring(L, "option 'momentum': number or false "
                                          "expected, got %s", luaL_typename(L, -1)));
  }
  lua_pop(L, 1);
  o.affine = ln_lua_opt_bool(L, idx, "affine", o.affine);
  o.track_running_stats = ln_lua_opt_bool(L, idx, "track_running_stats",
                                          o.track_running_stats);
  o.dtype = ln_lua_opt_dtype(L, idx, o.dtype);
  o.device = ln_lua_opt_device(L, idx, o.device);
  t = lua_getfield(L, idx, "virtual_batch_size");
  if (t == LUA_TNUMBER && lua_isinteger(L, -1) && lua_tointeger(L, -1) > 0)
    o.virtual_batch_size = lua_tointeger(L, -1);
  else if (t != LUA_TNIL && !(t == LUA_TBOOLEAN && !lua_toboolean(L, -1)))
    luaL_argerror(L, idx, lua_pushfstring(L, "option 'virtual_batch_size': positive integer "
                                          "or false expected, got %s",
                                          luaL_tolstring(L, -1, NULL)));
  lua_pop(L, 1);
  static const char *const ema[] = { "internal", "skip", NULL };
  t = lua_getfield(L, idx, "ema_update");
  if (t != LUA_TNIL) {
    int i = 0;
    while (ema[i] && !(t == LUA_TSTRING && strcmp(lua_tostring(L, -1), ema[i]) == 0)) i++;
    if (!ema[i])
      luaL_argerror(L, idx, lua_pushfstring(L, "option 'ema_update': \"internal\" or "
                                            "\"skip\" expected, got %s",
                                            luaL_tolstring(L, -1, NULL)));
    o.ema_update = i ? LN_BN_EMA_SKIP : LN_BN_EMA_INTERNAL;
  }
  lua_pop(L, 1);
  return o;
}

/* The class's __call: upvalues dims and kind. The class argument is
** dropped first, so that argument errors count from the user's first.
** BatchRenorm's rmax and dmax default to 3 and 5 (tensorpack's). */
static int l_new(lua_State *L) {
  int dims = (int)lua_tointeger(L, lua_upvalueindex(1));
  enum kind kind = (enum kind)lua_tointeger(L, lua_upvalueindex(2));
  lua_remove(L, 1);
  int64_t c = kind == K_LAZY ? 0 : (int64_t)luaL_checkinteger(L, 1);
  int opt = kind == K_LAZY ? 1 : 2;
  ln_batchnorm_options o = check_options(L, opt, kind);
  double rmax = 3, dmax = 5;
  if (kind == K_RENORM) {
    rmax = ln_lua_opt_number(L, opt, "rmax", rmax);
    dmax = ln_lua_opt_number(L, opt, "dmax", dmax);
  }
  luaL_argcheck(L, lua_gettop(L) <= opt, opt + 1, "no more arguments expected");
  ln_module *m = kind == K_LAZY ? ln_lazy_batchnorm_new(dims, &o)
               : kind == K_FUSED ? ln_fused_batchnorm2d_new(c, &o)
               : kind == K_RENORM ? ln_batchrenorm_new(dims, c, &o, rmax, dmax)
               : ln_batchnorm_new(dims, c, &o);
  if (!m) return ln_lua_error(L);
  ln_lua_push_module(L, m);
  ln_module_release(m);   /* the object holds its own reference */
  return 1;
}

/* _batchnorm.constructor(dims [, kind]) -> the constructor closure. */
static int l_constructor(lua_State *L) {
  static const char *const kinds[] = { "batchnorm", "lazy", "fused", "renorm", NULL };
  lua_Integer dims = luaL_checkinteger(L, 1);
  luaL_argcheck(L, dims >= 1 && dims <= 3, 1, "1, 2 or 3 expected");
  int kind = luaL_checkoption(L, 2, "batchnorm", kinds);
  lua_settop(L, 1);
  lua_pushinteger(L, kind);
  lua_pushcclosure(L, l_new, 2);
  return 1;
}

static int l_reset_parameters(lua_State *L) {
  ln_lua_check_status(L, ln_batchnorm_reset_parameters(ln_lua_check_module(L, 1)));
  lua_settop(L, 1);
  return 1;
}

static int l_reset_running_stats(lua_State *L) {
  ln_lua_check_status(L, ln_batchnorm_reset_running_stats(ln_lua_check_module(L, 1)));
  lua_settop(L, 1);
  return 1;
}

static int l_is_batchnorm(lua_State *L) {
  ln_module *m = ln_lua_to_module(L, 1);
  lua_pushboolean(L, m && ln_is_batchnorm(m));
  return 1;
}

/* _batchnorm.kernel_counts() -> {plane=, rows=, copied=}: the forwards
** run on each kernel layout so far (ln_bn_kernel_counts_now), for tests. */
static int l_kernel_counts(lua_State *L) {
  ln_bn_kernel_counts c = ln_bn_kernel_counts_now();
  lua_createtable(L, 0, 3);
  ln_lua_set_integer(L, "plane", c.plane);
  ln_lua_set_integer(L, "rows", c.rows);
  ln_lua_set_integer(L, "copied", c.copied);
  return 1;
}

static ln_tensor *opt_tensor(lua_State *L, int idx) {
  return lua_isnoneornil(L, idx) ? NULL : ln_lua_check_tensor(L, idx);
}

/* nn.functional.batch_norm(x, running_mean, running_var, weight, bias,
** training=false, momentum=0.1, eps=1e-5), nil for an absent tensor. */
static int l_batch_norm(lua_State *L) {
  ln_tensor *x = ln_lua_check_tensor(L, 1);
  ln_tensor *rm = opt_tensor(L, 2), *rv = opt_tensor(L, 3);
  ln_tensor *w = opt_tensor(L, 4), *b = opt_tensor(L, 5);
  bool training = false;
  if (!lua_isnoneornil(L, 6)) {
    luaL_checktype(L, 6, LUA_TBOOLEAN);
    training = lua_toboolean(L, 6);
  }
  double momentum = luaL_optnumber(L, 7, 0.1);
  double eps = luaL_optnumber(L, 8, 1e-5);
  luaL_argcheck(L, lua_gettop(L) <= 8, 9, "no more arguments expected");
  ln_lua_push_tensor(L, ln_batch_norm(x, rm, rv, w, b, training, momentum, eps));
  return 1;
}

static const luaL_Reg funcs[] = {
  { "constructor", l_constructor },
  { "reset_parameters", l_reset_parameters },
  { "reset_running_stats", l_reset_running_stats },
  { "is_batchnorm", l_is_batchnorm },
  { "batch_norm", l_batch_norm },
  { "kernel_counts", l_kernel_counts },
  { NULL, NULL }
};

/* Sets lunet._batchnorm in the table on top of the stack. */
void ln_lua_open_batchnorm(lua_State *L) {
  lua_createtable(L, 0, 6);
  luaL_setfuncs(L, funcs, 0);
  lua_setfield(L, -2, "_batchnorm");
}
