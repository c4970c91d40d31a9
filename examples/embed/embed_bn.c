/*
** embed_bn.c -- a C program hosting lunet (lua/lunet_embed.h): it wraps
** its own array as a tensor without copying, has Lua normalise it with
** nn.BatchNorm1d (normalize.lua), checks the result against a direct
** computation, shows that Lua writes into the host's array, fetches a
** tensor made in Lua, and reads an error back.
**
**   embed_example path/to/normalize.lua
**   cc embed_bn.c $(pkg-config --cflags --libs lunet-embed)   (installed)
**
** Ownership: the host owns `data`; the storage wrapping it has no deleter
** but a callback that records when the last reference (the host's or
** Lua's) is gone, which this program checks after lua_close.
*/
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <lauxlib.h>

#include "lua/lunet_embed.h"

#define N 8
#define C 3

static bool storage_freed;

static void on_free(void *ctx, void *ptr) {
  (void)ctx;
  (void)ptr;
  storage_freed = true;   /* the memory itself is the host's array */
}

#define CHECK(cond, ...) do {                                   \
    if (!(cond)) {                                              \
      fprintf(stderr, "embed_bn: " __VA_ARGS__);                \
      fprintf(stderr, "\n  (last error: %s)\n", ln_last_error()); \
      goto fail;                                                \
    }                                                           \
  } while (0)

int main(int argc, char **argv) {
  const char *script = argc > 1 ? argv[1] : "normalize.lua";
  static float data[N * C];
  for (int i = 0; i < N; i++)
    for (int c = 0; c < C; c++) data[i * C + c] = (float)((c + 1) * (i * i % 5) - 2 * c);

  lua_State *L = NULL;
  ln_tensor *x = NULL, *y = NULL, *z = NULL;
  int rc = 1;
  ln_init();

  /* The host's array as an (N, C) float32 tensor, no copy. */
  ln_storage *s = ln_storage_wrap(LN_DEVICE_CPU, data, sizeof data, on_free, NULL);
  CHECK(s, "cannot wrap the array");
  x = ln_from_storage(s, LN_F32, (int64_t[]){ N, C }, (int64_t[]){ C, 1 }, 2, 0);
  ln_storage_release(s);   /* x holds the storage now */
  CHECK(x, "cannot make the tensor");

  L = ln_embed_new_state();
  CHECK(L, "cannot create the Lua state");
  CHECK(ln_embed_dofile(L, script) == LN_OK, "running %s failed", script);

  /* y = normalize(x) */
  lua_getglobal(L, "normalize");
  CHECK(ln_embed_push_tensor(L, x) == LN_OK, "cannot push x");
  CHECK(ln_embed_pcall(L, 1, 1) == LN_OK, "normalize(x) failed");
  y = ln_embed_to_tensor(L, -1);
  lua_pop(L, 1);
  CHECK(y, "normalize did not return a tensor");
  CHECK(ln_tensor_dim(y) == 2 && ln_tensor_size(y, 0) == N && ln_tensor_size(y, 1) == C,
        "y has the wrong shape");
  for (int c = 0; c < C; c++) {
    double mean = 0, var = 0;
    for (int i = 0; i < N; i++) mean += data[i * C + c];
    mean /= N;
    for (int i = 0; i < N; i++) var += (data[i * C + c] - mean) * (data[i * C + c] - mean);
    var /= N;   /* biased, as BatchNorm normalises */
    for (int i = 0; i < N; i++) {
      double want = (data[i * C + c] - mean) / sqrt(var + 1e-5);
      double got = ln_tensor_get(y, (int64_t[]){ i, c });
      CHECK(fabs(got - want) < 1e-5, "y[%d][%d] = %g, want %g", i, c, got, want);
    }
  }

  /* Lua and the host share x's memory: x:mul_(2) in Lua doubles data[]. */
  float before = data[C + 1];
  CHECK(ln_embed_set_tensor(L, "x", x) == LN_OK, "cannot set the global x");
  CHECK(ln_embed_dostring(L, "x:mul_(2)", "=double") == LN_OK, "x:mul_(2) failed");
  CHECK(data[C + 1] == 2 * before, "Lua's write did not reach the host's array");

  /* A tensor made in Lua, fetched from a global. */
  z = ln_embed_get_tensor(L, "z");
  CHECK(z && ln_tensor_numel(z) == 6, "cannot fetch z");
  CHECK(ln_tensor_get(z, (int64_t[]){ 1, 2 }) == 5, "z[2][3] should be 5");

  /* Errors come back as a status and a message with a traceback. */
  CHECK(ln_embed_dostring(L, "affine(nil, 2, 1)", "=bad") != LN_OK, "expected an error");
  printf("an error from Lua reads:\n%s\n", ln_last_error());
  CHECK(ln_embed_get_tensor(L, "normalize") == NULL, "normalize is not a tensor");

  /* y's autograd graph saved x (bn.weight requires grad), so x's memory
  ** stays until y, Lua's reference and the host's are all gone. */
  lua_close(L);
  L = NULL;
  ln_tensor_release(y);
  y = NULL;
  CHECK(!storage_freed, "the storage went away while the host holds x");
  ln_tensor_release(x);
  x = NULL;
  CHECK(storage_freed, "the storage outlived its last reference");
  printf("embed example: all checks passed\n");
  rc = 0;
fail:
  ln_tensor_release(x);
  ln_tensor_release(y);
  ln_tensor_release(z);
  if (L) lua_close(L);
  return rc;
}
