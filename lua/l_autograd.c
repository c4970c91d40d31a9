/*
** l_autograd.c -- autograd from Lua: x.requires_grad, x.grad, x.grad_fn,
** x.is_leaf, x.data, x:requires_grad_(), x:backward(), x:detach(),
** lunet.no_grad / enable_grad / is_grad_enabled / set_grad_enabled and
** lunet.gradcheck.
*/
#include <stdio.h>

#include "core/autograd.h"
#include "core/gradcheck.h"
#include "lua/l_common.h"

/* ---- properties ---- */

static int p_requires_grad(lua_State *L) {
  lua_pushboolean(L, ln_tensor_requires_grad(ln_lua_check_tensor(L, 1)));
  return 1;
}

static int p_is_leaf(lua_State *L) {
  lua_pushboolean(L, ln_tensor_is_leaf(ln_lua_check_tensor(L, 1)));
  return 1;
}

/* x.grad: nil until a backward reaches x. */
static int p_grad(lua_State *L) {
  ln_tensor *g = ln_tensor_grad(ln_lua_check_tensor(L, 1));
  if (g == NULL) return 0;
  ln_tensor_retain(g);
  ln_lua_push_tensor(L, g);
  return 1;
}

/* x.grad_fn: the name of the node that made x ("MulBackward0"), or nil. */
static int p_grad_fn(lua_State *L) {
  ln_node *n = ln_tensor_grad_fn(ln_lua_check_tensor(L, 1));
  if (n == NULL) return 0;
  lua_pushstring(L, n->name);
  return 1;
}

/* x.data: an alias of x's data without history (as PyTorch's). */
static int p_data(lua_State *L) {
  ln_lua_push_tensor(L, ln_detach(ln_lua_check_tensor(L, 1)));
  return 1;
}

static int s_requires_grad(lua_State *L) {
  ln_tensor *t = ln_lua_check_tensor(L, 1);
  luaL_argexpected(L, lua_isboolean(L, 2), 2, "boolean");
  ln_lua_check_status(L, ln_tensor_set_requires_grad(t, lua_toboolean(L, 2)));
  return 0;
}

/* x.grad = g (a tensor of x's dtype, device and shape) or nil; PyTorch's
** messages, checked in its order. */
static int s_grad(lua_State *L) {
  ln_tensor *t = ln_lua_check_tensor(L, 1);
  if (lua_isnil(L, 2)) {
    ln_tensor_set_grad(t, NULL);
    return 0;
  }
  ln_tensor *g = ln_lua_check_tensor(L, 2);
  if (ln_tensor_dtype(t) != ln_tensor_dtype(g))
    return luaL_error(L, "assigned grad has data of a different type");
  if (!ln_device_eq(ln_tensor_device(t), ln_tensor_device(g)))
    return luaL_error(L, "assigned grad has data located on a different device");
  if (!ln_tensor_same_shape(t, g))
    return luaL_error(L, "assigned grad has data of a different size");
  ln_tensor_set_grad(t, g);
  return 0;
}

/* x.data = y: replace x's data by y's, keeping x's identity. */
static int s_data(lua_State *L) {
  ln_tensor *t = ln_lua_check_tensor(L, 1);
  ln_lua_check_status(L, ln_tensor_set_data(t, ln_lua_check_tensor(L, 2)));
  return 0;
}

/* ---- methods ---- */

/* x:requires_grad_(flag=true) -> x. */
static int t_requires_grad_(lua_State *L) {
  ln_tensor *t = ln_lua_check_tensor(L, 1);
  bool flag = lua_isnone(L, 2) ? true : lua_toboolean(L, 2);
  ln_lua_check_status(L, ln_tensor_set_requires_grad(t, flag));
  lua_settop(L, 1);
  return 1;
}

/* x:backward(grad?, {retain_graph=false}); the options may come second. */
static int t_backward(lua_State *L) {
  static const char *const fields[] = { "retain_graph", NULL };
  ln_tensor *t = ln_lua_check_tensor(L, 1);
  int opts = 3;
  ln_tensor *grad = NULL;
  if (lua_istable(L, 2)) opts = 2;
  else if (!lua_isnoneornil(L, 2)) grad = ln_lua_check_tensor(L, 2);
  ln_lua_check_fields(L, opts, fields);
  bool retain = ln_lua_opt_bool(L, opts, "retain_graph", false);
  ln_lua_check_status(L, ln_backward(t, grad, retain));
  return 0;
}

static int t_detach(lua_State *L) {
  ln_lua_push_tensor(L, ln_detach(ln_lua_check_tensor(L, 1)));
  return 1;
}

/* ---- grad mode ---- */

/* Call fn(...) with grad mode set to `mode`, restoring the previous mode
** whether fn returns or raises; returns fn's results. */
static int with_grad_mode(lua_State *L, bool mode) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  bool was = ln_set_grad_enabled(mode);
  int st = lua_pcall(L, lua_gettop(L) - 1, LUA_MULTRET, 0);
  ln_set_grad_enabled(was);
  if (st != LUA_OK) return lua_error(L);
  return lua_gettop(L);
}

static int l_no_grad(lua_State *L) { return with_grad_mode(L, false); }
static int l_enable_grad(lua_State *L) { return with_grad_mode(L, true); }

static int l_is_grad_enabled(lua_State *L) {
  lua_pushboolean(L, ln_grad_enabled());
  return 1;
}

/* lunet.set_grad_enabled(flag) -> the previous mode. */
static int l_set_grad_enabled(lua_State *L) {
  luaL_checktype(L, 1, LUA_TBOOLEAN);
  lua_pushboolean(L, ln_set_grad_enabled(lua_toboolean(L, 1)));
  return 1;
}

/* ---- gradcheck ----
** ln_gradcheck calls back into Lua for every perturbation. The callback
** never raises: it runs the Lua function under lua_pcall (through
** gc_protected, so that pushing the inputs cannot raise either) and turns
** an error into NULL with the message set. */

typedef struct gc_call {
  lua_State *L;
  int fn;              /* stack index of the Lua function */
  ln_tensor *const *inputs;
  int n;
  ln_tensor *result;   /* new reference on success */
} gc_call;

/* Called with the Lua function and the gc_call (a light userdata). */
static int gc_protected(lua_State *L) {
  gc_call *c = lua_touserdata(L, 2);
  luaL_checkstack(L, c->n + 2, "too many gradcheck inputs");
  lua_pushvalue(L, 1);
  for (int i = 0; i < c->n; i++) {
    ln_tensor_retain(c->inputs[i]);
    ln_lua_push_tensor(L, c->inputs[i]);
  }
  lua_call(L, c->n, 1);
  ln_tensor *y = ln_lua_to_tensor(L, -1);
  if (y == NULL)
    return luaL_error(L, "the function must return a tensor (got %s)",
                      luaL_typename(L, -1));
  ln_tensor_retain(y);
  c->result = y;
  return 0;
}

static ln_tensor *gc_callback(ln_tensor *const *inputs, int n, void *ud) {
  gc_call *c = ud;
  lua_State *L = c->L;
  c->inputs = inputs;
  c->n = n;
  c->result = NULL;
  lua_pushcfunction(L, gc_protected);
  lua_pushvalue(L, c->fn);
  lua_pushlightuserdata(L, c);
  if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    ln_error(LN_ERUNTIME, "gradcheck: %s", msg ? msg : "error in the function");
    lua_pop(L, 1);
    return NULL;
  }
  return c->result;
}

/* lunet.gradcheck(fn, inputs, {eps=1e-6, atol=1e-5, rtol=1e-3}): inputs is
** a tensor or a list of them (float64, CPU); fn(inputs...) returns a
** tensor. Returns true, or raises with the report of the first mismatch. */
static int l_gradcheck(lua_State *L) {
  static const char *const fields[] = { "eps", "atol", "rtol", NULL };
  luaL_checktype(L, 1, LUA_TFUNCTION);
  ln_lua_check_fields(L, 3, fields);
  double eps = ln_lua_opt_number(L, 3, "eps", 1e-6);
  double atol = ln_lua_opt_number(L, 3, "atol", 1e-5);
  double rtol = ln_lua_opt_number(L, 3, "rtol", 1e-3);
  if (!lua_istable(L, 2)) {          /* one tensor: make it a list */
    ln_lua_check_tensor(L, 2);
    lua_createtable(L, 1, 0);
    lua_pushvalue(L, 2);
    lua_rawseti(L, -2, 1);
    lua_replace(L, 2);
  }
  lua_settop(L, 2);
  int n = (int)lua_rawlen(L, 2);
  luaL_argcheck(L, n > 0 && n <= 64, 2, "expected 1 to 64 input tensors");
  ln_tensor **inputs = lua_newuserdatauv(L, (size_t)n * sizeof *inputs, 0);
  for (int i = 0; i < n; i++) {
    lua_rawgeti(L, 2, i + 1);
    if (luaL_testudata(L, -1, LN_TENSOR_MT) == NULL)
      luaL_argerror(L, 2, lua_pushfstring(L, "tensor expected at index %d, got %s",
                                          i + 1, luaL_typename(L, -1)));
    inputs[i] = ln_lua_check_tensor(L, -1);
    lua_pop(L, 1);
  }
  gc_call c = { .L = L, .fn = 1 };
  char report[1024];
  ln_status st = ln_gradcheck(gc_callback, &c, inputs, n, eps, atol, rtol,
                              report, sizeof report);
  if (st != LN_OK) return ln_lua_error(L);
  lua_pushboolean(L, 1);
  return 1;
}

static const luaL_Reg getters[] = {
  { "requires_grad", p_requires_grad }, { "is_leaf", p_is_leaf },
  { "grad", p_grad }, { "grad_fn", p_grad_fn }, { "data", p_data },
  { NULL, NULL }
};

static const luaL_Reg setters[] = {
  { "requires_grad", s_requires_grad }, { "grad", s_grad }, { "data", s_data },
  { NULL, NULL }
};

static const luaL_Reg methods[] = {
  { "requires_grad_", t_requires_grad_ }, { "backward", t_backward },
  { "detach", t_detach },
  { NULL, NULL }
};

static const luaL_Reg funcs[] = {
  { "no_grad", l_no_grad }, { "enable_grad", l_enable_grad },
  { "is_grad_enabled", l_is_grad_enabled }, { "set_grad_enabled", l_set_grad_enabled },
  { "gradcheck", l_gradcheck }, { "detach", t_detach },
  { NULL, NULL }
};

void ln_lua_open_autograd(lua_State *L) {
  luaL_setfuncs(L, funcs, 0);
  static const struct { const char *table; const luaL_Reg *fns; } parts[] = {
    { "getters", getters }, { "setters", setters }, { "methods", methods },
  };
  for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
    ln_lua_push_tensor_table(L, parts[i].table);
    luaL_setfuncs(L, parts[i].fns, 0);
    lua_pop(L, 1);
  }
}
