/*
** random.h -- seedable random numbers whose values depend only on the seed
** and the sequence of calls, never on the thread count: element i of a
** draw is a pure function of (seed, offset + i) (a counter-based generator).
*/
#ifndef LN_RANDOM_H
#define LN_RANDOM_H

#include <stdint.h>

#include "tensor.h"

void ln_manual_seed(uint64_t seed);
uint64_t ln_initial_seed(void);

/* Fill t with uniform [from, to) or normal(mean, std) values. */
ln_status ln_uniform_(ln_tensor *t, double from, double to);
ln_status ln_normal_(ln_tensor *t, double mean, double std);
ln_tensor *ln_rand(const int64_t *sizes, int ndim, ln_dtype dtype, ln_device dev);
ln_tensor *ln_randn(const int64_t *sizes, int ndim, ln_dtype dtype, ln_device dev);
/* A random permutation of 0..n-1 (int64), for shuffling. */
ln_tensor *ln_randperm(int64_t n);

/* The generator's state, so that checkpoints can save and restore it. */
typedef struct ln_rng_state { uint64_t seed, offset; } ln_rng_state;
ln_rng_state ln_rng_get_state(void);
void ln_rng_set_state(ln_rng_state s);

#endif
