/* `multipole sample`: rebuild the model from a checkpoint's own config and
 * generate bytes, streamed to stdout as they are drawn. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attention/registry.h"
#include "cli.h"
#include "commands.h"
#include "config.h"
#include "core/philox.h"
#include "io/ckpt.h"
#include "trainer.h"

static const char *const sample_help =
    "usage: multipole sample --ckpt PATH --prompt TEXT [--tokens N] [--temperature T]\n"
    "                        [--top-k K] [--seed S]\n"
    "\n"
    "Generate N bytes (default 200) after the prompt from a checkpoint; the\n"
    "model is rebuilt from the config stored in it. Temperature 0 is greedy;\n"
    "top-k 0 keeps every token. The prompt is echoed, then the sample streams.\n";

typedef struct sample_args {
    const char *ckpt, *prompt;
    long long n_tokens, top_k, seed;
    double temperature;
} sample_args;

/* Draw one token from logits (V) with temperature and top-k. */
static int32_t draw(const float *logits, int64_t V, const sample_args *a, uint64_t n,
                    double *probs, int32_t *idx)
{
    int64_t best = 0;
    for (int64_t i = 1; i < V; i++)
        if (logits[i] > logits[best]) best = i;
    if (a->temperature <= 0) return (int32_t)best;
    int64_t k = a->top_k > 0 && a->top_k < V ? a->top_k : V;
    /* Partial selection of the k largest (k is small in practice). */
    for (int64_t i = 0; i < V; i++) idx[i] = (int32_t)i;
    for (int64_t i = 0; i < k; i++) {
        int64_t m = i;
        for (int64_t j = i + 1; j < V; j++)
            if (logits[idx[j]] > logits[idx[m]]) m = j;
        int32_t t = idx[i];
        idx[i] = idx[m];
        idx[m] = t;
    }
    double sum = 0;
    for (int64_t i = 0; i < k; i++) {
        probs[i] = exp(((double)logits[idx[i]] - logits[best]) / a->temperature);
        sum += probs[i];
    }
    double u = mpl_philox_uniform((uint64_t)a->seed, mpl_philox_stream("sample"), n) * sum;
    for (int64_t i = 0; i < k; i++) {
        u -= probs[i];
        if (u <= 0) return idx[i];
    }
    return idx[k - 1];
}

static mpl_status generate(const sample_args *a, mpl_comm *world, const mpl_cli *cli)
{
    mpl_status st = MPL_OK;
    char *text = NULL;
    mpl_attn attn = {0};
    mpl_model *m = NULL;
    int32_t *ctx = NULL, *idx = NULL;
    double *probs = NULL;
    mpl_config cfg;
    mpl_config_defaults(&cfg);
    MPL_CHECK_GOTO(mpl_ckpt_read_config(a->ckpt, &text), done);
    MPL_CHECK_GOTO(mpl_config_load_text(&cfg, text, a->ckpt), done);
    mpl_attn_cfg acfg;
    mpl_model_cfg mcfg;
    mpl_trainer_attn_cfg(&cfg, &acfg);
    mpl_trainer_model_cfg(&cfg, &mcfg);
    MPL_CHECK_GOTO(mpl_attn_create(&acfg, NULL, &attn), done);
    MPL_CHECK_GOTO(mpl_model_create(&mcfg, &attn, &m), done);
    const int64_t L = cfg.seq_len, V = cfg.vocab_size;
    MPL_CHECK_GOTO(mpl_model_reserve(m, 1, L), done);
    mpl_ckpt_state s;
    MPL_CHECK_GOTO(mpl_ckpt_load(world, a->ckpt, mpl_model_layout(m), mpl_model_params(m), NULL,
                                 NULL, &s, NULL), done);
    int64_t n_prompt = (int64_t)strlen(a->prompt), total = n_prompt + a->n_tokens;
    ctx = malloc((size_t)(total + 1) * sizeof *ctx);
    idx = malloc((size_t)V * sizeof *idx);
    probs = malloc((size_t)V * sizeof *probs);
    if (!ctx || !idx || !probs) MPL_FAIL_GOTO(done, MPL_ERR_NOMEM, "out of memory for sampling");
    int64_t n = 0;
    if (n_prompt == 0) ctx[n++] = '\n'; /* something to condition on */
    for (int64_t i = 0; i < n_prompt; i++) ctx[n++] = (unsigned char)a->prompt[i];
    if (cli->rank == 0) {
        fwrite(a->prompt, 1, (size_t)n_prompt, stdout);
        fflush(stdout);
    }
    /* Streaming: each token costs the same whatever its position. A
     * mechanism without a streaming form recomputes over the last seq_len
     * tokens instead. */
    int stream = mpl_model_stream_begin(m, 1) == MPL_OK;
    if (!stream) mpl_err_clear();
    for (int64_t i = 0; stream && i + 1 < n; i++) {
        const float *lg;
        MPL_CHECK_GOTO(mpl_model_stream_step(m, &ctx[i], &lg), done);
    }
    for (long long t = 0; t < a->n_tokens; t++) {
        const float *logits;
        if (stream) {
            MPL_CHECK_GOTO(mpl_model_stream_step(m, &ctx[n - 1], &logits), done);
        } else {
            int64_t w = n < L ? n : L;
            mpl_attn_geom g = {1, w, 0, NULL};
            MPL_CHECK_GOTO(mpl_model_forward(m, &g, ctx + n - w, NULL, NULL, NULL), done);
            logits = mpl_model_logits(m) + (w - 1) * V;
        }
        int32_t tok = draw(logits, V, a, (uint64_t)t, probs, idx);
        ctx[n++] = tok;
        if (cli->rank == 0) {
            putchar(tok < 256 ? tok : '?');
            fflush(stdout);
        }
    }
    if (cli->rank == 0) putchar('\n');
done:
    free(text);
    free(ctx);
    free(idx);
    free(probs);
    mpl_model_destroy(&m);
    mpl_attn_destroy(&attn);
    return st;
}

int mpl_cmd_sample(int argc, char **argv)
{
    mpl_cli cli;
    mpl_cli_init(&cli, "sample");
    sample_args a = {NULL, "", 200, 40, 1, 1.0};
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        int r;
        mpl_status st = MPL_OK;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            if (cli.rank == 0) fputs(sample_help, stdout);
            return MPL_EXIT_OK;
        } else if ((r = mpl_cli_opt(argc, argv, &i, "--ckpt", &v))) {
            a.ckpt = v;
        } else if ((r = mpl_cli_opt(argc, argv, &i, "--prompt", &v))) {
            a.prompt = v;
        } else if ((r = mpl_cli_opt(argc, argv, &i, "--tokens", &v))) {
            if (r > 0) st = mpl_cli_parse_i64("--tokens", v, 0, 100000000, &a.n_tokens);
        } else if ((r = mpl_cli_opt(argc, argv, &i, "--top-k", &v))) {
            if (r > 0) st = mpl_cli_parse_i64("--top-k", v, 0, 1 << 30, &a.top_k);
        } else if ((r = mpl_cli_opt(argc, argv, &i, "--seed", &v))) {
            if (r > 0) st = mpl_cli_parse_i64("--seed", v, 0, (1ll << 62), &a.seed);
        } else if ((r = mpl_cli_opt(argc, argv, &i, "--temperature", &v))) {
            if (r > 0) st = mpl_cli_parse_f64("--temperature", v, 0, 100, &a.temperature);
        } else {
            return mpl_cli_usage(&cli, "unknown argument '%s'", argv[i]);
        }
        if (r < 0) return mpl_cli_usage(&cli, "%s needs a value", argv[i]);
        if (st != MPL_OK) return mpl_cli_error(&cli, MPL_EXIT_USAGE);
    }
    if (!a.ckpt) return mpl_cli_usage(&cli, "no checkpoint given (--ckpt PATH)");
    mpl_comm *world = NULL;
    if (mpl_comm_create_world(&world) != MPL_OK) return mpl_cli_error(&cli, MPL_EXIT_FAIL);
    mpl_status st = generate(&a, world, &cli);
    int rc = st == MPL_OK ? MPL_EXIT_OK : mpl_cli_error(&cli, mpl_cli_exit_code(st));
    mpl_comm_destroy(&world);
    return rc;
}
