/* The run configuration: one table lists every key with its type, default,
 * range and help; INI files, --set overrides, validation, the text saved in
 * checkpoints and the README's reference are all driven by it. */
#ifndef MPL_CONFIG_H
#define MPL_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/status.h"

#define MPL_CFG_STR_MAX 512

typedef struct mpl_config {
    /* model */
    char preset[64];
    int64_t vocab_size, d_model, n_layer, n_head, mlp_mult;
    char attn[32];
    int64_t causal, band, segment, n_pos;
    double rope_theta, norm_eps;
    char task[16];
    int64_t n_classes;
    char fmm_maps[64], fmm_feature_norm[16], fmm_far_norm[16], fmm_far_scale[16];
    double fmm_eps;
    char fmm_blend[16], fmm_blend_init[64];
    int64_t fmm_learn_far_weight;
    char tokenizer[16];
    /* train */
    char data[MPL_CFG_STR_MAX];
    int64_t seq_len, batch, steps, warmup;
    double lr, min_lr, weight_decay, grad_clip, beta1, beta2, adam_eps;
    int64_t seed;
    char run_dir[MPL_CFG_STR_MAX];
    int64_t log_every, ckpt_every, keep_ckpts;
    double ckpt_every_minutes;
    int64_t eval_every, eval_windows;
    char nan_policy[16];
    int64_t max_bad_steps;
    /* parallel */
    int64_t sp, dp, zero, grad_overlap;
    char comm[16];
    /* device */
    char device[16];
    int64_t cuda_device;
    char recompute[16];
    int64_t chunk_tokens;
    char offload[16];
    double mem_limit;
    double peak_flops;
    /* debug (tests) */
    int64_t debug_nan_step, debug_nan_steps, debug_nan_rank, debug_nan_layer, debug_nan_grad;
} mpl_config;

typedef enum mpl_cfg_type { MPL_CFG_INT, MPL_CFG_REAL, MPL_CFG_STR, MPL_CFG_ENUM } mpl_cfg_type;

typedef struct mpl_cfg_key {
    const char *name;
    const char *group;      /* model | train | parallel | device | debug */
    mpl_cfg_type type;
    size_t offset;          /* into mpl_config */
    size_t size;            /* of the field (strings) */
    const char *def;        /* default, as text */
    double lo, hi;          /* inclusive range (numbers) */
    const char *choices;    /* "a|b|c" (enums) */
    int shape;              /* 1: defines the model's shape (must match on resume) */
    const char *help;
} mpl_cfg_key;

/* Local. The table and its length. */
const mpl_cfg_key *mpl_config_keys(int *n_keys);

/* Local. Every key at its default. */
void mpl_config_defaults(mpl_config *c);
/* Local. Set one key from text; MPL_ERR_CONFIG naming key and value when
 * the key is unknown or the value has the wrong type or range. `where`
 * (may be NULL) prefixes the message, e.g. "configs/tiny.ini:12". */
mpl_status mpl_config_set(mpl_config *c, const char *key, const char *value, const char *where);
/* Local. "key=value" as given to --set. */
mpl_status mpl_config_set_arg(mpl_config *c, const char *arg);
/* Local. Read an INI file (sections are for readability; keys are flat). */
mpl_status mpl_config_load_file(mpl_config *c, const char *path);
/* Local. Parse INI text (from a checkpoint). */
mpl_status mpl_config_load_text(mpl_config *c, const char *text, const char *name);
/* Local. Parse fmm_blend_init ("auto" or "a,b") for a causal/bidirectional
 * model into (near, far). */
mpl_status mpl_config_blend_init(const mpl_config *c, double *near, double *far);
/* Local. Relations between keys (divisibility, order of lr and min_lr...). */
mpl_status mpl_config_validate(const mpl_config *c);
/* Local. The whole config as INI text, every key, grouped; malloc'd. */
char *mpl_config_to_text(const mpl_config *c);
/* Local. Value of a key as text into buf. */
void mpl_config_get(const mpl_config *c, const mpl_cfg_key *k, char *buf, size_t n);
/* Local. Write the key reference as a Markdown table. */
void mpl_config_print_reference(FILE *f);

#endif
