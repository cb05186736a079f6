/* Host-side helpers of the GPU path that every build has (core/cuda.h):
 * bf16 <-> fp32 (tests build bf16 inputs and round references without a
 * GPU) and the carving of buffers out of one allocation. */
#include <string.h>

#include "cuda.h"

mpl_bf16 mpl_bf16_from_f32(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu)) /* NaN: keep it quiet */
        return (mpl_bf16)((u >> 16) | 0x0040u);
    u += 0x7fffu + ((u >> 16) & 1u); /* round to nearest, ties to even */
    return (mpl_bf16)(u >> 16);
}

float mpl_bf16_to_f32(mpl_bf16 x)
{
    const uint32_t u = (uint32_t)x << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

void *mpl_cuda_carve_take(mpl_cuda_carve *c, int64_t n_elems, size_t elem_bytes)
{
    void *p = c->base ? c->base + c->off : NULL;
    c->off += ((size_t)(n_elems > 0 ? n_elems : 1) * elem_bytes + 255) / 256 * 256;
    return p;
}
