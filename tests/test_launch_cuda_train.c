/* Training on the GPU through the trainer (device=cuda): 200 steps of a
 * small FMM language model track the CPU run of the same config, seed and
 * batches (mean loss of every window of MPL_TOL_TRAIN_WINDOW steps within
 * MPL_TOL_TRAIN_REL); the parameters and AdamW moments staged through host
 * memory (what checkpoints do) continue a run exactly, on the GPU from a
 * GPU run and from a CPU run's state. Under the CPU emulation of
 * tests/cuda_emu the run is shortened (printed). Skips (exit 77) without
 * a usable GPU. */
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/philox.h"
#include "gpuutil.h"
#include "launch/trainer.h"

#define LEN 64
#define BATCH 4

static void ok(mpl_status st)
{
    if (st != MPL_OK) mpl_err_print(stderr, "  ");
    assert_int_equal(st, MPL_OK);
}

static mpl_config config(const char *device, int64_t steps)
{
    mpl_config c;
    mpl_config_defaults(&c);
    snprintf(c.device, sizeof c.device, "%s", device);
    snprintf(c.attn, sizeof c.attn, "fmm");
    c.d_model = 64, c.n_layer = 2, c.n_head = 4, c.band = 16;
    c.seq_len = LEN, c.batch = BATCH, c.steps = steps, c.warmup = steps > 20 ? 10 : 1;
    c.lr = 3e-3;
    c.seed = (int64_t)mpl_test_seed();
    assert_int_equal(mpl_config_validate(&c), MPL_OK);
    return c;
}

/* Batch s of a corpus of words: tokens and next-token targets. */
static void batch(int64_t s, int32_t *tok, int32_t *tgt)
{
    static const char *const words[] = {"alpha ", "bravo ", "charlie ", "delta ",
                                        "echo ", "foxtrot ", "golf ", "hotel "};
    const uint64_t seed = mpl_test_seed();
    for (int64_t b = 0; b < BATCH; b++) {
        char buf[LEN + 16];
        int64_t n = 0;
        for (uint64_t w = 0; n < LEN + 1; w++) {
            const char *x = words[(int)(mpl_philox_uniform(seed, 99, (uint64_t)(s * BATCH + b) * 64 + w) * 8)];
            for (; *x && n < LEN + 1; x++) buf[n++] = *x;
        }
        for (int64_t i = 0; i < LEN; i++) {
            tok[b * LEN + i] = (unsigned char)buf[i];
            tgt[b * LEN + i] = (unsigned char)buf[i + 1];
        }
    }
}

static int emulated(void)
{
    mpl_cuda *cu = mpl_test_gpu();
    return cu && strncmp(mpl_cuda_device_name(cu), "cuda_emu", 8) == 0;
}

static void test_launch_cuda_train_tracks_cpu(void **state)
{
    (void)state;
    MPL_TEST_NEED_GPU(cu);
    const int64_t steps = emulated() ? 4 : 200;
    if (steps < 200) printf("emulated GPU: %lld steps instead of 200\n", (long long)steps);
    mpl_comm *world = NULL;
    ok(mpl_comm_create_world(&world));
    mpl_config cc = config("cpu", steps), gc = config("cuda", steps);
    mpl_trainer *ct = NULL, *gt = NULL;
    ok(mpl_trainer_create(&cc, world, &ct));
    ok(mpl_trainer_create(&gc, world, &gt));
    int32_t tok[BATCH * LEN], tgt[BATCH * LEN];
    const int64_t W = steps < MPL_TOL_TRAIN_WINDOW ? steps : MPL_TOL_TRAIN_WINDOW;
    double wc = 0, wg = 0, first = 0, last = 0;
    int bad = 0;
    for (int64_t s = 0; s < steps; s++) {
        batch(s, tok, tgt);
        mpl_step_stats sc, sg;
        ok(mpl_trainer_step(ct, tok, tgt, &sc));
        ok(mpl_trainer_step(gt, tok, tgt, &sg));
        if (s == 0) {
            first = sg.loss;
            printf("step 1: loss cpu %.5f gpu %.5f, gnorm cpu %.4f gpu %.4f\n", sc.loss, sg.loss,
                   sc.grad_norm, sg.grad_norm);
        }
        wc += sc.loss / (double)W, wg += sg.loss / (double)W;
        if ((s + 1) % W == 0) {
            const double rel = fabs(wg - wc) / wc;
            printf("steps %3lld-%3lld: mean loss cpu %.5f gpu %.5f rel %.2e (limit %.0e)\n",
                   (long long)(s + 2 - W), (long long)s + 1, wc, wg, rel, MPL_TOL_TRAIN_REL);
            bad += rel > MPL_TOL_TRAIN_REL;
            last = wg;
            wc = wg = 0;
        }
    }
    assert_int_equal(bad, 0);
    if (steps >= 200) assert_true(last < 0.8 * first); /* it learns */
    mpl_trainer_destroy(&ct);
    mpl_trainer_destroy(&gt);
    mpl_comm_destroy(&world);
}

/* Continue a run from its staged state: src's parameters and moments into
 * a fresh GPU trainer dst, then one more step on both gives the same loss
 * (GPU source: the same bits; CPU source: within the bf16 tolerance). */
static void continue_from(mpl_trainer *src, mpl_trainer *dst, int exact)
{
    float *m = NULL, *v = NULL;
    ok(mpl_model_params_pull(src->model));
    ok(mpl_trainer_optim_gather(src, &m, &v));
    const int64_t n = mpl_model_layout(src->model)->n_elems;
    memcpy(mpl_model_params(dst->model), mpl_model_params(src->model), (size_t)n * sizeof(float));
    ok(mpl_model_params_push(dst->model));
    ok(mpl_trainer_optim_scatter(dst, m, v));
    mpl_trainer_optim_release(src, &m, &v);
    dst->step = src->step;
    int32_t tok[BATCH * LEN], tgt[BATCH * LEN];
    batch(src->step, tok, tgt);
    mpl_step_stats a, b;
    ok(mpl_trainer_step(src, tok, tgt, &a));
    ok(mpl_trainer_step(dst, tok, tgt, &b));
    printf("continued at step %lld: loss %.9f / %.9f, gnorm %.9f / %.9f\n", (long long)src->step,
           a.loss, b.loss, a.grad_norm, b.grad_norm);
    if (exact) {
        assert_true(a.loss == b.loss && a.grad_norm == b.grad_norm);
        ok(mpl_model_params_pull(src->model));
        ok(mpl_model_params_pull(dst->model));
        assert_memory_equal(mpl_model_params(src->model), mpl_model_params(dst->model),
                            (size_t)n * sizeof(float));
    } else {
        assert_true(fabs(a.loss - b.loss) <= MPL_TOL_MODEL_LOSS_REL * a.loss);
    }
}

static void test_launch_cuda_train_staging(void **state)
{
    (void)state;
    MPL_TEST_NEED_GPU(cu);
    mpl_comm *world = NULL;
    ok(mpl_comm_create_world(&world));
    mpl_config gc = config("cuda", 50), cc = config("cpu", 50);
    mpl_trainer *a = NULL, *b = NULL, *c = NULL;
    ok(mpl_trainer_create(&gc, world, &a));
    ok(mpl_trainer_create(&gc, world, &b));
    ok(mpl_trainer_create(&cc, world, &c));
    int32_t tok[BATCH * LEN], tgt[BATCH * LEN];
    for (int64_t s = 0; s < 3; s++) {
        batch(s, tok, tgt);
        ok(mpl_trainer_step(a, tok, tgt, NULL));
        ok(mpl_trainer_step(c, tok, tgt, NULL));
    }
    continue_from(a, b, 1);  /* GPU -> GPU: the same bits */
    continue_from(c, b, 0);  /* CPU -> GPU: the CPU run's state goes on, on the GPU */
    mpl_trainer_destroy(&a);
    mpl_trainer_destroy(&b);
    mpl_trainer_destroy(&c);
    mpl_comm_destroy(&world);
}

/* A world of more than one rank is refused on the GPU with the reason. */
static void test_launch_cuda_train_refusals(void **state)
{
    (void)state;
    MPL_TEST_NEED_GPU(cu);
    mpl_comm *world = NULL;
    ok(mpl_comm_create_world(&world));
    mpl_config gc = config("cuda", 20);
    gc.cuda_device = 99;
    mpl_trainer *t = NULL;
    mpl_err_clear();
    assert_int_equal(mpl_trainer_create(&gc, world, &t), MPL_ERR_CONFIG);
    printf("cuda_device=99: %s\n", mpl_err_cause());
    assert_non_null(strstr(mpl_err_cause(), "cuda_device=99"));
    mpl_err_clear();
    gc = config("cuda", 20);
    snprintf(gc.recompute, sizeof gc.recompute, "layer");
    assert_int_equal(mpl_trainer_create(&gc, world, &t), MPL_ERR_UNSUPPORTED);
    printf("recompute=layer: %s\n", mpl_err_cause());
    mpl_err_clear();
    assert_null(t);
    mpl_comm_destroy(&world);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_launch_cuda_train_tracks_cpu),
        cmocka_unit_test(test_launch_cuda_train_staging),
        cmocka_unit_test(test_launch_cuda_train_refusals),
    };
    const int rc = mpl_test_gpu_exit(cmocka_run_group_tests(tests, NULL, NULL));
    MPI_Finalize();
    return rc;
}
