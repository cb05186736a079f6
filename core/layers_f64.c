/* The fp64 instance of the layers: the finite-difference tests check it,
 * and since the body is the same template (layers_impl.h) as the fp32
 * training path, that check covers the code that trains. */
#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "layers.h"

#define MPL_REAL double
#define MPL_SUF(name) name##_f64
#define MPL_GEMM cblas_dgemm
#define MPL_EXP exp
#define MPL_LOG log
#include "layers_impl.h"
