/*
** l_common.c -- errors, argument and option parsing shared by the binding
** files, and the collector hint for tensor memory.
**
** Dimensions in Lua are 1-based: for a tensor of n dims, 1..n count from
** the front and -1..-n from the back (-1 is the last dim). A 0-dim tensor
** accepts 1 and -1 (PyTorch accepts 0 and -1). Out-of-range dims raise
** PyTorch's message with the 1-based range:
**   Dimension out of range (expected to be in range of [-2, 2], but got 3)
** and dim 0 says that dims are 1-based. Messages from the C core, which
** count from 0 as PyTorch does, are rewritten by ln_lua_error.
*/
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/device.h"
#include "core/storage.h"
#include "lua/l_common.h"

/* ---- errors ---- */

/* The C core words its messages as PyTorch does, with 0-based dims and
** list positions. Lua counts from 1, so the number after each of these
** phrases is raised by one on the way out. */
static const char *const zero_based[] = {
  "non-singleton dimension ", "except in dimension ", "for tensor number ", NULL
};

/* Push msg with 0-based numbers rewritten (see zero_based, and the range
** of "Dimension out of range (expected to be in range of [-2, 1], but got
** 2)", which becomes [-2, 2] and 3). */
static void push_one_based(lua_State *L, const char *msg) {
  const char *range = "Dimension out of range (expected to be in range of [";
  if (strncmp(msg, range, strlen(range)) == 0) {
    long lo, hi, got;
    int n = 0;
    if (sscanf(msg + strlen(range), "%ld, %ld], but got %ld)%n", &lo, &hi, &got, &n) == 3
        && n > 0) {
      lua_pushfstring(L, "Dimension out of range (expected to be in range of [%d, %d], "
                      "but got %d)%s", (int)lo, (int)hi + 1,
                      (int)(got >= 0 ? got + 1 : got), msg + strlen(range) + n);
      return;
    }
  }
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  while (*msg) {
    size_t skip = 0;
    for (int i = 0; zero_based[i] && !skip; i++)
      if (strncmp(msg, zero_based[i], strlen(zero_based[i])) == 0) skip = strlen(zero_based[i]);
    if (skip && isdigit((unsigned char)msg[skip])) {
      char *end;
      long v = strtol(msg + skip, &end, 10);
      luaL_addlstring(&b, msg, skip);
      lua_pushfstring(L, "%d", (int)v + 1);
      luaL_addvalue(&b);
      msg = end;
    } else {
      luaL_addchar(&b, *msg++);
    }
  }
  luaL_pushresult(&b);
}

int ln_lua_error(lua_State *L) {
  const char *msg = ln_last_error();
  luaL_where(L, 1);
  push_one_based(L, msg[0] ? msg : "unknown lunet error");
  lua_concat(L, 2);
  return lua_error(L);
}

void *ln_lua_check(lua_State *L, void *ptr) {
  if (ptr == NULL) ln_lua_error(L);
  return ptr;
}

void ln_lua_check_status(lua_State *L, ln_status st) {
  if (st != LN_OK) ln_lua_error(L);
}

/* ---- dims and sizes ---- */

int ln_lua_wrap_dim(lua_State *L, lua_Integer d, int ndim) {
  lua_Integer n = ndim > 0 ? ndim : 1;
  if (d >= 1 && d <= n) return (int)(d - 1);
  if (d <= -1 && d >= -n) return (int)(d + n);
  if (d == 0)
    return luaL_error(L, "Dimension out of range (dims are 1-based: expected "
                      "to be in range of [-%d, %d] but not 0, but got 0)",
                      (int)n, (int)n);
  return luaL_error(L, "Dimension out of range (expected to be in range of "
                    "[-%d, %d], but got %I)", (int)n, (int)n, d);
}

int64_t ln_lua_wrap_index(lua_State *L, lua_Integer i, int64_t size, int dim) {
  if (i >= 1 && i <= size) return i - 1;
  if (i <= -1 && i >= -size) return size + i;
  return luaL_error(L, "index %I is out of bounds for dimension %d with size %I",
                    i, dim + 1, (lua_Integer)size);
}

int ln_lua_check_dim(lua_State *L, int arg, int ndim) {
  return ln_lua_wrap_dim(L, luaL_checkinteger(L, arg), ndim);
}

/* One integer from the sequence at `tbl`, index i (1-based). A string is
** refused, not converted ("4" is no size, as in PyTorch). */
static lua_Integer table_int(lua_State *L, int tbl, int arg, lua_Integer i) {
  int isnum = 0;
  lua_rawgeti(L, tbl, i);
  lua_Integer v = lua_type(L, -1) == LUA_TNUMBER ? lua_tointegerx(L, -1, &isnum) : 0;
  if (!isnum) {
    const char *got = luaL_typename(L, -1);
    luaL_argerror(L, arg, lua_pushfstring(L, "integer expected at index %I, got %s",
                                          i, got));
  }
  lua_pop(L, 1);
  return v;
}

static void check_size(lua_State *L, int arg, lua_Integer v, bool allow_neg1) {
  if (v < 0 && !(allow_neg1 && v == -1))
    luaL_argerror(L, arg, lua_pushfstring(L, "negative size %I", v));
}

int ln_lua_check_sizes(lua_State *L, int arg, int64_t *sizes, int *next,
                       bool allow_neg1) {
  int n = 0;
  if (lua_istable(L, arg) && !ln_lua_is_options(L, arg) ) {
    lua_Integer len = (lua_Integer)lua_rawlen(L, arg);
    if (len > LN_MAX_DIMS)
      luaL_argerror(L, arg, lua_pushfstring(L, "too many dimensions (%I, at most %d)",
                                            len, LN_MAX_DIMS));
    for (lua_Integer i = 1; i <= len; i++) {
      lua_Integer v = table_int(L, arg, arg, i);
      check_size(L, arg, v, allow_neg1);
      sizes[n++] = v;
    }
    *next = arg + 1;
    return n;
  }
  int a = arg;
  /* integers up to nil, none or a table (the options); anything else is a
  ** bad size, not the end of the sizes, so none is silently dropped */
  for (; !lua_isnoneornil(L, a) && !lua_istable(L, a); a++) {
    if (lua_type(L, a) != LUA_TNUMBER) luaL_typeerror(L, a, "integer");
    if (n == LN_MAX_DIMS)
      luaL_argerror(L, a, "too many dimensions (at most 8)");
    lua_Integer v = luaL_checkinteger(L, a);
    check_size(L, a, v, allow_neg1);
    sizes[n++] = v;
  }
  *next = a;
  return n;
}

int ln_lua_check_dims(lua_State *L, int arg, int ndim, int *dims) {
  if (lua_isnoneornil(L, arg)) return 0;
  if (lua_type(L, arg) == LUA_TNUMBER) {
    dims[0] = ln_lua_check_dim(L, arg, ndim);
    return 1;
  }
  luaL_argexpected(L, lua_istable(L, arg), arg, "number or table of dims");
  lua_Integer len = (lua_Integer)lua_rawlen(L, arg);
  if (len > LN_MAX_DIMS) luaL_argerror(L, arg, "too many dims");
  for (lua_Integer i = 1; i <= len; i++) {
    dims[i - 1] = ln_lua_wrap_dim(L, table_int(L, arg, arg, i), ndim);
    for (lua_Integer j = 1; j < i; j++)
      if (dims[j - 1] == dims[i - 1])
        luaL_argerror(L, arg, lua_pushfstring(L, "dim %d appears multiple times "
                                              "in the list of dims",
                                              dims[i - 1] + 1));
  }
  return (int)len;
}

ln_memory_format ln_lua_check_format(lua_State *L, int arg, ln_memory_format dflt) {
  static const char *const names[] = {
    "contiguous_format", "contiguous", "channels_last", "channels_last_3d",
    "preserve_format", "preserve", NULL
  };
  static const ln_memory_format fmts[] = {
    LN_CONTIGUOUS, LN_CONTIGUOUS, LN_CHANNELS_LAST, LN_CHANNELS_LAST,
    LN_PRESERVE, LN_PRESERVE
  };
  if (lua_isnoneornil(L, arg)) return dflt;
  return fmts[luaL_checkoption(L, arg, NULL, names)];
}

/* ---- options tables ---- */

bool ln_lua_is_options(lua_State *L, int idx) {
  if (!lua_istable(L, idx)) return false;
  bool has_first = lua_rawgeti(L, idx, 1) != LUA_TNIL;
  lua_pop(L, 1);
  return !has_first;
}

/* Push field `field` of the options at idx; false when absent (nothing
** pushed). A present argument that is not a table is an error. */
static bool opt_field(lua_State *L, int idx, const char *field) {
  if (lua_isnoneornil(L, idx)) return false;
  luaL_checktype(L, idx, LUA_TTABLE);
  if (lua_getfield(L, idx, field) == LUA_TNIL) {
    lua_pop(L, 1);
    return false;
  }
  return true;
}

static void opt_error(lua_State *L, int idx, const char *field, const char *what) {
  luaL_argerror(L, idx, lua_pushfstring(L, "option '%s': %s expected, got %s",
                                        field, what, luaL_typename(L, -1)));
}

void ln_lua_set_integer(lua_State *L, const char *field, lua_Integer v) {
  lua_pushinteger(L, v);
  lua_setfield(L, -2, field);
}

bool ln_lua_opt_bool(lua_State *L, int idx, const char *field, bool dflt) {
  if (!opt_field(L, idx, field)) return dflt;
  if (!lua_isboolean(L, -1)) opt_error(L, idx, field, "boolean");
  bool v = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return v;
}

double ln_lua_opt_number(lua_State *L, int idx, const char *field, double dflt) {
  if (!opt_field(L, idx, field)) return dflt;
  if (lua_type(L, -1) != LUA_TNUMBER) opt_error(L, idx, field, "number");
  double v = lua_tonumber(L, -1);
  lua_pop(L, 1);
  return v;
}

ln_dtype ln_lua_opt_dtype(lua_State *L, int idx, ln_dtype dflt) {
  if (!opt_field(L, idx, "dtype")) return dflt;
  if (lua_type(L, -1) != LUA_TSTRING) opt_error(L, idx, "dtype", "string");
  ln_dtype t;
  if (ln_dtype_from_name(lua_tostring(L, -1), &t) != LN_OK)
    luaL_argerror(L, idx, ln_last_error());
  lua_pop(L, 1);
  return t;
}

ln_device ln_lua_opt_device(lua_State *L, int idx, ln_device dflt) {
  if (!opt_field(L, idx, "device")) return dflt;
  if (lua_type(L, -1) != LUA_TSTRING) opt_error(L, idx, "device", "string");
  ln_device d;
  if (ln_device_parse(lua_tostring(L, -1), &d) != LN_OK)
    luaL_argerror(L, idx, ln_last_error());
  lua_pop(L, 1);
  return d;
}

const char *ln_lua_cstring(lua_State *L, int idx, const char *what) {
  size_t n;
  const char *s = lua_tolstring(L, idx, &n);
  if (s && strlen(s) != n) luaL_error(L, "%s cannot contain a NUL byte", what);
  return s;
}

void ln_lua_check_fields(lua_State *L, int idx, const char *const *fields) {
  if (lua_isnoneornil(L, idx)) return;
  luaL_checktype(L, idx, LUA_TTABLE);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    bool known = false;
    if (lua_type(L, -1) == LUA_TSTRING)
      for (int i = 0; fields[i] && !known; i++)
        known = strcmp(lua_tostring(L, -1), fields[i]) == 0;
    if (!known) {
      lua_pushvalue(L, -1);
      luaL_argerror(L, idx, lua_pushfstring(L, "unknown option '%s'",
                                            luaL_tolstring(L, -1, NULL)));
    }
  }
}

void ln_lua_apply_requires_grad(lua_State *L, int idx, ln_tensor *t) {
  if (ln_lua_opt_bool(L, idx, "requires_grad", false))
    ln_lua_check_status(L, ln_tensor_set_requires_grad(t, true));
}

/* ---- tables of numbers ---- */

void ln_lua_cache_new(lua_State *L, const void *key) {
  lua_newtable(L);
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "v");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_rawsetp(L, LUA_REGISTRYINDEX, key);
}

bool ln_lua_cache_get(lua_State *L, const void *key, const void *p) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, key);
  if (lua_rawgetp(L, -1, p) != LUA_TUSERDATA) {
    lua_pop(L, 2);
    return false;
  }
  lua_remove(L, -2);
  return true;
}

void ln_lua_cache_set(lua_State *L, const void *key, const void *p) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, key);
  lua_pushvalue(L, -2);
  lua_rawsetp(L, -2, p);
  lua_pop(L, 1);
}

void ln_lua_push_int64s(lua_State *L, const int64_t *v, int n) {
  lua_createtable(L, n, 0);
  for (int i = 0; i < n; i++) {
    lua_pushinteger(L, (lua_Integer)v[i]);
    lua_rawseti(L, -2, i + 1);
  }
}

void ln_lua_set_funcs(lua_State *L, const luaL_Reg *funcs) {
  luaL_setfuncs(L, funcs, 0);
}

/* ---- collector hint ----
** Lua sees a tensor as a few bytes of userdata, so by itself it would let
** gigabytes of tensor memory pile up before collecting. Each time a tensor
** userdata is created we look at lunet's bytes in use (all devices); the
** growth since the last look becomes collector debt (lua_gc LUA_GCSTEP with
** that many kilobytes, as if Lua had allocated it), paid once at least
** LN_GC_HINT_BYTES have accumulated. Freed memory lowers the mark, so
** allocation churn keeps the collector moving. A collector stopped with
** collectgarbage("stop") is left alone. The counters are process-wide
** and approximate, which is all a hint needs. */

#define LN_GC_HINT_BYTES (1 << 20)

static int hint_cuda_devices;
static int64_t hint_mark, hint_debt;

void ln_lua_gc_hint_init(void) {
  const ln_backend *cuda = ln_backend_get(LN_CUDA);
  hint_cuda_devices = cuda ? cuda->device_count() : 0;
}

static int64_t bytes_in_use(void) {
  int64_t total = ln_memory_stats_get(LN_DEVICE_CPU).in_use;
  for (int i = 0; i < hint_cuda_devices; i++)
    total += ln_memory_stats_get((ln_device){ LN_CUDA, i }).in_use;
  return total;
}

void ln_lua_gc_hint(lua_State *L) {
  int64_t now = bytes_in_use();
  if (now > hint_mark) hint_debt += now - hint_mark;
  hint_mark = now;
  if (hint_debt >= LN_GC_HINT_BYTES && lua_gc(L, LUA_GCISRUNNING)) {
    int kb = hint_debt / 1024 > 1 << 30 ? 1 << 30 : (int)(hint_debt / 1024);
    hint_debt = 0;
    lua_gc(L, LUA_GCSTEP, kb);
  }
}
