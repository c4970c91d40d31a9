/*
** test_print.c -- tensor reprs against PyTorch's, read from
** tests/fixtures/print_cases.txt (written by scripts/gen_print_fixtures.py),
** plus what the fixtures cannot build: strided views, grad_fn names.
*/
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/autograd.h"
#include "core/print.h"

/* Read the whole fixture file, found next to this source file. */
static char *read_fixtures(void) {
  char path[4096];
  const char *src = __FILE__, *slash = strrchr(src, '/');
  int dir = slash ? (int)(slash - src) : 0;   /* .../tests/c */
  snprintf(path, sizeof path, "%.*s/../fixtures/print_cases.txt", dir, src);
  FILE *f = fopen(path, "rb");
  if (!f) { fprintf(stderr, "cannot open %s\n", path); return NULL; }
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = malloc((size_t)n + 1);
  size_t got = fread(buf, 1, (size_t)n, f);
  buf[got] = '\0';
  fclose(f);
  return buf;
}

/* The value after "key=" in a spec line, or NULL. */
static const char *field(const char *spec, const char *key) {
  size_t k = strlen(key);
  for (const char *p = spec; (p = strstr(p, key)) != NULL; p += k)
    if ((p == spec || p[-1] == ' ') && p[k] == '=') return p + k + 1;
  return NULL;
}

/* Build the tensor a spec line describes (see the generator's docstring). */
static ln_tensor *build(const char *spec) {
  ln_dtype dtype;
  char name[16];
  sscanf(field(spec, "dtype"), "%15s", name);
  if (ln_dtype_from_name(name, &dtype) != LN_OK) return NULL;
  int64_t sizes[LN_MAX_DIMS];
  int nd = 0;
  for (const char *p = field(spec, "shape"); *p >= '0' && *p <= '9'; nd++) {
    char *end;
    sizes[nd] = strtoll(p, &end, 10);
    p = *end == ',' ? end + 1 : end;
  }
  ln_tensor *t = ln_empty(sizes, nd, dtype, LN_DEVICE_CPU);
  char *data = ln_tensor_data(t);
  int64_t n = ln_tensor_numel(t);
  size_t es = ln_dtype_size(dtype);
  const char *ar = field(spec, "arange"), *vals = field(spec, "values");
  double start = 0, step = 0;
  if (ar) sscanf(ar, "%lf,%lf", &start, &step);
  for (int64_t i = 0; i < n; i++) {
    char *end;
    if (ar) {
      ln_store_double(data + i * es, dtype, start + (double)i * step);
    } else if (dtype == LN_I64) {
      int64_t v = strtoll(vals, &end, 10);
      memcpy(data + i * es, &v, sizeof v);
      vals = end + 1;
    } else {
      ln_store_double(data + i * es, dtype, strtod(vals, &end));
      vals = end + 1;
    }
  }
  if (field(spec, "requires_grad")) ln_tensor_set_requires_grad(t, true);
  if (field(spec, "parameter")) {
    ln_tensor_set_parameter(t, true);
    ln_tensor_set_requires_grad(t, true);
  }
  return t;
}

static void check_repr(ln_tensor *t, const char *expected, const char *name) {
  char *got = ln_tensor_to_string(t);
  CHECK(got != NULL);
  if (got && strcmp(got, expected) != 0) {
    check_failed++;
    fprintf(stderr, "case %s:\n--- expected\n%s\n--- got\n%s\n", name, expected, got);
  } else if (got) {
    check_passed++;
  }
  free(got);
}

static void test_fixtures(void) {
  char *text = read_fixtures();
  CHECK(text != NULL);
  if (!text) return;
  int cases = 0;
  for (char *p = strstr(text, "### "); p; cases++) {
    char *name = p + 4, *spec = strchr(name, '\n') + 1;
    char *expected = strchr(spec, '\n') + 1;
    char *next = strstr(expected, "\n### ");
    name[strcspn(name, "\n")] = '\0';
    spec[strcspn(spec, "\n")] = '\0';
    if (next) *next = '\0';
    else expected[strlen(expected) - 1] = '\0';   /* the final newline */
    ln_tensor *t = build(spec);
    CHECK(t != NULL);
    if (t) check_repr(t, expected, name);
    ln_tensor_release(t);
    p = next ? next + 1 : NULL;
  }
  CHECK(cases > 40);
  free(text);
}

/* A strided view prints like its contiguous copy. */
static void test_views(void) {
  int64_t sizes[2] = { 2, 3 };
  ln_tensor *a = ln_arange(0, 6, 1, LN_F32);
  ln_tensor *m = ln_view(a, sizes, 2);
  ln_tensor *t = ln_transpose(m, 0, 1);
  check_repr(t, "tensor([[0., 3.],\n        [1., 4.],\n        [2., 5.]])", "transpose");
  ln_tensor *row = ln_select(t, 1, 1);   /* stride 3 */
  check_repr(row, "tensor([3., 4., 5.])", "select");
  int64_t ex[2] = { 2, 3 };
  ln_tensor *s = ln_scalar(1.25, LN_F64);
  ln_tensor *e = ln_expand(s, ex, 2);    /* stride 0 */
  check_repr(e, "tensor([[1.2500, 1.2500, 1.2500],\n        [1.2500, 1.2500, 1.2500]],"
             " dtype=torch.float64)", "expand");
  ln_tensor_release(a); ln_tensor_release(m); ln_tensor_release(t);
  ln_tensor_release(row); ln_tensor_release(s); ln_tensor_release(e);
}

/* A non-leaf prints its grad_fn's name instead of requires_grad. */
static void test_grad_fn(void) {
  int64_t size[1] = { 2 };
  ln_tensor *x = ln_ones(size, 1, LN_F32, LN_DEVICE_CPU);
  ln_tensor_set_requires_grad(x, true);
  ln_tensor *y = ln_ones(size, 1, LN_F32, LN_DEVICE_CPU);
  ln_node *node = ln_node_new("AddBackward0", NULL, &x, 1, 1);
  CHECK(node != NULL);
  if (node) ln_set_history(y, node, 0);
  ln_node_release(node);
  check_repr(y, "tensor([1., 1.], grad_fn=<AddBackward0>)", "grad_fn");
  ln_tensor_release(x); ln_tensor_release(y);
}

/* 1000 elements print in full; 1001 are summarised. */
static void test_threshold(void) {
  for (int64_t n = 1000; n <= 1001; n++) {
    ln_tensor *t = ln_zeros(&n, 1, LN_BOOL, LN_DEVICE_CPU);
    char *s = ln_tensor_to_string(t);
    CHECK(s && (strstr(s, "...") != NULL) == (n > 1000));
    free(s);
    ln_tensor_release(t);
  }
}

int main(void) {
  ln_init();
  int64_t live = ln_tensor_live_count();
  test_fixtures();
  test_views();
  test_grad_fn();
  test_threshold();
  CHECK(ln_tensor_live_count() == live);
  return check_done("test_print");
}
