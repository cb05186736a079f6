/* Device AdamW (core/optim_dev.h): the moments as two device slabs laid
 * out like the parameters, the norm by mpl_cuda_sum (fixed order, so a
 * step repeats bit for bit) and the fused clip + update of adamw.cu, all
 * queued after the backward on the model's stream. */
#include <math.h>
#include <stdlib.h>

#include "../optim_dev.h"
#include "kernels.h"
#include "model_cuda.h"

struct mpl_optim_dev {
    mpl_model *model;   /* borrowed */
    float *m, *v;       /* device (n_elems) */
    double *scal;       /* device: [norm2, loss, partials (MPL_CUDA_SUM_BLOCKS)] */
};

mpl_status mpl_optim_dev_create(mpl_model *m, mpl_optim_dev **out)
{
    mpl_status st = MPL_OK;
    *out = NULL;
    if (mpl_model_device(m) != MPL_DEVICE_CUDA || !m->be_impl)
        return mpl_err(MPL_ERR_ARG, "the device optimizer needs a device model");
    mpl_model_cuda *mc = m->be_impl;
    mpl_optim_dev *o;
    MPL_ALLOC(o, 1);
    o->model = m;
    const size_t b = (size_t)m->layout.n_elems * sizeof(float);
    MPL_CHECK_GOTO(mpl_cuda_alloc(mc->cu, b, (void **)&o->m), fail);
    MPL_CHECK_GOTO(mpl_cuda_alloc(mc->cu, b, (void **)&o->v), fail);
    MPL_CHECK_GOTO(mpl_cuda_alloc(mc->cu, (2 + MPL_CUDA_SUM_BLOCKS) * sizeof(double),
                                  (void **)&o->scal), fail);
    *out = o;
    return MPL_OK;
fail:
    mpl_optim_dev_destroy(&o);
    return st;
}

void mpl_optim_dev_destroy(mpl_optim_dev **op)
{
    if (!op || !*op) return;
    mpl_optim_dev *o = *op;
    mpl_model_cuda *mc = o->model->be_impl;
    if (mc && mc->cu) {
        if (mpl_cuda_sync(mc->cu) != MPL_OK) mpl_err_clear();
        mpl_cuda_free(mc->cu, (void **)&o->m);
        mpl_cuda_free(mc->cu, (void **)&o->v);
        mpl_cuda_free(mc->cu, (void **)&o->scal);
    }
    free(o);
    *op = NULL;
}

mpl_status mpl_optim_dev_step(mpl_optim_dev *o, int64_t step, double lr,
                              const mpl_adamw_hparams *hp, double grad_clip, double *loss_sum,
                              double *norm)
{
    mpl_model *model = o->model;
    mpl_model_cuda *mc = model->be_impl;
    if (!mc->have_forward) return mpl_err(MPL_ERR_ARG, "optimizer step without a forward");
    struct CUstream_st *s = mpl_cuda_stream(mc->cu);
    const int64_t n = model->layout.n_elems;
    MPL_CHECK(mpl_cuda_sum(o->scal, mc->grads, n, 1, o->scal + 2, s));
    const mpl_cuda_adamw_args a = {
        .params = mc->params, .grads = mc->grads, .m = o->m, .v = o->v,
        .params_bf = mc->params_bf, .t_off = mc->t_off, .t_n = mc->t_n, .t_decay = mc->t_decay,
        .n_tensors = model->layout.n_tensors, .max_tensor_elems = mc->max_tensor,
        .beta1 = (float)hp->beta1, .beta2 = (float)hp->beta2, .eps = (float)hp->eps,
        .c1 = (float)(1.0 / (1.0 - pow(hp->beta1, (double)step))),
        .c2 = (float)(1.0 / (1.0 - pow(hp->beta2, (double)step))), .lr = (float)lr,
        .decay = (float)(1.0 - lr * hp->weight_decay), .grad_clip = grad_clip,
        .norm2 = o->scal, .loss = mc->loss_sum};
    MPL_CHECK(mpl_cuda_adamw_update(&a, s));
    /* the loss beside the norm, so one copy brings both */
    MPL_CHECK(mpl_cuda_copy(mc->cu, o->scal + 1, mc->loss_sum, sizeof(double)));
    double back[2];
    MPL_CHECK(mpl_cuda_download(mc->cu, back, o->scal, sizeof back));
    *norm = sqrt(back[0]);
    *loss_sum = back[1];
    return MPL_OK;
}

mpl_status mpl_optim_dev_get(mpl_optim_dev *o, float *m, float *v)
{
    mpl_model_cuda *mc = o->model->be_impl;
    const size_t b = (size_t)o->model->layout.n_elems * sizeof(float);
    MPL_CHECK(mpl_cuda_download(mc->cu, m, o->m, b));
    MPL_CHECK(mpl_cuda_download(mc->cu, v, o->v, b));
    return MPL_OK;
}

mpl_status mpl_optim_dev_set(mpl_optim_dev *o, const float *m, const float *v)
{
    mpl_model_cuda *mc = o->model->be_impl;
    const size_t b = (size_t)o->model->layout.n_elems * sizeof(float);
    MPL_CHECK(mpl_cuda_upload(mc->cu, o->m, m, b));
    MPL_CHECK(mpl_cuda_upload(mc->cu, o->v, v, b));
    return MPL_OK;
}
