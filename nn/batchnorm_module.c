/*
** batchnorm_module.c -- the modules BatchNorm1d/2d/3d and
** LazyBatchNorm1d/2d/3d: PyTorch's _NormBase, _BatchNorm and _LazyNormBase
** (seeds 000 and 004) over the functional ln_batch_norm.
**
** One implementation serves the three ranks: the module's private data
** holds its number of spatial dims, which only decides the accepted input
** ranks. The six types differ in name and in the lazy types' `becomes`.
** Attributes are read at every forward, so that assigning bn.momentum or
** bn.eps from a script takes effect as it does in PyTorch. momentum None
** is the attribute kind LN_ATTR_NIL (Lua reads it as false).
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/autograd.h"
#include "../core/ops.h"
#include "batchnorm_module_impl.h"
#include "pyrepr.h"
#include "state_dict.h"

typedef struct bn_priv {
  int spatial_dims;   /* 1, 2 or 3; 0: any rank from 2 on */
  unsigned fresh;     /* lazy slots being materialized from an input (bit i: lazy_slots[i]) */
  void *ext;          /* a variant's own state (ln_bn_set_ext), freed with free_ext */
  void (*free_ext)(void *);
} bn_priv;

/* The per-channel slots, which the lazy types create from the input. */
#define N_LAZY 4
static const char *const lazy_slots[N_LAZY] = { "weight", "bias", "running_mean", "running_var" };
static const double lazy_defaults[N_LAZY] = { 1.0, 0.0, 0.0, 1.0 };

static ln_tensor *bn_forward(ln_module *m, ln_tensor *const *inputs, int n);
static void attr_text(const ln_attr *a, char *buf, size_t size);

#define BN_TYPE(NAME) { .name = NAME, .version = 2, .forward = bn_forward, \
  .extra_repr = ln_bn_extra_repr, .load_hook = ln_bn_load_hook, .free_priv = ln_bn_free_priv }

static const ln_module_type bn_types[3] = {
  BN_TYPE("BatchNorm1d"), BN_TYPE("BatchNorm2d"), BN_TYPE("BatchNorm3d")
};

#define LAZY_TYPE(NAME, DIMS) { .name = NAME, .version = 2, .forward = bn_forward, \
  .extra_repr = ln_bn_extra_repr, .load_hook = ln_bn_load_hook, \
  .initialize_from_input = ln_bn_initialize_from_input, \
  .on_materialized = ln_bn_on_materialized, .becomes = &bn_types[DIMS - 1], \
  .free_priv = ln_bn_free_priv }

static const ln_module_type lazy_types[3] = {
  LAZY_TYPE("LazyBatchNorm1d", 1), LAZY_TYPE("LazyBatchNorm2d", 2),
  LAZY_TYPE("LazyBatchNorm3d", 3)
};

void ln_bn_free_priv(void *priv) {
  bn_priv *p = priv;
  if (p && p->free_ext) p->free_ext(p->ext);
  free(p);
}

/* Modules built by ln_bn_module_new, whatever their type. */
static bool is_bn_like(const ln_module *m) {
  return m && ln_module_get_type(m)->free_priv == ln_bn_free_priv;
}

static bn_priv *priv_of(const ln_module *m) { return ln_module_priv(m); }

void *ln_bn_ext(const ln_module *m) { return is_bn_like(m) ? priv_of(m)->ext : NULL; }

void ln_bn_set_ext(ln_module *m, void *ext, void (*free_ext)(void *)) {
  bn_priv *p = priv_of(m);
  if (p->free_ext) p->free_ext(p->ext);
  p->ext = ext;
  p->free_ext = free_ext;
}

ln_batchnorm_options ln_batchnorm_defaults(void) {
  return (ln_batchnorm_options){ .eps = 1e-5, .momentum = 0.1, .cumulative = false,
                                 .affine = true, .track_running_stats = true,
                                 .dtype = LN_F32, .device = LN_DEVICE_CPU,
                                 .virtual_batch_size = 0, .ema_update = LN_BN_EMA_INTERNAL };
}

bool ln_is_batchnorm(const ln_module *m) {
  const ln_module_type *t = m ? ln_module_get_type(m) : NULL;
  for (int i = 0; i < 3; i++)
    if (t == &bn_types[i]) return true;
  return false;
}

/* ---- construction ---- */

/* Register a new per-channel tensor filled with v, as a parameter
** (requiring grad) or a buffer. */
static ln_status add_filled(ln_module *m, const char *name, bool param, int64_t c,
                            double v, const ln_batchnorm_options *o) {
  ln_tensor *t = ln_full(&c, 1, v, o->dtype, o->device);
  if (!t) return ln_last_status();
  ln_status st;
  if (param) {
    ln_tensor_set_parameter(t, true);
    st = ln_tensor_set_requires_grad(t, true);
    if (st == LN_OK) st = ln_module_register_parameter(m, name, t);
  } else {
    st = ln_module_register_buffer(m, name, t, true);
  }
  ln_tensor_release(t);
  return st;
}

/* The slots of _NormBase.__init__ (or _LazyNormBase's), in PyTorch's order. */
static ln_status add_slots(ln_module *m, int64_t c, const ln_batchnorm_options *o,
                           bool lazy) {
  ln_status st = LN_OK;
  for (int i = 0; i < N_LAZY && st == LN_OK; i++) {
    bool param = i < 2;
    bool present = param ? o->affine : o->track_running_stats;
    if (!present)
      st = param ? ln_module_register_parameter(m, lazy_slots[i], NULL)
                 : ln_module_register_buffer(m, lazy_slots[i], NULL, true);
    else if (lazy)
      st = ln_module_register_uninitialized(m, lazy_slots[i],
                                            param ? LN_SLOT_PARAM : LN_SLOT_BUFFER,
                                            o->dtype, o->device);
    else
      st = add_filled(m, lazy_slots[i], param, c, lazy_defaults[i], o);
  }
  if (st != LN_OK) return st;
  if (!o->track_running_stats)
    return ln_module_register_buffer(m, "num_batches_tracked", NULL, true);
  ln_tensor *nbt = ln_zeros(NULL, 0, LN_I64, o->device);
  if (!nbt) return ln_last_status();
  st = ln_module_register_buffer(m, "num_batches_tracked", nbt, true);
  ln_tensor_release(nbt);
  return st;
}

static const char *const ema_names[2] = { "internal", "skip" };

static ln_status add_attrs(ln_module *m, int64_t c, const ln_batchnorm_options *o) {
  ln_attr a[7] = {
    { .kind = LN_ATTR_INT, .u.i = c },
    { .kind = LN_ATTR_NUMBER, .u.d = o->eps },
    { .kind = o->cumulative ? LN_ATTR_NIL : LN_ATTR_NUMBER, .u.d = o->momentum },
    { .kind = LN_ATTR_BOOL, .u.b = o->affine },
    { .kind = LN_ATTR_BOOL, .u.b = o->track_running_stats },
    { .kind = o->virtual_batch_size ? LN_ATTR_INT : LN_ATTR_NIL, .u.i = o->virtual_batch_size },
    { .kind = LN_ATTR_STRING, .u.s = ema_names[o->ema_update] },
  };
  static const char *const names[7] = { "num_features", "eps", "momentum", "affine",
                                        "track_running_stats", "virtual_batch_size",
                                        "ema_update" };
  ln_status st = LN_OK;
  for (int i = 0; i < 7 && st == LN_OK; i++) st = ln_module_set_attr(m, names[i], a[i]);
  return st;
}

/* spatial_dims from `lowest` (0 for variants, 1 for BatchNorm*d) to 3. */
static ln_status check_spatial(int spatial_dims, int lowest) {
  if (spatial_dims >= lowest && spatial_dims <= 3) return LN_OK;
  return ln_error(LN_EINVAL, "BatchNorm: spatial_dims must be %s1, 2 or 3, got %d",
                  lowest ? "" : "0, ", spatial_dims);
}

ln_module *ln_bn_module_new(const ln_module_type *type, int spatial_dims,
                            int64_t num_features, const ln_batchnorm_options *opts,
                            bool lazy) {
  ln_batchnorm_options o = opts ? *opts : ln_batchnorm_defaults();
  if (check_spatial(spatial_dims, 0) != LN_OK) return NULL;
  if (num_features < 0) {
    ln_error(LN_EINVAL, "Trying to create tensor with negative dimension %lld: [%lld]",
             (long long)num_features, (long long)num_features);
    return NULL;
  }
  if ((int)o.dtype < 0 || o.dtype >= LN_DTYPE_COUNT || !ln_dtype_is_float(o.dtype)) {
    ln_error(LN_EINVAL, "%s: dtype must be a floating point type, got %s", type->name,
             (int)o.dtype >= 0 && o.dtype < LN_DTYPE_COUNT ? ln_dtype_name(o.dtype) : "?");
    return NULL;
  }
  if (o.virtual_batch_size < 0 || (o.virtual_batch_size && spatial_dims == 0)) {
    ln_error(LN_EINVAL, o.virtual_batch_size < 0
                        ? "%s: virtual_batch_size must be a positive integer, got %lld"
                        : "%s does not support virtual_batch_size (got %lld)",
             type->name, (long long)o.virtual_batch_size);
    return NULL;
  }
  if (o.ema_update != LN_BN_EMA_INTERNAL && o.ema_update != LN_BN_EMA_SKIP) {
    ln_error(LN_EINVAL, "%s: ema_update must be LN_BN_EMA_INTERNAL or LN_BN_EMA_SKIP",
             type->name);
    return NULL;
  }
  bn_priv *p = calloc(1, sizeof *p);
  if (!p) {
    ln_error(LN_ENOMEM, "out of memory creating a %s module", type->name);
    return NULL;
  }
  p->spatial_dims = spatial_dims;
  ln_module *m = ln_module_new(type, p);
  if (!m) {
    free(p);
    return NULL;
  }
  if (add_attrs(m, num_features, &o) != LN_OK || add_slots(m, num_features, &o, lazy) != LN_OK) {
    ln_module_release(m);
    return NULL;
  }
  return m;
}

ln_module *ln_batchnorm_new(int spatial_dims, int64_t num_features,
                            const ln_batchnorm_options *opts) {
  if (check_spatial(spatial_dims, 1) != LN_OK) return NULL;
  return ln_bn_module_new(&bn_types[spatial_dims - 1], spatial_dims, num_features, opts, false);
}

ln_module *ln_lazy_batchnorm_new(int spatial_dims, const ln_batchnorm_options *opts) {
  if (check_spatial(spatial_dims, 1) != LN_OK) return NULL;
  return ln_bn_module_new(&lazy_types[spatial_dims - 1], spatial_dims, 0, opts, true);
}

/* ---- resetting ---- */

static ln_status not_bn(const ln_module *m, const char *what) {
  return ln_error(LN_EINVAL, "%s: BatchNorm module expected, got %s", what,
                  m ? ln_module_type_name(m) : "NULL");
}

/* Fill the non-nil tensor `name` of m with v (no autograd: callers turn
** grad mode off). */
static ln_status fill_slot(ln_module *m, const char *name, double v) {
  ln_tensor *t = ln_module_get_tensor(m, name);
  return t ? ln_fill_(t, v) : LN_OK;
}

static ln_status reset_running_stats(ln_module *m) {
  if (!ln_module_attr_bool(m, "track_running_stats", false)) return LN_OK;
  ln_status st = fill_slot(m, "running_mean", 0.0);
  if (st == LN_OK) st = fill_slot(m, "running_var", 1.0);
  if (st == LN_OK) st = fill_slot(m, "num_batches_tracked", 0.0);
  return st;
}

ln_status ln_batchnorm_reset_running_stats(ln_module *m) {
  if (!is_bn_like(m)) return not_bn(m, "reset_running_stats");
  bool grad_mode = ln_set_grad_enabled(false);
  ln_status st = reset_running_stats(m);
  ln_set_grad_enabled(grad_mode);
  return st;
}

/* A lazy module has nothing to reset before it materializes, as
** _LazyNormBase.reset_parameters. */
ln_status ln_batchnorm_reset_parameters(ln_module *m) {
  if (!is_bn_like(m)) return not_bn(m, "reset_parameters");
  if (ln_module_has_uninitialized(m)) return LN_OK;
  bool grad_mode = ln_set_grad_enabled(false);
  ln_status st = reset_running_stats(m);
  if (st == LN_OK && ln_module_attr_bool(m, "affine", false)) {
    st = fill_slot(m, "weight", 1.0);
    if (st == LN_OK) st = fill_slot(m, "bias", 0.0);
  }
  ln_set_grad_enabled(grad_mode);
  return st;
}

/* ---- forward ---- */

/* _check_input_dim of BatchNorm1d/2d/3d, with PyTorch's messages. */
static ln_status check_rank(ln_module *m, const ln_tensor *x) {
  int d = ln_tensor_dim(x), s = priv_of(m)->spatial_dims;
  if (s == 0 && d < 2)
    return ln_error(LN_EINVAL, "expected at least 2D input (got %dD input)", d);
  if (s == 1 && d != 2 && d != 3)
    return ln_error(LN_EINVAL, "expected 2D or 3D input (got %dD input)", d);
  if (s > 1 && d != s + 2)
    return ln_error(LN_EINVAL, "expected %dD input (got %dD input)", s + 2, d);
  return LN_OK;
}

/* A lazy module with no per-channel slots (affine=false and
** track_running_stats=false) has nothing to materialize; as PyTorch, its
** first forward still turns it into its final type, with num_features
** taken from the input. */
static ln_status finish_lazy(ln_module *m, const ln_tensor *x) {
  const ln_module_type *type = ln_module_get_type(m);
  if (!type->becomes || ln_module_has_uninitialized(m)) return LN_OK;
  ln_attr c = { .kind = LN_ATTR_INT, .u.i = ln_tensor_size(x, 1) };
  ln_status st = ln_module_set_attr(m, "num_features", c);
  if (st == LN_OK) ln_module_set_type(m, type->becomes);
  return st;
}

/* Add delta to num_batches_tracked in place, on its device: the counter
** is not read back (on a GPU that would wait for the step's work). */
static ln_status count_step(ln_tensor *nbt, double delta) {
  ln_tensor *d = ln_scalar(delta, LN_I64);
  if (!d) return ln_last_status();
  bool grad_mode = ln_set_grad_enabled(false);
  ln_status st = ln_binary_(LN_ADD, nbt, d);
  ln_set_grad_enabled(grad_mode);
  ln_tensor_release(d);
  return st;
}

/* Take back the count of a step that failed, keeping its message. */
static ln_status uncount(ln_module *m, ln_status code) {
  char msg[1024];
  snprintf(msg, sizeof msg, "%s", ln_last_error());
  count_step(ln_module_get_tensor(m, "num_batches_tracked"), -1.0);
  return ln_error(code, "%s", msg);
}

/* The attribute ema_update: *skip for "skip", false for "internal". */
static ln_status ema_skip(ln_module *m, bool *skip) {
  const ln_attr *a = ln_module_get_attr(m, "ema_update");
  for (int i = 0; i < 2; i++)
    if (a && a->kind == LN_ATTR_STRING && strcmp(a->u.s, ema_names[i]) == 0) {
      *skip = i == 1;
      return LN_OK;
    }
  char v[64];
  attr_text(a, v, sizeof v);
  return ln_error(LN_EINVAL, "%s: ema_update must be \"internal\" or \"skip\", got %s%s%s",
                  ln_module_type_name(m), a && a->kind == LN_ATTR_STRING ? "\"" : "", v,
                  a && a->kind == LN_ATTR_STRING ? "\"" : "");
}

/* The attribute virtual_batch_size: 0 when nil (or false), else a positive
** integer, which modules of any rank (SyncBatchNorm) do not take. */
static ln_status virtual_batch(ln_module *m, int64_t *v) {
  const ln_attr *a = ln_module_get_attr(m, "virtual_batch_size");
  *v = 0;
  if (!a || a->kind == LN_ATTR_NIL || (a->kind == LN_ATTR_INT && a->u.i == 0) ||
      (a->kind == LN_ATTR_NUMBER && a->u.d == 0))
    return LN_OK;
  if (a->kind == LN_ATTR_INT)   /* as it is: math.maxinteger too */
    *v = a->u.i;
  else if (a->kind == LN_ATTR_NUMBER && a->u.d == floor(a->u.d) && a->u.d < 9e18)
    *v = (int64_t)a->u.d;   /* a whole float in range */
  if (*v < 1) {
    char t[64];
    attr_text(a, t, sizeof t);
    return ln_error(LN_EINVAL, "%s: virtual_batch_size must be a positive integer, got %s",
                    ln_module_type_name(m), t);
  }
  if (priv_of(m)->spatial_dims == 0)
    return ln_error(LN_EINVAL, "%s does not support virtual_batch_size",
                    ln_module_type_name(m));
  return LN_OK;
}

ln_status ln_bn_prepare(ln_module *m, ln_tensor *x, ln_bn_call *c) {
  *c = (ln_bn_call){ 0 };
  if (!is_bn_like(m)) return not_bn(m, "forward");
  if (!x) return ln_error(LN_EINVAL, "%s.forward: input tensor expected, got nil",
                          ln_module_type_name(m));
  bool skip = false;
  int64_t vb = 0;
  ln_status st = check_rank(m, x);
  if (st == LN_OK) st = ema_skip(m, &skip);
  if (st == LN_OK) st = virtual_batch(m, &vb);
  if (st == LN_OK) st = finish_lazy(m, x);
  if (st != LN_OK) return st;
  const ln_attr *eps = ln_module_get_attr(m, "eps");
  const ln_attr *momentum = ln_module_get_attr(m, "momentum");
  if (!eps || (eps->kind != LN_ATTR_NUMBER && eps->kind != LN_ATTR_INT))
    return ln_error(LN_EINVAL, "%s: eps must be a number", ln_module_type_name(m));
  bool cumulative = !momentum || momentum->kind == LN_ATTR_NIL;
  bool training = ln_module_training(m);
  bool track = ln_module_attr_bool(m, "track_running_stats", false);
  c->eps = ln_module_attr_number(m, "eps", 0.0);
  c->momentum = cumulative ? 0.0 : ln_module_attr_number(m, "momentum", 0.0);
  ln_tensor *nbt = ln_module_get_tensor(m, "num_batches_tracked");
  if (training && track && nbt && !skip) {
    if ((st = count_step(nbt, 1.0)) != LN_OK) return st;
    c->counted = true;
    double count = 1;  /* the cumulative average reads the counter (a GPU waits) */
    if (cumulative && (st = ln_tensor_item(nbt, &count)) == LN_OK && count == 0)
      st = ln_error(LN_EINVAL, "float division by zero");   /* Python's, in PyTorch */
    if (st != LN_OK) {
      c->counted = false;
      return uncount(m, st);
    }
    if (cumulative) c->momentum = 1.0 / count;
  }
  c->running_mean = ln_module_get_tensor(m, "running_mean");
  c->running_var = ln_module_get_tensor(m, "running_var");
  c->training = training || (!c->running_mean && !c->running_var);
  if (training && (!track || skip)) c->running_mean = c->running_var = NULL;
  c->weight = ln_module_get_tensor(m, "weight");
  c->bias = ln_module_get_tensor(m, "bias");
  c->virtual_batch = training ? vb : 0;
  return LN_OK;
}

ln_bn_args ln_bn_call_args(const ln_bn_call *c, ln_tensor *x) {
  return (ln_bn_args){ .input = x, .running_mean = c->running_mean,
                       .running_var = c->running_var, .weight = c->weight, .bias = c->bias,
                       .training = c->training, .update = true, .momentum = c->momentum,
                       .eps = c->eps, .virtual_batch = c->virtual_batch };
}

ln_tensor *ln_bn_finish(ln_module *m, const ln_bn_call *c, ln_tensor *out) {
  if (!out && c->counted) uncount(m, ln_last_status());
  return out;
}

static ln_tensor *bn_forward(ln_module *m, ln_tensor *const *inputs, int n) {
  if (n != 1) {
    ln_error(LN_EINVAL, "%s.forward expects 1 input, got %d", ln_module_type_name(m), n);
    return NULL;
  }
  ln_bn_call c;
  if (ln_bn_prepare(m, inputs[0], &c) != LN_OK) return NULL;
  ln_bn_args a = ln_bn_call_args(&c, inputs[0]);
  return ln_bn_finish(m, &c, ln_bn_forward(&a));
}

/* ---- printing ---- */

/* An attribute as Lua shows it: None is false, floats as Python prints them. */
static void attr_text(const ln_attr *a, char *buf, size_t size) {
  if (!a || a->kind == LN_ATTR_NIL) snprintf(buf, size, "false");
  else if (a->kind == LN_ATTR_BOOL) snprintf(buf, size, "%s", a->u.b ? "true" : "false");
  else if (a->kind == LN_ATTR_INT) snprintf(buf, size, "%lld", (long long)a->u.i);
  else if (a->kind == LN_ATTR_NUMBER) ln_py_float(a->u.d, buf, size);
  else snprintf(buf, size, "%s", a->u.s);
}

/* "64, eps=1e-05, momentum=0.1, affine=true, track_running_stats=true",
** then what only some modules have: BatchRenorm's rmax and dmax, and
** virtual_batch_size and ema_update when they are not the defaults. */
void ln_bn_extra_repr(ln_module *m, char *buf, size_t size) {
  static const char *const names[9] = { "num_features", "eps", "momentum", "affine",
                                        "track_running_stats", "rmax", "dmax",
                                        "virtual_batch_size", "ema_update" };
  size_t k = 0;
  for (int i = 0; i < 9 && k < size; i++) {
    const ln_attr *a = ln_module_get_attr(m, names[i]);
    if (i >= 5 && (!a || (i == 7 && a->kind == LN_ATTR_NIL) ||
                   (i == 8 && a->kind == LN_ATTR_STRING && !strcmp(a->u.s, "internal"))))
      continue;
    char v[64];
    if (i == 7 && a->kind == LN_ATTR_NUMBER && a->u.d == floor(a->u.d) && fabs(a->u.d) < 1e15)
      snprintf(v, sizeof v, "%.0f", a->u.d);   /* a count set from Lua as a number */
    else
      attr_text(a, v, sizeof v);
    int w = i ? snprintf(buf + k, size - k, ", %s=%s", names[i], v)
              : snprintf(buf + k, size - k, "%s", v);
    if (w < 0) break;
    k += (size_t)w;
  }
}

/* ---- state dicts and lazy initialisation ---- */

static char *key_of(const char *prefix, const char *name) {
  size_t n = strlen(prefix) + strlen(name) + 1;
  char *k = malloc(n);
  if (k) snprintf(k, n, "%s%s", prefix, name);
  return k;
}

/* The per-channel size of the materialized lazy slots; -1 when none is. */
static int64_t materialized_channels(ln_module *m) {
  for (int i = 0; i < N_LAZY; i++) {
    ln_tensor *t = ln_module_get_tensor(m, lazy_slots[i]);
    if (t && ln_tensor_dim(t) == 1) return ln_tensor_size(t, 0);
  }
  return -1;
}

/* Before a lazy module takes shapes from a state dict: every per-channel
** value must be 1-D with the same length, so that a bad checkpoint fails
** the load before anything changes. */
static ln_status check_lazy_values(ln_module *m, ln_state_dict *sd, const char *prefix) {
  int64_t c = materialized_channels(m);
  const char *first = NULL;   /* the value that gave c; NULL: the module's own */
  for (int i = 0; i < N_LAZY; i++) {
    char *key = key_of(prefix, lazy_slots[i]);
    if (!key) return ln_error(LN_ENOMEM, "out of memory loading a state dict");
    ln_tensor *t = ln_state_dict_get(sd, key);
    ln_status st = LN_OK;
    if (t && ln_tensor_dim(t) != 1)
      st = ln_error(LN_EINVAL, "size mismatch for %s: %s needs a 1-D tensor, got %d dims",
                    key, ln_module_type_name(m), ln_tensor_dim(t));
    else if (t && c >= 0 && ln_tensor_size(t, 0) != c && first)
      st = ln_error(LN_EINVAL, "size mismatch for %s: %lld elements, but %s%s has %lld", key,
                    (long long)ln_tensor_size(t, 0), prefix, first, (long long)c);
    else if (t && c >= 0 && ln_tensor_size(t, 0) != c)
      st = ln_error(LN_EINVAL, "size mismatch for %s: %lld elements, but the per-channel "
                    "values of %s have %lld", key, (long long)ln_tensor_size(t, 0),
                    ln_module_type_name(m), (long long)c);
    else if (t && c < 0) {
      c = ln_tensor_size(t, 0);
      first = lazy_slots[i];
    }
    free(key);
    if (st != LN_OK) return st;
  }
  return LN_OK;
}

/* _NormBase._load_from_state_dict: a state dict from before version 2
** (or without a version) has no num_batches_tracked; give it the module's
** counter (the copy is then a no-op) or a 0 scalar. */
ln_status ln_bn_load_hook(ln_module *m, ln_state_dict *sd, const char *prefix,
                          int version) {
  if (ln_module_has_uninitialized(m)) {
    ln_status st = check_lazy_values(m, sd, prefix);
    if (st != LN_OK) return st;
  }
  if (version >= 2 || !ln_module_attr_bool(m, "track_running_stats", false)) return LN_OK;
  char *key = key_of(prefix, "num_batches_tracked");
  if (!key) return ln_error(LN_ENOMEM, "out of memory loading a state dict");
  ln_status st = LN_OK;
  if (!ln_state_dict_get(sd, key)) {
    ln_tensor *nbt = ln_module_get_tensor(m, "num_batches_tracked");
    ln_tensor *zero = nbt ? NULL : ln_zeros(NULL, 0, LN_I64, LN_DEVICE_CPU);
    st = nbt || zero ? ln_state_dict_set(sd, key, nbt ? nbt : zero) : ln_last_status();
    ln_tensor_release(zero);
  }
  free(key);
  return st;
}

/* _LazyNormBase.initialize_parameters: num_features is the input's
** size(1) (0-based dim 1). The input's rank is checked first, so that a
** wrong input leaves the module lazy. Slots a partial load filled already
** keep their values but must agree with the input. */
ln_status ln_bn_initialize_from_input(ln_module *m, ln_tensor *const *inputs, int n) {
  if (n < 1 || !inputs[0])
    return ln_error(LN_EINVAL, "%s.forward: input tensor expected", ln_module_type_name(m));
  ln_status st = check_rank(m, inputs[0]);
  if (st != LN_OK) return st;
  int64_t c = ln_tensor_size(inputs[0], 1);
  bn_priv *p = priv_of(m);
  p->fresh = 0;
  for (int i = 0; i < N_LAZY; i++) {
    int s = ln_module_find_slot(m, lazy_slots[i]);
    if (s < 0) continue;
    ln_tensor *t = ln_module_slot_tensor(m, s);
    if (t && ln_tensor_numel(t) != c)
      return ln_error(LN_EINVAL, "%s should contain %lld elements not %lld", lazy_slots[i],
                      (long long)c, (long long)ln_tensor_numel(t));
    if (ln_module_slot_uninitialized(m, s)) p->fresh |= 1u << i;
  }
  for (int i = 0; i < N_LAZY && st == LN_OK; i++)
    if (p->fresh & (1u << i)) st = ln_module_materialize(m, lazy_slots[i], &c, 1);
  p->fresh = 0;
  return st;
}

/* The last lazy slot was filled. From an input: initialise what was just
** created (the `fresh` slots). From a state dict: initialise them all;
** the loaded values are copied over them right after. num_features
** follows from the shapes. */
ln_status ln_bn_on_materialized(ln_module *m) {
  int64_t c = materialized_channels(m);
  ln_attr a = { .kind = LN_ATTR_INT, .u.i = c < 0 ? 0 : c };
  ln_status st = ln_module_set_attr(m, "num_features", a);
  unsigned fresh = priv_of(m)->fresh ? priv_of(m)->fresh : (1u << N_LAZY) - 1;
  for (int i = 0; i < N_LAZY && st == LN_OK; i++)
    if (fresh & (1u << i)) st = fill_slot(m, lazy_slots[i], lazy_defaults[i]);
  return st;
}
