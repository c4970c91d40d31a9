/*
** module.c -- module life cycle, slots (parameters, buffers, children in
** one registration-ordered list), lazy slots, attributes and the
** tree-wide mode and conversion operations.
**
** A module owns its slot names, attribute strings, hooks and priv; it
** retains the tensors and children in its slots. The slot list never holds
** a cycle: registering an ancestor as a child is refused, so releasing the
** root frees the whole tree.
*/
#include <stdlib.h>
#include <string.h>

#include "../core/autograd.h"
#include "alloc.h"
#include "module_impl.h"

/* ---- life cycle ---- */

ln_module *ln_module_new(const ln_module_type *type, void *priv) {
  if (!type || !type->name) {
    ln_error(LN_EINVAL, "ln_module_new: module type with a name expected");
    return NULL;
  }
  ln_module *m = calloc(1, sizeof *m);
  if (!m) {
    ln_error(LN_ENOMEM, "out of memory creating a %s module", type->name);
    return NULL;
  }
  m->refcount = 1;
  m->type = type;
  m->priv = priv;
  m->training = true;
  m->next_handle = 1;
  return m;
}

void ln_module_retain(ln_module *m) {
  if (m) m->refcount++;
}

void ln_module_release(ln_module *m) {
  if (!m || --m->refcount > 0) return;
  for (int i = 0; i < m->n_slots; i++) {
    free(m->slots[i].name);
    ln_tensor_release(m->slots[i].tensor);
    ln_module_release(m->slots[i].child);
  }
  for (int i = 0; i < m->n_attrs; i++) {
    free(m->attrs[i].name);
    if (m->attrs[i].value.kind == LN_ATTR_STRING) free((char *)m->attrs[i].value.u.s);
  }
  ln_module_free_hooks(m);
  if (m->priv && m->type->free_priv) m->type->free_priv(m->priv);
  free(m->slots);
  free(m->attrs);
  free(m);
}

const ln_module_type *ln_module_get_type(const ln_module *m) { return m ? m->type : NULL; }

/* The new type must accept the same priv (a lazy type and the type it
** becomes share theirs). */
void ln_module_set_type(ln_module *m, const ln_module_type *type) {
  if (m && type) m->type = type;
}

const char *ln_module_type_name(const ln_module *m) { return m ? m->type->name : "(null)"; }
void *ln_module_priv(const ln_module *m) { return m ? m->priv : NULL; }
void *ln_module_host(const ln_module *m) { return m ? m->host : NULL; }
void ln_module_set_host(ln_module *m, void *host) {
  if (m) m->host = host;
}

/* ---- slots ---- */

static const char *kind_word(ln_slot_kind kind) {
  return kind == LN_SLOT_PARAM ? "parameter" : kind == LN_SLOT_BUFFER ? "buffer" : "module";
}

int ln_module_find_slot(const ln_module *m, const char *name) {
  if (!m || !name) return -1;
  for (int i = 0; i < m->n_slots; i++)
    if (strcmp(m->slots[i].name, name) == 0) return i;
  return -1;
}

static int find_attr(const ln_module *m, const char *name) {
  for (int i = 0; i < m->n_attrs; i++)
    if (strcmp(m->attrs[i].name, name) == 0) return i;
  return -1;
}

/* True when `target` is `from` or one of its descendants. */
static bool reaches(const ln_module *from, const ln_module *target) {
  if (from == target) return true;
  for (int i = 0; i < from->n_slots; i++)
    if (from->slots[i].child && reaches(from->slots[i].child, target)) return true;
  return false;
}

/* Validate a registration as PyTorch does and return the index of the slot
** it replaces (-1 for a new one) in *index. */
static ln_status check_slot_name(const ln_module *m, const char *name, ln_slot_kind kind,
                                 int *index) {
  const char *word = kind_word(kind);
  if (!m) return ln_error(LN_EINVAL, "cannot register a %s on a NULL module", word);
  if (!name) return ln_error(LN_EINVAL, "%s name should be a string, got NULL", word);
  if (!name[0]) return ln_error(LN_EINVAL, "%s name can't be empty string \"\"", word);
  if (strchr(name, '.'))
    return ln_error(LN_EINVAL, "%s name can't contain \".\", got: %s", word, name);
  int i = ln_module_find_slot(m, name);
  if ((i >= 0 && m->slots[i].kind != kind) || find_attr(m, name) >= 0)
    return ln_error(LN_EINVAL, "attribute '%s' already exists", name);
  *index = i;
  return LN_OK;
}

/* Register or replace slot `name` with `value` (whose tensor/child this
** function retains). A replaced slot keeps its position. */
static ln_status put_slot(ln_module *m, const char *name, ln_slot value) {
  int i = -1;
  ln_status st = check_slot_name(m, name, value.kind, &i);
  if (st != LN_OK) return st;
  if (i < 0) {
    if (!ln_grow((void **)&m->slots, &m->cap_slots, m->n_slots, sizeof *m->slots))
      return ln_error(LN_ENOMEM, "out of memory registering '%s'", name);
    value.name = ln_dup_str(name);
    if (!value.name) return ln_error(LN_ENOMEM, "out of memory registering '%s'", name);
    i = m->n_slots++;
  } else {
    value.name = m->slots[i].name;
    ln_tensor_release(m->slots[i].tensor);
    ln_module_release(m->slots[i].child);
  }
  if (value.tensor) ln_tensor_retain(value.tensor);
  ln_module_retain(value.child);
  m->slots[i] = value;
  return LN_OK;
}

ln_status ln_module_register_parameter(ln_module *m, const char *name, ln_tensor *t) {
  if (t && !ln_tensor_is_leaf(t))
    return ln_error(LN_EINVAL,
                    "Cannot assign non-leaf Tensor to parameter '%s'. Model parameters "
                    "must be created explicitly. To express '%s' as a function of "
                    "another Tensor, compute the value in the forward() method.",
                    name ? name : "(null)", name ? name : "(null)");
  return put_slot(m, name, (ln_slot){ .kind = LN_SLOT_PARAM, .persistent = true,
                                      .tensor = t });
}

ln_status ln_module_register_buffer(ln_module *m, const char *name, ln_tensor *t,
                                    bool persistent) {
  return put_slot(m, name, (ln_slot){ .kind = LN_SLOT_BUFFER, .persistent = persistent,
                                      .tensor = t });
}

ln_status ln_module_register_module(ln_module *m, const char *name, ln_module *child) {
  if (m && child && reaches(child, m))
    return ln_error(LN_EINVAL, "cannot register module '%s': a module cannot be its "
                    "own descendant", name ? name : "(null)");
  return put_slot(m, name, (ln_slot){ .kind = LN_SLOT_CHILD, .persistent = true,
                                      .child = child });
}

ln_status ln_module_register_uninitialized(ln_module *m, const char *name,
                                           ln_slot_kind kind, ln_dtype dtype,
                                           ln_device dev) {
  if (kind != LN_SLOT_PARAM && kind != LN_SLOT_BUFFER)
    return ln_error(LN_EINVAL, "only parameters and buffers can be uninitialized");
  if ((int)dtype < 0 || dtype >= LN_DTYPE_COUNT)
    return ln_error(LN_EINVAL, "invalid dtype %d for uninitialized '%s'", (int)dtype,
                    name ? name : "(null)");
  return put_slot(m, name, (ln_slot){ .kind = kind, .persistent = true,
                                      .uninitialized = true, .dtype = dtype, .dev = dev });
}

bool ln_module_has_uninitialized(const ln_module *m) {
  if (!m) return false;
  for (int i = 0; i < m->n_slots; i++)
    if (m->slots[i].uninitialized) return true;
  return false;
}

/* Parameters come out as leaves that require grad (when floating), as
** PyTorch's UninitializedParameter.materialize; buffers do not. When the
** last lazy slot is filled the type finishes (on_materialized, run with
** grad mode off so that it may fill parameters in place) and the module
** becomes type->becomes. */
ln_status ln_module_materialize(ln_module *m, const char *name, const int64_t *sizes,
                                int ndim) {
  if (!m) return ln_error(LN_EINVAL, "materialize: module expected, got NULL");
  int i = ln_module_find_slot(m, name);
  if (i < 0 || m->slots[i].kind == LN_SLOT_CHILD)
    return ln_error(LN_EINVAL, "%s has no parameter or buffer named '%s'", m->type->name,
                    name ? name : "(null)");
  ln_slot *s = &m->slots[i];
  if (!s->uninitialized)
    return ln_error(LN_EINVAL, "'%s' of %s is already initialized", name, m->type->name);
  ln_tensor *t = ln_empty(sizes, ndim, s->dtype, s->dev);
  if (!t) return ln_last_status();
  if (s->kind == LN_SLOT_PARAM) {
    ln_tensor_set_parameter(t, true);
    if (ln_dtype_is_float(s->dtype)) ln_tensor_set_requires_grad(t, true);
  }
  s->tensor = t;
  s->uninitialized = false;
  if (ln_module_has_uninitialized(m)) return LN_OK;
  const ln_module_type *type = m->type;
  if (type->on_materialized) {            /* initialisation: no autograd */
    bool grad_mode = ln_set_grad_enabled(false);
    ln_status st = type->on_materialized(m);
    ln_set_grad_enabled(grad_mode);
    if (st != LN_OK) return st;
  }
  if (type->becomes) m->type = type->becomes;
  return LN_OK;
}

bool ln_module_remove_slot(ln_module *m, const char *name) {
  int i = ln_module_find_slot(m, name);
  if (i < 0) return false;
  ln_slot s = m->slots[i];
  memmove(&m->slots[i], &m->slots[i + 1], (size_t)(m->n_slots - i - 1) * sizeof *m->slots);
  m->n_slots--;
  free(s.name);
  ln_tensor_release(s.tensor);
  ln_module_release(s.child);
  return true;
}

int ln_module_slot_count(const ln_module *m) { return m ? m->n_slots : 0; }

static const ln_slot *slot_at(const ln_module *m, int i) {
  return m && i >= 0 && i < m->n_slots ? &m->slots[i] : NULL;
}

const char *ln_module_slot_name(const ln_module *m, int i) {
  const ln_slot *s = slot_at(m, i);
  return s ? s->name : NULL;
}

ln_slot_kind ln_module_slot_kind(const ln_module *m, int i) {
  const ln_slot *s = slot_at(m, i);
  return s ? s->kind : LN_SLOT_PARAM;
}

bool ln_module_slot_persistent(const ln_module *m, int i) {
  const ln_slot *s = slot_at(m, i);
  return s && s->persistent;
}

bool ln_module_slot_uninitialized(const ln_module *m, int i) {
  const ln_slot *s = slot_at(m, i);
  return s && s->uninitialized;
}

ln_tensor *ln_module_slot_tensor(const ln_module *m, int i) {
  const ln_slot *s = slot_at(m, i);
  return s ? s->tensor : NULL;
}

ln_module *ln_module_slot_module(const ln_module *m, int i) {
  const ln_slot *s = slot_at(m, i);
  return s ? s->child : NULL;
}

ln_tensor *ln_module_get_tensor(const ln_module *m, const char *name) {
  return ln_module_slot_tensor(m, ln_module_find_slot(m, name));
}

ln_module *ln_module_get_child(const ln_module *m, const char *name) {
  return ln_module_slot_module(m, ln_module_find_slot(m, name));
}

/* ---- attributes ---- */

static const char *attr_kind_word(ln_attr_kind kind) {
  switch (kind) {
  case LN_ATTR_BOOL: return "boolean";
  case LN_ATTR_INT: return "integer";
  case LN_ATTR_NUMBER: return "number";
  case LN_ATTR_STRING: return "string";
  default: return "nil";
  }
}

/* Strings are copied; a slot of the same name cannot be overwritten by a
** scalar (PyTorch's "cannot assign 'int' as parameter 'weight'"). */
ln_status ln_module_set_attr(ln_module *m, const char *name, ln_attr value) {
  if (!m || !name || !name[0])
    return ln_error(LN_EINVAL, "set_attr: %s", m ? "attribute name expected" : "module expected, got NULL");
  if ((int)value.kind < LN_ATTR_NIL || value.kind > LN_ATTR_STRING)
    return ln_error(LN_EINVAL, "attribute '%s': invalid kind %d", name, (int)value.kind);
  int si = ln_module_find_slot(m, name);
  if (si >= 0) {
    ln_slot_kind k = m->slots[si].kind;
    return ln_error(LN_EINVAL, "cannot assign '%s' as %s '%s' (%s or nil expected)",
                    attr_kind_word(value.kind), kind_word(k), name,
                    k == LN_SLOT_PARAM ? "Parameter" : k == LN_SLOT_BUFFER ? "Tensor" : "Module");
  }
  if (value.kind == LN_ATTR_STRING) {
    if (!value.u.s) return ln_error(LN_EINVAL, "attribute '%s': NULL string", name);
    value.u.s = ln_dup_str(value.u.s);
    if (!value.u.s) return ln_error(LN_ENOMEM, "out of memory setting '%s'", name);
  }
  int i = find_attr(m, name);
  if (i < 0) {
    char *n = ln_dup_str(name);
    if (!n || !ln_grow((void **)&m->attrs, &m->cap_attrs, m->n_attrs, sizeof *m->attrs)) {
      free(n);
      if (value.kind == LN_ATTR_STRING) free((char *)value.u.s);
      return ln_error(LN_ENOMEM, "out of memory setting '%s'", name);
    }
    i = m->n_attrs++;
    m->attrs[i].name = n;
  } else if (m->attrs[i].value.kind == LN_ATTR_STRING) {
    free((char *)m->attrs[i].value.u.s);
  }
  m->attrs[i].value = value;
  return LN_OK;
}

/* Valid until the module's attributes change. */
const ln_attr *ln_module_get_attr(const ln_module *m, const char *name) {
  if (!m || !name) return NULL;
  int i = find_attr(m, name);
  return i >= 0 ? &m->attrs[i].value : NULL;
}

int ln_module_attr_count(const ln_module *m) { return m ? m->n_attrs : 0; }

const char *ln_module_attr_name(const ln_module *m, int i) {
  return m && i >= 0 && i < m->n_attrs ? m->attrs[i].name : NULL;
}

double ln_module_attr_number(const ln_module *m, const char *name, double dflt) {
  const ln_attr *a = ln_module_get_attr(m, name);
  if (a && a->kind == LN_ATTR_NUMBER) return a->u.d;
  if (a && a->kind == LN_ATTR_INT) return (double)a->u.i;
  return dflt;
}

bool ln_module_attr_bool(const ln_module *m, const char *name, bool dflt) {
  const ln_attr *a = ln_module_get_attr(m, name);
  return a && a->kind == LN_ATTR_BOOL ? a->u.b : dflt;
}

/* ---- modes and conversions over the tree ---- */

bool ln_module_training(const ln_module *m) { return m && m->training; }

static ln_status set_training(const char *prefix, ln_module *m, void *ud) {
  (void)prefix;
  m->training = *(bool *)ud;
  return LN_OK;
}

void ln_module_train(ln_module *m, bool mode) {
  if (m) ln_module_walk(m, set_training, &mode);
}

static ln_status clear_grad(const char *name, ln_tensor *t, void *ud) {
  (void)name, (void)ud;
  ln_tensor_set_grad(t, NULL);
  return LN_OK;
}

void ln_module_zero_grad(ln_module *m) {
  if (m) ln_module_named_parameters(m, clear_grad, NULL);
}

/* The tensors module_to converts: each parameter and buffer once, with its
** converted value and its grad's, computed before anything is replaced. */
typedef struct to_item {
  ln_tensor *t, *conv;       /* t borrowed from the tree; conv new */
  ln_tensor *grad, *gconv;   /* grad borrowed; gconv new or NULL */
} to_item;

typedef struct to_plan {
  const ln_device *dev;
  const ln_dtype *dtype;
  to_item *items;
  int n, cap;
} to_plan;

/* t converted as module.to converts it: dtype only for floating tensors. */
static ln_tensor *convert(ln_tensor *t, const ln_device *dev, const ln_dtype *dtype) {
  ln_dtype dt = ln_tensor_dtype(t);
  if (dtype && ln_dtype_is_float(dt)) dt = *dtype;
  ln_tensor *a = ln_to_dtype(t, dt);
  if (!a || !dev) return a;
  ln_tensor *b = ln_to_device(a, *dev);
  ln_tensor_release(a);
  return b;
}

static ln_status plan_tensor(const char *name, ln_tensor *t, void *ud) {
  (void)name;
  to_plan *p = ud;
  if (!ln_grow((void **)&p->items, &p->cap, p->n, sizeof *p->items))
    return ln_error(LN_ENOMEM, "out of memory converting a module");
  to_item *it = &p->items[p->n++];
  *it = (to_item){ .t = t, .grad = ln_tensor_grad(t) };
  it->conv = convert(t, p->dev, p->dtype);
  if (!it->conv) return ln_last_status();
  if (it->grad && !(it->gconv = convert(it->grad, p->dev, p->dtype)))
    return ln_last_status();
  return LN_OK;
}

/* Lazy slots take the new dtype and device too. */
static ln_status retarget_lazy(const char *prefix, ln_module *m, void *ud) {
  (void)prefix;
  to_plan *p = ud;
  for (int i = 0; i < m->n_slots; i++) {
    ln_slot *s = &m->slots[i];
    if (!s->uninitialized) continue;
    if (p->dtype && ln_dtype_is_float(s->dtype)) s->dtype = *p->dtype;
    if (p->dev) s->dev = *p->dev;
  }
  return LN_OK;
}

/* All conversions are computed first (without autograd, as PyTorch's
** _apply), so a failure (a missing device, no memory) changes nothing;
** then each tensor takes its converted data in place. */
ln_status ln_module_to(ln_module *m, const ln_device *dev, const ln_dtype *dtype) {
  if (!m) return ln_error(LN_EINVAL, "to: module expected, got NULL");
  if (dev) {
    ln_status st = ln_device_check(*dev);
    if (st != LN_OK) return st;
  }
  if (dtype && ((int)*dtype < 0 || *dtype >= LN_DTYPE_COUNT))
    return ln_error(LN_EINVAL, "to: invalid dtype %d", (int)*dtype);
  if (dtype && !ln_dtype_is_float(*dtype))
    return ln_error(LN_EINVAL, "nn.Module.to only accepts floating point dtypes, but "
                    "got desired dtype=%s", ln_dtype_name(*dtype));
  to_plan p = { .dev = dev, .dtype = dtype };
  bool grad_mode = ln_set_grad_enabled(false);
  ln_status st = ln_module_named_parameters(m, plan_tensor, &p);
  if (st == LN_OK) st = ln_module_named_buffers(m, plan_tensor, &p);
  ln_set_grad_enabled(grad_mode);
  for (int i = 0; i < p.n && st == LN_OK; i++) {
    to_item *it = &p.items[i];
    if (it->conv != it->t) st = ln_tensor_set_data(it->t, it->conv);
    if (st == LN_OK && it->gconv && it->gconv != it->grad)
      st = ln_tensor_set_data(it->grad, it->gconv);
  }
  if (st == LN_OK) st = ln_module_walk(m, retarget_lazy, &p);
  for (int i = 0; i < p.n; i++) {
    ln_tensor_release(p.items[i].conv);
    ln_tensor_release(p.items[i].gconv);
  }
  free(p.items);
  return st;
}
