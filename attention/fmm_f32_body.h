/* The fp32 instance's precision settings and the template bodies, for
 * attention/fmm_f32.c and for the test that builds the same bodies at the
 * other vector width (tests/test_attention_fmm_lanes.c). The includer
 * defines MPL_SUF, and MPL_FMM_LANES where it wants a width other than
 * the target's: 16 (64-byte vectors) where the compiler targets AVX-512,
 * 8 otherwise. Needs math.h, omp.h, stdint.h, stdlib.h, string.h,
 * core/fastexp.h, core/layers.h and fmm.h first; no include guard on
 * purpose. */
#ifndef MPL_FMM_LANES
#if defined(__AVX512F__)
#define MPL_FMM_LANES 16
#else
#define MPL_FMM_LANES 8
#endif
#endif
#define MPL_REAL float
#define MPL_IREAL int32_t
#define MPL_FMM_VEXP_F32 1
#define MPL_EXP mpl_expf_vec
#define MPL_LOG logf
#define MPL_TANH tanhf
#include "fmm_kern_impl.h"
#include "fmm_near_impl.h"
#include "fmm_far_impl.h"
#include "fmm_impl.h"
#include "fmm_bwd_impl.h"
#include "fmm_stream_impl.h"
