/* Slab layouts: one table of named tensors {name, shape, offset} that drives
 * parameter views, the gradient all-reduce, the optimizer and checkpoints.
 * Parameters, gradients and both AdamW moments are each one allocation laid
 * out by the same table, so collective and file operations are a few big
 * contiguous calls. */
#ifndef MPL_SLAB_H
#define MPL_SLAB_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MPL_TENSOR_NAME_MAX 64
#define MPL_TENSOR_NDIM_MAX 4
/* Offsets are aligned to 16 floats (64 bytes, one cache line / AVX-512). */
#define MPL_SLAB_ALIGN_ELEMS 16

typedef struct mpl_tensor_desc {
    char name[MPL_TENSOR_NAME_MAX];
    int ndim;
    int64_t shape[MPL_TENSOR_NDIM_MAX];
    int64_t n_elems;
    int64_t offset;        /* in elements from the slab start */
    int decay;             /* 1: AdamW applies weight decay (matrices) */
} mpl_tensor_desc;

typedef struct mpl_slab_layout {
    mpl_tensor_desc *t;    /* (n_tensors) */
    int n_tensors;
    int cap;
    int64_t n_elems;       /* total, including alignment padding */
} mpl_slab_layout;

/* Local. Append a tensor; *offset_out (may be NULL) receives its offset. */
mpl_status mpl_slab_layout_add(mpl_slab_layout *lay, const char *name, int ndim,
                               const int64_t *shape, int decay, int64_t *offset_out);
/* Local. The tensor called `name`, or NULL. */
const mpl_tensor_desc *mpl_slab_layout_find(const mpl_slab_layout *lay, const char *name);
/* Local. Free the table; the layout becomes empty. */
void mpl_slab_layout_free(mpl_slab_layout *lay);

/* Local. 64-byte aligned, zeroed float array of n_elems; free with mpl_slab_free. */
mpl_status mpl_slab_alloc(int64_t n_elems, float **out);
void mpl_slab_free(float **p);

#ifdef __cplusplus
}
#endif

#endif
