/*
** print.c -- a tensor as PyTorch's repr prints it (torch/_tensor_str.py
** with the default print options: precision 4, threshold 1000, edgeitems
** 3, linewidth 80).
**
** One recursive walk visits the elements that will be shown (all of them,
** or with "..." the first and last 3 of every dim when numel > 1000) in
** print order. It runs three times: to gather the statistics that choose
** a common float format (integer / fixed / scientific), to measure the
** common width, and to write the text into a memory stream.
*/
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd.h"
#include "print.h"

#define PRINT_PRECISION 4
#define PRINT_THRESHOLD 1000
#define PRINT_EDGEITEMS 3
#define PRINT_LINEWIDTH 80

typedef enum { PASS_STATS, PASS_WIDTH, PASS_EMIT } print_pass;

typedef struct printer {
  const ln_tensor *t;      /* a CPU tensor */
  bool summarize;
  print_pass pass;
  FILE *out;               /* PASS_EMIT only */
  /* format chosen from the values, as _Formatter does */
  bool floating, int_mode, sci_mode;
  bool any_nonzero;        /* a nonzero finite value was seen */
  double min_abs, max_abs; /* over nonzero finite values */
  int width;
} printer;

/* Text of one value in the chosen format, without padding. */
static int format_value(const printer *p, const char *elem, char *buf, size_t n) {
  ln_dtype dt = ln_tensor_dtype(p->t);
  if (dt == LN_BOOL) return snprintf(buf, n, "%s", *elem ? "True" : "False");
  if (dt == LN_I64) {
    int64_t v;
    memcpy(&v, elem, sizeof v);
    return snprintf(buf, n, "%lld", (long long)v);
  }
  double v = ln_load_double(elem, dt);
  if (isnan(v)) return snprintf(buf, n, "nan");   /* never "-nan" */
  if (isinf(v)) return snprintf(buf, n, "%s", v < 0 ? "-inf" : "inf");
  if (p->sci_mode) return snprintf(buf, n, "%.*e", PRINT_PRECISION, v);
  if (p->int_mode) return snprintf(buf, n, "%.0f.", v);
  return snprintf(buf, n, "%.*f", PRINT_PRECISION, v);
}

static void visit(printer *p, const char *elem) {
  char buf[64];
  if (p->pass == PASS_EMIT) {
    int len = format_value(p, elem, buf, sizeof buf);
    fprintf(p->out, "%*s%s", len < p->width ? p->width - len : 0, "", buf);
    return;
  }
  double v = p->floating ? ln_load_double(elem, ln_tensor_dtype(p->t)) : 0;
  bool counts = !p->floating || (isfinite(v) && v != 0);  /* floats: nonzero finite */
  if (!counts) return;
  if (p->pass == PASS_STATS) {
    double a = fabs(v);
    if (!p->any_nonzero || a < p->min_abs) p->min_abs = a;
    if (!p->any_nonzero || a > p->max_abs) p->max_abs = a;
    if (v != ceil(v)) p->int_mode = false;
    p->any_nonzero = true;
    return;
  }
  int len = format_value(p, elem, buf, sizeof buf);
  if (len > p->width) p->width = len;
}

/* Along a dim of size n: whether it is cut, how many items show (the
** "..." counts as one) and which index the k-th item is (-1 for "..."). */
static bool cut(const printer *p, int64_t n) {
  return p->summarize && n > 2 * PRINT_EDGEITEMS;
}
static int64_t shown_count(const printer *p, int64_t n) {
  return cut(p, n) ? 2 * PRINT_EDGEITEMS + 1 : n;
}
static int64_t shown_index(const printer *p, int64_t n, int64_t k) {
  if (!cut(p, n) || k < PRINT_EDGEITEMS) return k;
  return k == PRINT_EDGEITEMS ? -1 : n - (2 * PRINT_EDGEITEMS + 1 - k);
}

static void emit(const printer *p, const char *s) {
  if (p->pass == PASS_EMIT) fputs(s, p->out);
}

static void emit_newline(const printer *p, int newlines, int indent) {
  if (p->pass == PASS_EMIT)
    fprintf(p->out, ",%.*s%*s", newlines, "\n\n\n\n\n\n\n\n", indent, "");
}

/* Walk dims d.. of the tensor from element pointer `at`; `indent` is the
** column of this level's "[". */
static void walk(printer *p, int d, const char *at, int indent) {
  const ln_tensor *t = p->t;
  int nd = ln_tensor_dim(t);
  if (nd == 0) { visit(p, at); return; }
  int64_t n = ln_tensor_size(t, d), count = shown_count(p, n);
  int64_t step = ln_tensor_stride(t, d) * (int64_t)ln_dtype_size(ln_tensor_dtype(t));
  int per_line = (PRINT_LINEWIDTH - indent) / (p->width + 2);
  if (per_line < 1) per_line = 1;
  emit(p, "[");
  for (int64_t k = 0; k < count; k++) {
    int64_t i = shown_index(p, n, k);
    if (d == nd - 1) {           /* a row of values, wrapped at the line width */
      if (k > 0) {
        if (k % per_line == 0) emit_newline(p, 1, indent + 1);
        else emit(p, ", ");
      }
      if (i < 0) emit(p, " ...");
      else visit(p, at + i * step);
    } else {                     /* slices, separated by nd - d - 1 newlines */
      if (k > 0) emit_newline(p, nd - d - 1, indent + 1);
      if (i < 0) emit(p, "...");
      else walk(p, d + 1, at + i * step, indent + 1);
    }
  }
  emit(p, "]");
}

/* Choose the format from the shown values, as _Formatter.__init__ does. */
static void choose_format(printer *p) {
  p->floating = ln_dtype_is_float(ln_tensor_dtype(p->t));
  p->int_mode = true;
  p->width = 1;
  p->pass = PASS_STATS;
  if (p->floating) walk(p, 0, ln_tensor_data(p->t), 0);
  if (p->floating && !p->any_nonzero) return;
  if (p->floating) {
    double ratio = p->max_abs / p->min_abs;
    p->sci_mode = ratio > 1000.0 || p->max_abs > 1.0e8 ||
                  (!p->int_mode && p->min_abs < 1.0e-4);
  }
  p->pass = PASS_WIDTH;
  walk(p, 0, ln_tensor_data(p->t), 0);
}

/* Append ", suffix" or ",\n<indent>suffix" when the line would pass the
** line width (_add_suffixes; its line length counts 1 more than it is). */
static void add_suffix(FILE *f, const char *suffix, int indent, size_t *last_line) {
  size_t len = strlen(suffix);
  if (*last_line + len + 2 > PRINT_LINEWIDTH) {
    fprintf(f, ",\n%*s%s", indent, "", suffix);
    *last_line = (size_t)indent + len;
  } else {
    fprintf(f, ", %s", suffix);
    *last_line += len + 2;
  }
}

/* Write t's repr (cpu: its CPU copy) into the stream f, whose buffer is
** *text of *size bytes, starting at byte `start`. */
static ln_status write_repr(FILE *f, char **text, size_t *size, size_t start,
                            ln_tensor *t, const ln_tensor *cpu) {
  const char *prefix = "tensor(";
  int indent = (int)strlen(prefix);
  fputs(prefix, f);
  if (ln_tensor_numel(cpu) == 0) {
    fputs("[]", f);
  } else {
    printer p = { .t = cpu, .summarize = ln_tensor_numel(cpu) > PRINT_THRESHOLD };
    choose_format(&p);
    p.pass = PASS_EMIT;
    p.out = f;
    walk(&p, 0, ln_tensor_data(cpu), indent);
  }
  if (fflush(f) != 0) return ln_error(LN_ENOMEM, "out of memory printing a tensor");
  const char *nl = strrchr(*text + start, '\n');
  long nl_pos = nl ? (long)(nl - (*text + start)) : -1;   /* Python's rfind */
  size_t last_line = (size_t)((long)(*size - start) - nl_pos + 1);

  char suffix[128];
  ln_device dev = ln_tensor_device(t);
  ln_dtype dt = ln_tensor_dtype(t);
  if (dev.type != LN_CPU) {
    char name[32];
    snprintf(suffix, sizeof suffix, "device='%s'", ln_device_str(dev, name, sizeof name));
    add_suffix(f, suffix, indent, &last_line);
  }
  bool empty = ln_tensor_numel(t) == 0;
  if (empty && ln_tensor_dim(t) != 1) {
    int n = snprintf(suffix, sizeof suffix, "size=(");
    for (int d = 0; d < ln_tensor_dim(t); d++)
      n += snprintf(suffix + n, sizeof suffix - (size_t)n, "%s%lld", d ? ", " : "",
                    (long long)ln_tensor_size(t, d));
    snprintf(suffix + n, sizeof suffix - (size_t)n, ")");
    add_suffix(f, suffix, indent, &last_line);
  }
  /* float32 is the default dtype; int64 and bool are implied by the values */
  if (dt != LN_F32 && (empty || (dt != LN_I64 && dt != LN_BOOL))) {
    snprintf(suffix, sizeof suffix, "dtype=torch.%s", ln_dtype_name(dt));
    add_suffix(f, suffix, indent, &last_line);
  }
  ln_node *fn = ln_tensor_grad_fn(t);
  if (fn) {
    snprintf(suffix, sizeof suffix, "grad_fn=<%s>", fn->name);
    add_suffix(f, suffix, indent, &last_line);
  } else if (ln_tensor_requires_grad(t)) {
    add_suffix(f, "requires_grad=True", indent, &last_line);
  }
  fputc(')', f);
  return LN_OK;
}

char *ln_tensor_to_string(ln_tensor *t) {
  char *text = NULL;
  size_t size = 0;
  ln_tensor *cpu = ln_to_device(t, LN_DEVICE_CPU);
  if (!cpu) return NULL;
  FILE *f = open_memstream(&text, &size);
  if (!f) {
    ln_tensor_release(cpu);
    ln_error(LN_ENOMEM, "out of memory printing a tensor");
    return NULL;
  }
  if (ln_tensor_is_parameter(t)) fputs("Parameter containing:\n", f);
  ln_status st = fflush(f) == 0 ? write_repr(f, &text, &size, size, t, cpu)
                                : ln_error(LN_ENOMEM, "out of memory printing a tensor");
  bool closed = fclose(f) == 0;
  ln_tensor_release(cpu);
  if (st == LN_OK && closed) return text;
  free(text);
  if (st == LN_OK) ln_error(LN_ENOMEM, "out of memory printing a tensor");
  return NULL;
}
