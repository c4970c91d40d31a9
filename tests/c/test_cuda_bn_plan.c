/*
** test_cuda_bn_plan.c -- the launch planning of the BatchNorm CUDA kernels
** (cuda/batchnorm_plan.h), on the CPU: digit walks against division,
** reduction plans within the hardware's limits for C = 1..4096, huge
** N*H*W, odd channel counts, empty shapes and too many blocks, the
** merge teams' shuffle masks, vector widths, and a simulation of every
** lane's walk (reductions and maps) that must visit each element of each
** (block, channel) exactly once.
*/
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "cuda/batchnorm_plan.h"

/* A small deterministic generator (no dependence on rand()). */
static uint64_t rng = 88172645463325252ULL;
static int64_t draw(int64_t n) {
  rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
  return (int64_t)(rng % (uint64_t)n);
}

static void test_digits(void) {
  for (int t = 0; t < 200; t++) {
    int64_t n[4] = { 1 + draw(4), 1 + draw(9), 1 + draw(9), 1 + draw(9) };
    int64_t total = n[0] * n[1] * n[2] * n[3], start = draw(total), S = 1 + draw(2 * total);
    int64_t d[4], s[4], e[4];
    ln_bn_digits(start, n, d);
    ln_bn_digits(S, n, s);
    bool same = true;
    for (int64_t q = start; q < total + S; q += S) {
      ln_bn_digits(q, n, e);
      same = same && memcmp(d, e, sizeof d) == 0;
      ln_bn_digits_add(d, s, n);
    }
    CHECK(same);
  }
}

/* The last CTA's merge teams: each merging thread's shuffle mask holds
** exactly its team's lanes, all of them threads that exist and merge (a
** mask naming a lane that is absent or elsewhere is undefined behaviour);
** the teams cover the merging threads once. */
static bool teams_ok(const ln_bn_red_plan *p) {
  int lanes = ln_bn_merge_lanes(p);
  bool ok = lanes >= p->team && lanes <= p->threads && lanes % p->team == 0;
  for (int tid = 0; tid < lanes && ok; tid++) {
    unsigned mask = ln_bn_team_mask(p->team, tid);
    int base = tid & ~31, members = 0;
    ok = (mask >> (tid & 31)) & 1u;
    for (int l = 0; l < 32 && ok; l++) {
      if (!((mask >> l) & 1u)) continue;
      members++;
      ok = base + l < lanes && (base + l) / p->team == tid / p->team;
    }
    ok = ok && members == p->team;
  }
  return ok;
}

/* Limits every plan must respect, and the channels its tiles cover. */
static bool plan_ok(const ln_bn_geom *g, int64_t G, const ln_bn_red_plan *p) {
  bool ok = p->threads == p->ct * p->rt && p->threads <= LN_BN_RED_THREADS &&
            p->threads >= 1 && (p->rt & (p->rt - 1)) == 0 &&
            (!g->rows || (int64_t)p->threads * p->vec <= LN_BN_RED_SLOTS);
  int64_t lane_cap = (int64_t)p->rt * LN_BN_MAX_LANE_UNITS;
  ok = ok && p->splits >= 1 && p->per_split <= lane_cap &&
       (p->splits <= LN_BN_MAX_SPLITS || p->per_split * 2 > lane_cap) &&
       p->splits * p->per_split >= p->units && (p->splits - 1) * p->per_split < p->units;
  ok = ok && p->ctas == G * p->tiles * p->splits && p->ctas <= LN_BN_MAX_GRID;
  ok = ok && p->team >= 1 && p->team <= 32 && (p->team & (p->team - 1)) == 0 &&
       (p->team >= p->splits || p->team == 32);
  ok = ok && (p->splits == 1 || p->per_split >= (int64_t)p->rt * LN_BN_MIN_UNITS);
  ok = ok && teams_ok(p);
  int64_t next = 0;
  for (int64_t t = 0; t < p->tiles && ok; t++) {
    int64_t c0, c1;
    ln_bn_red_tile(p, t, &c0, &c1);
    ok = c0 == next && c1 > c0;
    next = c1;
  }
  return ok && next == g->C;
}

static void test_limits(void) {
  bool all = true;
  for (int64_t C = 1; C <= 4096; C += C < 64 ? 1 : 37) {
    for (int rows = 0; rows < 2; rows++) {
      int64_t shapes[4][2] = { { 1, 1 }, { 2, 49 }, { 64, 3136 }, { 100000, 1 } };
      for (int k = 0; k < 4; k++) {
        ln_bn_geom g = { C, shapes[k][0], shapes[k][1], rows };
        if (g.outer * g.inner < 2 && k == 0) g.outer = 2;
        for (int vec = 1; vec <= 4; vec *= 2) {
          if ((rows ? C : g.inner) % vec) continue;
          ln_bn_red_plan p;
          bool made = ln_bn_red_plan_for(&g, 1 + (k & 1) * 3, vec, 1056, &p);
          all = all && made && plan_ok(&g, 1 + (k & 1) * 3, &p);
        }
      }
    }
  }
  CHECK(all);
  /* huge N*H*W: 2^40 values in one channel, 64-bit counts */
  ln_bn_geom huge = { 1, (int64_t)1 << 20, (int64_t)1 << 20, false };
  ln_bn_red_plan p;
  CHECK(ln_bn_red_plan_for(&huge, 1, 4, 1056, &p) && plan_ok(&huge, 1, &p));
  CHECK(p.units == ((int64_t)1 << 38) && p.per_split <= 256 * LN_BN_MAX_LANE_UNITS &&
        p.splits == ((int64_t)1 << 38) / (256 * LN_BN_MAX_LANE_UNITS));
  ln_bn_geom big = { 1, 256, 1 << 20, false };   /* 2^28 values: splits capped */
  CHECK(ln_bn_red_plan_for(&big, 1, 1, 1056, &p) && plan_ok(&big, 1, &p) &&
        p.splits == LN_BN_MAX_SPLITS);
  huge.rows = true;
  CHECK(ln_bn_red_plan_for(&huge, 1, 1, 1056, &p) && plan_ok(&huge, 1, &p));
  /* few channels with many rows split; many channels with few rows do not */
  ln_bn_geom few = { 3, 32, 3136, false }, many = { 4096, 32, 1, true };
  CHECK(ln_bn_red_plan_for(&few, 1, 1, 1056, &p) && p.splits >= 40 && p.ctas >= 132);
  CHECK(ln_bn_red_plan_for(&many, 1, 4, 1056, &p) && p.splits <= 4 && p.tiles == 4 &&
        p.ct == 256 && p.rt == 1);
  /* 9 columns of 16 lanes: 144 threads, a partial last warp; teams of 32
  ** (many splits) leave it out of the merge, smaller teams fit in it */
  ln_bn_geom nine = { 9, 4096, 64, true };
  CHECK(ln_bn_red_plan_for(&nine, 1, 1, 1056, &p) && p.threads == 144 && p.team == 32 &&
        ln_bn_merge_lanes(&p) == 128 && teams_ok(&p));
  p.team = 16;
  CHECK(ln_bn_merge_lanes(&p) == 144 && teams_ok(&p));
  p.team = 1;
  CHECK(ln_bn_merge_lanes(&p) == 144 && teams_ok(&p) && ln_bn_team_mask(1, 37) == 1u << 5);
  ln_bn_geom odd = { 3, 7, 5, true };
  CHECK(ln_bn_red_plan_for(&odd, 1, 1, 1056, &p) && p.ct == 3 && p.rt == 64 &&
        p.threads == 192 && p.tiles == 1);
  /* empty, misfit vectors, too many blocks */
  ln_bn_geom empty = { 0, 4, 4, false }, none = { 4, 0, 4, true };
  CHECK(!ln_bn_red_plan_for(&empty, 1, 1, 1056, &p));
  CHECK(!ln_bn_red_plan_for(&none, 1, 1, 1056, &p));
  CHECK(!ln_bn_red_plan_for(&few, 0, 1, 1056, &p));
  ln_bn_geom odd_inner = { 3, 32, 49, false };
  CHECK(!ln_bn_red_plan_for(&odd_inner, 1, 2, 1056, &p));
  ln_bn_geom wide = { (int64_t)1 << 20, 2, 1, false };
  CHECK(!ln_bn_red_plan_for(&wide, (int64_t)1 << 12, 1, 1056, &p));
  CHECK(ln_bn_red_plan_for(&wide, (int64_t)1 << 10, 1, 1056, &p) && p.splits == 1);
}

static void test_vec(void) {
  int64_t dense[4] = { 1024, 256, 16, 1 }, strided[4] = { 1024, 256, 16, 2 };
  int64_t odd[4] = { 1024, 255, 16, 1 };
  uintptr_t a16 = 4096, a8 = 4104;
  const int64_t (*s1)[4] = (const int64_t (*)[4])dense;
  CHECK(ln_bn_pick_vec(16, 4, 8, 1, &a16, s1) == 4);   /* 16 bytes of float32 */
  CHECK(ln_bn_pick_vec(16, 2, 8, 1, &a16, s1) == 8);   /* float16 */
  CHECK(ln_bn_pick_vec(16, 8, 8, 1, &a16, s1) == 2);   /* float64 */
  CHECK(ln_bn_pick_vec(16, 2, 4, 1, &a16, s1) == 4);   /* capped */
  CHECK(ln_bn_pick_vec(16, 4, 8, 1, &a8, s1) == 2);    /* 8-byte aligned */
  CHECK(ln_bn_pick_vec(6, 4, 8, 1, &a16, s1) == 2);    /* 6 = 2 * 3 */
  CHECK(ln_bn_pick_vec(7, 4, 8, 1, &a16, s1) == 1);
  const int64_t (*s2)[4] = (const int64_t (*)[4])strided;
  CHECK(ln_bn_pick_vec(16, 4, 8, 1, &a16, s2) == 1);
  int64_t both[2][4];
  memcpy(both[0], dense, sizeof dense);
  memcpy(both[1], odd, sizeof odd);
  uintptr_t addrs[2] = { a16, a16 };
  CHECK(ln_bn_pick_vec(16, 4, 8, 2, addrs, (const int64_t (*)[4])both) == 1);
}

/* Every lane of every CTA of a reduction plan, walking as the kernel
** does: each value of each (block, channel) is visited once. x is a dense
** tensor of G blocks laid out for g (plane NCHW-like, rows NHWC-like). */
static bool simulate_reduction(const ln_bn_geom *g, int64_t G, int vec) {
  ln_bn_red_plan p;
  if (!ln_bn_red_plan_for(g, G, vec, 1056, &p)) return false;
  int64_t M = g->outer * g->inner, numel = G * g->C * M;
  int64_t s_c = g->rows ? 1 : M, s_outer = g->rows ? g->inner * g->C : g->inner;
  int64_t s_inner = g->rows ? g->C : 1, s_block = g->C * M;
  unsigned char *seen = calloc((size_t)numel, 1);
  bool ok = seen != NULL;
  for (int64_t b = 0; b < p.ctas && ok; b++) {
    int64_t blk, tile, split, c0, c1;
    ln_bn_red_cta(&p, b, &blk, &tile, &split);
    ln_bn_red_tile(&p, tile, &c0, &c1);
    for (int t = 0; t < p.threads; t++) {
      int col = t % p.ct, lane = t / p.ct;
      int64_t first, end, n[4], step[4], d[4];
      ln_bn_red_units(&p, g, split, lane, &first, &end, n, step);
      ln_bn_digits(first, n, d);
      for (int64_t q = first; q < end; q += p.rt, ln_bn_digits_add(d, step, n)) {
        for (int v = 0; v < vec; v++) {
          int64_t c = g->rows ? c0 + (int64_t)col * vec + v : c0;
          if (c >= c1) continue;
          int64_t i = g->rows ? d[3] : d[3] * vec + v;
          int64_t off = blk * s_block + c * s_c + d[2] * s_outer + i * s_inner;
          ok = ok && off >= 0 && off < numel && !seen[off];
          if (ok) seen[off] = 1;
        }
      }
    }
  }
  for (int64_t i = 0; i < numel && ok; i++) ok = seen[i];
  free(seen);
  return ok;
}

/* The map's grid-stride walk over the levels: each element once. */
static bool simulate_map(const ln_bn_geom *g, int64_t G, int vec) {
  ln_bn_lv lv;
  ln_bn_map_plan mp;
  ln_bn_lv_for(g, G, vec, &lv);
  ln_bn_map_plan_for(&lv, &mp);
  int64_t M = g->outer * g->inner, numel = G * g->C * M, s[4];
  ln_bn_lv_strides(g->rows, vec, g->C * M, g->rows ? 1 : M,
                   g->rows ? g->inner * g->C : g->inner, g->rows ? g->C : 1, s);
  unsigned char *seen = calloc((size_t)numel, 1);
  bool ok = seen != NULL && mp.ctas >= 1 && mp.ctas <= LN_BN_MAP_MAX_CTAS;
  int64_t S = mp.ctas * mp.threads, step[4], d[4];
  ln_bn_digits(S, lv.n, step);
  for (int64_t t = 0; t < S && ok; t++) {
    ln_bn_digits(t, lv.n, d);
    for (int64_t q = t; q < mp.total; q += S, ln_bn_digits_add(d, step, lv.n)) {
      int64_t off = ln_bn_offset(d, s);
      for (int v = 0; v < vec; v++) {
        ok = ok && off + v < numel && !seen[off + v];
        if (ok) seen[off + v] = 1;
      }
    }
  }
  for (int64_t i = 0; i < numel && ok; i++) ok = seen[i];
  free(seen);
  return ok;
}

static void test_walks(void) {
  static const int64_t shapes[][4] = {  /* C, outer, inner, G */
    { 1, 2, 1, 1 }, { 3, 7, 5, 1 }, { 3, 7, 5, 2 }, { 5, 2, 4096, 1 }, { 1, 3, 100000, 1 },
    { 300, 9, 4, 1 }, { 1027, 3, 2, 3 }, { 4096, 2, 1, 1 }, { 64, 16, 8, 4 },
    { 2, 40000, 1, 1 }, { 7, 1, 2, 5 },
  };
  for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
    for (int rows = 0; rows < 2; rows++) {
      ln_bn_geom g = { shapes[k][0], shapes[k][1], shapes[k][2], rows };
      for (int vec = 1; vec <= 8; vec *= 2) {
        int64_t last = rows ? g.C : g.inner;
        if (last % vec) continue;
        if (vec <= 4 && !simulate_reduction(&g, shapes[k][3], vec)) {
          fprintf(stderr, "reduction walk: C=%lld outer=%lld inner=%lld G=%lld rows=%d vec=%d\n",
                  (long long)g.C, (long long)g.outer, (long long)g.inner,
                  (long long)shapes[k][3], rows, vec);
          CHECK(false);
        }
        if (!simulate_map(&g, shapes[k][3], vec)) {
          fprintf(stderr, "map walk: C=%lld rows=%d vec=%d\n", (long long)g.C, rows, vec);
          CHECK(false);
        }
      }
    }
  }
  CHECK(true);
}

int main(void) {
  test_digits();
  test_limits();
  test_vec();
  test_walks();
  return check_done("cuda_bn_plan");
}
