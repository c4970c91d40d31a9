/*
** l_bench.c -- lunet.clock(): wall time for timing code from Lua.
** os.clock() is the process's CPU time (it counts every OpenMP thread) and
** os.time() has one-second steps, so neither can time a kernel.
*/
#define _POSIX_C_SOURCE 200809L  /* clock_gettime */

#include <time.h>

#include "lua/l_common.h"

/* lunet.clock() -> seconds (a float) on the monotonic clock: only the
** difference between two readings means anything. */
static int l_clock(lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec * 1e-9);
  return 1;
}

static const luaL_Reg funcs[] = {
  { "clock", l_clock },
  { NULL, NULL }
};

void ln_lua_open_bench(lua_State *L) {
  luaL_setfuncs(L, funcs, 0);
}
