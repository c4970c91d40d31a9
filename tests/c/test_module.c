/*
** test_module.c -- the module system: slots, tree walks, modes,
** conversions, attributes, hooks, lazy modules, tostring, state dicts.
**
** A "Scale" test type stands in for BatchNorm: a weight parameter, a
** persistent buffer "running", a non-persistent buffer "scratch" and an
** int64 counter "count" added at state dict version 2 (its load hook
** supplies a missing counter for older dicts, as _NormBase does).
** "LazyScale" infers its size from input.size(1) and becomes Scale.
*/
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/autograd.h"
#include "core/tensor.h"
#include "nn/module.h"

static int n_created, n_freed;   /* modules made by new_module, and freed */
static char log_buf[256];

static void log_add(const char *s) {
  strncat(log_buf, s, sizeof log_buf - strlen(log_buf) - 1);
}

static void free_priv(void *p) {
  n_freed++;
  free(p);
}

static double at(ln_tensor *t, int64_t i) { return ln_tensor_get(t, &i); }

static ln_tensor *vec(int64_t n, double value) {
  return ln_full(&n, 1, value, LN_F32, LN_DEVICE_CPU);
}

/* ---- the test types ---- */

static ln_tensor *scale_forward(ln_module *m, ln_tensor *const *inputs, int n) {
  (void)m, (void)n;
  log_add("fwd;");
  ln_tensor_retain(inputs[0]);
  return inputs[0];
}

static void scale_repr(ln_module *m, char *buf, size_t size) {
  snprintf(buf, size, "%g", ln_module_attr_number(m, "n", -1));
}

/* Version 2 added "count": older dicts load with the counter at 0. */
static ln_status scale_load_hook(ln_module *m, ln_state_dict *sd, const char *prefix,
                                 int version) {
  (void)m;
  char key[128];
  snprintf(key, sizeof key, "%scount", prefix);
  if (version >= 2 || ln_state_dict_get(sd, key)) return LN_OK;
  ln_tensor *zero = ln_zeros(NULL, 0, LN_I64, LN_DEVICE_CPU);
  ln_status st = ln_state_dict_set(sd, key, zero);
  ln_tensor_release(zero);
  return st;
}

static const ln_module_type scale_type = {
  .name = "Scale", .version = 2, .forward = scale_forward, .extra_repr = scale_repr,
  .load_hook = scale_load_hook, .free_priv = free_priv,
};

static ln_status lazy_init(ln_module *m, ln_tensor *const *inputs, int n) {
  if (n < 1 || ln_tensor_dim(inputs[0]) < 2)
    return ln_error(LN_EINVAL, "LazyScale expects a 2D input");
  int64_t c = ln_tensor_size(inputs[0], 1);
  ln_status st = ln_module_materialize(m, "weight", &c, 1);
  return st == LN_OK ? ln_module_materialize(m, "running", &c, 1) : st;
}

static ln_status lazy_done(ln_module *m) {
  ln_tensor *w = ln_module_get_tensor(m, "weight");
  ln_status st = ln_module_set_attr(m, "n", (ln_attr){ LN_ATTR_INT, { .i = ln_tensor_size(w, 0) } });
  if (st == LN_OK) st = ln_fill_(w, 1);
  if (st == LN_OK) st = ln_fill_(ln_module_get_tensor(m, "running"), 0);
  return st;
}

static const ln_module_type lazy_type = {
  .name = "LazyScale", .version = 2, .load_hook = scale_load_hook,
  .initialize_from_input = lazy_init, .on_materialized = lazy_done,
  .becomes = &scale_type, .free_priv = free_priv,
};

static const ln_module_type net_type = { .name = "Net", .free_priv = free_priv };
static const ln_module_type relu_type = { .name = "ReLU", .forward = scale_forward,
                                          .free_priv = free_priv };

/* Modules of the test types carry a priv whose free is counted. */
static ln_module *new_module(const ln_module_type *type) {
  if (!type->free_priv) return ln_module_new(type, NULL);
  n_created++;
  return ln_module_new(type, malloc(1));
}

/* Scale(n): weight = w, running = r, scratch, count = 0. */
static ln_module *scale_new(int64_t n, double w, double r) {
  ln_module *m = new_module(&scale_type);
  ln_tensor *weight = vec(n, w), *running = vec(n, r), *scratch = vec(n, 0);
  ln_tensor *count = ln_zeros(NULL, 0, LN_I64, LN_DEVICE_CPU);
  ln_tensor_set_requires_grad(weight, true);
  CHECK_OK(ln_module_register_parameter(m, "weight", weight));
  CHECK_OK(ln_module_register_buffer(m, "running", running, true));
  CHECK_OK(ln_module_register_buffer(m, "scratch", scratch, false));
  CHECK_OK(ln_module_register_buffer(m, "count", count, true));
  CHECK_OK(ln_module_set_attr(m, "n", (ln_attr){ LN_ATTR_INT, { .i = n } }));
  ln_tensor_release(weight);
  ln_tensor_release(running);
  ln_tensor_release(scratch);
  ln_tensor_release(count);
  return m;
}

static ln_module *lazy_new(void) {
  ln_module *m = new_module(&lazy_type);
  ln_tensor *count = ln_zeros(NULL, 0, LN_I64, LN_DEVICE_CPU);
  CHECK_OK(ln_module_register_uninitialized(m, "weight", LN_SLOT_PARAM, LN_F32, LN_DEVICE_CPU));
  CHECK_OK(ln_module_register_uninitialized(m, "running", LN_SLOT_BUFFER, LN_F32,
                                            LN_DEVICE_CPU));
  CHECK_OK(ln_module_register_buffer(m, "count", count, true));
  ln_tensor_release(count);
  return m;
}

static ln_module *seq_of(ln_module **children, int n) {
  ln_module *s = new_module(&ln_sequential_type);
  for (int i = 0; i < n; i++) {
    char name[16];
    snprintf(name, sizeof name, "%d", i + 1);
    CHECK_OK(ln_module_register_module(s, name, children[i]));
    ln_module_release(children[i]);
  }
  return s;
}

/* Sequential(Scale(3), Net(bn=Scale(2), act=ReLU())) */
static ln_module *model_new(void) {
  ln_module *net = new_module(&net_type);
  ln_module *bn = scale_new(2, 1, 0), *act = new_module(&relu_type);
  CHECK_OK(ln_module_register_module(net, "bn", bn));
  CHECK_OK(ln_module_register_module(net, "act", act));
  ln_module_release(bn);
  ln_module_release(act);
  ln_module *kids[2] = { scale_new(3, 1, 0), net };
  return seq_of(kids, 2);
}

/* ---- visitors that record names ---- */

static ln_status add_name(const char *name, ln_tensor *t, void *ud) {
  (void)t;
  strcat(ud, name);
  strcat(ud, ";");
  return LN_OK;
}

static ln_status add_prefix(const char *prefix, ln_module *m, void *ud) {
  (void)m;
  strcat(ud, prefix);
  strcat(ud, ";");
  return LN_OK;
}

static void sd_keys(const ln_state_dict *sd, char *out) {
  out[0] = '\0';
  for (int i = 0; i < ln_state_dict_count(sd); i++) {
    strcat(out, ln_state_dict_key(sd, i));
    strcat(out, ";");
  }
}

/* ---- tests ---- */

static void test_slots(void) {
  ln_module *m = scale_new(3, 1, 0);
  CHECK(ln_module_slot_count(m) == 4);
  CHECK(strcmp(ln_module_slot_name(m, 1), "running") == 0);
  CHECK(!ln_module_slot_persistent(m, 2));
  CHECK(ln_module_slot_kind(m, 0) == LN_SLOT_PARAM);

  /* replacing keeps the position */
  ln_tensor *r2 = vec(3, 5);
  CHECK_OK(ln_module_register_buffer(m, "running", r2, true));
  CHECK(ln_module_find_slot(m, "running") == 1);
  CHECK(ln_module_get_tensor(m, "running") == r2);
  CHECK(ln_tensor_refcount(r2) == 2);

  /* a name is unique across kinds and attributes */
  CHECK(ln_module_register_parameter(m, "running", r2) == LN_EINVAL);
  CHECK_MSG("attribute 'running' already exists");
  CHECK(ln_module_register_buffer(m, "n", r2, true) == LN_EINVAL);
  CHECK_MSG("attribute 'n' already exists");
  CHECK(ln_module_register_module(m, "a.b", NULL) == LN_EINVAL);
  CHECK(strcmp(ln_last_error(), "module name can't contain \".\", got: a.b") == 0);
  CHECK(ln_module_register_parameter(m, "", NULL) == LN_EINVAL);
  CHECK_MSG("parameter name can't be empty string \"\"");
  CHECK(ln_module_register_buffer(NULL, "x", r2, true) == LN_EINVAL);
  ln_tensor_release(r2);

  /* nil slots are kept in order but hold nothing */
  CHECK_OK(ln_module_register_parameter(m, "bias", NULL));
  CHECK(ln_module_slot_count(m) == 5 && ln_module_get_tensor(m, "bias") == NULL);
  CHECK(ln_module_find_slot(m, "bias") == 4);
  CHECK(ln_module_remove_slot(m, "bias"));
  CHECK(!ln_module_remove_slot(m, "bias"));
  CHECK(ln_module_find_slot(m, "bias") == -1);

  /* a module cannot contain itself */
  ln_module *outer = new_module(&net_type);
  CHECK_OK(ln_module_register_module(outer, "inner", m));
  CHECK(ln_module_register_module(m, "loop", outer) == LN_EINVAL);
  CHECK(ln_module_register_module(m, "self", m) == LN_EINVAL);
  ln_module_release(outer);
  ln_module_release(m);
}

static void test_attrs(void) {
  ln_module *m = scale_new(2, 1, 0);
  CHECK_OK(ln_module_set_attr(m, "eps", (ln_attr){ LN_ATTR_NUMBER, { .d = 1e-5 } }));
  CHECK_OK(ln_module_set_attr(m, "affine", (ln_attr){ LN_ATTR_BOOL, { .b = false } }));
  char mode[] = "internal";
  CHECK_OK(ln_module_set_attr(m, "ema", (ln_attr){ LN_ATTR_STRING, { .s = mode } }));
  mode[0] = 'X';   /* the module keeps its own copy */
  CHECK(strcmp(ln_module_get_attr(m, "ema")->u.s, "internal") == 0);
  CHECK_OK(ln_module_set_attr(m, "ema", (ln_attr){ LN_ATTR_STRING, { .s = "skip" } }));
  CHECK(strcmp(ln_module_get_attr(m, "ema")->u.s, "skip") == 0);
  CHECK_OK(ln_module_set_attr(m, "momentum", (ln_attr){ LN_ATTR_NIL }));
  CHECK(ln_module_get_attr(m, "momentum")->kind == LN_ATTR_NIL);
  CHECK_NEAR(ln_module_attr_number(m, "eps", 0), 1e-5, 0);
  CHECK_NEAR(ln_module_attr_number(m, "n", 0), 2, 0);
  CHECK_NEAR(ln_module_attr_number(m, "momentum", 0.1), 0.1, 0);
  CHECK(!ln_module_attr_bool(m, "affine", true));
  CHECK(ln_module_attr_bool(m, "missing", true));
  CHECK(ln_module_get_attr(m, "missing") == NULL);
  CHECK(ln_module_attr_count(m) == 5);
  CHECK(strcmp(ln_module_attr_name(m, 0), "n") == 0);
  CHECK(ln_module_set_attr(m, "weight", (ln_attr){ LN_ATTR_NUMBER, { .d = 3 } }) == LN_EINVAL);
  CHECK_MSG("cannot assign 'number' as parameter 'weight'");
  ln_module_release(m);
}

static void test_walk_and_modes(void) {
  ln_module *model = model_new();
  ln_module *first = ln_module_get_child(model, "1");
  CHECK_OK(ln_module_register_module(model, "3", first));   /* shared */
  char buf[512] = "";
  CHECK_OK(ln_module_walk(model, add_prefix, buf));
  CHECK(strcmp(buf, ";1;2;2.bn;2.act;") == 0);
  buf[0] = '\0';
  CHECK_OK(ln_module_named_parameters(model, add_name, buf));
  CHECK(strcmp(buf, "1.weight;2.bn.weight;") == 0);
  buf[0] = '\0';
  CHECK_OK(ln_module_named_buffers(model, add_name, buf));
  CHECK(strcmp(buf, "1.running;1.scratch;1.count;2.bn.running;2.bn.scratch;2.bn.count;") == 0);

  /* a tensor shared by two slots comes once */
  ln_module *bn = ln_module_get_child(ln_module_get_child(model, "2"), "bn");
  CHECK_OK(ln_module_register_parameter(bn, "tied", ln_module_get_tensor(first, "weight")));
  buf[0] = '\0';
  CHECK_OK(ln_module_named_parameters(model, add_name, buf));
  CHECK(strcmp(buf, "1.weight;2.bn.weight;") == 0);

  /* state dicts, unlike the walks, list a shared module under each name */
  ln_state_dict *sd = ln_module_state_dict(model);
  CHECK(ln_state_dict_get(sd, "3.weight") != NULL);
  CHECK(ln_state_dict_get(sd, "2.bn.tied") != NULL);
  ln_state_dict_free(sd);

  CHECK(ln_module_training(model));
  ln_module_train(model, false);
  CHECK(!ln_module_training(model) && !ln_module_training(bn) && !ln_module_training(first));
  ln_module_train(model, true);
  CHECK(ln_module_training(bn));

  /* to(float64): same tensor objects, new dtype; int64 buffers keep theirs */
  ln_tensor *w = ln_module_get_tensor(first, "weight");
  ln_tensor *count = ln_module_get_tensor(first, "count");
  ln_tensor *g = vec(3, 0.5);
  ln_tensor_set_grad(w, g);
  ln_tensor_release(g);
  ln_dtype f64 = LN_F64;
  CHECK_OK(ln_module_to(model, NULL, &f64));
  CHECK(ln_module_get_tensor(first, "weight") == w);
  CHECK(ln_tensor_dtype(w) == LN_F64);
  CHECK(ln_tensor_dtype(ln_tensor_grad(w)) == LN_F64);
  CHECK_NEAR(at(ln_tensor_grad(w), 2), 0.5, 0);
  CHECK(ln_tensor_dtype(ln_module_get_tensor(first, "scratch")) == LN_F64);
  CHECK(ln_tensor_dtype(count) == LN_I64);
  CHECK_NEAR(at(w, 0), 1, 0);
  ln_dtype i64 = LN_I64;
  CHECK(ln_module_to(model, NULL, &i64) == LN_EINVAL);
  CHECK_MSG("only accepts floating point dtypes");
  /* a device that is not there: an error, and nothing moves */
  ln_device far = { LN_CUDA, 7 };
  CHECK(ln_module_to(model, &far, &f64) != LN_OK);
  CHECK(ln_tensor_device(w).type == LN_CPU);
  ln_module_zero_grad(model);
  CHECK(ln_tensor_grad(w) == NULL);
  ln_module_release(model);
}

static ln_status pre_hook(ln_module *m, ln_tensor **inputs, int n, void *ud) {
  (void)m, (void)inputs, (void)n;
  log_add(ud);
  return LN_OK;
}

static ln_status post_hook(ln_module *m, ln_tensor *const *inputs, int n,
                           ln_tensor **output, void *ud) {
  (void)m, (void)inputs, (void)n;
  log_add(ud);
  if (strcmp(ud, "swap;") == 0) {   /* replace the output */
    ln_tensor_release(*output);
    *output = vec(1, 42);
  }
  return LN_OK;
}

static int n_ud_freed;
static void free_ud(void *ud) { (void)ud; n_ud_freed++; }

static void test_hooks_and_call(void) {
  ln_module *m = scale_new(2, 1, 0);
  ln_tensor *x = vec(2, 3);
  int a = ln_module_add_forward_pre_hook(m, pre_hook, "pre1;", free_ud);
  int b = ln_module_add_forward_hook(m, post_hook, "hook1;", free_ud);
  int c = ln_module_add_forward_pre_hook(m, pre_hook, "pre2;", NULL);
  CHECK(a > 0 && b > 0 && c > 0 && a != b && b != c);
  log_buf[0] = '\0';
  ln_tensor *y = ln_module_call(m, &x, 1);
  CHECK(y == x);
  CHECK(strcmp(log_buf, "pre1;pre2;fwd;hook1;") == 0);
  ln_tensor_release(y);
  CHECK(ln_module_remove_hook(m, a));
  CHECK(n_ud_freed == 1);
  CHECK(!ln_module_remove_hook(m, a));
  int d = ln_module_add_forward_hook(m, post_hook, "swap;", NULL);
  log_buf[0] = '\0';
  y = ln_module_call(m, &x, 1);
  CHECK(strcmp(log_buf, "pre2;fwd;hook1;swap;") == 0);
  CHECK(y && ln_tensor_size(y, 0) == 1 && at(y, 0) == 42);
  ln_tensor_release(y);
  CHECK(ln_module_remove_hook(m, d));
  ln_module_release(m);               /* frees hook1's ud */
  CHECK(n_ud_freed == 2);

  /* Sequential chains its children through ln_module_call */
  ln_module *kids[2] = { scale_new(2, 1, 0), new_module(&relu_type) };
  ln_module *seq = seq_of(kids, 2);
  ln_module_add_forward_pre_hook(ln_module_get_child(seq, "2"), pre_hook, "pre;", NULL);
  log_buf[0] = '\0';
  y = ln_module_call(seq, &x, 1);
  CHECK(y == x);
  CHECK(strcmp(log_buf, "fwd;pre;fwd;") == 0);
  ln_tensor_release(y);
  ln_module_release(seq);

  ln_module *empty = new_module(&ln_sequential_type);
  int refs = ln_tensor_refcount(x);
  y = ln_module_call(empty, &x, 1);
  CHECK(y == x && ln_tensor_refcount(x) == refs + 1);
  ln_tensor_release(y);
  CHECK(ln_module_call(empty, NULL, 0) == NULL);
  ln_module_release(empty);

  ln_module *net = new_module(&net_type);
  CHECK(ln_module_call(net, &x, 1) == NULL);
  CHECK(strcmp(ln_last_error(), "module 'Net' has no forward") == 0);
  ln_module_release(net);
  ln_tensor_release(x);
}

static void test_repr(void) {
  ln_module *model = model_new();
  char *s = ln_module_to_string(model);
  CHECK(s && strcmp(s, "Sequential(\n"
                       "  (1): Scale(3)\n"
                       "  (2): Net(\n"
                       "    (bn): Scale(2)\n"
                       "    (act): ReLU()\n"
                       "  )\n"
                       ")") == 0);
  free(s);
  ln_module *empty = new_module(&ln_sequential_type);
  s = ln_module_to_string(empty);
  CHECK(s && strcmp(s, "Sequential()") == 0);
  free(s);
  ln_module_release(empty);
  ln_module_release(model);
}

/* Multi-line extra_repr: every line indented, as PyTorch. */
static void two_lines(ln_module *m, char *buf, size_t size) {
  (void)m;
  snprintf(buf, size, "a=1\nb=2");
}

static void test_repr_multiline(void) {
  static const ln_module_type t = { .name = "Two", .extra_repr = two_lines };
  ln_module *leaf = ln_module_new(&t, NULL);
  ln_module *kids[1] = { leaf };
  ln_module *seq = seq_of(kids, 1);
  char *s = ln_module_to_string(seq);
  CHECK(s && strcmp(s, "Sequential(\n  (1): Two(\n    a=1\n    b=2\n  )\n)") == 0);
  free(s);
  ln_module_release(seq);
}

static void test_state_dict(void) {
  ln_module *model = model_new();
  ln_state_dict *sd = ln_module_state_dict(model);
  char keys[512];
  sd_keys(sd, keys);
  CHECK(strcmp(keys, "1.weight;1.running;1.count;2.bn.weight;2.bn.running;2.bn.count;") == 0);
  CHECK(ln_state_dict_version_count(sd) == 5);
  const char *prefixes[5] = { "", "1", "2", "2.bn", "2.act" };
  const int versions[5] = { 1, 2, 1, 2, 1 };
  for (int i = 0; i < 5; i++) {
    int v = 0;
    CHECK(ln_state_dict_get_version(sd, prefixes[i], &v) && v == versions[i]);
    CHECK(strcmp(ln_state_dict_version_prefix(sd, i), prefixes[i]) == 0);
  }
  /* values are detached aliases of the module's tensors */
  ln_tensor *w = ln_module_get_tensor(ln_module_get_child(model, "1"), "weight");
  ln_tensor *sw = ln_state_dict_get(sd, "1.weight");
  CHECK(sw != w && ln_tensor_storage(sw) == ln_tensor_storage(w));
  CHECK(!ln_tensor_requires_grad(sw));
  ln_state_dict_free(sd);
  ln_module_release(model);
}

/* A source dict: Scale weights 7, running 8, count 5. */
static ln_state_dict *source_dict(void) {
  ln_module *src = model_new();
  ln_module *a = ln_module_get_child(src, "1");
  ln_module *bn = ln_module_get_child(ln_module_get_child(src, "2"), "bn");
  ln_module *both[2] = { a, bn };
  bool grad_mode = ln_set_grad_enabled(false);   /* weights are leaves */
  for (int i = 0; i < 2; i++) {
    CHECK_OK(ln_fill_(ln_module_get_tensor(both[i], "weight"), 7));
    CHECK_OK(ln_fill_(ln_module_get_tensor(both[i], "running"), 8));
    CHECK_OK(ln_fill_(ln_module_get_tensor(both[i], "count"), 5));
  }
  ln_set_grad_enabled(grad_mode);
  ln_state_dict *sd = ln_module_state_dict(src);
  ln_module_release(src);
  return sd;
}

/* Whether Scale child "1" of model holds weight w, running r, count c. */
static bool first_is(ln_module *model, double w, double r, double c) {
  ln_module *a = ln_module_get_child(model, "1");
  double cnt;
  ln_tensor_item(ln_module_get_tensor(a, "count"), &cnt);
  return at(ln_module_get_tensor(a, "weight"), 2) == w &&
         at(ln_module_get_tensor(a, "running"), 0) == r && cnt == c;
}

static void test_load(void) {
  ln_state_dict *sd = source_dict();
  ln_module *model = model_new();
  ln_load_result r;

  /* strict, everything matches; the caller's dict is not touched */
  int n_keys = ln_state_dict_count(sd);
  CHECK_OK(ln_module_load_state_dict(model, sd, true, &r));
  CHECK(r.n_missing == 0 && r.n_unexpected == 0);
  CHECK(first_is(model, 7, 8, 5));
  CHECK(ln_state_dict_count(sd) == n_keys);
  ln_load_result_free(&r);

  /* missing and unexpected keys: strict fails and copies nothing */
  ln_module *fresh = model_new();
  ln_state_dict *bad = ln_state_dict_copy(sd);
  ln_state_dict_remove(bad, "1.running");
  ln_state_dict_remove(bad, "2.bn.count");
  ln_tensor *extra = vec(1, 0);
  ln_state_dict_set(bad, "1.foo", extra);
  ln_state_dict_set(bad, "bar", extra);
  ln_state_dict_set(bad, "1.scratch", extra);        /* non-persistent: unexpected */
  CHECK(ln_module_load_state_dict(fresh, bad, true, &r) == LN_EFORMAT);
  CHECK(strcmp(ln_last_error(),
               "Error(s) in loading state_dict for Sequential:\n"
               "\tMissing key(s) in state_dict: \"1.running\", \"2.bn.count\". \n"
               "\tUnexpected key(s) in state_dict: \"bar\", \"1.foo\", \"1.scratch\". ") == 0);
  CHECK(r.n_missing == 0 && r.missing_keys == NULL);
  CHECK(first_is(fresh, 1, 0, 0));

  /* non-strict loads what it can and reports the rest */
  CHECK_OK(ln_module_load_state_dict(fresh, bad, false, &r));
  CHECK(r.n_missing == 2 && strcmp(r.missing_keys[1], "2.bn.count") == 0);
  CHECK(r.n_unexpected == 3 && strcmp(r.unexpected_keys[0], "bar") == 0);
  CHECK(first_is(fresh, 7, 0, 5));
  ln_load_result_free(&r);
  ln_state_dict_free(bad);
  ln_module_release(fresh);

  /* size mismatch fails even when not strict, and copies nothing */
  fresh = model_new();
  bad = ln_state_dict_copy(sd);
  ln_tensor *w4 = vec(4, 9);
  ln_state_dict_set(bad, "2.bn.weight", w4);
  ln_state_dict_set(bad, "1.count", extra);           /* {1} into 0-dim is allowed */
  CHECK(ln_module_load_state_dict(fresh, bad, false, &r) == LN_EFORMAT);
  CHECK(strcmp(ln_last_error(),
               "Error(s) in loading state_dict for Sequential:\n"
               "\tsize mismatch for 2.bn.weight: copying a param with shape {4} from "
               "checkpoint, the shape in current model is {2}.") == 0);
  CHECK(first_is(fresh, 1, 0, 0));
  ln_state_dict_remove(bad, "1.running");
  CHECK(ln_module_load_state_dict(fresh, bad, true, NULL) == LN_EFORMAT);
  CHECK(strstr(ln_last_error(), "Missing key(s) in state_dict: \"1.running\". \n"
               "\tsize mismatch for 2.bn.weight") != NULL);
  ln_state_dict_set(bad, "2.bn.weight", ln_state_dict_get(sd, "2.bn.weight"));
  ln_state_dict_set(bad, "1.running", ln_state_dict_get(sd, "1.running"));
  CHECK_OK(ln_module_load_state_dict(fresh, bad, true, NULL));
  CHECK(first_is(fresh, 7, 8, 0));
  ln_tensor_release(w4);
  ln_tensor_release(extra);
  ln_state_dict_free(bad);
  ln_module_release(fresh);

  /* dtype is converted on copy */
  fresh = model_new();
  ln_dtype f64 = LN_F64;
  CHECK_OK(ln_module_to(fresh, NULL, &f64));
  CHECK_OK(ln_module_load_state_dict(fresh, sd, true, NULL));
  CHECK(first_is(fresh, 7, 8, 5));
  CHECK(ln_tensor_dtype(ln_module_get_tensor(ln_module_get_child(fresh, "1"), "weight")) == LN_F64);
  ln_module_release(fresh);

  ln_state_dict_free(sd);
  ln_module_release(model);
}

static void test_version_migration(void) {
  ln_state_dict *sd = source_dict();
  ln_state_dict *old = ln_state_dict_copy(sd);
  ln_state_dict_remove(old, "1.count");
  ln_state_dict_remove(old, "2.bn.count");
  ln_module *model = model_new();
  CHECK_OK(ln_fill_(ln_module_get_tensor(ln_module_get_child(model, "1"), "count"), 3));

  /* version 2 without the counter: missing */
  CHECK(ln_module_load_state_dict(model, old, true, NULL) == LN_EFORMAT);
  CHECK_MSG("Missing key(s) in state_dict: \"1.count\", \"2.bn.count\". ");
  /* version 1: the hook supplies a zero counter */
  CHECK_OK(ln_state_dict_set_version(old, "1", 1));
  CHECK(ln_module_load_state_dict(model, old, true, NULL) == LN_EFORMAT);
  CHECK(strstr(ln_last_error(), "\"2.bn.count\"") && !strstr(ln_last_error(), "\"1.count\""));
  CHECK(first_is(model, 1, 0, 3));
  CHECK_OK(ln_state_dict_set_version(old, "2.bn", 1));
  CHECK_OK(ln_module_load_state_dict(model, old, true, NULL));
  CHECK(first_is(model, 7, 8, 0));
  CHECK(ln_state_dict_get(old, "1.count") == NULL);   /* hooks ran on a copy */

  /* no metadata at all counts as unversioned */
  ln_state_dict *bare = ln_state_dict_new();
  for (int i = 0; i < ln_state_dict_count(old); i++)
    ln_state_dict_set(bare, ln_state_dict_key(old, i), ln_state_dict_value(old, i));
  CHECK_OK(ln_module_load_state_dict(model, bare, true, NULL));
  ln_state_dict_free(bare);
  ln_state_dict_free(old);
  ln_state_dict_free(sd);
  ln_module_release(model);
}

static void test_lazy(void) {
  /* from the first input */
  ln_module *m = lazy_new();
  CHECK(ln_module_has_uninitialized(m));
  CHECK(ln_module_get_tensor(m, "weight") == NULL && ln_module_slot_uninitialized(m, 0));
  char *s = ln_module_to_string(m);
  CHECK(s && strcmp(s, "LazyScale()") == 0);
  free(s);
  int64_t sizes[2] = { 4, 5 };
  ln_tensor *x = ln_zeros(sizes, 2, LN_F32, LN_DEVICE_CPU);
  log_buf[0] = '\0';
  ln_tensor *y = ln_module_call(m, &x, 1);
  CHECK(y == x && strcmp(log_buf, "fwd;") == 0);
  ln_tensor_release(y);
  CHECK(!ln_module_has_uninitialized(m));
  CHECK(strcmp(ln_module_type_name(m), "Scale") == 0);
  ln_tensor *w = ln_module_get_tensor(m, "weight");
  CHECK(w && ln_tensor_size(w, 0) == 5 && at(w, 4) == 1);
  CHECK(ln_tensor_requires_grad(w) && ln_tensor_is_leaf(w));
  CHECK(!ln_tensor_requires_grad(ln_module_get_tensor(m, "running")));
  CHECK_NEAR(ln_module_attr_number(m, "n", 0), 5, 0);
  ln_module_release(m);

  /* without a way to infer its shapes, a lazy module cannot run */
  static const ln_module_type stuck = { .name = "Stuck", .forward = scale_forward };
  ln_module *st = ln_module_new(&stuck, NULL);
  ln_module_register_uninitialized(st, "weight", LN_SLOT_PARAM, LN_F32, LN_DEVICE_CPU);
  CHECK(ln_module_call(st, &x, 1) == NULL);
  CHECK_MSG("uninitialized");
  ln_module_release(st);
  ln_tensor_release(x);

  /* from a state dict: fails change nothing, success materializes */
  ln_module *src = scale_new(4, 6, 2);
  ln_state_dict *sd = ln_module_state_dict(src);
  ln_module_release(src);
  m = lazy_new();
  ln_state_dict *bad = ln_state_dict_copy(sd);
  ln_tensor *extra = vec(1, 0);
  ln_state_dict_set(bad, "foo", extra);
  ln_tensor_release(extra);
  CHECK(ln_module_load_state_dict(m, bad, true, NULL) == LN_EFORMAT);
  CHECK(ln_module_has_uninitialized(m) && strcmp(ln_module_type_name(m), "LazyScale") == 0);
  ln_state_dict_free(bad);
  ln_dtype f64 = LN_F64;
  CHECK_OK(ln_module_to(m, NULL, &f64));              /* lazy slots follow to() */
  CHECK_OK(ln_module_load_state_dict(m, sd, true, NULL));
  CHECK(strcmp(ln_module_type_name(m), "Scale") == 0);
  w = ln_module_get_tensor(m, "weight");
  CHECK(w && ln_tensor_size(w, 0) == 4 && at(w, 3) == 6 && ln_tensor_dtype(w) == LN_F64);
  CHECK(at(ln_module_get_tensor(m, "running"), 0) == 2);
  CHECK_NEAR(ln_module_attr_number(m, "n", 0), 4, 0);
  ln_state_dict_free(sd);
  ln_module_release(m);
}

static void test_bad_args(void) {
  CHECK(ln_module_new(NULL, NULL) == NULL);
  CHECK(ln_module_state_dict(NULL) == NULL);
  CHECK(ln_module_load_state_dict(NULL, NULL, true, NULL) == LN_EINVAL);
  CHECK(ln_module_to_string(NULL) == NULL);
  CHECK(ln_module_walk(NULL, add_prefix, NULL) == LN_EINVAL);
  CHECK(ln_module_materialize(NULL, "w", NULL, 0) == LN_EINVAL);
  ln_module *m = scale_new(2, 1, 0);
  int64_t n = 2;
  CHECK(ln_module_materialize(m, "weight", &n, 1) == LN_EINVAL);
  CHECK_MSG("already initialized");
  CHECK(ln_module_materialize(m, "nope", &n, 1) == LN_EINVAL);
  CHECK(ln_module_register_uninitialized(m, "c", LN_SLOT_CHILD, LN_F32, LN_DEVICE_CPU)
        == LN_EINVAL);
  CHECK(ln_module_add_forward_hook(m, NULL, NULL, NULL) == -1);
  ln_module_release(m);
  ln_module_release(NULL);
  CHECK(ln_state_dict_set(NULL, "k", NULL) == LN_EINVAL);
  CHECK(ln_state_dict_get(NULL, "k") == NULL);
}

int main(void) {
  ln_init();
  int64_t live = ln_tensor_live_count();
  test_slots();
  test_attrs();
  test_walk_and_modes();
  test_hooks_and_call();
  test_repr();
  test_repr_multiline();
  test_state_dict();
  test_load();
  test_version_migration();
  test_lazy();
  test_bad_args();
  CHECK(ln_tensor_live_count() == live);
  CHECK(n_freed == n_created);   /* every module was freed */
  return check_done("test_module");
}
