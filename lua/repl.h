/*
** repl.h -- the `lunet` executable's terminal side: Ctrl-C handling for
** running Lua code, and the REPL (lua/repl.c; its logic is lunet.repl,
** lua/lunet/repl.lua). Not part of any library.
*/
#ifndef LN_REPL_H
#define LN_REPL_H

#include <lua.h>

/* Until ln_interrupt_end, Ctrl-C (SIGINT) stops the Lua code running in L
** at its next call, return or instruction with the error "interrupted!"
** (lua.c's way: setting a hook is all a signal handler may do); a second
** Ctrl-C before that ends the process. */
void ln_interrupt_begin(lua_State *L);
/* Ctrl-C does again what it did before ln_interrupt_begin; a stop that
** was requested but not reached yet is dropped. */
void ln_interrupt_end(void);

/* Read-eval-print until end of input (Ctrl-D). With stdin a terminal and
** readline built in: line editing, history in ~/.lunet_history (the
** environment variable LUNET_HISTORY names another file; empty: none)
** and Tab completion. Errors never end it. */
void ln_repl(lua_State *L);

#endif
