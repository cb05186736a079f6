/* The fp32 instance of FMM attention; the bodies are the fmm_*_impl.h
 * templates, shared with the other precision so that the fp64 gradient
 * tests cover the code that trains. */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../core/fastexp.h"
#include "../core/layers.h"
#include "fmm.h"

#define MPL_REAL float
#define MPL_IREAL int32_t
#if defined(__AVX512F__)
#define MPL_FMM_LANES 16 /* 64-byte vectors where the target has them */
#else
#define MPL_FMM_LANES 8
#endif
#define MPL_FMM_VEXP_F32 1
#define MPL_SUF(name) name##_f32
#define MPL_EXP mpl_expf_vec
#define MPL_LOG logf
#define MPL_TANH tanhf
#include "fmm_kern_impl.h"
#include "fmm_near_impl.h"
#include "fmm_far_impl.h"
#include "fmm_impl.h"
#include "fmm_bwd_impl.h"
#include "fmm_stream_impl.h"
