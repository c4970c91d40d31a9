/*
** scratch.h -- per-thread scratch memory for a call's host arrays, kept
** from one call to the next. Private to nn/.
**
** A BatchNorm call needs a few arrays of C doubles on the host, and its
** reductions a partial result per block range and channel. From malloc,
** those went back to the system at each free (glibc maps blocks over 128
** KB and trims its heap past that) and came back as page faults and TLB
** flushes: an eval of a (64,4096) BatchNorm1d took 176 us from Lua, its
** kernel 30 us; the reductions' 150 KB for a (256,1024) input cost a
** fifth of its one-thread training forward.
**
** Blocks are freed last in, first out: ln_scratch_free(p) gives back p
** and every block taken after it. A request that does not fit while
** others are held comes from malloc (and goes back the same way, with
** the block taken before it); the thread's arena grows to the largest
** total asked for when it is next empty, and is freed when the thread
** exits.
*/
#ifndef LN_NN_SCRATCH_H
#define LN_NN_SCRATCH_H

#include <stddef.h>

/* n bytes, 64-byte aligned; NULL when out of memory. */
void *ln_scratch_alloc(size_t n);
/* The same, zeroed. */
void *ln_scratch_zeroed(size_t n);
/* Give back p (NULL does nothing) and the blocks taken after it. */
void ln_scratch_free(void *p);

#endif
