/*
** l_term.c -- lunet.isatty(file): whether a Lua file handle (io.stdout,
** io.stderr, an opened file) is a terminal, so that scripts draw progress
** bars on a terminal and print plain lines into logs and pipes.
*/
#define _POSIX_C_SOURCE 200809L  /* fileno */

#include <stdio.h>
#include <unistd.h>

#include "lua/l_common.h"

/* lunet.isatty(file) -> boolean. The handle is borrowed from Lua's io
** library (a luaL_Stream); a closed one is an argument error, as io's own
** functions say. */
static int l_isatty(lua_State *L) {
  luaL_Stream *p = luaL_checkudata(L, 1, LUA_FILEHANDLE);
  luaL_argcheck(L, p->closef != NULL, 1, "attempt to use a closed file");
  lua_pushboolean(L, isatty(fileno(p->f)));
  return 1;
}

static const luaL_Reg funcs[] = {
  { "isatty", l_isatty },
  { NULL, NULL }
};

void ln_lua_open_term(lua_State *L) {
  luaL_setfuncs(L, funcs, 0);
}
