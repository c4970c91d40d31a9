/*
** main.c -- the `lunet` executable: a Lua 5.4 interpreter with lunet built
** in. It takes lua5.4's command line (`lunet [options] [script [args]]`),
** builds the same `arg` table, honours LUA_INIT_5_4 / LUA_INIT, and reports
** errors with a traceback as "lunet: msg". Before running anything it opens
** the standard libraries, preloads the bindings as "lunet" and puts lunet's
** pure-Lua modules first on package.path, keeping the system's paths so
** that tools such as busted run unchanged. Alone on a terminal it opens a
** plain REPL; with stdin not a terminal it runs stdin as a script.
*/
#define _POSIX_C_SOURCE 200809L  /* readlink, getline */

#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#ifdef LUNET_HAVE_READLINE
#include <readline/history.h>
#include <readline/readline.h>
#endif

#include "lua/lunet_lua.h"

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

/* Print msg to stderr, prefixed with "lunet: " unless prefix is false
** (the REPL reports errors without it, as lua5.4 does). */
static void message(bool prefix, const char *msg) {
  if (prefix) fputs(PROGNAME ": ", stderr);
  fprintf(stderr, "%s\n", msg);
  fflush(stderr);
}

/* If status is an error, print the message on top of the stack and pop
** it. Returns whether status was LUA_OK. */
static bool report(lua_State *L, int status, bool prefix) {
  if (status == LUA_OK) return true;
  message(prefix, lua_tostring(L, -1));
  lua_pop(L, 1);
  return false;
}

static void print_version(void) {
  printf(PROGNAME " %s, %s\n", LUNET_VERSION, LUA_COPYRIGHT);
  fflush(stdout);
}

/* ---- protected calls: traceback and Ctrl-C ---- */

static lua_State *volatile running;  /* the state a SIGINT should stop */

static void stop_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_sethook(L, NULL, 0, 0);
  luaL_error(L, "interrupted!");
}

/* Setting a hook is the one thing that is safe from a signal handler: the
** running code stops at its next call, return or instruction. A second
** Ctrl-C kills the process (the default action is back). */
static void on_sigint(int sig) {
  signal(sig, SIG_DFL);
  lua_sethook(running, stop_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

/* Message handler: turn the error object into a string with a traceback. */
static int traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
      return 1;
    msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

/* Call the function below its narg arguments with nres results, in
** protected mode; on error leaves the message (with traceback) instead. */
static int docall(lua_State *L, int narg, int nres) {
  int base = lua_gettop(L) - narg;
  lua_pushcfunction(L, traceback);
  lua_insert(L, base);
  running = L;
  signal(SIGINT, on_sigint);
  int status = lua_pcall(L, narg, nres, base);
  signal(SIGINT, SIG_DFL);
  lua_remove(L, base);
  return status;
}

/* Run a chunk already loaded (status from the load) with no arguments. */
static bool run_loaded(lua_State *L, int status) {
  if (status == LUA_OK) status = docall(L, 0, 0);
  return report(L, status, true);
}

static bool dostring(lua_State *L, const char *s, const char *name) {
  return run_loaded(L, luaL_loadbuffer(L, s, strlen(s), name));
}

/* ---- setting up the state ---- */

static bool is_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Push the directory holding lunet's pure-Lua modules (the one with a
** lunet/ folder): the installed one next to this executable first, else
** the source tree the build came from. Pushes nothing and returns false
** when neither exists. */
static bool push_lua_dir(lua_State *L) {
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n > 0) {
    exe[n] = '\0';
    *strrchr(exe, '/') = '\0';  /* the kernel gives an absolute path */
    const char *dir = lua_pushfstring(L, "%s/%s", exe, LUNET_INSTALL_LUA_REL);
    lua_pushfstring(L, "%s/lunet", dir);
    bool found = is_dir(lua_tostring(L, -1));
    lua_pop(L, found ? 1 : 2);
    if (found) return true;
  }
  if (!is_dir(LUNET_SOURCE_LUA_DIR "/lunet")) return false;
  lua_pushstring(L, LUNET_SOURCE_LUA_DIR);
  return true;
}

/* Preload the statically linked bindings as "lunet" and put lunet's
** pure-Lua directory in front of package.path. */
static void open_lunet(lua_State *L) {
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_lunet);
  lua_setfield(L, -2, "lunet");
  lua_pop(L, 1);
  if (!push_lua_dir(L)) return;
  const char *dir = lua_tostring(L, -1);
  lua_getglobal(L, "package");
  lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;", dir, dir);
  lua_getfield(L, -2, "path");
  lua_concat(L, 2);
  lua_setfield(L, -2, "path");
  lua_pop(L, 2);
}

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
  int status = docall(L, 1, 1);
  if (status == LUA_OK) {
    lua_pushglobaltable(L);
    lua_pushlstring(L, spec, glen);
    lua_pushvalue(L, -3);
    lua_settable(L, -3);
    lua_pop(L, 2);
  }
  return report(L, status, true);
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
  int status = luaL_loadfile(L, fname);
  if (status == LUA_OK) {
    int n = argc - script - 1;
    luaL_checkstack(L, n + 3, "too many arguments to script");
    for (int i = script + 1; i < argc; i++) lua_pushstring(L, argv[i]);
    status = docall(L, n, LUA_MULTRET);
  }
  return report(L, status, true);
}

/* ---- the REPL ---- */

/* Read one line (without its newline) and push it; false at end of input.
** The prompt is _PROMPT / _PROMPT2 when set, as in lua5.4. */
static bool read_line(lua_State *L, bool first) {
  lua_getglobal(L, first ? "_PROMPT" : "_PROMPT2");
  const char *prompt = lua_tostring(L, -1);
  if (prompt == NULL) prompt = first ? "> " : ">> ";
  char *line = NULL;
#ifdef LUNET_HAVE_READLINE
  line = readline(prompt);
  bool ok = line != NULL;
#else
  size_t cap = 0;
  fputs(prompt, stdout);
  fflush(stdout);
  ssize_t len = getline(&line, &cap, stdin);
  bool ok = len >= 0;
  if (ok && len > 0 && line[len - 1] == '\n') line[len - 1] = '\0';
#endif
  lua_pop(L, 1);  /* the prompt */
  if (ok) lua_pushstring(L, line);
  free(line);
  return ok;
}

/* A syntax error caused only by input ending too early. */
static bool incomplete(lua_State *L, int status) {
  size_t len;
  const char *msg = lua_tolstring(L, -1, &len);
  return status == LUA_ERRSYNTAX && len >= 5 && strcmp(msg + len - 5, "<eof>") == 0;
}

/* Read lines until they compile, trying each text first as an expression
** (so results print; a leading '=' is accepted too) and then as a
** statement. Leaves the function or the syntax error on top; returns the
** load status, or -1 at end of input. */
static int read_chunk(lua_State *L) {
  if (!read_line(L, true)) return -1;
  const char *src = lua_tostring(L, -1);
  if (src[0] == '=') {
    lua_pushstring(L, src + 1);
    lua_remove(L, -2);
  }
  int status;
  for (;;) {
    size_t len;
    src = lua_tolstring(L, -1, &len);
    const char *expr = lua_pushfstring(L, "return %s;", src);
    status = luaL_loadbuffer(L, expr, strlen(expr), "=stdin");
    lua_remove(L, -2);
    if (status == LUA_OK) break;
    lua_pop(L, 1);
    status = luaL_loadbuffer(L, src, len, "=stdin");
    if (!incomplete(L, status)) break;
    lua_pop(L, 1);
    if (!read_line(L, false)) {  /* end of input: report the last error */
      status = luaL_loadbuffer(L, src, len, "=stdin");
      break;
    }
    lua_pushliteral(L, "\n");
    lua_insert(L, -2);
    lua_concat(L, 3);
  }
#ifdef LUNET_HAVE_READLINE
  if (lua_rawlen(L, -2) > 0) add_history(lua_tostring(L, -2));
#endif
  lua_remove(L, -2);  /* the source text */
  return status;
}

/* Read-eval-print until end of input. Results are printed with the global
** print; errors are reported and the session goes on. */
static void repl(lua_State *L) {
  int base = lua_gettop(L), status;
  while ((status = read_chunk(L)) != -1) {
    if (status == LUA_OK) status = docall(L, 0, LUA_MULTRET);
    int n = lua_gettop(L) - base;
    if (status == LUA_OK && n > 0) {
      luaL_checkstack(L, LUA_MINSTACK, "too many results to print");
      lua_getglobal(L, "print");
      lua_insert(L, base + 1);
      if (lua_pcall(L, n, 0, 0) != LUA_OK)
        message(false, lua_pushfstring(L, "error calling 'print' (%s)",
                                       lua_tostring(L, -1)));
    } else {
      report(L, status, false);
    }
    lua_settop(L, base);
  }
  fputs("\n", stdout);
  fflush(stdout);
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
  open_lunet(L);
  create_arg_table(L, argv, argc, script);
  lua_gc(L, LUA_GCRESTART);
  lua_gc(L, LUA_GCGEN, 0, 0);
  if (o.version) print_version();
  if (!o.noenv && !run_init(L)) return 0;
  if (!run_options(L, argv, script)) return 0;
  if (script < argc && !run_script(L, argc, argv, script)) return 0;
  if (o.interactive) {
    repl(L);
  } else if (script == argc && !o.exec && !o.version) {
    if (isatty(STDIN_FILENO)) {
      print_version();
      repl(L);
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
    message(true, "cannot create state: not enough memory");
    return EXIT_FAILURE;
  }
  lua_gc(L, LUA_GCSTOP);  /* no collection while setting up */
  lua_pushcfunction(L, pmain);
  lua_pushinteger(L, argc);
  lua_pushlightuserdata(L, argv);
  int status = lua_pcall(L, 2, 1, 0);
  bool ok = lua_toboolean(L, -1);
  report(L, status, true);
  lua_close(L);
  return ok && status == LUA_OK ? EXIT_SUCCESS : EXIT_FAILURE;
}
