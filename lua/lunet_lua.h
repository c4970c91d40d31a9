/*
** lunet_lua.h -- what the binding files share: userdata for tensors and
** modules, argument checks, and turning a failed C status into a Lua error.
** One binding file per concept (l_tensor.c, l_ops.c, l_module.c, ...).
*/
#ifndef LN_LUNET_LUA_H
#define LN_LUNET_LUA_H

#include <lauxlib.h>
#include <lua.h>

#include "core/tensor.h"
#include "nn/module.h"

#define LN_TENSOR_MT "lunet.Tensor"
#define LN_MODULE_MT "lunet.Module"

/* ---- errors ---- */
/* Raise a Lua error with ln_last_error() (1-based dims already rewritten
** by the C layer where it matters). Never returns. Free C temporaries first. */
int ln_lua_error(lua_State *L);
/* If ptr is NULL raise ln_lua_error, else return ptr. */
void *ln_lua_check(lua_State *L, void *ptr);
/* If st is not LN_OK raise ln_lua_error. */
void ln_lua_check_status(lua_State *L, ln_status st);

/* ---- tensors ---- */
/* Push t as a lunet.Tensor userdata, TAKING OVER the reference. If t is
** NULL, raises the current error instead. */
void ln_lua_push_tensor(lua_State *L, ln_tensor *t);
/* The tensor at idx (borrowed), or a "bad argument" error; released
** tensors give "attempt to use a released tensor". */
ln_tensor *ln_lua_check_tensor(lua_State *L, int idx);
/* The tensor at idx or NULL if it is not a tensor (no error). */
ln_tensor *ln_lua_to_tensor(lua_State *L, int idx);
/* A tensor at idx, or a Lua number turned into a 0-dim tensor shaped for an
** operation with `like` (ln_scalar_like). Returns a NEW reference either way. */
ln_tensor *ln_lua_tensor_or_scalar(lua_State *L, int idx, ln_tensor *like);

/* Options tables: read a field of the table at idx (absent: dflt). */
ln_dtype ln_lua_opt_dtype(lua_State *L, int idx, ln_dtype dflt);
ln_device ln_lua_opt_device(lua_State *L, int idx, ln_device dflt);

/* Lua's 1-based dim (negative counts from the end) to a 0-based one, with
** PyTorch's "Dimension out of range" error in 1-based numbers. */
int ln_lua_check_dim(lua_State *L, int arg, int ndim);

/* ---- modules ---- */
/* Push the Lua object of m (one object per module while it lives: the same
** module always gives the same object). Does not take over a reference. */
void ln_lua_push_module(lua_State *L, ln_module *m);
ln_module *ln_lua_check_module(lua_State *L, int idx);
ln_module *ln_lua_to_module(lua_State *L, int idx);

/* ---- opening ---- */
/* Each binding file registers its functions into the table on top. */
void ln_lua_open_tensor(lua_State *L);
void ln_lua_open_ops(lua_State *L);
void ln_lua_open_autograd(lua_State *L);
void ln_lua_open_io(lua_State *L);
void ln_lua_open_module(lua_State *L);
void ln_lua_open_batchnorm(lua_State *L);   /* lunet._batchnorm (l_batchnorm.c) */
void ln_lua_open_syncbn(lua_State *L);      /* lunet._syncbn (l_syncbn.c) */
void ln_lua_open_layers(lua_State *L);      /* lunet._layers (l_layers.c) */
void ln_lua_open_optim(lua_State *L);       /* lunet._optim (l_optim.c) */
void ln_lua_open_index(lua_State *L);       /* x:index_select (l_index.c) */
int luaopen_lunet(lua_State *L);

#endif
