/* The fp64 instance of FMM attention; the bodies are fmm_near_impl.h,
 * fmm_far_impl.h and fmm_impl.h, shared with the other precision so that
 * the fp64 gradient tests cover the code that trains. */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../core/layers.h"
#include "fmm.h"

#define MPL_REAL double
#define MPL_SUF(name) name##_f64
#define MPL_EXP exp
#define MPL_GEMM cblas_dgemm
#define MPL_LOG log
#define MPL_TANH tanh
#include "fmm_near_impl.h"
#include "fmm_far_impl.h"
#include "fmm_impl.h"
