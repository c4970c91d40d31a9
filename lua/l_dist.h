/*
** l_dist.h -- process groups from Lua (l_dist.c): the lunet._dist table
** that lua/lunet/dist.lua exports, and the group userdata, for bindings
** that take a process_group option (SyncBatchNorm, DistributedDataParallel).
*/
#ifndef LN_L_DIST_H
#define LN_L_DIST_H

#include "core/dist.h"
#include "lua/lunet_lua.h"

#define LN_GROUP_MT "lunet.ProcessGroup"

/* Sets lunet._dist in the table on top of the stack. */
void ln_lua_open_dist(lua_State *L);

/* Push the Lua object of g (the same object while it lives); does not take
** over the caller's reference. */
void ln_lua_push_group(lua_State *L, ln_dist_group *g);
/* The group at idx (borrowed), or a "bad argument" error. */
ln_dist_group *ln_lua_check_group(lua_State *L, int idx);
/* The `group` field of the options table at idx: NULL (the world) when the
** table or the field is absent, else a group, or a "bad argument" error. */
ln_dist_group *ln_lua_opt_group(lua_State *L, int idx);

#endif
