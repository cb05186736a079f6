/* The model's pointwise and GEMM layers, forward and backward side by side.
 * Every op exists twice, `_f32` (what training runs) and `_f64` (what the
 * finite-difference tests check), both instantiated from one template
 * (layers_impl.h), so the fp64 check validates the very code that trains.
 *
 * Conventions (all Local, OpenMP inside, deterministic for a fixed thread
 * count):
 *  - activations are row-major (n_tok, C); n_tok = sequences x tokens;
 *  - linear weights are (OC, IC) as in y = x W^T;
 *  - every backward ACCUMULATES (+=) into its input and parameter gradients,
 *    so callers zero gradients once and shared weights (the tied embedding)
 *    just work. */
#ifndef MPL_LAYERS_H
#define MPL_LAYERS_H

#include <stdint.h>

#define MPL_REAL float
#define MPL_SUF(name) name##_f32
#include "layers_decl.h"
#undef MPL_REAL
#undef MPL_SUF

#define MPL_REAL double
#define MPL_SUF(name) name##_f64
#include "layers_decl.h"
#undef MPL_REAL
#undef MPL_SUF

#endif
