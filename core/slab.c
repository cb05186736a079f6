/* Slab layout table and aligned slab allocation. */
#include "slab.h"

#include <stdlib.h>
#include <string.h>

mpl_status mpl_slab_layout_add(mpl_slab_layout *lay, const char *name, int ndim,
                               const int64_t *shape, int decay, int64_t *offset_out)
{
    if (ndim < 1 || ndim > MPL_TENSOR_NDIM_MAX)
        return mpl_err(MPL_ERR_ARG, "tensor '%s': ndim=%d not in 1..%d", name, ndim,
                       MPL_TENSOR_NDIM_MAX);
    if (strlen(name) >= MPL_TENSOR_NAME_MAX)
        return mpl_err(MPL_ERR_ARG, "tensor name '%s' longer than %d", name,
                       MPL_TENSOR_NAME_MAX - 1);
    if (mpl_slab_layout_find(lay, name))
        return mpl_err(MPL_ERR_ARG, "tensor '%s' declared twice", name);
    if (lay->n_tensors == lay->cap) {
        int cap = lay->cap ? 2 * lay->cap : 32;
        mpl_tensor_desc *t = realloc(lay->t, (size_t)cap * sizeof *t);
        if (!t) return mpl_err(MPL_ERR_NOMEM, "out of memory growing slab layout");
        lay->t = t;
        lay->cap = cap;
    }
    mpl_tensor_desc *d = &lay->t[lay->n_tensors];
    memset(d, 0, sizeof *d);
    snprintf(d->name, sizeof d->name, "%s", name);
    d->ndim = ndim;
    d->n_elems = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 1)
            return mpl_err(MPL_ERR_ARG, "tensor '%s': dimension %d is %lld", name, i,
                           (long long)shape[i]);
        d->shape[i] = shape[i];
        d->n_elems *= shape[i];
    }
    d->decay = decay;
    int64_t a = MPL_SLAB_ALIGN_ELEMS;
    d->offset = (lay->n_elems + a - 1) / a * a;
    lay->n_elems = d->offset + d->n_elems;
    lay->n_tensors++;
    if (offset_out) *offset_out = d->offset;
    return MPL_OK;
}

const mpl_tensor_desc *mpl_slab_layout_find(const mpl_slab_layout *lay, const char *name)
{
    for (int i = 0; i < lay->n_tensors; i++)
        if (strcmp(lay->t[i].name, name) == 0) return &lay->t[i];
    return NULL;
}

void mpl_slab_layout_free(mpl_slab_layout *lay)
{
    free(lay->t);
    memset(lay, 0, sizeof *lay);
}

mpl_status mpl_slab_alloc(int64_t n_elems, float **out)
{
    size_t n_bytes = (size_t)(n_elems > 0 ? n_elems : 1) * sizeof(float);
    n_bytes = (n_bytes + 63) / 64 * 64;
    float *p = aligned_alloc(64, n_bytes);
    if (!p) return mpl_err(MPL_ERR_NOMEM, "out of memory allocating a %zu-byte slab", n_bytes);
    memset(p, 0, n_bytes);
    *out = p;
    return MPL_OK;
}

void mpl_slab_free(float **p)
{
    if (!p) return;
    free(*p);
    *p = NULL;
}
