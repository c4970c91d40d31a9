/*
** test_reduce_plan.c -- the planning of CUDA's reductions
** (cuda/reduce_plan.h), run on the CPU: the strategy chosen for typical
** shapes, and, for hand-made descriptions, the reduction computed the way
** the kernels walk it (chunks, strided thread loops, partials) against a
** naive odometer walk over the description.
*/
#include <string.h>

#include "check.h"
#include "cuda/reduce_plan.h"

#define SMS 132  /* an H100's multiprocessors */

/* The description core makes for reducing an input of `sizes` and
** `strides` over the dims in `mask` (bit d for dim d) into an output
** contiguous over the kept dims; with `mean`, SQDEV's third operand laid
** out as the output. */
static ln_ew_desc reduction(int ndim, const int64_t *sizes, const int64_t *strides,
                            unsigned mask, bool mean) {
  ln_ew_desc d;
  memset(&d, 0, sizeof d);
  d.ndim = ndim;
  d.nops = mean ? 3 : 2;
  d.numel = 1;
  int64_t step = 1;
  for (int i = ndim - 1; i >= 0; i--) {
    bool red = mask >> i & 1;
    d.sizes[i] = sizes[i];
    d.numel *= sizes[i];
    d.ops[0].strides[i] = d.ops[2].strides[i] = red ? 0 : step;
    d.ops[1].strides[i] = strides[i];
    if (!red) step *= sizes[i];
  }
  return d;
}

/* Sum d's input (values in[j] = j * 7 + 1, exact in double) into out_want
** by an odometer walk and into out_got the way the kernels do with plan p:
** each virtual output's chunk visited by `lanes` strided lanes, partials
** joined in chunk order. Outputs live at operand 0's offsets (< nout). */
static void check_sum(const ln_ew_desc *d, const ln_reduce_plan *p, int64_t nout, int lanes) {
  double want[256] = { 0 }, got[256], written[256] = { 0 };
  int64_t idx[LN_MAX_DIMS] = { 0 };
  for (int64_t i = 0; i < d->numel; i++) {
    int64_t o = 0, x = 0;
    for (int k = 0; k < d->ndim; k++) {
      o += idx[k] * d->ops[0].strides[k];
      x += idx[k] * d->ops[1].strides[k];
    }
    want[o] += (double)(x * 7 + 1);
    for (int k = d->ndim - 1; k >= 0; k--) {
      if (++idx[k] < d->sizes[k]) break;
      idx[k] = 0;
    }
  }
  for (int64_t o = 0; o < p->outputs; o++) {
    double acc = 0;
    for (int64_t c = 0; c < p->chunks; c++) {
      int64_t r0 = c * p->chunk_len, r1 = ln_rp_min(r0 + p->chunk_len, p->extent);
      for (int lane = 0; lane < lanes; lane++)
        for (int64_t r = r0 + lane; r < r1; r += lanes) {
          int64_t x = ln_reduce_offset(&p->kept, 1, o) + ln_reduce_offset(&p->red, 1, r);
          acc += (double)(x * 7 + 1);
        }
    }
    int64_t at = ln_reduce_offset(&p->kept, 0, o);
    CHECK(at >= 0 && at < nout);
    if (at < 0 || at >= nout) return;
    got[at] = acc;
    written[at] += 1;
  }
  int bad = 0;
  for (int64_t o = 0; o < nout; o++)
    if (written[o] != 1 || got[o] != want[o]) bad++;
  CHECK(bad == 0);
}

static void test_walks(void) {
  ln_reduce_plan p;
  {  /* [5, 6] contiguous, sum over dim 1 (inner reduced) */
    int64_t sz[] = { 5, 6 }, st[] = { 6, 1 };
    ln_ew_desc d = reduction(2, sz, st, 2, false);
    CHECK(ln_reduce_plan_make(&p, &d, -1, SMS) == 0);
    CHECK(p.outputs == 5 && p.extent == 6 && p.inner_reduced);
    CHECK(p.kept.ndim == 1 && p.red.ndim == 1);
    check_sum(&d, &p, 5, 1);
    check_sum(&d, &p, 5, 4);
  }
  {  /* [5, 6] contiguous, sum over dim 0 (inner kept) */
    int64_t sz[] = { 5, 6 }, st[] = { 6, 1 };
    ln_ew_desc d = reduction(2, sz, st, 1, false);
    CHECK(ln_reduce_plan_make(&p, &d, -1, SMS) == 0);
    CHECK(p.outputs == 6 && p.extent == 5 && !p.inner_reduced && p.mapping == LN_RP_THREAD);
    check_sum(&d, &p, 6, 1);
  }
  {  /* a permuted [3, 4, 5] input (strides 1, 15, 3), reducing dims 0 and 2;
     ** the output [4] is contiguous: the reduced dims order by input stride */
    int64_t sz[] = { 3, 4, 5 }, st[] = { 1, 15, 3 };
    ln_ew_desc d = reduction(3, sz, st, 5, false);
    CHECK(ln_reduce_plan_make(&p, &d, -1, SMS) == 0);
    CHECK(p.red.ndim == 2 && p.red.sizes[0] == 5 && p.red.sizes[1] == 3);
    CHECK(p.red.strides[1][1] == 1 && p.inner_reduced);
    check_sum(&d, &p, 4, 3);
  }
  {  /* kept dims of a channels-last-like input order by input stride too:
     ** [2, 3, 4] with input strides (12, 1, 3), reducing dim 0 */
    int64_t sz[] = { 2, 3, 4 }, st[] = { 12, 1, 3 };
    ln_ew_desc d = reduction(3, sz, st, 1, false);
    CHECK(ln_reduce_plan_make(&p, &d, -1, SMS) == 0);
    CHECK(p.kept.ndim == 2 && p.kept.strides[1][1] == 1 && p.kept.sizes[1] == 3);
    check_sum(&d, &p, 12, 1);
  }
  {  /* a broadcast input (stride 0 on a reduced dim) still counts it */
    int64_t sz[] = { 4, 3 }, st[] = { 0, 1 };
    ln_ew_desc d = reduction(2, sz, st, 2, false);
    CHECK(ln_reduce_plan_make(&p, &d, -1, SMS) == 0);
    CHECK(p.extent == 3);
    check_sum(&d, &p, 4, 2);
  }
  {  /* everything reduced, and nothing reduced (a copy) */
    int64_t sz[] = { 7, 9 }, st[] = { 9, 1 };
    ln_ew_desc d = reduction(2, sz, st, 3, false);
    CHECK(ln_reduce_plan_make(&p, &d, -1, SMS) == 0);
    CHECK(p.outputs == 1 && p.extent == 63 && p.kept.ndim == 0);
    check_sum(&d, &p, 1, 5);
    d = reduction(2, sz, st, 0, false);
    CHECK(ln_reduce_plan_make(&p, &d, -1, SMS) == 0);
    CHECK(p.outputs == 63 && p.extent == 1 && p.red.ndim == 0 && p.chunks == 1);
    check_sum(&d, &p, 63, 1);
  }
  {  /* SQDEV's third operand follows the kept dims */
    int64_t sz[] = { 3, 8 }, st[] = { 8, 1 };
    ln_ew_desc d = reduction(2, sz, st, 2, true);
    CHECK(ln_reduce_plan_make(&p, &d, -1, SMS) == 0);
    CHECK(p.nops == 3 && ln_reduce_offset(&p.kept, 2, 2) == 2);
  }
  {  /* a 0-dim description: one output of one element */
    ln_ew_desc d = reduction(0, NULL, NULL, 0, false);
    CHECK(ln_reduce_plan_make(&p, &d, -1, SMS) == 0);
    CHECK(p.outputs == 1 && p.extent == 1 && ln_reduce_offset(&p.kept, 0, 0) == 0);
  }
}

static void test_argmax_dims(void) {
  ln_reduce_plan p;
  int64_t sz[] = { 4, 6 }, st[] = { 6, 1 };
  ln_ew_desc d = reduction(2, sz, st, 2, false);
  CHECK(ln_reduce_plan_make(&p, &d, 1, SMS) == 0);
  CHECK(p.red.ndim == 1 && p.extent == 6 && p.outputs == 4);
  check_sum(&d, &p, 4, 1);
  CHECK(ln_reduce_plan_make(&p, &d, 0, SMS) == -1);  /* output not stride 0 there */
  CHECK(ln_reduce_plan_make(&p, &d, 2, SMS) == -1);  /* no such dim */
  d.nops = 1;
  CHECK(ln_reduce_plan_make(&p, &d, -1, SMS) == -1);
  d.nops = 4;
  CHECK(ln_reduce_plan_make(&p, &d, -1, SMS) == -1);
}

/* The strategies for typical shapes (contiguous inputs). */
static void test_choices(void) {
  ln_reduce_plan p;
  /* rows of 1000: a block per row, enough rows for the device */
  p.inner_reduced = true;
  ln_reduce_choose(&p, 4096, 1000, SMS);
  CHECK(p.mapping == LN_RP_BLOCK && p.chunks == 1 && p.threads == 256 && p.blocks == 4096);
  CHECK(p.blocks2 == 0);
  /* short rows: a thread per row */
  ln_reduce_choose(&p, 1000000, 8, SMS);
  CHECK(p.mapping == LN_RP_THREAD && p.chunks == 1 && p.blocks == (1000000 + 255) / 256);
  /* a block per row of 100: 128 threads are enough */
  ln_reduce_choose(&p, 100000, 200, SMS);
  CHECK(p.mapping == LN_RP_BLOCK && p.threads == 256);
  ln_reduce_choose(&p, 100000, 130, SMS);
  CHECK(p.mapping == LN_RP_BLOCK && p.threads == 256);
  ln_reduce_choose(&p, 100000, 128, SMS);
  CHECK(p.mapping == LN_RP_BLOCK && p.threads == 128);
  /* everything into one value: split in chunks, then combined */
  ln_reduce_choose(&p, 1, 100000000, SMS);
  CHECK(p.mapping == LN_RP_BLOCK && p.chunks == LN_RP_MAX_CHUNKS);
  CHECK(p.chunks * p.chunk_len >= p.extent && (p.chunks - 1) * p.chunk_len < p.extent);
  CHECK(p.blocks == p.chunks && p.blocks2 == 1 && p.threads2 == 256);
  /* few long rows: chunks until the device has a wave of blocks */
  ln_reduce_choose(&p, 8, 1 << 20, SMS);
  int64_t want = (SMS * LN_RP_THREADS_PER_SM / LN_RP_THREADS + 7) / 8;
  CHECK(p.chunks == want && p.blocks == 8 * want && p.blocks2 == 8);
  /* a small total stays in one launch */
  ln_reduce_choose(&p, 1, 1000, SMS);
  CHECK(p.mapping == LN_RP_BLOCK && p.chunks == 1 && p.blocks == 1);
  /* columns (inner dim kept): threads along the rows, split when few */
  p.inner_reduced = false;
  ln_reduce_choose(&p, 4, 1000000, SMS);
  CHECK(p.mapping == LN_RP_THREAD && p.chunks == LN_RP_MAX_CHUNKS && p.blocks2 == 4);
  CHECK(p.threads2 == 256 && p.chunks * p.chunk_len >= p.extent);
  ln_reduce_choose(&p, 4096, 4096, SMS);
  CHECK(p.mapping == LN_RP_THREAD && p.chunks == 4096 / LN_RP_THREAD_MIN_CHUNK);
  ln_reduce_choose(&p, 1 << 20, 64, SMS);
  CHECK(p.mapping == LN_RP_THREAD && p.chunks == 1 && p.blocks == (1 << 20) / 256);
  /* empty: no outputs, or nothing to reduce (identities are written) */
  ln_reduce_choose(&p, 0, 100, SMS);
  CHECK(p.blocks == 0 && p.blocks2 == 0);
  ln_reduce_choose(&p, 100, 0, SMS);
  CHECK(p.chunks == 1 && p.blocks == 1 && p.chunk_len == 0);
  /* a huge number of outputs: the grid loops */
  ln_reduce_choose(&p, (int64_t)1 << 40, 2, SMS);
  CHECK(p.blocks == LN_RP_MAX_BLOCKS);
}

/* Chunked walks through check_sum: the partial bookkeeping of a split. */
static void test_split_walk(void) {
  ln_reduce_plan p;
  int64_t sz[] = { 3, 200 }, st[] = { 200, 1 };
  ln_ew_desc d = reduction(2, sz, st, 2, false);
  CHECK(ln_reduce_plan_make(&p, &d, -1, SMS) == 0);
  p.chunks = 7;  /* force uneven chunks, the last one short */
  p.chunk_len = (p.extent + 6) / 7;
  check_sum(&d, &p, 3, 32);
}

int main(void) {
  test_walks();
  test_argmax_dims();
  test_choices();
  test_split_walk();
  return check_done("test_reduce_plan");
}
