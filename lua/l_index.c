/*
** l_index.c -- gathering along a dim, for batching data:
**   x:index_select(dim, idx) / lunet.index_select(x, dim, idx)
** idx is a 1-D int64 tensor or a table of integers, 1-based as every index
** in lunet's Lua API; the result is a new contiguous tensor whose dim `dim`
** has #idx entries (x's other sizes, dtype and device). CPU tensors only;
** autograd is not supported (lunet.data needs none): a tensor that
** requires grad is refused while grad mode is on.
*/
#include <string.h>

#include "core/autograd.h"
#include "core/strided.h"
#include "lua/l_common.h"

/* The 0-based indices of the argument at `arg`, validated against `size`
** (dim is 0-based, for the message); *n gets their count. The array lives
** in a userdata or tensor pushed on the stack. */
static const int64_t *check_indices(lua_State *L, int arg, int64_t size, int dim,
                                    int64_t *n) {
  int64_t *out;
  if (lua_istable(L, arg)) {
    *n = (int64_t)lua_rawlen(L, arg);
    out = lua_newuserdatauv(L, (size_t)(*n ? *n : 1) * sizeof *out, 0);
    for (int64_t i = 0; i < *n; i++) {
      lua_rawgeti(L, arg, (lua_Integer)i + 1);
      int ok;
      lua_Integer v = lua_tointegerx(L, -1, &ok);
      if (!ok)
        luaL_argerror(L, arg, lua_pushfstring(L, "integer expected at index %I, got %s",
                                              (lua_Integer)i + 1, luaL_typename(L, -1)));
      out[i] = v;
      lua_pop(L, 1);
    }
  } else {
    ln_tensor *t = ln_lua_check_tensor(L, arg);
    if (ln_tensor_dtype(t) != LN_I64 || ln_tensor_dim(t) > 1)
      luaL_argerror(L, arg, "index_select(): Expected a 1-D int64 index tensor");
    if (ln_tensor_device(t).type != LN_CPU)
      luaL_argerror(L, arg, "index_select(): the index tensor must be on the CPU");
    *n = ln_tensor_numel(t);
    ln_lua_push_tensor(L, ln_clone(t, LN_CONTIGUOUS));   /* 0-based copy below */
    out = ln_tensor_data(ln_lua_check_tensor(L, -1));
  }
  for (int64_t i = 0; i < *n; i++) {
    if (out[i] < 1 || out[i] > size)
      luaL_error(L, "index_select(): index %I is out of bounds for dimension %d "
                 "with size %I", (lua_Integer)out[i], dim + 1, (lua_Integer)size);
    out[i]--;
  }
  return out;
}

static int t_index_select(lua_State *L) {
  ln_tensor *x = ln_lua_check_tensor(L, 1);
  int nd = ln_tensor_dim(x);
  if (nd == 0) return luaL_error(L, "index_select(): cannot index a 0-dim tensor");
  int d = ln_lua_check_dim(L, 2, nd);
  if (ln_grad_enabled() && ln_tensor_requires_grad(x))
    return luaL_error(L, "index_select(): autograd is not supported; use it on a "
                      "detached tensor or under lunet.no_grad");
  if (ln_tensor_device(x).type != LN_CPU)
    return luaL_error(L, "index_select(): only CPU tensors are supported");
  int64_t n;
  const int64_t *idx = check_indices(L, 3, ln_tensor_size(x, d), d, &n);
  ln_lua_push_tensor(L, ln_contiguous(x, LN_CONTIGUOUS));
  const char *src = ln_tensor_data(ln_lua_check_tensor(L, -1));
  int64_t sizes[LN_MAX_DIMS], outer = 1, inner = 1, dim_size = ln_tensor_size(x, d);
  for (int i = 0; i < nd; i++) {
    sizes[i] = i == d ? n : ln_tensor_size(x, i);
    if (i < d) outer *= sizes[i];
    if (i > d) inner *= sizes[i];
  }
  ln_lua_push_tensor(L, ln_empty(sizes, nd, ln_tensor_dtype(x), LN_DEVICE_CPU));
  char *dst = ln_tensor_data(ln_lua_check_tensor(L, -1));
  size_t row = (size_t)inner * ln_dtype_size(ln_tensor_dtype(x));
  int64_t rows = outer * n;
  #pragma omp parallel for schedule(static) if (ln_strided_parallel(rows * inner))
  for (int64_t r = 0; r < rows; r++) {
    int64_t o = r / n, k = r % n;
    memcpy(dst + (size_t)r * row, src + (size_t)(o * dim_size + idx[k]) * row, row);
  }
  return 1;
}

static const luaL_Reg funcs[] = {
  { "index_select", t_index_select },
  { NULL, NULL }
};

void ln_lua_open_index(lua_State *L) {
  luaL_setfuncs(L, funcs, 0);
  ln_lua_push_tensor_table(L, "methods");
  luaL_setfuncs(L, funcs, 0);
  lua_pop(L, 1);
}
