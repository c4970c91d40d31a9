/*
** test_safetensors.c -- the JSON reader, safetensors round trips of every
** dtype, the exact bytes of a small file, a table of bad inputs that must
** each give LN_EFORMAT with a message (and leak nothing), and saves that
** fail without touching the file already there.
*/
#define _GNU_SOURCE
#include <dirent.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "core/json.h"
#include "core/safetensors.h"

static char dir[64];   /* a fresh temporary directory */

static char *tmp_path(const char *name) {
  static char buf[4][128];
  static int k;
  k = (k + 1) % 4;
  snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
  return buf[k];
}

static uint8_t *read_all(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  *len = (size_t)ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t *b = malloc(*len + 1);
  *len = fread(b, 1, *len, f);
  fclose(f);
  return b;
}

/* Files in dir, to find leftover temporaries. */
static int count_files(void) {
  DIR *d = opendir(dir);
  int n = 0;
  for (struct dirent *e; d && (e = readdir(d));) n += e->d_name[0] != '.';
  if (d) closedir(d);
  return n;
}

/* ---- JSON ---- */

static void test_json(void) {
  ln_json *v = NULL;
  const char *text = " {\"s\": \"a\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00\\u0000z\","
                     " \"n\": [0, -12, 3.5e2, -0.25, 9223372036854775807,"
                     " -9223372036854775808, 9223372036854775808, 1E-2],"
                     " \"l\": [true, false, null, {}, []]} ";
  CHECK_OK(ln_json_parse(text, strlen(text), &v));
  if (!v) return;
  const ln_json *s = ln_json_get(v, "s"), *n = ln_json_get(v, "n"), *l = ln_json_get(v, "l");
  const char want[] = "a\"\\/\b\f\n\r\t\xc3\xa9\xf0\x9f\x98\x80\0z";
  CHECK(s && s->type == LN_JSON_STRING && s->length == sizeof want - 1 &&
        memcmp(s->string, want, sizeof want - 1) == 0);
  CHECK(n && n->n_items == 8);
  if (n && n->n_items == 8) {
    CHECK(n->items[0].is_integer && n->items[0].integer == 0);
    CHECK(n->items[1].is_integer && n->items[1].integer == -12);
    CHECK(!n->items[2].is_integer && n->items[2].number == 350.0);
    CHECK(n->items[3].number == -0.25);
    CHECK(n->items[4].is_integer && n->items[4].integer == INT64_MAX);
    CHECK(n->items[5].is_integer && n->items[5].integer == INT64_MIN);
    CHECK(!n->items[6].is_integer && n->items[6].number == 9223372036854775808.0);
    CHECK(n->items[7].number == 0.01);
  }
  CHECK(l && l->n_items == 5 && l->items[0].boolean && !l->items[1].boolean &&
        l->items[2].type == LN_JSON_NULL && l->items[3].type == LN_JSON_OBJECT &&
        l->items[4].n_items == 0);
  CHECK(ln_json_get(v, "missing") == NULL);
  ln_json_free(v);

  /* errors name the byte where they are found */
  static const struct { const char *text, *msg; } bad[] = {
    { "", "at byte 0: unexpected end of input" },
    { "{\"a\" 1}", "at byte 5: expected ':'" },
    { "[1, 2", "at byte 5: unexpected end of input in array" },
    { "[1 2]", "at byte 3: expected ',' or ']'" },
    { "{\"a\":1,}", "at byte 7: expected a string key" },
    { "{\"a\":1}x", "at byte 7: unexpected characters" },
    { "[01]", "at byte 1: invalid number: leading zeros" },
    { "[1.]", "at byte 3: invalid number" },
    { "[-]", "at byte 2: invalid number" },
    { "[1e]", "at byte 3: invalid number" },
    { "[tru]", "at byte 1: invalid literal" },
    { "[NaN]", "at byte 1: unexpected 'N'" },
    { "\"abc", "at byte 0: unterminated string" },
    { "\"a\nb\"", "at byte 2: control character 0x0A" },
    { "\"\\x\"", "at byte 1: invalid escape" },
    { "\"\\u12g4\"", "at byte 1: invalid \\u escape" },
    { "\"\\ud800\"", "at byte 1: high surrogate" },
    { "\"\\udc00\"", "at byte 1: lone low surrogate" },
    { "\"\xc0\xaf\"", "at byte 1: invalid UTF-8" },
    { "\"\xed\xa0\x80\"", "at byte 1: invalid UTF-8" },
    { "{\"a\":1,\"b\":2,\"a\":3}", "at byte 13: duplicate key \"a\"" },
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    v = NULL;
    ln_status st = ln_json_parse(bad[i].text, strlen(bad[i].text), &v);
    CHECK(st == LN_EFORMAT && v == NULL);
    if (!strstr(ln_last_error(), bad[i].msg)) {
      check_failed++;
      fprintf(stderr, "json %s: got '%s', expected '%s'\n", bad[i].text, ln_last_error(),
              bad[i].msg);
    }
  }
  /* nesting is limited, not a stack overflow */
  char deep[2 * LN_JSON_MAX_DEPTH + 3];
  memset(deep, '[', LN_JSON_MAX_DEPTH + 1);
  memset(deep + LN_JSON_MAX_DEPTH + 1, ']', LN_JSON_MAX_DEPTH + 1);
  CHECK(ln_json_parse(deep, 2 * LN_JSON_MAX_DEPTH + 2, &v) == LN_EFORMAT);
  CHECK_MSG("nesting deeper than 64");
  CHECK_OK(ln_json_parse(deep + 1, 2 * LN_JSON_MAX_DEPTH, &v));
  ln_json_free(v);

  /* the writer escapes what must be escaped and refuses bad UTF-8 */
  char *out = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&out, &len);
  CHECK_OK(ln_json_write_string(f, "q\"\\\n\x01\xc3\xa9", 7));
  CHECK(ln_json_write_string(f, "\xff", 1) == LN_EINVAL);
  fclose(f);
  CHECK(out && strcmp(out, "\"q\\\"\\\\\\n\\u0001\xc3\xa9\"") == 0);
  free(out);
}

/* ---- round trips ---- */

static ln_tensor *filled(const int64_t *sizes, int nd, ln_dtype dt, double scale) {
  ln_tensor *t = ln_empty(sizes, nd, dt, LN_DEVICE_CPU);
  char *p = ln_tensor_data(t);
  for (int64_t i = 0; i < ln_tensor_numel(t); i++)
    ln_store_double(p + i * (int64_t)ln_dtype_size(dt), dt,
                    dt == LN_BOOL ? i % 3 == 0 : (double)(i - 5) * scale);
  return t;
}

/* Same dtype, shape and values (in row-major order). */
static bool same_tensor(ln_tensor *a, ln_tensor *b) {
  if (ln_tensor_dtype(a) != ln_tensor_dtype(b) || !ln_tensor_same_shape(a, b)) return false;
  int nd = ln_tensor_dim(a);
  int64_t idx[LN_MAX_DIMS] = { 0 }, n = ln_tensor_numel(a);
  for (int64_t k = 0; k < n; k++) {
    double x = ln_tensor_get(a, idx), y = ln_tensor_get(b, idx);
    if (!(x == y || (x != x && y != y))) return false;
    for (int d = nd - 1; d >= 0 && ++idx[d] == ln_tensor_size(a, d); d--) idx[d] = 0;
  }
  return true;
}

static void test_round_trip(void) {
  int64_t live = ln_tensor_live_count();
  int64_t s23[2] = { 2, 3 }, s0[2] = { 0, 4 }, s5[1] = { 5 };
  ln_named_tensor in[10];
  int n = 0;
  for (int dt = 0; dt < LN_DTYPE_COUNT; dt++) {
    char name[32];
    snprintf(name, sizeof name, "w.%s", ln_dtype_name((ln_dtype)dt));
    in[n].name = strdup(name);
    in[n++].tensor = filled(s23, 2, (ln_dtype)dt, 0.5);
  }
  ln_tensor *base = filled(s23, 2, LN_F64, 1.25);
  in[n].name = strdup("transposed");               /* non-contiguous input */
  in[n++].tensor = ln_transpose(base, 0, 1);
  ln_tensor_release(base);
  in[n].name = strdup("scalar");                   /* 0-dim */
  in[n++].tensor = ln_scalar(-7.5, LN_F32);
  in[n].name = strdup("empty");                    /* no bytes */
  in[n++].tensor = ln_empty(s0, 2, LN_I64, LN_DEVICE_CPU);
  in[n].name = strdup("caf\xc3\xa9 \"q\"\n");      /* a name that needs escapes */
  in[n++].tensor = filled(s5, 1, LN_BF16, 3.0);
  ln_kv meta[3] = { { "format", "pt" }, { "", "empty key" },
                    { "k\"\\", "line\nbreak \xe2\x82\xac" } };
  const char *path = tmp_path("all.safetensors");
  CHECK_OK(ln_safetensors_save(path, in, n, meta, 3));

  ln_tensor_file f;
  CHECK_OK(ln_safetensors_load(path, &f));
  CHECK(f.n_tensors == n && f.n_metadata == 3);
  for (int i = 0; i < n && i < f.n_tensors; i++) {   /* file order is the save order */
    CHECK(strcmp(f.tensors[i].name, in[i].name) == 0);
    CHECK(same_tensor(f.tensors[i].tensor, in[i].tensor));
    CHECK(ln_tensor_is_contiguous(f.tensors[i].tensor, LN_CONTIGUOUS));
  }
  for (int i = 0; i < 3 && i < f.n_metadata; i++)
    CHECK(!strcmp(f.metadata[i].key, meta[i].key) && !strcmp(f.metadata[i].value, meta[i].value));
  ln_tensor_file_free(&f);
  CHECK(f.n_tensors == 0 && f.tensors == NULL);

  /* the header is padded to 8 bytes and every offset is consistent */
  size_t len;
  uint8_t *img = read_all(path, &len);
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; i--) hlen = hlen << 8 | img[i];
  CHECK(hlen % 8 == 0 && img[8] == '{' && img[8 + hlen - 1] != '\0');

  /* truncated at every byte: always LN_EFORMAT, never a crash or a leak */
  int all_format = 1, all_msg = 1;
  for (size_t k = 0; k < len; k++) {
    ln_status st = ln_safetensors_parse(img, k, &f);
    all_format &= st == LN_EFORMAT && f.n_tensors == 0;
    all_msg &= strstr(ln_last_error(), "invalid safetensors data: ") != NULL &&
               strstr(ln_last_error(), "truncated") != NULL;
  }
  CHECK(all_format);
  CHECK(all_msg);
  /* and through a file, the message names it */
  const char *cut = tmp_path("cut.safetensors");
  FILE *out = fopen(cut, "wb");
  fwrite(img, 1, len - 1, out);
  fclose(out);
  CHECK(ln_safetensors_load(cut, &f) == LN_EFORMAT);
  CHECK_MSG("cut.safetensors");
  CHECK_MSG("truncated");
  remove(cut);
  free(img);
  remove(path);

  for (int i = 0; i < n; i++) {
    free(in[i].name);
    ln_tensor_release(in[i].tensor);
  }
  CHECK(ln_tensor_live_count() == live);
}

/* ---- the exact bytes of a small file ---- */

#define A_JSON "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}"
static const uint8_t a_image[] =
  "\x38\0\0\0\0\0\0\0"      /* header length 56: 54 bytes of JSON + 2 spaces */
  A_JSON "  "
  "\x00\x00\x80\x3f"        /* 1.0f */
  "\x00\x00\x00\x40";       /* 2.0f */

static void test_byte_image(void) {
  size_t n = sizeof a_image - 1;
  CHECK(strlen(A_JSON) == 54 && n == 8 + 56 + 8);
  ln_tensor_file f;
  CHECK_OK(ln_safetensors_parse(a_image, n, &f));
  CHECK(f.n_tensors == 1 && f.n_metadata == 0);
  if (f.n_tensors == 1) {
    ln_tensor *t = f.tensors[0].tensor;
    int64_t i0 = 0, i1 = 1;
    CHECK(!strcmp(f.tensors[0].name, "a") && ln_tensor_dtype(t) == LN_F32 &&
          ln_tensor_dim(t) == 1 && ln_tensor_size(t, 0) == 2);
    CHECK(ln_tensor_get(t, &i0) == 1.0 && ln_tensor_get(t, &i1) == 2.0);
  }
  /* saving the same tensor writes these very bytes */
  const char *path = tmp_path("a.safetensors");
  CHECK_OK(ln_safetensors_save(path, f.tensors, f.n_tensors, NULL, 0));
  size_t len;
  uint8_t *img = read_all(path, &len);
  CHECK(img && len == n && memcmp(img, a_image, n) == 0);
  free(img);
  remove(path);
  ln_tensor_file_free(&f);

  /* another writer's layout: metadata first, spaces, fields in another
  ** order, header order unlike data order; tensors come out by offset */
  const char json[] =
    "{ \"__metadata__\" : {\"format\": \"pt\"},\n"
    "  \"second\": {\"data_offsets\": [8, 9], \"shape\": [], \"dtype\": \"BOOL\"},\n"
    "  \"none\": {\"dtype\": \"F16\", \"shape\": [3, 0], \"data_offsets\": [8, 8]},\n"
    "  \"first\": {\"shape\": [1, 2], \"dtype\": \"BF16\", \"data_offsets\": [4, 8]},\n"
    "  \"zeroth\": {\"shape\": [2], \"dtype\": \"F16\", \"data_offsets\": [0, 4]}}";
  size_t jn = sizeof json - 1;
  uint8_t *buf = calloc(1, 8 + jn + 9);
  for (int i = 0; i < 8; i++) buf[i] = (uint8_t)((uint64_t)jn >> (8 * i));
  memcpy(buf + 8, json, jn);
  const uint8_t data[9] = { 0x00, 0x3c, 0x00, 0xc0, 0x80, 0x3f, 0x00, 0x40, 0x01 };
  memcpy(buf + 8 + jn, data, 9);   /* f16 1, -2; bf16 1, 2; true */
  CHECK_OK(ln_safetensors_parse(buf, 8 + jn + 9, &f));
  const char *order[] = { "zeroth", "first", "none", "second" };
  CHECK(f.n_tensors == 4 && f.n_metadata == 1);
  for (int i = 0; i < f.n_tensors && i < 4; i++) CHECK(!strcmp(f.tensors[i].name, order[i]));
  if (f.n_tensors == 4) {
    int64_t i1 = 1, z[2] = { 0, 1 };
    CHECK(ln_tensor_get(f.tensors[0].tensor, &i1) == -2.0);
    CHECK(ln_tensor_get(f.tensors[1].tensor, z) == 2.0);
    CHECK(ln_tensor_numel(f.tensors[2].tensor) == 0 && ln_tensor_dim(f.tensors[2].tensor) == 2);
    CHECK(ln_tensor_dim(f.tensors[3].tensor) == 0 &&
          ln_tensor_get(f.tensors[3].tensor, NULL) == 1.0);
  }
  ln_tensor_file_free(&f);
  free(buf);
}

/* ---- bad inputs ---- */

/* An image with this header (its length written as given) and data_len
** zero bytes of data. */
static uint8_t *image(const char *json, uint64_t hlen, size_t data_len, size_t *len) {
  size_t jn = strlen(json);
  *len = 8 + jn + data_len;
  uint8_t *b = calloc(1, *len);
  for (int i = 0; i < 8; i++) b[i] = (uint8_t)(hlen >> (8 * i));
  memcpy(b + 8, json, jn);
  return b;
}

#define T(name, spec) "\"" name "\":{" spec "}"
#define F32(shape, b, e) "\"dtype\":\"F32\",\"shape\":" shape ",\"data_offsets\":[" b "," e "]"

static void test_bad_inputs(void) {
  static const struct { const char *json; size_t data; const char *msg; } bad[] = {
    { "{" T("a", F32("[2]", "0", "8")) ",}", 8, "invalid JSON header: at byte" },
    { "[]", 0, "the header must be a JSON object, got an array" },
    { "{\"a\":[]}", 0, "tensor 'a': expected an object, got an array" },
    { "{" T("a", "\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[0,1]") "}", 1,
      "tensor 'a': unknown dtype \"I8\"" },
    { "{" T("a", "\"dtype\":32,\"shape\":[1],\"data_offsets\":[0,4]") "}", 4,
      "dtype must be a string, got a number" },
    { "{" T("a", F32("[-2]", "0", "8")) "}", 8, "negative dimension -2" },
    { "{" T("a", F32("[1.5]", "0", "4")) "}", 4, "shape must hold non-negative integers" },
    { "{" T("a", F32("2", "0", "8")) "}", 8, "shape must be an array, got a number" },
    { "{" T("a", F32("[1,1,1,1,1,1,1,1,1]", "0", "4")) "}", 4, "9 dimensions" },
    { "{" T("a", F32("[4294967296,4294967296]", "0", "4")) "}", 4, "shape is too large" },
    { "{" T("a", F32("[3]", "0", "8")) "}", 8,
      "tensor 'a': shape needs 12 bytes of F32 but data_offsets [0, 8] hold 8" },
    { "{" T("a", F32("[2]", "0", "8")) "}", 4, "go past the end of the data (4 bytes)" },
    { "{" T("a", F32("[0]", "8", "0")) "}", 8, "end before they begin" },
    { "{" T("a", F32("[2]", "-8", "0")) "}", 8, "data_offsets must be [begin, end]" },
    { "{" T("a", "\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]") "}", 8,
      "data_offsets must be [begin, end]" },
    { "{" T("a", F32("[2]", "0", "8")) "," T("b", F32("[2]", "4", "12")) "}", 12,
      "tensors 'a' [0, 8] and 'b' [4, 12] overlap" },
    { "{" T("a", F32("[2]", "0", "8")) "," T("b", F32("[2]", "0", "8")) "}", 8, "overlap" },
    { "{" T("a", F32("[1]", "0", "4")) "," T("b", F32("[1]", "8", "12")) "}", 12,
      "bytes [4, 8) of the data belong to no tensor (a hole before 'b')" },
    { "{" T("a", F32("[1]", "4", "8")) "}", 8, "bytes [0, 4)" },
    { "{" T("a", F32("[1]", "0", "4")) "}", 8, "the last 4 bytes of the data belong to no tensor" },
    { "{}", 3, "the last 3 bytes" },
    { "{" T("a", F32("[1]", "0", "4")) "," T("a", F32("[1]", "4", "8")) "}", 8,
      "duplicate key \"a\"" },
    { "{" T("a", "\"dtype\":\"F32\",\"shape\":[1]") "}", 4, "tensor 'a': missing \"data_offsets\"" },
    { "{" T("a", F32("[1]", "0", "4") ",\"x\":1") "}", 4, "tensor 'a': unknown field \"x\"" },
    { "{\"__metadata__\":{\"k\":1}}", 0, "\"__metadata__\" value of \"k\" must be a string" },
    { "{\"__metadata__\":[]}", 0, "\"__metadata__\" must be an object" },
    { "{\"__metadata__\":{\"k\":\"a\\u0000b\"}}", 0, "contains a NUL character" },
    { "{\"a\\u0000\":{}}", 0, "tensor name \"a...\" contains a NUL character" },
    { "{\"\xff\":{}}", 0, "invalid UTF-8" },
    { "{\"__metadata__\":{\"k\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
      "[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}}",
      0, "nesting deeper" },
    { "", 0, "unexpected end of input" },
  };
  int64_t live = ln_tensor_live_count();
  ln_tensor_file f;
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    size_t len;
    uint8_t *b = image(bad[i].json, strlen(bad[i].json), bad[i].data, &len);
    ln_status st = ln_safetensors_parse(b, len, &f);
    CHECK(st == LN_EFORMAT && f.n_tensors == 0 && f.tensors == NULL);
    if (!strstr(ln_last_error(), bad[i].msg) ||
        !strstr(ln_last_error(), "invalid safetensors data: ")) {
      check_failed++;
      fprintf(stderr, "case %zu: got '%s', expected '%s'\n", i, ln_last_error(), bad[i].msg);
    }
    free(b);
  }
  /* header lengths that do not fit */
  size_t len;
  uint8_t *b = image("{}", 100000001, 0, &len);
  CHECK(ln_safetensors_parse(b, len, &f) == LN_EFORMAT);
  CHECK_MSG("header length 100000001 is over the limit");
  free(b);
  b = image("{}", 3, 0, &len);
  CHECK(ln_safetensors_parse(b, len, &f) == LN_EFORMAT);
  CHECK_MSG("header length 3 is larger than the 2 bytes that follow: truncated");
  free(b);
  b = image("{}", UINT64_MAX, 0, &len);
  CHECK(ln_safetensors_parse(b, len, &f) == LN_EFORMAT);
  free(b);
  CHECK(ln_safetensors_parse(a_image, 5, &f) == LN_EFORMAT);
  CHECK_MSG("shorter than the 8-byte header length: truncated");
  CHECK(ln_tensor_live_count() == live);
}

/* ---- files and failures ---- */

static void test_io_errors(void) {
  ln_tensor_file f;
  const char *missing = tmp_path("missing.safetensors");
  CHECK(ln_safetensors_load(missing, &f) == LN_EIO);
  CHECK_MSG("missing.safetensors");
  CHECK_MSG("No such file");
  CHECK(ln_safetensors_load(dir, &f) == LN_EIO);
  CHECK_MSG("Is a directory");

  /* a good old file, then saves that fail must leave it as it was */
  int64_t size[1] = { 1 << 16 };
  ln_tensor *small = ln_zeros(size, 1, LN_F32, LN_DEVICE_CPU);
  ln_named_tensor t = { "x", small };
  const char *path = tmp_path("keep.safetensors");
  CHECK_OK(ln_safetensors_save(path, &t, 1, NULL, 0));
  size_t old_len, len;
  uint8_t *old = read_all(path, &old_len), *now;
  int files = count_files();
  ln_tensor *big = ln_ones(size, 1, LN_F64, LN_DEVICE_CPU);
  ln_named_tensor tb = { "x", big };

  /* a write that fails half way (the file size limit stands for a full disk) */
  struct rlimit lim, small_lim;
  getrlimit(RLIMIT_FSIZE, &lim);
  small_lim = lim;
  small_lim.rlim_cur = 4096;
  signal(SIGXFSZ, SIG_IGN);
  CHECK(setrlimit(RLIMIT_FSIZE, &small_lim) == 0);
  CHECK(ln_safetensors_save(path, &tb, 1, NULL, 0) == LN_EIO);
  CHECK_MSG("keep.safetensors");
  CHECK_MSG("File too large");
  setrlimit(RLIMIT_FSIZE, &lim);
  now = read_all(path, &len);
  CHECK(now && len == old_len && memcmp(now, old, len) == 0);
  CHECK(count_files() == files);
  free(now);

  /* bad arguments fail before anything is written */
  ln_named_tensor twice[2] = { { "x", big }, { "x", small } };
  CHECK(ln_safetensors_save(path, twice, 2, NULL, 0) == LN_EINVAL);
  CHECK_MSG("duplicate tensor name 'x'");
  ln_named_tensor reserved = { "__metadata__", big };
  CHECK(ln_safetensors_save(path, &reserved, 1, NULL, 0) == LN_EINVAL);
  ln_named_tensor badname = { "\xff", big };
  CHECK(ln_safetensors_save(path, &badname, 1, NULL, 0) == LN_EINVAL);
  CHECK_MSG("not valid UTF-8");
  ln_kv meta[2] = { { "k", "v" }, { "k", "w" } };
  CHECK(ln_safetensors_save(path, &tb, 1, meta, 2) == LN_EINVAL);
  CHECK_MSG("duplicate metadata key 'k'");
  now = read_all(path, &len);
  CHECK(now && len == old_len && memcmp(now, old, len) == 0);
  CHECK(count_files() == files);
  free(now);

  /* the target is a directory: the rename fails, the directory stays */
  const char *sub = tmp_path("sub");
  mkdir(sub, 0755);
  CHECK(ln_safetensors_save(sub, &tb, 1, NULL, 0) == LN_EIO);
  CHECK_MSG("sub");
  struct stat sb;
  CHECK(stat(sub, &sb) == 0 && S_ISDIR(sb.st_mode));
  CHECK(count_files() == files + 1);
  rmdir(sub);

  /* the directory is not writable (root may write anywhere: skip) */
  if (geteuid() != 0) {
    chmod(dir, 0555);
    CHECK(ln_safetensors_save(path, &tb, 1, NULL, 0) == LN_EIO);
    CHECK_MSG("Permission denied");
    chmod(dir, 0755);
    now = read_all(path, &len);
    CHECK(now && len == old_len && memcmp(now, old, len) == 0);
    free(now);
  }
  /* and a save that succeeds replaces the file */
  CHECK_OK(ln_safetensors_save(path, &tb, 1, NULL, 0));
  CHECK_OK(ln_safetensors_load(path, &f));
  CHECK(f.n_tensors == 1 && same_tensor(f.tensors[0].tensor, big));
  ln_tensor_file_free(&f);
  CHECK(count_files() == files);
  remove(path);
  free(old);
  ln_tensor_release(small);
  ln_tensor_release(big);
}

int main(void) {
  ln_init();
  int64_t live = ln_tensor_live_count();
  snprintf(dir, sizeof dir, "/tmp/lunet_st_XXXXXX");
  if (!mkdtemp(dir)) { perror("mkdtemp"); return 1; }
  test_json();
  test_round_trip();
  test_byte_image();
  test_bad_inputs();
  test_io_errors();
  rmdir(dir);
  CHECK(ln_tensor_live_count() == live);
  return check_done("test_safetensors");
}
