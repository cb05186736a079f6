/* CPU emulation of cuda_bf16.h: the bf16 storage type and its round to
 * nearest even conversion (tests/cuda_emu). */
#ifndef MPL_EMU_CUDA_BF16_H
#define MPL_EMU_CUDA_BF16_H

#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
struct __nv_bfloat16 {
    uint16_t x;
};

static inline __nv_bfloat16 __float2bfloat16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    __nv_bfloat16 r;
    if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu)) {
        r.x = (uint16_t)((u >> 16) | 0x0040u);
        return r;
    }
    u += 0x7fffu + ((u >> 16) & 1u);
    r.x = (uint16_t)(u >> 16);
    return r;
}

static inline float __bfloat162float(__nv_bfloat16 h)
{
    const uint32_t u = (uint32_t)h.x << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}
#endif

#endif
