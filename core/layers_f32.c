/* The fp32 instance of the layers: what training runs. The body lives in
 * layers_impl.h and is shared with layers_f64.c, which the gradient tests
 * check, so the two cannot drift apart. */
#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "layers.h"

#include "fastexp.h"

#define MPL_REAL float
#define MPL_SUF(name) name##_f32
#define MPL_GEMM cblas_sgemm
#define MPL_EXP mpl_expf_vec
#define MPL_LOG logf
#include "layers_impl.h"
