/*
** dtype.c -- dtype traits, names, promotion and 16-bit float conversions.
*/
#include <float.h>
#include <math.h>
#include <string.h>

#include "dtype.h"

const ln_dtype_traits ln_dtype_table[LN_DTYPE_COUNT] = {
  [LN_F32] = { .name = "float32", .size = 4, .is_float = true },
  [LN_F64] = { .name = "float64", .size = 8, .is_float = true },
  [LN_F16] = { .name = "float16", .size = 2, .is_float = true },
  [LN_BF16] = { .name = "bfloat16", .size = 2, .is_float = true },
  [LN_I64] = { .name = "int64", .size = 8, .is_float = false },
  [LN_BOOL] = { .name = "bool", .size = 1, .is_float = false },
};

_Static_assert(LN_DTYPE_COUNT == 6, "update ln_dtype_table and the aliases");

static const struct { const char *alias; ln_dtype t; } aliases[] = {
  { "float", LN_F32 }, { "double", LN_F64 }, { "half", LN_F16 },
  { "long", LN_I64 },
};

ln_status ln_dtype_from_name(const char *name, ln_dtype *out) {
  for (int t = 0; t < LN_DTYPE_COUNT; t++)
    if (strcmp(name, ln_dtype_table[t].name) == 0) { *out = (ln_dtype)t; return LN_OK; }
  for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++)
    if (strcmp(name, aliases[i].alias) == 0) { *out = aliases[i].t; return LN_OK; }
  return ln_error(LN_EINVAL, "unknown dtype '%s' (expected float32, float64, "
                  "float16, bfloat16, int64 or bool)", name);
}

/* Rank of each dtype's category: bool < integer < floating. */
static int category(ln_dtype t) {
  return t == LN_BOOL ? 0 : (t == LN_I64 ? 1 : 2);
}

ln_dtype ln_dtype_promote(ln_dtype a, ln_dtype b) {
  if (a == b) return a;
  int ca = category(a), cb = category(b);
  if (ca != cb) return ca > cb ? a : b;
  /* both floating and different */
  if (a == LN_F64 || b == LN_F64) return LN_F64;
  return LN_F32;  /* f32 with a 16-bit type, or f16 with bf16 */
}

static uint32_t float_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float bits_float(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

float ln_half_to_float(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff;
  if (exp == 0x1f) return bits_float(sign | 0x7f800000u | (man << 13));
  if (exp == 0) {  /* zero or subnormal: man * 2^-24 */
    float v = ldexpf((float)man, -24);
    return sign ? -v : v;
  }
  return bits_float(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t ln_float_to_half(float f) {
  uint32_t u = float_bits(f);
  uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
  uint32_t abs = u & 0x7fffffffu;
  if (abs >= 0x7f800000u)  /* inf or nan (keep nan quiet) */
    return sign | 0x7c00 | (abs > 0x7f800000u ? 0x200 : 0);
  if (abs >= 0x477ff000u) return sign | 0x7c00;  /* rounds to >= 65520: inf */
  if (abs < 0x38800000u) {  /* below 2^-14: subnormal half, round to even */
    float a = bits_float(abs);
    return sign | (uint16_t)lrintf(a * 16777216.0f);  /* a / 2^-24 */
  }
  uint32_t mant_odd = (abs >> 13) & 1;
  abs += 0xc8000fffu + mant_odd;  /* rebias exponent (-112 << 23) and round */
  return sign | (uint16_t)(abs >> 13);
}

float ln_bf16_to_float(uint16_t b) { return bits_float((uint32_t)b << 16); }

uint16_t ln_float_to_bf16(float f) {
  uint32_t u = float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1);
  return (uint16_t)(u >> 16);
}

double ln_load_double(const void *p, ln_dtype t) {
  switch (t) {
  case LN_F32: return *(const float *)p;
  case LN_F64: return *(const double *)p;
  case LN_F16: return ln_half_to_float(*(const uint16_t *)p);
  case LN_BF16: return ln_bf16_to_float(*(const uint16_t *)p);
  case LN_I64: return (double)*(const int64_t *)p;
  case LN_BOOL: return *(const uint8_t *)p ? 1.0 : 0.0;
  default: return 0.0;
  }
}

bool ln_dtype_fits(double v, ln_dtype t) {
  static const double max_finite[LN_DTYPE_COUNT] = {
    [LN_F32] = FLT_MAX, [LN_F16] = 65504.0, [LN_BF16] = 3.3895313892515355e38,
  };
  switch (t) {
  case LN_I64: return v >= -9223372036854775808.0 && v < 9223372036854775808.0;
  case LN_F32: case LN_F16: case LN_BF16: return !isfinite(v) || fabs(v) <= max_finite[t];
  default: return true;
  }
}

void ln_store_double(void *p, ln_dtype t, double v) {
  switch (t) {
  case LN_F32: *(float *)p = (float)v; break;
  case LN_F64: *(double *)p = v; break;
  case LN_F16: *(uint16_t *)p = ln_float_to_half((float)v); break;
  case LN_BF16: *(uint16_t *)p = ln_float_to_bf16((float)v); break;
  case LN_I64: *(int64_t *)p = ln_double_to_i64(v); break;
  case LN_BOOL: *(uint8_t *)p = v != 0.0; break;
  default: break;
  }
}
