/*
** main.c -- the `lunet` executable: a Lua 5.4 interpreter with lunet built
** in. It takes lua5.4's command line (`lunet [options] [script [args]]`),
** builds the same `arg` table, honours LUA_INIT_5_4 / LUA_INIT, and reports
** errors with a traceback as "lunet: msg". Before running anything it opens
** the standard libraries and sets lunet up with ln_embed_open (the
** bindings preloaded as "lunet", lunet's Lua files first on package.path,
** the system's paths kept so that tools such as busted run unchanged).
** Alone on a terminal it opens the REPL (repl.c); with stdin not a
** terminal it runs stdin as a script.
*/

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "lua/lunet_embed.h"
#include "lua/repl.h"

#define PROGNAME "lunet"

static const char usage_text[] =
  "usage: " PROGNAME " [options] [script [args]]\n"
  "Available options are:\n"
  "  -e stat   execute string 'stat'\n"
  "  -i        enter interactive mode after executing 'script'\n"
  "  -l mod    require library 'mod' into global 'mod'\n"
  "  -l g=mod  require library 'mod' into global 'g'\n"
  "  -v        show version information\n"
  "  -E        ignore environment variables\n"
  "  -W        turn warnings on\n"
  "  --        stop handling options\n"
  "  -         stop handling options and execute stdin\n";

/* ---- messages ---- */

/* Print "lunet: msg" to stderr. */
static void message(const char *msg) {
  fprintf(stderr, PROGNAME ": %s\n", msg);
  fflush(stderr);
}

/* If status is an error, print the message on top of the stack and pop
** it. Returns whether status was LUA_OK. */
static bool report(lua_State *L, int status) {
  if (status == LUA_OK) return true;
  const char *msg = lua_tostring(L, -1);
  message(msg ? msg : "(error object is not a string)");
  lua_pop(L, 1);
  return false;
}

static void print_version(void) {
  printf(PROGNAME " %s, %s\n", LUNET_VERSION, LUA_COPYRIGHT);
  fflush(stdout);
}

/* ---- protected calls: traceback and Ctrl-C ---- */

/* Call the function below its narg arguments with nres results, in
** protected mode, Ctrl-C stopping it; on error print the message with a
** traceback. Returns whether it worked. */
static bool docall(lua_State *L, int narg, int nres) {
  ln_interrupt_begin(L);
  ln_status st = ln_embed_pcall(L, narg, nres);
  ln_interrupt_end();
  if (st != LN_OK) message(ln_last_error());
  return st == LN_OK;
}

/* Run a chunk already loaded (status from the load) with no arguments. */
static bool run_loaded(lua_State *L, int status) {
  return report(L, status) && docall(L, 0, 0);
}

static bool dostring(lua_State *L, const char *s, const char *name) {
  return run_loaded(L, luaL_loadbuffer(L, s, strlen(s), name));
}

/* ---- setting up the state ---- */

/* The global `arg`: the script at 0, its arguments at 1.., the interpreter
** and its options at negative indices. Without a script the interpreter
** is at 0 and the options follow. */
static void create_arg_table(lua_State *L, char **argv, int argc, int script) {
  if (script == argc) script = 0;
  lua_createtable(L, argc - script - 1, script + 1);
  for (int i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - script);
  }
  lua_setglobal(L, "arg");
}

/* LUA_INIT_5_4, else LUA_INIT: "@file" runs a file, anything else is code. */
static bool run_init(lua_State *L) {
  const char *name = "=LUA_INIT_5_4";
  const char *init = getenv(name + 1);
  if (init == NULL) {
    name = "=LUA_INIT";
    init = getenv(name + 1);
  }
  if (init == NULL) return true;
  if (init[0] == '@') return run_loaded(L, luaL_loadfile(L, init + 1));
  return dostring(L, init, name);
}

/* ---- command line ---- */

typedef struct options {
  bool interactive;  /* -i */
  bool version;      /* -v (also set by -i) */
  bool noenv;        /* -E */
  bool exec;         /* some -e */
} options;

/* Scan the options before the script. Returns the index of the script in
** argv (argc when there is none), or -1 after printing what is wrong. */
static int parse_options(int argc, char **argv, options *o) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (a[0] != '-' || a[1] == '\0') return i;  /* a script, or "-" */
    bool alone = a[2] == '\0';
    switch (a[1]) {
    case '-':
      if (!alone) break;
      return i + 1;
    case 'E': if (!alone) break; o->noenv = true; continue;
    case 'W': if (!alone) break; continue;
    case 'i': if (!alone) break; o->interactive = o->version = true; continue;
    case 'v': if (!alone) break; o->version = true; continue;
    case 'e': case 'l':
      o->exec |= a[1] == 'e';
      if (alone && (++i >= argc || argv[i][0] == '-')) {
        fprintf(stderr, PROGNAME ": '%s' needs argument\n", a);
        goto usage;
      }
      continue;
    }
    fprintf(stderr, PROGNAME ": unrecognized option '%s'\n", a);
    goto usage;
  }
  return argc;
usage:
  fputs(usage_text, stderr);
  fflush(stderr);
  return -1;
}

/* `-l [g=]mod`: global g (or mod up to any '-') = require(mod). */
static bool run_require(lua_State *L, const char *spec) {
  const char *eq = strchr(spec, '=');
  const char *mod = eq ? eq + 1 : spec;
  size_t glen = eq ? (size_t)(eq - spec) : strcspn(spec, "-");
  lua_getglobal(L, "require");
  lua_pushstring(L, mod);
  if (!docall(L, 1, 1)) return false;
  lua_pushglobaltable(L);
  lua_pushlstring(L, spec, glen);
  lua_pushvalue(L, -3);
  lua_settable(L, -3);
  lua_pop(L, 2);
  return true;
}

/* Run -e, -l and -W in the order given (parse_options checked them). */
static bool run_options(lua_State *L, char **argv, int script) {
  for (int i = 1; i < script; i++) {
    const char *a = argv[i];
    char opt = a[1];
    if (opt == 'W') {
      lua_warning(L, "@on", 0);
    } else if (opt == 'e' || opt == 'l') {
      const char *val = a[2] != '\0' ? a + 2 : argv[++i];
      bool ok = opt == 'e' ? dostring(L, val, "=(command line)") : run_require(L, val);
      if (!ok) return false;
    }
  }
  return true;
}

/* Run the script argv[script] ("-" is stdin unless after "--") with the
** rest of the command line as its `...`. */
static bool run_script(lua_State *L, int argc, char **argv, int script) {
  const char *fname = argv[script];
  if (strcmp(fname, "-") == 0 && strcmp(argv[script - 1], "--") != 0)
    fname = NULL;
  if (!report(L, luaL_loadfile(L, fname))) return false;
  int n = argc - script - 1;
  luaL_checkstack(L, n + 3, "too many arguments to script");
  for (int i = script + 1; i < argc; i++) lua_pushstring(L, argv[i]);
  return docall(L, n, LUA_MULTRET);
}

/* ---- main ---- */

/* Everything runs here, under lua_pcall, so that even a memory error while
** setting up is reported. Pushes true when all went well. */
static int pmain(lua_State *L) {
  int argc = (int)lua_tointeger(L, 1);
  char **argv = lua_touserdata(L, 2);
  options o = {0};
  int script = parse_options(argc, argv, &o);
  luaL_checkversion(L);
  if (script < 0) return 0;
  if (o.noenv) {  /* the package library then ignores LUA_PATH / LUA_CPATH */
    lua_pushboolean(L, 1);
    lua_setfield(L, LUA_REGISTRYINDEX, "LUA_NOENV");
  }
  luaL_openlibs(L);
  if (ln_embed_open(L) != LN_OK) {
    message(ln_last_error());
    return 0;
  }
  create_arg_table(L, argv, argc, script);
  lua_gc(L, LUA_GCRESTART);
  lua_gc(L, LUA_GCGEN, 0, 0);
  if (o.version) print_version();
  if (!o.noenv && !run_init(L)) return 0;
  if (!run_options(L, argv, script)) return 0;
  if (script < argc && !run_script(L, argc, argv, script)) return 0;
  if (o.interactive) {
    ln_repl(L);
  } else if (script == argc && !o.exec && !o.version) {
    if (isatty(STDIN_FILENO)) {
      print_version();
      ln_repl(L);
    } else if (!run_loaded(L, luaL_loadfile(L, NULL))) {
      return 0;
    }
  }
  lua_pushboolean(L, 1);
  return 1;
}

int main(int argc, char **argv) {
  lua_State *L = luaL_newstate();
  if (L == NULL) {
    message("cannot create state: not enough memory");
    return EXIT_FAILURE;
  }
  lua_gc(L, LUA_GCSTOP);  /* no collection while setting up */
  lua_pushcfunction(L, pmain);
  lua_pushinteger(L, argc);
  lua_pushlightuserdata(L, argv);
  int status = lua_pcall(L, 2, 1, 0);
  bool ok = lua_toboolean(L, -1);
  report(L, status);
  lua_close(L);
  return ok && status == LUA_OK ? EXIT_SUCCESS : EXIT_FAILURE;
}
