/* `multipole op attention`: evaluate one attention call from an HDF5 file,
 * for checks against other implementations. The mechanism and its options
 * come from the file's root attributes, named as the config keys. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attention/registry.h"
#include "cli.h"
#include "commands.h"
#include "config.h"
#include "io/opfile.h"
#include "trainer.h"

static const char *const op_help =
    "usage: multipole op attention --in QKV.h5 --out OUT.h5\n"
    "\n"
    "Evaluate one attention call. QKV.h5 holds /q, /k, /v (float32, heads x L x d),\n"
    "optional /blend_near, /blend_far (heads x d), /mask (L, 1 = real token) and\n"
    "/dout (heads x L x d); root attributes choose the mechanism with the config\n"
    "keys' names and values: attn causal band segment rope_theta fmm_maps\n"
    "fmm_feature_norm fmm_far_norm fmm_far_scale fmm_eps fmm_blend fmm_blend_init\n"
    "(absent: the config default). Writes /out and, with /dout, /dq /dk /dv and\n"
    "the gradients of the mechanism's parameters (/dblend_near, /dblend_far).\n";

static const char *const op_keys[] = {
    "attn", "causal", "band", "segment", "rope_theta", "fmm_maps", "fmm_feature_norm",
    "fmm_far_norm", "fmm_far_scale", "fmm_eps", "fmm_blend", "fmm_blend_init",
    "fmm_learn_far_weight", NULL};

static mpl_status op_config(const char *path, const mpl_opfile *f, int64_t H, int64_t L,
                            int64_t d, mpl_config *cfg)
{
    mpl_config_defaults(cfg);
    for (int i = 0; i < f->n_attrs; i++) {
        int known = 0;
        for (const char *const *k = op_keys; *k; k++) known |= strcmp(*k, f->a[i].name) == 0;
        if (!known)
            return mpl_err(MPL_ERR_ARG, "%s: attribute '%s' is not an attention option (%s)", path,
                           f->a[i].name, "see multipole op --help");
        MPL_CHECK(mpl_config_set(cfg, f->a[i].name, f->a[i].value, path));
    }
    cfg->n_head = H;
    cfg->d_model = H * d;
    cfg->seq_len = L;
    cfg->min_lr = cfg->lr; /* training keys are irrelevant here */
    cfg->warmup = 0;
    return mpl_config_validate(cfg);
}

/* (H, L, d) <-> columns col0 + h*d of rows of width W. */
static void heads_to_rows(float *rows, int64_t W, int64_t col0, const float *x, int64_t H,
                          int64_t L, int64_t d)
{
    for (int64_t h = 0; h < H; h++)
        for (int64_t t = 0; t < L; t++)
            memcpy(rows + t * W + col0 + h * d, x + (h * L + t) * d, (size_t)d * sizeof *x);
}

static void rows_to_heads(float *x, const float *rows, int64_t W, int64_t col0, int64_t H,
                          int64_t L, int64_t d)
{
    for (int64_t h = 0; h < H; h++)
        for (int64_t t = 0; t < L; t++)
            memcpy(x + (h * L + t) * d, rows + t * W + col0 + h * d, (size_t)d * sizeof *x);
}

static mpl_status op_attention(const char *in, const char *outp)
{
    mpl_status st = MPL_OK;
    mpl_opfile f = {0}, o = {0};
    mpl_attn attn = {0};
    mpl_slab_layout lay = {0};
    float *params = NULL, *dparams = NULL, *qkv = NULL, *out = NULL, *saved = NULL;
    float *dqkv = NULL, *tmp = NULL;
    uint8_t *mask = NULL;
    static const char *const names[] = {"q", "k", "v", "blend_near", "blend_far", "blend_maps",
                                        "mask", "dout", NULL};
    MPL_CHECK_GOTO(mpl_opfile_read(in, names, &f), done);
    const mpl_opfile_tensor *q = mpl_opfile_find(&f, "q"), *k = mpl_opfile_find(&f, "k");
    const mpl_opfile_tensor *v = mpl_opfile_find(&f, "v"), *dout = mpl_opfile_find(&f, "dout");
    const mpl_opfile_tensor *mk = mpl_opfile_find(&f, "mask");
    if (!q || !k || !v)
        MPL_FAIL_GOTO(done, MPL_ERR_FORMAT, "%s: dataset /%s is missing", in, !q ? "q" : !k ? "k" : "v");
    if (q->ndim != 3) MPL_FAIL_GOTO(done, MPL_ERR_FORMAT, "%s: /q must be heads x L x d", in);
    const int64_t H = q->shape[0], L = q->shape[1], d = q->shape[2];
    const mpl_opfile_tensor *same[] = {k, v, dout};
    for (int i = 0; i < 3; i++)
        if (same[i] && (same[i]->ndim != 3 || memcmp(same[i]->shape, q->shape, 3 * sizeof(int64_t))))
            MPL_FAIL_GOTO(done, MPL_ERR_FORMAT, "%s: /%s must have the shape of /q (%lld x %lld x %lld)",
                          in, same[i]->name, (long long)H, (long long)L, (long long)d);
    if (mk && (mk->ndim != 1 || mk->shape[0] != L))
        MPL_FAIL_GOTO(done, MPL_ERR_FORMAT, "%s: /mask must have L = %lld entries", in, (long long)L);

    mpl_config cfg;
    MPL_CHECK_GOTO(op_config(in, &f, H, L, d, &cfg), done);
    mpl_attn_cfg acfg;
    mpl_trainer_attn_cfg(&cfg, &acfg);
    MPL_CHECK_GOTO(mpl_attn_create(&acfg, NULL, &attn), done);
    if (attn.ops->declare_params)
        MPL_CHECK_GOTO(attn.ops->declare_params(attn.impl, 0, "", &lay), done);
    MPL_CHECK_GOTO(mpl_slab_alloc(lay.n_elems, &params), done);
    MPL_CHECK_GOTO(mpl_slab_alloc(lay.n_elems, &dparams), done);
    if (attn.ops->init_params) attn.ops->init_params(attn.impl, 0, params, (uint64_t)cfg.seed);
    for (int i = 0; i < lay.n_tensors; i++) {
        const mpl_tensor_desc *t = &lay.t[i];
        const mpl_opfile_tensor *x = mpl_opfile_find(&f, t->name);
        if (!x) continue;
        int64_t n = 1;
        for (int j = 0; j < x->ndim; j++) n *= x->shape[j];
        if (n != t->n_elems)
            MPL_FAIL_GOTO(done, MPL_ERR_FORMAT, "%s: /%s has %lld values, %s needs %lld", in,
                          t->name, (long long)n, cfg.attn, (long long)t->n_elems);
        memcpy(params + t->offset, x->data, (size_t)n * sizeof(float));
    }

    const int64_t HD = H * d, W = 3 * HD;
    if (mk) {
        mask = malloc((size_t)L);
        if (!mask) MPL_FAIL_GOTO(done, MPL_ERR_NOMEM, "out of memory");
        for (int64_t t = 0; t < L; t++) mask[t] = mk->data[t] != 0;
    }
    mpl_attn_geom g = {1, L, 0, mask};
    int64_t n_saved = attn.ops->saved_elems(attn.impl, &g);
    MPL_CHECK_GOTO(mpl_slab_alloc(L * W, &qkv), done);
    MPL_CHECK_GOTO(mpl_slab_alloc(L * HD, &out), done);
    MPL_CHECK_GOTO(mpl_slab_alloc(n_saved, &saved), done);
    MPL_CHECK_GOTO(mpl_slab_alloc(H * L * d, &tmp), done);
    heads_to_rows(qkv, W, 0, q->data, H, L, d);
    heads_to_rows(qkv, W, HD, k->data, H, L, d);
    heads_to_rows(qkv, W, 2 * HD, v->data, H, L, d);
    MPL_CHECK_GOTO(attn.ops->forward(attn.impl, 0, &g, params, qkv, out, saved), done);
    int64_t shape[3] = {H, L, d};
    rows_to_heads(tmp, out, HD, 0, H, L, d);
    MPL_CHECK_GOTO(mpl_opfile_add(&o, "out", 3, shape, tmp), done);
    if (dout) {
        float *dout_rows = out; /* out is written already: reuse its rows */
        heads_to_rows(dout_rows, HD, 0, dout->data, H, L, d);
        MPL_CHECK_GOTO(mpl_slab_alloc(L * W, &dqkv), done);
        MPL_CHECK_GOTO(attn.ops->backward(attn.impl, 0, &g, params, qkv, saved, dout_rows, dqkv,
                                          dparams), done);
        const char *gn[3] = {"dq", "dk", "dv"};
        for (int i = 0; i < 3; i++) {
            rows_to_heads(tmp, dqkv, W, i * HD, H, L, d);
            MPL_CHECK_GOTO(mpl_opfile_add(&o, gn[i], 3, shape, tmp), done);
        }
        for (int i = 0; i < lay.n_tensors; i++) {
            char name[MPL_TENSOR_NAME_MAX + 1];
            snprintf(name, sizeof name, "d%s", lay.t[i].name);
            MPL_CHECK_GOTO(mpl_opfile_add(&o, name, lay.t[i].ndim, lay.t[i].shape,
                                          dparams + lay.t[i].offset), done);
        }
    }
    MPL_CHECK_GOTO(mpl_opfile_write(outp, &o), done);
done:
    mpl_opfile_free(&f);
    mpl_opfile_free(&o);
    mpl_attn_destroy(&attn);
    mpl_slab_layout_free(&lay);
    mpl_slab_free(&params);
    mpl_slab_free(&dparams);
    mpl_slab_free(&qkv);
    mpl_slab_free(&out);
    mpl_slab_free(&saved);
    mpl_slab_free(&dqkv);
    mpl_slab_free(&tmp);
    free(mask);
    return st;
}

int mpl_cmd_op(int argc, char **argv)
{
    mpl_cli cli;
    mpl_cli_init(&cli, "op");
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        if (cli.rank == 0) fputs(op_help, argc < 2 ? stderr : stdout);
        return argc < 2 ? MPL_EXIT_USAGE : MPL_EXIT_OK;
    }
    if (strcmp(argv[1], "attention") != 0)
        return mpl_cli_usage(&cli, "unknown op '%s' (available: attention)", argv[1]);
    const char *in = NULL, *out = NULL;
    for (int i = 2; i < argc; i++) {
        const char *v = NULL;
        int r;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            if (cli.rank == 0) fputs(op_help, stdout);
            return MPL_EXIT_OK;
        } else if ((r = mpl_cli_opt(argc, argv, &i, "--in", &v))) {
            in = v;
        } else if ((r = mpl_cli_opt(argc, argv, &i, "--out", &v))) {
            out = v;
        } else {
            return mpl_cli_usage(&cli, "unknown argument '%s'", argv[i]);
        }
        if (r < 0) return mpl_cli_usage(&cli, "%s needs a file", argv[i]);
    }
    if (!in || !out) return mpl_cli_usage(&cli, "both --in and --out are needed");
    if (cli.world > 1)
        return mpl_cli_usage(&cli, "op attention runs on one rank in this build (got %d)",
                             cli.world);
    mpl_status st = op_attention(in, out);
    return st == MPL_OK ? MPL_EXIT_OK : mpl_cli_error(&cli, mpl_cli_exit_code(st));
}
