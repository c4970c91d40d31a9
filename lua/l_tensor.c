/*
** l_tensor.c -- the lunet.Tensor userdata: pushing and checking tensors,
** the metatable (__index: properties, then methods, then integer keys),
** properties, tolist/item and tostring.
**
** A tensor userdata holds one reference to an ln_tensor (NULL once
** released by __close or __gc; any later use raises "attempt to use a
** released tensor"). One C tensor has at most one userdata at a time: a
** weak-valued cache in the registry maps the ln_tensor* to its userdata,
** so that bn.weight == bn.weight and tensors work as table keys. `==`
** therefore is identity; elementwise comparison is x:eq(y).
*/
#include <stdlib.h>
#include <string.h>

#include "core/ops.h"
#include "core/print.h"
#include "lua/l_common.h"

static const char cache_key = 'c';   /* registry: ln_tensor* -> userdata */

/* ---- userdata ---- */

void ln_lua_push_tensor(lua_State *L, ln_tensor *t) {
  if (t == NULL) ln_lua_error(L);
  if (ln_lua_cache_get(L, &cache_key, t)) {  /* already has one */
    ln_tensor_release(t);
    return;
  }
  ln_tensor **box = lua_newuserdatauv(L, sizeof *box, 0);
  *box = t;
  luaL_setmetatable(L, LN_TENSOR_MT);
  ln_lua_cache_set(L, &cache_key, t);
  ln_lua_gc_hint(L);
}

ln_tensor *ln_lua_to_tensor(lua_State *L, int idx) {
  ln_tensor **box = luaL_testudata(L, idx, LN_TENSOR_MT);
  return box ? *box : NULL;
}

ln_tensor *ln_lua_check_tensor(lua_State *L, int idx) {
  ln_tensor **box = luaL_testudata(L, idx, LN_TENSOR_MT);
  if (box == NULL) luaL_typeerror(L, idx, "tensor");
  if (*box == NULL) luaL_error(L, "attempt to use a released tensor");
  return *box;
}

ln_tensor *ln_lua_tensor_or_scalar(lua_State *L, int idx, ln_tensor *like) {
  ln_tensor *t = ln_lua_to_tensor(L, idx);
  if (t) {
    ln_tensor_retain(t);
    return t;
  }
  if (lua_isinteger(L, idx))   /* exact in int64, past 2^53 too */
    return ln_lua_check(L, ln_scalar_like_int(like, lua_tointeger(L, idx)));
  if (lua_type(L, idx) == LUA_TNUMBER)
    return ln_lua_check(L, ln_scalar_like(like, lua_tonumber(L, idx), false));
  if (lua_isboolean(L, idx))
    return ln_lua_check(L, ln_scalar(lua_toboolean(L, idx), LN_BOOL));
  ln_lua_check_tensor(L, idx);  /* raises "tensor expected" */
  return NULL;
}

/* Drop the userdata's reference (twice is fine). */
static int tensor_release(lua_State *L) {
  ln_tensor **box = luaL_checkudata(L, 1, LN_TENSOR_MT);
  ln_tensor *t = *box;
  if (t == NULL) return 0;
  *box = NULL;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &cache_key);
  if (lua_rawgetp(L, -1, t) == LUA_TUSERDATA && lua_touserdata(L, -1) == box) {
    lua_pushnil(L);
    lua_rawsetp(L, -3, t);
  }
  lua_pop(L, 2);
  ln_tensor_release(t);
  return 0;
}

/* ---- element access ---- */

static void push_element(lua_State *L, const char *p, ln_dtype dt) {
  if (dt == LN_I64) {
    int64_t v;
    memcpy(&v, p, sizeof v);
    lua_pushinteger(L, (lua_Integer)v);
  } else if (dt == LN_BOOL) {
    lua_pushboolean(L, *p != 0);
  } else {
    lua_pushnumber(L, ln_load_double(p, dt));
  }
}

/* A CPU tensor with t's values: t itself when it is on the CPU, else a copy
** pushed on the stack so that the collector owns it. Borrowed. */
static ln_tensor *cpu_view(lua_State *L, ln_tensor *t) {
  if (ln_tensor_device(t).type == LN_CPU) return t;
  ln_tensor *c = ln_to_device(t, LN_DEVICE_CPU);
  ln_lua_push_tensor(L, c);
  return c;
}

/* Nested tables of dims d.. of the elements at p (strided). */
static void push_list(lua_State *L, ln_tensor *t, const char *p, int d) {
  int ndim = ln_tensor_dim(t);
  ln_dtype dt = ln_tensor_dtype(t);
  if (d == ndim) {
    push_element(L, p, dt);
    return;
  }
  int64_t n = ln_tensor_size(t, d);
  ptrdiff_t step = (ptrdiff_t)(ln_tensor_stride(t, d) * (int64_t)ln_dtype_size(dt));
  luaL_checkstack(L, 4, "tensor too deep");
  lua_createtable(L, n > 1 << 24 ? 0 : (int)n, 0);
  for (int64_t i = 0; i < n; i++) {
    push_list(L, t, p + i * step, d + 1);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
}

/* x:tolist() -> nested tables (a number for a 0-dim tensor). */
static int t_tolist(lua_State *L) {
  ln_tensor *t = cpu_view(L, ln_lua_check_tensor(L, 1));
  push_list(L, t, ln_tensor_data(t), 0);
  return 1;
}

/* x:item() -> the one element as a number (integer for int64, boolean for
** bool). */
static int t_item(lua_State *L) {
  ln_tensor *t = ln_lua_check_tensor(L, 1);
  int64_t n = ln_tensor_numel(t);
  if (n != 1)
    return luaL_error(L, "a Tensor with %I elements cannot be converted to Scalar",
                      (lua_Integer)n);
  t = cpu_view(L, t);
  push_element(L, ln_tensor_data(t), ln_tensor_dtype(t));
  return 1;
}

static int t_tostring(lua_State *L) {
  ln_tensor **box = luaL_checkudata(L, 1, LN_TENSOR_MT);
  if (*box == NULL) {
    lua_pushliteral(L, "tensor(released)");
    return 1;
  }
  char *s = ln_lua_check(L, ln_tensor_to_string(*box));
  lua_pushstring(L, s);  /* a memory error here would leak s: rare enough */
  free(s);
  return 1;
}

/* ---- geometry ---- */

/* x:size() -> {8,3,4,4}; x:size(d) -> the size of dim d; the same for
** x:stride() with all = ln_tensor_strides, one = ln_tensor_stride. */
static int per_dim(lua_State *L, const int64_t *(*all)(const ln_tensor *),
                   int64_t (*one)(const ln_tensor *, int)) {
  ln_tensor *t = ln_lua_check_tensor(L, 1);
  int nd = ln_tensor_dim(t);
  if (lua_isnoneornil(L, 2)) {
    ln_lua_push_int64s(L, all(t), nd);
    return 1;
  }
  if (nd == 0) return luaL_error(L, "Dimension specified as %d but tensor has no "
                                 "dimensions", (int)luaL_checkinteger(L, 2));
  lua_pushinteger(L, one(t, ln_lua_check_dim(L, 2, nd)));
  return 1;
}

static int t_size(lua_State *L) { return per_dim(L, ln_tensor_sizes, ln_tensor_size); }
static int t_stride(lua_State *L) { return per_dim(L, ln_tensor_strides, ln_tensor_stride); }

static int t_dim(lua_State *L) {
  lua_pushinteger(L, ln_tensor_dim(ln_lua_check_tensor(L, 1)));
  return 1;
}

static int t_numel(lua_State *L) {
  lua_pushinteger(L, ln_tensor_numel(ln_lua_check_tensor(L, 1)));
  return 1;
}

static int t_storage_offset(lua_State *L) {
  lua_pushinteger(L, ln_tensor_offset(ln_lua_check_tensor(L, 1)));
  return 1;
}

static int t_element_size(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)ln_dtype_size(ln_tensor_dtype(ln_lua_check_tensor(L, 1))));
  return 1;
}

/* x:is_contiguous(fmt?) with fmt "contiguous_format" or "channels_last". */
static int t_is_contiguous(lua_State *L) {
  ln_tensor *t = ln_lua_check_tensor(L, 1);
  ln_memory_format fmt = ln_lua_check_format(L, 2, LN_CONTIGUOUS);
  luaL_argcheck(L, fmt != LN_PRESERVE, 2, "preserve_format is not a layout");
  lua_pushboolean(L, ln_tensor_is_contiguous(t, fmt));
  return 1;
}

/* ---- properties (x.name) ---- */

static int p_dtype(lua_State *L) {
  lua_pushstring(L, ln_dtype_name(ln_tensor_dtype(ln_lua_check_tensor(L, 1))));
  return 1;
}

static int p_device(lua_State *L) {
  char buf[32];
  lua_pushstring(L, ln_device_str(ln_tensor_device(ln_lua_check_tensor(L, 1)),
                                  buf, sizeof buf));
  return 1;
}

static int p_is_cuda(lua_State *L) {
  lua_pushboolean(L, ln_tensor_device(ln_lua_check_tensor(L, 1)).type == LN_CUDA);
  return 1;
}

static int p_ndim(lua_State *L) { return t_dim(L); }

static int p_shape(lua_State *L) {
  lua_settop(L, 1);
  return t_size(L);
}

/* ---- indexing: x[i] selects along dim 1, x[i] = v fills or copies ---- */

static ln_tensor *select_first(lua_State *L, ln_tensor *t, lua_Integer i) {
  if (ln_tensor_dim(t) == 0) luaL_error(L, "invalid index of a 0-dim tensor");
  int64_t k = ln_lua_wrap_index(L, i, ln_tensor_size(t, 0), 0);
  return ln_lua_check(L, ln_select(t, 0, k));
}

static int t_index(lua_State *L) {
  switch (lua_type(L, 2)) {
  case LUA_TNUMBER: {
    ln_tensor *t = ln_lua_check_tensor(L, 1);
    ln_lua_push_tensor(L, select_first(L, t, luaL_checkinteger(L, 2)));
    return 1;
  }
  case LUA_TSTRING:
    lua_pushvalue(L, 2);
    if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL) {  /* a property */
      lua_pushvalue(L, 1);
      lua_call(L, 1, 1);
      return 1;
    }
    lua_pushvalue(L, 2);
    lua_rawget(L, lua_upvalueindex(2));                     /* a method */
    return 1;
  default:
    return 0;
  }
}

/* Fill or copy `v` (at idx) into dst; returns the status, raising nothing,
** so callers can release their temporaries first. */
static ln_status assign(lua_State *L, ln_tensor *dst, int idx) {
  ln_tensor *src = ln_lua_to_tensor(L, idx);
  if (src) return ln_copy_(dst, src);
  if (lua_isboolean(L, idx)) return ln_fill_(dst, lua_toboolean(L, idx));
  if (lua_isinteger(L, idx)) return ln_fill_int_(dst, lua_tointeger(L, idx));
  return ln_fill_(dst, lua_tonumber(L, idx));
}

static void check_assignable(lua_State *L, int idx) {
  if (lua_type(L, idx) != LUA_TNUMBER && !lua_isboolean(L, idx))
    ln_lua_check_tensor(L, idx);
}

static int t_newindex(lua_State *L) {
  ln_tensor *t = ln_lua_check_tensor(L, 1);
  if (lua_type(L, 2) == LUA_TNUMBER) {
    check_assignable(L, 3);
    ln_tensor *sel = select_first(L, t, luaL_checkinteger(L, 2));
    ln_status st = assign(L, sel, 3);
    ln_tensor_release(sel);
    ln_lua_check_status(L, st);
    return 0;
  }
  if (lua_type(L, 2) == LUA_TSTRING) {
    lua_pushvalue(L, 2);
    if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL) {   /* a setter */
      lua_pushvalue(L, 1);
      lua_pushvalue(L, 3);
      lua_call(L, 2, 0);
      return 0;
    }
    return luaL_error(L, "cannot set field '%s' of a tensor", lua_tostring(L, 2));
  }
  return luaL_error(L, "cannot index a tensor with a %s", luaL_typename(L, 2));
}

/* x:fill_(v), x:zero_(), x:copy_(src): in place, return x. */
static int t_fill_(lua_State *L) {
  ln_tensor *t = ln_lua_check_tensor(L, 1);
  check_assignable(L, 2);
  ln_lua_check_status(L, assign(L, t, 2));
  lua_settop(L, 1);
  return 1;
}

static int t_zero_(lua_State *L) {
  ln_lua_check_status(L, ln_zero_(ln_lua_check_tensor(L, 1)));
  lua_settop(L, 1);
  return 1;
}

static int t_copy_(lua_State *L) {
  ln_tensor *t = ln_lua_check_tensor(L, 1);
  ln_lua_check_status(L, ln_copy_(t, ln_lua_check_tensor(L, 2)));
  lua_settop(L, 1);
  return 1;
}

static int is_tensor(lua_State *L) {
  lua_pushboolean(L, luaL_testudata(L, 1, LN_TENSOR_MT) != NULL);
  return 1;
}

/* ---- registration ---- */

static const luaL_Reg methods[] = {
  { "size", t_size }, { "stride", t_stride }, { "dim", t_dim },
  { "numel", t_numel }, { "nelement", t_numel },
  { "storage_offset", t_storage_offset }, { "element_size", t_element_size },
  { "is_contiguous", t_is_contiguous }, { "tolist", t_tolist }, { "item", t_item },
  { "fill_", t_fill_ }, { "zero_", t_zero_ }, { "copy_", t_copy_ },
  { NULL, NULL }
};

static const luaL_Reg getters[] = {
  { "dtype", p_dtype }, { "device", p_device }, { "shape", p_shape },
  { "ndim", p_ndim }, { "is_cuda", p_is_cuda },
  { NULL, NULL }
};

static const luaL_Reg metamethods[] = {
  { "__gc", tensor_release }, { "__close", tensor_release },
  { "__tostring", t_tostring },
  { NULL, NULL }
};

void ln_lua_push_tensor_table(lua_State *L, const char *which) {
  luaL_getmetatable(L, LN_TENSOR_MT);
  lua_getfield(L, -1, which);
  lua_remove(L, -2);
}

/* Creates the metatable with its "methods", "getters" and "setters"
** tables (the other binding files add to them), the cache, and registers
** lunet.is_tensor into the table on top. */
void ln_lua_open_tensor(lua_State *L) {
  ln_lua_cache_new(L, &cache_key);

  luaL_newmetatable(L, LN_TENSOR_MT);
  luaL_setfuncs(L, metamethods, 0);
  lua_newtable(L);
  luaL_setfuncs(L, getters, 0);
  lua_pushvalue(L, -1);
  lua_setfield(L, -3, "getters");
  lua_newtable(L);
  luaL_setfuncs(L, methods, 0);
  lua_pushvalue(L, -1);
  lua_setfield(L, -4, "methods");
  lua_pushcclosure(L, t_index, 2);           /* upvalues: getters, methods */
  lua_setfield(L, -2, "__index");
  lua_newtable(L);
  lua_pushvalue(L, -1);
  lua_setfield(L, -3, "setters");
  lua_pushcclosure(L, t_newindex, 1);        /* upvalue: setters */
  lua_setfield(L, -2, "__newindex");
  lua_pop(L, 1);

  lua_pushcfunction(L, is_tensor);
  lua_setfield(L, -2, "is_tensor");
}
