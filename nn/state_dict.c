/*
** state_dict.c -- an ordered map from dotted names to tensors, plus a
** version per module prefix.
**
** Entries live in an array in insertion order; an open-addressing hash
** index (slot = entry index + 1, 0 = empty) makes lookups O(1) so that
** loading a large model is not quadratic. Removal is rare: it shifts the
** array and rebuilds the index. Versions are few (one per module) and use
** a plain array. The map owns its key strings and one reference to each
** tensor.
*/
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "state_dict.h"

typedef struct sd_entry {
  char *key;
  ln_tensor *t;      /* retained */
} sd_entry;

typedef struct sd_version {
  char *prefix;
  int version;
} sd_version;

struct ln_state_dict {
  sd_entry *items;
  int n, cap;
  int *index;        /* index_cap slots, each 0 or entry index + 1 */
  int index_cap;     /* a power of two, at least twice n */
  sd_version *versions;
  int nv, capv;
};

static uint32_t hash_str(const char *s) {
  uint32_t h = 2166136261u;                    /* FNV-1a */
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
  return h;
}

/* The index slot holding `key`, or the empty slot where it would go. */
static int probe(const ln_state_dict *sd, const char *key) {
  int mask = sd->index_cap - 1;
  int i = (int)(hash_str(key) & (uint32_t)mask);
  while (sd->index[i] && strcmp(sd->items[sd->index[i] - 1].key, key) != 0)
    i = (i + 1) & mask;
  return i;
}

/* Refill the index from the entries (its capacity is unchanged). */
static void fill_index(ln_state_dict *sd) {
  memset(sd->index, 0, (size_t)sd->index_cap * sizeof *sd->index);
  for (int k = 0; k < sd->n; k++) sd->index[probe(sd, sd->items[k].key)] = k + 1;
}

/* Replace the index by one with room for at least `want` entries. */
static ln_status reindex(ln_state_dict *sd, int want) {
  int cap = 16;
  while (cap < 2 * want) cap *= 2;
  int *index = malloc((size_t)cap * sizeof *index);
  if (!index) return ln_error(LN_ENOMEM, "out of memory growing a state dict");
  free(sd->index);
  sd->index = index;
  sd->index_cap = cap;
  fill_index(sd);
  return LN_OK;
}

ln_state_dict *ln_state_dict_new(void) {
  ln_state_dict *sd = calloc(1, sizeof *sd);
  if (!sd || reindex(sd, 0) != LN_OK) {
    free(sd);
    ln_error(LN_ENOMEM, "out of memory creating a state dict");
    return NULL;
  }
  return sd;
}

void ln_state_dict_free(ln_state_dict *sd) {
  if (!sd) return;
  for (int k = 0; k < sd->n; k++) {
    free(sd->items[k].key);
    ln_tensor_release(sd->items[k].t);
  }
  for (int k = 0; k < sd->nv; k++) free(sd->versions[k].prefix);
  free(sd->items);
  free(sd->index);
  free(sd->versions);
  free(sd);
}

ln_state_dict *ln_state_dict_copy(const ln_state_dict *sd) {
  if (!sd) {
    ln_error(LN_EINVAL, "state dict expected, got NULL");
    return NULL;
  }
  ln_state_dict *c = ln_state_dict_new();
  if (!c) return NULL;
  for (int k = 0; k < sd->n; k++)
    if (ln_state_dict_set(c, sd->items[k].key, sd->items[k].t) != LN_OK) goto fail;
  for (int k = 0; k < sd->nv; k++)
    if (ln_state_dict_set_version(c, sd->versions[k].prefix, sd->versions[k].version)
        != LN_OK) goto fail;
  return c;
fail:
  ln_state_dict_free(c);
  return NULL;
}

ln_status ln_state_dict_set(ln_state_dict *sd, const char *key, ln_tensor *t) {
  if (!sd || !key) return ln_error(LN_EINVAL, "state dict set: NULL %s",
                                   sd ? "key" : "state dict");
  if (!t) return ln_error(LN_EINVAL, "state dict value for '%s' must be a tensor", key);
  int slot = probe(sd, key);
  if (sd->index[slot]) {                       /* replace in place */
    sd_entry *e = &sd->items[sd->index[slot] - 1];
    ln_tensor_retain(t);
    ln_tensor_release(e->t);
    e->t = t;
    return LN_OK;
  }
  if (!ln_grow((void **)&sd->items, &sd->cap, sd->n, sizeof *sd->items))
    return ln_error(LN_ENOMEM, "out of memory growing a state dict");
  char *k = ln_dup_str(key);
  if (!k) return ln_error(LN_ENOMEM, "out of memory growing a state dict");
  if (2 * (sd->n + 1) > sd->index_cap) {
    if (reindex(sd, sd->n + 1) != LN_OK) {
      free(k);
      return LN_ENOMEM;
    }
    slot = probe(sd, key);
  }
  ln_tensor_retain(t);
  sd->items[sd->n] = (sd_entry){ k, t };
  sd->index[slot] = ++sd->n;
  return LN_OK;
}

ln_tensor *ln_state_dict_get(const ln_state_dict *sd, const char *key) {
  if (!sd || !key) return NULL;
  int slot = probe(sd, key);
  return sd->index[slot] ? sd->items[sd->index[slot] - 1].t : NULL;
}

bool ln_state_dict_remove(ln_state_dict *sd, const char *key) {
  if (!sd || !key) return false;
  int slot = probe(sd, key);
  if (!sd->index[slot]) return false;
  int k = sd->index[slot] - 1;
  free(sd->items[k].key);
  ln_tensor_release(sd->items[k].t);
  memmove(&sd->items[k], &sd->items[k + 1], (size_t)(sd->n - k - 1) * sizeof *sd->items);
  sd->n--;
  fill_index(sd);                              /* entry indices shifted */
  return true;
}

int ln_state_dict_count(const ln_state_dict *sd) { return sd ? sd->n : 0; }

const char *ln_state_dict_key(const ln_state_dict *sd, int i) {
  return sd && i >= 0 && i < sd->n ? sd->items[i].key : NULL;
}

ln_tensor *ln_state_dict_value(const ln_state_dict *sd, int i) {
  return sd && i >= 0 && i < sd->n ? sd->items[i].t : NULL;
}

static int find_version(const ln_state_dict *sd, const char *prefix) {
  for (int k = 0; k < sd->nv; k++)
    if (strcmp(sd->versions[k].prefix, prefix) == 0) return k;
  return -1;
}

ln_status ln_state_dict_set_version(ln_state_dict *sd, const char *prefix, int version) {
  if (!sd || !prefix) return ln_error(LN_EINVAL, "state dict set_version: NULL %s",
                                      sd ? "prefix" : "state dict");
  int k = find_version(sd, prefix);
  if (k >= 0) {
    sd->versions[k].version = version;
    return LN_OK;
  }
  if (!ln_grow((void **)&sd->versions, &sd->capv, sd->nv, sizeof *sd->versions))
    return ln_error(LN_ENOMEM, "out of memory growing a state dict");
  char *p = ln_dup_str(prefix);
  if (!p) return ln_error(LN_ENOMEM, "out of memory growing a state dict");
  sd->versions[sd->nv++] = (sd_version){ p, version };
  return LN_OK;
}

bool ln_state_dict_get_version(const ln_state_dict *sd, const char *prefix, int *version) {
  if (!sd || !prefix) return false;
  int k = find_version(sd, prefix);
  if (k < 0) return false;
  if (version) *version = sd->versions[k].version;
  return true;
}

int ln_state_dict_version_count(const ln_state_dict *sd) { return sd ? sd->nv : 0; }

const char *ln_state_dict_version_prefix(const ln_state_dict *sd, int i) {
  return sd && i >= 0 && i < sd->nv ? sd->versions[i].prefix : NULL;
}

int ln_state_dict_version_at(const ln_state_dict *sd, int i) {
  return sd && i >= 0 && i < sd->nv ? sd->versions[i].version : 0;
}
