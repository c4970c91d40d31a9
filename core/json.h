/*
** json.h -- a small strict JSON (RFC 8259) reader and a string writer, for
** the safetensors header. Parsing builds a tree of ln_json values owned by
** the root; objects keep their members in input order and may not repeat
** a key. Errors give LN_EFORMAT and a message "at byte N: what is wrong"
** (N counted from the start of the text).
*/
#ifndef LN_JSON_H
#define LN_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "status.h"

#define LN_JSON_MAX_DEPTH 64   /* nesting of arrays and objects */

typedef enum ln_json_type {
  LN_JSON_NULL, LN_JSON_BOOL, LN_JSON_NUMBER, LN_JSON_STRING,
  LN_JSON_ARRAY, LN_JSON_OBJECT
} ln_json_type;

typedef struct ln_json_member ln_json_member;

typedef struct ln_json {
  ln_json_type type;
  size_t pos;                    /* byte offset where the value starts */
  union {
    bool boolean;
    struct {
      double number;
      bool is_integer;           /* written without fraction or exponent, */
      int64_t integer;           /* and it fits: then this is exact */
    };
    struct { char *string; size_t length; };   /* NUL-terminated; may hold NULs */
    struct { struct ln_json *items; size_t n_items; };
    struct { ln_json_member *members; size_t n_members; };
  };
} ln_json;

struct ln_json_member {
  char *key;                     /* NUL-terminated */
  size_t key_length;
  size_t key_pos;                /* byte offset of the key's opening quote */
  ln_json value;
};

/* Parse text[0..len) (the whole text must be one value, with optional
** whitespace around it). On success *out is a new tree: free it with
** ln_json_free. */
ln_status ln_json_parse(const char *text, size_t len, ln_json **out);
void ln_json_free(ln_json *root);   /* NULL is fine */

/* The member named key of an object, or NULL. */
const ln_json *ln_json_get(const ln_json *object, const char *key);

/* Name of a type for messages: "an object", "a string", ... */
const char *ln_json_type_name(ln_json_type type);

/* Write s[0..len) as a quoted JSON string. LN_EINVAL when s is not valid
** UTF-8 (the message says at which byte). */
ln_status ln_json_write_string(FILE *f, const char *s, size_t len);

/* Whether s[0..len) is valid UTF-8 (no overlongs, no surrogates); on false
** *bad is the offset of the first bad byte. */
bool ln_utf8_valid(const char *s, size_t len, size_t *bad);

#endif
