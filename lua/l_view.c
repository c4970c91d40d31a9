/*
** l_view.c -- views (sharing storage) and copies/conversions of tensors,
** as Tensor methods: view, reshape, permute, transpose, t, narrow, select,
** expand, squeeze, unsqueeze, flatten, contiguous, clone, to, float/double/
** half/bfloat16/long/bool, cpu, cuda.
** Dims and indices are 1-based (negative from the end), see l_common.c.
*/
#include "lua/l_common.h"

/* ---- views ---- */

typedef ln_tensor *(*sized_fn)(ln_tensor *t, const int64_t *sizes, int ndim);

/* x:f(2, -1) or x:f{2, -1} for f = view, reshape or expand; nothing may
** follow the sizes (x:view(6, nil, 4) would otherwise lose the 4). */
static int sized(lua_State *L, sized_fn f) {
  ln_tensor *t = ln_lua_check_tensor(L, 1);
  int64_t sizes[LN_MAX_DIMS];
  int next;
  int nd = ln_lua_check_sizes(L, 2, sizes, &next, true);
  if (next == 2 && lua_istable(L, 2)) next = 3;   /* {}: no sizes, a 0-dim view */
  if (!lua_isnone(L, next)) {
    if (lua_istable(L, 2)) luaL_argerror(L, next, "no more arguments expected");
    luaL_typeerror(L, next, "integer");
  }
  ln_lua_push_tensor(L, f(t, sizes, nd));
  return 1;
}

/* x:f_as(other) for f = view or expand: f to other's sizes. */
static int sized_as(lua_State *L, sized_fn f) {
  ln_tensor *t = ln_lua_check_tensor(L, 1), *o = ln_lua_check_tensor(L, 2);
  ln_lua_push_tensor(L, f(t, ln_tensor_sizes(o), ln_tensor_dim(o)));
  return 1;
}

static int t_view(lua_State *L) { return sized(L, ln_view); }
static int t_reshape(lua_State *L) { return sized(L, ln_reshape); }
static int t_view_as(lua_State *L) { return sized_as(L, ln_view); }

/* x:permute(1, 4, 2, 3) or x:permute{1, 4, 2, 3}. */
static int t_permute(lua_State *L) {
  ln_tensor *t = ln_lua_check_tensor(L, 1);
  int nd = ln_tensor_dim(t), dims[LN_MAX_DIMS], n = 0;
  if (lua_istable(L, 2)) {
    n = ln_lua_check_dims(L, 2, nd, dims);
  } else {
    for (int a = 2; !lua_isnoneornil(L, a); a++) {
      if (n == LN_MAX_DIMS) luaL_argerror(L, a, "too many dims");
      dims[n++] = ln_lua_check_dim(L, a, nd);
    }
  }
  ln_lua_push_tensor(L, ln_permute(t, dims, n));
  return 1;
}

static int t_transpose(lua_State *L) {
  ln_tensor *t = ln_lua_check_tensor(L, 1);
  int nd = ln_tensor_dim(t);
  int a = ln_lua_check_dim(L, 2, nd), b = ln_lua_check_dim(L, 3, nd);
  ln_lua_push_tensor(L, ln_transpose(t, a, b));
  return 1;
}

/* x:t(): transpose of a matrix (vectors and scalars unchanged). */
static int t_t(lua_State *L) {
  ln_tensor *t = ln_lua_check_tensor(L, 1);
  int nd = ln_tensor_dim(t);
  if (nd > 2)
    return luaL_error(L, "t() expects a tensor with <= 2 dimensions, but self is %dD", nd);
  if (nd < 2) {
    ln_tensor_retain(t);
    ln_lua_push_tensor(L, t);
  } else {
    ln_lua_push_tensor(L, ln_transpose(t, 0, 1));
  }
  return 1;
}

/* x:narrow(dim, start, length): elements start .. start+length-1. */
static int t_narrow(lua_State *L) {
  ln_tensor *t = ln_lua_check_tensor(L, 1);
  int nd = ln_tensor_dim(t);
  if (nd == 0) return luaL_error(L, "narrow() cannot be applied to a 0-dim tensor.");
  int d = ln_lua_check_dim(L, 2, nd);
  lua_Integer start = luaL_checkinteger(L, 3), len = luaL_checkinteger(L, 4);
  int64_t size = ln_tensor_size(t, d);
  luaL_argcheck(L, len >= 0, 4, "narrow(): length must be non-negative.");
  int64_t s0 = start >= 1 && start <= size + 1 ? start - 1
             : start < 0 && start >= -size ? size + start : -1;
  if (s0 < 0)
    return luaL_error(L, "start out of range (expected to be in range of [%I, %I], "
                      "but got %I)", -(lua_Integer)size, (lua_Integer)size + 1, start);
  if (len > size - s0)   /* s0 + len could overflow */
    return luaL_error(L, "narrow(): start (%I) + length (%I) - 1 exceeds dimension "
                      "size (%I).", s0 + 1, len, (lua_Integer)size);
  ln_lua_push_tensor(L, ln_narrow(t, d, s0, len));
  return 1;
}

/* x:select(dim, i): the i-th slice along dim, which is dropped. */
static int t_select(lua_State *L) {
  ln_tensor *t = ln_lua_check_tensor(L, 1);
  int nd = ln_tensor_dim(t);
  if (nd == 0) return luaL_error(L, "select() cannot be applied to a 0-dim tensor.");
  int d = ln_lua_check_dim(L, 2, nd);
  int64_t i = ln_lua_wrap_index(L, luaL_checkinteger(L, 3), ln_tensor_size(t, d), d);
  ln_lua_push_tensor(L, ln_select(t, d, i));
  return 1;
}

/* x:expand(4, -1, 3) or x:expand{...}; -1 keeps a size. */
static int t_expand(lua_State *L) { return sized(L, ln_expand); }
static int t_expand_as(lua_State *L) { return sized_as(L, ln_expand); }

/* x:squeeze(dim) drops dim if its size is 1; x:squeeze() drops all such. */
static int t_squeeze(lua_State *L) {
  ln_tensor *t = ln_lua_check_tensor(L, 1);
  int nd = ln_tensor_dim(t);
  if (!lua_isnoneornil(L, 2)) {
    ln_lua_push_tensor(L, ln_squeeze(t, ln_lua_check_dim(L, 2, nd)));
    return 1;
  }
  ln_tensor_retain(t);
  for (int d = nd - 1; d >= 0 && t; d--) {
    if (ln_tensor_size(t, d) != 1) continue;
    ln_tensor *s = ln_squeeze(t, d);
    ln_tensor_release(t);
    t = s;
  }
  ln_lua_push_tensor(L, t);
  return 1;
}

/* x:unsqueeze(d): a new dim of size 1 at d in the result (1 .. dim()+1,
** -1 appends). */
static int t_unsqueeze(lua_State *L) {
  ln_tensor *t = ln_lua_check_tensor(L, 1);
  int d = ln_lua_wrap_dim(L, luaL_checkinteger(L, 2), ln_tensor_dim(t) + 1);
  ln_lua_push_tensor(L, ln_unsqueeze(t, d));
  return 1;
}

/* x:flatten(start=1, end=-1). */
static int t_flatten(lua_State *L) {
  ln_tensor *t = ln_lua_check_tensor(L, 1);
  int nd = ln_tensor_dim(t);
  int s = ln_lua_wrap_dim(L, luaL_optinteger(L, 2, 1), nd);
  int e = ln_lua_wrap_dim(L, luaL_optinteger(L, 3, -1), nd);
  ln_lua_push_tensor(L, ln_flatten(t, s, e));
  return 1;
}

/* ---- copies ---- */

static int t_contiguous(lua_State *L) {
  ln_tensor *t = ln_lua_check_tensor(L, 1);
  ln_lua_push_tensor(L, ln_contiguous(t, ln_lua_check_format(L, 2, LN_CONTIGUOUS)));
  return 1;
}

/* x:clone(fmt="preserve_format"). */
static int t_clone(lua_State *L) {
  ln_tensor *t = ln_lua_check_tensor(L, 1);
  ln_lua_push_tensor(L, ln_clone(t, ln_lua_check_format(L, 2, LN_PRESERVE)));
  return 1;
}

/* Convert to dtype, then move to dev (or move first when going to the CPU,
** so that the conversion runs there). Pushes the result. */
static void push_converted(lua_State *L, ln_tensor *t, ln_dtype dt, ln_device dev) {
  bool move_first = dev.type == LN_CPU;
  ln_tensor *a = move_first ? ln_to_device(t, dev) : ln_to_dtype(t, dt);
  if (a == NULL) ln_lua_error(L);
  ln_tensor *b = move_first ? ln_to_dtype(a, dt) : ln_to_device(a, dev);
  ln_tensor_release(a);
  ln_lua_push_tensor(L, b);
}

/* x:to("cuda"), x:to("float64"), x:to("cuda:1", "float16"),
** x:to{dtype=..., device=...}, x:to(other_tensor). */
static int t_to(lua_State *L) {
  static const char *const fields[] = { "dtype", "device", NULL };
  ln_tensor *t = ln_lua_check_tensor(L, 1);
  ln_dtype dt = ln_tensor_dtype(t);
  ln_device dev = ln_tensor_device(t);
  int top = lua_gettop(L);
  luaL_argexpected(L, top >= 2, 2, "device, dtype, options or tensor");
  for (int a = 2; a <= top; a++) {
    ln_tensor *o = ln_lua_to_tensor(L, a);
    if (o) {
      dt = ln_tensor_dtype(o);
      dev = ln_tensor_device(o);
    } else if (lua_type(L, a) == LUA_TSTRING) {
      const char *s = lua_tostring(L, a);
      if (ln_device_parse(s, &dev) != LN_OK && ln_dtype_from_name(s, &dt) != LN_OK)
        luaL_argerror(L, a, lua_pushfstring(L, "expected a device or dtype name, "
                                            "got '%s'", s));
    } else if (lua_istable(L, a)) {
      ln_lua_check_fields(L, a, fields);
      dt = ln_lua_opt_dtype(L, a, dt);
      dev = ln_lua_opt_device(L, a, dev);
    } else {
      luaL_typeerror(L, a, "device, dtype, options or tensor");
    }
  }
  push_converted(L, t, dt, dev);
  return 1;
}

static int to_dtype(lua_State *L, ln_dtype dt) {
  ln_tensor *t = ln_lua_check_tensor(L, 1);
  ln_lua_push_tensor(L, ln_to_dtype(t, dt));
  return 1;
}

static int t_float(lua_State *L) { return to_dtype(L, LN_F32); }
static int t_double(lua_State *L) { return to_dtype(L, LN_F64); }
static int t_half(lua_State *L) { return to_dtype(L, LN_F16); }
static int t_bfloat16(lua_State *L) { return to_dtype(L, LN_BF16); }
static int t_long(lua_State *L) { return to_dtype(L, LN_I64); }
static int t_bool(lua_State *L) { return to_dtype(L, LN_BOOL); }

static int t_cpu(lua_State *L) {
  ln_lua_push_tensor(L, ln_to_device(ln_lua_check_tensor(L, 1), LN_DEVICE_CPU));
  return 1;
}

/* x:cuda(index=0): device indices are 0-based, as CUDA's. */
static int t_cuda(lua_State *L) {
  ln_tensor *t = ln_lua_check_tensor(L, 1);
  lua_Integer i = luaL_optinteger(L, 2, 0);
  luaL_argcheck(L, i >= 0, 2, "device index must be non-negative");
  ln_lua_push_tensor(L, ln_to_device(t, (ln_device){ LN_CUDA, (int)i }));
  return 1;
}

static const luaL_Reg methods[] = {
  { "view", t_view }, { "reshape", t_reshape }, { "view_as", t_view_as },
  { "permute", t_permute }, { "transpose", t_transpose }, { "t", t_t },
  { "narrow", t_narrow }, { "select", t_select }, { "expand", t_expand },
  { "expand_as", t_expand_as }, { "squeeze", t_squeeze },
  { "unsqueeze", t_unsqueeze }, { "flatten", t_flatten },
  { "contiguous", t_contiguous }, { "clone", t_clone }, { "to", t_to },
  { "float", t_float }, { "double", t_double }, { "half", t_half },
  { "bfloat16", t_bfloat16 }, { "long", t_long }, { "bool", t_bool },
  { "cpu", t_cpu }, { "cuda", t_cuda },
  { NULL, NULL }
};

void ln_lua_open_view(lua_State *L) {
  ln_lua_push_tensor_table(L, "methods");
  luaL_setfuncs(L, methods, 0);
  lua_pop(L, 1);
}
