/*
** l_backends.c -- lunet.backends (torch.backends): for now the cuDNN
** switch of the BatchNorm path (nn/backends.h).
**
**   lunet.backends.cudnn.enabled           -- true by default; assignable
**   lunet.backends.cudnn.is_available()    -- built with cuDNN and a GPU there
**   lunet.backends.cudnn.version()         -- 91900 for 9.19.0; nil without cuDNN
**
** `enabled` lives in C, so the table forwards reads and writes of it
** through its metatable; other fields cannot be assigned, so a misspelt
** setting fails instead of being kept silently.
*/
#include <string.h>

#include "lua/l_common.h"
#include "nn/backends.h"

static int cudnn_is_available(lua_State *L) {
  lua_pushboolean(L, ln_cudnn_available());
  return 1;
}

static int cudnn_version(lua_State *L) {
  int v = ln_cudnn_version();
  if (v > 0) lua_pushinteger(L, v);
  else lua_pushnil(L);
  return 1;
}

/* cudnn.enabled; any other missing field reads as nil. */
static int cudnn_index(lua_State *L) {
  const char *k = lua_tostring(L, 2);
  if (lua_type(L, 2) == LUA_TSTRING && strcmp(k, "enabled") == 0) {
    lua_pushboolean(L, ln_cudnn_enabled());
    return 1;
  }
  return 0;
}

/* cudnn.enabled = <boolean>; nothing else may be assigned. */
static int cudnn_newindex(lua_State *L) {
  if (lua_type(L, 2) == LUA_TSTRING && strcmp(lua_tostring(L, 2), "enabled") == 0) {
    if (!lua_isboolean(L, 3))
      return luaL_error(L, "lunet.backends.cudnn.enabled must be a boolean (got %s)",
                        luaL_typename(L, 3));
    ln_cudnn_set_enabled(lua_toboolean(L, 3));
    return 0;
  }
  return luaL_error(L, "lunet.backends.cudnn has no setting '%s' (only 'enabled' can be set)",
                    luaL_tolstring(L, 2, NULL));
}

static const luaL_Reg cudnn_funcs[] = {
  { "is_available", cudnn_is_available }, { "version", cudnn_version }, { NULL, NULL }
};

/* lunet.backends = { cudnn = <table with the metatable above> }. */
void ln_lua_open_backends(lua_State *L) {
  lua_createtable(L, 0, 1);
  lua_createtable(L, 0, 2);
  luaL_setfuncs(L, cudnn_funcs, 0);
  lua_createtable(L, 0, 2);
  lua_pushcfunction(L, cudnn_index);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, cudnn_newindex);
  lua_setfield(L, -2, "__newindex");
  lua_setmetatable(L, -2);
  lua_setfield(L, -2, "cudnn");
  lua_setfield(L, -2, "backends");
}
