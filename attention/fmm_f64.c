/* The fp64 instance of FMM attention; the bodies are the fmm_*_impl.h
 * templates, shared with the other precision so that the fp64 gradient
 * tests cover the code that trains. */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../core/layers.h"
#include "fmm.h"

#define MPL_REAL double
#define MPL_IREAL int64_t
#define MPL_FMM_LANES 4
#define MPL_FMM_VEXP_F32 0
#define MPL_SUF(name) name##_f64
#define MPL_EXP exp
#define MPL_LOG log
#define MPL_TANH tanh
#include "fmm_kern_impl.h"
#include "fmm_near_impl.h"
#include "fmm_far_impl.h"
#include "fmm_impl.h"
#include "fmm_bwd_impl.h"
#include "fmm_stream_impl.h"
