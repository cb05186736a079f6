/* AdamW with gradient clipping on the device of a device model: the two
 * moments in device slabs, and one step that computes the gradient norm
 * (deterministic reduction), clips and updates in one fused kernel, with a
 * single copy back to the host (the loss of the last forward and the
 * norm). A build without CUDA links core/cuda_none.c, whose create answers
 * MPL_ERR_UNSUPPORTED. */
#ifndef MPL_OPTIM_DEV_H
#define MPL_OPTIM_DEV_H

#include <stdint.h>

#include "adamw.h"
#include "model.h"
#include "status.h"

typedef struct mpl_optim_dev mpl_optim_dev;

/* Local. Zeroed moments for the parameters of device model m (borrowed; it
 * must outlive the optimizer). MPL_ERR_ARG for a CPU model. */
mpl_status mpl_optim_dev_create(mpl_model *m, mpl_optim_dev **out);
/* Local. Frees; *o = NULL; NULL is a no-op. */
void mpl_optim_dev_destroy(mpl_optim_dev **o);

/* Local. One optimizer step on the model's gradient slab (already scaled
 * by the caller's loss normalisation): norm = ||grads||, clipped to
 * grad_clip (0: no clipping), AdamW step `step` (1-based) at rate lr. When
 * the norm or the last forward's loss is not finite the parameters and
 * moments are left as they were. *loss_sum and *norm receive the last
 * forward's loss sum and the norm before clipping; this is the step's one
 * wait for the device. */
mpl_status mpl_optim_dev_step(mpl_optim_dev *o, int64_t step, double lr,
                              const mpl_adamw_hparams *hp, double grad_clip, double *loss_sum,
                              double *norm);

/* Local. The whole moments to and from host buffers of layout.n_elems
 * floats (checkpoints store them fp32 and global). */
mpl_status mpl_optim_dev_get(mpl_optim_dev *o, float *m, float *v);
mpl_status mpl_optim_dev_set(mpl_optim_dev *o, const float *m, const float *v);

#endif
