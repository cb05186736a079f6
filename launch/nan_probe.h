/* Finding where a non-finite value first appeared, and making one on
 * purpose for tests. The probe wraps the trainer's attention instance (an
 * mpl_attn whose calls pass through to the real mechanism), so it sees the
 * input (qkv) and output of every block's attention without any change to
 * the model: a value that is finite at block l's input and not at its
 * output appeared in the attention; one that is finite at block l's output
 * and not at block l+1's input appeared in block l's MLP or residual.
 * Checking costs a scan of every activation, so it is off in normal steps
 * and switched on only to re-run the forward of a step that was bad.
 * Injection (config keys debug_nan_*) writes a NaN into one block's
 * attention output (or its input gradient) at chosen steps on chosen ranks. */
#ifndef MPL_NAN_PROBE_H
#define MPL_NAN_PROBE_H

#include <stdint.h>

#include "config.h"
#include "core/attn.h"

/* Locations, ordered as the forward meets them. */
#define MPL_NAN_LOC_NONE INT64_MAX
/* block l's attention input: 2l; its output: 2l + 1 */

typedef struct mpl_nan_probe mpl_nan_probe;

/* Local. Replace *attn by a probe that owns the original instance (and
 * destroys it with itself through mpl_attn_destroy). The injection is
 * taken from cfg's debug_nan_* keys for this world rank. *probe is
 * borrowed from the new instance (valid until it is destroyed). */
mpl_status mpl_nan_probe_wrap(mpl_attn *attn, const mpl_config *cfg, int world_rank,
                              mpl_nan_probe **probe);

/* Local. The step being computed (1-based), for injection. These three
 * accept p = NULL (no probe: a device model) and do nothing. */
void mpl_nan_probe_set_step(mpl_nan_probe *p, int64_t step);
/* Local. Start recording (resets the location) or stop. */
void mpl_nan_probe_check(mpl_nan_probe *p, int on);
/* Local. The first location recorded since checking began. */
int64_t mpl_nan_probe_first(const mpl_nan_probe *p);

/* Local. 1 when any of x[0..n) is NaN or infinite. */
int mpl_nan_any(const float *x, int64_t n);

#endif
