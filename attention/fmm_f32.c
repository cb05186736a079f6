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

#define MPL_SUF(name) name##_f32
#include "fmm_f32_body.h"
