/* The sequence-parallel invariant: for every mechanism that runs split,
 * causal and bidirectional, at sp = world size (1..4, uneven chunks, a band
 * or a dyadic block wider than a chunk), the loss and every parameter gradient of one step
 * equal those of one rank holding whole sequences, and 20 steps give the
 * same loss curve; also sp = 2 x dp = 2. The reference runs on each rank
 * alone (a communicator of one). */
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "launch/trainer.h"
#include "testutil.h"

static mpl_comm *world, *self;

static void base_config(mpl_config *c, const char *attn, int causal, int64_t L)
{
    mpl_config_defaults(c);
    snprintf(c->attn, sizeof c->attn, "%s", attn);
    c->causal = causal;
    c->vocab_size = 32;
    c->d_model = 16;
    c->n_layer = 2;
    c->n_head = 2;
    c->mlp_mult = 2;
    c->seq_len = L;    /* 23: uneven over 2, 3, 4 ranks */
    c->n_pos = L + 2;  /* learned positions: each rank's rows from its pos0 */
    c->band = 8;       /* w-1 = 7 > the chunks of 4 ranks */
    c->segment = 5;
    c->batch = 4;
    c->steps = 20;
    c->warmup = 2;
    c->lr = 1e-2;
    c->grad_clip = 0;  /* compare raw gradients */
    c->seed = 7;
    assert_int_equal(mpl_config_validate(c), MPL_OK);
}

/* Token t of global sample g: deterministic, so every layout reads the same. */
static int32_t tok_at(int64_t g, int64_t t) { return (int32_t)((g * 7 + t * t * 3 + t) % 31); }

/* One step of trainer tr on global samples [g0, g0 + batch): this rank's
 * DP share and SP chunk. */
static void step(mpl_trainer *tr, int64_t g0, mpl_step_stats *s)
{
    const int64_t B = tr->cfg.batch, a = tr->chunk_a, n = tr->chunk_b - tr->chunk_a;
    int32_t *tok = malloc((size_t)(B * n) * 4), *tgt = malloc((size_t)(B * n) * 4);
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < n; t++) {
            int64_t g = g0 + tr->dp_rank * B + b;
            tok[b * n + t] = tok_at(g, a + t);
            tgt[b * n + t] = tok_at(g, a + t + 1);
        }
    assert_int_equal(mpl_trainer_step(tr, tok, tgt, s), MPL_OK);
    free(tok), free(tgt);
}

/* The layout (sp, dp) against one rank; the split run may also evaluate
 * its chunk in pieces of chunk_tokens tokens with recompute (the reference
 * keeps everything, in one piece). */
static void check_layout(const char *attn, int causal, int sp, int dp, int64_t L,
                         const char *recompute, int64_t chunk_tokens)
{
    const int P = mpl_comm_size(world);
    mpl_config ref_cfg, cfg;
    base_config(&ref_cfg, attn, causal, L);
    cfg = ref_cfg;
    cfg.sp = sp;
    cfg.dp = dp;
    cfg.batch = ref_cfg.batch / dp;
    snprintf(cfg.recompute, sizeof cfg.recompute, "%s", recompute);
    cfg.chunk_tokens = chunk_tokens;
    mpl_trainer *ref = NULL, *tr = NULL;
    assert_int_equal(mpl_trainer_create(&ref_cfg, self, &ref), MPL_OK);
    mpl_status st = mpl_trainer_create(&cfg, world, &tr);
    if (st != MPL_OK) printf("create %s sp=%d: %s\n", attn, sp, mpl_err_cause());
    assert_int_equal(st, MPL_OK);
    const mpl_slab_layout *lay = mpl_model_layout(tr->model);
    const int64_t n = lay->n_elems;
    int ok = 1;
    double worst_loss = 0;
    for (int s = 0; s < 20; s++) {
        mpl_step_stats a, b;
        step(ref, (int64_t)s * ref_cfg.batch, &a);
        step(tr, (int64_t)s * ref_cfg.batch, &b);
        double rel = fabs(a.loss - b.loss) / fabs(a.loss);
        worst_loss = rel > worst_loss ? rel : worst_loss;
        if (s == 0) {
            /* gradients of the first step, before the updates diverge in
             * the last bits: relative to the largest gradient */
            const float *ga = mpl_model_grads(ref->model), *gb = mpl_model_grads(tr->model);
            double gmax = 0;
            for (int64_t i = 0; i < n; i++) gmax = fabs(ga[i]) > gmax ? fabs(ga[i]) : gmax;
            char what[160];
            snprintf(what, sizeof what, "sp grads %s causal=%d L=%lld sp=%d dp=%d %s/%lld rank=%d",
                     attn, causal, (long long)L, sp, dp, recompute, (long long)chunk_tokens,
                     mpl_comm_rank(world));
            ok &= mpl_test_close_f32(what, gb, ga, n, 1e-5 * gmax, 1e-5);
            ok &= rel <= 1e-5;
        }
    }
    if (mpl_comm_rank(world) == 0)
        printf("sp loss curve %s causal=%d L=%lld sp=%d dp=%d %s/%lld P=%d: worst relative "
               "difference %.2e\n", attn, causal, (long long)L, sp, dp, recompute,
               (long long)chunk_tokens, P, worst_loss);
    ok &= worst_loss <= 1e-4;
    assert_true(ok);
    mpl_trainer_destroy(&tr);
    mpl_trainer_destroy(&ref);
}

static void check_kind(const char *attn, int causal, int sp, int dp, int64_t L)
{
    check_layout(attn, causal, sp, dp, L, "none", 8192);
}

static void test_launch_sp_fmm(void **s)
{
    (void)s;
    const int P = mpl_comm_size(world);
    check_kind("fmm", 1, P, 1, 23);
    check_kind("fmm", 0, P, 1, 23);
    if (P == 4) check_kind("fmm", 1, 2, 2, 23);
}

/* Pieces shorter than the band (5 rows of 6-ish per rank, w - 1 = 7):
 * halos cross pieces and ranks; every recompute mode. */
static void test_launch_sp_fmm_pieces(void **s)
{
    (void)s;
    const int P = mpl_comm_size(world);
    check_layout("fmm", 1, P, 1, 23, "layer", 5);
    check_layout("fmm", 0, P, 1, 23, "layer", 5);
    check_layout("fmm", 1, P, 1, 23, "attn", 3);
    check_layout("fmm", 0, P, 1, 23, "none", 3);
    if (P == 4) check_layout("fmm", 0, 2, 2, 23, "layer", 4);
}

/* ZeRO-1 on and off at the same layout (sp x dp): the same losses over 20
 * steps and the same first-step gradients on this rank's shard (fp32,
 * within 1e-6), and identical parameters after the run up to the same. */
static void check_zero(int sp, int dp)
{
    mpl_config cfg_off, cfg_on;
    base_config(&cfg_off, "fmm", 1, 23);
    cfg_off.sp = sp;
    cfg_off.dp = dp;
    cfg_off.batch = 4 / dp;
    cfg_on = cfg_off;
    cfg_on.zero = 1;
    mpl_trainer *off = NULL, *on = NULL;
    assert_int_equal(mpl_trainer_create(&cfg_off, world, &off), MPL_OK);
    assert_int_equal(mpl_trainer_create(&cfg_on, world, &on), MPL_OK);
    assert_true(on->zero && on->shard_hi - on->shard_lo < mpl_model_layout(on->model)->n_elems);
    int ok = 1;
    double worst = 0;
    for (int s = 0; s < 20; s++) {
        mpl_step_stats a, b;
        step(off, (int64_t)s * 4, &a);
        step(on, (int64_t)s * 4, &b);
        worst = fmax(worst, fabs(a.loss - b.loss) / fabs(a.loss));
        if (s == 0) {
            const float *ga = mpl_model_grads(off->model) + on->shard_lo;
            const float *gb = mpl_model_grads(on->model) + on->shard_lo;
            const int64_t n = on->shard_hi - on->shard_lo;
            double gmax = 0;
            for (int64_t i = 0; i < n; i++) gmax = fmax(gmax, fabs(ga[i]));
            char what[96];
            snprintf(what, sizeof what, "zero grads sp=%d dp=%d rank=%d", sp, dp,
                     mpl_comm_rank(world));
            ok &= mpl_test_close_f32(what, gb, ga, n, 1e-6 * gmax, 0);
        }
    }
    const int64_t n = mpl_model_layout(on->model)->n_elems;
    char what[96];
    snprintf(what, sizeof what, "zero params after 20 steps sp=%d dp=%d", sp, dp);
    ok &= mpl_test_close_f32(what, mpl_model_params(on->model), mpl_model_params(off->model), n,
                             1e-5, 1e-4);
    if (mpl_comm_rank(world) == 0)
        printf("zero sp=%d dp=%d: worst relative loss difference %.2e\n", sp, dp, worst);
    ok &= worst <= 1e-6;
    assert_true(ok);
    mpl_trainer_destroy(&on);
    mpl_trainer_destroy(&off);
}

static void test_launch_sp_zero(void **s)
{
    (void)s;
    const int P = mpl_comm_size(world);
    if (P == 1) skip(); /* ZeRO needs dp > 1 */
    check_zero(1, P);
    if (P == 4) check_zero(2, 2);
}

static void test_launch_sp_combiner(void **s)
{
    (void)s;
    const int P = mpl_comm_size(world);
    check_kind("combiner_fixed", 1, P, 1, 23);
    check_kind("combiner_fixed", 0, P, 1, 23);
    if (P == 4) check_kind("combiner_fixed", 0, 2, 2, 23);
}

/* Logsparse: L = 23 (uneven chunks; the level-4 block [0, 16) spans three
 * of four chunks) and L = 17 (L-1 a power of two: query 16 uses the block
 * [0, 16) that crosses every chunk border, its own chunk's included). */
static void test_launch_sp_logsparse(void **s)
{
    (void)s;
    const int P = mpl_comm_size(world);
    for (int causal = 1; causal >= 0; causal--) {
        check_kind("combiner_logsparse", causal, P, 1, 23);
        check_kind("combiner_logsparse", causal, P, 1, 17);
    }
    if (P == 4) check_kind("combiner_logsparse", 1, 2, 2, 23);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    if (mpl_comm_create_world(&world) != MPL_OK) return 1;
    if (mpl_comm_split(world, mpl_comm_rank(world), 0, &self) != MPL_OK) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_launch_sp_fmm),
        cmocka_unit_test(test_launch_sp_fmm_pieces),
        cmocka_unit_test(test_launch_sp_zero),
        cmocka_unit_test(test_launch_sp_combiner),
        cmocka_unit_test(test_launch_sp_logsparse),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    mpl_comm_destroy(&self);
    mpl_comm_destroy(&world);
    MPI_Finalize();
    return rc;
}
