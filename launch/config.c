/* The table of config keys and the code that reads, checks and writes them. */
#include "config.h"

#include "core/attn.h"
#include "core/cuda.h"

#include <errno.h>
#include <ini.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifndef MPL_BUILD_NCCL
#define MPL_BUILD_NCCL 0 /* set by CMake for launch/; 0 where compiled on its own */
#endif

#define F(field) offsetof(mpl_config, field), sizeof(((mpl_config *)0)->field)
#define BIG 1e18

static const mpl_cfg_key keys[] = {
    /* model */
    {"preset", "model", MPL_CFG_ENUM, F(preset), "none", 0, 0,
     "none|fmm-lm-official|fmm-lra-official|combiner-fixed-official", 1,
     "set the keys of a published setting where it appears (later keys override)"},
    {"vocab_size", "model", MPL_CFG_INT, F(vocab_size), "256", 2, 1 << 24, NULL, 1,
     "vocabulary size; must cover the data's tokens (bytes: 256)"},
    {"d_model", "model", MPL_CFG_INT, F(d_model), "128", 1, 1 << 16, NULL, 1, "model width"},
    {"n_layer", "model", MPL_CFG_INT, F(n_layer), "4", 1, 1024, NULL, 1, "number of blocks"},
    {"n_head", "model", MPL_CFG_INT, F(n_head), "4", 1, 1024, NULL, 1,
     "attention heads; must divide d_model"},
    {"mlp_mult", "model", MPL_CFG_INT, F(mlp_mult), "4", 1, 64, NULL, 1,
     "MLP hidden width = mlp_mult * d_model"},
    {"attn", "model", MPL_CFG_ENUM, F(attn), "dense", 0, 0,
     "dense|fmm|combiner_fixed|combiner_logsparse", 1, "attention mechanism"},
    {"causal", "model", MPL_CFG_INT, F(causal), "1", 0, 1, NULL, 1,
     "1: causal (language model), 0: bidirectional"},
    {"band", "model", MPL_CFG_INT, F(band), "64", 1, BIG, NULL, 1, "FMM near-field band width w"},
    {"segment", "model", MPL_CFG_INT, F(segment), "0", 0, BIG, NULL, 1,
     "Combiner-Fixed segment size s (0: round(sqrt(seq_len)))"},
    {"rope_theta", "model", MPL_CFG_REAL, F(rope_theta), "10000", 0, BIG, NULL, 1,
     "RoPE base on the near-field/direct part (0: off)"},
    {"n_pos", "model", MPL_CFG_INT, F(n_pos), "0", 0, 1 << 30, NULL, 1,
     "learned absolute positions 0..n_pos-1 added to the token embedding (0: none; must "
     "cover seq_len; what the LRA codes use)"},
    {"fmm_maps", "model", MPL_CFG_STR, F(fmm_maps), "elu,elu_flip", 0, 0, NULL, 1,
     "FMM far-field feature maps, comma list of elu, elu_flip, tanh (rank r = count)"},
    {"fmm_feature_norm", "model", MPL_CFG_ENUM, F(fmm_feature_norm), "sum", 0, 0, "sum|none", 1,
     "divide each token's far-field features by their sum"},
    {"fmm_far_norm", "model", MPL_CFG_ENUM, F(fmm_far_norm), "ratio", 0, 0, "ratio|none", 1,
     "far field as a ratio q.S/(q.z + eps) or the plain product q.S"},
    {"fmm_far_scale", "model", MPL_CFG_ENUM, F(fmm_far_scale), "inv_sqrt_d", 0, 0,
     "inv_sqrt_d|inv_sqrt_n|one", 1, "scale of the far-field terms (n = seq_len)"},
    {"fmm_eps", "model", MPL_CFG_REAL, F(fmm_eps), "1e-5", 0, 1, NULL, 1,
     "epsilon in the far-field denominator"},
    {"fmm_blend", "model", MPL_CFG_ENUM, F(fmm_blend), "channel", 0, 0, "channel|lra", 1,
     "channel: a, b per head and channel; lra: a, b per head and one weight per map"},
    {"fmm_blend_init", "model", MPL_CFG_STR, F(fmm_blend_init), "auto", 0, 0, NULL, 1,
     "initial near,far blend weights a,b; auto: 0,1 causal, 1,0 bidirectional"},
    {"fmm_learn_far_weight", "model", MPL_CFG_INT, F(fmm_learn_far_weight), "1", 0, 1, NULL, 1,
     "1: the far-field weight b is learnt; 0: frozen at its init"},
    {"norm_eps", "model", MPL_CFG_REAL, F(norm_eps), "1e-5", 0, 1, NULL, 1, "RMSNorm epsilon"},
    {"task", "model", MPL_CFG_ENUM, F(task), "lm", 0, 0, "lm|classify", 1,
     "lm: next-token language model; classify: one label per sequence (mean pooling over "
     "its real tokens, a linear head; needs causal=0 and a classification data file)"},
    {"n_classes", "model", MPL_CFG_INT, F(n_classes), "0", 0, 1 << 20, NULL, 1,
     "task=classify: number of classes (0: the data file's n_classes)"},
    {"tokenizer", "model", MPL_CFG_ENUM, F(tokenizer), "auto", 0, 0, "auto|bytes|dna|ids|listops", 1,
     "what the token ids mean; auto: the data file's (checked against it; sample and eval "
     "decode with it)"},
    /* train */
    {"data", "train", MPL_CFG_STR, F(data), "", 0, 0, NULL, 0,
     "token file written by `multipole prepare`"},
    {"seq_len", "train", MPL_CFG_INT, F(seq_len), "256", 1, BIG, NULL, 0,
     "global sequence length L (tokens per sequence)"},
    {"batch", "train", MPL_CFG_INT, F(batch), "8", 1, 1 << 20, NULL, 0,
     "sequences per data-parallel group per step"},
    {"steps", "train", MPL_CFG_INT, F(steps), "200", 1, BIG, NULL, 0,
     "total optimizer steps (may be raised on resume)"},
    {"lr", "train", MPL_CFG_REAL, F(lr), "3e-3", 0, 10, NULL, 0, "peak learning rate"},
    {"min_lr", "train", MPL_CFG_REAL, F(min_lr), "3e-4", 0, 10, NULL, 0,
     "learning rate at the end of the cosine decay"},
    {"warmup", "train", MPL_CFG_INT, F(warmup), "20", 0, BIG, NULL, 0,
     "linear warmup steps"},
    {"weight_decay", "train", MPL_CFG_REAL, F(weight_decay), "0.1", 0, 10, NULL, 0,
     "AdamW decoupled weight decay (matrices only)"},
    {"grad_clip", "train", MPL_CFG_REAL, F(grad_clip), "1.0", 0, BIG, NULL, 0,
     "clip the global gradient norm to this (0: off)"},
    {"beta1", "train", MPL_CFG_REAL, F(beta1), "0.9", 0, 0.999999, NULL, 0, "AdamW beta1"},
    {"beta2", "train", MPL_CFG_REAL, F(beta2), "0.95", 0, 0.999999, NULL, 0, "AdamW beta2"},
    {"adam_eps", "train", MPL_CFG_REAL, F(adam_eps), "1e-8", 0, 1, NULL, 0, "AdamW epsilon"},
    {"seed", "train", MPL_CFG_INT, F(seed), "1337", 0, BIG, NULL, 0,
     "seed of initialisation and data order"},
    {"run_dir", "train", MPL_CFG_STR, F(run_dir), "run", 0, 0, NULL, 0,
     "directory for metrics.csv and checkpoints"},
    {"log_every", "train", MPL_CFG_INT, F(log_every), "10", 1, BIG, NULL, 0,
     "print progress every this many steps"},
    {"ckpt_every_minutes", "train", MPL_CFG_REAL, F(ckpt_every_minutes), "0", 0, BIG, NULL, 0,
     "also checkpoint when this many minutes passed since the last one (0: off)"},
    {"ckpt_every", "train", MPL_CFG_INT, F(ckpt_every), "0", 0, BIG, NULL, 0,
     "checkpoint every this many steps (0: only at the end)"},
    {"keep_ckpts", "train", MPL_CFG_INT, F(keep_ckpts), "3", 1, 1000000, NULL, 0,
     "keep this many newest checkpoints"},
    {"eval_every", "train", MPL_CFG_INT, F(eval_every), "0", 0, BIG, NULL, 0,
     "validation loss on the data's /val split every this many steps and at the end, "
     "logged to metrics.csv (0: off)"},
    {"eval_windows", "train", MPL_CFG_INT, F(eval_windows), "0", 0, BIG, NULL, 0,
     "windows of seq_len tokens scored per evaluation in training, the first of /val "
     "(0: the whole split)"},
    {"nan_policy", "train", MPL_CFG_ENUM, F(nan_policy), "skip", 0, 0, "skip|abort", 0,
     "on a non-finite loss or gradient norm: skip the update (counted in metrics.csv) or "
     "abort; both stop after max_bad_steps consecutive bad steps"},
    {"max_bad_steps", "train", MPL_CFG_INT, F(max_bad_steps), "5", 1, 1000000, NULL, 0,
     "consecutive bad steps that end the run (nan_policy=skip; abort stops at the first), "
     "keeping a checkpoint of the last good state"},
    /* parallel */
    {"sp", "parallel", MPL_CFG_INT, F(sp), "1", 1, 1 << 20, NULL, 0,
     "sequence-parallel ranks per sequence"},
    {"dp", "parallel", MPL_CFG_INT, F(dp), "0", 0, 1 << 20, NULL, 0,
     "data-parallel groups (0: world size / sp)"},
    {"zero", "parallel", MPL_CFG_INT, F(zero), "0", 0, 1, NULL, 0,
     "1: shard the AdamW state over the data-parallel group (ZeRO-1)"},
    {"grad_overlap", "parallel", MPL_CFG_INT, F(grad_overlap), "1", 0, 1, NULL, 0,
     "1: all-reduce each block's gradients as soon as its backward is done, overlapped with "
     "the backward of the blocks below (zero = 0, CPU); 0: one all-reduce after the backward"},
    {"comm", "parallel", MPL_CFG_ENUM, F(comm), "auto", 0, 0, "auto|mpi|nccl", 0,
     "communicator between ranks: mpi (host buffers), nccl (GPU buffers: device=cuda and a "
     "build with NCCL; not implemented in this version), auto: nccl where it can run, else "
     "mpi (this version: mpi)"},
    /* device */
    {"device", "device", MPL_CFG_ENUM, F(device), "cpu", 0, 0, "cpu|cuda", 0,
     "where the model runs (cuda: one GPU per rank, bf16 with fp32 master weights)"},
    {"cuda_device", "device", MPL_CFG_INT, F(cuda_device), "-1", -1, 1 << 20, NULL, 0,
     "GPU of this rank with device=cuda; -1: its index among the ranks on its node"},
    {"recompute", "device", MPL_CFG_ENUM, F(recompute), "none", 0, 0, "none|attn|layer", 0,
     "what the backward recomputes: nothing, the attention, or each whole block "
     "(keeping only block inputs)"},
    {"chunk_tokens", "device", MPL_CFG_INT, F(chunk_tokens), "8192", 0, BIG, NULL, 0,
     "tokens per piece when a rank's chunk is evaluated piece by piece (0: the whole chunk)"},
    {"offload", "device", MPL_CFG_ENUM, F(offload), "none", 0, 0, "none|host", 0,
     "host: keep the saved block inputs in pinned host memory (device=cuda)"},
    {"mem_limit", "device", MPL_CFG_REAL, F(mem_limit), "0", 0, BIG, NULL, 0,
     "GiB one rank may use; the run is refused before any work when its memory plan exceeds it "
     "(0: the memory available on the node shared by its ranks)"},
    {"peak_flops", "device", MPL_CFG_REAL, F(peak_flops), "0", 0, BIG, NULL, 0,
     "peak FLOP/s of one rank, the denominator of MFU (0: measure OpenBLAS sgemm at start)"},
    /* debug */
    {"debug_nan_step", "debug", MPL_CFG_INT, F(debug_nan_step), "0", 0, BIG, NULL, 0,
     "tests: make steps debug_nan_step.. non-finite (0: off)"},
    {"debug_nan_steps", "debug", MPL_CFG_INT, F(debug_nan_steps), "1", 1, BIG, NULL, 0,
     "tests: number of consecutive non-finite steps"},
    {"debug_nan_rank", "debug", MPL_CFG_INT, F(debug_nan_rank), "-1", -1, 1 << 20, NULL, 0,
     "tests: the rank that makes the NaN (-1: every rank)"},
    {"debug_nan_layer", "debug", MPL_CFG_INT, F(debug_nan_layer), "0", 0, 1023, NULL, 0,
     "tests: the block whose attention output (or input gradient) becomes NaN"},
    {"debug_nan_grad", "debug", MPL_CFG_INT, F(debug_nan_grad), "0", 0, 1, NULL, 0,
     "tests: 1: the NaN enters in backward (the attention's input gradient), 0: forward"},
};
#undef F

const mpl_cfg_key *mpl_config_keys(int *n_keys)
{
    *n_keys = (int)(sizeof keys / sizeof keys[0]);
    return keys;
}

static const mpl_cfg_key *find_key(const char *name)
{
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (strcmp(keys[i].name, name) == 0) return &keys[i];
    return NULL;
}

static int choice_ok(const char *choices, const char *v)
{
    size_t n = strlen(v);
    for (const char *p = choices; *p;) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && strncmp(p, v, n) == 0) return 1;
        if (!bar) break;
        p = bar + 1;
    }
    return 0;
}

static mpl_status set_key(mpl_config *c, const mpl_cfg_key *k, const char *value,
                          const char *where)
{
    char *base = (char *)c + k->offset;
    const char *w = where ? where : "", *sep = where ? ": " : "";
    while (*value == ' ' || *value == '\t') value++;
    switch (k->type) {
    case MPL_CFG_INT: {
        char *end;
        errno = 0;
        double d = strtod(value, &end); /* accepts 1e6 */
        while (*end == ' ') end++;
        if (*value == '\0' || *end != '\0' || errno || d != floor(d))
            return mpl_err(MPL_ERR_CONFIG, "%s%skey '%s': '%s' is not an integer", w, sep,
                           k->name, value);
        if (d < k->lo || d > k->hi)
            return mpl_err(MPL_ERR_CONFIG, "%s%skey '%s': %s is outside [%.0f, %.0f]", w, sep,
                           k->name, value, k->lo, k->hi);
        *(int64_t *)base = (int64_t)d;
        break;
    }
    case MPL_CFG_REAL: {
        char *end;
        errno = 0;
        double d = strtod(value, &end);
        while (*end == ' ') end++;
        if (*value == '\0' || *end != '\0' || errno || !isfinite(d))
            return mpl_err(MPL_ERR_CONFIG, "%s%skey '%s': '%s' is not a number", w, sep,
                           k->name, value);
        if (d < k->lo || d > k->hi)
            return mpl_err(MPL_ERR_CONFIG, "%s%skey '%s': %s is outside [%g, %g]", w, sep,
                           k->name, value, k->lo, k->hi);
        *(double *)base = d;
        break;
    }
    case MPL_CFG_ENUM:
        if (!choice_ok(k->choices, value))
            return mpl_err(MPL_ERR_CONFIG, "%s%skey '%s': '%s' is not one of %s", w, sep,
                           k->name, value, k->choices);
        /* fall through */
    case MPL_CFG_STR:
        if (strlen(value) >= k->size)
            return mpl_err(MPL_ERR_CONFIG, "%s%skey '%s': value longer than %zu characters", w,
                           sep, k->name, k->size - 1);
        snprintf(base, k->size, "%s", value);
        break;
    }
    return MPL_OK;
}

void mpl_config_defaults(mpl_config *c)
{
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        mpl_status st = set_key(c, &keys[i], keys[i].def, NULL);
        MPL_ASSERT(st == MPL_OK); /* a bad default is our bug */
    }
}

/* The settings of the papers' official codes (ATTENTION.md, "Presets"). */
static const struct {
    const char *name;
    const char *const *pairs; /* key, value, ..., NULL */
} presets[] = {
    {"none", (const char *const[]){NULL}},
    {"fmm-lm-official",
     (const char *const[]){"attn", "fmm", "causal", "1", "band", "5", "fmm_maps", "elu",
                           "fmm_feature_norm", "sum", "fmm_far_norm", "ratio", "fmm_far_scale",
                           "inv_sqrt_d", "fmm_eps", "1e-5", "fmm_blend", "channel",
                           "fmm_blend_init", "0,1", "fmm_learn_far_weight", "0", "rope_theta", "0",
                           "n_layer", "16", "d_model", "128", "n_head", "8", "mlp_mult", "16",
                           NULL}},
    {"fmm-lra-official",
     (const char *const[]){"attn", "fmm", "causal", "0", "band", "5", "fmm_maps", "elu,elu_flip",
                           "fmm_feature_norm", "none", "fmm_far_norm", "none", "fmm_far_scale",
                           "inv_sqrt_n", "fmm_blend", "lra", "fmm_blend_init", "1,0",
                           "fmm_learn_far_weight", "1", "rope_theta", "0", "n_layer", "2",
                           "d_model", "64", "n_head", "2", "mlp_mult", "2", "lr", "1e-4", "min_lr", "1e-5", "warmup", "1000",
                           "batch", "32", "steps", "5000", NULL}},
    {"combiner-fixed-official",
     (const char *const[]){"attn", "combiner_fixed", "causal", "1", "segment", "128",
                           "rope_theta", "0", NULL}},
};

mpl_status mpl_config_set(mpl_config *c, const char *key, const char *value, const char *where)
{
    const mpl_cfg_key *k = find_key(key);
    if (!k)
        return mpl_err(MPL_ERR_CONFIG, "%s%sunknown config key '%s' (list: multipole config --keys)",
                       where ? where : "", where ? ": " : "", key);
    MPL_CHECK(set_key(c, k, value, where));
    if (strcmp(key, "preset") == 0)
        for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++)
            if (strcmp(presets[i].name, c->preset) == 0)
                for (const char *const *p = presets[i].pairs; *p; p += 2)
                    MPL_CHECK(set_key(c, find_key(p[0]), p[1], "preset"));
    return MPL_OK;
}

mpl_status mpl_config_set_arg(mpl_config *c, const char *arg)
{
    const char *eq = strchr(arg, '=');
    if (!eq || eq == arg)
        return mpl_err(MPL_ERR_CONFIG, "--set '%s': expected key=value", arg);
    char key[128];
    size_t n = (size_t)(eq - arg);
    if (n >= sizeof key) return mpl_err(MPL_ERR_CONFIG, "--set '%s': key too long", arg);
    memcpy(key, arg, n);
    key[n] = '\0';
    return mpl_config_set(c, key, eq + 1, "--set");
}

typedef struct ini_ctx {
    mpl_config *c;
    const char *name;
    mpl_status st;
} ini_ctx;

/* Debian's inih passes no line number to handlers; errors name the file. */
static int on_ini_key(void *user, const char *section, const char *name, const char *value)
{
    ini_ctx *x = user;
    (void)section; /* sections are for readability only: keys are unique */
    x->st = mpl_config_set(x->c, name, value, x->name);
    return x->st == MPL_OK; /* 0 stops inih at the first bad line */
}

mpl_status mpl_config_load_file(mpl_config *c, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return mpl_err(MPL_ERR_CONFIG, "cannot open config file %s: %s", path, strerror(errno));
    ini_ctx x = {c, path, MPL_OK};
    int rc = ini_parse_file(f, on_ini_key, &x);
    fclose(f);
    if (x.st != MPL_OK) return x.st;
    if (rc != 0)
        return mpl_err(MPL_ERR_CONFIG, "%s:%d: not a valid INI line", path, rc);
    return MPL_OK;
}

mpl_status mpl_config_load_text(mpl_config *c, const char *text, const char *name)
{
    ini_ctx x = {c, name, MPL_OK};
    int rc = ini_parse_string(text, on_ini_key, &x);
    if (x.st != MPL_OK) return x.st;
    if (rc != 0) return mpl_err(MPL_ERR_CONFIG, "%s:%d: not a valid INI line", name, rc);
    return MPL_OK;
}

mpl_status mpl_config_blend_init(const mpl_config *c, double *near, double *far)
{
    if (strcmp(c->fmm_blend_init, "auto") == 0) {
        *near = c->causal ? 0.0 : 1.0;
        *far = c->causal ? 1.0 : 0.0;
        return MPL_OK;
    }
    char tail;
    if (sscanf(c->fmm_blend_init, "%lf,%lf%c", near, far, &tail) != 2 || !isfinite(*near) ||
        !isfinite(*far))
        return mpl_err(MPL_ERR_CONFIG, "key 'fmm_blend_init': '%s' is not 'auto' or 'a,b'",
                       c->fmm_blend_init);
    return MPL_OK;
}

mpl_status mpl_config_validate(const mpl_config *c)
{
    double a, b;
    MPL_CHECK(mpl_config_blend_init(c, &a, &b));
    {
        mpl_attn_cfg probe;
        if (mpl_attn_fmm_maps_parse(c->fmm_maps, &probe) != MPL_OK) {
            mpl_err_clear();
            return mpl_err(MPL_ERR_CONFIG, "key 'fmm_maps': '%s' is not a comma list of elu, "
                           "elu_flip, tanh (at most %d)", c->fmm_maps, MPL_FMM_MAX_MAPS);
        }
    }
    if (c->d_model % c->n_head)
        return mpl_err(MPL_ERR_CONFIG, "n_head=%lld must divide d_model=%lld", (long long)c->n_head,
                       (long long)c->d_model);
    if (c->rope_theta > 0 && (c->d_model / c->n_head) % 2)
        return mpl_err(MPL_ERR_CONFIG,
                       "rope_theta > 0 needs an even head dim, d_model/n_head=%lld (or set rope_theta=0)",
                       (long long)(c->d_model / c->n_head));
    if (c->n_pos > 0 && c->n_pos < c->seq_len)
        return mpl_err(MPL_ERR_CONFIG, "n_pos=%lld is shorter than seq_len=%lld: positions from "
                       "n_pos on have no learned embedding (raise n_pos, or 0 for none)",
                       (long long)c->n_pos, (long long)c->seq_len);
    if (c->min_lr > c->lr)
        return mpl_err(MPL_ERR_CONFIG, "min_lr=%g must not exceed lr=%g", c->min_lr, c->lr);
    if (c->warmup >= c->steps && c->warmup > 0)
        return mpl_err(MPL_ERR_CONFIG, "warmup=%lld must be smaller than steps=%lld",
                       (long long)c->warmup, (long long)c->steps);
    if (c->sp > c->seq_len)
        return mpl_err(MPL_ERR_CONFIG, "seq_len=%lld is shorter than sp=%lld: every rank needs at least one token",
                       (long long)c->seq_len, (long long)c->sp);
    if (c->run_dir[0] == '\0') return mpl_err(MPL_ERR_CONFIG, "run_dir must not be empty");
    if (!strcmp(c->task, "classify") && c->causal)
        return mpl_err(MPL_ERR_CONFIG, "task=classify pools over whole sequences: set causal=0 "
                       "(bidirectional attention)");
    if (!strcmp(c->task, "classify") && c->n_classes == 1)
        return mpl_err(MPL_ERR_CONFIG, "n_classes=1: a classifier needs at least 2 classes "
                       "(0: the data file's)");
    /* Where the backend is missing the config is wrong for this build: say
     * so before any work. A build with it checks the GPU when it attaches. */
    if (!strcmp(c->device, "cuda") && !mpl_cuda_built())
        return mpl_err(MPL_ERR_UNSUPPORTED, "device=cuda: %s (cuda=no in multipole --version); "
                       "use device=cpu", MPL_CUDA_NOT_BUILT);
    /* NCCL moves device buffers only, and a build without it cannot honour
     * the request: refuse before any work rather than fall back silently. */
    if (!strcmp(c->comm, "nccl")) {
        if (strcmp(c->device, "cuda"))
            return mpl_err(MPL_ERR_CONFIG, "comm=nccl moves GPU buffers and needs device=cuda "
                           "(device=%s: use comm=mpi or comm=auto)", c->device);
        if (!MPL_BUILD_NCCL)
            return mpl_err(MPL_ERR_UNSUPPORTED, "comm=nccl: this build has no NCCL (nccl=no in "
                           "multipole --version): configure with -DMPL_NCCL=ON where NCCL is "
                           "installed, or use comm=mpi or comm=auto");
        return mpl_err(MPL_ERR_UNSUPPORTED, "comm=nccl: the NCCL communicator is not "
                       "implemented in this version; use comm=mpi or comm=auto");
    }
    if (c->debug_nan_step > 0 && c->debug_nan_layer >= c->n_layer)
        return mpl_err(MPL_ERR_CONFIG, "debug_nan_layer=%lld: the model has blocks 0..%lld",
                       (long long)c->debug_nan_layer, (long long)c->n_layer - 1);
    return MPL_OK;
}

void mpl_config_get(const mpl_config *c, const mpl_cfg_key *k, char *buf, size_t n)
{
    const char *base = (const char *)c + k->offset;
    switch (k->type) {
    case MPL_CFG_INT: snprintf(buf, n, "%lld", (long long)*(const int64_t *)base); break;
    case MPL_CFG_REAL: snprintf(buf, n, "%.17g", *(const double *)base); break;
    default: snprintf(buf, n, "%s", base); break;
    }
}

char *mpl_config_to_text(const mpl_config *c)
{
    size_t cap = 16384, len = 0;
    char *out = malloc(cap);
    if (!out) return NULL;
    out[0] = '\0';
    const char *group = "";
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        char val[MPL_CFG_STR_MAX + 32];
        mpl_config_get(c, &keys[i], val, sizeof val);
        char line[2 * MPL_CFG_STR_MAX];
        int n = 0;
        if (strcmp(group, keys[i].group) != 0) {
            n = snprintf(line, sizeof line, "%s[%s]\n", len ? "\n" : "", keys[i].group);
            group = keys[i].group;
        }
        n += snprintf(line + n, sizeof line - (size_t)n, "%s = %s\n", keys[i].name, val);
        if (len + (size_t)n + 1 > cap) {
            cap *= 2;
            char *p = realloc(out, cap);
            if (!p) {
                free(out);
                return NULL;
            }
            out = p;
        }
        memcpy(out + len, line, (size_t)n + 1);
        len += (size_t)n;
    }
    return out;
}

void mpl_config_print_reference(FILE *f)
{
    fprintf(f, "| key | group | type | default | range / choices | description |\n");
    fprintf(f, "|---|---|---|---|---|---|\n");
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        const mpl_cfg_key *k = &keys[i];
        const char *type = k->type == MPL_CFG_INT ? "int" : k->type == MPL_CFG_REAL ? "real"
                         : k->type == MPL_CFG_ENUM ? "choice" : "text";
        char range[128] = "";
        if (k->type == MPL_CFG_INT || k->type == MPL_CFG_REAL) {
            if (k->hi >= BIG) snprintf(range, sizeof range, ">= %g", k->lo);
            else snprintf(range, sizeof range, "%g .. %g", k->lo, k->hi);
        } else if (k->type == MPL_CFG_ENUM) {
            snprintf(range, sizeof range, "%s", k->choices);
        }
        fprintf(f, "| `%s` | %s | %s | `%s` | %s | %s |\n", k->name, k->group, type,
                k->def[0] ? k->def : "\"\"", range, k->help);
    }
}
