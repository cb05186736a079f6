/* `multipole sample`: rebuild the model from a checkpoint's own config and
 * generate tokens through the attention's streaming form (constant work per
 * token), each written and flushed as soon as it is drawn, decoded with the
 * tokenizer the model was trained on. */
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
#include "io/data_tokenizer.h"
#include "trainer.h"

static const char *const sample_help =
    "usage: multipole sample --ckpt PATH [--prompt TEXT | --prompt-file FILE] [--tokens N]\n"
    "                        [--temperature T] [--top-k K] [--top-p P] [--seed S]\n"
    "\n"
    "Generate N tokens (default 200) after the prompt from a checkpoint (a\n"
    "ckpt-<step>.h5, a run directory or its `latest` file); the model is rebuilt\n"
    "from the config stored in it. The prompt is echoed, then every token is\n"
    "written as soon as it is drawn. Text is decoded with the model's tokenizer:\n"
    "bytes as they are, dna as A C G T N, token ids as decimal numbers (give an\n"
    "ids prompt as numbers too). An empty prompt starts a bytes model from '\\n'.\n"
    "  --temperature T  softmax temperature (default 1); 0 is greedy\n"
    "  --top-k K        keep the K most likely tokens (default 40; 0: all)\n"
    "  --top-p P        then keep the fewest most likely whose probability\n"
    "                   sums to at least P (default 1: all)\n"
    "  --seed S         the draw of token t is Philox(S, t): same seed, same text\n"
    "Top-k 1 gives the greedy text whatever the temperature.\n";

typedef struct sample_args {
    const char *ckpt, *prompt, *prompt_file;
    long long n_tokens, top_k, seed;
    double temperature, top_p;
} sample_args;

typedef struct cand {
    float logit;
    int32_t id;
} cand;

/* Most likely first; equal logits by id, so top-k 1 is the argmax of greedy. */
static int cand_cmp(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    if (x->logit != y->logit) return x->logit < y->logit ? 1 : -1;
    return (x->id > y->id) - (x->id < y->id);
}

/* Draw one token from logits (V): temperature, then top-k, then top-p
 * over what top-k kept; u = Philox(seed, "sample", t). */
static int32_t draw(const float *logits, int64_t V, const sample_args *a, uint64_t t, cand *c,
                    double *probs)
{
    int64_t best = 0;
    for (int64_t i = 1; i < V; i++)
        if (logits[i] > logits[best]) best = i;
    if (a->temperature <= 0 || a->top_k == 1) return (int32_t)best;
    int64_t k = a->top_k > 0 && a->top_k < V ? a->top_k : V;
    for (int64_t i = 0; i < V; i++) c[i] = (cand){logits[i], (int32_t)i};
    if (k < V && k <= 64) { /* partial selection: k passes */
        for (int64_t i = 0; i < k; i++) {
            int64_t m = i;
            for (int64_t j = i + 1; j < V; j++)
                if (cand_cmp(&c[j], &c[m]) < 0) m = j;
            cand tmp = c[i];
            c[i] = c[m];
            c[m] = tmp;
        }
    } else {
        qsort(c, (size_t)V, sizeof *c, cand_cmp);
    }
    double sum = 0;
    for (int64_t i = 0; i < k; i++) {
        probs[i] = exp(((double)c[i].logit - logits[best]) / a->temperature);
        sum += probs[i];
    }
    if (a->top_p < 1) {
        double acc = 0;
        int64_t keep = 0;
        while (keep < k && acc < a->top_p * sum) acc += probs[keep++];
        k = keep > 0 ? keep : 1;
        sum = acc > 0 ? acc : probs[0];
    }
    double u = mpl_philox_uniform((uint64_t)a->seed, mpl_philox_stream("sample"), t) * sum;
    for (int64_t i = 0; i < k; i++) {
        u -= probs[i];
        if (u <= 0) return c[i].id;
    }
    return c[k - 1].id;
}

/* The prompt's bytes: --prompt, or the whole of --prompt-file ("-": stdin). */
static mpl_status read_prompt(const sample_args *a, char **text, size_t *n)
{
    if (!a->prompt_file) {
        *n = strlen(a->prompt);
        *text = strdup(a->prompt);
        if (!*text) return mpl_err(MPL_ERR_NOMEM, "out of memory for the prompt");
        return MPL_OK;
    }
    FILE *f = strcmp(a->prompt_file, "-") ? fopen(a->prompt_file, "rb") : stdin;
    if (!f) return mpl_err(MPL_ERR_IO, "cannot open prompt file %s", a->prompt_file);
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (len < cap) break;
        char *p = realloc(buf, cap *= 2);
        if (!p) free(buf);
        buf = p;
    }
    int err = ferror(f);
    if (f != stdin) fclose(f);
    if (!buf) return mpl_err(MPL_ERR_NOMEM, "out of memory reading %s", a->prompt_file);
    if (err) {
        free(buf);
        return mpl_err(MPL_ERR_IO, "cannot read prompt file %s", a->prompt_file);
    }
    *text = buf;
    *n = len;
    return MPL_OK;
}

/* Write the text of ids (rank 0) and flush: the stream appears as it grows. */
static void emit(const mpl_cli *cli, mpl_tokenizer tk, const int32_t *ids, int64_t n)
{
    if (cli->rank != 0) return;
    char buf[32];
    for (int64_t i = 0; i < n; i++) fwrite(buf, 1, mpl_tokenizer_decode(tk, ids[i], buf, sizeof buf), stdout);
    fflush(stdout);
}

static mpl_status generate(const sample_args *a, mpl_comm *world, const mpl_cli *cli)
{
    mpl_status st = MPL_OK;
    char *text = NULL, *ptext = NULL, ckpt[4096];
    mpl_attn attn = {0};
    mpl_model *m = NULL;
    int32_t *ctx = NULL, *prompt = NULL;
    cand *cands = NULL;
    double *probs = NULL;
    size_t n_ptext = 0;
    int64_t n_prompt = 0;
    mpl_config cfg;
    mpl_config_defaults(&cfg);
    MPL_CHECK_GOTO(mpl_cli_ckpt_path(a->ckpt, ckpt, sizeof ckpt), done);
    MPL_CHECK_GOTO(mpl_ckpt_read_config(ckpt, &text), done);
    MPL_CHECK_GOTO(mpl_config_load_text(&cfg, text, ckpt), done);
    const int64_t L = cfg.seq_len, V = cfg.vocab_size;
    /* Checkpoints of builds before the tokenizer key hold bytes models. */
    mpl_tokenizer tk = MPL_TOKENIZER_BYTES;
    if (strcmp(cfg.tokenizer, "auto") != 0) MPL_CHECK_GOTO(mpl_tokenizer_parse(cfg.tokenizer, &tk), done);
    MPL_CHECK_GOTO(read_prompt(a, &ptext, &n_ptext), done);
    MPL_CHECK_GOTO(mpl_tokenizer_encode(tk, V, ptext, n_ptext, &prompt, &n_prompt), done);
    if (n_prompt == 0 && tk != MPL_TOKENIZER_BYTES)
        MPL_FAIL_GOTO(done, MPL_ERR_ARG, "the prompt is empty: a %s model needs at least one "
                      "token to start from (--prompt)", mpl_tokenizer_name(tk));

    mpl_attn_cfg acfg;
    mpl_model_cfg mcfg;
    mpl_trainer_attn_cfg(&cfg, &acfg);
    mpl_trainer_model_cfg(&cfg, &mcfg);
    MPL_CHECK_GOTO(mpl_attn_create(&acfg, NULL, &attn), done);
    MPL_CHECK_GOTO(mpl_model_create(&mcfg, &attn, &m), done);
    MPL_CHECK_GOTO(mpl_model_reserve(m, 1, L), done);
    mpl_ckpt_state s;
    MPL_CHECK_GOTO(mpl_ckpt_load(world, ckpt, mpl_model_layout(m), mpl_model_params(m), NULL,
                                 NULL, &s, NULL), done);
    /* Draw only ids the tokenizer can write (a dna model of vocab_size 8
     * has 3 ids no data holds). */
    const int64_t V_text = tk == MPL_TOKENIZER_BYTES ? (V < 256 ? V : 256)
                         : tk == MPL_TOKENIZER_DNA   ? (V < MPL_DNA_VOCAB ? V : MPL_DNA_VOCAB)
                                                     : V;
    const int64_t total = n_prompt + a->n_tokens + 1;
    ctx = malloc((size_t)total * sizeof *ctx);
    cands = malloc((size_t)V * sizeof *cands);
    probs = malloc((size_t)V * sizeof *probs);
    if (!ctx || !cands || !probs) MPL_FAIL_GOTO(done, MPL_ERR_NOMEM, "out of memory for sampling");
    int64_t n = 0;
    if (n_prompt == 0) ctx[n++] = '\n'; /* something to condition on */
    memcpy(ctx + n, prompt, (size_t)n_prompt * sizeof *ctx);
    n += n_prompt;
    emit(cli, tk, prompt, n_prompt);
    /* Streaming: each token costs the same whatever its position. A
     * mechanism without a streaming form (bidirectional models)
     * recomputes over the last seq_len tokens instead. */
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
        ctx[n] = draw(logits, V_text, a, (uint64_t)t, cands, probs);
        emit(cli, tk, &ctx[n], 1);
        n++;
    }
    if (cli->rank == 0) {
        putchar('\n');
        fflush(stdout);
    }
done:
    free(text);
    free(ptext);
    free(prompt);
    free(ctx);
    free(cands);
    free(probs);
    mpl_model_destroy(&m);
    mpl_attn_destroy(&attn);
    return st;
}

int mpl_cmd_sample(int argc, char **argv)
{
    mpl_cli cli;
    mpl_cli_init(&cli, "sample");
    sample_args a = {NULL, "", NULL, 200, 40, 1, 1.0, 1.0};
    int have_prompt = 0;
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        int r;
        mpl_status st = MPL_OK;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            if (cli.rank == 0) fputs(sample_help, stdout);
            return MPL_EXIT_OK;
        } else if ((r = mpl_cli_opt(argc, argv, &i, "--ckpt", &v))) {
            a.ckpt = v;
        } else if ((r = mpl_cli_opt(argc, argv, &i, "--prompt-file", &v))) {
            a.prompt_file = v;
            have_prompt++;
        } else if ((r = mpl_cli_opt(argc, argv, &i, "--prompt", &v))) {
            a.prompt = v;
            have_prompt++;
        } else if ((r = mpl_cli_opt(argc, argv, &i, "--tokens", &v))) {
            if (r > 0) st = mpl_cli_parse_i64("--tokens", v, 0, 100000000, &a.n_tokens);
        } else if ((r = mpl_cli_opt(argc, argv, &i, "--top-k", &v))) {
            if (r > 0) st = mpl_cli_parse_i64("--top-k", v, 0, 1 << 30, &a.top_k);
        } else if ((r = mpl_cli_opt(argc, argv, &i, "--top-p", &v))) {
            if (r > 0) st = mpl_cli_parse_f64("--top-p", v, 1e-9, 1, &a.top_p);
        } else if ((r = mpl_cli_opt(argc, argv, &i, "--seed", &v))) {
            if (r > 0) st = mpl_cli_parse_i64("--seed", v, 0, (1ll << 62), &a.seed);
        } else if ((r = mpl_cli_opt(argc, argv, &i, "--temperature", &v))) {
            if (r > 0) st = mpl_cli_parse_f64("--temperature", v, 0, 100, &a.temperature);
        } else {
            return mpl_cli_usage(&cli, "unknown argument '%s'", argv[i]);
        }
        if (r < 0) return mpl_cli_usage(&cli, "%s needs a value", argv[i]);
        if (st != MPL_OK) return mpl_cli_arg_error(&cli);
    }
    if (!a.ckpt) return mpl_cli_usage(&cli, "no checkpoint given (--ckpt PATH)");
    if (have_prompt > 1) return mpl_cli_usage(&cli, "give one of --prompt and --prompt-file");
    /* One stream of text: rank 0 generates on a communicator of its own
     * (the checkpoint load is collective on it) and the others wait for
     * its exit code, so a file one rank cannot see never hangs the rest. */
    mpl_comm *world = NULL, *self = NULL;
    if (mpl_comm_create_world(&world) != MPL_OK) return mpl_cli_error(&cli, MPL_EXIT_FAIL);
    mpl_status st = mpl_comm_split(world, cli.rank, 0, &self);
    if (st == MPL_OK && cli.rank == 0) st = generate(&a, self, &cli);
    int rc = st == MPL_OK ? MPL_EXIT_OK : mpl_cli_error(&cli, mpl_cli_exit_code(st));
    rc = mpl_cli_rank0_rc(&cli, rc);
    mpl_comm_destroy(&self);
    mpl_comm_destroy(&world);
    return rc;
}
