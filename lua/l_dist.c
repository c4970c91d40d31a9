/*
** l_dist.c -- process groups and collectives from Lua: the table
** lunet._dist that lua/lunet/dist.lua exports as require("lunet.dist"),
** and the lunet.ProcessGroup userdata. Ranks are 0-based, as in MPI.
** Collectives write in place and return their tensor; options come in a
** trailing table whose unknown fields are errors. Every failure of the C
** layer (dist.h) becomes a Lua error with its message; C temporaries are
** held by Lua objects (the list arrays are userdata), so nothing leaks.
*/
#include <stdint.h>

#include "lua/l_common.h"
#include "lua/l_dist.h"

static const char cache_key = 'g';   /* registry: ln_dist_group* -> object */

/* ---- the group object ---- */

void ln_lua_push_group(lua_State *L, ln_dist_group *g) {
  if (ln_lua_cache_get(L, &cache_key, g)) return;
  ln_dist_group **box = lua_newuserdatauv(L, sizeof *box, 0);
  *box = g;
  ln_dist_group_retain(g);
  luaL_setmetatable(L, LN_GROUP_MT);
  ln_lua_cache_set(L, &cache_key, g);
}

ln_dist_group *ln_lua_check_group(lua_State *L, int idx) {
  ln_dist_group **box = luaL_testudata(L, idx, LN_GROUP_MT);
  if (box == NULL) luaL_typeerror(L, idx, "process group");
  if (*box == NULL) luaL_error(L, "attempt to use a released process group");
  return *box;
}

ln_dist_group *ln_lua_opt_group(lua_State *L, int idx) {
  if (!lua_istable(L, idx)) return NULL;
  ln_dist_group *g = NULL;
  if (lua_getfield(L, idx, "group") != LUA_TNIL) {
    ln_dist_group **box = luaL_testudata(L, -1, LN_GROUP_MT);
    if (box == NULL || *box == NULL)
      luaL_argerror(L, idx, lua_pushfstring(L, "option 'group': process group expected, "
                                            "got %s", luaL_typename(L, -1)));
    g = *box;
  }
  lua_pop(L, 1);
  return g;
}

/* __gc and __close: safe to run twice. */
static int group_gc(lua_State *L) {
  ln_dist_group **box = luaL_checkudata(L, 1, LN_GROUP_MT);
  ln_dist_group_release(*box);
  *box = NULL;
  return 0;
}

static int group_tostring(lua_State *L) {
  ln_dist_group *g = ln_lua_check_group(L, 1);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  luaL_addstring(&b, "ProcessGroup(ranks={");
  for (int i = 0; i < ln_dist_group_size(g); i++) {
    lua_pushfstring(L, "%s%d", i ? ", " : "", ln_dist_group_ranks(g)[i]);
    luaL_addvalue(&b);
  }
  lua_pushfstring(L, "}, rank=%d)", ln_dist_group_rank(g));
  luaL_addvalue(&b);
  luaL_pushresult(&b);
  return 1;
}

static int group_rank(lua_State *L) {
  lua_pushinteger(L, ln_dist_group_rank(ln_lua_check_group(L, 1)));
  return 1;
}

static int group_size(lua_State *L) {
  lua_pushinteger(L, ln_dist_group_size(ln_lua_check_group(L, 1)));
  return 1;
}

static int group_ranks(lua_State *L) {
  ln_dist_group *g = ln_lua_check_group(L, 1);
  int n = ln_dist_group_size(g);
  lua_createtable(L, n, 0);
  for (int i = 0; i < n; i++) {
    lua_pushinteger(L, ln_dist_group_ranks(g)[i]);
    lua_rawseti(L, -2, i + 1);
  }
  return 1;
}

static int group_is_member(lua_State *L) {
  lua_pushboolean(L, ln_dist_group_is_member(ln_lua_check_group(L, 1)));
  return 1;
}

/* ---- arguments ---- */

static void check_options(lua_State *L, int idx, const char *const *fields) {
  if (!lua_isnoneornil(L, idx)) luaL_argexpected(L, lua_istable(L, idx), idx, "options table");
  ln_lua_check_fields(L, idx, fields);
}

/* The `op` field of the options table at idx (default sum). */
static ln_reduce_op opt_op(lua_State *L, int idx) {
  ln_reduce_op op = LN_REDUCE_SUM;
  if (!lua_istable(L, idx)) return op;
  int type = lua_getfield(L, idx, "op");
  if (type == LUA_TSTRING)
    ln_lua_check_status(L, ln_reduce_op_from_name(lua_tostring(L, -1), &op));
  else if (type != LUA_TNIL)
    luaL_argerror(L, idx, lua_pushfstring(L, "option 'op': string expected, got %s",
                                          luaL_typename(L, -1)));
  lua_pop(L, 1);
  return op;
}

/* The tensors of the list at idx in a C array owned by a userdata pushed
** on the stack (the list keeps the tensors alive). */
static ln_tensor **check_tensor_list(lua_State *L, int idx, int *n) {
  luaL_checktype(L, idx, LUA_TTABLE);
  lua_Integer len = luaL_len(L, idx);
  luaL_argcheck(L, len <= INT32_MAX, idx, "list too long");
  ln_tensor **ts = lua_newuserdatauv(L, (size_t)(len ? len : 1) * sizeof *ts, 0);
  for (lua_Integer i = 1; i <= len; i++) {
    lua_geti(L, idx, i);
    if (!luaL_testudata(L, -1, LN_TENSOR_MT))
      luaL_argerror(L, idx, lua_pushfstring(L, "tensor expected at index %d, got %s",
                                            (int)i, luaL_typename(L, -1)));
    ts[i - 1] = ln_lua_check_tensor(L, -1);
    lua_pop(L, 1);
  }
  *n = (int)len;
  return ts;
}

static int require_init(lua_State *L) {
  ln_lua_check_status(L, ln_dist_check_initialized());
  return 0;
}

/* ---- the process ---- */

static int l_init(lua_State *L) {
  static const char *const fields[] = { "backend", NULL };
  check_options(L, 1, fields);
  const char *backend = NULL;
  if (lua_istable(L, 1)) {
    lua_getfield(L, 1, "backend");
    backend = lua_tostring(L, -1);
    if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TSTRING)
      luaL_argerror(L, 1, lua_pushfstring(L, "option 'backend': string expected, got %s",
                                          luaL_typename(L, -1)));
  }
  ln_lua_check_status(L, ln_dist_init(backend));
  return 0;
}

static int l_finalize(lua_State *L) {
  ln_lua_check_status(L, ln_dist_finalize());
  return 0;
}

static int l_is_available(lua_State *L) {
  lua_pushboolean(L, ln_dist_is_available());
  return 1;
}

static int l_is_nccl_available(lua_State *L) {
  lua_pushboolean(L, ln_dist_is_nccl_available());
  return 1;
}

static int l_is_initialized(lua_State *L) {
  lua_pushboolean(L, ln_dist_is_initialized());
  return 1;
}

static int l_backend(lua_State *L) {
  require_init(L);
  lua_pushstring(L, ln_dist_backend());
  return 1;
}

/* rank([group]) and world_size([group]): -1 for a group this process is
** not in, as PyTorch's get_rank/get_world_size. */
static int l_rank(lua_State *L) {
  require_init(L);
  lua_pushinteger(L, lua_isnoneornil(L, 1) ? ln_dist_rank()
                                            : ln_dist_group_rank(ln_lua_check_group(L, 1)));
  return 1;
}

static int l_world_size(lua_State *L) {
  require_init(L);
  ln_dist_group *g = lua_isnoneornil(L, 1) ? NULL : ln_lua_check_group(L, 1);
  lua_pushinteger(L, !g ? ln_dist_world_size()
                        : ln_dist_group_is_member(g) ? ln_dist_group_size(g) : -1);
  return 1;
}

static int l_local_rank(lua_State *L) {
  require_init(L);
  lua_pushinteger(L, ln_dist_local_rank());
  return 1;
}

/* ---- groups ---- */

/* new_group([ranks]): nil means every rank. */
static int l_new_group(lua_State *L) {
  require_init(L);
  lua_settop(L, 1);
  bool all = lua_isnoneornil(L, 1);
  if (!all) luaL_checktype(L, 1, LUA_TTABLE);
  lua_Integer n = all ? ln_dist_world_size() : luaL_len(L, 1);
  luaL_argcheck(L, n <= INT32_MAX, 1, "too many ranks");
  int *ranks = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof *ranks, 0);
  for (int i = 0; i < n; i++) {
    if (all) {
      ranks[i] = i;
      continue;
    }
    lua_geti(L, 1, i + 1);
    int isnum;
    lua_Integer r = lua_tointegerx(L, -1, &isnum);
    if (!isnum || lua_type(L, -1) != LUA_TNUMBER || r < INT32_MIN || r > INT32_MAX)
      luaL_argerror(L, 1, lua_pushfstring(L, "integer rank expected at index %d, got %s",
                                          i + 1, luaL_typename(L, -1)));
    ranks[i] = (int)r;
    lua_pop(L, 1);
  }
  ln_dist_group *g = ln_dist_new_group(ranks, (int)n);
  if (!g) return ln_lua_error(L);
  ln_lua_push_group(L, g);
  ln_dist_group_release(g);   /* the object holds its own reference */
  return 1;
}

static int l_get_global_rank(lua_State *L) {
  ln_dist_group *g = ln_lua_check_group(L, 1);
  lua_Integer r = luaL_checkinteger(L, 2);
  int global = r >= 0 && r < ln_dist_group_size(g) ? ln_dist_global_rank(g, (int)r) : -1;
  if (global < 0)
    return luaL_error(L, "group rank %d is out of range (the group has %d ranks)", (int)r,
                      ln_dist_group_size(g));
  lua_pushinteger(L, global);
  return 1;
}

static int l_get_group_rank(lua_State *L) {
  ln_dist_group *g = ln_lua_check_group(L, 1);
  lua_Integer r = luaL_checkinteger(L, 2);
  int local = r >= 0 && r <= INT32_MAX ? ln_dist_group_rank_of(g, (int)r) : -1;
  if (local < 0) return luaL_error(L, "global rank %d is not part of the group", (int)r);
  lua_pushinteger(L, local);
  return 1;
}

/* ---- collectives ---- */

static int l_all_reduce(lua_State *L) {
  static const char *const fields[] = { "op", "group", NULL };
  ln_tensor *t = ln_lua_check_tensor(L, 1);
  check_options(L, 2, fields);
  ln_reduce_op op = opt_op(L, 2);
  ln_lua_check_status(L, ln_dist_all_reduce(ln_lua_opt_group(L, 2), t, op));
  lua_settop(L, 1);
  return 1;
}

/* all_reduce_coalesced(list, {op, group, bucket_cap_mb=25}) -> the number
** of collectives issued (buckets). */
static int l_all_reduce_coalesced(lua_State *L) {
  static const char *const fields[] = { "op", "group", "bucket_cap_mb", NULL };
  int n;
  check_options(L, 2, fields);
  lua_settop(L, 2);   /* the list's array goes above the options */
  ln_tensor **ts = check_tensor_list(L, 1, &n);
  ln_reduce_op op = opt_op(L, 2);
  double mb = ln_lua_opt_number(L, 2, "bucket_cap_mb", 25);
  luaL_argcheck(L, mb >= 0, 2, "option 'bucket_cap_mb' must not be negative");
  double bytes = mb * 1024 * 1024;
  int buckets = 0;
  ln_lua_check_status(L, ln_dist_all_reduce_coalesced(
                            ln_lua_opt_group(L, 2), ts, n, op,
                            bytes >= (double)SIZE_MAX ? SIZE_MAX : (size_t)bytes, &buckets));
  lua_pushinteger(L, buckets);
  return 1;
}

/* all_gather(list, t, opts) fills list (PyTorch's form) and returns it;
** all_gather(nil, t, opts) returns a new list whose tensors are rows of
** one gathered tensor (views, one per rank of the group). */
static int l_all_gather(lua_State *L) {
  static const char *const fields[] = { "group", NULL };
  ln_tensor *t = ln_lua_check_tensor(L, 2);
  check_options(L, 3, fields);
  lua_settop(L, 3);   /* the list's array goes above the options */
  ln_dist_group *g = ln_lua_opt_group(L, 3);
  if (!lua_isnil(L, 1)) {
    int n;
    ln_tensor **outs = check_tensor_list(L, 1, &n);
    ln_lua_check_status(L, ln_dist_all_gather(g, outs, n, t));
    lua_settop(L, 1);
    return 1;
  }
  ln_lua_push_tensor(L, ln_dist_all_gather_stack(g, t));   /* holds the stack */
  ln_tensor *stack = ln_lua_check_tensor(L, -1);
  int64_t n = ln_tensor_size(stack, 0);
  lua_createtable(L, (int)n, 0);
  for (int64_t i = 0; i < n; i++) {
    ln_lua_push_tensor(L, ln_select(stack, 0, i));
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  return 1;
}

static int l_broadcast(lua_State *L) {
  static const char *const fields[] = { "group", NULL };
  ln_tensor *t = ln_lua_check_tensor(L, 1);
  lua_Integer src = luaL_checkinteger(L, 2);
  check_options(L, 3, fields);
  ln_dist_group *g = ln_lua_opt_group(L, 3);
  int s = src >= INT32_MIN && src <= INT32_MAX ? (int)src : -1;
  ln_lua_check_status(L, ln_dist_broadcast(g, t, s));
  lua_settop(L, 1);
  return 1;
}

static int l_barrier(lua_State *L) {
  static const char *const fields[] = { "group", NULL };
  check_options(L, 1, fields);
  ln_lua_check_status(L, ln_dist_barrier(ln_lua_opt_group(L, 1)));
  return 0;
}

/* check_same(value, what, opts): fails on every rank when the integer
** value differs across the group. */
static int l_check_same(lua_State *L) {
  static const char *const fields[] = { "group", NULL };
  lua_Integer v = luaL_checkinteger(L, 1);
  const char *what = luaL_optstring(L, 2, "value");
  check_options(L, 3, fields);
  ln_lua_check_status(L, ln_dist_check_same(ln_lua_opt_group(L, 3), v, what));
  return 0;
}

/* ---- statistics ---- */

static int l_stats(lua_State *L) {
  ln_dist_stats s = ln_dist_stats_get();
  lua_createtable(L, 0, LN_DIST_KIND_COUNT + 2);
  for (int k = 0; k < LN_DIST_KIND_COUNT; k++) {
    ln_lua_set_integer(L, ln_dist_kind_name((ln_dist_kind)k), s.count[k]);
  }
  ln_lua_set_integer(L, "total", s.total);
  ln_lua_set_integer(L, "bytes", s.bytes);
  return 1;
}

static int l_reset_stats(lua_State *L) {
  (void)L;
  ln_dist_stats_reset();
  return 0;
}

static const luaL_Reg funcs[] = {
  { "init", l_init }, { "finalize", l_finalize },
  { "is_available", l_is_available }, { "is_nccl_available", l_is_nccl_available },
  { "is_initialized", l_is_initialized }, { "backend", l_backend },
  { "rank", l_rank }, { "world_size", l_world_size }, { "local_rank", l_local_rank },
  { "new_group", l_new_group },
  { "get_global_rank", l_get_global_rank }, { "get_group_rank", l_get_group_rank },
  { "all_reduce", l_all_reduce }, { "all_reduce_coalesced", l_all_reduce_coalesced },
  { "all_gather", l_all_gather }, { "broadcast", l_broadcast }, { "barrier", l_barrier },
  { "check_same", l_check_same },
  { "stats", l_stats }, { "reset_stats", l_reset_stats },
  { NULL, NULL }
};

static const luaL_Reg group_methods[] = {
  { "rank", group_rank }, { "size", group_size }, { "ranks", group_ranks },
  { "is_member", group_is_member },
  { NULL, NULL }
};

static const luaL_Reg group_metamethods[] = {
  { "__gc", group_gc }, { "__close", group_gc }, { "__tostring", group_tostring },
  { NULL, NULL }
};

void ln_lua_open_dist(lua_State *L) {
  ln_lua_cache_new(L, &cache_key);

  luaL_newmetatable(L, LN_GROUP_MT);
  luaL_setfuncs(L, group_metamethods, 0);
  lua_newtable(L);
  luaL_setfuncs(L, group_methods, 0);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);

  lua_createtable(L, 0, sizeof funcs / sizeof funcs[0]);
  luaL_setfuncs(L, funcs, 0);
  lua_setfield(L, -2, "_dist");
}
