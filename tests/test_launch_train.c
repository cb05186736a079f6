/* End to end on one rank: a tiny model trained for 150 steps on a generated
 * corpus must reach a loss well below the corpus's unigram entropy, which
 * needs every part of forward, backward and AdamW to be right. */
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/philox.h"
#include "launch/trainer.h"
#include "testutil.h"

/* Words whose letters are fixed once the first is known, chosen at random:
 * a byte model can predict most bytes from context but not from counts. */
static int64_t make_corpus(uint8_t *buf, int64_t n, uint64_t seed)
{
    static const char *const words[] = {"alpha ", "bravo ", "charlie ", "delta ",
                                        "echo ", "foxtrot ", "golf ", "hotel "};
    int64_t len = 0;
    for (uint64_t w = 0; len < n; w++) {
        const char *s = words[(int)(mpl_philox_uniform(seed, 99, w) * 8)];
        for (; *s && len < n; s++) buf[len++] = (uint8_t)*s;
    }
    return len;
}

static void test_launch_train_loss_falls(void **st)
{
    (void)st;
    uint64_t seed = mpl_test_seed();
    const int64_t n = 1 << 16;
    uint8_t *corpus = malloc((size_t)n);
    make_corpus(corpus, n, seed);
    double counts[256] = {0}, H = 0;
    for (int64_t i = 0; i < n; i++) counts[corpus[i]]++;
    for (int c = 0; c < 256; c++)
        if (counts[c] > 0) H -= counts[c] / (double)n * log(counts[c] / (double)n);

    mpl_config cfg;
    mpl_config_defaults(&cfg);
    cfg.d_model = 64;
    cfg.n_layer = 2;
    cfg.n_head = 4;
    cfg.seq_len = 64;
    cfg.batch = 8;
    cfg.steps = 150;
    cfg.warmup = 10;
    cfg.lr = 3e-3;
    cfg.seed = (int64_t)seed;
    assert_int_equal(mpl_config_validate(&cfg), MPL_OK);
    mpl_comm *world = NULL;
    mpl_trainer *t = NULL;
    assert_int_equal(mpl_comm_create_world(&world), MPL_OK);
    assert_int_equal(mpl_trainer_create(&cfg, world, &t), MPL_OK);
    int64_t L = cfg.seq_len, B = cfg.batch;
    int32_t *tok = malloc((size_t)(B * L) * 4), *tgt = malloc((size_t)(B * L) * 4);
    double first = 0, last = 0;
    for (int64_t s = 0; s < cfg.steps; s++) {
        for (int64_t b = 0; b < B; b++) {
            int64_t off = (int64_t)(mpl_philox_uniform(seed, 7, (uint64_t)(s * B + b)) * (double)(n - L - 1));
            for (int64_t i = 0; i < L; i++) {
                tok[b * L + i] = corpus[off + i];
                tgt[b * L + i] = corpus[off + i + 1];
            }
        }
        mpl_step_stats stats;
        assert_int_equal(mpl_trainer_step(t, tok, tgt, &stats), MPL_OK);
        if (s == 0) first = stats.loss;
        if (s >= cfg.steps - 10) last += stats.loss / 10;
        if (s % 25 == 0 || s == cfg.steps - 1)
            printf("step %lld loss %.4f lr %.2e gnorm %.3f\n", (long long)s + 1, stats.loss,
                   stats.lr, stats.grad_norm);
    }
    printf("unigram entropy %.4f nats, first loss %.4f, mean of last 10 %.4f\n", H, first, last);
    assert_true(first > log(200.0));  /* starts near uniform over 256 bytes */
    assert_true(last < 0.6 * H);      /* learnt context, not just counts */
    free(tok), free(tgt), free(corpus);
    mpl_trainer_destroy(&t);
    assert_null(t);
    mpl_comm_destroy(&world);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_launch_train_loss_falls),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    MPI_Finalize();
    return rc;
}
