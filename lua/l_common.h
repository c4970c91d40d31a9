/*
** l_common.h -- helpers shared by the tensor binding files (l_*.c):
** reading sizes, dims, memory formats and options from Lua arguments,
** and telling the garbage collector about tensor memory.
** Everything here raises a Lua error on bad input; none of it allocates C
** memory, so callers may use it before creating any C temporary.
*/
#ifndef LN_L_COMMON_H
#define LN_L_COMMON_H

#include <stdbool.h>
#include <stdint.h>

#include "lua/lunet_lua.h"

/* Sizes given either as integers from `arg` on (up to the first nil, none
** or table: a string or boolean among them is an error, not the end) or as
** one table at `arg` (a sequence of integers, such as x:size()). Returns
** ndim and sets *next to the first argument after the sizes. -1 entries
** are allowed when allow_neg1. */
int ln_lua_check_sizes(lua_State *L, int arg, int64_t *sizes, int *next,
                       bool allow_neg1);

/* Dims given as one integer or a table of integers at `arg`, converted to
** 0-based; returns how many (0 when the argument is absent or nil). */
int ln_lua_check_dims(lua_State *L, int arg, int ndim, int *dims);

/* A Lua dim value (1-based, negative from the end) to 0-based. `arg` is
** only used for the error position (0: none). See l_common.c. */
int ln_lua_wrap_dim(lua_State *L, lua_Integer d, int ndim);

/* A Lua index (1-based, negative from the end) into a dim of `size`
** elements, 0-based, with PyTorch's "index 5 is out of bounds for
** dimension 1 with size 3" in 1-based numbers. dim is 0-based. */
int64_t ln_lua_wrap_index(lua_State *L, lua_Integer i, int64_t size, int dim);

/* A memory format name at `arg` ("contiguous_format", "channels_last",
** "preserve_format"; short forms "contiguous", "preserve" too). */
ln_memory_format ln_lua_check_format(lua_State *L, int arg, ln_memory_format dflt);

/* True when the value at idx is an options table (a table without [1]). */
bool ln_lua_is_options(lua_State *L, int idx);

/* t.field = v for the table on top of the stack. */
void ln_lua_set_integer(lua_State *L, const char *field, lua_Integer v);

/* Fields of an options table at idx (absent table or field: dflt). */
bool ln_lua_opt_bool(lua_State *L, int idx, const char *field, bool dflt);
double ln_lua_opt_number(lua_State *L, int idx, const char *field, double dflt);

/* Check that the options table at idx has only the given fields (a NULL-
** terminated list), so that misspelt options do not pass silently. */
void ln_lua_check_fields(lua_State *L, int idx, const char *const *fields);
/* The string at idx as C reads it, raising "<what> cannot contain a NUL
** byte" when it holds one (C would read it cut there, as another name). */
const char *ln_lua_cstring(lua_State *L, int idx, const char *what);

/* Tell the collector that tensor memory grew (see l_common.c). */
void ln_lua_gc_hint(lua_State *L);
/* Called by luaopen_lunet once the backends are known. */
void ln_lua_gc_hint_init(void);

/* Caches from C objects to the Lua objects that hold them, so that one C
** object always comes back as the same Lua object: a table with weak
** values in the registry under key (the address of a static). cache_new
** creates it; cache_get pushes the object cached for p and returns true,
** or pushes nothing and returns false; cache_set caches the object on top
** of the stack for p (it stays there). The cached objects are userdata. */
void ln_lua_cache_new(lua_State *L, const void *key);
bool ln_lua_cache_get(lua_State *L, const void *key, const void *p);
void ln_lua_cache_set(lua_State *L, const void *key, const void *p);

/* Push a table {s1, s2, ...} of a tensor's sizes or strides. */
void ln_lua_push_int64s(lua_State *L, const int64_t *v, int n);

/* Make a tensor created for a Lua caller a leaf that requires grad, when
** the options table at idx asks for requires_grad=true. */
void ln_lua_apply_requires_grad(lua_State *L, int idx, ln_tensor *t);

/* The binding files beyond those lunet_lua.h names: creation functions
** (l_create.c), views/conversions (l_view.c), reductions (l_reduce.c),
** lunet.clock (l_bench.c), lunet.isatty (l_term.c). */
void ln_lua_open_create(lua_State *L);
void ln_lua_open_view(lua_State *L);
void ln_lua_open_reduce(lua_State *L);   /* called by ln_lua_open_ops */
void ln_lua_open_bench(lua_State *L);
void ln_lua_open_term(lua_State *L);
void ln_lua_open_backends(lua_State *L);  /* lunet.backends (l_backends.c) */

/* Registration helpers for the ln_lua_open_* functions. */
void ln_lua_set_funcs(lua_State *L, const luaL_Reg *funcs);
/* Push one of lunet.Tensor's tables, so that each binding file adds its
** own entries: "methods" (x:name(...)), "getters" (x.name: fn(x) returns
** the value) or "setters" (x.name = v: fn(x, v)). */
void ln_lua_push_tensor_table(lua_State *L, const char *which);

#endif
