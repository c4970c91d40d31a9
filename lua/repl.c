/*
** repl.c -- the terminal side of the `lunet` REPL: reading lines (GNU
** readline on a terminal, plain reads otherwise), the history file, Tab
** completion through readline's hook, and Ctrl-C. What to do with the
** lines -- compiling, printing, completing names -- is lunet.repl
** (lua/lunet/repl.lua), which gets these primitives as a `host` table.
**
** Ctrl-C has two jobs. While Lua code runs it stops that code (a hook, as
** lua.c's laction). While a line is being read it abandons the line: the
** handler only sets a flag; readline runs in its callback mode over
** select(), which the signal interrupts, so the loop sees the flag.
*/
#define _POSIX_C_SOURCE 200809L  /* sigaction, getline */

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>

#ifdef LUNET_HAVE_READLINE
#include <readline/history.h>
#include <readline/readline.h>
#endif

#include "lua/lunet_lua.h"
#include "lua/repl.h"

#define HISTORY_LINES 1000   /* the history file keeps this many lines */

/* ---- Ctrl-C while Lua code runs ---- */

static lua_State *volatile running;   /* the state a SIGINT stops */
static struct sigaction before_running;
static volatile sig_atomic_t hook_set;

static void stop_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_sethook(L, NULL, 0, 0);
  hook_set = 0;
  luaL_error(L, "interrupted!");
}

static void on_sigint_running(int sig) {
  (void)sig;   /* SA_RESETHAND put the default action back */
  hook_set = 1;
  lua_sethook(running, stop_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

void ln_interrupt_begin(lua_State *L) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_sigint_running;
  sa.sa_flags = SA_RESETHAND;
  sigemptyset(&sa.sa_mask);
  running = L;
  sigaction(SIGINT, &sa, &before_running);
}

void ln_interrupt_end(void) {
  sigaction(SIGINT, &before_running, NULL);
  if (hook_set && lua_gethook(running) == stop_hook) lua_sethook(running, NULL, 0, 0);
  hook_set = 0;
}

/* ---- Ctrl-C while reading ---- */

static volatile sig_atomic_t got_sigint;

static void on_sigint_reading(int sig) {
  (void)sig;
  got_sigint = 1;
}

/* Without SA_RESTART, so that select() and read() return EINTR. */
static void catch_sigint_reading(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_sigint_reading;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
}

/* ---- reading without readline (stdin not a terminal) ---- */

/* Push the next line without its newline, nil at end of input, false
** after Ctrl-C. */
static int read_plain(lua_State *L, const char *prompt) {
  fputs(prompt, stdout);
  fflush(stdout);
  char *line = NULL;
  size_t cap = 0;
  got_sigint = 0;
  ssize_t len = getline(&line, &cap, stdin);
  if (len < 0) {
    free(line);
    if (!got_sigint) return 0;
    clearerr(stdin);
    fputs("\n", stdout);
    lua_pushboolean(L, 0);
    return 1;
  }
  if (len > 0 && line[len - 1] == '\n') line[--len] = '\0';
  lua_pushlstring(L, line, (size_t)len);   /* cannot leak: no error but memory */
  free(line);
  return 1;
}

#ifdef LUNET_HAVE_READLINE

/* ---- history ---- */

static char *history_path;   /* NULL: no file */

/* LUNET_HISTORY, else ~/.lunet_history; an empty LUNET_HISTORY means
** none. Multi-line chunks stay one entry: each entry starts with a
** timestamp line ("#1712345678", bash's format) in the file. */
static void history_open(void) {
  const char *env = getenv("LUNET_HISTORY");
  const char *home = getenv("HOME");
  using_history();
  stifle_history(HISTORY_LINES);
  history_comment_char = '#';   /* readline writes no timestamps without it */
  history_write_timestamps = 1;
  history_multiline_entries = 1;
  if (env != NULL) {
    history_path = env[0] ? strdup(env) : NULL;
  } else if (home != NULL && home[0]) {
    size_t n = strlen(home) + sizeof "/.lunet_history";
    history_path = malloc(n);
    if (history_path) snprintf(history_path, n, "%s/.lunet_history", home);
  }
  if (history_path) read_history(history_path);
}

static void history_close(void) {
  free(history_path);
  history_path = NULL;
  clear_history();
}

/* host.add_history(text): remember a chunk (not twice in a row) and add
** it to the file at once, so that a killed session keeps it. */
static int h_add_history(lua_State *L) {
  const char *text = luaL_checkstring(L, 1);
  HIST_ENTRY *last = history_length > 0 ? history_get(history_base + history_length - 1) : NULL;
  if (last && strcmp(last->line, text) == 0) return 0;
  add_history(text);
  if (!history_path) return 0;
  struct stat st;
  if (stat(history_path, &st) != 0) write_history(history_path);
  else append_history(1, history_path);
  history_truncate_file(history_path, HISTORY_LINES);
  return 0;
}

/* ---- completion ---- */

static lua_State *completing;   /* the state whose completer runs */
static const char completer_key = 'k';   /* registry: the Lua completer */

/* The completions of `text` from the Lua completer, as a NULL-terminated
** malloc'd array of malloc'd strings (readline's rl_completion_matches
** format: [0] is the common prefix), or NULL for none. */
static char **lua_matches(const char *text) {
  lua_State *L = completing;
  int top = lua_gettop(L);
  char **out = NULL;
  if (!lua_checkstack(L, 4)) return NULL;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &completer_key);
  lua_pushstring(L, text);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK || !lua_istable(L, -1)) goto done;
  size_t n = lua_rawlen(L, -1);
  if (n == 0) goto done;
  out = calloc(n + 2, sizeof *out);
  if (!out) goto done;
  for (size_t i = 1; i <= n; i++) {
    lua_rawgeti(L, -1, (lua_Integer)i);
    const char *s = lua_tostring(L, -1);
    out[i] = strdup(s ? s : "");
    lua_pop(L, 1);
    if (!out[i]) goto fail;
  }
  if (n == 1) {   /* readline's format for a single match */
    out[0] = out[1];
    out[1] = NULL;
    goto done;
  }
  /* [0]: the longest common prefix */
  size_t len = strlen(out[1]);
  for (size_t i = 2; i <= n; i++) {
    size_t j = 0;
    while (j < len && out[i][j] == out[1][j]) j++;
    len = j;
  }
  out[0] = strndup(out[1], len);
  if (!out[0]) goto fail;
  goto done;
fail:
  for (size_t i = 0; i <= n; i++) free(out[i]);
  free(out);
  out = NULL;
done:
  lua_settop(L, top);
  return out;
}

static char **complete(const char *text, int start, int end) {
  (void)start;
  (void)end;
  rl_attempted_completion_over = 1;   /* no file names */
  rl_completion_append_character = '\0';
  return lua_matches(text);
}

/* host.set_completer(fn) */
static int h_set_completer(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_pushvalue(L, 1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &completer_key);
  return 0;
}

/* ---- reading with readline ---- */

static char *line_read;
static bool line_done;

static void on_line(char *line) {
  line_read = line;
  line_done = true;
  rl_callback_handler_remove();
}

/* host.read on a terminal: readline's callback interface over select(),
** so that Ctrl-C can abandon the line. Pushes the line, nil at end of
** input (Ctrl-D on an empty line) or false after Ctrl-C. */
static int read_tty(lua_State *L, const char *prompt) {
  line_read = NULL;
  line_done = false;
  got_sigint = 0;
  completing = L;
  rl_callback_handler_install(prompt, on_line);
  while (!line_done) {
    int fd = fileno(rl_instream);
    fd_set fds;
    FD_ZERO(&fds);
    FD_SET(fd, &fds);
    int r = select(fd + 1, &fds, NULL, NULL, NULL);
    if (got_sigint) {
      rl_free_line_state();
      rl_callback_sigcleanup();
      rl_echo_signal_char(SIGINT);
      rl_callback_handler_remove();
      fputs("\n", rl_outstream);
      fflush(rl_outstream);
      lua_pushboolean(L, 0);
      return 1;
    }
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {   /* cannot wait on stdin: end of input */
      rl_callback_handler_remove();
      return 0;
    }
    rl_callback_read_char();
  }
  if (line_read == NULL) return 0;
  lua_pushstring(L, line_read);   /* cannot leak: no error but memory */
  free(line_read);
  return 1;
}

#endif /* LUNET_HAVE_READLINE */

/* ---- the other host functions ---- */

static bool use_readline;

/* host.read(prompt) */
static int h_read(lua_State *L) {
  const char *prompt = luaL_checkstring(L, 1);
#ifdef LUNET_HAVE_READLINE
  if (use_readline) return read_tty(L, prompt);
#endif
  return read_plain(L, prompt);
}

/* host.interrupts(on): Ctrl-C stops running code while on. */
static int h_interrupts(lua_State *L) {
  if (lua_toboolean(L, 1)) ln_interrupt_begin(L);
  else ln_interrupt_end();
  return 0;
}

/* host.module_attrs(m) -> the names of m's C attributes (eps, ...). */
static int h_module_attrs(lua_State *L) {
  ln_module *m = ln_lua_check_module(L, 1);
  int n = ln_module_attr_count(m);
  lua_createtable(L, n, 0);
  for (int i = 0; i < n; i++) {
    lua_pushstring(L, ln_module_attr_name(m, i));
    lua_rawseti(L, -2, i + 1);
  }
  return 1;
}

static int h_nothing(lua_State *L) {
  (void)L;
  return 0;
}

/* ---- the loop ---- */

/* Push the host table for repl.run. */
static void push_host(lua_State *L) {
  lua_createtable(L, 0, 5);
  lua_pushcfunction(L, h_read);
  lua_setfield(L, -2, "read");
  lua_pushcfunction(L, h_interrupts);
  lua_setfield(L, -2, "interrupts");
  lua_pushcfunction(L, h_module_attrs);
  lua_setfield(L, -2, "module_attrs");
#ifdef LUNET_HAVE_READLINE
  if (use_readline) {
    lua_pushcfunction(L, h_add_history);
    lua_setfield(L, -2, "add_history");
    lua_pushcfunction(L, h_set_completer);
    lua_setfield(L, -2, "set_completer");
    return;
  }
#endif
  lua_pushcfunction(L, h_nothing);
  lua_setfield(L, -2, "add_history");
}

/* Load lunet.repl and call repl.run(host), protected. */
static int run_protected(lua_State *L) {
  lua_getglobal(L, "require");
  lua_pushliteral(L, "lunet.repl");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "run");
  push_host(L);
  lua_call(L, 1, 0);
  return 0;
}

void ln_repl(lua_State *L) {
  use_readline = isatty(STDIN_FILENO);
#ifdef LUNET_HAVE_READLINE
  if (use_readline) {
    rl_readline_name = "lunet";
    rl_catch_signals = 0;
    rl_attempted_completion_function = complete;
    /* '.' and ':' stay inside words: "x:si" and "lunet.ze" complete */
    rl_basic_word_break_characters = " \t\n\"\\'`@$><=;|&{(,+-*/%^~#[])}";
    rl_completer_word_break_characters = rl_basic_word_break_characters;
    history_open();
  }
#endif
  struct sigaction before;
  sigaction(SIGINT, NULL, &before);
  catch_sigint_reading();
  /* repl.run returns at end of input; it only fails when a Ctrl-C lands
  ** between two of its steps, or when lunet.repl cannot load. */
  for (;;) {
    lua_pushcfunction(L, run_protected);
    if (lua_pcall(L, 0, 0, 0) == LUA_OK) break;
    const char *msg = lua_tostring(L, -1);
    fprintf(stderr, "%s\n", msg ? msg : "(error object is not a string)");
    fflush(stderr);
    bool fatal = msg == NULL || strstr(msg, "interrupted!") == NULL;
    lua_pop(L, 1);
    if (fatal) break;
  }
  sigaction(SIGINT, &before, NULL);
#ifdef LUNET_HAVE_READLINE
  if (use_readline) history_close();
#endif
}
