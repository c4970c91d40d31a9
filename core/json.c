/*
** json.c -- strict JSON: a recursive-descent reader whose recursion is
** bounded by LN_JSON_MAX_DEPTH, and a string writer.
** A value under construction is always valid to free: arrays and objects
** count an element before parsing into its zeroed slot, so the one
** cleanup path (free_value) never sees uninitialised memory.
*/
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

typedef struct parser {
  const unsigned char *s;
  size_t len, pos;
  int depth;
} parser;

static ln_status fail(size_t at, const char *fmt, ...)
#if defined(__GNUC__)
  __attribute__((format(printf, 2, 3)))
#endif
  ;

static ln_status fail(size_t at, const char *fmt, ...) {
  char msg[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return ln_error(LN_EFORMAT, "at byte %zu: %s", at, msg);
}

static ln_status nomem(void) { return ln_error(LN_ENOMEM, "out of memory parsing JSON"); }

/* "'x'" for a printable byte, "byte 0xNN" otherwise, for messages. */
static const char *show(unsigned char c, char buf[16]) {
  if (c >= 0x20 && c < 0x7f) snprintf(buf, 16, "'%c'", c);
  else snprintf(buf, 16, "byte 0x%02X", c);
  return buf;
}

static void free_value(ln_json *v) {
  switch (v->type) {
  case LN_JSON_STRING: free(v->string); break;
  case LN_JSON_ARRAY:
    for (size_t i = 0; i < v->n_items; i++) free_value(&v->items[i]);
    free(v->items);
    break;
  case LN_JSON_OBJECT:
    for (size_t i = 0; i < v->n_members; i++) {
      free(v->members[i].key);
      free_value(&v->members[i].value);
    }
    free(v->members);
    break;
  default: break;
  }
}

void ln_json_free(ln_json *root) {
  if (!root) return;
  free_value(root);
  free(root);
}

static void skip_ws(parser *p) {
  while (p->pos < p->len && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' ||
                             p->s[p->pos] == '\n' || p->s[p->pos] == '\r'))
    p->pos++;
}

/* Length of the valid UTF-8 sequence at s[0..n), or 0 (overlong forms,
** surrogates and code points above U+10FFFF are invalid). */
static size_t utf8_seq(const unsigned char *s, size_t n) {
  unsigned char c = s[0];
  if (c < 0x80) return 1;
  size_t len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 ? 2 : 0;
  if (len == 0 || c > 0xF4 || len > n) return 0;
  for (size_t i = 1; i < len; i++)
    if ((s[i] & 0xC0) != 0x80) return 0;
  if (c == 0xE0 && s[1] < 0xA0) return 0;   /* overlong */
  if (c == 0xED && s[1] > 0x9F) return 0;   /* surrogate */
  if (c == 0xF0 && s[1] < 0x90) return 0;   /* overlong */
  if (c == 0xF4 && s[1] > 0x8F) return 0;   /* above U+10FFFF */
  return len;
}

bool ln_utf8_valid(const char *s, size_t len, size_t *bad) {
  const unsigned char *u = (const unsigned char *)s;
  for (size_t i = 0; i < len;) {
    size_t k = utf8_seq(u + i, len - i);
    if (k == 0) { if (bad) *bad = i; return false; }
    i += k;
  }
  return true;
}

static size_t put_utf8(char *out, uint32_t cp) {
  if (cp < 0x80) { out[0] = (char)cp; return 1; }
  if (cp < 0x800) {
    out[0] = (char)(0xC0 | (cp >> 6)); out[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    out[0] = (char)(0xE0 | (cp >> 12)); out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
  }
  out[0] = (char)(0xF0 | (cp >> 18)); out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
  out[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); out[3] = (char)(0x80 | (cp & 0x3F));
  return 4;
}

/* The 4 hex digits at p->s[at..], or -1. */
static long hex4(const parser *p, size_t at) {
  if (at + 4 > p->len) return -1;
  long v = 0;
  for (size_t i = at; i < at + 4; i++) {
    unsigned char c = p->s[i];
    int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
          : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
    if (d < 0) return -1;
    v = v * 16 + d;
  }
  return v;
}

/* One \uXXXX escape at p->pos (the backslash), joining a surrogate pair. */
static ln_status parse_u_escape(parser *p, uint32_t *cp) {
  size_t at = p->pos;
  long hi = hex4(p, at + 2);
  if (hi < 0) return fail(at, "invalid \\u escape (4 hex digits expected)");
  p->pos += 6;
  if (hi >= 0xDC00 && hi <= 0xDFFF)
    return fail(at, "lone low surrogate \\u%04lX in string", hi);
  if (hi < 0xD800 || hi > 0xDBFF) { *cp = (uint32_t)hi; return LN_OK; }
  long lo = p->pos + 1 < p->len && p->s[p->pos] == '\\' && p->s[p->pos + 1] == 'u'
          ? hex4(p, p->pos + 2) : -1;
  if (lo < 0xDC00 || lo > 0xDFFF)
    return fail(at, "high surrogate \\u%04lX not followed by a low surrogate", hi);
  p->pos += 6;
  *cp = 0x10000 + (((uint32_t)hi - 0xD800) << 10) + ((uint32_t)lo - 0xDC00);
  return LN_OK;
}

/* A string at p->pos (the opening quote) into a new NUL-terminated buffer.
** Decoding never lengthens the text, so the raw length bounds the size. */
static ln_status parse_string(parser *p, char **out, size_t *out_len) {
  size_t start = p->pos++, end = p->pos;
  while (end < p->len && p->s[end] != '"') end += p->s[end] == '\\' ? 2 : 1;
  if (end >= p->len) return fail(start, "unterminated string");
  char *buf = malloc(end - p->pos + 1), tmp[16];
  if (!buf) return nomem();
  size_t n = 0;
  ln_status st = LN_OK;
  while (p->pos < end && st == LN_OK) {
    unsigned char c = p->s[p->pos];
    if (c < 0x20) {
      st = fail(p->pos, "control character 0x%02X in string (it must be escaped)", c);
    } else if (c != '\\') {
      size_t k = utf8_seq(p->s + p->pos, end - p->pos);
      if (k == 0) st = fail(p->pos, "invalid UTF-8 in string");
      memcpy(buf + n, p->s + p->pos, k);
      n += k;
      p->pos += k;
    } else {
      static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
      unsigned char e = p->s[p->pos + 1];
      const char *hit = e ? strchr(from, e) : NULL;
      if (hit) {
        buf[n++] = to[hit - from];
        p->pos += 2;
      } else if (e == 'u') {
        uint32_t cp = 0;
        st = parse_u_escape(p, &cp);
        n += put_utf8(buf + n, cp);
      } else {
        st = fail(p->pos, "invalid escape \\ followed by %s", show(e, tmp));
      }
    }
  }
  if (st != LN_OK) { free(buf); return st; }
  buf[n] = '\0';
  p->pos = end + 1;
  *out = buf;
  *out_len = n;
  return LN_OK;
}

static bool is_digit(const parser *p, size_t i) {
  return i < p->len && p->s[i] >= '0' && p->s[i] <= '9';
}

/* A number: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
static ln_status parse_number(parser *p, ln_json *v) {
  size_t start = p->pos, i = p->pos;
  bool neg = i < p->len && p->s[i] == '-';
  if (neg) i++;
  if (!is_digit(p, i)) return fail(i, "invalid number: a digit must follow '-'");
  if (p->s[i] == '0' && is_digit(p, i + 1))
    return fail(i, "invalid number: leading zeros are not allowed");
  uint64_t mag = 0;
  bool overflow = false;
  for (; is_digit(p, i); i++) {
    unsigned d = p->s[i] - '0';
    if (mag > (UINT64_MAX - d) / 10) overflow = true;
    else mag = mag * 10 + d;
  }
  bool integral = true;
  if (i < p->len && p->s[i] == '.') {
    integral = false;
    if (!is_digit(p, ++i)) return fail(i, "invalid number: a digit must follow '.'");
    while (is_digit(p, i)) i++;
  }
  if (i < p->len && (p->s[i] == 'e' || p->s[i] == 'E')) {
    integral = false;
    if (++i < p->len && (p->s[i] == '+' || p->s[i] == '-')) i++;
    if (!is_digit(p, i)) return fail(i, "invalid number: a digit must follow the exponent");
    while (is_digit(p, i)) i++;
  }
  /* strtod needs a terminated copy: the text need not end after the token */
  char small[64], *tok = i - start < sizeof small ? small : malloc(i - start + 1);
  if (!tok) return nomem();
  memcpy(tok, p->s + start, i - start);
  tok[i - start] = '\0';
  v->type = LN_JSON_NUMBER;
  v->number = strtod(tok, NULL);
  if (tok != small) free(tok);
  uint64_t limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
  v->is_integer = integral && !overflow && mag <= limit;
  if (v->is_integer) v->integer = neg ? (int64_t)(0 - mag) : (int64_t)mag;
  p->pos = i;
  return LN_OK;
}

static ln_status parse_value(parser *p, ln_json *v);

/* items (of `size` bytes each) grown to hold n + 1 with the new slot
** zeroed, or NULL (items is then unchanged). */
static void *grow(void *items, size_t size, size_t n, size_t *cap) {
  if (n == *cap) {
    size_t nc = *cap ? 2 * *cap : 4;
    if (!(items = realloc(items, nc * size))) return NULL;
    *cap = nc;
  }
  memset((char *)items + n * size, 0, size);
  return items;
}

static ln_status parse_array(parser *p, ln_json *v) {
  size_t cap = 0;
  v->type = LN_JSON_ARRAY;
  p->pos++;
  skip_ws(p);
  if (p->pos < p->len && p->s[p->pos] == ']') { p->pos++; return LN_OK; }
  for (;;) {
    ln_json *items = grow(v->items, sizeof *items, v->n_items, &cap);
    if (!items) return nomem();
    v->items = items;
    ln_status st = parse_value(p, &items[v->n_items++]);
    if (st != LN_OK) return st;
    skip_ws(p);
    if (p->pos < p->len && p->s[p->pos] == ',') { p->pos++; continue; }
    if (p->pos < p->len && p->s[p->pos] == ']') { p->pos++; return LN_OK; }
    return p->pos < p->len ? fail(p->pos, "expected ',' or ']' in array")
                           : fail(p->pos, "unexpected end of input in array");
  }
}

static int member_cmp(const void *a, const void *b) {
  const ln_json_member *x = *(ln_json_member *const *)a, *y = *(ln_json_member *const *)b;
  size_t n = x->key_length < y->key_length ? x->key_length : y->key_length;
  int c = memcmp(x->key, y->key, n);
  if (c) return c;
  if (x->key_length != y->key_length) return x->key_length < y->key_length ? -1 : 1;
  return x < y ? -1 : x > y;   /* input order among equal keys */
}

static bool same_key(const ln_json_member *a, const ln_json_member *b) {
  return a->key_length == b->key_length && memcmp(a->key, b->key, a->key_length) == 0;
}

/* Reject repeated keys in O(n log n), naming the earliest repetition. */
static ln_status check_duplicates(const ln_json *v) {
  if (v->n_members < 2) return LN_OK;
  ln_json_member **order = malloc(v->n_members * sizeof *order);
  if (!order) return nomem();
  for (size_t i = 0; i < v->n_members; i++) order[i] = &v->members[i];
  qsort(order, v->n_members, sizeof *order, member_cmp);
  const ln_json_member *dup = NULL;
  for (size_t i = 1; i < v->n_members; i++)
    if (same_key(order[i - 1], order[i]) && (!dup || order[i] < dup)) dup = order[i];
  free(order);
  if (!dup) return LN_OK;
  return fail(dup->key_pos, "duplicate key \"%.200s\"", dup->key);
}

static ln_status parse_object(parser *p, ln_json *v) {
  size_t cap = 0;
  v->type = LN_JSON_OBJECT;
  p->pos++;
  skip_ws(p);
  if (p->pos < p->len && p->s[p->pos] == '}') { p->pos++; return LN_OK; }
  for (;;) {
    skip_ws(p);
    if (p->pos >= p->len) return fail(p->pos, "unexpected end of input in object");
    if (p->s[p->pos] != '"') return fail(p->pos, "expected a string key in object");
    ln_json_member *members = grow(v->members, sizeof *members, v->n_members, &cap);
    if (!members) return nomem();
    v->members = members;
    ln_json_member *m = &members[v->n_members++];
    m->key_pos = p->pos;
    ln_status st = parse_string(p, &m->key, &m->key_length);
    if (st != LN_OK) return st;
    skip_ws(p);
    if (p->pos >= p->len || p->s[p->pos] != ':')
      return fail(p->pos, "expected ':' after object key");
    p->pos++;
    if ((st = parse_value(p, &m->value)) != LN_OK) return st;
    skip_ws(p);
    if (p->pos < p->len && p->s[p->pos] == ',') { p->pos++; continue; }
    if (p->pos < p->len && p->s[p->pos] == '}') { p->pos++; return check_duplicates(v); }
    return p->pos < p->len ? fail(p->pos, "expected ',' or '}' in object")
                           : fail(p->pos, "unexpected end of input in object");
  }
}

static ln_status parse_literal(parser *p, ln_json *v, const char *word,
                               ln_json_type type, bool value) {
  size_t n = strlen(word);
  if (p->len - p->pos < n || memcmp(p->s + p->pos, word, n) != 0)
    return fail(p->pos, "invalid literal (expected %s)", word);
  p->pos += n;
  v->type = type;
  if (type == LN_JSON_BOOL) v->boolean = value;
  return LN_OK;
}

static ln_status parse_value(parser *p, ln_json *v) {
  char tmp[16];
  skip_ws(p);
  v->pos = p->pos;
  if (p->pos >= p->len) return fail(p->pos, "unexpected end of input (expected a value)");
  unsigned char c = p->s[p->pos];
  if (c == '[' || c == '{') {
    if (p->depth >= LN_JSON_MAX_DEPTH)
      return fail(p->pos, "nesting deeper than %d levels", LN_JSON_MAX_DEPTH);
    p->depth++;
    ln_status st = c == '[' ? parse_array(p, v) : parse_object(p, v);
    p->depth--;
    return st;
  }
  if (c == '"') {
    v->type = LN_JSON_STRING;
    return parse_string(p, &v->string, &v->length);
  }
  if (c == '-' || (c >= '0' && c <= '9')) return parse_number(p, v);
  if (c == 't') return parse_literal(p, v, "true", LN_JSON_BOOL, true);
  if (c == 'f') return parse_literal(p, v, "false", LN_JSON_BOOL, false);
  if (c == 'n') return parse_literal(p, v, "null", LN_JSON_NULL, false);
  return fail(p->pos, "unexpected %s (expected a value)", show(c, tmp));
}

ln_status ln_json_parse(const char *text, size_t len, ln_json **out) {
  parser p = { (const unsigned char *)text, len, 0, 0 };
  ln_json *root = calloc(1, sizeof *root);
  if (!root) return nomem();
  ln_status st = parse_value(&p, root);
  if (st == LN_OK) {
    skip_ws(&p);
    if (p.pos < len) st = fail(p.pos, "unexpected characters after the JSON value");
  }
  if (st != LN_OK) {
    ln_json_free(root);
    return st;
  }
  *out = root;
  return LN_OK;
}

const ln_json *ln_json_get(const ln_json *object, const char *key) {
  if (object->type != LN_JSON_OBJECT) return NULL;
  size_t n = strlen(key);
  for (size_t i = 0; i < object->n_members; i++) {
    const ln_json_member *m = &object->members[i];
    if (m->key_length == n && memcmp(m->key, key, n) == 0) return &m->value;
  }
  return NULL;
}

const char *ln_json_type_name(ln_json_type type) {
  static const char *const names[] = {
    [LN_JSON_NULL] = "null", [LN_JSON_BOOL] = "a boolean", [LN_JSON_NUMBER] = "a number",
    [LN_JSON_STRING] = "a string", [LN_JSON_ARRAY] = "an array",
    [LN_JSON_OBJECT] = "an object",
  };
  return names[type];
}

ln_status ln_json_write_string(FILE *f, const char *s, size_t len) {
  size_t bad;
  if (!ln_utf8_valid(s, len, &bad))
    return ln_error(LN_EINVAL, "string is not valid UTF-8 (at byte %zu)", bad);
  fputc('"', f);
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    const char *esc = c == '"' ? "\\\"" : c == '\\' ? "\\\\" : c == '\n' ? "\\n"
                    : c == '\r' ? "\\r" : c == '\t' ? "\\t" : c == '\b' ? "\\b"
                    : c == '\f' ? "\\f" : NULL;
    if (esc) fputs(esc, f);
    else if (c < 0x20) fprintf(f, "\\u%04X", c);
    else fputc(c, f);
  }
  fputc('"', f);
  return LN_OK;
}
