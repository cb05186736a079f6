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
#include "dist/grid.h"
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
    "the gradients of the mechanism's parameters (/dblend_near, /dblend_far).\n"
    "Under mpirun -np P the sequence is split over the P ranks (uneven chunks),\n"
    "each reading only its rows; rank 0 writes the assembled result.\n";

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

/* Root: the ranks' (H, n_r, d) blocks arrive one after the other; put
 * them in place in (H, L, d). */
static void assemble(float *dst, const float *blocks, int P, int64_t H, int64_t L, int64_t d)
{
    const float *src = blocks;
    for (int r = 0; r < P; r++) {
        int64_t a, b;
        mpl_grid_chunk(L, P, r, &a, &b);
        for (int64_t h = 0; h < H; h++)
            memcpy(dst + (h * L + a) * d, src + h * (b - a) * d, (size_t)((b - a) * d) * sizeof *dst);
        src += H * (b - a) * d;
    }
}

/* Gather one (H, n, d) output from every rank into (H, L, d) at rank 0. */
static mpl_status gather_heads(mpl_comm *c, const float *local, int64_t H, int64_t n,
                               int64_t L, int64_t d, float *stage, mpl_opfile *o,
                               const char *name)
{
    MPL_CHECK(mpl_comm_gatherv_f32(c, local, H * n * d, stage, 0));
    if (mpl_comm_rank(c) != 0) return MPL_OK;
    const int64_t shape[3] = {H, L, d};
    MPL_CHECK(mpl_opfile_add(o, name, 3, shape, NULL));
    assemble(o->t[o->n_tensors - 1].data, stage, mpl_comm_size(c), H, L, d);
    return MPL_OK;
}

/* Collective on c: every rank reads only its rows [a, b) of the sequence
 * axis, the attention runs split over the ranks (sp = their number), and
 * rank 0 writes the assembled result. */
static mpl_status op_attention(mpl_comm *c, const char *in, const char *outp)
{
    mpl_status st = MPL_OK;
    mpl_opfile f = {0}, o = {0};
    mpl_attn attn = {0};
    mpl_slab_layout lay = {0};
    float *params = NULL, *dparams = NULL, *qkv = NULL, *out = NULL, *saved = NULL;
    float *dqkv = NULL, *tmp = NULL, *stage = NULL;
    uint8_t *mask = NULL;
    const int P = mpl_comm_size(c), rank = mpl_comm_rank(c);
    static const char *const names[] = {"q", "k", "v", "blend_near", "blend_far", "blend_maps",
                                        "mask", "dout", NULL};
    int qdim = 0;
    int64_t qs[4] = {0};
    st = mpl_opfile_shape(in, "q", &qdim, qs);
    if (st == MPL_OK && qdim != 3) st = mpl_err(MPL_ERR_FORMAT, "%s: /q must be heads x L x d", in);
    if (st == MPL_OK && qs[1] < P)
        st = mpl_err(MPL_ERR_ARG, "%s: L = %lld rows cannot be split over %d ranks", in,
                     (long long)qs[1], P);
    MPL_CHECK(mpl_comm_agree(c, &st));
    const int64_t H = qs[0], L = qs[1], d = qs[2];
    int64_t a, b;
    mpl_grid_chunk(L, P, rank, &a, &b);
    const int64_t n = b - a, HD = H * d, W = 3 * HD;
    const int64_t local[3] = {H, n, d};
    const mpl_opfile_tensor *q = NULL, *k = NULL, *v = NULL, *dout = NULL, *mk = NULL;
    MPL_CHECK_GOTO(mpl_opfile_read_rows(in, names, a, n, &f), check);
    q = mpl_opfile_find(&f, "q"), k = mpl_opfile_find(&f, "k"), v = mpl_opfile_find(&f, "v");
    dout = mpl_opfile_find(&f, "dout"), mk = mpl_opfile_find(&f, "mask");
    if (!k || !v) MPL_FAIL_GOTO(check, MPL_ERR_FORMAT, "%s: dataset /%s is missing", in, !k ? "k" : "v");
    const mpl_opfile_tensor *same[] = {k, v, dout};
    for (int i = 0; i < 3; i++)
        if (same[i] && (same[i]->ndim != 3 || memcmp(same[i]->shape, local, sizeof local)))
            MPL_FAIL_GOTO(check, MPL_ERR_FORMAT, "%s: /%s must have the shape of /q (%lld x %lld x %lld)",
                          in, same[i]->name, (long long)H, (long long)L, (long long)d);
    if (mk && (mk->ndim != 1 || mk->shape[0] != n))
        MPL_FAIL_GOTO(check, MPL_ERR_FORMAT, "%s: /mask must have L = %lld entries", in, (long long)L);
    mpl_config cfg;
    MPL_CHECK_GOTO(op_config(in, &f, H, L, d, &cfg), check);
    if (P > 1 && !strcmp(cfg.attn, "dense"))
        MPL_FAIL_GOTO(check, MPL_ERR_UNSUPPORTED, "attn=%s runs on one rank (got %d)", cfg.attn, P);
    mpl_attn_cfg acfg;
    mpl_trainer_attn_cfg(&cfg, &acfg);
    MPL_CHECK_GOTO(mpl_attn_create(&acfg, P > 1 ? c : NULL, &attn), check);
    if (attn.ops->declare_params)
        MPL_CHECK_GOTO(attn.ops->declare_params(attn.impl, 0, "", &lay), check);
    MPL_CHECK_GOTO(mpl_slab_alloc(lay.n_elems, &params), check);
    MPL_CHECK_GOTO(mpl_slab_alloc(lay.n_elems, &dparams), check);
    if (attn.ops->init_params) attn.ops->init_params(attn.impl, 0, params, (uint64_t)cfg.seed);
    for (int i = 0; i < lay.n_tensors; i++) {
        const mpl_tensor_desc *t = &lay.t[i];
        const mpl_opfile_tensor *x = mpl_opfile_find(&f, t->name);
        if (!x) continue;
        int64_t m = 1;
        for (int j = 0; j < x->ndim; j++) m *= x->shape[j];
        if (m != t->n_elems)
            MPL_FAIL_GOTO(check, MPL_ERR_FORMAT, "%s: /%s has %lld values, %s needs %lld", in,
                          t->name, (long long)m, cfg.attn, (long long)t->n_elems);
        memcpy(params + t->offset, x->data, (size_t)m * sizeof(float));
    }
    if (mk) {
        mask = malloc((size_t)n);
        if (!mask) MPL_FAIL_GOTO(check, MPL_ERR_NOMEM, "out of memory");
        for (int64_t t = 0; t < n; t++) mask[t] = mk->data[t] != 0;
    }
check:
    MPL_CHECK_GOTO(mpl_comm_agree(c, &st), done);

    mpl_attn_geom g = {1, n, a, mask};
    MPL_CHECK_GOTO(mpl_slab_alloc(n * W, &qkv), done);
    MPL_CHECK_GOTO(mpl_slab_alloc(n * HD, &out), done);
    MPL_CHECK_GOTO(mpl_slab_alloc(attn.ops->saved_elems(attn.impl, &g), &saved), done);
    MPL_CHECK_GOTO(mpl_slab_alloc(H * n * d, &tmp), done);
    MPL_CHECK_GOTO(mpl_slab_alloc(rank == 0 ? H * L * d : 1, &stage), done);
    heads_to_rows(qkv, W, 0, q->data, H, n, d);
    heads_to_rows(qkv, W, HD, k->data, H, n, d);
    heads_to_rows(qkv, W, 2 * HD, v->data, H, n, d);
    MPL_CHECK_GOTO(attn.ops->forward(attn.impl, 0, &g, params, qkv, out, saved), done);
    rows_to_heads(tmp, out, HD, 0, H, n, d);
    MPL_CHECK_GOTO(gather_heads(c, tmp, H, n, L, d, stage, &o, "out"), done);
    if (dout) {
        float *dout_rows = out; /* out is gathered already: reuse its rows */
        heads_to_rows(dout_rows, HD, 0, dout->data, H, n, d);
        MPL_CHECK_GOTO(mpl_slab_alloc(n * W, &dqkv), done);
        MPL_CHECK_GOTO(attn.ops->backward(attn.impl, 0, &g, params, qkv, saved, dout_rows, dqkv,
                                          dparams), done);
        const char *gn[3] = {"dq", "dk", "dv"};
        for (int i = 0; i < 3; i++) {
            rows_to_heads(tmp, dqkv, W, i * HD, H, n, d);
            MPL_CHECK_GOTO(gather_heads(c, tmp, H, n, L, d, stage, &o, gn[i]), done);
        }
        /* Each rank holds its rows' share of the parameter gradients. */
        MPL_CHECK_GOTO(mpl_comm_allreduce_sum_f32(c, dparams, lay.n_elems), done);
        for (int i = 0; rank == 0 && i < lay.n_tensors; i++) {
            char name[MPL_TENSOR_NAME_MAX + 1];
            snprintf(name, sizeof name, "d%s", lay.t[i].name);
            MPL_CHECK_GOTO(mpl_opfile_add(&o, name, lay.t[i].ndim, lay.t[i].shape,
                                          dparams + lay.t[i].offset), done);
        }
    }
    if (rank == 0) st = mpl_opfile_write(outp, &o);
    MPL_CHECK_GOTO(mpl_comm_agree(c, &st), done);
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
    mpl_slab_free(&stage);
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
    mpl_comm *world = NULL;
    if (mpl_comm_create_world(&world) != MPL_OK) return mpl_cli_error(&cli, MPL_EXIT_FAIL);
    mpl_status st = op_attention(world, in, out);
    mpl_comm_destroy(&world);
    return st == MPL_OK ? MPL_EXIT_OK : mpl_cli_error(&cli, mpl_cli_exit_code(st));
}
