/*
** state_dict.h -- an ordered map from dotted names to tensors, plus a
** version per module prefix (PyTorch's state_dict._metadata[prefix]).
** The map owns a reference to each tensor and copies of the strings.
*/
#ifndef LN_STATE_DICT_H
#define LN_STATE_DICT_H

#include <stdbool.h>

#include "../core/tensor.h"

typedef struct ln_state_dict ln_state_dict;

ln_state_dict *ln_state_dict_new(void);            /* NULL on no memory */
void ln_state_dict_free(ln_state_dict *sd);        /* NULL is fine */
/* A shallow copy: same tensors (retained), same metadata. */
ln_state_dict *ln_state_dict_copy(const ln_state_dict *sd);

/* Insert or replace (keeps the original position on replace). */
ln_status ln_state_dict_set(ln_state_dict *sd, const char *key, ln_tensor *t);
ln_tensor *ln_state_dict_get(const ln_state_dict *sd, const char *key); /* borrowed */
bool ln_state_dict_remove(ln_state_dict *sd, const char *key);
int ln_state_dict_count(const ln_state_dict *sd);
const char *ln_state_dict_key(const ln_state_dict *sd, int i);
ln_tensor *ln_state_dict_value(const ln_state_dict *sd, int i);  /* borrowed */

/* Versions per module prefix ("" is the root, "layer1.0" a child). */
ln_status ln_state_dict_set_version(ln_state_dict *sd, const char *prefix, int version);
/* True and *version set when the prefix has one. */
bool ln_state_dict_get_version(const ln_state_dict *sd, const char *prefix, int *version);
int ln_state_dict_version_count(const ln_state_dict *sd);
const char *ln_state_dict_version_prefix(const ln_state_dict *sd, int i);
int ln_state_dict_version_at(const ln_state_dict *sd, int i);

#endif
