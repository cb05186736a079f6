/* Evaluation equals a direct computation: a small model's loss over the
 * whole /val split (full windows plus the tail window, which scores only
 * new targets), computed by mpl_eval_split at every layout the world
 * allows (sp = world with FMM, dp = world, and sp x dp), equals the mean of
 * -log softmax(logits)[target] over every token but the first, computed
 * here in fp64 from one-rank forwards of each window in turn. Also: a
 * window limit scores exactly that many windows, and bits and perplexity
 * follow from the loss. */
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attention/registry.h"
#include "core/philox.h"
#include "launch/eval.h"
#include "tests/testutil.h"

#define L 24
#define N_ALL 4000

static char path[512];

static void make_cfg(mpl_config *c, int sp, int dp)
{
    mpl_config_defaults(c);
    snprintf(c->attn, sizeof c->attn, "fmm");
    c->d_model = 32;
    c->n_layer = 2;
    c->n_head = 4;
    c->band = 8;
    c->seq_len = L;
    c->batch = 3;
    c->sp = sp;
    c->dp = dp;
    c->seed = 5;
    snprintf(c->data, sizeof c->data, "%s", path);
}

/* Mean -log p(target) over tokens 1..n-1 of the split, one rank, fp64 from
 * the logits; windows as eval.h describes them. */
static double direct_loss(const mpl_config *cfg, const int32_t *val, int64_t n_val,
                          int64_t max_windows, int64_t *n_scored)
{
    mpl_attn_cfg acfg;
    mpl_model_cfg mcfg;
    mpl_trainer_attn_cfg(cfg, &acfg);
    mpl_trainer_model_cfg(cfg, &mcfg);
    mcfg.keep_logits = 1; /* the reference reads every logit */
    mpl_attn attn = {0};
    mpl_model *m = NULL;
    assert_int_equal(mpl_attn_create(&acfg, NULL, &attn), MPL_OK);
    assert_int_equal(mpl_model_create(&mcfg, &attn, &m), MPL_OK);
    assert_int_equal(mpl_model_reserve(m, 1, L), MPL_OK);
    mpl_model_init_params(m, (uint64_t)cfg->seed);
    const int64_t V = cfg->vocab_size;
    char *scored = calloc((size_t)n_val, 1);
    /* windows at 0, L, 2L, ... while they fit, then one ending at the last token */
    int64_t starts[N_ALL], n_win = 0;
    for (int64_t s = 0; s + L <= n_val - 1; s += L) starts[n_win++] = s;
    if (starts[n_win - 1] + L < n_val - 1) starts[n_win++] = n_val - 1 - L;
    if (max_windows && max_windows < n_win) n_win = max_windows;
    double sum = 0;
    int64_t cnt = 0;
    for (int64_t w = 0; w < n_win; w++) {
        mpl_attn_geom g = {1, L, 0, NULL};
        assert_int_equal(mpl_model_forward(m, &g, val + starts[w], NULL, NULL, NULL), MPL_OK);
        const float *lg = mpl_model_logits(m);
        for (int64_t i = 0; i < L; i++) {
            int64_t p = starts[w] + i + 1; /* the token predicted */
            if (scored[p]) continue;
            scored[p] = 1;
            double mx = -INFINITY, z = 0;
            for (int64_t v = 0; v < V; v++) mx = fmax(mx, lg[i * V + v]);
            for (int64_t v = 0; v < V; v++) z += exp((double)lg[i * V + v] - mx);
            sum += -((double)lg[i * V + val[p]] - mx - log(z));
            cnt++;
        }
    }
    free(scored);
    mpl_model_destroy(&m);
    mpl_attn_destroy(&attn);
    *n_scored = cnt;
    return sum / (double)cnt;
}

static void test_launch_eval_direct(void **st)
{
    (void)st;
    int rank, world;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    mpl_comm *wc = NULL;
    assert_int_equal(mpl_comm_create_world(&wc), MPL_OK);
    mpl_config cfg;
    make_cfg(&cfg, 1, 1);
    mpl_data_reader *rd = NULL;
    assert_int_equal(mpl_data_reader_open(path, "val", L, 1, &rd), MPL_OK);
    const int64_t n_val = mpl_data_reader_n_tokens(rd);
    int32_t *val = malloc((size_t)n_val * sizeof *val);
    assert_int_equal(mpl_data_reader_read_at(rd, 0, n_val, val), MPL_OK);
    int64_t n_ref, n_ref5;
    double ref = direct_loss(&cfg, val, n_val, 0, &n_ref);
    double ref5 = direct_loss(&cfg, val, n_val, 5, &n_ref5);
    assert_int_equal(n_ref, n_val - 1);
    assert_int_equal(n_ref5, 5 * L);
    assert_true((n_val - 1) % L != 0); /* the tail window is exercised */

    const int layouts[][2] = {{1, 1}, {world, 1}, {1, world}};
    for (size_t k = 0; k < sizeof layouts / sizeof layouts[0]; k++) {
        make_cfg(&cfg, layouts[k][0], layouts[k][1]);
        mpl_trainer *t = NULL;
        if (world % (layouts[k][0] * layouts[k][1]) || layouts[k][0] * layouts[k][1] != world)
            continue;
        assert_int_equal(mpl_trainer_create_eval(&cfg, wc, &t), MPL_OK);
        mpl_eval_result r, r5;
        assert_int_equal(mpl_eval_split(t, rd, 0, 1.0, &r, NULL, NULL), MPL_OK);
        assert_int_equal(mpl_eval_split(t, rd, 5, 1.0, &r5, NULL, NULL), MPL_OK);
        if (rank == 0)
            printf("sp=%d dp=%d: eval loss %.8f over %lld tokens (%lld windows), direct %.8f; "
                   "5 windows %.8f vs %.8f\n", t->sp, t->dp, r.loss, (long long)r.n_tokens,
                   (long long)r.n_windows, ref, r5.loss, ref5);
        assert_int_equal(r.n_tokens, n_val - 1);
        assert_int_equal(r.n_windows, (n_val - 1 + L - 1) / L);
        assert_true(fabs(r.loss - ref) <= 1e-5 * ref);
        assert_int_equal(r5.n_tokens, 5 * L);
        assert_true(fabs(r5.loss - ref5) <= 1e-5 * ref5);
        assert_true(fabs(r.bits_per_token - r.loss / log(2.0)) <= 1e-12);
        assert_true(fabs(r.bits_per_byte - r.bits_per_token) <= 1e-12);
        assert_true(fabs(r.perplexity - exp(r.loss)) <= 1e-9 * r.perplexity);
        mpl_trainer_destroy(&t);
    }
    mpl_data_reader_close(&rd);
    free(val);
    mpl_comm_destroy(&wc);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    char *dir = NULL;
    if (rank == 0) {
        /* bytes with structure, so a trained-or-not model's loss varies by token */
        dir = mpl_test_tmpdir("launch_eval");
        char in[4096];
        snprintf(in, sizeof in, "%s/in.txt", dir);
        snprintf(path, sizeof path, "%s/data.h5", dir);
        FILE *f = fopen(in, "wb");
        for (int i = 0; i < N_ALL; i++)
            fputc("abcdefgh \n"[(int)(mpl_philox_uniform(3, 1, (uint64_t)i) * 10)], f);
        fclose(f);
        const char *inputs[1] = {in};
        mpl_data_prepare_opts o = {.inputs = inputs, .n_inputs = 1, .out = path,
                                   .val_fraction = 0.1};
        if (mpl_data_prepare(&o) != MPL_OK) mpl_err_print(stderr, "prepare: ");
    }
    MPI_Bcast(path, sizeof path, MPI_CHAR, 0, MPI_COMM_WORLD);
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_launch_eval_direct)};
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) {
        mpl_test_rmtree(dir);
        free(dir);
    }
    MPI_Finalize();
    return rc;
}
