/* Counter-based random numbers (Philox4x32-10). A value depends only on
 * (key, counter), never on call order, so a parameter element initialises
 * identically at any rank layout and any thread count. */
#ifndef MPL_PHILOX_H
#define MPL_PHILOX_H

#include <stdint.h>

typedef struct mpl_philox_u4 { uint32_t v[4]; } mpl_philox_u4;

/* Local. The raw generator: four 32-bit words from a 128-bit counter and a
 * 64-bit key. */
mpl_philox_u4 mpl_philox4x32(const uint32_t ctr[4], uint64_t key);

/* Local. FNV-1a of a string: the stream id of a named tensor. */
uint64_t mpl_philox_stream(const char *name);

/* Local. Uniform in (0, 1), the n-th value of (seed, stream). */
double mpl_philox_uniform(uint64_t seed, uint64_t stream, uint64_t n);

/* Local. Standard normal, the n-th value of (seed, stream) (Box-Muller). */
double mpl_philox_normal(uint64_t seed, uint64_t stream, uint64_t n);

/* Local. Fill x[0..n_elems) with std * normal(seed, stream, first + i). */
void mpl_philox_fill_normal(float *x, int64_t n_elems, uint64_t seed,
                            uint64_t stream, uint64_t first, double std);

#endif
