/*
** dtype.h -- element types and their traits.
** float16 and bfloat16 are storage types: kernels load them as float,
** compute in float and store back.
*/
#ifndef LN_DTYPE_H
#define LN_DTYPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef enum ln_dtype {
  LN_F32 = 0,
  LN_F64,
  LN_F16,
  LN_BF16,
  LN_I64,
  LN_BOOL,
  LN_DTYPE_COUNT
} ln_dtype;

typedef struct ln_dtype_traits {
  const char *name;     /* "float32", as PyTorch names it without "torch." */
  size_t size;          /* bytes per element */
  bool is_float;        /* float32/64/16, bfloat16 */
} ln_dtype_traits;

extern const ln_dtype_traits ln_dtype_table[LN_DTYPE_COUNT];

static inline const char *ln_dtype_name(ln_dtype t) { return ln_dtype_table[t].name; }
static inline size_t ln_dtype_size(ln_dtype t) { return ln_dtype_table[t].size; }
static inline bool ln_dtype_is_float(ln_dtype t) { return ln_dtype_table[t].is_float; }

/* Parse "float32" (also "float", "double", "half", "long", "int64", ...);
** LN_EINVAL with a message listing the valid names otherwise. */
ln_status ln_dtype_from_name(const char *name, ln_dtype *out);

/* The dtype of a binary op's result, by PyTorch's promotion rules:
** bool < int64 < floating; among floats the wider, float16+bfloat16 -> float32. */
ln_dtype ln_dtype_promote(ln_dtype a, ln_dtype b);

/* The dtype in which float kernels compute for `t`: float64 for float64,
** float32 for the other float types. */
static inline ln_dtype ln_dtype_compute(ln_dtype t) { return t == LN_F64 ? LN_F64 : LN_F32; }

/* IEEE half and bfloat16 conversions (round to nearest even). */
float ln_half_to_float(uint16_t h);
uint16_t ln_float_to_half(float f);
float ln_bf16_to_float(uint16_t b);
uint16_t ln_float_to_bf16(float f);

/* A double as int64, defined for every input (C leaves NaN and values out
** of range undefined; PyTorch's casts leave them to the machine, x86 giving
** INT64_MIN for all): NaN becomes 0 and the rest saturate, as ARM and CUDA
** convert. Two compares on the common path. */
static inline int64_t ln_double_to_i64(double x) {
  if (x >= -9223372036854775808.0 && x < 9223372036854775808.0) return (int64_t)x;
  return x != x ? 0 : x > 0 ? INT64_MAX : INT64_MIN;
}

/* Whether v converts to t without overflow, by PyTorch's checked_convert
** (what fill_ and full ask): int64 takes finite values in [-2^63, 2^63);
** float32, float16 and bfloat16 take infinities, NaN and finite values up
** to their largest finite one; float64 and bool take anything. */
bool ln_dtype_fits(double v, ln_dtype t);

/* Read or write one element of any dtype as a double (slow path: printing,
** item(), tables, scalar fills). int64 is written by ln_double_to_i64. */
double ln_load_double(const void *p, ln_dtype t);
void ln_store_double(void *p, ln_dtype t, double v);

#endif
