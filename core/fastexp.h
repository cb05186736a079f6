/* A vectorisable fp32 exp shared by the fp32 instances of the layers and
 * of attention. Separate so every fp32 kernel uses the same function. */
#ifndef MPL_FASTEXP_H
#define MPL_FASTEXP_H

#include <stdint.h>
#include <string.h>

/* glibc only vectorises expf under -ffast-math, which we do not use (it
 * would also change the fp64 instance). This exp is plain arithmetic that
 * the compiler vectorises inside the GELU and cross-entropy loops; the
 * tests compare it (through the layers) with the fp64 instance. */

/* exp(x) for x <= 88.7, within about 2 ulp (Cephes expf): x = n ln2 + r,
 * |r| <= ln2/2, exp(r) by its degree-7 polynomial, 2^n built from exponent
 * bits. n is read out of the mantissa of x log2(e) + 1.5*2^23 (no
 * float-to-int conversion). Underflow: 0 below x = -87 (the fp32 normal
 * range ends at -87.3). Callers pass x <= 88.7 or accept saturation there
 * (GELU's exp(-2u) for x < -9, where the output is 0 anyway). */
static inline float mpl_expf_vec(float x)
{
    const float shifter = 12582912.0f; /* 1.5 * 2^23: adding rounds to integer */
    float xc = x > 88.7f ? 88.7f : x;
    xc = xc < -87.0f ? -87.0f : xc;
    const float t = xc * 1.44269504088896341f + shifter;
    const float n = t - shifter;
    float r = xc - n * 0.693359375f; /* ln2 in two parts (Cody-Waite) */
    r = r + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t ti, ni;
    memcpy(&ti, &t, sizeof ti);
    ni = ti - 0x4B400000;                 /* = n */
    const int32_t e = (ni + 126) << 23;   /* 2^(n-1): n = 128 stays finite */
    float s;
    memcpy(&s, &e, sizeof s);
    const float y = 2.0f * p * s;
    return x < -87.0f ? 0.0f : y;
}

#endif
