/*
** test_scratch.c -- the per-thread scratch memory of nn/ (nn/scratch.h):
** blocks aligned and apart, given back last in first out and taken again
** from the same place, requests that do not fit served apart while others
** are held (and given back with the blocks taken before them), the arena
** grown to the largest total once empty, zeroed blocks, and one arena per
** thread.
*/
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "nn/scratch.h"

static bool aligned(const void *p) { return (uintptr_t)p % 64 == 0; }

/* Each block filled with its own byte, then read back: no two overlap. */
static bool apart(char **p, const size_t *n, int k) {
  for (int i = 0; i < k; i++) memset(p[i], 'a' + i, n[i]);
  for (int i = 0; i < k; i++)
    for (size_t j = 0; j < n[i]; j++)
      if (p[i][j] != 'a' + i) return false;
  return true;
}

static void *other_thread(void *mine) {
  void *p = ln_scratch_alloc(100);
  bool differs = p != NULL && p != mine;
  ln_scratch_free(p);
  return differs ? p : NULL;
}

int main(void) {
  size_t n[3] = { 100, 5000, 300 };
  char *p[3];
  /* first round: the arena starts empty and grows to what is asked,
  ** one block at a time; the rest come from malloc */
  for (int i = 0; i < 3; i++) {
    p[i] = ln_scratch_alloc(n[i]);
    CHECK(p[i] != NULL && aligned(p[i]));
  }
  CHECK(apart(p, n, 3));
  for (int i = 2; i >= 0; i--) ln_scratch_free(p[i]);

  /* second round: the arena holds all three, one after the other */
  char *q[3];
  for (int i = 0; i < 3; i++) q[i] = ln_scratch_alloc(n[i]);
  CHECK(q[1] == q[0] + 128 && q[2] == q[1] + 5056);
  CHECK(apart(q, n, 3));
  ln_scratch_free(q[2]);
  char *r = ln_scratch_alloc(200);   /* where the freed block was */
  CHECK(r == q[2]);
  ln_scratch_free(q[1]);   /* gives back r too */
  CHECK(ln_scratch_alloc(64) == q[1]);
  ln_scratch_free(q[0]);
  CHECK(ln_scratch_alloc(1) == q[0]);   /* all given back: from the start */
  ln_scratch_free(q[0]);
  char *z = ln_scratch_zeroed(5000);   /* where 'a' and 'b' were written */
  bool zero = z != NULL;
  for (int i = 0; zero && i < 5000; i++) zero = z[i] == 0;
  CHECK(zero);
  ln_scratch_free(z);
  ln_scratch_free(NULL);

  /* a request larger than the arena while a block is held: apart */
  char *a = ln_scratch_alloc(64), *big = ln_scratch_alloc(1 << 20);
  CHECK(big != NULL && aligned(big) && (big < a || big >= a + 6000));
  memset(big, 1, 1 << 20);
  ln_scratch_free(big);
  ln_scratch_free(a);
  a = ln_scratch_alloc(64);   /* the arena has grown to hold both */
  big = ln_scratch_alloc(1 << 20);
  CHECK(big == a + 64);
  ln_scratch_free(a);

  /* blocks served outside the arena go back with the block taken before
  ** them (LeakSanitizer checks that they are freed), and an outside block
  ** takes the arena's blocks taken after it along */
  const size_t mb = 1 << 22;
  char *h = ln_scratch_alloc(64), *o1 = ln_scratch_alloc(mb), *o2 = ln_scratch_alloc(mb);
  CHECK(o1 != NULL && o2 != NULL && aligned(o1) && aligned(o2));
  CHECK(o1 != h + 64 && o2 != h + 64);
  memset(o1, 1, mb);
  memset(o2, 2, mb);
  ln_scratch_free(h);
  h = ln_scratch_alloc(64);   /* the arena has grown to hold all three */
  o1 = ln_scratch_alloc(mb);
  CHECK(o1 == h + 64);
  char *o3 = ln_scratch_alloc(4 * mb), *after = ln_scratch_alloc(64);
  CHECK(o3 != NULL && after == o1 + mb);
  ln_scratch_free(o3);   /* gives back `after` too */
  CHECK(ln_scratch_alloc(64) == after);
  ln_scratch_free(h);

  pthread_t t;
  void *theirs = NULL;
  char *mine = ln_scratch_alloc(100);
  CHECK(pthread_create(&t, NULL, other_thread, mine) == 0 && pthread_join(t, &theirs) == 0);
  CHECK(theirs != NULL);
  ln_scratch_free(mine);
  return check_done("test_scratch");
}
