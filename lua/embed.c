/*
** embed.c -- the embedding API (lunet_embed.h): states with lunet loaded,
** tensors in and out of Lua, protected runs whose errors end up in
** ln_last_error(). The `lunet` executable sets up its state with
** ln_embed_open too, so hosts and the executable find the same files.
**
** Everything that may raise a Lua error (allocation included) runs under
** lua_pcall, so a host never sees a longjmp or a panic.
*/
#define _GNU_SOURCE  /* dladdr */

#include <dlfcn.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <lauxlib.h>
#include <lualib.h>

#include "lua/lunet_embed.h"
#include "lua/lunet_lua.h"

/* ---- errors ---- */

static ln_status status_of(int lua_status) {
  switch (lua_status) {
  case LUA_OK: return LN_OK;
  case LUA_ERRSYNTAX: return LN_EINVAL;
  case LUA_ERRMEM: return LN_ENOMEM;
  case LUA_ERRFILE: return LN_EIO;
  default: return LN_ERUNTIME;
  }
}

/* Turn a failed lua status into ln_error with the message on top of the
** stack, which is popped. */
static ln_status fail(lua_State *L, int lua_status) {
  const char *msg = lua_tostring(L, -1);
  ln_error(status_of(lua_status), "%s", msg ? msg : "(error object is not a string)");
  lua_pop(L, 1);
  return status_of(lua_status);
}

/* Message handler: the error as a string, with a traceback. */
static int traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
    msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

ln_status ln_embed_pcall(lua_State *L, int nargs, int nresults) {
  int base = lua_gettop(L) - nargs;
  lua_pushcfunction(L, traceback);
  lua_insert(L, base);
  int st = lua_pcall(L, nargs, nresults, base);
  lua_remove(L, base);
  return st == LUA_OK ? LN_OK : fail(L, st);
}

/* Call the C function f with the light userdata ud, protected; it leaves
** nresults results. */
static ln_status protect(lua_State *L, lua_CFunction f, void *ud, int nresults) {
  if (!lua_checkstack(L, 3)) return ln_error(LN_ENOMEM, "Lua stack overflow");
  lua_pushcfunction(L, f);
  lua_pushlightuserdata(L, ud);
  return ln_embed_pcall(L, 1, nresults);
}

/* ---- where lunet's Lua files are ---- */

static bool is_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Push "<dir of binary>/<rel>" when it holds a lunet/ folder. */
static bool push_if_lua_dir(lua_State *L, const char *binary, const char *rel) {
  char real[PATH_MAX];
  if (realpath(binary, real) == NULL) return false;
  *strrchr(real, '/') = '\0';   /* realpath gives an absolute path */
  const char *dir = lua_pushfstring(L, "%s/%s", real, rel);
  lua_pushfstring(L, "%s/lunet", dir);
  bool found = is_dir(lua_tostring(L, -1));
  lua_pop(L, found ? 1 : 2);
  return found;
}

/* Push the directory holding lunet's pure-Lua modules. The binary that
** holds this code is liblunet-embed.so or a program it was linked into
** statically; installed, it sits in <prefix>/lib or <prefix>/bin and the
** files in <prefix>/share/lua/5.4. dladdr names a shared library; for the
** main program it may give argv[0], so /proc/self/exe is tried too. Then
** the source tree of the build. Pushes nothing and returns false when no
** directory is found. */
static bool push_lua_dir(lua_State *L) {
  static const char *const rels[] = { LUNET_LUA_REL_FROM_LIB, LUNET_LUA_REL_FROM_BIN };
  const char *binaries[2] = { NULL, "/proc/self/exe" };
  Dl_info info;
  if (dladdr((void *)ln_embed_open, &info) && info.dli_fname && strchr(info.dli_fname, '/'))
    binaries[0] = info.dli_fname;
  for (int b = 0; b < 2; b++)
    for (int r = 0; r < 2 && binaries[b]; r++)
      if (push_if_lua_dir(L, binaries[b], rels[r])) return true;
  if (!is_dir(LUNET_SOURCE_LUA_DIR "/lunet")) return false;
  lua_pushstring(L, LUNET_SOURCE_LUA_DIR);
  return true;
}

/* ---- states ---- */

static int open_protected(lua_State *L) {
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_lunet);
  lua_setfield(L, -2, "lunet");
  lua_pop(L, 1);
  if (!push_lua_dir(L)) return 0;
  const char *dir = lua_tostring(L, -1);
  if (lua_getglobal(L, "package") != LUA_TTABLE)
    return luaL_error(L, "lunet: the package library is not open");
  lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;", dir, dir);
  lua_getfield(L, -2, "path");
  lua_concat(L, 2);
  lua_setfield(L, -2, "path");
  return 0;
}

ln_status ln_embed_open(lua_State *L) {
  return protect(L, open_protected, NULL, 0);
}

static int new_state_protected(lua_State *L) {
  luaL_openlibs(L);
  open_protected(L);
  luaL_requiref(L, "lunet", luaopen_lunet, 0);
  return 0;
}

lua_State *ln_embed_new_state(void) {
  lua_State *L = luaL_newstate();
  if (L == NULL) {
    ln_error(LN_ENOMEM, "cannot create a Lua state: not enough memory");
    return NULL;
  }
  if (protect(L, new_state_protected, NULL, 0) != LN_OK) {
    lua_close(L);
    return NULL;
  }
  return L;
}

/* ---- running code ---- */

ln_status ln_embed_dostring(lua_State *L, const char *code, const char *name) {
  int st = luaL_loadbuffer(L, code, strlen(code), name ? name : code);
  if (st != LUA_OK) return fail(L, st);
  return ln_embed_pcall(L, 0, 0);
}

ln_status ln_embed_dofile(lua_State *L, const char *path) {
  int st = luaL_loadfile(L, path);
  if (st != LUA_OK) return fail(L, st);
  return ln_embed_pcall(L, 0, 0);
}

/* ---- tensors ---- */

/* What push_protected gets through its light userdata. */
typedef struct tensor_arg {
  ln_tensor *t;
  const char *name;   /* global to set, or NULL to return the object */
} tensor_arg;

static int push_protected(lua_State *L) {
  tensor_arg *a = lua_touserdata(L, 1);
  luaL_requiref(L, "lunet", luaopen_lunet, 0);   /* creates the metatable */
  lua_pop(L, 1);
  ln_tensor_retain(a->t);
  ln_lua_push_tensor(L, a->t);   /* takes over the reference just made */
  if (a->name == NULL) return 1;
  lua_setglobal(L, a->name);
  return 0;
}

ln_status ln_embed_push_tensor(lua_State *L, ln_tensor *t) {
  if (t == NULL) return ln_error(LN_EINVAL, "ln_embed_push_tensor: tensor is NULL");
  tensor_arg a = { t, NULL };
  return protect(L, push_protected, &a, 1);
}

ln_status ln_embed_set_tensor(lua_State *L, const char *name, ln_tensor *t) {
  if (t == NULL) return ln_error(LN_EINVAL, "ln_embed_set_tensor: tensor is NULL");
  tensor_arg a = { t, name };
  return protect(L, push_protected, &a, 0);
}

ln_tensor *ln_embed_to_tensor(lua_State *L, int idx) {
  ln_tensor *t = ln_lua_to_tensor(L, idx);
  if (t != NULL) {
    ln_tensor_retain(t);
    return t;
  }
  if (luaL_testudata(L, idx, LN_TENSOR_MT) != NULL)
    ln_error(LN_EINVAL, "attempt to use a released tensor");
  else
    ln_error(LN_EINVAL, "lunet.Tensor expected at stack index %d, got %s", idx,
             luaL_typename(L, idx));
  return NULL;
}

static int get_global_protected(lua_State *L) {
  lua_getglobal(L, lua_touserdata(L, 1));   /* may run _G's __index */
  return 1;
}

ln_tensor *ln_embed_get_tensor(lua_State *L, const char *name) {
  if (protect(L, get_global_protected, (void *)name, 1) != LN_OK) return NULL;
  ln_tensor *t = ln_lua_to_tensor(L, -1);
  if (t == NULL) ln_error(LN_EINVAL, "global '%s' is not a lunet.Tensor (got %s)", name,
                          luaL_typename(L, -1));
  else ln_tensor_retain(t);
  lua_pop(L, 1);
  return t;
}
