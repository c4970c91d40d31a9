/*
** l_optim.c -- the fused update kernels behind lunet.optim: one pass over a
** parameter, its gradient and its state per step, instead of a chain of
** tensor ops with temporaries. The table lunet._optim holds:
**   state_like(p [, src]) -> a tensor with p's sizes, dtype, device and
**       layout: zeros, or src's values (converted)
**   sgd_step(p, grad, buf|nil, group) -> buf: SGD with momentum,
**       dampening, nesterov, weight_decay, maximize (group's fields); with
**       momentum the buffer is created at the first step and returned
**   adam_step(p, grad, state, group): Adam/AdamW; state holds step (already
**       counted for this update), exp_avg, exp_avg_sq and, with amsgrad,
**       max_exp_avg_sq; group holds lr, betas, eps, weight_decay, amsgrad,
**       maximize, decoupled_weight_decay
** lua/lunet/optim/ validates the options and owns the state tables.
**
** The kernels walk dense memory: the parameter (or a contiguous copy of it
** when it is a strided view) fixes the layout, and any operand in another
** layout or dtype is copied into it first (and copied back when it is
** written). Updates never record autograd history. On the CPU the loops
** are l_optim_kernels.inc's; on another device the layer table's sgd_step
** and adam_step (nn/layers_device.h), which run the same per-element
** update (nn/optim_update.inc).
*/
#include <math.h>
#include <string.h>

#include "core/autograd.h"
#include "core/strided.h"
#include "lua/l_common.h"
#include "nn/layers_device.h"

/* ---- the kernels, one set per dtype ---- */

#define IDENT(v) (v)

#define KNAME(x) x##_f32
#define ST float
#define CT float
#define LOAD IDENT
#define STORE IDENT
#define SQRT sqrtf
#include "lua/l_optim_kernels.inc"
#undef KNAME
#undef ST
#undef CT
#undef SQRT

#define KNAME(x) x##_f64
#define ST double
#define CT double
#define SQRT sqrt
#include "lua/l_optim_kernels.inc"
#undef KNAME
#undef ST
#undef CT
#undef LOAD
#undef STORE

#define ST uint16_t
#define CT float

#define KNAME(x) x##_f16
#define LOAD ln_half_to_float
#define STORE ln_float_to_half
#include "lua/l_optim_kernels.inc"
#undef KNAME
#undef LOAD
#undef STORE

#define KNAME(x) x##_bf16
#define LOAD ln_bf16_to_float
#define STORE ln_float_to_bf16
#include "lua/l_optim_kernels.inc"
#undef KNAME
#undef LOAD
#undef STORE
#undef ST
#undef CT
#undef SQRT

/* ---- operands in one dense layout ---- */

/* Does t have ref's sizes, dtype, device and strides (ignoring size-1
** dims, whose stride never matters)? */
static bool same_layout(const ln_tensor *t, const ln_tensor *ref) {
  int nd = ln_tensor_dim(ref);
  if (ln_tensor_dim(t) != nd || ln_tensor_dtype(t) != ln_tensor_dtype(ref)) return false;
  ln_device a = ln_tensor_device(t), b = ln_tensor_device(ref);
  if (a.type != b.type || a.index != b.index) return false;
  for (int d = 0; d < nd; d++) {
    if (ln_tensor_size(t, d) != ln_tensor_size(ref, d)) return false;
    if (ln_tensor_size(t, d) > 1 && ln_tensor_stride(t, d) != ln_tensor_stride(ref, d))
      return false;
  }
  return true;
}

static bool is_dense(const ln_tensor *t) {
  return ln_tensor_is_contiguous(t, LN_CONTIGUOUS) ||
         ln_tensor_is_contiguous(t, LN_CHANNELS_LAST);
}

/* A new dense tensor like `like` (its suggested layout) holding src's
** values, or NULL with the error set. */
static ln_tensor *dense_copy(const ln_tensor *like, ln_tensor *src) {
  ln_tensor *t = ln_empty_like(like, LN_PRESERVE);
  if (t && ln_copy_(t, src) != LN_OK) {
    ln_tensor_release(t);
    return NULL;
  }
  return t;
}

#define MAX_OPERANDS 5

/* The tensors of one update: [0] is the parameter, the others are laid out
** as work[0]. work[i] is t[i] itself (retained) or a dense copy; those
** marked `write` are copied back by operands_finish. */
typedef struct operands {
  int n;
  ln_tensor *t[MAX_OPERANDS], *work[MAX_OPERANDS];
  bool write[MAX_OPERANDS];
} operands;

/* Fill ops->work; returns false with the error set (ops_release still
** has to run). */
static bool operands_prepare(operands *ops) {
  for (int i = 0; i < ops->n; i++) {
    ln_tensor *t = ops->t[i], *ref = i ? ops->work[0] : t;
    if (t == NULL) continue;
    if (i == 0 ? is_dense(t) : same_layout(t, ref)) {
      ln_tensor_retain(t);
      ops->work[i] = t;
    } else {
      ops->work[i] = dense_copy(ref, t);
      if (ops->work[i] == NULL) return false;
    }
  }
  return true;
}

/* Copy the written copies back (their dtype was the parameter's already). */
static ln_status operands_finish(operands *ops) {
  for (int i = 0; i < ops->n; i++)
    if (ops->t[i] && ops->write[i] && ops->work[i] != ops->t[i]) {
      ln_status st = ln_copy_(ops->t[i], ops->work[i]);
      if (st != LN_OK) return st;
    }
  return LN_OK;
}

static void operands_release(operands *ops) {
  for (int i = 0; i < ops->n; i++) ln_tensor_release(ops->work[i]);
}

static void *data_of(const operands *ops, int i) {
  return ops->work[i] ? ln_tensor_data(ops->work[i]) : NULL;
}

/* ---- argument checks (before any C temporary exists) ---- */

/* The parameter at arg 1: a floating tensor on the CPU, or on a device
** whose layer table has the optimizer's update (`has`). */
static ln_tensor *check_param(lua_State *L, bool (*has)(const ln_layer_kernels *)) {
  ln_tensor *p = ln_lua_check_tensor(L, 1);
  ln_dtype dt = ln_tensor_dtype(p);
  if (!ln_dtype_is_float(dt))
    luaL_error(L, "optimizer can only optimize Tensors of floating point dtype, "
               "but one of the parameters has dtype %s", ln_dtype_name(dt));
  const ln_layer_kernels *lk = ln_layer_kernels_of(p);
  if (ln_tensor_device(p).type != LN_CPU && !(lk && has(lk))) {
    char buf[32];
    luaL_error(L, "lunet's optimizers are not implemented for %s tensors yet",
               ln_device_str(ln_tensor_device(p), buf, sizeof buf));
  }
  return p;
}

static bool has_sgd(const ln_layer_kernels *lk) { return lk->sgd_step != NULL; }
static bool has_adam(const ln_layer_kernels *lk) { return lk->adam_step != NULL; }

/* The tensor at idx, with p's sizes on p's device (named `what` in the
** error); nil gives NULL when optional. */
static ln_tensor *check_like(lua_State *L, int idx, const char *what, ln_tensor *p,
                             bool optional) {
  if (optional && lua_isnil(L, idx)) return NULL;
  ln_tensor *t = ln_lua_check_tensor(L, idx);
  ln_device a = ln_tensor_device(t), b = ln_tensor_device(p);
  if (!ln_tensor_same_shape(t, p) || a.type != b.type || a.index != b.index)
    luaL_error(L, "%s does not match its parameter's shape and device", what);
  return t;
}

/* check_like for field `name` of the state table at idx. */
static ln_tensor *check_state(lua_State *L, int idx, const char *name, ln_tensor *p) {
  lua_getfield(L, idx, name);   /* stays anchored in the table */
  return check_like(L, lua_gettop(L), name, p, false);
}

static double number_field(lua_State *L, int idx, const char *name) {
  lua_getfield(L, idx, name);
  int ok;
  double v = lua_tonumberx(L, -1, &ok);
  if (!ok) luaL_error(L, "option '%s' must be a number", name);
  lua_pop(L, 1);
  return v;
}

static bool bool_field(lua_State *L, int idx, const char *name) {
  lua_getfield(L, idx, name);
  bool v = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return v;
}

/* ---- running a kernel ---- */

typedef ln_status (*kernel_fn)(const operands *ops, int64_t n, const void *args);

/* Run fn over the prepared operands with grad mode off, copy back, free
** the copies; raises the error after freeing. */
static void run(lua_State *L, operands *ops, kernel_fn fn, const void *args) {
  bool was = ln_set_grad_enabled(false);
  bool ok = operands_prepare(ops);
  if (ok) ok = fn(ops, ln_tensor_numel(ops->t[0]), args) == LN_OK;
  if (ok) ok = operands_finish(ops) == LN_OK;
  ln_set_grad_enabled(was);
  operands_release(ops);
  if (!ok) ln_lua_error(L);
}

static ln_status sgd_kernel(const operands *ops, int64_t n, const void *args) {
  void *p = data_of(ops, 0), *g = data_of(ops, 1), *b = data_of(ops, 2);
  ln_dtype dt = ln_tensor_dtype(ops->t[0]);
  const ln_layer_kernels *lk = ln_layer_kernels_of(ops->t[0]);
  if (lk) return lk->sgd_step(ln_tensor_device(ops->t[0]).index, dt, p, g, b, n, args);
  switch (dt) {
  case LN_F32: sgd_f32(p, g, b, n, args); break;
  case LN_F64: sgd_f64(p, g, b, n, args); break;
  case LN_F16: sgd_f16(p, g, b, n, args); break;
  case LN_BF16: sgd_bf16(p, g, b, n, args); break;
  default: break;   /* check_param admits floating dtypes only */
  }
  return LN_OK;
}

static ln_status adam_kernel(const operands *ops, int64_t n, const void *args) {
  void *p = data_of(ops, 0), *g = data_of(ops, 1), *m = data_of(ops, 2);
  void *v = data_of(ops, 3), *vmax = data_of(ops, 4);
  ln_dtype dt = ln_tensor_dtype(ops->t[0]);
  const ln_layer_kernels *lk = ln_layer_kernels_of(ops->t[0]);
  if (lk) return lk->adam_step(ln_tensor_device(ops->t[0]).index, dt, p, g, m, v, vmax, n, args);
  switch (dt) {
  case LN_F32: adam_f32(p, g, m, v, vmax, n, args); break;
  case LN_F64: adam_f64(p, g, m, v, vmax, n, args); break;
  case LN_F16: adam_f16(p, g, m, v, vmax, n, args); break;
  case LN_BF16: adam_bf16(p, g, m, v, vmax, n, args); break;
  default: break;
  }
  return LN_OK;
}

/* ---- the functions ---- */

/* state_like(p [, src]) */
static int l_state_like(lua_State *L) {
  ln_tensor *p = ln_lua_check_tensor(L, 1);
  ln_tensor *src = lua_isnoneornil(L, 2) ? NULL : ln_lua_check_tensor(L, 2);
  if (src && !ln_tensor_same_shape(src, p))
    return luaL_error(L, "a saved state tensor does not match its parameter's shape");
  ln_lua_push_tensor(L, ln_empty_like(p, LN_PRESERVE));   /* raises if NULL */
  ln_tensor *t = ln_lua_check_tensor(L, -1);
  ln_lua_check_status(L, src ? ln_copy_(t, src) : ln_zero_(t));
  return 1;
}

/* sgd_step(p, grad, buf|nil, group) -> buf (nil without momentum) */
static int l_sgd_step(lua_State *L) {
  ln_tensor *p = check_param(L, has_sgd);
  ln_tensor *g = check_like(L, 2, "the gradient", p, false);
  ln_tensor *buf = check_like(L, 3, "momentum_buffer", p, true);
  luaL_checktype(L, 4, LUA_TTABLE);
  ln_sgd_args a = {
    .lr = number_field(L, 4, "lr"), .momentum = number_field(L, 4, "momentum"),
    .dampening = number_field(L, 4, "dampening"),
    .weight_decay = number_field(L, 4, "weight_decay"),
    .nesterov = bool_field(L, 4, "nesterov"), .maximize = bool_field(L, 4, "maximize"),
    .first = buf == NULL,
  };
  if (a.momentum != 0 && buf == NULL) {
    ln_lua_push_tensor(L, ln_empty_like(p, LN_PRESERVE));   /* filled by the kernel */
    buf = ln_lua_check_tensor(L, -1);
    lua_replace(L, 3);
  }
  if (a.momentum == 0) buf = NULL;
  operands ops = { .n = 3, .t = { p, g, buf }, .write = { true, false, true } };
  run(L, &ops, sgd_kernel, &a);
  lua_settop(L, 3);
  return 1;
}

/* adam_step(p, grad, state, group) */
static int l_adam_step(lua_State *L) {
  ln_tensor *p = check_param(L, has_adam);
  ln_tensor *g = check_like(L, 2, "the gradient", p, false);
  luaL_checktype(L, 3, LUA_TTABLE);
  luaL_checktype(L, 4, LUA_TTABLE);
  bool amsgrad = bool_field(L, 4, "amsgrad");
  ln_tensor *m = check_state(L, 3, "exp_avg", p);
  ln_tensor *v = check_state(L, 3, "exp_avg_sq", p);
  ln_tensor *vmax = amsgrad ? check_state(L, 3, "max_exp_avg_sq", p) : NULL;
  double step = number_field(L, 3, "step");
  luaL_argcheck(L, step >= 1, 3, "state.step must be at least 1");
  lua_getfield(L, 4, "betas");
  luaL_argexpected(L, lua_istable(L, -1), 4, "betas table in the group");
  lua_rawgeti(L, -1, 1);
  lua_rawgeti(L, -2, 2);
  ln_adam_args a = {
    .lr = number_field(L, 4, "lr"), .beta1 = luaL_checknumber(L, -2),
    .beta2 = luaL_checknumber(L, -1), .eps = number_field(L, 4, "eps"),
    .weight_decay = number_field(L, 4, "weight_decay"),
    .maximize = bool_field(L, 4, "maximize"),
    .decoupled = bool_field(L, 4, "decoupled_weight_decay"),
  };
  /* PyTorch's scalars, in double: step_size = lr / (1 - beta1^step),
  ** bias_correction2 ** 0.5 (Python's pow, not sqrt) */
  a.step_size = a.lr / (1 - pow(a.beta1, step));
  a.bias_correction2_sqrt = pow(1 - pow(a.beta2, step), 0.5);
  operands ops = { .n = 5, .t = { p, g, m, v, vmax },
                   .write = { true, false, true, true, true } };
  run(L, &ops, adam_kernel, &a);
  return 0;
}

static const luaL_Reg funcs[] = {
  { "state_like", l_state_like }, { "sgd_step", l_sgd_step },
  { "adam_step", l_adam_step },
  { NULL, NULL }
};

/* Sets lunet._optim in the table on top of the stack. */
void ln_lua_open_optim(lua_State *L) {
  lua_createtable(L, 0, 3);
  luaL_setfuncs(L, funcs, 0);
  lua_setfield(L, -2, "_optim");
}
