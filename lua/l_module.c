/*
** l_module.c -- the Lua side of nn/module.h: the "lunet.Module" userdata,
** field access that reads and registers slots, and the C functions behind
** lua/lunet/nn/init.lua (the table lunet._module).
**
** An object is a full userdata holding a retained ln_module* (NULL once
** released) and one user value, a table:
**   class     the object's Lua class (methods), resolved for type `ctype`
**   ctype     lightuserdata: the ln_module_type `class` was resolved for
**   attrs     plain Lua attributes (self.foo = 3)
**   children  name -> object of a child module, so that a child's object
**             (and its Lua state: class, attributes, hooks) lives as long
**             as its parent's object
**   pre_hooks, hooks   owned by nn.lua
** REG_OBJECTS maps lightuserdata(ln_module*) to its object (weak values):
** one module gives one object while that object lives. REG_CLASSES maps
** lightuserdata(type) of a Lua-defined type, or the name of a C type, to
** its class; "" holds the base class nn.Module.
*/
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "l_common.h"
#include "lunet_lua.h"
#include "nn/state_dict.h"

#define REG_OBJECTS "lunet.module.objects"
#define REG_CLASSES "lunet.module.classes"
#define BOX_MT "lunet.Box"
#define MAX_INPUTS 16
#define REPR_SIZE 4096   /* as nn/module_repr.c */

typedef struct lmodule {
  ln_module *m;   /* retained; NULL once released */
} lmodule;

static int l_extra_repr(lua_State *L);

/* ---- boxes: C temporaries freed by the collector if an error unwinds ---- */

typedef struct box {
  void *p;                 /* NULL when empty or handed over */
  void (*free)(void *p);
} box;

static void box_clear(box *b) {
  if (b->p) b->free(b->p);
  b->p = NULL;
}

static int box_gc(lua_State *L) {
  box_clear(lua_touserdata(L, 1));
  return 0;
}

/* Push an empty box; fill b->p only once it exists, so nothing can leak. */
static box *box_new(lua_State *L, void (*fr)(void *)) {
  box *b = lua_newuserdatauv(L, sizeof *b, 0);
  b->p = NULL;
  b->free = fr;
  luaL_setmetatable(L, BOX_MT);
  return b;
}

static void free_state_dict(void *p) { ln_state_dict_free(p); }

static void free_load_result(void *p) {
  ln_load_result_free(p);
  free(p);
}

/* ---- lists of (name, tensor or module) collected from C walks ---- */

typedef struct item {
  char *name;
  ln_tensor *t;    /* retained, or NULL */
  ln_module *m;    /* retained, or NULL */
} item;

typedef struct list {
  item *v;
  int n, cap;
} list;

static void free_list(void *p) {
  list *l = p;
  for (int i = 0; i < l->n; i++) {
    free(l->v[i].name);
    ln_tensor_release(l->v[i].t);
    ln_module_release(l->v[i].m);
  }
  free(l->v);
  free(l);
}

/* Push a box holding a new empty list. */
static list *list_new(lua_State *L) {
  box *b = box_new(L, free_list);
  b->p = calloc(1, sizeof(list));
  if (!b->p) luaL_error(L, "not enough memory");
  return b->p;
}

static ln_status list_add(list *l, const char *name, ln_tensor *t, ln_module *m) {
  if (l->n == l->cap) {
    int cap = l->cap ? 2 * l->cap : 16;
    item *v = realloc(l->v, (size_t)cap * sizeof *v);
    if (!v) return ln_error(LN_ENOMEM, "out of memory");
    l->v = v;
    l->cap = cap;
  }
  char *copy = strdup(name);
  if (!copy) return ln_error(LN_ENOMEM, "out of memory");
  if (t) ln_tensor_retain(t);
  if (m) ln_module_retain(m);
  l->v[l->n++] = (item){ copy, t, m };
  return LN_OK;
}

static ln_status collect_tensor(const char *name, ln_tensor *t, void *ud) {
  return list_add(ud, name, t, NULL);
}

static ln_status collect_module(const char *prefix, ln_module *m, void *ud) {
  return list_add(ud, prefix, NULL, m);
}

/* ---- objects ---- */

/* Push a new object with no module yet and its user value table. */
static lmodule *new_shell(lua_State *L) {
  lmodule *u = lua_newuserdatauv(L, sizeof *u, 1);
  u->m = NULL;
  luaL_setmetatable(L, LN_MODULE_MT);
  lua_createtable(L, 0, 4);
  lua_newtable(L);
  lua_setfield(L, -2, "attrs");
  lua_newtable(L);
  lua_setfield(L, -2, "children");
  lua_setiuservalue(L, -2, 1);
  return u;
}

/* Record the object on top as m's object. */
static void remember(lua_State *L, ln_module *m) {
  lua_getfield(L, LUA_REGISTRYINDEX, REG_OBJECTS);
  lua_pushvalue(L, -2);
  lua_rawsetp(L, -2, m);
  lua_pop(L, 1);
}

void ln_lua_push_module(lua_State *L, ln_module *m) {
  if (!m) {
    lua_pushnil(L);
    return;
  }
  lua_getfield(L, LUA_REGISTRYINDEX, REG_OBJECTS);
  if (lua_rawgetp(L, -1, m) == LUA_TUSERDATA) {
    lmodule *u = luaL_testudata(L, -1, LN_MODULE_MT);
    if (u && u->m == m) {
      lua_remove(L, -2);
      return;
    }
  }
  lua_pop(L, 2);
  lmodule *u = new_shell(L);
  ln_module_retain(m);
  u->m = m;
  remember(L, m);
}

ln_module *ln_lua_to_module(lua_State *L, int idx) {
  lmodule *u = luaL_testudata(L, idx, LN_MODULE_MT);
  return u ? u->m : NULL;
}

ln_module *ln_lua_check_module(lua_State *L, int idx) {
  lmodule *u = luaL_checkudata(L, idx, LN_MODULE_MT);
  if (!u->m) luaL_error(L, "attempt to use a released module");
  return u->m;
}

/* A module at idx, NULL for anything that is not a module object; a
** released module is an error rather than "not a module". */
static ln_module *opt_module(lua_State *L, int idx) {
  lmodule *u = luaL_testudata(L, idx, LN_MODULE_MT);
  if (!u) return NULL;
  if (!u->m) luaL_error(L, "attempt to use a released module");
  return u->m;
}

/* __gc and __close: release once; forget the registry entry if it is ours. */
static int l_release(lua_State *L) {
  lmodule *u = luaL_checkudata(L, 1, LN_MODULE_MT);
  ln_module *m = u->m;
  if (!m) return 0;
  u->m = NULL;
  lua_getfield(L, LUA_REGISTRYINDEX, REG_OBJECTS);
  if (lua_rawgetp(L, -1, m) == LUA_TUSERDATA && lua_touserdata(L, -1) == u) {
    lua_pushnil(L);
    lua_rawsetp(L, -3, m);
  }
  lua_pop(L, 2);
  ln_module_release(m);
  return 0;
}

/* Push the class of the object of m (its user value at uv), resolving
** it again when the module changed type (a lazy module that became
** another type); nil when there is none. */
static void push_class(lua_State *L, ln_module *m, int uv) {
  const ln_module_type *type = ln_module_get_type(m);
  lua_getfield(L, uv, "ctype");
  bool same = lua_touserdata(L, -1) == (void *)type;
  lua_pop(L, 1);
  if (same) {
    lua_getfield(L, uv, "class");
    return;
  }
  lua_getfield(L, LUA_REGISTRYINDEX, REG_CLASSES);
  if (lua_rawgetp(L, -1, type) == LUA_TNIL) {
    lua_pop(L, 1);
    if (lua_getfield(L, -1, type->name) == LUA_TNIL) {
      lua_pop(L, 1);
      lua_getfield(L, -1, "");
    }
  }
  lua_remove(L, -2);
  if (lua_isnil(L, -1)) return;   /* nn.lua not loaded yet: do not cache */
  lua_pushvalue(L, -1);
  lua_setfield(L, uv, "class");
  lua_pushlightuserdata(L, (void *)type);
  lua_setfield(L, uv, "ctype");
}

/* Keep the value at obj (a child's object, or nil to forget it) in the
** children table of the user value at uv under name. */
static void keep_child(lua_State *L, int uv, const char *name, int obj) {
  obj = lua_absindex(L, obj);
  lua_getfield(L, uv, "children");
  lua_pushvalue(L, obj);
  lua_setfield(L, -2, name);
  lua_pop(L, 1);
}

/* Register child (NULL empties the slot) as m's child name and keep its
** object, at obj, in m's user value; m's object is at 1. */
static void register_child(lua_State *L, ln_module *m, const char *name, ln_module *child,
                           int obj) {
  obj = lua_absindex(L, obj);
  ln_lua_check_status(L, ln_module_register_module(m, name, child));
  lua_getiuservalue(L, 1, 1);
  keep_child(L, lua_gettop(L), name, obj);
  lua_pop(L, 1);
}

/* Push child (may be NULL) and keep its object in the user value's
** children table (at uv) under name. */
static void push_child(lua_State *L, int uv, const char *name, ln_module *child) {
  ln_lua_push_module(L, child);
  keep_child(L, uv, name, -1);
}

static void push_tensor_ref(lua_State *L, ln_tensor *t) {
  if (!t) {
    lua_pushnil(L);
    return;
  }
  ln_tensor_retain(t);
  ln_lua_push_tensor(L, t);
}

static int child_count(ln_module *m) {
  int n = 0;
  for (int i = 0; i < ln_module_slot_count(m); i++)
    n += ln_module_slot_kind(m, i) == LN_SLOT_CHILD;
  return n;
}

/* Slot index of the pos-th child (1-based; negative counts from the end),
** or -1. */
static int child_slot(ln_module *m, lua_Integer pos) {
  int n = child_count(m);
  if (pos < 0) pos += n + 1;
  if (pos < 1 || pos > n) return -1;
  for (int i = 0; i < ln_module_slot_count(m); i++)
    if (ln_module_slot_kind(m, i) == LN_SLOT_CHILD && --pos == 0) return i;
  return -1;
}

/* ---- attributes ---- */

/* None (LN_ATTR_NIL) reads as false: DESIGN.md spells PyTorch's None
** `false` in options (momentum=false), and nil would hide the attribute. */
static void push_attr(lua_State *L, const ln_attr *a) {
  switch (a->kind) {
    case LN_ATTR_NIL: lua_pushboolean(L, 0); break;
    case LN_ATTR_BOOL: lua_pushboolean(L, a->u.b); break;
    case LN_ATTR_INT: lua_pushinteger(L, (lua_Integer)a->u.i); break;
    case LN_ATTR_NUMBER: lua_pushnumber(L, a->u.d); break;
    case LN_ATTR_STRING: lua_pushstring(L, a->u.s); break;
  }
}

static const char *const attr_kind_names[] = {
  [LN_ATTR_NIL] = "nil", [LN_ATTR_BOOL] = "boolean", [LN_ATTR_INT] = "integer",
  [LN_ATTR_NUMBER] = "number", [LN_ATTR_STRING] = "string"
};

/* Set a C attribute from the value at idx. The new value keeps the
** attribute's kind (an integral number may set an integer and any number a
** number); nil or false set None on a non-boolean attribute, and an
** attribute that is None takes any kind. */
static void set_attr(lua_State *L, ln_module *m, const char *k, const ln_attr *old, int idx) {
  ln_attr a = { .kind = LN_ATTR_NIL };
  int t = lua_type(L, idx);
  if (t == LUA_TNIL || (t == LUA_TBOOLEAN && !lua_toboolean(L, idx) && old->kind != LN_ATTR_BOOL)) {
    a.kind = LN_ATTR_NIL;
  } else if (t == LUA_TBOOLEAN && (old->kind == LN_ATTR_BOOL || old->kind == LN_ATTR_NIL)) {
    a.kind = LN_ATTR_BOOL;
    a.u.b = lua_toboolean(L, idx);
  } else if (t == LUA_TNUMBER && old->kind == LN_ATTR_INT) {
    int isint;
    a.kind = LN_ATTR_INT;
    a.u.i = (int64_t)lua_tointegerx(L, idx, &isint);
    if (!isint) luaL_error(L, "attribute '%s' expects an integer, got %s", k, lua_tostring(L, idx));
  } else if (t == LUA_TNUMBER && (old->kind == LN_ATTR_NUMBER || old->kind == LN_ATTR_NIL)) {
    a.kind = LN_ATTR_NUMBER;
    a.u.d = lua_tonumber(L, idx);
  } else if (t == LUA_TSTRING && (old->kind == LN_ATTR_STRING || old->kind == LN_ATTR_NIL)) {
    a.kind = LN_ATTR_STRING;
    a.u.s = ln_lua_cstring(L, idx, "attribute values");
  } else {
    luaL_error(L, "attribute '%s' expects %s, got %s", k, attr_kind_names[old->kind],
               luaL_typename(L, idx));
  }
  ln_lua_check_status(L, ln_module_set_attr(m, k, a));
}

/* m.training = flag changes m only, as PyTorch: the modes of the
** descendants are put back after the recursive ln_module_train. Putting a
** module back resets its subtree, and a shared module can sit under a
** module restored after it, so restore until nothing changes: once a
** module and all its ancestors are right it stays right, so the passes
** are at most the depth of the tree plus one. */
static void set_training(lua_State *L, ln_module *m, int idx) {
  if (!lua_isboolean(L, idx))
    luaL_error(L, "training expects a boolean, got %s", luaL_typename(L, idx));
  list *l = list_new(L);
  ln_lua_check_status(L, ln_module_walk(m, collect_module, l));
  int *modes = lua_newuserdatauv(L, (size_t)l->n * sizeof(int) + 1, 0);
  for (int i = 0; i < l->n; i++) modes[i] = ln_module_training(l->v[i].m);
  ln_module_train(m, lua_toboolean(L, idx));
  for (bool changed = true; changed;) {
    changed = false;
    for (int i = 0; i < l->n; i++) {
      ln_module *c = l->v[i].m;
      if (c != m && ln_module_training(c) != (bool)modes[i]) {
        ln_module_train(c, modes[i]);
        changed = true;
      }
    }
  }
  lua_pop(L, 2);
}

/* ---- metamethods ---- */

static int index_child(lua_State *L, ln_module *m) {
  int i = lua_isinteger(L, 2) ? child_slot(m, lua_tointeger(L, 2)) : -1;
  if (i < 0) {
    lua_pushnil(L);
    return 1;
  }
  lua_getiuservalue(L, 1, 1);
  push_child(L, lua_gettop(L), ln_module_slot_name(m, i), ln_module_slot_module(m, i));
  return 1;
}

/* Slots, then `training` and C attributes, then Lua attributes, then the
** class's methods. Integer keys index children by position (seq[1]). */
static int l_index(lua_State *L) {
  ln_module *m = ln_lua_check_module(L, 1);
  if (lua_type(L, 2) == LUA_TNUMBER) return index_child(L, m);
  if (lua_type(L, 2) != LUA_TSTRING) {
    lua_pushnil(L);
    return 1;
  }
  size_t n;
  const char *k = lua_tolstring(L, 2, &n);
  if (strlen(k) != n) {   /* no field's name holds a NUL byte */
    lua_pushnil(L);
    return 1;
  }
  lua_settop(L, 2);
  lua_getiuservalue(L, 1, 1);   /* 3 */
  int i = ln_module_find_slot(m, k);
  if (i >= 0) {
    if (ln_module_slot_kind(m, i) == LN_SLOT_CHILD)
      push_child(L, 3, k, ln_module_slot_module(m, i));
    else
      push_tensor_ref(L, ln_module_slot_tensor(m, i));
    return 1;
  }
  if (strcmp(k, "training") == 0) {
    lua_pushboolean(L, ln_module_training(m));
    return 1;
  }
  const ln_attr *a = ln_module_get_attr(m, k);
  if (a) {
    push_attr(L, a);
    return 1;
  }
  lua_getfield(L, 3, "attrs");
  lua_pushvalue(L, 2);
  if (lua_rawget(L, -2) != LUA_TNIL) return 1;
  lua_pop(L, 2);
  push_class(L, m, 3);
  if (lua_isnil(L, -1)) return 1;
  lua_pushvalue(L, 2);
  lua_gettable(L, -2);
  return 1;
}

static void set_lua_attr(lua_State *L, int uv, int key, int value) {
  lua_getfield(L, uv, "attrs");
  lua_pushvalue(L, key);
  lua_pushvalue(L, value);
  lua_rawset(L, -3);
  lua_pop(L, 1);
}

static const char *const slot_what[] = {
  [LN_SLOT_PARAM] = "parameter", [LN_SLOT_BUFFER] = "buffer",
  [LN_SLOT_CHILD] = "child module"
};

/* The __name of a userdata's metatable ("lunet.Tensor"), else the type. */
static const char *value_type_name(lua_State *L, int idx) {
  int t = luaL_getmetafield(L, idx, "__name");
  if (t == LUA_TSTRING) return lua_tostring(L, -1);   /* stays on the stack */
  if (t != LUA_TNIL) lua_pop(L, 1);
  return luaL_typename(L, idx);
}

static int assign_error(lua_State *L, ln_module *m, int i, int idx) {
  ln_slot_kind kind = ln_module_slot_kind(m, i);
  return luaL_error(L, "cannot assign '%s' as %s '%s' (%s or nil expected)",
                    value_type_name(L, idx), slot_what[kind], ln_module_slot_name(m, i),
                    kind == LN_SLOT_CHILD ? "lunet.Module" : "lunet.Tensor");
}

static ln_status is_target(const char *prefix, ln_module *m, void *target) {
  (void)prefix;
  return m == target ? LN_ERUNTIME : LN_OK;
}

/* Give the buffer slot i, named k, to a child module (child) or a
** parameter (t), as PyTorch's __setattr__ does. Names are unique
** across kinds, so the old slot must go first; the failures that do not
** depend on it (a module that would contain itself, a non-leaf tensor) are
** raised first by the same registration on the intact module, so that they
** leave it unchanged. Only running out of memory puts the old slot back at
** the end of the order. */
static void rekind_slot(lua_State *L, ln_module *m, const char *k, int i, ln_module *child,
                        ln_tensor *t) {
  if (child ? ln_module_walk(child, is_target, m) != LN_OK : !ln_tensor_is_leaf(t))
    ln_lua_check_status(L, child ? ln_module_register_module(m, k, child)
                                 : ln_module_register_parameter(m, k, t));
  ln_tensor *old = ln_module_slot_tensor(m, i);
  bool persistent = ln_module_slot_persistent(m, i);
  if (old) ln_tensor_retain(old);
  ln_module_remove_slot(m, k);
  ln_status st = child ? ln_module_register_module(m, k, child)
                       : ln_module_register_parameter(m, k, t);
  if (st != LN_OK) ln_module_register_buffer(m, k, old, persistent);
  ln_tensor_release(old);
  ln_lua_check_status(L, st);
}

/* Register child under k; a buffer of that name gives way, a parameter
** does not (PyTorch's __setattr__ looks for a parameter first). */
static void assign_module(lua_State *L, ln_module *m, const char *k, ln_module *child) {
  int i = ln_module_find_slot(m, k);
  ln_slot_kind kind = i >= 0 ? ln_module_slot_kind(m, i) : LN_SLOT_CHILD;
  if (kind == LN_SLOT_PARAM) assign_error(L, m, i, 3);
  else if (kind == LN_SLOT_BUFFER) rekind_slot(L, m, k, i, child, NULL);
  else ln_lua_check_status(L, ln_module_register_module(m, k, child));
}

/* A tensor goes to a parameter slot when it is flagged as a parameter or
** replaces one, else to a buffer (persistent unless it replaces a
** non-persistent one). A parameter may replace a buffer, as PyTorch. */
static void assign_tensor(lua_State *L, ln_module *m, const char *k, ln_tensor *t) {
  int i = ln_module_find_slot(m, k);
  ln_slot_kind kind = i >= 0 ? ln_module_slot_kind(m, i) : LN_SLOT_BUFFER;
  if (kind == LN_SLOT_CHILD) {
    assign_error(L, m, i, 3);
  } else if (ln_tensor_is_parameter(t) || kind == LN_SLOT_PARAM) {
    if (i >= 0 && kind == LN_SLOT_BUFFER) rekind_slot(L, m, k, i, NULL, t);
    else ln_lua_check_status(L, ln_module_register_parameter(m, k, t));
  } else {
    bool persistent = i >= 0 ? ln_module_slot_persistent(m, i) : true;
    ln_lua_check_status(L, ln_module_register_buffer(m, k, t, persistent));
  }
}

/* Empty the existing slot i (keeping its kind), as PyTorch's
** `self.weight = None`; m's object is at 1. */
static void assign_nil(lua_State *L, ln_module *m, int i) {
  const char *k = ln_module_slot_name(m, i);
  switch (ln_module_slot_kind(m, i)) {
    case LN_SLOT_PARAM:
      ln_lua_check_status(L, ln_module_register_parameter(m, k, NULL));
      break;
    case LN_SLOT_BUFFER:
      ln_lua_check_status(L, ln_module_register_buffer(m, k, NULL,
                                                       ln_module_slot_persistent(m, i)));
      break;
    case LN_SLOT_CHILD:
      lua_pushnil(L);
      register_child(L, m, k, NULL, -1);
      lua_pop(L, 1);
      break;
  }
}

/* seq[i] = module or nil replaces the i-th child. */
static int newindex_child(lua_State *L, ln_module *m) {
  int i = lua_isinteger(L, 2) ? child_slot(m, lua_tointeger(L, 2)) : -1;
  if (i < 0)
    return luaL_error(L, "index %s is out of range (the module has %d children)",
                      lua_tostring(L, 2), child_count(m));
  ln_module *child = opt_module(L, 3);
  if (!child && !lua_isnil(L, 3)) return assign_error(L, m, i, 3);
  register_child(L, m, ln_module_slot_name(m, i), child, 3);
  return 0;
}

/* Modules register children, tensors parameters or buffers, nil empties a
** slot; `training` and C attributes are set in C; anything else is a Lua
** attribute. A failed assignment leaves the module as it was. */
static int l_newindex(lua_State *L) {
  ln_module *m = ln_lua_check_module(L, 1);
  if (lua_type(L, 2) == LUA_TNUMBER) return newindex_child(L, m);
  if (lua_type(L, 2) != LUA_TSTRING)
    return luaL_error(L, "module fields are named by strings (got %s)", luaL_typename(L, 2));
  const char *k = ln_lua_cstring(L, 2, "module field names");
  lua_settop(L, 3);
  lua_getiuservalue(L, 1, 1);   /* 4 */
  ln_module *child = opt_module(L, 3);
  ln_tensor *t = NULL;
  if (!child && luaL_testudata(L, 3, LN_TENSOR_MT)) t = ln_lua_check_tensor(L, 3);
  int i = ln_module_find_slot(m, k);
  lua_pushnil(L);               /* 5: nil, to clear a Lua attribute */
  if (child) {
    assign_module(L, m, k, child);
    keep_child(L, 4, k, 3);
    set_lua_attr(L, 4, 2, 5);
  } else if (t) {
    assign_tensor(L, m, k, t);
    set_lua_attr(L, 4, 2, 5);
  } else if (i >= 0) {
    if (!lua_isnil(L, 3)) return assign_error(L, m, i, 3);
    assign_nil(L, m, i);
  } else if (strcmp(k, "training") == 0) {
    set_training(L, m, 3);
  } else if (ln_module_get_attr(m, k)) {
    set_attr(L, m, k, ln_module_get_attr(m, k), 3);
  } else {
    set_lua_attr(L, 4, 2, 3);
  }
  return 0;
}

/* Calls the class's __call (nn.Module.__call runs hooks and forward);
** without a class, the C forward. */
static int l_call(lua_State *L) {
  ln_module *m = ln_lua_check_module(L, 1);
  lua_getiuservalue(L, 1, 1);
  push_class(L, m, lua_gettop(L));
  if (lua_isnil(L, -1)) {
    lua_pop(L, 2);
    lua_getfield(L, LUA_REGISTRYINDEX, "lunet.module.forward");
  } else {
    lua_getfield(L, -1, "__call");
    lua_remove(L, -2);
    lua_remove(L, -2);
  }
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
  return lua_gettop(L);
}

static int l_len(lua_State *L) {
  lua_pushinteger(L, child_count(ln_lua_check_module(L, 1)));
  return 1;
}

/* ---- text ---- */

/* While tostring runs in C, the state that asked for it, so that the
** extra_repr of a Lua-defined type can call the class's extra_repr. */
static _Thread_local lua_State *repr_L;
static _Thread_local bool repr_failed;   /* the error is left on repr_L's stack */

/* Protected: push the extra_repr text of module (lightuserdata at 1). */
static int call_extra_repr(lua_State *L) {
  ln_lua_push_module(L, lua_touserdata(L, 1));
  lua_getfield(L, -1, "extra_repr");
  if (!lua_isfunction(L, -1) || lua_tocfunction(L, -1) == l_extra_repr) {
    lua_pushliteral(L, "");
    return 1;
  }
  lua_insert(L, -2);
  lua_call(L, 1, 1);
  if (lua_type(L, -1) != LUA_TSTRING)
    return luaL_error(L, "extra_repr must return a string, got %s", luaL_typename(L, -1));
  return 1;
}

/* The extra_repr of Lua-defined types: the class's extra_repr(self). */
static void lua_type_extra_repr(ln_module *m, char *buf, size_t size) {
  lua_State *L = repr_L;
  if (size) buf[0] = '\0';
  if (!L || repr_failed || !lua_checkstack(L, 4)) return;
  lua_pushcfunction(L, call_extra_repr);
  lua_pushlightuserdata(L, m);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
    repr_failed = true;
    return;
  }
  if (size) {
    strncpy(buf, lua_tostring(L, -1), size - 1);
    buf[size - 1] = '\0';
  }
  lua_pop(L, 1);
}

static int l_tostring(lua_State *L) {
  lmodule *u = luaL_checkudata(L, 1, LN_MODULE_MT);
  if (!u->m) {
    lua_pushliteral(L, "lunet.Module (released)");
    return 1;
  }
  lua_State *saved_L = repr_L;
  bool saved_failed = repr_failed;
  repr_L = L;
  repr_failed = false;
  char *s = ln_module_to_string(u->m);
  bool failed = repr_failed;
  repr_L = saved_L;
  repr_failed = saved_failed;
  if (failed) {
    free(s);
    return lua_error(L);
  }
  if (!s) return ln_lua_error(L);
  lua_pushstring(L, s);   /* cannot leak s: copying a string only raises on OOM */
  free(s);
  return 1;
}

/* m:extra_repr(): the C type's text ("" for types without one). */
static int l_extra_repr(lua_State *L) {
  ln_module *m = ln_lua_check_module(L, 1);
  const ln_module_type *type = ln_module_get_type(m);
  char buf[REPR_SIZE] = "";
  if (type->extra_repr && type->extra_repr != lua_type_extra_repr)
    type->extra_repr(m, buf, sizeof buf);
  lua_pushstring(L, buf);
  return 1;
}

/* ---- types and construction ---- */

/* Types of Lua-defined classes. Never freed: a module may outlive the
** Lua state; the list keeps them reachable for leak checkers. */
typedef struct host_type {
  ln_module_type type;
  struct host_type *next;
} host_type;

static _Atomic(host_type *) host_types;

/* _module.new_type(name, class [, version]) -> lightuserdata type. */
static int l_new_type(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_Integer version = luaL_optinteger(L, 3, 1);
  lua_getfield(L, LUA_REGISTRYINDEX, REG_CLASSES);
  host_type *t = calloc(1, sizeof *t);
  char *copy = strdup(name);
  if (!t || !copy) {
    free(t);
    free(copy);
    return luaL_error(L, "not enough memory");
  }
  t->type.name = copy;
  t->type.version = (int)version;
  t->type.extra_repr = lua_type_extra_repr;
  t->next = atomic_load(&host_types);
  while (!atomic_compare_exchange_weak(&host_types, &t->next, t)) {}
  lua_pushvalue(L, 2);
  lua_rawsetp(L, -2, &t->type);
  lua_pushlightuserdata(L, &t->type);
  return 1;
}

/* _module.new(class, type) -> a new module of `type` whose object has
** `class`. `type` must come from new_type or be sequential_type. */
static int l_new(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TLIGHTUSERDATA);
  const ln_module_type *type = lua_touserdata(L, 2);
  lua_getfield(L, LUA_REGISTRYINDEX, REG_CLASSES);
  luaL_argcheck(L, type == &ln_sequential_type || lua_rawgetp(L, -1, type) != LUA_TNIL, 2,
                "unknown module type");
  lua_settop(L, 2);
  lmodule *u = new_shell(L);
  u->m = ln_module_new(type, NULL);
  if (!u->m) return ln_lua_error(L);
  remember(L, u->m);
  lua_getiuservalue(L, -1, 1);
  lua_pushvalue(L, 1);
  lua_setfield(L, -2, "class");
  lua_pushvalue(L, 2);
  lua_setfield(L, -2, "ctype");
  lua_pop(L, 1);
  return 1;
}

/* ---- registration methods ---- */

/* A slot name: a string, not a number that Lua would convert. */
static const char *check_name(lua_State *L, int idx) {
  luaL_checktype(L, idx, LUA_TSTRING);
  return ln_lua_cstring(L, idx, "module field names");
}

static int l_register_parameter(lua_State *L) {
  ln_module *m = ln_lua_check_module(L, 1);
  const char *name = check_name(L, 2);
  ln_tensor *t = lua_isnoneornil(L, 3) ? NULL : ln_lua_check_tensor(L, 3);
  ln_lua_check_status(L, ln_module_register_parameter(m, name, t));
  return 0;
}

static int l_register_buffer(lua_State *L) {
  ln_module *m = ln_lua_check_module(L, 1);
  const char *name = check_name(L, 2);
  ln_tensor *t = lua_isnoneornil(L, 3) ? NULL : ln_lua_check_tensor(L, 3);
  bool persistent = true;
  if (!lua_isnoneornil(L, 4)) {
    luaL_checktype(L, 4, LUA_TTABLE);
    if (lua_getfield(L, 4, "persistent") != LUA_TNIL) persistent = lua_toboolean(L, -1);
  }
  ln_lua_check_status(L, ln_module_register_buffer(m, name, t, persistent));
  return 0;
}

static int l_add_module(lua_State *L) {
  ln_module *m = ln_lua_check_module(L, 1);
  const char *name = check_name(L, 2);
  ln_module *child = lua_isnoneornil(L, 3) ? NULL : ln_lua_check_module(L, 3);
  lua_settop(L, 3);
  register_child(L, m, name, child, 3);
  return 0;
}

/* nn.Parameter(t [, requires_grad=true]): flag t as a parameter; returns t. */
static int l_parameter(lua_State *L) {
  ln_tensor *t = ln_lua_check_tensor(L, 1);
  bool rg = lua_isnoneornil(L, 2) ? true : lua_toboolean(L, 2);
  ln_lua_check_status(L, ln_tensor_set_requires_grad(t, rg));
  ln_tensor_set_parameter(t, true);
  lua_settop(L, 1);
  return 1;
}

static int l_is_module(lua_State *L) {
  lua_pushboolean(L, luaL_testudata(L, 1, LN_MODULE_MT) != NULL);
  return 1;
}

/* _module.private(m): the user value table (hooks live there). */
static int l_private(lua_State *L) {
  ln_lua_check_module(L, 1);
  lua_getiuservalue(L, 1, 1);
  return 1;
}

/* ---- walks ---- */

/* Push the name of item it under prefix ("" stays prefix). */
static void push_prefixed(lua_State *L, const char *prefix, const char *name) {
  if (!*prefix) lua_pushstring(L, name);
  else if (!*name) lua_pushstring(L, prefix);
  else lua_pushfstring(L, "%s.%s", prefix, name);
}

static void collect_own(lua_State *L, ln_module *m, ln_slot_kind kind, list *l) {
  for (int i = 0; i < ln_module_slot_count(m); i++) {
    if (ln_module_slot_kind(m, i) != kind) continue;
    ln_tensor *t = kind == LN_SLOT_CHILD ? NULL : ln_module_slot_tensor(m, i);
    ln_module *c = kind == LN_SLOT_CHILD ? ln_module_slot_module(m, i) : NULL;
    if (!t && !c) continue;
    bool seen = false;
    for (int j = 0; j < l->n && !seen; j++) seen = (t && l->v[j].t == t) || (c && l->v[j].m == c);
    if (!seen) ln_lua_check_status(L, list_add(l, ln_module_slot_name(m, i), t, c));
  }
}

/* Anchor the objects of a named_modules walk (names at names, objects at
** objs, both arrays of n) in their parents' children tables. */
static void anchor_walk(lua_State *L, int names, int objs, int n) {
  lua_newtable(L);   /* walk name -> object */
  int map = lua_gettop(L);
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, names, i);
    lua_rawgeti(L, objs, i);
    const char *name = lua_tostring(L, -2);
    const char *dot = strrchr(name, '.');
    if (*name) {
      lua_pushlstring(L, name, dot ? (size_t)(dot - name) : 0);
      if (lua_rawget(L, map) == LUA_TUSERDATA) {
        lua_getiuservalue(L, -1, 1);
        keep_child(L, lua_gettop(L), dot ? dot + 1 : name, -3);
        lua_pop(L, 1);
      }
      lua_pop(L, 1);
    }
    lua_rawset(L, map);
  }
  lua_pop(L, 1);
}

/* _module.named(m, what, prefix, recurse) -> names, values (arrays).
** what: "parameters", "buffers", "children" or "modules"; module names are
** walk names before the prefix is added. */
static int l_named(lua_State *L) {
  static const char *const whats[] = { "parameters", "buffers", "children", "modules", NULL };
  ln_module *m = ln_lua_check_module(L, 1);
  int what = luaL_checkoption(L, 2, NULL, whats);
  const char *prefix = luaL_optstring(L, 3, "");
  bool recurse = lua_isnoneornil(L, 4) || lua_toboolean(L, 4);
  lua_settop(L, 4);
  list *l = list_new(L);   /* 5 */
  if (what == 0 && recurse) ln_lua_check_status(L, ln_module_named_parameters(m, collect_tensor, l));
  else if (what == 1 && recurse) ln_lua_check_status(L, ln_module_named_buffers(m, collect_tensor, l));
  else if (what == 3) ln_lua_check_status(L, ln_module_walk(m, collect_module, l));
  else collect_own(L, m, what == 0 ? LN_SLOT_PARAM : what == 1 ? LN_SLOT_BUFFER : LN_SLOT_CHILD, l);
  lua_createtable(L, l->n, 0);   /* 6: names with the prefix */
  lua_createtable(L, l->n, 0);   /* 7: values */
  lua_createtable(L, l->n, 0);   /* 8: names without it */
  lua_getiuservalue(L, 1, 1);    /* 9 */
  for (int i = 0; i < l->n; i++) {
    push_prefixed(L, prefix, l->v[i].name);
    lua_rawseti(L, 6, i + 1);
    lua_pushstring(L, l->v[i].name);
    lua_rawseti(L, 8, i + 1);
    if (what == 2) push_child(L, 9, l->v[i].name, l->v[i].m);
    else if (l->v[i].m) ln_lua_push_module(L, l->v[i].m);
    else push_tensor_ref(L, l->v[i].t);
    lua_rawseti(L, 7, i + 1);
  }
  if (what == 3) anchor_walk(L, 8, 7, l->n);
  lua_settop(L, 7);
  return 2;
}

/* ---- modes, conversion, calling ---- */

static int l_train(lua_State *L) {
  ln_module *m = ln_lua_check_module(L, 1);
  if (!lua_isnoneornil(L, 2)) luaL_argexpected(L, lua_isboolean(L, 2), 2, "boolean");
  ln_module_train(m, lua_isnoneornil(L, 2) || lua_toboolean(L, 2));
  lua_settop(L, 1);
  return 1;
}

/* m:to("cuda") m:to("float64") m:to{dtype=..., device=...} m:to(tensor);
** returns m. Tensors keep their identity (ln_module_to). */
static int l_to(lua_State *L) {
  ln_module *m = ln_lua_check_module(L, 1);
  ln_device dev = LN_DEVICE_CPU;
  ln_dtype dtype = LN_F32;
  bool has_dev = false, has_dtype = false;
  ln_tensor *like = ln_lua_to_tensor(L, 2);
  if (like) {
    dev = ln_tensor_device(like);
    dtype = ln_tensor_dtype(like);
    has_dev = has_dtype = true;
  } else if (lua_type(L, 2) == LUA_TSTRING) {
    const char *s = lua_tostring(L, 2);
    if (ln_device_parse(s, &dev) == LN_OK) has_dev = true;
    else if (ln_dtype_from_name(s, &dtype) == LN_OK) has_dtype = true;
    else return luaL_argerror(L, 2, lua_pushfstring(L, "unknown device or dtype '%s'", s));
  } else if (lua_type(L, 2) == LUA_TTABLE) {
    has_dev = lua_getfield(L, 2, "device") != LUA_TNIL;
    has_dtype = lua_getfield(L, 2, "dtype") != LUA_TNIL;
    lua_pop(L, 2);
    if (has_dev) dev = ln_lua_opt_device(L, 2, dev);
    if (has_dtype) dtype = ln_lua_opt_dtype(L, 2, dtype);
  } else {
    return luaL_typeerror(L, 2, "device, dtype, options table or tensor");
  }
  if (has_dtype && !ln_dtype_is_float(dtype))
    return luaL_error(L, "nn.Module.to only accepts floating point dtypes, but got desired dtype=%s",
                      ln_dtype_name(dtype));
  ln_lua_check_status(L, ln_module_to(m, has_dev ? &dev : NULL, has_dtype ? &dtype : NULL));
  lua_settop(L, 1);
  return 1;
}

static int l_zero_grad(lua_State *L) {
  ln_module_zero_grad(ln_lua_check_module(L, 1));
  return 0;
}

static int l_type_name(lua_State *L) {
  lua_pushstring(L, ln_module_type_name(ln_lua_check_module(L, 1)));
  return 1;
}

/* Tensor arguments from `first` on (nil for an omitted optional input). */
static int check_inputs(lua_State *L, int first, ln_tensor **in) {
  int n = lua_gettop(L) - first + 1;
  if (n > MAX_INPUTS) luaL_error(L, "too many inputs (%d, at most %d)", n, MAX_INPUTS);
  for (int i = 0; i < n; i++)
    in[i] = lua_isnil(L, first + i) ? NULL : ln_lua_check_tensor(L, first + i);
  return n;
}

/* m:forward(...) for types with a C forward (ln_module_call). */
static int l_forward(lua_State *L) {
  ln_module *m = ln_lua_check_module(L, 1);
  ln_tensor *in[MAX_INPUTS];
  int n = check_inputs(L, 2, in);
  if (!ln_module_get_type(m)->forward)
    return luaL_error(L, "Module [%s] is missing the required \"forward\" function",
                      ln_module_type_name(m));
  ln_lua_push_tensor(L, ln_module_call(m, in, n));
  return 1;
}

/* m:_lazy_init(...): materialize a lazy module from its inputs. */
static int l_lazy_init(lua_State *L) {
  ln_module *m = ln_lua_check_module(L, 1);
  if (!ln_module_has_uninitialized(m)) return 0;
  ln_tensor *in[MAX_INPUTS];
  int n = check_inputs(L, 2, in);
  ln_lua_check_status(L, ln_module_lazy_init(m, in, n));
  return 0;
}

/* ---- state dicts ---- */

/* m:state_dict() -> {name = tensor, ..., _metadata = {[prefix] = {version=v}}},
** keys (the names in the module's order). */
static int l_state_dict(lua_State *L) {
  ln_module *m = ln_lua_check_module(L, 1);
  box *b = box_new(L, free_state_dict);
  ln_state_dict *sd = b->p = ln_module_state_dict(m);
  if (!sd) return ln_lua_error(L);
  int n = ln_state_dict_count(sd);
  lua_createtable(L, 0, n + 1);
  lua_createtable(L, n, 0);
  for (int i = 0; i < n; i++) {
    lua_pushstring(L, ln_state_dict_key(sd, i));
    lua_pushvalue(L, -1);
    lua_rawseti(L, -3, i + 1);
    push_tensor_ref(L, ln_state_dict_value(sd, i));
    lua_rawset(L, -4);
  }
  int nv = ln_state_dict_version_count(sd);
  lua_createtable(L, 0, nv);
  for (int i = 0; i < nv; i++) {
    lua_createtable(L, 0, 1);
    lua_pushinteger(L, ln_state_dict_version_at(sd, i));
    lua_setfield(L, -2, "version");
    lua_setfield(L, -2, ln_state_dict_version_prefix(sd, i));
  }
  lua_setfield(L, -3, "_metadata");
  box_clear(b);
  return 2;
}

static int cmp_items(const void *a, const void *b) {
  return strcmp(((const item *)a)->name, ((const item *)b)->name);
}

/* Read _metadata (at idx, a table or nil) into sd's versions. */
static void read_metadata(lua_State *L, int idx, ln_state_dict *sd) {
  if (lua_isnil(L, idx)) return;
  if (!lua_istable(L, idx))
    luaL_error(L, "state_dict._metadata must be a table, got %s", luaL_typename(L, idx));
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    if (lua_type(L, -2) == LUA_TSTRING && lua_istable(L, -1)) {
      lua_getfield(L, -1, "version");
      int isint;
      lua_Integer v = lua_tointegerx(L, -1, &isint);
      if (isint) ln_lua_check_status(L, ln_state_dict_set_version(sd, lua_tostring(L, -3), (int)v));
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
}

/* Add the entry at -2 (key) and -1 (value) of a state dict table to l,
** unless the key is in the set at `seen`; mark it there. */
static void add_entry(lua_State *L, list *l, int seen) {
  if (lua_type(L, -2) != LUA_TSTRING)
    luaL_error(L, "state_dict keys must be strings, got %s", luaL_typename(L, -2));
  const char *k = ln_lua_cstring(L, -2, "state_dict keys");
  lua_pushvalue(L, -2);
  bool taken = lua_rawget(L, seen) != LUA_TNIL;
  lua_pop(L, 1);
  if (taken || strcmp(k, "_metadata") == 0) return;
  ln_tensor *t = ln_lua_to_tensor(L, -1);
  if (!t)
    luaL_error(L, "state_dict value for key '%s' must be a tensor, got %s", k,
               luaL_typename(L, -1));
  ln_lua_check_status(L, list_add(l, k, t, NULL));
  lua_pushvalue(L, -2);
  lua_pushboolean(L, 1);
  lua_rawset(L, seen);
}

/* Build a C state dict (left in a box on the stack) from the table at idx:
** string keys to tensors and _metadata. The keys come in the order of the
** table's __keys (m:state_dict()'s: unexpected keys are then listed in the
** module's order, as PyTorch), the others after them, sorted. */
static ln_state_dict *check_state_dict(lua_State *L, int idx) {
  luaL_checktype(L, idx, LUA_TTABLE);
  box *b = box_new(L, free_state_dict);
  list *l = list_new(L);
  lua_newtable(L);
  int seen = lua_gettop(L), n_ordered = 0;
  int keys = luaL_getmetafield(L, idx, "__keys");
  for (lua_Integer i = 1; keys == LUA_TTABLE && lua_geti(L, -1, i) == LUA_TSTRING; i++) {
    lua_pushvalue(L, -1);
    if (lua_rawget(L, idx) != LUA_TNIL) add_entry(L, l, seen);
    lua_pop(L, 2);
  }
  if (keys == LUA_TTABLE) lua_pop(L, 1);   /* the value that ended the walk */
  if (keys != LUA_TNIL) lua_pop(L, 1);
  n_ordered = l->n;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    add_entry(L, l, seen);
    lua_pop(L, 1);
  }
  if (l->n > n_ordered)
    qsort(l->v + n_ordered, (size_t)(l->n - n_ordered), sizeof *l->v, cmp_items);
  ln_state_dict *sd = b->p = ln_state_dict_new();
  if (!sd) luaL_error(L, "not enough memory");
  for (int i = 0; i < l->n; i++)
    ln_lua_check_status(L, ln_state_dict_set(sd, l->v[i].name, l->v[i].t));
  lua_pop(L, 2);   /* the set and the list */
  lua_getfield(L, idx, "_metadata");
  read_metadata(L, lua_gettop(L), sd);
  lua_pop(L, 1);
  return sd;
}

static void push_strings(lua_State *L, char **s, int n) {
  lua_createtable(L, n, 0);
  for (int i = 0; i < n; i++) {
    lua_pushstring(L, s[i]);
    lua_rawseti(L, -2, i + 1);
  }
}

/* m:load_state_dict(sd [, {strict=true} or strict]) ->
** {missing_keys = {...}, unexpected_keys = {...}}. */
static int l_load_state_dict(lua_State *L) {
  ln_module *m = ln_lua_check_module(L, 1);
  bool strict = true;
  if (lua_istable(L, 3)) {
    if (lua_getfield(L, 3, "strict") != LUA_TNIL) strict = lua_toboolean(L, -1);
    lua_pop(L, 1);
  } else if (!lua_isnoneornil(L, 3)) {
    luaL_argexpected(L, lua_isboolean(L, 3), 3, "table or boolean");
    strict = lua_toboolean(L, 3);
  }
  lua_settop(L, 2);
  ln_state_dict *sd = check_state_dict(L, 2);
  box *rb = box_new(L, free_load_result);
  ln_load_result *r = rb->p = calloc(1, sizeof *r);
  if (!r) return luaL_error(L, "not enough memory");
  ln_lua_check_status(L, ln_module_load_state_dict(m, sd, strict, r));
  lua_createtable(L, 0, 2);
  push_strings(L, r->missing_keys, r->n_missing);
  lua_setfield(L, -2, "missing_keys");
  push_strings(L, r->unexpected_keys, r->n_unexpected);
  lua_setfield(L, -2, "unexpected_keys");
  return 1;
}

/* ---- opening ---- */

static const luaL_Reg module_meta[] = {
  { "__index", l_index },
  { "__newindex", l_newindex },
  { "__call", l_call },
  { "__len", l_len },
  { "__tostring", l_tostring },
  { "__gc", l_release },
  { "__close", l_release },
  { NULL, NULL }
};

static const luaL_Reg module_funcs[] = {
  { "new_type", l_new_type },
  { "new", l_new },
  { "parameter", l_parameter },
  { "is_module", l_is_module },
  { "private", l_private },
  { "named", l_named },
  /* methods of nn.Module (self first) */
  { "register_parameter", l_register_parameter },
  { "register_buffer", l_register_buffer },
  { "add_module", l_add_module },
  { "train", l_train },
  { "to", l_to },
  { "zero_grad", l_zero_grad },
  { "type_name", l_type_name },
  { "extra_repr", l_extra_repr },
  { "forward", l_forward },
  { "_lazy_init", l_lazy_init },
  { "state_dict", l_state_dict },
  { "load_state_dict", l_load_state_dict },
  { NULL, NULL }
};

/* Registers the metatables and registry tables, and sets lunet._module in
** the table on top of the stack. */
void ln_lua_open_module(lua_State *L) {
  luaL_newmetatable(L, BOX_MT);
  lua_pushcfunction(L, box_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);

  luaL_newmetatable(L, LN_MODULE_MT);
  luaL_setfuncs(L, module_meta, 0);
  lua_pop(L, 1);

  luaL_getsubtable(L, LUA_REGISTRYINDEX, REG_OBJECTS);
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "v");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_pop(L, 1);

  lua_pushcfunction(L, l_forward);
  lua_setfield(L, LUA_REGISTRYINDEX, "lunet.module.forward");

  lua_createtable(L, 0, 24);
  luaL_setfuncs(L, module_funcs, 0);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, REG_CLASSES);
  lua_setfield(L, -2, "classes");
  lua_pushlightuserdata(L, (void *)&ln_sequential_type);
  lua_setfield(L, -2, "sequential_type");
#ifdef LN_HAVE_MPI
  lua_pushboolean(L, 1);
#else
  lua_pushboolean(L, 0);
#endif
  lua_setfield(L, -2, "has_mpi");
  lua_setfield(L, -2, "_module");
}
