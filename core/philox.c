/* Philox4x32-10 (Salmon et al., SC'11) and the distributions built on it. */
#include "philox.h"

#include <math.h>

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

mpl_philox_u4 mpl_philox4x32(const uint32_t ctr[4], uint64_t key)
{
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
    uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);
    for (int round = 0; round < 10; round++) {
        uint64_t p0 = (uint64_t)PHILOX_M0 * c0;
        uint64_t p1 = (uint64_t)PHILOX_M1 * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        c1 = (uint32_t)p1;
        c3 = (uint32_t)p0;
        c0 = n0;
        c2 = n2;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    mpl_philox_u4 r = {{c0, c1, c2, c3}};
    return r;
}

uint64_t mpl_philox_stream(const char *name)
{
    uint64_t h = 1469598103934665603ull;
    for (; *name; name++) {
        h ^= (unsigned char)*name;
        h *= 1099511628211ull;
    }
    return h;
}

/* 53 random bits -> (0, 1): never 0, so log() below is finite. */
static double to_unit(uint32_t hi, uint32_t lo)
{
    uint64_t b = ((uint64_t)hi << 21) ^ (uint64_t)(lo >> 11);
    b &= (1ull << 53) - 1;
    return ((double)b + 0.5) / 9007199254740992.0;
}

static mpl_philox_u4 draw(uint64_t seed, uint64_t stream, uint64_t n)
{
    uint32_t ctr[4] = {(uint32_t)n, (uint32_t)(n >> 32), (uint32_t)stream,
                       (uint32_t)(stream >> 32)};
    return mpl_philox4x32(ctr, seed);
}

double mpl_philox_uniform(uint64_t seed, uint64_t stream, uint64_t n)
{
    mpl_philox_u4 r = draw(seed, stream, n);
    return to_unit(r.v[0], r.v[1]);
}

double mpl_philox_normal(uint64_t seed, uint64_t stream, uint64_t n)
{
    mpl_philox_u4 r = draw(seed, stream, n);
    double u1 = to_unit(r.v[0], r.v[1]), u2 = to_unit(r.v[2], r.v[3]);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

void mpl_philox_fill_normal(float *x, int64_t n_elems, uint64_t seed,
                            uint64_t stream, uint64_t first, double std)
{
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n_elems; i++)
        x[i] = (float)(std * mpl_philox_normal(seed, stream, first + (uint64_t)i));
}
