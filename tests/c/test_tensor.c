/*
** test_tensor.c -- tensor geometry: creation, strides, views sharing
** storage, channels-last, reference counts, and errors on bad shapes.
*/
#include <string.h>

#include "check.h"
#include "core/autograd.h"
#include "core/tensor.h"

#define CPU LN_DEVICE_CPU

/* A float32 tensor holding 0, 1, 2, ... */
static ln_tensor *iota(const int64_t *sizes, int ndim) {
  ln_tensor *t = ln_empty(sizes, ndim, LN_F32, CPU);
  float *p = ln_tensor_data(t);
  for (int64_t i = 0; i < ln_tensor_numel(t); i++) p[i] = (float)i;
  return t;
}

static double at(const ln_tensor *t, int64_t i0, int64_t i1, int64_t i2, int64_t i3) {
  int64_t idx[4] = { i0, i1, i2, i3 };
  return ln_tensor_get(t, idx);
}

static void test_creation(void) {
  int64_t sizes[3] = { 2, 3, 4 };
  ln_tensor *t = ln_empty(sizes, 3, LN_F64, CPU);
  CHECK(t && ln_tensor_dim(t) == 3 && ln_tensor_numel(t) == 24);
  CHECK(ln_tensor_stride(t, 0) == 12 && ln_tensor_stride(t, 1) == 4 &&
        ln_tensor_stride(t, 2) == 1);
  CHECK(ln_tensor_is_contiguous(t, LN_CONTIGUOUS));
  CHECK(!ln_tensor_is_contiguous(t, LN_CHANNELS_LAST));
  ln_tensor_release(t);

  int64_t bad[2] = { 2, -1 };
  CHECK(ln_empty(bad, 2, LN_F32, CPU) == NULL);
  CHECK_MSG("negative dimension -1: [2, -1]");

  int64_t empty[2] = { 0, 3 };
  t = ln_empty(empty, 2, LN_F32, CPU);
  CHECK(t && ln_tensor_numel(t) == 0 && ln_tensor_data(t) != NULL);
  ln_tensor_release(t);

  /* fills refuse values the dtype cannot hold, as PyTorch's full and fill_ */
  CHECK(ln_full(sizes, 1, 1e300, LN_I64, CPU) == NULL);
  CHECK_MSG("value cannot be converted to type int64_t without overflow");
  CHECK(ln_full(sizes, 1, NAN, LN_I64, CPU) == NULL);
  CHECK(ln_full(sizes, 1, 9223372036854775808.0, LN_I64, CPU) == NULL);
  CHECK(ln_full(sizes, 1, 1e300, LN_F32, CPU) == NULL);
  CHECK_MSG("value cannot be converted to type float without overflow");
  CHECK(ln_full(sizes, 1, 65520.0, LN_F16, CPU) == NULL);
  CHECK_MSG("value cannot be converted to type c10::Half without overflow");
  CHECK(ln_full(sizes, 1, -1e39, LN_BF16, CPU) == NULL);
  CHECK_MSG("value cannot be converted to type c10::BFloat16 without overflow");
  static const struct { double v; ln_dtype dt; } fits[] = {
    { -9223372036854775808.0, LN_I64 }, { INFINITY, LN_F32 }, { NAN, LN_F16 },
    { 65504.0, LN_F16 }, { 1e300, LN_F64 }, { 1e300, LN_BOOL },
  };
  for (size_t i = 0; i < sizeof fits / sizeof fits[0]; i++) {
    t = ln_full(sizes, 1, fits[i].v, fits[i].dt, CPU);
    CHECK(t != NULL);
    ln_tensor_release(t);
  }
  t = ln_arange(0, 1e300, 1e299, LN_I64);
  CHECK(t == NULL);
  CHECK_MSG("value cannot be converted to type int64_t without overflow");

  /* int64 arange near the limits: counted and stepped exactly */
  t = ln_arange_int(INT64_MAX - 2, INT64_MAX, 1);
  CHECK(t && ln_tensor_numel(t) == 2 &&
        ((int64_t *)ln_tensor_data(t))[1] == INT64_MAX - 1);
  ln_tensor_release(t);
  t = ln_arange_int(INT64_MAX, INT64_MIN, -(INT64_C(1) << 62));
  CHECK(t && ln_tensor_numel(t) == 4 &&
        ((int64_t *)ln_tensor_data(t))[3] == -(INT64_C(1) << 62) - 1);
  ln_tensor_release(t);
  CHECK(ln_arange_int(INT64_MIN, INT64_MAX, 1) == NULL);
  CHECK_MSG("arange: too many elements");

  ln_device cuda = { LN_CUDA, 0 };
  CHECK(ln_empty(sizes, 3, LN_F32, cuda) == NULL);
  CHECK(strstr(ln_last_error(), "CUDA") != NULL);
}

static void test_channels_last(void) {
  int64_t sizes[4] = { 2, 3, 4, 5 };
  ln_tensor *t = ln_empty_format(sizes, 4, LN_F32, CPU, LN_CHANNELS_LAST);
  CHECK(ln_tensor_stride(t, 1) == 1 && ln_tensor_stride(t, 3) == 3 &&
        ln_tensor_stride(t, 2) == 15 && ln_tensor_stride(t, 0) == 60);
  CHECK(ln_tensor_is_contiguous(t, LN_CHANNELS_LAST));
  CHECK(!ln_tensor_is_contiguous(t, LN_CONTIGUOUS));
  CHECK(ln_tensor_suggest_format(t) == LN_CHANNELS_LAST);
  ln_tensor_release(t);

  /* a permuted view of NHWC data is channels-last NCHW */
  int64_t nhwc[4] = { 2, 4, 5, 3 };
  ln_tensor *x = iota(nhwc, 4);
  ln_tensor *v = ln_permute(x, (int[]){ 0, 3, 1, 2 }, 4);
  CHECK(ln_tensor_size(v, 1) == 3 && ln_tensor_is_contiguous(v, LN_CHANNELS_LAST));
  CHECK(ln_tensor_storage(v) == ln_tensor_storage(x));
  /* element (n=1, c=2, h=3, w=4) is x[1][3][4][2] */
  CHECK_NEAR(at(v, 1, 2, 3, 4), ((1 * 4 + 3) * 5 + 4) * 3 + 2, 0);
  ln_tensor_release(v);
  ln_tensor_release(x);

  int64_t three[3] = { 1, 2, 3 };
  CHECK(ln_empty_format(three, 3, LN_F32, CPU, LN_CHANNELS_LAST) == NULL);
  CHECK_MSG("channels_last");
}

static void test_views(void) {
  int64_t sizes[2] = { 3, 4 };
  ln_tensor *x = iota(sizes, 2);

  ln_tensor *v = ln_view(x, (int64_t[]){ 2, -1 }, 2);
  CHECK(v && ln_tensor_size(v, 1) == 6 && ln_tensor_storage(v) == ln_tensor_storage(x));
  ((float *)ln_tensor_data(x))[7] = 100.0f;  /* visible through the view */
  CHECK_NEAR(at(v, 1, 1, 0, 0), 100.0, 0);
  ln_tensor_release(v);

  CHECK(ln_view(x, (int64_t[]){ 5, -1 }, 2) == NULL);
  CHECK_MSG("shape '[5, -1]' is invalid for input of size 12");
  CHECK(ln_view(x, (int64_t[]){ -1, -1 }, 2) == NULL);
  CHECK_MSG("only one dimension can be inferred");
  /* sizes whose product overflows are invalid, not wrapped */
  CHECK(ln_view(x, (int64_t[]){ INT64_MAX, 2 }, 2) == NULL);
  CHECK_MSG("shape '[9223372036854775807, 2]' is invalid for input of size 12");
  CHECK(ln_reshape(x, (int64_t[]){ -1, INT64_MAX, 4 }, 3) == NULL);
  CHECK_MSG("shape '[-1, 9223372036854775807, 4]' is invalid for input of size 12");

  ln_tensor *tr = ln_transpose(x, 0, 1);
  CHECK(ln_tensor_size(tr, 0) == 4 && ln_tensor_stride(tr, 0) == 1 &&
        ln_tensor_stride(tr, 1) == 4);
  CHECK(!ln_tensor_is_contiguous(tr, LN_CONTIGUOUS));
  CHECK(ln_view(tr, (int64_t[]){ 12 }, 1) == NULL);
  CHECK_MSG("Use .reshape(...) instead");
  /* splitting a dim of a transposed tensor is still a view */
  ln_tensor *split = ln_view(tr, (int64_t[]){ 2, 2, 3 }, 3);
  CHECK(split && ln_tensor_stride(split, 0) == 2 && ln_tensor_stride(split, 2) == 4);
  ln_tensor_release(split);
  ln_tensor_release(tr);

  ln_tensor *n = ln_narrow(x, 1, 1, 2);
  CHECK(n && ln_tensor_size(n, 1) == 2 && ln_tensor_offset(n) == 1);
  CHECK_NEAR(at(n, 2, 1, 0, 0), 10.0, 0);
  CHECK(ln_narrow(x, 1, 3, 2) == NULL);
  CHECK_MSG("exceeds dimension size");
  ln_tensor_release(n);

  ln_tensor *s = ln_select(x, 0, -1);
  CHECK(s && ln_tensor_dim(s) == 1 && ln_tensor_offset(s) == 8);
  CHECK(ln_select(x, 0, 3) == NULL);
  CHECK_MSG("index 3 is out of bounds for dimension 0 with size 3");
  ln_tensor_release(s);

  ln_tensor *col = ln_narrow(x, 1, 0, 1);
  ln_tensor *e = ln_expand(col, (int64_t[]){ 2, 3, 5 }, 3);
  CHECK(e && ln_tensor_stride(e, 0) == 0 && ln_tensor_stride(e, 2) == 0 &&
        ln_tensor_stride(e, 1) == 4);
  CHECK(ln_expand(x, (int64_t[]){ 3, 5 }, 2) == NULL);
  CHECK_MSG("must match the existing size (4) at non-singleton dimension 1");
  ln_tensor_release(e);
  ln_tensor_release(col);

  ln_tensor *u = ln_unsqueeze(x, -1);
  CHECK(u && ln_tensor_dim(u) == 3 && ln_tensor_size(u, 2) == 1);
  ln_tensor *sq = ln_squeeze(u, 2);
  CHECK(sq && ln_tensor_dim(sq) == 2);
  ln_tensor_release(sq);
  ln_tensor_release(u);

  ln_tensor *f = ln_flatten(x, 0, -1);
  CHECK(f && ln_tensor_dim(f) == 1 && ln_tensor_size(f, 0) == 12);
  ln_tensor_release(f);

  CHECK(ln_permute(x, (int[]){ 0, 0 }, 2) == NULL);
  CHECK_MSG("duplicate dims");
  CHECK(ln_transpose(x, 0, 2) == NULL);
  CHECK_MSG("Dimension out of range (expected to be in range of [-2, 1], but got 2)");
  ln_tensor_release(x);
}

static void test_refcounts(void) {
  int64_t base = ln_tensor_live_count();
  int64_t sizes[1] = { 8 };
  ln_tensor *x = iota(sizes, 1);
  ln_storage *st = ln_tensor_storage(x);
  ln_tensor *v = ln_narrow(x, 0, 2, 3);
  CHECK(ln_storage_refcount(st) == 2);
  ln_tensor_release(x);  /* the view keeps the storage alive */
  CHECK(ln_storage_refcount(st) == 1);
  CHECK_NEAR(((float *)ln_tensor_data(v))[0], 2.0, 0);
  ln_tensor_release(v);
  CHECK(ln_tensor_live_count() == base);

  ln_memory_stats before = ln_memory_stats_get(LN_DEVICE_CPU);
  ln_tensor *big = ln_empty((int64_t[]){ 1024 }, 1, LN_F64, CPU);
  ln_memory_stats during = ln_memory_stats_get(LN_DEVICE_CPU);
  CHECK(during.in_use - before.in_use == 8192 && during.peak >= during.in_use);
  ln_tensor_release(big);
  CHECK(ln_memory_stats_get(LN_DEVICE_CPU).in_use == before.in_use);
}

/* Large freed blocks are reused (no fresh pages for the next activation)
** and never count as in use; empty_cache gives them back. */
static void test_block_cache(void) {
  int64_t n = 1 << 20;
  ln_tensor *a = ln_empty(&n, 1, LN_F32, CPU);
  void *pa = ln_tensor_data(a);
  int64_t in_use = ln_memory_stats_get(CPU).in_use;
  ln_tensor_release(a);
  CHECK(ln_memory_stats_get(CPU).in_use == in_use - 4 * n);
  int64_t m = n - 1000;  /* a little smaller still fits the cached block */
  ln_tensor *b = ln_empty(&m, 1, LN_F32, CPU);
  CHECK(ln_tensor_data(b) == pa);
  ln_tensor_release(b);
  int64_t half = n / 2;  /* much smaller does not take it */
  ln_tensor *c = ln_empty(&half, 1, LN_F32, CPU);
  CHECK(ln_tensor_data(c) != pa);
  ln_tensor_release(c);
  ln_empty_cache(LN_CPU);
  ln_empty_cache(LN_CUDA);  /* no backend or nothing cached: a no-op */
}

static void test_from_storage(void) {
  ln_storage *s = ln_storage_new(LN_DEVICE_CPU, 6 * sizeof(float));
  ln_tensor *t = ln_from_storage(s, LN_F32, (int64_t[]){ 2, 3 }, (int64_t[]){ 3, 1 }, 2, 0);
  CHECK(t != NULL);
  ln_tensor_release(t);
  CHECK(ln_from_storage(s, LN_F32, (int64_t[]){ 2, 3 }, (int64_t[]){ 3, 1 }, 2, 1) == NULL);
  CHECK_MSG("out of bounds");
  ln_storage_release(s);
}

static void test_dtypes(void) {
  ln_dtype d;
  CHECK_OK(ln_dtype_from_name("bfloat16", &d));
  CHECK(d == LN_BF16);
  CHECK_OK(ln_dtype_from_name("double", &d));
  CHECK(d == LN_F64);
  CHECK(ln_dtype_from_name("float8", &d) == LN_EINVAL);
  CHECK(ln_dtype_promote(LN_F16, LN_BF16) == LN_F32);
  CHECK(ln_dtype_promote(LN_I64, LN_F16) == LN_F16);
  CHECK(ln_dtype_promote(LN_BOOL, LN_I64) == LN_I64);
  CHECK(ln_dtype_promote(LN_F32, LN_F64) == LN_F64);
  /* half: exact values, rounding to nearest even, overflow, subnormals */
  CHECK(ln_float_to_half(1.0f) == 0x3c00);
  CHECK(ln_float_to_half(65504.0f) == 0x7bff);
  CHECK(ln_float_to_half(65520.0f) == 0x7c00);
  CHECK(ln_float_to_half(1.0f + 1.0f / 2048) == 0x3c00);   /* tie to even */
  CHECK(ln_float_to_half(1.0f + 3.0f / 2048) == 0x3c02);
  CHECK(ln_float_to_half(5.9604645e-8f) == 0x0001);
  CHECK_NEAR(ln_half_to_float(0x0001), 5.9604645e-8, 1e-15);
  CHECK_NEAR(ln_half_to_float(0xc000), -2.0, 0);
  CHECK(isnan(ln_half_to_float(ln_float_to_half(NAN))));
  for (uint32_t h = 0; h < 0x7c00; h++)   /* every finite half round-trips */
    if (ln_float_to_half(ln_half_to_float((uint16_t)h)) != h) { CHECK(!"half round trip"); break; }
  CHECK(ln_float_to_bf16(1.0f) == 0x3f80);
  CHECK_NEAR(ln_bf16_to_float(ln_float_to_bf16(3.140625f)), 3.140625, 0);
  CHECK(ln_float_to_bf16(1.0f + 1.0f / 256) == 0x3f80);    /* tie to even */
  /* double -> int64 is defined everywhere: NaN 0, out of range saturates */
  int64_t i64;
  ln_store_double(&i64, LN_I64, 1e300);
  CHECK(i64 == INT64_MAX);
  ln_store_double(&i64, LN_I64, 9223372036854775808.0);
  CHECK(i64 == INT64_MAX);
  ln_store_double(&i64, LN_I64, -9223372036854775808.0);
  CHECK(i64 == INT64_MIN);
  ln_store_double(&i64, LN_I64, -INFINITY);
  CHECK(i64 == INT64_MIN);
  ln_store_double(&i64, LN_I64, NAN);
  CHECK(i64 == 0);
  ln_store_double(&i64, LN_I64, -2.75);
  CHECK(i64 == -2);
  CHECK(ln_double_to_i64(9007199254740993.0) == 9007199254740992);
}

static void test_devices(void) {
  ln_device d;
  CHECK_OK(ln_device_parse("cuda:1", &d));
  CHECK(d.type == LN_CUDA && d.index == 1);
  CHECK(ln_device_parse("tpu", &d) == LN_EINVAL);
  CHECK(ln_device_parse("cpu:1", &d) == LN_EINVAL);
  char buf[16];
  CHECK(strcmp(ln_device_str(LN_DEVICE_CPU, buf, sizeof buf), "cpu") == 0);
}

int main(void) {
  ln_init();
  test_creation();
  test_channels_last();
  test_views();
  test_refcounts();
  test_block_cache();
  test_from_storage();
  test_dtypes();
  test_devices();
  return check_done("test_tensor");
}
