/* A build without the CUDA backend (MPL_CUDA=OFF, or no toolkit found):
 * the functions of core/cuda.h, core/optim_dev.h and the CUDA model's
 * attach, each answering MPL_ERR_UNSUPPORTED with MPL_CUDA_NOT_BUILT, so
 * that asking for device=cuda fails with that sentence. No handle can be
 * created here, so the accessors are never reached with one. */
#include <stdlib.h>

#include "cuda.h"
#include "model_internal.h"
#include "optim_dev.h"

static mpl_status not_built(void) { return mpl_err(MPL_ERR_UNSUPPORTED, "%s", MPL_CUDA_NOT_BUILT); }

int mpl_cuda_built(void) { return 0; }

mpl_status mpl_cuda_device_count(int *n)
{
    *n = 0;
    return not_built();
}

mpl_status mpl_cuda_create(int device, mpl_cuda **out)
{
    (void)device;
    *out = NULL;
    return not_built();
}

void mpl_cuda_destroy(mpl_cuda **c)
{
    if (c) *c = NULL;
}

int mpl_cuda_device(const mpl_cuda *c) { (void)c; return -1; }
const char *mpl_cuda_device_name(const mpl_cuda *c) { (void)c; return "none"; }
struct CUstream_st *mpl_cuda_stream(const mpl_cuda *c) { (void)c; return NULL; }
int mpl_cuda_sm_count(const mpl_cuda *c) { (void)c; return 0; }
int mpl_cuda_cc(const mpl_cuda *c) { (void)c; return 0; }
mpl_status mpl_cuda_sync(mpl_cuda *c) { (void)c; return not_built(); }

mpl_status mpl_cuda_mem_info(mpl_cuda *c, int64_t *free_bytes, int64_t *total_bytes)
{
    (void)c;
    *free_bytes = *total_bytes = 0;
    return not_built();
}

mpl_status mpl_cuda_alloc(mpl_cuda *c, size_t n_bytes, void **p)
{
    (void)c, (void)n_bytes;
    *p = NULL;
    return not_built();
}

void mpl_cuda_free(mpl_cuda *c, void **p)
{
    (void)c;
    if (p) *p = NULL;
}

mpl_status mpl_cuda_upload(mpl_cuda *c, void *dst, const void *src, size_t n_bytes)
{
    (void)c, (void)dst, (void)src, (void)n_bytes;
    return not_built();
}

mpl_status mpl_cuda_download(mpl_cuda *c, void *dst, const void *src, size_t n_bytes)
{
    (void)c, (void)dst, (void)src, (void)n_bytes;
    return not_built();
}

mpl_status mpl_cuda_copy(mpl_cuda *c, void *dst, const void *src, size_t n_bytes)
{
    (void)c, (void)dst, (void)src, (void)n_bytes;
    return not_built();
}

mpl_status mpl_cuda_zero(mpl_cuda *c, void *p, size_t n_bytes)
{
    (void)c, (void)p, (void)n_bytes;
    return not_built();
}

mpl_status mpl_model_cuda_attach(mpl_model *m)
{
    (void)m;
    return not_built();
}

mpl_status mpl_optim_dev_create(mpl_model *m, mpl_optim_dev **out)
{
    (void)m;
    *out = NULL;
    return not_built();
}

void mpl_optim_dev_destroy(mpl_optim_dev **o)
{
    if (o) *o = NULL;
}

mpl_status mpl_optim_dev_step(mpl_optim_dev *o, int64_t step, double lr,
                              const mpl_adamw_hparams *hp, double grad_clip, double *loss_sum,
                              double *norm)
{
    (void)o, (void)step, (void)lr, (void)hp, (void)grad_clip;
    *loss_sum = *norm = 0;
    return not_built();
}

mpl_status mpl_optim_dev_get(mpl_optim_dev *o, float *m, float *v)
{
    (void)o, (void)m, (void)v;
    return not_built();
}

mpl_status mpl_optim_dev_set(mpl_optim_dev *o, const float *m, const float *v)
{
    (void)o, (void)m, (void)v;
    return not_built();
}
