/*
** l_lunet.c -- luaopen_lunet: builds the `lunet` table from every binding
** file, loads lunet.nn / lunet.optim / lunet.dist / lunet.data lazily on
** first access, and installs the out-of-memory handler (a full collection,
** then the allocator retries once). Also lunet._self_checker, the check
** that the Lua-written methods of modules and optimizers make of self.
*/
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include "core/device.h"
#include "core/storage.h"
#include "lua/l_common.h"
#include "lua/l_dist.h"

/* ---- threads ---- */

static int set_num_threads(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  luaL_argcheck(L, n >= 1, 1, "number of threads must be at least 1");
  omp_set_num_threads((int)n);
  return 0;
}

static int get_num_threads(lua_State *L) {
  lua_pushinteger(L, omp_get_max_threads());
  return 1;
}

/* LUNET_NUM_THREADS, when set to a positive integer, sets the count. */
static void threads_from_env(void) {
  const char *s = getenv("LUNET_NUM_THREADS");
  if (s == NULL) return;
  char *end;
  long n = strtol(s, &end, 10);
  if (end != s && *end == '\0' && n >= 1) omp_set_num_threads((int)n);
}

/* ---- lunet.cuda ----
** Devices are given as 0-based indices or "cuda:N" strings, as to PyTorch's
** torch.cuda functions. Without CUDA support or a device, functions that
** need one raise ln_device_check's message ("lunet was built without CUDA
** support", "no CUDA device is available ..."). */

/* The CUDA device index at arg (`dflt` when absent); raises unless that
** device exists. */
static int check_cuda_device(lua_State *L, int arg, int dflt) {
  ln_device d = { LN_CUDA, dflt };
  if (lua_type(L, arg) == LUA_TSTRING) {
    if (ln_device_parse(lua_tostring(L, arg), &d) != LN_OK || d.type != LN_CUDA)
      luaL_argerror(L, arg, "expected a CUDA device (an index or \"cuda:N\")");
  } else if (!lua_isnoneornil(L, arg)) {
    lua_Integer i = luaL_checkinteger(L, arg);
    luaL_argcheck(L, i >= 0 && i < 1024, arg, "device index out of range");
    d.index = (int)i;
  }
  if (ln_device_check(d) != LN_OK) ln_lua_error(L);
  return d.index;
}

static int cuda_device_count(lua_State *L) {
  const ln_backend *b = ln_backend_get(LN_CUDA);
  lua_pushinteger(L, b ? b->device_count() : 0);
  return 1;
}

static int cuda_is_available(lua_State *L) {
  const ln_backend *b = ln_backend_get(LN_CUDA);
  lua_pushboolean(L, b != NULL && b->device_count() > 0);
  return 1;
}

/* synchronize([device]): wait for the work queued on one device, or on
** every device without an argument. */
static int cuda_synchronize(lua_State *L) {
  int first = check_cuda_device(L, 1, 0), last = first;
  const ln_backend *b = ln_backend_get(LN_CUDA);
  if (lua_isnoneornil(L, 1)) last = b->device_count() - 1;
  for (int i = first; i <= last; i++) ln_lua_check_status(L, b->synchronize(i));
  return 0;
}

/* get_device_name([device]): the product name, device 0 by default. */
static int cuda_get_device_name(lua_State *L) {
  int index = check_cuda_device(L, 1, 0);
  char name[256];
  ln_lua_check_status(L, ln_backend_get(LN_CUDA)->device_name(index, name, sizeof name));
  lua_pushstring(L, name);
  return 1;
}

static const luaL_Reg cuda_funcs[] = {
  { "is_available", cuda_is_available }, { "device_count", cuda_device_count },
  { "synchronize", cuda_synchronize }, { "get_device_name", cuda_get_device_name },
  { NULL, NULL }
};

/* ---- out of memory: collect and let the allocator retry ----
** The handler runs a full collection on the main thread of the state that
** loaded lunet last; the sentinel's __gc uninstalls it when that state
** closes. Collection from inside a finalizer is refused by Lua itself
** (lua_gc returns -1), which is harmless here. */

static lua_State *oom_state;

static void oom_collect(void *ud) {
  lua_gc((lua_State *)ud, LUA_GCCOLLECT);
}

static int oom_sentinel_gc(lua_State *L) {
  lua_State *main = *(lua_State **)lua_touserdata(L, 1);
  if (oom_state == main) {
    ln_set_oom_handler(NULL, NULL);
    oom_state = NULL;
  }
  return 0;
}

static void install_oom_handler(lua_State *L) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  lua_State *main = lua_tothread(L, -1);
  lua_pop(L, 1);
  lua_State **box = lua_newuserdatauv(L, sizeof *box, 0);
  *box = main;
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, oom_sentinel_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_setfield(L, LUA_REGISTRYINDEX, "lunet.oom_sentinel");
  oom_state = main;
  ln_set_oom_handler(oom_collect, main);
}

/* ---- lazy submodules: lunet.nn is require("lunet.nn") ---- */

static int lazy_index(lua_State *L) {
  static const char *const subs[] = { "nn", "optim", "dist", "data", NULL };
  const char *k = lua_tostring(L, 2);
  if (lua_type(L, 2) != LUA_TSTRING) return 0;
  for (int i = 0; subs[i]; i++) {
    if (strcmp(k, subs[i]) != 0) continue;
    lua_getglobal(L, "require");
    lua_pushfstring(L, "lunet.%s", k);
    lua_call(L, 1, 1);
    lua_pushvalue(L, 2);
    lua_pushvalue(L, -2);
    lua_rawset(L, 1);
    return 1;
  }
  return 0;
}

/* ---- self in methods written in Lua ---- */

/* check(self, method): nothing when self's metatable is a key of the set
** (upvalue 1), so that it costs one call and a table lookup; otherwise an
** error at the method's caller in luaL_argerror's words and a hint, as
** "bad argument #1 to 'eval' (lunet.Module expected, got no value); call
** it as m:eval()". A method called with '.' gets its first argument as
** self: nothing (m.eval()) or the wrong object (m.apply(fn)). Lua cannot
** tell an absent self from nil; nil reads "no value", the common case. */
static int self_check(lua_State *L) {
  if (lua_getmetatable(L, 1) && lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL) return 0;
  const char *method = luaL_checkstring(L, 2);
  const char *got = lua_isnil(L, 1) ? "no value"
                  : luaL_getmetafield(L, 1, "__name") == LUA_TSTRING ? lua_tostring(L, -1)
                  : luaL_typename(L, 1);
  luaL_where(L, 2);                      /* 0: this check, 1: the method */
  lua_pushfstring(L, "%sbad argument #1 to '%s' (%s expected, got %s); call it as %s:%s()",
                  lua_tostring(L, -1), method, lua_tostring(L, lua_upvalueindex(2)), got,
                  lua_tostring(L, lua_upvalueindex(3)), method);
  return lua_error(L);
}

/* lunet._self_checker(types, expected, receiver) -> check: types is a set
** of metatables (a table whose keys are the classes' metatables, which may
** grow later) or the registry name of a userdata's metatable; expected
** names them in the error ("lunet.Module"), receiver is the variable of
** the hint ("m"). */
static int self_checker(lua_State *L) {
  if (lua_type(L, 1) == LUA_TSTRING) {
    lua_createtable(L, 0, 1);
    luaL_argcheck(L, luaL_getmetatable(L, lua_tostring(L, 1)) == LUA_TTABLE, 1,
                  "no such metatable");
    lua_pushboolean(L, 1);
    lua_rawset(L, -3);
    lua_replace(L, 1);
  }
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checkstring(L, 2);
  luaL_checkstring(L, 3);
  lua_settop(L, 3);
  lua_pushcclosure(L, self_check, 3);
  return 1;
}

static const luaL_Reg funcs[] = {
  { "set_num_threads", set_num_threads }, { "get_num_threads", get_num_threads },
  { "_self_checker", self_checker }, { NULL, NULL }
};

int luaopen_lunet(lua_State *L) {
  ln_init();
  ln_lua_gc_hint_init();
  threads_from_env();
  install_oom_handler(L);

  lua_newtable(L);
  luaL_setfuncs(L, funcs, 0);
  lua_pushliteral(L, LUNET_VERSION);  /* from project() in CMakeLists.txt */
  lua_setfield(L, -2, "version");
  luaL_newlib(L, cuda_funcs);
  lua_setfield(L, -2, "cuda");

  ln_lua_open_tensor(L);     /* first: creates the Tensor metatable */
  ln_lua_open_create(L);
  ln_lua_open_view(L);
  ln_lua_open_ops(L);
  ln_lua_open_autograd(L);
  ln_lua_open_io(L);
  ln_lua_open_module(L);
  ln_lua_open_batchnorm(L);
  ln_lua_open_layers(L);
  ln_lua_open_optim(L);
  ln_lua_open_index(L);
  ln_lua_open_bench(L);
  ln_lua_open_term(L);
  ln_lua_open_backends(L);
  ln_lua_open_dist(L);
  ln_lua_open_syncbn(L);

  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, lazy_index);
  lua_setfield(L, -2, "__index");
  lua_setmetatable(L, -2);
  return 1;
}
