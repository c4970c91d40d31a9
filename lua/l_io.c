/*
** l_io.c -- checkpoints and memory statistics from Lua:
**   lunet.save(path, {name=tensor, ...}, {metadata={k="v"}}) -> true | nil, msg
**   lunet.load(path) -> {name=tensor, ...}, metadata | nil, msg
**   lunet.memory_stats() -> {cpu={in_use=, peak=, allocations=, reserved=},
**                            ["cuda:0"]=...}
**   lunet.reset_peak_memory_stats()   lunet.empty_cache()
** Files are safetensors (core/safetensors.h); tensors are written in name
** order. A state dict's `_metadata` table ({[""]={version=1},
** ["1"]={version=2}}) is stored in the file's __metadata__ under
** "lunet.state_dict_versions" as a JSON object from prefix to version
** ({"":1,"1":2}) and restored on load, so a state dict round-trips.
** I/O and format failures return nil, message (as io.open does); bad
** arguments raise.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "core/safetensors.h"
#include "core/storage.h"
#include "lua/l_common.h"

#define VERSIONS_KEY "lunet.state_dict_versions"
#define FILE_MT "lunet.TensorFile"

/* ---- sorting borrowed strings ---- */

typedef struct named { const char *name; size_t len; void *value; } named;

static int named_cmp(const void *a, const void *b) {
  const named *x = a, *y = b;
  size_t n = x->len < y->len ? x->len : y->len;
  int c = memcmp(x->name, y->name, n);
  return c ? c : (x->len > y->len) - (x->len < y->len);
}

/* ---- _metadata <-> JSON ---- */

/* Push s as a JSON string (quotes, backslashes and control characters
** escaped; other bytes kept, UTF-8 is checked by the writer). */
static void push_json_string(lua_State *L, const char *s, size_t len) {
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  luaL_addchar(&b, '"');
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') {
      luaL_addchar(&b, '\\');
      luaL_addchar(&b, (char)c);
    } else if (c < 0x20) {
      char esc[8];
      snprintf(esc, sizeof esc, "\\u%04x", c);
      luaL_addstring(&b, esc);
    } else {
      luaL_addchar(&b, (char)c);
    }
  }
  luaL_addchar(&b, '"');
  luaL_pushresult(&b);
}

/* Push the JSON for the _metadata table at idx (prefix -> {version=n}),
** members sorted by prefix. Bad entries are a bad argument #2. */
static void push_versions(lua_State *L, int idx) {
  lua_newtable(L);                       /* pieces: "\"prefix\":n" */
  int pieces = lua_gettop(L), n = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    int isnum = 0;
    lua_Integer v = 0;
    if (lua_istable(L, -1)) {
      lua_getfield(L, -1, "version");
      v = lua_tointegerx(L, -1, &isnum);
      lua_pop(L, 1);
    }
    if (lua_type(L, -2) != LUA_TSTRING || !isnum)
      luaL_argerror(L, 2, "_metadata must map module prefixes to {version=integer}");
    size_t len;
    const char *k = lua_tolstring(L, -2, &len);
    push_json_string(L, k, len);
    lua_pushfstring(L, "%s:%I", lua_tostring(L, -1), v);
    lua_rawseti(L, pieces, ++n);
    lua_pop(L, 2);                       /* the JSON key, the value */
  }
  named *v = lua_newuserdatauv(L, (size_t)n * sizeof *v + 1, 0);
  for (int i = 0; i < n; i++) {
    lua_rawgeti(L, pieces, i + 1);       /* anchored in pieces */
    v[i].name = lua_tolstring(L, -1, &v[i].len);
    lua_pop(L, 1);
  }
  qsort(v, (size_t)n, sizeof *v, named_cmp);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  luaL_addchar(&b, '{');
  for (int i = 0; i < n; i++) {
    if (i) luaL_addchar(&b, ',');
    luaL_addlstring(&b, v[i].name, v[i].len);
  }
  luaL_addchar(&b, '}');
  luaL_pushresult(&b);
  lua_replace(L, pieces);
  lua_settop(L, pieces);
}

/* Set _metadata in the table at idx from the JSON text s; false (with a
** message pushed) when the text is not such an object. */
static bool restore_versions(lua_State *L, int idx, const char *s) {
  ln_json *root = NULL;
  if (ln_json_parse(s, strlen(s), &root) != LN_OK || root->type != LN_JSON_OBJECT) {
    lua_pushfstring(L, "bad " VERSIONS_KEY " metadata: %s",
                    root ? "not a JSON object" : ln_last_error());
    ln_json_free(root);
    return false;
  }
  for (size_t i = 0; i < root->n_members; i++) {
    if (root->members[i].value.type != LN_JSON_NUMBER ||
        !root->members[i].value.is_integer) {
      ln_json_free(root);
      lua_pushliteral(L, "bad " VERSIONS_KEY " metadata: versions must be integers");
      return false;
    }
  }
  /* From here nothing fails but Lua allocation; free the tree first. */
  lua_createtable(L, 0, (int)root->n_members);
  for (size_t i = 0; i < root->n_members; i++) {
    lua_pushlstring(L, root->members[i].key, root->members[i].key_length);
    lua_createtable(L, 0, 1);
    ln_lua_set_integer(L, "version", root->members[i].value.integer);
    lua_rawset(L, -3);
  }
  ln_json_free(root);
  lua_setfield(L, idx, "_metadata");
  return true;
}

/* ---- save ---- */

/* Collect the user's metadata (string keys, string or number values) into
** kv, anchoring converted strings in the table at `anchor`. */
static int collect_metadata(lua_State *L, int opts, int anchor, ln_kv *kv, int max) {
  int n = 0;
  if (lua_isnoneornil(L, opts) || lua_getfield(L, opts, "metadata") == LUA_TNIL) return 0;
  int meta = lua_gettop(L);
  luaL_argexpected(L, lua_istable(L, meta), opts, "metadata table");
  lua_pushnil(L);
  while (lua_next(L, meta)) {
    if (lua_type(L, -2) != LUA_TSTRING || (lua_type(L, -1) != LUA_TSTRING &&
                                           lua_type(L, -1) != LUA_TNUMBER))
      luaL_argerror(L, opts, "metadata must map strings to strings");
    if (strcmp(lua_tostring(L, -2), VERSIONS_KEY) == 0)
      luaL_argerror(L, opts, "metadata key '" VERSIONS_KEY "' is reserved");
    if (n == max) luaL_argerror(L, opts, "too many metadata entries");
    luaL_tolstring(L, -1, NULL);           /* numbers become strings */
    lua_rawseti(L, anchor, (lua_Integer)lua_rawlen(L, anchor) + 1);
    kv[n].key = (char *)ln_lua_cstring(L, -2, "metadata keys");
    lua_rawgeti(L, anchor, (lua_Integer)lua_rawlen(L, anchor));
    kv[n].value = (char *)ln_lua_cstring(L, -1, "metadata values");
    lua_pop(L, 2);
    n++;
  }
  lua_pop(L, 1);
  return n;
}

#define MAX_METADATA 256

/* lunet.save(path, tbl, {metadata={...}}) -> true, or nil, message. */
static int l_save(lua_State *L) {
  static const char *const fields[] = { "metadata", NULL };
  luaL_checkstring(L, 1);
  const char *path = ln_lua_cstring(L, 1, "paths");
  luaL_checktype(L, 2, LUA_TTABLE);
  ln_lua_check_fields(L, 3, fields);
  lua_settop(L, 3);
  lua_newtable(L);                                      /* 4: anchor */
  /* tensors, sorted by name; names are anchored as keys of tbl */
  int n = 0, versions = 0;
  lua_pushnil(L);
  while (lua_next(L, 2)) {
    lua_pop(L, 1);
    n++;
  }
  named *v = lua_newuserdatauv(L, (size_t)n * sizeof *v + 1, 0);   /* 5 */
  ln_named_tensor *nt = lua_newuserdatauv(L, (size_t)n * sizeof *nt + 1, 0); /* 6 */
  ln_kv *kv = lua_newuserdatauv(L, (MAX_METADATA + 1) * sizeof *kv, 0); /* 7 */
  n = 0;
  lua_pushnil(L);
  while (lua_next(L, 2)) {
    if (lua_type(L, -2) == LUA_TSTRING && strcmp(lua_tostring(L, -2), "_metadata") == 0) {
      luaL_argexpected(L, lua_istable(L, -1), 2, "_metadata table");
      versions = lua_absindex(L, -1);
      lua_pushvalue(L, -1);
      lua_rawseti(L, 4, (lua_Integer)lua_rawlen(L, 4) + 1);
      lua_pop(L, 1);
      continue;
    }
    if (lua_type(L, -2) != LUA_TSTRING)
      luaL_argerror(L, 2, lua_pushfstring(L, "keys must be strings (got %s)",
                                          luaL_typename(L, -2)));
    if (luaL_testudata(L, -1, LN_TENSOR_MT) == NULL)
      luaL_argerror(L, 2, lua_pushfstring(L, "tensor expected at key '%s', got %s",
                                          lua_tostring(L, -2), luaL_typename(L, -1)));
    v[n].name = ln_lua_cstring(L, -2, "tensor names");   /* C would cut them there */
    v[n].len = lua_rawlen(L, -2);
    v[n].value = ln_lua_check_tensor(L, -1);
    n++;
    lua_pop(L, 1);
  }
  qsort(v, (size_t)n, sizeof *v, named_cmp);
  for (int i = 0; i < n; i++) {
    nt[i].name = (char *)v[i].name;     /* borrowed: save only reads them */
    nt[i].tensor = v[i].value;
  }
  int nkv = collect_metadata(L, 3, 4, kv, MAX_METADATA);
  if (versions) {
    lua_rawgeti(L, 4, 1);
    push_versions(L, lua_gettop(L));
    kv[nkv].key = VERSIONS_KEY;
    kv[nkv].value = (char *)lua_tostring(L, -1);   /* stays on the stack */
    nkv++;
  }
  ln_status st = ln_safetensors_save(path, nt, n, kv, nkv);
  if (st == LN_EIO) {
    luaL_pushfail(L);
    lua_pushstring(L, ln_last_error());
    return 2;
  }
  ln_lua_check_status(L, st);
  lua_pushboolean(L, 1);
  return 1;
}

/* ---- load ---- */

/* A loaded file in a userdata, so that an error while building the Lua
** tables frees what was not handed over yet. */
static int file_gc(lua_State *L) {
  ln_tensor_file *f = luaL_checkudata(L, 1, FILE_MT);
  ln_tensor_file_free(f);
  memset(f, 0, sizeof *f);
  return 0;
}

/* lunet.load(path) -> tensors, metadata, or nil, message. */
static int l_load(lua_State *L) {
  luaL_checkstring(L, 1);
  const char *path = ln_lua_cstring(L, 1, "paths");
  lua_settop(L, 1);
  ln_tensor_file *f = lua_newuserdatauv(L, sizeof *f, 0);     /* 2 */
  memset(f, 0, sizeof *f);
  luaL_setmetatable(L, FILE_MT);
  ln_status st = ln_safetensors_load(path, f);
  if (st == LN_EIO || st == LN_EFORMAT) {
    luaL_pushfail(L);
    lua_pushstring(L, ln_last_error());
    return 2;
  }
  ln_lua_check_status(L, st);
  lua_createtable(L, 0, f->n_tensors);                        /* 3 */
  for (int i = 0; i < f->n_tensors; i++) {
    lua_pushstring(L, f->tensors[i].name);
    ln_lua_push_tensor(L, f->tensors[i].tensor);
    f->tensors[i].tensor = NULL;         /* handed over */
    lua_rawset(L, 3);
  }
  lua_newtable(L);                                            /* 4 */
  for (int i = 0; i < f->n_metadata; i++) {
    if (strcmp(f->metadata[i].key, VERSIONS_KEY) == 0) {
      if (!restore_versions(L, 3, f->metadata[i].value)) {
        luaL_pushfail(L);
        lua_insert(L, -2);
        return 2;
      }
      continue;
    }
    lua_pushstring(L, f->metadata[i].value);
    lua_setfield(L, 4, f->metadata[i].key);
  }
  lua_pushcfunction(L, file_gc);        /* free the file now, not at the next GC */
  lua_pushvalue(L, 2);
  lua_call(L, 1, 0);
  return 2;
}

/* ---- memory statistics ---- */

static void push_stats(lua_State *L, ln_device dev) {
  ln_memory_stats s = ln_memory_stats_get(dev);
  lua_createtable(L, 0, 4);
  ln_lua_set_integer(L, "in_use", s.in_use);
  ln_lua_set_integer(L, "peak", s.peak);
  ln_lua_set_integer(L, "allocations", s.allocations);
  ln_lua_set_integer(L, "reserved", s.reserved);
}

static int cuda_devices(void) {
  const ln_backend *b = ln_backend_get(LN_CUDA);
  return b ? b->device_count() : 0;
}

/* lunet.memory_stats() -> {cpu={...}, ["cuda:0"]={...}, ...}. */
static int l_memory_stats(lua_State *L) {
  lua_newtable(L);
  push_stats(L, LN_DEVICE_CPU);
  lua_setfield(L, -2, "cpu");
  for (int i = 0, n = cuda_devices(); i < n; i++) {
    char name[32];
    ln_device d = { LN_CUDA, i };
    push_stats(L, d);
    lua_setfield(L, -2, ln_device_str(d, name, sizeof name));
  }
  return 1;
}

/* lunet.reset_peak_memory_stats(device?) : every device when absent. */
static int l_reset_peak(lua_State *L) {
  if (!lua_isnoneornil(L, 1)) {
    ln_device d;
    if (ln_device_parse(luaL_checkstring(L, 1), &d) != LN_OK)
      luaL_argerror(L, 1, ln_last_error());
    ln_memory_stats_reset_peak(d);
    return 0;
  }
  ln_memory_stats_reset_peak(LN_DEVICE_CPU);
  for (int i = 0, n = cuda_devices(); i < n; i++)
    ln_memory_stats_reset_peak((ln_device){ LN_CUDA, i });
  return 0;
}

/* lunet.empty_cache() : give every allocator's cached free blocks back to
** the system (they never count as in use). */
static int l_empty_cache(lua_State *L) {
  (void)L;
  for (int t = 0; t < LN_DEVICE_TYPE_COUNT; t++) ln_empty_cache((ln_device_type)t);
  return 0;
}

static const luaL_Reg funcs[] = {
  { "save", l_save }, { "load", l_load }, { "memory_stats", l_memory_stats },
  { "reset_peak_memory_stats", l_reset_peak }, { "empty_cache", l_empty_cache },
  { NULL, NULL }
};

void ln_lua_open_io(lua_State *L) {
  luaL_setfuncs(L, funcs, 0);
  luaL_newmetatable(L, FILE_MT);
  lua_pushcfunction(L, file_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
}
