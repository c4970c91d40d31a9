/*
** l_layers.c -- the layers and losses from Lua (nn/layers.h): the table
** lunet._layers that lua/lunet/nn/layers.lua turns into nn.Linear,
** nn.Conv2d, nn.ReLU, nn.Flatten, nn.Dropout, nn.MaxPool2d,
** nn.AdaptiveAvgPool2d, nn.CrossEntropyLoss, nn.MSELoss and their
** nn.functional forms.
**   Linear(cls, in, out, opts) ... MSELoss(cls, opts) -> module (the
**     __call of each class; the class argument is dropped first)
**   reset_parameters(m) -> m
**   linear, conv2d, relu, dropout, max_pool2d, adaptive_avg_pool2d,
**   log_softmax, softmax, cross_entropy, mse_loss -> tensor
** Lua's conventions apply: dims are 1-based, class indices in targets are
** 1-based, None is false, options come in a trailing table whose unknown
** keys are errors. Geometry a module fixes at construction (Conv2d's
** kernel_size, stride, padding, dilation; the pools' sizes; Flatten's
** dims) is also set as plain fields of its object, in the form given.
*/
#include <string.h>

#include "lua/l_common.h"
#include "nn/layers.h"

/* ---- arguments ---- */

/* An int or a pair {a, b} at stack index idx (argument `arg` for errors),
** for `what`. Returns whether it was a pair. */
static bool check_pair(lua_State *L, int idx, int arg, const char *what, int64_t out[2]) {
  if (lua_isinteger(L, idx)) {
    out[0] = out[1] = lua_tointeger(L, idx);
    return false;
  }
  bool ok = lua_istable(L, idx) && luaL_len(L, idx) == 2;
  for (int i = 0; ok && i < 2; i++) {
    ok = lua_rawgeti(L, idx, i + 1) == LUA_TNUMBER && lua_isinteger(L, -1);
    out[i] = lua_tointeger(L, -1);
    lua_pop(L, 1);
  }
  if (!ok)
    luaL_argerror(L, arg, lua_pushfstring(L, "%s: integer or {h, w} expected, got %s", what,
                                          luaL_typename(L, idx)));
  return true;
}

/* Field `field` of the options at idx as a pair (absent: dflt). Returns 0
** when absent, 1 for an int, 2 for a pair. */
static int opt_pair(lua_State *L, int idx, const char *field, const int64_t dflt[2],
                    int64_t out[2]) {
  out[0] = dflt[0];
  out[1] = dflt[1];
  if (lua_isnoneornil(L, idx)) return 0;
  int given = 0;
  if (lua_getfield(L, idx, field) != LUA_TNIL)
    given = check_pair(L, lua_gettop(L), idx, field, out) ? 2 : 1;
  lua_pop(L, 1);
  return given;
}

static ln_tensor *opt_tensor(lua_State *L, int idx) {
  return lua_isnoneornil(L, idx) ? NULL : ln_lua_check_tensor(L, idx);
}

/* The options table at idx (or nothing), with only `fields`. */
static void check_options(lua_State *L, int idx, const char *const *fields) {
  if (lua_isnoneornil(L, idx)) return;
  luaL_argexpected(L, lua_istable(L, idx), idx, "options table");
  ln_lua_check_fields(L, idx, fields);
}

static void no_more(lua_State *L, int last) {
  luaL_argcheck(L, lua_gettop(L) <= last, last + 1, "no more arguments expected");
}

static ln_reduction opt_reduction(lua_State *L, int idx) {
  ln_reduction r = LN_REDUCTION_MEAN;
  if (lua_isnoneornil(L, idx) || lua_getfield(L, idx, "reduction") == LUA_TNIL) {
    if (!lua_isnoneornil(L, idx)) lua_pop(L, 1);
    return r;
  }
  if (lua_type(L, -1) != LUA_TSTRING)
    luaL_argerror(L, idx, lua_pushfstring(L, "option 'reduction': string expected, got %s",
                                          luaL_typename(L, -1)));
  ln_status st = ln_reduction_parse(lua_tostring(L, -1), &r);
  lua_pop(L, 1);
  ln_lua_check_status(L, st);
  return r;
}

/* Push a new module (taking over the reference) and return its index. */
static int push_new(lua_State *L, ln_module *m) {
  if (!m) ln_lua_error(L);
  ln_lua_push_module(L, m);
  ln_module_release(m);
  return lua_gettop(L);
}

/* obj[name] = the pair as given (an int or {a, b}). */
static void set_pair_field(lua_State *L, int obj, const char *name, const int64_t v[2],
                           bool pair) {
  if (pair) ln_lua_push_int64s(L, v, 2);
  else lua_pushinteger(L, v[0]);
  lua_setfield(L, obj, name);
}

/* ---- module constructors ---- */

static const char *const linear_fields[] = { "bias", "dtype", "device", NULL };

/* nn.Linear(in, out [, {bias=true, dtype, device}]) */
static int l_linear_new(lua_State *L) {
  lua_remove(L, 1);
  lua_Integer in = luaL_checkinteger(L, 1), out = luaL_checkinteger(L, 2);
  check_options(L, 3, linear_fields);
  no_more(L, 3);
  push_new(L, ln_linear_new(in, out, ln_lua_opt_bool(L, 3, "bias", true),
                            ln_lua_opt_dtype(L, 3, LN_F32),
                            ln_lua_opt_device(L, 3, LN_DEVICE_CPU)));
  return 1;
}

static const char *const conv_fields[] = {
  "stride", "padding", "dilation", "groups", "bias", "padding_mode", "dtype", "device", NULL
};

/* padding: an int, {h, w}, "same" or "valid". */
static void conv_padding(lua_State *L, int idx, ln_conv2d_params *p) {
  if (lua_isnoneornil(L, idx) || lua_getfield(L, idx, "padding") == LUA_TNIL) {
    if (!lua_isnoneornil(L, idx)) lua_pop(L, 1);
    return;
  }
  if (lua_type(L, -1) == LUA_TSTRING) {
    const char *s = lua_tostring(L, -1);
    if (strcmp(s, "same") == 0) p->padding_kind = LN_PAD_SAME;
    else if (strcmp(s, "valid") == 0) p->padding_kind = LN_PAD_VALID;
    else luaL_argerror(L, idx, lua_pushfstring(L, "Invalid padding string: '%s'", s));
  } else {
    check_pair(L, lua_gettop(L), idx, "padding", p->padding);
  }
  lua_pop(L, 1);
}

static ln_conv2d_params conv_params(lua_State *L, int idx) {
  ln_conv2d_params p = ln_conv2d_defaults();
  opt_pair(L, idx, "stride", p.stride, p.stride);
  opt_pair(L, idx, "dilation", p.dilation, p.dilation);
  conv_padding(L, idx, &p);
  if (!lua_isnoneornil(L, idx) && lua_getfield(L, idx, "groups") != LUA_TNIL) {
    if (!lua_isinteger(L, -1))
      luaL_argerror(L, idx, lua_pushfstring(L, "option 'groups': integer expected, got %s",
                                            luaL_typename(L, -1)));
    p.groups = lua_tointeger(L, -1);
    lua_pop(L, 1);
  } else if (!lua_isnoneornil(L, idx)) {
    lua_pop(L, 1);
  }
  return p;
}

/* nn.Conv2d(in, out, kernel_size [, opts]) */
static int l_conv2d_new(lua_State *L) {
  lua_remove(L, 1);
  lua_Integer in = luaL_checkinteger(L, 1), out = luaL_checkinteger(L, 2);
  int64_t k[2];
  check_pair(L, 3, 3, "kernel_size", k);
  check_options(L, 4, conv_fields);
  no_more(L, 4);
  ln_conv2d_params p = conv_params(L, 4);
  if (!lua_isnoneornil(L, 4) && lua_getfield(L, 4, "padding_mode") != LUA_TNIL) {
    const char *mode = lua_tostring(L, -1);
    if (!mode || strcmp(mode, "zeros") != 0)
      luaL_argerror(L, 4, lua_pushfstring(L, "padding_mode '%s' is not supported (only "
                                          "'zeros')", luaL_tolstring(L, -1, NULL)));
  }
  lua_settop(L, 4);
  int obj = push_new(L, ln_conv2d_new(in, out, k, &p, ln_lua_opt_bool(L, 4, "bias", true),
                                      ln_lua_opt_dtype(L, 4, LN_F32),
                                      ln_lua_opt_device(L, 4, LN_DEVICE_CPU)));
  set_pair_field(L, obj, "kernel_size", k, true);
  set_pair_field(L, obj, "stride", p.stride, true);
  if (p.padding_kind == LN_PAD_EXPLICIT) {
    set_pair_field(L, obj, "padding", p.padding, true);
  } else {
    lua_pushstring(L, p.padding_kind == LN_PAD_SAME ? "same" : "valid");
    lua_setfield(L, obj, "padding");
  }
  set_pair_field(L, obj, "dilation", p.dilation, true);
  return 1;
}

static const char *const inplace_fields[] = { "inplace", NULL };

/* true, {inplace=b} or nothing at idx. */
static bool inplace_arg(lua_State *L, int idx) {
  if (lua_isboolean(L, idx)) return lua_toboolean(L, idx);
  check_options(L, idx, inplace_fields);
  return ln_lua_opt_bool(L, idx, "inplace", false);
}

/* nn.ReLU([{inplace=false}]) or nn.ReLU(true) */
static int l_relu_new(lua_State *L) {
  lua_remove(L, 1);
  bool inplace = inplace_arg(L, 1);
  no_more(L, 1);
  push_new(L, ln_relu_new(inplace));
  return 1;
}

static const char *const flatten_fields[] = { "start_dim", "end_dim", NULL };

/* A Lua dim (1-based, negative from the end, not 0) to C's numbering,
** without knowing the rank: 2 -> 1, -1 -> -1. */
static int c_dim(lua_State *L, lua_Integer d, int arg) {
  luaL_argcheck(L, d != 0, arg, "dims are 1-based (got 0)");
  return (int)(d > 0 ? d - 1 : d);
}

/* nn.Flatten([{start_dim=2, end_dim=-1}]) or nn.Flatten(start_dim [, end_dim]) */
static int l_flatten_new(lua_State *L) {
  lua_remove(L, 1);
  lua_Integer s = 2, e = -1;
  if (lua_isnumber(L, 1)) {
    s = luaL_checkinteger(L, 1);
    e = luaL_optinteger(L, 2, -1);
    no_more(L, 2);
  } else {
    check_options(L, 1, flatten_fields);
    s = (lua_Integer)ln_lua_opt_number(L, 1, "start_dim", 2);
    e = (lua_Integer)ln_lua_opt_number(L, 1, "end_dim", -1);
    no_more(L, 1);
  }
  int obj = push_new(L, ln_flatten_new(c_dim(L, s, 1), c_dim(L, e, 1)));
  lua_pushinteger(L, s);
  lua_setfield(L, obj, "start_dim");
  lua_pushinteger(L, e);
  lua_setfield(L, obj, "end_dim");
  return 1;
}

static const char *const dropout_fields[] = { "p", "inplace", NULL };

/* nn.Dropout([p] [, {p=0.5, inplace=false}]) */
static int l_dropout_new(lua_State *L) {
  lua_remove(L, 1);
  int opt = lua_isnumber(L, 1) ? 2 : 1;
  double p = opt == 2 ? lua_tonumber(L, 1) : 0.5;
  check_options(L, opt, dropout_fields);
  no_more(L, opt);
  p = ln_lua_opt_number(L, opt, "p", p);
  push_new(L, ln_dropout_new(p, ln_lua_opt_bool(L, opt, "inplace", false)));
  return 1;
}

static const char *const pool_fields[] = { "stride", "padding", "dilation", "ceil_mode", NULL };

/* The kernel at arg and the options at arg + 1 of a max pool. An explicit
** stride of 0 is PyTorch's error (0 in C means "the kernel size"). */
static ln_pool2d_params pool_params(lua_State *L, int arg, unsigned *pairs) {
  static const int64_t zero[2] = { 0, 0 }, one[2] = { 1, 1 };
  ln_pool2d_params p = { .dilation = { 1, 1 } };
  int opt = arg + 1;
  *pairs = check_pair(L, arg, arg, "kernel_size", p.kernel) ? LN_POOL_PAIR_KERNEL : 0;
  check_options(L, opt, pool_fields);
  int stride = opt_pair(L, opt, "stride", zero, p.stride);
  if (stride == 2) *pairs |= LN_POOL_PAIR_STRIDE;
  if (opt_pair(L, opt, "padding", zero, p.padding) == 2) *pairs |= LN_POOL_PAIR_PADDING;
  if (opt_pair(L, opt, "dilation", one, p.dilation) == 2) *pairs |= LN_POOL_PAIR_DILATION;
  if (stride && (p.stride[0] == 0 || p.stride[1] == 0)) {
    ln_error(LN_EINVAL, "stride should not be zero");
    ln_lua_error(L);
  }
  p.ceil_mode = ln_lua_opt_bool(L, opt, "ceil_mode", false);
  return p;
}

/* nn.MaxPool2d(kernel_size [, {stride=kernel_size, padding=0, dilation=1, ceil_mode=false}]) */
static int l_max_pool2d_new(lua_State *L) {
  lua_remove(L, 1);
  unsigned pairs;
  ln_pool2d_params p = pool_params(L, 1, &pairs);
  no_more(L, 2);
  ln_module *m = ln_max_pool2d_new(&p, pairs);
  int obj = push_new(L, m);
  const ln_pool2d_params *mp = ln_max_pool2d_module_params(m, &pairs);
  set_pair_field(L, obj, "kernel_size", mp->kernel, pairs & LN_POOL_PAIR_KERNEL);
  set_pair_field(L, obj, "stride", mp->stride, pairs & LN_POOL_PAIR_STRIDE);
  set_pair_field(L, obj, "padding", mp->padding, pairs & LN_POOL_PAIR_PADDING);
  set_pair_field(L, obj, "dilation", mp->dilation, pairs & LN_POOL_PAIR_DILATION);
  return 1;
}

/* output_size at arg: an int, or {h, w} whose entries may be false
** (None, -1 in C). Returns whether it was a pair. */
static bool output_size_arg(lua_State *L, int arg, int64_t out[2]) {
  bool pair = !lua_isinteger(L, arg), ok = true, negative = false;
  if (!pair) {
    out[0] = out[1] = lua_tointeger(L, arg);
  } else {
    ok = lua_istable(L, arg) && luaL_len(L, arg) == 2;
    for (int i = 0; ok && i < 2; i++) {
      int t = lua_rawgeti(L, arg, i + 1);
      ok = (t == LUA_TNUMBER && lua_isinteger(L, -1)) ||
           (t == LUA_TBOOLEAN && !lua_toboolean(L, -1));
      out[i] = t == LUA_TNUMBER ? lua_tointeger(L, -1) : -1;
      negative = negative || (t == LUA_TNUMBER && out[i] < 0);
      lua_pop(L, 1);
    }
  }
  if (!ok)
    luaL_argerror(L, arg, lua_pushfstring(L, "output_size: integer or {h, w} (false for "
                                          "None) expected, got %s", luaL_typename(L, arg)));
  if (negative || (!pair && out[0] < 0)) {
    ln_error(LN_EINVAL, "adaptive_avg_pool2d: elements of output_size must be greater than "
             "or equal to 0 but received {%lld, %lld}", (long long)out[0], (long long)out[1]);
    ln_lua_error(L);
  }
  return pair;
}

/* nn.AdaptiveAvgPool2d(output_size) */
static int l_adaptive_new(lua_State *L) {
  lua_remove(L, 1);
  int64_t size[2];
  bool pair = output_size_arg(L, 1, size);
  no_more(L, 1);
  lua_settop(L, 1);
  int obj = push_new(L, ln_adaptive_avg_pool2d_new(size, pair));
  lua_pushvalue(L, 1);
  lua_setfield(L, obj, "output_size");
  return 1;
}

static const char *const ce_fields[] = { "weight", "ignore_index", "reduction", NULL };

static ln_cross_entropy_options ce_options(lua_State *L, int idx) {
  ln_cross_entropy_options o = ln_cross_entropy_defaults();
  o.index_base = 1;
  check_options(L, idx, ce_fields);
  o.reduction = opt_reduction(L, idx);
  if (!lua_isnoneornil(L, idx)) {
    if (lua_getfield(L, idx, "weight") != LUA_TNIL) o.weight = ln_lua_check_tensor(L, -1);
    lua_pop(L, 1);   /* the options table keeps the tensor alive */
    if (lua_getfield(L, idx, "ignore_index") != LUA_TNIL) {
      if (!lua_isinteger(L, -1))
        luaL_argerror(L, idx, "option 'ignore_index': integer expected");
      o.ignore_index = lua_tointeger(L, -1);
    }
    lua_pop(L, 1);
  }
  return o;
}

/* nn.CrossEntropyLoss([{weight=nil, ignore_index=-100, reduction="mean"}]) */
static int l_ce_loss_new(lua_State *L) {
  lua_remove(L, 1);
  ln_cross_entropy_options o = ce_options(L, 1);
  no_more(L, 1);
  push_new(L, ln_cross_entropy_loss_new(&o));
  return 1;
}

static const char *const reduction_fields[] = { "reduction", NULL };

/* nn.MSELoss([{reduction="mean"}]) */
static int l_mse_loss_new(lua_State *L) {
  lua_remove(L, 1);
  check_options(L, 1, reduction_fields);
  no_more(L, 1);
  push_new(L, ln_mse_loss_new(opt_reduction(L, 1)));
  return 1;
}

static int l_reset_parameters(lua_State *L) {
  ln_lua_check_status(L, ln_layer_reset_parameters(ln_lua_check_module(L, 1)));
  lua_settop(L, 1);
  return 1;
}

/* ---- functional ---- */

/* F.linear(x, weight [, bias]) */
static int l_linear(lua_State *L) {
  ln_tensor *x = ln_lua_check_tensor(L, 1), *w = ln_lua_check_tensor(L, 2);
  ln_tensor *b = opt_tensor(L, 3);
  no_more(L, 3);
  ln_lua_push_tensor(L, ln_linear(x, w, b));
  return 1;
}

static const char *const conv_fn_fields[] = { "stride", "padding", "dilation", "groups", NULL };

/* F.conv2d(x, weight [, bias] [, {stride=1, padding=0, dilation=1, groups=1}]) */
static int l_conv2d(lua_State *L) {
  ln_tensor *x = ln_lua_check_tensor(L, 1), *w = ln_lua_check_tensor(L, 2);
  ln_tensor *b = opt_tensor(L, 3);
  check_options(L, 4, conv_fn_fields);
  no_more(L, 4);
  ln_conv2d_params p = conv_params(L, 4);
  ln_lua_push_tensor(L, ln_conv2d(x, w, b, &p));
  return 1;
}

/* F.relu(x [, inplace | {inplace=false}]) */
static int l_relu(lua_State *L) {
  ln_tensor *x = ln_lua_check_tensor(L, 1);
  bool inplace = inplace_arg(L, 2);
  no_more(L, 2);
  ln_tensor *y = ln_relu(x, inplace);
  if (y == x) {   /* in place: the same object */
    ln_tensor_release(y);
    lua_settop(L, 1);
    return 1;
  }
  ln_lua_push_tensor(L, y);
  return 1;
}

static const char *const dropout_fn_fields[] = { "p", "training", "inplace", NULL };

/* F.dropout(x [, p] [, {p=0.5, training=true, inplace=false}]) */
static int l_dropout(lua_State *L) {
  ln_tensor *x = ln_lua_check_tensor(L, 1);
  int opt = lua_isnumber(L, 2) ? 3 : 2;
  double p = opt == 3 ? lua_tonumber(L, 2) : 0.5;
  check_options(L, opt, dropout_fn_fields);
  no_more(L, opt);
  p = ln_lua_opt_number(L, opt, "p", p);
  ln_tensor *y = ln_dropout(x, p, ln_lua_opt_bool(L, opt, "training", true),
                            ln_lua_opt_bool(L, opt, "inplace", false));
  if (y == x) {
    ln_tensor_release(y);
    lua_settop(L, 1);
    return 1;
  }
  ln_lua_push_tensor(L, y);
  return 1;
}

/* F.max_pool2d(x, kernel_size [, {stride, padding, dilation, ceil_mode}]) */
static int l_max_pool2d(lua_State *L) {
  ln_tensor *x = ln_lua_check_tensor(L, 1);
  unsigned pairs;
  ln_pool2d_params p = pool_params(L, 2, &pairs);
  no_more(L, 3);
  ln_lua_push_tensor(L, ln_max_pool2d(x, &p));
  return 1;
}

/* F.adaptive_avg_pool2d(x, output_size) */
static int l_adaptive_avg_pool2d(lua_State *L) {
  ln_tensor *x = ln_lua_check_tensor(L, 1);
  int64_t size[2];
  output_size_arg(L, 2, size);
  no_more(L, 2);
  ln_lua_push_tensor(L, ln_adaptive_avg_pool2d(x, size));
  return 1;
}

static int softmax_common(lua_State *L, ln_tensor *(*fn)(ln_tensor *, int)) {
  ln_tensor *x = ln_lua_check_tensor(L, 1);
  int dim = ln_lua_check_dim(L, 2, ln_tensor_dim(x));
  no_more(L, 2);
  ln_lua_push_tensor(L, fn(x, dim));
  return 1;
}

/* F.log_softmax(x, dim), F.softmax(x, dim) */
static int l_log_softmax(lua_State *L) { return softmax_common(L, ln_log_softmax); }
static int l_softmax(lua_State *L) { return softmax_common(L, ln_softmax); }

/* F.cross_entropy(input, target [, {weight, ignore_index=-100, reduction="mean"}]) */
static int l_cross_entropy(lua_State *L) {
  ln_tensor *x = ln_lua_check_tensor(L, 1), *t = ln_lua_check_tensor(L, 2);
  ln_cross_entropy_options o = ce_options(L, 3);
  no_more(L, 3);
  ln_lua_push_tensor(L, ln_cross_entropy(x, t, &o));
  return 1;
}

/* F.mse_loss(input, target [, {reduction="mean"}]) */
static int l_mse_loss(lua_State *L) {
  ln_tensor *x = ln_lua_check_tensor(L, 1), *t = ln_lua_check_tensor(L, 2);
  check_options(L, 3, reduction_fields);
  no_more(L, 3);
  ln_lua_push_tensor(L, ln_mse_loss(x, t, opt_reduction(L, 3)));
  return 1;
}

static const luaL_Reg funcs[] = {
  { "Linear", l_linear_new }, { "Conv2d", l_conv2d_new }, { "ReLU", l_relu_new },
  { "Flatten", l_flatten_new }, { "Dropout", l_dropout_new },
  { "MaxPool2d", l_max_pool2d_new }, { "AdaptiveAvgPool2d", l_adaptive_new },
  { "CrossEntropyLoss", l_ce_loss_new }, { "MSELoss", l_mse_loss_new },
  { "reset_parameters", l_reset_parameters },
  { "linear", l_linear }, { "conv2d", l_conv2d }, { "relu", l_relu },
  { "dropout", l_dropout }, { "max_pool2d", l_max_pool2d },
  { "adaptive_avg_pool2d", l_adaptive_avg_pool2d }, { "log_softmax", l_log_softmax },
  { "softmax", l_softmax }, { "cross_entropy", l_cross_entropy }, { "mse_loss", l_mse_loss },
  { NULL, NULL }
};

/* Sets lunet._layers in the table on top of the stack. */
void ln_lua_open_layers(lua_State *L) {
  lua_createtable(L, 0, 20);
  luaL_setfuncs(L, funcs, 0);
  lua_setfield(L, -2, "_layers");
}
