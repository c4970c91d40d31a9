/*
** l_syncbn.c -- nn.SyncBatchNorm from Lua: the table lunet._syncbn that
** lua/lunet/nn/syncbatchnorm.lua turns into the class (nn/syncbatchnorm.h).
**   from(bn [, group]) -> a new SyncBatchNorm with bn's attributes sharing
**                         its tensors (convert_sync_batchnorm's step; the
**                         constructor converts a BatchNorm1d made from the
**                         options, so that both check options alike)
**   set_group(m, group|nil) -> m    (nil: the world)
**   is_sync_batchnorm(v) -> boolean
*/
#include "lua/l_dist.h"
#include "nn/syncbatchnorm.h"

/* A process group at idx, or NULL (the world) for nil. */
static ln_dist_group *opt_group(lua_State *L, int idx) {
  return lua_isnoneornil(L, idx) ? NULL : ln_lua_check_group(L, idx);
}

static int l_from(lua_State *L) {
  ln_module *bn = ln_lua_check_module(L, 1);
  ln_module *m = ln_sync_batchnorm_from(bn, opt_group(L, 2));
  if (!m) return ln_lua_error(L);
  ln_lua_push_module(L, m);
  ln_module_release(m);   /* the object holds its own reference */
  return 1;
}

static int l_set_group(lua_State *L) {
  ln_module *m = ln_lua_check_module(L, 1);
  ln_lua_check_status(L, ln_sync_batchnorm_set_group(m, opt_group(L, 2)));
  lua_settop(L, 1);
  return 1;
}

static int l_is_sync_batchnorm(lua_State *L) {
  ln_module *m = ln_lua_to_module(L, 1);
  lua_pushboolean(L, m && ln_is_sync_batchnorm(m));
  return 1;
}

static const luaL_Reg funcs[] = {
  { "from", l_from },
  { "set_group", l_set_group },
  { "is_sync_batchnorm", l_is_sync_batchnorm },
  { NULL, NULL }
};

/* Sets lunet._syncbn in the table on top of the stack. */
void ln_lua_open_syncbn(lua_State *L) {
  lua_createtable(L, 0, 3);
  luaL_setfuncs(L, funcs, 0);
  lua_setfield(L, -2, "_syncbn");
}
