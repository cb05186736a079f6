/* The fp32 instance of Combiner attention; the bodies are the combiner_*
 * templates, shared with the other precision so that the fp64 gradient
 * tests cover the code that trains. */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../core/fastexp.h"
#include "../core/layers.h"
#include "combiner.h"

#define MPL_REAL float
#define MPL_SUF(name) name##_f32
#define MPL_EXP mpl_expf_vec
#define MPL_LOG logf
#include "combiner_impl.h"
#include "combiner_fixed_impl.h"
#include "combiner_logsparse_impl.h"
#include "combiner_logsparse_pieces_impl.h"
#include "combiner_stream_impl.h"
