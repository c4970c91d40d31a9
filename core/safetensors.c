/*
** safetensors.c -- the safetensors file format
** (https://github.com/huggingface/safetensors): u64 little-endian header
** length N, N bytes of JSON header (padded with spaces so that the data
** starts 8-aligned), then the data buffer, which the tensors must cover
** exactly: no overlaps, no holes, no trailing bytes.
**
** Loading reads the whole file with one fread and copies each tensor out
** of that image; everything in the header is checked before any tensor
** is made. Saving writes a temporary file next to the target, syncs it and
** renames it over the target, so a failed save leaves the old file alone.
** The target is the file at the end of path's symbolic links (the links
** stay); an existing target must be a regular file the caller may write,
** and its replacement keeps its permission bits (and, where the caller may
** set them, its owner and group).
** The host is assumed little-endian, like the format.
*/
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "autograd.h"
#include "json.h"
#include "safetensors.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host"
#endif

#define ST_MAX_HEADER 100000000u   /* bytes, as the reference implementation */

static const char *const st_codes[LN_DTYPE_COUNT] = {
  [LN_F32] = "F32", [LN_F64] = "F64", [LN_F16] = "F16", [LN_BF16] = "BF16",
  [LN_I64] = "I64", [LN_BOOL] = "BOOL",
};
_Static_assert(LN_DTYPE_COUNT == 6, "give every dtype its safetensors code");

void ln_tensor_file_free(ln_tensor_file *f) {
  for (int i = 0; i < f->n_tensors; i++) {
    free(f->tensors[i].name);
    ln_tensor_release(f->tensors[i].tensor);
  }
  for (int i = 0; i < f->n_metadata; i++) {
    free(f->metadata[i].key);
    free(f->metadata[i].value);
  }
  free(f->tensors);
  free(f->metadata);
  memset(f, 0, sizeof *f);
}

/* Put a printf-style prefix before the current message, keeping its code. */
static ln_status wrap_error(const char *fmt, ...)
#if defined(__GNUC__)
  __attribute__((format(printf, 1, 2)))
#endif
  ;

static ln_status wrap_error(const char *fmt, ...) {
  char msg[1024], prefix[512];
  va_list ap;
  snprintf(msg, sizeof msg, "%s", ln_last_error());
  va_start(ap, fmt);
  vsnprintf(prefix, sizeof prefix, fmt, ap);
  va_end(ap);
  return ln_error(ln_last_status(), "%s%s", prefix, msg);
}

static char *dup_string(const char *s, size_t n) {
  char *d = malloc(n + 1);
  if (d) { memcpy(d, s, n); d[n] = '\0'; }
  return d;
}

/* ---- reading ---- */

/* A tensor entry of the header, checked. */
typedef struct st_entry {
  const ln_json_member *m;
  ln_dtype dtype;
  int ndim;
  int64_t sizes[LN_MAX_DIMS];
  uint64_t begin, end;
} st_entry;

#define BAD(...) ln_error(LN_EFORMAT, __VA_ARGS__)

/* A string that C can hold: no NUL inside. */
static ln_status check_c_string(const char *what, const char *s, size_t n) {
  if (strlen(s) == n) return LN_OK;
  return BAD("%s \"%s...\" contains a NUL character", what, s);
}

static ln_status read_metadata(const ln_json *v, ln_tensor_file *out) {
  if (v->type != LN_JSON_OBJECT)
    return BAD("\"__metadata__\" must be an object of strings, got %s",
               ln_json_type_name(v->type));
  if (v->n_members == 0) return LN_OK;
  out->metadata = calloc(v->n_members, sizeof *out->metadata);
  if (!out->metadata) return ln_error(LN_ENOMEM, "out of memory");
  for (size_t i = 0; i < v->n_members; i++) {
    const ln_json_member *m = &v->members[i];
    ln_status st;
    if (m->value.type != LN_JSON_STRING)
      return BAD("\"__metadata__\" value of \"%s\" must be a string, got %s", m->key,
                 ln_json_type_name(m->value.type));
    if ((st = check_c_string("metadata key", m->key, m->key_length)) ||
        (st = check_c_string("metadata value", m->value.string, m->value.length)))
      return st;
    ln_kv *kv = &out->metadata[out->n_metadata++];
    kv->key = dup_string(m->key, m->key_length);
    kv->value = dup_string(m->value.string, m->value.length);
    if (!kv->key || !kv->value) return ln_error(LN_ENOMEM, "out of memory");
  }
  return LN_OK;
}

/* A non-negative integer, or -1. */
static int64_t natural(const ln_json *v) {
  return v->type == LN_JSON_NUMBER && v->is_integer && v->integer >= 0 ? v->integer : -1;
}

/* Check one tensor entry against the data buffer of data_len bytes. */
static ln_status read_entry(const ln_json_member *m, uint64_t data_len, st_entry *e) {
  const char *name = m->key;
  const ln_json *v = &m->value, *dtype = NULL, *shape = NULL, *offsets = NULL;
  ln_status st = check_c_string("tensor name", m->key, m->key_length);
  if (st != LN_OK) return st;
  if (v->type != LN_JSON_OBJECT)
    return BAD("tensor '%s': expected an object, got %s", name, ln_json_type_name(v->type));
  for (size_t i = 0; i < v->n_members; i++) {
    const char *k = v->members[i].key;
    const ln_json **slot = !strcmp(k, "dtype") ? &dtype : !strcmp(k, "shape") ? &shape
                         : !strcmp(k, "data_offsets") ? &offsets : NULL;
    if (!slot) return BAD("tensor '%s': unknown field \"%s\"", name, k);
    *slot = &v->members[i].value;
  }
  if (!dtype || !shape || !offsets)
    return BAD("tensor '%s': missing \"%s\"", name,
               !dtype ? "dtype" : !shape ? "shape" : "data_offsets");

  if (dtype->type != LN_JSON_STRING)
    return BAD("tensor '%s': dtype must be a string, got %s", name,
               ln_json_type_name(dtype->type));
  int t = 0;
  while (t < LN_DTYPE_COUNT && strcmp(dtype->string, st_codes[t]) != 0) t++;
  if (t == LN_DTYPE_COUNT)
    return BAD("tensor '%s': unknown dtype \"%.32s\" (lunet reads F32, F64, F16, BF16, "
               "I64 and BOOL)", name, dtype->string);
  e->dtype = (ln_dtype)t;

  if (shape->type != LN_JSON_ARRAY)
    return BAD("tensor '%s': shape must be an array, got %s", name,
               ln_json_type_name(shape->type));
  if (shape->n_items > LN_MAX_DIMS)
    return BAD("tensor '%s': shape has %zu dimensions, more than the %d lunet supports",
               name, shape->n_items, LN_MAX_DIMS);
  e->ndim = (int)shape->n_items;
  bool empty = false;
  for (int d = 0; d < e->ndim; d++) {
    const ln_json *s = &shape->items[d];
    if (s->type == LN_JSON_NUMBER && s->is_integer && s->integer < 0)
      return BAD("tensor '%s': negative dimension %lld in shape", name,
                 (long long)s->integer);
    if ((e->sizes[d] = natural(s)) < 0)
      return BAD("tensor '%s': shape must hold non-negative integers", name);
    empty |= e->sizes[d] == 0;
  }
  /* numel * element size must fit in int64 */
  uint64_t numel = empty ? 0 : 1, limit = (uint64_t)INT64_MAX / ln_dtype_size(e->dtype);
  for (int d = 0; d < e->ndim && !empty; d++) {
    if (numel > limit / (uint64_t)e->sizes[d])
      return BAD("tensor '%s': shape is too large", name);
    numel *= (uint64_t)e->sizes[d];
  }

  int64_t b = -1, x = -1;
  if (offsets->type == LN_JSON_ARRAY && offsets->n_items == 2) {
    b = natural(&offsets->items[0]);
    x = natural(&offsets->items[1]);
  }
  if (b < 0 || x < 0)
    return BAD("tensor '%s': data_offsets must be [begin, end] with non-negative "
               "integers", name);
  e->begin = (uint64_t)b;
  e->end = (uint64_t)x;
  if (e->begin > e->end)
    return BAD("tensor '%s': data_offsets [%llu, %llu] end before they begin", name,
               (unsigned long long)e->begin, (unsigned long long)e->end);
  if (e->end > data_len)
    return BAD("tensor '%s': data_offsets [%llu, %llu] go past the end of the data "
               "(%llu bytes): truncated", name, (unsigned long long)e->begin,
               (unsigned long long)e->end, (unsigned long long)data_len);
  uint64_t need = numel * ln_dtype_size(e->dtype);
  if (e->end - e->begin != need)
    return BAD("tensor '%s': shape needs %llu bytes of %s but data_offsets [%llu, %llu] "
               "hold %llu", name, (unsigned long long)need, st_codes[e->dtype],
               (unsigned long long)e->begin, (unsigned long long)e->end,
               (unsigned long long)(e->end - e->begin));
  e->m = m;
  return LN_OK;
}

static int entry_cmp(const void *a, const void *b) {
  const st_entry *x = a, *y = b;
  if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
  if (x->end != y->end) return x->end < y->end ? -1 : 1;
  return x->m < y->m ? -1 : x->m > y->m;   /* header order among empty tensors */
}

/* The sorted entries must tile [0, data_len) exactly. */
static ln_status check_coverage(const st_entry *e, size_t n, uint64_t data_len) {
  uint64_t at = 0;
  for (size_t i = 0; i < n; i++) {
    if (e[i].begin < at)
      return BAD("tensors '%s' [%llu, %llu] and '%s' [%llu, %llu] overlap",
                 e[i - 1].m->key, (unsigned long long)e[i - 1].begin,
                 (unsigned long long)e[i - 1].end, e[i].m->key,
                 (unsigned long long)e[i].begin, (unsigned long long)e[i].end);
    if (e[i].begin > at)
      return BAD("bytes [%llu, %llu) of the data belong to no tensor (a hole before '%s')",
                 (unsigned long long)at, (unsigned long long)e[i].begin, e[i].m->key);
    at = e[i].end;
  }
  if (at != data_len)
    return BAD("the last %llu bytes of the data belong to no tensor",
               (unsigned long long)(data_len - at));
  return LN_OK;
}

/* Parse an image; the message has no prefix. */
static ln_status parse_image(const uint8_t *buf, size_t len, ln_tensor_file *out) {
  ln_json *root = NULL;
  st_entry *entries = NULL;
  ln_status st = LN_OK;
  memset(out, 0, sizeof *out);
  if (len < 8)
    return BAD("%zu bytes is shorter than the 8-byte header length: truncated", len);
  uint64_t n = 0;
  for (int i = 7; i >= 0; i--) n = n << 8 | buf[i];
  if (n > ST_MAX_HEADER)
    return BAD("header length %llu is over the limit of %u bytes",
               (unsigned long long)n, ST_MAX_HEADER);
  if (n > len - 8)
    return BAD("header length %llu is larger than the %zu bytes that follow: truncated",
               (unsigned long long)n, len - 8);
  if ((st = ln_json_parse((const char *)buf + 8, (size_t)n, &root)) != LN_OK) {
    st = wrap_error("invalid JSON header: ");
    goto fail;
  }
  if (root->type != LN_JSON_OBJECT) {
    st = BAD("the header must be a JSON object, got %s", ln_json_type_name(root->type));
    goto fail;
  }
  uint64_t data_len = len - 8 - n;
  size_t ne = 0;
  entries = calloc(root->n_members ? root->n_members : 1, sizeof *entries);
  if (!entries) { st = ln_error(LN_ENOMEM, "out of memory"); goto fail; }
  for (size_t i = 0; i < root->n_members; i++) {
    const ln_json_member *m = &root->members[i];
    st = strcmp(m->key, "__metadata__") == 0 ? read_metadata(&m->value, out)
                                             : read_entry(m, data_len, &entries[ne++]);
    if (st != LN_OK) goto fail;
  }
  qsort(entries, ne, sizeof *entries, entry_cmp);
  if ((st = check_coverage(entries, ne, data_len)) != LN_OK) goto fail;

  out->tensors = calloc(ne ? ne : 1, sizeof *out->tensors);
  if (!out->tensors) { st = ln_error(LN_ENOMEM, "out of memory"); goto fail; }
  const uint8_t *data = buf + 8 + n;
  for (size_t i = 0; i < ne; i++) {
    const st_entry *e = &entries[i];
    ln_named_tensor *nt = &out->tensors[out->n_tensors++];
    nt->name = dup_string(e->m->key, e->m->key_length);
    nt->tensor = ln_empty(e->sizes, e->ndim, e->dtype, LN_DEVICE_CPU);
    if (!nt->name || !nt->tensor) {
      st = nt->name ? ln_last_status() : ln_error(LN_ENOMEM, "out of memory");
      goto fail;
    }
    if (e->end > e->begin) memcpy(ln_tensor_data(nt->tensor), data + e->begin, e->end - e->begin);
  }
  free(entries);
  ln_json_free(root);
  return LN_OK;
fail:
  free(entries);
  ln_json_free(root);
  ln_tensor_file_free(out);
  return st;
}

ln_status ln_safetensors_parse(const uint8_t *buf, size_t len, ln_tensor_file *out) {
  ln_status st = parse_image(buf, len, out);
  return st == LN_OK ? st : wrap_error("invalid safetensors data: ");
}

ln_status ln_safetensors_load(const char *path, ln_tensor_file *out) {
  memset(out, 0, sizeof *out);
  uint8_t *buf = NULL;
  struct stat sb;
  FILE *f = fopen(path, "rb");
  if (!f) return ln_error(LN_EIO, "cannot open '%s': %s", path, strerror(errno));
  int err = fstat(fileno(f), &sb) != 0 ? errno : S_ISDIR(sb.st_mode) ? EISDIR : 0;
  if (err) {
    fclose(f);
    return ln_error(LN_EIO, "cannot read '%s': %s", path, strerror(err));
  }
  size_t len = (size_t)sb.st_size;
  if (!(buf = malloc(len ? len : 1))) {
    fclose(f);
    return ln_error(LN_ENOMEM, "out of memory reading '%s' (%zu bytes)", path, len);
  }
  size_t got = fread(buf, 1, len, f);
  err = errno;
  bool failed = ferror(f);
  fclose(f);
  ln_status st;
  if (failed) st = ln_error(LN_EIO, "cannot read '%s': %s", path, strerror(err));
  else if (got != len)
    st = ln_error(LN_EIO, "cannot read '%s': it shrank from %zu to %zu bytes while reading",
                  path, len, got);
  else if ((st = parse_image(buf, len, out)) != LN_OK)
    st = wrap_error("invalid safetensors file '%s': ", path);
  free(buf);
  return st;
}

/* ---- writing ---- */

static int name_cmp(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The first name that repeats in names[0..n) (sorted in place), or NULL. */
static const char *repeated(const char **names, int n) {
  qsort(names, (size_t)n, sizeof *names, name_cmp);
  for (int i = 1; i < n; i++)
    if (strcmp(names[i - 1], names[i]) == 0) return names[i];
  return NULL;
}

/* Check the arguments of a save: names present, unique, not reserved. */
static ln_status check_save_args(const ln_named_tensor *tensors, int n,
                                 const ln_kv *metadata, int n_metadata) {
  if (n < 0 || n_metadata < 0 || (n && !tensors) || (n_metadata && !metadata))
    return ln_error(LN_EINVAL, "safetensors save: bad tensor or metadata count");
  int most = n > n_metadata ? n : n_metadata;
  const char **names = malloc((size_t)(most ? most : 1) * sizeof *names);
  if (!names) return ln_error(LN_ENOMEM, "out of memory");
  ln_status st = LN_OK;
  for (int i = 0; i < n && st == LN_OK; i++) {
    names[i] = tensors[i].name;
    if (!tensors[i].name || !tensors[i].tensor)
      st = ln_error(LN_EINVAL, "safetensors save: tensor %d has no %s", i,
                    tensors[i].name ? "tensor" : "name");
    else if (strcmp(tensors[i].name, "__metadata__") == 0)
      st = ln_error(LN_EINVAL, "safetensors save: \"__metadata__\" is reserved and "
                    "cannot name a tensor");
  }
  const char *dup;
  if (st == LN_OK && (dup = repeated(names, n)))
    st = ln_error(LN_EINVAL, "safetensors save: duplicate tensor name '%s'", dup);
  for (int i = 0; i < n_metadata && st == LN_OK; i++) {
    names[i] = metadata[i].key;
    if (!metadata[i].key || !metadata[i].value)
      st = ln_error(LN_EINVAL, "safetensors save: metadata entry %d has no %s", i,
                    metadata[i].key ? "value" : "key");
  }
  if (st == LN_OK && (dup = repeated(names, n_metadata)))
    st = ln_error(LN_EINVAL, "safetensors save: duplicate metadata key '%s'", dup);
  free(names);
  return st;
}

static ln_status write_json_string(FILE *f, const char *what, const char *s) {
  if (ln_json_write_string(f, s, strlen(s)) == LN_OK) return LN_OK;
  return wrap_error("safetensors save: %s: ", what);
}

/* The JSON header for tensors whose CPU contiguous data is cpu[i],
** unpadded, into a malloc'd buffer. */
static ln_status build_header(const ln_named_tensor *tensors, ln_tensor *const *cpu,
                              int n, const ln_kv *metadata, int n_metadata,
                              char **text, size_t *size) {
  FILE *f = open_memstream(text, size);
  if (!f) return ln_error(LN_ENOMEM, "out of memory");
  ln_status st = LN_OK;
  fputc('{', f);
  if (n_metadata > 0) {
    fputs("\"__metadata__\":{", f);
    for (int i = 0; i < n_metadata && st == LN_OK; i++) {
      if (i) fputc(',', f);
      if ((st = write_json_string(f, "metadata key", metadata[i].key)) == LN_OK) {
        fputc(':', f);
        st = write_json_string(f, "metadata value", metadata[i].value);
      }
    }
    fputc('}', f);
  }
  uint64_t at = 0;
  for (int i = 0; i < n && st == LN_OK; i++) {
    if (i || n_metadata > 0) fputc(',', f);
    if ((st = write_json_string(f, "tensor name", tensors[i].name)) != LN_OK) break;
    fprintf(f, ":{\"dtype\":\"%s\",\"shape\":[", st_codes[ln_tensor_dtype(cpu[i])]);
    for (int d = 0; d < ln_tensor_dim(cpu[i]); d++)
      fprintf(f, "%s%lld", d ? "," : "", (long long)ln_tensor_size(cpu[i], d));
    uint64_t nbytes = (uint64_t)ln_tensor_numel(cpu[i]) * ln_dtype_size(ln_tensor_dtype(cpu[i]));
    fprintf(f, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)at,
            (unsigned long long)(at + nbytes));
    at += nbytes;
  }
  fputc('}', f);
  if (fclose(f) != 0 && st == LN_OK) st = ln_error(LN_ENOMEM, "out of memory");
  if (st != LN_OK) { free(*text); *text = NULL; }
  return st;
}

/* Write the whole file to the open stream f. */
static ln_status write_file(FILE *f, const char *path, const char *header, size_t hlen,
                            ln_tensor *const *cpu, int n) {
  size_t padded = (hlen + 7) / 8 * 8;
  uint8_t len8[8];
  for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)padded >> (8 * i));
  bool ok = fwrite(len8, 1, 8, f) == 8 && fwrite(header, 1, hlen, f) == hlen &&
            fwrite("        ", 1, padded - hlen, f) == padded - hlen;
  for (int i = 0; i < n && ok; i++) {
    size_t nbytes = (size_t)ln_tensor_numel(cpu[i]) * ln_dtype_size(ln_tensor_dtype(cpu[i]));
    ok = nbytes == 0 || fwrite(ln_tensor_data(cpu[i]), 1, nbytes, f) == nbytes;
  }
  ok = ok && fflush(f) == 0 && fsync(fileno(f)) == 0;
  return ok ? LN_OK : ln_error(LN_EIO, "cannot write '%s': %s", path, strerror(errno));
}

#define MAX_LINKS 40   /* as Linux's path resolution, then ELOOP */

/* The file a save to `path` replaces, malloc'd in *target: path itself, or
** where its chain of symbolic links ends (which need not exist yet). A
** relative link is read from the directory of the link. */
static ln_status resolve_links(const char *path, char **target) {
  char *cur = strdup(path);
  if (!cur) return ln_error(LN_ENOMEM, "out of memory");
  for (int hops = 0;; hops++) {
    struct stat sb;
    if (lstat(cur, &sb) != 0 || !S_ISLNK(sb.st_mode)) break;   /* the open reports errors */
    if (hops == MAX_LINKS) {
      free(cur);
      return ln_error(LN_EIO, "cannot write '%s': %s", path, strerror(ELOOP));
    }
    size_t cap = (size_t)sb.st_size + 1 > 4096 ? (size_t)sb.st_size + 1 : 4096;
    const char *slash = strrchr(cur, '/');
    size_t dir = slash ? (size_t)(slash - cur) + 1 : 0;        /* "dir/" kept */
    char *next = malloc(dir + cap);
    if (!next) { free(cur); return ln_error(LN_ENOMEM, "out of memory"); }
    ssize_t len = readlink(cur, next + dir, cap);
    if (len < 0 || (size_t)len >= cap) {
      int e = len < 0 ? errno : ENAMETOOLONG;
      free(cur);
      free(next);
      return ln_error(LN_EIO, "cannot write '%s': %s", path, strerror(e));
    }
    next[dir + (size_t)len] = '\0';
    if (next[dir] == '/') memmove(next, next + dir, (size_t)len + 1);   /* absolute */
    else memcpy(next, cur, dir);
    free(cur);
    cur = next;
  }
  *target = cur;
  return LN_OK;
}

/* Check that an existing target may be replaced; *old is its stat, or
** st_nlink 0 when there is none. */
static ln_status check_target(const char *path, const char *target, struct stat *old) {
  if (stat(target, old) != 0) {
    memset(old, 0, sizeof *old);
    return LN_OK;                              /* a new file (or the open says why not) */
  }
  if (S_ISDIR(old->st_mode))
    return ln_error(LN_EIO, "cannot write '%s': %s", path, strerror(EISDIR));
  if (!S_ISREG(old->st_mode))                 /* a rename would replace a FIFO or device */
    return ln_error(LN_EIO, "cannot write '%s': not a regular file", path);
  if (faccessat(AT_FDCWD, target, W_OK, AT_EACCESS) != 0)   /* as open would refuse it */
    return ln_error(LN_EIO, "cannot write '%s': %s", path, strerror(errno));
  return LN_OK;
}

/* Give the new file f the old one's permission bits, and its owner and
** group where the caller may (root may; others keep the file as their own,
** in the old group when they belong to it). */
static ln_status keep_mode(FILE *f, const char *path, const struct stat *old) {
  if (old->st_nlink == 0) return LN_OK;
  int fd = fileno(f);
  if ((old->st_uid != geteuid() || old->st_gid != getegid()) &&
      fchown(fd, old->st_uid, old->st_gid) != 0)
    (void)!fchown(fd, (uid_t)-1, old->st_gid);   /* best effort */
  if (fchmod(fd, old->st_mode & 0777) != 0)
    return ln_error(LN_EIO, "cannot write '%s': %s", path, strerror(errno));
  return LN_OK;
}

ln_status ln_safetensors_save(const char *path, const ln_named_tensor *tensors, int n,
                              const ln_kv *metadata, int n_metadata) {
  ln_status st = check_save_args(tensors, n, metadata, n_metadata);
  if (st != LN_OK) return st;
  char *target = NULL;
  if ((st = resolve_links(path, &target)) != LN_OK) return st;
  struct stat old;
  if ((st = check_target(path, target, &old)) != LN_OK) {
    free(target);
    return st;
  }
  ln_tensor **cpu = calloc((size_t)(n ? n : 1), sizeof *cpu);
  char *header = NULL, *tmp = malloc(strlen(target) + 32);
  size_t hlen = 0;
  FILE *f = NULL;
  bool grad = ln_set_grad_enabled(false);   /* copies for saving need no history */
  if (!cpu || !tmp) { st = ln_error(LN_ENOMEM, "out of memory"); goto done; }
  for (int i = 0; i < n; i++) {
    ln_tensor *c = ln_contiguous(tensors[i].tensor, LN_CONTIGUOUS);
    cpu[i] = c ? ln_to_device(c, LN_DEVICE_CPU) : NULL;
    ln_tensor_release(c);
    if (!cpu[i]) {
      st = wrap_error("safetensors save: tensor '%s': ", tensors[i].name);
      goto done;
    }
  }
  if ((st = build_header(tensors, cpu, n, metadata, n_metadata, &header, &hlen)) != LN_OK)
    goto done;
  sprintf(tmp, "%s.tmp.%ld", target, (long)getpid());
  if (!(f = fopen(tmp, "wb"))) {
    st = ln_error(LN_EIO, "cannot write '%s': cannot create '%s': %s", path, tmp,
                  strerror(errno));
    goto done;
  }
  st = keep_mode(f, path, &old);
  if (st == LN_OK) st = write_file(f, path, header, hlen, cpu, n);
  int closed = fclose(f);
  f = NULL;
  if (st == LN_OK && closed != 0)
    st = ln_error(LN_EIO, "cannot write '%s': %s", path, strerror(errno));
  if (st == LN_OK && rename(tmp, target) != 0)
    st = ln_error(LN_EIO, "cannot write '%s': cannot rename '%s' over it: %s", path, tmp,
                  strerror(errno));
  if (st != LN_OK) remove(tmp);
done:
  ln_set_grad_enabled(grad);
  for (int i = 0; cpu && i < n; i++) ln_tensor_release(cpu[i]);
  free(cpu);
  free(header);
  free(tmp);
  free(target);
  return st;
}
