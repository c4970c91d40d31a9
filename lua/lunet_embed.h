/*
** lunet_embed.h -- lunet inside a C program that hosts Lua: a state with
** lunet loaded, tensors passed both ways without copying, scripts run in
** protected mode. Link with `pkg-config --cflags --libs lunet-embed`.
**
** Errors: every function that can fail returns a status (or NULL) and
** leaves the message in ln_last_error() (core/status.h), as the rest of
** lunet does. A Lua error's message comes with a traceback. Nothing here
** raises a Lua error into the host or aborts on bad input.
**
** Tensors: the host and Lua share the same ln_tensor, each holding its
** own reference (see ln_embed_push_tensor). The data lives until both have
** let go; to hand Lua memory the host owns, wrap it with ln_storage_wrap
** and ln_from_storage, whose deleter runs after the last reference.
*/
#ifndef LN_LUNET_EMBED_H
#define LN_LUNET_EMBED_H

#include <lua.h>

#include "core/status.h"
#include "core/tensor.h"

/* A new Lua state with the standard libraries opened and lunet loaded
** (package.loaded.lunet, no global), set up as the `lunet` executable sets
** up its own: see ln_embed_open. NULL with a message when it fails. Close
** it with lua_close. */
lua_State *ln_embed_new_state(void);

/* Make lunet available to require() in a state the host created (its
** package library must be open): the bindings are preloaded as "lunet"
** (this library's copy, no lunet.so is searched for) and the directory of
** lunet's Lua files goes in front of package.path. That directory is the
** installed share/lua/5.4 of the prefix this library (or the program it
** is linked into) was installed to, else the source tree it was built
** from. Loads nothing yet. */
ln_status ln_embed_open(lua_State *L);

/* Load and run a chunk of Lua source (`name` as in luaL_loadbuffer, e.g.
** "=config"; NULL: the code itself) or a file, without results. */
ln_status ln_embed_dostring(lua_State *L, const char *code, const char *name);
ln_status ln_embed_dofile(lua_State *L, const char *path);

/* lua_pcall with a traceback: calls the function below its nargs
** arguments and leaves nresults results (LUA_MULTRET: all). On failure
** the function and arguments are gone, nothing is pushed, and the error
** (with traceback) is in ln_last_error(). */
ln_status ln_embed_pcall(lua_State *L, int nargs, int nresults);

/* Push t as a lunet.Tensor. Lua takes its OWN reference to the same
** ln_tensor (no copy, not even a view: writes from either side are seen
** by the other, and pushing t again gives the same Lua object); the
** caller's reference stays the caller's to release. t must not be NULL.
** On failure nothing is pushed. Loads lunet if it is not loaded yet. */
ln_status ln_embed_push_tensor(lua_State *L, ln_tensor *t);

/* The tensor at stack index idx: a NEW reference to the ln_tensor the Lua
** object holds (again no copy), or NULL with a message when the value is
** not a live tensor. The stack is unchanged. */
ln_tensor *ln_embed_to_tensor(lua_State *L, int idx);

/* The same through a global variable: ln_embed_get_tensor returns a NEW
** reference to the tensor in global `name`; ln_embed_set_tensor sets the
** global to t as ln_embed_push_tensor does (t borrowed). */
ln_tensor *ln_embed_get_tensor(lua_State *L, const char *name);
ln_status ln_embed_set_tensor(lua_State *L, const char *name, ln_tensor *t);

#endif
